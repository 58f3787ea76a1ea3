//! The command cut into tokens in one pass: atoms with their `[...]` sections, quoted strings,
//! literals (skipped by their length, so their bytes are never read as syntax) and
//! parentheses; and the few shapes every extractor reads out of them (a list, a keyword list,
//! a number).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::access::imap) enum Kind {
    Atom,
    Quoted,
    Literal,
    /// `~{n}` (RFC 3516): binary data, NULs allowed.
    Literal8,
    Open,
    Close,
}

#[derive(Debug, Clone)]
pub(in crate::access::imap) struct Token {
    pub(in crate::access::imap) kind: Kind,
    pub(in crate::access::imap) start: usize,
    pub(in crate::access::imap) end: usize,
    /// An atom's or quoted string's text, a literal's bytes.
    pub(in crate::access::imap) value: Vec<u8>,
}

impl Token {
    pub(in crate::access::imap) fn text(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }

    pub(in crate::access::imap) fn is(&self, word: &str) -> bool {
        self.kind == Kind::Atom && self.value.eq_ignore_ascii_case(word.as_bytes())
    }
}

/// Cuts a command into tokens, stopping at its final CRLF.
pub(in crate::access::imap) fn lex(bytes: &[u8]) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        match bytes[i] {
            b' ' => i += 1,
            b'\r' | b'\n' => break,
            b'(' | b')' => {
                let kind = if bytes[i] == b'(' {
                    Kind::Open
                } else {
                    Kind::Close
                };
                i += 1;
                tokens.push(Token {
                    kind,
                    start,
                    end: i,
                    value: Vec::new(),
                });
            }
            b'"' => {
                let mut value = Vec::new();
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err("unterminated quoted string".into()),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            value.extend(bytes.get(i + 1));
                            i += 2;
                        }
                        Some(&b) => {
                            value.push(b);
                            i += 1;
                        }
                    }
                }
                i += 1;
                tokens.push(Token {
                    kind: Kind::Quoted,
                    start,
                    end: i,
                    value,
                });
            }
            b'~' if bytes.get(i + 1) == Some(&b'{') => {
                i += 1;
                let mut token = literal_at(bytes, &mut i)?;
                token.start = start;
                token.kind = Kind::Literal8;
                tokens.push(token);
            }
            b'{' => tokens.push(literal_at(bytes, &mut i)?),
            _ => {
                // An atom, with any `[...]` section (which may hold spaces and parentheses).
                let mut depth = 0usize;
                while i < bytes.len() {
                    match bytes[i] {
                        b'[' => depth += 1,
                        b']' => depth = depth.saturating_sub(1),
                        b' ' | b'(' | b')' | b'\r' | b'\n' | b'"' if depth == 0 => break,
                        _ => {}
                    }
                    i += 1;
                }
                tokens.push(Token {
                    kind: Kind::Atom,
                    start,
                    end: i,
                    value: bytes[start..i].to_vec(),
                });
            }
        }
    }
    Ok(tokens)
}

/// The literal whose `{` is at `*i` (length, CRLF, bytes); `*i` moves past it.
fn literal_at(bytes: &[u8], i: &mut usize) -> Result<Token, String> {
    let start = *i;
    let close = bytes[start..]
        .iter()
        .position(|&b| b == b'}')
        .ok_or("bad literal")?;
    let digits = String::from_utf8_lossy(&bytes[start + 1..start + close]);
    let length: usize = digits
        .trim_end_matches('+')
        .parse()
        .map_err(|_| "bad literal length")?;
    let data = start + close + 3; // past "}\r\n"
    let end = data.checked_add(length).ok_or("bad literal length")?;
    let value = bytes.get(data..end).ok_or("short literal")?.to_vec();
    *i = end;
    Ok(Token {
        kind: Kind::Literal,
        start,
        end,
        value,
    })
}

/// The index of the `)` closing the list that must start at `open`; `Err(what)` when none
/// starts there.
pub(super) fn list_at(tokens: &[Token], open: usize, what: &str) -> Result<usize, String> {
    list_if_at(tokens, open)?.ok_or_else(|| what.into())
}

/// The index of the `)` closing the list that starts at `open`, `None` when none starts
/// there (an optional list: SELECT and STORE parameters, FETCH modifiers).
pub(super) fn list_if_at(tokens: &[Token], open: usize) -> Result<Option<usize>, String> {
    match tokens.get(open) {
        Some(t) if t.kind == Kind::Open => closing(tokens, open).map(Some),
        _ => Ok(None),
    }
}

/// The index of the `)` that closes the `(` at `open`.
pub(in crate::access::imap) fn closing(tokens: &[Token], open: usize) -> Result<usize, String> {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t.kind {
            Kind::Open => depth += 1,
            Kind::Close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
    }
    Err("unbalanced parentheses".into())
}

pub(super) fn number<T: std::str::FromStr>(token: Option<&Token>, what: &str) -> Result<T, String> {
    token
        .filter(|t| t.kind == Kind::Atom)
        .and_then(|t| t.text().parse().ok())
        .ok_or_else(|| format!("{what} must be a number"))
}

/// The keywords of the list `(A B ...)` that must start at `open`, as written, and the index
/// of its `)`: the one reader of every flat list of atoms an extension sends (STATUS items,
/// LIST options, RETURN options, sort criteria, special uses). A string, literal or nested list
/// in it is refused; `what` names the list in the error.
pub(super) fn keyword_list(
    tokens: &[Token],
    open: usize,
    what: &str,
) -> Result<(Vec<String>, usize), String> {
    let close = list_at(tokens, open, &format!("{what} needs a list"))?;
    let inside = &tokens[open + 1..close];
    if let Some(other) = inside.iter().find(|t| t.kind != Kind::Atom) {
        let shown = String::from_utf8_lossy(&other.value);
        return Err(format!("{what}: {shown:?} is not a keyword"));
    }
    Ok((inside.iter().map(Token::text).collect(), close))
}

/// Keywords in upper case, as the session compares them.
pub(super) fn upper(words: Vec<String>) -> Vec<String> {
    words.into_iter().map(|w| w.to_ascii_uppercase()).collect()
}
