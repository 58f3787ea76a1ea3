//! APPEND beyond one literal (MULTIAPPEND, CATENATE): any command is refused with a reason or
//! read into at most `MESSAGES` messages of at most `PARTS` parts, whose bytes all come from
//! the command (nothing is made up or repeated).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::access::imap::append::{self, Content, Part};

fuzz_target!(|data: &[u8]| {
    let mut command = b"a APPEND ".to_vec();
    command.extend_from_slice(data);
    for input in [data, command.as_slice()] {
        let Ok(Some(request)) = append::parse(input) else {
            continue;
        };
        assert!(!request.messages.is_empty());
        assert!(request.messages.len() <= append::MESSAGES);
        let mut bytes = request.mailbox.len();
        for message in &request.messages {
            match &message.content {
                Content::Literal { bytes: literal, .. } => bytes += literal.len(),
                Content::Catenate(parts) => {
                    assert!(parts.len() <= append::PARTS);
                    for part in parts {
                        bytes += match part {
                            Part::Text(text) => text.len(),
                            Part::Url(url) => url.len(),
                        };
                    }
                }
            }
        }
        assert!(bytes <= input.len(), "{bytes} bytes read from {}", input.len());
    }
});
