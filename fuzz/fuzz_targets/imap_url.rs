//! The IMAP URLs CATENATE takes (RFC 5092) and the PARTIAL ranges of ESEARCH (RFC 9394):
//! any text is refused with a reason or gives values that stay within what was written.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::access::imap::{partial::Range, url};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(found) = url::parse(&text, "alice@example.org") {
        assert!(found.mailbox.len() <= text.len() * 4);
        if let Some((offset, length)) = found.partial {
            let bytes = vec![0u8; 64];
            let cut = url::cut(&bytes, Some((offset, length)));
            assert!(cut.len() <= bytes.len());
        }
    }
    if let Ok(range) = Range::parse(&text) {
        let results: Vec<u32> = (1..=100).collect();
        assert!(range.pick(&results).len() <= results.len());
        assert_eq!(Range::parse(&range.text()).map(|r| r.text()), Ok(range.text()));
    }
});
