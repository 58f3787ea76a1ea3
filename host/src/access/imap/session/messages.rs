//! Commands on the selected mailbox's messages: FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE.
//! Each returns the text of its tagged reply; the caller sends it after anything untagged.

use imap_codec::imap_types::fetch::{Macro, MacroOrMessageDataItemNames, MessageDataItemName};
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;

use std::sync::Arc;

use super::super::budget::{self, OverBudget, Work};
use super::super::extensions::{BinaryItem, Extras, ReturnOption, SortKey, ThreadAlgorithm};
use super::super::search::{self, Candidate, KeySets};
use super::super::sets::Intervals;
use super::super::{flags, orderedsubject, partial, sort, thread, wire};
use super::{cached, ImapSession};
use crate::message::Message;
use crate::store::mailbox::{CopySource, FlagChange, FlagOp, Flags, MailEntry};
use crate::sys::blocking;

/// Queued FETCH output is sent once it reaches this much (a reply streams per message).
const FETCH_FLUSH: usize = 256 * 1024;

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
    /// The items would make the response larger than the message's allowance.
    OverAllowance,
}

/// One message's FETCH response as it is built: `* n FETCH (item item ...)`, refused
/// (before the bytes are copied) once it would grow past its allowance.
struct Reply {
    out: Vec<u8>,
    allowance: u64,
    first: bool,
}

impl Reply {
    fn new(i: usize, allowance: u64) -> Reply {
        Reply {
            out: format!("* {} FETCH (", i + 1).into_bytes(),
            allowance,
            first: true,
        }
    }

    /// Counts work that produces no output (header fields compared with names) against the
    /// same allowance.
    fn charge(&mut self, work: u64) -> Result<(), Unavailable> {
        self.allowance = self
            .allowance
            .checked_sub(work)
            .ok_or(Unavailable::OverAllowance)?;
        Ok(())
    }

    /// Makes room for `len` more bytes, or refuses.
    fn reserve(&mut self, len: usize) -> Result<(), Unavailable> {
        let after = (self.out.len() as u64).saturating_add(len as u64);
        if after > self.allowance {
            return Err(Unavailable::OverAllowance);
        }
        if !self.first {
            self.out.push(b' ');
        }
        self.first = false;
        Ok(())
    }

    fn item(&mut self, text: &[u8]) -> Result<(), Unavailable> {
        self.reserve(text.len())?;
        self.out.extend_from_slice(text);
        Ok(())
    }

    fn named(&mut self, name: &[u8], value: &[u8]) -> Result<(), Unavailable> {
        self.reserve(name.len() + value.len())?;
        self.out.extend_from_slice(name);
        self.out.extend_from_slice(value);
        Ok(())
    }

    /// `name` and the bytes as a literal (`~{n}` for binary data holding a NUL).
    fn literal(&mut self, name: &[u8], bytes: &[u8], binary: bool) -> Result<(), Unavailable> {
        self.reserve(name.len() + bytes.len() + 24)?;
        self.out.extend_from_slice(name);
        let marker = if binary && bytes.contains(&0) {
            "~"
        } else {
            ""
        };
        self.out
            .extend_from_slice(format!("{marker}{{{}}}\r\n", bytes.len()).as_bytes());
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.push(b')');
        self.out
    }
}

/// Work a section costs beyond its bytes: HEADER.FIELDS (and .NOT) read every field of the
/// header and compare its name with each name listed.
fn section_cost(
    message: &Message,
    section: Option<&imap_codec::imap_types::fetch::Section<'_>>,
) -> u64 {
    use imap_codec::imap_types::fetch::Section;
    let block = message.header_block();
    match section {
        Some(Section::HeaderFields(_, names) | Section::HeaderFieldsNot(_, names)) => {
            let comparisons =
                (block.fields.len() as u64).saturating_mul(names.as_ref().len() as u64);
            (block.body_start as u64).saturating_add(comparisons.saturating_mul(8))
        }
        _ => 0,
    }
}

/// The `<origin.length>` part of a section, and how the response names its origin.
fn cut(bytes: &[u8], partial: Option<(u32, u32)>) -> (&[u8], String) {
    match partial {
        Some((start, length)) => {
            let start = (start as usize).min(bytes.len());
            let end = start.saturating_add(length as usize).min(bytes.len());
            (&bytes[start..end], format!("<{start}>"))
        }
        None => (bytes, String::new()),
    }
}

/// The items in the order named, each once (an item named twice is answered once).
fn distinct<T: std::fmt::Debug>(items: Vec<T>) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(format!("{item:?}")))
        .collect()
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
    /// Indexes into the view for a sequence or UID set, ascending: one binary search per range
    /// of the set, its ranges counted against `work`.
    pub(super) fn resolve(
        &self,
        set: &SequenceSet,
        uid: bool,
        work: &Work,
    ) -> Result<Vec<usize>, OverBudget> {
        let Some(sel) = self.selected.as_ref() else {
            return Ok(Vec::new());
        };
        let intervals = self.intervals(set, uid, work)?;
        Ok(if uid {
            intervals.select(sel.entries(), |e| e.uid)
        } else {
            let numbers: Vec<u32> = (1..=sel.len() as u32).collect();
            intervals.select(&numbers, |&n| n)
        })
    }

    /// The UID spans a `VANISHED` FETCH asks about: the set's ranges (`*` is the largest UID
    /// ever given) and, for `$`, the saved result resolved as every other set resolves it —
    /// never the marker imap-codec carries it as.
    fn vanished_spans(&self, set: &SequenceSet, largest: u32) -> Vec<(u32, u32)> {
        let own: Vec<_> = set
            .0
            .as_ref()
            .iter()
            .filter(|seq| !crate::access::imap::sets::is_saved_mark(seq))
            .cloned()
            .collect();
        let mut spans = match SequenceSet::try_from(own) {
            Ok(own) => search::intervals(&own, largest),
            Err(_) => Vec::new(),
        };
        if crate::access::imap::sets::refers_to_saved(set) {
            spans.extend(self.saved_numbers(true).into_iter().map(|u| (u, u)));
        }
        crate::access::imap::sets::Intervals::merged(spans).into_spans()
    }

    /// The message at index `i`, parsed: from the view's cache when this session looked at it
    /// lately (its MIME tree then parsed already), else read (and remembered).
    fn load(&self, i: usize) -> Result<Arc<Message>, Unavailable> {
        let sel = self.selected.as_ref().ok_or(Unavailable::Unreadable)?;
        let entry = sel.get(i).ok_or(Unavailable::Unreadable)?;
        if let Some(edited) = sel.edited(i) {
            let bytes = edited.map_err(|_| Unavailable::Unreadable)?;
            return Ok(Arc::new(Message::new(bytes.as_ref().clone())));
        }
        if let Some(cached) = sel.parsed(entry.uid) {
            return Ok(cached);
        }
        match sel.folder.read(entry) {
            Ok(bytes) => Ok(sel.remember(entry.uid, Message::new(bytes))),
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
        let verb = if extras.thread.is_some() {
            "THREAD"
        } else if extras.sort.is_some() {
            "SORT"
        } else {
            "SEARCH"
        };
        let found = blocking::run(|| -> Result<_, OverBudget> {
            let work = Work::new(budget::SEARCH_WORK);
            let mut found = self.matching(key, &work)?;
            if let Some(keys) = &extras.sort {
                self.sort(&mut found, keys, &work)?;
            }
            if let Some(algorithm) = extras.thread {
                let threads = self.threads(&found, uid, algorithm, &work)?;
                return Ok((found, Some(threads)));
            }
            Ok((found, None))
        });
        let Ok((found, threads)) = found else {
            // RFC 5182 §2.1: a failed SEARCH that was to save leaves the saved result empty;
            // one that was not to save leaves it alone.
            let saving = extras
                .search_return
                .as_ref()
                .is_some_and(|o| o.contains(&ReturnOption::Save));
            if saving {
                self.saved.clear();
            }
            self.send(&budget::refusal(
                tag,
                &format!("{verb} too complex, narrow it down"),
            ));
            return;
        };
        if let Some(threads) = threads {
            self.send(&format!("* THREAD {threads}"));
            self.send(&format!("{tag} OK THREAD completed"));
            return;
        }
        let Some(sel) = self.selected.as_ref() else {
            return;
        };
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
                let shown: Vec<ReturnOption> = options
                    .iter()
                    .copied()
                    .filter(|o| *o != ReturnOption::Save)
                    .collect();
                if extras.sort.is_some() {
                    // ESORT: the numbers in sort order.
                    let ordered: Vec<u32> = found.iter().map(number).collect();
                    partial::esort(tag, uid, &shown, &ordered)
                } else {
                    let mut matched: Vec<(u32, u64)> =
                        found.iter().map(|i| (number(i), modseq_of(i))).collect();
                    matched.sort_unstable();
                    esearch(tag, uid, &shown, &matched, extras.search_modseq)
                }
            }
        };
        if !line.is_empty() {
            self.send(&line);
        }
        let update = returns
            .as_ref()
            .is_some_and(|o| o.contains(&ReturnOption::Update));
        // Only SEARCH results are kept up to date (as Dovecot keeps them), not SORT ones.
        if update && (extras.sort.is_some() || !self.keep_search(tag, key, uid, &found)) {
            self.send(&format!(
                "* NO [NOUPDATE \"{tag}\"] This result will not be kept up to date"
            ));
        }
        if let Some(kept) = saving {
            self.saved = kept;
        }
        self.send(&format!("{tag} OK {verb} completed"));
    }

    /// Indexes into the view of the messages the key matches. The key's sequence sets are
    /// resolved first, and the whole search is refused before it starts when its keys times
    /// the messages are over the budget already.
    pub(super) fn matching(
        &self,
        key: &SearchKey<'_>,
        work: &Work,
    ) -> Result<Vec<usize>, OverBudget> {
        let Some(sel) = self.selected.as_ref() else {
            return Ok(Vec::new());
        };
        let resolver = super::SetResolver::new(self);
        let resolve = |set: &SequenceSet, uid: bool| resolver.resolve(set, uid, work);
        let sets = KeySets::compile(key, &resolve, work)?;
        let at_least = sets
            .keys
            .saturating_mul(sel.len() as u64)
            .saturating_mul(budget::KEY_COST);
        if at_least > budget::SEARCH_WORK {
            return Err(OverBudget);
        }
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
                work: work.cell(),
                sets: &sets,
            };
            if search::matches(key, &candidate) {
                out.push(i);
            }
            if work.exhausted() {
                return Err(OverBudget);
            }
        }
        Ok(out)
    }

    /// THREAD=REFERENCES or ORDEREDSUBJECT over the matches, counted against `work`.
    fn threads(
        &self,
        found: &[usize],
        uid: bool,
        algorithm: ThreadAlgorithm,
        work: &Work,
    ) -> Result<String, OverBudget> {
        let Some(sel) = self.selected.as_ref() else {
            return Ok(String::new());
        };
        let mut messages = Vec::with_capacity(found.len());
        for &i in found {
            let entry = sel.entry(i);
            let number = if uid { entry.uid } else { i as u32 + 1 };
            let threaded = match self.load(i) {
                Ok(message) => {
                    work.charge(message.header_block().body_start as u64)?;
                    thread::read(&message, number, entry.internal_date)
                }
                Err(_) => thread::read(&Message::new(Vec::new()), number, entry.internal_date),
            };
            messages.push(threaded);
        }
        match algorithm {
            ThreadAlgorithm::References => thread::references(&messages, work),
            ThreadAlgorithm::OrderedSubject => orderedsubject::threads(&messages, work),
        }
    }

    /// Orders matches by SORT keys (RFC 5256), ties by sequence number; the headers read are
    /// counted against `work`.
    fn sort(&self, found: &mut [usize], keys: &[SortKey], work: &Work) -> Result<(), OverBudget> {
        let Some(sel) = self.selected.as_ref() else {
            return Ok(());
        };
        let mut values: std::collections::HashMap<usize, Vec<sort::Value>> =
            std::collections::HashMap::with_capacity(found.len());
        for &i in found.iter() {
            let message = self.load(i).ok();
            let header = message.as_ref().map_or(0, |m| m.header_block().body_start);
            work.charge((header as u64).saturating_add(budget::KEY_COST) * keys.len() as u64)?;
            let facts = sort::Facts {
                message: message.as_deref(),
                size: sel.size(i),
                internal_date: sel.entry(i).internal_date,
            };
            values.insert(
                i,
                keys.iter().map(|k| sort::value(k.kind, &facts)).collect(),
            );
        }
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
        Ok(())
    }

    /// FETCH. A message another session expunged is left out, and the reply says so (RFC 9051
    /// §7.1 EXPUNGEISSUED), rather than inventing its content.
    ///
    /// The reply streams: each message's response is built (off the async workers) within its
    /// allowance — [`budget::FETCH_AMPLIFICATION`] times the message's size plus
    /// [`budget::FETCH_SLACK`] — and queued, and queued output goes to the client whenever it
    /// reaches [`FETCH_FLUSH`]. Items named twice are answered once. A FETCH that names too
    /// many items, or whose items would go over a message's allowance, gets `NO [LIMIT]` (the
    /// messages before it were answered).
    pub(super) async fn fetch(
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
        let mut items = distinct(expand(what));
        if uid && !items.contains(&MessageDataItemName::Uid) {
            items.insert(0, MessageDataItemName::Uid);
        }
        let binary = distinct(extras.binary.clone());
        if items.len().saturating_add(binary.len()) > budget::FETCH_ITEMS {
            return format!(
                "NO [LIMIT] At most {} distinct items in one FETCH",
                budget::FETCH_ITEMS
            );
        }
        let shape = Shape {
            // The UID imap-codec was given in place of a lone MODSEQ is not shown.
            hide_uid: extras.fetch_uid_stand_in && !uid,
            modseq: extras.fetch_modseq || extras.changed_since.is_some(),
        };
        let work = Work::new(budget::SEARCH_WORK);
        let Ok(mut chosen) = self.resolve(set, uid, &work) else {
            return "NO [LIMIT] Sequence set too complex".into();
        };
        if extras.vanished {
            let largest = self
                .selected
                .as_ref()
                .map_or(0, |s| s.uid_next.saturating_sub(1));
            let gone = self.missing_uids(&self.vanished_spans(set, largest));
            if !gone.is_empty() {
                self.send(&format!("* VANISHED (EARLIER) {gone}"));
            }
        }
        if let (Some(since), Some(sel)) = (extras.changed_since, self.selected.as_ref()) {
            chosen.retain(|&i| sel.entry(i).modseq > since);
        }
        let (mut expunged, mut unknown) = (0, None);
        let mut queued = 0usize;
        let mut to_mark = Vec::new();
        for i in chosen {
            // Reading and parsing the message is file and CPU work: off the async workers.
            match blocking::run(|| self.fetch_one(i, &items, &binary, shape)) {
                Ok((line, marks_seen)) => {
                    if marks_seen {
                        to_mark.push(i);
                    }
                    queued = queued.saturating_add(line.len() + 2);
                    self.client.conn.queue(&line);
                    self.client.conn.queue(b"\r\n");
                }
                Err(Unavailable::Expunged) => expunged += 1,
                Err(Unavailable::UnknownEncoding(name)) => unknown = Some(name),
                Err(Unavailable::Unreadable) => {}
                Err(Unavailable::OverAllowance) => {
                    self.mark_seen(&to_mark).await;
                    return "NO [LIMIT] FETCH asks for too much of one message, ask for less"
                        .into();
                }
            }
            // A notification's FETCH leaves its output to the notification's bounded flush.
            if queued >= FETCH_FLUSH && !self.pushing {
                queued = 0;
                if self.client.conn.flush().await.is_err() {
                    // The client is gone; the session ends at its next read.
                    break;
                }
            }
        }
        self.mark_seen(&to_mark).await;
        if let Some(name) = unknown {
            format!("NO [UNKNOWN-CTE] Cannot undo the transfer encoding {name}")
        } else if expunged > 0 {
            "NO [EXPUNGEISSUED] Some of the requested messages no longer exist".into()
        } else {
            "OK FETCH completed".into()
        }
    }

    /// Adds `\Seen` to the messages (indexes into the selection) a FETCH answered as seen:
    /// one flag change for the whole command, so the folder's index is rewritten once, not
    /// once per message (which made a FETCH of N messages cost N rewrites of N records).
    /// With CONDSTORE on, the new mod-sequences follow as untagged FETCH responses, since
    /// the responses already sent carried the ones from before.
    async fn mark_seen(&mut self, indexes: &[usize]) {
        let Some(sel) = self.selected.as_ref() else {
            return;
        };
        if indexes.is_empty() || sel.read_only {
            return;
        }
        let targets: Vec<&MailEntry> = indexes.iter().filter_map(|&i| sel.get(i)).collect();
        let change = FlagChange {
            op: FlagOp::Add,
            system: Flags::parse("S"),
            keywords: &[],
            unchanged_since: None,
        };
        let update = match blocking::run(|| sel.folder.update_flags(&targets, &change)) {
            Ok(update) => update,
            Err(e) => {
                tracing::warn!("IMAP: cannot mark fetched messages \\Seen: {e}");
                return;
            }
        };
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        sel.absorb(&update.entries);
        if !self.condstore {
            return;
        }
        let lines: Vec<String> = update
            .entries
            .iter()
            .filter(|now| update.changed.contains(&now.uid))
            .filter_map(|now| self.selected.as_ref()?.position(now.uid))
            .map(|i| self.flags_update(i, true))
            .collect();
        for line in lines {
            self.send(&line);
        }
    }

    /// One message's FETCH response, within its allowance (see [`ImapSession::fetch`]); the
    /// message is parsed at most once (and its sections indexed once) for all the items.
    /// Whether the message is to be marked `\Seen` (which [`ImapSession::mark_seen`] does
    /// once for the whole command): its response already shows the flag.
    fn fetch_one(
        &mut self,
        i: usize,
        items: &[MessageDataItemName<'_>],
        binary: &[BinaryItem],
        shape: Shape,
    ) -> Result<(Vec<u8>, bool), Unavailable> {
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
        // What the folder's field cache can answer (a copy a plugin edited is not the file).
        let cacheable = {
            let sel = self.selected.as_ref().ok_or(Unavailable::Unreadable)?;
            match (binary.is_empty() && !sel.is_edited(i), sel.get(i)) {
                (true, Some(entry)) => cached::fields_for(items).map(|f| (sel, entry, f)),
                _ => None,
            }
        };
        let from_cache = cacheable
            .as_ref()
            .and_then(|(sel, entry, fields)| cached::lookup(&sel.folder, entry, fields));
        let message = if needs_message && from_cache.is_none() {
            let message = self.load(i)?;
            if let Some((sel, entry, _)) = &cacheable {
                cached::fill(&sel.folder, entry, &message);
            }
            Some(message)
        } else {
            None
        };
        let empty = Message::new(Vec::new());
        let m = match (&from_cache, &message) {
            (Some(cached), _) => &cached.header,
            (None, Some(message)) => message.as_ref(),
            (None, None) => &empty,
        };
        let sections = wire::Sections::new(m);
        let size = match &message {
            Some(message) => message.size(),
            None => self.selected.as_ref().map_or(0, |sel| sel.size(i)),
        };
        let allowance =
            (size.saturating_mul(budget::FETCH_AMPLIFICATION)).saturating_add(budget::FETCH_SLACK);
        let mut out = Reply::new(i, allowance);
        let cached = from_cache.as_ref();
        let mut sets_seen = false;
        let sel = self.selected.as_ref().ok_or(Unavailable::Unreadable)?;
        let entry = sel.get(i).ok_or(Unavailable::Unreadable)?;
        for item in items {
            match item {
                MessageDataItemName::Uid if shape.hide_uid => {}
                MessageDataItemName::Uid => out.item(format!("UID {}", entry.uid).as_bytes())?,
                MessageDataItemName::Flags => {}
                MessageDataItemName::InternalDate => out.item(
                    format!(
                        "INTERNALDATE \"{}\"",
                        wire::internal_date(entry.internal_date)
                    )
                    .as_bytes(),
                )?,
                MessageDataItemName::Rfc822Size => {
                    out.item(format!("RFC822.SIZE {}", sel.size(i)).as_bytes())?
                }
                MessageDataItemName::Envelope => match cached.and_then(|c| c.envelope.as_ref()) {
                    Some(text) => out.named(b"ENVELOPE ", text)?,
                    None => out.named(b"ENVELOPE ", &wire::envelope(m))?,
                },
                MessageDataItemName::BodyStructure => {
                    match cached.and_then(|c| c.body_structure.as_ref()) {
                        Some(text) => out.named(b"BODYSTRUCTURE ", text)?,
                        None => out.named(b"BODYSTRUCTURE ", &wire::body_structure(m, true))?,
                    }
                }
                MessageDataItemName::Body => match cached.and_then(|c| c.body.as_ref()) {
                    Some(text) => out.named(b"BODY ", text)?,
                    None => out.named(b"BODY ", &wire::body_structure(m, false))?,
                },
                MessageDataItemName::Rfc822 => {
                    sets_seen = true;
                    out.literal(b"RFC822 ", m.raw(), false)?;
                }
                MessageDataItemName::Rfc822Header => {
                    let header = wire::section_bytes(
                        &sections,
                        Some(&imap_codec::imap_types::fetch::Section::Header(None)),
                    );
                    out.literal(b"RFC822.HEADER ", &header, false)?;
                }
                MessageDataItemName::Rfc822Text => {
                    sets_seen = true;
                    out.literal(b"RFC822.TEXT ", m.body(), false)?;
                }
                MessageDataItemName::BodyExt {
                    section,
                    partial,
                    peek,
                } => {
                    sets_seen |= !peek;
                    out.charge(section_cost(m, section.as_ref()))?;
                    let bytes = wire::section_bytes(&sections, section.as_ref());
                    let name = wire::section_name(section.as_ref());
                    let partial = partial.map(|(start, len)| (start, len.get()));
                    let (bytes, origin) = cut(&bytes, partial);
                    out.literal(format!("BODY[{name}]{origin} ").as_bytes(), bytes, false)?;
                }
            }
        }
        for item in binary {
            sets_seen |= !item.peek;
            let bytes = wire::binary_section(&sections, &item.part)
                .map_err(Unavailable::UnknownEncoding)?;
            let section = item.section();
            if item.size_only {
                out.item(format!("BINARY.SIZE[{section}] {}", bytes.len()).as_bytes())?;
                continue;
            }
            let (bytes, origin) = cut(&bytes, item.partial);
            out.literal(
                format!("BINARY[{section}]{origin} ").as_bytes(),
                bytes,
                true,
            )?;
        }
        let wants_flags = items.contains(&MessageDataItemName::Flags);
        let (mut letters, recent) = (entry.flags, sel.is_recent(i));
        let marks_seen = sets_seen && !sel.read_only && !letters.contains('S');
        if marks_seen {
            letters = letters.union(Flags::parse("S"));
        }
        if wants_flags || sets_seen {
            let text = flags::render(letters, recent, &sel.keywords);
            out.item(format!("FLAGS {text}").as_bytes())?;
        }
        // RFC 7162 §3.1.4: asked for, or beside FLAGS once CONDSTORE is on.
        if shape.modseq || (self.condstore && (wants_flags || sets_seen)) {
            out.item(format!("MODSEQ ({})", entry.modseq).as_bytes())?;
        }
        Ok((out.finish(), marks_seen))
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
        if requested.len() > budget::FLAGS_PER_COMMAND {
            return format!(
                "NO [LIMIT] At most {} flags in one STORE",
                budget::FLAGS_PER_COMMAND
            );
        }
        let Ok(indexes) = self.resolve(set, uid, &Work::new(budget::SEARCH_WORK)) else {
            return "NO [LIMIT] Sequence set too complex".into();
        };
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
            Err(e) => return flags::failure("Cannot change flags", &e),
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
    pub(super) fn expunge(&mut self, only: Option<&Intervals>, report: bool) {
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        if sel.read_only {
            return;
        }
        let mut removed = Vec::new();
        for i in (0..sel.len()).rev() {
            let entry = sel.entry(i);
            let chosen = only.is_none_or(|set| set.contains(entry.uid));
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
        let Ok(indexes) = self.resolve(set, uid, &Work::new(budget::SEARCH_WORK)) else {
            return "NO [LIMIT] Sequence set too complex".into();
        };
        let Some(sel) = self.selected.as_ref() else {
            return "BAD No mailbox selected".into();
        };
        if moving && sel.read_only {
            return "NO [READ-ONLY] Mailbox is read-only".into();
        }
        let sources: Vec<CopySource> = indexes
            .iter()
            .map(|&i| {
                let flags = sel.entry(i).flags;
                CopySource {
                    system: flags.system(),
                    keywords: flags
                        .keyword_letters()
                        .filter_map(|c| sel.keywords.name(c).map(str::to_string))
                        .collect(),
                    internal_date: Some(sel.entry(i).internal_date),
                }
            })
            .collect();
        // A MOVE adds nothing to the user's storage: allowed at the quota, as Dovecot does.
        if !moving {
            let adding = indexes
                .iter()
                .fold(0u64, |sum, &i| sum.saturating_add(sel.entry(i).size));
            if let Err(reply) = self.room_for(adding) {
                return reply;
            }
        }
        // All or nothing (RFC 9051 §6.4.7): a copy that fails part-way, at the keyword limit
        // or for want of space, leaves no copies behind.
        let read = |n: usize| sel.folder.read(sel.entry(indexes[n])).ok();
        let copied = match target.append_copies(&sources, read) {
            Ok(copied) => copied,
            Err(e) => return flags::failure("Copy failed", &e),
        };
        let mut from = Vec::new();
        let mut to = Vec::new();
        for (&i, uid) in indexes.iter().zip(&copied) {
            if let Some(uid) = uid {
                from.push(sel.entry(i).uid.to_string());
                to.push(uid.to_string());
            }
        }
        let expunged = copied.iter().any(Option::is_none);
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
    for option in options {
        if let ReturnOption::Partial(range) = option {
            line.push_str(&partial::partial_item(range, &numbers));
        }
    }
    if let Some(m) = modseq {
        line.push_str(&format!(" MODSEQ {m}"));
    }
    line
}
