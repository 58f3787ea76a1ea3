//! The relay gateway end to end: the real binary between real SMTP clients and real downstream
//! servers (Postfix's smtp-sink, a private Postfix instance, a scripted sink), with MX lookups
//! answered by dnsmasq on loopback.

use mailgate_e2e::peers::{Dns, PostfixDownstream, ScriptedSink, SmtpSink};
use mailgate_e2e::{free_port, wait_until, Gateway, RawSmtp};

/// The gateway relays for loopback clients.
const RELAY_FOR_LOOPBACK: &str = r#"relay-networks = ["127.0.0.0/8"]"#;

fn route_to(port: u16) -> String {
    format!(
        r#"[[route]]
domains = ["*"]
type = "relay"
host = "127.0.0.1:{port}"
tls = "none"
"#
    )
}

/// Sends one message over plain SMTP and returns the final reply.
fn send(port: u16, from: &str, rcpts: &[&str], message: &[u8]) -> String {
    let (mut smtp, greeting) = RawSmtp::connect(port);
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(smtp.cmd("EHLO client.test").starts_with("250"));
    assert!(smtp.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    for rcpt in rcpts {
        let reply = smtp.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(reply.starts_with("250"), "RCPT {rcpt}: {reply}");
    }
    assert!(smtp.cmd("DATA").starts_with("354"));
    let mut data = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    data.extend_from_slice(b".\r\n");
    smtp.send(&data);
    let reply = smtp.reply();
    smtp.cmd("QUIT");
    reply
}

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: <sender@client.test>\r\nTo: <rcpt@remote.test>\r\nSubject: {subject}\r\n\
         Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <{subject}@client.test>\r\n\r\nFirst line.\r\n.A line starting with a dot\r\n\
         ..and one with two\r\nLast line.\r\n"
    )
    .into_bytes()
}

/// The queue as `mailgate queue list` prints it.
fn queue_list(gw: &Gateway) -> String {
    let run = gw.cli(&["queue", "list"]);
    assert_eq!(run.code, Some(0), "queue list: {}", run.stderr);
    run.stdout
}

fn queue_is_empty(gw: &Gateway) -> bool {
    queue_list(gw).contains("-- 0 message(s)")
}

#[test]
fn relays_to_smtp_sink_exactly_once() {
    let sink = SmtpSink::start();
    let gw = Gateway::builder()
        .server(RELAY_FOR_LOOPBACK)
        .config(&route_to(sink.port))
        .start();
    let sent = message("sink-once");
    let reply = send(
        gw.inbound,
        "sender@client.test",
        &["rcpt@remote.test", "other@remote.test"],
        &sent,
    );
    assert!(reply.starts_with("250 2.0.0 Ok: queued as"), "{reply}");
    assert!(
        wait_until(10, || sink.messages().len() == 1),
        "nothing reached smtp-sink:\n{}",
        gw.log()
    );
    assert!(wait_until(5, || queue_is_empty(&gw)), "{}", queue_list(&gw));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let got = sink.messages();
    assert_eq!(
        got.len(),
        1,
        "one transaction for both recipients of the same destination"
    );
    let dump = &got[0];
    assert!(dump.contains("X-Rcpt-Args: <rcpt@remote.test>"), "{dump}");
    assert!(dump.contains("X-Rcpt-Args: <other@remote.test>"), "{dump}");
    assert!(
        dump.contains("by mx.example.test (mailgate)"),
        "our trace header: {dump}"
    );
    assert!(
        dump.contains("\n.A line starting with a dot"),
        "unstuffed by the sink: {dump}"
    );
    assert!(dump.contains("\n..and one with two"), "{dump}");
}

/// A delivered message's spool file is kept in queue/spare/ and written over by the next one.
/// A short message written over a long one's file holds nothing of it: on disk, after a
/// restart, and as delivered from disk. active/ empties, the spare count stays at one.
/// (The file spool's own behaviour: the test names that design.)
#[test]
fn spool_files_are_reused_without_mixing_messages() {
    let port = free_port();
    let mut gw = Gateway::builder()
        .server(RELAY_FOR_LOOPBACK)
        .config(&format!("{}\n[queue]\nspool = \"files\"\n", route_to(port)))
        .start();
    let queue = gw.data().join("queue");
    let files = |sub: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(queue.join(sub))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let line = "x".repeat(900);
    let long = format!(
        "From: <sender@client.test>\r\nSubject: long\r\n\r\n{}",
        format!("{line}\r\n").repeat(20)
    );
    let short = "From: <sender@client.test>\r\nSubject: short\r\n\r\nshort\r\n";
    let retry = |gw: &Gateway| {
        let run = gw.cli(&["queue", "retry", "--all"]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    };
    let submit = |gw: &Gateway, text: &str| {
        let reply = send(
            gw.inbound,
            "sender@client.test",
            &["rcpt@remote.test"],
            text.as_bytes(),
        );
        assert!(reply.starts_with("250"), "{reply}");
    };
    // The long one: deferred (nothing listens), then delivered; its file becomes the spare.
    submit(&gw, &long);
    let sink = ScriptedSink::start_on("127.0.0.1", port, None);
    retry(&gw);
    assert_eq!(sink.wait(1, 20).len(), 1, "{}", gw.log());
    assert!(
        wait_until(10, || files("active").is_empty()),
        "{}",
        gw.log()
    );
    assert_eq!(files("spare").len(), 1, "the delivered file is kept");
    drop(sink);
    // The short one goes over it, and is deferred: its file is exactly envelope + message.
    submit(&gw, short);
    assert!(files("spare").is_empty(), "the spare was used");
    assert!(
        wait_until(10, || queue_list(&gw).contains("Connection refused")
            || gw.log().contains("deferred")),
        "{}",
        gw.log()
    );
    let stored = std::fs::read(&files("active")[0]).expect("spool file");
    assert!(
        stored.ends_with(b"\r\n\r\nshort\r\n"),
        "{}",
        String::from_utf8_lossy(&stored)
    );
    let leftover = |bytes: &[u8]| bytes.windows(10).any(|w| w == b"xxxxxxxxxx");
    assert!(!leftover(&stored), "nothing of the long message is left");
    // After a restart it is read from disk and delivered as it was sent.
    gw.stop();
    let sink = ScriptedSink::start_on("127.0.0.1", port, None);
    gw.launch();
    retry(&gw);
    let got = sink.wait(1, 20);
    assert_eq!(got.len(), 1, "{}", gw.log());
    let delivered = String::from_utf8_lossy(&got[0].message).into_owned();
    assert!(delivered.ends_with("\r\nshort\r\n"), "{delivered}");
    assert!(!leftover(&got[0].raw), "{delivered}");
    assert!(
        wait_until(10, || files("active").is_empty()),
        "{}",
        gw.log()
    );
    assert_eq!(files("spare").len(), 1, "kept again after delivery");
}

/// Drops the headers a downstream Postfix adds in front (Return-Path, Delivered-To, its Received)
/// and our own trace header; what remains must be the message as sent.
fn after_our_trace_header(delivered: &str) -> String {
    let start = delivered
        .find("Received: from client.test")
        .expect("our Received header");
    let rest = &delivered[start..];
    // The trace header is folded over three lines; the message starts after its last line.
    let mut lines = rest.split_inclusive('\n');
    let mut consumed = lines.next().map_or(0, str::len);
    for line in lines {
        if line.starts_with('\t') || line.starts_with(' ') {
            consumed += line.len();
        } else {
            break;
        }
    }
    rest[consumed..].to_string()
}

#[test]
fn relays_to_a_real_postfix_byte_for_byte() {
    let postfix = PostfixDownstream::start("remote.test");
    let gw = Gateway::builder()
        .server(RELAY_FOR_LOOPBACK)
        .config(&route_to(postfix.port))
        .start();
    let sent = message("postfix-identical");
    let reply = send(
        gw.inbound,
        "sender@client.test",
        &["rcpt@remote.test"],
        &sent,
    );
    assert!(reply.starts_with("250"), "{reply}");
    assert!(
        wait_until(20, || postfix.delivered().len() == 1),
        "Postfix did not deliver it:\n{}",
        gw.log()
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let delivered = postfix.delivered();
    assert_eq!(delivered.len(), 1, "delivered once");
    // Postfix's Maildir files use LF line ends.
    let expected = String::from_utf8(sent)
        .expect("ascii")
        .replace("\r\n", "\n");
    assert_eq!(after_our_trace_header(&delivered[0]), expected);
}

#[test]
fn mx_delivery_moves_on_when_the_preferred_host_is_down() {
    let port = free_port();
    let sink = ScriptedSink::start_on("127.0.0.1", port, None);
    // primary (preference 10) is 127.0.0.2, where nothing listens; backup (20) is a CNAME
    // for the host where the sink runs.
    let dns = Dns::start(&[
        "--mx-host=mx.test,primary.mx.test,10",
        "--mx-host=mx.test,backup.mx.test,20",
        "--host-record=primary.mx.test,127.0.0.2",
        "--cname=backup.mx.test,real.mx.test",
        "--host-record=real.mx.test,127.0.0.1",
    ]);
    let extra = format!(
        "[dns]\nservers = [\"127.0.0.1:{}\"]\n[relay]\nmx-port = {port}\nconnect-timeout-secs = 5\n",
        dns.port
    );
    let gw = Gateway::builder()
        .server(RELAY_FOR_LOOPBACK)
        .config(&extra)
        .start();
    let reply = send(
        gw.inbound,
        "sender@client.test",
        &["user@mx.test"],
        &message("mx"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = sink.wait(1, 20);
    assert_eq!(
        got.len(),
        1,
        "not delivered via the backup MX:\n{}",
        gw.log()
    );
    assert!(got[0].envelope.contains("user@mx.test"));
    assert!(wait_until(5, || queue_is_empty(&gw)), "{}", queue_list(&gw));
    assert!(
        gw.log().contains("127.0.0.2"),
        "the preferred MX was tried first:\n{}",
        gw.log()
    );
}

#[test]
fn downstream_down_defers_then_retry_delivers_after_a_restart() {
    let port = free_port();
    let mut gw = Gateway::builder()
        .server(RELAY_FOR_LOOPBACK)
        .config(&route_to(port))
        .start();
    let subjects = ["deferred-1", "deferred-2", "deferred-3"];
    for subject in subjects {
        let reply = send(
            gw.inbound,
            "sender@client.test",
            &["rcpt@remote.test"],
            &message(subject),
        );
        assert!(reply.starts_with("250"), "{reply}");
    }
    assert!(
        wait_until(10, || queue_list(&gw).matches("Connection refused").count()
            == 3),
        "the queue shows the error:\n{}",
        queue_list(&gw)
    );
    let listing = queue_list(&gw);
    assert!(listing.contains("-- 3 message(s)"), "{listing}");
    assert!(
        listing.contains("in 60s") || listing.contains("in 59s"),
        "first retry after a minute: {listing}"
    );
    // A hard stop: nothing is lost, the schedule survives.
    gw.kill();
    let sink = ScriptedSink::start_on("127.0.0.1", port, None);
    gw.launch();
    assert!(queue_list(&gw).contains("-- 3 message(s)"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        sink.received().is_empty(),
        "the restart kept the retry time"
    );
    let run = gw.cli(&["queue", "retry", "--all"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("3 message(s)"), "{}", run.stdout);
    let got = sink.wait(3, 15);
    assert!(wait_until(5, || queue_is_empty(&gw)), "{}", queue_list(&gw));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let got_now = sink.received();
    assert_eq!(got_now.len(), 3, "each message exactly once: {got:?}");
    for subject in subjects {
        let n = got_now
            .iter()
            .filter(|r| {
                String::from_utf8_lossy(&r.message).contains(&format!("Subject: {subject}\r\n"))
            })
            .count();
        assert_eq!(n, 1, "{subject}");
    }
}

#[test]
fn one_refused_recipient_gets_one_dsn_and_the_other_is_delivered() {
    let sink = ScriptedSink::start(Some("reject"));
    let gw = Gateway::builder()
        .server(RELAY_FOR_LOOPBACK)
        .config(&route_to(sink.port))
        .start();
    let reply = send(
        gw.inbound,
        "alice@example.test",
        &["ok@remote.test", "rejected@remote.test"],
        &message("partial"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = sink.wait(1, 10);
    assert_eq!(got.len(), 1);
    assert!(got[0].envelope.contains("ok@remote.test"));
    assert!(!got[0].envelope.contains("rejected@remote.test"));
    // The sender is local: the bounce lands in her Maildir.
    let bounces = gw.wait_mailbox("alice@example.test", 1);
    assert!(wait_until(5, || queue_is_empty(&gw)), "{}", queue_list(&gw));
    let bounces_now = gw.settled_mailbox("alice@example.test");
    assert_eq!(bounces_now.len(), 1, "one DSN: {bounces:?}");
    let dsn = &bounces_now[0];
    assert!(
        dsn.contains("Return-Path: <>"),
        "from the null sender: {dsn}"
    );
    assert!(
        dsn.contains("multipart/report; report-type=delivery-status"),
        "{dsn}"
    );
    assert!(
        dsn.contains("Final-Recipient: rfc822; rejected@remote.test"),
        "{dsn}"
    );
    assert!(dsn.contains("Status: 5.1.1"), "{dsn}");
    assert!(
        dsn.contains(
            "Diagnostic-Code: smtp; 550 5.1.1 <rejected@remote.test>: no such mailbox here"
        ),
        "{dsn}"
    );
    assert!(
        !dsn.contains("Final-Recipient: rfc822; ok@remote.test"),
        "{dsn}"
    );
    assert!(
        dsn.contains("Subject: partial"),
        "the original headers come back: {dsn}"
    );
}

#[test]
fn a_bounce_to_the_null_sender_is_dropped() {
    let sink = ScriptedSink::start(Some("reject"));
    let gw = Gateway::builder()
        .server(RELAY_FOR_LOOPBACK)
        .config(&route_to(sink.port))
        .start();
    let reply = send(
        gw.inbound,
        "",
        &["rejected@remote.test"],
        &message("null-sender"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    assert!(
        wait_until(10, || queue_is_empty(&gw)),
        "{}",
        queue_list(&gw)
    );
    assert!(
        wait_until(5, || gw.log().contains("a bounce is never sent to <>")),
        "{}",
        gw.log()
    );
    assert!(sink.received().is_empty());
}

#[test]
fn bare_cr_dot_in_a_queued_body_is_stuffed_on_the_way_out() {
    let sink = ScriptedSink::start(None);
    let mut gw = Gateway::builder()
        .server(RELAY_FOR_LOOPBACK)
        .config(&route_to(sink.port))
        .start();
    gw.stop();
    // A message that reached the queue with bare CRs (e.g. written by another tool): a dot
    // after a bare CR must not end the data, nor start a second transaction downstream.
    let id = "0000000001000010000000001";
    let body: &[u8] = b"Subject: bare cr\r\n\r\nbefore\r.\r\nMAIL FROM:<evil@x.test>\r\nafter\r\n";
    let envelope = format!(
        r#"{{"id":"{id}","sender":"sender@client.test","recipients":["rcpt@remote.test"],"received_at":{},"client_ip":"127.0.0.1","helo":"client.test","auth_user":null}}"#,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    );
    let mut file = envelope.into_bytes();
    file.push(b'\n');
    file.extend_from_slice(body);
    std::fs::write(gw.data().join("queue/active").join(id), file).expect("spool file");
    gw.launch();
    let got = sink.wait(1, 10);
    assert!(wait_until(5, || queue_is_empty(&gw)), "{}", queue_list(&gw));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let got_now = sink.received();
    assert_eq!(got_now.len(), 1, "one message, no smuggled second: {got:?}");
    let raw = &got_now[0].raw;
    assert!(
        raw.windows(8).any(|w| w == b"before\r\n"),
        "the bare CR became CRLF: {:?}",
        String::from_utf8_lossy(raw)
    );
    assert!(
        raw.windows(4).any(|w| w == b"\n..\r"),
        "the dot after it was stuffed: {:?}",
        String::from_utf8_lossy(raw)
    );
    let text = String::from_utf8_lossy(&got_now[0].message).into_owned();
    assert!(
        text.ends_with("before\r\n.\r\nMAIL FROM:<evil@x.test>\r\nafter\r\n"),
        "{text:?}"
    );
}

fn probe(name: &str, settings: &str) -> String {
    mailgate_e2e::probe_plugin(name, "deliver", settings)
}

#[test]
fn deliver_stage_reroutes_with_an_edit_for_this_delivery() {
    let sink = ScriptedSink::start(None);
    let dead = free_port();
    let plugins = format!(
        "{}{}",
        probe("tagger", "action.deliver = \"tag\""),
        probe(
            "rerouter",
            &format!(
                "action.deliver = \"reroute\"\nreroute-to = \"127.0.0.1:{}\"",
                sink.port
            )
        )
    );
    let gw = Gateway::builder()
        .server(RELAY_FOR_LOOPBACK)
        .config(&format!("{plugins}\n{}", route_to(dead)))
        .start();
    let reply = send(
        gw.inbound,
        "sender@client.test",
        &["rcpt@remote.test"],
        &message("reroute"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = sink.wait(1, 10);
    assert_eq!(got.len(), 1, "rerouted to the sink:\n{}", gw.log());
    let text = String::from_utf8_lossy(&got[0].message).into_owned();
    assert!(
        text.contains("X-Probe: tagger\r\n"),
        "the deliver-stage edit went out: {text}"
    );
    assert!(wait_until(5, || queue_is_empty(&gw)), "{}", queue_list(&gw));
}

#[test]
fn deliver_stage_defer_keeps_the_message_queued() {
    let sink = ScriptedSink::start(None);
    let plugins = probe(
        "deferrer",
        "action.deliver = \"defer\"\ndefer-seconds = 7200",
    );
    let gw = Gateway::builder()
        .server(RELAY_FOR_LOOPBACK)
        .config(&format!("{plugins}\n{}", route_to(sink.port)))
        .start();
    let reply = send(
        gw.inbound,
        "sender@client.test",
        &["rcpt@remote.test"],
        &message("defer"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    assert!(
        wait_until(10, || queue_list(&gw)
            .contains("deferred by plugin deferrer for 7200 s")),
        "{}",
        queue_list(&gw)
    );
    let listing = queue_list(&gw);
    assert!(
        listing.contains("in 2h") || listing.contains("in 119m"),
        "next attempt after the plugin's delay: {listing}"
    );
    assert!(sink.received().is_empty());
}

#[test]
fn queue_commands_hold_release_show_and_delete() {
    let port = free_port();
    let gw = Gateway::builder()
        .server(RELAY_FOR_LOOPBACK)
        .config(&route_to(port))
        .start();
    let reply = send(
        gw.inbound,
        "sender@client.test",
        &["rcpt@remote.test"],
        &message("ops"),
    );
    let id = reply
        .rsplit(' ')
        .next()
        .expect("queue id")
        .trim()
        .to_string();
    assert!(wait_until(10, || queue_list(&gw).contains("Connection refused")));
    let show = gw.cli(&["queue", "show", &id]);
    assert_eq!(show.code, Some(0), "{}", show.stderr);
    assert!(
        show.stdout.contains("sender: <sender@client.test>"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("attempts: 1"), "{}", show.stdout);
    assert!(show.stdout.contains("Subject: ops"), "{}", show.stdout);
    assert_eq!(gw.cli(&["queue", "hold", &id]).code, Some(0));
    assert!(queue_list(&gw).contains(" held "), "{}", queue_list(&gw));
    // A held message is not tried, even when asked to.
    let sink = ScriptedSink::start_on("127.0.0.1", port, None);
    assert_eq!(gw.cli(&["queue", "retry", &id]).code, Some(0));
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(sink.received().is_empty(), "held");
    assert_eq!(gw.cli(&["queue", "release", &id]).code, Some(0));
    // The release may already have sent it (its retry time had passed): then the retry finds
    // nothing to do and says so; either way the message goes out once.
    let retry = gw.cli(&["queue", "retry", &id]);
    assert!(
        retry.code == Some(0) || retry.stderr.contains(&format!("no message {id}")),
        "retry after release: {:?} {}",
        retry.code,
        retry.stderr
    );
    assert_eq!(sink.wait(1, 10).len(), 1, "released and retried");
    assert!(wait_until(5, || queue_is_empty(&gw)));
    // Unknown ids are an error with a reason.
    let missing = gw.cli(&["queue", "delete", "00ff"]);
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains("no message 00ff"),
        "{}",
        missing.stderr
    );
}

#[test]
fn queue_delete_removes_a_deferred_message_and_works_without_a_server() {
    let port = free_port();
    let mut gw = Gateway::builder()
        .server(RELAY_FOR_LOOPBACK)
        .config(&route_to(port))
        .start();
    let first = send(
        gw.inbound,
        "sender@client.test",
        &["rcpt@remote.test"],
        &message("del-1"),
    );
    let second = send(
        gw.inbound,
        "sender@client.test",
        &["rcpt@remote.test"],
        &message("del-2"),
    );
    let id = |reply: &str| reply.rsplit(' ').next().expect("id").trim().to_string();
    assert!(wait_until(10, || queue_list(&gw).contains("-- 2 message(s)")));
    assert_eq!(gw.cli(&["queue", "delete", &id(&first)]).code, Some(0));
    assert!(queue_list(&gw).contains("-- 1 message(s)"));
    gw.stop();
    // Offline: the same commands work on the files.
    let listing = queue_list(&gw);
    assert!(listing.contains(&id(&second)), "{listing}");
    assert_eq!(gw.cli(&["queue", "delete", &id(&second)]).code, Some(0));
    assert!(queue_is_empty(&gw));
}

#[test]
fn smarthost_with_required_starttls_and_auth() {
    // The smarthost is a second gateway whose submission port demands AUTH after STARTTLS.
    let smarthost = Gateway::start("");
    let route = format!(
        r#"[[route]]
domains = ["example.test"]
type = "relay"
host = "127.0.0.1:{}"
tls = "required"
tls-verify = false
auth-user = "bob@example.test"
auth-password = "pw-bob"
"#,
        smarthost.submission
    );
    // The relaying gateway's own local domain must differ from the smarthost's.
    let relay = Gateway::builder()
        .domain("relay.test")
        .server(RELAY_FOR_LOOPBACK)
        .config(&route)
        .start();
    let reply = send(
        relay.inbound,
        "sender@client.test",
        &["carol@example.test"],
        &message("smarthost"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = smarthost.wait_mailbox("carol@example.test", 1);
    assert_eq!(
        got.len(),
        1,
        "delivered through the smarthost:\n{}",
        relay.log()
    );
    assert!(
        got[0].contains("with ESMTPSA"),
        "over TLS, authenticated: {}",
        got[0]
    );
    assert!(got[0].contains("Subject: smarthost"));
    assert!(
        wait_until(5, || queue_is_empty(&relay)),
        "{}",
        queue_list(&relay)
    );
}

#[test]
fn required_tls_is_not_downgraded() {
    // smtp-sink offers no STARTTLS: a route that requires TLS keeps the message queued.
    let sink = SmtpSink::start();
    let route = route_to(sink.port).replace("tls = \"none\"", "tls = \"required\"");
    let gw = Gateway::builder()
        .server(RELAY_FOR_LOOPBACK)
        .config(&route)
        .start();
    let reply = send(
        gw.inbound,
        "sender@client.test",
        &["rcpt@remote.test"],
        &message("tls-required"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    assert!(
        wait_until(10, || queue_list(&gw).contains("does not offer STARTTLS")),
        "{}",
        queue_list(&gw)
    );
    assert!(sink.messages().is_empty(), "nothing sent in clear");
}

#[test]
fn an_expired_message_bounces_with_the_last_error() {
    let dead = free_port();
    let extra = format!(
        "{}\n[queue]\nretry = [\"1s\"]\nmax-age = \"3s\"\n",
        route_to(dead)
    );
    let gw = Gateway::builder()
        .server(RELAY_FOR_LOOPBACK)
        .config(&extra)
        .start();
    let reply = send(
        gw.inbound,
        "alice@example.test",
        &["rcpt@remote.test"],
        &message("expiring"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let bounces = {
        wait_until(20, || !gw.mailbox("alice@example.test").is_empty());
        gw.settled_mailbox("alice@example.test")
    };
    assert_eq!(bounces.len(), 1, "one DSN on expiry:\n{}", gw.log());
    let dsn = &bounces[0];
    assert!(
        dsn.contains("Final-Recipient: rfc822; rcpt@remote.test"),
        "{dsn}"
    );
    assert!(dsn.contains("Action: failed"), "{dsn}");
    assert!(dsn.contains("Status: 4.4.7"), "{dsn}");
    assert!(dsn.contains("delivery time expired"), "{dsn}");
    assert!(
        dsn.contains("Connection refused"),
        "the last error is reported: {dsn}"
    );
    assert!(queue_is_empty(&gw), "{}", queue_list(&gw));
}

#[test]
fn deliver_stage_reject_bounces_with_the_plugins_text() {
    let sink = ScriptedSink::start(None);
    let plugins = probe("gatekeeper", "action.deliver = \"reject\"");
    let gw = Gateway::builder()
        .server(RELAY_FOR_LOOPBACK)
        .config(&format!("{plugins}\n{}", route_to(sink.port)))
        .start();
    let reply = send(
        gw.inbound,
        "alice@example.test",
        &["rcpt@remote.test"],
        &message("refused"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let bounces = gw.wait_mailbox("alice@example.test", 1);
    assert_eq!(bounces.len(), 1, "{}", gw.log());
    let dsn = &bounces[0];
    assert!(dsn.contains("550 5.7.1 rejected by gatekeeper"), "{dsn}");
    assert!(dsn.contains("Status: 5.7.1"), "{dsn}");
    assert!(sink.received().is_empty(), "nothing sent");
    assert!(wait_until(5, || queue_is_empty(&gw)), "{}", queue_list(&gw));
}
