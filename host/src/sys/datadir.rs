//! The data directory and its single owner: `serve` takes an exclusive lock on it before it
//! touches anything inside, so a second server on the same directory stops at once and changes
//! nothing (no spool clean-up, no recovery, no listener).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// The lock file inside the data directory; it holds the owner's process id.
pub const LOCK_FILE: &str = "mailgate.lock";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot use data dir {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data dir {path} is in use by another mailgate server{owner}")]
    InUse { path: PathBuf, owner: String },
}

/// The locked data directory; the lock lasts as long as this value.
pub struct DataDir {
    pub path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates the directory (mode 0700: it holds the users file, the queue and mail) if
    /// needed, narrows its mode to 0700, and takes the lock without waiting.
    pub fn lock(path: &Path) -> Result<DataDir, DataDirError> {
        let io = |source| DataDirError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let lock_path = path.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io)?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            let owner = std::fs::read_to_string(&lock_path)
                .ok()
                .map(|pid| pid.trim().to_string())
                .filter(|pid| !pid.is_empty())
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default();
            return Err(DataDirError::InUse {
                path: path.to_path_buf(),
                owner,
            });
        }
        // Ours now: record who holds it.
        file.set_len(0).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_owner_is_refused_and_the_first_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let first = DataDir::lock(&data).expect("first");
        let meta = std::fs::metadata(&data).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        match DataDir::lock(&data) {
            Err(DataDirError::InUse { owner, .. }) => {
                assert!(owner.contains(&std::process::id().to_string()), "{owner}")
            }
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("a second owner got the lock"),
        }
        drop(first);
        DataDir::lock(&data).expect("free again once the first is gone");
    }
}
