//! Mailboxes over Maildir, for POP3 and IMAP. A user's Maildir is their INBOX; other folders are
//! Maildir++ subfolders (`.Name/`). Each folder keeps `mailgate-uidlist` (UIDVALIDITY, UIDNEXT
//! and the UID of each message by its base name), updated under an exclusive `flock`, so UIDs
//! survive restarts and two sessions agree on them. Flags live in the file name's `:2,` suffix,
//! as every Maildir tool expects. A folder is held as a `cap_std` directory handle, opened
//! beneath the user's Maildir: no mailbox name or message key can reach outside it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, File, OpenOptions};

const UIDLIST: &str = "mailgate-uidlist";
const LOCK: &str = "mailgate-uidlist.lock";

/// One message of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailEntry {
    pub uid: u32,
    /// The file name without the `:2,` info: stable across flag changes.
    pub key: String,
    /// The file is still in `new/` (not yet seen by a session that moves it to `cur/`).
    pub in_new: bool,
    /// Maildir flag letters (`D` draft, `F` flagged, `R` answered, `S` seen, `T` deleted).
    pub flags: Flags,
    pub size: u64,
    /// Unix seconds (the file's modification time: when it was delivered).
    pub internal_date: u64,
    /// It was in `new/` when this snapshot moved it to `cur/` (IMAP `\Recent`).
    pub recent: bool,
}

/// A folder's messages at one moment, by ascending UID.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub uid_validity: u32,
    pub uid_next: u32,
    pub entries: Vec<MailEntry>,
}

/// A Maildir folder.
#[derive(Debug, Clone)]
pub struct Folder {
    /// Where it is, for messages and change notification; every access goes through `dir`.
    pub path: PathBuf,
    dir: Arc<Dir>,
}

/// Holds the folder's uidlist lock until dropped.
struct Locked(File);

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock);
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `key:2,FLAGS` -> (key, flags).
fn split_name(name: &str) -> (&str, &str) {
    match name.split_once(":2,") {
        Some((key, flags)) => (key, flags),
        None => (name.split_once(':').map_or(name, |(k, _)| k), ""),
    }
}

impl Folder {
    /// Opens the folder at `path` (a user's Maildir: their INBOX), creating its Maildir
    /// directories if needed.
    pub fn open(path: &Path) -> std::io::Result<Folder> {
        std::fs::create_dir_all(path)?;
        let dir = Dir::open_ambient_dir(path, ambient_authority())?;
        Folder::with_dir(path.to_path_buf(), dir)
    }

    /// Folder `name` of the Maildir at `maildir`, opened beneath the Maildir's own handle, so
    /// that no name reaches outside it whatever checks it passed before.
    pub fn open_in(maildir: &Path, name: &str) -> std::io::Result<Folder> {
        let component = folder_component(name)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.0))?;
        std::fs::create_dir_all(maildir)?;
        let root = Dir::open_ambient_dir(maildir, ambient_authority())?;
        root.create_dir_all(&component)?;
        let dir = root.open_dir(&component)?;
        let path = folder_path(maildir, name)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.0))?;
        Folder::with_dir(path, dir)
    }

    fn with_dir(path: PathBuf, dir: Dir) -> std::io::Result<Folder> {
        for sub in ["tmp", "new", "cur"] {
            dir.create_dir_all(sub)?;
        }
        Ok(Folder {
            path,
            dir: Arc::new(dir),
        })
    }

    fn lock(&self) -> std::io::Result<Locked> {
        let file = self.dir.open_with(
            LOCK,
            OpenOptions::new().create(true).truncate(false).write(true),
        )?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
        Ok(Locked(file))
    }

    /// Reads the folder: every message with its UID (new ones get the next UIDs, in delivery
    /// order). With `take_new`, messages in `new/` move to `cur/` and are marked recent.
    pub fn scan(&self, take_new: bool) -> std::io::Result<Snapshot> {
        let _lock = self.lock()?;
        let (mut validity, mut next, mut uids) = self.read_uidlist();
        let mut changed = false;
        if validity == 0 {
            validity = (now_secs() & 0xffff_ffff) as u32;
            next = 1;
            changed = true;
        }
        let mut found: Vec<(String, PathBuf, Flags, bool, bool)> = Vec::new();
        for sub in ["cur", "new"] {
            for entry in self.dir.read_dir(sub)?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let (key, flags) = split_name(&name);
                let (key, flags) = (key.to_string(), Flags::parse(flags));
                let mut path = Path::new(sub).join(&name);
                let mut recent = false;
                let mut in_new = sub == "new";
                if in_new && take_new {
                    let target = Path::new("cur").join(format!("{key}:2,{flags}"));
                    if self.dir.rename(&path, &self.dir, &target).is_ok() {
                        path = target;
                        recent = true;
                        in_new = false;
                    }
                }
                found.push((key, path, flags, recent, in_new));
            }
        }
        // Delivery order: our names (and most Maildir names) start with the time.
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut entries = Vec::with_capacity(found.len());
        let mut present = std::collections::HashSet::new();
        for (key, path, flags, recent, in_new) in found {
            let uid = match uids.get(&key) {
                Some(&uid) => uid,
                None => {
                    let uid = next;
                    next += 1;
                    uids.insert(key.clone(), uid);
                    changed = true;
                    uid
                }
            };
            present.insert(key.clone());
            let meta = self.dir.metadata(&path).ok();
            entries.push(MailEntry {
                uid,
                key,
                size: meta.as_ref().map_or(0, |m| m.len()),
                internal_date: meta
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs()),
                in_new,
                flags,
                recent,
            });
        }
        let before = uids.len();
        uids.retain(|key, _| present.contains(key));
        changed |= uids.len() != before;
        if changed {
            self.write_uidlist(validity, next, &uids)?;
        }
        entries.sort_by_key(|e| e.uid);
        Ok(Snapshot {
            uid_validity: validity,
            uid_next: next,
            entries,
        })
    }

    fn read_uidlist(&self) -> (u32, u32, BTreeMap<String, u32>) {
        let Ok(text) = self.dir.read_to_string(UIDLIST) else {
            return (0, 1, BTreeMap::new());
        };
        let mut lines = text.lines();
        let header = lines.next().unwrap_or("");
        let mut validity = 0;
        let mut next = 1;
        for word in header.split_whitespace() {
            if let Some(v) = word.strip_prefix('V') {
                validity = v.parse().unwrap_or(0);
            } else if let Some(n) = word.strip_prefix('N') {
                next = n.parse().unwrap_or(1);
            }
        }
        let uids = lines
            .filter_map(|l| {
                let (uid, key) = l.split_once(' ')?;
                Some((key.to_string(), uid.parse().ok()?))
            })
            .collect::<BTreeMap<String, u32>>();
        let max = uids.values().copied().max().unwrap_or(0);
        (validity, next.max(max + 1), uids)
    }

    fn write_uidlist(
        &self,
        validity: u32,
        next: u32,
        uids: &BTreeMap<String, u32>,
    ) -> std::io::Result<()> {
        let mut by_uid: Vec<(&u32, &String)> = uids.iter().map(|(k, u)| (u, k)).collect();
        by_uid.sort();
        let mut text = format!("V{validity} N{next}\n");
        for (uid, key) in by_uid {
            text.push_str(&format!("{uid} {key}\n"));
        }
        let tmp = format!("{UIDLIST}.tmp");
        let mut file = self.dir.create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_data()?;
        self.dir.rename(&tmp, &self.dir, UIDLIST)
    }

    /// Where the message's file should be inside the folder, from its key, flags and directory.
    pub fn path_of(&self, entry: &MailEntry) -> PathBuf {
        if entry.in_new {
            Path::new("new").join(&entry.key)
        } else {
            Path::new("cur").join(format!("{}:2,{}", entry.key, entry.flags))
        }
    }

    /// The message's bytes (the file may have moved since the snapshot: flags changed).
    pub fn read(&self, entry: &MailEntry) -> std::io::Result<Vec<u8>> {
        match self.dir.read(self.path_of(entry)) {
            Ok(bytes) => Ok(bytes),
            Err(_) => self.dir.read(self.find(&entry.key)?),
        }
    }

    /// Where a message is now inside the folder, by key.
    fn find(&self, key: &str) -> std::io::Result<PathBuf> {
        for sub in ["cur", "new"] {
            for entry in self.dir.read_dir(sub)?.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if split_name(&name).0 == key {
                    return Ok(Path::new(sub).join(&*name));
                }
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("message {key} is gone"),
        ))
    }

    /// Sets the flags of a message; returns where it is now inside the folder.
    pub fn set_flags(&self, entry: &MailEntry, flags: Flags) -> std::io::Result<PathBuf> {
        let guess = self.path_of(entry);
        let from = if self.dir.metadata(&guess).is_ok() {
            guess
        } else {
            self.find(&entry.key)?
        };
        let target = Path::new("cur").join(format!("{}:2,{flags}", entry.key));
        if from != target {
            self.dir.rename(&from, &self.dir, &target)?;
        }
        Ok(target)
    }

    /// Removes a message (POP3 DELE at QUIT, IMAP EXPUNGE).
    pub fn delete(&self, entry: &MailEntry) -> std::io::Result<()> {
        match self.dir.remove_file(self.path_of(entry)) {
            Ok(()) => Ok(()),
            Err(_) => match self.find(&entry.key) {
                Ok(path) => self.dir.remove_file(path),
                // Already gone (another session expunged it): nothing to do.
                Err(_) => Ok(()),
            },
        }
    }

    /// Adds a message (IMAP APPEND, COPY) with flags; returns its UID.
    pub fn append(
        &self,
        bytes: &[u8],
        flags: Flags,
        internal_date: Option<u64>,
    ) -> std::io::Result<u32> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let key = format!(
            "{}.M{}P{}Q{}.mailgate",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let tmp = Path::new("tmp").join(&key);
        let mut file = self.dir.create(&tmp)?.into_std();
        file.write_all(bytes)?;
        file.sync_all()?;
        if let Some(date) = internal_date {
            let time = UNIX_EPOCH + std::time::Duration::from_secs(date);
            let _ = file.set_modified(time);
        }
        drop(file);
        let target = Path::new("cur").join(format!("{key}:2,{flags}"));
        self.dir.rename(&tmp, &self.dir, &target)?;
        self.dir.open("cur")?.sync_all()?;
        let snapshot = self.scan(false)?;
        snapshot
            .entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.uid)
            .ok_or_else(|| std::io::Error::other("appended message not found"))
    }
}

/// A message's Maildir flags: a set of letters (A–Z, a–z) in one word, since every session
/// keeps one per message of the selected folder. Written out deduplicated and in ASCII order,
/// as the Maildir spec wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(u64);

impl Flags {
    /// The letters in `text`; anything else is ignored.
    pub fn parse(text: &str) -> Flags {
        Flags(
            text.chars()
                .filter_map(Flags::bit)
                .fold(0, |set, bit| set | bit),
        )
    }

    pub fn contains(self, letter: char) -> bool {
        Flags::bit(letter).is_some_and(|bit| self.0 & bit != 0)
    }

    pub fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    pub fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }

    /// Upper-case letters take bits 0–25 and lower-case 26–51, so bit order is ASCII order.
    fn bit(letter: char) -> Option<u64> {
        match letter {
            'A'..='Z' => Some(1 << (letter as u32 - 'A' as u32)),
            'a'..='z' => Some(1 << (26 + letter as u32 - 'a' as u32)),
            _ => None,
        }
    }

    fn letters(self) -> impl Iterator<Item = char> {
        ('A'..='Z')
            .chain('a'..='z')
            .filter(move |&c| self.contains(c))
    }
}

impl std::fmt::Display for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.letters()
            .try_for_each(|c| std::fmt::Write::write_char(f, c))
    }
}

/// Why a mailbox name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadName(pub String);

/// The directory of folder `name` in a user's Maildir: INBOX is the Maildir itself, `A/B` is
/// `.A.B/` (Maildir++). Nothing can reach outside: `..`, empty parts, absolute paths, NUL,
/// control characters and our own separator `.` inside a part are refused.
pub fn folder_path(maildir: &Path, name: &str) -> Result<PathBuf, BadName> {
    match folder_component(name)?.as_str() {
        "." => Ok(maildir.to_path_buf()),
        component => Ok(maildir.join(component)),
    }
}

/// The folder's directory name inside the Maildir: `.` for INBOX, `.A.B` for `A/B`.
fn folder_component(name: &str) -> Result<String, BadName> {
    if name.eq_ignore_ascii_case("INBOX") {
        return Ok(".".into());
    }
    let bad = |why: &str| Err(BadName(format!("{name:?}: {why}")));
    if name.is_empty() || name.len() > 200 {
        return bad("empty or too long");
    }
    if name.chars().any(|c| c.is_control()) {
        return bad("control characters");
    }
    if name.starts_with('/') || name.contains('\\') {
        return bad("not a relative mailbox name");
    }
    let parts: Vec<&str> = name.split('/').collect();
    for part in &parts {
        if part.is_empty() || *part == "." || *part == ".." {
            return bad("empty, . or .. in the hierarchy");
        }
        if part.contains('.') {
            return bad("'.' is not allowed in a mailbox name");
        }
    }
    Ok(format!(".{}", parts.join(".")))
}

/// Every folder of a Maildir: INBOX first, then subfolders by name (`A/B` for `.A.B`).
pub fn list_folders(maildir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(maildir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("cur").is_dir())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let inner = name.strip_prefix('.')?;
            (!inner.is_empty()).then(|| inner.replace('.', "/"))
        })
        .collect();
    names.sort();
    names.insert(0, "INBOX".into());
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_a_set_of_letters_written_in_ascii_order() {
        let flags = Flags::parse("TSa,SF\\x");
        assert_eq!(flags.to_string(), "FSTax");
        assert!(flags.contains('S') && flags.contains('a') && !flags.contains('D'));
        assert_eq!(Flags::parse("").to_string(), "");
        let added = flags.union(Flags::parse("DS"));
        assert_eq!(added.to_string(), "DFSTax");
        assert_eq!(added.without(Flags::parse("Tx")).to_string(), "DFSa");
        assert!(!Flags::parse("S").contains('\\'));
    }

    fn deliver(folder: &Folder, name: &str, body: &[u8]) {
        // As another program would: by path.
        std::fs::write(folder.path.join("new").join(name), body).expect("write");
    }

    #[test]
    fn uids_survive_rescans_flag_changes_and_deletions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = Folder::open(dir.path()).expect("open");
        deliver(&folder, "100.a.mailgate", b"one");
        deliver(&folder, "200.b.mailgate", b"two");
        let first = folder.scan(true).expect("scan");
        assert_eq!(
            first.entries.iter().map(|e| e.uid).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(first
            .entries
            .iter()
            .all(|e| e.recent && !e.in_new && folder.path.join(folder.path_of(e)).exists()));
        folder
            .set_flags(&first.entries[0], Flags::parse("SF"))
            .expect("flags");
        folder.delete(&first.entries[1]).expect("delete");
        deliver(&folder, "300.c.mailgate", b"three");
        let reopened = Folder::open(dir.path()).expect("reopen");
        let second = reopened.scan(false).expect("scan");
        assert_eq!(second.uid_validity, first.uid_validity);
        let summary: Vec<(u32, String, bool)> = second
            .entries
            .iter()
            .map(|e| (e.uid, e.flags.to_string(), e.recent))
            .collect();
        assert_eq!(
            summary,
            [(1, "FS".to_string(), false), (3, String::new(), false)]
        );
        assert_eq!(second.uid_next, 4);
        assert_eq!(reopened.read(&second.entries[0]).expect("read"), b"one");
        let uid = reopened
            .append(b"four", Flags::parse("S"), Some(1_000_000))
            .expect("append");
        assert_eq!(uid, 4);
    }

    #[test]
    fn mailbox_names_stay_inside() {
        let root = Path::new("/mail/u");
        assert_eq!(folder_path(root, "inbox").expect("inbox"), root);
        assert_eq!(
            folder_path(root, "Work/Projects").expect("sub"),
            root.join(".Work.Projects")
        );
        for bad in [
            "..", "../x", "a/../b", "/etc", "a//b", "a\0b", "a\nb", "a.b", "",
        ] {
            assert!(folder_path(root, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn folders_open_beneath_the_maildir_handle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let maildir = dir.path().join("alice");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("cur")).expect("outside");
        let sub = Folder::open_in(&maildir, "Work/Projects").expect("open");
        assert!(maildir.join(".Work.Projects/cur").is_dir());
        sub.append(b"x", Flags::default(), None).expect("append");
        // A folder that is a link out of the Maildir is not followed, whatever its name.
        std::os::unix::fs::symlink(&outside, maildir.join(".Evil")).expect("link");
        assert!(Folder::open_in(&maildir, "Evil").is_err());
        assert!(Folder::open_in(&maildir, "../outside").is_err());
        assert!(Folder::open_in(&maildir, "INBOX").is_ok());
    }
}
