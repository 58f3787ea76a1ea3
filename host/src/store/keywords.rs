//! IMAP keywords (`$Forwarded`, `$Junk`, `Work`...) in a Maildir, the way Dovecot keeps them so
//! that both servers read the same folders: the lower-case letters `a`–`z` of a file name's
//! flags stand for keywords 0–25, named by the folder's `dovecot-keywords` file, one
//! `<index> <name>` per line. A folder holds at most 26 keywords.

/// The file naming a folder's keywords.
pub const FILE: &str = "dovecot-keywords";

/// How many keywords fit in a file name's flags.
pub const MAX: usize = 26;

/// A keyword that does not fit: the folder's 26 letters are taken. Dovecot keeps such a
/// keyword in its own index only, out of the file names; we refuse it instead (IMAP
/// `NO [LIMIT]`), since nothing else sharing the Maildir could see it.
#[derive(Debug, thiserror::Error)]
#[error("this mailbox already has {MAX} keywords, the most its Maildir file names can carry")]
pub struct KeywordLimit;

/// Whether an I/O error is a [`KeywordLimit`].
pub fn is_limit(error: &std::io::Error) -> bool {
    error.get_ref().is_some_and(|e| e.is::<KeywordLimit>())
}

/// A folder's keyword names by letter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keywords {
    names: Vec<Option<String>>,
}

impl Keywords {
    /// Reads `dovecot-keywords`; lines that are not `<index 0-25> <atom>` are skipped.
    pub fn parse(text: &str) -> Keywords {
        let mut names = vec![None; MAX];
        for line in text.lines() {
            let Some((index, name)) = line.split_once(' ') else {
                continue;
            };
            let Ok(index) = index.parse::<usize>() else {
                continue;
            };
            if index < MAX && is_atom(name) {
                names[index] = Some(name.to_string());
            }
        }
        Keywords { names }
    }

    pub fn render(&self) -> String {
        self.names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some(format!("{i} {}\n", n.as_ref()?)))
            .collect()
    }

    /// The keyword a flag letter stands for.
    pub fn name(&self, letter: char) -> Option<&str> {
        let index = (letter as u32).checked_sub('a' as u32)? as usize;
        self.names.get(index)?.as_deref()
    }

    /// The letter of a keyword (names compare without regard to ASCII case).
    pub fn letter(&self, name: &str) -> Option<char> {
        self.names
            .iter()
            .position(|n| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .map(letter_of)
    }

    /// The letter of a keyword, giving it the first free one if it has none; `None` when all
    /// 26 are taken or the name is not a keyword.
    pub fn letter_or_add(&mut self, name: &str) -> Option<char> {
        if let Some(letter) = self.letter(name) {
            return Some(letter);
        }
        if !is_atom(name) || name.starts_with('\\') {
            return None;
        }
        if self.names.len() < MAX {
            self.names.resize(MAX, None);
        }
        let free = self.names.iter().position(Option::is_none)?;
        self.names[free] = Some(name.to_string());
        Some(letter_of(free))
    }

    /// Every named keyword, by letter.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().filter_map(|n| n.as_deref())
    }

    /// Room for another keyword.
    pub fn has_room(&self) -> bool {
        self.names.len() < MAX || self.names.iter().any(Option::is_none)
    }
}

fn letter_of(index: usize) -> char {
    char::from(b'a' + index as u8)
}

/// An IMAP atom: printable ASCII without specials (RFC 3501 `atom`), at most 100 bytes.
pub fn is_atom(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name.bytes().all(|b| {
            b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b']')
        })
        && !name[1..].contains('\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_dovecots_file() {
        let mut k = Keywords::parse("0 $Forwarded\n2 Work\nx bad\n30 far\n1 (no)\n");
        assert_eq!(k.name('a'), Some("$Forwarded"));
        assert_eq!(k.name('b'), None);
        assert_eq!(k.name('c'), Some("Work"));
        assert_eq!(k.letter("$forwarded"), Some('a'));
        assert_eq!(k.letter_or_add("$Junk"), Some('b'));
        assert_eq!(k.letter_or_add("work"), Some('c'));
        assert_eq!(k.letter_or_add("\\Seen"), None);
        assert_eq!(k.render(), "0 $Forwarded\n1 $Junk\n2 Work\n");
        for i in 3..MAX {
            assert!(k.letter_or_add(&format!("k{i}")).is_some());
        }
        assert!(!k.has_room());
        assert_eq!(k.letter_or_add("one-too-many"), None);
        assert_eq!(k.name('z'), Some("k25"));
    }
}
