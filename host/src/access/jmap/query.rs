//! Email/query (RFC 8621 §4.4): filter conditions and operators, sorts, and the window of
//! results a client asks for (position or anchor, limit), with collapsed threads.
//!
//! A query's cost grows with the account and with the filter, so both are bounded: the
//! filter is compiled first (at most [`MAX_FILTER_CONDITIONS`] conditions and operators,
//! [`MAX_FILTER_DEPTH`] deep, [`MAX_SORT`] comparators), then run over a snapshot of the
//! account on the blocking pool *without* the account's lock (the user's other requests, push
//! and downloads go on meanwhile), under the request's work budget (one for all its calls, like IMAP SEARCH's): each message read
//! counts its size, each condition on each email counts [`CONDITION_COST`] plus the bytes it
//! examines, and the request's deadline, checked with every count, stops what the count misses. Each message is read, parsed and
//! its body text lower-cased at most once per query, however many conditions look at it.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;

use mail_parser::DateTime;
use serde_json::{json, Map, Value};

use super::account::{thread_of, Account, EmailRecord, ScanView};
use super::api::MethodError;
use super::budget::{too_large, Work, CONDITION_COST};
use super::message::{BodyLists, Summary};
use super::methods::Call;
use crate::message::Message;
use crate::sys::blocking;

/// Conditions and operators one filter may hold.
pub const MAX_FILTER_CONDITIONS: usize = 256;
/// Operators nested at most this deep.
pub const MAX_FILTER_DEPTH: usize = 10;
/// Comparators one sort may list.
pub const MAX_SORT: usize = 8;
/// Ids one query answers at most (the RFC lets the server cap `limit` and say so).
pub const MAX_LIMIT: usize = 50_000;

/// An operator of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    And,
    Or,
    Not,
}

/// Address fields of the summary text filters look in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    From,
    To,
    Cc,
    Bcc,
}

/// One condition, its argument read once (text arguments lower-cased).
#[derive(Debug, Clone, PartialEq)]
enum Condition {
    InMailbox(Option<String>),
    InMailboxOtherThan(Option<Vec<String>>),
    Before(i64),
    After(i64),
    MinSize(Option<u64>),
    MaxSize(Option<u64>),
    HasKeyword(String),
    NotKeyword(String),
    HasAttachment(Option<bool>),
    Address(Field, String),
    Subject(String),
    Body(String),
    Text(String),
    Header(String, Option<String>),
}

/// A compiled filter.
#[derive(Debug, Clone, PartialEq)]
enum Filter {
    Operator(Operator, Vec<Filter>),
    /// A FilterCondition object: all of its conditions hold.
    All(Vec<Condition>),
}

fn unsupported(why: impl Into<String>) -> MethodError {
    MethodError::with("unsupportedFilter", why)
}

/// Reads a filter, counting its conditions and operators against the bounds.
fn compile(value: &Value, depth: usize, count: &mut usize) -> Result<Filter, MethodError> {
    if depth > MAX_FILTER_DEPTH {
        return Err(too_large(
            "maxFilterDepth",
            format!("filter operators nest at most {MAX_FILTER_DEPTH} deep"),
        ));
    }
    let object = value
        .as_object()
        .ok_or_else(|| unsupported("a filter must be an object"))?;
    if let Some(operator) = object.get("operator") {
        count_in(count, 1)?;
        let operator = match operator.as_str() {
            Some("AND") => Operator::And,
            Some("OR") => Operator::Or,
            Some("NOT") => Operator::Not,
            _ => return Err(unsupported("operator must be AND, OR or NOT")),
        };
        let conditions = object
            .get("conditions")
            .and_then(Value::as_array)
            .ok_or_else(|| unsupported("an operator needs conditions"))?;
        // A list too long is refused before any of it is read.
        if count.saturating_add(conditions.len()) > MAX_FILTER_CONDITIONS {
            return Err(too_many_conditions());
        }
        let inner = conditions
            .iter()
            .map(|c| compile(c, depth + 1, count))
            .collect::<Result<_, _>>()?;
        return Ok(Filter::Operator(operator, inner));
    }
    count_in(count, object.len())?;
    object
        .iter()
        .map(|(name, value)| condition(name, value))
        .collect::<Result<_, _>>()
        .map(Filter::All)
}

fn too_many_conditions() -> MethodError {
    too_large(
        "maxFilterConditions",
        format!("a filter holds at most {MAX_FILTER_CONDITIONS} conditions and operators"),
    )
}

/// Adds `n` to the filter's count of conditions and operators, within the bound.
fn count_in(count: &mut usize, n: usize) -> Result<(), MethodError> {
    *count = count.saturating_add(n);
    if *count > MAX_FILTER_CONDITIONS {
        return Err(too_many_conditions());
    }
    Ok(())
}

/// Seconds since the epoch of a UTCDate filter value.
fn date_argument(value: &Value) -> Result<i64, MethodError> {
    let text = value
        .as_str()
        .ok_or_else(|| unsupported("dates are strings"))?;
    let parsed = DateTime::parse_rfc3339(text)
        .filter(DateTime::is_valid)
        .ok_or_else(|| unsupported(format!("not a UTCDate: {text}")))?;
    Ok(parsed.to_timestamp())
}

fn condition(name: &str, value: &Value) -> Result<Condition, MethodError> {
    let text = || value.as_str().unwrap_or("").to_lowercase();
    Ok(match name {
        "inMailbox" => Condition::InMailbox(value.as_str().map(str::to_string)),
        "inMailboxOtherThan" => Condition::InMailboxOtherThan(value.as_array().map(|list| {
            list.iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect()
        })),
        "before" => Condition::Before(date_argument(value)?),
        "after" => Condition::After(date_argument(value)?),
        "minSize" => Condition::MinSize(value.as_u64()),
        "maxSize" => Condition::MaxSize(value.as_u64()),
        "hasKeyword" => Condition::HasKeyword(text()),
        "notKeyword" => Condition::NotKeyword(text()),
        "hasAttachment" => Condition::HasAttachment(value.as_bool()),
        "from" => Condition::Address(Field::From, text()),
        "to" => Condition::Address(Field::To, text()),
        "cc" => Condition::Address(Field::Cc, text()),
        "bcc" => Condition::Address(Field::Bcc, text()),
        "subject" => Condition::Subject(text()),
        "body" => Condition::Body(text()),
        "text" => Condition::Text(text()),
        "header" => {
            let bad = || unsupported("header takes [name] or [name, value]");
            let list = value.as_array().ok_or_else(bad)?;
            let name = list.first().and_then(Value::as_str).ok_or_else(bad)?;
            let wanted = list.get(1).and_then(Value::as_str).map(str::to_lowercase);
            Condition::Header(name.to_string(), wanted)
        }
        other => {
            return Err(unsupported(format!(
                "filter condition {other} is not supported"
            )))
        }
    })
}

/// One email while a query looks at it: what was read of it, read at most once.
struct Candidate<'a> {
    email: &'a EmailRecord,
    message: Option<Option<Message>>,
    /// The text and HTML body parts' text, lower-cased, separated by NUL.
    body: Option<String>,
    summary: Option<Option<Arc<Summary>>>,
}

/// A query under way over a snapshot, with its work count and the summaries it parsed.
struct Scan<'a> {
    snapshot: &'a ScanView,
    /// The request's work budget (shared with its other calls).
    work: &'a Work,
    parsed: Parsed,
}

impl<'a> Candidate<'a> {
    fn new(email: &'a EmailRecord) -> Candidate<'a> {
        Candidate {
            email,
            message: None,
            body: None,
            summary: None,
        }
    }

    fn message(&mut self, scan: &mut Scan) -> Result<Option<&Message>, MethodError> {
        if self.message.is_none() {
            // Reading and parsing cost about the message's size: counted before they happen.
            scan.work.add(scan.snapshot.size(self.email))?;
            let read = scan.snapshot.read(self.email).ok();
            self.message = Some(read.map(|bytes| Message::new(bytes.as_ref().clone())));
        }
        Ok(self.message.as_ref().and_then(Option::as_ref))
    }

    fn summary(&mut self, scan: &mut Scan) -> Result<Option<Arc<Summary>>, MethodError> {
        if self.summary.is_none() {
            let summary = match scan.snapshot.known_summary(&self.email.id) {
                Some(known) => Some(known),
                None => {
                    let parsed = self.message(scan)?.map(|m| Arc::new(Summary::of(m)));
                    if let Some(summary) = &parsed {
                        scan.parsed.push((self.email.id.clone(), summary.clone()));
                    }
                    parsed
                }
            };
            self.summary = Some(summary);
        }
        Ok(self.summary.clone().flatten())
    }

    fn body_contains(&mut self, scan: &mut Scan, needle: &str) -> Result<bool, MethodError> {
        if self.body.is_none() {
            let text = match self.message(scan)? {
                Some(message) => {
                    let lists = BodyLists::of(message);
                    let mut text = String::new();
                    for &id in lists.text.iter().chain(&lists.html) {
                        text.push_str(&message.part_text(id).unwrap_or_default().to_lowercase());
                        text.push('\0');
                    }
                    text
                }
                None => String::new(),
            };
            self.body = Some(text);
        }
        let body = self.body.as_deref().unwrap_or("");
        scan.work.add(body.len() as u64)?;
        Ok(body.split('\0').any(|part| part.contains(needle)))
    }

    fn matches(&mut self, scan: &mut Scan, filter: &Filter) -> Result<bool, MethodError> {
        match filter {
            Filter::Operator(operator, inner) => {
                // Evaluated lazily: an OR stops at its first match, an AND at its first miss.
                for filter in inner {
                    let hit = self.matches(scan, filter)?;
                    match (operator, hit) {
                        (Operator::Or, true) => return Ok(true),
                        (Operator::And, false) => return Ok(false),
                        (Operator::Not, true) => return Ok(false),
                        _ => {}
                    }
                }
                Ok(*operator != Operator::Or)
            }
            Filter::All(conditions) => {
                for condition in conditions {
                    if !self.holds(scan, condition)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }
    }

    fn holds(&mut self, scan: &mut Scan, condition: &Condition) -> Result<bool, MethodError> {
        scan.work.add(CONDITION_COST)?;
        let email = self.email;
        let received = i64::try_from(email.entry.internal_date).unwrap_or(i64::MAX);
        let size = scan.snapshot.size(email);
        let has_keyword = |k: &str| email.keywords.iter().any(|e| e.eq_ignore_ascii_case(k));
        Ok(match condition {
            Condition::InMailbox(id) => id.as_deref() == Some(email.mailbox_id.as_str()),
            Condition::InMailboxOtherThan(list) => list
                .as_ref()
                .is_some_and(|list| !list.contains(&email.mailbox_id)),
            Condition::Before(date) => received < *date,
            Condition::After(date) => received >= *date,
            Condition::MinSize(n) => n.is_some_and(|n| size >= n),
            Condition::MaxSize(n) => n.is_some_and(|n| size < n),
            Condition::HasKeyword(k) => has_keyword(k),
            Condition::NotKeyword(k) => !has_keyword(k),
            Condition::HasAttachment(wanted) => {
                let summary = self.summary(scan)?.unwrap_or_default();
                Some(summary.has_attachment) == *wanted
            }
            Condition::Address(field, needle) => {
                let summary = self.summary(scan)?.unwrap_or_default();
                address(&summary, *field).contains(needle.as_str())
            }
            Condition::Subject(needle) => {
                let summary = self.summary(scan)?.unwrap_or_default();
                summary.subject.to_lowercase().contains(needle.as_str())
            }
            Condition::Body(needle) => self.body_contains(scan, needle)?,
            Condition::Text(needle) => {
                let s = self.summary(scan)?.unwrap_or_default();
                [Field::From, Field::To, Field::Cc, Field::Bcc]
                    .iter()
                    .any(|f| address(&s, *f).contains(needle.as_str()))
                    || s.subject.to_lowercase().contains(needle.as_str())
                    || self.body_contains(scan, needle)?
            }
            Condition::Header(name, wanted) => {
                let Some(message) = self.message(scan)? else {
                    return Ok(false);
                };
                let fields = message.header(name);
                let examined: usize = fields.iter().map(|f| f.decoded.len()).sum();
                scan.work.add(examined as u64)?;
                match wanted {
                    None => !fields.is_empty(),
                    Some(wanted) => fields
                        .iter()
                        .any(|f| f.decoded.to_lowercase().contains(wanted.as_str())),
                }
            }
        })
    }
}

fn address(summary: &Summary, field: Field) -> &str {
    match field {
        Field::From => &summary.from,
        Field::To => &summary.to,
        Field::Cc => &summary.cc,
        Field::Bcc => &summary.bcc,
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

/// One sort criterion.
#[derive(Debug, Clone, PartialEq)]
struct Comparator {
    property: String,
    keyword: String,
    ascending: bool,
}

impl Comparator {
    fn needs_summary(&self) -> bool {
        matches!(self.property.as_str(), "from" | "to" | "subject" | "sentAt")
    }
}

/// What sorting compares of one found email, read once.
struct SortKeys<'a> {
    email: &'a EmailRecord,
    size: u64,
    summary: Option<Arc<Summary>>,
    base_subject: String,
}

fn compare(a: &SortKeys, b: &SortKeys, comparator: &Comparator) -> Ordering {
    let summaries = (a.summary.as_deref(), b.summary.as_deref());
    let order = match comparator.property.as_str() {
        "receivedAt" => a
            .email
            .entry
            .internal_date
            .cmp(&b.email.entry.internal_date),
        "size" => a.size.cmp(&b.size),
        "hasKeyword" => {
            let has = |e: &EmailRecord| {
                e.keywords
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(&comparator.keyword))
            };
            has(a.email).cmp(&has(b.email))
        }
        "subject" => a.base_subject.cmp(&b.base_subject),
        property => match summaries {
            (Some(sa), Some(sb)) => match property {
                "from" => sort_form(&sa.from).cmp(sort_form(&sb.from)),
                "to" => sort_form(&sa.to).cmp(sort_form(&sb.to)),
                "sentAt" => sa.sent_at.cmp(&sb.sent_at),
                _ => Ordering::Equal,
            },
            (a, b) => a.is_some().cmp(&b.is_some()),
        },
    };
    if comparator.ascending {
        order
    } else {
        order.reverse()
    }
}

/// Bytes of an address list a sort compares, as IMAP SORT compares subjects: a list of
/// thousands of addresses orders by its start, and comparing it costs no more than that.
const SORT_KEY_BYTES: usize = 1024;

fn sort_form(list: &str) -> &str {
    if list.len() <= SORT_KEY_BYTES {
        return list;
    }
    let mut end = SORT_KEY_BYTES;
    while !list.is_char_boundary(end) {
        end -= 1;
    }
    &list[..end]
}

fn sort_argument(args: &Map<String, Value>) -> Result<Vec<Comparator>, MethodError> {
    let list = match args.get("sort") {
        None | Some(Value::Null) => {
            return Ok(vec![Comparator {
                property: "receivedAt".into(),
                keyword: String::new(),
                ascending: false,
            }])
        }
        Some(Value::Array(list)) => list,
        Some(_) => return Err(MethodError::invalid_arguments("sort must be an array")),
    };
    if list.len() > MAX_SORT {
        return Err(too_large(
            "maxSortComparators",
            format!("a sort lists at most {MAX_SORT} comparators"),
        ));
    }
    list.iter()
        .map(|c| {
            let c = c
                .as_object()
                .ok_or_else(|| MethodError::invalid_arguments("sort holds comparators"))?;
            let property = c.get("property").and_then(Value::as_str).unwrap_or("");
            if !SORTABLE.contains(&property) {
                return Err(MethodError::with(
                    "unsupportedSort",
                    format!("cannot sort by {property:?}"),
                ));
            }
            Ok(Comparator {
                property: property.to_string(),
                keyword: c
                    .get("keyword")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                ascending: c
                    .get("isAscending")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            })
        })
        .collect()
}

/// What a query asks, read and checked before any email is looked at.
struct Plan {
    filter: Option<Filter>,
    sort: Vec<Comparator>,
    collapse: bool,
}

impl Plan {
    fn read(args: &Map<String, Value>) -> Result<Plan, MethodError> {
        let filter = match args.get("filter") {
            None | Some(Value::Null) => None,
            Some(filter) => Some(compile(filter, 0, &mut 0)?),
        };
        Ok(Plan {
            filter,
            sort: sort_argument(args)?,
            collapse: args.get("collapseThreads").and_then(Value::as_bool) == Some(true),
        })
    }
}

/// Summaries a scan parsed, to keep in the account afterwards.
type Parsed = Vec<(String, Arc<Summary>)>;

/// The ids the query finds, in order; the summaries it parsed on the way.
fn search(view: &ScanView, plan: &Plan, work: &Work) -> (Result<Vec<String>, MethodError>, Parsed) {
    let mut scan = Scan {
        snapshot: view,
        work,
        parsed: Vec::new(),
    };
    let found = ordered(&mut scan, plan);
    (found, scan.parsed)
}

fn ordered(scan: &mut Scan, plan: &Plan) -> Result<Vec<String>, MethodError> {
    let snapshot = scan.snapshot;
    let mut found = Vec::new();
    for email in &snapshot.emails {
        scan.work.check_time()?;
        let mut candidate = Candidate::new(email);
        let keep = match &plan.filter {
            None => true,
            Some(filter) => candidate.matches(scan, filter)?,
        };
        if keep {
            found.push(candidate);
        }
    }
    let wants_summary = plan.collapse || plan.sort.iter().any(Comparator::needs_summary);
    let mut keyed = Vec::with_capacity(found.len());
    for mut candidate in found {
        scan.work.check_time()?;
        let summary = if wants_summary {
            candidate.summary(scan)?
        } else {
            None
        };
        keyed.push(SortKeys {
            email: candidate.email,
            size: snapshot.size(candidate.email),
            base_subject: summary
                .as_ref()
                .map(|s| s.base_subject())
                .unwrap_or_default(),
            summary,
        });
    }
    scan.work.add(keyed.len() as u64 * CONDITION_COST)?;
    keyed.sort_by(|x, y| {
        plan.sort
            .iter()
            .map(|comparator| compare(x, y, comparator))
            .find(|o| *o != Ordering::Equal)
            .unwrap_or_else(|| x.email.id.cmp(&y.email.id))
    });
    if plan.collapse {
        let mut threads = HashSet::new();
        keyed.retain(|k| threads.insert(thread_of(&k.email.id, k.summary.as_deref())));
    }
    Ok(keyed.into_iter().map(|k| k.email.id.clone()).collect())
}

/// Email/query: the plan is checked, the account snapshotted under its lock, the search run on
/// the blocking pool with the lock released, and the summaries it parsed kept afterwards.
pub async fn run(
    account: &tokio::sync::Mutex<Account>,
    call: &Call<'_>,
) -> Result<Value, MethodError> {
    let args = &call.args;
    let plan = Plan::read(args)?;
    let window_args = Window::read(args)?;
    let snapshot = account.lock().await.scan_view();
    let (found, parsed) = blocking::run(|| search(&snapshot, &plan, &call.budget.work));
    if !parsed.is_empty() {
        account.lock().await.adopt_summaries(parsed);
    }
    let ids = found?;
    let (position, page) = window(&ids, &window_args)?;
    let mut out = json!({
        "accountId": call.account_id,
        "queryState": snapshot.email_state,
        "canCalculateChanges": false,
        "position": position,
        "ids": page,
    });
    if args.get("calculateTotal").and_then(Value::as_bool) == Some(true) {
        out["total"] = ids.len().into();
    }
    if let Some(limit) = window_args.reported_limit() {
        out["limit"] = limit.into();
    } else if ids.len().saturating_sub(position) > MAX_LIMIT {
        // No limit asked, but the server's cut the answer: the RFC wants it said.
        out["limit"] = MAX_LIMIT.into();
    }
    Ok(out)
}

/// The page a query asks for: `position` or `anchor` + `anchorOffset`, and `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    anchor: Option<String>,
    anchor_offset: i64,
    position: i64,
    /// As asked (`None`: no limit given).
    asked: Option<u64>,
}

impl Window {
    pub fn read(args: &Map<String, Value>) -> Result<Window, MethodError> {
        let integer = |name: &str| match args.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| MethodError::invalid_arguments(format!("{name} is an integer"))),
        };
        let asked = match args.get("limit") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                MethodError::invalid_arguments("limit must be a non-negative integer")
            })?),
        };
        Ok(Window {
            anchor: args
                .get("anchor")
                .and_then(Value::as_str)
                .map(str::to_string),
            anchor_offset: integer("anchorOffset")?,
            position: integer("position")?,
            asked,
        })
    }

    /// The number of ids answered at most: as asked, never over [`MAX_LIMIT`].
    fn limit(&self) -> usize {
        self.asked
            .map_or(MAX_LIMIT, |n| usize::try_from(n).unwrap_or(usize::MAX))
            .min(MAX_LIMIT)
    }

    /// The `limit` the response names: as asked, or the server's cap when that is lower.
    fn reported_limit(&self) -> Option<usize> {
        self.asked
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX).min(MAX_LIMIT))
    }
}

/// The page of `ids` the window takes; positions past either end are clamped.
pub fn window(ids: &[String], window: &Window) -> Result<(usize, Vec<String>), MethodError> {
    let total = i64::try_from(ids.len()).unwrap_or(i64::MAX);
    let start = if let Some(anchor) = &window.anchor {
        let at = ids
            .iter()
            .position(|id| id == anchor)
            .ok_or_else(|| MethodError::new("anchorNotFound"))?;
        i64::try_from(at)
            .unwrap_or(i64::MAX)
            .saturating_add(window.anchor_offset)
            .max(0)
    } else if window.position < 0 {
        total.saturating_add(window.position).max(0)
    } else {
        window.position
    };
    let start = usize::try_from(start.min(total)).unwrap_or(0);
    Ok((
        start,
        ids[start..].iter().take(window.limit()).cloned().collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn page(ids: &[String], v: Value) -> Result<(usize, Vec<String>), MethodError> {
        window(ids, &Window::read(&args(v))?)
    }

    #[test]
    fn windows_take_position_anchor_and_limit() {
        let ids: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            page(&ids, json!({"position": 1, "limit": 2})).ok(),
            Some((1, vec!["b".into(), "c".into()]))
        );
        assert_eq!(
            page(&ids, json!({"position": -1})).ok(),
            Some((3, vec!["d".into()]))
        );
        assert_eq!(
            page(&ids, json!({"anchor": "c", "anchorOffset": -1, "limit": 1})).ok(),
            Some((1, vec!["b".into()]))
        );
        assert_eq!(
            page(&ids, json!({"anchor": "zz"})).err().map(|e| e.kind),
            Some("anchorNotFound")
        );
    }

    #[test]
    fn extreme_positions_and_offsets_are_clamped_not_overflowed() {
        let ids: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            page(&ids, json!({"position": i64::MIN})).ok(),
            Some((0, ids.clone()))
        );
        assert_eq!(
            page(&ids, json!({"position": i64::MAX})).ok(),
            Some((2, vec![]))
        );
        assert_eq!(
            page(&ids, json!({"anchor": "b", "anchorOffset": i64::MAX})).ok(),
            Some((2, vec![]))
        );
        assert_eq!(
            page(&ids, json!({"anchor": "b", "anchorOffset": i64::MIN})).ok(),
            Some((0, ids.clone()))
        );
        let capped = Window::read(&args(json!({"limit": u64::MAX}))).expect("reads");
        assert_eq!(capped.reported_limit(), Some(MAX_LIMIT));
    }

    #[test]
    fn filters_are_bounded_in_size_and_depth_before_they_run() {
        let body =
            |n: usize| json!({"operator": "OR", "conditions": vec![json!({"body": "x"}); n]});
        assert!(compile(&body(100), 0, &mut 0).is_ok());
        let error = compile(&body(10_000), 0, &mut 0).expect_err("too many");
        assert_eq!(
            (error.kind, error.limit),
            ("requestTooLarge", Some("maxFilterConditions"))
        );
        let mut deep = json!({"subject": "x"});
        for _ in 0..20 {
            deep = json!({"operator": "NOT", "conditions": [deep]});
        }
        let error = compile(&deep, 0, &mut 0).expect_err("too deep");
        assert_eq!(error.limit, Some("maxFilterDepth"));
        let error = compile(&json!({"operator": "XOR", "conditions": []}), 0, &mut 0)
            .expect_err("bad operator");
        assert_eq!(error.kind, "unsupportedFilter");
        let error = compile(&json!({"nonsense": 1}), 0, &mut 0).expect_err("unknown");
        assert_eq!(error.kind, "unsupportedFilter");
        let sort = args(json!({"sort": vec![json!({"property": "size"}); 20]}));
        assert_eq!(
            sort_argument(&sort).err().and_then(|e| e.limit),
            Some("maxSortComparators")
        );
    }

    #[test]
    fn operators_keep_their_meaning_when_evaluated_lazily() {
        let email = EmailRecord {
            id: "M1".into(),
            mailbox_id: "F1".into(),
            entry: crate::store::mailbox::MailEntry {
                uid: 1,
                key: "1.M1.host".into(),
                in_new: false,
                flags: crate::store::mailbox::Flags::parse("S"),
                size: 10,
                internal_date: 0,
                recent: false,
                modseq: 1,
            },
            keywords: vec!["$seen".into()],
        };
        let seen = json!({"hasKeyword": "$seen"});
        let flagged = json!({"hasKeyword": "$flagged"});
        let cases = [
            ("AND", vec![seen.clone(), flagged.clone()], false),
            ("OR", vec![flagged.clone(), seen.clone()], true),
            ("NOT", vec![flagged.clone()], true),
            ("NOT", vec![flagged.clone(), seen.clone()], false),
            ("AND", vec![], true),
            ("OR", vec![], false),
        ];
        let snapshot = ScanView::empty();
        for (operator, conditions, expected) in cases {
            let filter = compile(
                &json!({"operator": operator, "conditions": conditions}),
                0,
                &mut 0,
            )
            .expect("compiles");
            let mut scan = Scan {
                snapshot: &snapshot,
                work: &Work::new(1 << 30, std::time::Duration::from_secs(20)),
                parsed: Vec::new(),
            };
            let hit = Candidate::new(&email).matches(&mut scan, &filter);
            assert_eq!(hit.ok(), Some(expected), "{operator}");
        }
    }
}
