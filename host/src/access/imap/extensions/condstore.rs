//! CONDSTORE and QRESYNC (RFC 7162) beyond what imap-codec 1.0 reads (it reads ENABLE
//! CONDSTORE and the STATUS item HIGHESTMODSEQ, which are left to it): SELECT/EXAMINE
//! parameters, FETCH modifiers, STORE `UNCHANGEDSINCE` and the SEARCH key `MODSEQ`.

use super::edit::Edit;
use super::lexer::{list_if_at, number, Kind, Token};
use super::{Context, Extras, SelectParams};
use crate::access::imap::budget;

pub(super) fn select(
    tokens: &[Token],
    v: usize,
    edit: &mut Edit,
    extras: &mut Extras,
) -> Result<(), String> {
    let open = v + 2;
    let Some(close) = list_if_at(tokens, open)? else {
        return Ok(());
    };
    let inside = &tokens[open + 1..close];
    match inside.first() {
        Some(t) if t.is("CONDSTORE") && inside.len() == 1 => {
            extras.select = Some(SelectParams::CondStore)
        }
        Some(t) if t.is("QRESYNC") => {
            let params = inside.get(1).filter(|t| t.kind == Kind::Open);
            if params.is_none() {
                return Err("QRESYNC needs parameters".into());
            }
            let uid_validity = number(inside.get(2), "UIDVALIDITY")?;
            let modseq = number(inside.get(3), "the mod-sequence")?;
            let known_uids = inside
                .get(4)
                .filter(|t| t.kind == Kind::Atom)
                .map(Token::text);
            extras.select = Some(SelectParams::Qresync {
                uid_validity,
                modseq,
                known_uids,
            });
        }
        _ => return Err("unknown SELECT parameter".into()),
    }
    edit.replace(tokens, open, close, "");
    Ok(())
}

/// FETCH modifiers, `(CHANGEDSINCE n VANISHED)`, when the list after the items starts at
/// `after`.
pub(super) fn fetch_modifiers(
    tokens: &[Token],
    after: usize,
    edit: &mut Edit,
    extras: &mut Extras,
) -> Result<(), String> {
    let Some(close) = list_if_at(tokens, after)? else {
        return Ok(());
    };
    let mut i = after + 1;
    while i < close {
        if tokens[i].is("CHANGEDSINCE") {
            extras.changed_since = Some(number(tokens.get(i + 1), "CHANGEDSINCE")?);
            i += 2;
        } else if tokens[i].is("VANISHED") {
            extras.vanished = true;
            i += 1;
        } else {
            return Err(format!("unknown FETCH modifier {}", tokens[i].text()));
        }
    }
    if extras.vanished && extras.changed_since.is_none() {
        return Err("VANISHED needs CHANGEDSINCE".into());
    }
    edit.replace(tokens, after, close, "");
    Ok(())
}

pub(super) fn store(
    tokens: &[Token],
    v: usize,
    edit: &mut Edit,
    extras: &mut Extras,
) -> Result<(), String> {
    let open = v + 2;
    let Some(close) = list_if_at(tokens, open)? else {
        return Ok(());
    };
    if close != open + 3 || !tokens[open + 1].is("UNCHANGEDSINCE") {
        return Err("unknown STORE modifier".into());
    }
    extras.unchanged_since = Some(number(tokens.get(open + 2), "UNCHANGEDSINCE")?);
    edit.replace(tokens, open, close, "");
    Ok(())
}

/// `MODSEQ [entry-name entry-type] n` keys anywhere in the criteria, from `from` on.
pub(super) fn modseq_keys(
    tokens: &[Token],
    from: usize,
    edit: &mut Edit,
    extras: &mut Extras,
    context: &dyn Context,
) -> Result<(), String> {
    let mut i = from;
    while i < tokens.len() {
        if tokens[i].is("MODSEQ") {
            let with_entry = tokens.get(i + 1).map(|t| t.kind) == Some(Kind::Quoted);
            let at = if with_entry { i + 3 } else { i + 1 };
            let since = number(tokens.get(at), "MODSEQ")?;
            if edit.expanded > budget::EXPANSION {
                // Over the budget already: the caller refuses the command.
                return Ok(());
            }
            let expansion = context.changed_since(since);
            edit.expanded = edit.expanded.saturating_add(expansion.len());
            edit.replace(tokens, i, at, &expansion);
            extras.search_modseq = true;
            i = at + 1;
        } else {
            i += 1;
        }
    }
    Ok(())
}
