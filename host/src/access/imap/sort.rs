//! SORT keys (RFC 5256, and DISPLAYFROM/DISPLAYTO of RFC 5957): the value each key sorts a
//! message by, compared with the `i;ascii-casemap` collation (ASCII letters without case).

use super::address::{self, Item};
use crate::message::Message;

use super::budget::SORT_SUBJECT;
use super::extensions::SortKind;

/// What a sort key can look at.
pub struct Facts<'a> {
    /// `None` when the message could not be read (it sorts as empty).
    pub message: Option<&'a Message>,
    pub size: u64,
    pub internal_date: u64,
}

/// A sort value: numbers for dates and sizes, case-folded text otherwise.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Number(u64),
    Text(String),
}

pub fn value(kind: SortKind, facts: &Facts<'_>) -> Value {
    let header = |name: &str| -> Option<(String, String)> {
        let field = facts.message?.header(name).first()?.clone();
        Some((field.raw.replace("\r\n", ""), field.decoded.to_string()))
    };
    match kind {
        SortKind::Arrival => Value::Number(facts.internal_date),
        SortKind::Size => Value::Number(facts.size),
        SortKind::Date => Value::Number(
            facts
                .message
                .and_then(sent_time)
                .unwrap_or(facts.internal_date),
        ),
        SortKind::Subject => Value::Text(base_subject(
            &header("Subject").map(|(_, d)| d).unwrap_or_default(),
        )),
        SortKind::From | SortKind::To | SortKind::Cc => {
            let name = match kind {
                SortKind::From => "From",
                SortKind::To => "To",
                _ => "Cc",
            };
            Value::Text(fold(&first_mailbox(header(name).map(|(r, _)| r)).0))
        }
        SortKind::DisplayFrom | SortKind::DisplayTo => {
            let name = if kind == SortKind::DisplayFrom {
                "From"
            } else {
                "To"
            };
            let (local, domain, display) = first_mailbox(header(name).map(|(r, _)| r));
            let shown = match display {
                Some(display) => decode_words(&display),
                None if domain.is_empty() => local,
                None => format!("{local}@{domain}"),
            };
            Value::Text(fold(&shown))
        }
    }
}

/// The first address of an address header: (local part, domain, display name). A group
/// counts by its name, as the ENVELOPE's group marker does.
fn first_mailbox(raw: Option<String>) -> (String, String, Option<String>) {
    let items = raw.map(|r| address::parse(&r)).unwrap_or_default();
    match items.into_iter().next() {
        Some(Item::Mailbox {
            name,
            local,
            domain,
            ..
        }) => (local, domain, name.filter(|n| !n.is_empty())),
        Some(Item::GroupStart(name)) => (name, String::new(), None),
        _ => Default::default(),
    }
}

/// Encoded words of a display name decoded, as mail-parser does for header values.
fn decode_words(text: &str) -> String {
    let header = format!("Subject: {text}\r\n\r\n");
    mail_parser::MessageParser::default()
        .parse_headers(header.as_bytes())
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| text.to_string())
}

/// `i;ascii-casemap`: ASCII letters compare as upper case (so `[` and `_` sort after them).
fn fold(text: &str) -> String {
    text.to_ascii_uppercase()
}

/// The Date header as Unix seconds (UTC), when it parses.
pub fn sent_time(message: &Message) -> Option<u64> {
    let header = &message.raw()[..message.header_block().body_start];
    let header = crate::message::header::bounded(header);
    let parsed = mail_parser::MessageParser::default().parse_headers(&header)?;
    u64::try_from(parsed.date()?.to_timestamp()).ok()
}

/// RFC 5256 §2.1: the subject without reply and forward markers, blobs and trailers,
/// whitespace collapsed, case folded (upper case).
pub fn base_subject(subject: &str) -> String {
    base_subject_and_reply(subject).0
}

/// Whether the subject marks a reply or forward (`Re:`, `Fwd:`, `(fwd)`, `[fwd: ...]`).
pub fn is_reply(subject: &str) -> bool {
    base_subject_and_reply(subject).1
}

fn base_subject_and_reply(subject: &str) -> (String, bool) {
    // Each leader stripped copies the rest: only the start of a subject is looked at.
    let mut end = subject.len().min(SORT_SUBJECT);
    while !subject.is_char_boundary(end) {
        end -= 1;
    }
    let subject = &subject[..end];
    let mut s: String = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut reply = false;
    loop {
        let before = s.clone();
        // (2) trailers: "(fwd)" and whitespace at the end.
        loop {
            let t = s.trim_end();
            let cut = t.len()
                - if t.to_ascii_lowercase().ends_with("(fwd)") {
                    5
                } else {
                    0
                };
            reply |= cut < t.len();
            let next = t[..cut].trim_end().to_string();
            if next == s {
                break;
            }
            s = next;
        }
        // (3) leaders: blobs, then "re", "fw" or "fwd", an optional blob, and a colon.
        loop {
            let next = strip_leader(&s);
            if next == s {
                break;
            }
            // strip_leader only changes a subject that has a reply or forward marker.
            reply = true;
            s = next;
        }
        // (4) a leading blob, when something is left after it.
        if let Some(rest) = strip_blob(&s) {
            if !rest.is_empty() {
                s = rest;
            }
        }
        // (6) "[fwd: ... ]" wrapping.
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("[fwd:") && s.ends_with(']') {
            s = s[5..s.len() - 1].trim().to_string();
            reply = true;
        }
        if s == before {
            return (fold(&s), reply);
        }
    }
}

/// `[...]` and the whitespace after it, taken off the front.
fn strip_blob(s: &str) -> Option<String> {
    let rest = s.strip_prefix('[')?;
    let close = rest.find(']')?;
    if rest[..close].contains('[') {
        return None;
    }
    Some(rest[close + 1..].trim_start().to_string())
}

fn strip_leader(s: &str) -> String {
    let mut rest = s.to_string();
    while let Some(after) = strip_blob(&rest) {
        rest = after;
    }
    let lower = rest.to_ascii_lowercase();
    let word = ["re", "fwd", "fw"]
        .into_iter()
        .find(|w| lower.starts_with(w))
        .map_or(0, str::len);
    if word == 0 {
        return s.to_string();
    }
    let mut after = rest[word..].trim_start().to_string();
    if let Some(stripped) = strip_blob(&after) {
        after = stripped;
    }
    match after.strip_prefix(':') {
        Some(subject) => subject.trim_start().to_string(),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::base_subject;

    #[test]
    fn replies_are_told_apart() {
        assert!(super::is_reply("Re: x") && super::is_reply("x (fwd)"));
        assert!(super::is_reply("[fwd: x]") && !super::is_reply("[list] x"));
        assert!(!super::is_reply("x"));
    }

    #[test]
    fn base_subjects() {
        for (subject, base) in [
            ("Re: hello", "HELLO"),
            ("RE: Re: [list] Fwd: Hello  World (fwd)", "HELLO WORLD"),
            ("[fwd: Re: hi]", "HI"),
            ("[blob] only", "ONLY"),
            ("[blob]", "[BLOB]"),
            ("re:", ""),
            ("Fw[x]: hey", "HEY"),
            ("Rework", "REWORK"),
            ("", ""),
        ] {
            assert_eq!(base_subject(subject), base, "{subject:?}");
        }
    }
}
