//! POP3 command lines, as a client sends them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let _ = mailgate::access::pop3::command::parse(line);
});
