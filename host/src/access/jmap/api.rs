//! The JMAP request envelope (RFC 8620 §3): the request object and its method calls, result
//! references between calls, request-level problems and method-level errors. Nothing here
//! knows about mail.

use serde_json::{json, Map, Value};

use super::budget::{json_size_within, Budget};

pub const CORE: &str = "urn:ietf:params:jmap:core";
pub const MAIL: &str = "urn:ietf:params:jmap:mail";
pub const SUBMISSION: &str = "urn:ietf:params:jmap:submission";
/// Every capability a request may name in `using`.
pub const CAPABILITIES: [&str; 3] = [CORE, MAIL, SUBMISSION];

/// The limits announced in the session resource and enforced on every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_size_request: usize,
    pub max_calls_in_request: usize,
    pub max_objects_in_get: usize,
    pub max_objects_in_set: usize,
    pub max_size_upload: usize,
    pub max_concurrent_upload: usize,
    pub max_concurrent_requests: usize,
}

impl Limits {
    /// The `urn:ietf:params:jmap:core` capability object.
    pub fn capability(&self) -> Value {
        json!({
            "maxSizeUpload": self.max_size_upload,
            "maxConcurrentUpload": self.max_concurrent_upload,
            "maxSizeRequest": self.max_size_request,
            "maxConcurrentRequests": self.max_concurrent_requests,
            "maxCallsInRequest": self.max_calls_in_request,
            "maxObjectsInGet": self.max_objects_in_get,
            "maxObjectsInSet": self.max_objects_in_set,
            "collationAlgorithms": ["i;ascii-casemap", "i;unicode-casemap"],
        })
    }
}

/// A request-level problem (RFC 8620 §3.6.1): the whole request is refused with HTTP 400 (or
/// 503 when the store is unavailable) and an `application/problem+json` body (RFC 7807).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: &'static str,
    pub detail: String,
    /// For `limit`: the name of the limit that was exceeded.
    pub limit: Option<&'static str>,
    /// The HTTP status.
    pub status: u16,
}

impl Problem {
    fn new(kind: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            detail: detail.into(),
            limit: None,
            status: 400,
        }
    }

    /// `serverUnavailable` with 503: the user's mail could not be read (a Maildir unreadable,
    /// a disk gone). A store outage is temporary: the client is told to come back, never that
    /// its request or account is wrong.
    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Problem {
            status: 503,
            ..Problem::new("serverUnavailable", detail)
        }
    }

    /// `notJSON`: the request's content type is not `application/json`, or its body not JSON.
    pub fn not_json(detail: impl Into<String>) -> Problem {
        Problem::new("notJSON", detail)
    }

    pub fn limit(limit: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            limit: Some(limit),
            ..Problem::new("limit", detail)
        }
    }

    /// `limit` with HTTP 429 (RFC 6585): the user holds `limits.max-connections-per-user`
    /// JMAP connections (or event sources) already; a connection that closes makes room.
    pub fn too_many_for_user(limit: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status: 429,
            ..Problem::limit(limit, detail)
        }
    }

    pub fn body(&self) -> Value {
        let mut body = json!({
            "type": format!("urn:ietf:params:jmap:error:{}", self.kind),
            "status": self.status,
            "detail": self.detail,
        });
        if let (Some(limit), Some(object)) = (self.limit, body.as_object_mut()) {
            object.insert("limit".into(), limit.into());
        }
        body
    }
}

/// One method call: `[name, arguments, call id]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub arguments: Map<String, Value>,
    pub id: String,
}

/// A parsed request object.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub using: Vec<String>,
    pub calls: Vec<Call>,
    /// Creation ids the client already knows (`createdIds`), echoed back with ours added.
    pub created_ids: Option<Map<String, Value>>,
}

/// Parses a request body; its size was bounded by the caller.
pub fn parse_request(body: &[u8], limits: &Limits) -> Result<Request, Problem> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Problem::new("notJSON", format!("the body is not JSON: {e}")))?;
    let not_request = |why: &str| Problem::new("notRequest", why.to_string());
    let object = value
        .as_object()
        .ok_or_else(|| not_request("the request is not a JSON object"))?;
    let using = object
        .get("using")
        .and_then(Value::as_array)
        .ok_or_else(|| not_request("\"using\" must be an array of capabilities"))?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| not_request("\"using\" must hold strings"))?;
    if let Some(unknown) = using.iter().find(|u| !CAPABILITIES.contains(&u.as_str())) {
        return Err(Problem::new(
            "unknownCapability",
            format!("the server does not support {unknown}"),
        ));
    }
    let calls = object
        .get("methodCalls")
        .and_then(Value::as_array)
        .ok_or_else(|| not_request("\"methodCalls\" must be an array"))?;
    if calls.len() > limits.max_calls_in_request {
        return Err(Problem::limit(
            "maxCallsInRequest",
            format!(
                "{} method calls; at most {} in one request",
                calls.len(),
                limits.max_calls_in_request
            ),
        ));
    }
    let calls = calls
        .iter()
        .map(|call| match call.as_array().map(Vec::as_slice) {
            Some([Value::String(name), Value::Object(arguments), Value::String(id)]) => Ok(Call {
                name: name.clone(),
                arguments: arguments.clone(),
                id: id.clone(),
            }),
            _ => Err(not_request(
                "each method call must be [name, arguments object, call id]",
            )),
        })
        .collect::<Result<Vec<Call>, Problem>>()?;
    let created_ids = match object.get("createdIds") {
        None => None,
        Some(Value::Object(map)) => Some(map.clone()),
        Some(_) => return Err(not_request("\"createdIds\" must be an object")),
    };
    Ok(Request {
        using,
        calls,
        created_ids,
    })
}

pub use super::error::MethodError;

/// A response already given in this request: `(name, arguments, call id)`.
pub type Response = (String, Value, String);

/// Replaces every `#name` argument by what its result reference points at (RFC 8620 §3.7).
/// References inside a `filter` (its conditions, at any depth of operators) are resolved too,
/// as Cyrus and Fastmail do and clients such as jmapc rely on. Each resolved value is counted
/// against the request's `budget` before it is copied: references that fan out (a call
/// referring twice to one that referred twice to another…) run out of budget, not memory.
pub fn resolve_references(
    arguments: &mut Map<String, Value>,
    responses: &[Response],
    budget: &Budget,
) -> Result<(), MethodError> {
    resolve_here(arguments, responses, budget)?;
    if let Some(filter) = arguments.get_mut("filter") {
        resolve_in_filter(filter, responses, budget)?;
    }
    Ok(())
}

/// A filter's conditions; the depth is bounded by the JSON parser's nesting limit (128).
fn resolve_in_filter(
    filter: &mut Value,
    responses: &[Response],
    budget: &Budget,
) -> Result<(), MethodError> {
    let Some(object) = filter.as_object_mut() else {
        return Ok(());
    };
    resolve_here(object, responses, budget)?;
    if let Some(Value::Array(conditions)) = object.get_mut("conditions") {
        for condition in conditions {
            resolve_in_filter(condition, responses, budget)?;
        }
    }
    Ok(())
}

fn resolve_here(
    arguments: &mut Map<String, Value>,
    responses: &[Response],
    budget: &Budget,
) -> Result<(), MethodError> {
    let referring: Vec<String> = arguments
        .keys()
        .filter(|k| k.starts_with('#'))
        .cloned()
        .collect();
    for key in referring {
        let plain = &key[1..];
        if arguments.contains_key(plain) {
            return Err(MethodError::invalid_arguments(format!(
                "both {plain} and {key} are given"
            )));
        }
        let reference = arguments.remove(&key).unwrap_or(Value::Null);
        let found = follow(&reference, responses).ok_or_else(|| {
            MethodError::with(
                "invalidResultReference",
                format!("{key} does not resolve against an earlier response"),
            )
        })?;
        budget.take(found.size_within(budget.left()).unwrap_or(u64::MAX))?;
        arguments.insert(plain.to_string(), found.to_value());
    }
    Ok(())
}

/// What a pointer found, still in place in the response it points into.
#[derive(Debug, PartialEq)]
pub enum Found<'a> {
    One(&'a Value),
    /// The items a `*` gathered (arrays among them flattened into the list).
    Many(Vec<&'a Value>),
}

impl Found<'_> {
    /// The serialised size of the value it stands for, `None` when over `cap`.
    fn size_within(&self, cap: u64) -> Option<u64> {
        match self {
            Found::One(value) => json_size_within(value, cap),
            Found::Many(items) => {
                let mut size = 32;
                for item in items {
                    let left = cap.checked_sub(size)?;
                    size = size.checked_add(json_size_within(item, left)?)?;
                }
                (size <= cap).then_some(size)
            }
        }
    }

    /// The value, copied.
    pub fn to_value(&self) -> Value {
        match self {
            Found::One(value) => (*value).clone(),
            Found::Many(items) => Value::Array(items.iter().map(|v| (*v).clone()).collect()),
        }
    }
}

/// What a `ResultReference` object names, if it names something.
fn follow<'a>(reference: &Value, responses: &'a [Response]) -> Option<Found<'a>> {
    let result_of = reference.get("resultOf")?.as_str()?;
    let name = reference.get("name")?.as_str()?;
    let path = reference.get("path")?.as_str()?;
    let (found, arguments, _) = responses.iter().find(|(_, _, id)| id == result_of)?;
    if found != name {
        return None;
    }
    locate(arguments, path)
}

/// Evaluates a JSON Pointer (RFC 6901) with JMAP's `*`: over an array, the rest of the path is
/// applied to every item and array results are flattened into one array.
pub fn pointer(value: &Value, path: &str) -> Option<Value> {
    locate(value, path).map(|found| found.to_value())
}

/// [`pointer`] without copying: where in `value` the path leads.
pub fn locate<'a>(value: &'a Value, path: &str) -> Option<Found<'a>> {
    if path.is_empty() {
        return Some(Found::One(value));
    }
    let rest = path.strip_prefix('/')?;
    let (token, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let token = token.replace("~1", "/").replace("~0", "~");
    match value {
        Value::Array(items) if token == "*" => {
            let mut out = Vec::new();
            for item in items {
                match locate(item, tail)? {
                    Found::One(Value::Array(inner)) => out.extend(inner.iter()),
                    Found::One(other) => out.push(other),
                    Found::Many(inner) => out.extend(inner),
                }
            }
            Some(Found::Many(out))
        }
        Value::Array(items) => locate(items.get(token.parse::<usize>().ok()?)?, tail),
        Value::Object(map) => locate(map.get(&token)?, tail),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_size_request: 1 << 20,
            max_calls_in_request: 4,
            max_objects_in_get: 10,
            max_objects_in_set: 10,
            max_size_upload: 1 << 20,
            max_concurrent_upload: 2,
            max_concurrent_requests: 2,
        }
    }

    #[test]
    fn requests_are_parsed_and_bad_ones_get_the_rfc_problem_types() {
        let ok = br#"{"using":["urn:ietf:params:jmap:core"],"methodCalls":[["Core/echo",{"a":1},"c1"]]}"#;
        let request = parse_request(ok, &limits()).expect("parses");
        assert_eq!(request.calls[0].name, "Core/echo");
        assert_eq!(request.calls[0].id, "c1");
        let kind = |body: &[u8]| parse_request(body, &limits()).err().map(|p| p.kind);
        assert_eq!(kind(b"{not json"), Some("notJSON"));
        assert_eq!(kind(b"[1,2]"), Some("notRequest"));
        assert_eq!(
            kind(br#"{"using":[],"methodCalls":[["a",{},1]]}"#),
            Some("notRequest")
        );
        assert_eq!(
            kind(br#"{"using":["urn:example:x"],"methodCalls":[]}"#),
            Some("unknownCapability")
        );
        let many = format!(
            r#"{{"using":[],"methodCalls":[{}]}}"#,
            [r#"["Core/echo",{},"c"]"#; 5].join(",")
        );
        let problem = parse_request(many.as_bytes(), &limits()).expect_err("too many");
        assert_eq!(
            (problem.kind, problem.limit),
            ("limit", Some("maxCallsInRequest"))
        );
        assert_eq!(problem.body()["limit"], "maxCallsInRequest");
    }

    #[test]
    fn pointers_map_stars_over_arrays_and_flatten() {
        let value = json!({"list": [{"ids": ["a", "b"]}, {"ids": ["c"]}], "ids": ["x"]});
        assert_eq!(pointer(&value, "/ids"), Some(json!(["x"])));
        assert_eq!(pointer(&value, "/list/*/ids"), Some(json!(["a", "b", "c"])));
        assert_eq!(pointer(&value, "/list/1/ids/0"), Some(json!("c")));
        assert_eq!(pointer(&value, "/missing"), None);
        assert_eq!(pointer(&json!({"a/b": 1}), "/a~1b"), Some(json!(1)));
    }

    #[test]
    fn references_resolve_against_earlier_responses_only_by_id_and_name() {
        let responses = vec![(
            "Email/query".to_string(),
            json!({"ids": ["m1", "m2"]}),
            "q".to_string(),
        )];
        let reference = |name: &str, of: &str| {
            let mut args = Map::new();
            args.insert(
                "#ids".into(),
                json!({"resultOf": of, "name": name, "path": "/ids"}),
            );
            args
        };
        let mut args = reference("Email/query", "q");
        resolve_references(&mut args, &responses, &Budget::new(1 << 20)).expect("resolves");
        assert_eq!(args.get("ids"), Some(&json!(["m1", "m2"])));
        for mut bad in [reference("Email/get", "q"), reference("Email/query", "zz")] {
            let error = resolve_references(&mut bad, &responses, &Budget::new(1 << 20))
                .expect_err("bad reference");
            assert_eq!(error.kind, "invalidResultReference");
        }
        let mut nested = Map::new();
        nested.insert(
            "filter".into(),
            json!({"operator": "AND", "conditions": [{"#inMailbox": {"resultOf": "q", "name": "Email/query", "path": "/ids/0"}}]}),
        );
        resolve_references(&mut nested, &responses, &Budget::new(1 << 20))
            .expect("filter references resolve");
        assert_eq!(nested["filter"]["conditions"][0]["inMailbox"], "m1");
        let mut both = reference("Email/query", "q");
        both.insert("ids".into(), json!([]));
        let error = resolve_references(&mut both, &responses, &Budget::new(1 << 20))
            .expect_err("both given");
        assert_eq!(error.kind, "invalidArguments");
    }

    #[test]
    fn references_that_fan_out_run_out_of_budget_before_they_are_copied() {
        // Each call refers twice to the one before: the values double with every call.
        let budget = Budget::new(64 << 10);
        let mut responses: Vec<Response> = vec![(
            "Core/echo".into(),
            json!({"x": "y".repeat(100)}),
            "c0".into(),
        )];
        let mut refused = None;
        for n in 1..40 {
            let previous = format!("c{}", n - 1);
            let mut args = Map::new();
            for key in ["#a", "#b"] {
                args.insert(
                    key.into(),
                    json!({"resultOf": previous, "name": "Core/echo", "path": ""}),
                );
            }
            match resolve_references(&mut args, &responses, &budget) {
                Ok(()) => {
                    responses.push(("Core/echo".into(), Value::Object(args), format!("c{n}")))
                }
                Err(error) => {
                    refused = Some((n, error));
                    break;
                }
            }
        }
        let (n, error) = refused.expect("the budget stops the doubling");
        assert!(n < 12, "stopped only at call {n}");
        assert_eq!(
            (error.kind, error.limit),
            ("requestTooLarge", Some("maxSizeResponse"))
        );
        assert_eq!(error.to_value()["limit"], "maxSizeResponse");
    }

    #[test]
    fn star_pointers_count_what_they_gather() {
        let value = json!({"list": [{"ids": ["a", "b"]}, {"ids": ["c"]}]});
        let found = locate(&value, "/list/*/ids").expect("found");
        assert_eq!(found.to_value(), json!(["a", "b", "c"]));
        assert!(found.size_within(1000).is_some());
        assert_eq!(found.size_within(5), None);
    }
}
