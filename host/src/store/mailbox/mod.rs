//! Mailboxes over Maildir, for POP3 and IMAP. A user's Maildir is their INBOX; other folders are
//! Maildir++ subfolders (`.Name/`). Each folder keeps an index, `mailgate-uidlist` (see
//! [`super::uidlist`]: UIDVALIDITY, UIDNEXT, and per message its UID, mod-sequence and served
//! size), changed only under the folder's exclusive `flock`, so UIDs survive restarts and every
//! session agrees on them. Flags live in the file name's `:2,` suffix, keywords as its lower-case
//! letters named by `dovecot-keywords`, as Dovecot and every Maildir tool expect; a flag change
//! is applied to the name the file has now, under the lock, never to a session's copy.
//! Files are served with CRLF line ends whatever they hold (Dovecot, Postfix `virtual` and
//! procmail write bare LFs), and sizes are those of the bytes served.
//! A folder is held as a `cap_std` directory handle, opened beneath the user's Maildir: no
//! mailbox name or message key can reach outside it.
//!
//! One concern a file: the folder index under its lock (index.rs), finding message files that
//! other programs rename (files.rs), adding, moving and flagging messages (changes.rs), what a
//! client is served from a file (served.rs), folder names and listing (naming.rs), and the
//! bytes a user's folders take against their quota (usage.rs).

mod cache;
mod changes;
mod files;
mod index;
mod memo;
mod naming;
mod served;
mod stamp;
mod usage;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

pub use super::flags::Flags;
use super::keywords::{self, Keywords};
pub use cache::{
    decode_records as decode_cache_records, encode_record as encode_cache_record, Field,
};
pub use naming::{
    count_folders, ensure_special_use, folder_path, list_folders, BadName, SPECIAL_USE,
};
pub use served::{served, served_len};
pub use usage::{is_over_quota, room_for, usage, OverQuota};

/// What a copy keeps of the message it copies ([`Folder::append_copies`]).
pub struct CopySource {
    pub system: Flags,
    pub keywords: Vec<String>,
    /// Unix seconds.
    pub internal_date: Option<u64>,
}

/// A message to add with [`Folder::append_all`].
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    pub bytes: &'a [u8],
    pub system: Flags,
    pub keywords: &'a [String],
    /// Unix seconds; `None`: now.
    pub internal_date: Option<u64>,
}

/// One message of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailEntry {
    pub uid: u32,
    /// The file name without the `:2,` info: stable across flag changes (shared with the
    /// folder's index in memory, so a session's list does not copy it).
    pub key: Arc<str>,
    /// The file is still in `new/` (not yet seen by a session that moves it to `cur/`).
    pub in_new: bool,
    /// Maildir flag letters (`D` draft, `F` flagged, `R` answered, `S` seen, `T` deleted;
    /// `a`–`z` keywords).
    pub flags: Flags,
    /// Size as served: with CRLF line ends.
    pub size: u64,
    /// Unix seconds (the file's modification time: when it was delivered).
    pub internal_date: u64,
    /// Recent (IMAP `\Recent`): delivered since a session last claimed the folder's new
    /// messages; claimed by this scan when it was made with `claim_recent`.
    pub recent: bool,
    /// When its flags last changed (RFC 7162).
    pub modseq: u64,
}

/// A folder's messages at one moment, by ascending UID.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
    pub entries: Vec<MailEntry>,
    pub keywords: Keywords,
}

/// How a flag change combines with the flags a message has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Replace,
    Add,
    Remove,
}

/// A flag change: system flags as letters, keywords by name.
#[derive(Debug, Clone)]
pub struct FlagChange<'a> {
    pub op: FlagOp,
    pub system: Flags,
    pub keywords: &'a [String],
    /// RFC 7162 UNCHANGEDSINCE: messages changed after this mod-sequence are left alone.
    pub unchanged_since: Option<u64>,
}

/// What a flag change did.
#[derive(Debug, Default)]
pub struct FlagUpdate {
    /// Every message still there, with its flags and mod-sequence after the change.
    pub entries: Vec<MailEntry>,
    /// UIDs whose flags this change altered.
    pub changed: HashSet<u32>,
    /// UIDs left alone because they changed after `unchanged_since`.
    pub modified: Vec<u32>,
    /// The folder's keywords afterwards (a change may name new ones).
    pub keywords: Keywords,
}

/// A Maildir folder.
#[derive(Debug, Clone)]
pub struct Folder {
    /// Where it is, for messages and change notification; every access goes through `dir`.
    pub path: PathBuf,
    dir: Arc<Dir>,
    /// The user's Maildir (the INBOX folder's own directory).
    root: Arc<Dir>,
}

impl Folder {
    /// Opens the folder at `path` (a user's Maildir: their INBOX), creating its Maildir
    /// directories if needed.
    pub fn open(path: &Path) -> std::io::Result<Folder> {
        std::fs::create_dir_all(path)?;
        let dir = Arc::new(Dir::open_ambient_dir(path, ambient_authority())?);
        Folder::with_dir(path.to_path_buf(), dir.clone(), dir)
    }

    /// Folder `name` of the Maildir at `maildir`, opened beneath the Maildir's own handle, so
    /// that no name reaches outside it whatever checks it passed before.
    pub fn open_in(maildir: &Path, name: &str) -> std::io::Result<Folder> {
        let component = naming::folder_component(name)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.0))?;
        std::fs::create_dir_all(maildir)?;
        let root = Arc::new(Dir::open_ambient_dir(maildir, ambient_authority())?);
        let dir = if component == "." {
            root.clone()
        } else {
            root.create_dir_all(&component)?;
            Arc::new(root.open_dir(&component)?)
        };
        let path = folder_path(maildir, name)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.0))?;
        Folder::with_dir(path, dir, root)
    }

    pub(super) fn with_dir(
        path: PathBuf,
        dir: Arc<Dir>,
        root: Arc<Dir>,
    ) -> std::io::Result<Folder> {
        for sub in ["tmp", "new", "cur"] {
            dir.create_dir_all(sub)?;
        }
        Ok(Folder { path, dir, root })
    }

    /// The folder's keyword names.
    pub fn keywords(&self) -> Keywords {
        Keywords::parse(&self.dir.read_to_string(keywords::FILE).unwrap_or_default())
    }

    /// Where the message's file should be inside the folder, from its key, flags and directory.
    pub fn path_of(&self, entry: &MailEntry) -> PathBuf {
        if entry.in_new {
            Path::new("new").join(&*entry.key)
        } else {
            Path::new("cur").join(format!("{}:2,{}", entry.key, entry.flags))
        }
    }
}

#[cfg(test)]
mod tests;
