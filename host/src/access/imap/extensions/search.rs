//! SEARCH, SORT and THREAD beyond imap-codec 1.0: ESEARCH's `RETURN (...)` (RFC 4731, with
//! PARTIAL, RFC 9394), and SORT (RFC 5256, ESORT RFC 5267) and THREAD (RFC 5256) rewritten to
//! the SEARCH they contain. `MODSEQ` keys in their criteria are CONDSTORE's (see `condstore`).

use super::condstore::modseq_keys;
use super::edit::Edit;
use super::lexer::{keyword_list, upper, Token};
use super::{Context, Extras, ReturnOption, SortKey, SortKind, ThreadAlgorithm};
use crate::access::imap::partial;

pub(super) fn search(
    tokens: &[Token],
    v: usize,
    edit: &mut Edit,
    extras: &mut Extras,
    context: &dyn Context,
) -> Result<(), String> {
    let mut criteria = v + 1;
    if tokens.get(criteria).is_some_and(|t| t.is("RETURN")) {
        let close = return_options(tokens, criteria + 1, extras)?;
        edit.replace(tokens, criteria, close, "");
        criteria = close + 1;
    }
    modseq_keys(tokens, criteria, edit, extras, context)
}

/// The `RETURN (...)` list whose `(` is at `open` (SEARCH, SORT); the index of its `)`.
fn return_options(tokens: &[Token], open: usize, extras: &mut Extras) -> Result<usize, String> {
    let (words, close) = keyword_list(tokens, open, "RETURN")?;
    let mut words = upper(words).into_iter();
    let mut options = Vec::new();
    while let Some(word) = words.next() {
        let option = match word.as_str() {
            "MIN" => ReturnOption::Min,
            "MAX" => ReturnOption::Max,
            "ALL" => ReturnOption::All,
            "COUNT" => ReturnOption::Count,
            "SAVE" => ReturnOption::Save,
            "CONTEXT" => ReturnOption::Context,
            "UPDATE" => ReturnOption::Update,
            "PARTIAL" => {
                let range = words.next().ok_or("PARTIAL needs a range")?;
                ReturnOption::Partial(partial::Range::parse(&range)?)
            }
            other => return Err(format!("unknown RETURN option {other}")),
        };
        options.push(option);
    }
    // RFC 9394 §3.1: PARTIAL and ALL cannot be asked for together.
    let partial = options
        .iter()
        .any(|o| matches!(o, ReturnOption::Partial(_)));
    if partial && options.contains(&ReturnOption::All) {
        return Err("PARTIAL and ALL together".into());
    }
    extras.search_return = Some(options);
    Ok(close)
}

pub(super) fn sort(
    tokens: &[Token],
    v: usize,
    edit: &mut Edit,
    extras: &mut Extras,
    context: &dyn Context,
) -> Result<(), String> {
    let mut open = v + 1;
    // ESORT (RFC 5267): `SORT RETURN (...) (keys) charset criteria`.
    if tokens.get(open).is_some_and(|t| t.is("RETURN")) {
        let returns = return_options(tokens, open + 1, extras)?;
        edit.replace(tokens, open, returns, "");
        open = returns + 1;
    }
    let (words, close) = keyword_list(tokens, open, "SORT criteria")?;
    let mut keys = Vec::new();
    let mut reverse = false;
    for word in upper(words) {
        let kind = match word.as_str() {
            "REVERSE" => {
                reverse = true;
                continue;
            }
            "ARRIVAL" => SortKind::Arrival,
            "CC" => SortKind::Cc,
            "DATE" => SortKind::Date,
            "FROM" => SortKind::From,
            "SIZE" => SortKind::Size,
            "SUBJECT" => SortKind::Subject,
            "TO" => SortKind::To,
            "DISPLAYFROM" => SortKind::DisplayFrom,
            "DISPLAYTO" => SortKind::DisplayTo,
            other => return Err(format!("unknown sort key {other}")),
        };
        keys.push(SortKey { reverse, kind });
        reverse = false;
    }
    if keys.is_empty() || reverse {
        return Err("bad sort criteria".into());
    }
    if tokens.get(close + 1).is_none() {
        return Err("SORT needs a charset".into());
    }
    extras.sort = Some(keys);
    // `SORT (keys) charset criteria` is `SEARCH CHARSET charset criteria`.
    edit.replace(tokens, v, v, "SEARCH");
    edit.cuts.push((
        tokens[open].start,
        tokens[close + 1].start,
        b"CHARSET ".to_vec(),
    ));
    modseq_keys(tokens, close + 2, edit, extras, context)
}

/// `THREAD algorithm charset criteria` is `SEARCH CHARSET charset criteria`, threaded.
pub(super) fn thread(
    tokens: &[Token],
    v: usize,
    edit: &mut Edit,
    extras: &mut Extras,
    context: &dyn Context,
) -> Result<(), String> {
    let algorithm = match tokens.get(v + 1) {
        Some(t) if t.is("REFERENCES") => ThreadAlgorithm::References,
        Some(t) if t.is("ORDEREDSUBJECT") => ThreadAlgorithm::OrderedSubject,
        Some(t) => return Err(format!("unknown THREAD algorithm {}", t.text())),
        None => return Err("THREAD needs an algorithm".into()),
    };
    if tokens.get(v + 2).is_none() {
        return Err("THREAD needs a charset".into());
    }
    extras.thread = Some(algorithm);
    edit.replace(tokens, v, v + 1, "SEARCH CHARSET");
    modseq_keys(tokens, v + 3, edit, extras, context)
}
