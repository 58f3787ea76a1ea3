//! IMAP compliance: imaptest, the Dovecot project's IMAP tester, against the real binary over
//! implicit TLS. Its scripted groups (src/tests) must all pass and each must run its commands:
//! imaptest runs no command of a group needing a capability the server does not advertise and
//! does not count that as a failure, so a group only counts here when it ran. Its stress mode
//! (random concurrent sessions that check each other's view of the mailbox) must report no
//! error.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use mailgate_e2e::{root, Gateway};

/// Each test has a gateway of its own: its user's mailbox is the tester's to empty.
const USER: &str = "alice@example.test";
const PASSWORD: &str = "pw-alice";
/// The second user of two-user groups (urlauth2): imaptest logs them in with the same password.
const USER2: &str = "alice2@example.test";

/// A gateway with both of the tester's users, once the second one can log in (the server
/// picks a new user up shortly after it is added) and has the mailbox imaptest selects.
fn gateway() -> Gateway {
    let gw = Gateway::start("");
    gw.add_user(USER2, PASSWORD);
    let script = format!(
        "import imaplib, ssl, time\n\
         end = time.time() + 20\n\
         while True:\n\
         \x20   try:\n\
         \x20       c = imaplib.IMAP4_SSL('127.0.0.1', {port}, ssl_context=ssl._create_unverified_context())\n\
         \x20       c.login('{USER2}', '{PASSWORD}'); c.create('imaptest'); c.logout(); break\n\
         \x20   except imaplib.IMAP4.error:\n\
         \x20       if time.time() > end: raise\n\
         \x20       time.sleep(0.1)\n",
        port = gw.imaps
    );
    let status = Command::new("python3")
        .args(["-c", &script])
        .status()
        .expect("python3");
    assert!(status.success(), "{USER2} never came to log in");
    gw
}

/// The imaptest binary: `IMAPTEST_BIN` (`cargo xtask test` builds it and sets it), else the
/// one it built into target/imaptest.
fn imaptest() -> PathBuf {
    let bin = std::env::var_os("IMAPTEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/imaptest/imaptest/src/imaptest"));
    assert!(
        bin.exists(),
        "imaptest is not at {}: run `cargo xtask test`, which builds it",
        bin.display()
    );
    bin
}

/// Runs imaptest against the gateway's IMAPS port with `args`; everything it printed.
fn run(gw: &Gateway, args: &[String]) -> String {
    let bin = imaptest();
    let tests = bin.parent().expect("src").join("tests");
    let out = Command::new(&bin)
        .env("LD_LIBRARY_PATH", "/usr/lib/dovecot")
        .current_dir(bin.parent().expect("src"))
        .args([
            "host=127.0.0.1".to_string(),
            format!("port={}", gw.imaps),
            "ssl=any-cert".to_string(),
            format!("user={USER}"),
            format!("pass={PASSWORD}"),
            format!("mbox={}", tests.join("default.mbox").display()),
        ])
        .args(args)
        .output()
        .expect("imaptest");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// imaptest's scripted groups: every file of its tests folder but the `.mbox` ones (the
/// messages the groups start from), as imaptest itself reads the folder.
fn groups(tests: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(tests)
        .expect("imaptest's tests folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !n.ends_with(".mbox"))
        .collect();
    names.sort();
    names
}

/// Groups imaptest may still skip (run no command of) because we do not advertise an extension
/// they need. Each name here must really run nothing (so one that comes to run has to leave the
/// list) and every other group must run its commands.
/// - urlauth2: it needs a second user (imaptest's `user2=`), which the runs over every group do
///   not give: as written it appends no message yet fetches two, so it fails against any
///   server. `imaptest_urlauth_groups_run_and_pass` runs it with the two messages it needs.
const EXPECTED_SKIPS: &[&str] = &["urlauth2"];

/// `(groups, failed, skipped)` from imaptest's summary line
/// (`71 test groups: 0 failed, 0 skipped due to missing capabilities`).
fn summary(out: &str) -> Option<(u64, u64, u64)> {
    let line = out.lines().find(|l| l.contains(" test groups: "))?;
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers[..] {
        [groups, failed, skipped] => Some((groups, failed, skipped)),
        _ => None,
    }
}

#[test]
fn imaptest_scripted_groups_all_pass() {
    let gw = Gateway::start("");
    let tests = imaptest().parent().expect("src").join("tests");
    let out = run(&gw, &[format!("test={}", tests.display())]);
    // Its count of skipped groups stays 0 whatever it skipped: which groups ran no command
    // is checked group by group (imaptest_groups_that_run_no_command_are_only_the_expected_ones).
    let (groups, failed, _) = summary(&out).expect(&out);
    eprintln!(
        "{}",
        out.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );
    assert!(groups >= 71, "{out}");
    assert_eq!(failed, 0, "imaptest groups failed:\n{out}");
    for kind in ["base protocol:", "extensions:"] {
        let line = out.lines().find(|l| l.starts_with(kind)).expect(kind);
        assert!(line.contains(": 0/"), "{line}\n{out}");
    }
}

/// Commands imaptest ran, base protocol and extensions together (`base protocol: 0/112
/// individual commands failed`, `extensions: 0/40 ...`).
fn commands(out: &str) -> Option<u64> {
    let ran = |kind: &str| -> Option<u64> {
        let line = out.lines().find(|l| l.starts_with(kind))?;
        let (_, after) = line.split_once('/')?;
        after.split_whitespace().next()?.parse().ok()
    };
    Some(ran("base protocol:")? + ran("extensions:")?)
}

/// Each group on its own, to name the ones that ran no command (imaptest's summary only counts
/// the groups it skipped, and a group run alone is not even counted).
#[test]
fn imaptest_groups_that_run_no_command_are_only_the_expected_ones() {
    let gw = Gateway::start("");
    let tests = imaptest().parent().expect("src").join("tests");
    let mut skipped = BTreeSet::new();
    let mut executed = Vec::new();
    for group in groups(&tests) {
        let out = run(&gw, &[format!("test={}", tests.join(&group).display())]);
        // Alone, a skipped group is not always counted as skipped: what tells is that it ran
        // no command at all.
        match (summary(&out), commands(&out)) {
            (Some((1, _, _)), Some(0)) => {
                skipped.insert(group);
            }
            (Some((1, _, 0)), Some(_)) => executed.push(group),
            _ => panic!("imaptest on {group} said:\n{out}"),
        }
    }
    eprintln!(
        "{} groups executed commands: {}",
        executed.len(),
        executed.join(" ")
    );
    eprintln!("{} groups ran no command: {skipped:?}", skipped.len());
    let expected: BTreeSet<String> = EXPECTED_SKIPS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        skipped, expected,
        "groups that ran no command differ from EXPECTED_SKIPS: a group that now runs leaves \
         the list, and none may run nothing unnamed"
    );
}

/// NOTIFY (RFC 5465) alone: the group runs its commands (the initial STATUS of NOTIFY SET
/// STATUS for each event, none without STATUS) and passes.
#[test]
fn imaptest_notify_group_runs_and_passes() {
    let gw = Gateway::start("");
    let tests = imaptest().parent().expect("src").join("tests");
    let out = run(&gw, &[format!("test={}", tests.join("notify").display())]);
    assert_eq!(summary(&out).map(|s| (s.0, s.1)), Some((1, 0)), "{out}");
    assert!(commands(&out).is_some_and(|n| n >= 6), "{out}");
    assert!(out.contains("extensions: 0/"), "{out}");
}

/// Stress mode: concurrent random sessions (login, select, fetch, store, expunge, append...)
/// that each check what the server tells them against what the others did.
fn stress(clients: u32) {
    let gw = Gateway::start("");
    let out = run(&gw, &[format!("clients={clients}"), "secs=30".to_string()]);
    let errors: Vec<&str> = out.lines().filter(|l| l.contains("Error:")).collect();
    assert!(
        errors.is_empty(),
        "{} errors:\n{}",
        errors.len(),
        errors.join("\n")
    );
    // The totals row: logins first. Work was done: every client went through several
    // sessions (on a loaded 2-core machine 20 clients manage about 9 each in 30 s; the errors
    // above are the verdict, this only shows that there was something to judge).
    let totals = out
        .lines()
        .skip_while(|l| !l.starts_with("Totals:"))
        .nth(4)
        .unwrap_or_default();
    let logins: u64 = totals
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(logins > 5 * u64::from(clients), "{out}");
}

#[test]
fn imaptest_stress_with_5_clients_reports_no_errors() {
    stress(5);
}

#[test]
fn imaptest_stress_with_20_clients_reports_no_errors() {
    stress(20);
}

/// URLAUTH (RFC 4467): the groups that authorize URLs with GENURLAUTH, fetch them with
/// URLFETCH (as the owner, and as another user under `authuser`; in the extended form of
/// URLAUTH=BINARY too) and void them with RESETKEY run their commands and pass.
#[test]
fn imaptest_urlauth_groups_run_and_pass() {
    let gw = gateway();
    let tests = imaptest().parent().expect("src").join("tests");
    let out = run(&gw, &[format!("test={}", tests.join("urlauth").display())]);
    assert_eq!(summary(&out).map(|s| (s.0, s.1)), Some((1, 0)), "{out}");
    assert!(commands(&out).is_some_and(|n| n >= 8), "urlauth: {out}");
    assert!(out.contains("extensions: 0/"), "urlauth: {out}");
    // URLAUTH=BINARY (RFC 5524): URLFETCH's extended form, BINARY and BODYPARTSTRUCTURE of a
    // message/rfc822 part holding base64 parts.
    let out = run(
        &gw,
        &[format!("test={}", tests.join("urlauth-binary").display())],
    );
    assert_eq!(summary(&out).map(|s| (s.0, s.1)), Some((1, 0)), "{out}");
    assert!(
        commands(&out).is_some_and(|n| n >= 15),
        "urlauth-binary: {out}"
    );
    assert!(out.contains("extensions: 0/"), "urlauth-binary: {out}");
    // urlauth2 as written appends nothing before fetching messages 1:2: given its two.
    let dir = tempfile::tempdir().expect("tempdir");
    let script = std::fs::read_to_string(tests.join("urlauth2")).expect("urlauth2");
    let script = format!("messages: 2\n{script}");
    std::fs::write(dir.path().join("urlauth2"), script).expect("write");
    // imaptest reads the messages from default.mbox beside the script.
    std::fs::copy(tests.join("default.mbox"), dir.path().join("default.mbox")).expect("mbox");
    let out = run(
        &gw,
        &[
            format!("test={}", dir.path().join("urlauth2").display()),
            format!("user2={USER2}"),
        ],
    );
    assert_eq!(summary(&out).map(|s| (s.0, s.1)), Some((1, 0)), "{out}");
    assert!(commands(&out).is_some_and(|n| n >= 8), "urlauth2: {out}");
    assert!(out.contains("extensions: 0/"), "urlauth2: {out}");
}
