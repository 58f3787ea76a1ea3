//! The method-level error of JMAP (RFC 8620 §3.6.2), apart from the request processing
//! that gives it so that budgets and methods can name it without depending on the API.

use serde_json::{json, Value};

/// A method-level error (RFC 8620 §3.6.2): the call gets an `error` response, the request
/// goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodError {
    pub kind: &'static str,
    pub description: Option<String>,
    /// For an error about a limit (`requestTooLarge`): the name of the limit, as the
    /// request-level `limit` problem names it.
    pub limit: Option<&'static str>,
}

impl MethodError {
    pub fn new(kind: &'static str) -> MethodError {
        MethodError {
            kind,
            description: None,
            limit: None,
        }
    }

    pub fn with(kind: &'static str, description: impl Into<String>) -> MethodError {
        MethodError {
            kind,
            description: Some(description.into()),
            limit: None,
        }
    }

    /// An error about the limit named `limit`.
    pub fn limit(
        kind: &'static str,
        limit: &'static str,
        description: impl Into<String>,
    ) -> MethodError {
        MethodError {
            limit: Some(limit),
            ..MethodError::with(kind, description)
        }
    }

    pub fn invalid_arguments(description: impl Into<String>) -> MethodError {
        MethodError::with("invalidArguments", description)
    }

    pub fn server_fail(description: impl Into<String>) -> MethodError {
        MethodError::with("serverFail", description)
    }

    pub fn to_value(&self) -> Value {
        let mut body = json!({ "type": self.kind });
        if let (Some(description), Some(object)) = (&self.description, body.as_object_mut()) {
            object.insert("description".into(), description.clone().into());
        }
        if let (Some(limit), Some(object)) = (self.limit, body.as_object_mut()) {
            object.insert("limit".into(), limit.into());
        }
        body
    }
}
