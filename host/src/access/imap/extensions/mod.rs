//! Extension syntax that imap-codec 1.0 does not parse, taken out of a command before imap-codec
//! decodes the rest. The command is cut into tokens in one pass (`lexer`); each extension's
//! extractor takes its parts out of them into [`Extras`] and rewrites the command (`edit`), and
//! the rest goes on to imap-codec byte for byte:
//!
//! - `condstore`: CONDSTORE and QRESYNC (RFC 7162) beyond imap-codec's ENABLE and STATUS item:
//!   SELECT parameters, FETCH modifiers, STORE `UNCHANGEDSINCE`, the SEARCH key `MODSEQ`;
//! - `fetch`, `binary`: the FETCH items MODSEQ and BINARY (RFC 3516), `~{n}` APPEND data;
//! - `search`: ESEARCH's `RETURN (...)` (RFC 4731, 9394), SORT and THREAD (RFC 5256);
//! - `list`: LIST-EXTENDED and LIST-STATUS (RFC 5258, 5819);
//! - `mailbox`: STATUS's SIZE (RFC 8438), CREATE's special uses (RFC 6154).
//!
//! Here: which extractor a command goes to, SEARCHRES's `$` (RFC 5182), and UTF-8 quoted
//! strings (IMAP4rev2) handed on as literals.

use std::borrow::Cow;

mod binary;
mod condstore;
mod edit;
mod extras;
mod fetch;
mod lexer;
mod list;
mod mailbox;
mod search;
#[cfg(test)]
mod tests;

use super::{budget, sets};
use edit::Edit;
pub use extras::*;
pub(super) use lexer::{closing, lex, Kind, Token};
pub use mailbox::status_items;

/// What the session knows that a rewrite needs.
pub trait Context {
    /// A search key for the messages changed at or after `since` (the SEARCH key MODSEQ).
    fn changed_since(&self, since: u64) -> String;
}

/// Why a command's extension syntax was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Malformed: a BAD reply's text.
    Bad(String),
    /// Well formed, but it would expand past the command's budget: a `NO [LIMIT]` reply's text.
    Limit(String),
}

impl From<String> for Refused {
    fn from(why: String) -> Refused {
        Refused::Bad(why)
    }
}

/// Takes the extension syntax out of `command`; `context.changed_since(n)` answers the SEARCH key
/// `MODSEQ n` with a search key imap-codec knows (the UIDs changed at or after `n`). Commands
/// without any come back unchanged. An error is a BAD reply's text.
pub fn take<'a>(
    command: &'a [u8],
    context: &dyn Context,
) -> Result<(Cow<'a, [u8]>, Extras), Refused> {
    let mut extras = Extras::default();
    let verb_at = |tokens: &[Token]| usize::from(tokens.get(1).is_some_and(|t| t.is("UID"))) + 1;
    // Only commands that can carry extension syntax are looked at.
    let head: Vec<&[u8]> = command.splitn(4, |&b| b == b' ').take(3).collect();
    let interesting = head.iter().skip(1).any(|w| {
        [
            &b"SELECT"[..],
            b"EXAMINE",
            b"FETCH",
            b"STORE",
            b"SEARCH",
            b"SORT",
            b"THREAD",
            b"LIST",
            b"STATUS",
            b"APPEND",
            b"COPY",
            b"MOVE",
            b"CREATE",
        ]
        .iter()
        .any(|v| w.eq_ignore_ascii_case(v))
    });
    // UTF-8 in quoted strings (IMAP4rev2) is handed to imap-codec 1.0 as literals, which it
    // takes whatever their bytes.
    let eight_bit = command.iter().any(|&b| b >= 0x80);
    if !interesting && !eight_bit {
        return Ok((Cow::Borrowed(command), extras));
    }
    let tokens = lex(command)?;
    let v = verb_at(&tokens);
    let Some(verb) = tokens.get(v).map(|t| t.text().to_ascii_uppercase()) else {
        return Ok((Cow::Borrowed(command), extras));
    };
    let mut edit = Edit {
        bytes: command,
        cuts: Vec::new(),
        expanded: 0,
    };
    // SEARCHRES: `$` is a reference to the saved result, resolved after parsing (see `sets`),
    // never its text; a client's own set that looks like the reference is turned around.
    let takes_sets =
        ["FETCH", "STORE", "COPY", "MOVE", "SEARCH", "SORT", "THREAD"].contains(&verb.as_str());
    for (i, token) in tokens.iter().enumerate().skip(v + 1).filter(|_| takes_sets) {
        if token.kind != Kind::Atom {
            continue;
        }
        if token.value == b"$" {
            edit.replace(&tokens, i, i, sets::SAVED_MARK);
        } else if memchr::memmem::find(&token.value, sets::SAVED_MARK.as_bytes()).is_some() {
            let text = token.text();
            let turned: Vec<&str> = text
                .split(',')
                .map(|s| match s {
                    sets::SAVED_MARK => sets::SAVED_MARK_FORWARD,
                    other => other,
                })
                .collect();
            edit.replace(&tokens, i, i, &turned.join(","));
        }
    }
    match verb.as_str() {
        "SELECT" | "EXAMINE" => condstore::select(&tokens, v, &mut edit, &mut extras)?,
        "FETCH" => fetch::fetch(&tokens, v, &mut edit, &mut extras)?,
        "STORE" => condstore::store(&tokens, v, &mut edit, &mut extras)?,
        "SEARCH" => search::search(&tokens, v, &mut edit, &mut extras, context)?,
        "SORT" => search::sort(&tokens, v, &mut edit, &mut extras, context)?,
        "THREAD" => search::thread(&tokens, v, &mut edit, &mut extras, context)?,
        "LIST" => list::list(&tokens, v, &mut edit, &mut extras)?,
        "STATUS" => mailbox::status(&tokens, v, &mut edit)?,
        "CREATE" => mailbox::create(&tokens, v, &mut edit, &mut extras)?,
        "APPEND" => binary::append(&tokens, &mut edit, &mut extras),
        _ => {}
    }
    if edit.expanded > budget::EXPANSION {
        return Err(Refused::Limit(
            "The MODSEQ keys expand too far, narrow the search down".into(),
        ));
    }
    if eight_bit {
        for token in tokens.iter().filter(|t| t.kind == Kind::Quoted) {
            let inside_a_cut = edit
                .cuts
                .iter()
                .any(|c| c.0 < token.end && token.start < c.1);
            if token.value.iter().any(|&b| b >= 0x80) && !inside_a_cut {
                let mut literal = format!("{{{}+}}\r\n", token.value.len()).into_bytes();
                literal.extend_from_slice(&token.value);
                edit.cuts.push((token.start, token.end, literal));
            }
        }
    }
    if edit.cuts.is_empty() {
        return Ok((Cow::Borrowed(command), extras));
    }
    Ok((Cow::Owned(edit.finish()), extras))
}
