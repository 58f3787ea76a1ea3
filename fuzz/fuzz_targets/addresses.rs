//! Header and name text as IMAP reads it: the address-list parser, the base subject (RFC 5256),
//! message ids (THREAD) and modified UTF-7 mailbox names (which must round-trip).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for item in mailgate::access::imap::address::parse(&text) {
        if let mailgate::access::imap::address::Item::Mailbox { local, domain, .. } = item {
            assert!(local.len() + domain.len() <= text.len());
        }
    }
    let base = mailgate::access::imap::sort::base_subject(&text);
    assert!(base.len() <= text.len());
    for id in mailgate::access::imap::thread::message_ids(&text) {
        assert!(id.len() < text.len());
    }
    if let Some(utf8) = mailgate::access::imap::mutf7::decode(&text) {
        assert_eq!(mailgate::access::imap::mutf7::decode(&mailgate::access::imap::mutf7::encode(&utf8)), Some(utf8));
    }
});
