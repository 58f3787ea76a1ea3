//! A folder's index kept in memory between scans, one per folder for the whole process (every
//! session shares it): the parsed `mailgate-uidlist`, the internal dates already read, and the
//! last scan's result with the stamps of what it was made from (`cur/`, `new/`, the uidlist and
//! `dovecot-keywords`). A scan whose stamps all match, taken long enough after the last change
//! that the file system could not have hidden one, is answered from memory without listing or
//! reading anything: O(1) for an unchanged folder, whoever else writes the Maildir (a program
//! that adds, renames or removes a file changes its directory's mtime). Otherwise the scan lists
//! the folder again but reads no file it knows already.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::SystemTime;

use cap_std::fs::Dir;

use super::cache::{Field, FieldCache};
use super::stamp::Stamp;
use super::Snapshot;
use crate::store::uidlist::UidList;

/// Messages the process keeps indexes for at most (about 130 bytes each); the folders used
/// longest ago are forgotten first, and rebuilt from disk when used again.
const MESSAGES_HELD: usize = 400_000;

/// The stamps a scan's result was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamps {
    pub cur: Option<Stamp>,
    pub new: Option<Stamp>,
    pub uidlist: Option<Stamp>,
    pub keywords: Option<Stamp>,
}

impl Stamps {
    pub(super) fn take(dir: &Dir) -> std::io::Result<Stamps> {
        Ok(Stamps {
            cur: Stamp::at(dir, "cur")?,
            new: Stamp::at(dir, "new")?,
            uidlist: Stamp::at(dir, crate::store::uidlist::FILE)?,
            keywords: Stamp::at(dir, crate::store::keywords::FILE)?,
        })
    }

    /// Whether equal stamps later prove that nothing changed: no directory was changed so
    /// lately that a second change could share its mtime.
    fn settled(&self, now: SystemTime) -> bool {
        [self.cur, self.new]
            .iter()
            .flatten()
            .all(|stamp| !stamp.recent(now))
    }
}

/// One folder's memory.
#[derive(Default)]
pub(super) struct Memo {
    /// The last scan's result and the stamps taken before it listed the folder; `None` when
    /// something changed since that the stamps might not show (this process wrote the folder).
    pub last: Option<(Stamps, Snapshot)>,
    /// The bytes of the messages in `last` (as served): the folder's part of its user's
    /// storage, summed once per scan that lists the folder, not per question.
    pub bytes: u64,
    /// The stamps in `last` settled when taken: equal stamps prove nothing changed.
    pub settled: bool,
    /// The uidlist as parsed, with the stamp of the file it was read from or written to.
    pub uidlist: Option<(Stamp, UidList)>,
    /// Internal dates (file mtimes) by message key: read once per message.
    pub dates: HashMap<Arc<str>, u64>,
    /// The folder's cache file of parsed fields.
    pub fields: FieldCache,
}

impl Memo {
    /// The last scan's result when nothing changed since, as `stamps` (taken now) prove.
    pub(super) fn unchanged(&self, stamps: &Stamps) -> Option<&Snapshot> {
        match &self.last {
            Some((was, snapshot)) if self.settled && was == stamps => Some(snapshot),
            _ => None,
        }
    }

    /// Keeps a scan's result, made from a folder whose stamps before the listing were `stamps`.
    pub(super) fn keep(&mut self, stamps: Stamps, taken: SystemTime, snapshot: Snapshot) {
        self.settled = stamps.settled(taken);
        self.bytes = snapshot
            .entries
            .iter()
            .fold(0u64, |sum, e| sum.saturating_add(e.size));
        self.last = Some((stamps, snapshot));
    }

    /// The parsed uidlist if the file is still the one stamped.
    pub(super) fn uidlist(&self, now: Option<Stamp>) -> Option<UidList> {
        match (&self.uidlist, now) {
            (Some((was, list)), Some(now)) if *was == now => Some(list.clone()),
            _ => None,
        }
    }

    fn size(&self) -> usize {
        self.last
            .as_ref()
            .map_or(0, |(_, s)| s.entries.len())
            .max(self.dates.len())
    }
}

type Memos = HashMap<(u64, u64), (Arc<Mutex<Memo>>, u64)>;

static MEMOS: LazyLock<Mutex<(Memos, u64)>> = LazyLock::new(Default::default);

/// The memory of the folder whose directory is `dir` (found by its device and inode, so two
/// paths to one folder share it, and a folder deleted and made again does not).
pub(super) fn of(dir: &Dir) -> std::io::Result<Arc<Mutex<Memo>>> {
    let stat = rustix::fs::fstat(dir)?;
    let id = (stat.st_dev as u64, stat.st_ino as u64);
    let mut memos = MEMOS.lock().unwrap_or_else(|e| e.into_inner());
    let (table, clock) = &mut *memos;
    *clock = clock.wrapping_add(1);
    let now = *clock;
    if let Some((memo, used)) = table.get_mut(&id) {
        *used = now;
        return Ok(memo.clone());
    }
    let memo = Arc::new(Mutex::new(Memo::default()));
    table.insert(id, (memo.clone(), now));
    forget_oldest(table);
    Ok(memo)
}

/// Forgets the folders used longest ago while all the indexes held pass [`MESSAGES_HELD`].
fn forget_oldest(table: &mut Memos) {
    let sizes: Vec<((u64, u64), u64, usize)> = table
        .iter()
        .map(|(id, (memo, used))| {
            let size = memo.try_lock().map_or(0, |m| m.size());
            (*id, *used, size)
        })
        .collect();
    let mut total: usize = sizes.iter().map(|s| s.2).sum();
    if total <= MESSAGES_HELD {
        return;
    }
    let mut by_age = sizes;
    by_age.sort_by_key(|s| s.1);
    for (id, _, size) in by_age {
        if total <= MESSAGES_HELD {
            break;
        }
        table.remove(&id);
        total = total.saturating_sub(size);
    }
}

/// Locks a folder's memory (a panic elsewhere does not make it unusable: it is a cache).
pub(super) fn lock(memo: &Mutex<Memo>) -> MutexGuard<'_, Memo> {
    memo.lock().unwrap_or_else(|e| e.into_inner())
}

impl super::Folder {
    /// The cached `fields` of a message: all of them, or `None` when any is not cached.
    pub fn cached(&self, entry: &super::MailEntry, fields: &[Field]) -> Option<Vec<Vec<u8>>> {
        let shared = of(&self.dir).ok()?;
        let mut memo = lock(&shared);
        let Memo {
            fields: cache,
            dates,
            ..
        } = &mut *memo;
        if let Err(e) = cache.ready(&self.dir, dates) {
            tracing::debug!("folder cache unusable: {e}");
            return None;
        }
        fields.iter().map(|f| cache.get(&entry.key, *f)).collect()
    }

    /// Keeps fields a reader computed from a message for every later reader.
    pub fn cache(&self, entry: &super::MailEntry, values: &[(Field, &[u8])]) {
        let Ok(shared) = of(&self.dir) else {
            return;
        };
        let mut memo = lock(&shared);
        let Memo {
            fields: cache,
            dates,
            ..
        } = &mut *memo;
        if cache.ready(&self.dir, dates).is_ok() {
            cache.put(&entry.key, values);
        }
    }
}

/// Forgets every folder, as a process starting afresh (tests).
#[cfg(test)]
pub(super) fn forget_all() {
    MEMOS.lock().unwrap_or_else(|e| e.into_inner()).0.clear();
}
