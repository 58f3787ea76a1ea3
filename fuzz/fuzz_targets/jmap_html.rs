//! The webmail's HTML path: the one-pass scanner that bounds a message's HTML (size, depth,
//! elements) before html5ever sees it, and the sanitiser after it. Any HTML is measured
//! without panicking; the document made of it is the sanitised HTML (at most `MAX_OUTPUT`)
//! or the escaped text (at most 6 bytes for each byte of the message), in a fixed frame.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::access::jmap::{html, html_scan};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = html_scan::within_bounds(&text);
    let mut raw = b"Content-Type: text/html; charset=utf-8\r\n\r\n".to_vec();
    raw.extend_from_slice(data);
    let document = html::document_of(&raw);
    let bound = html::MAX_OUTPUT.max(data.len().saturating_mul(6)) + 4096;
    assert!(document.len() <= bound, "{} > {bound}", document.len());
});
