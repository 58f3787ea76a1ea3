//! IMAP NOTIFY (RFC 5465) with Python's imaplib as the client (clients/imap_notify.py): what a
//! watching session is told with no command outstanding — between commands and during IDLE —
//! when mail arrives by SMTP, when a second IMAP session appends, flags, expunges, creates,
//! subscribes and deletes; SELECTED-DELAYED; refusals; and a client that stops reading, which
//! is told NOTIFICATIONOVERFLOW while the server's memory stays bounded.

use mailgate_e2e::{python, Gateway};
use serde_json::Value;

const USER: &str = "alice@example.test";
const PASSWORD: &str = "pw-alice";

/// Runs one scenario of imap_notify.py against `gw`; its JSON report.
fn scenario(gw: &Gateway, name: &str, extra: &[&str]) -> Value {
    let imaps = gw.imaps.to_string();
    let smtp = gw.inbound.to_string();
    let mut args = vec![name, imaps.as_str(), smtp.as_str(), USER, PASSWORD];
    args.extend_from_slice(extra);
    let out = python("imap_notify.py", &args);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The lines of a step, as strings.
fn lines(report: &Value, step: &str) -> Vec<String> {
    let value = &report[step];
    let list = match value.as_array() {
        // `command` steps are [untagged lines, tagged line].
        Some(pair) if pair.len() == 2 && pair[1].is_string() && pair[0].is_array() => {
            let mut all: Vec<Value> = pair[0].as_array().cloned().unwrap_or_default();
            all.push(pair[1].clone());
            all
        }
        Some(list) => list.clone(),
        None => vec![value.clone()],
    };
    list.iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn has(report: &Value, step: &str, words: &[&str]) -> bool {
    lines(report, step)
        .iter()
        .any(|l| words.iter().all(|w| l.contains(w)))
}

#[test]
fn notify_tells_deliveries_appends_flags_and_expunges_as_they_happen() {
    let gw = Gateway::start("");
    let r = scenario(&gw, "events", &[]);
    let show = || serde_json::to_string_pretty(&r).unwrap_or_default();
    // NOTIFY SET STATUS: the other mailbox's STATUS before the tagged OK.
    assert!(
        has(&r, "set", &["* STATUS", "Lists", "MESSAGES 0", "UIDNEXT 1"]),
        "{}",
        show()
    );
    assert!(has(&r, "set", &["OK"]), "{}", show());
    // Mail delivered by SMTP to the selected mailbox: EXISTS, then the FETCH asked for.
    assert!(has(&r, "smtp", &["* 1 EXISTS"]), "{}", show());
    assert!(
        has(&r, "smtp", &["* 1 FETCH", "UID 1", "first by smtp"]),
        "{}",
        show()
    );
    // An APPEND elsewhere by another session: STATUS of that mailbox.
    assert!(
        has(
            &r,
            "append_elsewhere",
            &["* STATUS", "Lists", "MESSAGES 1", "UIDNEXT 2"]
        ),
        "{}",
        show()
    );
    // FlagChange: FETCH with UID and FLAGS (RFC 5465 §5.1).
    assert!(
        has(&r, "flag_elsewhere", &["* 1 FETCH", "UID 1", "\\Flagged"]),
        "{}",
        show()
    );
    assert!(has(&r, "expunge_elsewhere", &["* 1 EXPUNGE"]), "{}", show());
    // During IDLE, the same.
    assert!(
        lines(&r, "idle_start")
            .first()
            .is_some_and(|l| l.starts_with('+')),
        "{}",
        show()
    );
    assert!(
        has(&r, "idle_smtp", &["FETCH", "second by smtp"]),
        "{}",
        show()
    );
    assert!(
        has(
            &r,
            "idle_append_elsewhere",
            &["* STATUS", "Lists", "MESSAGES 2"]
        ),
        "{}",
        show()
    );
    assert!(has(&r, "idle_done", &["OK"]), "{}", show());
    // Refusals: NO [BADEVENT (supported events)], BAD for MessageNew without MessageExpunge.
    assert!(
        has(&r, "badevent", &["NO [BADEVENT (MessageNew MessageExpunge"]),
        "{}",
        show()
    );
    assert!(
        lines(&r, "bad").last().is_some_and(|l| l.contains(" BAD ")),
        "{}",
        show()
    );
    // After NOTIFY NONE nothing comes unasked; NOOP still tells the new message.
    assert!(has(&r, "none", &["OK"]), "{}", show());
    assert!(lines(&r, "after_none").is_empty(), "{}", show());
    assert!(has(&r, "noop_after_none", &["EXISTS"]), "{}", show());
}

#[test]
fn notify_tells_mailboxes_made_subscribed_renamed_and_removed_by_another_session() {
    let gw = Gateway::start("");
    let r = scenario(&gw, "names", &[]);
    let show = || serde_json::to_string_pretty(&r).unwrap_or_default();
    assert!(has(&r, "set", &["OK"]), "{}", show());
    assert!(
        has(
            &r,
            "created",
            &["* LIST (\\HasNoChildren) \"/\" \"Projects\""]
        ),
        "{}",
        show()
    );
    assert!(
        has(
            &r,
            "subscribed",
            &["* LIST (\\Subscribed) \"/\" \"Projects\""]
        ),
        "{}",
        show()
    );
    assert!(
        has(
            &r,
            "renamed",
            &["* LIST (\\HasNoChildren) \"/\" \"Done\" (\"OLDNAME\" (\"Projects\"))"]
        ),
        "{}",
        show()
    );
    assert!(
        has(&r, "deleted", &["* LIST (\\NonExistent) \"/\" \"Done\""]),
        "{}",
        show()
    );
}

/// The variant: SELECTED-DELAYED holds an expunge back until a command that allows it (NOOP),
/// while a new message is told at once.
#[test]
fn selected_delayed_holds_expunges_until_noop() {
    let gw = Gateway::start("");
    let r = scenario(&gw, "delayed", &[]);
    let show = || serde_json::to_string_pretty(&r).unwrap_or_default();
    assert!(has(&r, "set", &["OK"]), "{}", show());
    assert!(lines(&r, "expunge_unsolicited").is_empty(), "{}", show());
    // The expunged message still counts: the new one is the second.
    assert!(has(&r, "new_unsolicited", &["* 2 EXISTS"]), "{}", show());
    assert!(has(&r, "noop", &["* 1 EXPUNGE"]), "{}", show());
}

/// A client that stops reading while 48 messages of 512 KiB arrive, each asked for three times
/// over (72 MiB of FETCH): after STALL (10 s) without taking anything it is told
/// NOTIFICATIONOVERFLOW, having been sent only part of them; the session goes on without
/// notifications; the server holds far less than what was asked for meanwhile. (The client's
/// 14 s without reading is the behaviour under test, not a wait for something.)
#[test]
fn a_client_that_stops_reading_gets_notificationoverflow_and_memory_stays_bounded() {
    let gw = Gateway::start("");
    let before = gw.rss_kib();
    let r = std::thread::scope(|s| {
        let run = s.spawn(|| scenario(&gw, "overflow", &["48", "524288", "14"]));
        // Peak memory while the client does not read (sampled until the scenario ends).
        let mut peak = 0;
        while !run.is_finished() {
            peak = peak.max(gw.rss_kib());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let report = run.join().expect("scenario");
        (report, peak)
    });
    let (r, peak) = r;
    let show = || serde_json::to_string_pretty(&r).unwrap_or_default();
    assert!(
        r["set"].as_str().is_some_and(|l| l.starts_with("c OK")),
        "{}",
        show()
    );
    assert!(
        r["overflow"]
            .as_str()
            .is_some_and(|l| l.starts_with("* OK [NOTIFICATIONOVERFLOW]")),
        "{}",
        show()
    );
    let fetched = r["fetches_before_overflow"].as_u64().unwrap_or(u64::MAX);
    assert!(fetched < 48, "all 48 were sent: {}", show());
    assert!(
        r["noop"].as_str().is_some_and(|l| l.starts_with("d OK")),
        "{}",
        show()
    );
    assert_eq!(r["after_overflow"], serde_json::json!([]), "{}", show());
    assert!(has(&r, "noop_after", &["EXISTS"]), "{}", show());
    // 72 MiB were asked for; the session queues at most QUEUE (256 KiB) plus one message's
    // response ahead of the socket. Most of the growth is the 24 MiB of APPENDs' own work.
    let grown = peak.saturating_sub(before);
    eprintln!("RSS before {before} KiB, peak {peak} KiB, grown {grown} KiB");
    assert!(grown < 36 * 1024, "grew {grown} KiB: {}", show());
}

/// Dovecot (Debian's dovecot-imapd, which has NOTIFY with its mailbox list index) serving a
/// gateway user's Maildir over plain IMAP on loopback, any user name with password `secret`;
/// stopped on drop. As in imap_dovecot.rs, with the list index on.
struct Dovecot {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    port: u16,
}

impl Dovecot {
    fn serve(maildir: &std::path::Path) -> Dovecot {
        use std::os::unix::fs::PermissionsExt;
        use std::process::Command;
        assert!(
            std::path::Path::new("/usr/lib/dovecot/imap").exists(),
            "Dovecot's IMAP server is missing: `cargo xtask test` installs dovecot-imapd"
        );
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
        }
        let chown = Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(maildir)
            .status()
            .expect("chown");
        assert!(chown.success());
        for dir in maildir.ancestors().skip(1) {
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
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("install")
            .args(["-d", "-o", "nobody", "-g", "nogroup"])
            .arg(dir.path().join("home"))
            .status()
            .expect("install");
        assert!(status.success());
        let home = dir.path().display();
        let port = mailgate_e2e::free_port();
        let config = dir.path().join("dovecot.conf");
        std::fs::write(
            &config,
            format!(
                "protocols = imap\nlisten = 127.0.0.1\nbase_dir = {home}/run\n\
                 log_path = {home}/dovecot.log\nssl = no\ndisable_plaintext_auth = no\n\
                 mail_location = maildir:{maildir}\nmailbox_list_index = yes\n\
                 namespace inbox {{\n inbox = yes\n separator = /\n}}\n\
                 passdb {{\n driver = static\n args = password=secret\n}}\n\
                 userdb {{\n driver = static\n args = uid=nobody gid=nogroup home={home}/home\n}}\n\
                 service imap-login {{\n inet_listener imap {{\n  address = 127.0.0.1\n  port = {port}\n }}\n}}\n\
                 service anvil {{\n chroot =\n}}\n",
                maildir = maildir.display()
            ),
        )
        .expect("config");
        let started = Command::new("dovecot").arg("-c").arg(&config).status();
        assert!(started.is_ok_and(|s| s.success()), "dovecot did not start");
        mailgate_e2e::wait_for_port(port);
        Dovecot {
            _dir: dir,
            config,
            port,
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = std::process::Command::new("doveadm")
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .status();
    }
}

/// What kind of response each line of a step is, in order, without its values: `EXISTS`,
/// `FETCH`, `EXPUNGE`, `STATUS Lists`, `LIST`, `OK [CODE]`, `tagged NO [BADEVENT]`...
/// (`RECENT` left out: a server may send it or not.)
fn kinds(report: &Value, step: &str) -> Vec<String> {
    lines(report, step)
        .iter()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let first = words.next()?;
            let second = words.next().unwrap_or_default();
            let code = |rest: &str| {
                rest.strip_prefix('[')
                    .map(|c| format!(" [{}]", c.trim_end_matches(']')))
                    .unwrap_or_default()
            };
            let kind = match (first, second) {
                (_, "") => return None,
                ("*", _) if line.split_whitespace().nth(2) == Some("RECENT") => return None,
                ("*", n) if n.parse::<u32>().is_ok() => words.next()?.to_string(),
                ("*", "STATUS") => format!("STATUS {}", words.next()?.trim_matches('"')),
                ("*", word @ ("OK" | "NO" | "BAD")) => {
                    format!("{word}{}", code(words.next().unwrap_or_default()))
                }
                ("*", word) => word.to_string(),
                (_, word) => format!("tagged {word}{}", code(words.next().unwrap_or_default())),
            };
            Some(kind)
        })
        .collect()
}

/// An untagged line with its numbers masked and quotes dropped (`"Lists"` and `Lists` are the
/// same name): what it looks like whatever the counts and UIDs.
fn shape(line: &str) -> String {
    let masked: String = line
        .chars()
        .filter(|&c| c != '"')
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    let mut out = String::new();
    for c in masked.chars() {
        if !(c == '#' && out.ends_with('#')) {
            out.push(c);
        }
    }
    out
}

/// Every untagged line's shape in a report (RECENT left out: a server may send it or not).
fn shapes(report: &Value) -> std::collections::BTreeSet<String> {
    let steps = report
        .as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>());
    steps
        .unwrap_or_default()
        .iter()
        .flat_map(|step| lines(report, step))
        .filter(|l| l.starts_with("* ") && !l.ends_with(" RECENT"))
        .map(|l| shape(&l))
        .collect()
}

/// The same script against Dovecot on the same kind of Maildir (mail delivered by our SMTP
/// into the Maildir it serves). Dovecot tells some changes later than we do (its EXISTS for a
/// delivery came a step late, a flag change not within the wait), so the steps are not
/// compared line by line; what is: every kind of response Dovecot sent has the same shape in
/// ours (STATUS items and their order, EXISTS, FETCH with the attributes MessageNew named,
/// EXPUNGE, HIGHESTMODSEQ when FlagChange turns CONDSTORE on), and each command ends alike.
/// Where Dovecot departs from RFC 5465 the difference is named: its BADEVENT lists the
/// unsupported events without parentheses; the RFC's lists the supported ones.
#[test]
fn notify_responses_have_the_shape_dovecots_have() {
    let gw = Gateway::start("");
    let ours = scenario(&gw, "events", &[]);
    let peer = Gateway::start("");
    let maildir = peer.data().join("mail/example.test/alice");
    let dovecot = Dovecot::serve(&maildir);
    let port = format!("plain:{}", dovecot.port);
    let smtp = peer.inbound.to_string();
    let out = python("imap_notify.py", &["events", &port, &smtp, USER, "secret"]);
    let theirs: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let show = |r: &Value| serde_json::to_string_pretty(r).unwrap_or_default();
    let (ours_shapes, their_shapes) = (shapes(&ours), shapes(&theirs));
    let missing: Vec<&String> = their_shapes.difference(&ours_shapes).collect();
    assert!(
        missing.is_empty(),
        "Dovecot sent {missing:?}, which we never did.\nours: {}\nDovecot: {}",
        show(&ours),
        show(&theirs)
    );
    // Enough was compared: the initial STATUS, a STATUS after a change, EXISTS and the FETCH
    // MessageNew asked for, an EXPUNGE.
    for kind in [
        "* STATUS Lists (MESSAGES",
        "EXISTS",
        "FETCH (UID",
        "EXPUNGE",
    ] {
        assert!(
            their_shapes.iter().any(|s| s.contains(kind)),
            "Dovecot sent no {kind}: {}",
            show(&theirs)
        );
    }
    for step in ["set", "idle_done", "bad", "none", "noop_after_none"] {
        assert_eq!(
            kinds(&ours, step).last(),
            kinds(&theirs, step).last(),
            "step {step}: ours {:?}, Dovecot's {:?}",
            lines(&ours, step),
            lines(&theirs, step)
        );
    }
    assert_eq!(kinds(&ours, "badevent"), kinds(&theirs, "badevent"));
    assert!(
        has(
            &ours,
            "badevent",
            &["NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)]"]
        ),
        "{}",
        show(&ours)
    );
    assert!(
        has(&theirs, "badevent", &["NO [BADEVENT AnnotationChange]"]),
        "{}",
        show(&theirs)
    );
}
