//! Message files in `cur/` and `new/`, found again when they move: another program sharing
//! the Maildir (Dovecot, mutt) renames a file when it changes flags, with no lock of ours.
//! Flags live in the name's `:2,` suffix, keywords as its lower-case letters.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::served::served;
use super::{Flags, Folder, MailEntry};
use crate::mail::clock::since_epoch;

/// `key:2,FLAGS` -> (key, flags).
pub(super) fn split_name(name: &str) -> (&str, &str) {
    match name.split_once(":2,") {
        Some((key, flags)) => (key, flags),
        None => (name.split_once(':').map_or(name, |(k, _)| k), ""),
    }
}

/// A message file found in `cur/` or `new/`.
pub(super) struct Found {
    pub(super) key: String,
    pub(super) path: PathBuf,
    pub(super) flags: Flags,
    pub(super) in_new: bool,
}

impl Folder {
    /// Every message file in `cur/` and `new/`; with `take_new`, those in `new/` move to `cur/`.
    pub(super) fn files(&self, take_new: bool) -> std::io::Result<Vec<Found>> {
        let mut found = Vec::new();
        for sub in ["cur", "new"] {
            for entry in self.dir.read_dir(sub)?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // Dot files are not messages; a name with a line break cannot be indexed (the
                // index is one line per message): left alone, never lost.
                if name.starts_with('.') || name.contains('\n') {
                    continue;
                }
                let (key, flags) = split_name(&name);
                let (key, flags) = (key.to_string(), Flags::parse(flags));
                let mut file = Found {
                    path: Path::new(sub).join(&name),
                    in_new: sub == "new",
                    key,
                    flags,
                };
                if file.in_new && take_new {
                    let target = Path::new("cur").join(format!("{}:2,{}", file.key, file.flags));
                    if self.dir.rename(&file.path, &self.dir, &target).is_ok() {
                        file.path = target;
                        file.in_new = false;
                    }
                }
                found.push(file);
            }
        }
        Ok(found)
    }

    pub(super) fn modified(&self, path: &Path) -> u64 {
        self.dir
            .metadata(path)
            .ok()
            .and_then(|m| m.modified().ok())
            .map_or(0, |t| since_epoch(t.into_std()).as_secs())
    }

    /// The message's bytes with CRLF line ends (the file may have moved since the snapshot:
    /// flags changed, here or by another program). `NotFound` when it is gone.
    pub fn read(&self, entry: &MailEntry) -> std::io::Result<Vec<u8>> {
        let mut finder = Finder::new(self);
        let bytes = finder.on_file(entry, |path, _| self.dir.read(path))?;
        bytes.map(served).ok_or_else(|| gone(&entry.key))
    }

    /// Every message file by key: where it is and its flags.
    pub(super) fn locate(&self) -> std::io::Result<HashMap<String, (PathBuf, Flags)>> {
        Ok(self
            .files(false)?
            .into_iter()
            .map(|f| (f.key, (f.path, f.flags)))
            .collect())
    }

    /// Removes a message (POP3 DELE at QUIT, IMAP EXPUNGE); one already gone (another session
    /// or program expunged it) is not an error.
    pub fn delete(&self, entry: &MailEntry) -> std::io::Result<()> {
        Finder::new(self)
            .on_file(entry, |path, _| self.dir.remove_file(path))
            .map(drop)
    }
}

/// How many times an operation on a message file is tried, the file looked for again after
/// each `NotFound`: another program sharing the Maildir renames files when it changes flags
/// (and Dovecot moves `new/` to `cur/`), with no lock of ours to wait for.
const ATTEMPTS: usize = 8;

pub(super) fn gone(key: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("message {key} is gone"),
    )
}

/// Finds message files again when they moved: one listing of the folder shared by the
/// messages of one command, listed anew when a file is not where that listing put it.
pub(super) struct Finder<'a> {
    folder: &'a Folder,
    listing: Option<HashMap<String, (PathBuf, Flags)>>,
}

impl<'a> Finder<'a> {
    pub(super) fn new(folder: &'a Folder) -> Finder<'a> {
        Finder {
            folder,
            listing: None,
        }
    }

    /// Runs `op` on the message's file (its path and the flags its name holds): first where
    /// the entry says, then where a listing of the folder finds it, for as long as it keeps
    /// moving away (at most [`ATTEMPTS`] times). `None` when the message is gone.
    pub(super) fn on_file<T>(
        &mut self,
        entry: &MailEntry,
        mut op: impl FnMut(&Path, Flags) -> std::io::Result<T>,
    ) -> std::io::Result<Option<T>> {
        let (mut path, mut flags) = (self.folder.path_of(entry), entry.flags);
        for attempt in 0..ATTEMPTS {
            match op(&path, flags) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                done => return done.map(Some),
            }
            match self.relocate(&entry.key, attempt == 0)? {
                Some((now, now_flags)) => (path, flags) = (now, now_flags),
                None => return Ok(None),
            }
        }
        Err(std::io::Error::other(format!(
            "message {} kept being renamed by another program",
            entry.key
        )))
    }

    /// Where the message is now, by key: from the listing this command already made when
    /// `may_reuse`, else from a new one. A listing taken while another program renames files
    /// may miss one (readdir during a rename), so it is gone only when two listings agree.
    fn relocate(
        &mut self,
        key: &str,
        may_reuse: bool,
    ) -> std::io::Result<Option<(PathBuf, Flags)>> {
        if may_reuse {
            if let Some(found) = self.listing.as_ref().and_then(|l| l.get(key)) {
                return Ok(Some(found.clone()));
            }
        }
        for _ in 0..2 {
            let listing = self.folder.locate()?;
            let found = listing.get(key).cloned();
            self.listing = Some(listing);
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }
}
