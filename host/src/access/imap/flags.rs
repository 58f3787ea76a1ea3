//! IMAP flag names over Maildir flag letters: the five system flags as upper-case letters,
//! keywords as the folder's lower-case letters (see `store::keywords`), `\Recent` from the
//! session.

use imap_codec::imap_types::flag::Flag;

use crate::store::keywords::{self, Keywords};
use crate::store::mailbox::Flags;

const SYSTEM: [(char, &str); 5] = [
    ('R', "\\Answered"),
    ('F', "\\Flagged"),
    ('T', "\\Deleted"),
    ('S', "\\Seen"),
    ('D', "\\Draft"),
];

/// `(\Seen $Forwarded \Recent)`: a message's flags as FETCH FLAGS shows them.
pub fn render(letters: Flags, recent: bool, keywords: &Keywords) -> String {
    let mut names: Vec<&str> = SYSTEM
        .iter()
        .filter(|(letter, _)| letters.contains(*letter))
        .map(|&(_, name)| name)
        .collect();
    names.extend(
        ('a'..='z')
            .filter(|&c| letters.contains(c))
            .filter_map(|c| keywords.name(c)),
    );
    if recent {
        names.push("\\Recent");
    }
    format!("({})", names.join(" "))
}

/// The system flags and keywords a command names (`\Recent` and unknown `\X` flags are not
/// the client's to set, and are left out).
pub fn requested(flags: &[Flag<'_>]) -> (Flags, Vec<String>) {
    let mut letters = String::new();
    let mut names = Vec::new();
    for flag in flags {
        match flag {
            Flag::Answered => letters.push('R'),
            Flag::Flagged => letters.push('F'),
            Flag::Deleted => letters.push('T'),
            Flag::Seen => letters.push('S'),
            Flag::Draft => letters.push('D'),
            Flag::Keyword(atom) if keywords::is_atom(atom.as_ref()) => {
                names.push(atom.as_ref().to_string())
            }
            _ => {}
        }
    }
    (Flags::parse(&letters), names)
}

/// The `* FLAGS` and `* OK [PERMANENTFLAGS]` lines for a folder with these keywords; `\*`
/// (new keywords allowed) while there is room for another. Read-only (EXAMINE), no flag can
/// be changed: `PERMANENTFLAGS ()` (RFC 3501 §6.3.2, RFC 9051 §7.1).
pub fn announcement(keywords: &Keywords, read_only: bool) -> [String; 2] {
    let mut all: Vec<&str> = SYSTEM.iter().map(|&(_, name)| name).collect();
    all.extend(keywords.names());
    let listed = all.join(" ");
    let permanent = if read_only {
        "* OK [PERMANENTFLAGS ()] Read-only mailbox".to_string()
    } else {
        let more = if keywords.has_room() { " \\*" } else { "" };
        format!("* OK [PERMANENTFLAGS ({listed}{more})] Flags permitted")
    };
    [format!("* FLAGS ({listed})"), permanent]
}

/// The tagged `NO` for a store failure while `doing` something: `[OVERQUOTA]` when the user's
/// storage is used up (see `store::mailbox::OverQuota`), `[LIMIT]` for a keyword the
/// mailbox has no room for (see `store::keywords::KeywordLimit`), `[CANNOT]` for a name the
/// file system will not take, else `[UNAVAILABLE]` (RFC 5530: "temporary failure"). A
/// Maildir that cannot be read or written — permission denied, a disk gone, a file moved
/// underneath — is an outage the client may retry, never a permanent refusal.
pub fn failure(doing: &str, error: &std::io::Error) -> String {
    const NAME_TOO_LONG: i32 = 36;
    if crate::store::mailbox::is_over_quota(error) {
        // RFC 5530: the user's quota is used up.
        format!("NO [OVERQUOTA] {doing}: {error}")
    } else if keywords::is_limit(error) {
        format!("NO [LIMIT] {doing}: {error}")
    } else if error.kind() == std::io::ErrorKind::InvalidInput
        || error.raw_os_error() == Some(NAME_TOO_LONG)
    {
        format!("NO [CANNOT] {doing}: {error}")
    } else {
        format!("NO [UNAVAILABLE] {doing}: {error}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_system_flags_keywords_and_recent() {
        let keywords = Keywords::parse("0 $Forwarded\n1 Work\n");
        assert_eq!(
            render(Flags::parse("SRa"), true, &keywords),
            "(\\Answered \\Seen $Forwarded \\Recent)"
        );
        // A letter without a name is not shown.
        assert_eq!(render(Flags::parse("c"), false, &keywords), "()");
        let [flags, permanent] = announcement(&keywords, false);
        assert!(flags.ends_with("\\Draft $Forwarded Work)"), "{flags}");
        assert!(permanent.contains("Work \\*)]"), "{permanent}");
        let [read_only_flags, none] = announcement(&keywords, true);
        assert_eq!(read_only_flags, flags);
        assert!(none.starts_with("* OK [PERMANENTFLAGS ()]"), "{none}");
    }
}
