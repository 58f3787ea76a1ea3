//! Special uses (RFC 6154) a folder was given when created (IMAP `CREATE name (USE (\Sent))`):
//! kept in a file of the folder's own directory, one attribute per line, so that it moves with
//! a rename and goes with the folder. Folders without the file keep the use their name gives
//! them (`mailbox::SPECIAL_USE`).

use std::io::Read;
use std::path::Path;

const FILE: &str = "mailgate-special-use";
/// The file is a handful of short lines: more is not read.
const MAX_FILE: u64 = 1024;

/// The uses a real folder can have (`\All` and `\Flagged` name virtual ones, which a folder of
/// messages cannot be).
pub const ASSIGNABLE: [&str; 5] = ["\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash"];

/// The attribute as it is written, for a use a folder can be given; `None` for any other.
pub fn assignable(attribute: &str) -> Option<&'static str> {
    ASSIGNABLE
        .iter()
        .copied()
        .find(|a| a.eq_ignore_ascii_case(attribute))
}

/// The uses recorded for the folder at `dir` (none when it has no record).
pub fn read(dir: &Path) -> Vec<&'static str> {
    let Ok(file) = std::fs::File::open(dir.join(FILE)) else {
        return Vec::new();
    };
    let mut text = String::new();
    if file.take(MAX_FILE).read_to_string(&mut text).is_err() {
        return Vec::new();
    }
    text.lines().filter_map(|l| assignable(l.trim())).collect()
}

/// Records `uses` for the folder at `dir`.
pub fn write(dir: &Path, uses: &[&str]) -> std::io::Result<()> {
    if uses.is_empty() {
        return Ok(());
    }
    let text: String = uses.iter().map(|u| format!("{u}\n")).collect();
    let tmp = dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, dir.join(FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_round_trip_and_only_real_ones_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read(dir.path()).is_empty());
        write(dir.path(), &["\\Sent", "\\Archive"]).expect("write");
        assert_eq!(read(dir.path()), ["\\Sent", "\\Archive"]);
        std::fs::write(dir.path().join(FILE), "\\All\n\\junk\nnonsense\n").expect("write");
        assert_eq!(read(dir.path()), ["\\Junk"]);
        assert_eq!(assignable("\\sent"), Some("\\Sent"));
        assert_eq!(assignable("\\Flagged"), None);
        assert_eq!(assignable("\\Important"), None);
    }
}
