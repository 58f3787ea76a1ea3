//! SEARCH: the keys of RFC 3501 §6.4.4 evaluated against one message.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::address;
use super::budget::{OverBudget, Work, KEY_COST};
use super::sets::Intervals;
use crate::message::Message;
use crate::store::keywords::Keywords;
use crate::store::mailbox::Flags;

/// What a search key can look at.
pub struct Candidate<'a> {
    pub seq: u32,
    pub uid: u32,
    pub flags: Flags,
    /// The folder's keyword names, for KEYWORD and UNKEYWORD.
    pub keywords: &'a Keywords,
    pub recent: bool,
    pub size: u64,
    pub internal_date: u64,
    /// The message, read and parsed at most once however many keys look at it.
    pub message: &'a LazyMessage<'a>,
    /// Work done for this command so far (bytes examined, and a little per key), shared by
    /// every candidate: the session stops a search that runs over its budget.
    pub work: &'a Cell<u64>,
    /// The key's sequence sets, resolved for the command.
    pub sets: &'a KeySets,
}

/// A message loaded on first use, with the lower-cased texts that BODY and TEXT keys search.
pub struct LazyMessage<'a> {
    load: &'a dyn Fn() -> Option<Arc<Message>>,
    loaded: OnceCell<Option<Loaded>>,
}

struct Loaded {
    message: Arc<Message>,
    body: OnceCell<String>,
    text: OnceCell<String>,
    sent_day: OnceCell<Option<i64>>,
    /// Lower-cased header texts by field name, as keys ask for them.
    headers: RefCell<HashMap<String, Rc<str>>>,
}

impl Loaded {
    fn header(&self, name: &str) -> Rc<str> {
        let key = name.to_ascii_lowercase();
        if let Some(text) = self.headers.borrow().get(&key) {
            return text.clone();
        }
        let text: Rc<str> = header_text(&self.message, name).into();
        self.headers.borrow_mut().insert(key, text.clone());
        text
    }
}

impl<'a> LazyMessage<'a> {
    pub fn new(load: &'a dyn Fn() -> Option<Arc<Message>>) -> LazyMessage<'a> {
        LazyMessage {
            load,
            loaded: OnceCell::new(),
        }
    }

    fn get(&self) -> Option<&Loaded> {
        self.loaded
            .get_or_init(|| {
                (self.load)().map(|message| Loaded {
                    message,
                    body: OnceCell::new(),
                    text: OnceCell::new(),
                    sent_day: OnceCell::new(),
                    headers: RefCell::new(HashMap::new()),
                })
            })
            .as_ref()
    }
}

/// How a command resolves one of its sets (`true`: a UID set).
pub type ResolveSet<'a> = dyn Fn(&SequenceSet, bool) -> Result<Rc<Intervals>, OverBudget> + 'a;

/// The sequence sets of a search key, resolved once for the whole command. They are found
/// again by address: the key tree does not move while it is searched.
#[derive(Debug, Default)]
pub struct KeySets {
    by_address: HashMap<usize, Rc<Intervals>>,
    /// Keys in the tree (each costs [`KEY_COST`] per message searched).
    pub keys: u64,
}

impl KeySets {
    /// Walks the key tree once (without recursion: its depth is the client's), resolving each
    /// set with `resolve(set, uid)` and counting keys and ranges against `work`.
    pub fn compile(
        key: &SearchKey<'_>,
        resolve: &ResolveSet<'_>,
        work: &Work,
    ) -> Result<KeySets, OverBudget> {
        let mut sets = KeySets::default();
        let mut pending = vec![key];
        while let Some(key) = pending.pop() {
            work.charge(KEY_COST)?;
            sets.keys += 1;
            match key {
                SearchKey::And(keys) => pending.extend(keys.as_ref().iter()),
                SearchKey::Not(k) => pending.push(k),
                SearchKey::Or(a, b) => pending.extend([a.as_ref(), b.as_ref()]),
                SearchKey::SequenceSet(set) | SearchKey::Uid(set) => {
                    let uid = matches!(key, SearchKey::Uid(_));
                    let address = set as *const SequenceSet as usize;
                    if let Entry::Vacant(slot) = sets.by_address.entry(address) {
                        slot.insert(resolve(set, uid)?);
                    }
                }
                _ => {}
            }
        }
        Ok(sets)
    }

    fn contains(&self, set: &SequenceSet, n: u32) -> bool {
        self.by_address
            .get(&(set as *const SequenceSet as usize))
            .is_some_and(|i| i.contains(n))
    }
}

/// The set as ascending, merged intervals (`*` is `largest`).
pub fn intervals(set: &SequenceSet, largest: u32) -> Vec<(u32, u32)> {
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    let spans: Vec<(u32, u32)> = set
        .0
        .as_ref()
        .iter()
        .map(|seq| match seq {
            Sequence::Single(s) => (value(s), value(s)),
            Sequence::Range(a, b) => (value(a).min(value(b)), value(a).max(value(b))),
        })
        .collect();
    Intervals::merged(spans).into_spans()
}

fn day(secs: u64) -> i64 {
    (secs / 86_400) as i64
}

fn naive_day(date: &imap_codec::imap_types::datetime::NaiveDate) -> i64 {
    use chrono::NaiveDate;
    let d: &NaiveDate = date.as_ref();
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(*d);
    (*d - epoch).num_days()
}

/// Case-insensitive substring test; `haystack` is already lower case.
fn contains_lower(haystack: &str, needle: &[u8], work: &Cell<u64>) -> bool {
    work.set(work.get().saturating_add(haystack.len() as u64));
    let needle = String::from_utf8_lossy(needle).to_lowercase();
    haystack.contains(&needle)
}

/// The text a header key searches: each field as written and decoded, and for address fields
/// each address as `name local@domain` too, so that `user@domain` matches however the address
/// was written (comments and spaces inside it, angle brackets or none).
fn header_text(message: &Message, name: &str) -> String {
    let is_address = ["from", "to", "cc", "bcc", "sender", "reply-to"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name));
    let mut text = Vec::new();
    for field in message.header(name) {
        text.push(format!("{} {}", field.raw, field.decoded));
        if !is_address {
            continue;
        }
        for item in address::parse(&field.raw.replace("\r\n", "")) {
            if let address::Item::Mailbox {
                name,
                local,
                domain,
                ..
            } = item
            {
                text.push(format!("{} {local}@{domain}", name.unwrap_or_default()));
            }
        }
    }
    text.join(" ").to_lowercase()
}

/// The Date header's own calendar day, in the time zone it was written in (RFC 3501
/// §6.4.4 ignores time and time zone), as days since 1970-01-01.
fn sent_day(message: &Message) -> Option<i64> {
    let header = &message.raw()[..message.header_block().body_start];
    let header = crate::message::header::bounded(header);
    let parsed = mail_parser::MessageParser::default().parse_headers(&header)?;
    let date = parsed.date()?;
    let day = chrono::NaiveDate::from_ymd_opt(
        i32::from(date.year),
        u32::from(date.month),
        u32::from(date.day),
    )?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    Some((day - epoch).num_days())
}

/// Evaluates `key` for one message; `largest` (seq, uid) resolve `*`.
pub fn matches(key: &SearchKey<'_>, c: &Candidate<'_>) -> bool {
    c.work.set(c.work.get().saturating_add(KEY_COST));
    let flag = |f: char| c.flags.contains(f);
    let loaded = || c.message.get();
    let sent = |test: &dyn Fn(i64) -> bool| {
        loaded()
            .and_then(|l| *l.sent_day.get_or_init(|| sent_day(&l.message)))
            .is_some_and(test)
    };
    let in_header = |name: &str, needle: &[u8]| {
        loaded().is_some_and(|l| contains_lower(&l.header(name), needle, c.work))
    };
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().all(|k| matches(k, c)),
        SearchKey::SequenceSet(set) => c.sets.contains(set, c.seq),
        SearchKey::Uid(set) => c.sets.contains(set, c.uid),
        SearchKey::All => true,
        SearchKey::Answered => flag('R'),
        SearchKey::Unanswered => !flag('R'),
        SearchKey::Deleted => flag('T'),
        SearchKey::Undeleted => !flag('T'),
        SearchKey::Draft => flag('D'),
        SearchKey::Undraft => !flag('D'),
        SearchKey::Flagged => flag('F'),
        SearchKey::Unflagged => !flag('F'),
        SearchKey::Seen => flag('S'),
        SearchKey::Unseen => !flag('S'),
        SearchKey::Recent => c.recent,
        SearchKey::New => c.recent && !flag('S'),
        SearchKey::Old => !c.recent,
        SearchKey::Keyword(k) => c.keywords.letter(k.as_ref()).is_some_and(flag),
        SearchKey::Unkeyword(k) => !c.keywords.letter(k.as_ref()).is_some_and(flag),
        SearchKey::Larger(n) => c.size > u64::from(*n),
        SearchKey::Smaller(n) => c.size < u64::from(*n),
        SearchKey::Before(d) => day(c.internal_date) < naive_day(d),
        SearchKey::On(d) => day(c.internal_date) == naive_day(d),
        SearchKey::Since(d) => day(c.internal_date) >= naive_day(d),
        SearchKey::SentBefore(d) => sent(&|s| s < naive_day(d)),
        SearchKey::SentOn(d) => sent(&|s| s == naive_day(d)),
        SearchKey::SentSince(d) => sent(&|s| s >= naive_day(d)),
        SearchKey::From(s) => in_header("From", s.as_ref()),
        SearchKey::To(s) => in_header("To", s.as_ref()),
        SearchKey::Cc(s) => in_header("Cc", s.as_ref()),
        SearchKey::Bcc(s) => in_header("Bcc", s.as_ref()),
        SearchKey::Subject(s) => in_header("Subject", s.as_ref()),
        SearchKey::Header(name, value) => loaded().is_some_and(|l| {
            let name = String::from_utf8_lossy(name.as_ref()).into_owned();
            !l.message.header(&name).is_empty()
                && contains_lower(&l.header(&name), value.as_ref(), c.work)
        }),
        SearchKey::Body(s) => loaded().is_some_and(|l| {
            let body = l
                .body
                .get_or_init(|| String::from_utf8_lossy(l.message.body()).to_lowercase());
            contains_lower(body, s.as_ref(), c.work)
        }),
        SearchKey::Text(s) => loaded().is_some_and(|l| {
            let text = l
                .text
                .get_or_init(|| String::from_utf8_lossy(l.message.raw()).to_lowercase());
            contains_lower(text, s.as_ref(), c.work)
        }),
        SearchKey::Not(k) => !matches(k, c),
        SearchKey::Or(a, b) => matches(a, c) || matches(b, c),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;
    use imap_codec::CommandCodec;

    fn search(criteria: &str, raw: &[u8], loads: &Cell<u32>) -> bool {
        let line = format!("t SEARCH {criteria}\r\n");
        let (_, command) = CommandCodec::default()
            .decode(line.as_bytes())
            .expect("command");
        let CommandBody::Search { criteria, .. } = command.body else {
            panic!("not a search");
        };
        let load = || {
            loads.set(loads.get() + 1);
            Some(Arc::new(Message::new(raw.to_vec())))
        };
        let message = LazyMessage::new(&load);
        let work = Cell::new(0);
        let sets = KeySets::compile(
            &criteria,
            &|set, _| {
                Intervals::compile(set, 1, &Intervals::default(), &Work::new(u64::MAX)).map(Rc::new)
            },
            &Work::new(u64::MAX),
        )
        .expect("in budget");
        let candidate = Candidate {
            seq: 1,
            uid: 1,
            flags: Flags::default(),
            keywords: &Keywords::default(),
            recent: false,
            size: raw.len() as u64,
            internal_date: 0,
            message: &message,
            work: &work,
            sets: &sets,
        };
        matches(&criteria, &candidate)
    }

    const MAIL: &[u8] =
        b"Date: Tue, 24 Nov 2026 23:30:00 -0500\r\nSubject: Quarterly Report\r\n\r\nThe Body text\r\n";

    #[test]
    fn many_keys_load_the_message_once() {
        let loads = Cell::new(0);
        let keys: String = (0..200).map(|k| format!("NOT SUBJECT zz{k} ")).collect();
        assert!(search(
            &format!("{keys}BODY body TEXT quarterly"),
            MAIL,
            &loads
        ));
        assert_eq!(loads.get(), 1);
    }

    #[test]
    fn sequence_sets_are_resolved_once_and_counted() {
        let loads = Cell::new(0);
        assert!(search("1:3 UID 1,5:*", MAIL, &loads));
        assert!(!search("2:3", MAIL, &loads));
        let line = format!("t SEARCH {}ALL\r\n", "1:2 ".repeat(500));
        let (_, command) = CommandCodec::default()
            .decode(line.as_bytes())
            .expect("command");
        let CommandBody::Search { criteria, .. } = command.body else {
            panic!("not a search");
        };
        let resolved = Cell::new(0);
        let resolve = |set: &SequenceSet, _| {
            resolved.set(resolved.get() + 1);
            Intervals::compile(set, 1, &Intervals::default(), &Work::new(u64::MAX)).map(Rc::new)
        };
        let sets = KeySets::compile(&criteria, &resolve, &Work::new(u64::MAX)).expect("fits");
        assert_eq!(sets.keys, 502);
        assert_eq!(resolved.get(), 500);
        // Counted against the budget as they are read.
        let small = Work::new(KEY_COST * 100);
        assert!(KeySets::compile(&criteria, &resolve, &small).is_err());
    }

    #[test]
    fn sent_dates_use_the_day_written_in_the_header() {
        // 23:30 at -0500 is already the 25th in UTC; the header says the 24th.
        let loads = Cell::new(0);
        assert!(search("SENTON 24-Nov-2026", MAIL, &loads));
        assert!(!search("SENTON 25-Nov-2026", MAIL, &loads));
        assert!(search("SENTBEFORE 25-Nov-2026", MAIL, &loads));
        assert!(search("SENTSINCE 24-Nov-2026", MAIL, &loads));
    }
}
