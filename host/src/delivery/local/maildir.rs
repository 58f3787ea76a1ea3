//! Local delivery into Maildir: write into `tmp/`, fsync, rename into `new/`, fsync `new/`.
//! Readers (Dovecot, mutt, our POP3/IMAP) never see a half-written file.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use crate::store::names::UserName;

/// A user's Maildir opened for delivery: handles on its `tmp/`, `new/` and `cur/`, each opened
/// beneath the mail root and each a directory of its own (not a symbolic link), so that no
/// link planted in a Maildir, and no name, makes a delivery write anywhere else.
pub struct Maildir {
    tmp: Dir,
    new: Dir,
    cur: Dir,
}

impl Maildir {
    /// The Maildir of `address` under `mail_root`, created if missing.
    pub fn open(mail_root: &Path, user: &UserName) -> std::io::Result<Maildir> {
        std::fs::create_dir_all(mail_root)?;
        let root = Dir::open_ambient_dir(mail_root, ambient_authority())?;
        let relative = user.maildir_relative();
        root.create_dir_all(&relative)?;
        let user = root.open_dir(&relative)?;
        Ok(Maildir {
            tmp: own_directory(&user, "tmp")?,
            new: own_directory(&user, "new")?,
            cur: own_directory(&user, "cur")?,
        })
    }

    fn already_delivered(&self, name: &str) -> std::io::Result<bool> {
        if self.new.exists(name) {
            return Ok(true);
        }
        // Files in cur/ carry an info suffix (":2,S"); the base name is what we gave.
        let prefix = format!("{name}:");
        Ok(self.cur.entries()?.flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|f| f == name || f.starts_with(&prefix))
        }))
    }
}

/// `name` in `parent`, created if missing, opened only when it is a directory itself: a
/// symbolic link there (even to a directory) is refused.
fn own_directory(parent: &Dir, name: &str) -> std::io::Result<Dir> {
    match parent.create_dir(name) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let kind = parent.symlink_metadata(name)?.file_type();
    if kind.is_symlink() || !kind.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the Maildir's {name}/ is not a directory of its own (a link?)"),
        ));
    }
    parent.open_dir(name)
}

/// Delivers `parts` (written one after another, e.g. a Return-Path line and the message) under
/// the file name `name`, unless a file of that name is already in `new/` or `cur/`: delivery is
/// idempotent, so a retry after a crash never makes a second copy. False when it was already
/// delivered.
pub fn deliver(maildir: Arc<Maildir>, name: &str, parts: &[&[u8]]) -> std::io::Result<bool> {
    let Some(staged) = stage(maildir, name, parts)? else {
        return Ok(false);
    };
    staged.maildir.tmp.open(name)?.sync_all()?;
    publish(&staged)?;
    staged.maildir.new.open(".")?.sync_all()?;
    Ok(true)
}

/// A message written into `tmp/` but not yet in `new/` (see [`stage`]).
pub struct Staged {
    maildir: Arc<Maildir>,
    name: String,
}

/// The first half of a batched delivery: writes the file into `tmp/` without syncing it.
/// `None` when a file of that name was already delivered. The caller makes a whole batch durable
/// with one filesystem sync, then [`publish`]es each file and syncs again.
pub fn stage(
    maildir: Arc<Maildir>,
    name: &str,
    parts: &[&[u8]],
) -> std::io::Result<Option<Staged>> {
    if maildir.already_delivered(name)? {
        return Ok(None);
    }
    let written = maildir
        .tmp
        .create(name)
        .and_then(|mut file| parts.iter().try_for_each(|p| file.write_all(p)));
    if let Err(e) = written {
        let _ = maildir.tmp.remove_file(name);
        return Err(e);
    }
    Ok(Some(Staged {
        maildir,
        name: name.to_string(),
    }))
}

/// Moves a staged file into `new/`.
pub fn publish(staged: &Staged) -> std::io::Result<()> {
    let maildir = &staged.maildir;
    maildir.tmp.rename(&staged.name, &maildir.new, &staged.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(address: &str) -> UserName {
        UserName::parse(address).expect("a valid name")
    }

    #[test]
    fn delivers_whole_files_into_new() {
        let dir = tempfile::tempdir().expect("tempdir");
        let alice = name("alice@example.org");
        let open = || Arc::new(Maildir::open(dir.path(), &alice).expect("open"));
        let maildir = alice.maildir(dir.path());
        let parts: [&[u8]; 2] = [b"Return-Path: <a@b>\r\n", b"Subject: x\r\n\r\nhi\r\n"];
        assert!(deliver(open(), "1.q1.mailgate", &parts).expect("deliver"));
        assert!(
            !deliver(open(), "1.q1.mailgate", &parts).expect("again"),
            "idempotent"
        );
        let path = maildir.join("new/1.q1.mailgate");
        std::fs::rename(&path, maildir.join("cur/1.q1.mailgate:2,S")).expect("mark seen");
        assert!(
            !deliver(open(), "1.q1.mailgate", &parts).expect("again"),
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
        assert!(
            UserName::parse("../../x@../etc").is_err(),
            "no name reaches outside"
        );
    }

    #[test]
    fn a_linked_maildir_directory_is_refused_and_nothing_is_written_through_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("outside");
        let parts: [&[u8]; 1] = [b"Subject: x\r\n\r\nhi\r\n"];
        for sub in ["tmp", "new", "cur"] {
            let address = name(&format!("{sub}@example.org"));
            let maildir = address.maildir(dir.path());
            std::fs::create_dir_all(&maildir).expect("maildir");
            std::os::unix::fs::symlink(outside.path(), maildir.join(sub)).expect("link");
            let refused = Maildir::open(dir.path(), &address)
                .and_then(|m| deliver(Arc::new(m), "1.q1.mailgate", &parts));
            let error = refused.expect_err("refused");
            assert!(error.to_string().contains(sub), "{error}");
        }
        assert_eq!(
            std::fs::read_dir(outside.path()).expect("outside").count(),
            0
        );
    }

    #[test]
    fn a_linked_file_name_in_tmp_cannot_write_outside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("outside");
        let alice = name("alice@example.org");
        let maildir = Maildir::open(dir.path(), &alice).expect("open");
        let tmp = alice.maildir(dir.path()).join("tmp");
        let target = outside.path().join("victim");
        std::os::unix::fs::symlink(&target, tmp.join("1.q1.mailgate")).expect("link");
        let parts: [&[u8]; 1] = [b"Subject: x\r\n\r\nhi\r\n"];
        assert!(deliver(Arc::new(maildir), "1.q1.mailgate", &parts).is_err());
        assert!(!target.exists());
    }
}
