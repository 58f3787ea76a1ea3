//! JMAP request bodies from a client: parsing never panics, result references resolve or fail
//! with the RFC's error (never panic, however the pointer is formed), and event-source query
//! strings always give options.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::access::jmap::api::{parse_request, resolve_references, Limits, Response};
use mailgate::access::jmap::push::Options;
use serde_json::json;

fuzz_target!(|raw: &[u8]| {
    let limits = Limits {
        max_size_request: 1 << 20,
        max_calls_in_request: 32,
        max_objects_in_get: 1000,
        max_objects_in_set: 500,
        max_size_upload: 1 << 20,
        max_concurrent_upload: 4,
        max_concurrent_requests: 4,
    };
    let earlier: Vec<Response> = vec![
        (
            "Email/query".into(),
            json!({"ids": ["a", "b"], "list": [{"id": "x", "threadId": "t"}]}),
            "0".into(),
        ),
        ("Mailbox/get".into(), json!({"list": [[1, [2]], {}]}), "1".into()),
    ];
    if let Ok(request) = parse_request(raw, &limits) {
        assert!(request.calls.len() <= limits.max_calls_in_request);
        // One request's budget, as the server gives it: fan-out runs out of it, not memory.
        let budget = mailgate::access::jmap::budget::Budget::new(16 << 20);
        for call in request.calls {
            let mut arguments = call.arguments;
            let _ = resolve_references(&mut arguments, &earlier, &budget);
        }
    }
    let _ = Options::parse(&String::from_utf8_lossy(raw));
});
