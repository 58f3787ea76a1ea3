//! The MTA-STS policy file (RFC 8461 §3.2): `key: value` lines with `version: STSv1`, `mode`,
//! one or more `mx` patterns and `max_age`; and which MX host names a policy allows (§4.1).

use std::fmt;

/// The longest `max_age` honoured: one year (RFC 8461 §3.2).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// What a policy asks of senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only to matching MX hosts over TLS with a valid certificate.
    Enforce,
    /// Deliver as without a policy; failures are only reported.
    Testing,
    /// The domain withdrew its policy.
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// MX host patterns, lower case, without a trailing dot: `mx.example.com` or `*.example.net`.
    pub mx: Vec<String>,
    /// Seconds the policy may be cached, at most [`MAX_AGE_LIMIT`].
    pub max_age: u64,
}

/// Why a policy file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy is not STSv1")]
    Version,
    #[error("the policy has no valid mode")]
    Mode,
    #[error("the policy has no valid max_age")]
    MaxAge,
    #[error("an enforce or testing policy names no mx")]
    NoMx,
}

impl Policy {
    /// Parses the policy body. Unknown keys are ignored (§3.2); for keys other than `mx` the
    /// first occurrence counts.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let (mut version, mut mode, mut max_age) = (None, None, None);
        let mut mx = Vec::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim_matches([' ', '\t']);
            match key.trim_matches([' ', '\t']) {
                "version" => {
                    version.get_or_insert(value);
                }
                "mode" => {
                    mode.get_or_insert(value);
                }
                "max_age" => {
                    max_age.get_or_insert(value);
                }
                "mx" => {
                    if let Some(pattern) = mx_pattern(value) {
                        mx.push(pattern);
                    }
                }
                _ => {}
            }
        }
        if version != Some("STSv1") {
            return Err(PolicyError::Version);
        }
        let mode = match mode {
            Some("enforce") => Mode::Enforce,
            Some("testing") => Mode::Testing,
            Some("none") => Mode::None,
            _ => return Err(PolicyError::Mode),
        };
        let max_age = max_age
            .filter(|v| !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(PolicyError::MaxAge)?
            .min(MAX_AGE_LIMIT);
        if mx.is_empty() && mode != Mode::None {
            return Err(PolicyError::NoMx);
        }
        Ok(Policy { mode, mx, max_age })
    }

    /// Whether the policy allows the MX host `host` (§4.1): a pattern names it exactly, or its
    /// leftmost `*.` stands for exactly one label.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|pattern| matches(pattern, &host))
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mode {}, mx {}, max_age {}",
            self.mode.as_str(),
            self.mx.join(" "),
            self.max_age
        )
    }
}

/// A host name or `*.` followed by one, lower case; anything else is dropped.
fn mx_pattern(value: &str) -> Option<String> {
    let value = value.trim_end_matches('.').to_ascii_lowercase();
    let name = value.strip_prefix("*.").unwrap_or(&value);
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then_some(value)
}

/// `host` is lower case without a trailing dot.
fn matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_rfc_example() {
        let policy = Policy::parse(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n\
             mx: backupmx.example.com\r\nmax_age: 604800\r\n",
        )
        .expect("policy");
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(
            policy.mx,
            ["mail.example.com", "*.example.net", "backupmx.example.com"]
        );
        assert_eq!(policy.max_age, 604800);
    }

    #[test]
    fn bare_newlines_spaces_unknown_keys_and_a_long_max_age() {
        let policy = Policy::parse(
            "version: STSv1\nextra: x\nmode:testing\nmx:  MX.Example.Test. \nmax_age: 99999999\n",
        )
        .expect("policy");
        assert_eq!(policy.mode, Mode::Testing);
        assert_eq!(policy.mx, ["mx.example.test"]);
        assert_eq!(policy.max_age, MAX_AGE_LIMIT);
    }

    #[test]
    fn refuses_what_is_not_a_policy() {
        let base = "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 60\n";
        assert!(Policy::parse(base).is_ok());
        let cases = [
            (base.replace("STSv1", "STSv2"), PolicyError::Version),
            (base.replace("version: STSv1\n", ""), PolicyError::Version),
            (base.replace("enforce", "strict"), PolicyError::Mode),
            (base.replace("60", "-1"), PolicyError::MaxAge),
            (base.replace("60", "1e5"), PolicyError::MaxAge),
            (base.replace("max_age: 60\n", ""), PolicyError::MaxAge),
            (base.replace("mx: a.test\n", ""), PolicyError::NoMx),
            (base.replace("a.test", "a..test"), PolicyError::NoMx),
            ("<html>".to_string(), PolicyError::Version),
        ];
        for (text, error) in cases {
            assert_eq!(Policy::parse(&text), Err(error), "{text:?}");
        }
        let none = Policy::parse("version: STSv1\nmode: none\nmax_age: 60\n").expect("none");
        assert_eq!(none.mode, Mode::None);
    }

    #[test]
    fn a_wildcard_stands_for_one_label() {
        let policy = Policy {
            mode: Mode::Enforce,
            mx: vec!["mail.example.com".into(), "*.example.net".into()],
            max_age: 60,
        };
        assert!(policy.allows("mail.example.com"));
        assert!(policy.allows("MAIL.Example.COM."));
        assert!(policy.allows("mx1.example.net"));
        assert!(!policy.allows("example.net"), "the parent itself");
        assert!(!policy.allows("a.b.example.net"), "two labels");
        assert!(!policy.allows("mx1.example.net.evil.test"));
        assert!(!policy.allows("xmail.example.com"));
        assert!(!policy.allows("other.example.com"));
    }
}
