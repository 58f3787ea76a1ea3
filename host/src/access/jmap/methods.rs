//! What every method handler gets ([`Call`]) and the argument readers they share: ids,
//! properties, `/changes` arguments.

use serde_json::{Map, Value};

use super::api::{Limits, MethodError};
use super::budget::Budget;
use super::changes::Tracker;

/// The identity every account has: its own address (Identity/get, EmailSubmission).
pub const IDENTITY: &str = "I0";

/// One method call as its handler sees it.
pub struct Call<'a> {
    pub args: Map<String, Value>,
    pub account_id: &'a str,
    pub limits: &'a Limits,
    /// The request's budget of materialised bytes (see `budget`).
    pub budget: &'a Budget,
}

/// A list of ids under `name`, or none when absent/null.
pub fn id_list(args: &Map<String, Value>, name: &str) -> Result<Vec<String>, MethodError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| {
                id.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| MethodError::invalid_arguments(format!("{name} holds ids")))
            })
            .collect(),
        Some(_) => Err(MethodError::invalid_arguments(format!(
            "{name} must be an array of ids"
        ))),
    }
}

/// `ids` of a `/get`: `None` for all; more than `max` is `requestTooLarge`.
pub fn ids_argument(
    args: &Map<String, Value>,
    max: usize,
) -> Result<Option<Vec<String>>, MethodError> {
    if matches!(args.get("ids"), None | Some(Value::Null)) {
        return Ok(None);
    }
    let count = args
        .get("ids")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if count > max {
        return Err(MethodError::limit(
            "requestTooLarge",
            "maxObjectsInGet",
            format!("{count} ids; at most {max} in one call"),
        ));
    }
    id_list(args, "ids").map(Some)
}

/// A list of property names under `name`, `None` when absent/null.
pub fn properties_argument(
    args: &Map<String, Value>,
    name: &str,
) -> Result<Option<Vec<String>>, MethodError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => id_list(args, name).map(Some),
    }
}

/// `sinceState` and `maxChanges` of a `/changes` call.
pub fn changes_arguments(
    args: &Map<String, Value>,
) -> Result<(String, Option<usize>), MethodError> {
    let since = args
        .get("sinceState")
        .and_then(Value::as_str)
        .ok_or_else(|| MethodError::invalid_arguments("sinceState is required"))?
        .to_string();
    let max = match args.get("maxChanges") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| *n > 0)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    MethodError::invalid_arguments("maxChanges must be a positive integer")
                })?,
        ),
    };
    Ok((since, max))
}

/// Ids one `/changes` answer lists at most, whatever `maxChanges` asks (the RFC lets the
/// server return fewer, with `hasMoreChanges`).
pub const MAX_CHANGES: usize = 10_000;

/// The answer to a `/changes` call on one object type's states.
pub fn changes(tracker: &Tracker, call: &Call) -> Result<Map<String, Value>, MethodError> {
    let (since, max) = changes_arguments(&call.args)?;
    let max = max.map_or(MAX_CHANGES, |m| m.min(MAX_CHANGES));
    let found = tracker.since(&since, Some(max))?;
    // The ids are copied into the answer: counted against the request's budgets first (a
    // first step may be larger than `max`; see `Tracker::since`).
    let ids = [
        &found.changes.created,
        &found.changes.updated,
        &found.changes.destroyed,
    ];
    let bytes: u64 = ids
        .iter()
        .flat_map(|list| list.iter())
        .map(|id| id.len() as u64 + 32)
        .sum();
    call.budget.work.add(bytes)?;
    super::budget::Meter::new(call.budget).take(bytes)?;
    let mut out = Map::new();
    out.insert("accountId".into(), call.account_id.into());
    out.insert("oldState".into(), since.into());
    out.insert("newState".into(), found.new_state.into());
    out.insert("hasMoreChanges".into(), found.has_more.into());
    out.insert("created".into(), found.changes.created.into());
    out.insert("updated".into(), found.changes.updated.into());
    out.insert("destroyed".into(), found.changes.destroyed.into());
    Ok(out)
}
