//! The on-disk cache of compiled plugins. Loading an artifact runs its native code inside the
//! gateway, so the cache is used only when it is a directory of ours that nobody else can write,
//! it is held as a `cap_std` directory handle (no key can name a file outside it), and every
//! artifact records the SHA-256 of its content, checked before it is deserialized.
//!
//! Every new plugin build and every new gateway build adds artifacts, so the cache is bounded:
//! after each store, artifacts unused for [`MAX_AGE`] go, then the least recently used until
//! the cache holds at most [`MAX_BYTES`]. A load marks its artifact used (its mtime).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, DirBuilder, OpenOptions};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Compiled artifacts start with this tag and the SHA-256 of what follows.
const ARTIFACT_TAG: &[u8; 8] = b"MGCWASM1";

/// The most the cache holds: a compiled Python plugin is some 35 MB, a JavaScript one 30 MB.
pub const MAX_BYTES: u64 = 1 << 30;
/// Artifacts not loaded for this long are removed.
pub const MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

pub struct ArtifactCache {
    path: PathBuf,
    dir: Dir,
}

impl ArtifactCache {
    /// Opens (creating, mode 0700) the cache at `path`; `None`, with the reason logged, when it
    /// cannot be trusted or used: plugins are then compiled every time.
    pub fn open(path: &Path) -> Option<ArtifactCache> {
        match Self::try_open(path) {
            Ok(cache) => Some(cache),
            Err(why) => {
                tracing::warn!("plugin cache {}: {why}; not used", path.display());
                None
            }
        }
    }

    fn try_open(path: &Path) -> Result<ArtifactCache, String> {
        use cap_std::fs::DirBuilderExt;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let parent =
            Dir::open_ambient_dir(path.parent().unwrap_or(Path::new(".")), ambient_authority())
                .map_err(|e| e.to_string())?;
        let name = path.file_name().ok_or("no directory name")?;
        let mut builder = DirBuilder::new();
        builder.mode(0o700);
        match parent.create_dir_with(name, &builder) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.to_string()),
        }
        let dir = parent.open_dir(name).map_err(|e| e.to_string())?;
        let stat = rustix::fs::fstat(&dir).map_err(|e| e.to_string())?;
        if stat.st_uid != rustix::process::geteuid().as_raw() {
            return Err("it is not owned by this user".into());
        }
        let mode = stat.st_mode & 0o7777;
        if mode & 0o022 != 0 {
            return Err(format!("it is writable by others (mode {mode:o})"));
        }
        Ok(ArtifactCache {
            path: path.to_path_buf(),
            dir,
        })
    }

    /// The artifact under `key`, if it is there, intact, and loads.
    pub fn load(&self, engine: &Engine, key: &str) -> Option<Component> {
        let bytes = self.read_and_mark_used(key)?;
        match check(&bytes) {
            // SAFETY: the artifact was written by `store` from `precompile_component` of an
            // engine with the same compatibility hash (part of the key), in a directory only
            // this user can write, and its content still has the hash recorded then.
            Ok(compiled) => match unsafe { Component::deserialize(engine, compiled) } {
                Ok(component) => return Some(component),
                Err(e) => self.discard(key, &format!("{e:#}")),
            },
            Err(why) => self.discard(key, why),
        }
        None
    }

    /// The bytes under `key`, its mtime set to now (the pruning keeps what is used).
    fn read_and_mark_used(&self, key: &str) -> Option<Vec<u8>> {
        use std::io::Read;
        let mut file = self.dir.open(key).ok()?.into_std();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        let _ = file.set_modified(SystemTime::now());
        Some(bytes)
    }

    fn discard(&self, key: &str, why: &str) {
        tracing::warn!(
            "discarding cached artifact {}: {why}",
            self.path.join(key).display()
        );
        let _ = self.dir.remove_file(key);
    }

    /// Waits for, then holds, the right to compile the artifact `key` (an exclusive `flock`
    /// on `<key>.lock`, released when the turn is dropped, or by the kernel if this process
    /// dies). Processes and threads sharing the cache then compile a component once: the
    /// second to ask finds the first one's artifact when its turn comes. `None` (compile
    /// anyway) when the lock file cannot be had.
    pub fn compile_lock(&self, key: &str) -> Option<CompileTurn<'_>> {
        use cap_std::fs::OpenOptionsExt;
        let name = format!("{key}.lock");
        let file = self
            .dir
            .open_with(
                &name,
                OpenOptions::new().write(true).create(true).mode(0o600),
            )
            .ok()?
            .into_std();
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).ok()?;
        Some(CompileTurn {
            cache: self,
            name,
            _file: file,
        })
    }

    /// Keeps a compiled component under `key` (written aside, then renamed into place).
    pub fn store(&self, key: &str, compiled: &[u8]) {
        use cap_std::fs::OpenOptionsExt;
        use std::io::Write;
        let tmp = format!("{key}.tmp{}", std::process::id());
        let write = || -> std::io::Result<()> {
            let mut out = self.dir.open_with(
                &tmp,
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600),
            )?;
            out.write_all(ARTIFACT_TAG)?;
            out.write_all(&Sha256::digest(compiled))?;
            out.write_all(compiled)?;
            drop(out);
            self.dir.rename(&tmp, &self.dir, key)
        };
        if let Err(e) = write() {
            let _ = self.dir.remove_file(&tmp);
            tracing::warn!(
                "cannot cache compiled plugin at {}: {e}",
                self.path.join(key).display()
            );
        }
        self.prune(MAX_BYTES, MAX_AGE, key);
    }

    /// Removes artifacts unused for `max_age`, then the least recently used until the cache
    /// holds at most `max_bytes`; never `keep`. Leftovers of interrupted writes and old compile locks go after an hour.
    fn prune(&self, max_bytes: u64, max_age: Duration, keep: &str) {
        let Ok(entries) = self.dir.entries() else {
            return;
        };
        let now = SystemTime::now();
        let mut artifacts: Vec<(SystemTime, u64, String)> = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            let used = meta
                .modified()
                .map(|t| t.into_std())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let age = now.duration_since(used).unwrap_or_default();
            let stale = if name.ends_with(".cwasm") {
                age > max_age
            } else {
                // Leftovers of interrupted writes, and compile locks nobody has held for long.
                (name.contains(".cwasm.tmp") || name.ends_with(".cwasm.lock"))
                    && age > Duration::from_secs(3600)
            };
            if stale && name != keep {
                self.remove(&name, "unused");
            } else if name.ends_with(".cwasm") {
                artifacts.push((used, meta.len(), name));
            }
        }
        artifacts.sort();
        let mut total: u64 = artifacts.iter().map(|(_, size, _)| size).sum();
        for (_, size, name) in artifacts {
            if total <= max_bytes {
                break;
            }
            if name != keep && self.remove(&name, "the least recently used") {
                total = total.saturating_sub(size);
            }
        }
    }

    fn remove(&self, name: &str, why: &str) -> bool {
        let removed = self.dir.remove_file(name).is_ok();
        if removed {
            tracing::debug!(
                "plugin cache: removed {} ({why})",
                self.path.join(name).display()
            );
        }
        removed
    }
}

/// One process's turn to compile an artifact. Its lock file goes when the turn ends: whoever
/// waited on it then finds the artifact stored; whoever comes later starts a new lock file
/// and finds it too.
pub struct CompileTurn<'a> {
    cache: &'a ArtifactCache,
    name: String,
    _file: std::fs::File,
}

impl Drop for CompileTurn<'_> {
    fn drop(&mut self) {
        let _ = self.cache.dir.remove_file(&self.name);
    }
}

/// The compiled bytes of an artifact whose recorded hash matches them.
fn check(bytes: &[u8]) -> Result<&[u8], &'static str> {
    let (recorded, compiled) = bytes
        .strip_prefix(ARTIFACT_TAG)
        .filter(|rest| rest.len() >= 32)
        .map(|rest| rest.split_at(32))
        .ok_or("not an artifact of this version")?;
    if Sha256::digest(compiled).as_slice() != recorded {
        return Err("its content does not match its recorded hash");
    }
    Ok(compiled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_compiler_waits_for_the_first_and_the_lock_file_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ArtifactCache::open(&dir.path().join("cache")).expect("cache");
        let first = cache.compile_lock("k.cwasm").expect("first turn");
        let lock_file = dir.path().join("cache/k.cwasm.lock");
        assert!(lock_file.exists());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let second = cache.compile_lock("k.cwasm").expect("second turn");
                // By the time the second has its turn, the first has stored the artifact.
                tx.send(cache.read_and_mark_used("k.cwasm").is_some())
                    .expect("send");
                drop(second);
            });
            // The second waits while the first holds its turn.
            assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
            cache.store("k.cwasm", &[0u8; 10]);
            drop(first);
            assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        });
        assert!(!lock_file.exists(), "the lock file goes with the last turn");
    }

    #[test]
    fn the_cache_keeps_what_is_used_within_its_bounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ArtifactCache::open(&dir.path().join("cache")).expect("cache");
        let age = |name: &str, seconds: u64| {
            let when = SystemTime::now() - Duration::from_secs(seconds);
            std::fs::File::options()
                .write(true)
                .open(dir.path().join("cache").join(name))
                .and_then(|f| f.set_modified(when))
                .expect("set mtime");
        };
        for name in ["old.cwasm", "lru.cwasm", "used.cwasm"] {
            cache.store(name, &[0u8; 1000]);
        }
        age("old.cwasm", 40 * 24 * 3600);
        age("lru.cwasm", 7200);
        age("used.cwasm", 7200);
        // Loading marks an artifact used (its content need not deserialize for that).
        assert!(cache.read_and_mark_used("used.cwasm").is_some());
        cache.store("new.cwasm", &[0u8; 1000]);
        let present = |name: &str| dir.path().join("cache").join(name).exists();
        assert!(!present("old.cwasm"), "unused for 40 days");
        assert!(present("lru.cwasm") && present("used.cwasm") && present("new.cwasm"));
        // Three artifacts of ~1 KB over a bound of 2.5 KB: the least recently used goes.
        cache.prune(2500, MAX_AGE, "new.cwasm");
        assert!(!present("lru.cwasm"));
        assert!(present("used.cwasm") && present("new.cwasm"));
        cache.prune(10, MAX_AGE, "new.cwasm");
        assert!(present("new.cwasm"), "the artifact just stored stays");
    }

    #[test]
    fn artifacts_are_checked_and_group_writable_caches_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cache");
        let cache = ArtifactCache::open(&path).expect("private cache");
        let meta = std::fs::metadata(&path).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        cache.store("k", b"compiled bytes");
        let stored = std::fs::read(path.join("k")).expect("stored");
        assert_eq!(check(&stored), Ok(&b"compiled bytes"[..]));
        let mut tampered = stored.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(check(&tampered).is_err());
        assert!(check(b"MGCWASM1short").is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o775)).expect("chmod");
        assert!(
            ArtifactCache::open(&path).is_none(),
            "group-writable cache used"
        );
    }
}
