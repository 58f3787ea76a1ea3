//! FETCH items imap-codec 1.0 does not know: MODSEQ (RFC 7162) and BINARY (RFC 3516). The
//! modifiers after the items are CONDSTORE's (see `condstore`).

use super::binary;
use super::condstore;
use super::edit::Edit;
use super::lexer::{closing, Kind, Token};
use super::Extras;

/// FETCH: MODSEQ among the items, and modifiers after them.
pub(super) fn fetch(
    tokens: &[Token],
    v: usize,
    edit: &mut Edit,
    extras: &mut Extras,
) -> Result<(), String> {
    let items = v + 2;
    let Some(first) = tokens.get(items) else {
        return Ok(());
    };
    let (list, after) = if first.kind == Kind::Open {
        let close = closing(tokens, items)?;
        (items + 1..close, close + 1)
    } else {
        (items..items + 1, items + 1)
    };
    // MODSEQ and BINARY items are ours; the rest is imap-codec's.
    let mut ours = Vec::new();
    for i in list.clone() {
        if tokens[i].is("MODSEQ") {
            extras.fetch_modseq = true;
            ours.push(i);
        } else if let Some(item) = binary::item(&tokens[i])? {
            extras.binary.push(item);
            ours.push(i);
        }
    }
    for (n, &i) in ours.iter().enumerate() {
        // imap-codec needs one item: when all are ours, a UID stands in (and is not shown).
        let stand_in = n == 0 && ours.len() == list.len();
        edit.replace(tokens, i, i, if stand_in { "UID" } else { "" });
        extras.fetch_uid_stand_in |= stand_in;
    }
    condstore::fetch_modifiers(tokens, after, edit, extras)
}
