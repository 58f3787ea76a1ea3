//! The folder index and field cache (`mailgate-cache`, and the index kept in memory): what a
//! client is shown never depends on them. A cache deleted, truncated or overwritten with
//! garbage is served around and rebuilt; files another program adds, renames or removes (a
//! plain `mv`, Dovecot's LDA) are seen by the next command, however settled the folder looked;
//! concurrent sessions agree.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mailgate_e2e::{imap_raw, imap_raw_background, imap_raw_output, Gateway};

const USER: &str = "alice@example.test";
const LOGIN: &str = "l LOGIN alice@example.test pw-alice\r\n";
/// Every item the field cache answers, beside those it does not need.
const FETCH: &str = "f FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY \
                     BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)] BODY.PEEK[HEADER])\r\n";

fn maildir(gw: &Gateway) -> PathBuf {
    gw.data().join("mail/example.test/alice")
}

fn message(i: usize) -> String {
    format!(
        "From: Sender {i} <s{i}@client.test>\r\nTo: alice@example.test\r\n\
         Subject: message {i}\r\nDate: Mon, 7 Dec 2026 10:00:0{} +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b{i}\r\n\r\n\
         --b{i}\r\nContent-Type: text/plain\r\n\r\nBody {i}.\r\n\
         --b{i}\r\nContent-Type: text/html\r\n\r\n<p>{i}</p>\r\n--b{i}--\r\n",
        i % 10
    )
}

/// A gateway whose user has `n` messages in INBOX.
fn gateway_with(n: usize) -> Gateway {
    let gw = Gateway::start("");
    let messages: Vec<String> = (0..n).map(message).collect();
    gw.deliver_local(USER, &messages);
    // A first SELECT claims them as \Recent: the sessions of a test then see them alike.
    let out = imap_raw(&gw, &[(LOGIN, "l"), ("s SELECT INBOX\r\n", "s")]);
    assert_eq!(exists(&out[2]), n);
    gw
}

/// One session: SELECT INBOX, then `FETCH`; what each answered.
fn select_and_fetch(gw: &Gateway) -> (String, String) {
    let out = imap_raw(
        gw,
        &[(LOGIN, "l"), ("s SELECT INBOX\r\n", "s"), (FETCH, "f")],
    );
    assert!(out[2].contains("s OK"), "{}", out[2]);
    assert!(out[3].contains("f OK FETCH"), "{}", out[3]);
    (out[2].clone(), out[3].clone())
}

/// The number of messages a SELECT reported.
fn exists(select: &str) -> usize {
    select
        .lines()
        .find_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no EXISTS in {select}"))
}

/// Sets the folder's directories' times a minute back: nothing about them then tells a scan
/// that they changed lately, so only a change made afterwards can.
fn settle(folder: &Path) {
    for sub in ["cur", "new"] {
        let status = Command::new("touch")
            .args(["-d", "1 minute ago"])
            .arg(folder.join(sub))
            .status()
            .expect("touch");
        assert!(status.success());
    }
}

fn cache_file(gw: &Gateway) -> PathBuf {
    maildir(gw).join("mailgate-cache")
}

#[test]
fn a_deleted_truncated_or_garbage_cache_is_served_around_and_rebuilt() {
    let gw = gateway_with(6);
    // First from the messages (the cache filled on the way), then from the cache.
    let (_, computed) = select_and_fetch(&gw);
    let (_, cached) = select_and_fetch(&gw);
    assert_eq!(cached, computed);
    assert!(computed.contains("\"message 5\""), "{computed}");
    assert!(computed.contains("(\"text\" \"html\""), "{computed}");
    let filled = std::fs::read(cache_file(&gw)).expect("the cache was written");
    assert!(filled.starts_with(b"MGCACHE1") && filled.len() > 1000);

    type Damage = fn(&Path);
    let damages: [(&str, Damage); 3] = [
        ("deleted", |p| std::fs::remove_file(p).expect("remove")),
        ("truncated", |p| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .expect("open");
            file.set_len(200).expect("truncate");
        }),
        ("overwritten with garbage", |p| {
            let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
            std::fs::write(p, garbage).expect("garbage");
        }),
    ];
    for (what, damage) in damages {
        damage(&cache_file(&gw));
        let (_, served) = select_and_fetch(&gw);
        assert_eq!(served, computed, "with the cache {what}");
        let rebuilt = std::fs::read(cache_file(&gw)).expect("the cache was written again");
        assert!(
            rebuilt.starts_with(b"MGCACHE1") && rebuilt.len() > 1000,
            "the cache {what} was rebuilt: {} bytes",
            rebuilt.len()
        );
        let (_, again) = select_and_fetch(&gw);
        assert_eq!(
            again, computed,
            "from the cache rebuilt after it was {what}"
        );
    }
}

#[test]
fn files_another_program_adds_renames_or_removes_are_seen_at_once() {
    let gw = gateway_with(4);
    let folder = maildir(&gw);
    let (select, _) = select_and_fetch(&gw);
    assert_eq!(exists(&select), 4);
    settle(&folder);
    // Known in memory now, from directories that changed a minute ago.
    let (select, before) = select_and_fetch(&gw);
    assert_eq!(exists(&select), 4);
    assert!(!before.contains("\\Flagged"), "{before}");

    // A rename (a flag change, as mutt makes it), with `mv`.
    let cur = folder.join("cur");
    let mut names: Vec<String> = std::fs::read_dir(&cur)
        .expect("cur")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let first = names[0].clone();
    let (key, flags) = first.split_once(":2,").expect("a Maildir name");
    let renamed = format!("{key}:2,F{flags}");
    mv(&cur.join(&first), &cur.join(&renamed));
    let (_, after) = select_and_fetch(&gw);
    assert_eq!(after.matches("\\Flagged").count(), 1, "{after}");
    let first_message = &after[..after.find("* 2 FETCH").expect("message 2")];
    assert!(first_message.contains("\\Flagged"), "{after}");

    // A file moved in from elsewhere, and one moved out.
    settle(&folder);
    select_and_fetch(&gw);
    let outside = gw.data().join("outside-message");
    std::fs::write(&outside, message(7).replace("\r\n", "\n")).expect("write");
    mv(&outside, &folder.join("new/1999999999.M1P1.elsewhere,S=1"));
    let (select, added) = select_and_fetch(&gw);
    assert_eq!(exists(&select), 5, "{select}");
    assert!(added.contains("\"message 7\""), "{added}");
    settle(&folder);
    select_and_fetch(&gw);
    let gone = names[1].clone();
    mv(&cur.join(&gone), &gw.data().join("moved-away"));
    let (select, left) = select_and_fetch(&gw);
    assert_eq!(exists(&select), 4, "{select}");
    assert!(!left.contains("\"message 1\""), "{left}");
    // UIDs stay as they were: the rest kept theirs, the new one got the next.
    for (uid, subject) in [(1, "message 0"), (3, "message 2"), (5, "message 7")] {
        assert!(
            left.lines()
                .any(|l| l.contains(&format!("UID {uid} ")) && l.contains(subject)),
            "UID {uid} is {subject}: {left}"
        );
    }
}

fn mv(from: &Path, to: &Path) {
    let status = Command::new("mv").arg(from).arg(to).status().expect("mv");
    assert!(status.success(), "mv {} {}", from.display(), to.display());
}

#[test]
fn a_message_dovecots_lda_delivers_is_seen_at_once() {
    let lda = Path::new("/usr/lib/dovecot/dovecot-lda");
    assert!(
        lda.exists(),
        "Dovecot's LDA is missing: `cargo xtask test` installs dovecot-imapd (dovecot-core)"
    );
    let gw = gateway_with(3);
    let folder = maildir(&gw);
    select_and_fetch(&gw);
    settle(&folder);
    let (select, _) = select_and_fetch(&gw);
    assert_eq!(exists(&select), 3);
    // The LDA refuses to run as root without a userdb: it runs as `nobody`, as the owner of
    // the Maildir (mailgate, as root, still reads everything).
    let chown = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(&folder)
        .status()
        .expect("chown");
    assert!(chown.success());
    make_traversable(&folder);
    let home = tempfile::tempdir().expect("tempdir");
    make_traversable(&home.path().join("x"));
    let config = home.path().join("lda.conf");
    std::fs::write(
        &config,
        format!(
            "mail_location = maildir:{}\nlog_path = /dev/stderr\n",
            folder.display()
        ),
    )
    .expect("config");
    let mut child = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "env"])
        .arg(format!("HOME={}", home.path().display()))
        .arg("USER=nobody")
        .arg(lda)
        .arg("-c")
        .arg(&config)
        .args(["-f", "lda@client.test"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dovecot-lda");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"From: lda@client.test\nSubject: through the LDA\n\nHello.\n")
            .expect("message");
    }
    let out = child.wait_with_output().expect("dovecot-lda");
    assert!(
        out.status.success(),
        "dovecot-lda: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (select, fetched) = select_and_fetch(&gw);
    assert_eq!(exists(&select), 4, "{select}");
    assert!(fetched.contains("\"through the LDA\""), "{fetched}");
    assert!(fetched.contains("UID 4 "), "{fetched}");
}

/// Makes the directories above `path` traversable by `nobody`.
fn make_traversable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for dir in path.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            let mut permissions = meta.permissions();
            permissions.set_mode(mode | 0o001);
            std::fs::set_permissions(dir, permissions).expect("chmod");
        }
    }
}

#[test]
fn concurrent_sessions_see_the_same_folder_while_it_grows() {
    let gw = gateway_with(20);
    let steps: Vec<(String, String)> = [
        (LOGIN, "l"),
        ("s SELECT INBOX\r\n", "s"),
        (FETCH, "f"),
        ("n NOOP\r\n", "n"),
        ("s2 STATUS INBOX (MESSAGES UIDNEXT)\r\n", "s2"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let sessions: Vec<_> = (0..8).map(|_| imap_raw_background(&gw, &steps)).collect();
    // Delivered while they run: each session sees 20 or more, never fewer, never a mix up.
    gw.deliver_local(USER, &[message(20), message(21)]);
    let mut fetches = Vec::new();
    for child in sessions {
        let out = imap_raw_output(child);
        let n = exists(&out[2]);
        assert!((20..=22).contains(&n), "{}", out[2]);
        assert!(out[3].contains("f OK FETCH"), "{}", out[3]);
        assert_eq!(out[3].matches(" FETCH (").count(), n, "{}", out[3]);
        fetches.push(out[3].lines().take(20).collect::<Vec<_>>().join("\n"));
    }
    // The first twenty messages are described alike in every session.
    assert!(fetches.windows(2).all(|w| w[0] == w[1]));
    let out = imap_raw(
        &gw,
        &[(LOGIN, "l"), ("s SELECT INBOX\r\n", "s"), (FETCH, "f")],
    );
    assert_eq!(exists(&out[2]), 22);
    assert!(out[3].contains("\"message 21\""), "{}", out[3]);
}
