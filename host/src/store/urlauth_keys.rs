//! The secret keys URLAUTH (RFC 4467) tokens are made with: one per user and mailbox, kept
//! in the user's Maildir in a file only its owner may read (0600), one `hexkey name` a line.
//! RESETKEY replaces a mailbox's key (or forgets them all), which voids every URL made with
//! it. Written whole to a temporary file and renamed over, so a reader never sees half.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ring::rand::{SecureRandom, SystemRandom};

const FILE: &str = "mailgate-urlauth-keys";
const KEY_BYTES: usize = 32;

fn path(maildir: &Path) -> PathBuf {
    maildir.join(FILE)
}

/// Every mailbox's key; none when the file does not exist. Malformed lines are skipped.
fn read_all(maildir: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    // A file the server writes itself: a link or anything but a regular file (a FIFO would
    // block the reader) is refused, and its size is bounded.
    let text = match crate::config::file::read_regular_text(
        &path(maildir),
        crate::config::file::MAX_SMALL_FILE,
        crate::config::file::Links::Refuse,
    ) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let (hex, name) = line.split_once(' ')?;
            Some((name.to_string(), hex_decode(hex)?))
        })
        .collect())
}

fn write_all(maildir: &Path, keys: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    let mut text = String::new();
    for (name, key) in keys {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        text.push_str(&format!("{hex} {name}\n"));
    }
    // One temporary name per writer: two sessions of the user may write at once.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let temp = maildir.join(format!("{FILE}.{}.{n}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, path(maildir))
}

fn fresh() -> std::io::Result<Vec<u8>> {
    let mut key = vec![0u8; KEY_BYTES];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| std::io::Error::other("no randomness for a URLAUTH key"))?;
    Ok(key)
}

/// The key of `mailbox` (UTF-8 name), if it has one.
pub fn key(maildir: &Path, mailbox: &str) -> std::io::Result<Option<Vec<u8>>> {
    Ok(read_all(maildir)?
        .into_iter()
        .find(|(name, _)| name == mailbox)
        .map(|(_, key)| key))
}

/// The key of `mailbox`, made now if it has none.
pub fn key_or_new(maildir: &Path, mailbox: &str) -> std::io::Result<Vec<u8>> {
    if let Some(key) = key(maildir, mailbox)? {
        return Ok(key);
    }
    let mut keys = read_all(maildir)?;
    let key = fresh()?;
    keys.push((mailbox.to_string(), key.clone()));
    write_all(maildir, &keys)?;
    Ok(key)
}

/// RESETKEY: a new key for `mailbox`, or no key for any mailbox (`None`).
pub fn reset(maildir: &Path, mailbox: Option<&str>) -> std::io::Result<()> {
    let Some(mailbox) = mailbox else {
        return write_all(maildir, &[]);
    };
    let mut keys = read_all(maildir)?;
    keys.retain(|(name, _)| name != mailbox);
    keys.push((mailbox.to_string(), fresh()?));
    write_all(maildir, &keys)
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_kept_per_mailbox_privately_and_reset_anew() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inbox = key_or_new(dir.path(), "INBOX").expect("key");
        assert_eq!(key_or_new(dir.path(), "INBOX").expect("key"), inbox);
        let sent = key_or_new(dir.path(), "Sent items").expect("key");
        assert_ne!(sent, inbox);
        let mode = std::fs::metadata(dir.path().join(FILE))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        reset(dir.path(), Some("INBOX")).expect("reset");
        let new = key(dir.path(), "INBOX").expect("read").expect("a key");
        assert_ne!(new, inbox);
        assert_eq!(key(dir.path(), "Sent items").expect("read"), Some(sent));
        reset(dir.path(), None).expect("reset all");
        assert_eq!(key(dir.path(), "INBOX").expect("read"), None);
    }
}
