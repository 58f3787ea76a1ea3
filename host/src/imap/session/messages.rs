//! Commands on the selected mailbox's messages: FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE.
//! Each returns the text of its tagged reply; the caller sends it after anything untagged.

use imap_codec::imap_types::fetch::{Macro, MacroOrMessageDataItemNames, MessageDataItemName};
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;

use super::super::extensions::{BinaryItem, Extras, ReturnOption, SortKey};
use super::super::search::{self, Candidate};
use super::super::{flags, sort, thread, wire};
use super::ImapSession;
use crate::blocking;
use crate::message::Message;
use crate::store::mailbox::{FlagChange, FlagOp, MailEntry};

/// Work one SEARCH may do: bytes of text examined, plus 64 per key and message.
const SEARCH_BUDGET: u64 = 1 << 30;

/// How FETCH responses are shaped beyond the items imap-codec parsed.
#[derive(Clone, Copy)]
struct Shape {
    hide_uid: bool,
    modseq: bool,
}

/// Why a message's content could not be had.
enum Unavailable {
    /// Another session expunged it: the file is gone.
    Expunged,
    Unreadable,
    /// BINARY of a part whose transfer encoding cannot be undone.
    UnknownEncoding(String),
}

/// The items a FETCH macro stands for.
fn expand<'a>(what: &MacroOrMessageDataItemNames<'a>) -> Vec<MessageDataItemName<'a>> {
    use MessageDataItemName as Item;
    match what {
        MacroOrMessageDataItemNames::Macro(Macro::All) => {
            vec![
                Item::Flags,
                Item::InternalDate,
                Item::Rfc822Size,
                Item::Envelope,
            ]
        }
        MacroOrMessageDataItemNames::Macro(Macro::Fast) => {
            vec![Item::Flags, Item::InternalDate, Item::Rfc822Size]
        }
        MacroOrMessageDataItemNames::Macro(_) => vec![
            Item::Flags,
            Item::InternalDate,
            Item::Rfc822Size,
            Item::Envelope,
            Item::Body,
        ],
        MacroOrMessageDataItemNames::MessageDataItemNames(names) => names.clone(),
    }
}

impl ImapSession {
    /// Indexes into the view for a sequence or UID set.
    fn resolve(&self, set: &SequenceSet, uid: bool) -> Vec<usize> {
        let Some(sel) = self.selected.as_ref() else {
            return Vec::new();
        };
        let largest_seq = sel.len() as u32;
        let largest_uid = sel.last_uid();
        (0..sel.len())
            .filter(|&i| {
                if uid {
                    search::in_set(set, sel.entry(i).uid, largest_uid)
                } else {
                    search::in_set(set, i as u32 + 1, largest_seq)
                }
            })
            .collect()
    }

    fn load(&self, i: usize) -> Result<Message, Unavailable> {
        let sel = self.selected.as_ref().ok_or(Unavailable::Unreadable)?;
        let entry = sel.get(i).ok_or(Unavailable::Unreadable)?;
        if let Some(edited) = sel.edited(i) {
            return Ok(Message::new(edited.as_ref().clone()));
        }
        match sel.folder.read(entry) {
            Ok(bytes) => Ok(Message::new(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Unavailable::Expunged),
            Err(_) => Err(Unavailable::Unreadable),
        }
    }

    /// SEARCH (and SORT, ESEARCH's RETURN, CONDSTORE's MODSEQ key), evaluated off the async
    /// workers (it reads and parses messages), each message read and parsed at most once;
    /// refused when it runs over its work budget.
    pub(super) fn search(&mut self, tag: &str, key: &SearchKey<'_>, uid: bool, extras: &Extras) {
        if extras.search_modseq {
            self.enable_condstore();
        }
        let verb = if extras.thread {
            "THREAD"
        } else if extras.sort.is_some() {
            "SORT"
        } else {
            "SEARCH"
        };
        let found = blocking::run(|| {
            let mut found = self.matching(key)?;
            if let Some(keys) = &extras.sort {
                self.sort(&mut found, keys);
            }
            Some(found)
        });
        let Some(found) = found else {
            self.saved.clear();
            self.send(&format!(
                "{tag} NO [LIMIT] Search too complex, narrow it down"
            ));
            return;
        };
        let Some(sel) = self.selected.as_ref() else {
            return;
        };
        if extras.thread {
            let threads = blocking::run(|| self.threads(&found, uid));
            self.send(&format!("* THREAD {threads}"));
            self.send(&format!("{tag} OK THREAD completed"));
            return;
        }
        let mut saving = None;
        // IMAP4rev2 answers every SEARCH with ESEARCH (RFC 9051 §6.4.4).
        let rev2_default = (self.rev2 && extras.sort.is_none()).then(Vec::new);
        let returns = extras.search_return.clone().or(rev2_default);
        if let Some(options) = returns.as_ref().filter(|o| o.contains(&ReturnOption::Save)) {
            // RFC 5182: with MIN or MAX alone, only those are saved.
            let mut kept: Vec<u32> = found.iter().map(|&i| sel.entry(i).uid).collect();
            if !options.contains(&ReturnOption::All) && !options.contains(&ReturnOption::Count) {
                let (first, last) = (kept.iter().min().copied(), kept.iter().max().copied());
                let min = options
                    .contains(&ReturnOption::Min)
                    .then_some(first)
                    .flatten();
                let max = options
                    .contains(&ReturnOption::Max)
                    .then_some(last)
                    .flatten();
                if min.is_some() || max.is_some() {
                    kept = min.into_iter().chain(max).collect();
                }
            }
            saving = Some(kept);
        }
        let number = |&i: &usize| {
            if uid {
                sel.entry(i).uid
            } else {
                i as u32 + 1
            }
        };
        let modseq_of = |&i: &usize| sel.entry(i).modseq;
        let line = match &returns {
            None => {
                let list: String = found.iter().map(|i| format!(" {}", number(i))).collect();
                let highest = found.iter().map(modseq_of).max();
                let modseq = match highest {
                    Some(m) if extras.search_modseq => format!(" (MODSEQ {m})"),
                    _ => String::new(),
                };
                format!("* {verb}{list}{modseq}")
            }
            // SAVE alone asks for no reply (RFC 5182 §2.1).
            Some(options) if options == &[ReturnOption::Save] => String::new(),
            Some(options) => {
                let mut matched: Vec<(u32, u64)> =
                    found.iter().map(|i| (number(i), modseq_of(i))).collect();
                matched.sort_unstable();
                let shown: Vec<ReturnOption> = options
                    .iter()
                    .copied()
                    .filter(|o| *o != ReturnOption::Save)
                    .collect();
                esearch(tag, uid, &shown, &matched, extras.search_modseq)
            }
        };
        if !line.is_empty() {
            self.send(&line);
        }
        if let Some(kept) = saving {
            self.saved = kept;
        }
        self.send(&format!("{tag} OK {verb} completed"));
    }

    /// Indexes into the view of the messages the key matches.
    fn matching(&self, key: &SearchKey<'_>) -> Option<Vec<usize>> {
        let sel = self.selected.as_ref()?;
        let largest = (sel.len() as u32, sel.last_uid());
        let work = std::cell::Cell::new(0u64);
        let mut out = Vec::new();
        for (i, entry) in sel.entries().iter().enumerate() {
            let load = || self.load(i).ok();
            let message = search::LazyMessage::new(&load);
            let candidate = Candidate {
                seq: i as u32 + 1,
                uid: entry.uid,
                flags: entry.flags,
                keywords: &sel.keywords,
                recent: sel.is_recent(i),
                size: sel.size(i),
                internal_date: entry.internal_date,
                message: &message,
                work: &work,
            };
            if search::matches(key, &candidate, largest) {
                out.push(i);
            }
            if work.get() > SEARCH_BUDGET {
                return None;
            }
        }
        Some(out)
    }

    /// THREAD=REFERENCES over the matches.
    fn threads(&self, found: &[usize], uid: bool) -> String {
        let Some(sel) = self.selected.as_ref() else {
            return String::new();
        };
        let messages: Vec<thread::Threaded> = found
            .iter()
            .map(|&i| {
                let entry = sel.entry(i);
                let number = if uid { entry.uid } else { i as u32 + 1 };
                match self.load(i) {
                    Ok(message) => thread::read(&message, number, entry.internal_date),
                    Err(_) => thread::read(&Message::new(Vec::new()), number, entry.internal_date),
                }
            })
            .collect();
        thread::references(&messages)
    }

    /// Orders matches by SORT keys (RFC 5256), ties by sequence number.
    fn sort(&self, found: &mut [usize], keys: &[SortKey]) {
        let Some(sel) = self.selected.as_ref() else {
            return;
        };
        let values: std::collections::HashMap<usize, Vec<sort::Value>> = found
            .iter()
            .map(|&i| {
                let message = self.load(i).ok();
                let facts = sort::Facts {
                    message: message.as_ref(),
                    size: sel.size(i),
                    internal_date: sel.entry(i).internal_date,
                };
                (
                    i,
                    keys.iter().map(|k| sort::value(k.kind, &facts)).collect(),
                )
            })
            .collect();
        found.sort_by(|a, b| {
            let (va, vb) = (&values[a], &values[b]);
            keys.iter()
                .zip(va.iter().zip(vb))
                .map(|(key, (x, y))| {
                    let order = x.cmp(y);
                    if key.reverse {
                        order.reverse()
                    } else {
                        order
                    }
                })
                .find(|o| o.is_ne())
                .unwrap_or_else(|| a.cmp(b))
        });
    }

    /// FETCH. A message another session expunged is left out, and the reply says so (RFC 9051
    /// §7.1 EXPUNGEISSUED), rather than inventing its content.
    pub(super) fn fetch(
        &mut self,
        set: &SequenceSet,
        what: &MacroOrMessageDataItemNames<'_>,
        uid: bool,
        extras: &Extras,
    ) -> String {
        if extras.vanished && !(uid && self.qresync) {
            return "BAD VANISHED needs UID FETCH and QRESYNC enabled".into();
        }
        if extras.fetch_modseq || extras.changed_since.is_some() {
            self.enable_condstore();
        }
        let mut items = expand(what);
        if uid && !items.contains(&MessageDataItemName::Uid) {
            items.insert(0, MessageDataItemName::Uid);
        }
        let shape = Shape {
            // The UID imap-codec was given in place of a lone MODSEQ is not shown.
            hide_uid: extras.fetch_uid_stand_in && !uid,
            modseq: extras.fetch_modseq || extras.changed_since.is_some(),
        };
        if extras.vanished {
            let largest = self
                .selected
                .as_ref()
                .map_or(0, |s| s.uid_next.saturating_sub(1));
            let gone = self.missing_uids(&search::intervals(set, largest));
            if !gone.is_empty() {
                self.send(&format!("* VANISHED (EARLIER) {gone}"));
            }
        }
        let mut chosen = self.resolve(set, uid);
        if let (Some(since), Some(sel)) = (extras.changed_since, self.selected.as_ref()) {
            chosen.retain(|&i| sel.entry(i).modseq > since);
        }
        // Reading and parsing the messages is file and CPU work: off the async workers.
        let (expunged, unknown) = blocking::run(|| {
            let (mut expunged, mut unknown) = (0, None);
            for i in chosen {
                match self.fetch_one(i, &items, &extras.binary, shape) {
                    Ok(line) => {
                        self.client.conn.queue(&line);
                        self.client.conn.queue(b"\r\n");
                    }
                    Err(Unavailable::Expunged) => expunged += 1,
                    Err(Unavailable::UnknownEncoding(name)) => unknown = Some(name),
                    Err(Unavailable::Unreadable) => {}
                }
            }
            (expunged, unknown)
        });
        if let Some(name) = unknown {
            format!("NO [UNKNOWN-CTE] Cannot undo the transfer encoding {name}")
        } else if expunged > 0 {
            "NO [EXPUNGEISSUED] Some of the requested messages no longer exist".into()
        } else {
            "OK FETCH completed".into()
        }
    }

    fn fetch_one(
        &mut self,
        i: usize,
        items: &[MessageDataItemName<'_>],
        binary: &[BinaryItem],
        shape: Shape,
    ) -> Result<Vec<u8>, Unavailable> {
        let needs_message = !binary.is_empty()
            || items.iter().any(|it| {
                !matches!(
                    it,
                    MessageDataItemName::Uid
                        | MessageDataItemName::Flags
                        | MessageDataItemName::InternalDate
                        | MessageDataItemName::Rfc822Size
                )
            });
        let message = if needs_message {
            Some(self.load(i)?)
        } else {
            None
        };
        let empty = Message::new(Vec::new());
        let m = message.as_ref().unwrap_or(&empty);
        let mut sets_seen = false;
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let sel = self.selected.as_ref().ok_or(Unavailable::Unreadable)?;
        let entry = sel.get(i).ok_or(Unavailable::Unreadable)?;
        for item in items {
            let part: Vec<u8> = match item {
                MessageDataItemName::Uid if shape.hide_uid => continue,
                MessageDataItemName::Uid => format!("UID {}", entry.uid).into_bytes(),
                MessageDataItemName::Flags => continue,
                MessageDataItemName::InternalDate => format!(
                    "INTERNALDATE \"{}\"",
                    wire::internal_date(entry.internal_date)
                )
                .into_bytes(),
                MessageDataItemName::Rfc822Size => {
                    format!("RFC822.SIZE {}", sel.size(i)).into_bytes()
                }
                MessageDataItemName::Envelope => {
                    [b"ENVELOPE ".to_vec(), wire::envelope(m)].concat()
                }
                MessageDataItemName::BodyStructure => {
                    [b"BODYSTRUCTURE ".to_vec(), wire::body_structure(m, true)].concat()
                }
                MessageDataItemName::Body => {
                    [b"BODY ".to_vec(), wire::body_structure(m, false)].concat()
                }
                MessageDataItemName::Rfc822 => {
                    sets_seen = true;
                    [b"RFC822 ".to_vec(), wire::string_literal(m.raw())].concat()
                }
                MessageDataItemName::Rfc822Header => {
                    let header = wire::section_bytes(
                        m,
                        Some(&imap_codec::imap_types::fetch::Section::Header(None)),
                    );
                    [b"RFC822.HEADER ".to_vec(), wire::string_literal(&header)].concat()
                }
                MessageDataItemName::Rfc822Text => {
                    sets_seen = true;
                    [b"RFC822.TEXT ".to_vec(), wire::string_literal(m.body())].concat()
                }
                MessageDataItemName::BodyExt {
                    section,
                    partial,
                    peek,
                } => {
                    sets_seen |= !peek;
                    let bytes = wire::section_bytes(m, section.as_ref());
                    let name = wire::section_name(section.as_ref());
                    let (bytes, origin) = match partial {
                        Some((start, len)) => {
                            let start = (*start as usize).min(bytes.len());
                            let end = start.saturating_add(len.get() as usize).min(bytes.len());
                            (bytes[start..end].to_vec(), format!("<{start}>"))
                        }
                        None => (bytes, String::new()),
                    };
                    [
                        format!("BODY[{name}]{origin} ").into_bytes(),
                        wire::string_literal(&bytes),
                    ]
                    .concat()
                }
            };
            parts.push(part);
        }
        for item in binary {
            sets_seen |= !item.peek;
            let bytes =
                wire::binary_section(m, &item.part).map_err(Unavailable::UnknownEncoding)?;
            let section = item.section();
            if item.size_only {
                parts.push(format!("BINARY.SIZE[{section}] {}", bytes.len()).into_bytes());
                continue;
            }
            let (bytes, origin) = match item.partial {
                Some((start, length)) => {
                    let start = (start as usize).min(bytes.len());
                    let end = start.saturating_add(length as usize).min(bytes.len());
                    (bytes[start..end].to_vec(), format!("<{start}>"))
                }
                None => (bytes, String::new()),
            };
            parts.push(
                [
                    format!("BINARY[{section}]{origin} ").into_bytes(),
                    wire::binary_literal(&bytes),
                ]
                .concat(),
            );
        }
        let wants_flags = items.contains(&MessageDataItemName::Flags);
        let (mut letters, recent) = (entry.flags, sel.is_recent(i));
        if sets_seen && !sel.read_only && !letters.contains('S') {
            if let Ok(Some(now)) = sel.folder.mark_seen(entry) {
                letters = now.flags;
                if let Some(sel) = self.selected.as_mut() {
                    sel.absorb(&[now]);
                }
            }
        }
        let sel = self.selected.as_ref().ok_or(Unavailable::Unreadable)?;
        let entry = sel.get(i).ok_or(Unavailable::Unreadable)?;
        if wants_flags || sets_seen {
            let text = flags::render(letters, recent, &sel.keywords);
            parts.push(format!("FLAGS {text}").into_bytes());
        }
        // RFC 7162 §3.1.4: asked for, or beside FLAGS once CONDSTORE is on.
        if shape.modseq || (self.condstore && (wants_flags || sets_seen)) {
            parts.push(format!("MODSEQ ({})", entry.modseq).into_bytes());
        }
        let mut out = format!("* {} FETCH (", i + 1).into_bytes();
        out.extend(parts.join(&b' '));
        out.push(b')');
        Ok(out)
    }

    /// STORE: the change is applied by the store to each message's current flags, under the
    /// folder lock; the client is told the flags that result.
    pub(super) fn store(
        &mut self,
        set: &SequenceSet,
        (kind, requested, unchanged_since): (&StoreType, &[Flag<'_>], Option<u64>),
        response: &StoreResponse,
        uid: bool,
    ) -> String {
        if unchanged_since.is_some() {
            self.enable_condstore();
        }
        let indexes = self.resolve(set, uid);
        let Some(sel) = self.selected.as_ref() else {
            return "BAD No mailbox selected".into();
        };
        if sel.read_only {
            return "NO [READ-ONLY] Mailbox is read-only".into();
        }
        let (system, keywords) = flags::requested(requested);
        let change = FlagChange {
            op: match kind {
                StoreType::Replace => FlagOp::Replace,
                StoreType::Add => FlagOp::Add,
                StoreType::Remove => FlagOp::Remove,
            },
            system,
            keywords: &keywords,
            unchanged_since,
        };
        let targets: Vec<_> = indexes.iter().map(|&i| sel.entry(i)).collect();
        let update = match sel.folder.update_flags(&targets, &change) {
            Ok(update) => update,
            Err(e) => return format!("NO [SERVERBUG] Cannot change flags: {e}"),
        };
        self.announce_keywords(update.keywords.clone());
        let Some(sel) = self.selected.as_mut() else {
            return "BAD No mailbox selected".into();
        };
        sel.absorb(&update.entries);
        let positions: Vec<(usize, &MailEntry)> = update
            .entries
            .iter()
            .filter_map(|now| Some((sel.position(now.uid)?, now)))
            .collect();
        let silent = matches!(response, StoreResponse::Silent);
        let mut lines = Vec::new();
        let mut modified = Vec::new();
        for (i, now) in positions {
            if update.modified.contains(&now.uid) {
                modified.push(if uid { now.uid } else { i as u32 + 1 });
            } else if !silent {
                lines.push(self.flags_update(i, uid));
            } else if self.condstore && update.changed.contains(&now.uid) {
                // RFC 7162 §3.1.3: the new mod-sequence is told even to a silent STORE.
                let uid_part = if uid || self.qresync {
                    format!("UID {} ", now.uid)
                } else {
                    String::new()
                };
                lines.push(format!(
                    "* {} FETCH ({uid_part}MODSEQ ({}))",
                    i + 1,
                    now.modseq
                ));
            }
        }
        for line in lines {
            self.send(&line);
        }
        if modified.is_empty() {
            "OK STORE completed".into()
        } else {
            modified.sort_unstable();
            format!(
                "OK [MODIFIED {}] Conditional STORE failed for some",
                wire::sequence_set(modified)
            )
        }
    }

    /// Removes \Deleted messages (all, or those in the UID set), reporting each EXPUNGE.
    pub(super) fn expunge(&mut self, only: Option<&SequenceSet>, report: bool) {
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        if sel.read_only {
            return;
        }
        let largest = sel.last_uid();
        let mut removed = Vec::new();
        for i in (0..sel.len()).rev() {
            let entry = sel.entry(i);
            let chosen = only.is_none_or(|set| search::in_set(set, entry.uid, largest));
            if entry.flags.contains('T') && chosen && sel.folder.delete(entry).is_ok() {
                removed.push((i, sel.remove(i)));
            }
        }
        if report {
            self.report_expunged(&removed);
        }
    }

    /// COPY, or MOVE (copy, then expunge the originals); keywords keep their names in the
    /// target folder whatever letters it gives them.
    pub(super) fn copy(
        &mut self,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
        moving: bool,
    ) -> String {
        let target = match self.folder(mailbox) {
            Ok((_, folder)) => folder,
            Err(reply) => return reply,
        };
        let indexes = self.resolve(set, uid);
        let Some(sel) = self.selected.as_ref() else {
            return "BAD No mailbox selected".into();
        };
        if moving && sel.read_only {
            return "NO [READ-ONLY] Mailbox is read-only".into();
        }
        let mut from = Vec::new();
        let mut to = Vec::new();
        let mut expunged = false;
        for &i in &indexes {
            let entry = sel.entry(i);
            let bytes = match sel.folder.read(entry) {
                Ok(bytes) => bytes,
                Err(_) => {
                    expunged = true;
                    continue;
                }
            };
            let flags = entry.flags;
            let names: Vec<String> = flags
                .keyword_letters()
                .filter_map(|c| sel.keywords.name(c).map(str::to_string))
                .collect();
            let date = Some(entry.internal_date);
            match target.append(&bytes, flags.system(), &names, date) {
                Ok(new_uid) => {
                    from.push(entry.uid.to_string());
                    to.push(new_uid.to_string());
                }
                Err(e) => return format!("NO [SERVERBUG] Copy failed: {e}"),
            }
        }
        if expunged && from.is_empty() {
            return "NO [EXPUNGEISSUED] The messages no longer exist".into();
        }
        let validity = target.uid_validity().unwrap_or(0);
        let code = if from.is_empty() {
            String::new()
        } else {
            format!("[COPYUID {validity} {} {}] ", from.join(","), to.join(","))
        };
        if !moving {
            return format!("OK {code}COPY completed");
        }
        self.send(&format!("* OK {code}Moved"));
        let Some(sel) = self.selected.as_mut() else {
            return "BAD No mailbox selected".into();
        };
        let mut removed = Vec::new();
        let mut sorted = indexes;
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        for i in sorted {
            if sel.folder.delete(sel.entry(i)).is_ok() {
                removed.push((i, sel.remove(i)));
            }
        }
        self.report_expunged(&removed);
        "OK MOVE completed".into()
    }
}

/// `* ESEARCH (TAG "t") [UID] [MIN n] [MAX n] [ALL set] [COUNT n] [MODSEQ m]` (RFC 4731): MIN,
/// MAX and ALL only when something matched; `RETURN ()` means ALL. `matched` holds (number,
/// mod-sequence) in ascending order; with the MODSEQ key, the reply carries the highest
/// mod-sequence of what it returns (only of the MIN and MAX messages when that is all).
fn esearch(
    tag: &str,
    uid: bool,
    options: &[ReturnOption],
    matched: &[(u32, u64)],
    with_modseq: bool,
) -> String {
    let all = [ReturnOption::All];
    let options = if options.is_empty() {
        &all[..]
    } else {
        options
    };
    let numbers: Vec<u32> = matched.iter().map(|&(n, _)| n).collect();
    let ends_only =
        !options.contains(&ReturnOption::All) && !options.contains(&ReturnOption::Count);
    let mut returned: Vec<u64> = Vec::new();
    if ends_only {
        if options.contains(&ReturnOption::Min) {
            returned.extend(matched.first().map(|&(_, m)| m));
        }
        if options.contains(&ReturnOption::Max) {
            returned.extend(matched.last().map(|&(_, m)| m));
        }
    } else {
        returned.extend(matched.iter().map(|&(_, m)| m));
    }
    let modseq = returned.into_iter().max().filter(|_| with_modseq);
    let mut line = format!("* ESEARCH (TAG \"{tag}\")");
    if uid {
        line.push_str(" UID");
    }
    let wants = |o: ReturnOption| options.contains(&o);
    if let (Some(min), Some(max)) = (numbers.first(), numbers.last()) {
        if wants(ReturnOption::Min) {
            line.push_str(&format!(" MIN {min}"));
        }
        if wants(ReturnOption::Max) {
            line.push_str(&format!(" MAX {max}"));
        }
        if wants(ReturnOption::All) {
            line.push_str(&format!(
                " ALL {}",
                wire::sequence_set(numbers.iter().copied())
            ));
        }
    }
    if wants(ReturnOption::Count) {
        line.push_str(&format!(" COUNT {}", numbers.len()));
    }
    if let Some(m) = modseq {
        line.push_str(&format!(" MODSEQ {m}"));
    }
    line
}
