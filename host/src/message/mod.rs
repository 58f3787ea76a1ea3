//! A message as plugins see it: the raw bytes, split into header fields at once (cheap) and
//! parsed into a MIME tree only when someone asks (mail-parser).

mod edit;
pub mod encode;
pub mod header;
pub mod lines;
pub mod mime;

use std::sync::OnceLock;

pub use edit::{apply_message_edits, EditError, MessageEdit};
use header::HeaderBlock;
use mime::MimeTree;

/// A message held by the host. Immutable: edits produce a new `Message`.
#[derive(Debug, Clone)]
pub struct Message {
    raw: Vec<u8>,
    header: HeaderBlock,
    tree: OnceLock<MimeTree>,
}

/// Messages from this size on are parsed on a blocking thread: the parse of a large message
/// takes milliseconds (tens of them at the size limit), which no async worker may spend while
/// other clients wait behind it. Smaller ones are parsed in place (a hand-off costs more).
const PARSE_IN_PLACE_BELOW: usize = 256 * 1024;

fn parse_off_worker(raw: &[u8]) -> MimeTree {
    let bounds = mime::Bounds::current();
    if raw.len() < PARSE_IN_PLACE_BELOW {
        MimeTree::parse(raw, bounds)
    } else {
        crate::sys::blocking::run(|| MimeTree::parse(raw, bounds))
    }
}

/// One header field, decoded for plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderField {
    pub name: String,
    pub raw: String,
    pub decoded: String,
}

/// One node of the flattened MIME tree (part 0 is the message itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub id: u32,
    pub parent: Option<u32>,
    pub media_type: String,
    pub subtype: String,
    pub params: Vec<(String, String)>,
    pub disposition: Option<String>,
    pub filename: Option<String>,
    pub transfer_encoding: Option<String>,
    pub size: u64,
    pub is_multipart: bool,
    pub is_message: bool,
    /// True when this part lies inside a message/rfc822 part (not the top-level message).
    pub nested: bool,
    /// Where the part (headers, body, end) sits in the raw message, when it can be located
    /// byte for byte (not inside a transfer-encoded message/rfc822 part).
    pub span: Option<PartSpan>,
    content: PartContent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSpan {
    pub header_start: usize,
    pub body_start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PartContent {
    Text(String),
    Binary(Vec<u8>),
    Container,
}

impl Message {
    /// Takes the bytes as they are. Callers that read files from disk canonicalise line ends
    /// first (`lines::to_crlf`); the SMTP reader already guarantees CRLF.
    pub fn new(raw: Vec<u8>) -> Message {
        let header = HeaderBlock::parse(&raw, 0);
        Message {
            raw,
            header,
            tree: OnceLock::new(),
        }
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn into_raw(self) -> Vec<u8> {
        self.raw
    }

    pub fn size(&self) -> u64 {
        self.raw.len() as u64
    }

    pub fn header_block(&self) -> &HeaderBlock {
        &self.header
    }

    pub fn body(&self) -> &[u8] {
        &self.raw[self.header.body_start..]
    }

    /// Up to `len` body bytes from `offset`.
    pub fn body_range(&self, offset: u64, len: u64) -> &[u8] {
        let body = self.body();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(body.len());
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        &body[start..start.saturating_add(len).min(body.len())]
    }

    /// All header fields in order.
    pub fn headers(&self) -> Vec<HeaderField> {
        (0..self.header.fields.len())
            .map(|i| self.field(i))
            .collect()
    }

    /// Every field with this name, case-insensitive.
    pub fn header(&self, name: &str) -> Vec<HeaderField> {
        (0..self.header.fields.len())
            .filter(|&i| self.header.name(&self.raw, i).eq_ignore_ascii_case(name))
            .map(|i| self.field(i))
            .collect()
    }

    /// The raw value of the last field with this name, not decoded: for callers that parse
    /// the raw form themselves (decoding a field of megabytes only to drop it costs as much
    /// as the parse).
    pub fn last_raw(&self, name: &str) -> Option<String> {
        let index = (0..self.header.fields.len())
            .rev()
            .find(|&i| self.header.name(&self.raw, i).eq_ignore_ascii_case(name))?;
        let value = &self.raw[self.header.fields[index].value.clone()];
        Some(String::from_utf8_lossy(value).into_owned())
    }

    /// The first field with this name, decoded.
    pub fn header_value(&self, name: &str) -> Option<String> {
        self.header(name).into_iter().next().map(|f| f.decoded)
    }

    fn field(&self, index: usize) -> HeaderField {
        let f = &self.header.fields[index];
        let raw_value = &self.raw[f.value.clone()];
        HeaderField {
            name: String::from_utf8_lossy(&self.raw[f.name.clone()]).into_owned(),
            raw: String::from_utf8_lossy(raw_value).into_owned(),
            decoded: decode_value(raw_value),
        }
    }

    fn tree(&self) -> &MimeTree {
        self.tree.get_or_init(|| parse_off_worker(&self.raw))
    }

    /// The MIME tree, parsed on first use, within `limits.max-mime-depth` and
    /// `limits.max-mime-parts`.
    pub fn parts(&self) -> &[Part] {
        &self.tree().parts
    }

    pub fn part(&self, id: u32) -> Option<&Part> {
        self.parts().get(id as usize)
    }

    /// The part's content with its transfer encoding removed (text converted to UTF-8).
    pub fn part_content(&self, id: u32) -> Option<Vec<u8>> {
        match &self.part(id)?.content {
            PartContent::Text(text) => Some(text.as_bytes().to_vec()),
            PartContent::Binary(bytes) => Some(bytes.clone()),
            PartContent::Container => None,
        }
    }

    /// A text part's content as UTF-8.
    pub fn part_text(&self, id: u32) -> Option<String> {
        match &self.part(id)?.content {
            PartContent::Text(text) => Some(text.clone()),
            _ => None,
        }
    }
}

/// Unfolds a raw header value and decodes RFC 2047 encoded words.
fn decode_value(raw_value: &[u8]) -> String {
    let mut line = raw_value.to_vec();
    line.extend_from_slice(b"\r\n");
    match mail_parser::parsers::MessageStream::new(&line).parse_unstructured() {
        mail_parser::HeaderValue::Text(text) => text.into_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const MULTIPART: &[u8] = b"From: a@example.org\r\n\
To: b@example.org\r\n\
Subject: =?utf-8?q?caf=C3=A9?=\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XX\"\r\n\
\r\n\
preamble\r\n\
--XX\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
Hello there.\r\n\
--XX\r\n\
Content-Type: application/octet-stream\r\n\
Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.exe\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
TVqQAAMAAAAEAAAA\r\n\
--XX--\r\n";

    #[test]
    fn headers_keep_raw_and_decode() {
        let m = Message::new(MULTIPART.to_vec());
        let subject = &m.header("subject")[0];
        assert_eq!(subject.raw, " =?utf-8?q?caf=C3=A9?=");
        assert_eq!(subject.decoded, "café");
        assert_eq!(m.headers().len(), 5);
    }

    #[test]
    fn mime_tree_with_decoded_filename_and_spans() {
        let m = Message::new(MULTIPART.to_vec());
        let parts = m.parts();
        assert_eq!(parts.len(), 3);
        assert!(parts[0].is_multipart);
        assert_eq!(parts[2].filename.as_deref(), Some("résumé.exe"));
        assert_eq!(parts[2].parent, Some(0));
        assert_eq!(m.part_content(2).unwrap()[..2], *b"MZ");
        let span = parts[1].span.unwrap();
        assert_eq!(&m.raw()[span.body_start..span.end], b"Hello there.");
        assert_eq!(m.part_text(1).as_deref(), Some("Hello there."));
    }

    #[test]
    fn nested_message_parts_are_located() {
        let inner = b"Subject: inner\r\nContent-Type: text/plain\r\n\r\ninner body\r\n";
        let mut raw = b"Subject: outer\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: message/rfc822\r\n\r\n".to_vec();
        raw.extend_from_slice(inner);
        raw.extend_from_slice(b"--B--\r\n");
        let m = Message::new(raw);
        let parts = m.parts();
        let leaf = parts
            .iter()
            .find(|p| p.nested)
            .unwrap_or_else(|| panic!("no nested part in {parts:#?}"));
        let span = leaf.span.expect("located");
        assert!(m.raw()[span.body_start..span.end].starts_with(b"inner body"));
        assert_eq!(leaf.parent, Some(1));
    }
}
