//! Address headers and subjects as ENVELOPE, SEARCH and SORT read them: the address-list
//! parser and the base subject (RFC 5256).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for item in mailgate::imap::address::parse(&text) {
        if let mailgate::imap::address::Item::Mailbox { local, domain, .. } = item {
            assert!(local.len() + domain.len() <= text.len());
        }
    }
    let base = mailgate::imap::sort::base_subject(&text);
    assert!(base.len() <= text.len());
});
