//! Writing IMAP response data: strings (quoted or literal), ENVELOPE, BODYSTRUCTURE, and the
//! bytes of a body section, from the host's message model.

use imap_codec::imap_types::fetch::{Part as SectionPart, Section};

use super::address::{self, Item};
use super::decoded::BodySize;
use crate::message::Message;

/// A string as IMAP wants it: quoted when it is short 7-bit text, a literal otherwise.
pub fn string(bytes: &[u8]) -> Vec<u8> {
    let plain = bytes.len() < 1024 && bytes.iter().all(|b| (0x20..0x7f).contains(b));
    if plain {
        let mut out = Vec::with_capacity(bytes.len() + 2);
        out.push(b'"');
        for &b in bytes {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
        out
    } else {
        let mut out = format!("{{{}}}\r\n", bytes.len()).into_bytes();
        out.extend_from_slice(bytes);
        out
    }
}

/// Body data is always sent as a literal (it may hold anything).
pub fn string_literal(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("{{{}}}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out
}

pub fn nstring(value: Option<&str>) -> Vec<u8> {
    match value {
        Some(v) => string(v.as_bytes()),
        None => b"NIL".to_vec(),
    }
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

/// A message with its MIME tree indexed for section lookups: the children of every part are
/// listed once (on the first lookup), so each section a FETCH names costs its depth, not the
/// size of the tree, however many sections one command names.
pub struct Sections<'a> {
    message: &'a Message,
    children: std::cell::OnceCell<Vec<Vec<u32>>>,
}

impl<'a> Sections<'a> {
    pub fn new(message: &'a Message) -> Sections<'a> {
        Sections {
            message,
            children: std::cell::OnceCell::new(),
        }
    }

    pub fn message(&self) -> &'a Message {
        self.message
    }

    /// The children of part `id`, in document order.
    fn children(&self, id: u32) -> &[u32] {
        self.children
            .get_or_init(|| child_lists(self.message))
            .get(id as usize)
            .map_or(&[], Vec::as_slice)
    }
}

/// The children of every part at once (one pass over the tree).
fn child_lists(message: &Message) -> Vec<Vec<u32>> {
    let parts = message.parts();
    let mut lists = vec![Vec::new(); parts.len()];
    for part in parts {
        if let Some(list) = part.parent.and_then(|p| lists.get_mut(p as usize)) {
            list.push(part.id);
        }
    }
    lists
}

/// The raw value of the first field with this name, unfolded.
fn raw_header(message: &Message, name: &str) -> Option<String> {
    message
        .header(name)
        .first()
        .map(|h| h.raw.replace("\r\n", "").trim().to_string())
}

/// ENVELOPE of the top-level message (RFC 3501 §7.4.2). Only the header is read.
pub fn envelope(message: &Message) -> Vec<u8> {
    let mut out = b"(".to_vec();
    out.extend(nstring(raw_header(message, "Date").as_deref()));
    out.push(b' ');
    out.extend(nstring(raw_header(message, "Subject").as_deref()));
    let from = address_list(raw_header(message, "From").as_deref());
    for (name, fallback) in [
        ("From", None),
        ("Sender", Some(&from)),
        ("Reply-To", Some(&from)),
        ("To", None),
        ("Cc", None),
        ("Bcc", None),
    ] {
        out.push(b' ');
        let value = address_list(raw_header(message, name).as_deref());
        match fallback {
            Some(f) if value == b"NIL" => out.extend_from_slice(f),
            _ => out.extend(value),
        }
    }
    out.push(b' ');
    out.extend(nstring(raw_header(message, "In-Reply-To").as_deref()));
    out.push(b' ');
    out.extend(nstring(raw_header(message, "Message-ID").as_deref()));
    out.push(b')');
    out
}

/// An address header as an ENVELOPE address list (`NIL` when it names nobody).
fn address_list(value: Option<&str>) -> Vec<u8> {
    let items = value.map(address::parse).unwrap_or_default();
    if items.is_empty() {
        return b"NIL".to_vec();
    }
    let mut out = b"(".to_vec();
    for item in items {
        let fields = match &item {
            Item::Mailbox {
                name,
                route,
                local,
                domain,
            } => [
                nstring(name.as_deref()),
                nstring(route.as_deref()),
                string(local.as_bytes()),
                string(domain.as_bytes()),
            ],
            Item::GroupStart(name) => [
                b"NIL".to_vec(),
                b"NIL".to_vec(),
                string(name.as_bytes()),
                b"NIL".to_vec(),
            ],
            Item::GroupEnd => std::array::from_fn(|_| b"NIL".to_vec()),
        };
        out.push(b'(');
        out.extend(fields.join(&b' '));
        out.push(b')');
    }
    out.push(b')');
    out
}

/// The bytes of `BINARY[part]` (RFC 3516): the whole message for no part; a part's body with
/// its transfer encoding removed (7bit, 8bit and binary have none; a multipart or message part
/// is given as it stands). `Err` names an encoding that cannot be undone (`UNKNOWN-CTE`).
pub fn binary_section(sections: &Sections<'_>, part: &[u32]) -> Result<Vec<u8>, String> {
    let message = sections.message();
    let Some(path) = section_path(part) else {
        return Ok(message.raw().to_vec());
    };
    let Some(id) = resolve(sections, &path) else {
        return Ok(Vec::new());
    };
    let body = part_body(message, id).unwrap_or_default();
    let Some(info) = message.part(id) else {
        return Ok(body);
    };
    if info.is_multipart || info.is_message {
        return Ok(body);
    }
    match info.transfer_encoding.as_deref() {
        None | Some("7bit" | "8bit" | "binary") => Ok(body),
        Some(encoding @ ("base64" | "quoted-printable")) => {
            Ok(crate::message::mime::decode(&body, Some(encoding)))
        }
        Some(other) => Err(other.to_string()),
    }
}

fn section_path(part: &[u32]) -> Option<SectionPart> {
    let numbers: Vec<std::num::NonZeroU32> = part
        .iter()
        .filter_map(|&n| std::num::NonZeroU32::new(n))
        .collect();
    Some(SectionPart(numbers.try_into().ok()?))
}

/// A literal for BINARY data: `~{n}` (RFC 3516 literal8) when it holds a NUL, else `{n}`.
pub fn binary_literal(bytes: &[u8]) -> Vec<u8> {
    let marker = if bytes.contains(&0) { "~" } else { "" };
    let mut out = format!("{marker}{{{}}}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out
}

/// Ascending numbers as a sequence set: `1:3,7,9:10` (empty for none).
pub fn sequence_set(numbers: impl IntoIterator<Item = u32>) -> String {
    let mut out = String::new();
    let mut run: Option<(u32, u32)> = None;
    let flush = |run: (u32, u32), out: &mut String| {
        if !out.is_empty() {
            out.push(',');
        }
        if run.0 == run.1 {
            out.push_str(&run.0.to_string());
        } else {
            out.push_str(&format!("{}:{}", run.0, run.1));
        }
    };
    for n in numbers {
        run = match run {
            Some((a, b)) if b.checked_add(1) == Some(n) => Some((a, n)),
            Some(done) => {
                flush(done, &mut out);
                Some((n, n))
            }
            None => Some((n, n)),
        };
    }
    if let Some(done) = run {
        flush(done, &mut out);
    }
    out
}

/// BODYSTRUCTURE (with extension data) or BODY (without), from the message's MIME tree (whose
/// depth is bounded, so the walk is too). An encapsulated message is described from its part
/// of the same tree, never parsed again.
pub fn body_structure(message: &Message, extended: bool) -> Vec<u8> {
    if message.parts().is_empty() {
        return b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)".to_vec();
    }
    let children = child_lists(message);
    let mut out = Vec::new();
    part_structure(message, &children, 0, extended, None, &mut out);
    out
}

/// BODYPARTSTRUCTURE (RFC 5524): the extended BODYSTRUCTURE of part `id` alone. With
/// `sizes` (by part id), each body's size and lines are those given there (what BINARY gives,
/// as Dovecot says them) instead of the stored ones.
pub fn part_body_structure(message: &Message, id: u32, sizes: Option<&[BodySize]>) -> Vec<u8> {
    if message.parts().is_empty() {
        return body_structure(message, true);
    }
    let children = child_lists(message);
    let mut out = Vec::new();
    part_structure(message, &children, id, true, sizes, &mut out);
    out
}

fn part_structure(
    message: &Message,
    children: &[Vec<u32>],
    id: u32,
    extended: bool,
    sizes: Option<&[BodySize]>,
    out: &mut Vec<u8>,
) {
    let (Some(part), Some(kids)) = (message.part(id), children.get(id as usize)) else {
        out.extend_from_slice(b"NIL");
        return;
    };
    out.push(b'(');
    let fields = PartFields::of(message, id);
    if part.is_multipart {
        for &child in kids {
            part_structure(message, children, child, extended, sizes, out);
        }
        out.push(b' ');
        out.extend(string(part.subtype.as_bytes()));
        if extended {
            out.push(b' ');
            out.extend(params(&part.params));
            out.push(b' ');
            disposition(&fields, out);
            out.push(b' ');
            fields.language_and_location(out);
        }
        out.push(b')');
        return;
    }
    out.extend(string(part.media_type.as_bytes()));
    out.push(b' ');
    out.extend(string(part.subtype.as_bytes()));
    out.push(b' ');
    if part.media_type == "text" && !part.params.iter().any(|(n, _)| n == "charset") {
        // RFC 2045 §5.2: text without a charset is US-ASCII; clients expect it said (after
        // the parameters given, where Dovecot puts it).
        let mut with_default = part.params.clone();
        with_default.push(("charset".to_string(), "us-ascii".to_string()));
        out.extend(params(&with_default));
    } else {
        out.extend(params(&part.params));
    }
    out.push(b' ');
    out.extend(nstring(fields.id.as_deref()));
    out.push(b' ');
    out.extend(nstring(fields.description.as_deref()));
    out.push(b' ');
    let encoding = part.transfer_encoding.as_deref().unwrap_or("7bit");
    out.extend(string(encoding.as_bytes()));
    let body = match sizes {
        Some(sizes) => sizes.get(id as usize).copied().unwrap_or_default(),
        None => {
            let stored = part_body(message, id).unwrap_or_default();
            BodySize {
                bytes: stored.len(),
                lines: lines(&stored),
            }
        }
    };
    push_str(out, &format!(" {}", body.bytes));
    if part.is_message {
        // The encapsulated message: its envelope, its structure, its lines.
        out.push(b' ');
        out.extend(envelope(&Message::new(inner_header(message, kids))));
        out.push(b' ');
        match kids.first() {
            Some(&inner) => part_structure(message, children, inner, extended, sizes, out),
            None => out.extend_from_slice(b"(\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0)"),
        }
        push_str(out, &format!(" {}", body.lines));
    } else if part.media_type == "text" {
        push_str(out, &format!(" {}", body.lines));
    }
    if extended {
        out.push(b' ');
        out.extend(nstring(fields.md5.as_deref()));
        out.push(b' ');
        disposition(&fields, out);
        out.push(b' ');
        fields.language_and_location(out);
    }
    out.push(b')');
}

/// The header block of the message inside a message/rfc822 part (its first child).
fn inner_header(message: &Message, kids: &[u32]) -> Vec<u8> {
    kids.first()
        .and_then(|&inner| part_header(message, inner))
        .unwrap_or_default()
}

fn params(params: &[(String, String)]) -> Vec<u8> {
    if params.is_empty() {
        return b"NIL".to_vec();
    }
    let mut out = b"(".to_vec();
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend(string(name.as_bytes()));
        out.push(b' ');
        out.extend(string(value.as_bytes()));
    }
    out.push(b')');
    out
}

/// Text lines: line ends, as Dovecot counts them. A part ends at the line break before its
/// boundary (which belongs to the boundary), so its last line has none and is not counted:
/// "a\r\nb" then `--boundary` is 1 line, and so is a whole message "a\r\nb".
fn lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// What a part's own header says that BODYSTRUCTURE repeats as written: Content-ID,
/// Content-Description, Content-MD5, Content-Language (a list) and Content-Location.
struct PartFields {
    id: Option<String>,
    description: Option<String>,
    md5: Option<String>,
    language: Vec<String>,
    location: Option<String>,
    disposition: Option<(String, Vec<(String, String)>)>,
}

impl PartFields {
    fn of(message: &Message, id: u32) -> PartFields {
        let header = Message::new(part_header(message, id).unwrap_or_default());
        let field = |name: &str| raw_header(&header, name).filter(|v| !v.is_empty());
        PartFields {
            id: field("Content-ID"),
            description: field("Content-Description"),
            md5: field("Content-MD5"),
            language: field("Content-Language")
                .map(|v| {
                    v.split(',')
                        .map(|l| l.trim().to_string())
                        .filter(|l| !l.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            location: field("Content-Location"),
            // A field the MIME scan found too costly to read is not read here either.
            disposition: field("Content-Disposition")
                .filter(|v| {
                    crate::message::header::parameter_count(v.as_bytes())
                        <= crate::message::header::MAX_FIELD_PARAMETERS
                })
                .and_then(|v| header_params(&v)),
        }
    }

    /// `body-fld-lang SP body-fld-loc` (RFC 3501 §9).
    fn language_and_location(&self, out: &mut Vec<u8>) {
        if self.language.is_empty() {
            out.extend_from_slice(b"NIL");
        } else {
            out.push(b'(');
            for (i, language) in self.language.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                out.extend(string(language.as_bytes()));
            }
            out.push(b')');
        }
        out.push(b' ');
        out.extend(nstring(self.location.as_deref()));
    }
}

/// `body-fld-dsp`: the Content-Disposition type and every parameter as written (RFC 2231
/// `filename*` included, undecoded, as Dovecot gives them), or NIL.
fn disposition(fields: &PartFields, out: &mut Vec<u8>) {
    let Some((kind, parameters)) = &fields.disposition else {
        out.extend_from_slice(b"NIL");
        return;
    };
    out.push(b'(');
    out.extend(string(kind.as_bytes()));
    out.push(b' ');
    out.extend(params(parameters));
    out.push(b')');
}

/// `type; name=value; name="quoted value"` -> (type, parameters); `None` without a type.
fn header_params(value: &str) -> Option<(String, Vec<(String, String)>)> {
    let mut pieces = split_unquoted(value, ';').into_iter();
    let kind = pieces.next()?.trim().to_string();
    if kind.is_empty() {
        return None;
    }
    let parameters = pieces
        .filter_map(|piece| {
            let (name, value) = piece.split_once('=')?;
            let (name, value) = (name.trim(), value.trim());
            if name.is_empty() {
                return None;
            }
            let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(quoted) => unquote(quoted),
                None => value.to_string(),
            };
            Some((name.to_string(), value))
        })
        .collect();
    Some((kind, parameters))
}

/// `text` split at each `separator` outside a quoted string.
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let (mut pieces, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                pieces.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    pieces.push(&text[start..]);
    pieces
}

/// A quoted string's content without its backslash escapes.
fn unquote(quoted: &str) -> String {
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        out.extend(if c == '\\' { chars.next() } else { Some(c) });
    }
    out
}

/// The body bytes of a part as they stand in the message.
fn part_body(message: &Message, id: u32) -> Option<Vec<u8>> {
    let span = message.part(id)?.span?;
    message
        .raw()
        .get(span.body_start..span.end)
        .map(<[u8]>::to_vec)
}

fn part_header(message: &Message, id: u32) -> Option<Vec<u8>> {
    let span = message.part(id)?.span?;
    message
        .raw()
        .get(span.header_start..span.body_start)
        .map(<[u8]>::to_vec)
}

/// The id of the part section numbers name (`[]`: the message, part 0); `None` when there is
/// no such part.
pub fn part_id(sections: &Sections<'_>, numbers: &[u32]) -> Option<u32> {
    if numbers.is_empty() {
        return Some(0);
    }
    if numbers.contains(&0) {
        return None;
    }
    resolve(sections, &section_path(numbers)?)
}

/// The part a section number names (RFC 3501 §6.4.5): inside a message/rfc822 part the
/// numbers continue into the encapsulated message.
fn resolve(sections: &Sections<'_>, path: &SectionPart) -> Option<u32> {
    let message = sections.message();
    let mut current = 0u32;
    for (depth, n) in path.0.as_ref().iter().enumerate() {
        let mut node = current;
        let part = message.part(node)?;
        if part.is_message && depth > 0 {
            node = *sections.children(node).first()?;
        }
        let part = message.part(node)?;
        if part.is_multipart {
            current = *sections.children(node).get(n.get() as usize - 1)?;
        } else if n.get() == 1 {
            current = node;
        } else {
            return None;
        }
    }
    Some(current)
}

/// The inner message of a message/rfc822 part (or the message itself for no part, borrowed:
/// never copied per section).
fn inner_message<'a>(
    sections: &Sections<'a>,
    part: Option<&SectionPart>,
) -> Option<std::borrow::Cow<'a, Message>> {
    let message = sections.message();
    match part {
        None => Some(std::borrow::Cow::Borrowed(message)),
        Some(p) => {
            let id = resolve(sections, p)?;
            message.part(id)?.is_message.then_some(())?;
            Some(std::borrow::Cow::Owned(Message::new(part_body(
                message, id,
            )?)))
        }
    }
}

fn header_of(message: &Message) -> Vec<u8> {
    let block = message.header_block();
    message.raw()[..block.body_start.min(message.raw().len())].to_vec()
}

fn filtered_header(message: &Message, names: &[String], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for field in message.headers() {
        let listed = names.iter().any(|n| n.eq_ignore_ascii_case(&field.name));
        if listed == keep {
            out.extend_from_slice(field.name.as_bytes());
            out.push(b':');
            out.extend_from_slice(field.raw.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The bytes of a section (`None`: the whole message).
pub fn section_bytes(sections: &Sections<'_>, section: Option<&Section<'_>>) -> Vec<u8> {
    let message = sections.message();
    let names = |list: &imap_codec::imap_types::core::NonEmptyVec<
        imap_codec::imap_types::core::AString<'_>,
    >|
     -> Vec<String> {
        list.as_ref()
            .iter()
            .map(|n| String::from_utf8_lossy(n.as_ref()).into_owned())
            .collect()
    };
    let result =
        match section {
            None => Some(message.raw().to_vec()),
            Some(Section::Header(part)) => {
                inner_message(sections, part.as_ref()).map(|m| header_of(&m))
            }
            Some(Section::Text(part)) => {
                inner_message(sections, part.as_ref()).map(|m| m.body().to_vec())
            }
            Some(Section::HeaderFields(part, list)) => inner_message(sections, part.as_ref())
                .map(|m| filtered_header(&m, &names(list), true)),
            Some(Section::HeaderFieldsNot(part, list)) => inner_message(sections, part.as_ref())
                .map(|m| filtered_header(&m, &names(list), false)),
            Some(Section::Part(part)) => resolve(sections, part).and_then(|id| match id {
                0 => Some(message.body().to_vec()),
                _ => part_body(message, id),
            }),
            Some(Section::Mime(part)) => {
                resolve(sections, part).and_then(|id| part_header(message, id))
            }
        };
    result.unwrap_or_default()
}

/// The section as the response names it: `HEADER.FIELDS (SUBJECT)`, `1.2.TEXT`, ...
pub fn section_name(section: Option<&Section<'_>>) -> String {
    let part = |p: &SectionPart| -> String {
        p.0.as_ref()
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(".")
    };
    let with = |p: &Option<SectionPart>, what: &str| match p {
        Some(p) => format!("{}.{what}", part(p)),
        None => what.to_string(),
    };
    let names = |list: &imap_codec::imap_types::core::NonEmptyVec<
        imap_codec::imap_types::core::AString<'_>,
    >| {
        list.as_ref()
            .iter()
            .map(|n| String::from_utf8_lossy(n.as_ref()).to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(" ")
    };
    match section {
        None => String::new(),
        Some(Section::Part(p)) => part(p),
        Some(Section::Header(p)) => with(p, "HEADER"),
        Some(Section::Text(p)) => with(p, "TEXT"),
        Some(Section::Mime(p)) => format!("{}.MIME", part(p)),
        Some(Section::HeaderFields(p, list)) => {
            format!("{} ({})", with(p, "HEADER.FIELDS"), names(list))
        }
        Some(Section::HeaderFieldsNot(p, list)) => {
            format!("{} ({})", with(p, "HEADER.FIELDS.NOT"), names(list))
        }
    }
}

/// `DD-Mon-YYYY HH:MM:SS +0000` for INTERNALDATE.
pub fn internal_date(secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let date = crate::mail::date::rfc5322(secs); // "Sun, 22 Nov 2026 05:00:00 +0000"
    let words: Vec<&str> = date.split_whitespace().collect();
    match words.as_slice() {
        [_, day, month, year, time, zone] => {
            let month = MONTHS
                .iter()
                .find(|m| m == &month)
                .copied()
                .unwrap_or("Jan");
            format!("{:0>2}-{month}-{year} {time} {zone}", day)
        }
        _ => "01-Jan-1970 00:00:00 +0000".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &[u8] = b"From: Ann <ann@a.test>\r\nTo: bob@b.test\r\nSubject: hi\r\nMessage-ID: <1@a>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: application/pdf; name=x.pdf\r\n\
Content-Disposition: attachment; filename=x.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--b--\r\n";

    #[test]
    fn disposition_parameters_as_written() {
        let (kind, params) = header_params(
            "attachment; filename=\"a;b \\\"c\\\".txt\"; size=12; filename*=utf-8''x",
        )
        .expect("parsed");
        assert_eq!(kind, "attachment");
        assert_eq!(
            params,
            [
                ("filename".to_string(), "a;b \"c\".txt".to_string()),
                ("size".to_string(), "12".to_string()),
                ("filename*".to_string(), "utf-8''x".to_string()),
            ]
        );
        for odd in ["", ";", "inline; =x; y", "\"", "a; b=\"", "é; ü=\"\\"] {
            let _ = header_params(odd);
        }
        assert!(header_params(" ; x=1").is_none());
    }

    #[test]
    fn sequence_sets_compress_runs() {
        assert_eq!(sequence_set([1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(sequence_set([]), "");
        assert_eq!(sequence_set([u32::MAX]), "4294967295");
    }

    #[test]
    fn strings_quote_or_literal() {
        assert_eq!(string(b"a\"b"), b"\"a\\\"b\"");
        assert_eq!(string(b"a\r\nb"), b"{4}\r\na\r\nb");
        assert_eq!(nstring(None), b"NIL");
    }

    #[test]
    fn structure_envelope_and_sections() {
        let m = Message::new(MIXED.to_vec());
        let bs = String::from_utf8(body_structure(&m, true)).expect("utf8");
        // "hello" ends at the line break that belongs to the boundary: no line end of its
        // own, 0 lines (as Dovecot counts).
        assert!(
            bs.starts_with("((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 0"),
            "{bs}"
        );
        assert!(
            bs.contains("\"application\" \"pdf\" (\"name\" \"x.pdf\") NIL NIL \"base64\" 4"),
            "{bs}"
        );
        assert!(bs.contains("\"mixed\" (\"boundary\" \"b\")"), "{bs}");
        let env = String::from_utf8(envelope(&m)).expect("utf8");
        assert!(env.contains("((\"Ann\" NIL \"ann\" \"a.test\"))"), "{env}");
        assert!(env.contains("\"hi\""), "{env}");
        let one: SectionPart = SectionPart(
            vec![std::num::NonZeroU32::new(1).expect("1")]
                .try_into()
                .expect("part"),
        );
        assert_eq!(
            section_bytes(&Sections::new(&m), Some(&Section::Part(one))),
            b"hello"
        );
        assert_eq!(internal_date(0), "01-Jan-1970 00:00:00 +0000");
    }
}
