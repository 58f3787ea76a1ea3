//! SEARCH: the keys of RFC 3501 §6.4.4 evaluated against one message.

use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use crate::message::Message;
use crate::store::mailbox::Flags;

/// What a search key can look at.
pub struct Candidate<'a> {
    pub seq: u32,
    pub uid: u32,
    pub flags: Flags,
    pub recent: bool,
    pub size: u64,
    pub internal_date: u64,
    /// Loads the message (only keys on headers and text need it).
    pub load: &'a dyn Fn() -> Option<Message>,
}

/// True when `n` is in the set; `*` is `largest`.
pub fn in_set(set: &SequenceSet, n: u32, largest: u32) -> bool {
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    set.0.as_ref().iter().any(|seq| match seq {
        Sequence::Single(s) => value(s) == n,
        Sequence::Range(a, b) => {
            let (a, b) = (value(a), value(b));
            (a.min(b)..=a.max(b)).contains(&n)
        }
    })
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

fn contains(haystack: &str, needle: &[u8]) -> bool {
    let needle = String::from_utf8_lossy(needle).to_lowercase();
    haystack.to_lowercase().contains(&needle)
}

fn header_text(message: &Message, name: &str) -> String {
    message
        .header(name)
        .iter()
        .map(|h| format!("{} {}", h.raw, h.decoded))
        .collect::<Vec<_>>()
        .join(" ")
}

fn sent_day(message: &Message) -> Option<i64> {
    let parsed = mail_parser::MessageParser::default().parse_headers(message.raw())?;
    let date = parsed.date()?;
    Some(day(date.to_timestamp().max(0) as u64))
}

/// Evaluates `key` for one message; `largest` (seq, uid) resolve `*`.
pub fn matches(key: &SearchKey<'_>, c: &Candidate<'_>, largest: (u32, u32)) -> bool {
    let flag = |f: char| c.flags.contains(f);
    let message = || (c.load)();
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().all(|k| matches(k, c, largest)),
        SearchKey::SequenceSet(set) => in_set(set, c.seq, largest.0),
        SearchKey::Uid(set) => in_set(set, c.uid, largest.1),
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
        SearchKey::Keyword(_) => false,
        SearchKey::Unkeyword(_) => true,
        SearchKey::Larger(n) => c.size > u64::from(*n),
        SearchKey::Smaller(n) => c.size < u64::from(*n),
        SearchKey::Before(d) => day(c.internal_date) < naive_day(d),
        SearchKey::On(d) => day(c.internal_date) == naive_day(d),
        SearchKey::Since(d) => day(c.internal_date) >= naive_day(d),
        SearchKey::SentBefore(d) => message()
            .and_then(|m| sent_day(&m))
            .is_some_and(|s| s < naive_day(d)),
        SearchKey::SentOn(d) => message()
            .and_then(|m| sent_day(&m))
            .is_some_and(|s| s == naive_day(d)),
        SearchKey::SentSince(d) => message()
            .and_then(|m| sent_day(&m))
            .is_some_and(|s| s >= naive_day(d)),
        SearchKey::From(s) => {
            message().is_some_and(|m| contains(&header_text(&m, "From"), s.as_ref()))
        }
        SearchKey::To(s) => message().is_some_and(|m| contains(&header_text(&m, "To"), s.as_ref())),
        SearchKey::Cc(s) => message().is_some_and(|m| contains(&header_text(&m, "Cc"), s.as_ref())),
        SearchKey::Bcc(s) => {
            message().is_some_and(|m| contains(&header_text(&m, "Bcc"), s.as_ref()))
        }
        SearchKey::Subject(s) => {
            message().is_some_and(|m| contains(&header_text(&m, "Subject"), s.as_ref()))
        }
        SearchKey::Header(name, value) => message().is_some_and(|m| {
            let name = String::from_utf8_lossy(name.as_ref()).into_owned();
            !m.header(&name).is_empty() && contains(&header_text(&m, &name), value.as_ref())
        }),
        SearchKey::Body(s) => {
            message().is_some_and(|m| contains(&String::from_utf8_lossy(m.body()), s.as_ref()))
        }
        SearchKey::Text(s) => {
            message().is_some_and(|m| contains(&String::from_utf8_lossy(m.raw()), s.as_ref()))
        }
        SearchKey::Not(k) => !matches(k, c, largest),
        SearchKey::Or(a, b) => matches(a, c, largest) || matches(b, c, largest),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}
