//! Uploaded blobs (RFC 8620 §6.1): files under `data/jmap-uploads/<account>/`, named by a
//! hash of their content (the same bytes uploaded twice are one blob), kept a day after their
//! last upload. Only their uploader's account can use them.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// Uploads older than this are removed (the RFC asks for at least an hour).
const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

pub struct Uploads {
    root: PathBuf,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Uploads {
    pub fn new(root: PathBuf) -> Uploads {
        Uploads { root }
    }

    fn dir(&self, user: &str) -> PathBuf {
        self.root.join(hex(&Sha256::digest(user.as_bytes())[..12]))
    }

    /// Stores `bytes` for `user`; the blob id (`U` and 24 hex digits).
    pub fn store(&self, user: &str, bytes: &[u8]) -> std::io::Result<String> {
        let dir = self.dir(user);
        std::fs::create_dir_all(&dir)?;
        self.prune(&dir);
        let id = format!("U{}", hex(&Sha256::digest(bytes)[..12]));
        let path = dir.join(&id);
        let tmp = dir.join(format!("{id}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        Ok(id)
    }

    /// The bytes of one of `user`'s uploads.
    pub fn read(&self, user: &str, id: &str) -> Option<Vec<u8>> {
        let valid =
            id.len() == 25 && id.starts_with('U') && id[1..].bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return None;
        }
        std::fs::read(self.dir(user).join(id)).ok()
    }

    /// Removes uploads past their time.
    fn prune(&self, dir: &std::path::Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > KEPT_FOR);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_found_by_their_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uploads = Uploads::new(dir.path().to_path_buf());
        let id = uploads.store("ann@x", b"hello").expect("stored");
        assert_eq!(uploads.read("ann@x", &id).as_deref(), Some(&b"hello"[..]));
        assert_eq!(uploads.read("bob@x", &id), None);
        assert_eq!(uploads.read("ann@x", "U../../etc/passwd"), None);
        assert_eq!(uploads.store("ann@x", b"hello").expect("again"), id);
    }
}
