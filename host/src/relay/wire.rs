//! The message as it goes out in DATA: canonical CRLF line ends and dot-stuffing (RFC 5321
//! §4.5.2), whatever line ends reached the queue. A bare CR or LF becomes CRLF, so a dot after
//! a bare CR starts a line and is stuffed like any other.

/// The DATA payload for `message`, terminator included.
pub fn data_payload(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 8);
    let mut line_start = true;
    let mut i = 0;
    while i < message.len() {
        let b = message[i];
        match b {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                // CRLF is one line end; a lone CR or LF is one too.
                i += if b == b'\r' && message.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                line_start = true;
                continue;
            }
            b'.' if line_start => out.extend_from_slice(b".."),
            _ => {
                // The rest of the line up to its end is copied as it is.
                let end =
                    memchr::memchr2(b'\r', b'\n', &message[i..]).map_or(message.len(), |n| i + n);
                out.extend_from_slice(&message[i..end]);
                line_start = false;
                i = end;
                continue;
            }
        }
        line_start = false;
        i += 1;
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// True when the message has bytes outside 7-bit ASCII (it needs 8BITMIME).
pub fn is_8bit(message: &[u8]) -> bool {
    message.iter().any(|&b| b >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffs_and_canonicalises() {
        assert_eq!(data_payload(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(data_payload(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(data_payload(b"no end"), b"no end\r\n.\r\n");
        assert_eq!(data_payload(b""), b".\r\n");
        // A dot after a bare CR or bare LF starts a line of its own.
        assert_eq!(data_payload(b"x\r.\r\ny"), b"x\r\n..\r\ny\r\n.\r\n");
        assert_eq!(data_payload(b"x\n.\ny"), b"x\r\n..\r\ny\r\n.\r\n");
        assert_eq!(data_payload(b"x\r\r\n"), b"x\r\n\r\n.\r\n");
    }
}
