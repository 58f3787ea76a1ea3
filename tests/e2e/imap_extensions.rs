//! IMAP extensions end to end, each against the real binary with Python's imaplib sending raw
//! commands, and the same commands against Dovecot's imap (run privately on a pipe, as a
//! second implementation nobody here wrote): MULTIAPPEND, CATENATE, THREAD=ORDEREDSUBJECT,
//! ESORT, CONTEXT=SEARCH/SORT with PARTIAL, CREATE-SPECIAL-USE.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use mailgate_e2e::{root, Gateway};
use serde_json::Value;

const USER: &str = "alice@example.test";
const PASSWORD: &str = "pw-alice";

/// A LITERAL+ literal holding `text`.
fn lit(text: &str) -> String {
    format!("{{{}+}}\r\n{text}", text.len())
}

/// A small message with this subject and Date header.
fn message(subject: &str, date: &str) -> String {
    format!(
        "From: a@example.test\r\nDate: {date}\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n"
    )
}

/// What `imap_peers.py` read for each command.
fn run_script(args: &[&str], commands: &[String]) -> Vec<Vec<String>> {
    use std::io::Write;
    let mut child = Command::new("python3")
        .arg(root().join("tests/e2e/clients/imap_peers.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let input = serde_json::to_vec(commands).expect("json");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write");
    let out = child.wait_with_output().expect("imap_peers.py");
    assert!(
        out.status.success(),
        "imap_peers.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies: Value = serde_json::from_slice(&out.stdout).expect("json list");
    replies
        .as_array()
        .expect("list")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("lines")
                .iter()
                .map(|l| l.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .collect()
}

fn ours(gw: &Gateway, commands: &[String]) -> Vec<Vec<String>> {
    run_script(
        &["mailgate", &gw.imaps.to_string(), USER, PASSWORD],
        commands,
    )
}

/// Dovecot's imap with a Maildir of its own, run per script as `nobody`
/// (`cargo xtask test` installs dovecot-imapd).
struct Dovecot {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Dovecot {
    fn new() -> Dovecot {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().display().to_string();
        let config = dir.path().join("dovecot.conf");
        std::fs::write(
            &config,
            format!(
                "base_dir = {home}/run\nlog_path = {home}/dovecot.log\nssl = no\n\
                 mail_location = maildir:{home}/Maildir\nmail_uid = nobody\nmail_gid = nogroup\n"
            ),
        )
        .expect("config");
        std::fs::create_dir_all(dir.path().join("Maildir")).expect("maildir");
        let chown = Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(chown.success());
        Dovecot { dir, config }
    }

    fn run(&self, commands: &[String]) -> Vec<Vec<String>> {
        let _keep = self.dir.path();
        run_script(&["dovecot", &self.config.display().to_string()], commands)
    }
}

/// The tagged line of a reply.
fn tagged(reply: &[String]) -> &str {
    reply.last().map(String::as_str).unwrap_or_default()
}

/// `OK`, `NO` or `BAD`, with the response code's name (`NO [TRYCREATE]`, `OK [APPENDUID]`).
fn outcome(reply: &[String]) -> String {
    let line = tagged(reply);
    let mut words = line.split_whitespace().skip(1);
    let status = words.next().unwrap_or_default().to_ascii_uppercase();
    match words.next() {
        Some(code) if code.starts_with('[') => {
            let name = code.trim_start_matches('[').trim_end_matches(']');
            format!("{status} [{}]", name.to_ascii_uppercase())
        }
        _ => status,
    }
}

/// The untagged lines starting with `prefix` (case-insensitive), in order.
fn untagged(reply: &[String], prefix: &str) -> Vec<String> {
    reply
        .iter()
        .filter(|l| {
            l.get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        })
        .cloned()
        .collect()
}

#[test]
fn multiappend_adds_every_message_or_none() {
    let gw = Gateway::start("");
    let commands = vec![
        format!(
            "a1 APPEND INBOX (\\Seen) {} (\\Flagged) \"01-Feb-2021 10:00:00 +0000\" {}",
            lit(&message("one", "Mon, 1 Feb 2021 10:00:00 +0000")),
            lit(&message("two", "Mon, 1 Feb 2021 11:00:00 +0000"))
        ),
        // The third message names a URL that is no longer valid: neither is added.
        format!(
            "a2 APPEND INBOX {} CATENATE (URL \"/INBOX;UIDVALIDITY=1/;UID=1\")",
            lit(&message("three", "Mon, 1 Feb 2021 12:00:00 +0000"))
        ),
        "a3 STATUS INBOX (MESSAGES)".into(),
        format!(
            "a4 APPEND Nowhere {} {}",
            lit(&message("x", "Mon, 1 Feb 2021 12:00:00 +0000")),
            lit(&message("y", "Mon, 1 Feb 2021 12:00:00 +0000"))
        ),
        "a5 EXAMINE INBOX".into(),
        "a6 FETCH 1:* (FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])".into(),
    ];
    let mine = ours(&gw, &commands);
    let theirs = Dovecot::new().run(&commands);
    assert!(tagged(&mine[0]).contains(" 1:2] "), "{:?}", mine[0]);
    assert_eq!(outcome(&mine[1]), "NO [BADURL]", "{:?}", mine[1]);
    assert!(mine[2][0].ends_with(" (MESSAGES 2)"), "{:?}", mine[2]);
    assert_eq!(outcome(&mine[3]), "NO [TRYCREATE]");
    let fetched = mine[5].join("\n");
    assert!(
        fetched.contains("\\Seen") && fetched.contains("Subject: one"),
        "{fetched}"
    );
    assert!(
        fetched.contains("\"01-Feb-2021 10:00:00 +0000\"") && fetched.contains("Subject: two"),
        "{fetched}"
    );
    for (i, (m, t)) in mine.iter().zip(&theirs).enumerate() {
        assert_eq!(
            outcome(m),
            outcome(t),
            "command {i}: {m:?} / Dovecot: {t:?}"
        );
    }
    // (We quote the name, Dovecot does not.)
    let counts = |reply: &[String]| reply[0].split_once('(').map(|(_, c)| c.to_string());
    assert_eq!(counts(&mine[2]), counts(&theirs[2]));
    assert_eq!(
        untagged(&mine[5], "* 2 FETCH").len(),
        untagged(&theirs[5], "* 2 FETCH").len()
    );
}

const MULTIPART: &str = "From: a@example.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
first part\r\n--b\r\nContent-Type: text/plain\r\n\r\nsecond part\r\n--b--\r\n";

#[test]
fn catenate_joins_text_with_parts_of_stored_messages() {
    let gw = Gateway::start("");
    let commands = vec![
        format!("c1 APPEND INBOX {}", lit(MULTIPART)),
        "c2 CREATE Joined".into(),
        format!(
            "c3 APPEND Joined CATENATE (TEXT {} URL \"/INBOX/;UID=1/;SECTION=2\" TEXT {})",
            lit("From: b@example.test\r\nSubject: joined\r\n\r\n"),
            lit("-- end\r\n")
        ),
        format!(
            "c4 APPEND Joined (\\Seen) CATENATE (URL \"/INBOX/;uid=1/;section=HEADER\" TEXT {} URL \"/INBOX/;UID=1/;SECTION=1/;PARTIAL=0.5\")",
            lit("new body: ")
        ),
        // A whole message, then one under another user's name: refused.
        "c5 APPEND Joined CATENATE (URL \"/INBOX/;UID=1\")".into(),
        "c6 APPEND Joined CATENATE (URL \"imap://bob%40example.test@localhost/INBOX/;UID=1\")"
            .into(),
        "c7 APPEND Joined CATENATE (URL \"/INBOX/;UID=99\")".into(),
        "c8 EXAMINE Joined".into(),
        "c9 FETCH 1:* (FLAGS BODY.PEEK[])".into(),
    ];
    let mine = ours(&gw, &commands);
    let theirs = Dovecot::new().run(&commands);
    let bodies = mine[8].join("\n");
    assert!(
        // A part's body ends before the CRLF of the boundary that follows it.
        bodies.contains("Subject: joined\r\n\r\nsecond part-- end\r\n"),
        "{bodies}"
    );
    assert!(
        bodies.contains("Subject: parts\r\nMIME-Version: 1.0")
            && bodies.contains("\r\n\r\nnew body: first"),
        "{bodies}"
    );
    assert_eq!(outcome(&mine[5]), "NO [BADURL]", "{:?}", mine[5]);
    assert_eq!(outcome(&mine[6]), "NO [BADURL]", "{:?}", mine[6]);
    for (i, (m, t)) in mine.iter().zip(&theirs).enumerate().skip(2) {
        assert_eq!(
            outcome(m),
            outcome(t),
            "command {i}: {m:?} / Dovecot: {t:?}"
        );
    }
    // Byte for byte what Dovecot put together from the same commands.
    let fetch = |reply: &[String]| -> Vec<String> {
        untagged(reply, "* ")
            .iter()
            .filter_map(|l| {
                let (_, after) = l.split_once("BODY[] {")?;
                let (size, rest) = after.split_once("}\r\n")?;
                rest.get(..size.parse::<usize>().ok()?).map(str::to_string)
            })
            .collect()
    };
    assert_eq!(fetch(&mine[8]), fetch(&theirs[8]));
    assert_eq!(fetch(&mine[8]).len(), 3);
}

/// CATENATE is bounded like APPEND: what the URLs bring counts towards the message size
/// limit before anything is read.
#[test]
fn catenate_cannot_grow_a_message_past_the_size_limit() {
    let gw = Gateway::start("[limits]\nmax-message-bytes = 100000\n");
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(60_000));
    let commands = vec![
        format!("s1 APPEND INBOX {}", lit(&big)),
        "s2 APPEND INBOX CATENATE (URL \"/INBOX/;UID=1\" URL \"/INBOX/;UID=1\")".into(),
        "s3 APPEND INBOX CATENATE (URL \"/INBOX/;UID=1\") CATENATE (URL \"/INBOX/;UID=1\")".into(),
        "s4 APPEND INBOX CATENATE (URL \"/INBOX/;UID=1/;SECTION=HEADER\" TEXT {2+}\r\nok)".into(),
        "s5 STATUS INBOX (MESSAGES)".into(),
    ];
    let mine = ours(&gw, &commands);
    assert_eq!(outcome(&mine[0]), "OK [APPENDUID]");
    assert_eq!(outcome(&mine[1]), "NO [TOOBIG]", "{:?}", mine[1]);
    // Two messages of 60 KB, each within the limit: allowed (a command as a whole may carry
    // what one APPEND's may, a message and 1 MiB).
    assert_eq!(outcome(&mine[2]), "OK [APPENDUID]", "{:?}", mine[2]);
    assert_eq!(outcome(&mine[3]), "OK [APPENDUID]");
    assert!(mine[4][0].ends_with(" (MESSAGES 4)"), "{:?}", mine[4]);
}

#[test]
fn thread_orderedsubject_groups_by_base_subject_like_dovecot() {
    let gw = Gateway::start("");
    let messages = [
        message("lunch", "Mon, 1 Feb 2021 10:00:00 +0000"),
        message("Re: lunch", "Mon, 1 Feb 2021 12:00:00 +0000"),
        message("other", "Mon, 1 Feb 2021 09:00:00 +0000"),
        message("Fwd: lunch", "Mon, 1 Feb 2021 11:00:00 +0000"),
        message("RE: [team] other", "Mon, 1 Feb 2021 13:00:00 +0000"),
        message("alone", "Sun, 31 Jan 2021 10:00:00 +0000"),
        message("Re: Re: lunch", "Mon, 1 Feb 2021 10:30:00 +0100"),
    ];
    let appended: Vec<String> = messages.iter().map(|m| lit(m)).collect();
    let commands = vec![
        format!("t1 APPEND INBOX {}", appended.join(" ")),
        "t2 SELECT INBOX".into(),
        "t3 THREAD ORDEREDSUBJECT US-ASCII ALL".into(),
        "t4 UID THREAD ORDEREDSUBJECT UTF-8 NOT SUBJECT alone".into(),
        "t5 THREAD ORDEREDSUBJECT US-ASCII 7".into(),
    ];
    let mine = ours(&gw, &commands);
    let theirs = Dovecot::new().run(&commands);
    assert_eq!(
        untagged(&mine[2], "* THREAD"),
        ["* THREAD (6)(3 5)(7 (1)(4)(2))"]
    );
    for i in 2..5 {
        assert_eq!(outcome(&mine[i]), "OK");
        assert_eq!(
            untagged(&mine[i], "* THREAD"),
            untagged(&theirs[i], "* THREAD"),
            "{i}"
        );
    }
}

/// ESEARCH lines with the position of ADDTO / REMOVEFROM left out (any position is right for a
/// SEARCH, whose result has no order) and upper-cased.
fn esearch_lines(reply: &[String]) -> Vec<String> {
    untagged(reply, "* ESEARCH")
        .iter()
        .map(|l| {
            let mut out = l.to_ascii_uppercase();
            for what in ["ADDTO (", "REMOVEFROM ("] {
                if let Some(at) = out.find(what) {
                    let start = at + what.len();
                    if let Some(space) = out[start..].find(' ') {
                        out.replace_range(start..start + space, "pos");
                    }
                }
            }
            out
        })
        .collect()
}

#[test]
fn esort_partial_and_search_updates_answer_like_dovecot() {
    let gw = Gateway::start("");
    let messages = [
        message("c", "Mon, 1 Feb 2021 12:00:00 +0000"),
        message("a", "Mon, 1 Feb 2021 10:00:00 +0000"),
        message("e", "Mon, 1 Feb 2021 14:00:00 +0000"),
        message("b", "Mon, 1 Feb 2021 11:00:00 +0000"),
        message("d", "Mon, 1 Feb 2021 13:00:00 +0000"),
    ];
    let appended: Vec<String> = messages.iter().map(|m| lit(m)).collect();
    let commands = vec![
        format!("e1 APPEND INBOX {}", appended.join(" ")),
        "e2 SELECT INBOX".into(),
        "e3 SORT RETURN (MIN MAX COUNT) (DATE) US-ASCII ALL".into(),
        "e4 SORT RETURN (ALL) (REVERSE SUBJECT) US-ASCII ALL".into(),
        "e5 UID SORT RETURN () (DATE) US-ASCII NOT SUBJECT c".into(),
        "e6 SEARCH RETURN (PARTIAL 2:3) ALL".into(),
        "e7 SEARCH RETURN (PARTIAL 4:9 COUNT) NOT 2".into(),
        "e8 SEARCH RETURN (PARTIAL 1:3 ALL) ALL".into(),
        // Kept up to date until cancelled.
        "u1 SEARCH RETURN (UPDATE) SEEN".into(),
        "e9 STORE 2,4 +FLAGS.SILENT (\\Seen)".into(),
        "e10 STORE 2 -FLAGS.SILENT (\\Seen)".into(),
        "e11 STORE 4 +FLAGS.SILENT (\\Deleted)".into(),
        "e12 EXPUNGE".into(),
        "e13 CANCELUPDATE \"u1\"".into(),
        "e14 STORE 1 +FLAGS.SILENT (\\Seen)".into(),
    ];
    let mine = ours(&gw, &commands);
    let theirs = Dovecot::new().run(&commands);
    let esearch = |i: usize| esearch_lines(&mine[i]);
    assert_eq!(esearch(2), ["* ESEARCH (TAG \"E3\") MIN 2 MAX 3 COUNT 5"]);
    assert_eq!(esearch(3), ["* ESEARCH (TAG \"E4\") ALL 3,5,1,4,2"]);
    assert_eq!(esearch(5), ["* ESEARCH (TAG \"E6\") PARTIAL (2:3 2:3)"]);
    assert_eq!(
        esearch(6),
        ["* ESEARCH (TAG \"E7\") COUNT 4 PARTIAL (4:9 5)"]
    );
    assert_eq!(outcome(&mine[7]), "BAD");
    assert_eq!(esearch(9), ["* ESEARCH (TAG \"U1\") ADDTO (pos 2,4)"]);
    assert_eq!(esearch(10), ["* ESEARCH (TAG \"U1\") REMOVEFROM (pos 2)"]);
    assert_eq!(esearch(12), ["* ESEARCH (TAG \"U1\") REMOVEFROM (pos 4)"]);
    assert!(esearch(14).is_empty(), "{:?}", mine[14]);
    for i in 2..commands.len() {
        assert_eq!(
            outcome(&mine[i]),
            outcome(&theirs[i]),
            "{i}: {:?} / {:?}",
            mine[i],
            theirs[i]
        );
        // The same items, in whatever order each server gives them.
        let items = |lines: Vec<String>| -> Vec<Vec<String>> {
            lines
                .iter()
                .map(|l| {
                    let mut words: Vec<String> = l.split(' ').map(str::to_string).collect();
                    words.sort();
                    words
                })
                .collect()
        };
        assert_eq!(items(esearch(i)), items(esearch_lines(&theirs[i])), "{i}");
    }
}

/// Searches that cannot be kept up to date say so (NOUPDATE), and a kept search ends with the
/// mailbox it ran over.
#[test]
fn search_updates_end_with_the_mailbox_and_sort_ones_are_refused() {
    let gw = Gateway::start("");
    let commands = vec![
        format!(
            "n1 APPEND INBOX {}",
            lit(&message("x", "Mon, 1 Feb 2021 12:00:00 +0000"))
        ),
        "n2 SELECT INBOX".into(),
        "n3 SORT RETURN (UPDATE COUNT) (DATE) US-ASCII ALL".into(),
        "n4 SEARCH RETURN (UPDATE) UNSEEN".into(),
        "n5 SELECT INBOX".into(),
        "n6 STORE 1 +FLAGS (\\Seen)".into(),
    ];
    let mine = ours(&gw, &commands);
    assert!(
        mine[2]
            .iter()
            .any(|l| l.starts_with("* NO [NOUPDATE \"n3\"]")),
        "{:?}",
        mine[2]
    );
    assert_eq!(esearch_lines(&mine[2]), ["* ESEARCH (TAG \"N3\") COUNT 1"]);
    assert_eq!(esearch_lines(&mine[3]), ["* ESEARCH (TAG \"N4\")"]);
    assert!(esearch_lines(&mine[5]).is_empty(), "{:?}", mine[5]);
}

/// CREATE-SPECIAL-USE (RFC 6154 §3): the new folder is listed with its use, one a folder cannot
/// have is refused and nothing is created. (Dovecot does not offer the extension.)
#[test]
fn create_with_a_special_use_lists_it() {
    let gw = Gateway::start("");
    let commands = vec![
        "s1 CREATE \"Sent Items\" (USE (\\Sent))".into(),
        "s2 CREATE Old (USE (\\Archive \\Junk))".into(),
        "s3 CREATE Everything (USE (\\All))".into(),
        "s4 CREATE Odd (USE (\\Important))".into(),
        "s5 LIST (SPECIAL-USE) \"\" *".into(),
        "s6 RENAME Old Older".into(),
        "s7 LIST \"\" Older".into(),
        "s8 LIST \"\" Everything".into(),
    ];
    let mine = ours(&gw, &commands);
    assert_eq!(outcome(&mine[0]), "OK");
    assert_eq!(outcome(&mine[2]), "NO [USEATTR]");
    assert_eq!(outcome(&mine[3]), "NO [USEATTR]");
    let listed = mine[4].join("\n");
    assert!(listed.contains("\\Sent) \"/\" \"Sent Items\""), "{listed}");
    assert!(
        listed.contains("\\Archive \\Junk) \"/\" Old")
            || listed.contains("\\Archive \\Junk) \"/\" \"Old\""),
        "{listed}"
    );
    assert!(
        listed.contains("\\Sent) \"/\" Sent") || listed.contains("\\Sent) \"/\" \"Sent\""),
        "{listed}"
    );
    assert!(
        mine[6].join("\n").contains("\\Archive \\Junk"),
        "{:?}",
        mine[6]
    );
    assert_eq!(mine[7].len(), 1, "nothing was created: {:?}", mine[7]);
}
