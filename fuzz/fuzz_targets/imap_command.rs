//! The IMAP command path: the framer cuts the stream (in pieces sized by the first byte),
//! the extension syntax is taken out, then imap-codec parses the rest, as the session does.
#![no_main]
use imap_codec::decode::Decoder;
use libfuzzer_sys::fuzz_target;
use mailgate::access::imap::extensions::Context;
use mailgate::access::imap::framing::{Budget, Frame, Framer};

/// Stands in for a session (`$` is a reference the session resolves later, not text).
struct Session;

impl Context for Session {
    fn changed_since(&self, since: u64) -> String {
        format!("UID {}", since.max(1))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let budget = Budget {
        literal: 4096,
        command: 8192,
    };
    let mut framer = Framer::new();
    for chunk in input.chunks(piece) {
        framer.push(chunk);
        loop {
            match framer.next(budget) {
                Frame::NeedMore => break,
                Frame::Command(command) => {
                    assert!(command.ends_with(b"\r\n"));
                    assert!(command.len() as u64 <= budget.command + 70 * 1024);
                    if let Ok((rest, _)) = mailgate::access::imap::extensions::take(&command, &Session) {
                        let _ = imap_codec::CommandCodec::default().decode(&rest);
                    }
                }
                Frame::Continue | Frame::LiteralRefused { .. } | Frame::LineTooLong { .. } => {}
            }
        }
    }
});
