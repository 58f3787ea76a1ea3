//! Extension syntax that imap-codec 1.0 does not parse, taken out of a command before imap-codec
//! decodes the rest: CONDSTORE and QRESYNC (RFC 7162: SELECT parameters, FETCH `MODSEQ` and
//! `CHANGEDSINCE`/`VANISHED`, STORE `UNCHANGEDSINCE`, the SEARCH key `MODSEQ`), ESEARCH
//! (RFC 4731: `SEARCH RETURN (...)`), SORT (RFC 5256: rewritten to the SEARCH it contains), and
//! LIST-EXTENDED / LIST-STATUS (RFC 5258, 5819: selection and return options, several
//! patterns). The command is cut into tokens (atoms with their `[...]` sections, quoted
//! strings, literals, parentheses) in one pass, literals skipped by their length; the parts
//! taken out are what [`Extras`] holds, the rest goes on to imap-codec byte for byte.

/// What a command's extension syntax said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    pub select: Option<SelectParams>,
    /// FETCH asked for MODSEQ.
    pub fetch_modseq: bool,
    /// The FETCH named no item imap-codec knows (only MODSEQ): `UID` stood in for it.
    pub fetch_uid_stand_in: bool,
    pub changed_since: Option<u64>,
    pub vanished: bool,
    pub unchanged_since: Option<u64>,
    /// `SEARCH RETURN (...)`: the options, `[]` for `RETURN ()`.
    pub search_return: Option<Vec<ReturnOption>>,
    /// The SEARCH used the MODSEQ key (its reply then carries the highest mod-sequence).
    pub search_modseq: bool,
    pub sort: Option<Vec<SortKey>>,
    pub list: Option<ListExtras>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnOption {
    Min,
    Max,
    All,
    Count,
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
enum Kind {
    Atom,
    Quoted,
    Literal,
    Open,
    Close,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
    /// An atom's or quoted string's text, a literal's bytes.
    value: Vec<u8>,
}

impl Token {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }

    fn is(&self, word: &str) -> bool {
        self.kind == Kind::Atom && self.value.eq_ignore_ascii_case(word.as_bytes())
    }
}

/// Cuts a command into tokens, stopping at its final CRLF.
fn lex(bytes: &[u8]) -> Result<Vec<Token>, String> {
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
            b'{' => {
                let close = bytes[i..]
                    .iter()
                    .position(|&b| b == b'}')
                    .ok_or("bad literal")?;
                let digits = String::from_utf8_lossy(&bytes[i + 1..i + close]);
                let length: usize = digits
                    .trim_end_matches('+')
                    .parse()
                    .map_err(|_| "bad literal length")?;
                let data = i + close + 3; // past "}\r\n"
                let end = data.checked_add(length).ok_or("bad literal length")?;
                let value = bytes.get(data..end).ok_or("short literal")?.to_vec();
                i = end;
                tokens.push(Token {
                    kind: Kind::Literal,
                    start,
                    end,
                    value,
                });
            }
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

/// The index of the `)` that closes the `(` at `open`.
fn closing(tokens: &[Token], open: usize) -> Result<usize, String> {
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
pub fn take(
    command: &[u8],
    uids_since: &dyn Fn(u64) -> String,
) -> Result<(Vec<u8>, Extras), String> {
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
            b"LIST",
        ]
        .iter()
        .any(|v| w.eq_ignore_ascii_case(v))
    });
    if !interesting {
        return Ok((command.to_vec(), extras));
    }
    let tokens = lex(command)?;
    let v = verb_at(&tokens);
    let Some(verb) = tokens.get(v).map(|t| t.text().to_ascii_uppercase()) else {
        return Ok((command.to_vec(), extras));
    };
    let mut edit = Edit {
        bytes: command,
        cuts: Vec::new(),
    };
    match verb.as_str() {
        "SELECT" | "EXAMINE" => select(&tokens, v, &mut edit, &mut extras)?,
        "FETCH" => fetch(&tokens, v, &mut edit, &mut extras)?,
        "STORE" => store(&tokens, v, &mut edit, &mut extras)?,
        "SEARCH" => search(&tokens, v, &mut edit, &mut extras, uids_since)?,
        "SORT" => sort(&tokens, v, &mut edit, &mut extras, uids_since)?,
        "LIST" => list(&tokens, v, &mut edit, &mut extras)?,
        _ => {}
    }
    Ok((edit.finish(), extras))
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
    let after = if first.kind == Kind::Open {
        let close = closing(tokens, items)?;
        let named: Vec<usize> = (items + 1..close)
            .filter(|&i| tokens[i].is("MODSEQ"))
            .collect();
        if !named.is_empty() {
            extras.fetch_modseq = true;
            let others = close - items - 1 - named.len();
            for &i in &named {
                edit.replace(tokens, i, i, if others == 0 { "UID" } else { "" });
                if others == 0 {
                    extras.fetch_uid_stand_in = true;
                    break;
                }
            }
            // Any further MODSEQ of an all-MODSEQ list goes too.
            if others == 0 {
                for &i in named.iter().skip(1) {
                    edit.replace(tokens, i, i, "");
                }
            }
        }
        close + 1
    } else {
        if first.is("MODSEQ") {
            extras.fetch_modseq = true;
            extras.fetch_uid_stand_in = true;
            edit.replace(tokens, items, items, "UID");
        }
        items + 1
    };
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
    uids_since: &dyn Fn(u64) -> String,
) -> Result<(), String> {
    let mut i = from;
    while i < tokens.len() {
        if tokens[i].is("MODSEQ") {
            let with_entry = tokens.get(i + 1).map(|t| t.kind) == Some(Kind::Quoted);
            let at = if with_entry { i + 3 } else { i + 1 };
            let since = number(tokens.get(at), "MODSEQ")?;
            edit.replace(tokens, i, at, &uids_since(since));
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
    uids_since: &dyn Fn(u64) -> String,
) -> Result<(), String> {
    let mut criteria = v + 1;
    if tokens.get(criteria).is_some_and(|t| t.is("RETURN")) {
        let open = criteria + 1;
        if tokens.get(open).map(|t| t.kind) != Some(Kind::Open) {
            return Err("RETURN needs a list".into());
        }
        let close = closing(tokens, open)?;
        let mut options = Vec::new();
        for t in &tokens[open + 1..close] {
            options.push(match t.text().to_ascii_uppercase().as_str() {
                "MIN" => ReturnOption::Min,
                "MAX" => ReturnOption::Max,
                "ALL" => ReturnOption::All,
                "COUNT" => ReturnOption::Count,
                other => return Err(format!("unknown RETURN option {other}")),
            });
        }
        extras.search_return = Some(options);
        edit.replace(tokens, criteria, close, "");
        criteria = close + 1;
    }
    modseq_keys(tokens, criteria, edit, extras, uids_since)
}

fn sort(
    tokens: &[Token],
    v: usize,
    edit: &mut Edit,
    extras: &mut Extras,
    uids_since: &dyn Fn(u64) -> String,
) -> Result<(), String> {
    let open = v + 1;
    if tokens.get(open).map(|t| t.kind) != Some(Kind::Open) {
        return Err("SORT needs sort criteria".into());
    }
    let close = closing(tokens, open)?;
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
    modseq_keys(tokens, close + 2, edit, extras, uids_since)
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
        if tokens.get(open).map(|t| t.kind) != Some(Kind::Open) {
            return Err("RETURN needs a list".into());
        }
        let close = closing(tokens, open)?;
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

    fn taken(command: &str) -> (String, Extras) {
        let (bytes, extras) = take(command.as_bytes(), &|n| format!("UID {n}:*")).expect("parses");
        (String::from_utf8(bytes).expect("utf8"), extras)
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
        assert!(take(b"a FETCH 1 FLAGS (VANISHED)\r\n", &|_| String::new()).is_err());
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
        assert!(take(b"a SORT () UTF-8 ALL\r\n", &|_| String::new()).is_err());
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
    fn damaged_input_is_an_error_not_a_panic() {
        for bad in [
            &b"a FETCH 1 (FLAGS\r\n"[..],
            b"a SEARCH \"open\r\n",
            b"a SELECT x {99999999999999999999}\r\n",
            b"a SELECT x {5}\r\nab",
            b"a LIST (",
            b"a SORT (DATE",
        ] {
            assert!(take(bad, &|_| String::new()).is_err(), "{bad:?}");
        }
    }
}
