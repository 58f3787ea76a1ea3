//! A stored message as JMAP shows it, and an Email object a client creates: the body lists,
//! body structure, header forms and summary of any bytes never panic; any JSON object either
//! becomes a message that parses back or is refused with a SetError.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::access::jmap::compose;
use mailgate::access::jmap::message::{body_part, header_property, BodyLists, Summary};
use mailgate::message::Message;

const PROPERTIES: [&str; 12] = [
    "partId", "blobId", "size", "headers", "name", "type", "charset", "disposition", "cid",
    "language", "location", "subParts",
];

fuzz_target!(|raw: &[u8]| {
    let message = Message::new(raw.to_vec());
    let lists = BodyLists::of(&message);
    for id in lists.text.iter().chain(&lists.html).chain(&lists.attachments) {
        assert!(message.part(*id).is_some(), "lists name parts that exist");
    }
    let _ = Summary::of(&message);
    if let Some(root) = message.part(0) {
        let properties: Vec<String> = PROPERTIES.iter().map(|p| p.to_string()).collect();
        let children = mailgate::access::jmap::message::Children::of(&message);
        let budget = mailgate::access::jmap::budget::Budget::new(16 << 20);
        let mut meter = mailgate::access::jmap::budget::Meter::new(&budget);
        let _ = body_part((&message, &children), root, "B0", &properties, &mut meter);
    }
    for property in ["header:From:asAddresses:all", "header:Date:asDate", "header:X:asGroupedAddresses"] {
        let _ = header_property(&message, property);
    }
    if let Ok(serde_json::Value::Object(object)) = serde_json::from_slice::<serde_json::Value>(raw) {
        const MAX: usize = 1 << 20;
        if let Ok(draft) = compose::draft(&object, MAX, |_, _| Ok(b"blob".to_vec())) {
            if let Ok(bytes) = compose::build(&draft, "seed", MAX) {
                assert!(!Message::new(bytes).headers().is_empty());
            }
        }
    }
});
