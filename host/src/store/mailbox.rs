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

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, File, OpenOptions};

pub use super::flags::Flags;
use super::keywords::{self, Keywords};
use super::uidlist::{Record, UidList};

const UIDLIST: &str = "mailgate-uidlist";
const LOCK: &str = "mailgate-uidlist.lock";
/// In the user's Maildir: the last UIDVALIDITY given to any of its folders.
const LAST_UIDVALIDITY: &str = "mailgate-uidvalidity";

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
    /// The file name without the `:2,` info: stable across flag changes.
    pub key: String,
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

/// Holds a `flock` until dropped.
struct Locked(File);

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock);
    }
}

fn lock_file(dir: &Dir, name: &str) -> std::io::Result<Locked> {
    let file = dir.open_with(
        name,
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true),
    )?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(Locked(file))
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

/// A message file found in `cur/` or `new/`.
struct Found {
    key: String,
    path: PathBuf,
    flags: Flags,
    in_new: bool,
}

/// Writes `name` inside `dir` whole or not at all: a temporary file, synced, renamed over it.
fn replace_file(dir: &Dir, name: &str, text: &str) -> std::io::Result<()> {
    let tmp = format!("{name}.tmp");
    let mut file = dir.create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_data()?;
    dir.rename(&tmp, dir, name)
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
        let component = folder_component(name)
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

    fn with_dir(path: PathBuf, dir: Arc<Dir>, root: Arc<Dir>) -> std::io::Result<Folder> {
        for sub in ["tmp", "new", "cur"] {
            dir.create_dir_all(sub)?;
        }
        Ok(Folder { path, dir, root })
    }

    fn lock(&self) -> std::io::Result<Locked> {
        lock_file(&self.dir, LOCK)
    }

    /// Reads the folder: every message with its UID (new ones get the next UIDs, in delivery
    /// order). With `claim_recent` (a read-write session), messages in `new/` move to `cur/`
    /// and the recent ones are claimed: no other session sees them as recent.
    pub fn scan(&self, claim_recent: bool) -> std::io::Result<Snapshot> {
        let _lock = self.lock()?;
        let mut list = self.read_uidlist();
        let mut changed = false;
        if list.validity == 0 || list.next == u32::MAX {
            list = self.fresh_index(&list)?;
            changed = true;
        }
        let mut found = self.files(claim_recent)?;
        let listed: HashSet<String> = found.iter().map(|f| f.key.clone()).collect();
        if list.records.keys().any(|key| !listed.contains(key)) {
            // A listing taken while another program renames files may miss one: a message is
            // expunged only when a second listing agrees, else it would come back as new.
            let again = self.files(false)?;
            found.extend(again.into_iter().filter(|f| !listed.contains(&f.key)));
        }
        // Delivery order: our names (and most Maildir names) start with the time.
        found.sort_by(|a, b| a.key.cmp(&b.key));
        // The same listing may also show a file under its old and its new name.
        found.dedup_by(|a, b| a.key == b.key);
        let mut entries = Vec::with_capacity(found.len());
        let mut present = HashSet::with_capacity(found.len());
        for file in found {
            let record = match list.records.get(&file.key).copied() {
                Some(mut record) => {
                    if record.flags != Some(file.flags) {
                        // Changed by another program (or learnt from an old index).
                        if record.flags.is_some() {
                            record.modseq = list.bump_modseq();
                        }
                        record.flags = Some(file.flags);
                        changed = true;
                    }
                    if record.size.is_none() {
                        record.size = Some(self.served_size(&file.key, &file.path));
                        changed = true;
                    }
                    record
                }
                None => {
                    let uid = list.next;
                    list.next = list.next.saturating_add(1);
                    changed = true;
                    Record {
                        uid,
                        modseq: list.bump_modseq(),
                        size: Some(self.served_size(&file.key, &file.path)),
                        flags: Some(file.flags),
                    }
                }
            };
            list.records.insert(file.key.clone(), record);
            present.insert(file.key.clone());
            entries.push(MailEntry {
                uid: record.uid,
                size: record.size.unwrap_or(0),
                internal_date: self.modified(&file.path),
                modseq: record.modseq,
                key: file.key,
                in_new: file.in_new,
                flags: file.flags,
                recent: record.uid >= list.first_recent,
            });
        }
        let before = list.records.len();
        list.records.retain(|key, _| present.contains(key));
        if list.records.len() != before {
            // Expunges are changes too (RFC 7162 HIGHESTMODSEQ).
            list.bump_modseq();
            changed = true;
        }
        if claim_recent && list.first_recent != list.next {
            list.first_recent = list.next;
            changed = true;
        }
        if changed {
            replace_file(&self.dir, UIDLIST, &list.render())?;
        }
        entries.sort_by_key(|e| e.uid);
        Ok(Snapshot {
            uid_validity: list.validity,
            uid_next: list.next,
            highest_modseq: list.highest_modseq,
            entries,
            keywords: self.keywords(),
        })
    }

    /// Every message file in `cur/` and `new/`; with `take_new`, those in `new/` move to `cur/`.
    fn files(&self, take_new: bool) -> std::io::Result<Vec<Found>> {
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

    fn modified(&self, path: &Path) -> u64 {
        self.dir
            .metadata(path)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs())
    }

    /// The size a message is served with: the `W=` its name carries (Dovecot's, and ours),
    /// else counted once from the file.
    fn served_size(&self, key: &str, path: &Path) -> u64 {
        if let Some(size) = name_field(key, "W=") {
            return size;
        }
        match self.dir.read(path) {
            Ok(bytes) => crlf_len(&bytes),
            Err(_) => self.dir.metadata(path).map_or(0, |m| m.len()),
        }
    }

    fn read_uidlist(&self) -> UidList {
        UidList::parse(&self.dir.read_to_string(UIDLIST).unwrap_or_default())
    }

    /// A new index, for a folder without one or whose UIDs are used up (RFC 3501 §2.3.1.1): a
    /// new UIDVALIDITY, every message to be numbered again. Call under the lock.
    fn fresh_index(&self, old: &UidList) -> std::io::Result<UidList> {
        Ok(UidList {
            validity: self.new_uid_validity()?,
            next: 1,
            highest_modseq: old.highest_modseq,
            first_recent: 1,
            records: Default::default(),
        })
    }

    /// A UIDVALIDITY no folder of this Maildir had before: the clock, or one more than the
    /// last one given when the clock has not moved on (DELETE then CREATE in one second).
    fn new_uid_validity(&self) -> std::io::Result<u32> {
        let _lock = lock_file(&self.root, &format!("{LAST_UIDVALIDITY}.lock"))?;
        let last: u32 = self
            .root
            .read_to_string(LAST_UIDVALIDITY)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let validity = ((now_secs() & 0xffff_ffff) as u32)
            .max(last.wrapping_add(1))
            .max(1);
        replace_file(&self.root, LAST_UIDVALIDITY, &format!("{validity}\n"))?;
        Ok(validity)
    }

    /// The folder's keyword names.
    pub fn keywords(&self) -> Keywords {
        Keywords::parse(&self.dir.read_to_string(keywords::FILE).unwrap_or_default())
    }

    /// Letters for keyword names, adding names the folder lacks when `add`; a name that does
    /// not fit (all 26 letters taken) is a [`keywords::KeywordLimit`] error and nothing is
    /// added. Call under the lock.
    fn keyword_letters(&self, names: &[String], add: bool) -> std::io::Result<(Flags, Keywords)> {
        let mut known = self.keywords();
        let before = known.clone();
        let mut letters = String::new();
        for name in names {
            let letter = if add {
                known.letter_or_add(name)
            } else {
                known.letter(name)
            };
            if add && letter.is_none() && keywords::is_atom(name) && !name.starts_with('\\') {
                // Kept nowhere else: a keyword only an index of ours held would be lost to
                // Dovecot, mutt and a rebuilt index. Refused, so the client knows.
                return Err(std::io::Error::other(keywords::KeywordLimit));
            }
            letters.extend(letter);
        }
        if known != before {
            replace_file(&self.dir, keywords::FILE, &known.render())?;
        }
        Ok((Flags::parse(&letters), known))
    }

    /// Where the message's file should be inside the folder, from its key, flags and directory.
    pub fn path_of(&self, entry: &MailEntry) -> PathBuf {
        if entry.in_new {
            Path::new("new").join(&entry.key)
        } else {
            Path::new("cur").join(format!("{}:2,{}", entry.key, entry.flags))
        }
    }

    /// The message's bytes with CRLF line ends (the file may have moved since the snapshot:
    /// flags changed, here or by another program). `NotFound` when it is gone.
    pub fn read(&self, entry: &MailEntry) -> std::io::Result<Vec<u8>> {
        let mut finder = Finder::new(self);
        let bytes = finder.on_file(entry, |path, _| self.dir.read(path))?;
        bytes.map(to_crlf).ok_or_else(|| gone(&entry.key))
    }

    /// Every message file by key: where it is and its flags.
    fn locate(&self) -> std::io::Result<HashMap<String, (PathBuf, Flags)>> {
        Ok(self
            .files(false)?
            .into_iter()
            .map(|f| (f.key, (f.path, f.flags)))
            .collect())
    }

    /// Applies a flag change to messages as they are now: the flags their files' names show,
    /// under the folder lock, so changes made meanwhile by other sessions (or programs) are
    /// kept. Messages gone since the caller's snapshot are left out of the result.
    pub fn update_flags(
        &self,
        targets: &[&MailEntry],
        change: &FlagChange<'_>,
    ) -> std::io::Result<FlagUpdate> {
        let _lock = self.lock()?;
        let adds = change.op != FlagOp::Remove;
        let (keyword_letters, keywords) = self.keyword_letters(change.keywords, adds)?;
        let given = change.system.union(keyword_letters);
        let mut list = self.read_uidlist();
        let mut modseq = None;
        let mut finder = Finder::new(self);
        let mut update = FlagUpdate {
            keywords,
            ..FlagUpdate::default()
        };
        for entry in targets {
            let Some(recorded) = list.records.get(&entry.key).map(|r| r.modseq) else {
                continue;
            };
            let guarded = change.unchanged_since.is_some_and(|n| recorded > n);
            // Applied to the file as it is named now: another program (Dovecot, mutt) may
            // rename it at any moment, and then it is looked for again.
            let found = finder.on_file(entry, |from, current| {
                let new = match change.op {
                    _ if guarded => current,
                    FlagOp::Replace => given,
                    FlagOp::Add => current.union(given),
                    FlagOp::Remove => current.without(given),
                };
                let target = Path::new("cur").join(format!("{}:2,{new}", entry.key));
                if from == target || guarded {
                    self.dir.metadata(from)?;
                } else {
                    self.dir.rename(from, &self.dir, &target)?;
                }
                Ok((current, new))
            })?;
            let Some((current, new)) = found else {
                continue; // expunged meanwhile
            };
            let mut now = (*entry).clone();
            now.flags = current;
            now.modseq = recorded;
            if guarded {
                update.modified.push(entry.uid);
                update.entries.push(now);
                continue;
            }
            now.in_new = false;
            if new != current {
                let seq = *modseq.get_or_insert_with(|| list.bump_modseq());
                if let Some(record) = list.records.get_mut(&entry.key) {
                    record.modseq = seq;
                    record.flags = Some(new);
                }
                now.flags = new;
                now.modseq = seq;
                update.changed.insert(entry.uid);
            }
            update.entries.push(now);
        }
        if modseq.is_some() {
            replace_file(&self.dir, UIDLIST, &list.render())?;
        }
        Ok(update)
    }

    /// Adds `\Seen`, as reading a message does; the message as it is afterwards (`None`: gone).
    pub fn mark_seen(&self, entry: &MailEntry) -> std::io::Result<Option<MailEntry>> {
        let change = FlagChange {
            op: FlagOp::Add,
            system: Flags::parse("S"),
            keywords: &[],
            unchanged_since: None,
        };
        Ok(self.update_flags(&[entry], &change)?.entries.pop())
    }

    /// Removes a message (POP3 DELE at QUIT, IMAP EXPUNGE); one already gone (another session
    /// or program expunged it) is not an error.
    pub fn delete(&self, entry: &MailEntry) -> std::io::Result<()> {
        Finder::new(self)
            .on_file(entry, |path, _| self.dir.remove_file(path))
            .map(drop)
    }

    /// Adds a message (IMAP APPEND, COPY) with system flags and keywords; returns its UID.
    pub fn append(
        &self,
        bytes: &[u8],
        system: Flags,
        keyword_names: &[String],
        internal_date: Option<u64>,
    ) -> std::io::Result<u32> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let served = crlf_len(bytes);
        let key = format!(
            "{}.M{}P{}Q{}.mailgate,S={},W={served}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            bytes.len(),
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
        let _lock = self.lock()?;
        let (keyword_letters, _) = self.keyword_letters(keyword_names, true)?;
        let flags = system.union(keyword_letters);
        let target = Path::new("cur").join(format!("{key}:2,{flags}"));
        self.dir.rename(&tmp, &self.dir, &target)?;
        self.dir.open("cur")?.sync_all()?;
        self.register(key, flags, served)
    }

    /// Adds several messages at once (IMAP MULTIAPPEND): all of them or, when any fails, none
    /// (the files already written are removed). Their UIDs, in order.
    pub fn append_all(&self, messages: &[NewMessage<'_>]) -> std::io::Result<Vec<u32>> {
        let mut written: Vec<PathBuf> = Vec::with_capacity(messages.len());
        let staged = messages
            .iter()
            .map(|m| {
                let (key, tmp) = self.stage(m.bytes, m.internal_date)?;
                written.push(tmp);
                Ok(key)
            })
            .collect::<std::io::Result<Vec<String>>>();
        let keys = match staged {
            Ok(keys) => keys,
            Err(e) => return Err(self.discard(&written, e)),
        };
        let _lock = match self.lock() {
            Ok(lock) => lock,
            Err(e) => return Err(self.discard(&written, e)),
        };
        let mut placed = Vec::with_capacity(messages.len());
        for (message, key) in messages.iter().zip(&keys) {
            let flags = match self.keyword_letters(message.keywords, true) {
                Ok((letters, _)) => message.system.union(letters),
                Err(e) => return Err(self.discard(&written, e)),
            };
            let target = Path::new("cur").join(format!("{key}:2,{flags}"));
            let tmp = Path::new("tmp").join(key);
            if let Err(e) = self.dir.rename(&tmp, &self.dir, &target) {
                return Err(self.discard(&written, e));
            }
            written.retain(|p| p != &tmp);
            written.push(target);
            placed.push((key.clone(), flags, crlf_len(message.bytes)));
        }
        let registered = self
            .dir
            .open("cur")
            .and_then(|cur| cur.sync_all())
            .and_then(|()| self.register_all(placed));
        registered.map_err(|e| self.discard(&written, e))
    }

    /// Adds copies of other messages (IMAP COPY and MOVE): all of them or, when any fails,
    /// none. `read(i)` gives the bytes of `sources[i]` (`None`: it is gone, and is skipped);
    /// each copy is written into `tmp/` before the next is read, so memory holds one message.
    /// The keywords of every copy are made room for at once, before anything is placed: a
    /// copy that would pass the keyword limit leaves nothing behind. The UID of each copy.
    pub fn append_copies(
        &self,
        sources: &[CopySource],
        mut read: impl FnMut(usize) -> Option<Vec<u8>>,
    ) -> std::io::Result<Vec<Option<u32>>> {
        let mut written: Vec<PathBuf> = Vec::new();
        let mut staged = Vec::new();
        for (i, source) in sources.iter().enumerate() {
            let Some(bytes) = read(i) else {
                continue;
            };
            match self.stage(&bytes, source.internal_date) {
                Ok((key, tmp)) => {
                    written.push(tmp);
                    staged.push((i, key, crlf_len(&bytes)));
                }
                Err(e) => return Err(self.discard(&written, e)),
            }
        }
        let _lock = match self.lock() {
            Ok(lock) => lock,
            Err(e) => return Err(self.discard(&written, e)),
        };
        let mut all: Vec<String> = staged
            .iter()
            .flat_map(|(i, _, _)| sources[*i].keywords.iter().cloned())
            .collect();
        all.sort_unstable();
        all.dedup();
        if let Err(e) = self.keyword_letters(&all, true) {
            return Err(self.discard(&written, e));
        }
        let mut placed = Vec::with_capacity(staged.len());
        for (i, key, served) in &staged {
            let source = &sources[*i];
            let flags = match self.keyword_letters(&source.keywords, false) {
                Ok((letters, _)) => source.system.union(letters),
                Err(e) => return Err(self.discard(&written, e)),
            };
            let target = Path::new("cur").join(format!("{key}:2,{flags}"));
            let tmp = Path::new("tmp").join(key);
            if let Err(e) = self.dir.rename(&tmp, &self.dir, &target) {
                return Err(self.discard(&written, e));
            }
            written.retain(|p| p != &tmp);
            written.push(target);
            placed.push((key.clone(), flags, *served));
        }
        let registered = self
            .dir
            .open("cur")
            .and_then(|cur| cur.sync_all())
            .and_then(|()| self.register_all(placed));
        let uids = registered.map_err(|e| self.discard(&written, e))?;
        let mut out = vec![None; sources.len()];
        for ((i, _, _), uid) in staged.iter().zip(uids) {
            out[*i] = Some(uid);
        }
        Ok(out)
    }

    /// Writes a message into `tmp/` under a fresh key; the key and the file's path.
    fn stage(
        &self,
        bytes: &[u8],
        internal_date: Option<u64>,
    ) -> std::io::Result<(String, PathBuf)> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let key = format!(
            "{}.M{}P{}R{}.mailgate,S={},W={}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            bytes.len(),
            crlf_len(bytes),
        );
        let tmp = Path::new("tmp").join(&key);
        let mut file = self.dir.create(&tmp)?.into_std();
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = self.dir.remove_file(&tmp);
            return Err(e);
        }
        if let Some(date) = internal_date {
            let _ = file.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(date));
        }
        Ok((key, tmp))
    }

    /// Removes the files of a failed [`Folder::append_all`]; the error it failed with.
    fn discard(&self, written: &[PathBuf], error: std::io::Error) -> std::io::Error {
        for path in written {
            let _ = self.dir.remove_file(path);
        }
        error
    }

    /// [`Folder::register`] for several messages, with one write of the index.
    fn register_all(&self, placed: Vec<(String, Flags, u64)>) -> std::io::Result<Vec<u32>> {
        let mut list = self.read_uidlist();
        let room = u32::try_from(placed.len()).unwrap_or(u32::MAX);
        if list.validity == 0 || list.next.checked_add(room).is_none() {
            list = self.fresh_index(&list)?;
        }
        let modseq = list.bump_modseq();
        let mut uids = Vec::with_capacity(placed.len());
        for (key, flags, served) in placed {
            let uid = list.next;
            list.next = list.next.saturating_add(1);
            let record = Record {
                uid,
                modseq,
                size: Some(served),
                flags: Some(flags),
            };
            list.records.insert(key, record);
            uids.push(uid);
        }
        replace_file(&self.dir, UIDLIST, &list.render())?;
        Ok(uids)
    }

    /// Gives a message just placed in `cur/` its UID (here, not at the next scan: COPY of many
    /// messages stays linear). Call under the lock.
    fn register(&self, key: String, flags: Flags, served: u64) -> std::io::Result<u32> {
        let mut list = self.read_uidlist();
        if list.validity == 0 || list.next == u32::MAX {
            list = self.fresh_index(&list)?;
        }
        let uid = list.next;
        list.next = list.next.saturating_add(1);
        let modseq = list.bump_modseq();
        list.records.insert(
            key,
            Record {
                uid,
                modseq,
                size: Some(served),
                flags: Some(flags),
            },
        );
        replace_file(&self.dir, UIDLIST, &list.render())?;
        Ok(uid)
    }

    /// Moves a message into `target` under the same file name (so JMAP keeps its id), its
    /// keywords renamed to the target's letters; its UID there.
    pub fn move_to(&self, entry: &MailEntry, target: &Folder) -> std::io::Result<u32> {
        let known = self.keywords();
        let _lock = target.lock()?;
        let moved = Finder::new(self).on_file(entry, |from, flags| {
            let names: Vec<String> = flags
                .keyword_letters()
                .filter_map(|letter| known.name(letter).map(str::to_string))
                .collect();
            let (letters, _) = target.keyword_letters(&names, true)?;
            let flags = flags.system().union(letters);
            let to = Path::new("cur").join(format!("{}:2,{flags}", entry.key));
            self.dir.rename(from, &target.dir, &to)?;
            Ok(flags)
        })?;
        let flags = moved.ok_or_else(|| gone(&entry.key))?;
        target.dir.open("cur")?.sync_all()?;
        target.register(entry.key.clone(), flags, entry.size)
    }

    /// The folder's UIDVALIDITY (giving it one if it has none yet).
    pub fn uid_validity(&self) -> std::io::Result<u32> {
        let validity = self.read_uidlist().validity;
        if validity != 0 {
            return Ok(validity);
        }
        self.scan(false).map(|s| s.uid_validity)
    }
}

/// How many times an operation on a message file is tried, the file looked for again after
/// each `NotFound`: another program sharing the Maildir renames files when it changes flags
/// (and Dovecot moves `new/` to `cur/`), with no lock of ours to wait for.
const ATTEMPTS: usize = 8;

fn gone(key: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("message {key} is gone"),
    )
}

/// Finds message files again when they moved: one listing of the folder shared by the
/// messages of one command, listed anew when a file is not where that listing put it.
struct Finder<'a> {
    folder: &'a Folder,
    listing: Option<HashMap<String, (PathBuf, Flags)>>,
}

impl<'a> Finder<'a> {
    fn new(folder: &'a Folder) -> Finder<'a> {
        Finder {
            folder,
            listing: None,
        }
    }

    /// Runs `op` on the message's file (its path and the flags its name holds): first where
    /// the entry says, then where a listing of the folder finds it, for as long as it keeps
    /// moving away (at most [`ATTEMPTS`] times). `None` when the message is gone.
    fn on_file<T>(
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

/// A numeric `,X=<n>` field of a Maildir base name (Dovecot's `S=` file size, `W=` size with
/// CRLF line ends).
fn name_field(key: &str, field: &str) -> Option<u64> {
    key.split(',')
        .skip(1)
        .find_map(|part| part.strip_prefix(field)?.parse().ok())
}

/// The length of `bytes` once every bare LF is a CRLF.
pub fn crlf_len(bytes: &[u8]) -> u64 {
    let bare = bare_lfs(bytes);
    (bytes.len() as u64).saturating_add(bare as u64)
}

fn bare_lfs(bytes: &[u8]) -> usize {
    let mut previous = 0u8;
    let mut count = 0;
    for &b in bytes {
        if b == b'\n' && previous != b'\r' {
            count += 1;
        }
        previous = b;
    }
    count
}

/// `bytes` with every bare LF made a CRLF (the same vector when there is none).
pub fn to_crlf(bytes: Vec<u8>) -> Vec<u8> {
    let bare = bare_lfs(&bytes);
    if bare == 0 {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len() + bare);
    let mut previous = 0u8;
    for b in bytes {
        if b == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        previous = b;
    }
    out
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

/// The special-use folders every user gets (at the first IMAP or JMAP login), with their
/// RFC 6154 attribute.
pub const SPECIAL_USE: [(&str, &str); 5] = [
    ("Archive", "\\Archive"),
    ("Drafts", "\\Drafts"),
    ("Junk", "\\Junk"),
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
];

/// Creates the special-use folders a Maildir lacks, subscribed (as Dovecot's
/// `auto = subscribe`), so that clients showing only subscribed folders show them.
pub fn ensure_special_use(maildir: &Path) -> std::io::Result<()> {
    let mut created = Vec::new();
    for (name, _) in SPECIAL_USE {
        let exists = folder_path(maildir, name).is_ok_and(|p| p.join("cur").is_dir());
        if !exists {
            Folder::open_in(maildir, name)?;
            created.push(name);
        }
    }
    if created.is_empty() {
        return Ok(());
    }
    super::subscriptions::add_all(maildir, &created)
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

    fn change<'a>(op: FlagOp, system: &str, keywords: &'a [String]) -> FlagChange<'a> {
        FlagChange {
            op,
            system: Flags::parse(system),
            keywords,
            unchanged_since: None,
        }
    }

    #[test]
    fn append_all_adds_every_message_with_its_flags_and_leaves_tmp_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = Folder::open(dir.path()).expect("open");
        folder
            .append(b"first", Flags::parse(""), &[], None)
            .expect("append");
        let work = ["Work".to_string()];
        let messages = [
            NewMessage {
                bytes: b"a\nb",
                system: Flags::parse("S"),
                keywords: &[],
                internal_date: Some(1_600_000_000),
            },
            NewMessage {
                bytes: b"c",
                system: Flags::parse("F"),
                keywords: &work,
                internal_date: None,
            },
        ];
        assert_eq!(folder.append_all(&messages).expect("append all"), [2, 3]);
        let snapshot = folder.scan(false).expect("scan");
        let summary: Vec<(u32, String, u64)> = snapshot
            .entries
            .iter()
            .map(|e| (e.uid, e.flags.system().to_string(), e.size))
            .collect();
        assert_eq!(
            summary,
            [
                (1, String::new(), 5),
                (2, "S".to_string(), 4),
                (3, "F".to_string(), 1)
            ]
        );
        assert_eq!(snapshot.entries[1].internal_date, 1_600_000_000);
        assert!(snapshot.entries[2].flags.keyword_letters().count() == 1);
        assert_eq!(folder.read(&snapshot.entries[1]).expect("read"), b"a\r\nb");
        let tmp = std::fs::read_dir(dir.path().join("tmp"))
            .expect("tmp")
            .count();
        assert_eq!(tmp, 0);
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
            .update_flags(&[&first.entries[0]], &change(FlagOp::Replace, "SF", &[]))
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
            [(1, "FS".to_string(), false), (3, String::new(), true)]
        );
        assert_eq!(second.uid_next, 4);
        assert!(second.highest_modseq > first.highest_modseq);
        assert_eq!(reopened.read(&second.entries[0]).expect("read"), b"one");
        let uid = reopened
            .append(b"four", Flags::parse("S"), &[], Some(1_000_000))
            .expect("append");
        assert_eq!(uid, 4);
        let third = reopened.scan(false).expect("scan");
        assert_eq!(third.entries.last().map(|e| e.uid), Some(4));
    }

    #[test]
    fn flag_changes_apply_to_the_current_flags_not_a_stale_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = Folder::open(dir.path()).expect("open");
        deliver(&folder, "100.a.mailgate", b"one");
        let seen = folder.scan(true).expect("scan").entries;
        let seen = folder.mark_seen(&seen[0]).expect("seen").expect("there");
        // Session B took its copy now: \Seen.
        let stale = seen.clone();
        // Session A adds \Answered.
        let a = folder
            .update_flags(&[&seen], &change(FlagOp::Add, "R", &[]))
            .expect("a");
        assert_eq!(a.entries[0].flags.to_string(), "RS");
        // Session B removes \Seen from its stale copy: A's \Answered stays.
        let b = folder
            .update_flags(&[&stale], &change(FlagOp::Remove, "S", &[]))
            .expect("b");
        assert_eq!(b.entries[0].flags.to_string(), "R");
        assert!(b.entries[0].modseq > a.entries[0].modseq);
        let now = folder.scan(false).expect("scan").entries;
        assert_eq!(now[0].flags.to_string(), "R");
        assert_eq!(now[0].modseq, b.entries[0].modseq);
        // UNCHANGEDSINCE older than the last change leaves the message alone.
        let mut guarded = change(FlagOp::Add, "F", &[]);
        guarded.unchanged_since = Some(a.entries[0].modseq);
        let refused = folder.update_flags(&[&now[0]], &guarded).expect("c");
        assert_eq!(refused.modified, [now[0].uid]);
        assert_eq!(refused.entries[0].flags.to_string(), "R");
        // A message expunged meanwhile is left out.
        folder.delete(&now[0]).expect("delete");
        let gone = folder
            .update_flags(&[&now[0]], &change(FlagOp::Add, "F", &[]))
            .expect("gone");
        assert!(gone.entries.is_empty());
    }

    #[test]
    fn keywords_are_dovecot_letters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = Folder::open(dir.path()).expect("open");
        // Dovecot's own: keyword 0 is $Forwarded, on a message as letter a.
        std::fs::write(folder.path.join("dovecot-keywords"), "0 $Forwarded\n").expect("kw");
        std::fs::write(folder.path.join("cur/100.x.host:2,Sa"), b"x").expect("msg");
        let snap = folder.scan(false).expect("scan");
        assert_eq!(snap.keywords.name('a'), Some("$Forwarded"));
        let names = ["$Junk".to_string(), "$forwarded".to_string()];
        let update = folder
            .update_flags(&[&snap.entries[0]], &change(FlagOp::Add, "", &names))
            .expect("store");
        assert_eq!(update.entries[0].flags.to_string(), "Sab");
        assert_eq!(update.keywords.name('b'), Some("$Junk"));
        assert_eq!(
            std::fs::read_to_string(folder.path.join("dovecot-keywords")).expect("read"),
            "0 $Forwarded\n1 $Junk\n"
        );
        assert!(folder.path.join("cur/100.x.host:2,Sab").exists());
        let uid = folder
            .append(b"y", Flags::parse("F"), &["Work".to_string()], None)
            .expect("append");
        let snap = folder.scan(false).expect("scan");
        let appended = snap.entries.iter().find(|e| e.uid == uid).expect("found");
        assert_eq!(appended.flags.to_string(), "Fc");
        assert_eq!(snap.keywords.name('c'), Some("Work"));
    }

    #[test]
    fn files_another_program_renamed_are_found_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = Folder::open(dir.path()).expect("open");
        deliver(&folder, "100.a.mailgate", b"one");
        deliver(&folder, "200.b.mailgate", b"two");
        let stale = folder.scan(true).expect("scan").entries;
        // Dovecot (or mutt) marks both \Seen: the files have other names now.
        for key in ["100.a.mailgate", "200.b.mailgate"] {
            std::fs::rename(
                folder.path.join(format!("cur/{key}:2,")),
                folder.path.join(format!("cur/{key}:2,S")),
            )
            .expect("rename");
        }
        let update = folder
            .update_flags(&[&stale[0]], &change(FlagOp::Add, "F", &[]))
            .expect("store");
        assert_eq!(update.entries[0].flags.to_string(), "FS");
        assert!(folder.path.join("cur/100.a.mailgate:2,FS").exists());
        assert_eq!(folder.read(&stale[1]).expect("read"), b"two");
        folder.delete(&stale[1]).expect("delete");
        assert!(!folder.path.join("cur/200.b.mailgate:2,S").exists());
        // Gone is gone: nothing to change, nothing to delete, nothing to read.
        let gone = folder
            .update_flags(&[&stale[1]], &change(FlagOp::Add, "F", &[]))
            .expect("store");
        assert!(gone.entries.is_empty());
        folder.delete(&stale[1]).expect("delete again");
        let err = folder.read(&stale[1]).expect_err("gone");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn a_27th_keyword_is_refused_and_nothing_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = Folder::open(dir.path()).expect("open");
        deliver(&folder, "100.a.mailgate", b"one");
        let entry = folder.scan(true).expect("scan").entries.remove(0);
        let full: Vec<String> = (0..26).map(|i| format!("k{i}")).collect();
        folder
            .update_flags(&[&entry], &change(FlagOp::Add, "", &full))
            .expect("26 fit");
        let entry = folder.scan(false).expect("scan").entries.remove(0);
        let more = ["k3".to_string(), "k26".to_string()];
        let err = folder
            .update_flags(&[&entry], &change(FlagOp::Add, "F", &more))
            .expect_err("27th");
        assert!(keywords::is_limit(&err), "{err}");
        let after = folder.scan(false).expect("scan").entries.remove(0);
        assert_eq!(after.flags, entry.flags);
        let err = folder
            .append(b"x", Flags::default(), &more, None)
            .expect_err("27th");
        assert!(keywords::is_limit(&err), "{err}");
        // Known ones are still fine.
        folder
            .update_flags(&[&after], &change(FlagOp::Remove, "", &more))
            .expect("remove");
    }

    #[test]
    fn lf_files_are_served_as_crlf_with_matching_sizes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = Folder::open(dir.path()).expect("open");
        let lf = b"Subject: hi\n\nline one\r\nline two\n";
        deliver(&folder, "100.lf.host", lf);
        // Dovecot's W= is taken as given.
        deliver(&folder, "200.w.host,S=5,W=7", b"a\nb\nc");
        let snap = folder.scan(true).expect("scan");
        let served = folder.read(&snap.entries[0]).expect("read");
        assert_eq!(served, b"Subject: hi\r\n\r\nline one\r\nline two\r\n");
        assert_eq!(snap.entries[0].size, served.len() as u64);
        assert_eq!(snap.entries[1].size, 7);
        assert_eq!(folder.read(&snap.entries[1]).expect("read"), b"a\r\nb\r\nc");
        // Sizes are learnt once and kept in the index.
        let index = std::fs::read_to_string(folder.path.join(UIDLIST)).expect("index");
        assert!(
            index.contains(&format!(" {} - 100.lf.host\n", served.len())),
            "{index}"
        );
    }

    #[test]
    fn a_recreated_folder_gets_a_new_uidvalidity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seen = HashSet::new();
        for _ in 0..3 {
            let folder = Folder::open_in(dir.path(), "Work").expect("open");
            assert!(seen.insert(folder.uid_validity().expect("validity")));
            std::fs::remove_dir_all(&folder.path).expect("delete");
        }
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
        sub.append(b"x", Flags::default(), &[], None)
            .expect("append");
        // A folder that is a link out of the Maildir is not followed, whatever its name.
        std::os::unix::fs::symlink(&outside, maildir.join(".Evil")).expect("link");
        assert!(Folder::open_in(&maildir, "Evil").is_err());
        assert!(Folder::open_in(&maildir, "../outside").is_err());
        assert!(Folder::open_in(&maildir, "INBOX").is_ok());
    }
}
