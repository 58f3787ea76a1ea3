//! Names read from disk and from the users source: a subscriptions file (Dovecot 2.x's form,
//! our old plain one, Maildir++ names) must read back the same after we write it, and a user
//! name's canonical form must be stable and map to two safe path components.
#![no_main]
use std::path::Component;

use libfuzzer_sys::fuzz_target;
use mailgate::store::{names::UserName, subscriptions};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let names = subscriptions::parse(&text);
    assert_eq!(subscriptions::parse(&subscriptions::render(&names)), names);
    if let Ok(name) = UserName::parse(&text) {
        let again = UserName::parse(name.as_str()).expect("a canonical name parses");
        assert_eq!(again.as_str(), name.as_str());
        let path = name.maildir_relative();
        let parts: Vec<Component> = path.components().collect();
        assert_eq!(parts.len(), 2, "{path:?}");
        for part in parts {
            let Component::Normal(part) = part else {
                panic!("{path:?}")
            };
            assert!(!part.to_string_lossy().starts_with('.'), "{path:?}");
        }
    }
});
