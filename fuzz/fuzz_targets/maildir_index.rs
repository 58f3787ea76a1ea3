//! A Maildir folder's own files, which other programs may have written: the index
//! (`mailgate-uidlist`) and Dovecot's `dovecot-keywords`. Reading never fails; what is read
//! renders back to text that reads the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::store::keywords::Keywords;
use mailgate::store::uidlist::UidList;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let list = UidList::parse(&text);
    let largest = list.records.values().map(|r| r.uid).max().unwrap_or(0);
    assert!(list.next > largest || list.next == u32::MAX);
    let uids = |l: &UidList| -> Vec<(String, u32)> {
        l.records.iter().map(|(k, r)| (k.clone(), r.uid)).collect()
    };
    assert_eq!(uids(&UidList::parse(&list.render())), uids(&list));
    let keywords = Keywords::parse(&text);
    assert_eq!(Keywords::parse(&keywords.render()), keywords);
});
