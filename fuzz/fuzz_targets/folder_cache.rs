//! A folder's field cache (`mailgate-cache`), which any program with access to the Maildir
//! may have written: reading it never fails or overruns, stops at the last whole record, and
//! the records read encode back to bytes that read the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::store::mailbox::{decode_cache_records, encode_cache_record};

const MAGIC: &[u8] = b"MGCACHE1";

fuzz_target!(|data: &[u8]| {
    // Half the inputs get the magic, so the fuzzer spends its time past it.
    let bytes: Vec<u8> = match data.split_first() {
        Some((flag, rest)) if flag % 2 == 0 => [MAGIC, rest].concat(),
        _ => data.to_vec(),
    };
    let (records, end) = decode_cache_records(&bytes);
    assert!(end <= bytes.len().max(MAGIC.len()));
    let mut again = MAGIC.to_vec();
    for (field, key, value) in &records {
        let record = encode_cache_record(*field, key, value).expect("a record read fits");
        again.extend_from_slice(&record);
    }
    // The format has one spelling per record: what was read is exactly what encodes back.
    if bytes.len() >= MAGIC.len() {
        assert_eq!(&again[MAGIC.len()..], &bytes[MAGIC.len()..end]);
    }
    let (reread, reread_end) = decode_cache_records(&again);
    assert_eq!(reread, records);
    assert_eq!(reread_end, again.len());
});
