//! The BINARY form of a message or of one of its parts, as URLFETCH's BINARY (RFC 5524) gives
//! it: every base64 or quoted-printable body inside decoded, and the header of each part so
//! decoded saying `Content-Transfer-Encoding: binary` in place of what it said (Dovecot gives
//! the same bytes, which imaptest's urlauth-binary group checks). Multipart and message parts
//! keep every byte between their parts (preamble, boundaries, epilogue) as stored.
//!
//! Decoding never makes a body longer and each decoded part gets one field for those it
//! loses, so the form of a message is at most its size plus one such field per part.
//! Walks recurse once per level of the MIME tree, whose depth `limits.max-mime-depth` bounds.

use std::borrow::Cow;

use crate::message::header::HeaderBlock;
use crate::message::{mime, Message, PartSpan};

/// The field that stands for the one removed in a decoded part's header.
pub const BINARY_FIELD: &[u8] = b"Content-Transfer-Encoding: binary\r\n";

/// A transfer encoding nobody here can undo (RFC 3516's `UNKNOWN-CTE`), by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEncoding(pub String);

/// The byte and line (`\n`) counts of a part's body in the BINARY form, as BODYSTRUCTURE
/// gives a body's size and lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodySize {
    pub bytes: usize,
    pub lines: usize,
}

/// What a part's transfer encoding asks of the BINARY form.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// 7bit, 8bit, binary or none: the bytes are their own form.
    Identity,
    /// base64 or quoted-printable: decoded, and the header says so.
    Decoded,
}

fn encoding_of(name: Option<&str>) -> Result<Encoding, UnknownEncoding> {
    match name {
        None | Some("7bit" | "8bit" | "binary") => Ok(Encoding::Identity),
        Some("base64" | "quoted-printable") => Ok(Encoding::Decoded),
        Some(other) => Err(UnknownEncoding(other.to_string())),
    }
}

/// The whole message in the BINARY form (`BINARY[]`).
pub fn whole(message: &Message) -> Result<Vec<u8>, UnknownEncoding> {
    Form::new(message).bytes(0, true)
}

/// The body of part `id` in the BINARY form (`BINARY[n]`): for a message/rfc822 part, the
/// encapsulated message with its header.
pub fn body(message: &Message, id: u32) -> Result<Vec<u8>, UnknownEncoding> {
    Form::new(message).bytes(id, false)
}

/// The BINARY-form body size of every part, by part id (for BODYPARTSTRUCTURE next to BINARY,
/// which gives sizes and lines of the bytes BINARY gives). Each body is decoded once. A part
/// in an unknown encoding, which has no BINARY form, is measured as stored.
pub fn body_sizes(message: &Message) -> Vec<BodySize> {
    let form = Form::new(message);
    let count = message.parts().len();
    let mut sizes = vec![BodySize::default(); count];
    // A part's children come after it in id order: from the last id back, every child is
    // measured before its parent.
    for id in (0..count).rev() {
        let id = u32::try_from(id).unwrap_or(u32::MAX);
        let size = form.body_size(id, &sizes);
        if let Some(slot) = sizes.get_mut(id as usize) {
            *slot = size;
        }
    }
    sizes
}

/// A message with the children of each of its parts listed once.
struct Form<'a> {
    message: &'a Message,
    children: Vec<Vec<u32>>,
}

impl<'a> Form<'a> {
    fn new(message: &'a Message) -> Form<'a> {
        let parts = message.parts();
        let mut children = vec![Vec::new(); parts.len()];
        for part in parts {
            if let Some(list) = part.parent.and_then(|p| children.get_mut(p as usize)) {
                list.push(part.id);
            }
        }
        Form { message, children }
    }

    fn span(&self, id: u32) -> Option<PartSpan> {
        self.message.part(id)?.span
    }

    fn raw(&self, from: usize, to: usize) -> &'a [u8] {
        self.message.raw().get(from..to).unwrap_or_default()
    }

    /// The children of `id` when its form is made of theirs: a multipart or message part whose
    /// parts all lie in the stored bytes (those of a transfer-encoded message/rfc822 part do
    /// not: such a part is decoded as one body).
    fn opened(&self, id: u32) -> Option<&[u32]> {
        let part = self.message.part(id)?;
        let kids = self.children.get(id as usize)?;
        let located = kids.iter().all(|&k| self.span(k).is_some());
        ((part.is_multipart || part.is_message) && !kids.is_empty() && located)
            .then_some(kids.as_slice())
    }

    fn encoding(&self, id: u32) -> Result<Encoding, UnknownEncoding> {
        let part = self.message.part(id);
        encoding_of(part.and_then(|p| p.transfer_encoding.as_deref()))
    }

    /// The header of a part in `encoding` (spanning `span`) in the BINARY form.
    fn header(&self, encoding: Encoding, span: PartSpan) -> Cow<'a, [u8]> {
        let stored = self.raw(span.header_start, span.body_start);
        match encoding {
            Encoding::Identity => Cow::Borrowed(stored),
            Encoding::Decoded => Cow::Owned(binary_header(stored)),
        }
    }

    /// The body of a part that is not opened, in `encoding`, in the BINARY form.
    fn leaf(&self, id: u32, encoding: Encoding, span: PartSpan) -> Cow<'a, [u8]> {
        let stored = self.raw(span.body_start, span.end);
        let name = self
            .message
            .part(id)
            .and_then(|p| p.transfer_encoding.as_deref());
        match encoding {
            Encoding::Identity => Cow::Borrowed(stored),
            Encoding::Decoded => Cow::Owned(mime::decode(stored, name)),
        }
    }

    fn bytes(&self, id: u32, with_header: bool) -> Result<Vec<u8>, UnknownEncoding> {
        let mut out = Vec::new();
        self.write(id, with_header, &mut out)?;
        Ok(out)
    }

    fn write(&self, id: u32, with_header: bool, out: &mut Vec<u8>) -> Result<(), UnknownEncoding> {
        // Checked for every part, opened or not (Dovecot refuses a multipart in x-foo too).
        let encoding = self.encoding(id)?;
        let Some(span) = self.span(id) else {
            return Ok(());
        };
        if with_header {
            out.extend_from_slice(&self.header(encoding, span));
        }
        let Some(kids) = self.opened(id) else {
            out.extend_from_slice(&self.leaf(id, encoding, span));
            return Ok(());
        };
        let mut at = span.body_start;
        for &kid in kids {
            let Some(kid_span) = self.span(kid) else {
                continue;
            };
            out.extend_from_slice(self.raw(at, kid_span.header_start));
            self.write(kid, true, out)?;
            at = kid_span.end;
        }
        out.extend_from_slice(self.raw(at, span.end));
        Ok(())
    }

    /// The BINARY-form body size of `id`, its children's already in `sizes`; a part in an
    /// unknown encoding counts as stored.
    fn body_size(&self, id: u32, sizes: &[BodySize]) -> BodySize {
        let lenient = |id| self.encoding(id).unwrap_or(Encoding::Identity);
        let Some(span) = self.span(id) else {
            return BodySize::default();
        };
        let Some(kids) = self.opened(id) else {
            return measure(&self.leaf(id, lenient(id), span));
        };
        let mut total = BodySize::default();
        let mut at = span.body_start;
        for &kid in kids {
            let Some(kid_span) = self.span(kid) else {
                continue;
            };
            let gap = measure(self.raw(at, kid_span.header_start));
            let header = measure(&self.header(lenient(kid), kid_span));
            let body = sizes.get(kid as usize).copied().unwrap_or_default();
            total = total.plus(gap).plus(header).plus(body);
            at = kid_span.end;
        }
        total.plus(measure(self.raw(at, span.end)))
    }
}

impl BodySize {
    // Sums of parts of one message, whose size is a usize: saturation is never reached.
    fn plus(self, other: BodySize) -> BodySize {
        BodySize {
            bytes: self.bytes.saturating_add(other.bytes),
            lines: self.lines.saturating_add(other.lines),
        }
    }
}

fn measure(bytes: &[u8]) -> BodySize {
    BodySize {
        bytes: bytes.len(),
        lines: memchr::memchr_iter(b'\n', bytes).count(),
    }
}

/// A header block without its Content-Transfer-Encoding fields and with [`BINARY_FIELD`]
/// after the last field (before the blank line), where Dovecot puts it.
fn binary_header(stored: &[u8]) -> Vec<u8> {
    let block = HeaderBlock::parse(stored, 0);
    let mut out = Vec::with_capacity(stored.len().saturating_add(BINARY_FIELD.len()));
    let mut at = 0;
    for field in &block.fields {
        let name = stored.get(field.name.clone()).unwrap_or_default();
        if name.eq_ignore_ascii_case(b"Content-Transfer-Encoding") {
            out.extend_from_slice(stored.get(at..field.whole.start).unwrap_or_default());
            at = field.whole.end;
        }
    }
    let fields_end = block.fields_end.max(at);
    out.extend_from_slice(stored.get(at..fields_end).unwrap_or_default());
    out.extend_from_slice(BINARY_FIELD);
    out.extend_from_slice(stored.get(fields_end..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// imaptest's urlauth-binary message: a message/rfc822 part holding two base64 parts.
    const NESTED: &str = "From: user@domain.org\r\n\
        Mime-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"foo\"\r\n\
        \r\n\
        prologue\r\n\
        --foo\r\n\
        Content-Type: message/rfc822\r\n\
        \r\n\
        Subject: submsg\r\n\
        Content-Type: multipart/alternative; boundary=\"sub1\"\r\n\
        \r\n\
        --sub1\r\n\
        Content-Type: text/plain\r\n\
        Content-Transfer-Encoding: base64\r\n\
        \r\n\
        aGVs\r\nbG8gd29y\r\nbGQ=\r\n\
        \r\n\
        --sub1\r\n\
        Content-Transfer-Encoding: quoted-printable\r\n\
        Content-Type: text/plain\r\n\
        \r\n\
        caf=C3=A9 =\r\nau lait\r\n\
        --sub1--\r\n\
        \r\n\
        --foo--\r\n";

    fn text(bytes: Result<Vec<u8>, UnknownEncoding>) -> String {
        String::from_utf8(bytes.expect("decodable")).expect("utf-8")
    }

    #[test]
    fn nested_encoded_bodies_are_decoded_and_their_headers_say_binary() {
        let message = Message::new(NESTED.as_bytes().to_vec());
        let inner = text(body(&message, 1));
        assert_eq!(
            inner,
            "Subject: submsg\r\n\
             Content-Type: multipart/alternative; boundary=\"sub1\"\r\n\
             \r\n\
             --sub1\r\n\
             Content-Type: text/plain\r\n\
             Content-Transfer-Encoding: binary\r\n\
             \r\n\
             hello world\r\n\
             --sub1\r\n\
             Content-Type: text/plain\r\n\
             Content-Transfer-Encoding: binary\r\n\
             \r\n\
             café au lait\r\n\
             --sub1--\r\n"
        );
        let whole = text(whole(&message));
        assert!(whole.starts_with("From: user@domain.org\r\n"), "{whole}");
        assert!(whole.contains(&inner), "{whole}");
        assert!(whole.ends_with("\r\n--foo--\r\n"), "{whole}");
    }

    #[test]
    fn sizes_are_those_of_the_bytes_given() {
        let message = Message::new(NESTED.as_bytes().to_vec());
        let sizes = body_sizes(&message);
        assert_eq!(sizes.len(), message.parts().len());
        for id in 0..message.parts().len() as u32 {
            let bytes = body(&message, id).expect("decodable");
            let lines = bytes.iter().filter(|&&b| b == b'\n').count();
            assert_eq!(
                sizes[id as usize],
                BodySize {
                    bytes: bytes.len(),
                    lines
                },
                "part {id}"
            );
        }
        // The base64 leaf: "hello world", no line end (the one before --sub1 is the boundary's).
        let leaf = message
            .parts()
            .iter()
            .position(|p| p.transfer_encoding.as_deref() == Some("base64"))
            .expect("the base64 part");
        assert_eq!(
            sizes[leaf],
            BodySize {
                bytes: 11,
                lines: 0
            }
        );
    }

    #[test]
    fn an_unknown_encoding_is_named() {
        let raw = "Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 a\r\n";
        let message = Message::new(raw.as_bytes().to_vec());
        assert_eq!(whole(&message), Err(UnknownEncoding("x-uuencode".into())));
        assert_eq!(body(&message, 0), Err(UnknownEncoding("x-uuencode".into())));
        // Measured as stored.
        assert_eq!(
            body_sizes(&message)[0],
            BodySize {
                bytes: 13,
                lines: 1
            }
        );
    }

    #[test]
    fn parts_without_encoding_are_given_as_stored() {
        let raw = "Subject: a\r\n\r\nplain\r\nbody\r\n";
        let message = Message::new(raw.as_bytes().to_vec());
        assert_eq!(whole(&message).expect("ok"), raw.as_bytes());
        assert_eq!(body(&message, 0).expect("ok"), b"plain\r\nbody\r\n");
    }

    #[test]
    fn a_decoded_part_keeps_its_other_fields_and_folding() {
        let header = b"X-A: 1\r\nContent-Transfer-Encoding:\r\n base64\r\nX-B: 2\r\n\r\n";
        assert_eq!(
            binary_header(header),
            b"X-A: 1\r\nX-B: 2\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        );
        // No blank line (a part that is all header): the field still ends the fields.
        assert_eq!(
            binary_header(b"Content-Transfer-Encoding: base64\r\n"),
            b"Content-Transfer-Encoding: binary\r\n"
        );
    }
}
