//! URLAUTH (RFC 4467): command arguments and authorized URLs. Any input is refused or gives
//! parts taken from it; a URL signed with a key verifies with that key and no other.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::access::imap::urlauth;

fuzz_target!(|data: &[u8]| {
    if let Some(arguments) = urlauth::arguments(data) {
        let total: usize = arguments.iter().map(Vec::len).sum();
        assert!(total <= data.len());
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(url) = urlauth::parse(&text) {
        assert!(text.starts_with(&url.rump));
        let signed = url.authorized(b"one key");
        let again = urlauth::parse(&signed).expect("a URL we signed parses");
        assert!(again.verifies(b"one key"));
        assert!(!again.verifies(b"another key"));
    }
});
