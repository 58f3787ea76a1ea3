//! IMAP URLs (RFC 5092) of one stored message or part of it, as CATENATE (RFC 4469) refers
//! to them: `/INBOX;UIDVALIDITY=7/;UID=20/;SECTION=1.2/;PARTIAL=0.100`, or the same under
//! `imap://user@host`. Only messages of the logged-in user's own mailboxes are reachable: a URL
//! naming another user, or carrying URLAUTH (which URLFETCH reads, see `urlauth`), is refused. Parsing only; the
//! session opens the mailbox and cuts the section.

use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName, Section};
use imap_codec::CommandCodec;

use super::wire;
use crate::message::Message;

/// A message (part) a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageUrl {
    /// The mailbox name in UTF-8 (as IMAP4rev2 names mailboxes).
    pub mailbox: String,
    pub uid_validity: Option<u32>,
    pub uid: u32,
    /// As FETCH names it (`1.2`, `HEADER`); `None`: the whole message.
    pub section: Option<String>,
    /// Offset and optional length (`;PARTIAL=o.l`).
    pub partial: Option<(u64, Option<u64>)>,
}

/// The message `url` names for `user`; an error says why it cannot be used.
pub fn parse(url: &str, user: &str) -> Result<MessageUrl, String> {
    let path = match strip_prefix_ignore_case(url, "imap://") {
        Some(rest) => {
            let (server, path) = rest.split_at(rest.find('/').ok_or("no mailbox in the URL")?);
            let named = server
                .rsplit_once('@')
                .map(|(userinfo, _)| userinfo.split(';').next().unwrap_or(""))
                .ok_or("the URL names no user")?;
            if !percent_decode(named)?.eq_ignore_ascii_case(user.as_bytes()) {
                return Err("the URL names another user's mailbox".into());
            }
            path
        }
        None => url,
    };
    let path = path
        .strip_prefix('/')
        .ok_or("only absolute URLs are understood")?;
    let mut segments = path.split('/');
    let mailbox_ref = segments.next().unwrap_or("");
    let (mailbox, validity) = match mailbox_ref.split_once(';') {
        Some((name, param)) => (name, Some(param)),
        None => (mailbox_ref, None),
    };
    if mailbox.is_empty() {
        return Err("no mailbox in the URL".into());
    }
    let name = String::from_utf8(percent_decode(mailbox)?)
        .map_err(|_| "the mailbox name is not UTF-8".to_string())?;
    let mut found = MessageUrl {
        mailbox: name,
        uid_validity: match validity {
            Some(param) => Some(number(param, "UIDVALIDITY")?),
            None => None,
        },
        uid: 0,
        section: None,
        partial: None,
    };
    let mut seen = Vec::new();
    for segment in segments {
        let (key, value) = segment
            .strip_prefix(';')
            .and_then(|s| s.split_once('='))
            .ok_or_else(|| format!("bad URL part {segment}"))?;
        let key = key.to_ascii_uppercase();
        if seen.contains(&key) {
            return Err(format!("{key} given twice"));
        }
        match key.as_str() {
            "UID" => found.uid = number(&format!("UID={value}"), "UID")?,
            "SECTION" => {
                let text = String::from_utf8(percent_decode(value)?)
                    .map_err(|_| "bad SECTION".to_string())?;
                with_section(&text, |_| ())?;
                found.section = Some(text);
            }
            "PARTIAL" => found.partial = Some(partial(value)?),
            "URLAUTH" => return Err("URLAUTH URLs are for URLFETCH".into()),
            _ => return Err(format!("unknown URL part {key}")),
        }
        seen.push(key);
    }
    if found.uid == 0 {
        return Err("the URL names no message (;UID=)".into());
    }
    Ok(found)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// `KEY=n` with `n` a non-zero 32-bit number.
fn number(param: &str, key: &str) -> Result<u32, String> {
    let (name, value) = param.split_once('=').ok_or_else(|| format!("bad {key}"))?;
    if !name.eq_ignore_ascii_case(key) || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad {key}"));
    }
    value
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("bad {key}"))
}

/// `%XX` escapes decoded.
pub(super) fn percent_decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad %-escape in the URL")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

impl MessageUrl {
    /// What the URL names of `message` (its section, cut to its partial range).
    pub fn extract(&self, message: &Message) -> Vec<u8> {
        let sections = wire::Sections::new(message);
        let whole = match &self.section {
            None => wire::section_bytes(&sections, None),
            Some(text) => {
                with_section(text, |s| wire::section_bytes(&sections, Some(s))).unwrap_or_default()
            }
        };
        cut(&whole, self.partial).to_vec()
    }
}

/// Calls `f` with a section as FETCH names it (`1.2`, `HEADER`, `HEADER.FIELDS (TO)`), read by
/// imap-codec from a FETCH made up of it.
fn with_section<R>(text: &str, f: impl FnOnce(&Section<'_>) -> R) -> Result<R, String> {
    let bad = || "bad SECTION".to_string();
    if text.bytes().any(|b| b == b']' || b == b'\r' || b == b'\n') {
        return Err(bad());
    }
    let mut made = b"x FETCH 1 BODY.PEEK[".to_vec();
    made.extend_from_slice(text.as_bytes());
    made.extend_from_slice(b"]\r\n");
    let (_, parsed) = CommandCodec::default().decode(&made).map_err(|_| bad())?;
    let CommandBody::Fetch {
        macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
        ..
    } = parsed.body
    else {
        return Err(bad());
    };
    match items.into_iter().next() {
        Some(MessageDataItemName::BodyExt {
            section: Some(section),
            partial: None,
            ..
        }) => Ok(f(&section)),
        _ => Err(bad()),
    }
}

/// `offset[.length]`.
fn partial(range: &str) -> Result<(u64, Option<u64>), String> {
    let bad = || "bad PARTIAL".to_string();
    let digits = |n: &str| -> Result<u64, String> {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        n.parse().map_err(|_| bad())
    };
    match range.split_once('.') {
        Some((offset, length)) => Ok((digits(offset)?, Some(digits(length)?))),
        None => Ok((digits(range)?, None)),
    }
}

/// `bytes` cut to a `;PARTIAL=` range (past the end: nothing).
pub fn cut(bytes: &[u8], partial: Option<(u64, Option<u64>)>) -> &[u8] {
    let Some((offset, length)) = partial else {
        return bytes;
    };
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let rest = &bytes[start..];
    match length {
        Some(length) => {
            &rest[..usize::try_from(length)
                .unwrap_or(usize::MAX)
                .min(rest.len())]
        }
        None => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "alice@example.test";

    #[test]
    fn relative_urls_name_a_message_and_its_part() {
        let u = parse("/INBOX;UIDVALIDITY=385759045/;UID=20/;SECTION=1.2", ME).expect("ok");
        assert_eq!(u.mailbox, "INBOX");
        assert_eq!(u.uid_validity, Some(385_759_045));
        assert_eq!(u.uid, 20);
        assert_eq!(u.section.as_deref(), Some("1.2"));
        let u = parse("/Sent/;uid=3/;section=header/;partial=10.5", ME).expect("ok");
        assert_eq!(u.section.as_deref(), Some("header"));
        assert_eq!(u.partial, Some((10, Some(5))));
        let u = parse("/a/;UID=1/;SECTION=HEADER.FIELDS%20(TO%20FROM)", ME).expect("ok");
        assert_eq!(u.section.as_deref(), Some("HEADER.FIELDS (TO FROM)"));
    }

    #[test]
    fn mailbox_names_are_percent_decoded_utf8() {
        let u = parse("/Entw%C3%BCrfe/;UID=1", ME).expect("ok");
        assert_eq!(u.mailbox, "Entwürfe");
        assert!(parse("/%FF/;UID=1", ME).is_err());
    }

    #[test]
    fn absolute_urls_only_for_the_user_themself() {
        let own = "imap://alice%40example.test@mail.example.test/INBOX/;UID=4";
        assert_eq!(parse(own, ME).expect("ok").uid, 4);
        let with_auth = "imap://alice%40example.test;AUTH=*@host/INBOX/;UID=4";
        assert!(parse(with_auth, ME).is_ok());
        for other in [
            "imap://bob%40example.test@host/INBOX/;UID=4",
            "imap://host/INBOX/;UID=4",
            "IMAP://bob@host/INBOX/;UID=4",
        ] {
            assert!(parse(other, ME).is_err(), "{other}");
        }
    }

    #[test]
    fn malformed_or_unsupported_urls_are_refused() {
        for bad in [
            "",
            "/",
            "/INBOX",
            "/INBOX/;UID=0",
            "/INBOX/;UID=x",
            "/INBOX/;UID=1/;UID=2",
            "/INBOX;UIDVALIDITY=/;UID=1",
            "/INBOX/;UID=1/;SECTION=1]",
            "/INBOX/;UID=1/;SECTION=NOPE",
            "/INBOX/;UID=1/;PARTIAL=-1",
            "/INBOX/;UID=1/;URLAUTH=anonymous:internal:00",
            "/INBOX/;UID=1/;FOO=1",
            "/INBOX%zz/;UID=1",
            ";UID=1",
            "INBOX/;UID=1",
        ] {
            assert!(parse(bad, ME).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sections_and_ranges_are_cut_out_of_the_message() {
        let message = Message::new(b"Subject: s\r\nTo: t\r\n\r\nbody text\r\n".to_vec());
        let at = |u: &str| parse(u, ME).expect("ok").extract(&message);
        assert_eq!(
            at("/INBOX/;UID=1/;SECTION=HEADER"),
            b"Subject: s\r\nTo: t\r\n\r\n"
        );
        assert_eq!(at("/INBOX/;UID=1/;SECTION=TEXT"), b"body text\r\n");
        assert_eq!(at("/INBOX/;UID=1/;SECTION=1"), b"body text\r\n");
        assert_eq!(
            at("/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20(TO)"),
            b"To: t\r\n\r\n"
        );
        assert_eq!(at("/INBOX/;UID=1/;PARTIAL=0.7"), b"Subject");
        assert_eq!(at("/INBOX/;UID=1/;SECTION=TEXT/;PARTIAL=5"), b"text\r\n");
    }

    #[test]
    fn partial_ranges_cut_within_the_bytes() {
        assert_eq!(cut(b"abcdef", None), b"abcdef");
        assert_eq!(cut(b"abcdef", Some((2, Some(3)))), b"cde");
        assert_eq!(cut(b"abcdef", Some((4, None))), b"ef");
        assert_eq!(cut(b"abcdef", Some((100_000, Some(1)))), b"");
        assert_eq!(cut(b"abcdef", Some((u64::MAX, Some(u64::MAX)))), b"");
    }
}
