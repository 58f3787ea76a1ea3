//! Hostile input, end to end: what an unauthenticated or logged-in client sends must never
//! crash, freeze or lose mail. Each test starts the real binary and attacks it as a client would.

use mailgate_e2e::{
    imap_raw, imap_raw_background, imap_raw_output, jmap_client, probe_plugin, python, wait_until,
    Gateway, RawSmtp,
};
use serde_json::Value;

/// `levels` multiparts, each holding the next, around one text part.
fn nested_multipart(levels: usize) -> String {
    let mut raw = String::from("From: deep@client.test\r\nSubject: deep multipart\r\n");
    for i in 0..levels {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    raw.push_str("Content-Type: text/plain\r\n\r\nbottom\r\n");
    for i in (0..levels).rev() {
        raw.push_str(&format!("--b{i}--\r\n"));
    }
    raw
}

/// `levels` message/rfc822 parts, each the body of the one before.
fn nested_messages(levels: usize) -> String {
    let mut raw = String::from("From: deep@client.test\r\n");
    for _ in 0..levels {
        raw.push_str("Subject: wrapper\r\nContent-Type: message/rfc822\r\n\r\n");
    }
    raw.push_str("Subject: inner\r\n\r\nbottom\r\n");
    raw
}

/// One message over plain SMTP; the reply to the end of DATA.
fn send(gw: &Gateway, to: &str, data: &str) -> String {
    let (mut smtp, _) = RawSmtp::connect(gw.inbound);
    smtp.cmd("EHLO client.test");
    assert!(smtp
        .cmd("MAIL FROM:<sender@client.test>")
        .starts_with("250"));
    assert!(smtp.cmd(&format!("RCPT TO:<{to}>")).starts_with("250"));
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(format!("{data}.\r\n").as_bytes());
    let reply = smtp.reply();
    smtp.cmd("QUIT");
    reply
}

/// The server answers a new SMTP connection and a NOOP.
fn assert_alive(gw: &Gateway) {
    let (mut smtp, greeting) = RawSmtp::connect(gw.inbound);
    assert!(greeting.starts_with("220"), "greeting: {greeting:?}");
    assert!(smtp.cmd("NOOP").starts_with("250"));
}

const LOGIN: (&str, &str) = ("l LOGIN alice@example.test pw-alice\r\n", "l");

/// A file put into alice's Maildir by another program (as procmail or a migration would).
fn store_directly(gw: &Gateway, name: &str, raw: &str) {
    gw.store_directly("alice@example.test", name, raw.as_bytes());
}

#[test]
fn deeply_nested_message_is_refused_at_data_and_the_server_lives() {
    let gw = Gateway::start("");
    for data in [nested_multipart(2_000), nested_messages(2_000)] {
        let reply = send(&gw, "alice@example.test", &data);
        assert!(reply.starts_with("554 5.6.0"), "{reply}");
        assert!(reply.contains("nesting"), "{reply}");
        assert_alive(&gw);
    }
    // Within the bound: accepted as usual.
    let reply = send(&gw, "alice@example.test", &nested_multipart(20));
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(gw.wait_mailbox("alice@example.test", 1).len(), 1);
}

#[test]
fn configured_depth_bound_applies_at_data() {
    let gw = Gateway::start("[limits]\nmax-mime-depth = 5\n");
    let reply = send(&gw, "alice@example.test", &nested_multipart(6));
    assert!(reply.starts_with("554 5.6.0"), "{reply}");
    let reply = send(&gw, "alice@example.test", &nested_multipart(4));
    assert!(reply.starts_with("250"), "{reply}");
}

#[test]
fn stored_deep_messages_are_served_over_imap_and_pop3_after_restarts_too() {
    let mut gw = Gateway::start("");
    store_directly(&gw, "1.deep-multipart", &nested_multipart(2_000));
    store_directly(&gw, "2.deep-messages", &nested_messages(20_000));
    for round in 0..2 {
        let out = imap_raw(
            &gw,
            &[
                LOGIN,
                ("s SELECT INBOX\r\n", "s"),
                ("f FETCH 1:2 (BODYSTRUCTURE ENVELOPE RFC822.SIZE)\r\n", "f"),
                ("g FETCH 1 BODY[1.1.1.1.1.MIME]\r\n", "g"),
                ("h FETCH 2 (BODY[] BODY[1.1.1.HEADER])\r\n", "h"),
                ("z LOGOUT\r\n", "z"),
            ],
        );
        let fetched = &out[3];
        assert!(fetched.contains("f OK"), "round {round}: {fetched}");
        // The excess depth is one opaque leaf, for both kinds of nesting.
        assert_eq!(
            fetched.matches("\"application\" \"octet-stream\"").count(),
            2,
            "round {round}: {fetched}"
        );
        assert!(fetched.contains("\"deep multipart\""), "{fetched}");
        assert!(
            out[4].contains("g OK") && out[4].contains("boundary=\"b5\""),
            "{}",
            out[4]
        );
        assert!(
            out[5].contains("h OK") && out[5].contains("Subject: wrapper"),
            "{}",
            out[5]
        );
        let pop = python(
            "pop3_client.py",
            &[
                &gw.pop3s.to_string(),
                "ssl",
                "alice@example.test",
                "pw-alice",
                "retr:1",
                "retr:2",
                "quit",
            ],
        );
        let steps: Vec<Value> = pop
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(steps.len(), 3, "{pop}");
        let first = steps[0]["out"]["message"].as_str().expect("hex");
        assert_eq!(
            first.len(),
            nested_multipart(2_000).len() * 2,
            "RETR 1 whole"
        );
        let second = steps[1]["out"]["message"].as_str().expect("hex");
        assert_eq!(
            second.len(),
            nested_messages(20_000).len() * 2,
            "RETR 2 whole"
        );
        assert_alive(&gw);
        gw.kill();
        gw.launch();
    }
}

#[test]
fn deep_message_appended_over_imap_is_served() {
    let gw = Gateway::start("");
    let deep = nested_multipart(1_250);
    let append = format!("a APPEND INBOX {{{}}}\r\n", deep.len());
    let out = imap_raw(
        &gw,
        &[
            LOGIN,
            (&append, "+"),
            (&format!("{deep}\r\n"), "a"),
            ("s SELECT INBOX\r\n", "s"),
            ("f FETCH 1 (BODYSTRUCTURE)\r\n", "f"),
        ],
    );
    assert!(out[3].contains("a OK"), "{}", out[3]);
    assert!(
        out[5].contains("f OK") && out[5].contains("octet-stream"),
        "{}",
        out[5]
    );
    assert!(wait_until(5, || {
        RawSmtp::connect(gw.inbound).1.starts_with("220")
    }));
}

/// An SMTP session in a transaction to alice.
fn in_transaction(gw: &Gateway) -> RawSmtp {
    let (mut smtp, _) = RawSmtp::connect(gw.inbound);
    assert!(smtp.cmd("EHLO client.test").contains("CHUNKING"));
    assert!(smtp
        .cmd("MAIL FROM:<sender@client.test>")
        .starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    smtp
}

#[test]
fn every_bdat_chunk_is_answered_zero_sized_ones_too() {
    let gw = Gateway::start("");
    let mut smtp = in_transaction(&gw);
    // Nothing follows these commands: the server must answer without waiting for more bytes.
    assert!(smtp.cmd("BDAT 0").starts_with("250"));
    let body = "Subject: chunked\r\n\r\nin two chunks\r\n";
    smtp.send(format!("BDAT {}\r\n{body}", body.len()).as_bytes());
    assert!(smtp.reply().starts_with("250"));
    let reply = smtp.cmd("BDAT 0 LAST");
    assert!(
        reply.starts_with("250") && reply.contains("queued"),
        "{reply}"
    );
    let mail = gw.wait_mailbox("alice@example.test", 1);
    assert!(mail[0].contains("in two chunks"));
    // An empty message in one empty last chunk is answered too.
    let mut smtp = in_transaction(&gw);
    assert!(smtp.cmd("BDAT 0 LAST").starts_with("250"));
}

#[test]
fn bdat_sizes_that_overflow_are_refused_and_the_session_goes_on() {
    let gw = Gateway::start("[limits]\nmax-message-bytes = 100000\n");
    let mut smtp = in_transaction(&gw);
    smtp.send(b"BDAT 1\r\nX");
    assert!(smtp.reply().starts_with("250"));
    // 1 + u64::MAX wraps around: must be refused, not buffered; such a chunk is never read,
    // so the connection closes after the reply.
    let reply = smtp.cmd("BDAT 18446744073709551615 LAST");
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    assert_eq!(smtp.reply(), "", "closed after an unreadable chunk");
    assert!(gw.mailbox("alice@example.test").is_empty());
    // A chunk over the limit is read, dropped and refused; the connection stays usable.
    let mut smtp = in_transaction(&gw);
    let big = vec![b'a'; 100_001];
    smtp.send(b"BDAT 100001\r\n");
    smtp.send(&big);
    assert!(smtp.reply().starts_with("552 5.3.4"));
    assert!(
        smtp.cmd("NOOP").starts_with("250"),
        "chunk bytes not taken for commands"
    );
    assert!(smtp.cmd("RSET").starts_with("250"));
}

#[test]
fn a_second_server_on_the_same_data_dir_changes_nothing() {
    let gw = Gateway::start("");
    // A message the first server is receiving right now.
    let in_flight = gw.data().join("queue/tmp/in-flight");
    std::fs::write(&in_flight, "half a message").expect("tmp");
    let mut second = std::process::Command::new(mailgate_e2e::binary())
        .args(["serve", "--config"])
        .arg(gw.config_path())
        .env("MAILGATE_PLUGIN_DIR", mailgate_e2e::plugin_dir())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("second serve");
    let mut status = None;
    assert!(wait_until(20, || {
        status = second.try_wait().expect("wait");
        status.is_some()
    }));
    assert!(!status.expect("exited").success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(
        stderr.contains("in use by another mailgate server"),
        "{stderr}"
    );
    assert!(
        in_flight.exists(),
        "the first server's queue/tmp was touched"
    );
    assert_alive(&gw);
}

#[test]
fn secrets_and_trusted_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    // One plugin, so that there is a compiled artifact in the cache (the gateway's own, not
    // the one the test gateways share).
    let mut gw = Gateway::start(&format!(
        "{}\n[runtime]\ncache-dir = \"data/cache\"\n",
        probe_plugin("probe", "connect", "")
    ));
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&gw.data()), 0o700, "data dir");
    assert_eq!(mode(&gw.data().join("users.toml")), 0o600, "users file");
    let cache = gw.data().join("cache");
    assert_eq!(mode(&cache), 0o700, "plugin cache");
    let artifacts: Vec<_> = std::fs::read_dir(&cache)
        .expect("cache")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!artifacts.is_empty());
    for artifact in &artifacts {
        assert_eq!(mode(artifact), 0o600, "{}", artifact.display());
    }
    // A cache others can write is not trusted: plugins are compiled afresh instead.
    gw.kill();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    gw.launch();
    assert!(gw.log().contains("writable by others"), "{}", gw.log());
    assert_eq!(
        send(&gw, "alice@example.test", "Subject: hi\r\n\r\nhi\r\n").get(..3),
        Some("250")
    );
    // A tampered artifact is refused (its recorded hash no longer matches) and replaced.
    gw.kill();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let mut bytes = std::fs::read(&artifacts[0]).expect("artifact");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&artifacts[0], bytes).expect("tamper");
    gw.launch();
    assert!(
        gw.log().contains("does not match its recorded hash"),
        "{}",
        gw.log()
    );
    assert_alive(&gw);
}

#[test]
fn pre_login_literals_over_the_budget_get_no_continuation() {
    let gw = Gateway::start("");
    let out = imap_raw(
        &gw,
        &[
            ("a LOGIN {70000}\r\n", "a"),
            ("b NOOP\r\n", "b"),
            // Within the budget: the continuation comes.
            ("c LOGIN {20}\r\n", "+"),
        ],
    );
    assert!(out[1].starts_with("a NO [TOOBIG]"), "{}", out[1]);
    assert!(!out[1].contains('+'), "no continuation: {}", out[1]);
    assert!(out[2].contains("b OK"), "{}", out[2]);
    assert!(out[3].starts_with('+'), "{}", out[3]);
    // Several literals, each small, together over the budget; LITERAL+ bytes would follow
    // regardless, so the server says BYE instead of reading them.
    let x = "x".repeat(40_000);
    let login = format!("a LOGIN {{40000+}}\r\n{x} {{40000+}}\r\n");
    let out = imap_raw(&gw, &[(&login, "a")]);
    assert!(
        out[1].contains("* BYE") && out[1].ends_with("<closed>"),
        "{}",
        out[1]
    );
    assert_alive(&gw);
}

#[test]
fn literal_plus_append_of_a_mebibyte() {
    let gw = Gateway::start("");
    let mut message = String::from("Subject: big\r\n\r\n");
    while message.len() < 1 << 20 {
        message.push_str("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n");
    }
    message.truncate(1 << 20);
    let append = format!("a APPEND INBOX {{{}+}}\r\n{message}\r\n", message.len());
    let out = imap_raw(
        &gw,
        &[
            LOGIN,
            (&append, "a"),
            ("s SELECT INBOX\r\n", "s"),
            ("f FETCH 1 RFC822.SIZE\r\n", "f"),
        ],
    );
    assert!(
        out[2].starts_with("a OK"),
        "{}",
        &out[2][..out[2].len().min(200)]
    );
    assert!(
        out[4].contains(&format!("RFC822.SIZE {}", 1 << 20)),
        "{}",
        out[4]
    );
}

/// How long a new client waits for the SMTP greeting, and for an IMAP NOOP's answer.
fn greeting_and_noop_latency(gw: &Gateway) -> (std::time::Duration, std::time::Duration) {
    use std::io::{Read, Write};
    let started = std::time::Instant::now();
    let (_, greeting) = RawSmtp::connect(gw.inbound);
    let smtp = started.elapsed();
    assert!(greeting.starts_with("220"), "{greeting}");
    let mut imap = std::net::TcpStream::connect(("127.0.0.1", gw.imap)).expect("imap");
    imap.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"\r\n") {
        let n = imap.read(&mut buf).expect("greeting");
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let started = std::time::Instant::now();
    imap.write_all(b"n NOOP\r\n").expect("noop");
    got.clear();
    while !got.windows(5).any(|w| w == b"n OK ") {
        let n = imap.read(&mut buf).expect("noop reply");
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    (smtp, started.elapsed())
}

#[test]
fn searches_with_many_keys_do_not_stall_other_clients() {
    let gw = Gateway::start("");
    let body = "lorem ipsum dolor sit amet, consectetur adipiscing elit\r\n".repeat(150);
    for n in 0..300 {
        store_directly(
            &gw,
            &format!("{n}.stored"),
            &format!("From: x@client.test\r\nSubject: message {n}\r\n\r\n{body}"),
        );
    }
    // Every key holds for every message, so none is skipped.
    let flat: String = (0..1000).map(|k| format!(" NOT SUBJECT zz{k}")).collect();
    let heavy: String = (0..1000).map(|k| format!(" NOT BODY zz{k}")).collect();
    let steps: Vec<(String, String)> = vec![
        (LOGIN.0.into(), "l".into()),
        ("s SELECT INBOX\r\n".into(), "s".into()),
        (format!("f SEARCH{flat}\r\n"), "f".into()),
        (format!("h SEARCH{heavy}\r\n"), "h".into()),
    ];
    let mut sessions = [
        imap_raw_background(&gw, &steps),
        imap_raw_background(&gw, &steps),
    ];
    let mut worst = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let mut samples = 0;
    while sessions
        .iter_mut()
        .any(|s| s.try_wait().expect("wait").is_none())
    {
        let (smtp, noop) = greeting_and_noop_latency(&gw);
        worst = (worst.0.max(smtp), worst.1.max(noop));
        samples += 1;
    }
    assert!(samples > 0);
    // Before SEARCH left the async workers, a greeting waited 45 s behind two such searches.
    assert!(
        worst.0 < std::time::Duration::from_secs(2) && worst.1 < std::time::Duration::from_secs(2),
        "worst greeting {:?}, worst NOOP {:?} over {samples} samples",
        worst.0,
        worst.1
    );
    for session in sessions {
        let out = imap_raw_output(session);
        let flat = &out[3];
        let found = flat
            .lines()
            .find(|l| l.starts_with("* SEARCH"))
            .unwrap_or_else(|| panic!("{flat}"));
        assert_eq!(found.split_whitespace().count(), 2 + 300, "{found}");
        let heavy = &out[4];
        assert!(heavy.starts_with("h NO [LIMIT]"), "{heavy}");
    }
}

#[test]
fn failed_logins_are_budgeted_per_address_across_connections() {
    let gw = Gateway::start("[limits]\nauth-failures-per-ip = 3\nauth-failure-delay-ms = 10\n");
    let wrong = ("l LOGIN alice@example.test wrong\r\n", "l");
    for attempt in 0..3 {
        let out = imap_raw(&gw, &[wrong]);
        assert!(
            out[1].contains("l NO [AUTHENTICATIONFAILED]"),
            "{attempt}: {}",
            out[1]
        );
    }
    // A fresh connection from the same address: refused unchecked, the right password too.
    let out = imap_raw(&gw, &[wrong, LOGIN]);
    assert!(out[1].contains("l NO [UNAVAILABLE]"), "{}", out[1]);
    assert!(out[2].contains("l NO [UNAVAILABLE]"), "{}", out[2]);
    // SMTP AUTH (smtplib, over STARTTLS) from that address is refused as well, with 454.
    let out = std::process::Command::new("python3")
        .arg(mailgate_e2e::root().join("tests/e2e/clients/submit.py"))
        .args([
            &gw.submission.to_string(),
            "alice@example.test",
            "pw-alice",
            "bob@example.test",
        ])
        .output()
        .expect("submit.py");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("454"), "{stderr}");
}

#[test]
fn unknown_recipients_slow_down_then_end_the_session() {
    let gw = Gateway::start(
        "[limits]\nrcpt-errors-before-delay = 2\nrcpt-error-delay-ms = 300\nmax-rcpt-errors = 5\n",
    );
    let (mut smtp, _) = RawSmtp::connect(gw.inbound);
    smtp.cmd("EHLO client.test");
    assert!(smtp.cmd("MAIL FROM:<x@client.test>").starts_with("250"));
    let mut took = Vec::new();
    for n in 0..5 {
        let started = std::time::Instant::now();
        let reply = smtp.cmd(&format!("RCPT TO:<nobody{n}@example.test>"));
        took.push(started.elapsed());
        assert!(reply.starts_with("550 5.1.1"), "{n}: {reply}");
    }
    // The third refusal onwards waits, longer each time.
    assert!(took[2] >= std::time::Duration::from_millis(300), "{took:?}");
    assert!(took[4] >= std::time::Duration::from_millis(900), "{took:?}");
    let reply = smtp.cmd("RCPT TO:<nobody5@example.test>");
    assert!(reply.starts_with("421 4.7.0"), "{reply}");
    assert_eq!(smtp.reply(), "", "closed");
    // Known recipients in a new session are unaffected.
    let (mut smtp, _) = RawSmtp::connect(gw.inbound);
    smtp.cmd("EHLO client.test");
    smtp.cmd("MAIL FROM:<x@client.test>");
    assert!(smtp.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
}

/// Sends `bytes` one at a time, `gap` apart, until the server closes the connection or all
/// are sent; what the server said, and whether it closed.
fn trickle(
    stream: &mut std::net::TcpStream,
    bytes: &[u8],
    gap: std::time::Duration,
) -> (String, bool) {
    use std::io::{Read, Write};
    stream.set_nonblocking(true).expect("nonblocking");
    let mut said = Vec::new();
    let mut buf = [0u8; 1024];
    for &b in bytes {
        if stream.write_all(&[b]).is_err() {
            return (String::from_utf8_lossy(&said).into_owned(), true);
        }
        std::thread::sleep(gap);
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return (String::from_utf8_lossy(&said).into_owned(), true),
                Ok(n) => said.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
    }
    (String::from_utf8_lossy(&said).into_owned(), false)
}

#[test]
fn clients_that_trickle_bytes_are_cut_off() {
    let gw = Gateway::start(
        "[limits]\ncommand-timeout-secs = 2\nmin-data-rate = 1000\nmin-data-rate-grace-secs = 1\n",
    );
    // A command line that never ends, one byte every 200 ms: bounded by the command timeout
    // as a whole, not per byte.
    let (mut smtp, _) = RawSmtp::connect(gw.inbound);
    let (said, closed) = trickle(
        smtp.stream(),
        &[b'x'; 100],
        std::time::Duration::from_millis(200),
    );
    assert!(closed && said.contains("421"), "{said:?}");
    // Message data slower than 1000 bytes a second after a second of grace.
    let mut smtp = in_transaction(&gw);
    assert!(smtp.cmd("DATA").starts_with("354"));
    let (said, closed) = trickle(
        smtp.stream(),
        &[b'y'; 100],
        std::time::Duration::from_millis(100),
    );
    assert!(closed && said.contains("421 4.4.2"), "{said:?}");
    assert!(gw.mailbox("alice@example.test").is_empty());
}

#[test]
fn idle_imap_clients_cannot_take_the_slots_smtp_needs() {
    let gw = Gateway::start("[limits]\nmax-imap-connections = 2\nlogin-timeout-secs = 2\n");
    use std::io::Read;
    let connect = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.imap)).expect("imap");
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).expect("greeting");
        (s, String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    // Two sessions of our own (the start-up port probes may hold a slot for a moment).
    let mut held = Vec::new();
    assert!(wait_until(10, || {
        let (s, greeting) = connect();
        if greeting.starts_with("* OK") {
            held.push(s);
        }
        held.len() == 2
    }));
    let mut first = held.remove(0);
    let mut second = held.remove(0);
    // The IMAP slots are full of clients that have not logged in: the oldest is closed to make
    // room for the new one, which is served.
    let (_third, greeting) = connect();
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let mut rest = String::new();
    let _ = first.read_to_string(&mut rest);
    assert!(!rest.contains("* OK"), "{rest:?}");
    assert_alive(&gw);
    // Not logged in within the login timeout: disconnected.
    let mut rest = String::new();
    let _ = second.read_to_string(&mut rest);
    assert!(rest.contains("* BYE"), "{rest:?}");
}

/// Alice's Maildir with `tmp` a plain file: every delivery into it fails, as a full or broken
/// disk would make it, even for root.
fn break_maildir(gw: &Gateway) -> std::path::PathBuf {
    let maildir = gw.data().join("mail/example.test/alice");
    std::fs::create_dir_all(&maildir).expect("maildir");
    let tmp = maildir.join("tmp");
    std::fs::write(&tmp, "not a directory").expect("break");
    tmp
}

fn queue_list(gw: &Gateway) -> String {
    let run = gw.cli(&["queue", "list"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run.stdout
}

#[test]
fn failed_local_delivery_is_retried_by_queue_retry_and_delivered_once() {
    let gw = Gateway::start("[queue]\nretry = [\"1h\"]\n");
    let tmp = break_maildir(&gw);
    let reply = send(
        &gw,
        "alice@example.test",
        "Subject: kept\r\n\r\nnot lost\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");
    let mut listed = String::new();
    assert!(
        wait_until(10, || {
            listed = queue_list(&gw);
            listed.contains("local delivery")
        }),
        "{listed}"
    );
    assert!(
        !listed.contains(" now"),
        "next attempt is scheduled, not 'now': {listed}"
    );
    std::fs::remove_file(&tmp).expect("repair");
    let run = gw.cli(&["queue", "retry", "--all"]);
    assert!(run.stdout.contains('1'), "{}", run.stdout);
    let mail = gw.wait_mailbox("alice@example.test", 1);
    assert!(mail[0].contains("not lost"));
    assert!(wait_until(10, || queue_list(&gw).contains("-- 0 message(s)")));
    // Asking again changes nothing: still one copy.
    gw.cli(&["queue", "retry", "--all"]);
    assert_eq!(gw.settled_mailbox("alice@example.test").len(), 1);
}

#[test]
fn failed_local_delivery_is_retried_on_the_queue_schedule() {
    let gw = Gateway::start("[queue]\nretry = [\"1s\"]\n");
    let tmp = break_maildir(&gw);
    assert!(send(&gw, "alice@example.test", "Subject: later\r\n\r\nlater\r\n").starts_with("250"));
    assert!(wait_until(10, || queue_list(&gw).contains("local delivery")));
    std::fs::remove_file(&tmp).expect("repair");
    let mail = gw.wait_mailbox("alice@example.test", 1);
    assert!(mail[0].contains("later"));
    assert_eq!(gw.settled_mailbox("alice@example.test").len(), 1);
}

#[test]
fn idle_reports_a_delivery_as_it_happens() {
    let gw = Gateway::start("");
    store_directly(&gw, "0.first", "Subject: first\r\n\r\nfirst\r\n");
    let idling = gw.dir.path().join("idling");
    let steps: Vec<(String, String)> = vec![
        (LOGIN.0.into(), "l".into()),
        ("s SELECT INBOX\r\n".into(), "s".into()),
        ("i IDLE\r\n".into(), "+".into()),
        (String::new(), format!("!{}", idling.display())),
        (String::new(), "~2 EXISTS".into()),
        ("DONE\r\n".into(), "i".into()),
    ];
    let session = imap_raw_background(&gw, &steps);
    // Deliver once the session idles (it tells by creating `idling`).
    assert!(wait_until(20, || idling.exists()));
    assert!(send(
        &gw,
        "alice@example.test",
        "Subject: second\r\n\r\nsecond\r\n"
    )
    .starts_with("250"));
    let out = session.wait_with_output().expect("output");
    let out: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        out[5].as_str().unwrap_or_default().contains("* 2 EXISTS"),
        "{out}"
    );
    assert!(
        out[6].as_str().unwrap_or_default().contains("i OK"),
        "{out}"
    );
}

#[test]
fn deeply_nested_search_and_fetch_lists_are_refused() {
    let gw = Gateway::start("");
    store_directly(&gw, "0.one", "Subject: one\r\n\r\nbody\r\n");
    let nested = format!("n SEARCH {}ALL{}\r\n", "(".repeat(5_000), ")".repeat(5_000));
    let nots = format!("m SEARCH {}ALL\r\n", "NOT ".repeat(5_000));
    let deep_part = format!("p FETCH 1 BODY[{}1]\r\n", "1.".repeat(5_000));
    let out = imap_raw(
        &gw,
        &[
            LOGIN,
            ("s SELECT INBOX\r\n", "s"),
            (&nested, "n"),
            (&nots, "m"),
            (&deep_part, "p"),
            ("z NOOP\r\n", "z"),
        ],
    );
    assert!(out[3].starts_with("n BAD"), "{}", out[3]);
    assert!(out[4].starts_with("m BAD"), "{}", out[4]);
    // A section path deeper than any part: answered (empty), not a crash.
    assert!(out[5].contains("p OK"), "{}", out[5]);
    assert!(out[6].contains("z OK"), "{}", out[6]);
    assert_alive(&gw);
}

// ---- Round two: every request's memory, CPU and time bounded (under an address-space limit) ----

use mailgate_e2e::Responsiveness;

/// A message of `levels` quoted-printable `message/rfc822` parts, each inside the one before,
/// about `target` bytes long: each level escapes the `=` signs of the level below (`=3D`), so
/// every decoded level is nearly as long as the whole message. Lines stay under 1 000 bytes.
fn nested_quoted_printable(levels: usize, target: usize) -> Vec<u8> {
    let line = "=y".repeat(9);
    // Each `=` grows by two bytes a level.
    let per_line = 9 * (1 + 2 * levels) + 11;
    let mut raw = b"Subject: inner\r\n\r\n".to_vec();
    for _ in 0..target / per_line {
        raw.extend_from_slice(line.as_bytes());
        raw.extend_from_slice(b"\r\n");
    }
    for _ in 0..levels {
        let mut outer = b"Subject: wrapper\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n".to_vec();
        for &b in &raw {
            match b {
                b'=' => outer.extend_from_slice(b"=3D"),
                b => outer.push(b),
            }
        }
        raw = outer;
    }
    raw
}

/// One multipart of `n` small text parts.
fn wide_multipart(n: usize) -> Vec<u8> {
    let mut raw =
        b"From: wide@client.test\r\nSubject: wide\r\nContent-Type: multipart/mixed; boundary=w\r\n\r\n"
            .to_vec();
    for _ in 0..n {
        raw.extend_from_slice(b"--w\r\n\r\nx\r\n");
    }
    raw.extend_from_slice(b"--w--\r\n");
    raw
}

/// Sends `data` (CRLF, no line starting with a dot) as one message; the reply to its end.
fn send_bytes(port: u16, data: &[u8]) -> String {
    let (mut smtp, _) = RawSmtp::connect(port);
    smtp.cmd("EHLO client.test");
    assert!(smtp
        .cmd("MAIL FROM:<sender@client.test>")
        .starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(data);
    smtp.send(b".\r\n");
    let reply = smtp.reply();
    smtp.cmd("QUIT");
    reply
}

#[test]
fn nested_encoded_messages_are_refused_without_stalling_other_clients() {
    let _heavy = mailgate_e2e::exclusive();
    let mut gw = Gateway::builder().bounded().start();
    let data = std::sync::Arc::new(nested_quoted_printable(48, 21 << 20));
    assert!(data.len() > 20 << 20, "{}", data.len());
    let watch = Responsiveness::watch(gw.inbound, gw.imap);
    let port = gw.inbound;
    let senders: Vec<_> = (0..3)
        .map(|_| {
            let data = data.clone();
            std::thread::spawn(move || send_bytes(port, &data))
        })
        .collect();
    for sender in senders {
        let reply = sender.join().expect("sender");
        assert!(reply.starts_with("554 5.6.0"), "{reply}");
        assert!(reply.contains("encoded inner messages"), "{reply}");
    }
    watch.finish();
    assert!(gw.alive(), "{}", gw.log());
    // The same shape a few levels deep, as forwarded mail has it, is accepted.
    let reply = send_bytes(gw.inbound, &nested_quoted_printable(3, 64 << 10));
    assert!(reply.starts_with("250"), "{reply}");
}

#[test]
fn a_wide_message_is_refused_at_data_and_served_bounded_from_the_store() {
    let _heavy = mailgate_e2e::exclusive();
    let mut gw = Gateway::builder().bounded().start();
    let watch = Responsiveness::watch(gw.inbound, gw.imap);
    // Over the default bound of 10 000 parts: refused for good, not deferred.
    let reply = send_bytes(gw.inbound, &wide_multipart(100_000));
    assert!(reply.starts_with("554 5.6.0"), "{reply}");
    assert!(reply.contains("Too many MIME parts"), "{reply}");
    // Within it: accepted.
    let reply = send_bytes(gw.inbound, &wide_multipart(500));
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(gw.wait_mailbox("alice@example.test", 1).len(), 1);
    // A million parts put into the Maildir by another program (or an IMAP APPEND).
    store_directly(
        &gw,
        "9.wide",
        &String::from_utf8(wide_multipart(1_000_000)).expect("ascii"),
    );
    let out = imap_raw(
        &gw,
        &[
            LOGIN,
            ("s SELECT INBOX\r\n", "s"),
            ("f FETCH 2 (BODYSTRUCTURE RFC822.SIZE)\r\n", "f"),
            ("z LOGOUT\r\n", "z"),
        ],
    );
    // The multipart past the bound is one opaque part.
    assert!(out[3].contains("f OK"), "{}", out[3]);
    assert!(
        out[3].contains("(BODYSTRUCTURE (\"application\" \"octet-stream\""),
        "{}",
        out[3]
    );
    watch.finish();
    assert!(gw.alive(), "{}", gw.log());
}

#[test]
fn the_login_timeout_is_a_deadline_from_connect() {
    use std::io::{BufRead, BufReader, Write};
    let gw = Gateway::start("[limits]\nlogin-timeout-secs = 2\n");
    for (port, noop, bye) in [
        (gw.imap, "n NOOP\r\n", "* BYE"),
        (gw.pop3, "NOOP\r\n", "-ERR"),
    ] {
        let started = std::time::Instant::now();
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut last = String::new();
        // A command every 300 ms: each one used to start the timeout again.
        let closed = loop {
            if started.elapsed() > std::time::Duration::from_secs(10) {
                break None;
            }
            let _ = (&stream).write_all(noop.as_bytes());
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => break Some(started.elapsed()),
                Ok(_) => last = line,
                Err(_) => {}
            }
        };
        let took = closed.unwrap_or_else(|| panic!("port {port}: still open after 10 s"));
        assert!(
            took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(4),
            "port {port}: closed after {took:?}"
        );
        assert!(last.starts_with(bye), "port {port}: {last:?}");
    }
}

/// A connection from `source` (another loopback address) to the gateway's `port`, and its
/// first line.
fn connect_from(source: std::net::Ipv4Addr, port: u16) -> (std::net::TcpStream, String) {
    use std::io::{BufRead, BufReader};
    let stream = bound_connect(source, port);
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let mut line = String::new();
    let _ = BufReader::new(stream.try_clone().expect("clone")).read_line(&mut line);
    (stream, line)
}

/// std has no bind-before-connect: a socket made by hand.
fn bound_connect(source: std::net::Ipv4Addr, port: u16) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let address = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let (from, to) = (
        address(source, 0),
        address(std::net::Ipv4Addr::LOCALHOST, port),
    );
    // SAFETY: a fresh socket, plain structs passed by pointer with their length; the socket
    // is owned by the TcpStream from then on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let bound = libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), length);
        assert_eq!(
            bound,
            0,
            "bind {source}: {}",
            std::io::Error::last_os_error()
        );
        let connected = libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), length);
        assert_eq!(connected, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

#[test]
fn connections_waiting_to_log_in_are_capped_per_address() {
    use std::io::{BufRead, BufReader, Write};
    let gw = Gateway::start("[limits]\nmax-prelogin-connections-per-ip = 5\n");
    let attacker: std::net::Ipv4Addr = "127.0.0.2".parse().expect("ip");
    let mut held = Vec::new();
    // Five waiting, IMAP and POP3 together.
    for port in [gw.imap, gw.imap, gw.imap, gw.pop3, gw.pop3] {
        let (stream, greeting) = connect_from(attacker, port);
        assert!(
            greeting.starts_with("* OK") || greeting.starts_with("+OK"),
            "{greeting}"
        );
        held.push(stream);
    }
    for (port, refusal) in [
        (gw.imap, "* BYE [UNAVAILABLE]"),
        (gw.pop3, "-ERR [SYS/TEMP]"),
    ] {
        let (_, refused) = connect_from(attacker, port);
        assert!(refused.starts_with(refusal), "{refused}");
    }
    // Another address logs in as usual, over IMAP and POP3.
    let out = imap_raw(&gw, &[LOGIN, ("z LOGOUT\r\n", "z")]);
    assert!(out[1].contains("l OK"), "{}", out[1]);
    let (stream, greeting) = connect_from("127.0.0.1".parse().expect("ip"), gw.pop3);
    assert!(greeting.starts_with("+OK"), "{greeting}");
    drop(stream);
    // A login gives the place back: after one of the attacker's connections logs in, one more
    // may wait.
    let mut first = held.remove(0);
    first
        .write_all(b"l LOGIN alice@example.test pw-alice\r\n")
        .expect("login");
    let mut reader = BufReader::new(first.try_clone().expect("clone"));
    let mut line = String::new();
    while !line.starts_with("l ") {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
    }
    assert!(
        line.starts_with("l NO") || line.starts_with("l OK"),
        "{line}"
    );
}

#[test]
fn a_milter_client_sending_macros_without_end_holds_no_table() {
    let _heavy = mailgate_e2e::exclusive();
    use std::io::{Read, Write};
    let port = mailgate_e2e::free_port();
    let mut gw = Gateway::builder().bounded().config(&format!("[[listener]]\nname = \"milter\"\naddress = \"127.0.0.1:{port}\"\nprotocol = \"milter\"\n")).start();
    let before = gw.rss_kib();
    let watch = Responsiveness::watch(gw.inbound, gw.imap);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut offer = vec![0, 0, 0, 13, b'O'];
    for n in [6u32, 0x1ff, 0x1fffff] {
        offer.extend_from_slice(&n.to_be_bytes());
    }
    s.write_all(&offer).expect("negotiate");
    let mut answer = [0u8; 17];
    s.read_exact(&mut answer).expect("negotiation answer");
    // 128 MiB of macro packets, each of 512 KiB of distinct names.
    let mut name = 0u64;
    for _ in 0..256 {
        let mut body = vec![b'D', b'C'];
        while body.len() < 512 << 10 {
            body.extend_from_slice(
                format!("{{m{name}}}\0value-of-some-length-{name}\0").as_bytes(),
            );
            name += 1;
        }
        s.write_all(&(body.len() as u32).to_be_bytes())
            .expect("length");
        s.write_all(&body).expect("macros");
    }
    // Still served: a connect gets its answer.
    let mut connect = vec![b'C'];
    connect.extend_from_slice(b"client.test\0");
    connect.push(b'4');
    connect.extend_from_slice(&25u16.to_be_bytes());
    connect.extend_from_slice(b"127.0.0.9\0");
    s.write_all(&(connect.len() as u32).to_be_bytes())
        .expect("length");
    s.write_all(&connect).expect("connect");
    let mut reply = [0u8; 5];
    s.read_exact(&mut reply).expect("reply to connect");
    assert_eq!(reply[4], b'c', "{reply:?}");
    let grown = gw.rss_kib().saturating_sub(before);
    assert!(grown < 64 << 10, "grew by {grown} KiB");
    watch.finish();
    assert!(gw.alive(), "{}", gw.log());
}

/// One milter packet: its length, then the command and its data.
fn milter_packet(command: u8, data: &[u8]) -> Vec<u8> {
    let mut packet = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    packet.push(command);
    packet.extend_from_slice(data);
    packet
}

/// The next milter response: its command byte and data.
fn milter_response(s: &mut std::net::TcpStream) -> (u8, Vec<u8>) {
    use std::io::Read;
    let mut length = [0u8; 4];
    s.read_exact(&mut length).expect("response length");
    let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
    s.read_exact(&mut body).expect("response");
    (body[0], body[1..].to_vec())
}

#[test]
fn a_milter_client_sending_recipients_without_end_gets_the_smtp_limits() {
    let _heavy = mailgate_e2e::exclusive();
    use std::io::Write;
    let port = mailgate_e2e::free_port();
    let mut gw = Gateway::builder().bounded().config(&format!("[[listener]]\nname = \"milter\"\naddress = \"127.0.0.1:{port}\"\nprotocol = \"milter\"\n")).start();
    let before = gw.rss_kib();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut offer = Vec::new();
    for n in [6u32, 0x1ff, 0x1fffff] {
        offer.extend_from_slice(&n.to_be_bytes());
    }
    s.write_all(&milter_packet(b'O', &offer))
        .expect("negotiate");
    assert_eq!(milter_response(&mut s).0, b'O');
    let mut connect = b"client.test\0".to_vec();
    connect.push(b'4');
    connect.extend_from_slice(&25u16.to_be_bytes());
    connect.extend_from_slice(b"127.0.0.9\0");
    s.write_all(&milter_packet(b'C', &connect))
        .expect("connect");
    assert_eq!(milter_response(&mut s).0, b'c');
    s.write_all(&milter_packet(b'H', b"client.test\0"))
        .expect("helo");
    assert_eq!(milter_response(&mut s).0, b'c');
    // A sender longer than any path is refused, then a proper one taken.
    let long = format!("<{}@example.test>\0", "s".repeat(600 << 10));
    s.write_all(&milter_packet(b'M', long.as_bytes()))
        .expect("mail");
    let (answer, text) = milter_response(&mut s);
    assert_eq!(answer, b'y');
    assert!(
        text.starts_with(b"501"),
        "{}",
        String::from_utf8_lossy(&text)
    );
    s.write_all(&milter_packet(b'M', b"<sender@example.test>\0"))
        .expect("mail");
    assert_eq!(milter_response(&mut s).0, b'c');
    // 100 recipients (the default max-recipients) are taken; every further one, and one of
    // 600 KiB, is refused: the session keeps no more of them.
    let mut answers = Vec::new();
    for n in 0..2_000 {
        let rcpt = format!("<r{n}-{}@example.test>\0", "x".repeat(200));
        s.write_all(&milter_packet(b'R', rcpt.as_bytes()))
            .expect("rcpt");
        answers.push(milter_response(&mut s));
    }
    s.write_all(&milter_packet(b'R', long.as_bytes()))
        .expect("rcpt");
    let (answer, text) = milter_response(&mut s);
    assert_eq!(answer, b'y');
    assert!(
        text.starts_with(b"501"),
        "{}",
        String::from_utf8_lossy(&text)
    );
    assert!(answers[..100].iter().all(|(a, _)| *a == b'c'));
    assert!(
        answers[100..]
            .iter()
            .all(|(a, text)| *a == b'y' && text.starts_with(b"452 4.5.3")),
        "{:?}",
        answers[100]
    );
    let grown = gw.rss_kib().saturating_sub(before);
    assert!(grown < 64 << 10, "grew by {grown} KiB");
    assert!(gw.alive(), "{}", gw.log());
}

#[test]
fn delivery_never_writes_through_a_linked_maildir_directory() {
    let gw = Gateway::start("");
    let outside = tempfile::tempdir().expect("outside");
    let maildir = gw.data().join("mail/example.test/alice");
    std::fs::create_dir_all(maildir.join("tmp")).expect("tmp");
    std::fs::create_dir_all(maildir.join("cur")).expect("cur");
    std::os::unix::fs::symlink(outside.path(), maildir.join("new")).expect("link");
    let reply = send(
        &gw,
        "alice@example.test",
        "Subject: linked\r\n\r\nhello\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");
    assert!(
        wait_until(10, || gw.log().contains("not a directory of its own")),
        "{}",
        gw.log()
    );
    assert_eq!(
        std::fs::read_dir(outside.path()).expect("outside").count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(maildir.join("tmp")).expect("tmp").count(),
        0
    );
    // The message stays queued, not lost.
    let queue = gw.cli(&["queue", "list"]);
    assert!(
        queue.stdout.contains("alice@example.test"),
        "{}{}",
        queue.stdout,
        queue.stderr
    );
    assert_alive(&gw);
}

#[test]
fn an_over_capacity_refusal_on_an_implicit_tls_port_is_read_inside_tls() {
    let gw = Gateway::start("[limits]\nmax-connections-per-ip = 2\n");
    let script = r#"
import socket, ssl, sys, time
port = int(sys.argv[1])
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
# Until the deadline: the server may not have seen the last attempt's connections close yet.
deadline = time.time() + 20
while time.time() < deadline:
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw) as tls:
                text = tls.recv(200).decode()
    except (ssl.SSLError, OSError) as e:
        text = f"error: {e}"
    for h in held:
        h.close()
    print(text)
    if "Too many" in text:
        break
    time.sleep(0.3)
"#;
    for port in [gw.imaps, gw.pop3s, gw.smtps] {
        let out = std::process::Command::new("python3")
            .args(["-c", script, &port.to_string()])
            .output()
            .expect("python3");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Too many connections from your address"),
            "port {port}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn smtp_commands_that_move_no_mail_are_limited_between_messages() {
    let gw = Gateway::start("[limits]\nmax-junk-commands = 5\n");
    let (mut smtp, _) = RawSmtp::connect(gw.inbound);
    assert!(smtp.cmd("EHLO client.test").starts_with("250"));
    for command in ["NOOP", "RSET", "VRFY alice", "HELP", "EHLO again.test"] {
        assert!(!smtp.cmd(command).starts_with("421"), "{command}");
    }
    // A message resets the count.
    assert!(smtp
        .cmd("MAIL FROM:<sender@client.test>")
        .starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(b"Subject: between\r\n\r\nhi\r\n.\r\n");
    assert!(smtp.reply().starts_with("250"));
    for _ in 0..5 {
        assert!(smtp.cmd("NOOP").starts_with("250"));
    }
    // One more without mail: closed.
    let reply = smtp.cmd("EHLO third.test");
    assert!(reply.starts_with("421 4.7.0"), "{reply}");
    assert_alive(&gw);
}

/// A message whose Content-Type and Content-Disposition each carry `n` RFC 2231
/// continuations (`name*0="a0"; name*1="a1"; ...`), folded one a line, in reverse order.
fn continuations(n: usize) -> Vec<u8> {
    let params: String = (0..n)
        .rev()
        .map(|i| format!(";\r\n name*{i}=\"a{i}\""))
        .collect();
    let disposition = params.replace("name", "filename");
    format!(
        "From: c@client.test\r\nSubject: c\r\nMIME-Version: 1.0\r\n\
         Content-Type: application/octet-stream{params}\r\n\
         Content-Disposition: attachment{disposition}\r\n\r\nbody\r\n"
    )
    .into_bytes()
}

#[test]
fn many_parameter_continuations_are_refused_promptly_and_served_bounded() {
    let _heavy = mailgate_e2e::exclusive();
    let mut gw = Gateway::builder().bounded().start();
    let watch = Responsiveness::watch(gw.inbound, gw.imap);
    // 8 MB: the server used to spend minutes merging these; now it never parses them.
    let big = continuations(170_000);
    assert!(big.len() > 8 << 20, "{}", big.len());
    let started = std::time::Instant::now();
    // Over the header section's bound, it is refused before any MIME parse.
    let reply = send_bytes(gw.inbound, &big);
    assert!(reply.starts_with("554 5.6.0"), "{reply}");
    assert!(reply.contains("header section"), "{reply}");
    // Within it (10 000 continuations, ~500 KB), the parameter bound refuses it.
    let reply = send_bytes(gw.inbound, &continuations(10_000));
    assert!(reply.starts_with("554 5.6.0"), "{reply}");
    assert!(reply.contains("Too many parameters"), "{reply}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // A long file name in a few tens of continuations is ordinary mail: accepted.
    let reply = send_bytes(gw.inbound, &continuations(40));
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(gw.wait_mailbox("alice@example.test", 1).len(), 1);
    // The big one put into the Maildir by another program (or an IMAP APPEND).
    store_directly(&gw, "9.params", &String::from_utf8(big).expect("ascii"));
    let started = std::time::Instant::now();
    let out = imap_raw(
        &gw,
        &[
            LOGIN,
            ("s SELECT INBOX\r\n", "s"),
            ("f FETCH 1:2 (BODYSTRUCTURE)\r\n", "f"),
            ("z LOGOUT\r\n", "z"),
        ],
    );
    assert!(out[3].contains("f OK"), "{}", out[3]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // The stored one is opaque bytes; the ordinary one keeps its merged file name.
    let whole: String = (0..40).map(|i| format!("a{i}")).collect();
    assert!(out[3].contains(&whole), "{}", out[3]);
    assert!(
        out[3].contains("* 2 FETCH (BODYSTRUCTURE (\"application\" \"octet-stream\" NIL"),
        "{}",
        out[3]
    );
    assert!(!out[3].contains("a169999"), "{}", out[3]);
    watch.finish();
    assert!(gw.alive(), "{}", gw.log());
}

/// How long until the server closes `stream`, which sends nothing more; None if still open
/// after 15 s.
fn closed_after(stream: &mut std::net::TcpStream) -> Option<std::time::Duration> {
    use std::io::Read;
    let started = std::time::Instant::now();
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .expect("timeout");
    let mut buffer = [0u8; 4096];
    while started.elapsed() < std::time::Duration::from_secs(15) {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

/// D7: a TLS handshake that never starts is inside the time to log in, on the implicit-TLS
/// ports and after STARTTLS (IMAP) and STLS (POP3) alike.
#[test]
fn a_stalled_tls_handshake_is_closed_at_the_login_deadline() {
    use std::io::{BufRead, BufReader, Write};
    let gw = Gateway::start("[limits]\nlogin-timeout-secs = 2\n");
    // JMAP (HTTPS) too: its login window opens at accept like IMAP's and POP3's.
    for port in [gw.imaps, gw.pop3s, gw.jmap] {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let took = closed_after(&mut stream).unwrap_or_else(|| panic!("{port}: still open"));
        assert!(took < std::time::Duration::from_secs(4), "{port}: {took:?}");
    }
    for (port, command, ok) in [
        (gw.imap, "s STARTTLS\r\n", "s OK"),
        (gw.pop3, "STLS\r\n", "+OK"),
    ] {
        let started = std::time::Instant::now();
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("greeting");
        stream.write_all(command.as_bytes()).expect("starttls");
        line.clear();
        while !line.starts_with(ok) {
            line.clear();
            assert!(reader.read_line(&mut line).expect("reply") > 0, "{port}");
        }
        drop(reader);
        assert!(closed_after(&mut stream).is_some(), "{port}: still open");
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(4), "{port}: {took:?}");
    }
}

/// D7: connections on an implicit-TLS port count as waiting to log in from accept, before
/// their handshake: beyond the per-address cap they are refused (in TLS), while a client
/// from another address logs in over IMAPS and POP3S.
#[test]
fn stalled_tls_handshakes_count_towards_the_prelogin_cap() {
    let gw =
        Gateway::start("[limits]\nmax-prelogin-connections-per-ip = 5\nlogin-timeout-secs = 5\n");
    let script = r#"
import imaplib, poplib, socket, ssl, sys
imaps, pop3s = int(sys.argv[1]), int(sys.argv[2])
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
for port in (imaps, pop3s):
    held = [socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.5", 0))
            for _ in range(5)]
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5,
                                       source_address=("127.0.0.5", 0))
        with context.wrap_socket(raw) as tls:
            print("refused:", tls.recv(200).decode().strip())
    except (ssl.SSLError, OSError) as e:
        print("refused: error", e)
    if port == imaps:
        client = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=5)
        print("imaps login:", client.login("alice@example.test", "pw-alice")[0])
        client.logout()
    else:
        client = poplib.POP3_SSL("127.0.0.1", port, context=context, timeout=5)
        client.user("alice@example.test")
        print("pop3s login:", client.pass_("pw-alice").decode())
        client.quit()
    for h in held:
        h.close()
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &gw.imaps.to_string(), &gw.pop3s.to_string()])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    let refusals: Vec<&str> = text.lines().filter(|l| l.starts_with("refused:")).collect();
    assert_eq!(
        refusals.len(),
        2,
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for refusal in refusals {
        assert!(refusal.contains("waiting to log in"), "{text}");
    }
    assert!(text.contains("imaps login: OK"), "{text}");
    assert!(text.contains("pop3s login: +OK"), "{text}");
}

// A store outage is temporary everywhere (RFC 5530 UNAVAILABLE, RFC 3206 SYS/TEMP, HTTP 503):
// a client told "permanent" would give up on mail that is still there.

/// Replaces `dir` (a Maildir's `cur/` or `tmp/`) by a plain file: the folder cannot be read
/// or written, as with a disk gone — and unlike `chmod 000`, also for root.
fn replace_by_file(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::write(dir, "not a directory").expect("break");
}

/// POP3 USER/PASS as alice with poplib: the server's answer to PASS.
fn pop3_login_answer(gw: &Gateway) -> String {
    let script = "import poplib, ssl, sys\n\
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
pop = poplib.POP3_SSL('127.0.0.1', int(sys.argv[1]), context=ctx, timeout=20)\n\
pop.user('alice@example.test')\n\
try:\n    print(pop.pass_('pw-alice').decode())\nexcept poplib.error_proto as e:\n    print(e.args[0].decode())\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script, &gw.pop3s.to_string()])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A JMAP API request as alice: (HTTP status, body).
fn jmap_post(gw: &Gateway, body: &str) -> Value {
    let file = gw.dir.path().join("outage-request.json");
    std::fs::write(&file, body).expect("request");
    let out = mailgate_e2e::python(
        "jmap_hostile.py",
        &[
            "post",
            &gw.jmap.to_string(),
            "alice@example.test",
            "pw-alice",
            "/jmap/api/",
            &file.to_string_lossy(),
        ],
    );
    serde_json::from_str(&out).expect("client JSON")
}

#[test]
fn a_maildir_that_cannot_be_read_gets_temporary_answers_in_every_protocol() {
    let gw = Gateway::start("");
    store_directly(
        &gw,
        "1700000000.M1P1.kept",
        "Subject: kept\r\n\r\nstill here\r\n",
    );
    let maildir = gw.data().join("mail/example.test/alice");
    // The first login makes the special-use folders, Archive among them.
    let login = imap_raw(&gw, &[LOGIN, ("n NOOP\r\n", "n")]);
    assert!(login[2].contains("n OK"), "{}", login[2]);
    assert!(maildir.join(".Archive/cur").is_dir());
    replace_by_file(&maildir.join("cur"));
    // Variant: a folder that can be read but not written (its tmp/ gone).
    replace_by_file(&maildir.join(".Archive/tmp"));
    let out = imap_raw(
        &gw,
        &[
            LOGIN,
            ("s SELECT INBOX\r\n", "s"),
            ("t STATUS INBOX (MESSAGES)\r\n", "t"),
            ("a APPEND Archive {5+}\r\nhello\r\n", "a"),
        ],
    );
    for (step, tag) in [(2, "s"), (3, "t"), (4, "a")] {
        let line = out[step]
            .lines()
            .find(|l| l.starts_with(&format!("{tag} ")))
            .unwrap_or_default();
        assert!(
            line.starts_with(&format!("{tag} NO [UNAVAILABLE]")),
            "{line}"
        );
    }
    let pop = pop3_login_answer(&gw);
    assert!(pop.starts_with("-ERR [SYS/TEMP]"), "{pop}");
    let account = "uYWxpY2VAZXhhbXBsZS50ZXN0";
    let request = format!(
        r#"{{"using":["urn:ietf:params:jmap:core","urn:ietf:params:jmap:mail"],
        "methodCalls":[["Mailbox/get",{{"accountId":"{account}"}},"m"]]}}"#
    );
    let answer = jmap_post(&gw, &request);
    assert_eq!(answer["status"], 503, "{answer}");
    assert_eq!(
        answer["json"]["type"], "urn:ietf:params:jmap:error:serverUnavailable",
        "{answer}"
    );
    // Repaired, everything is served again: nothing was lost or refused for good.
    for dir in ["cur", ".Archive/tmp"] {
        std::fs::remove_file(maildir.join(dir)).expect("repair");
        std::fs::create_dir(maildir.join(dir)).expect("repair");
    }
    let out = imap_raw(&gw, &[LOGIN, ("s SELECT INBOX\r\n", "s")]);
    assert!(
        out[2].contains("1 EXISTS") && out[2].contains("s OK"),
        "{}",
        out[2]
    );
    let answer = jmap_post(&gw, &request);
    assert_eq!(answer["status"], 200, "{answer}");
    assert_alive(&gw);
}

// What a session keeps of a retrieve-stage plugin's edits is bounded: past 16 MiB of edited
// copies, the rest wait in a spill file of the session's own.

/// The server's peak resident memory so far, in KiB.
fn peak_rss_kib(gw: &Gateway) -> u64 {
    let pid = gw.pid().expect("running");
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn edited_copies_of_a_large_mailbox_are_not_all_held_in_memory() {
    let gw = Gateway::start(&probe_plugin(
        "viewer",
        "retrieve",
        "action.retrieve = \"tag\"",
    ));
    // Warm up: the plugin instantiated, one POP3 and one IMAP session served.
    gw.store_directly(
        "bob@example.test",
        "1700000000.M0P1.warm",
        b"Subject: w\r\n\r\nw\r\n",
    );
    let pop = |user: &str, pass: &str, steps: &[&str]| {
        let mut args = vec![gw.pop3s.to_string(), "ssl".into(), user.into(), pass.into()];
        args.extend(steps.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        python("pop3_client.py", &args)
    };
    pop("bob@example.test", "pw-bob", &["retr:1", "quit"]);
    let line = "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\r\n";
    let body = line.repeat((2 << 20) / line.len());
    for i in 0..40 {
        let raw = format!("Subject: big {i}\r\nMessage-ID: <big{i}@x>\r\n\r\n{body}");
        gw.store_directly(
            "alice@example.test",
            &format!("17000000{i:02}.M1P1.big"),
            raw.as_bytes(),
        );
    }
    let before = peak_rss_kib(&gw);
    // 40 edited copies of 2 MiB (80 MiB): POP3 lists them all at login, and RETR of the
    // last (spilled) one gives the edited copy whole.
    let out = pop(
        "alice@example.test",
        "pw-alice",
        &["stat", "retr:40", "quit"],
    );
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines[0]["out"][0], 40, "{}", lines[0]);
    let hex = lines[1]["out"]["message"].as_str().unwrap_or_default();
    let retr: Vec<u8> = (0..hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect();
    let text = String::from_utf8_lossy(&retr);
    assert!(text.contains("X-Probe: viewer\r\n"), "edited copy");
    assert!(
        text.contains("Subject: big 39") && text.ends_with(&body),
        "whole"
    );
    // Variant: IMAP SELECT screens the same 40 and FETCH of the first and last gives both.
    let out = imap_raw(
        &gw,
        &[
            LOGIN,
            ("s SELECT INBOX\r\n", "s"),
            (
                "f FETCH 1,40 (BODY.PEEK[HEADER.FIELDS (X-Probe Subject)])\r\n",
                "f",
            ),
        ],
    );
    assert!(
        out[3].contains("big 0") && out[3].contains("big 39"),
        "{}",
        out[3]
    );
    assert_eq!(out[3].matches("X-Probe: viewer").count(), 2, "{}", out[3]);
    let peak = peak_rss_kib(&gw);
    eprintln!("peak RSS {before} -> {peak} KiB");
    // Held whole, the copies alone were 80 MiB in each session.
    assert!(
        peak < before + (60 << 10),
        "peak RSS {before} -> {peak} KiB"
    );
    assert_alive(&gw);
}

/// A TLS client with a receive window of a few KiB (a loopback window is megabytes otherwise,
/// and logins need TLS): argv port, login steps as JSON [[send, wait-for]...], the commands to
/// pipeline, the text to read up to, and "now" or "hold". With "hold" it prints "sent" and
/// reads nothing until a line comes on its stdin. Then it reads until the text ("found"), the
/// server's close ("closed") or 30 s of silence ("open"), and prints which and the bytes read.
const NARROW_CLIENT: &str = r#"
import json, socket, ssl, sys
port, steps, pipeline, stop, mode = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4].encode(), sys.argv[5]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
raw = socket.socket()
raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
raw.settimeout(30)
raw.connect(("127.0.0.1", port))
sock = context.wrap_socket(raw)
got = b""
for send, token in steps:
    sock.sendall(send.encode())
    while token.encode() not in got:
        data = sock.recv(65536)
        if not data:
            sys.exit("closed before %r: %r" % (token, got[-200:]))
        got += data
    got = got[got.index(token.encode()) + len(token):]
sock.sendall(pipeline.encode())
if mode == "hold":
    print("sent", flush=True)
    sys.stdin.readline()
end, total = "open", 0
try:
    while stop not in got:
        data = sock.recv(65536)
        if not data:
            end = "closed"
            break
        total += len(data)
        got = got[-len(stop):] + data
    else:
        end = "found"
except socket.timeout:
    end = "open"
except (ConnectionError, ssl.SSLError):
    end = "closed"
print(end, total, flush=True)
"#;

/// A [`NARROW_CLIENT`] left holding its pipeline unread; `release` lets it read.
struct Narrow(Option<std::process::Child>);

impl Drop for Narrow {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Narrow {
    fn hold(port: u16, steps: &[(&str, &str)], pipeline: &str, stop: &str) -> Narrow {
        use std::io::BufRead;
        let mut child = narrow_client(port, steps, pipeline, stop, "hold")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        let stdout = child.stdout.as_mut().expect("stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim(), "sent", "the client could not log in");
        Narrow(Some(child))
    }

    /// Lets the client read: "found", "closed" or "open" (see [`NARROW_CLIENT`]).
    fn release(mut self) -> String {
        use std::io::Write;
        let mut child = self.0.take().expect("held");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(b"\n").expect("release");
        }
        let out = child.wait_with_output().expect("client");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn narrow_client(
    port: u16,
    steps: &[(&str, &str)],
    pipeline: &str,
    stop: &str,
    mode: &str,
) -> std::process::Command {
    let steps = serde_json::to_string(steps).expect("json");
    let mut command = std::process::Command::new("python3");
    command
        .args(["-c", NARROW_CLIENT])
        .args([&port.to_string(), &steps, pipeline, stop, mode]);
    command
}

/// One [`NARROW_CLIENT`] run through at once: what it printed, or why it failed.
fn narrow_now(port: u16, steps: &[(&str, &str)], pipeline: &str, stop: &str) -> String {
    let out = narrow_client(port, steps, pipeline, stop, "now")
        .output()
        .expect("python3");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

const POP3_ALICE: [(&str, &str); 3] = [
    ("", "\r\n"),
    ("USER alice@example.test\r\n", "+OK"),
    ("PASS pw-alice\r\n", "+OK"),
];
const IMAP_ALICE: [(&str, &str); 3] = [
    ("", "\r\n"),
    ("l LOGIN alice@example.test pw-alice\r\n", "l OK"),
    ("s SELECT INBOX\r\n", "s OK"),
];

/// A message of about `bytes` of plain text lines.
fn big_message(bytes: usize) -> String {
    let mut raw = String::from("From: big@client.test\r\nSubject: big\r\n\r\n");
    let line = format!("{}\r\n", "x".repeat(998));
    while raw.len() < bytes {
        raw.push_str(&line);
    }
    raw
}

/// The server's peak resident memory (VmHWM), in KiB.
fn peak_kib(gw: &Gateway) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid().expect("running")))
        .expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

/// Watches the server for `secs` while an attack runs: it must live and its peak memory must
/// stay within `growth_kib` of `base_kib`. Fails as soon as either breaks.
fn watch_memory(gw: &mut Gateway, secs: u64, base_kib: u64, growth_kib: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        assert!(gw.alive(), "the server died");
        let peak = peak_kib(gw);
        assert!(
            peak <= base_kib + growth_kib,
            "peak memory {peak} KiB, {base_kib} KiB before the attack"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The sessions open on `listener`, as the metrics say.
fn active_sessions(gw: &Gateway, listener: &str) -> Option<u64> {
    let out = std::process::Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{}/metrics", gw.metrics)])
        .output()
        .expect("curl");
    let key = format!("mailgate_sessions_active{{listener=\"{listener}\"}} ");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&key)?.trim().parse().ok())
}

/// Another client is served while the attack holds: POP3 (bob) and SMTP.
fn assert_others_served(gw: &Gateway) {
    let bob = [
        ("", "\r\n"),
        ("USER bob@example.test\r\n", "+OK"),
        ("PASS pw-bob\r\n", "+OK"),
    ];
    let stat = narrow_now(gw.pop3s, &bob, "STAT\r\n", "+OK");
    assert!(stat.starts_with("found"), "{stat}");
    assert_alive(gw);
}

#[test]
fn pipelined_retr_to_a_client_that_never_reads_stays_bounded() {
    let mut gw = Gateway::builder().bounded().start();
    store_directly(&gw, "1.big:2,", &big_message(5 << 20));
    let base = peak_kib(&gw);
    // 200 replies of 5 MB each: a gigabyte if they pile up unsent.
    let pop = Narrow::hold(
        gw.pop3s,
        &POP3_ALICE,
        &"RETR 1\r\n".repeat(200),
        "\r\n.\r\n+OK",
    );
    watch_memory(&mut gw, 15, base, 100 << 10);
    assert_others_served(&gw);
    // The session was only waiting for its client: the replies come when it reads.
    let end = pop.release();
    assert!(end.starts_with("found"), "{end}");
}

#[test]
fn pipelined_listings_to_a_client_that_never_reads_stay_bounded() {
    let mut gw = Gateway::builder().bounded().start();
    for i in 0..3000 {
        store_directly(&gw, &format!("{i}.small:2,"), "Subject: s\r\n\r\nx\r\n");
    }
    let base = peak_kib(&gw);
    // Each UIDL lists 3000 messages (~80 KB): 2700 of them in 16 KiB of commands.
    let pop = Narrow::hold(gw.pop3s, &POP3_ALICE, &"UIDL\r\n".repeat(2700), "\r\n.\r\n");
    watch_memory(&mut gw, 15, base, 60 << 10);
    assert_others_served(&gw);
    let end = pop.release();
    assert!(end.starts_with("found"), "{end}");
}

#[test]
fn imap_clients_that_never_read_a_big_fetch_are_cut_off_and_free_their_slots() {
    let gw = Gateway::start("[limits]\nwrite-stall-secs = 2\nmax-imap-connections = 3\n");
    store_directly(&gw, "1.big:2,", &big_message(6 << 20));
    let stalled: Vec<Narrow> = (0..3)
        .map(|_| Narrow::hold(gw.imaps, &IMAP_ALICE, "f FETCH 1 BODY.PEEK[]\r\n", "f OK"))
        .collect();
    // Every IMAP slot is held by a client that does not read; the server must let them go.
    let cut = wait_until(30, || active_sessions(&gw, "imaps") == Some(0));
    assert!(cut, "sessions of clients that never read are still open");
    let noop = narrow_now(gw.imaps, &IMAP_ALICE, "n NOOP\r\n", "n OK");
    assert!(noop.starts_with("found"), "{noop}");
    // Each stalled client finds its connection closed before its reply ended.
    for client in stalled {
        let end = client.release();
        assert!(end.starts_with("closed"), "{end}");
    }
}

/// Standard base64 (for HTTP Basic credentials).
fn base64(bytes: &[u8]) -> String {
    const DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= group.len() {
                char::from(DIGITS[(n >> (18 - 6 * i) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

/// The GET of alice's first inbox email as a blob, by a client of its own.
fn alice_download_request(gw: &Gateway) -> String {
    let session = jmap_client(gw, "alice@example.test", &["session"]);
    let account = session["account_id"].as_str().expect("account");
    let inbox = jmap_client(gw, "alice@example.test", &["inbox"]);
    let blob = inbox["emails"][0]["blobId"].as_str().expect("blob");
    format!(
        "GET /jmap/download/{account}/{blob}/big.eml HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {}\r\n\r\n",
        base64(b"alice@example.test:pw-alice")
    )
}

#[test]
fn jmap_downloads_never_read_stay_bounded() {
    let mut gw = Gateway::builder().bounded().start();
    store_directly(&gw, "1.big:2,", &big_message(5 << 20));
    let request = alice_download_request(&gw);
    let base = peak_kib(&gw);
    // 30 downloads of 5 MB that nobody reads: 150 MB (300 with a copy each) if all are held.
    let held: Vec<Narrow> = (0..30)
        .map(|_| Narrow::hold(gw.jmap, &[], &request, "\r\n\r\n"))
        .collect();
    watch_memory(&mut gw, 10, base, 80 << 10);
    let bob = jmap_client(&gw, "bob@example.test", &["mailboxes"]);
    assert!(bob["inbox"]["id"].is_string(), "{bob}");
    assert_others_served(&gw);
    drop(held);
}

#[test]
fn jmap_downloads_are_capped_per_user_and_stalled_ones_cut() {
    let gw = Gateway::start("[limits]\nwrite-stall-secs = 10\n");
    store_directly(&gw, "1.big:2,", &big_message(6 << 20));
    let request = alice_download_request(&gw);
    let held: Vec<Narrow> = (0..4)
        // Read to the end later: the server's close, or the whole reply and silence.
        .map(|_| Narrow::hold(gw.jmap, &[], &request, "not in the reply"))
        .collect();
    // Four downloads under way: a fifth waits its turn.
    let fifth = narrow_now(gw.jmap, &[], &request, "HTTP/1.1 429");
    assert!(fifth.starts_with("found"), "{fifth}");
    // The stalled ones are cut: alice downloads again.
    let again = wait_until(30, || {
        narrow_now(gw.jmap, &[], &request, "HTTP/1.1 200").starts_with("found")
    });
    assert!(
        again,
        "alice's download slots stay taken by clients that do not read"
    );
    for client in held {
        let end = client.release();
        assert!(end.starts_with("closed"), "{end}");
    }
}

// Header sections are bounded (10 000 fields, 1 MiB): a message of millions of `X: y`
// fields cost ~34 times its size to every parse, at intake and when read back.

/// A message of `fields` one-line header fields after the usual ones.
fn crowded_header(fields: usize) -> Vec<u8> {
    let mut raw = b"From: <crowd@client.test>\r\nTo: <alice@example.test>\r\nSubject: crowded\r\nMessage-ID: <crowd@client.test>\r\n".to_vec();
    for _ in 0..fields {
        raw.extend_from_slice(b"X: y\r\n");
    }
    raw.extend_from_slice(b"\r\nbody\r\n");
    raw
}

#[test]
fn a_header_of_millions_of_fields_is_refused_at_data_and_append() {
    let _heavy = mailgate_e2e::exclusive();
    let mut gw = Gateway::builder().bounded().start();
    let watch = Responsiveness::watch(gw.inbound, gw.imap);
    let before = peak_kib(&gw);
    // 4 million fields, 22 MiB: under max-message-bytes, over the header bound.
    let data = std::sync::Arc::new(crowded_header(4_000_000));
    let port = gw.inbound;
    let senders: Vec<_> = (0..3)
        .map(|_| {
            let data = data.clone();
            std::thread::spawn(move || send_bytes(port, &data))
        })
        .collect();
    for sender in senders {
        let reply = sender.join().expect("sender");
        assert!(reply.starts_with("554 5.6.0"), "{reply}");
        assert!(reply.contains("header section"), "{reply}");
    }
    // Three DATA buffers of 22 MiB, not three parses of 34 times that.
    let grown = peak_kib(&gw).saturating_sub(before);
    eprintln!("3 x 4M header fields at DATA: VmHWM +{grown} KiB");
    assert!(grown < 400 << 10, "VmHWM grew {grown} KiB");
    // Within the bound: accepted.
    let reply = send_bytes(gw.inbound, &crowded_header(5_000));
    assert!(reply.starts_with("250"), "{reply}");
    // IMAP APPEND: refused with LIMIT before any parse; within it, stored.
    let over = String::from_utf8(crowded_header(20_000)).expect("ascii");
    let within = String::from_utf8(crowded_header(100)).expect("ascii");
    let append = |m: &str| format!("a APPEND INBOX {{{}+}}\r\n{m}\r\n", m.len());
    let (over, within) = (
        append(&over),
        append(&within).replace("a APPEND", "b APPEND"),
    );
    let out = imap_raw(&gw, &[LOGIN, (&over, "a"), (&within, "b")]);
    assert!(out[2].starts_with("a NO [LIMIT]"), "{}", out[2]);
    assert!(out[3].contains("b OK [APPENDUID"), "{}", out[3]);
    watch.finish();
    assert!(gw.alive(), "{}", gw.log());
}

#[test]
fn a_stored_header_of_millions_of_fields_is_read_back_within_bounds() {
    let _heavy = mailgate_e2e::exclusive();
    let mut gw = Gateway::builder().bounded().start();
    // Put in place by another program: 3 million fields, 18 MB.
    let raw = String::from_utf8(crowded_header(3_000_000)).expect("ascii");
    store_directly(&gw, "1700000000.M1P1.crowd", &raw);
    let watch = Responsiveness::watch(gw.inbound, gw.imap);
    let before = peak_kib(&gw);
    let out = imap_raw(
        &gw,
        &[
            LOGIN,
            ("s SELECT INBOX\r\n", "s"),
            (
                "f FETCH 1 (ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n",
                "f",
            ),
            ("z LOGOUT\r\n", "z"),
        ],
    );
    let grown = peak_kib(&gw).saturating_sub(before);
    eprintln!("FETCH of a 3M-field header: VmHWM +{grown} KiB");
    assert!(
        out[3].contains("f OK"),
        "{}",
        &out[3][..out[3].len().min(300)]
    );
    // Its first fields are read as ever.
    assert!(
        out[3].contains("\"crowded\""),
        "{}",
        &out[3][..out[3].len().min(300)]
    );
    // Was 681 MiB over the 65 MiB before.
    assert!(grown < 200 << 10, "VmHWM grew {grown} KiB");
    watch.finish();
    assert!(gw.alive(), "{}", gw.log());
}
