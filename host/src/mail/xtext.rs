//! xtext (RFC 3461 §4): how DSN parameters carry any octet in an ESMTP parameter value, and
//! the utf-8-addr-xtext of RFC 6533 §3 for an ORCPT of type `utf-8`.

use std::fmt::Write as _;

/// Why a value is not valid xtext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XtextError {
    #[error("a character outside xtext")]
    Character,
    #[error("a \"+\" not followed by two hex digits")]
    Escape,
    #[error("the decoded value is not UTF-8")]
    NotUtf8,
}

/// Octets written as themselves: printable ASCII but `+` and `=`.
fn is_plain(b: u8) -> bool {
    (b'!'..=b'~').contains(&b) && b != b'+' && b != b'='
}

/// Encodes octets as xtext (`+XX`, upper-case hex, for anything else).
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if is_plain(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "+{b:02X}");
        }
    }
    out
}

/// Decodes xtext. RFC 3461 asks for upper-case hex; lower-case is taken too, as other MTAs do.
pub fn decode(text: &str) -> Result<Vec<u8>, XtextError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' {
            let hex = bytes.get(i + 1..i + 3).ok_or(XtextError::Escape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| XtextError::Escape)?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return Err(XtextError::Escape);
            }
            out.push(u8::from_str_radix(hex, 16).map_err(|_| XtextError::Escape)?);
            i += 3;
        } else if is_plain(b) {
            out.push(b);
            i += 1;
        } else {
            return Err(XtextError::Character);
        }
    }
    Ok(out)
}

/// Decodes xtext whose octets must be UTF-8 text.
pub fn decode_text(text: &str) -> Result<String, XtextError> {
    String::from_utf8(decode(text)?).map_err(|_| XtextError::NotUtf8)
}

/// Characters a utf-8-addr-xtext writes as themselves: printable ASCII but `+`, `=` and `\`.
fn is_utf8_addr_plain(c: char) -> bool {
    c.is_ascii() && is_plain(c as u8) && c != '\\'
}

/// Encodes an address as utf-8-addr-xtext (RFC 6533): `\x{HEX}` for anything else. ASCII
/// only, so it travels to any peer.
pub fn encode_utf8_addr(address: &str) -> String {
    let mut out = String::with_capacity(address.len());
    for c in address.chars() {
        if is_utf8_addr_plain(c) {
            out.push(c);
        } else {
            let _ = write!(out, "\\x{{{:X}}}", u32::from(c));
        }
    }
    out
}

/// Decodes utf-8-addr-xtext or utf-8-addr-unitext (RFC 6533 §3): `\x{HEX}` escapes, and
/// non-ASCII characters as themselves.
pub fn decode_utf8_addr(text: &str) -> Result<String, XtextError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '\\' {
            let body = rest.strip_prefix("\\x{").ok_or(XtextError::Escape)?;
            let close = body.find('}').ok_or(XtextError::Escape)?;
            let hex = &body[..close];
            if hex.is_empty() || hex.len() > 6 || !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return Err(XtextError::Escape);
            }
            let code = u32::from_str_radix(hex, 16).map_err(|_| XtextError::Escape)?;
            out.push(char::from_u32(code).ok_or(XtextError::Escape)?);
            rest = &body[close + 1..];
        } else if is_utf8_addr_plain(c) || !c.is_ascii() {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        } else {
            return Err(XtextError::Character);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_itself_and_the_rest_is_escaped() {
        assert_eq!(encode(b"abc@x.test"), "abc@x.test");
        assert_eq!(encode(b"a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(encode("é".as_bytes()), "+C3+A9");
    }

    #[test]
    fn decoding_undoes_encoding() {
        assert_eq!(decode("a+2Bb+3Dc+20d").as_deref(), Ok(&b"a+b=c d"[..]));
        assert_eq!(decode("+c3+a9").as_deref(), Ok("é".as_bytes()));
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)), Ok(all));
    }

    #[test]
    fn malformed_xtext_is_refused() {
        assert_eq!(decode("a+2"), Err(XtextError::Escape));
        assert_eq!(decode("a+ZZ"), Err(XtextError::Escape));
        assert_eq!(decode("a=b"), Err(XtextError::Character));
        assert_eq!(decode("a b"), Err(XtextError::Character));
        assert_eq!(decode("é"), Err(XtextError::Character));
        assert_eq!(decode_text("+FF"), Err(XtextError::NotUtf8));
    }

    #[test]
    fn utf8_addresses_round_trip() {
        let address = "jöran+tag@exämple.test";
        let encoded = encode_utf8_addr(address);
        assert_eq!(encoded, "j\\x{F6}ran\\x{2B}tag@ex\\x{E4}mple.test");
        assert!(encoded.is_ascii());
        assert_eq!(decode_utf8_addr(&encoded).as_deref(), Ok(address));
        assert_eq!(
            decode_utf8_addr("jöran@x.test").as_deref(),
            Ok("jöran@x.test")
        );
        assert_eq!(decode_utf8_addr("a\\x{}b"), Err(XtextError::Escape));
        assert_eq!(decode_utf8_addr("a\\x{D800}"), Err(XtextError::Escape));
        assert_eq!(decode_utf8_addr("a+b"), Err(XtextError::Character));
    }
}
