//! URLFETCH's requests and answers: the plain form of RFC 4467 (`URLFETCH url`: the bytes as
//! stored) and the extended form of RFC 5524, URLAUTH=BINARY (`URLFETCH (url [BODYPARTSTRUCTURE]
//! [BODY | BINARY])`), answered `(BODYPARTSTRUCTURE (...) BINARY ~{n}...)`. BINARY gives the
//! part with its transfer encoding removed (`decoded`), as a literal8 when it holds a NUL, or
//! NIL when that cannot be done (an unknown encoding), with an untagged NO saying why. Next to BINARY, BODYPARTSTRUCTURE gives the sizes and lines of
//! what BINARY gives, as Dovecot does. Parsing and formatting only: the session checks the
//! URL's authority and reads the message.

use super::decoded::{self, UnknownEncoding};
use super::url::{self, MessageUrl};
use super::urlauth::Argument;
use super::wire;
use crate::message::Message;

/// One URL a URLFETCH asks for, and in what form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub url: String,
    /// `None` for the plain form.
    pub extended: Option<Wants>,
}

/// What the extended form asks of a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wants {
    pub structure: bool,
    pub data: Option<Data>,
}

/// The content an extended request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// As stored (`BODY`).
    Body,
    /// Its transfer encoding removed (`BINARY`).
    Binary,
}

/// The URLs of a URLFETCH and their forms; an error (for a BAD) says what is wrong.
pub fn requests(args: Vec<Argument>) -> Result<Vec<Request>, String> {
    if args.is_empty() {
        return Err("URLFETCH needs a URL".into());
    }
    args.into_iter().map(request).collect()
}

fn request(arg: Argument) -> Result<Request, String> {
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    let list = match arg {
        Argument::Value(url) => {
            return Ok(Request {
                url: text(url),
                extended: None,
            })
        }
        Argument::List(list) => list,
    };
    let mut items = list.into_iter();
    let url = items.next().ok_or("an empty URLFETCH list")?;
    let mut wants = Wants {
        structure: false,
        data: None,
    };
    for item in items {
        let name = text(item);
        let data = match name.to_ascii_uppercase().as_str() {
            "BODYPARTSTRUCTURE" => {
                wants.structure = true;
                continue;
            }
            "BODY" => Data::Body,
            "BINARY" => Data::Binary,
            _ => return Err(format!("unknown URLFETCH parameter {name}")),
        };
        if wants.data.is_some_and(|had| had != data) {
            return Err("BODY and BINARY exclude each other".into());
        }
        wants.data = Some(data);
    }
    // A URL alone in its list asks for its content, as the plain form does (Dovecot too).
    if !wants.structure && wants.data.is_none() {
        wants.data = Some(Data::Body);
    }
    Ok(Request {
        url: text(url),
        extended: Some(wants),
    })
}

/// The response data of one URL, after `* URLFETCH url `, and what an untagged NO after it
/// should say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub data: Vec<u8>,
    pub warning: Option<String>,
}

impl Answer {
    pub fn nil() -> Answer {
        Answer {
            data: b"NIL".to_vec(),
            warning: None,
        }
    }
}

/// What `named` gives of `message` in the form `wants` asks (`None`: the plain form).
pub fn answer(message: &Message, named: &MessageUrl, wants: Option<&Wants>) -> Answer {
    let Some(wants) = wants else {
        return Answer {
            data: wire::string_literal(&named.extract(message)),
            warning: None,
        };
    };
    let sections = wire::Sections::new(message);
    let (numbers, section) = match section_numbers(named.section.as_deref()) {
        Some(found) => found,
        None => return Answer::nil(),
    };
    let Some(id) = wire::part_id(&sections, &numbers) else {
        return Answer::nil();
    };
    let mut items: Vec<Vec<u8>> = Vec::new();
    let mut warning = None;
    let binary = wants.data == Some(Data::Binary);
    if wants.structure {
        let sizes = binary.then(|| decoded::body_sizes(message));
        let mut item = b"BODYPARTSTRUCTURE ".to_vec();
        item.extend(wire::part_body_structure(message, id, sizes.as_deref()));
        items.push(item);
    }
    match wants.data {
        None => {}
        Some(Data::Body) => {
            let mut item = b"BODY ".to_vec();
            item.extend(wire::string_literal(&named.extract(message)));
            items.push(item);
        }
        Some(Data::Binary) => {
            let mut item = b"BINARY ".to_vec();
            match binary_bytes(message, named, id, &section) {
                Ok(bytes) => item.extend(wire::binary_literal(url::cut(&bytes, named.partial))),
                Err(why) => {
                    item.extend_from_slice(b"NIL");
                    warning = Some(why);
                }
            }
            items.push(item);
        }
    }
    let mut data = b"(".to_vec();
    data.extend(items.join(&b' '));
    data.push(b')');
    Answer { data, warning }
}

/// The BINARY form of what a URL names; an error says why there is none. A header section
/// (HEADER, MIME, HEADER.FIELDS) has no transfer encoding: it is given as stored; TEXT is the
/// body of the message (of the one a message/rfc822 part holds), decoded (as Dovecot does).
fn binary_bytes(
    message: &Message,
    named: &MessageUrl,
    id: u32,
    section: &Section,
) -> Result<Vec<u8>, String> {
    let form = match section {
        Section::Part if id == 0 && named.section.is_none() => decoded::whole(message),
        Section::Part => decoded::body(message, id),
        Section::Text => decoded::body(message, inner_message(message, id)),
        Section::Header => return Ok(named.extract(message)),
    };
    form.map_err(|UnknownEncoding(name)| {
        format!("[UNKNOWN-CTE] Cannot undo the transfer encoding {name}")
    })
}

/// The message whose TEXT section `id`'s is: the one inside a message/rfc822 part, else `id`.
fn inner_message(message: &Message, id: u32) -> u32 {
    match message.part(id) {
        Some(part) if part.is_message && id > 0 => message
            .parts()
            .iter()
            .find(|p| p.parent == Some(id))
            .map_or(id, |p| p.id),
        _ => id,
    }
}

/// What a section names after its part numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// Nothing: the part (or the message) itself.
    Part,
    Text,
    /// HEADER, HEADER.FIELDS (...), HEADER.FIELDS.NOT (...), MIME.
    Header,
}

/// The part numbers a URL's section starts with (`1.2.MIME`: 1 and 2) and what follows them.
/// `None` when a number is out of range, so names no part.
fn section_numbers(section: Option<&str>) -> Option<(Vec<u32>, Section)> {
    let Some(section) = section else {
        return Some((Vec::new(), Section::Part));
    };
    let mut numbers = Vec::new();
    for piece in section.split('.') {
        if piece.is_empty() || !piece.bytes().all(|b| b.is_ascii_digit()) {
            let rest = match piece.eq_ignore_ascii_case("TEXT") {
                true => Section::Text,
                false => Section::Header,
            };
            return Some((numbers, rest));
        }
        numbers.push(piece.parse().ok().filter(|&n| n > 0)?);
    }
    Some((numbers, Section::Part))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Argument {
        Argument::List(items.iter().map(|i| i.as_bytes().to_vec()).collect())
    }

    #[test]
    fn requests_are_plain_urls_or_lists_with_their_forms() {
        let got = requests(vec![
            Argument::Value(b"u1".to_vec()),
            list(&["u2", "binary", "BODYPARTSTRUCTURE"]),
            list(&["u3"]),
            list(&["u4", "BODYPARTSTRUCTURE"]),
        ])
        .expect("ok");
        assert_eq!(got[0].extended, None);
        let wants = |structure, data| Some(Wants { structure, data });
        assert_eq!(got[1].extended, wants(true, Some(Data::Binary)));
        assert_eq!(got[2].extended, wants(false, Some(Data::Body)));
        assert_eq!(got[3].extended, wants(true, None));
        for bad in [
            vec![],
            vec![list(&[])],
            vec![list(&["u", "BODY", "BINARY"])],
            vec![list(&["u", "RFC822"])],
        ] {
            assert!(requests(bad.clone()).is_err(), "{bad:?}");
        }
    }

    const MESSAGE: &str = "Subject: s\r\n\
        Content-Type: multipart/mixed; boundary=b\r\n\
        \r\n\
        --b\r\n\
        Content-Type: application/octet-stream\r\n\
        Content-Transfer-Encoding: base64\r\n\
        \r\n\
        AAEC/w==\r\n\
        --b\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: x-unknown\r\n\
        \r\n\
        abc\r\n\
        --b--\r\n";

    fn at(section: &str, wants: Wants) -> Answer {
        let url = url::parse(&format!("/INBOX/;UID=1{section}"), "").expect("url");
        answer(
            &Message::new(MESSAGE.as_bytes().to_vec()),
            &url,
            Some(&wants),
        )
    }

    #[test]
    fn binary_is_the_decoded_part_as_a_literal8_when_it_holds_a_nul() {
        let binary = Wants {
            structure: false,
            data: Some(Data::Binary),
        };
        let got = at("/;SECTION=1", binary);
        assert_eq!(got.data, b"(BINARY ~{4}\r\n\x00\x01\x02\xff)");
        assert_eq!(got.warning, None);
        // The range cut out holds no NUL: a plain literal.
        let got = at("/;SECTION=1/;PARTIAL=1.2", binary);
        assert_eq!(got.data, b"(BINARY {2}\r\n\x01\x02)");
        let unknown = at("/;SECTION=2", binary);
        assert_eq!(unknown.data, b"(BINARY NIL)");
        assert!(unknown
            .warning
            .is_some_and(|w| w.contains("UNKNOWN-CTE") && w.contains("x-unknown")));
        let header = at("/;SECTION=1.MIME", binary);
        let stored = "Content-Type: application/octet-stream\r\n\
            Content-Transfer-Encoding: base64\r\n\r\n";
        assert_eq!(
            header.data,
            format!("(BINARY {{{}}}\r\n{stored})", stored.len()).as_bytes()
        );
        // TEXT of the message: its body with every part decoded (none can be: the second
        // part's encoding is unknown).
        assert!(at("/;SECTION=TEXT", binary).warning.is_some());
        assert_eq!(at("/;SECTION=3", binary), Answer::nil());
    }

    #[test]
    fn the_structure_comes_first_with_the_sizes_of_what_is_given() {
        let both = Wants {
            structure: true,
            data: Some(Data::Binary),
        };
        let got = String::from_utf8_lossy(&at("/;SECTION=1", both).data).into_owned();
        assert!(
            got.starts_with(
                "(BODYPARTSTRUCTURE (\"application\" \"octet-stream\" NIL NIL NIL \"base64\" 4 "
            ),
            "{got}"
        );
        assert!(
            got.ends_with(" BINARY ~{4}\r\n\x00\x01\x02\u{fffd})"),
            "{got}"
        );
        let stored = Wants {
            structure: true,
            data: Some(Data::Body),
        };
        let got = String::from_utf8_lossy(&at("/;SECTION=1", stored).data).into_owned();
        assert!(got.contains("\"base64\" 8 "), "{got}");
        assert!(got.ends_with(" BODY {8}\r\nAAEC/w==)"), "{got}");
        let only = Wants {
            structure: true,
            data: None,
        };
        let got = String::from_utf8_lossy(&at("", only).data).into_owned();
        assert!(
            got.starts_with("(BODYPARTSTRUCTURE ((\"application\""),
            "{got}"
        );
        assert!(
            got.ends_with(" \"mixed\" (\"boundary\" \"b\") NIL NIL NIL))"),
            "{got}"
        );
    }
}
