//! A spool segment as found on disk after a crash or damage: every record read back checks
//! out and lies within the segment, nothing past a torn tail is served, and a message
//! record's parts are read without overrunning it. Inputs are either raw bytes or, to get
//! past the checksums, records built from the input with some of their bytes flipped.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::delivery::queue::spool::log::record::{
    decode_message, encode, encode_message, encode_remove, scan, verify, Kind, SEGMENT_MAGIC,
};

/// Records made from the input: chunks become message or remove records, then the bytes at
/// the positions the input's tail names are flipped.
fn built(data: &[u8]) -> Vec<u8> {
    let (records, flips) = data.split_at(data.len() / 2);
    let mut segment = SEGMENT_MAGIC.to_vec();
    for chunk in records.chunks(37) {
        let id = format!("id{}", chunk.first().copied().unwrap_or(0));
        let record = match chunk.first() {
            Some(b) if b % 3 == 0 => encode_remove(&id),
            Some(b) if b % 3 == 1 => encode(Kind::Message, &[chunk]),
            _ => encode_message(&id, b"{}", chunk).unwrap_or_default(),
        };
        segment.extend_from_slice(&record);
    }
    for pair in flips.chunks(2) {
        if let [at, bit] = pair {
            let len = segment.len();
            let at = usize::from(*at) * len / 256;
            if let Some(byte) = segment.get_mut(at) {
                *byte ^= 1 << (bit % 8);
            }
        }
    }
    segment
}

fuzz_target!(|data: &[u8]| {
    let segment = match data.split_first() {
        Some((flag, rest)) if flag % 2 == 0 => built(rest),
        _ => data.to_vec(),
    };
    let (found, report) = scan(&segment);
    assert!(report.end as usize <= segment.len().max(SEGMENT_MAGIC.len()));
    for record in &found {
        let start = record.offset as usize;
        let end = start + record.len as usize;
        assert!(end <= report.end as usize);
        let (kind, payload) = verify(&segment[start..end]).expect("a found record checks out");
        assert_eq!(kind, record.kind);
        if kind == Kind::Message {
            if let Some(parts) = decode_message(payload) {
                assert_eq!(parts.id, record.id);
            }
        }
    }
});
