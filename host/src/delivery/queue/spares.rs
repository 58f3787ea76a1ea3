//! Spare spool files. A delivered small message's file is not unlinked but renamed into
//! `spare/`, and the next message is written over it. Creating and unlinking a file per message
//! costs an inode allocation and release, block allocation and release, and, on file systems
//! mounted with `discard`, a synchronous device round trip inside `unlink` that holds the
//! calling thread. Writing into blocks the file already owns costs none of these: only renames.
//!
//! A spare is garbage: it is never read, only overwritten and truncated to the new length before
//! the committer makes it durable under its new name. The pool is bounded in count and in the
//! size of each file, so spares hold at most [`MAX_SPARES`] × [`MAX_SPARE_BYTES`] of disk.

use std::sync::Mutex;

use cap_std::fs::{Dir, File, OpenOptions};

/// Files kept for reuse at most; beyond that, delivered files are unlinked.
pub const MAX_SPARES: usize = 256;

/// Only files up to this size are kept (a large one would hold its blocks for nothing).
pub const MAX_SPARE_BYTES: usize = 64 * 1024;

/// The spare files of one spool, owned by the running server (operator commands that attach to
/// a live spool never take or add spares).
pub struct Spares {
    dir: Dir,
    names: Mutex<Vec<String>>,
}

impl Spares {
    /// The pool over `dir`, holding what an earlier run left there (extra files are removed).
    pub fn open(dir: Dir) -> Spares {
        let mut names = Vec::new();
        if let Ok(entries) = dir.entries() {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let small = entry
                    .metadata()
                    .is_ok_and(|m| m.is_file() && m.len() <= MAX_SPARE_BYTES as u64);
                if small && names.len() < MAX_SPARES {
                    names.push(name);
                } else {
                    let _ = dir.remove_file(&name);
                }
            }
        }
        Spares {
            dir,
            names: Mutex::new(names),
        }
    }

    fn names(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A spare opened for writing from the start, with its name in `spare/`, or `None` when
    /// there is none (or it could not be opened: the caller creates a file as usual). The
    /// spare stays where it is while it is written: until [`Spares::publish`] moves it, a crash
    /// leaves garbage in `spare/` and nothing in the queue.
    pub fn take(&self) -> Option<(String, File)> {
        let spare = self.names().pop()?;
        match self.dir.open_with(&spare, OpenOptions::new().write(true)) {
            Ok(file) => Some((spare, file)),
            Err(_) => {
                let _ = self.dir.remove_file(&spare);
                None
            }
        }
    }

    /// Moves a taken spare, written and made durable, to `to/name`.
    pub fn publish(&self, spare: &str, to: &Dir, name: &str) -> std::io::Result<()> {
        self.dir.rename(spare, to, name).inspect_err(|_| {
            let _ = self.dir.remove_file(spare);
        })
    }

    /// Takes `from/name`, a file of `size` bytes no longer needed, into the pool: true when it
    /// was kept, false when the caller must remove it (too large, pool full, rename failed).
    pub fn keep(&self, from: &Dir, name: &str, size: usize) -> bool {
        if size > MAX_SPARE_BYTES {
            return false;
        }
        let mut names = self.names();
        if names.len() >= MAX_SPARES {
            return false;
        }
        if from.rename(name, &self.dir, name).is_err() {
            return false;
        }
        names.push(name.to_string());
        true
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.names().len()
    }
}
