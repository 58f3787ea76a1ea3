//! The SMTP server end to end: the real binary on loopback, driven by Python's smtplib, swaks,
//! curl and a raw client that sends exactly the bytes a test needs.

use mailgate_e2e::{plugin_dir, python, Gateway, RawSmtp};

/// The three bundled plugins, as the embedded defaults run them.
fn bundled_plugins() -> String {
    let dir = plugin_dir();
    format!(
        "[[plugin]]\npath = \"{0}/recipient-policy.wasm\"\n[plugin.config]\ndomains = [\"example.test\"]\n\
         [[plugin]]\npath = \"{0}/mime-guard.wasm\"\n[plugin.config]\naction = \"strip\"\nextensions = [\"exe\"]\n\
         [[plugin]]\npath = \"{0}/header-rewrite.wasm\"\n[plugin.config]\ntrace-header = \"X-Mailgate\"\n",
        dir.display()
    )
}

/// A message from an unauthenticated client to local users over the inbound port.
fn send_plain(port: u16, rcpts: &[&str], body: &str) -> Vec<String> {
    let (mut c, _) = RawSmtp::connect(port);
    let mut replies = vec![c.cmd("EHLO client.example.net")];
    replies.push(c.cmd("MAIL FROM:<sender@example.net>"));
    for r in rcpts {
        replies.push(c.cmd(&format!("RCPT TO:<{r}>")));
    }
    replies.push(c.cmd("DATA"));
    c.send(format!("Subject: plain\r\n\r\n{body}\r\n.\r\n").as_bytes());
    replies.push(c.reply());
    replies.push(c.cmd("QUIT"));
    replies
}

#[test]
fn smtplib_starttls_auth_to_three_local_recipients() {
    let gw = Gateway::start(&bundled_plugins());
    let out = python(
        "submit.py",
        &[
            &gw.submission.to_string(),
            "alice@example.test",
            "pw-alice",
            "alice@example.test",
            "bob@example.test",
            "carol@example.test",
        ],
    );
    assert!(out.starts_with("250 2.0.0 Ok: queued as "), "{out}");
    for user in [
        "alice@example.test",
        "bob@example.test",
        "carol@example.test",
    ] {
        let mail = gw.wait_mailbox(user, 1);
        assert_eq!(mail.len(), 1, "{user} holds the message once");
        let message = &mail[0];
        assert!(message.starts_with("Return-Path: <alice@example.test>\r\nReceived: from client.example.net (127.0.0.1)\r\n\tby mx.example.test (mailgate) with ESMTPSA id "), "{message}");
        assert!(
            message.contains("\r\n\r\nHello from smtplib.\r\n..dot-stuffed line\r\n"),
            "stuffed by smtplib, unstuffed by us: {message}"
        );
        assert!(
            message.contains("Message-ID: <"),
            "submission adds a Message-ID: {message}"
        );
        assert!(
            message.contains("X-Mailgate: processed by mailgate; session="),
            "header added at DATA by header-rewrite: {message}"
        );
    }
    assert_eq!(gw.half_written(), 0);
}

#[test]
fn implicit_tls_with_auth_login() {
    let gw = Gateway::start("");
    let out = python(
        "implicit_tls.py",
        &[
            &gw.smtps.to_string(),
            "bob@example.test",
            "pw-bob",
            "carol@example.test",
        ],
    );
    assert_eq!(out.trim(), "refused: {}");
    let mail = gw.wait_mailbox("carol@example.test", 1);
    assert!(mail[0].contains("with ESMTPSA"), "{}", mail[0]);
}

#[test]
fn aliases_deliver_once_per_mailbox() {
    let gw = Gateway::start("");
    let replies = send_plain(
        gw.inbound,
        &["team@example.test", "alice@example.test"],
        "to the team",
    );
    assert!(
        replies[5].starts_with("250 2.0.0 Ok: queued as"),
        "{replies:?}"
    );
    assert_eq!(gw.wait_mailbox("bob@example.test", 1).len(), 1);
    assert_eq!(
        gw.settled_mailbox("alice@example.test").len(),
        1,
        "alias and direct address: one copy"
    );
}

#[test]
fn starttls_discards_pipelined_commands() {
    let gw = Gateway::start("");
    let out = python("starttls_injection.py", &[&gw.inbound.to_string()]);
    assert!(out.contains("early: (nothing)"), "{out}");
    assert!(
        out.contains("answer: 250-mx.example.test Hello real"),
        "{out}"
    );
}

#[test]
fn unknown_local_users_and_relay_attempts_are_refused_at_rcpt() {
    let gw = Gateway::start("");
    let (mut c, greeting) = RawSmtp::connect(gw.inbound);
    assert!(greeting.starts_with("220 "), "{greeting}");
    c.cmd("EHLO client.example.net");
    assert!(c.cmd("MAIL FROM:<x@example.net>").starts_with("250"));
    assert!(c
        .cmd("RCPT TO:<nobody@example.test>")
        .starts_with("550 5.1.1"));
    for form in [
        "<victim@remote.example>",
        "<victim%remote.example@example.test>",
        "<remote.example!victim@example.test>",
        "<\"victim@remote.example\"@example.test>",
        "<@example.test:victim@remote.example>",
        "<victim@remote.example@example.test>",
        "<victim@remote.example.>",
        "<VICTIM@REMOTE.EXAMPLE>",
    ] {
        let reply = c.cmd(&format!("RCPT TO:{form}"));
        let code: u16 = reply[..3].parse().expect("code");
        assert!((500..600).contains(&code), "{form} got {reply}");
    }
    assert!(
        c.cmd("DATA").starts_with("503"),
        "no recipient was accepted"
    );
    assert!(
        c.cmd("RCPT TO:<postmaster@example.test>")
            .starts_with("550"),
        "no postmaster user here"
    );
}

#[test]
fn smtp_smuggling_never_yields_a_second_message() {
    let gw = Gateway::start("");
    for fake in [
        &b"\n.\n"[..],
        b"\n.\r",
        b"\r.\n",
        b"\r.\r",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n\x00.\r\n",
        b"\r\n.\n",
        b"\r\n.\r",
    ] {
        let (mut c, _) = RawSmtp::connect(gw.inbound);
        c.cmd("EHLO client.example.net");
        assert!(c.cmd("MAIL FROM:<a@example.net>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        let mut payload = b"Subject: first\r\n\r\nfirst body".to_vec();
        payload.extend_from_slice(fake);
        payload.extend_from_slice(b"MAIL FROM:<spoof@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n");
        c.send(&payload);
        let reply = c.reply();
        // One reply for the whole thing: the smuggled commands were message data.
        assert!(
            reply.starts_with("550 5.6.11") || reply.starts_with("250"),
            "{fake:?}: {reply}"
        );
        assert!(
            c.cmd("NOOP").starts_with("250"),
            "{fake:?}: the next reply belongs to NOOP"
        );
    }
    assert!(
        gw.settled_mailbox("bob@example.test").is_empty(),
        "no smuggled message reached bob"
    );
    for message in gw.mailbox("alice@example.test") {
        let header = message.split("\r\n\r\n").next().unwrap_or_default();
        assert!(
            header.contains("Subject: first") && !header.contains("smuggled"),
            "{message}"
        );
    }
}

#[test]
fn bad_input_gets_the_right_reply_and_the_session_goes_on() {
    let gw = Gateway::start("[limits]\nmax-message-bytes = 2000\nmax-recipients = 2\n");
    let (mut c, _) = RawSmtp::connect(gw.inbound);
    assert!(
        c.cmd(&"X".repeat(600)).starts_with("500 5.5.2"),
        "over-long command line"
    );
    assert!(c.cmd("FROBNICATE").starts_with("500 5.5.1"));
    c.send(b"\x00\xff\xfe\x01garbage\r\n");
    let garbage = c.reply();
    assert!(garbage.starts_with("50"), "{garbage}");
    assert!(
        c.cmd("MAIL FROM:<a@example.net>").starts_with("503"),
        "MAIL before EHLO"
    );
    assert!(c.cmd("EHLO client.example.net").starts_with("250"));
    assert!(
        c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdy1hbGljZQ==")
            .starts_with("538 5.7.11"),
        "AUTH before TLS"
    );
    assert!(
        c.cmd("MAIL FROM:<a@example.net> SIZE=5000")
            .starts_with("552 5.3.4"),
        "declared size"
    );
    assert!(c.cmd("MAIL FROM:<a@example.net>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.test>").starts_with("250"));
    assert!(
        c.cmd("RCPT TO:<carol@example.test>")
            .starts_with("452 4.5.3"),
        "too many recipients"
    );
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(
        format!(
            "Subject: big\r\n\r\n{}\r\n.\r\n",
            "y".repeat(900)
                .repeat(3)
                .chars()
                .collect::<Vec<_>>()
                .chunks(900)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("\r\n")
        )
        .as_bytes(),
    );
    assert!(c.reply().starts_with("552 5.3.4"), "oversize message");
    assert!(c.cmd("MAIL FROM:<a@example.net>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(format!("Subject: long\r\n\r\n{}\r\n.\r\n", "z".repeat(1200)).as_bytes());
    assert!(c.reply().starts_with("554 5.6.0"), "over-long text line");
    assert!(c.cmd("NOOP").starts_with("250"), "the session goes on");
    assert!(c.cmd("QUIT").starts_with("221"));
    assert!(
        gw.settled_mailbox("alice@example.test").is_empty(),
        "nothing refused was delivered"
    );
    assert_eq!(gw.half_written(), 0);
}

#[test]
fn messages_acknowledged_before_kill_9_are_delivered_exactly_once() {
    let mut gw = Gateway::start("");
    let mut ids = Vec::new();
    let (mut c, _) = RawSmtp::connect(gw.inbound);
    c.cmd("EHLO client.example.net");
    for n in 0..20 {
        assert!(c.cmd("MAIL FROM:<a@example.net>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<carol@example.test>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(format!("Subject: crash {n}\r\n\r\nmessage {n}\r\n.\r\n").as_bytes());
        let reply = c.reply();
        assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
        ids.push(reply.rsplit(' ').next().expect("id").to_string());
    }
    gw.kill();
    gw.launch();
    gw.wait_mailbox("carol@example.test", 20);
    // A duplicate, if recovery made one, has had the time to appear.
    let mail = gw.settled_mailbox("carol@example.test");
    assert_eq!(
        mail.len(),
        20,
        "every acknowledged message exactly once\n{}",
        gw.log()
    );
    for (n, id) in ids.iter().enumerate() {
        let copies = mail
            .iter()
            .filter(|m| m.contains(&format!(" id {id}")) && m.contains(&format!("message {n}\r\n")))
            .count();
        assert_eq!(copies, 1, "message {n} ({id})");
    }
    assert_eq!(gw.half_written(), 0);
}

#[test]
fn bdat_chunking() {
    let gw = Gateway::start("");
    let (mut c, _) = RawSmtp::connect(gw.inbound);
    assert!(c.cmd("EHLO client.example.net").contains("CHUNKING"));
    c.cmd("MAIL FROM:<a@example.net>");
    c.cmd("RCPT TO:<bob@example.test>");
    let first = b"Subject: chunks\r\n\r\nfirst ";
    c.send(format!("BDAT {}\r\n", first.len()).as_bytes());
    c.send(first);
    assert!(c.reply().starts_with("250"));
    let last = b"and last\r\n";
    c.send(format!("BDAT {} LAST\r\n", last.len()).as_bytes());
    c.send(last);
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued"));
    let mail = gw.wait_mailbox("bob@example.test", 1);
    assert!(
        mail[0].ends_with("\r\n\r\nfirst and last\r\n"),
        "{}",
        mail[0]
    );
}

/// Runs a command and returns (success, stdout + stderr).
fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (run `cargo xtask test`, which installs it)"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn swaks_with_pipelining_and_with_auth_over_starttls() {
    let gw = Gateway::start("");
    let port = gw.inbound.to_string();
    let (ok, out) = run(
        "swaks",
        &[
            "--server",
            "127.0.0.1",
            "--port",
            &port,
            "--from",
            "x@example.net",
            "--to",
            "alice@example.test",
            "--pipeline",
            "--header",
            "Subject: swaks pipelined",
            "--body",
            "pipelined body",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("250 2.0.0 Ok: queued as"), "{out}");
    let submission = gw.submission.to_string();
    let (ok, out) = run(
        "swaks",
        &[
            "--server",
            "127.0.0.1",
            "--port",
            &submission,
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "bob@example.test",
            "--auth-password",
            "pw-bob",
            "--from",
            "bob@example.test",
            "--to",
            "alice@example.test",
            "--header",
            "Subject: swaks auth",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("235 2.7.0"), "{out}");
    let (ok, out) = run(
        "swaks",
        &[
            "--server",
            "127.0.0.1",
            "--port",
            &submission,
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            "bob@example.test",
            "--auth-password",
            "wrong",
            "--from",
            "bob@example.test",
            "--to",
            "alice@example.test",
        ],
    );
    assert!(!ok && out.contains("535 5.7.8"), "{out}");
    let mail = gw.wait_mailbox("alice@example.test", 2);
    assert_eq!(mail.len(), 2);
    assert!(mail
        .iter()
        .any(|m| m.contains("Subject: swaks pipelined") && m.contains("with ESMTP id")));
    assert!(mail
        .iter()
        .any(|m| m.contains("Subject: swaks auth") && m.contains("with ESMTPSA id")));
}

#[test]
fn curl_submission_over_starttls() {
    let gw = Gateway::start("");
    let message = gw.dir.path().join("curl.eml");
    std::fs::write(&message, "From: carol@example.test\r\nTo: bob@example.test\r\nSubject: from curl\r\n\r\nsent with curl\r\n").expect("write");
    let url = format!("smtp://127.0.0.1:{}", gw.submission);
    let (ok, out) = run(
        "curl",
        &[
            "-sS",
            "--ssl-reqd",
            "-k",
            "--user",
            "carol@example.test:pw-carol",
            "--mail-from",
            "carol@example.test",
            "--mail-rcpt",
            "bob@example.test",
            "--upload-file",
            message.to_str().expect("utf-8"),
            &url,
        ],
    );
    assert!(ok, "{out}");
    let mail = gw.wait_mailbox("bob@example.test", 1);
    assert!(
        mail[0].contains("Subject: from curl") && mail[0].contains("sent with curl"),
        "{}",
        mail[0]
    );
}

#[test]
fn plugin_verdicts_reach_the_client_at_every_stage() {
    let probe = mailgate_e2e::root().join("target/test-plugins/probe-plugin.wasm");
    let probe = probe.display();
    let gate = |stage: &str, action: &str| {
        Gateway::start(&format!(
            "[[plugin]]\nname = \"gate\"\npath = \"{probe}\"\n[plugin.config]\nname = \"gate\"\n\
             stages = [\"connect\", \"helo\", \"mail-from\", \"rcpt-to\", \"data\"]\naction = {{ \"{stage}\" = \"{action}\" }}\n"
        ))
    };
    let gw = gate("rcpt-to", "reject");
    let (mut c, _) = RawSmtp::connect(gw.inbound);
    c.cmd("EHLO client.example.net");
    c.cmd("MAIL FROM:<a@example.net>");
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.test>"),
        "550 5.7.1 rejected by gate"
    );
    drop(gw);

    let gw = gate("connect", "disconnect");
    let (mut c, greeting) = RawSmtp::connect(gw.inbound);
    assert_eq!(greeting, "421 4.7.0 closed by gate");
    assert_eq!(c.reply(), "", "connection closed");
    drop(gw);

    let gw = gate("mail-from", "tempfail");
    let (mut c, _) = RawSmtp::connect(gw.inbound);
    c.cmd("EHLO client.example.net");
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.net>"),
        "451 4.7.1 deferred by gate"
    );
    drop(gw);

    let gw = gate("data", "tag");
    let replies = send_plain(gw.inbound, &["alice@example.test"], "tagged");
    assert!(replies[4].starts_with("250 2.0.0"), "{replies:?}");
    let mail = gw.wait_mailbox("alice@example.test", 1);
    assert!(
        mail[0].contains("\r\nX-Probe: gate\r\n"),
        "header added at DATA is in the delivered file: {}",
        mail[0]
    );
    drop(gw);

    let gw = gate("data", "reject");
    let replies = send_plain(gw.inbound, &["alice@example.test"], "refused");
    assert_eq!(replies[4], "550 5.7.1 rejected by gate");
    drop(gw);

    let gw = gate("data", "discard");
    let replies = send_plain(gw.inbound, &["alice@example.test"], "dropped");
    assert!(replies[4].starts_with("250 2.0.0"), "{replies:?}");
    assert!(
        gw.settled_mailbox("alice@example.test").is_empty(),
        "discarded, not delivered"
    );
    drop(gw);

    let gw = gate("data", "quarantine");
    let replies = send_plain(gw.inbound, &["alice@example.test"], "held");
    assert!(
        replies[4].starts_with("250 2.0.0 Ok: queued as "),
        "{replies:?}"
    );
    let id = replies[4].rsplit(' ').next().expect("id");
    let held = std::fs::read_to_string(gw.data().join("quarantine").join(format!("{id}.eml")))
        .expect("quarantined file");
    assert!(
        held.starts_with("X-Mailgate-Quarantine: held by gate\r\n"),
        "{held}"
    );
    assert!(
        gw.settled_mailbox("alice@example.test").is_empty(),
        "quarantined, not delivered"
    );
}

#[test]
fn connection_limits_and_idle_timeout() {
    let gw = Gateway::start("[limits]\nmax-connections-per-ip = 2\ncommand-timeout-secs = 1\n");
    // The start-up probe's connection must be gone before we count ours.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (_a, first) = RawSmtp::connect(gw.inbound);
    let (_b, second) = RawSmtp::connect(gw.inbound);
    let (_c, third) = RawSmtp::connect(gw.inbound);
    assert!(
        first.starts_with("220") && second.starts_with("220"),
        "{first} / {second}"
    );
    assert!(third.starts_with("421 4.7.0"), "{third}");
    let (mut idle, _) = {
        drop((_a, _b, _c));
        std::thread::sleep(std::time::Duration::from_millis(200));
        RawSmtp::connect(gw.inbound)
    };
    assert!(
        idle.reply().starts_with("421 4.4.2"),
        "idle sessions are closed"
    );
}

#[test]
fn a_user_added_while_running_receives_mail_without_a_restart() {
    let gw = Gateway::start("");
    let (mut c, _) = RawSmtp::connect(gw.inbound);
    c.cmd("EHLO client.example.net");
    c.cmd("MAIL FROM:<a@example.net>");
    assert!(c
        .cmd("RCPT TO:<dave@example.test>")
        .starts_with("550 5.1.1"));
    gw.add_user("dave@example.test", "pw-dave");
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(
        c.cmd("RCPT TO:<dave@example.test>").starts_with("250"),
        "picked up without a restart"
    );
}

#[test]
fn mail_loops_are_refused() {
    let gw = Gateway::start("");
    let (mut c, _) = RawSmtp::connect(gw.inbound);
    c.cmd("EHLO client.example.net");
    c.cmd("MAIL FROM:<a@example.net>");
    assert!(c.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let trace = "Received: from a by b; Sun, 22 Nov 2026 09:00:00 +0000\r\n".repeat(51);
    c.send(format!("{trace}Subject: loop\r\n\r\nround and round\r\n.\r\n").as_bytes());
    assert!(c.reply().starts_with("554 5.4.6"), "loop cap");
    assert!(gw.settled_mailbox("alice@example.test").is_empty());
}

#[test]
fn configured_client_networks_may_relay() {
    let gw = Gateway::builder()
        .server(r#"relay-networks = ["127.0.0.0/8"]"#)
        .start();
    let (mut c, _) = RawSmtp::connect(gw.inbound);
    c.cmd("EHLO client.example.net");
    c.cmd("MAIL FROM:<a@example.net>");
    assert!(
        c.cmd("RCPT TO:<someone@remote.example>")
            .starts_with("250 2.1.5"),
        "127.0.0.1 is in a relay network"
    );
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: onward\r\n\r\nfor the relay queue\r\n.\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let id = reply.rsplit(' ').next().expect("id").to_string();
    // remote.example has no MX here: the relay queue tries it and defers or bounces it.
    assert!(
        mailgate_e2e::wait_until(20, || {
            let log = gw.log();
            log.lines()
                .any(|l| l.contains(&id) && (l.contains("deferred") || l.contains("bounced")))
        }),
        "the relay queue took the message:\n{}",
        gw.log()
    );
}

#[test]
fn serve_without_a_config_runs_the_embedded_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(mailgate_e2e::binary())
        .arg("serve")
        .current_dir(dir.path())
        .env("MAILGATE_PLUGIN_DIR", plugin_dir())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    mailgate_e2e::wait_for_port(2525);
    mailgate_e2e::wait_for_port(2587);
    mailgate_e2e::wait_for_port(2465);
    let (mut c, greeting) = RawSmtp::connect(2525);
    assert!(greeting.starts_with("220 localhost ESMTP"), "{greeting}");
    let ehlo = c.cmd("EHLO client.example.net");
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    c.cmd("MAIL FROM:<a@example.net>");
    assert!(
        c.cmd("RCPT TO:<x@remote.example>").starts_with("554 5.7.1"),
        "not an open relay"
    );
    let (mut s, _) = RawSmtp::connect(2587);
    s.cmd("EHLO client.example.net");
    assert!(
        s.cmd("MAIL FROM:<a@example.net>").starts_with("530 5.7.0"),
        "submission requires AUTH"
    );
    assert!(
        dir.path().join("data/tls/cert.pem").exists(),
        "self-signed certificate generated"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// `[log] format = "json"`: every log line is one JSON object; the line of an accepted message
/// carries its queue id and the session's span (id, peer, listener).
#[test]
fn json_logs_parse_and_carry_the_queue_id() {
    let gw = Gateway::start("[log]\nformat = \"json\"\n");
    let replies = send_plain(gw.inbound, &["alice@example.test"], "json logs");
    let accepted = &replies[replies.len() - 2];
    let queue_id = accepted
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("{accepted}"))
        .trim()
        .to_string();
    gw.wait_mailbox("alice@example.test", 1);
    let lines = |gw: &Gateway| -> Vec<serde_json::Value> {
        gw.log()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    let queued = |line: &serde_json::Value| {
        line["message"] == "queued" && line["queue_id"] == queue_id.as_str()
    };
    assert!(
        mailgate_e2e::wait_until(10, || lines(&gw).iter().any(queued)),
        "{}",
        gw.log()
    );
    let all = lines(&gw);
    let line = all.iter().find(|l| queued(l)).expect("queued line");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["from"], "sender@example.net");
    assert_eq!(line["span"]["name"], "session");
    assert_eq!(line["span"]["listener"], "inbound");
    assert!(line["timestamp"].is_string(), "{line}");
}

/// Under systemd (`Type=notify`): `READY=1` once the listeners are bound, `STOPPING=1` on
/// SIGTERM; and the shipped unit passes `systemd-analyze verify`.
#[test]
fn the_service_manager_is_told_ready_and_stopping_and_the_unit_verifies() {
    use std::os::unix::net::UnixDatagram;
    let mut gw = Gateway::start("");
    gw.kill();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    gw.launch_with(&[("NOTIFY_SOCKET", path.as_os_str())]);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a notification");
    assert_eq!(&buf[..n], b"READY=1");
    let pid = gw.pid().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(killed.expect("kill").success());
    let n = socket.recv(&mut buf).expect("a notification");
    assert_eq!(&buf[..n], b"STOPPING=1");

    // The unit as shipped, with ExecStart pointing at the binary under test (verify wants the
    // program to exist).
    let unit = std::fs::read_to_string(mailgate_e2e::root().join("contrib/mailgate.service"))
        .expect("contrib/mailgate.service");
    let binary = mailgate_e2e::binary();
    let unit = unit.replace("/usr/local/bin/mailgate", binary.to_str().expect("utf-8"));
    std::fs::write(dir.path().join("mailgate.service"), unit).expect("write unit");
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "./mailgate.service"])
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("mailgate.service"),
        "warnings about the unit: {stderr}"
    );
}

/// A gateway whose chain is the probe plugin named `gate`, doing `action` at the data stage.
fn data_gate(action: &str) -> Gateway {
    let probe = mailgate_e2e::root().join("target/test-plugins/probe-plugin.wasm");
    Gateway::start(&format!(
        "[[plugin]]\nname = \"gate\"\npath = \"{}\"\n[plugin.config]\nname = \"gate\"\n\
         stages = [\"data\"]\naction = {{ \"data\" = \"{action}\" }}\n",
        probe.display()
    ))
}

/// Sends one message with smtplib (MAIL FROM with BODY=8BITMIME) to `rcpts`; DATA's reply.
fn smtplib_send(port: u16, subject: &str, rcpts: &[&str]) -> String {
    let script = format!(
        "import smtplib\n\
         with smtplib.SMTP('127.0.0.1', {port}, timeout=20) as s:\n\
         \x20   s.ehlo('client.example.net')\n\
         \x20   s.mail('sender@example.net', ['BODY=8BITMIME'])\n\
         \x20   for rcpt in {rcpts:?}:\n\
         \x20       code, text = s.rcpt(rcpt)\n\
         \x20       assert code == 250, (rcpt, code, text)\n\
         \x20   code, text = s.data('From: sender@example.net\\r\\nSubject: {subject}\\r\\n\\r\\nThe body of {subject}.\\r\\n')\n\
         \x20   print(code, text.decode())\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "smtplib: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn quarantine_lists_shows_releases_once_and_deletes() {
    let gw = data_gate("quarantine");
    let reply = smtplib_send(
        gw.inbound,
        "held one",
        &["alice@example.test", "bob@example.test"],
    );
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let id = reply.rsplit(' ').next().expect("id").to_string();

    // The envelope is kept beside the message, owner-only.
    let dir = gw.data().join("quarantine");
    for file in [format!("{id}.eml"), format!("{id}.json")] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join(&file))
                .expect("quarantine file")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    let list = gw.cli(&["quarantine", "list"]);
    assert_eq!(list.code, Some(0), "{}", list.stderr);
    let line = list
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{}", list.stdout));
    for expected in [
        " gate ",
        "<sender@example.net>",
        "alice@example.test, bob@example.test",
        "(held by gate)",
    ] {
        assert!(line.contains(expected), "{expected:?} missing: {line}");
    }

    let show = gw.cli(&["quarantine", "show", &id]);
    assert_eq!(show.code, Some(0), "{}", show.stderr);
    for expected in [
        "sender: <sender@example.net> BODY=8BITMIME",
        "recipient: <alice@example.test>",
        "recipient: <bob@example.test>",
        "client: 127.0.0.1 (HELO client.example.net)",
        "at the data stage by plugin gate",
        "reason: held by gate",
        "Subject: held one",
    ] {
        assert!(
            show.stdout.contains(expected),
            "{expected:?} missing:\n{}",
            show.stdout
        );
    }
    assert!(
        !show.stdout.contains("The body of"),
        "headers only:\n{}",
        show.stdout
    );

    // The gate still quarantines at DATA: the release is the operator's decision, so the
    // message reaches both recipients, once.
    let release = gw.cli(&["quarantine", "release", &id]);
    assert_eq!(release.code, Some(0), "{}", release.stderr);
    assert!(
        release.stdout.contains(&format!("released {id}")),
        "{}",
        release.stdout
    );
    for rcpt in ["alice@example.test", "bob@example.test"] {
        let mail = gw.wait_mailbox(rcpt, 1);
        assert!(mail[0].contains("Subject: held one"), "{}", mail[0]);
        assert!(!mail[0].contains("X-Mailgate-Quarantine"), "{}", mail[0]);
        assert_eq!(gw.settled_mailbox(rcpt).len(), 1, "{rcpt}: delivered once");
    }
    assert!(!gw.cli(&["quarantine", "list"]).stdout.contains(&id));
    let again = gw.cli(&["quarantine", "release", &id]);
    assert_eq!(again.code, Some(1), "{}", again.stdout);
    assert!(again.stderr.contains("no message"), "{}", again.stderr);

    // Another one, deleted.
    let reply = smtplib_send(gw.inbound, "dropped one", &["carol@example.test"]);
    let second = reply.rsplit(' ').next().expect("id").to_string();
    let delete = gw.cli(&["quarantine", "delete", &second]);
    assert_eq!(delete.code, Some(0), "{}", delete.stderr);
    assert!(!dir.join(format!("{second}.json")).exists());
    assert_eq!(gw.cli(&["quarantine", "show", &second]).code, Some(1));
    assert!(gw.settled_mailbox("carol@example.test").is_empty());

    // A file kept before envelopes were: listed, not releasable, deletable.
    std::fs::write(
        dir.join("0123abcd.eml"),
        "X-Mailgate-Quarantine: virus found\r\nSubject: old\r\n\r\nold\r\n",
    )
    .expect("old file");
    let list = gw.cli(&["quarantine", "list"]).stdout;
    assert!(
        list.lines()
            .any(|l| l.starts_with("0123abcd ") && l.contains("(envelope unknown) (virus found)")),
        "{list}"
    );
    let refused = gw.cli(&["quarantine", "release", "0123abcd"]);
    assert_eq!(refused.code, Some(1));
    assert!(
        refused.stderr.contains("without its envelope"),
        "{}",
        refused.stderr
    );
    assert_eq!(gw.cli(&["quarantine", "delete", "0123abcd"]).code, Some(0));
    assert!(gw
        .cli(&["quarantine", "list"])
        .stdout
        .ends_with("-- 0 message(s) in quarantine\n"));
}

#[test]
fn trace_shows_the_panic_message_of_a_rust_plugin() {
    let gw = data_gate("trap");
    let replies = send_plain(gw.inbound, &["alice@example.test"], "trapped");
    assert!(replies[4].starts_with("451 4.3.0"), "{replies:?}");
    let mut trace = String::new();
    assert!(
        mailgate_e2e::wait_until(30, || {
            trace = gw.cli(&["trace", "--rcpt", "alice@example.test"]).stdout;
            trace.contains("fault:")
        }),
        "no fault in the trace:\n{trace}"
    );
    assert!(
        trace.contains("probe asked to trap"),
        "the plugin's own words missing:\n{trace}"
    );
}
