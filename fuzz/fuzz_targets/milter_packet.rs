//! Milter packets from a peer (either side): decoding never panics, and whatever decodes
//! encodes back to a packet that decodes to the same thing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::milter::codec::{packet_length, Command, Response};

fuzz_target!(|raw: &[u8]| {
    let Some((header, rest)) = raw.split_first_chunk::<4>() else {
        return;
    };
    let Ok(len) = packet_length(*header, 1 << 16) else {
        return;
    };
    let Some(packet) = rest.get(..len) else {
        return;
    };
    let (code, data) = (packet[0], &packet[1..]);
    if let Ok(command) = Command::decode(code, data) {
        let again = command.encode();
        assert_eq!(Command::decode(again[4], &again[5..]).as_ref(), Ok(&command));
    }
    if let Ok(response) = Response::decode(code, data) {
        let again = response.encode();
        assert_eq!(Response::decode(again[4], &again[5..]).as_ref(), Ok(&response));
    }
});
