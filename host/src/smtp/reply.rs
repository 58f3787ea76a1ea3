//! SMTP replies on the wire.

use crate::mail::Reply;
// The Received field's date: the one formatter, with the mail types.

/// The class of a reply line (`2xx`...), as metrics count it; `None` for anything else.
pub fn class(bytes: &[u8]) -> Option<&'static str> {
    match bytes.first()? {
        b'2' => Some("2xx"),
        b'3' => Some("3xx"),
        b'4' => Some("4xx"),
        b'5' => Some("5xx"),
        _ => None,
    }
}

/// Formats a reply: `CODE-text` lines, the last one `CODE text`, each with the enhanced status.
pub fn format(reply: &Reply) -> Vec<u8> {
    let status = reply
        .enhanced
        .map(|(c, s, d)| format!("{c}.{s}.{d} "))
        .unwrap_or_default();
    let lines: Vec<&str> = if reply.lines.is_empty() {
        vec![""]
    } else {
        reply.lines.iter().map(String::as_str).collect()
    };
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.extend_from_slice(format!("{}{sep}{status}{line}\r\n", reply.code).as_bytes());
    }
    out
}

/// A one-line reply.
pub fn line(code: u16, enhanced: (u8, u16, u16), text: &str) -> Vec<u8> {
    format(&Reply::new(code, enhanced, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline_replies() {
        let reply = Reply {
            code: 250,
            enhanced: None,
            lines: vec!["mx.example".into(), "PIPELINING".into()],
        };
        assert_eq!(format(&reply), b"250-mx.example\r\n250 PIPELINING\r\n");
        assert_eq!(line(550, (5, 1, 1), "no"), b"550 5.1.1 no\r\n");
    }
}
