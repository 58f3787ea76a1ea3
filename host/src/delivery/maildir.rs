//! Local delivery into Maildir: write into `tmp/`, fsync, rename into `new/`, fsync `new/`.
//! Readers (Dovecot, mutt, our POP3/IMAP) never see a half-written file.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The Maildir of a user: `<root>/<domain>/<local>/`.
pub fn maildir_of(root: &Path, address: &str) -> PathBuf {
    let (local, domain) = address.rsplit_once('@').unwrap_or((address, "localhost"));
    // Addresses reaching here are resolved local users; keep names filesystem-safe anyway.
    let safe = |s: &str| {
        s.replace(['/', '\\', '\0'], "_")
            .trim_start_matches('.')
            .to_string()
    };
    root.join(safe(domain)).join(safe(local))
}

/// Creates `tmp/`, `new/` and `cur/` if missing.
pub fn ensure(maildir: &Path) -> std::io::Result<()> {
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(maildir.join(sub))?;
    }
    Ok(())
}

/// Delivers `parts` (written one after another, e.g. a Return-Path line and the message) under
/// the file name `name`, unless a file of that name is already in `new/` or `cur/`: delivery is
/// idempotent, so a retry after a crash never makes a second copy. Returns the new file's path,
/// or `None` when it was already delivered.
pub fn deliver(maildir: &Path, name: &str, parts: &[&[u8]]) -> std::io::Result<Option<PathBuf>> {
    let Some(staged) = stage(maildir, name, parts)? else {
        return Ok(None);
    };
    std::fs::File::open(&staged.tmp)?.sync_all()?;
    publish(&staged)?;
    std::fs::File::open(maildir.join("new"))?.sync_all()?;
    Ok(Some(staged.target))
}

/// A message written into `tmp/` but not yet in `new/` (see [`stage`]).
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    target: PathBuf,
}

/// The first half of a batched delivery: writes the file into `tmp/` without syncing it.
/// `None` when a file of that name was already delivered. The caller makes a whole batch durable
/// with one filesystem sync, then [`publish`]es each file and syncs again.
pub fn stage(maildir: &Path, name: &str, parts: &[&[u8]]) -> std::io::Result<Option<Staged>> {
    ensure(maildir)?;
    if already_delivered(maildir, name)? {
        return Ok(None);
    }
    let tmp = maildir.join("tmp").join(name);
    let written = std::fs::File::create(&tmp)
        .and_then(|mut file| parts.iter().try_for_each(|p| file.write_all(p)));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(Some(Staged {
        tmp,
        target: maildir.join("new").join(name),
    }))
}

/// Moves a staged file into `new/`.
pub fn publish(staged: &Staged) -> std::io::Result<()> {
    std::fs::rename(&staged.tmp, &staged.target)
}

fn already_delivered(maildir: &Path, name: &str) -> std::io::Result<bool> {
    if maildir.join("new").join(name).exists() {
        return Ok(true);
    }
    // Files in cur/ carry an info suffix (":2,S"); the base name is what we gave.
    let prefix = format!("{name}:");
    Ok(std::fs::read_dir(maildir.join("cur"))?.flatten().any(|e| {
        e.file_name()
            .to_str()
            .is_some_and(|f| f == name || f.starts_with(&prefix))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_whole_files_into_new() {
        let dir = tempfile::tempdir().expect("tempdir");
        let maildir = maildir_of(dir.path(), "alice@example.org");
        let parts: [&[u8]; 2] = [b"Return-Path: <a@b>\r\n", b"Subject: x\r\n\r\nhi\r\n"];
        let path = deliver(&maildir, "1.q1.mailgate", &parts)
            .expect("deliver")
            .expect("new file");
        assert_eq!(
            deliver(&maildir, "1.q1.mailgate", &parts).expect("again"),
            None,
            "idempotent"
        );
        std::fs::rename(&path, maildir.join("cur/1.q1.mailgate:2,S")).expect("mark seen");
        assert_eq!(
            deliver(&maildir, "1.q1.mailgate", &parts).expect("again"),
            None,
            "seen in cur/ too"
        );
        let path = maildir.join("cur/1.q1.mailgate:2,S");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"Return-Path: <a@b>\r\nSubject: x\r\n\r\nhi\r\n"
        );
        assert_eq!(
            std::fs::read_dir(maildir.join("tmp")).expect("tmp").count(),
            0
        );
        let hostile = maildir_of(dir.path(), "../../x@../etc");
        assert!(hostile.starts_with(dir.path()));
        assert!(
            !hostile
                .components()
                .any(|c| c == std::path::Component::ParentDir),
            "{hostile:?}"
        );
    }
}
