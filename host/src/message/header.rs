//! The raw header block of a message, split into fields without changing a byte.
//!
//! mail-parser interprets headers; this module only finds where each field starts and ends, so
//! that edits can rewrite some fields and leave every other byte (folding included) as it was.

use std::ops::Range;

/// One header field's position in the raw message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawField {
    /// The field name, without the colon.
    pub name: Range<usize>,
    /// The value after the colon, folding included, without the final line end.
    pub value: Range<usize>,
    /// The whole field including its final line end.
    pub whole: Range<usize>,
}

/// The header fields of a message (or of a MIME part) and where its body starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    pub fields: Vec<RawField>,
    /// Offset of the first body byte (just past the blank line), or the input's length.
    pub body_start: usize,
    /// Offset where the fields end and the separating blank line (if any) begins.
    pub fields_end: usize,
}

impl HeaderBlock {
    /// Splits the header at the start of `raw` (from `start`). Accepts CRLF and, for robustness
    /// with files from disk, bare LF. A line that is neither a field nor a continuation ends the
    /// header only if it is empty; otherwise it is kept inside the previous field so no byte is lost.
    ///
    /// At most [`MAX_HEADER_FIELDS`] fields are kept: a header section past that bound
    /// (refused wherever a message is taken in, so only in a file put in place otherwise) is
    /// scanned to its end for where the body starts, but its further fields are not seen.
    /// Long fields are kept whole: they cost their bytes, not a record per tiny field.
    pub fn parse(raw: &[u8], start: usize) -> HeaderBlock {
        let mut fields: Vec<RawField> = Vec::new();
        let mut pos = start;
        let mut full = false;
        while pos < raw.len() {
            let line_end = line_end(raw, pos);
            let content_end = trim_eol(raw, pos, line_end);
            if content_end == pos {
                // The blank line: the body starts after it.
                return HeaderBlock {
                    fields,
                    body_start: line_end,
                    fields_end: pos,
                };
            }
            let first = raw[pos];
            let continuation = first == b' ' || first == b'\t';
            full = full || (!continuation && fields.len() >= MAX_HEADER_FIELDS);
            if full && !fields.is_empty() {
                pos = line_end;
                continue;
            }
            match (
                continuation,
                colon_in(raw, pos, content_end),
                fields.last_mut(),
            ) {
                (true, _, Some(last)) | (false, None, Some(last)) => {
                    last.value.end = content_end;
                    last.whole.end = line_end;
                }
                (false, Some(colon), _) => fields.push(RawField {
                    name: pos..trim_end_ws(raw, pos, colon),
                    value: colon + 1..content_end,
                    whole: pos..line_end,
                }),
                // A first line that is not a field: the message has no header at all.
                (_, _, None) => {
                    return HeaderBlock {
                        fields,
                        body_start: pos,
                        fields_end: pos,
                    }
                }
            }
            pos = line_end;
        }
        HeaderBlock {
            fields,
            body_start: raw.len(),
            fields_end: raw.len(),
        }
    }

    /// Field names in order, as text.
    pub fn name<'a>(&self, raw: &'a [u8], index: usize) -> &'a str {
        std::str::from_utf8(&raw[self.fields[index].name.clone()]).unwrap_or("")
    }

    /// How many fields have this name (case-insensitive).
    pub fn count(&self, raw: &[u8], name: &str) -> usize {
        (0..self.fields.len())
            .filter(|&i| self.name(raw, i).eq_ignore_ascii_case(name))
            .count()
    }
}

/// The most fields one header section (of the message or of a MIME part) may hold. Real
/// mail holds tens (a long trace of Received, DKIM and ARC fields some hundreds); a parse
/// keeps a record per field, some thirty times a tiny field's bytes, so a section of
/// millions of `X: y` lines cost gigabytes. Dovecot bounds fields likewise.
pub const MAX_HEADER_FIELDS: usize = 10_000;
/// The most bytes one header section may take, its blank line excluded: ten times Postfix's
/// `header_size_limit` (100 KiB, past which Postfix moves the rest into the body), so
/// no real message is refused, while every parse of a header stays within a megabyte.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// How much of the header section at the start of `raw` is within [`MAX_HEADER_FIELDS`]
/// and [`MAX_HEADER_BYTES`] (whole lines), and whether the section goes past them. Line
/// ends are all it looks at, and it stops at the bound: cheap on any input.
fn header_within(raw: &[u8], max_bytes: usize) -> (usize, bool) {
    let mut fields = 0usize;
    let mut pos = 0;
    while pos < raw.len() {
        let end = memchr::memchr(b'\n', &raw[pos..]).map_or(raw.len(), |i| pos + i + 1);
        let content_end = trim_eol(raw, pos, end);
        // The blank line ends the section; a first line that is no field means none at all.
        if content_end == pos || (pos == 0 && colon_in(raw, pos, content_end).is_none()) {
            return (pos, false);
        }
        if raw[pos] != b' ' && raw[pos] != b'\t' {
            fields += 1;
        }
        if fields > MAX_HEADER_FIELDS || end > max_bytes {
            return (pos, true);
        }
        pos = end;
    }
    (pos, false)
}

/// Whether the header section of `message` goes past [`MAX_HEADER_FIELDS`] or
/// [`MAX_HEADER_BYTES`]: checked before any parse, wherever a message is taken in.
pub fn header_too_large(message: &[u8]) -> bool {
    header_within(message, MAX_HEADER_BYTES).1
}

/// What a refusal of such a message says.
pub const HEADER_TOO_LARGE: &str = "The header section is over 10000 fields or 1 MiB";

/// The most parameters a Content-Type or Content-Disposition field may carry before its part
/// is treated as opaque bytes. mail-parser merges RFC 2231 continuations (`name*0`, `name*1`,
/// ...) in time quadratic in their number; under this bound its work stays linear in the
/// field's length. Real fields carry a handful (a long file name split in continuations some
/// tens).
pub const MAX_FIELD_PARAMETERS: usize = 100;

/// Upper bound on the parameters mail-parser can read from a field value: it only starts a
/// value after a `=`, so the `=` bytes are never fewer than its parameters and continuations.
pub fn parameter_count(value: &[u8]) -> usize {
    memchr::memchr_iter(b'=', value).count()
}

/// Whether the field is one whose parameters mail-parser parses (and merges).
fn has_parameters(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"content-type") || name.eq_ignore_ascii_case(b"content-disposition")
}

impl HeaderBlock {
    /// Whether a Content-Type or Content-Disposition field carries more than
    /// [`MAX_FIELD_PARAMETERS`] parameters.
    pub fn has_excess_parameters(&self, raw: &[u8]) -> bool {
        self.fields.iter().any(|f| {
            has_parameters(&raw[f.name.clone()])
                && parameter_count(&raw[f.value.clone()]) > MAX_FIELD_PARAMETERS
        })
    }
}

/// The header block `raw` as it may be handed to mail-parser: its fields within
/// [`MAX_HEADER_FIELDS`] and [`MAX_HEADER_BYTES`] (the rest not seen, so that a parse's work
/// and field list stay bounded), unchanged when every Content-Type and Content-Disposition
/// field is within [`MAX_FIELD_PARAMETERS`], otherwise without those fields (so the part
/// reads as having none). Linear in the kept bytes.
pub fn bounded(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    // Only the field count cuts a stored header here: a few long fields cost no more than
    // their bytes (address lists are cut before mail-parser sees them), and cutting at a byte
    // bound would drop a long To or References field whole instead of reading its start.
    let raw = match header_within(raw, usize::MAX) {
        (kept, true) => &raw[..kept],
        _ => raw,
    };
    let block = HeaderBlock::parse(raw, 0);
    if !block.has_excess_parameters(raw) {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut kept = Vec::with_capacity(raw.len());
    let mut pos = 0;
    for field in &block.fields {
        let over = has_parameters(&raw[field.name.clone()])
            && parameter_count(&raw[field.value.clone()]) > MAX_FIELD_PARAMETERS;
        if over {
            kept.extend_from_slice(&raw[pos..field.whole.start]);
            pos = field.whole.end;
        }
    }
    kept.extend_from_slice(&raw[pos..]);
    std::borrow::Cow::Owned(kept)
}

/// Offset just past the line that starts at `pos` (its LF), or the input's end.
fn line_end(raw: &[u8], pos: usize) -> usize {
    raw[pos..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(raw.len(), |i| pos + i + 1)
}

/// The end of the line's content, before CRLF or LF.
fn trim_eol(raw: &[u8], start: usize, mut end: usize) -> usize {
    if end > start && raw[end - 1] == b'\n' {
        end -= 1;
        if end > start && raw[end - 1] == b'\r' {
            end -= 1;
        }
    }
    end
}

fn trim_end_ws(raw: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && (raw[end - 1] == b' ' || raw[end - 1] == b'\t') {
        end -= 1;
    }
    end
}

/// The colon of a field line, if the bytes before it form a valid field name.
fn colon_in(raw: &[u8], start: usize, end: usize) -> Option<usize> {
    let colon = start + raw[start..end].iter().position(|&b| b == b':')?;
    let name = &raw[start..trim_end_ws(raw, start, colon)];
    let valid = !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b) && b != b':');
    valid.then_some(colon)
}

/// True if `name` may be used as a header field name (RFC 5322 ftext).
pub fn valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 76
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// True if `value` may be used as a header field value given by a plugin: no CR, LF or NUL.
pub fn valid_field_value(value: &str) -> bool {
    !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// True if `value` is a usable field value that may come already folded: a line break only
/// as CRLF followed by a space or tab (so it cannot start a new field), no NUL, no empty
/// continuation line, no line over 998 octets.
pub fn valid_folded_value(value: &str) -> bool {
    if !value.contains('\r') {
        return valid_field_value(value) && value.len() <= 998;
    }
    let mut lines = value.split("\r\n");
    let first_ok = lines
        .next()
        .is_some_and(|l| valid_field_value(l) && l.len() <= 998);
    first_ok
        && lines.all(|l| {
            l.starts_with([' ', '\t'])
                && !l.trim().is_empty()
                && valid_field_value(l)
                && l.len() <= 998
        })
}

/// Serialises one new field, folding long values at whitespace so no line exceeds 998 octets.
/// Non-ASCII text becomes RFC 2047 encoded words, so the header stays 7-bit clean. A value
/// that comes folded (see [`valid_folded_value`]) keeps its folding: a signature some filter
/// computed over those exact bytes stays valid.
pub fn format_field(name: &str, value: &str) -> Vec<u8> {
    const LIMIT: usize = 78;
    if value.contains('\r') && value.is_ascii() {
        return [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"].concat();
    }
    let encoded;
    let value = if value.is_ascii() {
        value
    } else {
        encoded = encode_words(value);
        &encoded
    };
    let mut out = Vec::with_capacity(name.len() + value.len() + 4);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    let mut line_len = out.len();
    for (i, word) in value.split(' ').enumerate() {
        if i > 0 {
            if line_len + 1 + word.len() > LIMIT && line_len > name.len() + 2 {
                out.extend_from_slice(b"\r\n ");
                line_len = 1;
            } else {
                out.push(b' ');
                line_len += 1;
            }
        }
        out.extend_from_slice(word.as_bytes());
        line_len += word.len();
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Encodes each run of words that holds non-ASCII characters (with the spaces inside the run)
/// as `=?utf-8?b?...?=` words; ASCII words around them, such as `<user@example.org>`, stay.
fn encode_words(value: &str) -> String {
    let words: Vec<&str> = value.split(' ').collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if words[i].is_ascii() {
            out.push(words[i].to_string());
            i += 1;
            continue;
        }
        // Spaces next to an encoded word are not kept by decoders beyond the one separator:
        // extra ones (empty words) go inside the run.
        let mut start = i;
        while start > 0 && words[start - 1].is_empty() && out.last().is_some_and(String::is_empty) {
            out.pop();
            start -= 1;
        }
        while i < words.len() && (!words[i].is_ascii() || words[i].is_empty()) {
            i += 1;
        }
        out.push(encoded_word_run(&words[start..i].join(" ")));
    }
    out.join(" ")
}

/// Encoded words of at most 45 input bytes each (75 characters encoded), split at character
/// boundaries and separated by spaces, which decoders drop between encoded words.
fn encoded_word_run(text: &str) -> String {
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    words.push(chunk);
    words
        .iter()
        .map(|w| {
            let b64 = super::encode::base64_lines(w.as_bytes());
            format!("=?utf-8?b?{}?=", String::from_utf8_lossy(&b64).trim_end())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_folded_fields_and_finds_body() {
        let raw = b"Subject: hello\r\n  world\r\nX-A:1\r\n\r\nbody\r\n";
        let block = HeaderBlock::parse(raw, 0);
        assert_eq!(block.fields.len(), 2);
        assert_eq!(&raw[block.fields[0].value.clone()], b" hello\r\n  world");
        assert_eq!(block.name(raw, 1), "X-A");
        assert_eq!(&raw[block.body_start..], b"body\r\n");
        assert_eq!(block.fields_end, 32);
    }

    #[test]
    fn header_only_message() {
        let raw = b"A: 1\r\nB: 2\r\n";
        let block = HeaderBlock::parse(raw, 0);
        assert_eq!(block.fields.len(), 2);
        assert_eq!(block.body_start, raw.len());
    }

    #[test]
    fn folds_long_values() {
        let value = ["word"; 40].join(" ");
        let field = format_field("X-Long", &value);
        assert!(field.split(|&b| b == b'\n').all(|l| l.len() <= 80));
        assert!(field.ends_with(b"\r\n"));
    }

    #[test]
    fn non_ascii_values_become_encoded_words_that_decode_back() {
        let field = format_field("From", "Jörg Müller <jm@example.org>");
        assert!(field.is_ascii());
        assert!(
            field.ends_with(b" <jm@example.org>\r\n"),
            "{}",
            String::from_utf8_lossy(&field)
        );
        let raw = [field.as_slice(), b"\r\n"].concat();
        let m = super::super::Message::new(raw);
        assert_eq!(
            m.header_value("From").as_deref(),
            Some("Jörg Müller <jm@example.org>")
        );
        let long = "é".repeat(100);
        let m = super::super::Message::new(
            [format_field("X-Long", &long).as_slice(), b"\r\n"].concat(),
        );
        assert_eq!(m.header_value("X-Long"), Some(long));
    }

    #[test]
    fn rejects_smuggled_values() {
        assert!(!valid_field_value("a\r\nBcc: x"));
        assert!(!valid_field_name("Bad Name"));
        assert!(valid_field_name("X-Ok"));
    }

    #[test]
    fn header_sections_past_their_bounds_are_found_and_cut_at_a_line() {
        let mut many = b"From: a@b\r\n".to_vec();
        for _ in 0..MAX_HEADER_FIELDS {
            many.extend_from_slice(b"X: y\r\n");
        }
        many.extend_from_slice(b"\r\nbody\r\n");
        assert!(header_too_large(&many));
        let kept = bounded(&many);
        assert_eq!(HeaderBlock::parse(&kept, 0).fields.len(), MAX_HEADER_FIELDS);
        assert!(kept.ends_with(b"X: y\r\n"));
        // The block of the whole keeps as many fields, and still finds the body.
        let block = HeaderBlock::parse(&many, 0);
        assert_eq!(block.fields.len(), MAX_HEADER_FIELDS);
        assert_eq!(&many[block.body_start..], b"body\r\n");
        // One field fewer is within; so is a long body, and a message without a header.
        let within = &many[b"From: a@b\r\n".len()..];
        assert!(!header_too_large(within));
        let mut long_body = b"Subject: s\r\n\r\n".to_vec();
        long_body.resize(3 << 20, b'x');
        assert!(!header_too_large(&long_body));
        assert!(!header_too_large(&vec![b'x'; 3 << 20]));
        // A folded field of two megabytes is over the byte bound.
        let mut folded = b"Subject: s".to_vec();
        for _ in 0..(2 << 20) / 80 {
            folded.extend_from_slice(&[b'x'; 78]);
            folded.extend_from_slice(b"\r\n ");
        }
        folded.extend_from_slice(b"\r\n\r\n");
        assert!(header_too_large(&folded));
    }
}
