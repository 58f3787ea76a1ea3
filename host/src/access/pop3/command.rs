//! POP3 command lines: a keyword and up to a few arguments, separated by single spaces.

/// Longest command line we accept, CRLF excluded (RFC 2449: 255 octets).
pub const MAX_LINE: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capa,
    User(String),
    Pass(String),
    Apop(String, String),
    Auth(String, Option<String>),
    Stls,
    Stat,
    List(Option<u32>),
    Retr(u32),
    Dele(u32),
    Noop,
    Rset,
    Top(u32, u32),
    Uidl(Option<u32>),
    Quit,
}

impl Command {
    /// The command's name, as metrics count it.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Capa => "CAPA",
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop(..) => "APOP",
            Command::Auth(..) => "AUTH",
            Command::Stls => "STLS",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Retr(_) => "RETR",
            Command::Dele(_) => "DELE",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
            Command::Top(..) => "TOP",
            Command::Uidl(_) => "UIDL",
            Command::Quit => "QUIT",
        }
    }
}

/// Why a line is not a command we can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Unknown(String),
    /// A known command with missing, extra or malformed arguments.
    Syntax(&'static str),
}

fn number(word: Option<&str>) -> Result<u32, ParseError> {
    word.and_then(|w| w.parse().ok())
        .filter(|&n| n > 0)
        .ok_or(ParseError::Syntax(
            "a message number (1 or more) is expected",
        ))
}

pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let text = std::str::from_utf8(line).map_err(|_| ParseError::Syntax("not UTF-8"))?;
    // PASS takes the rest of the line: passwords may contain spaces.
    let (keyword, rest) = text.split_once(' ').unwrap_or((text, ""));
    let keyword = keyword.to_ascii_uppercase();
    let mut args = rest.split(' ').filter(|a| !a.is_empty());
    let none = |args: &mut dyn Iterator<Item = &str>| match args.next() {
        None => Ok(()),
        Some(_) => Err(ParseError::Syntax("this command takes no arguments")),
    };
    Ok(match keyword.as_str() {
        "CAPA" => none(&mut args).map(|()| Command::Capa)?,
        "USER" => Command::User(
            args.next()
                .ok_or(ParseError::Syntax("USER needs a name"))?
                .to_string(),
        ),
        "PASS" => Command::Pass(rest.to_string()),
        "APOP" => {
            let name = args.next().ok_or(ParseError::Syntax("APOP name digest"))?;
            let digest = args.next().ok_or(ParseError::Syntax("APOP name digest"))?;
            Command::Apop(name.to_string(), digest.to_ascii_lowercase())
        }
        "AUTH" => {
            let mechanism = args
                .next()
                .ok_or(ParseError::Syntax("AUTH needs a mechanism"))?;
            Command::Auth(
                mechanism.to_ascii_uppercase(),
                args.next().map(str::to_string),
            )
        }
        "STLS" => none(&mut args).map(|()| Command::Stls)?,
        "STAT" => none(&mut args).map(|()| Command::Stat)?,
        "LIST" => Command::List(args.next().map(|w| number(Some(w))).transpose()?),
        "RETR" => Command::Retr(number(args.next())?),
        "DELE" => Command::Dele(number(args.next())?),
        "NOOP" => none(&mut args).map(|()| Command::Noop)?,
        "RSET" => none(&mut args).map(|()| Command::Rset)?,
        "TOP" => {
            let n = number(args.next())?;
            let lines = args
                .next()
                .and_then(|w| w.parse().ok())
                .ok_or(ParseError::Syntax("TOP msg lines"))?;
            Command::Top(n, lines)
        }
        "UIDL" => Command::Uidl(args.next().map(|w| number(Some(w))).transpose()?),
        "QUIT" => none(&mut args).map(|()| Command::Quit)?,
        _ => return Err(ParseError::Unknown(keyword)),
    })
}

/// A multi-line response body: dot-stuffed, CRLF line ends, terminated by `.`.
pub fn multiline(body: &[u8]) -> Vec<u8> {
    crate::message::lines::dot_stuff(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse(b"user alice@x"), Ok(Command::User("alice@x".into())));
        assert_eq!(parse(b"PASS a b c"), Ok(Command::Pass("a b c".into())));
        assert_eq!(parse(b"LIST"), Ok(Command::List(None)));
        assert_eq!(parse(b"LIST 3"), Ok(Command::List(Some(3))));
        assert_eq!(parse(b"TOP 1 0"), Ok(Command::Top(1, 0)));
        assert!(matches!(parse(b"RETR 0"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"RETR x"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"STAT now"), Err(ParseError::Syntax(_))));
        assert_eq!(parse(b"XYZZY"), Err(ParseError::Unknown("XYZZY".into())));
        assert_eq!(multiline(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
    }
}
