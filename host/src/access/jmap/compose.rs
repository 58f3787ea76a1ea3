//! A new message from a JMAP Email object (Email/set create, RFC 8621 §4.6): the header
//! fields from its properties, the body from `textBody`/`htmlBody` with `bodyValues`, and
//! attachments from blobs — multipart/alternative for text and HTML, multipart/mixed around
//! attachments. Header values go through our field formatter (folding, RFC 2047 words).

use serde_json::{Map, Value};

use crate::message::encode::{choose, encode};
use crate::message::header::format_field;

/// A part to attach: its content and how it is labelled.
pub struct Attachment {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub name: Option<String>,
    pub inline_cid: Option<String>,
}

/// What the message is made of.
#[derive(Default)]
pub struct Draft {
    pub fields: Vec<(String, String)>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
}

/// Why an Email object cannot become a message: a SetError `(type, description)`.
pub type Refusal = (&'static str, String);

fn invalid(description: impl Into<String>) -> Refusal {
    ("invalidProperties", description.into())
}

/// `"Name" <email>`, the name quoted when it needs quoting (encoded words when not ASCII).
fn mailbox(address: &Value) -> Result<String, Refusal> {
    let email = address
        .get("email")
        .and_then(Value::as_str)
        .filter(|e| e.contains('@') && !e.contains(['<', '>', ',', ' ', '\r', '\n', '"']))
        .ok_or_else(|| invalid("every address needs a valid email"))?;
    let name = address.get("name").and_then(Value::as_str).unwrap_or("");
    if name.contains(['\r', '\n']) {
        return Err(invalid("names are one line"));
    }
    Ok(if name.is_empty() {
        format!("<{email}>")
    } else if !name.is_ascii() || name.chars().all(|c| c.is_alphanumeric() || c == ' ') {
        format!("{name} <{email}>")
    } else {
        format!(
            "\"{}\" <{email}>",
            name.replace('\\', "\\\\").replace('"', "\\\"")
        )
    })
}

fn address_list(value: &Value) -> Result<String, Refusal> {
    let list = value
        .as_array()
        .ok_or_else(|| invalid("addresses are a list"))?;
    Ok(list
        .iter()
        .map(mailbox)
        .collect::<Result<Vec<_>, _>>()?
        .join(", "))
}

fn message_ids(value: &Value) -> Result<String, Refusal> {
    let list = value
        .as_array()
        .ok_or_else(|| invalid("message ids are a list"))?;
    let ids: Vec<String> = list
        .iter()
        .map(|v| {
            v.as_str()
                .filter(|id| id.contains('@') && !id.contains(['<', '>', ' ', '\r', '\n']))
                .map(|id| format!("<{id}>"))
                .ok_or_else(|| invalid("a message id is id-left@id-right"))
        })
        .collect::<Result<_, _>>()?;
    Ok(ids.join(" "))
}

/// The text of the one body part `key` (`textBody`/`htmlBody`) names in `bodyValues`.
fn body_text(object: &Map<String, Value>, key: &str) -> Result<Option<String>, Refusal> {
    let Some(parts) = object.get(key).and_then(Value::as_array) else {
        return Ok(None);
    };
    let [part] = parts.as_slice() else {
        return Err(invalid(format!("{key} holds one part")));
    };
    let part_id = part
        .get("partId")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{key} names a partId of bodyValues")))?;
    let value = object
        .get("bodyValues")
        .and_then(|v| v.get(part_id))
        .and_then(|v| v.get("value"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("bodyValues has no {part_id}")))?;
    Ok(Some(value.to_string()))
}

/// The refusal of a message that would be larger than `max_size` octets.
fn too_large(max_size: usize) -> Refusal {
    (
        "tooLarge",
        format!("the email would be larger than {max_size} octets"),
    )
}

/// Takes `bytes` from the room left for the message, or refuses it.
fn take_room(room: &mut usize, bytes: usize, max_size: usize) -> Result<(), Refusal> {
    *room = room.checked_sub(bytes).ok_or_else(|| too_large(max_size))?;
    Ok(())
}

/// Reads an Email object into a draft of at most `max_size` octets of content; `blob(id,
/// room)` gives the bytes of an attachment's `blobId` if they fit in `room` (and refuses
/// without reading them if not), so the draft never holds more than the bound.
pub fn draft(
    object: &Map<String, Value>,
    max_size: usize,
    mut blob: impl FnMut(&str, usize) -> Result<Vec<u8>, Refusal>,
) -> Result<Draft, Refusal> {
    let mut draft = Draft::default();
    for (property, name) in [
        ("from", "From"),
        ("sender", "Sender"),
        ("to", "To"),
        ("cc", "Cc"),
        ("bcc", "Bcc"),
        ("replyTo", "Reply-To"),
    ] {
        if let Some(value) = object.get(property).filter(|v| !v.is_null()) {
            draft.fields.push((name.into(), address_list(value)?));
        }
    }
    for (property, name) in [
        ("messageId", "Message-ID"),
        ("inReplyTo", "In-Reply-To"),
        ("references", "References"),
    ] {
        if let Some(value) = object.get(property).filter(|v| !v.is_null()) {
            draft.fields.push((name.into(), message_ids(value)?));
        }
    }
    if let Some(subject) = object.get("subject").and_then(Value::as_str) {
        if subject.contains(['\r', '\n']) {
            return Err(invalid("the subject is one line"));
        }
        draft.fields.push(("Subject".into(), subject.to_string()));
    }
    if object.contains_key("bodyStructure") {
        return Err(invalid(
            "give textBody/htmlBody and attachments, not bodyStructure",
        ));
    }
    draft.text = body_text(object, "textBody")?;
    draft.html = body_text(object, "htmlBody")?;
    let mut room = max_size;
    let fields = draft.fields.iter().map(|(n, v)| n.len() + v.len());
    let texts = [&draft.text, &draft.html].into_iter().flatten();
    for used in fields.chain(texts.map(String::len)) {
        take_room(&mut room, used, max_size)?;
    }
    for attachment in object
        .get("attachments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = attachment
            .get("blobId")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("an attachment names its blobId"))?;
        let bytes = blob(id, room)?;
        take_room(&mut room, bytes.len(), max_size)?;
        let text = |key: &str| {
            attachment
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .filter(|v| !v.contains(['\r', '\n', '"']))
        };
        let media_type = text("type")
            .filter(|t| t.contains('/') && t.is_ascii() && !t.contains([';', ' ']))
            .unwrap_or_else(|| "application/octet-stream".into());
        let inline = text("disposition").as_deref() == Some("inline");
        draft.attachments.push(Attachment {
            bytes,
            media_type,
            name: text("name"),
            inline_cid: if inline { text("cid") } else { None },
        });
    }
    Ok(draft)
}

/// One leaf part: its header fields and encoded content.
fn leaf(
    out: &mut Vec<u8>,
    content_type: &str,
    content: &[u8],
    is_text: bool,
    extra: &[(String, String)],
    boundaries: &[String],
) {
    let encoding = choose(content, is_text, boundaries);
    out.extend(format_field("Content-Type", content_type));
    out.extend(format_field("Content-Transfer-Encoding", encoding.name()));
    for (name, value) in extra {
        out.extend(format_field(name, value));
    }
    out.extend_from_slice(b"\r\n");
    out.extend(encode(content, encoding, is_text));
}

fn text_part(out: &mut Vec<u8>, subtype: &str, text: &str, boundaries: &[String]) {
    leaf(
        out,
        &format!("text/{subtype}; charset=utf-8"),
        text.as_bytes(),
        true,
        &[],
        boundaries,
    );
}

fn body(out: &mut Vec<u8>, draft: &Draft, boundaries: &[String], alternative: &str) {
    match (&draft.text, &draft.html) {
        (Some(text), Some(html)) => {
            out.extend(format_field(
                "Content-Type",
                &format!("multipart/alternative; boundary=\"{alternative}\""),
            ));
            out.extend_from_slice(b"\r\n");
            for (subtype, content) in [("plain", text), ("html", html)] {
                out.extend_from_slice(format!("\r\n--{alternative}\r\n").as_bytes());
                text_part(out, subtype, content, boundaries);
            }
            out.extend_from_slice(format!("\r\n--{alternative}--\r\n").as_bytes());
        }
        (None, Some(html)) => text_part(out, "html", html, boundaries),
        (text, None) => text_part(out, "plain", text.as_deref().unwrap_or(""), boundaries),
    }
}

/// The message: `fields` first (Date and Message-ID are the caller's), then MIME. Every
/// delimiter line starts with its own CRLF, so each part keeps its content's last line end.
/// Refused (`tooLarge`) once the encoded message passes `max_size` octets: the draft's
/// content fits, but encoding adds to it.
pub fn build(draft: &Draft, seed: &str, max_size: usize) -> Result<Vec<u8>, Refusal> {
    let within = |out: &Vec<u8>| {
        if out.len() > max_size {
            Err(too_large(max_size))
        } else {
            Ok(())
        }
    };
    let mixed = format!("=_mg_{seed}_m");
    let alternative = format!("=_mg_{seed}_a");
    let boundaries = vec![mixed.clone(), alternative.clone()];
    let mut out = Vec::new();
    for (name, value) in &draft.fields {
        out.extend(format_field(name, value));
    }
    out.extend(format_field("MIME-Version", "1.0"));
    if draft.attachments.is_empty() {
        body(&mut out, draft, &boundaries, &alternative);
        within(&out)?;
        return Ok(out);
    }
    out.extend(format_field(
        "Content-Type",
        &format!("multipart/mixed; boundary=\"{mixed}\""),
    ));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(format!("\r\n--{mixed}\r\n").as_bytes());
    body(&mut out, draft, &boundaries, &alternative);
    within(&out)?;
    for attachment in &draft.attachments {
        out.extend_from_slice(format!("\r\n--{mixed}\r\n").as_bytes());
        let name = attachment.name.as_deref().unwrap_or("attachment");
        let mut extra = vec![(
            "Content-Disposition".to_string(),
            match &attachment.inline_cid {
                Some(_) => format!("inline; filename=\"{name}\""),
                None => format!("attachment; filename=\"{name}\""),
            },
        )];
        if let Some(cid) = &attachment.inline_cid {
            extra.push(("Content-ID".into(), format!("<{cid}>")));
        }
        let content_type = format!("{}; name=\"{name}\"", attachment.media_type);
        let is_text = attachment.media_type.starts_with("text/");
        leaf(
            &mut out,
            &content_type,
            &attachment.bytes,
            is_text,
            &extra,
            &boundaries,
        );
        within(&out)?;
    }
    out.extend_from_slice(format!("\r\n--{mixed}--\r\n").as_bytes());
    within(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use serde_json::json;

    #[test]
    fn an_email_object_becomes_a_message_others_can_read() {
        let object = json!({
            "from": [{"name": "Zoë Example", "email": "zoe@example.test"}],
            "to": [{"name": "Bob, Jr.", "email": "bob@example.test"}],
            "subject": "Grüße and a file",
            "inReplyTo": ["parent@example.test"],
            "textBody": [{"partId": "t", "type": "text/plain"}],
            "htmlBody": [{"partId": "h", "type": "text/html"}],
            "bodyValues": {"t": {"value": "Hello Bob,\nsee the file.\n"}, "h": {"value": "<p>Hello Bob</p>"}},
            "attachments": [{"blobId": "U1", "type": "application/pdf", "name": "report.pdf"}],
        });
        let draft = draft(object.as_object().expect("object"), 1 << 20, |id, _| {
            (id == "U1")
                .then(|| b"%PDF-1.4 binary\x00\x01".to_vec())
                .ok_or(("blobNotFound", String::new()))
        })
        .expect("a valid draft");
        let message = Message::new(build(&draft, "seed", 1 << 20).expect("within its size"));
        assert_eq!(
            message.header_value("Subject").as_deref(),
            Some("Grüße and a file")
        );
        assert_eq!(
            message.header("To")[0].raw.trim(),
            "\"Bob, Jr.\" <bob@example.test>"
        );
        assert_eq!(
            message.header("In-Reply-To")[0].raw.trim(),
            "<parent@example.test>"
        );
        let parts = message.parts();
        let text = parts
            .iter()
            .find(|p| p.subtype == "plain")
            .expect("text part");
        assert_eq!(
            message.part_text(text.id).as_deref(),
            Some("Hello Bob,\r\nsee the file.\r\n")
        );
        let pdf = parts
            .iter()
            .find(|p| p.subtype == "pdf")
            .expect("attachment");
        assert_eq!(pdf.filename.as_deref(), Some("report.pdf"));
        assert_eq!(
            message.part_content(pdf.id).as_deref(),
            Some(&b"%PDF-1.4 binary\x00\x01"[..])
        );
    }

    #[test]
    fn bad_objects_are_refused_with_the_set_error() {
        let refuse = |object: Value| {
            draft(object.as_object().expect("object"), 1 << 20, |_, _| {
                Err(("blobNotFound", String::new()))
            })
            .err()
            .map(|(kind, _)| kind)
        };
        assert_eq!(
            refuse(json!({"to": [{"email": "no-at-sign"}]})),
            Some("invalidProperties")
        );
        assert_eq!(
            refuse(json!({"subject": "a\r\nBcc: x@y"})),
            Some("invalidProperties")
        );
        assert_eq!(
            refuse(json!({"attachments": [{"blobId": "U9"}]})),
            Some("blobNotFound")
        );
        assert_eq!(
            refuse(json!({"textBody": [{"partId": "x"}], "bodyValues": {}})),
            Some("invalidProperties")
        );
    }

    #[test]
    fn attachments_are_counted_against_the_size_before_each_is_read() {
        // One blob named 100 times: the room left shrinks with each, and the blob that no
        // longer fits is asked for with the room left (and refuses) — never read past it.
        let ids: Vec<Value> = (0..100).map(|_| json!({"blobId": "U1"})).collect();
        let object = json!({"subject": "many", "attachments": ids});
        let mut asked = Vec::new();
        let refused = draft(object.as_object().expect("object"), 10_000, |_, room| {
            asked.push(room);
            if room < 3000 {
                Err(("tooLarge", String::new()))
            } else {
                Ok(vec![b'a'; 3000])
            }
        })
        .err()
        .map(|(kind, _)| kind);
        assert_eq!(refused, Some("tooLarge"));
        assert_eq!(asked.len(), 4, "asked for {asked:?}");
        // Content within the size whose encoding is not: refused by the build.
        let object = json!({"attachments": [{"blobId": "U1"}]});
        let within = draft(object.as_object().expect("object"), 10_000, |_, _| {
            Ok(vec![0xff; 9000])
        })
        .expect("content within the size");
        assert_eq!(
            build(&within, "seed", 10_000).err().map(|(kind, _)| kind),
            Some("tooLarge")
        );
        assert!(build(&within, "seed", 20_000).is_ok());
    }
}
