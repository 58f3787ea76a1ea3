//! Plugins written in other languages than Rust, live in a running gateway: the Python
//! spam-score filter, the JavaScript greylist, the C attachment limiter, and Python, JavaScript
//! and C guests that misbehave being contained like Rust ones; a chain of all four languages,
//! live and in the harness; and `mailgate plugin new` + `build` + `test` in each language.

use std::path::Path;
use std::process::Command;

use mailgate_e2e::{binary, mailgate, root, Gateway, RawSmtp};

fn send(gw: &Gateway, text: &str) -> String {
    let (mut c, _) = RawSmtp::connect(gw.inbound);
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<sender@client.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(format!("{text}.\r\n").as_bytes());
    let reply = c.reply();
    c.cmd("QUIT");
    reply
}

#[test]
fn python_spam_filter_scores_and_rejects_live() {
    let gw = Gateway::start(&format!(
        "[[plugin]]\npath = \"{}\"\nmemory-mb = 128\n[plugin.config]\nthreshold = 5\nkeywords = {{ \"viagra\" = 3, \"lottery\" = 2 }}\n",
        root().join("target/plugins/spam-score.wasm").display()
    ));
    let clean = send(&gw, "Subject: lunch\r\n\r\nNoon at the usual place?\r\n");
    assert!(clean.starts_with("250"), "{clean}");
    let spam = send(
        &gw,
        "Subject: lottery news\r\n\r\nCheap viagra for lottery winners.\r\n",
    );
    assert!(
        spam.starts_with("550 5.7.1 Message looks like spam (score 5"),
        "{spam}"
    );
    let delivered = gw.wait_mailbox("alice@example.test", 1);
    assert_eq!(delivered.len(), 1);
    assert!(
        delivered[0].contains("X-Spam-Score: 0\r\n"),
        "{}",
        delivered[0]
    );
}

/// A gateway whose chain is one misbehaving fixture (`py-misbehave`, `js-misbehave` or
/// `c-misbehave`), told to `action` (loop or grow) with a 200 ms deadline and this memory cap.
/// The fixture must get the default failure policy (451 4.3.0) with `reason` in the log.
fn assert_contained(fixture: &str, action: &str, memory_mb: u32, reason: &str) -> Gateway {
    let gw = Gateway::start(&format!(
        "[[plugin]]\npath = \"{}\"\ntimeout-ms = 200\nmemory-mb = {memory_mb}\n[plugin.config]\naction = \"{action}\"\n",
        root().join(format!("target/test-plugins/{fixture}.wasm")).display()
    ));
    let reply = send(&gw, "Subject: x\r\n\r\ny\r\n");
    assert!(
        reply.starts_with("451 4.3.0"),
        "{fixture} {action}: {reply}"
    );
    assert!(
        gw.log().contains(reason),
        "{fixture} {action}: {}",
        gw.log()
    );
    gw
}

#[test]
fn a_python_plugin_that_loops_is_cut_off_at_its_deadline() {
    let gw = assert_contained("py-misbehave", "loop", 128, "deadline of 200 ms exceeded");
    // The gateway goes on: a second message meets the same fate, not a hang.
    assert!(send(&gw, "Subject: x\r\n\r\ny\r\n").starts_with("451"));
}

#[test]
fn a_python_plugin_that_allocates_without_bound_hits_its_memory_cap() {
    assert_contained("py-misbehave", "grow", 64, "memory cap of 64 MiB exceeded");
}

#[test]
fn javascript_greylisting_defers_then_accepts_a_retry_live() {
    // Each greylist decision commits to the on-disk store with a sync; `timeout-ms` is a
    // wall-clock budget, so it is set well above the 100 ms default: this test is about the
    // greylisting, not about how fast a loaded test machine's disk syncs.
    let gw = Gateway::start(&format!(
        "[[plugin]]\npath = \"{}\"\ngrant = [\"kv\"]\nmemory-mb = 128\ntimeout-ms = 5000\n[plugin.config]\ndelay-seconds = 1\n",
        root().join("target/plugins/greylist.wasm").display()
    ));
    let attempt = || {
        let (mut c, _) = RawSmtp::connect(gw.inbound);
        c.cmd("EHLO client.test");
        c.cmd("MAIL FROM:<sender@client.test>");
        let reply = c.cmd("RCPT TO:<alice@example.test>");
        c.cmd("QUIT");
        reply
    };
    let first = attempt();
    assert!(first.starts_with("451 4.7.1 Greylisted"), "{first}");
    let early = attempt();
    assert!(early.starts_with("451"), "too early: {early}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let retry = attempt();
    assert!(retry.starts_with("250"), "after the delay: {retry}");
    // The triple is remembered (in the persistent store): no delay any more.
    assert!(attempt().starts_with("250"));
}

#[test]
fn a_javascript_plugin_that_loops_or_grows_is_contained() {
    assert_contained("js-misbehave", "loop", 128, "deadline of 200 ms exceeded");
    assert_contained("js-misbehave", "grow", 64, "memory cap of 64 MiB exceeded");
}

#[test]
fn c_attachment_limit_counts_and_refuses_live() {
    let gw = Gateway::start(&format!(
        "[[plugin]]\npath = \"{}\"\n[plugin.config]\nmax-attachments = 1\n",
        root()
            .join("target/plugins/attachment-limit.wasm")
            .display()
    ));
    let with_files = |names: &[&str]| {
        let mut text = String::from(
            "Subject: files\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n\
             --B\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n",
        );
        for name in names {
            text.push_str(&format!(
                "--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n"
            ));
        }
        text + "--B--\r\n"
    };
    let one = send(&gw, &with_files(&["a.pdf"]));
    assert!(one.starts_with("250"), "{one}");
    let two = send(&gw, &with_files(&["a.pdf", "b.pdf"]));
    assert!(
        two.starts_with("552 5.3.4 Too many attachments: 2 (at most 1)"),
        "{two}"
    );
    let delivered = gw.wait_mailbox("alice@example.test", 1);
    assert_eq!(delivered.len(), 1);
    assert!(
        delivered[0].contains("X-Attachment-Count: 1\r\n"),
        "{}",
        delivered[0]
    );
}

#[test]
fn a_c_plugin_that_loops_or_grows_is_contained() {
    assert_contained("c-misbehave", "loop", 16, "deadline of 200 ms exceeded");
    assert_contained("c-misbehave", "grow", 16, "memory cap of 16 MiB exceeded");
}

#[test]
fn a_chain_of_all_four_languages_gives_the_harness_result_live() {
    let cache = tempfile::tempdir().expect("tempdir");
    let harness = mailgate(&["test", "tests/chain"], cache.path());
    assert_eq!(
        harness.code,
        Some(0),
        "{}{}",
        harness.stdout,
        harness.stderr
    );
    assert!(
        harness.stdout.ends_with("4 passed, 0 failed\n"),
        "{}",
        harness.stdout
    );

    // The same plugin tables, with their paths made absolute for the gateway's own config.
    let chain = std::fs::read_to_string(root().join("tests/chain/plugins.toml")).expect("chain");
    let target = format!("{}/", root().join("target").display());
    let gw = Gateway::start(&chain.replace("../../target/", &target));
    // The greylist (JavaScript) defers the first attempt; the harness cases start after it.
    let (mut c, _) = RawSmtp::connect(gw.inbound);
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<sender@client.test>");
    let first = c.cmd("RCPT TO:<alice@example.test>");
    assert!(first.starts_with("451 4.7.1"), "{first}");
    c.cmd("QUIT");
    std::thread::sleep(std::time::Duration::from_millis(1200));

    let message = |name: &str| {
        let text = std::fs::read_to_string(root().join("tests/chain").join(name)).expect("eml");
        text.replace('\n', "\r\n")
    };
    let clean = send(&gw, &message("clean.eml"));
    assert!(clean.starts_with("250"), "{clean}");
    let spam = send(&gw, &message("spam.eml"));
    assert!(
        spam.starts_with("550 5.7.1"),
        "decided by spam-score: {spam}"
    );
    let files = send(&gw, &message("attachments.eml"));
    assert!(
        files.starts_with("552 5.3.4"),
        "decided by attachment-limit: {files}"
    );

    let delivered = gw.wait_mailbox("alice@example.test", 1);
    assert_eq!(delivered.len(), 1);
    let head = delivered[0]
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_owned()
        + "\r\n";
    for mark in ["X-Scanned: yes", "X-Spam-Score: 2", "X-Attachment-Count: 1"] {
        assert!(
            head.contains(&format!("{mark}\r\n")),
            "{mark} missing: {head}"
        );
    }
    assert!(!head.contains("X-Originating-IP"), "{head}");
}

/// `mailgate` run in `work` as a user whose home is `home`: stdout and stderr.
fn mailgate_as_user(work: &Path, home: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(binary())
        .args(args)
        .current_dir(work)
        .env("HOME", home)
        .env_remove("XDG_CACHE_HOME")
        .env_remove("MAILGATE_TOOLS")
        .env("CARGO_TARGET_DIR", root().join("target/scaffold-guests"))
        .env("MAILGATE_CACHE_DIR", work.join("cache"))
        .output()
        .expect("run mailgate");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let errors = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "mailgate {args:?}: {text}{errors}");
    (text, errors)
}

/// `mailgate plugin new --lang LANG NAME` then `plugin build NAME` and `mailgate test
/// NAME/cases` in `work`, every path relative as the docs show them; returns the build's
/// stderr.
fn new_build_test(work: &Path, home: &Path, lang: &str, name: &str) -> String {
    let (created, _) = mailgate_as_user(work, home, &["plugin", "new", "--lang", lang, name]);
    assert!(created.contains(&format!("cases/{name}.toml")), "{created}");
    let (_, built) = mailgate_as_user(work, home, &["plugin", "build", name]);
    let dir = work.join(name);
    assert!(
        dir.join(format!("target/{name}.wasm")).is_file(),
        "the component is named after the plugin"
    );
    assert!(
        !dir.join("target/tools").exists(),
        "tools are shared per user, not installed per plugin"
    );
    let (tested, _) = mailgate_as_user(work, home, &["test", &format!("{name}/cases")]);
    assert!(tested.ends_with("2 passed, 0 failed\n"), "{tested}");
    assert!(
        tested.contains("a recipient at a blocked domain is refused"),
        "{tested}"
    );
    built
}

/// The scaffold round trip with the tools `cargo xtask plugins` installed, found where a user's
/// are (~/.cache/mailgate/tools, linked to target/tools); Rust builds with
/// target/scaffold-guests.
fn scaffold_round_trip(lang: &str) {
    let work = tempfile::tempdir().expect("tempdir");
    let home = work.path().join("home");
    std::fs::create_dir_all(home.join(".cache/mailgate")).expect("mkdir");
    std::os::unix::fs::symlink(
        root().join("target/tools"),
        home.join(".cache/mailgate/tools"),
    )
    .expect("link the tools");
    new_build_test(work.path(), &home, lang, &format!("my-{lang}-policy"));
}

#[test]
fn a_second_python_plugin_builds_without_installing_its_tools_again() {
    let work = tempfile::tempdir().expect("tempdir");
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    let first = new_build_test(work.path(), &home, "python", "first-py");
    assert!(
        first.contains("installing componentize-py") && first.contains(".cache/mailgate/tools"),
        "the first plugin installs into the user's cache: {first}"
    );
    let second = new_build_test(work.path(), &home, "python", "second-py");
    assert!(!second.contains("installing"), "{second}");
}

#[test]
fn a_new_rust_plugin_builds_and_passes_its_cases() {
    scaffold_round_trip("rust");
}

#[test]
fn a_new_python_plugin_builds_and_passes_its_cases() {
    scaffold_round_trip("python");
}

#[test]
fn a_new_javascript_plugin_builds_and_passes_its_cases() {
    scaffold_round_trip("js");
}

#[test]
fn a_new_c_plugin_builds_and_passes_its_cases() {
    scaffold_round_trip("c");
}

#[test]
fn plugin_new_and_build_refuse_bad_input_clearly() {
    let work = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let out = Command::new(binary()).args(args).output().expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["plugin", "new", "--lang", "cobol", "x"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("expected rust, python, js or c"), "{err}");
    let target = work.path().join("p");
    let (code, err) = run(&[
        "plugin",
        "new",
        "--lang",
        "c",
        "Bad Name",
        target.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("lower-case letters, digits and dashes"),
        "{err}"
    );
    assert!(!target.exists(), "nothing written for a refused name");
    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let (code, err) = run(&["plugin", "build", empty.to_str().expect("utf-8")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("holds no plugin: expected Cargo.toml (Rust), app.py"),
        "{err}"
    );
}
