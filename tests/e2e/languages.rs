//! Plugins written in other languages than Rust, live in a running gateway: the Python
//! spam-score filter, the JavaScript greylist, the C attachment limiter, and Python, JavaScript
//! and C guests that misbehave being contained like Rust ones; a chain of all four languages,
//! live and in the harness; and `mailgate plugin new` + `build` + `test` in each language.

use std::path::Path;
use std::process::Command;

use mailgate_e2e::{
    binary, home_with_tools, mailgate, mailgate_as_user, root, shared_plugin_cache, Gateway,
    RawSmtp,
};

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
/// `c-misbehave`), told to `action` (loop or grow) with a 200 ms deadline (10 s to grow) and
/// this memory cap.
/// The fixture must get the default failure policy (451 4.3.0) with `reason` in the log.
fn assert_contained(fixture: &str, action: &str, memory_mb: u32, reason: &str) -> Gateway {
    // Growing to the cap takes a busy machine longer than 200 ms: there the deadline would
    // stop the plugin first, and the memory cap would go untested.
    let timeout_ms = if action == "grow" { 10_000 } else { 200 };
    let gw = Gateway::start(&format!(
        "[[plugin]]\npath = \"{}\"\ntimeout-ms = {timeout_ms}\nmemory-mb = {memory_mb}\n[plugin.config]\naction = \"{action}\"\n",
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
    let harness = mailgate(&["test", "tests/chain"], &shared_plugin_cache());
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

/// The scaffold round trip with the tools found where a user's are; Rust builds with
/// target/scaffold-guests.
fn scaffold_round_trip(lang: &str) {
    let work = tempfile::tempdir().expect("tempdir");
    let home = home_with_tools(work.path(), true);
    new_build_test(work.path(), &home, lang, &format!("my-{lang}-policy"));
}

/// Python and JavaScript builds of the same sources give the same bytes (their tools alone
/// would not: an interpreter snapshot holds random seeds), so a rebuild, a restart or a
/// reload loads the compiled plugin from the cache; an edited source is built anew.
#[test]
fn building_the_same_sources_again_gives_the_same_component() {
    let work = tempfile::tempdir().expect("tempdir");
    // The builds store the test runs share: the first build of a run may itself be reused (from
    // an earlier run); the two builds must still give the same bytes, which the tools alone do
    // not.
    let home = home_with_tools(work.path(), true);
    for lang in ["python", "js"] {
        let name = format!("same-{lang}");
        mailgate_as_user(
            work.path(),
            &home,
            &["plugin", "new", "--lang", lang, &name],
        );
        let component = work.path().join(&name).join(format!("target/{name}.wasm"));
        let build = || {
            let (_, said) = mailgate_as_user(work.path(), &home, &["plugin", "build", &name]);
            (std::fs::read(&component).expect("component"), said)
        };
        let (first, _) = build();
        let (second, said) = build();
        assert!(
            first == second,
            "{lang}: two builds of the same sources differ"
        );
        assert!(
            said.contains("component reused (same bytes)"),
            "{lang}: {said}"
        );
        // The scaffold's cases still pass with the reused build.
        let (tested, _) = mailgate_as_user(work.path(), &home, &["test", &format!("{name}/cases")]);
        assert!(tested.ends_with("2 passed, 0 failed\n"), "{tested}");
    }
}

/// A gateway compiling a plugin says so, with the plugin's size; a restart with the same cache
/// loads it without compiling.
#[test]
fn a_gateway_says_which_plugin_it_compiles() {
    let cache = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::start(&format!(
        "[[plugin]]\npath = \"{}\"\n[runtime]\ncache-dir = \"{}\"\n",
        root()
            .join("target/plugins/attachment-limit.wasm")
            .display(),
        cache.path().display()
    ));
    let log = gw.log();
    assert!(
        log.contains("compiling plugin attachment-limit.wasm (")
            && log.contains(" KB); later starts load it from the cache"),
        "{log}"
    );
    assert!(
        log.contains("compiling plugin attachment-limit.wasm: done after"),
        "{log}"
    );
    gw.kill();
    gw.launch();
    assert!(
        !gw.log().contains("compiling plugin"),
        "the restart compiled again: {}",
        gw.log()
    );
}

/// The mistakes a Python author makes first are named in their terms: a handler that forgets
/// `return`, a `config_key` default that is not TOML text.
#[test]
fn python_mistakes_are_named_in_the_authors_terms() {
    let work = tempfile::tempdir().expect("tempdir");
    let home = home_with_tools(work.path(), true);
    let name = "py-mistakes";
    mailgate_as_user(
        work.path(),
        &home,
        &["plugin", "new", "--lang", "python", name],
    );
    let dir = work.path().join(name);
    std::fs::write(
        dir.join("app.py"),
        r#"import mailgate as mg
from wit_world import exports


class Info(exports.Info):
    def describe(self):
        keys = []
        if mg.config("mistake") == "config-key":
            keys = [mg.config_key("threshold", "integer", "score to reject at", 5)]
        return mg.info("py-mistakes", "0.1.0", config=keys)


class RcptTo(exports.RcptTo):
    def handle(self, session, envelope, recipient, params):
        if recipient.startswith("refused"):
            return mg.reject(550, "5.7.1", "No")
"#,
    )
    .expect("app.py");
    mailgate_as_user(work.path(), &home, &["plugin", "build", name]);
    let case = |mistake: &str| {
        let file = dir.join(format!("cases/{mistake}.toml"));
        std::fs::write(
            &file,
            format!(
                "[[plugin]]\npath = \"../target/{name}.wasm\"\nmemory-mb = 128\n\
                 [plugin.config]\nmistake = \"{mistake}\"\n\n[[case]]\nname = \"{mistake}\"\n\
                 envelope = {{ from = \"a@example.net\", to = [\"bob@example.org\"] }}\n\
                 message = {{ text = \"Subject: hi\\n\\nhello\\n\" }}\n\
                 [case.expect]\ndisposition = \"accept\"\n"
            ),
        )
        .expect("case");
        let out = Command::new(binary())
            .arg("test")
            .arg(&file)
            .env("MAILGATE_CACHE_DIR", shared_plugin_cache())
            .output()
            .expect("mailgate test");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let forgotten = case("no-return");
    assert!(
        forgotten.contains(
            "RcptTo.handle returned None (is there a way through it without `return`?); \
             expected a verdict: mg.proceed()"
        ),
        "{forgotten}"
    );
    let wrong_type = case("config-key");
    assert!(
        wrong_type.contains(
            "mg.config_key('threshold', ...): default must be TOML text (a str) or None, \
             not int 5: write default='5'"
        ),
        "{wrong_type}"
    );
}

/// mailgate.h has the helpers the other SDKs have: capabilities and required config keys in
/// describe, kv, files, the gateway's DMARC result, set-header; a C plugin built by zig uses
/// each and the harness sees what it did.
#[test]
fn the_c_helpers_reach_kv_files_auth_config_and_edits() {
    let work = tempfile::tempdir().expect("tempdir");
    let home = home_with_tools(work.path(), true);
    let name = "c-helpers";
    mailgate_as_user(work.path(), &home, &["plugin", "new", "--lang", "c", name]);
    let dir = work.path().join(name);
    std::fs::write(
        dir.join("plugin.c"),
        r#"#include "mailgate.h"

#include <stdio.h>
#include <stdlib.h>

void exports_mailgate_plugin_info_describe(mg_plugin_info_t *ret) {
    mg_describe(ret, "c-helpers", "0.1.0");
    mg_capability(ret, "kv");
    mg_capability(ret, "files");
    mg_declare_required(ret, "greeting-file", "string", "a file under the granted directory");
    mg_declare(ret, "stamp", "boolean", "true", "stamp the count");
}

void exports_mailgate_plugin_data_handle(mg_session_t *session, mg_envelope_t *envelope,
                                         mg_message_t message, mg_verdict_t *ret) {
    (void)message;
    mg_free_session(session);
    mg_free_envelope(envelope);
    int64_t count = 0;
    if (mg_kv_incr("messages", 1, 0, &count) != MG_OK) {
        mg_verdict_tempfail(ret, 451, "4.3.0", mg_last_error());
        return;
    }
    char *path = mg_config_string("greeting-file");
    char *greeting = NULL;
    size_t len = 0;
    mg_status_t read = mg_file_read(path ? path : "", &greeting, &len);
    free(path);
    if (read != MG_OK) {
        mg_verdict_reject(ret, 550, "5.7.0", mg_last_error());
        return;
    }
    char count_text[32];
    snprintf(count_text, sizeof count_text, "%lld", (long long)count);
    if (mg_config_bool("stamp", true)) {
        mg_set_header("X-Count", count_text);
    }
    mg_set_header("X-Greeting", greeting);
    free(greeting);
    mg_dmarc_t dmarc;
    mg_set_header("X-Dmarc", mg_dmarc(&dmarc) ? mg_auth_outcome(dmarc.outcome) : "unchecked");
    mg_verdict_continue(ret);
}
"#,
    )
    .expect("plugin.c");
    std::fs::create_dir_all(dir.join("cases/files")).expect("mkdir");
    std::fs::write(dir.join("cases/files/greeting.txt"), "hello from a file").expect("file");
    std::fs::write(
        dir.join(format!("cases/{name}.toml")),
        format!(
            r#"[[plugin]]
path = "../target/{name}.wasm"
grant = ["kv", "files"]
files = "files"
[plugin.config]
greeting-file = "greeting.txt"

[[case]]
name = "every helper did its part"
envelope = {{ from = "a@example.net", to = ["bob@example.org"] }}
message = {{ text = "Subject: hi\nX-Count: 0\nX-Count: 0\n\nhello\n" }}
kv = {{ c-helpers = {{ messages = "41" }} }}
[case.expect]
disposition = "accept"
headers-equal = {{ X-Count = "42", X-Greeting = "hello from a file", X-Dmarc = "unchecked" }}
"#
        ),
    )
    .expect("case");
    mailgate_as_user(work.path(), &home, &["plugin", "build", name]);
    let (tested, _) = mailgate_as_user(work.path(), &home, &["test", &format!("{name}/cases")]);
    assert!(tested.ends_with("1 passed, 0 failed\n"), "{tested}");
}

/// A JavaScript plugin's stages are its module's exports, in any form of `export`.
#[test]
fn a_javascript_plugin_exporting_a_list_builds_its_stages() {
    let work = tempfile::tempdir().expect("tempdir");
    let home = home_with_tools(work.path(), true);
    let name = "js-export-list";
    mailgate_as_user(work.path(), &home, &["plugin", "new", "--lang", "js", name]);
    let app = work.path().join(name).join("app.js");
    let text = std::fs::read_to_string(&app).expect("app.js");
    let listed = text
        .replace("export const info", "const info")
        .replace("export const rcptTo", "const rcptTo")
        .replace("export const data", "const data")
        + "\nexport { info, rcptTo, data };\n";
    assert!(!listed.contains("export const"), "{listed}");
    std::fs::write(&app, listed).expect("app.js");
    mailgate_as_user(work.path(), &home, &["plugin", "build", name]);
    let (tested, _) = mailgate_as_user(work.path(), &home, &["test", &format!("{name}/cases")]);
    assert!(tested.ends_with("2 passed, 0 failed\n"), "{tested}");
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
