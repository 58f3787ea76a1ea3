//! Applies plugin edits to a message. Every byte an edit does not touch stays as it was:
//! header fields keep their folding, untouched MIME parts keep their encoding and boundaries.

use std::ops::Range;

use thiserror::Error;

use super::encode::{self, TransferEncoding};
use super::header::{
    format_field, valid_field_name, valid_field_value, valid_folded_value, HeaderBlock,
};
use super::{Message, Part, PartSpan};

/// An edit of the message itself (envelope edits are handled by the chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageEdit {
    AddHeader {
        name: String,
        value: String,
    },
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    SetHeader {
        name: String,
        value: String,
    },
    RemoveHeader(String),
    /// The `index`th field (from 1) of this name gets `value`; an empty value removes it, an
    /// index past the last such field adds one at the end (a milter's change-header).
    ChangeHeader {
        name: String,
        index: u32,
        value: String,
    },
    ReplaceBody(Vec<u8>),
    ReplacePart {
        id: u32,
        content_type: String,
        content: Vec<u8>,
    },
    RemovePart(u32),
    AppendFooter(String),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EditError {
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    #[error(
        "header {0} has a NUL, a CR or LF that is not folding, or a line over 998 octets in its value"
    )]
    HeaderValue(String),
    #[error("no MIME part with id {0}")]
    UnknownPart(u32),
    #[error("MIME part {0} cannot be edited (inside an encoded message/rfc822 part)")]
    PartNotEditable(u32),
    #[error("MIME part {0} is the whole message or a message's root and cannot be removed")]
    PartNotRemovable(u32),
    #[error("invalid content type {0:?}")]
    ContentType(String),
}

impl MessageEdit {
    /// Checks what can be checked without the message: names and values free of CR/LF/NUL.
    pub fn validate(&self) -> Result<(), EditError> {
        match self {
            MessageEdit::AddHeader { name, value }
            | MessageEdit::InsertHeader { name, value, .. }
            | MessageEdit::SetHeader { name, value }
            | MessageEdit::ChangeHeader { name, value, .. } => check_field(name, value),
            MessageEdit::RemoveHeader(name) if !valid_field_name(name) => {
                Err(EditError::HeaderName(name.clone()))
            }
            MessageEdit::ReplacePart { content_type, .. } => check_content_type(content_type),
            _ => Ok(()),
        }
    }
}

fn check_field(name: &str, value: &str) -> Result<(), EditError> {
    if !valid_field_name(name) {
        return Err(EditError::HeaderName(name.to_string()));
    }
    if !valid_folded_value(value) {
        return Err(EditError::HeaderValue(name.to_string()));
    }
    Ok(())
}

fn check_content_type(value: &str) -> Result<(), EditError> {
    let valid = valid_field_value(value)
        && value.split(';').next().is_some_and(|t| {
            t.trim()
                .split_once('/')
                .is_some_and(|(a, b)| !a.is_empty() && !b.trim().is_empty())
        });
    if valid {
        Ok(())
    } else {
        Err(EditError::ContentType(value.to_string()))
    }
}

/// Applies `edits`. Part edits (replace-part, remove-part) name parts by their ids in the
/// message as the plugin saw it, so they are applied first, together, on that message; the other
/// edits then apply in order. Returns `None` when there is nothing to apply.
pub fn apply_message_edits(
    message: &Message,
    edits: &[MessageEdit],
) -> Result<Option<Message>, EditError> {
    for edit in edits {
        edit.validate()?;
    }
    let (part_edits, others): (Vec<&MessageEdit>, Vec<&MessageEdit>) =
        edits.iter().partition(|e| {
            matches!(
                e,
                MessageEdit::ReplacePart { .. } | MessageEdit::RemovePart(_)
            )
        });
    let mut current: Option<Message> = None;
    if !part_edits.is_empty() {
        current = Some(Message::new(apply_part_edits(message, &part_edits)?));
    }
    for edit in others {
        let base = current.as_ref().unwrap_or(message);
        let raw = apply_one(base, edit)?;
        current = Some(Message::new(raw));
    }
    Ok(current)
}

/// Replaces byte ranges of one parse of the message, last first so earlier ranges stay valid.
/// An edit of a part inside another edited part is dropped: the outer edit replaces it anyway.
fn splice_parts(message: &Message, mut changes: Vec<(u32, Range<usize>, Vec<u8>)>) -> Vec<u8> {
    let edited: Vec<u32> = changes.iter().map(|(id, ..)| *id).collect();
    changes.retain(|(id, ..)| !has_ancestor_in(message, *id, &edited));
    changes.sort_by_key(|(_, range, _)| std::cmp::Reverse(range.start));
    changes.dedup_by_key(|(_, range, _)| range.start);
    let mut raw = message.raw().to_vec();
    for (_, range, bytes) in changes {
        raw = splice(&raw, range, &bytes);
    }
    raw
}

fn has_ancestor_in(message: &Message, id: u32, ids: &[u32]) -> bool {
    let mut parent = message.part(id).and_then(|p| p.parent);
    while let Some(p) = parent {
        if ids.contains(&p) {
            return true;
        }
        parent = message.part(p).and_then(|p| p.parent);
    }
    false
}

fn apply_part_edits(message: &Message, edits: &[&MessageEdit]) -> Result<Vec<u8>, EditError> {
    let mut changes = Vec::with_capacity(edits.len());
    for edit in edits {
        match edit {
            MessageEdit::ReplacePart {
                id,
                content_type,
                content,
            } => {
                let part = message.part(*id).ok_or(EditError::UnknownPart(*id))?;
                let (range, bytes) = rebuild_part(message, part, content_type, content)?;
                changes.push((*id, range, bytes));
            }
            MessageEdit::RemovePart(id) => {
                let part = message.part(*id).ok_or(EditError::UnknownPart(*id))?;
                changes.push((*id, removal_range(message, part)?, Vec::new()));
            }
            _ => {}
        }
    }
    Ok(splice_parts(message, changes))
}

fn apply_one(message: &Message, edit: &MessageEdit) -> Result<Vec<u8>, EditError> {
    let raw = message.raw();
    let header = message.header_block();
    Ok(match edit {
        MessageEdit::AddHeader { name, value } => rewrite_header(
            raw,
            header,
            |_| false,
            Some(header.fields.len()),
            name,
            value,
        ),
        MessageEdit::InsertHeader { index, name, value } => {
            let at = (*index as usize).min(header.fields.len());
            rewrite_header(raw, header, |_| false, Some(at), name, value)
        }
        MessageEdit::SetHeader { name, value } => {
            let matches = |i: usize| header.name(raw, i).eq_ignore_ascii_case(name);
            let first = (0..header.fields.len()).find(|&i| matches(i));
            rewrite_header(
                raw,
                header,
                matches,
                Some(first.unwrap_or(header.fields.len())),
                name,
                value,
            )
        }
        MessageEdit::RemoveHeader(name) => rewrite_header(
            raw,
            header,
            |i| header.name(raw, i).eq_ignore_ascii_case(name),
            None,
            "",
            "",
        ),
        MessageEdit::ChangeHeader { name, index, value } => {
            let nth = (0..header.fields.len())
                .filter(|&i| header.name(raw, i).eq_ignore_ascii_case(name))
                .nth((*index as usize).saturating_sub(1));
            match nth {
                Some(at) => {
                    let replace = (!value.is_empty()).then_some(at);
                    rewrite_header(raw, header, |i| i == at, replace, name, value)
                }
                None if value.is_empty() => raw.to_vec(),
                None => {
                    let end = Some(header.fields.len());
                    rewrite_header(raw, header, |_| false, end, name, value)
                }
            }
        }
        MessageEdit::ReplaceBody(body) => {
            let mut out = header_with_separator(raw, header);
            super::lines::push_crlf(body, super::lines::BareEnds::Lf, &mut out);
            out
        }
        MessageEdit::ReplacePart { .. } | MessageEdit::RemovePart(_) => {
            apply_part_edits(message, &[edit])?
        }
        MessageEdit::AppendFooter(footer) => append_footer(message, footer)?,
    })
}

/// Rebuilds the header: drops fields for which `remove` is true and, when `insert_at` is given,
/// writes the new field before the field of that index (or after the last one).
fn rewrite_header(
    raw: &[u8],
    header: &HeaderBlock,
    remove: impl Fn(usize) -> bool,
    insert_at: Option<usize>,
    name: &str,
    value: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + name.len() + value.len() + 8);
    let start = header
        .fields
        .first()
        .map_or(header.fields_end, |f| f.whole.start);
    out.extend_from_slice(&raw[..start]);
    for (i, field) in header.fields.iter().enumerate() {
        if insert_at == Some(i) {
            out.extend_from_slice(&format_field(name, value));
        }
        if !remove(i) {
            out.extend_from_slice(&raw[field.whole.clone()]);
            if !raw[..field.whole.end].ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    if insert_at.is_some_and(|i| i >= header.fields.len()) {
        out.extend_from_slice(&format_field(name, value));
    }
    out.extend_from_slice(&separator_and_body(raw, header));
    out
}

/// The blank line and body; a message that had no blank line gets one if it has a body.
fn separator_and_body(raw: &[u8], header: &HeaderBlock) -> Vec<u8> {
    let rest = &raw[header.fields_end..];
    if header.fields_end == header.body_start && !rest.is_empty() {
        [b"\r\n".as_slice(), rest].concat()
    } else if rest.is_empty() {
        b"\r\n".to_vec()
    } else {
        rest.to_vec()
    }
}

fn header_with_separator(raw: &[u8], header: &HeaderBlock) -> Vec<u8> {
    let mut out = raw[..header.fields_end].to_vec();
    if header.fields_end > 0 && !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn splice(raw: &[u8], range: Range<usize>, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() - range.len() + bytes.len());
    out.extend_from_slice(&raw[..range.start]);
    out.extend_from_slice(bytes);
    out.extend_from_slice(&raw[range.end..]);
    out
}

fn span_of(part: &Part) -> Result<PartSpan, EditError> {
    part.span.ok_or(EditError::PartNotEditable(part.id))
}

/// Boundaries of the multiparts that enclose `part`; new content must not contain them.
fn enclosing_boundaries(message: &Message, part: &Part) -> Vec<String> {
    let mut out = Vec::new();
    let mut parent = part.parent;
    while let Some(id) = parent {
        let Some(p) = message.part(id) else { break };
        out.extend(
            p.params
                .iter()
                .filter(|(k, _)| k == "boundary")
                .map(|(_, v)| v.clone()),
        );
        parent = p.parent;
    }
    out
}

/// New bytes for a part: its own header fields except Content-Type and
/// Content-Transfer-Encoding, then those two for the new content, then the encoded content.
fn rebuild_part(
    message: &Message,
    part: &Part,
    content_type: &str,
    content: &[u8],
) -> Result<(Range<usize>, Vec<u8>), EditError> {
    check_content_type(content_type)?;
    let span = span_of(part)?;
    let raw = message.raw();
    let head = &raw[span.header_start..span.body_start];
    let fields = HeaderBlock::parse(head, 0);
    let mut out = Vec::with_capacity(head.len() + content.len() + 64);
    let mut has_mime_version = false;
    for (i, field) in fields.fields.iter().enumerate() {
        let name = fields.name(head, i);
        has_mime_version |= name.eq_ignore_ascii_case("MIME-Version");
        if !name.eq_ignore_ascii_case("Content-Type")
            && !name.eq_ignore_ascii_case("Content-Transfer-Encoding")
        {
            out.extend_from_slice(&head[field.whole.clone()]);
        }
    }
    let is_root = part.parent.is_none();
    if is_root && !has_mime_version {
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    let is_text = content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("text/");
    let encoding = encode::choose(content, is_text, &enclosing_boundaries(message, part));
    out.extend_from_slice(&format_field("Content-Type", content_type.trim()));
    if encoding != TransferEncoding::SevenBit || fields.count(head, "Content-Transfer-Encoding") > 0
    {
        out.extend_from_slice(&format_field("Content-Transfer-Encoding", encoding.name()));
    }
    out.extend_from_slice(b"\r\n");
    let mut body = encode::encode(content, encoding, is_text);
    // Inside a multipart the CRLF before the next delimiter belongs to the delimiter.
    if raw[span.end..].starts_with(b"\r\n--") || raw[span.end..].starts_with(b"\n--") {
        body.truncate(body.len() - 2);
    }
    out.extend_from_slice(&body);
    Ok((span.header_start..span.end, out))
}

/// Bytes to cut to remove a part: its delimiter line, headers and body, up to the next delimiter.
fn removal_range(message: &Message, part: &Part) -> Result<Range<usize>, EditError> {
    let parent = part.parent.and_then(|p| message.part(p));
    if !parent.is_some_and(|p| p.is_multipart) {
        return Err(EditError::PartNotRemovable(part.id));
    }
    let span = span_of(part)?;
    let raw = message.raw();
    // The delimiter line ends right before the part's header.
    let before = &raw[..span.header_start];
    let line_start = before[..before.len().saturating_sub(1)]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    // The next delimiter line starts after the CRLF that follows the part's body.
    let mut end = span.end;
    if raw[end..].starts_with(b"\r\n") {
        end += 2;
    } else if raw[end..].starts_with(b"\n") {
        end += 1;
    }
    Ok(line_start..end)
}

fn append_footer(message: &Message, footer: &str) -> Result<Vec<u8>, EditError> {
    let mut changes = Vec::new();
    for part in message.parts() {
        let is_body_text = !part.nested
            && !part.is_multipart
            && part.media_type == "text"
            && (part.subtype == "plain" || part.subtype == "html")
            && part.disposition.as_deref() != Some("attachment")
            && part.span.is_some();
        let Some(text) = message.part_text(part.id).filter(|_| is_body_text) else {
            continue;
        };
        let new_text = if part.subtype == "html" {
            html_with_footer(&text, footer)
        } else {
            let sep = if text.ends_with('\n') || text.is_empty() {
                ""
            } else {
                "\r\n"
            };
            format!("{text}{sep}{footer}\r\n")
        };
        let mut content_type = format!("text/{}; charset=utf-8", part.subtype);
        for (k, v) in part.params.iter().filter(|(k, _)| k != "charset") {
            content_type.push_str(&format!("; {k}=\"{}\"", v.replace(['"', '\\'], "")));
        }
        let (range, bytes) = rebuild_part(message, part, &content_type, new_text.as_bytes())?;
        changes.push((part.id, range, bytes));
    }
    Ok(splice_parts(message, changes))
}

fn html_with_footer(html: &str, footer: &str) -> String {
    let escaped = footer
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let block = format!("<p>{}</p>", escaped.replace('\n', "<br>"));
    match html.to_ascii_lowercase().rfind("</body>") {
        Some(at) => format!("{}{block}{}", &html[..at], &html[at..]),
        None => format!("{html}{block}"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::MULTIPART;
    use super::*;

    fn edit(raw: &[u8], edits: &[MessageEdit]) -> Message {
        apply_message_edits(&Message::new(raw.to_vec()), edits)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn header_edits_keep_other_bytes() {
        let raw =
            b"Received: from a\r\n\tby b\r\nSubject: x\r\nX-Old: 1\r\nX-Old: 2\r\n\r\nbody\r\n";
        let m = edit(
            raw,
            &[
                MessageEdit::AddHeader {
                    name: "X-New".into(),
                    value: "yes".into(),
                },
                MessageEdit::InsertHeader {
                    index: 0,
                    name: "X-Top".into(),
                    value: "1".into(),
                },
                MessageEdit::SetHeader {
                    name: "x-old".into(),
                    value: "3".into(),
                },
                MessageEdit::RemoveHeader("subject".into()),
            ],
        );
        assert_eq!(
            m.raw(),
            b"X-Top: 1\r\nReceived: from a\r\n\tby b\r\nx-old: 3\r\nX-New: yes\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn header_injection_is_refused() {
        let m = Message::new(b"A: b\r\n\r\nx".to_vec());
        let bad = [MessageEdit::AddHeader {
            name: "X".into(),
            value: "1\r\nBcc: evil".into(),
        }];
        assert_eq!(
            apply_message_edits(&m, &bad).unwrap_err(),
            EditError::HeaderValue("X".into())
        );
    }

    #[test]
    fn replace_body_keeps_header() {
        let m = edit(
            b"A: b\r\n\r\nold\r\n",
            &[MessageEdit::ReplaceBody(b"new\nlines\n".to_vec())],
        );
        assert_eq!(m.raw(), b"A: b\r\n\r\nnew\r\nlines\r\n");
    }

    #[test]
    fn remove_part_keeps_a_valid_multipart() {
        let m = edit(MULTIPART, &[MessageEdit::RemovePart(2)]);
        let text = String::from_utf8(m.raw().to_vec()).unwrap();
        assert!(!text.contains("resum"), "{text}");
        assert!(text.ends_with("Hello there.\r\n--XX--\r\n"), "{text}");
        assert_eq!(m.parts().len(), 2);
        assert_eq!(m.part_text(1).as_deref(), Some("Hello there."));
    }

    #[test]
    fn part_ids_refer_to_the_message_the_plugin_saw() {
        let raw = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\r\none\r\n--B\r\n\r\ntwo\r\n--B\r\n\r\nthree\r\n--B--\r\n";
        let m = edit(
            raw,
            &[MessageEdit::RemovePart(1), MessageEdit::RemovePart(2)],
        );
        assert_eq!(
            m.raw(),
            b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\r\nthree\r\n--B--\r\n"
        );
    }

    #[test]
    fn replace_part_reencodes_and_keeps_siblings() {
        let m = edit(
            MULTIPART,
            &[MessageEdit::ReplacePart {
                id: 2,
                content_type: "text/plain; charset=utf-8".into(),
                content: "removed: résumé.exe".as_bytes().to_vec(),
            }],
        );
        let text = String::from_utf8(m.raw().to_vec()).unwrap();
        assert!(text.contains("Content-Disposition: attachment"), "{text}");
        assert!(
            text.contains("Content-Transfer-Encoding: quoted-printable"),
            "{text}"
        );
        assert_eq!(m.part_text(2).as_deref(), Some("removed: résumé.exe"));
        assert_eq!(m.part_text(1).as_deref(), Some("Hello there."));
        let untouched = MULTIPART.windows(4).position(|w| w == b"--XX").unwrap() + 40;
        assert_eq!(&m.raw()[..untouched], &MULTIPART[..untouched]);
    }

    #[test]
    fn footer_goes_to_text_parts_only() {
        let m = edit(MULTIPART, &[MessageEdit::AppendFooter("-- scanned".into())]);
        assert_eq!(
            m.part_text(1).as_deref(),
            Some("Hello there.\r\n-- scanned")
        );
        assert_eq!(m.part_content(2).unwrap()[..2], *b"MZ");
    }

    #[test]
    fn footer_on_single_part_message() {
        let m = edit(
            b"Subject: s\r\n\r\nhi\r\n",
            &[MessageEdit::AppendFooter("bye".into())],
        );
        assert_eq!(m.part_text(0).as_deref(), Some("hi\r\nbye\r\n"));
        assert_eq!(m.header_value("subject").as_deref(), Some("s"));
    }

    #[test]
    fn change_header_replaces_removes_or_adds_the_nth_field() {
        let m = Message::new(
            b"Received: a\r\nX-Tag: one\r\nSubject: s\r\nX-Tag: two\r\n\r\nbody\r\n".to_vec(),
        );
        let change = |index: u32, value: &str| MessageEdit::ChangeHeader {
            name: "x-tag".into(),
            index,
            value: value.into(),
        };
        let second = apply_message_edits(&m, &[change(2, "2")]).unwrap().unwrap();
        let second = second.raw();
        assert_eq!(
            second,
            b"Received: a\r\nX-Tag: one\r\nSubject: s\r\nx-tag: 2\r\n\r\nbody\r\n"
        );
        let removed = apply_message_edits(&m, &[change(1, "")]).unwrap().unwrap();
        let removed = removed.raw();
        assert_eq!(
            removed,
            b"Received: a\r\nSubject: s\r\nX-Tag: two\r\n\r\nbody\r\n"
        );
        let added = apply_message_edits(&m, &[change(5, "new")])
            .unwrap()
            .unwrap();
        let added = added.raw();
        assert!(added.ends_with(b"X-Tag: two\r\nx-tag: new\r\n\r\nbody\r\n"));
    }

    #[test]
    fn folded_values_keep_their_folding_and_cannot_start_a_field() {
        let m = Message::new(b"Subject: s\r\n\r\nbody\r\n".to_vec());
        let folded = MessageEdit::AddHeader {
            name: "DKIM-Signature".into(),
            value: "v=1; a=rsa-sha256;\r\n\tb=abc".into(),
        };
        assert!(folded.validate().is_ok());
        let out = apply_message_edits(&m, &[folded]).unwrap().unwrap();
        let out = out.raw();
        assert!(
            out.starts_with(b"Subject: s\r\nDKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\n\r\n")
        );
        for smuggled in ["x\r\nBcc: y", "x\r\n", "x\r\n \r\n y", "x\ny", "x\r y"] {
            let edit = MessageEdit::AddHeader {
                name: "X".into(),
                value: smuggled.into(),
            };
            assert!(edit.validate().is_err(), "{smuggled:?}");
        }
    }
}
