//! One mailbox, several viewers: IMAP sessions that change it at the same time, files other
//! programs (Dovecot, procmail, Postfix `virtual`) wrote, and what each is told.

use mailgate_e2e::{imap_raw, imap_sessions, python, Gateway};
use serde_json::Value;

const LOGIN: &str = "l LOGIN alice@example.test pw-alice\r\n";
const MESSAGE: &str = "From: Ann <ann@client.test>\r\nSubject: one\r\n\r\nHello.\r\n";

fn maildir(gw: &Gateway) -> std::path::PathBuf {
    gw.data().join("mail/example.test/alice")
}

/// The first line of `text` that contains `needle`.
fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in {text}"))
}

#[test]
fn two_sessions_storing_flags_on_one_message_keep_both_changes() {
    let gw = Gateway::start("");
    gw.deliver_local("alice@example.test", &[MESSAGE.to_string()]);
    let out = imap_sessions(
        &gw,
        &[
            (0, LOGIN, "l"),
            (0, "s SELECT INBOX\r\n", "s"),
            (0, "a STORE 1 +FLAGS (\\Seen)\r\n", "a"),
            // Session 1 selects now: it has the message as \Seen.
            (1, LOGIN, "l"),
            (1, "s SELECT INBOX\r\n", "s"),
            // Session 0 adds \Answered; session 1, told nothing yet, removes \Seen.
            (0, "b STORE 1 +FLAGS (\\Answered)\r\n", "b"),
            (1, "c STORE 1 -FLAGS (\\Seen)\r\n", "c"),
            (0, "d NOOP\r\n", "d"),
        ],
    );
    assert!(out[6].contains("FLAGS (\\Answered \\Seen"), "{}", out[6]);
    assert!(
        line_with(&out[7], "FETCH").contains("FLAGS (\\Answered)"),
        "session 1 kept session 0's \\Answered: {}",
        out[7]
    );
    // Session 0 is told of session 1's change.
    let told = line_with(&out[8], "* 1 FETCH");
    assert!(
        told.contains("FLAGS (\\Answered") && !told.contains("\\Seen"),
        "{told}"
    );
    let files: Vec<String> = std::fs::read_dir(maildir(&gw).join("cur"))
        .expect("cur")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.len() == 1 && files[0].ends_with(":2,R"), "{files:?}");
}

#[test]
fn a_maildir_file_with_bare_lfs_is_served_as_crlf_with_matching_sizes() {
    let gw = Gateway::start("");
    // As Dovecot, Postfix `virtual` and procmail write: LF line ends.
    let lf = "From: ann@client.test\nSubject: lf\n\nline one\nline two\n";
    gw.store_directly("alice@example.test", "1700000000.lf.host", lf.as_bytes());
    let crlf = lf.replace('\n', "\r\n");
    let out = imap_raw(
        &gw,
        &[
            (LOGIN, "l"),
            ("s SELECT INBOX\r\n", "s"),
            ("f FETCH 1 (RFC822.SIZE BODY.PEEK[])\r\n", "f"),
            ("h FETCH 1 (BODY.PEEK[HEADER] BODY.PEEK[TEXT])\r\n", "h"),
        ],
    );
    let fetched = &out[3];
    assert!(
        fetched.contains(&format!("RFC822.SIZE {} ", crlf.len())),
        "{fetched}"
    );
    assert!(
        fetched.contains(&format!("BODY[] {{{}}}\r\n{crlf}", crlf.len())),
        "{fetched}"
    );
    let header = "From: ann@client.test\r\nSubject: lf\r\n\r\n";
    assert!(
        out[4].contains(&format!("BODY[HEADER] {{{}}}\r\n{header}", header.len())),
        "{}",
        out[4]
    );
    // POP3: LIST, the RETR reply's octet count and the bytes sent all agree.
    let pop: Vec<Value> = python(
        "pop3_client.py",
        &[
            &gw.pop3s.to_string(),
            "ssl",
            "alice@example.test",
            "pw-alice",
            "list",
            "retr:1",
            "quit",
        ],
    )
    .lines()
    .map(|l| serde_json::from_str(l).expect("json"))
    .collect();
    assert_eq!(pop[0]["out"][0], format!("1 {}", crlf.len()));
    let retr = &pop[1]["out"];
    assert!(
        retr["resp"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("{} octets", crlf.len()))),
        "{retr}"
    );
    let sent = hex(retr["message"].as_str().expect("hex"));
    assert_eq!(String::from_utf8_lossy(&sent), crlf);
}

/// A variant with the lines dot-stuffing exists for: a bare-LF file whose lines start with dots,
/// one of them a lone dot (the terminator's look-alike). POP3 clients get every line back after
/// unstuffing, with the size LIST gave; IMAP serves the same bytes unstuffed.
#[test]
fn dot_lines_of_a_bare_lf_file_survive_pop3_and_imap() {
    let gw = Gateway::start("");
    let lf = "From: ann@client.test\nSubject: dots\n\n.\n..two\n.three\nlast\n";
    gw.store_directly("alice@example.test", "1700000001.dots.host", lf.as_bytes());
    let crlf = lf.replace('\n', "\r\n");
    let pop: Vec<Value> = python(
        "pop3_client.py",
        &[
            &gw.pop3s.to_string(),
            "ssl",
            "alice@example.test",
            "pw-alice",
            "list",
            "retr:1",
            "quit",
        ],
    )
    .lines()
    .map(|l| serde_json::from_str(l).expect("json"))
    .collect();
    assert_eq!(pop[0]["out"][0], format!("1 {}", crlf.len()));
    let sent = hex(pop[1]["out"]["message"].as_str().expect("hex"));
    assert_eq!(String::from_utf8_lossy(&sent), crlf);
    let out = imap_raw(
        &gw,
        &[
            (LOGIN, "l"),
            ("s SELECT INBOX\r\n", "s"),
            ("f FETCH 1 BODY.PEEK[]\r\n", "f"),
        ],
    );
    assert!(
        out[3].contains(&format!("BODY[] {{{}}}\r\n{crlf}", crlf.len())),
        "{}",
        out[3]
    );
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn fetch_after_another_sessions_expunge_invents_nothing() {
    let gw = Gateway::start("");
    gw.deliver_local("alice@example.test", &[MESSAGE.to_string()]);
    let out = imap_sessions(
        &gw,
        &[
            (0, LOGIN, "l"),
            (0, "s SELECT INBOX\r\n", "s"),
            (1, LOGIN, "l"),
            (1, "s SELECT INBOX\r\n", "s"),
            (1, "d STORE 1 +FLAGS.SILENT (\\Deleted)\r\n", "d"),
            (1, "e EXPUNGE\r\n", "e"),
            // Session 0 has not been told: it still counts the message as 1.
            (0, "f FETCH 1 (FLAGS BODY[])\r\n", "f"),
            (0, "n NOOP\r\n", "n"),
        ],
    );
    let fetched = &out[7];
    assert!(
        fetched.contains("f NO [EXPUNGEISSUED]") || fetched.contains("f OK [EXPUNGEISSUED]"),
        "{fetched}"
    );
    assert!(
        !fetched.contains("BODY[]"),
        "no invented content: {fetched}"
    );
    assert!(out[8].contains("* 1 EXPUNGE"), "{}", out[8]);
}

#[test]
fn keywords_round_trip_and_agree_with_dovecots_files() {
    let gw = Gateway::start("");
    // A message Dovecot stored first: keyword 0 of its dovecot-keywords, as the letter a.
    for dir in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(maildir(&gw).join(dir)).expect("maildir");
    }
    std::fs::write(maildir(&gw).join("dovecot-keywords"), "0 $Junk\n").expect("keywords");
    std::fs::write(
        maildir(&gw).join("cur/1600000000.dovecot.host,S=9:2,Sa"),
        "Subject: x\n\nbody\n",
    )
    .expect("dovecot's message");
    gw.deliver_local(
        "alice@example.test",
        &[MESSAGE.to_string(), MESSAGE.replace("one", "two")],
    );
    let out = imap_raw(
        &gw,
        &[
            (LOGIN, "l"),
            ("s SELECT INBOX\r\n", "s"),
            ("a FETCH 1:* (FLAGS)\r\n", "a"),
            ("b STORE 2 +FLAGS ($Forwarded Work)\r\n", "b"),
            ("c SEARCH KEYWORD $Forwarded\r\n", "c"),
            ("d SEARCH UNKEYWORD $Junk\r\n", "d"),
            ("e STORE 2 -FLAGS (Work)\r\n", "e"),
        ],
    );
    let select = &out[2];
    assert!(
        line_with(select, "PERMANENTFLAGS").contains("$Junk \\*)"),
        "{select}"
    );
    // Dovecot's message is 1 (its name sorts first) and shows its keyword.
    assert!(
        line_with(&out[3], "* 1 FETCH").contains("(\\Seen $Junk"),
        "{}",
        out[3]
    );
    assert!(
        out[4].contains("* FLAGS (") && out[4].contains("$Forwarded Work)"),
        "new keywords announced: {}",
        out[4]
    );
    assert!(
        line_with(&out[4], "* 2 FETCH").contains("$Forwarded Work"),
        "{}",
        out[4]
    );
    assert!(out[5].contains("* SEARCH 2\r\n"), "{}", out[5]);
    assert!(out[6].contains("* SEARCH 2 3\r\n"), "{}", out[6]);
    assert!(line_with(&out[7], "* 2 FETCH").contains("($Forwarded"));
    // On disk, Dovecot's way: names in dovecot-keywords, letters in the file name.
    let names = std::fs::read_to_string(maildir(&gw).join("dovecot-keywords")).expect("read");
    assert_eq!(names, "0 $Junk\n1 $Forwarded\n2 Work\n");
    let files: Vec<String> = std::fs::read_dir(maildir(&gw).join("cur"))
        .expect("cur")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files.iter().filter(|f| f.ends_with(":2,b")).count(),
        1,
        "{files:?}"
    );
    dovecot::Doveadm::start().agrees_on_keywords(&maildir(&gw));
}

/// Dovecot itself reading and writing the keywords of a copy of the Maildir.
mod dovecot {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    pub struct Doveadm {
        dir: tempfile::TempDir,
        config: PathBuf,
    }

    impl Doveadm {
        /// A Dovecot instance without protocols (doveadm only), serving one Maildir as
        /// `nobody` (`cargo xtask test` installs Dovecot).
        pub fn start() -> Doveadm {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = dir.path().join("dovecot.conf");
            let home = dir.path().display();
            std::fs::write(
                &config,
                format!(
                    "protocols =\nbase_dir = {home}/run\nlog_path = {home}/dovecot.log\n\
                     ssl = no\nmail_location = maildir:{home}/Maildir\n\
                     userdb {{\n driver = static\n args = uid=nobody gid=nogroup home={home}\n}}\n\
                     passdb {{\n driver = static\n args = nopassword=y\n}}\n"
                ),
            )
            .expect("config");
            let started = Command::new("dovecot").arg("-c").arg(&config).status();
            assert!(started.is_ok_and(|s| s.success()), "dovecot did not start");
            Doveadm { dir, config }
        }

        fn doveadm(&self, args: &[&str]) -> String {
            let out = Command::new("doveadm")
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .output()
                .expect("doveadm");
            assert!(
                out.status.success(),
                "doveadm {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }

        /// Dovecot reads our keywords, and writes one that we then read from its files.
        pub fn agrees_on_keywords(&self, ours: &Path) {
            let copy = self.dir.path().join("Maildir");
            let status = Command::new("cp")
                .arg("-a")
                .arg(ours)
                .arg(&copy)
                .status()
                .expect("cp");
            assert!(status.success());
            let chown = Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(self.dir.path())
                .status()
                .expect("chown");
            assert!(chown.success());
            let fetch = |subject: &str| {
                self.doveadm(&[
                    "fetch", "-u", "tester", "flags", "mailbox", "INBOX", "subject", subject,
                ])
            };
            let seen = fetch("one");
            assert!(seen.contains(" $Forwarded"), "Dovecot reads ours: {seen}");
            assert!(!fetch("two").contains('$'), "{}", fetch("two"));
            self.doveadm(&[
                "flags", "add", "-u", "tester", "Urgent", "mailbox", "INBOX", "subject", "two",
            ]);
            let names = std::fs::read_to_string(copy.join("dovecot-keywords")).expect("read");
            assert_eq!(names, "0 $Junk\n1 $Forwarded\n2 Work\n3 Urgent\n");
            let files: Vec<String> = std::fs::read_dir(copy.join("cur"))
                .expect("cur")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            assert!(files.iter().any(|f| f.ends_with(":2,d")), "{files:?}");
        }
    }

    impl Drop for Doveadm {
        fn drop(&mut self) {
            let _ = Command::new("doveadm")
                .arg("-c")
                .arg(&self.config)
                .arg("stop")
                .status();
        }
    }
}

#[test]
fn hierarchy_attributes_and_a_trailing_separator() {
    let gw = Gateway::start("");
    let out = imap_raw(
        &gw,
        &[
            (LOGIN, "l"),
            ("a CREATE Projects/\r\n", "a"),
            ("b CREATE Projects/2026\r\n", "b"),
            ("c LIST \"\" \"*\"\r\n", "c"),
            ("d SUBSCRIBE Projects/2026\r\n", "d"),
            ("e LSUB \"\" \"%\"\r\n", "e"),
            // A parent that exists only through its child (another tool made `.Old.Mail`).
            ("f CREATE Old/Mail\r\n", "f"),
            ("g DELETE Old\r\n", "g"),
            ("h LIST \"\" \"Old*\"\r\n", "h"),
        ],
    );
    assert!(out[2].contains("a OK"), "{}", out[2]);
    let list = &out[4];
    assert!(
        line_with(list, "\"Projects\"").contains("\\HasChildren"),
        "{list}"
    );
    assert!(line_with(list, "Projects/2026").contains("\\HasNoChildren"));
    assert!(line_with(list, "\"Sent\"").contains("\\Sent"), "{list}");
    assert!(
        line_with(&out[6], "\"Projects\"").contains("\\Noselect"),
        "{}",
        out[6]
    );
    let old = &out[9];
    assert!(
        line_with(old, "\"Old\"").contains("\\Noselect") && old.contains("\"Old/Mail\""),
        "{old}"
    );
}

#[test]
fn mailbox_state_is_reported_as_rfc_3501_wants() {
    let gw = Gateway::start("");
    gw.deliver_local("alice@example.test", &[MESSAGE.to_string()]);
    let append = format!("p APPEND INBOX {{{}+}}\r\n{MESSAGE}\r\n", MESSAGE.len());
    let out = imap_raw(
        &gw,
        &[
            (LOGIN, "l"),
            ("s SELECT INBOX\r\n", "s"),
            (&append, "p"),
            ("c COPY 1 INBOX\r\n", "c"),
            ("m CREATE Later\r\n", "m"),
            ("x EXAMINE INBOX\r\n", "x"),
            ("y STORE 1 +FLAGS (\\Flagged)\r\n", "y"),
            ("z FETCH 1 (BODYSTRUCTURE)\r\n", "z"),
            ("d DELETE Later\r\n", "d"),
            ("e CREATE Later\r\n", "e"),
            ("f STATUS Later (UIDVALIDITY)\r\n", "f"),
            ("g DELETE Later\r\n", "g"),
            ("h CREATE Later\r\n", "h"),
            ("i STATUS Later (UIDVALIDITY)\r\n", "i"),
        ],
    );
    // The delivered message is recent for the first session that selects.
    assert!(out[2].contains("* 1 RECENT"), "{}", out[2]);
    // APPEND and COPY into the selected mailbox announce it before their tagged reply.
    let appended = &out[3];
    assert!(
        appended.find("* 2 EXISTS") < appended.find("p OK"),
        "{appended}"
    );
    assert!(
        out[4].find("* 3 EXISTS") < out[4].find("c OK"),
        "{}",
        out[4]
    );
    assert!(out[7].contains("y NO"), "STORE under EXAMINE: {}", out[7]);
    assert!(
        out[8].contains("(\"text\" \"plain\" (\"charset\" \"us-ascii\")"),
        "{}",
        out[8]
    );
    let validity = |text: &str| line_with(text, "UIDVALIDITY").to_string();
    assert_ne!(validity(&out[11]), validity(&out[14]));
}

#[test]
fn no_credentials_are_asked_for_before_tls_and_a_full_id_is_answered() {
    let gw = Gateway::start("");
    // In the clear (the STARTTLS port), AUTHENTICATE is refused before any `+`.
    let stream = std::net::TcpStream::connect(("127.0.0.1", gw.imap)).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).expect("greeting");
    std::io::Write::write_all(&mut &stream, b"a AUTHENTICATE PLAIN\r\n").expect("send");
    line.clear();
    std::io::BufRead::read_line(&mut reader, &mut line).expect("reply");
    assert!(line.starts_with("a NO [PRIVACYREQUIRED]"), "{line}");
    // RFC 2971's largest ID: 30 fields, values of 1024 octets.
    let fields: String = (0..30)
        .map(|i| format!(" \"field{i}\" \"{}\"", "v".repeat(1024)))
        .collect();
    let id = format!("i ID ({})\r\n", &fields[1..]);
    let out = imap_raw(&gw, &[(&id, "i"), ("n NOOP\r\n", "n")]);
    assert!(
        out[1].contains("* ID (") && out[1].contains("i OK"),
        "{}",
        out[1]
    );
    assert!(out[2].contains("n OK"), "{}", out[2]);
}

#[test]
fn envelope_keeps_groups_and_address_comments() {
    let gw = Gateway::start("");
    let message = "From: ann@client.test (Ann Example)\r\nTo: team: a@x.test, b@x.test;, c@x.test\r\nCc: undisclosed-recipients:;\r\nSubject: env\r\n\r\nbody\r\n";
    gw.deliver_local("alice@example.test", &[message.to_string()]);
    let out = imap_raw(
        &gw,
        &[
            (LOGIN, "l"),
            ("s SELECT INBOX\r\n", "s"),
            ("e FETCH 1 (ENVELOPE)\r\n", "e"),
        ],
    );
    let envelope = &out[3];
    assert!(
        envelope.contains("((\"Ann Example\" NIL \"ann\" \"client.test\"))"),
        "{envelope}"
    );
    assert!(envelope.contains("((NIL NIL \"team\" NIL)(NIL NIL \"a\" \"x.test\")(NIL NIL \"b\" \"x.test\")(NIL NIL NIL NIL)(NIL NIL \"c\" \"x.test\"))"), "{envelope}");
    assert!(
        envelope.contains("((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL))"),
        "{envelope}"
    );
}

#[test]
fn sent_date_searches_use_the_date_headers_own_day() {
    let gw = Gateway::start("");
    // 23:30 at UTC-5 is the 11th there, the 12th in UTC; 00:30 at UTC+9 is the 12th there,
    // the 11th in UTC.
    let late = "Date: Tue, 11 Mar 2025 23:30:00 -0500\r\nSubject: late\r\n\r\nx\r\n";
    let early = "Date: Wed, 12 Mar 2025 00:30:00 +0900\r\nSubject: early\r\n\r\nx\r\n";
    gw.deliver_local("alice@example.test", &[late.to_string(), early.to_string()]);
    let out = imap_raw(
        &gw,
        &[
            (LOGIN, "l"),
            ("s SELECT INBOX\r\n", "s"),
            ("a SEARCH SENTON 11-Mar-2025\r\n", "a"),
            ("b SEARCH SENTON 12-Mar-2025\r\n", "b"),
            ("c SEARCH SENTBEFORE 12-Mar-2025\r\n", "c"),
            ("d SEARCH SENTSINCE 12-Mar-2025\r\n", "d"),
        ],
    );
    assert!(out[3].contains("* SEARCH 1\r\n"), "{}", out[3]);
    assert!(out[4].contains("* SEARCH 2\r\n"), "{}", out[4]);
    assert!(out[5].contains("* SEARCH 1\r\n"), "{}", out[5]);
    assert!(out[6].contains("* SEARCH 2\r\n"), "{}", out[6]);
}

#[test]
fn a_client_resyncs_with_condstore_and_qresync_after_another_sessions_changes() {
    let gw = Gateway::start("");
    let messages: Vec<String> = (1..=3)
        .map(|i| format!("Subject: m{i}\r\n\r\nbody {i}\r\n"))
        .collect();
    gw.deliver_local("alice@example.test", &messages);
    let out: Value = serde_json::from_str(&python(
        "imap_resync.py",
        &[&gw.imaps.to_string(), "alice@example.test", "pw-alice"],
    ))
    .expect("json");
    let texts = |key: &str| -> Vec<String> {
        out[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: {out}"))
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect()
    };
    let first = texts("first_fetch");
    assert_eq!(first.len(), 3, "{out}");
    assert!(first.iter().all(|l| l.contains("MODSEQ (")), "{out}");
    let known: Vec<u64> = out["known"]
        .as_array()
        .expect("known")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    // Session B flagged the first, expunged the second, appended a fourth.
    assert_eq!(texts("vanished"), [format!("(EARLIER) {}", known[1])]);
    let changed = texts("changed");
    assert_eq!(changed.len(), 2, "only what changed is sent: {changed:?}");
    assert!(changed[0].contains(&format!("UID {} FLAGS (\\Flagged $Important)", known[0])));
    assert!(changed[1].contains("UID 4 "), "{changed:?}");
    assert!(changed.iter().all(|l| l.contains("MODSEQ (")));
    assert_eq!(texts("changedsince"), changed, "CHANGEDSINCE agrees");
    assert_eq!(texts("changedsince_vanished"), texts("vanished"));
}

#[test]
fn status_reports_size_and_deleted() {
    let gw = Gateway::start("");
    let second = MESSAGE.replace("Hello.", "Hello again, longer.");
    gw.deliver_local("alice@example.test", &[MESSAGE.to_string(), second.clone()]);
    let out = imap_raw(
        &gw,
        &[
            (LOGIN, "l"),
            ("s SELECT INBOX\r\n", "s"),
            ("d STORE 2 +FLAGS (\\Deleted)\r\n", "d"),
            ("t STATUS INBOX (MESSAGES SIZE DELETED)\r\n", "t"),
            ("b STATUS INBOX (BOGUS)\r\n", "b"),
        ],
    );
    let status = line_with(&out[4], "* STATUS");
    // Sizes as served: what each delivery stored (Return-Path and Received lines included).
    let stored: u64 = std::fs::read_dir(maildir(&gw).join("cur"))
        .expect("cur")
        .flatten()
        .map(|e| e.metadata().expect("meta").len())
        .sum();
    assert!(
        status.contains(&format!("(MESSAGES 2 SIZE {stored} DELETED 1)")),
        "{status}"
    );
    assert!(out[5].contains("b BAD"), "{}", out[5]);
}

/// STATUS items imap-codec reads (CONDSTORE's HIGHESTMODSEQ among them) and the one taken out
/// before it (SIZE) are answered together, in the order asked; the item SIZE travels to
/// imap-codec as is refused when a client sends it itself.
#[test]
fn status_answers_highestmodseq_and_size_in_the_order_asked() {
    let gw = Gateway::start("");
    gw.deliver_local("alice@example.test", &[MESSAGE.to_string()]);
    let out = imap_raw(
        &gw,
        &[
            (LOGIN, "l"),
            ("s SELECT INBOX (CONDSTORE)\r\n", "s"),
            ("m STATUS INBOX (SIZE HIGHESTMODSEQ UNSEEN)\r\n", "m"),
            ("q STATUS INBOX (DELETED-STORAGE)\r\n", "q"),
        ],
    );
    let highest = line_with(&out[2], "[HIGHESTMODSEQ ");
    let highest = (highest.split("[HIGHESTMODSEQ ").nth(1))
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("no HIGHESTMODSEQ in {highest}"));
    let stored: u64 = std::fs::read_dir(maildir(&gw).join("cur"))
        .expect("cur")
        .flatten()
        .map(|e| e.metadata().expect("meta").len())
        .sum();
    let status = line_with(&out[3], "* STATUS");
    assert!(
        status.ends_with(&format!("(SIZE {stored} HIGHESTMODSEQ {highest} UNSEEN 1)")),
        "{status}"
    );
    assert!(out[4].contains("q BAD"), "{}", out[4]);
}

/// UTF-8 text as imap_raw.py carries bytes: one latin-1 character per byte.
fn latin1(text: &str) -> String {
    text.bytes().map(char::from).collect()
}

#[test]
fn imap4rev2_clients_get_utf8_names_esearch_and_no_recent() {
    let gw = Gateway::start("");
    let create = latin1("c CREATE \"Entwürfe/台北\"\r\n");
    gw.deliver_local(
        "alice@example.test",
        &[MESSAGE.to_string(), MESSAGE.replace("one", "two")],
    );
    let out = imap_sessions(
        &gw,
        &[
            (0, LOGIN, "l"),
            (0, "e ENABLE IMAP4rev2\r\n", "e"),
            (0, &create, "c"),
            (0, "s SELECT INBOX\r\n", "s"),
            (0, "f STORE 2 +FLAGS.SILENT (\\Seen)\r\n", "f"),
            (0, "r SEARCH RETURN (SAVE) SEEN\r\n", "r"),
            (0, "g FETCH $ (UID)\r\n", "g"),
            (0, "h SEARCH ALL\r\n", "h"),
            (0, "i LIST \"\" \"Entw*\"\r\n", "i"),
            // A rev1 session sees the same folder under its modified UTF-7 name.
            (1, LOGIN, "l"),
            (1, "i LIST \"\" \"Entw*\"\r\n", "i"),
        ],
    );
    assert!(out[2].contains("* ENABLED IMAP4rev2"), "{}", out[2]);
    assert!(out[3].contains("c OK"), "{}", out[3]);
    assert!(
        maildir(&gw).join(".Entw&APw-rfe.&U,BTFw-").is_dir(),
        "stored as Dovecot names folders"
    );
    let select = &out[4];
    assert!(
        !select.contains("RECENT") && !select.contains("UNSEEN"),
        "{select}"
    );
    assert!(select.contains("* LIST () \"/\" \"INBOX\""), "{select}");
    assert!(
        out[6].contains("r OK") && !out[6].contains("* ESEARCH"),
        "{}",
        out[6]
    );
    assert!(
        out[7].contains("* 2 FETCH (UID ") && !out[7].contains("* 1 FETCH"),
        "{}",
        out[7]
    );
    assert!(
        out[8].contains("* ESEARCH (TAG \"h\") ALL 1:2"),
        "{}",
        out[8]
    );
    // UTF-8 names go out as literals (quoted strings are 7-bit for rev1 clients).
    assert!(
        out[9].contains(&latin1("}\r\nEntwürfe/台北\r\n")),
        "{}",
        out[9]
    );
    assert!(out[11].contains("\"Entw&APw-rfe/&U,BTFw-\""), "{}", out[11]);
}
