//! NOTIFY (RFC 5465) syntax: `NOTIFY NONE` and `NOTIFY SET [STATUS] (filter events) ...`, read
//! into a [`Request`] with the RFC's composition rules checked. No I/O here: the session
//! (`session/notify.rs`) watches the mailboxes and sends what the request asks for.
//!
//! Events this server reports: MessageNew (with FETCH attributes for the selected mailbox),
//! MessageExpunge, FlagChange, MailboxName and SubscriptionChange. AnnotationChange and the
//! METADATA events name extensions it does not have: a request naming them (or an event it
//! does not know) is refused with `NO [BADEVENT (...)]`, which lists the supported events.

use super::extensions::{closing, lex, Kind, Token};

/// Mailbox names one NOTIFY may give (as Dovecot: more is `NO [NOTIFICATIONOVERFLOW]`).
pub const NAMES: usize = 100;
/// Event groups one NOTIFY may give.
pub const GROUPS: usize = 64;

/// The events reported, in the order `BADEVENT` lists them.
pub const SUPPORTED: &str = "MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange";

/// The events of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Events {
    pub new: bool,
    pub expunge: bool,
    pub flags: bool,
    pub names: bool,
    pub subscriptions: bool,
}

impl Events {
    pub fn any(&self) -> bool {
        self.messages() || self.names || self.subscriptions
    }

    /// Any `message-event` (what STATUS and the selected mailbox report).
    pub fn messages(&self) -> bool {
        self.new || self.expunge || self.flags
    }

    pub fn union(self, other: Events) -> Events {
        Events {
            new: self.new || other.new,
            expunge: self.expunge || other.expunge,
            flags: self.flags || other.flags,
            names: self.names || other.names,
            subscriptions: self.subscriptions || other.subscriptions,
        }
    }
}

/// Which mailboxes a group is about (RFC 5465 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// The selected mailbox; `delayed`: expunges wait for a command that allows them.
    Selected {
        delayed: bool,
    },
    Inboxes,
    Personal,
    Subscribed,
    /// These mailboxes and every mailbox below them (names as sent).
    Subtree(Vec<String>),
    /// Exactly these mailboxes (names as sent).
    Mailboxes(Vec<String>),
}

/// One `(filter events)` group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub filter: Filter,
    pub events: Events,
    /// MessageNew's FETCH attributes, as sent with their parentheses (selected groups only).
    pub fetch: Option<Vec<u8>>,
}

/// A NOTIFY command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    None,
    Set { status: bool, groups: Vec<Group> },
}

/// Why a NOTIFY is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed, or against the RFC's rules: a BAD reply's text.
    Bad(String),
    /// Names an event this server does not report (`NO [BADEVENT (...)]`).
    BadEvent(String),
    /// More names than [`NAMES`] (`NO [NOTIFICATIONOVERFLOW]`).
    TooMany,
}

/// Reads `tag NOTIFY ...`; `None` when the command is not NOTIFY.
pub fn parse(command: &[u8]) -> Option<Result<Request, Refusal>> {
    let tokens = lex(command).ok()?;
    if !tokens.get(1).is_some_and(|t| t.is("NOTIFY")) {
        return None;
    }
    Some(request(&tokens[2..]))
}

fn bad<T>(why: &str) -> Result<T, Refusal> {
    Err(Refusal::Bad(why.to_string()))
}

fn request(tokens: &[Token]) -> Result<Request, Refusal> {
    match tokens.first() {
        Some(t) if t.is("NONE") && tokens.len() == 1 => Ok(Request::None),
        Some(t) if t.is("SET") => set(&tokens[1..]),
        _ => bad("NOTIFY SET or NOTIFY NONE expected"),
    }
}

fn set(tokens: &[Token]) -> Result<Request, Refusal> {
    let status = tokens.first().is_some_and(|t| t.is("STATUS"));
    let mut at = usize::from(status);
    let mut groups = Vec::new();
    let mut unsupported: Vec<String> = Vec::new();
    let mut names = 0usize;
    while at < tokens.len() {
        if tokens[at].kind != Kind::Open {
            return bad("An event group in parentheses expected");
        }
        let close = closing(tokens, at).map_err(|e| Refusal::Bad(e.to_string()))?;
        let group = group(&tokens[at + 1..close], &mut unsupported)?;
        names = names.saturating_add(match &group.filter {
            Filter::Subtree(n) | Filter::Mailboxes(n) => n.len(),
            _ => 0,
        });
        groups.push(group);
        at = close + 1;
    }
    if groups.is_empty() {
        return bad("NOTIFY SET needs at least one event group");
    }
    if groups.len() > GROUPS {
        return bad("Too many event groups");
    }
    let selected = groups
        .iter()
        .filter(|g| matches!(g.filter, Filter::Selected { .. }))
        .count();
    if selected > 1 {
        // RFC 5465 §6.1: only one of SELECTED and SELECTED-DELAYED, once.
        return bad("Only one SELECTED or SELECTED-DELAYED group is allowed");
    }
    if !unsupported.is_empty() {
        return Err(Refusal::BadEvent(unsupported.join(" ")));
    }
    if names > NAMES {
        return Err(Refusal::TooMany);
    }
    Ok(Request::Set { status, groups })
}

/// `filter events` (inside the group's parentheses).
fn group(tokens: &[Token], unsupported: &mut Vec<String>) -> Result<Group, Refusal> {
    let Some(first) = tokens.first().filter(|t| t.kind == Kind::Atom) else {
        return bad("A mailbox filter expected");
    };
    let word = first.text().to_ascii_lowercase();
    let (filter, rest) = match word.as_str() {
        "selected" => (Filter::Selected { delayed: false }, &tokens[1..]),
        "selected-delayed" => (Filter::Selected { delayed: true }, &tokens[1..]),
        "inboxes" => (Filter::Inboxes, &tokens[1..]),
        "personal" => (Filter::Personal, &tokens[1..]),
        "subscribed" => (Filter::Subscribed, &tokens[1..]),
        "subtree" | "mailboxes" => {
            let (names, used) = mailboxes(&tokens[1..])?;
            let filter = match word.as_str() {
                "subtree" => Filter::Subtree(names),
                _ => Filter::Mailboxes(names),
            };
            (filter, &tokens[1 + used..])
        }
        _ => return bad("Unknown mailbox filter"),
    };
    let selected = matches!(filter, Filter::Selected { .. });
    let (events, fetch) = events(rest, selected, unsupported)?;
    Ok(Group {
        filter,
        events,
        fetch,
    })
}

/// `one-or-more-mailbox`: a mailbox, or several in parentheses; the names and the tokens used.
fn mailboxes(tokens: &[Token]) -> Result<(Vec<String>, usize), Refusal> {
    let name = |t: &Token| -> Result<String, Refusal> {
        match t.kind {
            Kind::Atom | Kind::Quoted | Kind::Literal => Ok(inbox_upper(t.text())),
            _ => bad("A mailbox name expected"),
        }
    };
    match tokens.first() {
        Some(t) if t.kind == Kind::Open => {
            let close = closing(tokens, 0).map_err(|e| Refusal::Bad(e.to_string()))?;
            let names = tokens[1..close]
                .iter()
                .map(name)
                .collect::<Result<Vec<_>, _>>()?;
            if names.is_empty() {
                return bad("At least one mailbox name expected");
            }
            Ok((names, close + 1))
        }
        Some(t) => Ok((vec![name(t)?], 1)),
        None => bad("A mailbox name expected"),
    }
}

/// INBOX is INBOX in any case (RFC 3501 §5.1).
fn inbox_upper(name: String) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".into()
    } else {
        name
    }
}

/// `events`: `NONE`, or a parenthesised list of events (MessageNew may carry FETCH attributes).
fn events(
    tokens: &[Token],
    selected: bool,
    unsupported: &mut Vec<String>,
) -> Result<(Events, Option<Vec<u8>>), Refusal> {
    match tokens {
        [t] if t.is("NONE") => return Ok((Events::default(), None)),
        [open, .., close] if open.kind == Kind::Open && close.kind == Kind::Close => {}
        _ => return bad("NONE or a list of events expected"),
    }
    if tokens.len() < 3 || closing(tokens, 0).ok() != Some(tokens.len() - 1) {
        return bad("NONE or a list of events expected");
    }
    let inner = &tokens[1..tokens.len() - 1];
    let mut events = Events::default();
    let mut fetch = None;
    let mut i = 0;
    while i < inner.len() {
        let t = &inner[i];
        if t.kind != Kind::Atom {
            return bad("An event name expected");
        }
        let name = t.text();
        match name.to_ascii_lowercase().as_str() {
            "messagenew" => {
                events.new = true;
                if inner.get(i + 1).is_some_and(|n| n.kind == Kind::Open) {
                    let close = i + 1 + closing(&inner[i + 1..], 0).map_err(Refusal::Bad)?;
                    if !selected {
                        // RFC 5465 §5.2: attributes make sense for the selected mailbox only.
                        return bad("FETCH attributes are for the selected mailbox only");
                    }
                    if close == i + 2 {
                        return bad("An empty list of FETCH attributes");
                    }
                    fetch = Some(source(&inner[i + 1..=close]));
                    i = close;
                }
            }
            "messageexpunge" => events.expunge = true,
            "flagchange" => events.flags = true,
            "mailboxname" | "subscriptionchange" if selected => {
                // RFC 5465 §6.1: the selected filters take message events only.
                return bad("Only message events go with SELECTED");
            }
            "mailboxname" => events.names = true,
            "subscriptionchange" => events.subscriptions = true,
            // AnnotationChange, the METADATA events, QuotaChange and unknown ones.
            _ => {
                if !unsupported.iter().any(|u| u.eq_ignore_ascii_case(&name)) {
                    unsupported.push(name);
                }
            }
        }
        i += 1;
    }
    if selected {
        check_selected(&events, inner)?;
    }
    Ok((events, fetch))
}

/// RFC 5465 §5: MessageNew and MessageExpunge go together, and FlagChange (or
/// AnnotationChange) needs both. Enforced for the selected mailbox, whose sequence numbers the
/// rules keep in step; for other mailboxes (reported by STATUS) any event may come alone, as
/// Dovecot accepts and imaptest expects.
fn check_selected(events: &Events, inner: &[Token]) -> Result<(), Refusal> {
    let annotation = inner.iter().any(|t| t.is("AnnotationChange"));
    if events.new != events.expunge {
        return bad("MessageNew and MessageExpunge go together");
    }
    if (events.flags || annotation) && !events.new {
        return bad("FlagChange needs MessageNew and MessageExpunge");
    }
    Ok(())
}

/// The bytes a run of tokens was sent as (literals included).
fn source(tokens: &[Token]) -> Vec<u8> {
    // Rebuilt from the tokens: a list of atoms, quoted strings and literals, spaced.
    let mut out = Vec::new();
    let mut previous: Option<Kind> = None;
    for t in tokens {
        let space = !matches!(
            (previous, t.kind),
            (None, _) | (Some(Kind::Open), _) | (_, Kind::Close)
        );
        if space {
            out.push(b' ');
        }
        match t.kind {
            Kind::Open => out.push(b'('),
            Kind::Close => out.push(b')'),
            Kind::Atom => out.extend_from_slice(&t.value),
            Kind::Quoted | Kind::Literal | Kind::Literal8 => {
                out.extend_from_slice(&super::wire::string(&t.value))
            }
        }
        previous = Some(t.kind);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<Request, Refusal> {
        parse(format!("a {text}\r\n").as_bytes()).expect("a NOTIFY command")
    }

    fn groups(text: &str) -> Vec<Group> {
        match parsed(text) {
            Ok(Request::Set { groups, .. }) => groups,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn other_commands_are_not_notify() {
        assert!(parse(b"a NOOP\r\n").is_none());
        assert!(parse(b"a SELECT NOTIFY\r\n").is_none());
    }

    #[test]
    fn none_and_set_with_status() {
        assert_eq!(parsed("NOTIFY NONE"), Ok(Request::None));
        assert_eq!(parsed("notify none"), Ok(Request::None));
        match parsed("NOTIFY SET STATUS (personal (MessageNew MessageExpunge))") {
            Ok(Request::Set { status, groups }) => {
                assert!(status);
                assert_eq!(groups[0].filter, Filter::Personal);
                assert!(groups[0].events.new && groups[0].events.expunge);
                assert!(!groups[0].events.flags);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_rfc_example_reads() {
        // RFC 5465 §3.1 as corrected by erratum 1804.
        let g = groups(
            "notify set status (selected (MessageNew (uid body.peek[header.fields (from to \
             subject)]) MessageExpunge)) (subtree Lists (MessageNew)) (mailboxes misc (MessageNew))",
        );
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].filter, Filter::Selected { delayed: false });
        assert_eq!(
            g[0].fetch.as_deref(),
            Some(&b"(uid body.peek[header.fields (from to subject)])"[..])
        );
        assert_eq!(g[1].filter, Filter::Subtree(vec!["Lists".into()]));
        assert_eq!(g[2].filter, Filter::Mailboxes(vec!["misc".into()]));
        assert!(g[2].events.new && !g[2].events.expunge);
    }

    #[test]
    fn mailbox_lists_quoted_names_literals_and_inbox() {
        let g = groups("NOTIFY SET (mailboxes (inbox \"A b\" {3}\r\nxyz) (MailboxName))");
        assert_eq!(
            g[0].filter,
            Filter::Mailboxes(vec!["INBOX".into(), "A b".into(), "xyz".into()])
        );
        assert!(g[0].events.names);
        let g = groups("NOTIFY SET (selected-delayed NONE) (subscribed (SubscriptionChange))");
        assert_eq!(g[0].filter, Filter::Selected { delayed: true });
        assert!(!g[0].events.any());
        assert!(g[1].events.subscriptions);
    }

    #[test]
    fn composition_rules_for_the_selected_mailbox() {
        for text in [
            "NOTIFY SET (selected (MessageNew))",
            "NOTIFY SET (selected (MessageExpunge))",
            "NOTIFY SET (selected (FlagChange))",
            "NOTIFY SET (selected (MessageNew MessageExpunge MailboxName))",
            "NOTIFY SET (selected NONE) (selected-delayed NONE)",
            "NOTIFY SET (personal (MessageNew (UID)))",
            "NOTIFY SET (selected (MessageNew () MessageExpunge))",
        ] {
            assert!(matches!(parsed(text), Err(Refusal::Bad(_))), "{text}");
        }
        // Other mailboxes take any event alone (reported by STATUS).
        assert!(parsed("NOTIFY SET (mailboxes x (FlagChange))").is_ok());
        assert!(parsed("NOTIFY SET (mailboxes x (MessageExpunge))").is_ok());
    }

    #[test]
    fn malformed_requests_are_bad() {
        for text in [
            "NOTIFY",
            "NOTIFY SET",
            "NOTIFY SET STATUS",
            "NOTIFY SET personal (MessageNew)",
            "NOTIFY SET (personal)",
            "NOTIFY SET (personal ())",
            "NOTIFY SET (everything (MessageNew))",
            "NOTIFY SET (subtree (MessageNew))",
            "NOTIFY SET (mailboxes () (MessageNew))",
            "NOTIFY SET (personal (MessageNew)",
            "NOTIFY NONE extra",
        ] {
            assert!(matches!(parsed(text), Err(Refusal::Bad(_))), "{text}");
        }
    }

    #[test]
    fn unsupported_events_are_named() {
        assert_eq!(
            parsed("NOTIFY SET (selected (MessageNew MessageExpunge AnnotationChange)) (personal (QuotaChange MailboxName))"),
            Err(Refusal::BadEvent("AnnotationChange QuotaChange".into()))
        );
    }

    #[test]
    fn too_many_names_overflow() {
        let names: Vec<String> = (0..=NAMES).map(|i| format!("m{i}")).collect();
        let text = format!("NOTIFY SET (mailboxes ({}) (MessageNew))", names.join(" "));
        assert_eq!(parsed(&text), Err(Refusal::TooMany));
    }
}
