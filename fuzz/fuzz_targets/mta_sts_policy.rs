//! MTA-STS policies (RFC 8461 §3.2) and the HTTP answers they come in: parsing never panics,
//! a parsed policy holds its bounds and parses again to itself from its own fields, and a
//! taken answer body is within the size bound.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::delivery::relay::mta_sts::fetch::{parse_response, MAX_BODY};
use mailgate::delivery::relay::mta_sts::policy::{Mode, Policy, MAX_AGE_LIMIT};

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = parse_response(data) {
        assert!(body.len() <= MAX_BODY);
    }
    let text = String::from_utf8_lossy(data);
    let Ok(policy) = Policy::parse(&text) else {
        return;
    };
    assert!(policy.max_age <= MAX_AGE_LIMIT);
    assert!(policy.mode == Mode::None || !policy.mx.is_empty());
    let mut again = format!(
        "version: STSv1\nmode: {}\nmax_age: {}\n",
        policy.mode.as_str(),
        policy.max_age
    );
    for pattern in &policy.mx {
        match pattern.strip_prefix("*.") {
            Some(parent) => assert!(policy.allows(&format!("x.{parent}"))),
            None => assert!(policy.allows(pattern)),
        }
        again.push_str(&format!("mx: {pattern}\n"));
    }
    assert_eq!(Policy::parse(&again), Ok(policy));
});
