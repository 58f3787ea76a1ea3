//! Extension syntax that imap-codec 1.0 does not parse, taken out of a command before imap-codec
//! decodes the rest: CONDSTORE and QRESYNC (RFC 7162: SELECT parameters, FETCH `MODSEQ` and
//! `CHANGEDSINCE`/`VANISHED`, STORE `UNCHANGEDSINCE`, the SEARCH key `MODSEQ`), ESEARCH
//! (RFC 4731: `SEARCH RETURN (...)`), SORT (RFC 5256: rewritten to the SEARCH it contains), and
//! LIST-EXTENDED / LIST-STATUS (RFC 5258, 5819: selection and return options, several
//! patterns). The command is cut into tokens (atoms with their `[...]` sections, quoted
//! strings, literals, parentheses) in one pass, literals skipped by their length; the parts
//! taken out are what [`Extras`] holds, the rest goes on to imap-codec byte for byte.

use std::borrow::Cow;

use super::{budget, partial, sets};

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

/// What a command's extension syntax said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    pub select: Option<SelectParams>,
    /// FETCH asked for MODSEQ.
    pub fetch_modseq: bool,
    /// BINARY, BINARY.PEEK and BINARY.SIZE items (RFC 3516).
    pub binary: Vec<BinaryItem>,
    /// The FETCH named no item imap-codec knows (only MODSEQ or BINARY): `UID` stood in.
    pub fetch_uid_stand_in: bool,
    pub changed_since: Option<u64>,
    pub vanished: bool,
    pub unchanged_since: Option<u64>,
    /// `SEARCH RETURN (...)`: the options, `[]` for `RETURN ()`.
    pub search_return: Option<Vec<ReturnOption>>,
    /// The SEARCH used the MODSEQ key (its reply then carries the highest mod-sequence).
    pub search_modseq: bool,
    pub sort: Option<Vec<SortKey>>,
    /// THREAD (RFC 5256): the command was `THREAD algorithm charset criteria`.
    pub thread: Option<ThreadAlgorithm>,
    pub list: Option<ListExtras>,
    /// The message of an APPEND sent as `~{n}` binary data (RFC 3516), which imap-codec cannot
    /// take: a one-byte stand-in went to it instead.
    pub append_binary: Option<Vec<u8>>,
    /// STATUS items (upper case), read here so that SIZE and DELETED (RFC 9051) need nothing
    /// from imap-codec.
    pub status: Option<Vec<String>>,
    /// CREATE-SPECIAL-USE (RFC 6154 §3): `CREATE name (USE (\Sent ...))`, the uses as sent.
    pub create_use: Option<Vec<String>>,
}

/// A FETCH BINARY item: `BINARY[1.2]<0.100>`, `BINARY.PEEK[]`, `BINARY.SIZE[2]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryItem {
    pub size_only: bool,
    pub peek: bool,
    /// Part numbers; empty for the whole message.
    pub part: Vec<u32>,
    /// (origin, length).
    pub partial: Option<(u32, u32)>,
}

impl BinaryItem {
    /// `1.2`, as the response names the section.
    pub fn section(&self) -> String {
        self.part
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// SELECT/EXAMINE parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectParams {
    CondStore,
    Qresync {
        uid_validity: u32,
        modseq: u64,
        known_uids: Option<String>,
    },
}

pub use super::partial::ReturnOption;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadAlgorithm {
    References,
    OrderedSubject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKind {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
    DisplayFrom,
    DisplayTo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    pub reverse: bool,
    pub kind: SortKind,
}

/// LIST-EXTENDED options (upper-cased) and patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListExtras {
    pub selection: Vec<String>,
    pub patterns: Vec<String>,
    pub returns: Vec<String>,
    /// `RETURN (STATUS (...))`: the status items asked for.
    pub status: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Atom,
    Quoted,
    Literal,
    /// `~{n}` (RFC 3516): binary data, NULs allowed.
    Literal8,
    Open,
    Close,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) kind: Kind,
    pub(super) start: usize,
    pub(super) end: usize,
    /// An atom's or quoted string's text, a literal's bytes.
    pub(super) value: Vec<u8>,
}

impl Token {
    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }

    pub(super) fn is(&self, word: &str) -> bool {
        self.kind == Kind::Atom && self.value.eq_ignore_ascii_case(word.as_bytes())
    }
}

/// Cuts a command into tokens, stopping at its final CRLF.
pub(super) fn lex(bytes: &[u8]) -> Result<Vec<Token>, String> {
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
fn list_at(tokens: &[Token], open: usize, what: &str) -> Result<usize, String> {
    if tokens.get(open).map(|t| t.kind) != Some(Kind::Open) {
        return Err(what.into());
    }
    closing(tokens, open)
}

/// The index of the `)` that closes the `(` at `open`.
pub(super) fn closing(tokens: &[Token], open: usize) -> Result<usize, String> {
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

fn number<T: std::str::FromStr>(token: Option<&Token>, what: &str) -> Result<T, String> {
    token
        .filter(|t| t.kind == Kind::Atom)
        .and_then(|t| t.text().parse().ok())
        .ok_or_else(|| format!("{what} must be a number"))
}

/// The command with byte ranges replaced.
struct Edit<'a> {
    bytes: &'a [u8],
    cuts: Vec<(usize, usize, Vec<u8>)>,
    /// Bytes of text the rewrites expanded into so far (MODSEQ keys), against
    /// [`budget::EXPANSION`].
    expanded: usize,
}

impl Edit<'_> {
    /// Replaces tokens `from..=to`; a removal takes a space beside them along.
    fn replace(&mut self, tokens: &[Token], from: usize, to: usize, with: &str) {
        let (mut start, mut end) = (tokens[from].start, tokens[to].end);
        if with.is_empty() {
            if start > 0 && self.bytes[start - 1] == b' ' {
                start -= 1;
            } else if self.bytes.get(end) == Some(&b' ') {
                end += 1;
            }
        }
        self.cuts.push((start, end, with.as_bytes().to_vec()));
    }

    fn finish(mut self) -> Vec<u8> {
        self.cuts.sort_by_key(|c| c.0);
        let mut out = Vec::with_capacity(self.bytes.len());
        let mut at = 0;
        for (start, end, with) in self.cuts {
            out.extend_from_slice(&self.bytes[at..start]);
            out.extend(with);
            at = end;
        }
        out.extend_from_slice(&self.bytes[at..]);
        out
    }
}

/// Takes the extension syntax out of `command`; `uids_since(n)` answers the SEARCH key
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
        "SELECT" | "EXAMINE" => select(&tokens, v, &mut edit, &mut extras)?,
        "FETCH" => fetch(&tokens, v, &mut edit, &mut extras)?,
        "STORE" => store(&tokens, v, &mut edit, &mut extras)?,
        "SEARCH" => search(&tokens, v, &mut edit, &mut extras, context)?,
        "SORT" => sort(&tokens, v, &mut edit, &mut extras, context)?,
        "THREAD" => thread(&tokens, v, &mut edit, &mut extras, context)?,
        "LIST" => list(&tokens, v, &mut edit, &mut extras)?,
        "STATUS" => status(&tokens, v, &mut edit, &mut extras)?,
        "CREATE" => create(&tokens, v, &mut edit, &mut extras)?,
        "APPEND" => {
            if let Some(i) = tokens.iter().position(|t| t.kind == Kind::Literal8) {
                extras.append_binary = Some(tokens[i].value.clone());
                edit.replace(&tokens, i, i, "{1}\r\n.");
            }
        }
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

fn select(tokens: &[Token], v: usize, edit: &mut Edit, extras: &mut Extras) -> Result<(), String> {
    let open = v + 2;
    if tokens.get(open).map(|t| t.kind) != Some(Kind::Open) {
        return Ok(());
    }
    let close = closing(tokens, open)?;
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

/// FETCH: MODSEQ among the items, and modifiers after them.
fn fetch(tokens: &[Token], v: usize, edit: &mut Edit, extras: &mut Extras) -> Result<(), String> {
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
        } else if let Some(item) = binary_item(&tokens[i])? {
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
    if tokens.get(after).map(|t| t.kind) != Some(Kind::Open) {
        return Ok(());
    }
    let close = closing(tokens, after)?;
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

/// A BINARY item, `None` for any other atom.
fn binary_item(token: &Token) -> Result<Option<BinaryItem>, String> {
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

fn store(tokens: &[Token], v: usize, edit: &mut Edit, extras: &mut Extras) -> Result<(), String> {
    let open = v + 2;
    if tokens.get(open).map(|t| t.kind) != Some(Kind::Open) {
        return Ok(());
    }
    let close = closing(tokens, open)?;
    if close != open + 3 || !tokens[open + 1].is("UNCHANGEDSINCE") {
        return Err("unknown STORE modifier".into());
    }
    extras.unchanged_since = Some(number(tokens.get(open + 2), "UNCHANGEDSINCE")?);
    edit.replace(tokens, open, close, "");
    Ok(())
}

/// `MODSEQ [entry-name entry-type] n` keys anywhere in the criteria, from `from` on.
fn modseq_keys(
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

fn search(
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
    let close = list_at(tokens, open, "RETURN needs a list")?;
    let mut options = Vec::new();
    let mut i = open + 1;
    while i < close {
        let option = match tokens[i].text().to_ascii_uppercase().as_str() {
            "MIN" => ReturnOption::Min,
            "MAX" => ReturnOption::Max,
            "ALL" => ReturnOption::All,
            "COUNT" => ReturnOption::Count,
            "SAVE" => ReturnOption::Save,
            "CONTEXT" => ReturnOption::Context,
            "UPDATE" => ReturnOption::Update,
            "PARTIAL" => {
                i += 1;
                let range = tokens
                    .get(i)
                    .filter(|t| i < close && t.kind == Kind::Atom)
                    .ok_or("PARTIAL needs a range")?;
                ReturnOption::Partial(partial::Range::parse(&range.text())?)
            }
            other => return Err(format!("unknown RETURN option {other}")),
        };
        options.push(option);
        i += 1;
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

fn sort(
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
    let close = list_at(tokens, open, "SORT needs sort criteria")?;
    let mut keys = Vec::new();
    let mut reverse = false;
    for t in &tokens[open + 1..close] {
        let kind = match t.text().to_ascii_uppercase().as_str() {
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

/// The STATUS items the session knows how to answer.
pub const STATUS_ITEMS: [&str; 8] = [
    "MESSAGES",
    "RECENT",
    "UIDNEXT",
    "UIDVALIDITY",
    "UNSEEN",
    "HIGHESTMODSEQ",
    "SIZE",
    "DELETED",
];

fn status(tokens: &[Token], v: usize, edit: &mut Edit, extras: &mut Extras) -> Result<(), String> {
    let open = v + 2;
    let close = list_at(tokens, open, "STATUS needs a list of items")?;
    let items: Vec<String> = strings_of(&tokens[open + 1..close])
        .into_iter()
        .map(|s| s.to_ascii_uppercase())
        .collect();
    if items.is_empty() {
        return Err("STATUS needs at least one item".into());
    }
    if let Some(unknown) = items.iter().find(|i| !STATUS_ITEMS.contains(&i.as_str())) {
        return Err(format!("unknown STATUS item {unknown}"));
    }
    extras.status = Some(items);
    // imap-codec still reads the mailbox name; the items are ours.
    edit.replace(tokens, open, close, "(MESSAGES)");
    Ok(())
}

/// `CREATE name (USE (attributes))`: the parameters are ours, the name imap-codec's.
fn create(tokens: &[Token], v: usize, edit: &mut Edit, extras: &mut Extras) -> Result<(), String> {
    let open = v + 2;
    if tokens.get(open).map(|t| t.kind) != Some(Kind::Open) {
        return Ok(());
    }
    let close = closing(tokens, open)?;
    let uses = open + 2;
    if !tokens.get(open + 1).is_some_and(|t| t.is("USE"))
        || close != list_at(tokens, uses, "USE needs a list")? + 1
    {
        return Err("unknown CREATE parameter".into());
    }
    let attributes = strings_of(&tokens[uses + 1..close - 1]);
    if attributes.len() > budget::FLAGS_PER_COMMAND {
        return Err("too many special uses".into());
    }
    extras.create_use = Some(attributes);
    edit.replace(tokens, open, close, "");
    Ok(())
}

/// `THREAD algorithm charset criteria` is `SEARCH CHARSET charset criteria`, threaded.
fn thread(
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

fn strings_of(tokens: &[Token]) -> Vec<String> {
    tokens
        .iter()
        .filter(|t| matches!(t.kind, Kind::Atom | Kind::Quoted | Kind::Literal))
        .map(Token::text)
        .collect()
}

fn list(tokens: &[Token], v: usize, edit: &mut Edit, extras: &mut Extras) -> Result<(), String> {
    let mut at = v + 1;
    let mut found = ListExtras::default();
    let mut extended = false;
    if tokens.get(at).map(|t| t.kind) == Some(Kind::Open) {
        let close = closing(tokens, at)?;
        found.selection = strings_of(&tokens[at + 1..close])
            .into_iter()
            .map(|s| s.to_ascii_uppercase())
            .collect();
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
        let mut i = open + 1;
        while i < close {
            let word = tokens[i].text().to_ascii_uppercase();
            if word == "STATUS" && tokens.get(i + 1).map(|t| t.kind) == Some(Kind::Open) {
                let end = closing(tokens, i + 1)?;
                found.status = strings_of(&tokens[i + 2..end])
                    .into_iter()
                    .map(|s| s.to_ascii_uppercase())
                    .collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// MODSEQ n is `UID n:*`; the saved result is UIDs 4 and 6, sequence numbers 2 and 3.
    struct Session;

    impl Context for Session {
        fn changed_since(&self, since: u64) -> String {
            format!("UID {since}:*")
        }
    }

    fn refused(command: &[u8]) -> bool {
        take(command, &Session).is_err()
    }

    fn taken(command: &str) -> (String, Extras) {
        let (bytes, extras) = take(command.as_bytes(), &Session).expect("parses");
        (String::from_utf8(bytes.into_owned()).expect("utf8"), extras)
    }

    #[test]
    fn plain_commands_pass_unchanged() {
        for c in [
            "a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)])\r\n",
            "a SELECT INBOX\r\n",
            "a LOGIN {5}\r\nalice {3}\r\npwd\r\n",
            "a UID SEARCH CHARSET UTF-8 TEXT {3}\r\n(x)\r\n",
        ] {
            assert_eq!(taken(c), (c.to_string(), Extras::default()));
        }
    }

    #[test]
    fn condstore_and_qresync() {
        let (c, e) = taken("a SELECT INBOX (CONDSTORE)\r\n");
        assert_eq!(c, "a SELECT INBOX\r\n");
        assert_eq!(e.select, Some(SelectParams::CondStore));
        let (c, e) =
            taken("a EXAMINE \"x y\" (QRESYNC (67890007 20050715194045000 41,43:211))\r\n");
        assert_eq!(c, "a EXAMINE \"x y\"\r\n");
        assert_eq!(
            e.select,
            Some(SelectParams::Qresync {
                uid_validity: 67890007,
                modseq: 20050715194045000,
                known_uids: Some("41,43:211".into())
            })
        );
        let (c, e) = taken("a UID FETCH 1:* (FLAGS MODSEQ) (CHANGEDSINCE 12345 VANISHED)\r\n");
        assert_eq!(c, "a UID FETCH 1:* (FLAGS)\r\n");
        assert!(e.fetch_modseq && e.vanished && !e.fetch_uid_stand_in);
        assert_eq!(e.changed_since, Some(12345));
        let (c, e) = taken("a FETCH 1 MODSEQ\r\n");
        assert_eq!(c, "a FETCH 1 UID\r\n");
        assert!(e.fetch_modseq && e.fetch_uid_stand_in);
        let (c, _) = taken("a FETCH 1 (MODSEQ FLAGS)\r\n");
        assert_eq!(c, "a FETCH 1 (FLAGS)\r\n");
        let (c, e) = taken("a FETCH 1 (MODSEQ)\r\n");
        assert_eq!(c, "a FETCH 1 (UID)\r\n");
        assert!(e.fetch_uid_stand_in);
        let (c, e) = taken("a STORE 1:3 (UNCHANGEDSINCE 7) +FLAGS.SILENT (\\Seen)\r\n");
        assert_eq!(c, "a STORE 1:3 +FLAGS.SILENT (\\Seen)\r\n");
        assert_eq!(e.unchanged_since, Some(7));
        assert!(refused(b"a FETCH 1 FLAGS (VANISHED)\r\n"));
    }

    #[test]
    fn esearch_modseq_and_sort() {
        let (c, e) = taken("a SEARCH RETURN (MIN COUNT) 1:3 MODSEQ \"/flags/\\\\seen\" all 5\r\n");
        assert_eq!(c, "a SEARCH 1:3 UID 5:*\r\n");
        assert_eq!(
            e.search_return,
            Some(vec![ReturnOption::Min, ReturnOption::Count])
        );
        assert!(e.search_modseq);
        let (c, e) = taken("a UID SORT (REVERSE DATE SUBJECT) UTF-8 SEEN\r\n");
        assert_eq!(c, "a UID SEARCH CHARSET UTF-8 SEEN\r\n");
        assert_eq!(
            e.sort,
            Some(vec![
                SortKey {
                    reverse: true,
                    kind: SortKind::Date
                },
                SortKey {
                    reverse: false,
                    kind: SortKind::Subject
                }
            ])
        );
        assert!(refused(b"a SORT () UTF-8 ALL\r\n"));
    }

    #[test]
    fn list_extended() {
        let (c, e) = taken(
            "a LIST (SUBSCRIBED) \"\" (\"a/*\" b) RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n",
        );
        assert_eq!(c, "a LIST \"\" \"\"\r\n");
        assert_eq!(
            e.list,
            Some(ListExtras {
                selection: vec!["SUBSCRIBED".into()],
                patterns: vec!["a/*".into(), "b".into()],
                returns: vec!["CHILDREN".into()],
                status: vec!["MESSAGES".into(), "UNSEEN".into()],
            })
        );
        let (c, e) = taken("a LIST \"\" * RETURN ()\r\n");
        assert_eq!(c, "a LIST \"\" *\r\n");
        assert_eq!(e.list.map(|l| l.patterns), Some(vec!["*".to_string()]));
    }

    #[test]
    fn binary_items() {
        let (c, e) = taken("a FETCH 1 (FLAGS BINARY.PEEK[1.2]<0.10> binary.size[])\r\n");
        assert_eq!(c, "a FETCH 1 (FLAGS)\r\n");
        assert_eq!(
            e.binary,
            [
                BinaryItem {
                    size_only: false,
                    peek: true,
                    part: vec![1, 2],
                    partial: Some((0, 10))
                },
                BinaryItem {
                    size_only: true,
                    peek: true,
                    part: vec![],
                    partial: None
                }
            ]
        );
        let (c, e) = taken("a UID FETCH 1 BINARY[]\r\n");
        assert_eq!(c, "a UID FETCH 1 UID\r\n");
        assert!(e.fetch_uid_stand_in && !e.binary[0].peek);
        for bad in [
            "BINARY[0]",
            "BINARY.SIZE[1]<0.1>",
            "BINARY.FOO[]",
            "BINARY[1]<x>",
        ] {
            let command = format!("a FETCH 1 ({bad})\r\n");
            assert!(refused(command.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn saved_results_stand_in_for_dollar() {
        let (c, e) = taken("a SEARCH RETURN (SAVE) SEEN\r\n");
        assert_eq!(c, "a SEARCH SEEN\r\n");
        assert_eq!(e.search_return, Some(vec![ReturnOption::Save]));
        let mark = sets::SAVED_MARK;
        assert_eq!(
            taken("a FETCH $ FLAGS\r\n").0,
            format!("a FETCH {mark} FLAGS\r\n")
        );
        assert_eq!(
            taken("a UID COPY $ Trash\r\n").0,
            format!("a UID COPY {mark} Trash\r\n")
        );
        // However many: each is a reference of fixed size, never the saved set's text.
        let many = format!("a UID SEARCH {}ALL\r\n", "$ ".repeat(30_000));
        let (c, _) = taken(&many);
        assert_eq!(c.len(), many.len() + 30_000 * (mark.len() - 1));
        // A client's own set that looks like the reference is turned around.
        let own = format!("a FETCH 1,{mark},7 FLAGS\r\n");
        assert_eq!(
            taken(&own).0,
            format!("a FETCH 1,{},7 FLAGS\r\n", sets::SAVED_MARK_FORWARD)
        );
    }

    #[test]
    fn modseq_expansion_is_bounded() {
        struct Wide;
        impl Context for Wide {
            fn changed_since(&self, _: u64) -> String {
                format!("UID {}", "1,".repeat(5_000))
            }
        }
        let many = format!("a SEARCH {}ALL\r\n", "MODSEQ 1 ".repeat(1_000));
        assert!(matches!(
            take(many.as_bytes(), &Wide),
            Err(Refused::Limit(_))
        ));
        assert!(take(b"a SEARCH MODSEQ 1\r\n", &Wide).is_ok());
    }

    #[test]
    fn create_special_use_parameters_are_taken_out() {
        let (c, e) = taken("a CREATE Sent2 (USE (\\Sent \\Archive))\r\n");
        assert_eq!(c, "a CREATE Sent2\r\n");
        assert_eq!(
            e.create_use,
            Some(vec!["\\Sent".to_string(), "\\Archive".into()])
        );
        assert_eq!(taken("a CREATE x\r\n").1.create_use, None);
        assert!(refused(b"a CREATE x (FOO (\\Sent))\r\n"));
        assert!(refused(b"a CREATE x (USE \\Sent)\r\n"));
        assert!(refused(b"a CREATE x (USE (\\Sent) extra)\r\n"));
    }

    #[test]
    fn thread_is_a_search() {
        let (c, e) = taken("a UID THREAD REFERENCES UTF-8 SINCE 1-Feb-1994\r\n");
        assert_eq!(c, "a UID SEARCH CHARSET UTF-8 SINCE 1-Feb-1994\r\n");
        assert_eq!(e.thread, Some(ThreadAlgorithm::References));
        let (c, e) = taken("a THREAD orderedsubject US-ASCII ALL\r\n");
        assert_eq!(c, "a SEARCH CHARSET US-ASCII ALL\r\n");
        assert_eq!(e.thread, Some(ThreadAlgorithm::OrderedSubject));
        assert!(refused(b"a THREAD NEWEST UTF-8 ALL\r\n"));
    }

    #[test]
    fn utf8_quoted_strings_become_literals() {
        let (c, _) = taken("a CREATE \"Entwürfe\"\r\n");
        assert_eq!(c, "a CREATE {9+}\r\nEntwürfe\r\n");
        let (c, e) = taken("a LIST \"\" (\"ü*\" x)\r\n");
        assert_eq!(c, "a LIST \"\" \"\"\r\n");
        assert_eq!(
            e.list.map(|l| l.patterns),
            Some(vec!["ü*".to_string(), "x".into()])
        );
    }

    #[test]
    fn binary_append_data_is_taken_out() {
        let (c, e) = taken("a APPEND INBOX (\\Seen) ~{3}\r\na\0b\r\n");
        assert_eq!(c, "a APPEND INBOX (\\Seen) {1}\r\n.\r\n");
        assert_eq!(e.append_binary, Some(b"a\0b".to_vec()));
        let (c, e) = taken("a APPEND INBOX {3}\r\nabc\r\n");
        assert_eq!(
            (c.as_str(), e.append_binary),
            ("a APPEND INBOX {3}\r\nabc\r\n", None)
        );
    }

    #[test]
    fn status_items_are_read_here() {
        let (c, e) = taken("a STATUS {5}\r\nIN BX (SIZE deleted UIDNEXT)\r\n");
        assert_eq!(c, "a STATUS {5}\r\nIN BX (MESSAGES)\r\n");
        assert_eq!(
            e.status,
            Some(vec!["SIZE".into(), "DELETED".into(), "UIDNEXT".into()])
        );
        assert!(refused(b"a STATUS x (BOGUS)\r\n"));
        assert!(refused(b"a STATUS x ()\r\n"));
    }

    #[test]
    fn damaged_input_is_an_error_not_a_panic() {
        for bad in [
            &b"a FETCH 1 (FLAGS\r\n"[..],
            b"a SEARCH \"open\r\n",
            b"a SELECT x {99999999999999999999}\r\n",
            b"a SELECT x {5}\r\nab",
            b"a LIST (",
            b"a SORT (DATE",
        ] {
            assert!(refused(bad), "{bad:?}");
        }
    }
}
