//! Property tests: round trips that must hold for every input, not just the examples.

use mailgate::message::header::format_field;
use mailgate::message::lines::{crlf_len, dot_stuff, into_crlf, to_crlf, BareEnds};
use mailgate::message::{apply_message_edits, Message, MessageEdit};
use mailgate::smtp::data::DataReader;
use proptest::prelude::*;

/// Any bytes, with CR, LF and dots frequent enough that every combination of bare and paired
/// line ends, and dots after each, turns up.
fn any_line_ends() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b'\r'),
            Just(b'\n'),
            Just(b'.'),
            Just(b'a'),
            any::<u8>()
        ],
        0..300,
    )
}

/// Takes DATA back with our SMTP reader, as a server would.
fn unstuff(wire: &[u8]) -> Result<Vec<u8>, String> {
    let mut reader = DataReader::new(1 << 20, 1 << 20);
    let (used, end) = reader.feed(wire);
    if !end || used != wire.len() {
        return Err(format!("terminator at {used} of {}: {end}", wire.len()));
    }
    reader.finish().map_err(|e| format!("{e:?}"))
}

/// The four copies the one normaliser and stuffer replaced, as they were, to hold the new code
/// to the old behaviour on every input.
mod before {
    /// message::canonical_crlf: bare LF to CRLF, bare CR kept.
    pub fn canonical_crlf(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &b) in input.iter().enumerate() {
            if b == b'\n' && (i == 0 || input[i - 1] != b'\r') {
                out.push(b'\r');
            }
            out.push(b);
        }
        out
    }

    /// store::mailbox::crlf_len: the length once bare LFs are CRLF.
    pub fn crlf_len(bytes: &[u8]) -> u64 {
        bytes.len() as u64
            + bytes
                .iter()
                .enumerate()
                .filter(|&(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
                .count() as u64
    }

    /// relay::wire::data_payload (and POP3's multi-line answers through it).
    pub fn data_payload(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line_start = true;
        let mut i = 0;
        while i < message.len() {
            let b = message[i];
            match b {
                b'\r' | b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    i += if b == b'\r' && message.get(i + 1) == Some(&b'\n') {
                        2
                    } else {
                        1
                    };
                    line_start = true;
                    continue;
                }
                b'.' if line_start => out.extend_from_slice(b".."),
                _ => out.push(b),
            }
            line_start = false;
            i += 1;
        }
        if !line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }
}

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
        let wire = dot_stuff(&message);
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

    /// The one normaliser does what each copy it replaced did, bare CRs and LFs included: in
    /// files (bare LF a line end, bare CR kept) and on the wire (both line ends).
    #[test]
    fn line_ends_are_made_crlf_as_before(bytes in any_line_ends()) {
        let old = before::canonical_crlf(&bytes);
        prop_assert_eq!(&*to_crlf(&bytes, BareEnds::Lf), &old[..]);
        prop_assert_eq!(into_crlf(bytes.clone(), BareEnds::Lf), old.clone());
        prop_assert_eq!(crlf_len(&bytes, BareEnds::Lf), before::crlf_len(&bytes));
        prop_assert_eq!(crlf_len(&bytes, BareEnds::Lf), old.len() as u64);
        let wire = to_crlf(&bytes, BareEnds::CrAndLf);
        prop_assert_eq!(crlf_len(&bytes, BareEnds::CrAndLf), wire.len() as u64);
        let paired = |i: usize| match wire[i] {
            b'\r' => wire.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && wire[i - 1] == b'\r',
            _ => true,
        };
        prop_assert!((0..wire.len()).all(paired), "a bare CR or LF left: {:?}", wire);
    }

    /// The one stuffer writes what the relay's copy wrote, and stuffing then unstuffing (our
    /// SMTP reader) gives the message back with every line end a CRLF and a CRLF at its end.
    #[test]
    fn stuffing_then_unstuffing_keeps_the_lines(bytes in any_line_ends()) {
        let wire = dot_stuff(&bytes);
        prop_assert_eq!(&wire, &before::data_payload(&bytes));
        let mut expected = to_crlf(&bytes, BareEnds::CrAndLf).into_owned();
        if !expected.is_empty() && !expected.ends_with(b"\r\n") {
            expected.extend_from_slice(b"\r\n");
        }
        prop_assert_eq!(unstuff(&wire), Ok(expected));
    }
}
