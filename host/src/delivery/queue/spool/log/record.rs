//! The log's bytes: records and segments. A segment is a preallocated file that starts with
//! [`SEGMENT_MAGIC`] and holds records back to back, then zeros. A record is a 16-byte header —
//! payload length, kind, the payload's CRC-32 and the header's own CRC-32 — and its payload.
//! Records carry no position, so compaction copies them verbatim.
//!
//! Reading a segment stops at the first header that is all zeros (the end of what was
//! written) or that does not check out (a torn tail: a write cut short by a crash, never
//! acknowledged), or at a last record whose payload does not check out. Anywhere else, a record
//! whose header checks out but whose payload does not is skipped alone.

/// The first bytes of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"MGSPOOL1";
/// Bytes before a record's payload.
pub const HEADER_LEN: usize = 16;
/// The largest payload a header may announce (a message beyond it is refused at intake long
/// before; a larger length is a damaged header).
pub const MAX_PAYLOAD: usize = 1 << 30;

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A message: its id, envelope (JSON) and bytes. A later one for the same id replaces it.
    Message = 1,
    /// The message with this id is gone (delivered, bounced or deleted).
    Remove = 2,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::Message),
            2 => Some(Kind::Remove),
            _ => None,
        }
    }
}

/// One record, encoded.
pub fn encode(kind: Kind, payload_parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = payload_parts.iter().map(|p| p.len()).sum();
    let mut record = Vec::with_capacity(HEADER_LEN + len);
    record.extend_from_slice(&(len as u32).to_le_bytes());
    record.extend_from_slice(&[kind as u8, 0, 0, 0]);
    let mut crc = crc32fast::Hasher::new();
    for part in payload_parts {
        crc.update(part);
    }
    record.extend_from_slice(&crc.finalize().to_le_bytes());
    let header_crc = crc32fast::hash(&record[..12]);
    record.extend_from_slice(&header_crc.to_le_bytes());
    for part in payload_parts {
        record.extend_from_slice(part);
    }
    record
}

/// A message record: `u16` id length, id, `u32` envelope length, envelope, message bytes.
pub fn encode_message(id: &str, envelope_json: &[u8], message: &[u8]) -> Option<Vec<u8>> {
    let id_len = u16::try_from(id.len()).ok()?;
    let envelope_len = u32::try_from(envelope_json.len()).ok()?;
    if envelope_json.len() + message.len() + id.len() + 6 > MAX_PAYLOAD {
        return None;
    }
    Some(encode(
        Kind::Message,
        &[
            &id_len.to_le_bytes(),
            id.as_bytes(),
            &envelope_len.to_le_bytes(),
            envelope_json,
            message,
        ],
    ))
}

/// A removal record: the id.
pub fn encode_remove(id: &str) -> Vec<u8> {
    encode(Kind::Remove, &[id.as_bytes()])
}

/// A message record's payload, split.
pub struct MessageParts<'a> {
    pub id: &'a str,
    pub envelope_json: &'a [u8],
    pub message: &'a [u8],
}

pub fn decode_message(payload: &[u8]) -> Option<MessageParts<'_>> {
    let id_len = u16::from_le_bytes(payload.get(..2)?.try_into().ok()?) as usize;
    let id = std::str::from_utf8(payload.get(2..2 + id_len)?).ok()?;
    let rest = &payload[2 + id_len..];
    let envelope_len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let envelope_json = rest.get(4..4usize.checked_add(envelope_len)?)?;
    let message = &rest[4 + envelope_len..];
    Some(MessageParts {
        id,
        envelope_json,
        message,
    })
}

/// The id a record is about (both kinds start with it in their own way).
pub fn record_id(kind: Kind, payload: &[u8]) -> Option<&str> {
    match kind {
        Kind::Message => decode_message(payload).map(|m| m.id),
        Kind::Remove => std::str::from_utf8(payload).ok(),
    }
}

/// A header, checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// All zeros: nothing was written here.
    Empty,
    /// Does not check out: the end of what can be trusted in this segment.
    Torn,
    Valid {
        kind: Option<Kind>,
        len: usize,
        payload_crc: u32,
    },
}

pub fn read_header(bytes: &[u8]) -> Header {
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return if bytes.iter().all(|&b| b == 0) {
            Header::Empty
        } else {
            Header::Torn
        };
    };
    if header.iter().all(|&b| b == 0) {
        return Header::Empty;
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if crc32fast::hash(&header[..12]) != word(12) {
        return Header::Torn;
    }
    let len = word(0) as usize;
    if len > MAX_PAYLOAD {
        return Header::Torn;
    }
    Header::Valid {
        kind: Kind::from_byte(header[4]),
        len,
        payload_crc: word(8),
    }
}

/// One record found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub kind: Kind,
    /// Where the record starts in the segment, and its whole length (header included).
    pub offset: u64,
    pub len: u32,
    pub id: String,
}

/// What [`scan`] found besides the records.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Where the trusted part ends (the next record would be written here).
    pub end: u64,
    /// The tail from `end` holds bytes that are not a record (a write cut short).
    pub torn: bool,
    /// Records skipped: their payload does not match its checksum, or their kind is unknown.
    pub corrupt: Vec<u64>,
}

/// Reads every trustworthy record of a segment's bytes.
pub fn scan(segment: &[u8]) -> (Vec<Found>, ScanReport) {
    let mut found = Vec::new();
    let mut report = ScanReport::default();
    if segment.get(..SEGMENT_MAGIC.len()) != Some(SEGMENT_MAGIC.as_slice()) {
        report.torn = !segment.is_empty();
        return (found, report);
    }
    let mut at = SEGMENT_MAGIC.len();
    loop {
        let rest = &segment[at..];
        match read_header(rest) {
            Header::Empty => break,
            Header::Torn => {
                report.torn = true;
                break;
            }
            Header::Valid {
                kind,
                len,
                payload_crc,
            } => {
                let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
                    report.torn = true;
                    break;
                };
                let record_len = HEADER_LEN + len;
                let id = kind.and_then(|k| record_id(k, payload));
                match (kind, id) {
                    (Some(kind), Some(id)) if crc32fast::hash(payload) == payload_crc => found
                        .push(Found {
                            kind,
                            offset: at as u64,
                            len: record_len as u32,
                            id: id.to_string(),
                        }),
                    _ if matches!(read_header(&rest[record_len..]), Header::Empty) => {
                        // Nothing written after it: the last write, cut short.
                        report.torn = true;
                        break;
                    }
                    _ => report.corrupt.push(at as u64),
                }
                at += record_len;
            }
        }
    }
    report.end = at as u64;
    (found, report)
}

/// Checks one record read back from a segment; its payload when it is whole.
pub fn verify(record: &[u8]) -> Option<(Kind, &[u8])> {
    match read_header(record) {
        Header::Valid {
            kind: Some(kind),
            len,
            payload_crc,
        } => {
            let payload = record.get(HEADER_LEN..HEADER_LEN + len)?;
            (crc32fast::hash(payload) == payload_crc).then_some((kind, payload))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn segment(records: &[Vec<u8>], zeros: usize) -> Vec<u8> {
        let mut bytes = SEGMENT_MAGIC.to_vec();
        for r in records {
            bytes.extend_from_slice(r);
        }
        bytes.extend(std::iter::repeat_n(0u8, zeros));
        bytes
    }

    fn message(id: &str, body: &[u8]) -> Vec<u8> {
        encode_message(id, b"{\"id\":1}", body).expect("encodes")
    }

    #[test]
    fn reads_back_what_was_written_and_stops_at_the_zeros() {
        let records = [
            message("a1", b"hello"),
            encode_remove("a1"),
            message("b2", b""),
        ];
        let bytes = segment(&records, 4096);
        let (found, report) = scan(&bytes);
        let ids: Vec<(&str, Kind)> = found.iter().map(|f| (f.id.as_str(), f.kind)).collect();
        assert_eq!(
            ids,
            [
                ("a1", Kind::Message),
                ("a1", Kind::Remove),
                ("b2", Kind::Message)
            ]
        );
        assert!(!report.torn && report.corrupt.is_empty());
        let first = &found[0];
        let start = first.offset as usize;
        let (kind, payload) = verify(&bytes[start..start + first.len as usize]).expect("verifies");
        assert_eq!(kind, Kind::Message);
        let parts = decode_message(payload).expect("decodes");
        assert_eq!((parts.id, parts.message), ("a1", b"hello".as_slice()));
        assert_eq!(parts.envelope_json, b"{\"id\":1}");
    }

    #[test]
    fn a_torn_last_record_is_left_out_and_reported() {
        let records = [message("a1", b"kept"), message("b2", &[b'x'; 300])];
        let whole = segment(&records, 0);
        let cut = whole.len() - 100;
        let mut torn = whole[..cut].to_vec();
        torn.extend(std::iter::repeat_n(0u8, 1000));
        let (found, report) = scan(&torn);
        assert_eq!(found.len(), 1, "only the whole record");
        assert_eq!(found[0].id, "a1");
        assert!(report.torn, "the cut record is reported");
        assert_eq!(report.end as usize, SEGMENT_MAGIC.len() + records[0].len());
        // A header itself cut short.
        let (found, report) = scan(&whole[..SEGMENT_MAGIC.len() + records[0].len() + 7]);
        assert_eq!((found.len(), report.torn), (1, true));
    }

    #[test]
    fn a_record_with_a_damaged_payload_is_skipped_alone() {
        let records = [
            message("a1", b"one"),
            message("b2", b"two"),
            message("c3", b"three"),
        ];
        let mut bytes = segment(&records, 64);
        let second = SEGMENT_MAGIC.len() + records[0].len();
        let last_byte_of_second = second + records[1].len() - 1;
        bytes[last_byte_of_second] ^= 0x55;
        let (found, report) = scan(&bytes);
        let ids: Vec<&str> = found.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["a1", "c3"]);
        assert_eq!(report.corrupt, [second as u64]);
        assert!(verify(&bytes[second..second + records[1].len()]).is_none());
    }

    #[test]
    fn a_damaged_header_ends_the_segment() {
        let records = [message("a1", b"one"), message("b2", b"two")];
        let mut bytes = segment(&records, 64);
        bytes[SEGMENT_MAGIC.len() + records[0].len() + 1] ^= 1;
        let (found, report) = scan(&bytes);
        assert_eq!(found.len(), 1);
        assert!(report.torn);
    }

    proptest! {
        /// Whatever prefix of a segment survives a crash, scanning it yields exactly the
        /// records that were written whole, in order, and never panics.
        #[test]
        fn any_prefix_yields_the_whole_records(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..8),
            cut_seed in any::<usize>(),
        ) {
            let records: Vec<Vec<u8>> = bodies.iter().enumerate()
                .map(|(i, b)| message(&format!("{i:04x}"), b)).collect();
            let whole = segment(&records, 0);
            let cut = cut_seed % (whole.len() + 1);
            let mut bytes = whole[..cut].to_vec();
            bytes.extend(std::iter::repeat_n(0u8, 64));
            let (found, _) = scan(&bytes);
            let mut end = SEGMENT_MAGIC.len();
            let mut whole_ones = 0;
            for r in &records {
                if end + r.len() <= cut { whole_ones += 1; end += r.len(); } else { break; }
            }
            prop_assert_eq!(found.len(), whole_ones);
            for (i, f) in found.iter().enumerate() {
                prop_assert_eq!(&f.id, &format!("{i:04x}"));
            }
        }

        /// Garbage is never taken for a record.
        #[test]
        fn garbage_is_not_a_record(noise in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut bytes = SEGMENT_MAGIC.to_vec();
            bytes.extend_from_slice(&noise);
            let (found, _) = scan(&bytes);
            prop_assert!(found.is_empty());
        }
    }
}
