//! Content-Transfer-Encoding for new MIME content: pick the lightest encoding that is valid and
//! cannot collide with an enclosing multipart boundary.

/// The encoding chosen for new content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferEncoding {
    SevenBit,
    QuotedPrintable,
    Base64,
}

impl TransferEncoding {
    pub fn name(self) -> &'static str {
        match self {
            TransferEncoding::SevenBit => "7bit",
            TransferEncoding::QuotedPrintable => "quoted-printable",
            TransferEncoding::Base64 => "base64",
        }
    }
}

/// Chooses an encoding: 7bit for short-lined ASCII text, quoted-printable for other text,
/// base64 for binary content or when a line could be read as one of `boundaries`.
pub fn choose(content: &[u8], is_text: bool, boundaries: &[String]) -> TransferEncoding {
    let collides = boundaries.iter().any(|b| {
        let delimiter = format!("--{b}");
        content
            .split(|&c| c == b'\n')
            .any(|line| line.starts_with(delimiter.as_bytes()))
    });
    if !is_text || collides {
        return TransferEncoding::Base64;
    }
    let plain_ascii = content
        .iter()
        .all(|&b| b == b'\r' || b == b'\n' || b == b'\t' || (32..127).contains(&b));
    let short_lines = content.split(|&c| c == b'\n').all(|l| l.len() <= 990);
    if plain_ascii && short_lines && !has_bare_cr(content) {
        TransferEncoding::SevenBit
    } else {
        TransferEncoding::QuotedPrintable
    }
}

fn has_bare_cr(content: &[u8]) -> bool {
    content
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && content.get(i + 1) != Some(&b'\n'))
}

/// Encodes `content` (text gets CRLF line ends first), ending with CRLF.
pub fn encode(content: &[u8], encoding: TransferEncoding, is_text: bool) -> Vec<u8> {
    let text = if is_text {
        super::lines::to_crlf(content, super::lines::BareEnds::Lf)
    } else {
        std::borrow::Cow::Borrowed(content)
    };
    let content = &text[..];
    let mut out = match encoding {
        TransferEncoding::SevenBit => content.to_vec(),
        TransferEncoding::QuotedPrintable => quoted_printable(content),
        TransferEncoding::Base64 => base64_lines(content),
    };
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A message with binary content (RFC 3516 APPEND of `~{n}` data) made safe for mail: every
/// leaf part whose transfer encoding is `binary`, or whose body holds a NUL, is re-encoded as
/// base64 (header field and body); the rest stays byte for byte. BINARY FETCH gives the
/// original bytes back.
pub fn binary_parts_to_base64(raw: Vec<u8>) -> Vec<u8> {
    let message = super::Message::new(raw);
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    for part in message.parts() {
        let Some(span) = part.span else {
            continue;
        };
        if part.is_multipart || part.is_message || span.body_start > span.end {
            continue;
        }
        let body = &message.raw()[span.body_start..span.end];
        let binary = part.transfer_encoding.as_deref() == Some("binary") || body.contains(&0);
        if !binary {
            continue;
        }
        let header = &message.raw()[span.header_start..span.body_start];
        edits.push((span.header_start, span.end, base64_part(header, body)));
    }
    if edits.is_empty() {
        return message.raw().to_vec();
    }
    let raw = message.raw();
    let mut out = Vec::with_capacity(raw.len() * 4 / 3);
    let mut at = 0;
    for (start, end, with) in edits {
        out.extend_from_slice(&raw[at..start]);
        out.extend(with);
        at = end;
    }
    out.extend_from_slice(&raw[at..]);
    out
}

/// A part's header without its Content-Transfer-Encoding field (folded lines included), with
/// `base64` instead, and its body in base64 lines.
fn base64_part(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + body.len() * 4 / 3 + 64);
    let mut skipping = false;
    let lines: Vec<&[u8]> = header.split_inclusive(|&b| b == b'\n').collect();
    for line in lines {
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !folded {
            skipping =
                line.len() >= 26 && line[..26].eq_ignore_ascii_case(b"content-transfer-encoding:");
        }
        let blank = line == b"\r\n" || line == b"\n";
        if blank {
            out.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n");
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out.extend(base64_lines(body));
    out
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 in lines of 76 characters.
pub fn base64_lines(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 4 / 3 + input.len() / 57 * 2 + 4);
    for line in input.chunks(57) {
        for chunk in line.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            out.push(BASE64[(n >> 18) as usize & 63]);
            out.push(BASE64[(n >> 12) as usize & 63]);
            out.push(if chunk.len() > 1 {
                BASE64[(n >> 6) as usize & 63]
            } else {
                b'='
            });
            out.push(if chunk.len() > 2 {
                BASE64[n as usize & 63]
            } else {
                b'='
            });
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Quoted-printable (RFC 2045 §6.7) of CRLF text: soft line breaks keep lines under 76.
pub fn quoted_printable(input: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(input.len() + input.len() / 8);
    let lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    for (n, line) in lines.iter().enumerate() {
        let last = n + 1 == lines.len();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut width = 0;
        for (i, &b) in line.iter().enumerate() {
            let at_end = i + 1 == line.len();
            let literal =
                (33..=126).contains(&b) && b != b'=' || (b == b' ' || b == b'\t') && !at_end;
            let len = if literal { 1 } else { 3 };
            if width + len > 75 {
                out.extend_from_slice(b"=\r\n");
                width = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
            width += len;
        }
        if !last {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_lines(b"Man"), b"TWFu\r\n");
        assert_eq!(base64_lines(b"Ma"), b"TWE=\r\n");
        assert_eq!(base64_lines(b"M"), b"TQ==\r\n");
    }

    #[test]
    fn binary_parts_become_base64() {
        let raw = b"Subject: x\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding:\r\n binary\r\n\r\n\0-\xe4\r\n".to_vec();
        let out = binary_parts_to_base64(raw);
        let text = String::from_utf8_lossy(&out);
        assert!(!out.contains(&0), "{text}");
        assert!(
            text.contains("Content-Transfer-Encoding: base64\r\n\r\nAC3kDQo=\r\n"),
            "{text}"
        );
        assert!(!text.contains("binary"), "{text}");
        // Text without NUL is left as it is.
        let plain = b"Subject: y\r\n\r\nhello\r\n".to_vec();
        assert_eq!(binary_parts_to_base64(plain.clone()), plain);
    }

    #[test]
    fn quoted_printable_escapes_and_wraps() {
        assert_eq!(
            quoted_printable("café = ok \r\nx".as_bytes()),
            b"caf=C3=A9 =3D ok=20\r\nx"
        );
        let long = quoted_printable(&[b'a'; 200]);
        assert!(long.split(|&b| b == b'\n').all(|l| l.len() <= 77));
    }

    #[test]
    fn choice_avoids_boundary_collisions() {
        let b = vec!["XX".to_string()];
        assert_eq!(choose(b"plain\r\n", true, &b), TransferEncoding::SevenBit);
        assert_eq!(
            choose("é".as_bytes(), true, &b),
            TransferEncoding::QuotedPrintable
        );
        assert_eq!(choose(b"a\r\n--XX\r\n", true, &b), TransferEncoding::Base64);
        assert_eq!(choose(b"\x00\x01", false, &b), TransferEncoding::Base64);
    }
}
