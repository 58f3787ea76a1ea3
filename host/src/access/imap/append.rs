//! APPEND beyond one literal, which imap-codec 1.0 does not parse: MULTIAPPEND (RFC 3502,
//! several messages in one command, appended all or none) and CATENATE (RFC 4469, a message
//! put together from text literals and IMAP URLs of stored messages, RFC 5092). This module
//! reads the command; `url` names the messages the URLs point at; the session fetches and
//! appends. A plain APPEND of one literal is left to imap-codec.
//!
//! Each message's flag list and date are handed to imap-codec inside a one-message APPEND made
//! up for it, so they are read exactly as a plain APPEND's are.

use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::CommandCodec;

use super::extensions::{closing, lex, Kind, Token};
use super::flags;
use crate::store::mailbox::Flags;

/// Messages one MULTIAPPEND may carry (each one is a file written and synced).
pub const MESSAGES: usize = 1000;
/// Parts one CATENATE may join.
pub const PARTS: usize = 1000;

/// An APPEND with several messages or a CATENATE.
#[derive(Debug)]
pub struct Request {
    /// The mailbox name as sent (`INBOX` in any case is `INBOX`).
    pub mailbox: String,
    pub messages: Vec<NewMessage>,
}

#[derive(Debug)]
pub struct NewMessage {
    pub system: Flags,
    pub keywords: Vec<String>,
    /// The internal date asked for (UTC seconds).
    pub date: Option<u64>,
    pub content: Content,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Content {
    /// The message as sent; `binary` when it came as `~{n}` (RFC 3516).
    Literal { bytes: Vec<u8>, binary: bool },
    /// CATENATE: the parts, joined in order.
    Catenate(Vec<Part>),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Part {
    Text(Vec<u8>),
    Url(String),
}

/// The request in `command`; `Ok(None)` for a plain APPEND (one literal) or another command;
/// an error is a BAD reply's text.
pub fn parse(command: &[u8]) -> Result<Option<Request>, String> {
    let head: Vec<&[u8]> = command.splitn(3, |&b| b == b' ').take(2).collect();
    if !head
        .get(1)
        .is_some_and(|verb| verb.eq_ignore_ascii_case(b"APPEND"))
    {
        return Ok(None);
    }
    let tokens = lex(command)?;
    let mailbox = tokens.get(2).ok_or("APPEND needs a mailbox")?;
    let mut messages = Vec::new();
    let mut at = 3;
    let mut catenate = false;
    while at < tokens.len() {
        if messages.len() >= MESSAGES {
            return Err(format!("At most {MESSAGES} messages in one APPEND"));
        }
        let (message, next) = message_at(command, &tokens, mailbox, at)?;
        catenate |= matches!(message.content, Content::Catenate(_));
        messages.push(message);
        at = next;
    }
    if messages.is_empty() {
        return Err("APPEND needs a message".into());
    }
    if messages.len() == 1 && !catenate {
        return Ok(None);
    }
    let mailbox = standin(command, mailbox, &[])?.0;
    Ok(Some(Request { mailbox, messages }))
}

/// One message from `at`: `[flag-list] [date-time] (literal / ~literal / CATENATE (parts))`;
/// the message and the index after it.
fn message_at(
    command: &[u8],
    tokens: &[Token],
    mailbox: &Token,
    mut at: usize,
) -> Result<(NewMessage, usize), String> {
    let mut attributes: Vec<&[u8]> = Vec::new();
    if tokens[at].kind == Kind::Open {
        let close = closing(tokens, at)?;
        attributes.push(&command[tokens[at].start..tokens[close].end]);
        at = close + 1;
    }
    if tokens.get(at).map(|t| t.kind) == Some(Kind::Quoted) {
        attributes.push(&command[tokens[at].start..tokens[at].end]);
        at += 1;
    }
    let token = tokens
        .get(at)
        .ok_or("APPEND needs a message after its flags")?;
    let (content, next) = match token.kind {
        Kind::Literal | Kind::Literal8 => (
            Content::Literal {
                bytes: token.value.clone(),
                binary: token.kind == Kind::Literal8,
            },
            at + 1,
        ),
        Kind::Atom if token.is("CATENATE") => {
            let (parts, next) = parts_at(tokens, at + 1)?;
            (Content::Catenate(parts), next)
        }
        _ => return Err("APPEND needs a literal or CATENATE".into()),
    };
    let (_, system, keywords, date) = standin(command, mailbox, &attributes)?;
    Ok((
        NewMessage {
            system,
            keywords,
            date,
            content,
        },
        next,
    ))
}

/// `(TEXT literal / URL astring ...)` at `open`; the parts and the index after the list.
fn parts_at(tokens: &[Token], open: usize) -> Result<(Vec<Part>, usize), String> {
    if tokens.get(open).map(|t| t.kind) != Some(Kind::Open) {
        return Err("CATENATE needs a list of parts".into());
    }
    let close = closing(tokens, open)?;
    let mut parts = Vec::new();
    let mut i = open + 1;
    while i < close {
        let value = tokens.get(i + 1).filter(|_| i + 1 < close);
        let part = match (&tokens[i], value) {
            (t, Some(v)) if t.is("TEXT") && v.kind == Kind::Literal => Part::Text(v.value.clone()),
            (t, Some(v)) if t.is("URL") && v.kind != Kind::Open && v.kind != Kind::Close => {
                Part::Url(v.text())
            }
            (t, _) => return Err(format!("unknown CATENATE part {}", t.text())),
        };
        if parts.len() >= PARTS {
            return Err(format!("At most {PARTS} parts in one CATENATE"));
        }
        parts.push(part);
        i += 2;
    }
    if parts.is_empty() {
        return Err("CATENATE needs at least one part".into());
    }
    Ok((parts, close + 1))
}

type Attributes = (String, Flags, Vec<String>, Option<u64>);

/// Has imap-codec read the mailbox, flags and date of a one-message APPEND made up of them.
fn standin(command: &[u8], mailbox: &Token, attributes: &[&[u8]]) -> Result<Attributes, String> {
    let mut made = b"x APPEND ".to_vec();
    made.extend_from_slice(&command[mailbox.start..mailbox.end]);
    for attribute in attributes {
        made.push(b' ');
        made.extend_from_slice(attribute);
    }
    made.extend_from_slice(b" {1+}\r\n.\r\n");
    let bad = || "bad APPEND flags, date or mailbox".to_string();
    let (_, parsed) = CommandCodec::default().decode(&made).map_err(|_| bad())?;
    let CommandBody::Append {
        mailbox,
        flags,
        date,
        ..
    } = parsed.body
    else {
        return Err(bad());
    };
    let (system, keywords) = flags::requested(&flags);
    let date = date.map(|d| d.as_ref().timestamp().max(0) as u64);
    let name = match mailbox {
        Mailbox::Inbox => "INBOX".into(),
        Mailbox::Other(other) => String::from_utf8_lossy(other.as_ref()).into_owned(),
    };
    Ok((name, system, keywords, date))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(command: &str) -> Request {
        parse(command.as_bytes())
            .expect("well formed")
            .expect("not plain")
    }

    #[test]
    fn plain_append_is_left_to_imap_codec() {
        for c in [
            "a APPEND INBOX {3}\r\nabc\r\n",
            "a APPEND INBOX (\\Seen) \"01-Jan-2020 10:00:00 +0000\" {3+}\r\nabc\r\n",
            "a FETCH 1 BODY[]\r\n",
        ] {
            assert!(parse(c.as_bytes()).expect("well formed").is_none(), "{c}");
        }
    }

    #[test]
    fn several_messages_each_with_their_flags_and_date() {
        let r = parsed(
            "a APPEND Sent (\\Seen) {2}\r\nm1 \"05-Mar-2021 12:00:00 +0100\" {2}\r\nm2 {2}\r\nm3\r\n",
        );
        assert_eq!(r.messages.len(), 3);
        assert!(r.messages[0].system.contains('S'));
        assert_eq!(r.messages[0].date, None);
        assert_eq!(r.messages[1].date, Some(1_614_942_000));
        assert!(!r.messages[2].system.contains('S'));
        assert_eq!(
            r.messages[2].content,
            Content::Literal {
                bytes: b"m3".to_vec(),
                binary: false
            }
        );
    }

    #[test]
    fn catenate_parts_in_order_and_mixed_with_literals() {
        let r = parsed(
            "a APPEND INBOX CATENATE (URL \"/INBOX/;uid=3\" TEXT {2}\r\nhi URL x) (\\Answered) {1}\r\nz\r\n",
        );
        assert_eq!(
            r.messages[0].content,
            Content::Catenate(vec![
                Part::Url("/INBOX/;uid=3".into()),
                Part::Text(b"hi".to_vec()),
                Part::Url("x".into()),
            ])
        );
        assert!(r.messages[1].system.contains('R'));
        // A single CATENATE is ours too.
        assert_eq!(
            parsed("a APPEND INBOX CATENATE (TEXT {1}\r\nx)\r\n")
                .messages
                .len(),
            1
        );
    }

    #[test]
    fn malformed_requests_are_refused() {
        for c in [
            "a APPEND INBOX CATENATE ()\r\n",
            "a APPEND INBOX CATENATE (TEXT \"x\")\r\n",
            "a APPEND INBOX CATENATE (BODY {1}\r\nx)\r\n",
            "a APPEND INBOX {1}\r\nx (\\Seen)\r\n",
            "a APPEND INBOX (\\Seen {1}\r\nx\r\n",
            "a APPEND INBOX \"not a date\" {1}\r\nx {1}\r\ny\r\n",
            "a APPEND INBOX\r\n",
        ] {
            assert!(parse(c.as_bytes()).is_err(), "{c}");
        }
    }

    #[test]
    fn message_and_part_counts_are_bounded() {
        let many = "{1}\r\nx ".repeat(MESSAGES + 1);
        let c = format!("a APPEND INBOX {}\r\n", many.trim_end());
        assert!(parse(c.as_bytes()).is_err());
        let parts = "TEXT {1}\r\nx ".repeat(PARTS + 1);
        let c = format!("a APPEND INBOX CATENATE ({})\r\n", parts.trim_end());
        assert!(parse(c.as_bytes()).is_err());
    }
}
