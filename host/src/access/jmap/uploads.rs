//! Uploaded blobs (RFC 8620 §6.1): files under `data/jmap-uploads/<account>/`, named by a
//! hash of their content (the same bytes uploaded twice are one blob), kept a day after their
//! last upload. Only their uploader's account can use them.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::BlobFault;

/// Uploads older than this are removed (the RFC asks for at least an hour).
const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

pub struct Uploads {
    root: PathBuf,
    /// Bytes one user's uploads may take at once.
    max_bytes: u64,
}

/// Uploads one user may hold at once, however small.
const MAX_FILES: usize = 1000;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Uploads {
    pub fn new(root: PathBuf, max_bytes: u64) -> Uploads {
        Uploads { root, max_bytes }
    }

    fn dir(&self, user: &str) -> PathBuf {
        self.root.join(hex(&Sha256::digest(user.as_bytes())[..12]))
    }

    /// Stores `bytes` for `user`; the blob id (`U` and 24 hex digits).
    pub fn store(&self, user: &str, bytes: &[u8]) -> std::io::Result<String> {
        let dir = self.dir(user);
        std::fs::create_dir_all(&dir)?;
        let (files, held) = self.prune(&dir);
        let id = format!("U{}", hex(&Sha256::digest(bytes)[..12]));
        let path = dir.join(&id);
        let again = path.exists();
        if !again
            && (files >= MAX_FILES || held.saturating_add(bytes.len() as u64) > self.max_bytes)
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::QuotaExceeded,
                "the user's upload store is full",
            ));
        }
        let tmp = dir.join(format!("{id}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        Ok(id)
    }

    /// The bytes of one of `user`'s uploads, if at most `limit` (its size is looked at
    /// before it is read).
    pub fn read(&self, user: &str, id: &str, limit: usize) -> Result<Vec<u8>, BlobFault> {
        let valid =
            id.len() == 25 && id.starts_with('U') && id[1..].bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(BlobFault::Missing);
        }
        let file = std::fs::File::open(self.dir(user).join(id))?;
        let size = file.metadata()?.len();
        if size > limit as u64 {
            return Err(BlobFault::TooLarge);
        }
        let mut bytes = Vec::new();
        // Uploads are written whole and renamed into place, but the read is bounded anyway.
        file.take(size.saturating_add(1)).read_to_end(&mut bytes)?;
        if bytes.len() > limit {
            return Err(BlobFault::TooLarge);
        }
        Ok(bytes)
    }

    /// Removes uploads past their time; how many are left and their bytes.
    fn prune(&self, dir: &std::path::Path) -> (usize, u64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return (0, 0);
        };
        let now = SystemTime::now();
        let (mut files, mut bytes) = (0usize, 0u64);
        for entry in entries.flatten() {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            let old = metadata
                .modified()
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > KEPT_FOR);
            if old {
                let _ = std::fs::remove_file(entry.path());
            } else {
                files += 1;
                bytes = bytes.saturating_add(metadata.len());
            }
        }
        (files, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_found_by_their_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uploads = Uploads::new(dir.path().to_path_buf(), 12);
        let id = uploads.store("ann@x", b"hello").expect("stored");
        assert_eq!(
            uploads.read("ann@x", &id, 5).expect("found"),
            b"hello".to_vec()
        );
        assert!(matches!(
            uploads.read("ann@x", &id, 4),
            Err(BlobFault::TooLarge)
        ));
        assert!(matches!(
            uploads.read("bob@x", &id, 5),
            Err(BlobFault::Missing)
        ));
        assert!(matches!(
            uploads.read("ann@x", "U../../etc/passwd", 5),
            Err(BlobFault::Missing)
        ));
        assert_eq!(uploads.store("ann@x", b"hello").expect("again"), id);
        let full = uploads
            .store("ann@x", b"12345678")
            .expect_err("over 12 bytes");
        assert_eq!(full.kind(), std::io::ErrorKind::QuotaExceeded);
        assert!(uploads.store("bob@x", b"12345678").is_ok(), "per user");
    }
}
