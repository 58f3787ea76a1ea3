//! Changing a folder: adding messages (APPEND, MULTIAPPEND), moving them, and flag changes
//! applied to the name a file has now, under the lock, never to a session's copy.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::files::{gone, Finder};
use super::served::served_len;
use super::{CopySource, FlagChange, FlagOp, FlagUpdate, Flags, Folder, MailEntry, NewMessage};
use crate::mail::clock::{at_unix_seconds, since_epoch};

impl Folder {
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
            let Some(recorded) = list.records.get(&*entry.key).map(|r| r.modseq) else {
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
                if let Some(record) = list.records.get_mut(&*entry.key) {
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
            self.write_uidlist(&list)?;
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

    /// Adds a message (IMAP APPEND, COPY) with system flags and keywords; returns its UID.
    pub fn append(
        &self,
        bytes: &[u8],
        system: Flags,
        keyword_names: &[String],
        internal_date: Option<u64>,
    ) -> std::io::Result<u32> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = since_epoch(SystemTime::now());
        let served = served_len(bytes);
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
            let time = at_unix_seconds(date);
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
            placed.push((key.clone(), flags, served_len(message.bytes)));
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
                    staged.push((i, key, served_len(&bytes)));
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
        let now = since_epoch(SystemTime::now());
        let key = format!(
            "{}.M{}P{}R{}.mailgate,S={},W={}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            bytes.len(),
            served_len(bytes),
        );
        let tmp = Path::new("tmp").join(&key);
        let mut file = self.dir.create(&tmp)?.into_std();
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = self.dir.remove_file(&tmp);
            return Err(e);
        }
        if let Some(date) = internal_date {
            let _ = file.set_modified(at_unix_seconds(date));
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
        target.register(entry.key.to_string(), flags, entry.size)
    }
}
