//! What a plugin's host calls may not do: block on a file that never ends (a FIFO, a device),
//! or wait past the stage's deadline on something that never answers. And what
//! `mailgate config check` finds in the files and plugin settings a config names.

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailgate_e2e::{binary, plugin_dir, root, shared_plugin_cache, Gateway, RawSmtp, Run};

/// `mailgate ARGS`, killed if it has not ended within `limit`; its run and how long it took.
fn mailgate_within(args: &[&str], cache: &Path, limit: Duration) -> (Run, Duration) {
    let started = Instant::now();
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(root())
        .env("MAILGATE_PLUGIN_DIR", plugin_dir())
        .env("MAILGATE_CACHE_DIR", cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailgate");
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "mailgate {args:?} still running after {limit:?}:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    let output = child.wait_with_output().expect("output");
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    (run, elapsed)
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// The probe fixture as a `[[plugin]]` entry: acting at `stage`, with these entry keys
/// (grants, timeout...) and `[plugin.config]` lines.
fn probe(entry: &str, stage: &str, settings: &str) -> String {
    format!(
        "[[plugin]]\nname = \"probe\"\npath = \"{}\"\n{entry}\n[plugin.config]\nname = \"probe\"\n\
         stages = [\"{stage}\"]\n{settings}\n",
        root()
            .join("target/test-plugins/probe-plugin.wasm")
            .display()
    )
}

/// One SMTP transaction up to the reply to DATA's content; that reply and how long it took
/// from the end of the message.
fn send_timed(gw: &Gateway, subject: &str) -> (String, Duration) {
    let (mut smtp, greeting) = RawSmtp::connect(gw.inbound);
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(smtp.cmd("EHLO client.test").starts_with("250"));
    assert!(smtp.cmd("MAIL FROM:<a@remote.test>").starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(format!("Subject: {subject}\r\n\r\nhello\r\n").as_bytes());
    let started = Instant::now();
    let reply = smtp.cmd(".");
    (reply, started.elapsed())
}

/// A FIFO in the granted directory (the plugin's `file-read` used to open it and wait for a
/// writer forever, holding the SMTP client), and a link to one: refused at once with an
/// error the plugin sees, while regular files beside them are still read; the gateway goes on
/// serving.
#[test]
fn a_fifo_in_the_granted_directory_is_refused_at_once() {
    let granted = tempfile::tempdir().expect("tempdir");
    mkfifo(&granted.path().join("list.txt"));
    std::os::unix::fs::symlink("list.txt", granted.path().join("link.txt")).expect("symlink");
    std::fs::write(granted.path().join("ok.txt"), "allowed\n").expect("write");
    let entry = format!(
        "grant = [\"files\"]\nfiles = \"{}\"\ntimeout-ms = 3000\non-failure = \"tempfail\"",
        granted.path().display()
    );
    let gw = Gateway::start(&format!(
        "{}{}{}",
        probe(
            &entry,
            "data",
            "capabilities = [\"files\"]\naction.data = \"file\"\nfile = \"list.txt\""
        ),
        probe(
            &entry,
            "data",
            "capabilities = [\"files\"]\naction.data = \"file\"\nfile = \"link.txt\""
        )
        .replace("name = \"probe\"", "name = \"probe-link\""),
        probe(
            &entry,
            "data",
            "capabilities = [\"files\"]\naction.data = \"file\"\nfile = \"ok.txt\""
        )
        .replace("name = \"probe\"", "name = \"probe-ok\""),
    ));
    for round in 0..2 {
        let (reply, elapsed) = send_timed(&gw, &format!("fifo {round}"));
        assert!(reply.starts_with("250"), "{reply}");
        // Well inside the plugins' 3 s deadline: nothing waited on the FIFO.
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    }
    let delivered = gw.wait_mailbox("alice@example.test", 2);
    for message in &delivered {
        let fields: Vec<&str> = message
            .lines()
            .filter(|l| l.starts_with("X-Probe-File:"))
            .collect();
        assert_eq!(fields.len(), 3, "{message}");
        // The FIFO and the link to it: the plugin got an error naming what the file is.
        assert!(
            fields[0].contains("not a regular file (a FIFO)"),
            "{message}"
        );
        assert!(
            fields[1].contains("not a regular file (a FIFO)"),
            "{message}"
        );
        assert_eq!(fields[2], "X-Probe-File: allowed", "{message}");
    }
}

/// A host call whose answer never comes (a name server that never replies, the resolver
/// told to wait 20 s) ends at the stage's `timeout-ms`: the plugin's fault gets its failure
/// policy, the client its reply within the deadline, and the gateway serves the next client.
#[test]
fn a_host_call_that_never_answers_ends_at_the_stage_deadline() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let port = silent.local_addr().expect("addr").port();
    let gw = Gateway::start(&format!(
        "[dns]\nservers = [\"127.0.0.1:{port}\"]\ntimeout-ms = 20000\n\n{}",
        probe(
            "grant = [\"dns\"]\ntimeout-ms = 300\non-failure = \"tempfail\"",
            "data",
            "capabilities = [\"dns\"]\naction.data = \"dns-mx\"\ndns-domain = \"slow.test\""
        )
    ));
    for round in 0..2 {
        let (reply, elapsed) = send_timed(&gw, &format!("dns {round}"));
        assert!(reply.starts_with("451 4.3.0"), "{reply}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    }
    let log = gw.log();
    assert!(
        log.contains("deadline of 300 ms exceeded (waiting in dns-lookup)"),
        "{log}"
    );
    drop(silent);
}

/// A plugin that sleeps (WASI's clock: a wait in the host that epoch interruption does not
/// stop) is cut off at its deadline too.
#[test]
fn a_plugin_sleeping_in_the_wasi_clock_is_cut_off_at_its_deadline() {
    let gw = Gateway::start(&probe(
        "timeout-ms = 300\non-failure = \"reject\"",
        "data",
        "action.data = \"sleep\"\nsleep-ms = 30000",
    ));
    let (reply, elapsed) = send_timed(&gw, "sleepy");
    assert!(reply.starts_with("550 5.7.0"), "{reply}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(
        gw.log().contains("deadline of 300 ms exceeded"),
        "{}",
        gw.log()
    );
    let (mut smtp, greeting) = RawSmtp::connect(gw.inbound);
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(smtp.cmd("NOOP").starts_with("250"));
}

/// `mailgate test` runs the same chain offline: a case whose plugin reads the FIFO ends, and
/// passes, instead of hanging.
#[test]
fn mailgate_test_with_a_fifo_in_the_granted_directory_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let granted = dir.path().join("granted");
    std::fs::create_dir(&granted).expect("mkdir");
    mkfifo(&granted.join("list.txt"));
    let case = dir.path().join("fifo.toml");
    let text = format!(
        "{}\n[[case]]\nname = \"a FIFO is refused\"\nenvelope = {{ from = \"a@example.net\", to = [\"b@example.org\"] }}\n\
         message = {{ text = \"Subject: x\\n\\nhello\\n\" }}\n[case.expect]\ndisposition = \"accept\"\n\
         headers-present = [\"X-Probe-File\"]\n",
        probe(
            "grant = [\"files\"]\nfiles = \"granted\"\ntimeout-ms = 3000",
            "data",
            "capabilities = [\"files\"]\naction.data = \"file\"\nfile = \"list.txt\""
        )
    );
    std::fs::write(&case, text).expect("case");
    let (run, elapsed) = mailgate_within(
        &["test", &case.to_string_lossy()],
        &shared_plugin_cache(),
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("a FIFO is refused"), "{}", run.stdout);
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
}

/// Key files that are not regular files: `config check` answers at once with an error naming
/// each (it used to wait forever on a FIFO given as the DKIM key).
#[test]
fn config_check_refuses_fifos_devices_and_huge_files_as_keys_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("dkim.fifo");
    mkfifo(&fifo);
    mkfifo(&dir.path().join("tls-key.fifo"));
    std::os::unix::fs::symlink("dkim.fifo", dir.path().join("seal-link.pem")).expect("symlink");
    let config = dir.path().join("gw.toml");
    let check = |text: &str| {
        std::fs::write(&config, text).expect("config");
        let (run, elapsed) = mailgate_within(
            &["config", "check", "--config", &config.to_string_lossy()],
            &shared_plugin_cache(),
            Duration::from_secs(30),
        );
        assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
        run.stdout
    };
    let out = check(
        "[server]\ntls-cert = \"/dev/zero\"\ntls-key = \"tls-key.fifo\"\n\n\
         [auth]\nverify = [\"dkim\"]\n\n\
         [arc-seal]\ndomain = \"seal.test\"\nselector = \"s\"\nkey = \"seal-link.pem\"\n\n\
         [[dkim]]\ndomain = \"example.test\"\nselector = \"s\"\nkey = \"dkim.fifo\"\n",
    );
    let dkim = format!(
        "dkim key {} (example.test): not a regular file (a FIFO)",
        fifo.display()
    );
    assert!(out.contains(&dkim), "{out}");
    // Behind a link, the FIFO is still found: the check is made on what was opened.
    assert!(
        out.contains("arc-seal key")
            && out.contains("seal-link.pem (seal.test): not a regular file (a FIFO)"),
        "{out}"
    );
    // A device as the certificate.
    assert!(
        out.contains("/dev/zero: not a regular file (a character device)"),
        "{out}"
    );

    // A regular certificate file with a FIFO as its key; a DKIM key far larger than any key.
    std::fs::write(dir.path().join("cert.pem"), "never parsed\n").expect("cert");
    std::fs::write(dir.path().join("huge.pem"), vec![b'A'; 5 << 20]).expect("huge");
    let out = check(
        "[server]\ntls-cert = \"cert.pem\"\ntls-key = \"tls-key.fifo\"\n\n\
         [[dkim]]\ndomain = \"big.test\"\nselector = \"s\"\nkey = \"huge.pem\"\n",
    );
    assert!(
        out.contains("tls-key.fifo: not a regular file (a FIFO)"),
        "{out}"
    );
    assert!(
        out.contains("huge.pem (big.test): 5242880 bytes, more than"),
        "{out}"
    );
}

/// A misspelt key of each bundled plugin (Rust, Python, JavaScript, C) is an error naming the
/// file, the line and the key, with the key meant; a value of the wrong type too; the keys of
/// a plugin that declares none get a warning.
#[test]
fn config_check_names_a_misspelt_key_of_every_bundled_plugin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = plugin_dir();
    // (plugin, misspelt key = value, the key meant)
    let typos = [
        ("mime-guard", "extension = [\"exe\"]", "extensions"),
        ("recipient-policy", "domain = [\"example.org\"]", "domains"),
        ("header-rewrite", "remve = [\"X-Secret\"]", "remove"),
        (
            "dmarc-policy",
            "exempt-domain = [\"partner.test\"]",
            "exempt-domains",
        ),
        ("attachment-limit", "max-attachment = 3", "max-attachments"),
        ("spam-score", "treshold = 4", "threshold"),
        ("greylist", "delay-second = 60", "delay-seconds"),
    ];
    let mut text = String::new();
    let mut lines = Vec::new();
    for (plugin, setting, _) in &typos {
        text.push_str(&format!(
            "[[plugin]]\npath = \"{}\"\nmemory-mb = 128\n[plugin.config]\n",
            plugins.join(format!("{plugin}.wasm")).display()
        ));
        lines.push(text.lines().count() + 1);
        text.push_str(&format!("{setting}\n\n"));
    }
    text.push_str(&format!(
        "[[plugin]]\nname = \"second-guard\"\npath = \"{}\"\n[plugin.config]\n",
        plugins.join("mime-guard.wasm").display()
    ));
    let wrong_type = text.lines().count() + 1;
    text.push_str("action = 5\n\n");
    text.push_str(&probe("", "data", ""));
    let config = dir.path().join("typos.toml");
    std::fs::write(&config, &text).expect("config");
    // Compiled components come from the tests' shared cache (a Python or JavaScript plugin
    // takes a minute to compile on a busy machine); the cache is keyed by content and engine.
    let (run, _) = mailgate_within(
        &["config", "check", "--config", &config.to_string_lossy()],
        &shared_plugin_cache(),
        Duration::from_secs(600),
    );
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    let file = config.display();
    for ((plugin, setting, meant), line) in typos.iter().zip(&lines) {
        let key = setting.split(" = ").next().unwrap_or_default();
        let error = format!(
            "{file}: line {line}: config key `{key}` is not one the plugin declares; did you mean `{meant}`?"
        );
        assert!(out.contains(&error), "{plugin}: {error:?} missing:\n{out}");
    }
    let typed = format!(
        "{file}: line {wrong_type}: config key `action` must be of type string, not integer"
    );
    assert!(out.contains(&typed), "{out}");
    // The probe declares nothing: its keys cannot be checked, and the operator is told.
    let probe_line = text
        .lines()
        .position(|l| l.starts_with("stages = "))
        .unwrap_or(0)
        + 1;
    let warning = format!(
        "warning: {file}: line {probe_line}: config key `stages` of plugin probe is not checked"
    );
    assert!(out.contains(&warning), "{out}");
}

/// A plugin that waits in the host while it describes itself (a WASI clock sleep) does not
/// hold `config check`: its description is cut off at the deadline and the plugin refused.
#[test]
fn config_check_cuts_off_a_plugin_sleeping_in_describe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gw.toml");
    std::fs::write(&config, probe("", "data", "describe = \"sleep\"")).expect("config");
    let (run, elapsed) = mailgate_within(
        &["config", "check", "--config", &config.to_string_lossy()],
        &shared_plugin_cache(),
        Duration::from_secs(50),
    );
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("describe failed: deadline of 1000 ms exceeded"),
        "{}",
        run.stdout
    );
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
}
