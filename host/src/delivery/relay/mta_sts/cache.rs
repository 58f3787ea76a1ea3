//! Policies kept per domain, in memory and on disk (one file per domain in the data
//! directory's `mta-sts/`), so that a restart keeps them until they expire (RFC 8461 §5.1).
//!
//! A file holds `id <id>`, `expires <unix seconds>`, an empty line, then the policy text as
//! it was fetched; it is parsed again when read. The files are read once, when the cache is
//! made: a delivery looks in memory only, and writes and removals leave the runtime's workers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::policy::Policy;

/// One domain's policy as fetched.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The `id` of the TXT record the policy was fetched for.
    pub id: String,
    pub policy: Arc<Policy>,
    /// Unix seconds after which the policy is no longer used.
    pub expires: u64,
}

pub struct Cache {
    dir: PathBuf,
    memory: Mutex<HashMap<String, Cached>>,
}

impl Cache {
    /// The cache of `dir`, with the policies kept there by an earlier run.
    pub fn new(dir: PathBuf) -> Cache {
        let kept = crate::sys::blocking::run(|| read_all(&dir));
        Cache {
            dir,
            memory: Mutex::new(kept),
        }
    }

    /// The unexpired policy of `domain`, if any.
    pub fn get(&self, domain: &str, now: u64) -> Option<Cached> {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        match memory.get(domain) {
            Some(cached) if cached.expires > now => Some(cached.clone()),
            Some(_) => {
                memory.remove(domain);
                drop(memory);
                if let Some(path) = self.file(domain) {
                    let _ = crate::sys::blocking::run(|| std::fs::remove_file(path));
                }
                None
            }
            None => None,
        }
    }

    /// Keeps a freshly fetched policy (`text` as fetched).
    pub fn put(&self, domain: &str, cached: Cached, text: &str) {
        if let Some(path) = self.file(domain) {
            if let Err(e) = crate::sys::blocking::run(|| write(&path, &cached, text)) {
                tracing::warn!(domain, "MTA-STS policy not kept on disk: {e}");
            }
        }
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.insert(domain.to_string(), cached);
    }

    /// The file of `domain`; none for a name that is not a plain host name.
    fn file(&self, domain: &str) -> Option<PathBuf> {
        let plain = !domain.is_empty()
            && !domain.starts_with('.')
            && domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        plain.then(|| self.dir.join(domain))
    }
}

/// Every policy file in `dir` that reads back whole (a missing directory holds none).
fn read_all(dir: &Path) -> HashMap<String, Cached> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let domain = entry.file_name().to_str()?.to_string();
            let cached = read(&entry.path())?;
            Some((domain, cached))
        })
        .collect()
}

/// One policy file: written by us, but read as a regular file of bounded size (never a FIFO
/// or device someone put in its place).
fn read(path: &Path) -> Option<Cached> {
    use crate::config::file::{read_regular_text, Links};
    let max = (super::fetch::MAX_BODY + 1024) as u64;
    let text = read_regular_text(path, max, Links::Refuse).ok()?;
    let (head, policy) = text.split_once("\n\n")?;
    let mut lines = head.lines();
    let id = lines.next()?.strip_prefix("id ")?.to_string();
    let expires = lines.next()?.strip_prefix("expires ")?.parse().ok()?;
    let policy = Policy::parse(policy).ok()?;
    Some(Cached {
        id,
        policy: Arc::new(policy),
        expires,
    })
}

fn write(path: &Path, cached: &Cached, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let temporary = path.with_extension("new");
    std::fs::write(
        &temporary,
        format!("id {}\nexpires {}\n\n{text}", cached.id, cached.expires),
    )?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_new_cache_and_expires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "version: STSv1\nmode: enforce\nmx: mx.a.test\nmax_age: 100\n";
        let cached = Cached {
            id: "20260101".into(),
            policy: Arc::new(Policy::parse(text).expect("policy")),
            expires: 1_100,
        };
        Cache::new(dir.path().into()).put("a.test", cached, text);
        let again = Cache::new(dir.path().into());
        let read = again.get("a.test", 1_000).expect("from disk");
        assert_eq!(read.id, "20260101");
        assert!(read.policy.allows("mx.a.test"));
        assert!(again.get("a.test", 1_100).is_none(), "expired");
        assert!(
            Cache::new(dir.path().into()).get("a.test", 1_000).is_none(),
            "an expired file is removed"
        );
        assert!(again.file("../x").is_none());
    }
}
