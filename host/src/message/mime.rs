//! The MIME tree of a message, found by our own scanner: boundaries and `message/rfc822`
//! nesting are followed with an explicit work stack and a depth bound, never by recursion, so
//! no message (however deeply nested) can overflow a stack. mail-parser still interprets each
//! part's header block (`parse_headers`, which never looks at a body) and its decoders decode
//! leaf bodies; it is never handed a whole message whose nesting we have not bounded.
//!
//! The work of a scan is bounded by the message's size, whatever its shape: at most
//! `limits.max-mime-parts` parts (each one costs a header parse and a record for every
//! consumer of the tree), at most `limits.max-mime-depth` levels, and transfer-encoded inner
//! messages decoded only while the decoded bytes stay under a multiple of the message's size
//! (each level of a nested encoded message would otherwise be decoded again, whole).

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
/// Default for `limits.max-mime-parts`: Dovecot's bound too; real mail with attachments has
/// tens of parts, a digest of a mailing list a few hundred.
pub const DEFAULT_MAX_PARTS: usize = 10_000;
/// The highest `limits.max-mime-parts` the config accepts.
pub const MAX_PARTS_LIMIT: usize = 100_000;
/// Inner messages are decoded while all their decoded bytes together stay within this many
/// times the message's size. Forwarded messages base64-encoded inside each other shrink by a
/// quarter a level (five levels take about 2.3 times); an encoded `message/rfc822` is not
/// even allowed by RFC 2046 §5.2.1, so only crafted mail reaches the bound.
const DECODE_FACTOR: usize = 4;

static MAX_DEPTH: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_DEPTH);
static MAX_PARTS: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_PARTS);

/// Sets the process-wide nesting bound (from `limits.max-mime-depth`, at start and reload).
pub fn set_max_depth(depth: usize) {
    MAX_DEPTH.store(depth.clamp(1, MAX_DEPTH_LIMIT), Ordering::Relaxed);
}

/// The nesting bound in force.
pub fn max_depth() -> usize {
    MAX_DEPTH.load(Ordering::Relaxed)
}

/// Sets the process-wide bound on parts (from `limits.max-mime-parts`, at start and reload).
pub fn set_max_parts(parts: usize) {
    MAX_PARTS.store(parts.clamp(1, MAX_PARTS_LIMIT), Ordering::Relaxed);
}

/// The bound on parts in force.
pub fn max_parts() -> usize {
    MAX_PARTS.load(Ordering::Relaxed)
}

/// The bounds one scan works under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub depth: usize,
    pub parts: usize,
}

impl Bounds {
    /// The process-wide bounds (`limits.max-mime-depth`, `limits.max-mime-parts`).
    pub fn current() -> Bounds {
        Bounds {
            depth: max_depth(),
            parts: max_parts(),
        }
    }
}

/// Which bound a message's structure went past (the first one met), where the scan stopped
/// opening containers and kept the rest as opaque leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Excess {
    /// Containers nested deeper than the depth bound.
    Depth,
    /// More parts than the parts bound.
    Parts,
    /// Transfer-encoded inner messages whose decoding would pass the decode budget.
    Decoding,
    /// A header section past [`MAX_HEADER_FIELDS`](super::header::MAX_HEADER_FIELDS) or
    /// [`MAX_HEADER_BYTES`](super::header::MAX_HEADER_BYTES) (only its first fields read).
    Header,
    /// A Content-Type or Content-Disposition field with more than
    /// [`MAX_FIELD_PARAMETERS`](super::header::MAX_FIELD_PARAMETERS) parameters.
    Parameters,
}

impl Excess {
    /// What a refusal says.
    pub fn describe(self) -> &'static str {
        match self {
            Excess::Depth => "MIME nesting too deep",
            Excess::Parts => "Too many MIME parts",
            Excess::Decoding => "Too many levels of encoded inner messages",
            Excess::Parameters => "Too many parameters in a MIME header field",
            Excess::Header => super::header::HEADER_TOO_LARGE,
        }
    }
}

/// The parts in document order (part 0 is the message), and which bound, if any, the
/// structure went past.
#[derive(Debug, Default, Clone)]
pub(super) struct MimeTree {
    pub parts: Vec<Part>,
    pub excess: Option<Excess>,
    /// False for a structure-only scan: leaves keep no content.
    decode_leaves: bool,
    /// Decoded bytes of inner messages still allowed.
    decode_budget: usize,
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

/// The bound `raw`'s structure goes past, if any (the structure alone is scanned: no leaf is
/// decoded), for refusing such a message at DATA.
pub fn excess(raw: &[u8], bounds: Bounds) -> Option<Excess> {
    MimeTree::scan(raw, bounds, false).excess
}

impl MimeTree {
    pub fn parse(raw: &[u8], bounds: Bounds) -> MimeTree {
        MimeTree::scan(raw, bounds, true)
    }

    fn scan(raw: &[u8], bounds: Bounds, decode_leaves: bool) -> MimeTree {
        let mut tree = MimeTree {
            decode_leaves,
            decode_budget: raw.len().saturating_mul(DECODE_FACTOR),
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
            // Parts promised so far: those made and those waiting on the stack.
            let promised = tree.parts.len() + 1 + stack.len();
            let room = bounds.parts.saturating_sub(promised);
            let limits = Room {
                depth: bounds.depth,
                parts: room,
                next_buffer: decoded.len(),
            };
            let (children, new_buffer) = tree.add(bytes, &item, limits);

            decoded.extend(new_buffer);
            // Reversed, so that the first child is looked at next (document order of ids).
            stack.extend(children.into_iter().rev());
        }
        tree
    }

    /// Adds the part `item` and returns the parts inside it, with the decoded body they live in
    /// when it is a transfer-encoded message (to become buffer `next_buffer`).
    fn add(&mut self, bytes: &[u8], item: &Pending, room: Room) -> (Vec<Pending>, Option<Vec<u8>>) {
        let id = self.parts.len() as u32;
        let whole = &bytes[item.start..item.end];
        let body_start = item.start + HeaderBlock::parse(whole, 0).body_start;
        let section = &bytes[item.start..body_start];
        if super::header::header_too_large(section) {
            self.excess.get_or_insert(Excess::Header);
        }
        let block = super::header::bounded(section);
        let mut header = Header::parse(&block);
        if matches!(block, std::borrow::Cow::Owned(_)) {
            // Its Content-* fields were too costly to read: the part is bytes.
            self.excess.get_or_insert(Excess::Parameters);
            header.make_opaque();
        } else if !header.declared && item.digest_child {
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
            Some(_) if item.depth >= room.depth => {
                content = self.opaque(Excess::Depth, &mut header, body)
            }
            Some(_) if room.parts == 0 => content = self.opaque(Excess::Parts, &mut header, body),
            Some(Container::Multipart(boundary)) => {
                let ranges = multipart_children(bytes, body_start, item.end, boundary.as_bytes());
                if ranges.len() > room.parts {
                    content = self.opaque(Excess::Parts, &mut header, body);
                } else if ranges.is_empty() {
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
                    // Decoding never makes bytes longer: the budget is checked before.
                    Some("base64" | "quoted-printable") if body.len() > self.decode_budget => {
                        is_message = false;
                        content = self.opaque(Excess::Decoding, &mut header, body);
                    }
                    Some("base64" | "quoted-printable") => {
                        let inner = decode(body, header.transfer_encoding.as_deref());
                        self.decode_budget = self.decode_budget.saturating_sub(inner.len());
                        children.push(child(
                            Buffer::Decoded(room.next_buffer),
                            0,
                            inner.len(),
                            false,
                        ));
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

    /// A container past a bound is kept as one leaf of bytes; the first bound met is noted.
    fn opaque(&mut self, excess: Excess, header: &mut Header, body: &[u8]) -> PartContent {
        self.excess.get_or_insert(excess);
        header.make_opaque();
        PartContent::Binary(body.to_vec())
    }
}

/// What the part being added may still open.
#[derive(Clone, Copy)]
struct Room {
    depth: usize,
    /// Parts that may still be added below it.
    parts: usize,
    /// The index a newly decoded buffer gets.
    next_buffer: usize,
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

    /// A message whose Content-Type (and Content-Disposition) carry `n` RFC 2231
    /// continuations of `name`; `sep` goes between them (`";"` or nothing, folded only).
    fn continuations(n: usize, sep: &str) -> Vec<u8> {
        let params: String = (0..n)
            .map(|i| format!("{sep}\r\n name*{i}=\"a{i}\""))
            .collect();
        let disposition = params.replace("name", "filename");
        format!(
            "Subject: c\r\nMIME-Version: 1.0\r\nContent-Type: application/x-thing{params}\r\n\
             Content-Disposition: attachment{disposition}\r\n\r\nbody\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn continuations_within_the_bound_are_merged() {
        let n = crate::message::header::MAX_FIELD_PARAMETERS;
        let tree = MimeTree::parse(&continuations(n, ";"), Bounds::current());
        let whole: String = (0..n).map(|i| format!("a{i}")).collect();
        assert_eq!(tree.excess, None);
        let part = &tree.parts[0];
        assert_eq!(
            (part.media_type.as_str(), part.subtype.as_str()),
            ("application", "x-thing")
        );
        assert_eq!(part.params, vec![("name".to_string(), whole.clone())]);
        assert_eq!(part.filename.as_deref(), Some(whole.as_str()));
    }

    /// However many continuations, with or without `;` between them, mail-parser is only
    /// handed fields within the bound, so its work (at most the bound times the field's
    /// length) grows linearly with the message; the part is kept as opaque bytes.
    #[test]
    fn excess_continuations_never_reach_the_parser() {
        let cap = crate::message::header::MAX_FIELD_PARAMETERS;
        for sep in [";", ""] {
            for n in [cap + 1, 4 * cap, 64 * cap, 640 * cap] {
                let raw = continuations(n, sep);
                let end = HeaderBlock::parse(&raw, 0).body_start;
                let handed = crate::message::header::bounded(&raw[..end]);
                let block = HeaderBlock::parse(&handed, 0);
                assert!(!block.has_excess_parameters(&handed), "{n} {sep:?}");
                assert_eq!(
                    crate::message::header::parameter_count(&handed),
                    0,
                    "both fields dropped"
                );
                // The longest fields are past the header section's byte bound too: that is
                // found first (and only their first megabyte is looked at).
                let expected = match crate::message::header::header_too_large(&raw) {
                    true => Excess::Header,
                    false => Excess::Parameters,
                };
                assert_eq!(excess(&raw, Bounds::current()), Some(expected));
                let tree = MimeTree::parse(&raw, Bounds::current());
                let part = &tree.parts[0];
                assert_eq!(tree.excess, Some(expected));
                assert_eq!(
                    (part.media_type.as_str(), part.subtype.as_str()),
                    ("application", "octet-stream")
                );
                assert!(matches!(&part.content, PartContent::Binary(b) if b == b"body\r\n"));
            }
        }
    }

    /// A part deep inside a multipart with too many parameters is opaque; its siblings are not.
    #[test]
    fn excess_parameters_in_an_inner_part_leave_siblings_alone() {
        let inner = continuations(5_000, ";");
        let mut raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
            Content-Type: text/plain\r\n\r\nhello\r\n--b\r\n"
            .to_vec();
        raw.extend_from_slice(&inner);
        raw.extend_from_slice(b"--b--\r\n");
        let tree = MimeTree::parse(&raw, Bounds::current());
        assert_eq!(tree.excess, Some(Excess::Parameters));
        assert_eq!(tree.parts.len(), 3);
        assert_eq!(tree.parts[1].subtype, "plain");
        assert_eq!(tree.parts[2].subtype, "octet-stream");
    }

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

    fn bounds(depth: usize) -> Bounds {
        Bounds {
            depth,
            parts: DEFAULT_MAX_PARTS,
        }
    }

    /// One multipart of `n` empty text parts.
    fn wide(n: usize) -> Vec<u8> {
        let mut raw = b"Content-Type: multipart/mixed; boundary=w\r\n\r\n".to_vec();
        for _ in 0..n {
            raw.extend_from_slice(b"--w\r\n\r\nx\r\n");
        }
        raw.extend_from_slice(b"--w--\r\n");
        raw
    }

    /// `levels` quoted-printable message/rfc822 parts, each inside the one before: every
    /// level's encoding escapes the `=` of the level below, so each decoded level is nearly as
    /// long as the whole message.
    fn nested_encoded(levels: usize, padding: usize) -> Vec<u8> {
        let mut raw = format!("Subject: inner\r\n\r\n{}\r\n", "y=".repeat(padding)).into_bytes();
        for _ in 0..levels {
            let mut encoded = Vec::new();
            for &b in &raw {
                if b == b'=' {
                    encoded.extend_from_slice(b"=3D");
                } else {
                    encoded.push(b);
                }
            }
            raw = b"Subject: wrapper\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n".to_vec();
            raw.extend_from_slice(&encoded);
        }
        raw
    }

    #[test]
    fn wide_multiparts_stop_at_the_parts_bound() {
        let bounds = Bounds {
            depth: 50,
            parts: 100,
        };
        // The message and 99 children: within the bound, all opened.
        let tree = MimeTree::parse(&wide(99), bounds);
        assert_eq!((tree.excess, tree.parts.len()), (None, 100));
        // One more: the multipart itself stays one opaque leaf.
        let tree = MimeTree::parse(&wide(100), bounds);
        assert_eq!((tree.excess, tree.parts.len()), (Some(Excess::Parts), 1));
        assert_eq!(tree.parts[0].media_type, "application");
        assert_eq!(excess(&wide(1_000_000), bounds), Some(Excess::Parts));
    }

    #[test]
    fn parts_bound_counts_parts_at_every_level() {
        // 30 multiparts of 5 parts inside one: 1 + 30 + 150 parts.
        let mut raw = b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n".to_vec();
        for _ in 0..30 {
            raw.extend_from_slice(b"--outer\r\n");
            raw.extend_from_slice(&wide(5));
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"--outer--\r\n");
        let tree = MimeTree::parse(
            &raw,
            Bounds {
                depth: 50,
                parts: 181,
            },
        );
        assert_eq!((tree.excess, tree.parts.len()), (None, 181));
        let tree = MimeTree::parse(
            &raw,
            Bounds {
                depth: 50,
                parts: 100,
            },
        );
        assert_eq!(tree.excess, Some(Excess::Parts));
        assert!(tree.parts.len() <= 100, "{}", tree.parts.len());
    }

    #[test]
    fn nested_encoded_messages_are_decoded_within_the_budget() {
        // A few levels, as forwarded mail has: all opened.
        let tree = MimeTree::parse(&nested_encoded(3, 10), bounds(50));
        assert_eq!((tree.excess, tree.parts.len()), (None, 4));
        assert_eq!(
            tree.parts[3].content,
            PartContent::Text(format!("{}\r\n", "y=".repeat(10)))
        );
        // 48 levels of a long message: decoding stops once the decoded bytes reach four times
        // the message's size, long before the depth bound.
        let raw = nested_encoded(48, 20_000);
        let tree = MimeTree::parse(&raw, bounds(50));
        assert_eq!(tree.excess, Some(Excess::Decoding));
        assert!(tree.parts.len() < 10, "{}", tree.parts.len());
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
        let tree = MimeTree::parse(&nested_multipart(10), bounds(50));
        assert_eq!(tree.excess, None);
        assert_eq!(tree.parts.len(), 11);
        let leaf = &tree.parts[10];
        assert_eq!(leaf.content, PartContent::Text("bottom".into()));
        assert_eq!(depth(&tree, 10), 10);
    }

    #[test]
    fn deep_multiparts_stop_at_the_bound_as_an_opaque_leaf() {
        for levels in [51, 2_000, 20_000] {
            let tree = MimeTree::parse(&nested_multipart(levels), bounds(50));
            assert_eq!(tree.excess, Some(Excess::Depth), "{levels}");
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
        let tree = MimeTree::parse(&nested_messages(100_000), bounds(50));
        assert_eq!(tree.excess, Some(Excess::Depth));
        assert_eq!(tree.parts.len(), 51);
        assert!(tree.parts.iter().all(|p| depth(&tree, p.id) <= 50));
        let tree = MimeTree::parse(&nested_messages(5), bounds(50));
        assert_eq!(tree.excess, None);
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
        let tree = MimeTree::parse(raw.as_bytes(), bounds(50));
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
        let tree = MimeTree::parse(raw, bounds(50));
        assert_eq!(tree.parts.len(), 3);
        assert!(tree.parts[1].is_message);
        assert!(tree.parts[2].nested);
    }

    /// Pieces messages are made of in the property below: headers that open containers (with
    /// and without encodings), delimiters of a few boundaries, escaped and plain text.
    fn piece() -> impl proptest::strategy::Strategy<Value = &'static str> {
        proptest::sample::select(vec![
            "Content-Type: multipart/mixed; boundary=a\r\n\r\n",
            "Content-Type: multipart/digest; boundary=b\r\n\r\n",
            "Content-Type: message/rfc822\r\n\r\n",
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
            "Content-Type: message/global\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
            "--a\r\n",
            "--a--\r\n",
            "--b\r\n",
            "\r\n",
            "=3D=3D=3D\r\n",
            "Q29udGVudC1UeXBlOiBtdWx0aXBhcnQvbWl4ZWQ7IGJvdW5kYXJ5PWENCg0KLS1hDQo=\r\n",
            "caf=E9 cr=E8me\r\n",
        ])
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, .. Default::default() })]

        /// Whatever the shape, a scan keeps its bounds: no more parts than allowed, and no
        /// more content than a small multiple of the message (the decode budget, and text
        /// widened by charset conversion to UTF-8).
        #[test]
        fn every_scan_stays_within_its_bounds(
            pieces in proptest::collection::vec(piece(), 0..400),
            depth in 1usize..8,
            parts in 1usize..40,
        ) {
            let raw: Vec<u8> = pieces.concat().into_bytes();
            let bounds = Bounds { depth, parts };
            let tree = MimeTree::parse(&raw, bounds);
            proptest::prop_assert!(tree.parts.len() <= parts.max(1));
            let held: usize = tree
                .parts
                .iter()
                .map(|p| match &p.content {
                    PartContent::Text(t) => t.len(),
                    PartContent::Binary(b) => b.len(),
                    PartContent::Container => 0,
                })
                .sum();
            let bound = 3 * (1 + DECODE_FACTOR) * raw.len() + 64;
            proptest::prop_assert!(held <= bound, "{held} > {bound}");
            proptest::prop_assert!(tree.parts.iter().all(|p| super::tests::depth(&tree, p.id) <= depth));
        }
    }
}
