//! A message's JMAP properties (RFC 8621 §4.1): header fields in their parsed forms, the
//! body structure and the `textBody`/`htmlBody`/`attachments` lists, body values, and the
//! summary that queries sort and filter on. Built on our own MIME tree (`crate::message`),
//! whose depth is bounded when it is parsed; mail-parser only ever sees single header values.

use mail_parser::parsers::MessageStream;
use mail_parser::{Address, HeaderValue};
use serde_json::{json, Map, Value};

use super::api::MethodError;
use super::budget::{Meter, PART_COST, PROPERTY_COST};
use crate::message::{Message, Part};

/// Characters of the preview (RFC 8621: at most 256).
const PREVIEW_CHARS: usize = 256;

/// A field value with the CRLF the header parsers expect.
fn terminated(raw: &str) -> Vec<u8> {
    let mut bytes = raw.as_bytes().to_vec();
    bytes.extend_from_slice(b"\r\n");
    bytes
}

/// Addresses JMAP takes of one address field, and Message-IDs of one id field. A field of
/// 300 000 addresses would otherwise become 300 000 JSON objects (about 130 times its raw
/// size) in every summary, sort and Email/get of it; IMAP bounds References the same way.
pub const MAX_HEADER_ITEMS: usize = 1_000;

fn address_list(value: HeaderValue<'_>) -> Vec<Value> {
    let one = |name: Option<&str>, email: Option<&str>| json!({"name": name.map(str::trim).filter(|n| !n.is_empty()), "email": email.unwrap_or_default()});
    match value {
        HeaderValue::Address(Address::List(list)) => list
            .iter()
            .take(MAX_HEADER_ITEMS)
            .map(|a| one(a.name.as_deref(), a.address.as_deref()))
            .collect(),
        HeaderValue::Address(Address::Group(groups)) => groups
            .iter()
            .flat_map(|g| g.addresses.iter())
            .take(MAX_HEADER_ITEMS)
            .map(|a| one(a.name.as_deref(), a.address.as_deref()))
            .collect(),
        _ => Vec::new(),
    }
}

fn grouped(value: HeaderValue<'_>) -> Vec<Value> {
    match value {
        HeaderValue::Address(Address::Group(groups)) => groups
            .iter()
            .take(MAX_HEADER_ITEMS)
            .map(|g| {
                json!({"name": g.name.as_deref(), "addresses": address_list(HeaderValue::Address(Address::List(g.addresses.clone())))})
            })
            .collect(),
        other => vec![json!({"name": null, "addresses": address_list(other)})],
    }
}

fn message_ids(value: HeaderValue<'_>) -> Option<Vec<String>> {
    match value {
        HeaderValue::Text(id) => Some(vec![id.into_owned()]),
        HeaderValue::TextList(ids) => Some(
            ids.into_iter()
                .take(MAX_HEADER_ITEMS)
                .map(|i| i.into_owned())
                .collect(),
        ),
        _ => None,
    }
}

/// Which lexical items a structured field is a list of.
#[derive(Clone, Copy, PartialEq)]
enum Items {
    /// Addresses and groups, separated by `,` (a group ends with `;`).
    Addresses,
    /// Message-IDs: `<...>` or bare words, one after another.
    Ids,
}

/// The start of a field value with at most [`MAX_HEADER_ITEMS`] items, cut in one linear pass
/// *before* mail-parser sees it: the parser builds the whole list (300 000 addresses, each an
/// allocation or three) before any cap on the result could apply. Quoted strings, comments
/// and `<...>` are skipped over, so a separator inside them does not count; a cut inside a
/// group closes it.
fn first_items(raw: &str, items: Items) -> std::borrow::Cow<'_, str> {
    let bytes = raw.as_bytes();
    let (mut quoted, mut escaped, mut angle) = (false, false, false);
    let (mut comment, mut in_group, mut count) = (0usize, false, 0usize);
    let mut token_ended = true;
    for (at, &byte) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        if quoted || comment > 0 {
            match byte {
                b'\\' => escaped = true,
                b'"' if quoted => quoted = false,
                b'(' if comment > 0 => comment += 1,
                b')' if comment > 0 => comment -= 1,
                _ => {}
            }
            continue;
        }
        if angle {
            angle = byte != b'>';
            token_ended = !angle;
            continue;
        }
        let separates = match items {
            Items::Addresses => matches!(byte, b',' | b';'),
            // An id starts at `<` or at a word after white space or a `>`.
            Items::Ids => {
                byte == b'<' || (token_ended && !byte.is_ascii_whitespace() && byte != b'(')
            }
        };
        if separates {
            count += 1;
            // Addresses: the MAX-th separator ends the MAX-th item; ids: the (MAX+1)-th starts.
            let limit = match items {
                Items::Addresses => MAX_HEADER_ITEMS,
                Items::Ids => MAX_HEADER_ITEMS + 1,
            };
            if count >= limit {
                let mut cut = raw[..at].to_string();
                if in_group {
                    cut.push(';');
                }
                return std::borrow::Cow::Owned(cut);
            }
        }
        match byte {
            b'"' => quoted = true,
            b'(' => comment = 1,
            b'<' => angle = true,
            b':' if items == Items::Addresses => in_group = true,
            b';' => in_group = false,
            _ => {}
        }
        token_ended = byte.is_ascii_whitespace() || byte == b'>';
    }
    std::borrow::Cow::Borrowed(raw)
}

/// A header field value in one of the forms of RFC 8621 §4.1.2; `None` for an unknown form.
pub fn header_form(raw: &str, form: &str) -> Option<Value> {
    let raw = match form {
        "addresses" | "asAddresses" | "groupedAddresses" | "asGroupedAddresses" | "urls"
        | "asURLs" => first_items(raw, Items::Addresses),
        "messageIds" | "asMessageIds" => first_items(raw, Items::Ids),
        _ => std::borrow::Cow::Borrowed(raw),
    };
    let raw = raw.as_ref();
    let bytes = terminated(raw);
    let mut stream = MessageStream::new(&bytes);
    Some(match form {
        "raw" => Value::String(raw.to_string()),
        "text" | "asText" => match stream.parse_unstructured() {
            HeaderValue::Text(text) => Value::String(text.trim().to_string()),
            _ => Value::String(String::new()),
        },
        "addresses" | "asAddresses" => Value::Array(address_list(stream.parse_address())),
        "groupedAddresses" | "asGroupedAddresses" => Value::Array(grouped(stream.parse_address())),
        "messageIds" | "asMessageIds" => {
            message_ids(stream.parse_id()).map_or(Value::Null, |v| json!(v))
        }
        "date" | "asDate" => match stream.parse_date() {
            HeaderValue::DateTime(date) if date.is_valid() => Value::String(date.to_rfc3339()),
            _ => Value::Null,
        },
        "urls" | "asURLs" => {
            let urls: Vec<String> = address_list(stream.parse_address())
                .iter()
                .filter_map(|a| a["email"].as_str().map(str::to_string))
                .collect();
            if urls.is_empty() {
                Value::Null
            } else {
                json!(urls)
            }
        }
        _ => return None,
    })
}

/// A `header:Name[:asForm][:all]` property of the message's top header, `None` when the
/// property is malformed.
pub fn header_property(message: &Message, property: &str) -> Option<Value> {
    header_property_within(message, property, &mut Meter::unbounded())
        .ok()
        .flatten()
}

/// [`header_property`], its size estimated and taken from `meter` before it is built: the
/// parsed forms of many fields (`:all`) can be several times the fields' raw size.
pub fn header_property_within(
    message: &Message,
    property: &str,
    meter: &mut Meter,
) -> Result<Option<Value>, MethodError> {
    let Some(rest) = property.strip_prefix("header:") else {
        return Ok(None);
    };
    let mut pieces = rest.split(':');
    let Some(name) = pieces.next().filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let mut form = "raw";
    let mut all = false;
    for piece in pieces {
        match piece {
            "all" => all = true,
            f if f.starts_with("as") && !all => form = f,
            _ => return Ok(None),
        }
    }
    if header_form("", form).is_none() {
        return Ok(None);
    }
    let mut fields = message.header(name);
    if !all {
        let last = fields.pop();
        fields = last.into_iter().collect();
    }
    let raw: u64 = fields.iter().map(|f| f.raw.len() as u64 + 16).sum();
    meter.take(raw.saturating_mul(FORM_EXPANSION))?;
    let values: Vec<Value> = fields
        .iter()
        .filter_map(|field| header_form(&field.raw, form))
        .collect();
    Ok(Some(if all {
        Value::Array(values)
    } else {
        values.into_iter().last().unwrap_or(Value::Null)
    }))
}

/// How much larger than a field's raw bytes its parsed form may be, as JSON (an address list
/// of one-letter addresses becomes objects with a name and an email each).
const FORM_EXPANSION: u64 = 8;

/// The last field `name` in one form, or null.
fn last_field(message: &Message, name: &str, form: &str) -> Value {
    message
        .last_raw(name)
        .and_then(|raw| header_form(&raw, form))
        .unwrap_or(Value::Null)
}

/// The convenience properties of RFC 8621 §4.1.3, or `None` for another property.
pub fn header_convenience(message: &Message, property: &str) -> Option<Value> {
    let addresses = |name| {
        let value = last_field(message, name, "asAddresses");
        match value {
            Value::Array(ref list) if list.is_empty() => Value::Null,
            other => other,
        }
    };
    Some(match property {
        "messageId" => last_field(message, "Message-ID", "asMessageIds"),
        "inReplyTo" => last_field(message, "In-Reply-To", "asMessageIds"),
        "references" => last_field(message, "References", "asMessageIds"),
        "sender" => addresses("Sender"),
        "from" => addresses("From"),
        "to" => addresses("To"),
        "cc" => addresses("Cc"),
        "bcc" => addresses("Bcc"),
        "replyTo" => addresses("Reply-To"),
        "subject" => last_field(message, "Subject", "asText"),
        "sentAt" => last_field(message, "Date", "asDate"),
        _ => return None,
    })
}

/// Every field of a header, raw, in order.
fn headers_of(message: &Message, part: &Part) -> Value {
    let fields = if part.id == 0 {
        message.headers()
    } else {
        nested_headers(message, part)
    };
    Value::Array(
        fields
            .into_iter()
            .map(|f| json!({"name": f.name, "value": f.raw}))
            .collect(),
    )
}

/// The header fields of a part inside the message.
fn nested_headers(message: &Message, part: &Part) -> Vec<crate::message::HeaderField> {
    let Some(span) = part.span else {
        return Vec::new();
    };
    let Some(block) = message.raw().get(span.header_start..span.body_start) else {
        return Vec::new();
    };
    Message::new(block.to_vec()).headers()
}

/// Every part's children, in order, from one pass over the parts: finding a part's children
/// by scanning all parts would make a wide tree cost the square of its size.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Children {
    /// Where each part's children start in `ids` (one more entry than parts).
    start: Vec<usize>,
    ids: Vec<u32>,
}

impl Children {
    pub fn of(message: &Message) -> Children {
        let parts = message.parts();
        let mut start = vec![0usize; parts.len() + 1];
        for part in parts {
            if let Some(parent) = part.parent.map(|p| p as usize).filter(|p| *p < parts.len()) {
                start[parent + 1] += 1;
            }
        }
        for i in 1..start.len() {
            start[i] += start[i - 1];
        }
        let mut next = start.clone();
        let mut ids = vec![0u32; start[parts.len()]];
        for part in parts {
            if let Some(parent) = part.parent.map(|p| p as usize).filter(|p| *p < parts.len()) {
                ids[next[parent]] = part.id;
                next[parent] += 1;
            }
        }
        Children { start, ids }
    }

    /// The children of part `id`, in order.
    fn of_part<'a>(&'a self, message: &'a Message, id: u32) -> impl Iterator<Item = &'a Part> {
        let id = id as usize;
        let range = match (self.start.get(id), self.start.get(id + 1)) {
            (Some(&from), Some(&to)) => &self.ids[from..to],
            _ => &[],
        };
        range.iter().filter_map(move |&child| message.part(child))
    }
}

fn media_type(part: &Part) -> String {
    format!("{}/{}", part.media_type, part.subtype).to_ascii_lowercase()
}

fn is_inline_media(part: &Part) -> bool {
    matches!(
        part.media_type.to_ascii_lowercase().as_str(),
        "image" | "audio" | "video"
    )
}

/// Which parts a client shows as the text body, the HTML body, and attachments (the
/// algorithm of RFC 8621 §4.1.4).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BodyLists {
    pub text: Vec<u32>,
    pub html: Vec<u32>,
    pub attachments: Vec<u32>,
}

impl BodyLists {
    pub fn of(message: &Message) -> BodyLists {
        BodyLists::with(message, &Children::of(message))
    }

    /// The lists, with the children index already built.
    pub fn with(message: &Message, children: &Children) -> BodyLists {
        let mut lists = BodyLists::default();
        if let Some(root) = message.part(0) {
            let mut text = Vec::new();
            let mut html = Vec::new();
            // As the RFC's usage: `parseStructure([message], 'mixed', false, ...)`. The
            // message itself is the one part of a list, so that a message whose top level is
            // multipart/alternative is walked as an alternative, not as a mixed list.
            walk(
                (message, children),
                &[root],
                ("mixed", false),
                (Some(&mut text), Some(&mut html)),
                &mut lists.attachments,
            );
            lists.text = text;
            lists.html = html;
        }
        lists
    }
}

/// Whether a part of a list is shown inline rather than as an attachment (`isInline` of
/// RFC 8621 §4.1.4): not `attachment`, of a type a client shows, and the first of its list
/// or (outside multipart/related) not a named text part.
fn is_inline(part: &Part, position: usize, multipart_type: &str) -> bool {
    let mt = media_type(part);
    let inline_media = is_inline_media(part);
    part.disposition
        .as_deref()
        .is_none_or(|d| !d.eq_ignore_ascii_case("attachment"))
        && (mt == "text/plain" || mt == "text/html" || inline_media)
        && (position == 0
            || (multipart_type != "related" && (inline_media || part.filename.is_none())))
}

/// RFC 8621's `parseStructure` over one list of sibling parts (a list given as `None` takes
/// no parts at this level). Recursion depth is bounded: the MIME tree was cut at
/// `limits.max-mime-depth` (at most 200) when it was parsed.
fn walk(
    (message, index): (&Message, &Children),
    parts: &[&Part],
    (multipart_type, in_alternative): (&str, bool),
    (mut text, mut html): (Option<&mut Vec<u32>>, Option<&mut Vec<u32>>),
    attachments: &mut Vec<u32>,
) {
    let text_length = text.as_ref().map(|t| t.len());
    let html_length = html.as_ref().map(|h| h.len());
    for (i, part) in parts.iter().enumerate() {
        let mt = media_type(part);
        let inline_media = is_inline_media(part);
        if part.is_multipart {
            let subtype = part.subtype.to_ascii_lowercase();
            let alternative = in_alternative || subtype == "alternative";
            let children: Vec<&Part> = index.of_part(message, part.id).collect();
            walk(
                (message, index),
                &children,
                (&subtype, alternative),
                (text.as_deref_mut(), html.as_deref_mut()),
                attachments,
            );
        } else if is_inline(part, i, multipart_type) {
            if multipart_type == "alternative" {
                match (mt.as_str(), text.as_deref_mut(), html.as_deref_mut()) {
                    ("text/plain", Some(text), _) => text.push(part.id),
                    ("text/html", _, Some(html)) => html.push(part.id),
                    ("text/plain" | "text/html", _, _) => {}
                    _ => attachments.push(part.id),
                }
                continue;
            }
            if in_alternative {
                if mt == "text/plain" {
                    html = None;
                }
                if mt == "text/html" {
                    text = None;
                }
            }
            if let Some(text) = text.as_deref_mut() {
                text.push(part.id);
            }
            if let Some(html) = html.as_deref_mut() {
                html.push(part.id);
            }
            if (text.is_none() || html.is_none()) && inline_media {
                attachments.push(part.id);
            }
        } else {
            attachments.push(part.id);
        }
    }
    if multipart_type == "alternative" {
        // One alternative had no text (or no HTML) form: the other stands in for it.
        if let (Some(text), Some(html), Some(tl), Some(hl)) = (text, html, text_length, html_length)
        {
            if text.len() == tl && html.len() != hl {
                text.extend_from_slice(&html[hl..]);
            }
            if html.len() == hl && text.len() != tl {
                html.extend_from_slice(&text[tl..]);
            }
        }
    }
}

/// The blob id of a part: the message's blob id and the part number.
pub fn part_blob_id(message_blob: &str, part: u32) -> String {
    format!("{message_blob}P{part}")
}

/// Size of a part's decoded content, or of its raw bytes for a nested message.
fn part_size(message: &Message, part: &Part) -> u64 {
    if part.is_message && !part.is_multipart {
        return part.span.map_or(0, |s| (s.end - s.body_start) as u64);
    }
    message
        .part_content(part.id)
        .map_or(part.size, |c| c.len() as u64)
}

/// The bytes a part blob stands for: the decoded content (a nested message as it is).
pub fn part_bytes(message: &Message, part_id: u32) -> Option<Vec<u8>> {
    let part = message.part(part_id)?;
    if part.is_multipart {
        return None;
    }
    if part.is_message {
        let span = part.span?;
        return message
            .raw()
            .get(span.body_start..span.end)
            .map(<[u8]>::to_vec);
    }
    message.part_content(part_id)
}

/// The default `bodyProperties` (RFC 8621 §4.2).
pub const DEFAULT_BODY_PROPERTIES: [&str; 10] = [
    "partId",
    "blobId",
    "size",
    "name",
    "type",
    "charset",
    "disposition",
    "cid",
    "language",
    "location",
];

/// One `EmailBodyPart` with the asked properties (`subParts` for a multipart when asked),
/// each part's estimated size taken from `meter` before it is built: a message of a million
/// sibling parts runs out of budget, not memory.
pub fn body_part(
    (message, index): (&Message, &Children),
    part: &Part,
    blob: &str,
    properties: &[String],
    meter: &mut Meter,
) -> Result<Value, MethodError> {
    // Names, types, parameters and header values come from the part's own header block.
    let header_bytes = part
        .span
        .map_or(0, |s| s.body_start.saturating_sub(s.header_start)) as u64;
    let copies = 1 + properties
        .iter()
        .filter(|p| *p == "headers" || p.starts_with("header:"))
        .count() as u64;
    meter.take(
        PART_COST
            .saturating_add(PROPERTY_COST.saturating_mul(properties.len() as u64))
            .saturating_add(header_bytes.saturating_mul(copies)),
    )?;
    let mut out = Map::new();
    let leaf = !part.is_multipart;
    let param = |name: &str| {
        part.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let header = |name: &str| {
        if part.id == 0 {
            message
                .header(name)
                .first()
                .map(|f| f.decoded.trim().to_string())
        } else {
            nested_headers(message, part)
                .into_iter()
                .find(|f| f.name.eq_ignore_ascii_case(name))
                .map(|f| f.decoded.trim().to_string())
        }
    };
    for property in properties {
        let value = match property.as_str() {
            "partId" => leaf.then(|| part.id.to_string()).into(),
            "blobId" => leaf.then(|| part_blob_id(blob, part.id)).into(),
            "size" => json!(if leaf { part_size(message, part) } else { 0 }),
            "headers" => headers_of(message, part),
            "name" => part.filename.clone().into(),
            "type" => media_type(part).into(),
            "charset" => match param("charset") {
                Some(c) => c.into(),
                None if part.media_type.eq_ignore_ascii_case("text") => "us-ascii".into(),
                None => Value::Null,
            },
            "disposition" => part
                .disposition
                .as_ref()
                .map(|d| d.to_ascii_lowercase())
                .into(),
            "cid" => header("Content-ID")
                .map(|c| c.trim_start_matches('<').trim_end_matches('>').to_string())
                .into(),
            "language" => header("Content-Language")
                .map(|l| {
                    json!(l
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .collect::<Vec<_>>())
                })
                .unwrap_or(Value::Null),
            "location" => header("Content-Location").into(),
            "subParts" if part.is_multipart => Value::Array(
                index
                    .of_part(message, part.id)
                    .map(|child| body_part((message, index), child, blob, properties, meter))
                    .collect::<Result<_, _>>()?,
            ),
            "subParts" => continue,
            other if other.starts_with("header:") => {
                if part.id == 0 {
                    header_property_within(message, other, meter)?.unwrap_or(Value::Null)
                } else {
                    nested_header_property(message, part, other, meter)?
                }
            }
            _ => continue,
        };
        out.insert(property.clone(), value);
    }
    Ok(Value::Object(out))
}

fn nested_header_property(
    message: &Message,
    part: &Part,
    property: &str,
    meter: &mut Meter,
) -> Result<Value, MethodError> {
    let Some(span) = part.span else {
        return Ok(Value::Null);
    };
    let Some(block) = message.raw().get(span.header_start..span.body_start) else {
        return Ok(Value::Null);
    };
    Ok(
        header_property_within(&Message::new(block.to_vec()), property, meter)?
            .unwrap_or(Value::Null),
    )
}

/// An `EmailBodyValue` for a text part, cut at `max_bytes` (0: whole) on a character boundary.
pub fn body_value(message: &Message, part_id: u32, max_bytes: usize) -> Value {
    let text = message
        .part_text(part_id)
        .or_else(|| {
            message
                .part_content(part_id)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })
        .unwrap_or_default();
    let truncated = max_bytes > 0 && text.len() > max_bytes;
    let value = if truncated {
        let mut cut = max_bytes;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        &text[..cut]
    } else {
        &text[..]
    };
    json!({"value": value, "isEncodingProblem": false, "isTruncated": truncated})
}

/// Up to 256 characters of the first text body, whitespace collapsed (HTML tags dropped).
pub fn preview(message: &Message, lists: &BodyLists) -> String {
    let (id, html) = match (lists.text.first(), lists.html.first()) {
        (Some(&id), _) => (id, false),
        (None, Some(&id)) => (id, true),
        (None, None) => return String::new(),
    };
    let is_html = html
        || message
            .part(id)
            .is_some_and(|p| media_type(p) == "text/html");
    let text = message.part_text(id).unwrap_or_default();
    let text = if is_html {
        super::html_scan::text_of(&text)
    } else {
        text
    };
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(PREVIEW_CHARS)
        .collect()
}

/// The first `<...>` message id of the last `name` field, read up to its first `>`.
fn first_id(message: &Message, name: &str) -> Option<String> {
    let raw = message.last_raw(name)?;
    let open = raw.find('<')?;
    let close = raw[open..].find('>')?;
    let id = raw[open + 1..open + close].trim();
    (!id.is_empty()).then(|| id.replace(['\r', '\n', ' ', '\t'], ""))
}

/// What queries sort and filter on, and threads group by, kept per email.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub subject: String,
    /// From, To, Cc, Bcc: names and addresses, lower-case, for text filters.
    pub from: String,
    pub to: String,
    pub cc: String,
    pub bcc: String,
    pub sent_at: Option<i64>,
    /// The first Message-ID the conversation names: the one its References start with.
    pub thread_root: Option<String>,
    pub has_attachment: bool,
    pub preview: String,
    /// The values of [`SUMMARY_PROPERTIES`], as Email/get gives them: a listing of many
    /// emails needs no message read twice.
    pub properties: Map<String, Value>,
    /// About the bytes the summary holds (see [`Summary::weigh`]).
    pub weight: usize,
}

/// Email/get properties kept in the summary.
pub const SUMMARY_PROPERTIES: [&str; 13] = [
    "messageId",
    "inReplyTo",
    "references",
    "sender",
    "from",
    "to",
    "cc",
    "bcc",
    "replyTo",
    "subject",
    "sentAt",
    "hasAttachment",
    "preview",
];

fn searchable(message: &Message, name: &str) -> String {
    match last_field(message, name, "asAddresses") {
        Value::Array(list) => list
            .iter()
            .map(|a| {
                format!(
                    "{} <{}>",
                    a["name"].as_str().unwrap_or(""),
                    a["email"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
            .to_lowercase(),
        _ => String::new(),
    }
}

impl Summary {
    pub fn of(message: &Message) -> Summary {
        let lists = BodyLists::of(message);
        let ids = |name: &str| match last_field(message, name, "asMessageIds") {
            Value::Array(ids) => ids
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        // Only the first id decides the thread: it is read without parsing the rest of a
        // References field, however many ids the sender put there.
        let thread_root = first_id(message, "References")
            .or_else(|| first_id(message, "In-Reply-To"))
            .or_else(|| ids("Message-ID").into_iter().next());
        let sent_at = message.last_raw("Date").and_then(|raw| {
            match MessageStream::new(&terminated(&raw)).parse_date() {
                HeaderValue::DateTime(d) if d.is_valid() => Some(d.to_timestamp()),
                _ => None,
            }
        });
        let preview = preview(message, &lists);
        let mut properties = Map::new();
        for property in &SUMMARY_PROPERTIES[..11] {
            if let Some(value) = header_convenience(message, property) {
                properties.insert(property.to_string(), value);
            }
        }
        properties.insert(
            "hasAttachment".into(),
            (!lists.attachments.is_empty()).into(),
        );
        properties.insert("preview".into(), preview.clone().into());
        let mut summary = Summary {
            properties,
            weight: 0,
            subject: last_field(message, "Subject", "asText")
                .as_str()
                .unwrap_or("")
                .to_string(),
            from: searchable(message, "From"),
            to: searchable(message, "To"),
            cc: searchable(message, "Cc"),
            bcc: searchable(message, "Bcc"),
            sent_at,
            thread_root,
            has_attachment: !lists.attachments.is_empty(),
            preview,
        };
        summary.weight = summary.weigh();
        summary
    }

    /// About the bytes this summary holds, for the cache that keeps summaries (bounded by bytes).
    fn weigh(&self) -> usize {
        let strings = [
            &self.subject,
            &self.from,
            &self.to,
            &self.cc,
            &self.bcc,
            &self.preview,
        ];
        let text: usize = strings.iter().map(|s| s.len()).sum();
        // A JSON value costs about its text plus some 64 bytes of map and string headers.
        let properties = serde_json::to_string(&self.properties).map_or(0, |j| j.len());
        text.saturating_add(properties.saturating_mul(3))
            .saturating_add(self.thread_root.as_ref().map_or(0, String::len))
            .saturating_add(256)
    }

    /// The subject without `Re:`/`Fwd:` prefixes, lower-case: what sorting by subject uses.
    pub fn base_subject(&self) -> String {
        let mut subject = self.subject.trim();
        loop {
            let lower = subject.to_ascii_lowercase();
            let cut = ["re:", "fwd:", "fw:", "aw:", "wg:"]
                .iter()
                .find(|p| lower.starts_with(*p))
                .map(|p| p.len());
            match cut {
                Some(n) => subject = subject[n..].trim_start(),
                None => return subject.to_lowercase(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALTERNATIVE: &[u8] = b"From: \"Ann Example\" <ann@example.org>\r\n\
To: bob@example.org, Carl <carl@example.org>\r\n\
Subject: =?utf-8?q?Caf=C3=A9?= plans\r\n\
Date: Tue, 24 Nov 2026 10:00:00 +0100\r\n\
Message-ID: <one@example.org>\r\n\
References: <root@example.org> <one-parent@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=OUT\r\n\
\r\n\
--OUT\r\n\
Content-Type: multipart/alternative; boundary=ALT\r\n\
\r\n\
--ALT\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Hello   plain\r\n\
world.\r\n\
--ALT\r\n\
Content-Type: text/html\r\n\
\r\n\
<p>Hello <b>html</b></p><script>x()</script>\r\n\
--ALT--\r\n\
--OUT\r\n\
Content-Type: application/pdf; name=a.pdf\r\n\
Content-Disposition: attachment; filename=a.pdf\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0=\r\n\
--OUT--\r\n";

    #[test]
    fn body_lists_follow_the_rfc_algorithm() {
        let message = Message::new(ALTERNATIVE.to_vec());
        let lists = BodyLists::of(&message);
        let kinds = |ids: &[u32]| -> Vec<String> {
            ids.iter()
                .map(|&id| media_type(message.part(id).expect("part")))
                .collect()
        };
        assert_eq!(kinds(&lists.text), vec!["text/plain"]);
        assert_eq!(kinds(&lists.html), vec!["text/html"]);
        assert_eq!(kinds(&lists.attachments), vec!["application/pdf"]);
        let pdf = lists.attachments[0];
        assert_eq!(part_bytes(&message, pdf).as_deref(), Some(&b"%PDF-"[..]));
    }

    /// A MIME tree for the body-list tests: leaves carry a type, extra header lines and a
    /// one-line body that names them.
    enum Shape {
        Leaf(&'static str, &'static str, &'static str),
        Multi(&'static str, Vec<Shape>),
    }
    use Shape::{Leaf, Multi};

    fn render(shape: &Shape, depth: usize, out: &mut String) {
        match shape {
            Leaf(kind, extra, body) => {
                out.push_str(&format!("Content-Type: {kind}\r\n{extra}\r\n{body}\r\n"));
            }
            Multi(subtype, children) => {
                let boundary = format!("b{depth}");
                out.push_str(&format!(
                    "Content-Type: multipart/{subtype}; boundary={boundary}\r\n\r\n"
                ));
                for child in children {
                    out.push_str(&format!("--{boundary}\r\n"));
                    render(child, depth + 1, out);
                }
                out.push_str(&format!("--{boundary}--\r\n"));
            }
        }
    }

    fn message_of(shape: &Shape) -> Vec<u8> {
        let mut out =
            String::from("From: a@example.org\r\nSubject: shapes\r\nMIME-Version: 1.0\r\n");
        render(shape, 0, &mut out);
        out.into_bytes()
    }

    /// Our three lists, each part named by its type and its body's first line.
    fn our_lists(raw: &[u8]) -> [Vec<String>; 3] {
        let message = Message::new(raw.to_vec());
        let lists = BodyLists::of(&message);
        let name = |ids: &[u32]| -> Vec<String> {
            ids.iter()
                .map(|&id| {
                    let part = message.part(id).expect("listed part exists");
                    let body = part_bytes(&message, id).unwrap_or_default();
                    let body = String::from_utf8_lossy(&body);
                    let line = if part.is_message {
                        ""
                    } else {
                        body.lines().next().unwrap_or("")
                    };
                    format!("{}:{}", media_type(part), line.trim())
                })
                .collect()
        };
        [
            name(&lists.text),
            name(&lists.html),
            name(&lists.attachments),
        ]
    }

    /// The same lists as Stalwart's mail-parser computes them (its own implementation of
    /// RFC 8621 §4.1.4).
    fn stalwart_lists(raw: &[u8]) -> [Vec<String>; 3] {
        use mail_parser::MimeHeaders as _;
        let parsed = mail_parser::MessageParser::default()
            .parse(raw)
            .expect("mail-parser parses the test message");
        let name = |ids: &[u32]| -> Vec<String> {
            ids.iter()
                .map(|&id| {
                    let part = &parsed.parts[id as usize];
                    let kind = part
                        .content_type()
                        .map(|c| {
                            format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default())
                                .to_ascii_lowercase()
                        })
                        .unwrap_or_else(|| "text/plain".into());
                    let line = match &part.body {
                        mail_parser::PartType::Message(_) => String::new(),
                        _ => String::from_utf8_lossy(part.contents())
                            .lines()
                            .next()
                            .unwrap_or("")
                            .trim()
                            .to_string(),
                    };
                    format!("{kind}:{line}")
                })
                .collect()
        };
        let (text, html) = (name(&parsed.text_body), name(&parsed.html_body));
        // Its one known departure from the RFC's pseudocode: it lists every inline image,
        // audio or video part among the attachments, where the RFC does so only when a
        // body list did not take it (`(!textBody || !htmlBody) && isInlineMediaType`).
        let attachments = name(&parsed.attachments)
            .into_iter()
            .filter(|a| !(text.contains(a) && html.contains(a)))
            .collect();
        [text, html, attachments]
    }

    #[test]
    fn body_lists_of_every_shape_agree_with_the_rfc_and_with_stalwart() {
        let text = || Leaf("text/plain", "", "T");
        let html = || Leaf("text/html", "", "<p>H</p>");
        let image = || Leaf("image/png", "Content-ID: <i@x>\r\n", "PNG");
        let pdf = || {
            Leaf(
                "application/pdf",
                "Content-Disposition: attachment; filename=a.pdf\r\n",
                "PDF",
            )
        };
        let rfc822 = || Leaf("message/rfc822", "", "Subject: inner\r\n\r\ninner body");
        let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let none: Vec<String> = Vec::new();
        let cases = [
            // The issue: a message whose top level is multipart/alternative.
            (
                Multi("alternative", vec![text(), html()]),
                [
                    v(&["text/plain:T"]),
                    v(&["text/html:<p>H</p>"]),
                    none.clone(),
                ],
            ),
            // Alternative inside mixed, with an attachment.
            (
                Multi(
                    "mixed",
                    vec![Multi("alternative", vec![text(), html()]), pdf()],
                ),
                [
                    v(&["text/plain:T"]),
                    v(&["text/html:<p>H</p>"]),
                    v(&["application/pdf:PDF"]),
                ],
            ),
            // HTML with an inline image (related) as the rich alternative.
            (
                Multi(
                    "alternative",
                    vec![text(), Multi("related", vec![html(), image()])],
                ),
                [
                    v(&["text/plain:T"]),
                    v(&["text/html:<p>H</p>"]),
                    v(&["image/png:PNG"]),
                ],
            ),
            // Nested alternatives: the inner one's text and HTML.
            (
                Multi(
                    "alternative",
                    vec![
                        text(),
                        Multi("alternative", vec![Leaf("text/plain", "", "T2"), html()]),
                    ],
                ),
                [
                    v(&["text/plain:T", "text/plain:T2"]),
                    v(&["text/html:<p>H</p>"]),
                    none.clone(),
                ],
            ),
            // An alternative with no HTML form: the text stands in for both.
            (
                Multi("alternative", vec![text()]),
                [v(&["text/plain:T"]), v(&["text/plain:T"]), none.clone()],
            ),
            // An HTML-only message: the HTML is both lists.
            (
                html(),
                [
                    v(&["text/html:<p>H</p>"]),
                    v(&["text/html:<p>H</p>"]),
                    none.clone(),
                ],
            ),
            // Text, an inline image and more text, with no alternative: all inline.
            (
                Multi("mixed", vec![text(), image(), Leaf("text/plain", "", "T3")]),
                [
                    v(&["text/plain:T", "image/png:PNG", "text/plain:T3"]),
                    v(&["text/plain:T", "image/png:PNG", "text/plain:T3"]),
                    none.clone(),
                ],
            ),
            // A forwarded message is an attachment, never walked into.
            (
                Multi("mixed", vec![text(), rfc822()]),
                [
                    v(&["text/plain:T"]),
                    v(&["text/plain:T"]),
                    v(&["message/rfc822:"]),
                ],
            ),
            // A named text part after the first is an attachment.
            (
                Multi(
                    "mixed",
                    vec![text(), Leaf("text/plain; name=notes.txt", "", "N")],
                ),
                [
                    v(&["text/plain:T"]),
                    v(&["text/plain:T"]),
                    v(&["text/plain:N"]),
                ],
            ),
            // Alternative of a mixed text-with-image and HTML.
            (
                Multi(
                    "alternative",
                    vec![Multi("mixed", vec![text(), image()]), html()],
                ),
                [
                    v(&["text/plain:T", "image/png:PNG"]),
                    v(&["text/html:<p>H</p>"]),
                    v(&["image/png:PNG"]),
                ],
            ),
        ];
        for (shape, expected) in cases {
            let raw = message_of(&shape);
            let ours = our_lists(&raw);
            let shown = String::from_utf8_lossy(&raw).into_owned();
            assert_eq!(ours, expected, "our lists of\n{shown}");
            assert_eq!(
                stalwart_lists(&raw),
                expected,
                "Stalwart's lists of\n{shown}"
            );
        }
    }

    #[test]
    fn convenience_headers_have_their_parsed_forms() {
        let message = Message::new(ALTERNATIVE.to_vec());
        let get = |p: &str| header_convenience(&message, p).expect("known property");
        assert_eq!(get("subject"), json!("Café plans"));
        assert_eq!(
            get("from"),
            json!([{"name": "Ann Example", "email": "ann@example.org"}])
        );
        assert_eq!(get("to")[1]["name"], "Carl");
        assert_eq!(get("messageId"), json!(["one@example.org"]));
        assert_eq!(get("sentAt"), json!("2026-11-24T10:00:00+01:00"));
        assert_eq!(get("cc"), Value::Null);
        assert_eq!(
            header_property(&message, "header:To:asAddresses:all").expect("well formed")[0]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        assert_eq!(header_property(&message, "header:Subject:asBogus"), None);
        let summary = Summary::of(&message);
        assert_eq!(summary.thread_root.as_deref(), Some("root@example.org"));
        assert!(summary.has_attachment);
        assert_eq!(summary.preview, "Hello plain world.");
        assert!(summary.from.contains("ann@example.org"));
    }

    #[test]
    fn long_lists_are_cut_before_the_parser_at_the_item_bound() {
        let many = |n: usize, one: &dyn Fn(usize) -> String, sep: &str| {
            (0..n).map(one).collect::<Vec<_>>().join(sep)
        };
        // Separators inside quotes, comments and angle brackets do not count.
        let address = |i: usize| format!("\"Doe, J{i}\" (a, b) <a{i}@x.example>");
        let raw = many(300_000, &address, ",\r\n ");
        let cut = first_items(&raw, Items::Addresses);
        assert!(cut.len() < 100_000, "{}", cut.len());
        let list = header_form(&raw, "asAddresses").expect("form");
        assert_eq!(list.as_array().map(Vec::len), Some(MAX_HEADER_ITEMS));
        assert_eq!(list[999]["email"], "a999@x.example");
        // (mail-parser keeps the comment in the name.)
        let name = list[999]["name"].as_str().unwrap_or("");
        assert!(name.starts_with("Doe, J999"), "{name}");
        // A cut inside a group closes the group.
        let grouped = format!("team: {};", many(5_000, &|i| format!("t{i}@x"), ", "));
        let groups = header_form(&grouped, "asGroupedAddresses").expect("form");
        assert_eq!(groups[0]["name"], "team");
        assert_eq!(groups[0]["addresses"].as_array().map(Vec::len), Some(1000));
        // Ids, bracketed or bare, with or without white space between them.
        for sep in ["", " ", "\r\n "] {
            let raw = many(5_000, &|i| format!("<r{i}@x>"), sep);
            let ids = header_form(&raw, "asMessageIds").expect("form");
            assert_eq!(
                ids.as_array().map(Vec::len),
                Some(MAX_HEADER_ITEMS),
                "{sep:?}"
            );
            assert_eq!(ids[999], "r999@x");
        }
        // Short lists are left alone.
        let few = "a@x, \"b;c\" <b@x>, g: c@x, d@x;";
        assert_eq!(first_items(few, Items::Addresses), few);
        assert_eq!(first_items("<a@x> <b@x>", Items::Ids), "<a@x> <b@x>");
    }

    #[test]
    fn previews_of_html_drop_tags_and_scripts() {
        let summary = Summary {
            subject: "Re: FWD: re: Hello".into(),
            ..Summary::default()
        };
        assert_eq!(summary.base_subject(), "hello");
    }
}
