//! Email/get, Email/query, Email/changes, Email/set and Thread/get (RFC 8621 §3, §4) over
//! an [`Account`].

use std::collections::{HashMap, HashSet};

use mail_parser::DateTime;
use serde_json::{json, Map, Value};

use super::account::{system_flag, Account, EmailRecord, Found, ScanView};
use super::api::MethodError;
use super::budget::{Meter, Work, PART_COST, PROPERTY_COST};
use super::message::{self, BodyLists, Children};
use super::methods::{ids_argument, properties_argument, Call};
use crate::store::mailbox::{is_over_quota, room_for, served_len, FlagChange, FlagOp, Flags};
use crate::sys::blocking;

/// `Email/get`'s properties when the client names none (RFC 8621 §4.2).
const DEFAULT_PROPERTIES: [&str; 25] = [
    "id",
    "blobId",
    "threadId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
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
    "bodyValues",
    "textBody",
    "htmlBody",
    "attachments",
    "headers",
];

/// Properties answered from the Maildir alone, without reading the message.
const FROM_INDEX: [&str; 6] = [
    "id",
    "blobId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
];

/// The blob id of an email's raw message.
pub fn blob_id(email_id: &str) -> String {
    format!("B{}", &email_id[1..])
}

/// The email id a blob id belongs to, and the part it names (`None`: the whole message).
pub fn parse_blob_id(blob: &str) -> Option<(String, Option<u32>)> {
    let rest = blob.strip_prefix('B')?;
    let (hex, part) = match rest.split_once('P') {
        Some((hex, part)) => (hex, Some(part.parse().ok()?)),
        None => (rest, None),
    };
    (hex.len() == 24 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (format!("M{hex}"), part))
}

pub fn utc_date(seconds: u64) -> String {
    DateTime::from_timestamp(i64::try_from(seconds).unwrap_or(i64::MAX)).to_rfc3339()
}

/// What `Email/get` was asked for besides the properties.
struct BodyOptions {
    properties: Vec<String>,
    text_values: bool,
    html_values: bool,
    all_values: bool,
    max_bytes: usize,
}

impl BodyOptions {
    fn from(args: &Map<String, Value>) -> Result<BodyOptions, MethodError> {
        let flag = |name: &str| args.get(name).and_then(Value::as_bool).unwrap_or(false);
        let properties = properties_argument(args, "bodyProperties")?.unwrap_or_else(|| {
            message::DEFAULT_BODY_PROPERTIES
                .iter()
                .map(|p| p.to_string())
                .collect()
        });
        Ok(BodyOptions {
            properties,
            text_values: flag("fetchTextBodyValues"),
            html_values: flag("fetchHTMLBodyValues"),
            all_values: flag("fetchAllBodyValues"),
            max_bytes: args
                .get("maxBodyValueBytes")
                .and_then(Value::as_u64)
                .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        })
    }
}

/// Email/get: the account is snapshotted under its lock, the messages read and parsed on the
/// blocking pool with the lock released (the user's other requests go on meanwhile), each
/// read counted against the request's work budget, and the summaries and thread ids parsed
/// on the way kept afterwards.
pub async fn get(
    account: &tokio::sync::Mutex<Account>,
    call: &Call<'_>,
) -> Result<Value, MethodError> {
    let view = account.lock().await.scan_view();
    let mut found = Found::default();
    let answer = blocking::run(|| get_in(&view, call, &mut found));
    if !found.is_empty() {
        account.lock().await.adopt(found);
    }
    answer
}

fn get_in(view: &ScanView, call: &Call, found: &mut Found) -> Result<Value, MethodError> {
    let args = &call.args;
    let properties = properties_argument(args, "properties")?
        .unwrap_or_else(|| DEFAULT_PROPERTIES.iter().map(|p| p.to_string()).collect());
    let body = BodyOptions::from(args)?;
    let ids = match ids_argument(args, call.limits.max_objects_in_get)? {
        Some(ids) => ids,
        None => view
            .emails
            .iter()
            .take(call.limits.max_objects_in_get)
            .map(|e| e.id.clone())
            .collect(),
    };
    let by_id: HashMap<&str, &EmailRecord> =
        view.emails.iter().map(|e| (e.id.as_str(), e)).collect();
    // The answer is built against what the request's budget has left: each email, each body
    // part, each body value and header form is estimated and taken before it is built.
    let mut meter = Meter::new(call.budget);
    let mut list = Vec::new();
    let mut not_found = Vec::new();
    for id in ids {
        meter.take(PROPERTY_COST.saturating_mul(properties.len() as u64 + 1))?;
        let Some(email) = by_id.get(id.as_str()) else {
            not_found.push(id);
            continue;
        };
        let source = Source {
            view,
            found,
            work: &call.budget.work,
        };
        match render(source, email, &properties, &body, &mut meter)? {
            Some(object) => list.push(object),
            None => not_found.push(id),
        }
    }
    Ok(json!({
        "accountId": call.account_id,
        "state": view.email_state,
        "list": list,
        "notFound": not_found,
    }))
}

/// Where Email/get reads emails from: a snapshot, what was parsed so far, and the request's
/// work budget that every read and parse is counted against.
struct Source<'a> {
    view: &'a ScanView,
    found: &'a mut Found,
    work: &'a Work,
}

impl Source<'_> {
    /// The message, parsed (`Ok(None)`: its file is gone); its size is taken from the work
    /// budget first.
    fn message(&self, email: &EmailRecord) -> Result<Option<crate::message::Message>, MethodError> {
        self.work.add(self.view.size(email))?;
        Ok(self
            .view
            .read(email)
            .ok()
            .map(|bytes| crate::message::Message::new(bytes.as_ref().clone())))
    }
}

/// One email with the asked properties; `None` when its file is gone.
fn render(
    source: Source,
    email: &EmailRecord,
    properties: &[String],
    body: &BodyOptions,
    meter: &mut Meter,
) -> Result<Option<Value>, MethodError> {
    let from_summary = |p: &String| message::SUMMARY_PROPERTIES.contains(&p.as_str());
    let needs_message = properties
        .iter()
        .any(|p| !FROM_INDEX.contains(&p.as_str()) && p != "threadId" && !from_summary(p));
    let message = if needs_message {
        match source.message(email)? {
            Some(message) => Some(message),
            None => return Ok(None),
        }
    } else {
        None
    };
    let summary = if properties.iter().any(from_summary) && message.is_none() {
        match source
            .view
            .summary_within(email, source.work, source.found)?
        {
            Some(summary) => Some(summary),
            None => return Ok(None),
        }
    } else {
        None
    };
    // The thread id is known, or costs a summary: counted like any other parse.
    let thread = if properties.iter().any(|p| p == "threadId") {
        match source
            .view
            .thread_within(email, source.work, source.found)?
        {
            Some(thread) => Some(thread),
            None => return Ok(None),
        }
    } else {
        None
    };
    let mut out = Map::new();
    out.insert("id".into(), email.id.clone().into());
    let index = message.as_ref().map(|m| {
        let children = Children::of(m);
        let lists = BodyLists::with(m, &children);
        (children, lists)
    });
    for property in properties {
        let value = match property.as_str() {
            "id" => continue,
            "blobId" => blob_id(&email.id).into(),
            "threadId" => thread.clone().unwrap_or_default().into(),
            "mailboxIds" => json!({ email.mailbox_id.clone(): true }),
            "keywords" => Value::Object(
                email
                    .keywords
                    .iter()
                    .map(|k| (k.clone(), Value::Bool(true)))
                    .collect(),
            ),
            "size" => source.view.size(email).into(),
            "receivedAt" => utc_date(email.entry.internal_date).into(),
            other if summary.is_some() && message::SUMMARY_PROPERTIES.contains(&other) => summary
                .as_ref()
                .and_then(|s| s.properties.get(other).cloned())
                .unwrap_or(Value::Null),
            other => match (&message, &index) {
                (Some(message), Some((children, lists))) => {
                    let parsed = Parsed {
                        message,
                        children,
                        lists,
                    };
                    body_property(&parsed, email, other, body, meter)?.unwrap_or(Value::Null)
                }
                _ => Value::Null,
            },
        };
        out.insert(property.clone(), value);
    }
    Ok(Some(Value::Object(out)))
}

/// A message with what Email/get works out of it once.
struct Parsed<'a> {
    message: &'a crate::message::Message,
    children: &'a Children,
    lists: &'a BodyLists,
}

fn body_property(
    parsed: &Parsed,
    email: &EmailRecord,
    property: &str,
    body: &BodyOptions,
    meter: &mut Meter,
) -> Result<Option<Value>, MethodError> {
    let (message, lists) = (parsed.message, parsed.lists);
    let tree = (message, parsed.children);
    if let Some(value) = message::header_convenience(message, property) {
        return Ok(Some(value));
    }
    if property.starts_with("header:") {
        return message::header_property_within(message, property, meter);
    }
    let blob = blob_id(&email.id);
    let parts = |ids: &[u32], meter: &mut Meter| -> Result<Value, MethodError> {
        let mut out = Vec::new();
        for part in ids.iter().filter_map(|&id| message.part(id)) {
            out.push(message::body_part(
                tree,
                part,
                &blob,
                &body.properties,
                meter,
            )?);
        }
        Ok(Value::Array(out))
    };
    Ok(Some(match property {
        "hasAttachment" => (!lists.attachments.is_empty()).into(),
        "preview" => message::preview(message, lists).into(),
        "headers" => match message.part(0) {
            Some(root) => message::body_part(tree, root, &blob, &["headers".into()], meter)?
                .get("headers")
                .cloned()
                .unwrap_or(Value::Null),
            None => return Ok(None),
        },
        "textBody" => parts(&lists.text, meter)?,
        "htmlBody" => parts(&lists.html, meter)?,
        "attachments" => parts(&lists.attachments, meter)?,
        "bodyStructure" => {
            let mut properties = body.properties.clone();
            properties.push("subParts".into());
            match message.part(0) {
                Some(root) => message::body_part(tree, root, &blob, &properties, meter)?,
                None => return Ok(None),
            }
        }
        "bodyValues" => {
            let mut wanted: Vec<u32> = Vec::new();
            if body.text_values || body.all_values {
                wanted.extend(&lists.text);
            }
            if body.html_values || body.all_values {
                wanted.extend(&lists.html);
            }
            let mut values = Map::new();
            for id in wanted {
                let Some(part) = message.part(id) else {
                    continue;
                };
                if !part.media_type.eq_ignore_ascii_case("text") {
                    continue;
                }
                let size = match body.max_bytes {
                    0 => part.size,
                    max => part.size.min(max as u64),
                };
                meter.take(PART_COST.saturating_add(size))?;
                values.insert(
                    id.to_string(),
                    message::body_value(message, id, body.max_bytes),
                );
            }
            Value::Object(values)
        }
        _ => return Ok(None),
    }))
}

pub fn changes(account: &Account, call: &Call) -> Result<Value, MethodError> {
    super::methods::changes(&account.email_states, call).map(Value::Object)
}

/// What an update asks of one email.
#[derive(Default)]
struct Update {
    /// The keywords afterwards, when they change.
    keywords: Option<HashSet<String>>,
    /// The one mailbox afterwards, when it changes.
    mailbox: Option<String>,
}

pub fn set_error(kind: &str, description: impl Into<String>) -> Value {
    json!({"type": kind, "description": description.into()})
}

/// Reads a patch object into an [`Update`] against the email as it is.
fn read_patch(
    email: &EmailRecord,
    patch: &Map<String, Value>,
    created: &HashMap<String, String>,
) -> Result<Update, Value> {
    let mut keywords: HashSet<String> = email.keywords.iter().cloned().collect();
    let mut mailboxes: HashSet<String> = HashSet::from([email.mailbox_id.clone()]);
    let mut touched = (false, false);
    let resolve = |id: &str| match id.strip_prefix('#') {
        Some(creation) => created
            .get(creation)
            .cloned()
            .unwrap_or_else(|| id.to_string()),
        None => id.to_string(),
    };
    for (path, value) in patch {
        let invalid = || set_error("invalidProperties", format!("cannot set {path}"));
        if path == "keywords" {
            let map = value.as_object().ok_or_else(invalid)?;
            keywords = map.keys().map(|k| k.to_lowercase()).collect();
            touched.0 = true;
        } else if let Some(keyword) = path.strip_prefix("keywords/") {
            match value {
                Value::Bool(true) => keywords.insert(keyword.to_lowercase()),
                Value::Null => keywords.remove(&keyword.to_lowercase()),
                _ => return Err(invalid()),
            };
            touched.0 = true;
        } else if path == "mailboxIds" {
            let map = value.as_object().ok_or_else(invalid)?;
            mailboxes = map.keys().map(|k| resolve(k)).collect();
            touched.1 = true;
        } else if let Some(mailbox) = path.strip_prefix("mailboxIds/") {
            match value {
                Value::Bool(true) => mailboxes.insert(resolve(mailbox)),
                Value::Null => mailboxes.remove(&resolve(mailbox)),
                _ => return Err(invalid()),
            };
            touched.1 = true;
        } else {
            return Err(invalid());
        }
    }
    for keyword in &keywords {
        if keyword.is_empty()
            || !keyword
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"(){]%*\"\\".contains(&b))
        {
            return Err(set_error(
                "invalidProperties",
                format!("{keyword:?} is not a keyword"),
            ));
        }
    }
    if touched.1 && mailboxes.len() != 1 {
        return Err(set_error(
            if mailboxes.is_empty() {
                "invalidProperties"
            } else {
                "tooManyMailboxes"
            },
            "an email is in exactly one mailbox here (maxMailboxesPerEmail is 1)",
        ));
    }
    Ok(Update {
        keywords: touched.0.then_some(keywords),
        mailbox: if touched.1 {
            mailboxes
                .into_iter()
                .next()
                .filter(|m| *m != email.mailbox_id)
        } else {
            None
        },
    })
}

/// Applies one update to the Maildir.
fn apply(account: &Account, email: &EmailRecord, update: Update) -> Result<(), Value> {
    let server = |e: std::io::Error| set_error("serverFail", e.to_string());
    let source = account
        .mailbox(&email.mailbox_id)
        .ok_or_else(|| set_error("notFound", "its mailbox is gone"))?
        .folder
        .clone();
    let mut entry = email.entry.clone();
    if let Some(keywords) = update.keywords {
        let mut system = String::new();
        let mut names = Vec::new();
        for keyword in &keywords {
            match system_flag(keyword) {
                Some(letter) => system.push(letter),
                None => names.push(keyword.clone()),
            }
        }
        // `\Deleted` has no keyword: a keyword change keeps it.
        if entry.flags.contains('T') {
            system.push('T');
        }
        let change = FlagChange {
            op: FlagOp::Replace,
            system: Flags::parse(&system),
            keywords: &names,
            unchanged_since: None,
        };
        let updated = blocking::run(|| source.update_flags(&[&entry], &change)).map_err(server)?;
        entry = updated
            .entries
            .into_iter()
            .next()
            .ok_or_else(|| set_error("notFound", "the message is gone"))?;
    }
    if let Some(target) = update.mailbox {
        let target = account
            .mailbox(&target)
            .ok_or_else(|| set_error("invalidProperties", format!("no mailbox {target}")))?
            .folder
            .clone();
        blocking::run(|| source.move_to(&entry, &target)).map_err(server)?;
    }
    Ok(())
}

/// One update of Email/set: the patch read and applied to the email as the account shows it.
pub fn update_one(
    account: &Account,
    id: &str,
    patch: &Value,
    created: &HashMap<String, String>,
) -> Result<(), Value> {
    let Some(email) = account.email(id).cloned() else {
        return Err(set_error("notFound", "no such email"));
    };
    let Some(patch) = patch.as_object() else {
        return Err(set_error("invalidPatch", "a patch is an object"));
    };
    read_patch(&email, patch, created).and_then(|u| apply(account, &email, u))
}

/// One destroy of Email/set: the message's file removed.
pub fn destroy_one(account: &Account, id: &str) -> Result<(), Value> {
    let Some(email) = account.email(id).cloned() else {
        return Err(set_error("notFound", "no such email"));
    };
    let Some(mailbox) = account.mailbox(&email.mailbox_id) else {
        return Err(set_error("notFound", "its mailbox is gone"));
    };
    let folder = mailbox.folder.clone();
    blocking::run(|| folder.delete(&email.entry))
        .map_err(|e| set_error("serverFail", e.to_string()))
}

/// Thread/get: every email's thread is needed to list a thread's members, so the account is
/// snapshotted and the emails' threads worked out on the blocking pool without the lock,
/// each parse counted against the request's work budget.
pub async fn thread_get(
    account: &tokio::sync::Mutex<Account>,
    call: &Call<'_>,
) -> Result<Value, MethodError> {
    let ids = ids_argument(&call.args, call.limits.max_objects_in_get)?.unwrap_or_default();
    let view = account.lock().await.scan_view();
    let mut found = Found::default();
    let members = blocking::run(|| thread_members(&view, &ids, &call.budget.work, &mut found));
    if !found.is_empty() {
        account.lock().await.adopt(found);
    }
    let mut members = members?;
    let mut meter = Meter::new(call.budget);
    let mut list = Vec::new();
    let mut not_found = Vec::new();
    for id in &ids {
        match members.get_mut(id) {
            Some(emails) => {
                // A thread of many emails lists them all: counted before it is built.
                meter.take(PROPERTY_COST.saturating_mul(emails.len() as u64 + 2))?;
                emails.sort();
                let email_ids: Vec<&String> = emails.iter().map(|(_, id)| id).collect();
                list.push(json!({"id": id, "emailIds": email_ids}));
            }
            None => not_found.push(id.clone()),
        }
    }
    Ok(json!({
        "accountId": call.account_id,
        "state": view.email_state,
        "list": list,
        "notFound": not_found,
    }))
}

/// The members (received time, email id) of each thread in `wanted`.
fn thread_members(
    view: &ScanView,
    wanted: &[String],
    work: &Work,
    found: &mut Found,
) -> Result<HashMap<String, Vec<(u64, String)>>, MethodError> {
    let wanted: HashSet<&String> = wanted.iter().collect();
    let mut members: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    if wanted.is_empty() {
        return Ok(members);
    }
    for email in &view.emails {
        let Some(thread) = view.thread_within(email, work, found)? else {
            continue;
        };
        if wanted.contains(&thread) {
            let member = (email.entry.internal_date, email.id.clone());
            members.entry(thread).or_default().push(member);
        }
    }
    Ok(members)
}

/// Where a new email goes: its one mailbox and its flags, from `mailboxIds` and `keywords`.
pub struct Placement {
    pub mailbox_id: String,
    pub system: Flags,
    pub keywords: Vec<String>,
}

impl Placement {
    pub fn read(
        object: &Map<String, Value>,
        created: &HashMap<String, String>,
    ) -> Result<Placement, Value> {
        let mailboxes: Vec<String> = object
            .get("mailboxIds")
            .and_then(Value::as_object)
            .map(|m| {
                m.keys()
                    .map(|k| match k.strip_prefix('#') {
                        Some(c) => created.get(c).cloned().unwrap_or_else(|| k.clone()),
                        None => k.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let [mailbox_id] = mailboxes.as_slice() else {
            return Err(set_error(
                if mailboxes.is_empty() {
                    "invalidProperties"
                } else {
                    "tooManyMailboxes"
                },
                "a new email goes into exactly one mailbox (mailboxIds)",
            ));
        };
        let mut system = String::new();
        let mut keywords = Vec::new();
        for keyword in object
            .get("keywords")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, _)| k.to_lowercase())
        {
            match system_flag(&keyword) {
                Some(letter) => system.push(letter),
                None => keywords.push(keyword),
            }
        }
        Ok(Placement {
            mailbox_id: mailbox_id.clone(),
            system: Flags::parse(&system),
            keywords,
        })
    }

    /// Adds `bytes` to the mailbox, within the user's storage `quota` (bytes, 0: none;
    /// `overQuota` past it); the UID it got.
    pub fn store(
        &self,
        account: &Account,
        bytes: &[u8],
        received_at: Option<u64>,
        quota: u64,
    ) -> Result<u32, Value> {
        let folder = account
            .mailbox(&self.mailbox_id)
            .ok_or_else(|| {
                set_error(
                    "invalidProperties",
                    format!("no mailbox {}", self.mailbox_id),
                )
            })?
            .folder
            .clone();
        blocking::run(|| {
            room_for(&account.maildir, quota, served_len(bytes))?;
            folder.append(bytes, self.system, &self.keywords, received_at)
        })
        .map_err(|e| match is_over_quota(&e) {
            true => set_error("overQuota", e.to_string()),
            false => set_error("serverFail", e.to_string()),
        })
    }
}

/// What a created email is reported as: `{id, blobId, threadId, size}`.
pub fn created_object(account: &mut Account, mailbox_id: &str, uid: u32) -> Option<Value> {
    let email = account
        .emails
        .iter()
        .find(|e| e.mailbox_id == mailbox_id && e.entry.uid == uid)?
        .clone();
    Some(json!({
        "id": email.id,
        "blobId": blob_id(&email.id),
        "threadId": account.thread_id(&email.id),
        "size": account.size(&email),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_ids_name_the_email_and_the_part() {
        let email = "M0123456789abcdef01234567";
        let blob = blob_id(email);
        assert_eq!(parse_blob_id(&blob), Some((email.to_string(), None)));
        let part = message::part_blob_id(&blob, 3);
        assert_eq!(parse_blob_id(&part), Some((email.to_string(), Some(3))));
        for bad in [
            "",
            "B",
            "Bxyz",
            "M0123456789abcdef01234567",
            "B0123456789abcdef01234567Px",
        ] {
            assert_eq!(parse_blob_id(bad), None, "{bad}");
        }
    }
}
