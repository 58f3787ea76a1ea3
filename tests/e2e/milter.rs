//! Milters as members of the chain: a scripted milter for the protocol's corners and its
//! faults, rspamd and OpenDKIM (Debian's, started here on loopback) as the filters operators
//! actually run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mailgate_e2e::peers::{ClamAv, OpenDkim, PostfixDownstream, Rspamd, ScriptedMilter};
use mailgate_e2e::{dkimpy_verify, plugin_dir, python_filter, wait_until, Gateway, RawSmtp};

fn milter_member(name: &str, port: u16, policy: &str, timeout_ms: u32) -> String {
    format!(
        "[[plugin]]\nname = \"{name}\"\nmilter = \"inet:127.0.0.1:{port}\"\n\
         on-failure = \"{policy}\"\ntimeout-ms = {timeout_ms}\n"
    )
}

fn message(from: &str, subject: &str, body: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <alice@example.test>\r\nSubject: {subject}\r\n\
         Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{}@sender.test>\r\n\r\n{body}",
        subject.replace(' ', ".")
    )
}

/// One transaction on an open session: the replies to MAIL, each RCPT, and DATA's end (or
/// the first refusal).
fn transaction(c: &mut RawSmtp, sender: &str, rcpts: &[&str], data: &str) -> Vec<String> {
    let mut replies = vec![c.cmd(&format!("MAIL FROM:<{sender}>"))];
    if !replies[0].starts_with("250") {
        return replies;
    }
    let mut accepted = 0;
    for rcpt in rcpts {
        let reply = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        accepted += usize::from(reply.starts_with("250"));
        replies.push(reply);
    }
    if accepted == 0 {
        c.cmd("RSET");
        return replies;
    }
    let reply = c.cmd("DATA");
    if !reply.starts_with("354") {
        replies.push(reply);
        return replies;
    }
    c.send(data.as_bytes());
    c.send(b".\r\n");
    replies.push(c.reply());
    replies
}

fn session(gw: &Gateway) -> RawSmtp {
    let (mut c, greeting) = RawSmtp::connect(gw.inbound);
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    c
}

fn metrics(gw: &Gateway) -> String {
    let out = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{}/metrics", gw.metrics)])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_milter_sees_the_session_and_its_modifications_become_edits() {
    let milter = ScriptedMilter::start("edits");
    let gw = Gateway::start(&milter_member("scripted", milter.port, "tempfail", 5000));
    let mut c = session(&gw);
    let first = message("sender@remote.test", "hello", "Original body.\r\n");
    let replies = transaction(
        &mut c,
        "sender@remote.test",
        &["alice@example.test", "bob@example.test"],
        &first,
    );
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");
    // A second message on the same session goes over the same milter connection.
    let second = message("sender@remote.test", "again", "Second body.\r\n");
    let replies = transaction(
        &mut c,
        "sender@remote.test",
        &["alice@example.test"],
        &second,
    );
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");
    c.cmd("QUIT");

    let delivered = gw.wait_mailbox_matching("alice@example.test", "Subject: [milter] hello");
    assert!(
        delivered.contains("\r\nX-Milter: seen by the scripted milter\r\n"),
        "{delivered}"
    );
    assert!(
        delivered.starts_with(
            "Return-Path: <bounces@example.test>\r\nX-Milter-Top: inserted at the top\r\nReceived: from"
        ),
        "{delivered}"
    );
    assert!(
        delivered.ends_with("\r\n\r\nBody replaced by the milter.\r\n"),
        "{delivered}"
    );
    assert!(!delivered.contains("Original body"), "{delivered}");
    assert_eq!(delivered.matches("Subject:").count(), 1, "{delivered}");
    // The recipient the milter added got it; the one it deleted did not.
    let carol = gw.wait_mailbox_matching("carol@example.test", "Subject: [milter] hello");
    assert!(carol.contains("Body replaced by the milter."));
    gw.wait_mailbox_matching("alice@example.test", "Subject: [milter] again");
    assert!(
        gw.settled_mailbox("bob@example.test").is_empty(),
        "bob was deleted by the milter"
    );

    let (commands, _) = milter.conversation("client.test");
    let expected_first = [
        "O",
        "C 127.0.0.1",
        "H client.test",
        "M <sender@remote.test>",
        "R <alice@example.test>",
        "R <bob@example.test>",
        "T",
    ];
    assert_eq!(
        &commands[..expected_first.len()],
        expected_first,
        "{commands:?}"
    );
    // Our Received field comes first, its folding as LF (Sendmail's convention).
    let fields: Vec<&String> = commands.iter().filter(|c| c.starts_with("L ")).collect();
    assert!(fields[0].starts_with("L Received: from"), "{fields:?}");
    assert!(fields[0].contains("\\n\tby mx.example.test"), "{fields:?}");
    assert_eq!(
        fields[1..4],
        [
            "L From: <sender@remote.test>",
            "L To: <alice@example.test>",
            "L Subject: hello"
        ],
        "{fields:?}"
    );
    let abort = commands
        .iter()
        .position(|c| c == "A")
        .expect("abort between messages");
    assert_eq!(
        commands[abort + 1],
        "M <sender@remote.test>",
        "{commands:?}"
    );
    assert_eq!(
        commands.iter().filter(|c| *c == "O").count(),
        1,
        "one connection: {commands:?}"
    );
    assert_eq!(
        commands.iter().filter(|c| *c == "E").count(),
        2,
        "{commands:?}"
    );
    assert!(commands.contains(&"N".to_string()) && commands.contains(&"B 16".to_string()));
    assert!(wait_until(10, || milter
        .conversation("client.test")
        .0
        .last()
        .is_some_and(|c| c == "Q")));

    let text = metrics(&gw);
    assert!(
        text.contains(r#"mailgate_plugin_call_seconds_count{plugin="scripted",stage="data"} 2"#),
        "{text}"
    );
    // The harness runs it like any member.
    let sample = mailgate_e2e::root().join("samples/welcome.eml");
    let sample = sample.to_str().expect("utf-8");
    let run = gw.cli(&["check", "--rcpt", "alice@example.test", sample]);
    assert!(run.stdout.contains("[data]\n  scripted "), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("edit: add-header X-Milter: seen by the scripted milter"),
        "{}",
        run.stdout
    );
    let check = gw.cli(&["config", "check"]);
    assert!(
        check
            .stdout
            .contains(&format!("scripted: milter inet:127.0.0.1:{}", milter.port)),
        "{}",
        check.stdout
    );
}

#[test]
fn milter_replies_become_verdicts() {
    let milter = ScriptedMilter::start("reply");
    let gw = Gateway::start(&milter_member("scripted", milter.port, "tempfail", 5000));
    let mut c = session(&gw);
    let replies = transaction(
        &mut c,
        "sender@remote.test",
        &["carol@example.test", "alice@example.test"],
        &message("sender@remote.test", "plain", "Hi.\r\n"),
    );
    assert!(
        replies[1].starts_with("550 5.7.1 No such user here"),
        "{replies:?}"
    );
    assert!(
        replies[2].starts_with("250") && replies[3].starts_with("250"),
        "{replies:?}"
    );
    let later = transaction(
        &mut c,
        "sender@remote.test",
        &["alice@example.test"],
        &message("sender@remote.test", "later please", "Hi.\r\n"),
    );
    assert!(later[2].starts_with("451 4.7.1"), "{later:?}");
    let held = transaction(
        &mut c,
        "sender@remote.test",
        &["alice@example.test"],
        &message("sender@remote.test", "quarantine me", "Hi.\r\n"),
    );
    assert!(held[2].starts_with("250"), "{held:?}");
    let dropped = transaction(
        &mut c,
        "sender@remote.test",
        &["alice@example.test"],
        &message("sender@remote.test", "discard me", "Hi.\r\n"),
    );
    assert!(dropped[2].starts_with("250"), "{dropped:?}");
    c.cmd("QUIT");

    gw.wait_mailbox_matching("alice@example.test", "Subject: plain");
    let quarantine = gw.data().join("quarantine");
    let held = || -> Vec<String> {
        let files = std::fs::read_dir(&quarantine)
            .into_iter()
            .flatten()
            .flatten();
        // The messages (`.eml`), not the envelopes kept beside them.
        files
            .filter(|f| f.path().extension().is_some_and(|e| e == "eml"))
            .filter_map(|f| std::fs::read_to_string(f.path()).ok())
            .collect()
    };
    assert!(wait_until(10, || !held().is_empty()));
    let kept = held();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        kept[0].starts_with("X-Mailgate-Quarantine: held by the scripted milter\r\n"),
        "{kept:?}"
    );
    assert!(kept[0].contains("Subject: quarantine me"), "{kept:?}");
    let mailbox = gw.settled_mailbox("alice@example.test");
    assert_eq!(mailbox.len(), 1, "only the plain message: {mailbox:?}");
}

/// A gateway with one failing milter: what a client sees for one message, how long it took,
/// and whether the gateway still greets the next client.
fn against_failing_milter(mode: &str, policy: &str) -> (Vec<String>, Duration, Gateway) {
    let milter = ScriptedMilter::start(mode);
    let gw = Gateway::start(&milter_member("flaky", milter.port, policy, 700));
    let started = Instant::now();
    let (mut c, greeting) = RawSmtp::connect(gw.inbound);
    let mut replies = vec![greeting.clone()];
    if greeting.starts_with("220") {
        c.cmd("EHLO client.test");
        replies.extend(transaction(
            &mut c,
            "sender@remote.test",
            &["alice@example.test"],
            &message("sender@remote.test", mode, "Hi.\r\n"),
        ));
        c.cmd("QUIT");
    }
    let took = started.elapsed();
    let (_c, greeting) = RawSmtp::connect(gw.inbound);
    assert!(
        greeting.starts_with("220") || greeting.starts_with('4'),
        "{greeting}"
    );
    drop(milter);
    (replies, took, gw)
}

/// The value of the series `series` (name and labels, as printed) in `/metrics`.
fn metric(gw: &Gateway, series: &str) -> Option<String> {
    let prefix = format!("{series} ");
    metrics(gw)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
}

#[test]
fn a_milter_that_is_down_is_skipped_behind_its_breaker_and_used_again_once_back() {
    let port = mailgate_e2e::free_port();
    let gw = Gateway::start(&milter_member("flaky", port, "continue", 700));
    let state = r#"mailgate_milter_member_state{member="flaky"}"#;
    assert_eq!(metric(&gw, state).as_deref(), Some("0"), "closed at start");
    let started = Instant::now();
    for i in 0..20 {
        let mut c = session(&gw);
        let subject = format!("while down {i}");
        let replies = transaction(
            &mut c,
            "sender@remote.test",
            &["alice@example.test"],
            &message("sender@remote.test", &subject, "Hi.\r\n"),
        );
        assert!(replies.iter().all(|r| r.starts_with('2')), "{replies:?}");
        c.cmd("QUIT");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    gw.wait_mailbox("alice@example.test", 20);
    // One warning for the whole outage, when the breaker opened; none per session or stage.
    let log = gw.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("flaky"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("milter flaky: down, circuit open (cannot connect"),
        "{log}"
    );
    assert_eq!(metric(&gw, state).as_deref(), Some("1"), "open while down");
    let skipped = metric(
        &gw,
        r#"mailgate_milter_skipped_calls_total{member="flaky"}"#,
    );
    assert!(
        skipped.as_deref().and_then(|v| v.parse::<u64>().ok()) > Some(20),
        "{skipped:?}"
    );
    assert!(
        !metrics(&gw).contains(r#"mailgate_plugin_faults_total{plugin="flaky",kind="peer"} 1"#),
        "a known outage is not a fault per call"
    );

    // Back on its port: after the backoff, one session tries it, and every session uses it.
    let milter = ScriptedMilter::start_on(port, "edits");
    let back = wait_until(30, || {
        let mut c = session(&gw);
        let replies = transaction(
            &mut c,
            "sender@remote.test",
            &["bob@example.test"],
            &message("sender@remote.test", "back", "Hi.\r\n"),
        );
        c.cmd("QUIT");
        replies.iter().all(|r| r.starts_with('2')) && milter.conversation("client.test").1 > 0
    });
    assert!(back, "the milter is used again: {}", gw.log());
    assert_eq!(metric(&gw, state).as_deref(), Some("0"), "closed once back");
    assert!(
        gw.log().contains("milter flaky: back up, circuit closed"),
        "{}",
        gw.log()
    );
    // Used by the next session too (the edits milter adds its header).
    let mut c = session(&gw);
    let replies = transaction(
        &mut c,
        "sender@remote.test",
        &["alice@example.test"],
        &message("sender@remote.test", "after", "Hi.\r\n"),
    );
    c.cmd("QUIT");
    assert!(replies.iter().all(|r| r.starts_with('2')), "{replies:?}");
    gw.wait_mailbox_matching(
        "alice@example.test",
        "X-Milter: seen by the scripted milter",
    );
}

#[test]
fn a_failing_milter_meets_its_failure_policy_and_the_gateway_goes_on() {
    // Never answers after negotiating: one deadline, then the session goes on without it.
    let (replies, took, gw) = against_failing_milter("silent", "continue");
    assert!(replies.iter().all(|r| r.starts_with("2")), "{replies:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    gw.wait_mailbox_matching("alice@example.test", "Subject: silent");
    assert!(
        gw.log().contains("no answer to connect within 700ms"),
        "{}",
        gw.log()
    );
    assert!(
        metrics(&gw).contains(r#"mailgate_plugin_faults_total{plugin="flaky",kind="deadline"}"#)
    );

    // Garbage for a negotiation: the client is told to come back later, from the greeting on.
    let (replies, _, gw) = against_failing_milter("garbage", "tempfail");
    assert!(replies[0].starts_with("451 4.3.0"), "{replies:?}");
    assert!(
        gw.log().contains("negotiating: unknown command 'X'"),
        "{}",
        gw.log()
    );

    // A 100 MB packet announced at the end of message: refused before it is read.
    let (replies, _, gw) = against_failing_milter("oversized", "reject");
    assert!(
        replies.last().is_some_and(|r| r.starts_with("550 5.7.0")),
        "{replies:?}"
    );
    assert!(gw.log().contains("over the limit"), "{}", gw.log());

    // Hangs up in the middle of the body: the message is deferred, nothing is delivered.
    let (replies, _, gw) = against_failing_milter("hangup", "tempfail");
    assert!(
        replies.last().is_some_and(|r| r.starts_with("451 4.3.0")),
        "{replies:?}"
    );
    assert!(gw.log().contains("closed by the peer"), "{}", gw.log());
    assert!(gw.settled_mailbox("alice@example.test").is_empty());
    assert!(metrics(&gw).contains(r#"mailgate_plugin_faults_total{plugin="flaky",kind="peer"}"#));
}

#[test]
fn rspamd_as_a_chain_member_rejects_gtube_and_adds_its_headers() {
    let rspamd = Rspamd::start();
    let gw = Gateway::start(&milter_member("rspamd", rspamd.port, "tempfail", 20000));
    let mut c = session(&gw);
    let gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
    let spam = message("spammer@remote.test", "gtube", &format!("{gtube}\r\n"));
    let replies = transaction(
        &mut c,
        "spammer@remote.test",
        &["alice@example.test"],
        &spam,
    );
    let last = replies.last().cloned().unwrap_or_default();
    // rspamd's own reply, passed on as it gave it.
    assert!(last.starts_with("554 5.7.1 Gtube pattern"), "{replies:?}");
    let ham = message(
        "friend@remote.test",
        "lunch",
        "Shall we meet for lunch on Friday at the usual place?\r\n",
    );
    let replies = transaction(&mut c, "friend@remote.test", &["alice@example.test"], &ham);
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");
    c.cmd("QUIT");
    let delivered = gw.wait_mailbox_matching("alice@example.test", "Subject: lunch");
    assert!(
        delivered.contains("\r\nX-Spamd-Result: default: False"),
        "{delivered}"
    );
    let mailbox = gw.settled_mailbox("alice@example.test");
    assert_eq!(mailbox.len(), 1, "GTUBE was not delivered: {mailbox:?}");
    let text = metrics(&gw);
    assert!(
        text.contains(
            r#"mailgate_messages_total{stage="data",outcome="rejected",plugin="rspamd"} 1"#
        ),
        "{text}"
    );
}

/// A key from `opendkim-genkey` and the TXT record it says to publish, as one string.
fn opendkim_genkey(dir: &Path, domain: &str, selector: &str) -> (PathBuf, String) {
    let ok = Command::new("/usr/sbin/opendkim-genkey")
        .args(["-b", "2048", "-d", domain, "-s", selector, "-D"])
        .arg(dir)
        .status()
        .expect("opendkim-genkey (Debian package opendkim-tools)")
        .success();
    assert!(ok);
    let txt = std::fs::read_to_string(dir.join(format!("{selector}.txt"))).expect("txt");
    let record: String = txt.split('"').skip(1).step_by(2).collect();
    (dir.join(format!("{selector}.private")), record)
}

#[test]
fn opendkim_signs_through_the_chain_and_dkimpy_verifies_the_delivered_message() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (key, record) = opendkim_genkey(keys.path(), "example.test", "mg");
    let opendkim = OpenDkim::start("s", "example.test", "mg", &key, "");
    let gw = Gateway::start(&milter_member("opendkim", opendkim.port, "tempfail", 5000));
    let mut c = session(&gw);
    let body = "A signed message.\r\nWith a second line.\r\n";
    let replies = transaction(
        &mut c,
        "alice@example.test",
        &["bob@example.test"],
        &message("alice@example.test", "signed", body),
    );
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");
    c.cmd("QUIT");
    let delivered = gw.wait_mailbox_matching("bob@example.test", "Subject: signed");
    assert!(delivered.contains("\r\nDKIM-Signature: "), "{delivered}");
    assert!(
        delivered.contains("d=example.test") && delivered.contains("s=mg"),
        "{delivered}"
    );
    let name = "mg._domainkey.example.test";
    let verdicts = dkimpy_verify("dkim", delivered.as_bytes(), &[(name, &record)]);
    assert_eq!(verdicts.len(), 1, "{verdicts:?}");
    assert!(
        verdicts[0].starts_with("pass d=example.test"),
        "{verdicts:?}\n{delivered}"
    );
}

#[test]
fn opendkim_verifies_through_the_chain() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (key, record) = opendkim_genkey(keys.path(), "sender.test", "s1");
    let name = "s1._domainkey.sender.test";
    let opendkim = OpenDkim::start(
        "v",
        "example.test",
        "none",
        &key,
        &format!("{name} {record}\n"),
    );
    let gw = Gateway::start(&milter_member("opendkim", opendkim.port, "tempfail", 5000));
    let key_path = key.to_str().expect("utf-8");
    let sign = |subject: &str| {
        let plain = message("news@sender.test", subject, "Signed by dkimpy.\r\n");
        let args = [key_path, "s1", "sender.test", "rsa-sha256"];
        String::from_utf8(python_filter("dkim_sign.py", &args, plain.as_bytes())).expect("utf-8")
    };
    let good = sign("intact");
    let tampered = sign("tampered").replace("Signed by dkimpy.", "Changed on the way.");
    let mut c = session(&gw);
    for data in [&good, &tampered] {
        let replies = transaction(&mut c, "news@sender.test", &["alice@example.test"], data);
        assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");
    }
    c.cmd("QUIT");
    let intact = gw.wait_mailbox_matching("alice@example.test", "Subject: intact");
    assert!(
        intact.contains("Authentication-Results: opendkim.test;") && intact.contains("dkim=pass"),
        "{intact}"
    );
    let changed = gw.wait_mailbox_matching("alice@example.test", "Subject: tampered");
    assert!(changed.contains("dkim=fail"), "{changed}");
}

/// The three bundled plugins for example.test; header-rewrite also masquerades remote.test
/// senders as example.test (a sender change at MAIL and a header change at DATA) and removes
/// `X-Internal` (a header deletion).
fn bundled_plugins() -> String {
    let dir = plugin_dir();
    format!(
        "[[plugin]]\npath = \"{0}/recipient-policy.wasm\"\n[plugin.config]\ndomains = [\"example.test\"]\n\
         [[plugin]]\npath = \"{0}/mime-guard.wasm\"\n[plugin.config]\naction = \"strip\"\nextensions = [\"exe\"]\n\
         [[plugin]]\npath = \"{0}/header-rewrite.wasm\"\n[plugin.config]\ntrace-header = \"X-Mailgate\"\n\
         masquerade-domains = [\"remote.test\"]\nmasquerade-as = \"example.test\"\n\
         remove = [\"X-Internal\"]\n",
        dir.display()
    )
}

/// A gateway serving the milter protocol on a port of its own, and a Postfix (Debian's)
/// whose `smtpd_milters` points at it, delivering example.test into a Maildir.
fn postfix_with_mailgate_milter(chain: &str) -> (Gateway, PostfixDownstream) {
    let port = mailgate_e2e::free_port();
    let listener = format!(
        "[[listener]]\nname = \"milter\"\naddress = \"127.0.0.1:{port}\"\nprotocol = \"milter\"\n\n{chain}"
    );
    let gw = Gateway::start(&listener);
    let postfix =
        PostfixDownstream::start_with_milter("example.test", &format!("inet:127.0.0.1:{port}"));
    (gw, postfix)
}

fn with_attachment(subject: &str) -> String {
    format!(
        "From: <sender@remote.test>\r\nTo: <user@example.test>\r\nSubject: {subject}\r\n\
         X-Internal: cost centre 42\r\n\
         Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@remote.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nSee the tool attached.\r\n\
         --b1\r\nContent-Type: application/octet-stream; name=\"tool.exe\"\r\n\
         Content-Disposition: attachment; filename=\"tool.exe\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAA==\r\n--b1--\r\n"
    )
}

#[test]
fn postfix_runs_the_bundled_plugins_through_mailgate_as_its_milter() {
    let (gw, postfix) = postfix_with_mailgate_milter(&bundled_plugins());
    let (mut c, greeting) = RawSmtp::connect(postfix.port);
    assert!(greeting.starts_with("220"), "{greeting}");
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<sender@remote.test>").starts_with("250"));
    // recipient-policy's verdict, in Postfix's mouth.
    let refused = c.cmd("RCPT TO:<someone@elsewhere.test>");
    assert!(
        refused.starts_with("550 5.1.1 Recipient address rejected: not a local or accepted domain"),
        "{refused}"
    );
    assert!(c.cmd("RCPT TO:<user@example.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(with_attachment("tool").as_bytes());
    c.send(b".\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250"), "{reply}");
    c.cmd("QUIT");
    assert!(
        wait_until(30, || !postfix.delivered().is_empty()),
        "{}",
        postfix.log()
    );
    let delivered = postfix.delivered().remove(0);
    assert!(delivered.contains("Subject: tool"), "{delivered}");
    // mime-guard stripped the attachment; header-rewrite added its trace field.
    assert!(
        delivered.contains("\nX-Mailgate-Stripped: tool.exe\n"),
        "{delivered}"
    );
    assert!(!delivered.contains("TVqQAAMAAAAEAAAA"), "{delivered}");
    assert!(!delivered.contains("filename=\"tool.exe\""), "{delivered}");
    assert!(delivered.contains("See the tool attached."), "{delivered}");
    assert!(delivered.contains("\nX-Mailgate: "), "{delivered}");
    assert_eq!(delivered.matches("Subject: tool").count(), 1, "{delivered}");
    // header-rewrite's masquerading: the envelope sender (changed at MAIL) and From (at DATA).
    assert!(
        delivered.starts_with("Return-Path: <sender@example.test>"),
        "{delivered}"
    );
    assert!(
        delivered.contains("\nFrom: <sender@example.test>\n"),
        "{delivered}"
    );
    assert!(
        !delivered.contains("sender@remote.test>\nTo:"),
        "{delivered}"
    );
    assert!(
        !delivered.contains("X-Internal"),
        "removed by header-rewrite: {delivered}"
    );
    // Mail posted with Postfix's sendmail(1) goes through non_smtpd_milters: the chain too.
    let mut sendmail = Command::new("/usr/sbin/sendmail")
        .arg("-C")
        .arg(postfix.dir.path().join("etc"))
        .args(["-f", "local@remote.test", "user@example.test"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sendmail");
    let posted = message("local@remote.test", "posted", "Posted locally.\r\n");
    std::io::Write::write_all(sendmail.stdin.as_mut().expect("stdin"), posted.as_bytes())
        .expect("write");
    drop(sendmail.stdin.take());
    assert!(sendmail.wait().expect("sendmail").success());
    assert!(
        wait_until(30, || postfix.delivered().len() == 2),
        "{}",
        postfix.log()
    );
    let posted = postfix
        .delivered()
        .into_iter()
        .find(|m| m.contains("Subject: posted"))
        .expect("the posted message");
    assert!(posted.contains("\nX-Mailgate: "), "{posted}");
    // Nothing was queued or delivered by mailgate itself.
    assert!(gw.settled_mailbox("user@example.test").is_empty());
    let text = metrics(&gw);
    assert!(
        text.contains(r#"mailgate_messages_total{stage="rcpt-to",outcome="rejected",plugin="recipient-policy"} 1"#),
        "{text}"
    );
}

#[test]
fn through_postfix_a_plugin_fault_follows_the_failure_policy() {
    let chain = format!(
        "{}on-failure = \"tempfail\"\n{}",
        mailgate_e2e::probe_plugin("faulty", "data", "action.data = \"trap\""),
        ""
    );
    let (_gw, postfix) = postfix_with_mailgate_milter(&chain);
    let (mut c, _) = RawSmtp::connect(postfix.port);
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<sender@remote.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<user@example.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(message("sender@remote.test", "fault", "Hi.\r\n").as_bytes());
    c.send(b".\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    c.cmd("QUIT");
    assert!(postfix.delivered().is_empty());
}

#[test]
fn a_milter_client_that_misbehaves_is_dropped_and_the_listener_goes_on() {
    use std::io::{Read, Write};
    let port = mailgate_e2e::free_port();
    let gw = Gateway::start(&format!(
        "[[listener]]\nname = \"milter\"\naddress = \"127.0.0.1:{port}\"\nprotocol = \"milter\"\n"
    ));
    let closed = |bytes: &[u8]| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        s.write_all(bytes).expect("write");
        let mut rest = Vec::new();
        // The gateway closes the connection (a read of 0), it does not wait for more.
        s.read_to_end(&mut rest).is_ok()
    };
    // An announced 100 MB packet, a packet of an unknown command, a negotiation too short.
    assert!(closed(&[0x06, 0x40, 0x00, 0x00, b'O']));
    assert!(closed(b"\x00\x00\x00\x02Zz"));
    assert!(closed(b"\x00\x00\x00\x03O\x00\x00"));
    // A well-formed negotiation still gets its answer afterwards.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut offer = vec![0, 0, 0, 13, b'O'];
    for n in [6u32, 0x1ff, 0x1fffff] {
        offer.extend_from_slice(&n.to_be_bytes());
    }
    s.write_all(&offer).expect("write");
    let mut answer = [0u8; 17];
    s.read_exact(&mut answer).expect("negotiation answer");
    assert_eq!(&answer[..5], &[0, 0, 0, 13, b'O']);
    assert_eq!(
        u32::from_be_bytes([answer[5], answer[6], answer[7], answer[8]]),
        6
    );
    let log = gw.log();
    assert!(
        log.contains("milter client: packet of 104857600 bytes is over the limit"),
        "{log}"
    );
}

#[test]
fn clamav_milter_rejects_an_attachment_matching_a_local_signature() {
    let marker = "mailgate-test-signature-7f3a";
    let hex: String = marker.bytes().map(|b| format!("{b:02x}")).collect();
    let clamav = ClamAv::start(&format!("Mailgate.Test.Signature:0:*:{hex}\n"));
    let gw = Gateway::start(&milter_member("clamav", clamav.port, "tempfail", 20000));
    let attachment = |subject: &str, content: &str| {
        format!(
            "From: <sender@remote.test>\r\nTo: <alice@example.test>\r\nSubject: {subject}\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
             --b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n\
             --b1\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\n\
             Content-Transfer-Encoding: 7bit\r\n\r\n{content}\r\n--b1--\r\n"
        )
    };
    let mut c = session(&gw);
    let infected = attachment("infected", &format!("some bytes {marker} more bytes"));
    let replies = transaction(
        &mut c,
        "sender@remote.test",
        &["alice@example.test"],
        &infected,
    );
    let last = replies.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with("550") && last.contains("Infected: Mailgate.Test.Signature"),
        "{replies:?}"
    );
    let clean = attachment("clean", "nothing to see here");
    let replies = transaction(
        &mut c,
        "sender@remote.test",
        &["alice@example.test"],
        &clean,
    );
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");
    c.cmd("QUIT");
    let delivered = gw.wait_mailbox_matching("alice@example.test", "Subject: clean");
    assert!(
        delivered.contains("\r\nX-Virus-Status: Clean\r\n"),
        "{delivered}"
    );
    assert_eq!(gw.settled_mailbox("alice@example.test").len(), 1);
}

/// The DSN-offering listener's port and a gateway whose chain is the scripted milter.
fn dsn_listener_with_milter(milter: &ScriptedMilter) -> (u16, Gateway) {
    let port = mailgate_e2e::free_port();
    let listener =
        format!("[[listener]]\nname = \"mx-dsn\"\naddress = \"127.0.0.1:{port}\"\ndsn = true\n");
    let member = milter_member("scripted", milter.port, "tempfail", 5000);
    (port, Gateway::start(&format!("{listener}\n{member}")))
}

#[test]
fn a_milter_is_shown_the_dsn_parameters_of_mail_and_rcpt() {
    let milter = ScriptedMilter::start("reply");
    let (port, gw) = dsn_listener_with_milter(&milter);
    let (mut c, _) = RawSmtp::connect(port);
    assert!(c.cmd("EHLO dsn-client.test").contains("DSN"));
    let mail = c.cmd("MAIL FROM:<sender@remote.test> RET=HDRS ENVID=env+2042");
    assert!(mail.starts_with("250"), "{mail}");
    let rcpt = c.cmd(
        "RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice+2Borig@example.test",
    );
    assert!(rcpt.starts_with("250"), "{rcpt}");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(message("sender@remote.test", "dsn", "Hi.\r\n").as_bytes());
    c.send(b".\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250"), "{reply}");
    c.cmd("QUIT");
    gw.wait_mailbox_matching("alice@example.test", "Subject: dsn");
    let (commands, _) = milter.conversation("dsn-client.test");
    for expected in [
        "M <sender@remote.test> RET=HDRS ENVID=env+2042",
        "R <alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice+2Borig@example.test",
    ] {
        assert!(
            commands.iter().any(|c| c == expected),
            "{expected} in {commands:#?}"
        );
    }
}

#[test]
fn through_postfix_the_mailgate_milter_keeps_the_dsn_parameters_and_refuses_bad_ones() {
    // header-rewrite masquerades remote.test senders: the listener changes the sender, and
    // the DSN requests the client gave Postfix must survive that.
    let port = mailgate_e2e::free_port();
    let listener = format!(
        "[[listener]]\nname = \"milter\"\naddress = \"127.0.0.1:{port}\"\nprotocol = \"milter\"\n\n{}",
        bundled_plugins()
    );
    let gw = Gateway::start(&listener);
    let postfix = PostfixDownstream::start_holding_with_milter(
        "example.test",
        &format!("inet:127.0.0.1:{port}"),
    );
    let (mut c, _) = RawSmtp::connect(postfix.port);
    assert!(c.cmd("EHLO client.test").contains("DSN"));
    let mail = c.cmd("MAIL FROM:<sender@remote.test> RET=HDRS ENVID=env+2042");
    assert!(mail.starts_with("250"), "{mail}");
    // The listener reads the parameters with the gateway's own parser: what an SMTP listener
    // of ours refuses, it refuses through Postfix too.
    let refused = c.cmd("RCPT TO:<other@example.test> ORCPT=x400;other");
    assert!(
        refused.starts_with("501 5.5.4") && refused.contains("ORCPT address type must be rfc822"),
        "{refused}\n{}",
        postfix.log()
    );
    let rcpt = c.cmd(
        "RCPT TO:<user@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;user+2Borig@example.test",
    );
    assert!(rcpt.starts_with("250"), "{rcpt}");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(message("sender@remote.test", "dsn through postfix", "Hi.\r\n").as_bytes());
    c.send(b".\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250"), "{reply}\n{}", postfix.log());
    c.cmd("QUIT");
    let kept = postfix
        .the_held_message()
        .unwrap_or_else(|| panic!("Postfix holds nothing:\n{}\n{}", gw.log(), postfix.log()));
    let kept = &kept;
    assert!(
        kept.contains("\nsender: sender@example.test\n"),
        "masqueraded: {kept}"
    );
    for record in [
        "named_attribute: envelope_id=env 42\n",
        "named_attribute: ret_flags=2\n",
        // Postfix's notify bits: NEVER 1, SUCCESS 2, FAILURE 4, DELAY 8.
        "named_attribute: notify_flags=6\n",
        "named_attribute: dsn_orig_rcpt=rfc822;user+orig@example.test\n",
        "\nrecipient: user@example.test\n",
    ] {
        assert!(kept.contains(record), "{record} in {kept}");
    }
    assert!(!kept.contains("other@example.test"), "{kept}");
    // Postfix records RET and ENVID once from the client's MAIL and once more from the
    // listener's sender change, which carried them.
    assert_eq!(kept.matches("envelope_id=env 42\n").count(), 2, "{kept}");
}
