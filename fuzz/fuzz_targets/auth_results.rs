//! Authentication-Results: removing forged fields (those claiming our authserv-id) keeps every
//! other field and the body byte for byte, and a field written from hostile values stays one
//! field, each line break followed by a tab.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::sender_auth::{stamp, AuthResults, Outcome, SpfCheck, SpfIdentity};
use mailgate::message::header::HeaderBlock;

const ID: &str = "mx.example.test";

/// The text of every field not named Authentication-Results, in order.
fn other_fields(raw: &[u8]) -> Vec<Vec<u8>> {
    let block = HeaderBlock::parse(raw, 0);
    (0..block.fields.len())
        .filter(|&i| !block.name(raw, i).eq_ignore_ascii_case("Authentication-Results"))
        .map(|i| raw[block.fields[i].whole.clone()].to_vec())
        .collect()
}

fuzz_target!(|raw: &[u8]| {
    let field = "Authentication-Results: mx.example.test; none\r\n";
    let out = stamp(raw, field, ID);
    assert!(out.starts_with(field.as_bytes()));
    let rest = &out[field.len()..];
    let block = HeaderBlock::parse(raw, 0);
    assert!(rest.ends_with(&raw[block.fields_end..]), "the body is untouched");
    assert_eq!(other_fields(rest), other_fields(raw), "other fields are kept");
    let kept = HeaderBlock::parse(rest, 0);
    for (i, f) in kept.fields.iter().enumerate() {
        if kept.name(rest, i).eq_ignore_ascii_case("Authentication-Results") {
            let value = String::from_utf8_lossy(&rest[f.value.clone()]);
            assert!(!value.trim_start().starts_with(&format!("{ID};")), "forged field kept");
        }
    }

    let text = String::from_utf8_lossy(raw).into_owned();
    let results = AuthResults {
        authserv_id: ID.into(),
        client_ip: "192.0.2.1".parse().expect("ip"),
        spf: vec![SpfCheck {
            identity: SpfIdentity::MailFrom,
            outcome: Outcome::Fail,
            domain: text.clone(),
            subject: text.clone(),
            reason: Some(text),
        }],
        dkim: None,
        dmarc: None,
        arc: None,
    };
    let written = results.header_field();
    let body = written.strip_suffix("\r\n").expect("ends with CRLF");
    assert_eq!(body.matches('\n').count(), body.matches("\r\n").count(), "{written:?}");
    for (i, _) in body.match_indices("\r\n") {
        assert_eq!(body.as_bytes().get(i + 2), Some(&b'\t'), "{written:?}");
    }
});
