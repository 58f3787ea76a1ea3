//! Maildir flags: the letters after `:2,` in a message's file name.

/// A message's Maildir flags: a set of letters (A–Z, a–z) in one word, since every session
/// keeps one per message of the selected folder. Written out deduplicated and in ASCII order,
/// as the Maildir spec wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(u64);

impl Flags {
    /// The letters in `text`; anything else is ignored.
    pub fn parse(text: &str) -> Flags {
        Flags(
            text.chars()
                .filter_map(Flags::bit)
                .fold(0, |set, bit| set | bit),
        )
    }

    pub fn contains(self, letter: char) -> bool {
        Flags::bit(letter).is_some_and(|bit| self.0 & bit != 0)
    }

    pub fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    pub fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }

    /// Only the upper-case letters: the system flags.
    pub fn system(self) -> Flags {
        Flags(self.0 & ((1 << 26) - 1))
    }

    /// The lower-case letters: keywords.
    pub fn keyword_letters(self) -> impl Iterator<Item = char> {
        ('a'..='z').filter(move |&c| self.contains(c))
    }

    /// Upper-case letters take bits 0–25 and lower-case 26–51, so bit order is ASCII order.
    fn bit(letter: char) -> Option<u64> {
        match letter {
            'A'..='Z' => Some(1 << (letter as u32 - 'A' as u32)),
            'a'..='z' => Some(1 << (26 + letter as u32 - 'a' as u32)),
            _ => None,
        }
    }

    fn letters(self) -> impl Iterator<Item = char> {
        ('A'..='Z')
            .chain('a'..='z')
            .filter(move |&c| self.contains(c))
    }
}

impl std::fmt::Display for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.letters()
            .try_for_each(|c| std::fmt::Write::write_char(f, c))
    }
}
