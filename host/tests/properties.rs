//! Property tests: round trips that must hold for every input, not just the examples.

use mailgate::message::header::format_field;
use mailgate::message::{apply_message_edits, Message, MessageEdit};
use mailgate::relay::wire::data_payload;
use mailgate::smtp::data::DataReader;
use proptest::prelude::*;

/// A message body as SMTP carries it: CRLF lines of at most 200 octets, no bare CR or LF,
/// lines that start with dots included.
fn smtp_lines() -> impl Strategy<Value = Vec<u8>> {
    let line = prop::collection::vec(
        prop_oneof![
            Just(b'.'),
            any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n')
        ],
        0..200,
    );
    prop::collection::vec(line, 0..40).prop_map(|lines| {
        let mut out = Vec::new();
        for line in lines {
            out.extend_from_slice(&line);
            out.extend_from_slice(b"\r\n");
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// What the relay puts on the wire, our DATA reader takes back byte for byte, however the
    /// network splits it.
    #[test]
    fn dot_stuffing_round_trips(message in smtp_lines(), splits in prop::collection::vec(1usize..64, 1..20)) {
        let wire = data_payload(&message);
        let mut reader = DataReader::new(1 << 20, 1 << 20);
        let mut rest: &[u8] = &wire;
        let mut done = false;
        for size in splits.iter().cycle() {
            let take = (*size).min(rest.len());
            let (used, end) = reader.feed(&rest[..take]);
            rest = &rest[used..];
            if end {
                done = true;
                break;
            }
        }
        prop_assert!(done, "terminator not found");
        prop_assert!(rest.is_empty(), "bytes left after the terminator");
        prop_assert_eq!(reader.finish().expect("accepted"), message);
    }

    /// A header field a plugin adds reads back as the value it gave, whatever its characters
    /// (non-ASCII goes out as RFC 2047 words, long values are folded).
    #[test]
    fn added_headers_read_back(value in "[ -~\u{a0}-\u{2fff}]{0,300}") {
        let value = value.trim().to_string();
        let message = Message::new(b"Subject: x\r\n\r\nbody\r\n".to_vec());
        let edit = MessageEdit::AddHeader { name: "X-Prop".into(), value: value.clone() };
        let edited = apply_message_edits(&message, &[edit]).expect("valid").expect("changed");
        prop_assert_eq!(edited.header_value("X-Prop").map(|v| v.trim().to_string()), Some(value));
        prop_assert!(edited.raw().ends_with(b"\r\n\r\nbody\r\n"), "body untouched");
        prop_assert!(edited.raw().split(|&b| b == b'\n').all(|line| line.len() <= 1000));
    }

    /// RFC 2047 encoding: every field we write is 7-bit and decodes to the text given.
    #[test]
    fn encoded_words_decode_to_the_text(value in "\\PC{1,120}") {
        let value = value.trim().to_string();
        let field = format_field("Subject", &value);
        prop_assert!(field.is_ascii());
        let mut raw = field.clone();
        raw.extend_from_slice(b"\r\n");
        let message = Message::new(raw);
        prop_assert_eq!(message.header_value("Subject").map(|v| v.trim().to_string()), Some(value));
    }
}
