//! The DATA reader fed in pieces: the first byte picks the piece size. Whatever it accepts
//! has no bare CR or LF and fits the limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::smtp::data::DataReader;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let mut reader = DataReader::new(64 * 1024, 1000);
    let mut rest = input;
    while !rest.is_empty() {
        let take = piece.min(rest.len());
        let (used, done) = reader.feed(&rest[..take]);
        assert!(used <= take);
        rest = &rest[used..];
        if done {
            break;
        }
    }
    if let Ok(message) = reader.finish() {
        assert!(message.len() <= 64 * 1024);
        for (i, &b) in message.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(message.get(i + 1), Some(&b'\n')),
                b'\n' => assert!(i > 0 && message[i - 1] == b'\r'),
                _ => {}
            }
        }
    }
});
