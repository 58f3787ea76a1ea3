//! Email/query (RFC 8621 §4.4): filter conditions and operators, sorts, and the window of
//! results a client asks for (position or anchor, limit), with collapsed threads.

use std::cmp::Ordering;
use std::collections::HashSet;

use mail_parser::DateTime;
use serde_json::{json, Map, Value};

use super::account::{Account, EmailRecord};
use super::api::MethodError;
use super::message::BodyLists;
use super::methods::Call;

/// A filter condition or operator, checked against one email.
fn matches(
    account: &mut Account,
    email: &EmailRecord,
    filter: &Value,
) -> Result<bool, MethodError> {
    let Some(filter) = filter.as_object() else {
        return Err(MethodError::with(
            "unsupportedFilter",
            "a filter must be an object",
        ));
    };
    if let Some(operator) = filter.get("operator") {
        let conditions = filter
            .get("conditions")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                MethodError::with("unsupportedFilter", "an operator needs conditions")
            })?;
        let mut results = Vec::with_capacity(conditions.len());
        for condition in conditions {
            results.push(matches(account, email, condition)?);
        }
        return match operator.as_str() {
            Some("AND") => Ok(results.iter().all(|r| *r)),
            Some("OR") => Ok(results.iter().any(|r| *r)),
            Some("NOT") => Ok(!results.iter().any(|r| *r)),
            _ => Err(MethodError::with(
                "unsupportedFilter",
                "operator must be AND, OR or NOT",
            )),
        };
    }
    for (name, value) in filter {
        if !condition(account, email, name, value)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Seconds since the epoch of a UTCDate filter value.
fn date_argument(value: &Value) -> Result<i64, MethodError> {
    let text = value
        .as_str()
        .ok_or_else(|| MethodError::with("unsupportedFilter", "dates are strings"))?;
    let parsed = DateTime::parse_rfc3339(text)
        .filter(DateTime::is_valid)
        .ok_or_else(|| MethodError::with("unsupportedFilter", format!("not a UTCDate: {text}")))?;
    Ok(parsed.to_timestamp())
}

fn condition(
    account: &mut Account,
    email: &EmailRecord,
    name: &str,
    value: &Value,
) -> Result<bool, MethodError> {
    let text = || value.as_str().unwrap_or("").to_lowercase();
    let summary = |account: &mut Account| account.summary(&email.id).unwrap_or_default();
    let received = i64::try_from(email.entry.internal_date).unwrap_or(i64::MAX);
    Ok(match name {
        "inMailbox" => value.as_str() == Some(email.mailbox_id.as_str()),
        "inMailboxOtherThan" => value.as_array().is_some_and(|list| {
            !list
                .iter()
                .any(|m| m.as_str() == Some(email.mailbox_id.as_str()))
        }),
        "before" => received < date_argument(value)?,
        "after" => received >= date_argument(value)?,
        "minSize" => value.as_u64().is_some_and(|n| account.size(email) >= n),
        "maxSize" => value.as_u64().is_some_and(|n| account.size(email) < n),
        "hasKeyword" => email
            .keywords
            .iter()
            .any(|k| k.eq_ignore_ascii_case(&text())),
        "notKeyword" => !email
            .keywords
            .iter()
            .any(|k| k.eq_ignore_ascii_case(&text())),
        "hasAttachment" => Some(summary(account).has_attachment) == value.as_bool(),
        "from" => summary(account).from.contains(&text()),
        "to" => summary(account).to.contains(&text()),
        "cc" => summary(account).cc.contains(&text()),
        "bcc" => summary(account).bcc.contains(&text()),
        "subject" => summary(account).subject.to_lowercase().contains(&text()),
        "body" => body_contains(account, email, &text()),
        "text" => {
            let needle = text();
            let s = summary(account);
            [&s.from, &s.to, &s.cc, &s.bcc]
                .iter()
                .any(|f| f.contains(&needle))
                || s.subject.to_lowercase().contains(&needle)
                || body_contains(account, email, &needle)
        }
        "header" => header_condition(account, email, value)?,
        other => {
            return Err(MethodError::with(
                "unsupportedFilter",
                format!("filter condition {other} is not supported"),
            ))
        }
    })
}

fn body_contains(account: &Account, email: &EmailRecord, needle: &str) -> bool {
    let Ok(message) = account.message(email) else {
        return false;
    };
    let lists = BodyLists::of(&message);
    lists.text.iter().chain(&lists.html).any(|&id| {
        let text = message.part_text(id).unwrap_or_default();
        text.to_lowercase().contains(needle)
    })
}

fn header_condition(
    account: &Account,
    email: &EmailRecord,
    value: &Value,
) -> Result<bool, MethodError> {
    let bad = || MethodError::with("unsupportedFilter", "header takes [name] or [name, value]");
    let list = value.as_array().ok_or_else(bad)?;
    let name = list.first().and_then(Value::as_str).ok_or_else(bad)?;
    let wanted = list.get(1).and_then(Value::as_str).map(str::to_lowercase);
    let Ok(message) = account.message(email) else {
        return Ok(false);
    };
    let fields = message.header(name);
    Ok(match wanted {
        None => !fields.is_empty(),
        Some(wanted) => fields
            .iter()
            .any(|f| f.decoded.to_lowercase().contains(&wanted)),
    })
}

/// One sort criterion: compares two emails.
fn compare(
    account: &mut Account,
    a: &EmailRecord,
    b: &EmailRecord,
    comparator: &Map<String, Value>,
) -> Ordering {
    let ascending = comparator
        .get("isAscending")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let property = comparator
        .get("property")
        .and_then(Value::as_str)
        .unwrap_or("");
    let order = match property {
        "receivedAt" => a.entry.internal_date.cmp(&b.entry.internal_date),
        "size" => account.size(a).cmp(&account.size(b)),
        "hasKeyword" => {
            let keyword = comparator
                .get("keyword")
                .and_then(Value::as_str)
                .unwrap_or("");
            let has = |e: &EmailRecord| e.keywords.iter().any(|k| k.eq_ignore_ascii_case(keyword));
            has(a).cmp(&has(b))
        }
        _ => {
            let (sa, sb) = (
                account.summary(&a.id).unwrap_or_default(),
                account.summary(&b.id).unwrap_or_default(),
            );
            match property {
                "from" => sa.from.cmp(&sb.from),
                "to" => sa.to.cmp(&sb.to),
                "subject" => sa.base_subject().cmp(&sb.base_subject()),
                "sentAt" => sa.sent_at.cmp(&sb.sent_at),
                _ => Ordering::Equal,
            }
        }
    };
    if ascending {
        order
    } else {
        order.reverse()
    }
}

const SORTABLE: [&str; 7] = [
    "receivedAt",
    "size",
    "from",
    "to",
    "subject",
    "sentAt",
    "hasKeyword",
];

pub fn query(account: &mut Account, call: &Call) -> Result<Value, MethodError> {
    let args = &call.args;
    let sort: Vec<Map<String, Value>> = match args.get("sort") {
        None | Some(Value::Null) => vec![json!({"property": "receivedAt", "isAscending": false})
            .as_object()
            .cloned()
            .unwrap_or_default()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|c| {
                c.as_object()
                    .cloned()
                    .ok_or_else(|| MethodError::invalid_arguments("sort holds comparators"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(MethodError::invalid_arguments("sort must be an array")),
    };
    for comparator in &sort {
        let property = comparator
            .get("property")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !SORTABLE.contains(&property) {
            return Err(MethodError::with(
                "unsupportedSort",
                format!("cannot sort by {property:?}"),
            ));
        }
    }
    let candidates: Vec<EmailRecord> = account.emails.clone();
    let mut found = Vec::new();
    for email in candidates {
        let keep = match args.get("filter") {
            None | Some(Value::Null) => true,
            Some(filter) => matches(account, &email, filter)?,
        };
        if keep {
            found.push(email);
        }
    }
    found.sort_by(|x, y| {
        sort.iter()
            .map(|comparator| compare(account, x, y, comparator))
            .find(|o| *o != Ordering::Equal)
            .unwrap_or_else(|| x.id.cmp(&y.id))
    });
    let mut sorted = found;
    if args.get("collapseThreads").and_then(Value::as_bool) == Some(true) {
        let mut threads = HashSet::new();
        let mut kept = Vec::with_capacity(sorted.len());
        for email in sorted {
            if threads.insert(account.thread_id(&email.id)) {
                kept.push(email);
            }
        }
        sorted = kept;
    }
    let ids: Vec<String> = sorted.into_iter().map(|e| e.id).collect();
    let (position, page) = window(&ids, args)?;
    let mut out = json!({
        "accountId": call.account_id,
        "queryState": account.email_states.state(),
        "canCalculateChanges": false,
        "position": position,
        "ids": page,
    });
    if args.get("calculateTotal").and_then(Value::as_bool) == Some(true) {
        out["total"] = ids.len().into();
    }
    if let Some(limit) = args.get("limit").and_then(Value::as_u64) {
        out["limit"] = limit.into();
    }
    Ok(out)
}

/// The page of `ids` a query asks for: `position` or `anchor` + `anchorOffset`, and `limit`.
pub fn window(
    ids: &[String],
    args: &Map<String, Value>,
) -> Result<(usize, Vec<String>), MethodError> {
    let total = ids.len() as i64;
    let start = if let Some(anchor) = args.get("anchor").and_then(Value::as_str) {
        let at = ids
            .iter()
            .position(|id| id == anchor)
            .ok_or_else(|| MethodError::new("anchorNotFound"))? as i64;
        let offset = args
            .get("anchorOffset")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        (at + offset).max(0)
    } else {
        let position = args.get("position").and_then(Value::as_i64).unwrap_or(0);
        if position < 0 {
            (total + position).max(0)
        } else {
            position
        }
    };
    let start = start.min(total) as usize;
    let limit = match args.get("limit") {
        None | Some(Value::Null) => usize::MAX,
        Some(v) => v
            .as_u64()
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .ok_or_else(|| {
                MethodError::invalid_arguments("limit must be a non-negative integer")
            })?,
    };
    Ok((start, ids[start..].iter().take(limit).cloned().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_take_position_anchor_and_limit() {
        let ids: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let args = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(
            window(&ids, &args(json!({"position": 1, "limit": 2}))).ok(),
            Some((1, vec!["b".into(), "c".into()]))
        );
        assert_eq!(
            window(&ids, &args(json!({"position": -1}))).ok(),
            Some((3, vec!["d".into()]))
        );
        assert_eq!(
            window(
                &ids,
                &args(json!({"anchor": "c", "anchorOffset": -1, "limit": 1}))
            )
            .ok(),
            Some((1, vec!["b".into()]))
        );
        assert_eq!(
            window(&ids, &args(json!({"anchor": "zz"})))
                .err()
                .map(|e| e.kind),
            Some("anchorNotFound")
        );
    }
}
