//! User names: the one canonical form of a local user's address, and the one Maildir path
//! derived from it.
//!
//! A name is `local@domain` and its canonical form is:
//! - domain: an internet host name, IDNA-mapped to lower-case A-labels (`Bücher.Example` ->
//!   `xn--bcher-kva.example`); labels of letters, digits and inner hyphens, 1 to 63 octets; no
//!   address literals, no trailing dot;
//! - local part: a dot-atom (RFC 5321): atext characters and dots, never a dot first, last or
//!   twice in a row, at most 64 octets; UTF-8 allowed (RFC 6531), normalised to NFC; matched
//!   case-insensitively, so stored lower-cased; dots and `+` are ordinary characters (no
//!   dot-folding, no subaddressing: `c.arol` and `carol+x` are users of their own); quoted
//!   local parts, `/`, `\`, whitespace, control and invisible formatting characters are refused.
//!
//! Two spellings of one user therefore canonicalise to one name, and [`UserName::maildir`]
//! maps names to paths injectively: `<domain>/<local>`, two single path components, neither
//! empty, `.`, `..`, nor starting with a dot (which is also how Maildir++ folders are marked),
//! neither containing `/` or NUL. Nothing else derives a path from a user name.

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;
use unicode_normalization::UnicodeNormalization;

/// Longest local part (RFC 5321 4.5.3.1.1), in octets.
const MAX_LOCAL: usize = 64;
/// Longest address (a 256-octet path less its angle brackets).
const MAX_ADDRESS: usize = 254;

/// Why a string is not a user name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{name:?} is not a valid user name: {reason}")]
pub struct NameError {
    pub name: String,
    pub reason: &'static str,
}

/// A user name in canonical form (see the module documentation). Only [`UserName::parse`]
/// makes one, so holding one means the name is valid and canonical.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserName(String);

impl UserName {
    /// The canonical form of `address`, or why it cannot name a user.
    pub fn parse(address: &str) -> Result<UserName, NameError> {
        let fail = |reason| NameError {
            name: address.to_string(),
            reason,
        };
        let (local, domain) = address
            .split_once('@')
            .ok_or_else(|| fail("it needs a local part, an '@' and a domain"))?;
        if domain.contains('@') {
            return Err(fail(
                "it has more than one '@' (quoted local parts are not taken)",
            ));
        }
        let local = canonical_local(local).map_err(fail)?;
        let domain = canonical_domain(domain).map_err(fail)?;
        let name = format!("{local}@{domain}");
        if name.len() > MAX_ADDRESS {
            return Err(fail("it is longer than 254 octets"));
        }
        Ok(UserName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The local part (before the `@`).
    pub fn local(&self) -> &str {
        self.0.split_once('@').map_or("", |(l, _)| l)
    }

    /// The domain (after the `@`).
    pub fn domain(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, d)| d)
    }

    /// The user's Maildir under `mail_root`: `<mail_root>/<domain>/<local>`.
    pub fn maildir(&self, mail_root: &Path) -> PathBuf {
        mail_root.join(self.maildir_relative())
    }

    /// `<domain>/<local>`: both parts are single, safe path components by construction.
    pub fn maildir_relative(&self) -> PathBuf {
        Path::new(self.domain()).join(self.local())
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for UserName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for UserName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The canonical domain of `domain` (lower-case A-labels), for names and domain lists alike.
pub fn canonical_domain(domain: &str) -> Result<String, &'static str> {
    if domain.is_empty() {
        return Err("the domain is empty");
    }
    if domain.starts_with('[') {
        return Err("address literals are not user domains");
    }
    if domain.ends_with('.') {
        return Err("the domain ends with a dot");
    }
    let ascii =
        idna::domain_to_ascii_strict(domain).map_err(|_| "the domain is not a valid host name")?;
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if ascii.is_empty() || !ascii.split('.').all(label_ok) {
        return Err("the domain is not a valid host name");
    }
    Ok(ascii.to_ascii_lowercase())
}

/// The canonical local part: NFC, lower-cased, a dot-atom of permitted characters.
fn canonical_local(local: &str) -> Result<String, &'static str> {
    if local.is_empty() {
        return Err("the local part is empty");
    }
    if local.starts_with('"') {
        return Err("quoted local parts are not taken");
    }
    let folded: String = local.nfc().flat_map(char::to_lowercase).nfc().collect();
    if folded.len() > MAX_LOCAL {
        return Err("the local part is longer than 64 octets");
    }
    if let Some(c) = folded.chars().find(|&c| !local_char(c)) {
        return Err(match c {
            '/' | '\\' => "the local part contains a slash",
            c if c.is_control() => "the local part contains a control character",
            c if c.is_whitespace() => "the local part contains white space",
            _ => "the local part contains a character not allowed in an address",
        });
    }
    if folded.starts_with('.') {
        return Err("the local part starts with a dot");
    }
    if folded.ends_with('.') {
        return Err("the local part ends with a dot");
    }
    if folded.contains("..") {
        return Err("the local part has two dots in a row");
    }
    Ok(folded)
}

/// A character a canonical local part may hold: RFC 5322 atext less `/`, a dot, or a visible
/// non-ASCII character (RFC 6531).
fn local_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || "!#$%&'*+-=?^_`{|}~.".contains(c);
    }
    !c.is_control() && !c.is_whitespace() && !invisible(c)
}

/// Formatting characters that render as nothing: two names differing only by them would
/// look alike everywhere a person reads them.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{E0000}'..='\u{E0FFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(address: &str) -> String {
        UserName::parse(address)
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string()
    }

    fn refused(address: &str) -> &'static str {
        match UserName::parse(address) {
            Ok(name) => panic!("{address:?} accepted as {name}"),
            Err(e) => e.reason,
        }
    }

    #[test]
    fn spellings_of_one_user_meet_in_one_canonical_name() {
        assert_eq!(ok("Carol@Example.TEST"), "carol@example.test");
        assert_eq!(ok("CAROL@example.test"), "carol@example.test");
        assert_eq!(ok("c.arol+news@example.test"), "c.arol+news@example.test");
        // NFC and case: "É" precomposed, decomposed, upper and lower are one user.
        let forms = ["\u{c9}lodie@example.test", "E\u{301}lodie@example.test"];
        for form in forms {
            assert_eq!(ok(form), "\u{e9}lodie@example.test");
        }
        assert_eq!(ok("anna@B\u{fc}cher.example"), "anna@xn--bcher-kva.example");
        assert_eq!(
            ok("anna@XN--BCHER-KVA.example"),
            "anna@xn--bcher-kva.example"
        );
    }

    #[test]
    fn names_that_are_not_addresses_or_would_escape_their_maildir_are_refused() {
        for (address, reason) in [
            (".carol@example.test", "starts with a dot"),
            ("carol.@example.test", "ends with a dot"),
            ("ca..rol@example.test", "two dots"),
            ("..@example.test", "starts with a dot"),
            ("a/b@example.test", "slash"),
            ("a\\b@example.test", "slash"),
            ("a\0b@example.test", "control"),
            ("a\tb@example.test", "control"),
            ("a b@example.test", "white space"),
            ("a\u{200B}b@example.test", "not allowed"),
            ("\"carol\"@example.test", "quoted"),
            ("carol@x@example.test", "more than one"),
            ("carol", "needs a local part"),
            ("@example.test", "empty"),
            ("carol@", "empty"),
            ("carol@../etc", "host name"),
            ("carol@exa/mple.test", "host name"),
            ("carol@.example.test", "host name"),
            ("carol@example.test.", "ends with a dot"),
            ("carol@[127.0.0.1]", "literals"),
            ("carol@-x.test", "host name"),
        ] {
            let why = refused(address);
            assert!(why.contains(reason), "{address:?}: {why}");
        }
        let long = format!("{}@example.test", "a".repeat(65));
        assert!(refused(&long).contains("64"));
    }

    #[test]
    fn distinct_names_get_distinct_maildirs_beneath_the_root() {
        let root = Path::new("/srv/mail");
        let names = [
            "carol@example.test",
            "c.arol@example.test",
            "carol@example.test.example",
            "carol.example@test",
            "\u{e9}@example.test",
            "e@example.test",
        ];
        let mut paths: Vec<PathBuf> = names
            .iter()
            .map(|n| UserName::parse(n).expect("valid").maildir(root))
            .collect();
        for path in &paths {
            assert!(path.starts_with(root));
            let parts: Vec<_> = path.strip_prefix(root).expect("beneath").iter().collect();
            assert_eq!(parts.len(), 2, "{path:?}");
            assert!(parts.iter().all(|p| !p.to_string_lossy().starts_with('.')));
        }
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), names.len());
    }
}
