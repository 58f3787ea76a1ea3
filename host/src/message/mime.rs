//! The MIME tree of a message, found by our own scanner: boundaries and `message/rfc822`
//! nesting are followed with an explicit work stack and a depth bound, never by recursion, so
//! no message (however deeply nested) can overflow a stack. mail-parser still interprets each
//! part's header block (`parse_headers`, which never looks at a body) and its decoders decode
//! leaf bodies; it is never handed a whole message whose nesting we have not bounded.

use std::sync::atomic::{AtomicUsize, Ordering};

use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{MessageParser, MimeHeaders};

use super::header::HeaderBlock;
use super::{Part, PartContent, PartSpan};

/// Default for `limits.max-mime-depth`: deeper than any real mail (clients and scanners stop
/// near this too), shallow enough that every consumer of the tree can walk it freely.
pub const DEFAULT_MAX_DEPTH: usize = 50;
/// The highest `limits.max-mime-depth` the config accepts.
pub const MAX_DEPTH_LIMIT: usize = 200;

static MAX_DEPTH: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_DEPTH);

/// Sets the process-wide nesting bound (from `limits.max-mime-depth`, at start and reload).
pub fn set_max_depth(depth: usize) {
    MAX_DEPTH.store(depth.clamp(1, MAX_DEPTH_LIMIT), Ordering::Relaxed);
}

/// The nesting bound in force.
pub fn max_depth() -> usize {
    MAX_DEPTH.load(Ordering::Relaxed)
}

/// The parts in document order (part 0 is the message), and whether some container lay deeper
/// than the bound and was kept as an opaque leaf.
#[derive(Debug, Default, Clone)]
pub(super) struct MimeTree {
    pub parts: Vec<Part>,
    pub too_deep: bool,
    /// False for a structure-only scan: leaves keep no content.
    decode_leaves: bool,
}

/// Which bytes a part lives in: the message itself, or a decoded copy of a transfer-encoded
/// `message/rfc822` body (whose offsets do not map to the message's).
#[derive(Clone, Copy)]
enum Buffer {
    Raw,
    Decoded(usize),
}

/// A part still to be looked at.
struct Pending {
    buffer: Buffer,
    start: usize,
    end: usize,
    parent: Option<u32>,
    depth: usize,
    nested: bool,
    /// Inside multipart/digest a part without Content-Type is a message (RFC 2046 §5.1.5).
    digest_child: bool,
}

/// What a part's header says it is.
struct Header {
    media_type: String,
    subtype: String,
    params: Vec<(String, String)>,
    disposition: Option<String>,
    filename: Option<String>,
    transfer_encoding: Option<String>,
    declared: bool,
}

/// True when `raw` nests parts deeper than `max_depth` (the structure alone is scanned: no
/// leaf is decoded), for refusing such a message at DATA.
pub fn exceeds_depth(raw: &[u8], max_depth: usize) -> bool {
    MimeTree::scan(raw, max_depth, false).too_deep
}

impl MimeTree {
    pub fn parse(raw: &[u8], max_depth: usize) -> MimeTree {
        MimeTree::scan(raw, max_depth, true)
    }

    fn scan(raw: &[u8], max_depth: usize, decode_leaves: bool) -> MimeTree {
        let mut tree = MimeTree {
            decode_leaves,
            ..MimeTree::default()
        };
        let mut decoded: Vec<Vec<u8>> = Vec::new();
        let mut stack = vec![Pending {
            buffer: Buffer::Raw,
            start: 0,
            end: raw.len(),
            parent: None,
            depth: 0,
            nested: false,
            digest_child: false,
        }];
        while let Some(item) = stack.pop() {
            let bytes: &[u8] = match item.buffer {
                Buffer::Raw => raw,
                Buffer::Decoded(i) => &decoded[i],
            };
            let (children, new_buffer) = tree.add(bytes, &item, max_depth, decoded.len());

            decoded.extend(new_buffer);
            // Reversed, so that the first child is looked at next (document order of ids).
            stack.extend(children.into_iter().rev());
        }
        tree
    }

    /// Adds the part `item` and returns the parts inside it, with the decoded body they live in
    /// when it is a transfer-encoded message (to become buffer `next_buffer`).
    fn add(
        &mut self,
        bytes: &[u8],
        item: &Pending,
        max_depth: usize,
        next_buffer: usize,
    ) -> (Vec<Pending>, Option<Vec<u8>>) {
        let id = self.parts.len() as u32;
        let whole = &bytes[item.start..item.end];
        let body_start = item.start + HeaderBlock::parse(whole, 0).body_start;
        let mut header = Header::parse(&bytes[item.start..body_start]);
        if !header.declared && item.digest_child {
            "message".clone_into(&mut header.media_type);
            "rfc822".clone_into(&mut header.subtype);
        }
        let span = matches!(item.buffer, Buffer::Raw).then_some(PartSpan {
            header_start: item.start,
            body_start,
            end: item.end,
        });
        let body = &bytes[body_start..item.end];
        let container = header.container();
        let opens_message = matches!(container, Some(Container::Message));
        let mut children = Vec::new();
        let mut new_buffer = None;
        let mut content = PartContent::Container;
        let (mut is_multipart, mut is_message) = (false, false);
        let child = |buffer, start, end, digest_child| Pending {
            buffer,
            start,
            end,
            parent: Some(id),
            depth: item.depth + 1,
            nested: item.nested || opens_message,
            digest_child,
        };
        match container {
            Some(_) if item.depth >= max_depth => {
                self.too_deep = true;
                header.make_opaque();
                content = PartContent::Binary(body.to_vec());
            }
            Some(Container::Multipart(boundary)) => {
                let ranges = multipart_children(bytes, body_start, item.end, boundary.as_bytes());
                if ranges.is_empty() {
                    // No delimiter at all: not really a multipart; keep its bytes as they are.
                    header.make_opaque();
                    content = PartContent::Binary(body.to_vec());
                } else {
                    is_multipart = true;
                    let digest = header.subtype == "digest";
                    children = ranges
                        .into_iter()
                        .map(|(s, e)| child(item.buffer, s, e, digest))
                        .collect();
                }
            }
            Some(Container::Message) => {
                is_message = true;
                match header.transfer_encoding.as_deref() {
                    Some("base64" | "quoted-printable") => {
                        let inner = decode(body, header.transfer_encoding.as_deref());
                        children.push(child(Buffer::Decoded(next_buffer), 0, inner.len(), false));
                        new_buffer = Some(inner);
                    }
                    _ => children.push(child(item.buffer, body_start, item.end, false)),
                }
            }
            None if self.decode_leaves => content = header.leaf_content(body),
            None => {}
        }
        self.parts.push(Part {
            id,
            parent: item.parent,
            media_type: header.media_type,
            subtype: header.subtype,
            params: header.params,
            disposition: header.disposition,
            filename: header.filename,
            transfer_encoding: header.transfer_encoding,
            size: body.len() as u64,
            is_multipart,
            is_message,
            nested: item.nested,
            span,
            content,
        });
        (children, new_buffer)
    }
}

enum Container {
    Multipart(String),
    Message,
}

impl Header {
    /// Reads the header block with mail-parser, which stops before any body.
    fn parse(block: &[u8]) -> Header {
        let parsed = MessageParser::new().parse_headers(block);
        let part = parsed.as_ref().and_then(|m| m.parts.first());
        let content_type = part.and_then(|p| p.content_type());
        let (media_type, subtype, params) = match content_type {
            Some(ct) => (
                ct.ctype().to_ascii_lowercase(),
                ct.subtype().unwrap_or_default().to_ascii_lowercase(),
                ct.attributes()
                    .unwrap_or_default()
                    .iter()
                    .map(|a| (a.name.to_ascii_lowercase(), a.value.to_string()))
                    .collect(),
            ),
            None => ("text".into(), "plain".into(), Vec::new()),
        };
        Header {
            media_type,
            subtype,
            params,
            disposition: part
                .and_then(|p| p.content_disposition())
                .map(|d| d.ctype().to_ascii_lowercase()),
            filename: part.and_then(|p| p.attachment_name()).map(str::to_string),
            transfer_encoding: part
                .and_then(|p| p.content_transfer_encoding())
                .map(|e| e.trim().to_ascii_lowercase()),
            declared: content_type.is_some(),
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this part holds other parts, as mail-parser would read it.
    fn container(&self) -> Option<Container> {
        match self.media_type.as_str() {
            "multipart" => self
                .param("boundary")
                .filter(|b| !b.is_empty())
                .map(|b| Container::Multipart(b.to_string())),
            "message" if matches!(self.subtype.as_str(), "rfc822" | "global") => {
                Some(Container::Message)
            }
            _ => None,
        }
    }

    /// A container we do not open is shown as what it then is: bytes.
    fn make_opaque(&mut self) {
        "application".clone_into(&mut self.media_type);
        "octet-stream".clone_into(&mut self.subtype);
        self.params.retain(|(n, _)| n != "boundary");
    }

    /// The body with its transfer encoding removed; text converted to UTF-8.
    fn leaf_content(&self, body: &[u8]) -> PartContent {
        let bytes = decode(body, self.transfer_encoding.as_deref());
        if self.media_type != "text" {
            return PartContent::Binary(bytes);
        }
        let text = match self
            .param("charset")
            .and_then(|c| charset_decoder(c.as_bytes()))
        {
            Some(decoder) => decoder(&bytes),
            None => String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        };
        PartContent::Text(text)
    }
}

/// Removes a base64 or quoted-printable transfer encoding; undecodable data stays as it is.
pub fn decode(body: &[u8], encoding: Option<&str>) -> Vec<u8> {
    let decoded = match encoding {
        Some("base64") => base64_decode(body),
        Some("quoted-printable") => quoted_printable_decode(body),
        _ => None,
    };
    decoded.unwrap_or_else(|| body.to_vec())
}

/// The (start, end) of each part of a multipart body in `bytes[start..end]`: the bytes between
/// one delimiter line and the line end before the next (RFC 2046 §5.1.1). Preamble and epilogue
/// are not parts; without a close delimiter the last part runs to the end.
pub(super) fn multipart_children(
    bytes: &[u8],
    start: usize,
    end: usize,
    boundary: &[u8],
) -> Vec<(usize, usize)> {
    let mut parts = Vec::new();
    let mut open: Option<usize> = None;
    let mut line = start;
    while line < end {
        let next = memchr::memchr(b'\n', &bytes[line..end]).map_or(end, |i| line + i + 1);
        if let Some(close) = delimiter(&bytes[line..next], boundary) {
            if let Some(part_start) = open {
                parts.push((part_start, line_end_before(bytes, part_start, line)));
            }
            if close {
                return parts;
            }
            open = Some(next);
        }
        line = next;
    }
    if let Some(part_start) = open {
        parts.push((part_start, end));
    }
    parts
}

/// `Some(is_close)` when `line` is `--boundary` or `--boundary--` (trailing space allowed).
fn delimiter(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let (close, rest) = match rest.strip_prefix(b"--") {
        Some(after) => (true, after),
        None => (false, rest),
    };
    rest.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .then_some(close)
}

/// The line end before a delimiter belongs to the delimiter: the part ends before it.
fn line_end_before(bytes: &[u8], part_start: usize, delimiter: usize) -> usize {
    let mut end = delimiter;
    if end > part_start && bytes[end - 1] == b'\n' {
        end -= 1;
        if end > part_start && bytes[end - 1] == b'\r' {
            end -= 1;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `levels` multiparts, each holding the next, around one text part.
    pub(crate) fn nested_multipart(levels: usize) -> Vec<u8> {
        let mut raw = b"Subject: deep\r\n".to_vec();
        for i in 0..levels {
            raw.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        }
        raw.extend_from_slice(b"Content-Type: text/plain\r\n\r\nbottom\r\n");
        for i in (0..levels).rev() {
            raw.extend_from_slice(format!("--b{i}--\r\n").as_bytes());
        }
        raw
    }

    /// `levels` message/rfc822 parts, each the body of the one before.
    pub(crate) fn nested_messages(levels: usize) -> Vec<u8> {
        let mut raw = Vec::new();
        for _ in 0..levels {
            raw.extend_from_slice(b"Subject: wrapper\r\nContent-Type: message/rfc822\r\n\r\n");
        }
        raw.extend_from_slice(b"Subject: inner\r\n\r\nbottom\r\n");
        raw
    }

    fn depth(tree: &MimeTree, mut id: u32) -> usize {
        let mut depth = 0;
        while let Some(parent) = tree.parts[id as usize].parent {
            id = parent;
            depth += 1;
        }
        depth
    }

    #[test]
    fn shallow_nesting_is_followed_to_the_leaf() {
        let tree = MimeTree::parse(&nested_multipart(10), 50);
        assert!(!tree.too_deep);
        assert_eq!(tree.parts.len(), 11);
        let leaf = &tree.parts[10];
        assert_eq!(leaf.content, PartContent::Text("bottom".into()));
        assert_eq!(depth(&tree, 10), 10);
    }

    #[test]
    fn deep_multiparts_stop_at_the_bound_as_an_opaque_leaf() {
        for levels in [51, 2_000, 20_000] {
            let tree = MimeTree::parse(&nested_multipart(levels), 50);
            assert!(tree.too_deep, "{levels}");
            assert_eq!(tree.parts.len(), 51, "{levels}");
            let last = tree.parts.last().expect("parts");
            assert_eq!(depth(&tree, last.id), 50);
            assert_eq!(
                (last.media_type.as_str(), last.subtype.as_str()),
                ("application", "octet-stream")
            );
            assert!(!last.is_multipart && !last.is_message);
        }
    }

    #[test]
    fn deep_message_chains_stop_at_the_bound() {
        let tree = MimeTree::parse(&nested_messages(100_000), 50);
        assert!(tree.too_deep);
        assert_eq!(tree.parts.len(), 51);
        assert!(tree.parts.iter().all(|p| depth(&tree, p.id) <= 50));
        let tree = MimeTree::parse(&nested_messages(5), 50);
        assert!(!tree.too_deep);
        assert_eq!(tree.parts.len(), 6);
        assert!(tree.parts[5].nested);
        assert_eq!(
            tree.parts[5].content,
            PartContent::Text("bottom\r\n".into())
        );
    }

    #[test]
    fn encoded_inner_message_is_opened_without_spans() {
        let inner = b"Subject: in\r\nContent-Type: text/plain\r\n\r\nsecret\r\n";
        let encoded = mail_parser_free_base64(inner);
        let raw = format!(
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n"
        );
        let tree = MimeTree::parse(raw.as_bytes(), 50);
        assert_eq!(tree.parts.len(), 2);
        assert!(tree.parts[0].is_message);
        assert!(tree.parts[1].span.is_none());
        assert_eq!(
            tree.parts[1].content,
            PartContent::Text("secret\r\n".into())
        );
    }

    fn mail_parser_free_base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn delimiters_need_a_line_of_their_own() {
        let body = b"pre\r\n--b\r\nA\r\n--bb\r\nstill A\r\n--b \r\nB\r\n--b--\r\nepilogue\r\n";
        let parts = multipart_children(body, 0, body.len(), b"b");
        let texts: Vec<&[u8]> = parts.iter().map(|&(s, e)| &body[s..e]).collect();
        assert_eq!(texts, vec![&b"A\r\n--bb\r\nstill A"[..], &b"B"[..]]);
    }

    #[test]
    fn digest_parts_default_to_messages() {
        let raw = b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: one\r\n\r\nbody\r\n--d--\r\n";
        let tree = MimeTree::parse(raw, 50);
        assert_eq!(tree.parts.len(), 3);
        assert!(tree.parts[1].is_message);
        assert!(tree.parts[2].nested);
    }
}
