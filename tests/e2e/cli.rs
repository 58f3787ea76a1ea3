//! The `mailgate` command line as a user runs it: `check`, `test`, and what bad input gets.

use mailgate_e2e::{mailgate, plugin_dir, root, shared_plugin_cache};

/// A directory for a test's own files (configs, cases, reports). Compiled plugins go to the
/// shared cache, except where caching itself is under test.
fn cache() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Runs `mailgate check` on the sample with this config text (written next to `files`).
fn check_with_config(config: &str, files: &[(&str, &[u8])]) -> mailgate_e2e::Run {
    let dir = cache();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).expect("write");
    }
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).expect("write config");
    let args = [
        "check",
        "--config",
        path.to_str().expect("utf-8"),
        "samples/welcome.eml",
    ];
    mailgate(&args, &shared_plugin_cache())
}

#[test]
fn check_on_the_sample_runs_every_stage_with_the_bundled_plugins() {
    let cache = cache();
    let run = mailgate(
        &[
            "check",
            "--rcpt",
            "postmaster@localhost",
            "samples/welcome.eml",
        ],
        cache.path(),
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    for stage in [
        "[connect]",
        "[helo]",
        "[mail-from]",
        "[rcpt-to]",
        "[data]",
        "[deliver]",
        "[retrieve]",
    ] {
        assert!(
            run.stdout.contains(stage),
            "missing {stage}:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("mime-guard"), "{}", run.stdout);
    assert!(run.stdout.contains("edit: remove-part 2"), "{}", run.stdout);
    assert!(
        run.stdout.contains("disposition: accepted"),
        "{}",
        run.stdout
    );
    let message = run
        .stdout
        .split("final message:\n")
        .nth(1)
        .expect("final message printed");
    assert!(
        message.contains("X-Mailgate: processed by mailgate"),
        "{message}"
    );
    assert!(
        !message.contains("TVqQ"),
        "the program was stripped:\n{message}"
    );
    assert!(message.contains("Hello postmaster,"), "{message}");
    // The compiled components were cached for the next start.
    let cached = std::fs::read_dir(cache.path()).expect("cache dir").count();
    assert_eq!(cached, 3, "one artifact per bundled plugin");
}

#[test]
fn check_refuses_a_recipient_outside_the_local_domains() {
    let run = mailgate(
        &[
            "check",
            "--rcpt",
            "someone@elsewhere.test",
            "--diff",
            "samples/welcome.eml",
        ],
        &shared_plugin_cache(),
    );
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("reject 550 5.1.1"), "{}", run.stdout);
    assert!(
        run.stdout.contains("<someone@elsewhere.test> 550"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("disposition: rejected"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("[data]"),
        "DATA is never reached: {}",
        run.stdout
    );
}

#[test]
fn check_diff_shows_only_what_changed() {
    let run = mailgate(
        &["check", "--diff", "samples/welcome.eml"],
        &shared_plugin_cache(),
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let diff = run
        .stdout
        .split("changes to the message:\n")
        .nth(1)
        .expect("diff printed");
    assert!(
        diff.lines()
            .any(|l| l.starts_with("+ X-Mailgate: processed by mailgate")),
        "{diff}"
    );
    assert!(diff.lines().any(|l| l.starts_with("- TVqQ")), "{diff}");
    assert!(
        !diff.contains("From: Alice"),
        "untouched head left out: {diff}"
    );
}

#[test]
fn test_runs_the_bundled_cases_and_writes_junit() {
    let cache = cache();
    let junit = cache.path().join("report.xml");
    let run = mailgate(
        &["test", "--junit", junit.to_str().expect("utf-8"), "plugins"],
        &shared_plugin_cache(),
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let summary = run.stdout.lines().last().expect("summary line");
    assert!(summary.ends_with(" passed, 0 failed"), "{summary}");
    let passed: usize = summary
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("count");
    assert!(passed >= 15, "{summary}");
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert_eq!(xml.matches("<testcase ").count(), passed);
    assert!(!xml.contains("<failure"));
}

#[test]
fn a_failing_case_shows_expected_and_actual_and_fails_the_run() {
    let dir = cache();
    let case = dir.path().join("wrong.toml");
    std::fs::write(
        &case,
        format!(
            "[[plugin]]\npath = \"{}\"\n[plugin.config]\ndomains = [\"example.org\"]\n\n\
             [[case]]\nname = \"wrong expectation\"\nenvelope = {{ from = \"a@x.test\", to = [\"b@example.org\"] }}\n\
             [case.expect]\ndisposition = \"reject\"\nheaders-present = [\"X-Never\"]\n",
            plugin_dir().join("recipient-policy.wasm").display()
        ),
    )
    .expect("write case");
    let junit = dir.path().join("junit.xml");
    let run = mailgate(
        &[
            "test",
            "--junit",
            junit.to_str().expect("utf-8"),
            case.to_str().expect("utf-8"),
        ],
        dir.path(),
    );
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("FAIL"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("disposition: expected reject, got accept"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("header X-Never: expected present, got absent"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("0 passed, 1 failed"), "{}", run.stdout);
    assert!(std::fs::read_to_string(&junit)
        .expect("junit")
        .contains("<failure message=\"disposition: expected reject"));
}

#[test]
fn a_config_with_an_unknown_key_names_file_line_and_key() {
    let run = check_with_config("[[plugin]]\npath = \"x.wasm\"\ntimeout = 5\n", &[]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("gateway.toml"), "{}", run.stderr);
    assert!(run.stderr.contains("line 3"), "{}", run.stderr);
    assert!(
        run.stderr.contains("unknown field `timeout`"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_plugin_file_is_named() {
    let run = check_with_config("[[plugin]]\npath = \"plugins/absent.wasm\"\n", &[]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("absent.wasm: cannot read"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_file_that_is_not_a_component_is_refused_with_the_reason() {
    let run = check_with_config(
        "[[plugin]]\npath = \"fake.wasm\"\n",
        &[("fake.wasm", b"MZ not wasm at all")],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("fake.wasm"), "{}", run.stderr);
    assert!(
        run.stderr.contains("not a WebAssembly file"),
        "{}",
        run.stderr
    );
}

#[test]
fn case_files_script_dns_answers_the_clock_and_the_kv_store() {
    let dir = cache();
    let probe = root().join("target/test-plugins/probe-plugin.wasm");
    assert!(probe.exists(), "run `cargo xtask plugins`");
    let case = dir.path().join("services.toml");
    std::fs::write(
        &case,
        format!(
            r#"
[[plugin]]
name = "p1"
path = "{probe}"
grant = ["kv", "dns"]
[plugin.config]
name = "p1"
stages = ["data"]
capabilities = ["kv", "dns"]
action = {{ data = "kv-count" }}

[[plugin]]
name = "p2"
path = "{probe}"
grant = ["dns"]
[plugin.config]
name = "p2"
stages = ["data"]
capabilities = ["dns"]
dns-domain = "example.net"
action = {{ data = "dns-mx" }}

[[plugin]]
name = "p3"
path = "{probe}"
[plugin.config]
name = "p3"
stages = ["data"]
action = {{ data = "clock" }}

[[case]]
name = "scripted services"
envelope = {{ from = "a@example.net", to = ["b@example.org"] }}
dns = {{ "MX example.net" = ["5 mx.example.net."] }}
clock = {{ now-ms = 1767225600123 }}
kv = {{ p1 = {{ count = "41" }} }}
[case.expect]
disposition = "accept"
headers-equal = {{ X-Probe-Count = "42", X-Probe-Mx = "5 mx.example.net.", X-Probe-Now = "1767225600123" }}
"#,
            probe = probe.display()
        ),
    )
    .expect("write case");
    let run = mailgate(
        &["test", case.to_str().expect("utf-8")],
        &shared_plugin_cache(),
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("1 passed, 0 failed"), "{}", run.stdout);
}

/// A case file for the bundled recipient-policy in `dir`, with these cases appended.
fn recipient_policy_cases(dir: &std::path::Path, cases: &str) -> std::path::PathBuf {
    let path = dir.join("policy.toml");
    let text = format!(
        "[[plugin]]\npath = \"{}\"\n[plugin.config]\ndomains = [\"example.org\"]\n\n{cases}",
        plugin_dir().join("recipient-policy.wasm").display()
    );
    std::fs::write(&path, text).expect("write case");
    path
}

#[test]
fn cases_check_reply_text_and_enhanced_codes_and_run_one_by_name() {
    let dir = cache();
    let case = recipient_policy_cases(
        dir.path(),
        "[[case]]\nname = \"exact reply\"\nenvelope = { from = \"a@x.test\", to = [\"b@else.test\"] }\n\
         [case.expect]\nrcpt = { \"b@else.test\" = \"550 5.1.1 Recipient address rejected: not a local or accepted domain\" }\n\n\
         [[case]]\nname = \"parts of the reply\"\nenvelope = { from = \"a@x.test\", to = [\"b@else.test\"] }\n\
         [case.expect]\nreply = { rcpt-to = { code = 550, enhanced = \"5.1.1\", contains = \"not a local\" } }\n\n\
         [[case]]\nname = \"wrong enhanced code\"\nenvelope = { from = \"a@x.test\", to = [\"b@else.test\"] }\n\
         [case.expect]\nreply = { rcpt-to = \"550 5.7.1\" }\n",
    );
    let path = case.to_str().expect("utf-8");
    let all = mailgate(&["test", path], &shared_plugin_cache());
    assert_eq!(all.code, Some(1), "{}{}", all.stdout, all.stderr);
    assert!(
        all.stdout.contains("ok   ") && all.stdout.contains(":: exact reply"),
        "{}",
        all.stdout
    );
    assert!(all.stdout.contains("2 passed, 1 failed"), "{}", all.stdout);
    assert!(
        all.stdout.contains(
            "reply at rcpt-to: expected 550 5.7.1, got 550 5.1.1 Recipient address rejected"
        ),
        "{}",
        all.stdout
    );
    let one = mailgate(
        &["test", "--case", "parts of the reply", path],
        &shared_plugin_cache(),
    );
    assert_eq!(one.code, Some(0), "{}{}", one.stdout, one.stderr);
    assert!(
        one.stdout.ends_with("1 passed, 0 failed\n"),
        "{}",
        one.stdout
    );
    let none = mailgate(
        &["test", "--case", "no such case", path],
        &shared_plugin_cache(),
    );
    assert_eq!(none.code, Some(2), "{}", none.stderr);
    assert!(
        none.stderr.contains("no case named like \"no such case\""),
        "{}",
        none.stderr
    );

    // The same chain, for `mailgate check`.
    let checked = mailgate(
        &[
            "check",
            "--cases",
            path,
            "--rcpt",
            "b@else.test",
            "samples/welcome.eml",
        ],
        dir.path(),
    );
    assert_eq!(
        checked.code,
        Some(1),
        "{}{}",
        checked.stdout,
        checked.stderr
    );
    assert!(
        checked.stdout.contains("recipient-policy"),
        "{}",
        checked.stdout
    );
    assert!(
        checked.stdout.contains("<b@else.test> 550"),
        "{}",
        checked.stdout
    );
}

#[test]
fn plugin_settings_are_checked_against_what_the_plugin_declares() {
    // spam-score declares threshold (float), keywords (table) and header (string).
    let plugin = plugin_dir().join("spam-score.wasm");
    let entry = |settings: &str| {
        format!(
            "[[plugin]]\npath = \"{}\"\nmemory-mb = 128\n[plugin.config]\n{settings}",
            plugin.display()
        )
    };
    let typo = check_with_config(&entry("threshold = 5\ntreshold = 4\n"), &[]);
    assert_eq!(typo.code, Some(2), "{}", typo.stderr);
    assert!(
        typo.stderr.contains("gateway.toml: line 6"),
        "{}",
        typo.stderr
    );
    assert!(
        typo.stderr
            .contains("config key `treshold` is not one the plugin declares"),
        "{}",
        typo.stderr
    );
    let wrong_type = check_with_config(&entry("header = 5\n"), &[]);
    assert_eq!(wrong_type.code, Some(2), "{}", wrong_type.stderr);
    assert!(
        wrong_type
            .stderr
            .contains("line 5: config key `header` must be of type string, not integer"),
        "{}",
        wrong_type.stderr
    );
    let too_big = check_with_config(
        &format!(
            "[[plugin]]\npath = \"{}\"\nmemory-mb = 512\n",
            plugin.display()
        ),
        &[],
    );
    assert_eq!(too_big.code, Some(2), "{}", too_big.stderr);
    assert!(
        too_big.stderr.contains("line 1: plugin")
            && too_big
                .stderr
                .contains("memory-mb = 512 is outside 1..=256"),
        "{}",
        too_big.stderr
    );

    let dir = cache();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, entry("threshold = 7\n")).expect("write");
    let explained = mailgate(
        &[
            "plugins",
            "--config",
            config.to_str().expect("utf-8"),
            "--explain",
            "spam-score",
        ],
        dir.path(),
    );
    assert_eq!(explained.code, Some(0), "{}", explained.stderr);
    for line in [
        "contract:     mailgate:plugin@0.2.1",
        "stages:       data",
        "threshold (float) = 5: reject at or above this score",
        "keywords (table): keyword = weight",
    ] {
        assert!(
            explained.stdout.contains(line),
            "{line}:\n{}",
            explained.stdout
        );
    }
}

/// Plugins built against contract 0.1.0 (Rust and C prebuilt, Python and JavaScript built
/// against wit/v0.1 by `cargo xtask plugins`) pass the cases they had then, on this gateway.
#[test]
fn contract_0_1_plugins_in_every_language_pass_their_old_cases() {
    let run = mailgate(
        &["test", "tests/fixtures/contract-0.1/cases"],
        &shared_plugin_cache(),
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    for file in [
        "recipient-policy",
        "spam-score",
        "greylist",
        "attachment-limit",
    ] {
        assert!(
            run.stdout
                .contains(&format!("contract-0.1/cases/{file}.toml ::")),
            "{file} cases missing:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.ends_with("23 passed, 0 failed\n"),
        "{}",
        run.stdout
    );
}

/// Plugins built against contract 0.2.0 (Rust and C, prebuilt before 0.2.1 added `auth`) link
/// to this 0.2.1 gateway unchanged, pass their cases, and are reported as 0.2.0.
#[test]
fn contract_0_2_0_plugins_pass_their_cases_on_the_0_2_1_gateway() {
    let run = mailgate(
        &["test", "tests/fixtures/contract-0.2.0/cases"],
        &shared_plugin_cache(),
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.ends_with("15 passed, 0 failed\n"),
        "{}",
        run.stdout
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[[plugin]]\npath = \"{}\"\n[plugin.config]\ndomains = [\"example.org\"]\n",
            root()
                .join("tests/fixtures/contract-0.2.0/recipient-policy-0.2.0.wasm")
                .display()
        ),
    )
    .expect("config");
    let explained = mailgate(
        &[
            "plugins",
            "--config",
            config.to_str().expect("utf-8"),
            "--explain",
            "recipient-policy",
        ],
        &shared_plugin_cache(),
    );
    assert_eq!(explained.code, Some(0), "{}", explained.stderr);
    assert!(
        explained
            .stdout
            .contains("contract:     mailgate:plugin@0.2.0"),
        "{}",
        explained.stdout
    );
}

/// A case whose plugin fails shows the plugin's own words: a Python traceback, a JavaScript
/// exception and its stack, a JavaScript handler that returned no verdict named as such, a Rust
/// panic message; the gateway log (stderr) has them too.
#[test]
fn failing_plugins_show_their_own_error_text_in_test_output_and_log() {
    let dir = cache();
    let plugins = root().join("target/test-plugins");
    let case = |file: &str, plugin: &str, config: &str| {
        let text = format!(
            "[[plugin]]\npath = \"{}\"\nmemory-mb = 128\n[plugin.config]\n{config}\n\n\
             [[case]]\nname = \"{file} faults\"\nenvelope = {{ from = \"a@x.test\", to = [\"b@example.org\"] }}\n\
             [case.expect]\ndisposition = \"accept\"\n",
            plugins.join(plugin).display()
        );
        std::fs::write(dir.path().join(format!("{file}.toml")), text).expect("write case");
    };
    case("python", "py-misbehave.wasm", "action = \"raise\"");
    case("javascript", "js-misbehave.wasm", "action = \"throw\"");
    case(
        "javascript-nothing",
        "js-misbehave.wasm",
        "action = \"nothing\"",
    );
    case(
        "rust",
        "probe-plugin.wasm",
        "name = \"probe\"\nstages = [\"data\"]\naction = { data = \"trap\" }",
    );
    // No fault here: the case fails on its expectation (the probe does not reject), and what
    // the plugin printed is shown under it.
    case(
        "printing",
        "probe-plugin.wasm",
        "name = \"talker\"\nstages = [\"data\"]\naction = { data = \"print\" }",
    );
    let printing = dir.path().join("printing.toml");
    let text = std::fs::read_to_string(&printing).expect("read");
    std::fs::write(&printing, text.replace("\"accept\"", "\"reject\"")).expect("write");
    let run = mailgate(
        &["test", dir.path().to_str().expect("utf-8")],
        &shared_plugin_cache(),
    );
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.ends_with("0 passed, 5 failed\n"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stderr.contains('\x1b') && !run.stdout.contains('\x1b'),
        "no colour codes when the output is not a terminal"
    );
    assert!(
        run.stdout
            .contains("plugin talker stdout at data: probe says hello on stdout"),
        "{}",
        run.stdout
    );
    for (words, what) in [
        (
            "AttributeError: 'Session' object has no attribute 'missing_attribute'",
            "Python exception",
        ),
        ("in lookup_setting", "Python traceback"),
        ("settings.missing is undefined", "JavaScript exception"),
        ("lookupSetting@", "JavaScript stack"),
        (
            "data handler returned undefined (is there a way through it without `return`?); \
             expected a verdict like {tag: \"accept\"}",
            "JavaScript handler without a verdict",
        ),
        ("probe asked to trap", "Rust panic message"),
    ] {
        assert!(
            run.stdout.contains(words),
            "{what} missing from the results:\n{}",
            run.stdout
        );
        assert!(
            run.stderr.contains(words),
            "{what} missing from the log:\n{}",
            run.stderr
        );
    }
}

#[test]
fn config_check_prints_what_a_config_runs_and_refuses_broken_ones() {
    let dir = cache();
    let good = mailgate(&["config", "check"], &shared_plugin_cache());
    assert_eq!(good.code, Some(0), "{}{}", good.stdout, good.stderr);
    for line in [
        "config the embedded defaults: ok",
        "  inbound      smtp 127.0.0.1:2525 (starttls)",
        "  submission   smtp 127.0.0.1:2587 (starttls, auth required)",
        "  localhost -> local",
        "  rcpt-to    recipient-policy",
        "  data       mime-guard -> header-rewrite",
        "  deliver    (none)",
    ] {
        assert!(
            good.stdout.contains(line),
            "{line:?} missing:\n{}",
            good.stdout
        );
    }

    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write config");
        path.to_str().expect("utf-8").to_string()
    };
    let missing = write("missing.toml", "[[plugin]]\npath = \"absent.wasm\"\n");
    let run = mailgate(
        &["config", "check", "--config", &missing],
        &shared_plugin_cache(),
    );
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("missing.toml: refused"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("absent.wasm: cannot read"),
        "{}",
        run.stdout
    );

    let typo = write("typo.toml", "[server]\nhostnme = \"mx.example.org\"\n");
    let run = mailgate(
        &["config", "check", "--config", &typo],
        &shared_plugin_cache(),
    );
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("line 2") && run.stdout.contains("unknown field `hostnme`"),
        "{}",
        run.stdout
    );

    let relay = write(
        "relay.toml",
        "[[route]]\ndomains = [\"*\"]\ntype = \"relay\"\nhost = \"smarthost.example:587\"\n",
    );
    let run = mailgate(
        &["config", "check", "--config", &relay],
        &shared_plugin_cache(),
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("  * -> relay smarthost.example:587"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("no route for other domains"),
        "{}",
        run.stdout
    );

    let absent = dir.path().join("no-such.toml");
    let run = mailgate(
        &["config", "check", "--config", &absent.to_string_lossy()],
        dir.path(),
    );
    assert_eq!(run.code, Some(2), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("no-such.toml: not checked"),
        "{}",
        run.stdout
    );
}

/// The `--explain` hint a refused plugin setting prints is a command that works as printed,
/// from the config that was refused.
#[test]
fn the_explain_hint_of_a_refused_setting_works_from_that_config() {
    let dir = cache();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[[plugin]]\npath = \"{}\"\n[plugin.config]\nmax-attachmnets = 3\n",
            root()
                .join("target/plugins/attachment-limit.wasm")
                .display()
        ),
    )
    .expect("config");
    let checked = mailgate(
        &[
            "config",
            "check",
            "--config",
            config.to_str().expect("utf-8"),
        ],
        dir.path(),
    );
    let said = format!("{}{}", checked.stdout, checked.stderr);
    assert_ne!(checked.code, Some(0), "{said}");
    let hint = said
        .split('`')
        .find(|part| part.starts_with("mailgate plugins"))
        .unwrap_or_else(|| panic!("no explain hint: {said}"));
    assert!(hint.contains("--config"), "{hint}");
    let args: Vec<&str> = hint.split_whitespace().skip(1).collect();
    let explained = mailgate(&args, &shared_plugin_cache());
    assert_eq!(explained.code, Some(0), "{hint}: {}", explained.stderr);
    assert!(
        explained.stdout.contains("max-attachments"),
        "the declared keys are shown: {}",
        explained.stdout
    );
}
