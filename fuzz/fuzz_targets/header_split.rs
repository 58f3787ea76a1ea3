//! Header splitting: fields never overlap, stay in bounds and come in order.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::message::header::HeaderBlock;

fuzz_target!(|raw: &[u8]| {
    let block = HeaderBlock::parse(raw, 0);
    assert!(block.fields_end <= block.body_start && block.body_start <= raw.len());
    let mut last = 0;
    for field in &block.fields {
        assert!(field.whole.start >= last && field.whole.end <= block.fields_end.max(field.whole.end));
        assert!(field.name.end <= field.value.start && field.value.end <= field.whole.end);
        assert!(field.whole.end <= raw.len());
        last = field.whole.end;
    }
});
