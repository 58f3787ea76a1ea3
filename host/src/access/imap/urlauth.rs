//! URLAUTH (RFC 4467): the syntax of its commands' arguments and of authorized IMAP URLs,
//! and the INTERNAL mechanism's token. A URL is `imap://user@host/mailbox/;UID=n[/;SECTION=s]
//! [;EXPIRE=datetime];URLAUTH=access[:INTERNAL:token]`; the token is HMAC-SHA256, keyed with the
//! owner's secret for that mailbox, over the "rump" (the URL up to `;URLAUTH=access`), in hex.
//! Parsing only: the session keeps the keys and fetches the message.

use ring::hmac;

use super::url::{self, MessageUrl};

/// The only mechanism offered (RFC 4467 §7 lets the server define it).
pub const MECHANISM: &str = "INTERNAL";

/// Who may fetch a URL (RFC 4467 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Anonymous,
    AuthUser,
    User(String),
    Submit(String),
}

/// An authorized URL, cut into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUrl {
    /// The URL up to and including `;URLAUTH=access`: what the token signs.
    pub rump: String,
    /// The owner of the mailbox: the URL's user, `@host` added when it names no domain.
    pub owner: String,
    pub message: MessageUrl,
    /// `;EXPIRE=`, in seconds since the epoch.
    pub expire: Option<i64>,
    pub access: Access,
    /// `:mechanism:token` when present (a URL GENURLAUTH is asked for has none).
    pub token: Option<(String, String)>,
}

/// The authorized URL `text`; an error says why it is not one.
pub fn parse(text: &str) -> Result<AuthUrl, String> {
    let rest = strip_prefix_ignore_case(text, "imap://").ok_or("not an imap:// URL")?;
    let at = find_ignore_case(text, ";URLAUTH=").ok_or("no ;URLAUTH=")?;
    let after = &text[at + ";URLAUTH=".len()..];
    let (access_text, token) = match after.split_once(':') {
        Some((access, mech_token)) => {
            let (mech, token) = mech_token.split_once(':').ok_or("bad URLAUTH token")?;
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("bad URLAUTH token".into());
            }
            (access, Some((mech.to_string(), token.to_ascii_lowercase())))
        }
        None => (after, None),
    };
    let access = access(access_text)?;
    let rump = text[..at + ";URLAUTH=".len() + access_text.len()].to_string();
    let before = &text[..at];
    let (before, expire) = match find_ignore_case(before, ";EXPIRE=") {
        Some(e) => {
            let date = &before[e + ";EXPIRE=".len()..];
            let parsed = mail_parser::DateTime::parse_rfc3339(date)
                .filter(mail_parser::DateTime::is_valid)
                .ok_or("bad ;EXPIRE=")?;
            (&before[..e], Some(parsed.to_timestamp()))
        }
        None => (before, None),
    };
    // `before` still starts with "imap://"; the server part runs to the first '/'.
    let rest = before.get(text.len() - rest.len()..).ok_or("bad URL")?;
    let slash = rest.find('/').ok_or("no mailbox in the URL")?;
    let (server, path) = rest.split_at(slash);
    let (userinfo, host) = server.rsplit_once('@').ok_or("the URL names no user")?;
    let user = userinfo.split(';').next().unwrap_or("");
    let user = String::from_utf8(url::percent_decode(user)?).map_err(|_| "bad user name")?;
    if user.is_empty() {
        return Err("the URL names no user".into());
    }
    let owner = match user.contains('@') {
        true => user,
        false => format!("{user}@{}", host.split(':').next().unwrap_or(host)),
    };
    // The path alone is a relative URL, which names no user to check.
    let message = url::parse(path, "")?;
    Ok(AuthUrl {
        rump,
        owner,
        message,
        expire,
        access,
        token,
    })
}

fn access(text: &str) -> Result<Access, String> {
    let named = |rest: &str| -> Result<String, String> {
        let name = String::from_utf8(url::percent_decode(rest)?).map_err(|_| "bad user")?;
        match name.is_empty() {
            true => Err("no user in the access identifier".into()),
            false => Ok(name),
        }
    };
    if text.eq_ignore_ascii_case("anonymous") {
        Ok(Access::Anonymous)
    } else if text.eq_ignore_ascii_case("authuser") {
        Ok(Access::AuthUser)
    } else if let Some(rest) = strip_prefix_ignore_case(text, "user+") {
        Ok(Access::User(named(rest)?))
    } else if let Some(rest) = strip_prefix_ignore_case(text, "submit+") {
        Ok(Access::Submit(named(rest)?))
    } else {
        Err(format!("unknown access identifier {text}"))
    }
}

impl AuthUrl {
    /// Whether `user` (logged in) may fetch it. `submit+` names the submission server acting
    /// for a user, which never fetches over this IMAP service: nobody here may.
    pub fn allows(&self, user: &str) -> bool {
        match &self.access {
            Access::Anonymous | Access::AuthUser => true,
            Access::User(name) => name.eq_ignore_ascii_case(user),
            Access::Submit(_) => false,
        }
    }

    /// Expired at `now` (seconds since the epoch).
    pub fn expired(&self, now: i64) -> bool {
        self.expire.is_some_and(|at| at <= now)
    }

    /// The full URL with the INTERNAL token `key` gives it.
    pub fn authorized(&self, key: &[u8]) -> String {
        format!("{}:{MECHANISM}:{}", self.rump, token(key, &self.rump))
    }

    /// Whether its token is the INTERNAL one `key` gives (compared in constant time).
    pub fn verifies(&self, key: &[u8]) -> bool {
        let Some((mech, given)) = &self.token else {
            return false;
        };
        let Ok(given) = hex_decode(given) else {
            return false;
        };
        mech.eq_ignore_ascii_case(MECHANISM)
            && hmac::verify(
                &hmac::Key::new(hmac::HMAC_SHA256, key),
                self.rump.as_bytes(),
                &given,
            )
            .is_ok()
    }
}

/// The INTERNAL token: HMAC-SHA256 of the rump under `key`, in lower-case hex.
fn token(key: &[u8], rump: &str) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), rump.as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Result<Vec<u8>, ()> {
    if !text.len().is_multiple_of(2) {
        return Err(());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(())
        })
        .collect()
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// The last place `needle` (ASCII) occurs in `text`, ignoring case.
fn find_ignore_case(text: &str, needle: &str) -> Option<usize> {
    let (hay, needle) = (text.as_bytes(), needle.as_bytes());
    (0..=hay.len().checked_sub(needle.len())?)
        .rev()
        .find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

/// One argument of a URLAUTH command: a value, or a parenthesized list of values (URLFETCH's
/// extended form, RFC 5524).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Argument {
    Value(Vec<u8>),
    List(Vec<Vec<u8>>),
}

/// The arguments of a URLAUTH command after its verb: atoms, quoted strings and literals
/// (`{n}\r\n` + n bytes, as the framer kept them), and lists of those (one level, no more).
/// `None` when they are malformed.
pub fn arguments(mut rest: &[u8]) -> Option<Vec<Argument>> {
    let mut out = Vec::new();
    loop {
        rest = skip_spaces(rest);
        match rest {
            [] | [b'\r', b'\n'] | [b'\n'] => return Some(out),
            [b'(', tail @ ..] => {
                let mut list = Vec::new();
                rest = skip_spaces(tail);
                loop {
                    if let [b')', after_list @ ..] = rest {
                        rest = after_list;
                        break;
                    }
                    let (item, after_item) = value(rest)?;
                    list.push(item);
                    rest = skip_spaces(after_item);
                }
                out.push(Argument::List(list));
            }
            _ => {
                let (item, after) = value(rest)?;
                out.push(Argument::Value(item));
                rest = after;
            }
        }
    }
}

fn skip_spaces(mut rest: &[u8]) -> &[u8] {
    while let [b' ', tail @ ..] = rest {
        rest = tail;
    }
    rest
}

/// One atom, quoted string or literal at the start of `rest`, and what follows it.
fn value(rest: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    match rest {
        [] | [b'\r' | b'\n' | b'(' | b')', ..] => None,
        [b'"', tail @ ..] => {
            let mut value = Vec::new();
            let mut i = 0;
            loop {
                match *tail.get(i)? {
                    b'\\' => {
                        value.push(*tail.get(i + 1)?);
                        i += 2;
                    }
                    b'"' => break,
                    b'\r' | b'\n' => return None,
                    b => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
            Some((value, tail.get(i + 1..)?))
        }
        [b'{', tail @ ..] => {
            let close = tail.iter().position(|&b| b == b'}')?;
            let digits = std::str::from_utf8(&tail[..close]).ok()?;
            let digits = digits.strip_suffix('+').unwrap_or(digits);
            let n: usize = digits.parse().ok()?;
            let body = tail.get(close + 1..)?.strip_prefix(b"\r\n")?;
            Some((body.get(..n)?.to_vec(), body.get(n..)?))
        }
        _ => {
            let end = rest
                .iter()
                .position(|&b| matches!(b, b' ' | b'\r' | b'\n' | b'(' | b')'))
                .unwrap_or(rest.len());
            (end > 0).then(|| (rest[..end].to_vec(), &rest[end..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "imap://alice@example.test/INBOX/;uid=20;urlauth=user+alice%40example.test";

    #[test]
    fn urls_are_cut_into_owner_message_and_access() {
        let u = parse(URL).expect("ok");
        assert_eq!(u.owner, "alice@example.test");
        assert_eq!(u.message.mailbox, "INBOX");
        assert_eq!(u.message.uid, 20);
        assert_eq!(u.rump, URL);
        assert_eq!(u.access, Access::User("alice@example.test".into()));
        assert_eq!(u.token, None);
        let u = parse(
            "imap://bob%40x.test@h/Sent/;UID=3/;SECTION=1.1;EXPIRE=2020-01-01T00:00:00Z;URLAUTH=authuser:internal:0aF1",
        )
        .expect("ok");
        assert_eq!(u.owner, "bob@x.test");
        assert_eq!(u.message.section.as_deref(), Some("1.1"));
        assert_eq!(u.expire, Some(1_577_836_800));
        assert!(u.expired(1_577_836_800) && !u.expired(1_577_836_799));
        assert_eq!(u.access, Access::AuthUser);
        assert_eq!(u.token, Some(("internal".into(), "0af1".into())));
    }

    #[test]
    fn tokens_verify_only_the_url_they_sign_under_their_key() {
        let u = parse(URL).expect("ok");
        let full = u.authorized(b"key-1");
        let signed = parse(&full).expect("ok");
        assert!(signed.verifies(b"key-1"));
        assert!(!signed.verifies(b"key-2"));
        let other = parse(&full.replace("uid=20", "uid=21")).expect("ok");
        assert!(!other.verifies(b"key-1"));
        let other_mech = parse(&full.replace(":INTERNAL:", ":OTHER:")).expect("ok");
        assert!(!other_mech.verifies(b"key-1"));
        assert!(!u.verifies(b"key-1"), "no token");
    }

    #[test]
    fn access_identifiers_decide_who_may_fetch() {
        let with = |access: &str| {
            parse(&format!("imap://a@h/INBOX/;UID=1;URLAUTH={access}")).expect(access)
        };
        assert!(with("anonymous").allows("z@h"));
        assert!(with("AUTHUSER").allows("z@h"));
        assert!(with("user+z%40h").allows("Z@h"));
        assert!(!with("user+z%40h").allows("y@h"));
        assert!(!with("submit+z%40h").allows("z@h"));
    }

    #[test]
    fn malformed_urls_are_refused() {
        for bad in [
            "/INBOX/;UID=1;URLAUTH=anonymous",
            "imap://a@h/INBOX/;UID=1",
            "imap://a@h/INBOX/;UID=1;URLAUTH=nobody",
            "imap://a@h/INBOX/;UID=1;URLAUTH=user+",
            "imap://a@h/INBOX/;UID=1;URLAUTH=anonymous:internal",
            "imap://a@h/INBOX/;UID=1;URLAUTH=anonymous:internal:xyz",
            "imap://a@h/INBOX/;UID=1;EXPIRE=tomorrow;URLAUTH=anonymous",
            "imap://h/INBOX/;UID=1;URLAUTH=anonymous",
            "imap://a@h/INBOX;URLAUTH=anonymous",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arguments_are_atoms_quoted_strings_and_literals() {
        let value = |v: &[u8]| Argument::Value(v.to_vec());
        let args = arguments(b"\"a \\\"b\" INTERNAL {3}\r\nxyz {2+}\r\nab\r\n").expect("ok");
        assert_eq!(
            args,
            [
                value(b"a \"b"),
                value(b"INTERNAL"),
                value(b"xyz"),
                value(b"ab")
            ]
        );
        assert_eq!(arguments(b"\r\n"), Some(vec![]));
        assert_eq!(arguments(b"\"open"), None);
        assert_eq!(arguments(b"{5}\r\nab"), None);
    }

    #[test]
    fn urlfetch_lists_hold_a_url_and_its_parameters() {
        let args =
            arguments(b"(\"imap://a\" BINARY bodypartstructure) plain ({1}\r\nu)\r\n").expect("ok");
        assert_eq!(
            args,
            [
                Argument::List(vec![
                    b"imap://a".to_vec(),
                    b"BINARY".to_vec(),
                    b"bodypartstructure".to_vec()
                ]),
                Argument::Value(b"plain".to_vec()),
                Argument::List(vec![b"u".to_vec()]),
            ]
        );
        assert_eq!(arguments(b"()\r\n"), Some(vec![Argument::List(vec![])]));
        for bad in [&b"(a b"[..], b"(a (b))", b"a)", b"((a))"] {
            assert_eq!(arguments(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
