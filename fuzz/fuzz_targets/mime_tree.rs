//! The MIME tree and everything IMAP builds from it: BODYSTRUCTURE, ENVELOPE, sections and
//! the BINARY form (URLAUTH=BINARY), on any bytes a stored message could hold. Depth stays
//! bounded; the BINARY form is at most one header field per part longer than the message, its
//! sizes are those of its bytes; nothing panics.
#![no_main]
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName};
use libfuzzer_sys::fuzz_target;
use mailgate::access::imap::{decoded, wire};
use mailgate::message::{mime, Message};

const SECTIONS: &[&str] = &[
    "BODY[1]",
    "BODY[1.1]",
    "BODY[2.1.MIME]",
    "BODY[1.HEADER]",
    "BODY[1.1.1.TEXT]",
    "BODY[HEADER.FIELDS (SUBJECT FROM)]",
    "BODY[3.2.1]",
];

fuzz_target!(|raw: &[u8]| {
    let message = Message::new(raw.to_vec());
    let parts = message.parts();
    for part in parts {
        let mut depth = 0;
        let mut parent = part.parent;
        while let Some(p) = parent {
            assert!(p < part.id, "parents come first");
            depth += 1;
            parent = parts[p as usize].parent;
        }
        assert!(depth <= mime::max_depth());
        let _ = message.part_content(part.id);
    }
    let _ = wire::body_structure(&message, true);
    let sizes = decoded::body_sizes(&message);
    if let Ok(form) = decoded::whole(&message) {
        assert!(form.len() <= raw.len() + parts.len() * decoded::BINARY_FIELD.len());
    }
    for part in parts {
        let _ = wire::part_body_structure(&message, part.id, Some(&sizes));
        if let Ok(body) = decoded::body(&message, part.id) {
            assert_eq!(sizes[part.id as usize].bytes, body.len());
        }
    }
    let _ = wire::envelope(&message);
    for section in SECTIONS {
        let line = format!("a FETCH 1 {section}\r\n");
        let Ok((_, command)) = imap_codec::CommandCodec::default().decode(line.as_bytes()) else {
            continue;
        };
        if let CommandBody::Fetch {
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
            ..
        } = command.body
        {
            let sections = wire::Sections::new(&message);
            for item in items {
                if let MessageDataItemName::BodyExt { section, .. } = item {
                    let _ = wire::section_bytes(&sections, section.as_ref());
                }
            }
        }
    }
});
