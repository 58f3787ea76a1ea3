//! Folder names: Maildir++ directories (`A/B` is `.A.B/`) that no name can lead outside of,
//! the special-use folders every user gets, and the listing of a Maildir's folders.

use std::path::{Path, PathBuf};

use super::Folder;

/// Why a mailbox name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadName(pub String);

/// The directory of folder `name` in a user's Maildir: INBOX is the Maildir itself, `A/B` is
/// `.A.B/` (Maildir++). Nothing can reach outside: `..`, empty parts, absolute paths, NUL,
/// control characters and our own separator `.` inside a part are refused.
pub fn folder_path(maildir: &Path, name: &str) -> Result<PathBuf, BadName> {
    match folder_component(name)?.as_str() {
        "." => Ok(maildir.to_path_buf()),
        component => Ok(maildir.join(component)),
    }
}

/// The folder's directory name inside the Maildir: `.` for INBOX, `.A.B` for `A/B`.
pub(super) fn folder_component(name: &str) -> Result<String, BadName> {
    if name.eq_ignore_ascii_case("INBOX") {
        return Ok(".".into());
    }
    let bad = |why: &str| Err(BadName(format!("{name:?}: {why}")));
    if name.is_empty() || name.len() > 200 {
        return bad("empty or too long");
    }
    if name.chars().any(|c| c.is_control()) {
        return bad("control characters");
    }
    if name.starts_with('/') || name.contains('\\') {
        return bad("not a relative mailbox name");
    }
    let parts: Vec<&str> = name.split('/').collect();
    for part in &parts {
        if part.is_empty() || *part == "." || *part == ".." {
            return bad("empty, . or .. in the hierarchy");
        }
        if part.contains('.') {
            return bad("'.' is not allowed in a mailbox name");
        }
    }
    Ok(format!(".{}", parts.join(".")))
}

/// The special-use folders every user gets (at the first IMAP or JMAP login), with their
/// RFC 6154 attribute.
pub const SPECIAL_USE: [(&str, &str); 5] = [
    ("Archive", "\\Archive"),
    ("Drafts", "\\Drafts"),
    ("Junk", "\\Junk"),
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
];

/// Creates the special-use folders a Maildir lacks, subscribed (as Dovecot's
/// `auto = subscribe`), so that clients showing only subscribed folders show them.
pub fn ensure_special_use(maildir: &Path) -> std::io::Result<()> {
    let mut created = Vec::new();
    for (name, _) in SPECIAL_USE {
        let exists = folder_path(maildir, name).is_ok_and(|p| p.join("cur").is_dir());
        if !exists {
            Folder::open_in(maildir, name)?;
            created.push(name);
        }
    }
    if created.is_empty() {
        return Ok(());
    }
    crate::store::subscriptions::add_all(maildir, &created)
}

/// How many folders the Maildir holds besides INBOX (its `.name` directories): one read of
/// the directory, no look inside each, for checking a bound before a folder is made.
pub fn count_folders(maildir: &Path) -> usize {
    std::fs::read_dir(maildir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().as_encoded_bytes().first() == Some(&b'.'))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .count()
}

/// Every folder of a Maildir: INBOX first, then subfolders by name (`A/B` for `.A.B`).
pub fn list_folders(maildir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(maildir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("cur").is_dir())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let inner = name.strip_prefix('.')?;
            (!inner.is_empty()).then(|| inner.replace('.', "/"))
        })
        .collect();
    names.sort();
    names.insert(0, "INBOX".into());
    names
}
