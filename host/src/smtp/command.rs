//! SMTP command lines (RFC 5321 §4.1) parsed into commands, apart from any session logic.

use crate::mail::EsmtpParam;

/// One client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    /// The reverse-path mailbox ("" for `<>`) and ESMTP parameters.
    Mail(String, Vec<EsmtpParam>),
    Rcpt(String, Vec<EsmtpParam>),
    Data,
    /// BDAT chunk size and whether it is the last chunk.
    Bdat(u64, bool),
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Expn(String),
    Help,
    StartTls,
    /// Mechanism and optional initial response.
    Auth(String, Option<String>),
}

impl Command {
    /// The command's verb, as metrics count it.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Helo(_) => "HELO",
            Command::Ehlo(_) => "EHLO",
            Command::Mail(..) => "MAIL",
            Command::Rcpt(..) => "RCPT",
            Command::Data => "DATA",
            Command::Bdat(..) => "BDAT",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
            Command::Vrfy(_) => "VRFY",
            Command::Expn(_) => "EXPN",
            Command::Help => "HELP",
            Command::StartTls => "STARTTLS",
            Command::Auth(..) => "AUTH",
        }
    }
}

/// Why a command line could not be parsed; each maps to a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// 500 5.5.1
    Unknown,
    /// 501 5.5.4 with the reason.
    Syntax(&'static str),
    /// 501 5.1.3 (mailbox syntax) with the reason.
    Address(&'static str),
}

/// Parses one command line (without its CRLF).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line =
        std::str::from_utf8(line).map_err(|_| ParseError::Syntax("command is not valid UTF-8"))?;
    if line.bytes().any(|b| b == 0 || (b < 32 && b != b'\t')) {
        return Err(ParseError::Syntax("control characters in command"));
    }
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let arg = rest.trim();
    let no_arg = |cmd: Command| {
        if arg.is_empty() {
            Ok(cmd)
        } else {
            Err(ParseError::Syntax("no argument expected"))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "HELO" => domain_arg(arg).map(Command::Helo),
        "EHLO" => domain_arg(arg).map(Command::Ehlo),
        "MAIL" => {
            let (path, params) = path_arg(rest, "FROM:")?;
            Ok(Command::Mail(reverse_path(path)?, params))
        }
        "RCPT" => {
            let (path, params) = path_arg(rest, "TO:")?;
            Ok(Command::Rcpt(forward_path(path)?, params))
        }
        "DATA" => no_arg(Command::Data),
        "BDAT" => bdat(arg),
        "RSET" => no_arg(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_arg(Command::Quit),
        "VRFY" => Ok(Command::Vrfy(arg.to_string())),
        "EXPN" => Ok(Command::Expn(arg.to_string())),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_arg(Command::StartTls),
        "AUTH" => {
            let mut words = arg.split_whitespace();
            let mechanism = words
                .next()
                .ok_or(ParseError::Syntax("AUTH needs a mechanism"))?;
            let initial = words.next().map(str::to_string);
            if words.next().is_some() {
                return Err(ParseError::Syntax("too many AUTH arguments"));
            }
            Ok(Command::Auth(mechanism.to_ascii_uppercase(), initial))
        }
        _ => Err(ParseError::Unknown),
    }
}

fn domain_arg(arg: &str) -> Result<String, ParseError> {
    let valid = !arg.is_empty()
        && !arg.contains(char::is_whitespace)
        && arg.len() <= 255
        && arg
            .chars()
            .all(|c| c.is_alphanumeric() || ".-_:[]".contains(c));
    if valid {
        Ok(arg.to_string())
    } else {
        Err(ParseError::Syntax(
            "a domain or address literal is required",
        ))
    }
}

/// Splits `FROM:<path> PARAMS` into the path and its parameters.
fn path_arg<'a>(rest: &'a str, keyword: &str) -> Result<(&'a str, Vec<EsmtpParam>), ParseError> {
    let head = rest
        .get(..keyword.len())
        .filter(|h| h.eq_ignore_ascii_case(keyword));
    if head.is_none() {
        return Err(ParseError::Syntax(if keyword == "FROM:" {
            "expected MAIL FROM:<address>"
        } else {
            "expected RCPT TO:<address>"
        }));
    }
    // RFC 5321 allows no space after the colon; many clients send one anyway.
    let rest = rest[keyword.len()..].trim_start();
    if !rest.starts_with('<') {
        return Err(ParseError::Address("the address must be in angle brackets"));
    }
    let close = rest
        .find('>')
        .ok_or(ParseError::Address("missing closing angle bracket"))?;
    let path = &rest[1..close];
    let params = parse_params(&rest[close + 1..])?;
    Ok((path, params))
}

fn parse_params(text: &str) -> Result<Vec<EsmtpParam>, ParseError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(' ')
        .filter(|w| !w.is_empty())
        .map(|word| {
            let (name, value) = match word.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (word, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(ParseError::Syntax("malformed ESMTP parameter"));
            }
            Ok(EsmtpParam {
                name: name.to_ascii_uppercase(),
                value,
            })
        })
        .collect()
}

fn reverse_path(path: &str) -> Result<String, ParseError> {
    if path.is_empty() {
        return Ok(String::new());
    }
    mailbox(path)
}

fn forward_path(path: &str) -> Result<String, ParseError> {
    if path.eq_ignore_ascii_case("postmaster") {
        return Ok("postmaster".into());
    }
    mailbox(path)
}

/// A mailbox `local@domain`. A source route (`@a,@b:`) is dropped as RFC 5321 says; quoted local
/// parts are kept as written, so they never match a user unless one has that literal name.
fn mailbox(path: &str) -> Result<String, ParseError> {
    let path = match path.strip_prefix('@') {
        Some(routed) => {
            routed
                .split_once(':')
                .ok_or(ParseError::Address("malformed source route"))?
                .1
        }
        None => path,
    };
    if path.len() > crate::mail::MAX_ADDRESS_OCTETS {
        return Err(ParseError::Address("address too long"));
    }
    let (local, domain) =
        split_mailbox(path).ok_or(ParseError::Address("expected local-part@domain"))?;
    let local_ok = if local.starts_with('"') {
        local.len() >= 2 && local.ends_with('"')
    } else {
        !local.is_empty() && !local.contains('@') && !local.contains(char::is_whitespace)
    };
    let domain_ok = !domain.is_empty()
        && domain.len() <= 255
        && (domain.starts_with('[') && domain.ends_with(']')
            || domain
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-')));
    if !local_ok || local.len() > 64 {
        return Err(ParseError::Address("invalid local part"));
    }
    if !domain_ok {
        return Err(ParseError::Address("invalid domain"));
    }
    Ok(path.to_string())
}

/// Splits at the `@` that separates local part and domain: the last one, outside quotes.
fn split_mailbox(path: &str) -> Option<(&str, &str)> {
    let at = if let Some(quoted) = path.strip_prefix('"') {
        quoted.find('"')? + 2
    } else {
        path.find('@')?
    };
    if path.as_bytes().get(at) != Some(&b'@') {
        return None;
    }
    Some((&path[..at], &path[at + 1..]))
}

fn bdat(arg: &str) -> Result<Command, ParseError> {
    let mut words = arg.split_whitespace();
    let size = words
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(ParseError::Syntax("BDAT needs a chunk size"))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(ParseError::Syntax("BDAT takes a size and optionally LAST")),
    };
    Ok(Command::Bdat(size, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_common_commands() {
        assert_eq!(
            parse(b"EHLO client.example"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(
            parse(b"helo [192.0.2.1]"),
            Ok(Command::Helo("[192.0.2.1]".into()))
        );
        assert_eq!(
            parse(b"MAIL FROM:<>"),
            Ok(Command::Mail(String::new(), vec![]))
        );
        let Ok(Command::Mail(from, params)) =
            parse(b"MAIL FROM: <a@b.example> SIZE=100 BODY=8BITMIME")
        else {
            panic!("mail")
        };
        assert_eq!(from, "a@b.example");
        assert_eq!(
            params[0],
            EsmtpParam {
                name: "SIZE".into(),
                value: Some("100".into())
            }
        );
        assert_eq!(
            parse(b"RCPT TO:<Postmaster>"),
            Ok(Command::Rcpt("postmaster".into(), vec![]))
        );
        assert_eq!(parse(b"BDAT 100 LAST"), Ok(Command::Bdat(100, true)));
        assert_eq!(
            parse(b"AUTH plain dGVzdA=="),
            Ok(Command::Auth("PLAIN".into(), Some("dGVzdA==".into())))
        );
        assert_eq!(parse(b"data"), Ok(Command::Data));
    }

    #[test]
    fn refuses_malformed_input() {
        assert_eq!(parse(b"FROB"), Err(ParseError::Unknown));
        assert!(matches!(
            parse(b"MAIL FROM:a@b"),
            Err(ParseError::Address(_))
        ));
        assert!(matches!(
            parse(b"RCPT TO:<a@b@c>"),
            Err(ParseError::Address(_))
        ));
        assert!(matches!(
            parse(b"RCPT TO:<a b@c>"),
            Err(ParseError::Address(_))
        ));
        assert!(matches!(
            parse(b"RCPT TO:<@c>"),
            Err(ParseError::Address(_))
        ));
        assert!(matches!(parse(b"EHLO"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"DATA x"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"NOOP\x00"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"\xff\xfe"), Err(ParseError::Syntax(_))));
    }

    #[test]
    fn relay_tricks_keep_the_real_domain() {
        // The domain is what follows the last unquoted @; %, ! and quotes stay in the local part.
        assert_eq!(
            parse(b"RCPT TO:<user%other.example@local.test>"),
            Ok(Command::Rcpt(
                "user%other.example@local.test".into(),
                vec![]
            ))
        );
        assert_eq!(
            parse(b"RCPT TO:<other.example!user@local.test>"),
            Ok(Command::Rcpt(
                "other.example!user@local.test".into(),
                vec![]
            ))
        );
        assert_eq!(
            parse(b"RCPT TO:<\"user@other.example\"@local.test>"),
            Ok(Command::Rcpt(
                "\"user@other.example\"@local.test".into(),
                vec![]
            ))
        );
        assert_eq!(
            parse(b"RCPT TO:<@relay.example:user@local.test>"),
            Ok(Command::Rcpt("user@local.test".into(), vec![]))
        );
    }
}
