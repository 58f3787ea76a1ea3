//! The folder index, `mailgate-uidlist` (see [`super::super::uidlist`]), read and changed only
//! under the folder's exclusive `flock`: UIDs given in delivery order and kept across restarts,
//! mod-sequences, UIDVALIDITY, and the keyword letters of `dovecot-keywords`.

use std::collections::HashSet;
use std::io::Write;

use std::sync::Arc;
use std::time::SystemTime;

use cap_std::fs::{Dir, File, OpenOptions};

use super::keywords::{self, Keywords};
use super::memo::{self, Memo, Stamps};
use super::stamp::Stamp;
use super::{Flags, Folder, MailEntry, Snapshot};
use crate::mail::clock::unix_seconds;
use crate::store::uidlist::{Record, UidList, FILE as UIDLIST};

const LOCK: &str = "mailgate-uidlist.lock";
/// In the user's Maildir: the last UIDVALIDITY given to any of its folders.
const LAST_UIDVALIDITY: &str = "mailgate-uidvalidity";

/// Holds a `flock` until dropped.
pub(super) struct Locked(File);

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

/// Writes `name` inside `dir` whole or not at all: a temporary file, synced, renamed over it.
pub(super) fn replace_file(dir: &Dir, name: &str, text: &str) -> std::io::Result<()> {
    let tmp = format!("{name}.tmp");
    let mut file = dir.create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_data()?;
    dir.rename(&tmp, dir, name)
}

impl Folder {
    pub(super) fn lock(&self) -> std::io::Result<Locked> {
        lock_file(&self.dir, LOCK)
    }

    /// Reads the folder: every message with its UID (new ones get the next UIDs, in delivery
    /// order). With `claim_recent` (a read-write session), messages in `new/` move to `cur/`
    /// and the recent ones are claimed: no other session sees them as recent.
    /// An unchanged folder is answered from the process's memory of it (see [`memo`]).
    pub fn scan(&self, claim_recent: bool) -> std::io::Result<Snapshot> {
        let shared = memo::of(&self.dir)?;
        {
            let memo = memo::lock(&shared);
            let stamps = Stamps::take(&self.dir)?;
            if let Some(last) = memo.unchanged(&stamps) {
                let unclaimed = last.entries.iter().any(|e| e.recent || e.in_new);
                if !claim_recent || !unclaimed {
                    return Ok(last.clone());
                }
            }
        }
        // The folder lock first, then the memory (as every change takes them).
        let _lock = self.lock()?;
        let mut memo = memo::lock(&shared);
        // Taken again under the lock (the uidlist cannot change now), before the listing: a
        // change made while listing shows in the next scan's stamps.
        let taken = SystemTime::now();
        let stamps = Stamps::take(&self.dir)?;
        let (snapshot, first_recent) = self.rescan(&mut memo, claim_recent, stamps.uidlist)?;
        let mut kept = snapshot.clone();
        for entry in &mut kept.entries {
            entry.recent = entry.uid >= first_recent;
        }
        memo.keep(stamps, taken, kept);
        Ok(snapshot)
    }

    /// [`Folder::scan`] from the listing: every file matched with its record, UIDs given to
    /// new ones, records of files gone dropped. Reads only the files it does not know yet.
    /// The snapshot, and the first UID still recent afterwards.
    fn rescan(
        &self,
        memo: &mut Memo,
        claim_recent: bool,
        uidlist: Option<Stamp>,
    ) -> std::io::Result<(Snapshot, u32)> {
        let mut list = match memo.uidlist(uidlist) {
            Some(list) => list,
            None => self.parse_uidlist(),
        };
        {
            let Memo { fields, dates, .. } = &mut *memo;
            if let Err(e) = fields.ready(&self.dir, dates) {
                tracing::debug!("folder cache unusable: {e}");
            }
        }
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
        let mut present: HashSet<Arc<str>> = HashSet::with_capacity(found.len());
        let mut new_dates = Vec::new();
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
            let (key, internal_date) = match memo.dates.get_key_value(file.key.as_str()) {
                Some((key, date)) => (key.clone(), *date),
                None => {
                    let key: Arc<str> = Arc::from(file.key.as_str());
                    let date = self.modified(&file.path);
                    memo.dates.insert(key.clone(), date);
                    new_dates.push((key.clone(), date));
                    (key, date)
                }
            };
            if let Some(held) = list.records.get_mut(&file.key) {
                *held = record;
            } else {
                list.records.insert(file.key, record);
            }
            present.insert(key.clone());
            entries.push(MailEntry {
                uid: record.uid,
                size: record.size.unwrap_or(0),
                internal_date,
                modseq: record.modseq,
                key,
                in_new: file.in_new,
                flags: file.flags,
                recent: record.uid >= list.first_recent,
            });
        }
        memo.fields.put_dates(&new_dates);
        memo.dates.retain(|key, _| present.contains(key));
        let before = list.records.len();
        list.records.retain(|key, _| present.contains(key.as_str()));
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
            self.write_uidlist_in(memo, list.clone())?;
        } else {
            memo.uidlist = uidlist.map(|stamp| (stamp, list.clone()));
        }
        entries.sort_by_key(|e| e.uid);
        let snapshot = Snapshot {
            uid_validity: list.validity,
            uid_next: list.next,
            highest_modseq: list.highest_modseq,
            entries,
            keywords: self.keywords(),
        };
        Ok((snapshot, list.first_recent))
    }

    /// The uidlist as it is on disk (from memory when the file did not change). Call under
    /// the lock.
    pub(super) fn read_uidlist(&self) -> UidList {
        let Ok(memo) = memo::of(&self.dir) else {
            return self.parse_uidlist();
        };
        let mut memo = memo::lock(&memo);
        let stamp = Stamp::at(&self.dir, UIDLIST).ok().flatten();
        if let Some(list) = memo.uidlist(stamp) {
            return list;
        }
        let list = self.parse_uidlist();
        memo.uidlist = stamp.map(|s| (s, list.clone()));
        list
    }

    fn parse_uidlist(&self) -> UidList {
        UidList::parse(&self.dir.read_to_string(UIDLIST).unwrap_or_default())
    }

    /// Replaces the uidlist, and remembers it as written. Call under the lock.
    pub(super) fn write_uidlist(&self, list: &UidList) -> std::io::Result<()> {
        let memo = memo::of(&self.dir)?;
        let mut memo = memo::lock(&memo);
        self.write_uidlist_in(&mut memo, list.clone())
    }

    fn write_uidlist_in(&self, memo: &mut Memo, list: UidList) -> std::io::Result<()> {
        memo.uidlist = None;
        replace_file(&self.dir, UIDLIST, &list.render())?;
        // Under the lock nobody else writes it: the stamp taken now is of what was written.
        if let Some(stamp) = Stamp::at(&self.dir, UIDLIST)? {
            memo.uidlist = Some((stamp, list));
        }
        Ok(())
    }

    /// A new index, for a folder without one or whose UIDs are used up (RFC 3501 §2.3.1.1): a
    /// new UIDVALIDITY, every message to be numbered again. Call under the lock.
    pub(super) fn fresh_index(&self, old: &UidList) -> std::io::Result<UidList> {
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
        let validity = ((unix_seconds() & 0xffff_ffff) as u32)
            .max(last.wrapping_add(1))
            .max(1);
        replace_file(&self.root, LAST_UIDVALIDITY, &format!("{validity}\n"))?;
        Ok(validity)
    }

    /// Letters for keyword names, adding names the folder lacks when `add`; a name that does
    /// not fit (all 26 letters taken) is a [`keywords::KeywordLimit`] error and nothing is
    /// added. Call under the lock.
    pub(super) fn keyword_letters(
        &self,
        names: &[String],
        add: bool,
    ) -> std::io::Result<(Flags, Keywords)> {
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

    /// [`Folder::register`] for several messages, with one write of the index.
    pub(super) fn register_all(
        &self,
        placed: Vec<(String, Flags, u64)>,
    ) -> std::io::Result<Vec<u32>> {
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
        self.write_uidlist(&list)?;
        Ok(uids)
    }

    /// Gives a message just placed in `cur/` its UID (here, not at the next scan: COPY of many
    /// messages stays linear). Call under the lock.
    pub(super) fn register(&self, key: String, flags: Flags, served: u64) -> std::io::Result<u32> {
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
        self.write_uidlist(&list)?;
        Ok(uid)
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
