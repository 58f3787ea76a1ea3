//! URLAUTH (RFC 4467): command arguments (URLFETCH's lists of RFC 5524 too) and authorized
//! URLs. Any input is refused or gives parts taken from it; a URL signed with a key verifies
//! with that key and no other.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::access::imap::urlauth::{self, Argument};
use mailgate::access::imap::urlfetch;

fuzz_target!(|data: &[u8]| {
    if let Some(arguments) = urlauth::arguments(data) {
        let total: usize = arguments
            .iter()
            .map(|a| match a {
                Argument::Value(v) => v.len(),
                Argument::List(items) => items.iter().map(Vec::len).sum(),
            })
            .sum();
        assert!(total <= data.len());
        let count = arguments.len();
        if let Ok(requests) = urlfetch::requests(arguments) {
            assert_eq!(requests.len(), count);
        }
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
