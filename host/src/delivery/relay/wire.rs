//! The message as it goes out in DATA: canonical CRLF line ends and dot-stuffing (RFC 5321
//! §4.5.2), whatever line ends reached the queue (`message::lines::dot_stuff`: a bare CR or LF
//! becomes CRLF, so a dot after a bare CR starts a line and is stuffed like any other).

/// The DATA payload for `message`, terminator included.
pub fn data_payload(message: &[u8]) -> Vec<u8> {
    crate::message::lines::dot_stuff(message)
}

/// True when the message has bytes outside 7-bit ASCII (it needs 8BITMIME).
pub fn is_8bit(message: &[u8]) -> bool {
    message.iter().any(|&b| b >= 0x80)
}
