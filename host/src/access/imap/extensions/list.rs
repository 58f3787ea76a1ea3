//! LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819): selection options, several patterns
//! and return options, which imap-codec 1.0 does not read; it gets `LIST reference ""`.

use super::edit::Edit;
use super::lexer::{closing, keyword_list, list_at, upper, Kind, Token};
use super::{Extras, ListExtras};

/// The patterns of `(pattern ...)`: strings, not keywords (a pattern may be any string).
fn strings_of(tokens: &[Token]) -> Vec<String> {
    tokens
        .iter()
        .filter(|t| matches!(t.kind, Kind::Atom | Kind::Quoted | Kind::Literal))
        .map(Token::text)
        .collect()
}

pub(super) fn list(
    tokens: &[Token],
    v: usize,
    edit: &mut Edit,
    extras: &mut Extras,
) -> Result<(), String> {
    let mut at = v + 1;
    let mut found = ListExtras::default();
    let mut extended = false;
    if tokens.get(at).map(|t| t.kind) == Some(Kind::Open) {
        let (selection, close) = keyword_list(tokens, at, "LIST selection")?;
        found.selection = upper(selection);
        edit.replace(tokens, at, close, "");
        at = close + 1;
        extended = true;
    }
    let reference = at;
    tokens.get(reference).ok_or("LIST needs a reference")?;
    let patterns = reference + 1;
    let after_patterns = match tokens.get(patterns).map(|t| t.kind) {
        Some(Kind::Open) => {
            let close = closing(tokens, patterns)?;
            found.patterns = strings_of(&tokens[patterns + 1..close]);
            edit.replace(tokens, patterns, close, "\"\"");
            extended = true;
            close + 1
        }
        Some(_) => {
            found.patterns = vec![tokens[patterns].text()];
            patterns + 1
        }
        None => return Err("LIST needs a pattern".into()),
    };
    if tokens.get(after_patterns).is_some_and(|t| t.is("RETURN")) {
        let open = after_patterns + 1;
        let close = list_at(tokens, open, "RETURN needs a list")?;
        // Keywords, but one of them, STATUS, takes a list of its own.
        let mut i = open + 1;
        while i < close {
            let word = tokens[i].text().to_ascii_uppercase();
            if word == "STATUS" && tokens.get(i + 1).map(|t| t.kind) == Some(Kind::Open) {
                let (items, end) = keyword_list(tokens, i + 1, "RETURN STATUS")?;
                found.status = upper(items);
                i = end + 1;
            } else {
                found.returns.push(word);
                i += 1;
            }
        }
        edit.replace(tokens, after_patterns, close, "");
        extended = true;
    }
    if extended {
        extras.list = Some(found);
    }
    Ok(())
}
