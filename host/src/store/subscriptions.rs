//! A user's subscribed mailboxes (IMAP SUBSCRIBE, LSUB), in the Maildir's `subscriptions`
//! file the way Dovecot 2.x keeps it, so that both servers share one list: a `V<TAB>2` line and
//! an empty line, then one name per line with the hierarchy separated by TABs (each level
//! escaped as Dovecot's `str_tabescape`: `\x01` then `0`, `1`, `t`, `r` or `n`). Files without
//! the header (ours before, Dovecot 1.x) hold one name a line, levels separated by `/` (ours)
//! or `.` (Maildir++ names, Dovecot's): both read; the file is always written as version 2.
//! Changes take Dovecot's lock, `subscriptions.lock` created exclusively, and the new list is
//! written into that lock file and renamed over the list, as Dovecot's dotlock does.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// The file, in the user's Maildir.
pub const FILE: &str = "subscriptions";
const LOCK: &str = "subscriptions.lock";
const HEADER: &str = "V\t2\n\n";
/// Dovecot waits 120 s for the lock and takes over one untouched for 30 s.
const LOCK_WAIT: Duration = Duration::from_secs(10);
const LOCK_STALE: Duration = Duration::from_secs(30);

/// The subscribed names (`/` between levels), in the file's order, without duplicates.
pub fn read(maildir: &Path) -> Vec<String> {
    parse(&std::fs::read_to_string(maildir.join(FILE)).unwrap_or_default())
}

/// Subscribes (`on`) or unsubscribes `name`, keeping every other line as it was.
pub fn set(maildir: &Path, name: &str, on: bool) -> std::io::Result<()> {
    let name = if name.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        name
    };
    std::fs::create_dir_all(maildir)?;
    let lock = Dotlock::take(maildir)?;
    let mut names = read(maildir);
    let before = names.len();
    names.retain(|n| n != name);
    if on {
        names.push(name.to_string());
    } else if names.len() == before {
        return lock.release();
    }
    lock.replace(&render(&names))
}

/// Subscribes every name of `names` not subscribed yet (the folders made at first login).
pub fn add_all(maildir: &Path, names: &[&str]) -> std::io::Result<()> {
    let lock = Dotlock::take(maildir)?;
    let mut list = read(maildir);
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !list.iter().any(|l| l == n))
        .collect();
    if missing.is_empty() {
        return lock.release();
    }
    list.extend(missing.into_iter().map(str::to_string));
    lock.replace(&render(&list))
}

/// The names a subscriptions file holds (Dovecot 2.x, our old plain form, Maildir++ names).
pub fn parse(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let (version2, body) = match text.strip_prefix(HEADER) {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    for line in body.lines().filter(|l| !l.is_empty()) {
        let name = if version2 {
            line.split('\t').map(unescape).collect::<Vec<_>>().join("/")
        } else if line.contains('/') {
            line.to_string()
        } else {
            // Dovecot 1.x wrote Maildir++ names (`Work.Projects`); ours never hold a `.`.
            line.replace('.', "/")
        };
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The file text for `names`, in Dovecot 2.x's form.
pub fn render(names: &[String]) -> String {
    let mut text = HEADER.to_string();
    for name in names {
        let levels: Vec<String> = name.split('/').map(escape).collect();
        text.push_str(&levels.join("\t"));
        text.push('\n');
    }
    text
}

/// Dovecot's `str_tabescape`.
fn escape(level: &str) -> String {
    let mut out = String::with_capacity(level.len());
    for c in level.chars() {
        match c {
            '\x01' => out.push_str("\x011"),
            '\t' => out.push_str("\x01t"),
            '\r' => out.push_str("\x01r"),
            '\n' => out.push_str("\x01n"),
            '\0' => out.push_str("\x010"),
            c => out.push(c),
        }
    }
    out
}

/// Dovecot's `str_tabunescape`.
fn unescape(level: &str) -> String {
    let mut out = String::with_capacity(level.len());
    let mut chars = level.chars();
    while let Some(c) = chars.next() {
        if c != '\x01' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('\0'),
            Some('1') => out.push('\x01'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// The lock file, held from creation until it replaces the list or is removed.
struct Dotlock {
    file: std::fs::File,
    maildir: std::path::PathBuf,
}

impl Dotlock {
    fn take(maildir: &Path) -> std::io::Result<Dotlock> {
        let path = maildir.join(LOCK);
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(Dotlock {
                        file,
                        maildir: maildir.to_path_buf(),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let age = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok());
            if age.is_some_and(|age| age > LOCK_STALE) {
                // Left by a process that died holding it.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the subscriptions file stays locked",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes the new list into the lock file and renames it over the list.
    fn replace(mut self, text: &str) -> std::io::Result<()> {
        let written = self
            .file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data());
        let lock = self.maildir.join(LOCK);
        match written {
            Ok(()) => std::fs::rename(&lock, self.maildir.join(FILE)),
            Err(e) => {
                let _ = std::fs::remove_file(&lock);
                Err(e)
            }
        }
    }

    fn release(self) -> std::io::Result<()> {
        std::fs::remove_file(self.maildir.join(LOCK))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dovecots_version_2_and_the_plain_formats() {
        let dovecot = "V\t2\n\nWork\tProjects\nINBOX\nSent\nA\x01tB\n";
        assert_eq!(parse(dovecot), ["Work/Projects", "INBOX", "Sent", "A\tB"]);
        assert_eq!(
            parse("Work/Projects\n\nSent\nSent\n"),
            ["Work/Projects", "Sent"]
        );
        assert_eq!(parse("Work.Projects\nINBOX\n"), ["Work/Projects", "INBOX"]);
        assert!(parse("").is_empty());
        let names: Vec<String> = ["Work/Projects", "INBOX"].map(String::from).to_vec();
        assert_eq!(render(&names), "V\t2\n\nWork\tProjects\nINBOX\n");
        assert_eq!(parse(&render(&names)), names);
    }

    #[test]
    fn set_keeps_others_and_writes_version_2() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE), "Old/One\nTwo\n").expect("old");
        set(dir.path(), "Work/Projects", true).expect("on");
        set(dir.path(), "inbox", true).expect("inbox");
        set(dir.path(), "Two", false).expect("off");
        set(dir.path(), "Never", false).expect("nothing to do");
        add_all(dir.path(), &["Sent", "INBOX"]).expect("defaults");
        let text = std::fs::read_to_string(dir.path().join(FILE)).expect("read");
        assert_eq!(text, "V\t2\n\nOld\tOne\nWork\tProjects\nINBOX\nSent\n");
        assert!(!dir.path().join(LOCK).exists());
    }
}
