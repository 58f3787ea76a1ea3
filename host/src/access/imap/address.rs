//! Address lists (RFC 5322 `address-list`) as IMAP ENVELOPE wants them (RFC 3501 §7.4.2): each
//! mailbox as (name, route, local part, domain), a group as a start marker (domain NIL, the
//! group's name as local part), its members and an end marker (all NIL). Names and parts are
//! kept as written (encoded-words included): decoding is the client's business. A comment
//! stands in for a missing display name (`user@domain (Real Name)`). Lenient, linear in the
//! input, never recursive: comments nest by counting.

/// One element of an ENVELOPE address list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Mailbox {
        name: Option<String>,
        route: Option<String>,
        local: String,
        domain: String,
    },
    GroupStart(String),
    GroupEnd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An atom or dot-atom, or a quoted string's content (`quoted`).
    Word {
        text: String,
        quoted: bool,
    },
    Comment(String),
    Special(char),
}

fn tokens(input: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '"' => {
                let mut text = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => text.extend(chars.next()),
                        c => text.push(c),
                    }
                }
                out.push(Token::Word { text, quoted: true });
            }
            '(' => {
                let (mut depth, mut text) = (1usize, String::new());
                while let Some(c) = chars.next() {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        '\\' => {
                            text.extend(chars.next());
                            continue;
                        }
                        _ => {}
                    }
                    if depth == 0 {
                        break;
                    }
                    text.push(c);
                }
                out.push(Token::Comment(text.trim().to_string()));
            }
            '<' | '>' | ':' | ';' | ',' | '@' => out.push(Token::Special(c)),
            c => {
                let mut text = c.to_string();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "\"(<>:;,@)".contains(c) {
                        break;
                    }
                    text.push(c);
                    chars.next();
                }
                out.push(Token::Word {
                    text,
                    quoted: false,
                });
            }
        }
    }
    out
}

/// The words of a phrase joined by single spaces (`None` when there are none).
fn phrase(words: &[&Token]) -> Option<String> {
    let parts: Vec<&str> = words
        .iter()
        .filter_map(|t| match t {
            Token::Word { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

fn last_comment(tokens: &[&Token]) -> Option<String> {
    tokens.iter().rev().find_map(|t| match t {
        Token::Comment(c) if !c.is_empty() => Some(c.clone()),
        _ => None,
    })
}

/// `local@domain` from the words of an addr-spec (dots are part of the words).
fn addr_spec(tokens: &[&Token]) -> Option<(String, String)> {
    let mut local = String::new();
    let mut domain = String::new();
    let mut at = false;
    for token in tokens {
        match token {
            Token::Word { text, .. } if at => domain.push_str(text),
            Token::Word { text, .. } => local.push_str(text),
            Token::Special('@') => at = true,
            _ => {}
        }
    }
    (!local.is_empty() || !domain.is_empty()).then_some((local, domain))
}

/// Splits an angle address's inside into its route (`@a,@b`) and addr-spec.
fn angle(inside: &[&Token]) -> (Option<String>, Option<(String, String)>) {
    let colon = inside.iter().position(|t| **t == Token::Special(':'));
    match colon {
        Some(i) if inside.first() == Some(&&Token::Special('@')) => {
            let route: String = inside[..i]
                .iter()
                .filter_map(|t| match t {
                    Token::Word { text, .. } => Some(text.clone()),
                    Token::Special(c @ ('@' | ',')) => Some(c.to_string()),
                    _ => None,
                })
                .collect();
            (Some(route), addr_spec(&inside[i + 1..]))
        }
        _ => (None, addr_spec(inside)),
    }
}

/// A mailbox written without angle brackets (`user@domain (Comment Name)`).
fn bare_mailbox(tokens: &[&Token]) -> Option<Item> {
    let (local, domain) = addr_spec(tokens)?;
    Some(Item::Mailbox {
        name: last_comment(tokens),
        route: None,
        local,
        domain,
    })
}

/// Parses a header value into ENVELOPE address items.
pub fn parse(input: &str) -> Vec<Item> {
    let tokens = tokens(input);
    let mut items = Vec::new();
    let mut in_group = false;
    let mut pending: Vec<&Token> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        i += 1;
        match token {
            Token::Special('<') => {
                let start = i;
                while i < tokens.len() && tokens[i] != Token::Special('>') {
                    i += 1;
                }
                let inside: Vec<&Token> = tokens[start..i].iter().collect();
                i += 1; // the '>'
                let (route, spec) = angle(&inside);
                let mut after = Vec::new();
                while i < tokens.len() && !matches!(tokens[i], Token::Special(',' | ';')) {
                    after.push(&tokens[i]);
                    i += 1;
                }
                let name = phrase(&pending).or_else(|| last_comment(&after));
                if let Some((local, domain)) = spec {
                    items.push(Item::Mailbox {
                        name,
                        route,
                        local,
                        domain,
                    });
                }
                pending.clear();
            }
            Token::Special(':') if !in_group => {
                items.push(Item::GroupStart(phrase(&pending).unwrap_or_default()));
                in_group = true;
                pending.clear();
            }
            Token::Special(c @ (',' | ';')) => {
                items.extend(bare_mailbox(&pending));
                pending.clear();
                if *c == ';' && in_group {
                    items.push(Item::GroupEnd);
                    in_group = false;
                }
            }
            other => pending.push(other),
        }
    }
    items.extend(bare_mailbox(&pending));
    if in_group {
        items.push(Item::GroupEnd);
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(name: Option<&str>, route: Option<&str>, local: &str, domain: &str) -> Item {
        Item::Mailbox {
            name: name.map(str::to_string),
            route: route.map(str::to_string),
            local: local.into(),
            domain: domain.into(),
        }
    }

    #[test]
    fn names_comments_routes_and_groups() {
        assert_eq!(
            parse("From Real <fromuser@fromdomain.org>"),
            [mailbox(
                Some("From Real"),
                None,
                "fromuser",
                "fromdomain.org"
            )]
        );
        assert_eq!(
            parse("user@domain (Real Name)"),
            [mailbox(Some("Real Name"), None, "user", "domain")]
        );
        assert_eq!(
            parse("<@route:user@domain>"),
            [mailbox(None, Some("@route"), "user", "domain")]
        );
        assert_eq!(
            parse("\"Doe, J.\" <j.doe@x.org>, =?utf-8?q?A=C3=A9?= <a@b>"),
            [
                mailbox(Some("Doe, J."), None, "j.doe", "x.org"),
                mailbox(Some("=?utf-8?q?A=C3=A9?="), None, "a", "b")
            ]
        );
        assert_eq!(
            parse("group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;"),
            [
                Item::GroupStart("group".into()),
                mailbox(None, None, "g1", "d1.org"),
                mailbox(None, None, "g2", "d2.org"),
                Item::GroupEnd,
                Item::GroupStart("group2".into()),
                mailbox(None, None, "g3", "d3.org"),
                Item::GroupEnd,
            ]
        );
        assert_eq!(
            parse("group:;, group2: (foo) ;"),
            [
                Item::GroupStart("group".into()),
                Item::GroupEnd,
                Item::GroupStart("group2".into()),
                Item::GroupEnd,
            ]
        );
        assert_eq!(
            parse("<user (comment)@ (comment) domain.org>"),
            [mailbox(None, None, "user", "domain.org")]
        );
        assert!(parse("").is_empty());
        assert!(parse(" (just a comment) ").is_empty());
        // Unbalanced input ends cleanly.
        assert_eq!(parse("a <b@c").len(), 1);
        assert_eq!(parse(&"(".repeat(100_000)).len(), 0);
    }
}
