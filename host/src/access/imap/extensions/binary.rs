//! BINARY (RFC 3516): the FETCH items `BINARY[...]`, `BINARY.PEEK[...]`, `BINARY.SIZE[...]`,
//! and APPEND data sent as `~{n}`, neither of which imap-codec 1.0 reads.

use super::edit::Edit;
use super::lexer::{Kind, Token};
use super::{BinaryItem, Extras};

/// A BINARY item, `None` for any other atom.
pub(super) fn item(token: &Token) -> Result<Option<BinaryItem>, String> {
    let text = token.text().to_ascii_uppercase();
    if token.kind != Kind::Atom || !text.starts_with("BINARY") {
        return Ok(None);
    }
    let bad = || format!("bad BINARY item {}", token.text());
    let (name, rest) = text.split_once('[').ok_or_else(bad)?;
    let (size_only, peek) = match name {
        "BINARY" => (false, false),
        "BINARY.PEEK" => (false, true),
        "BINARY.SIZE" => (true, true),
        _ => return Err(bad()),
    };
    let (section, tail) = rest.split_once(']').ok_or_else(bad)?;
    let part = if section.is_empty() {
        Vec::new()
    } else {
        section
            .split('.')
            .map(|n| n.parse::<u32>().ok().filter(|&n| n > 0))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(bad)?
    };
    let partial = match tail {
        "" => None,
        _ if size_only => return Err(bad()),
        _ => {
            let inner = tail
                .strip_prefix('<')
                .and_then(|t| t.strip_suffix('>'))
                .ok_or_else(bad)?;
            let (origin, length) = inner.split_once('.').ok_or_else(bad)?;
            let number = |n: &str| n.parse::<u32>().map_err(|_| bad());
            Some((number(origin)?, number(length)?))
        }
    };
    Ok(Some(BinaryItem {
        size_only,
        peek,
        part,
        partial,
    }))
}

/// APPEND's `~{n}` message: taken out, a one-byte stand-in left for imap-codec.
pub(super) fn append(tokens: &[Token], edit: &mut Edit, extras: &mut Extras) {
    if let Some(i) = tokens.iter().position(|t| t.kind == Kind::Literal8) {
        extras.append_binary = Some(tokens[i].value.clone());
        edit.replace(tokens, i, i, "{1}\r\n.");
    }
}
