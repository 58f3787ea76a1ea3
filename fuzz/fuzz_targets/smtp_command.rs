//! SMTP command lines, as a client sends them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let _ = mailgate::smtp::command::parse(line);
});
