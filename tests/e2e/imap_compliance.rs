//! IMAP compliance: imaptest, the Dovecot project's IMAP tester, against the real binary over
//! implicit TLS. Its scripted groups (src/tests: base protocol and the extensions we advertise)
//! must all pass, and its stress mode (random concurrent sessions that check each other's view
//! of the mailbox) must report no error.

use std::path::PathBuf;
use std::process::Command;

use mailgate_e2e::{root, Gateway};

/// Each test has a gateway of its own: its user's mailbox is the tester's to empty.
const USER: &str = "alice@example.test";
const PASSWORD: &str = "pw-alice";

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

/// The number after `label` in imaptest's summary (`71 test groups: 0 failed, ...`).
fn number_before(text: &str, label: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.contains(label))?;
    let before = &line[..line.find(label)?];
    before.split_whitespace().last()?.parse().ok()
}

#[test]
fn imaptest_scripted_groups_all_pass() {
    let gw = Gateway::start("");
    let tests = imaptest().parent().expect("src").join("tests");
    let out = run(&gw, &[format!("test={}", tests.display())]);
    let groups = number_before(&out, " test groups:").expect(&out);
    let failed = out
        .lines()
        .find(|l| l.contains(" test groups: "))
        .and_then(|l| l.split("test groups: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("failed count");
    assert!(groups >= 71, "{out}");
    assert_eq!(failed, 0, "imaptest groups failed:\n{out}");
    for kind in ["base protocol:", "extensions:"] {
        let line = out.lines().find(|l| l.starts_with(kind)).expect(kind);
        assert!(line.contains(": 0/"), "{line}\n{out}");
    }
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
    // The totals row: logins first. Work was done.
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
    assert!(logins > 10 * u64::from(clients), "{out}");
}

#[test]
fn imaptest_stress_with_5_clients_reports_no_errors() {
    stress(5);
}

#[test]
fn imaptest_stress_with_20_clients_reports_no_errors() {
    stress(20);
}
