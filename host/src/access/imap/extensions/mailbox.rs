//! Commands on a mailbox name whose items imap-codec 1.0 lacks: STATUS's SIZE (RFC 8438) and
//! CREATE's special uses (RFC 6154 §3). imap-codec reads the rest of STATUS itself (DELETED of
//! RFC 9051, HIGHESTMODSEQ of RFC 7162).

use imap_codec::imap_types::status::StatusDataItemName;

use super::edit::Edit;
use super::lexer::{keyword_list, list_if_at, Kind, Token};
use super::Extras;
use crate::access::imap::budget;

/// What SIZE is handed to imap-codec as: an item it reads (RFC 9208's, of QUOTA) that this
/// server does not offer, so that one a client sends itself is refused here.
const SIZE_STAND_IN: &str = "DELETED-STORAGE";

/// STATUS items: imap-codec reads them all (an unknown one is its BAD) except SIZE, which
/// stands in as [`SIZE_STAND_IN`] in its place and comes back as SIZE from [`status_items`].
pub(super) fn status(tokens: &[Token], v: usize, edit: &mut Edit) -> Result<(), String> {
    let open = v + 2;
    if tokens.get(open).map(|t| t.kind) != Some(Kind::Open) {
        return Ok(());
    }
    let (items, _) = keyword_list(tokens, open, "STATUS")?;
    for (i, item) in items.iter().enumerate() {
        if item.eq_ignore_ascii_case(SIZE_STAND_IN) {
            return Err(format!("unknown STATUS item {SIZE_STAND_IN}"));
        }
        if item.eq_ignore_ascii_case("SIZE") {
            let at = open + 1 + i;
            edit.replace(tokens, at, at, SIZE_STAND_IN);
        }
    }
    Ok(())
}

/// The STATUS items imap-codec read, in the order asked, named as the session answers them.
pub fn status_items(names: &[StatusDataItemName]) -> Vec<String> {
    let name = |item: &StatusDataItemName| match item {
        StatusDataItemName::Messages => "MESSAGES",
        StatusDataItemName::Recent => "RECENT",
        StatusDataItemName::UidNext => "UIDNEXT",
        StatusDataItemName::UidValidity => "UIDVALIDITY",
        StatusDataItemName::Unseen => "UNSEEN",
        StatusDataItemName::Deleted => "DELETED",
        StatusDataItemName::DeletedStorage => "SIZE",
        StatusDataItemName::HighestModSeq => "HIGHESTMODSEQ",
    };
    names.iter().map(|item| name(item).to_string()).collect()
}

/// `CREATE name (USE (attributes))`: the parameters are ours, the name imap-codec's.
pub(super) fn create(
    tokens: &[Token],
    v: usize,
    edit: &mut Edit,
    extras: &mut Extras,
) -> Result<(), String> {
    let open = v + 2;
    let Some(close) = list_if_at(tokens, open)? else {
        return Ok(());
    };
    let uses = open + 2;
    if !tokens.get(open + 1).is_some_and(|t| t.is("USE")) {
        return Err("unknown CREATE parameter".into());
    }
    let (attributes, uses_close) = keyword_list(tokens, uses, "USE")?;
    if close != uses_close + 1 {
        return Err("unknown CREATE parameter".into());
    }
    if attributes.len() > budget::FLAGS_PER_COMMAND {
        return Err("too many special uses".into());
    }
    extras.create_use = Some(attributes);
    edit.replace(tokens, open, close, "");
    Ok(())
}
