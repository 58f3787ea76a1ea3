//! The drain at SIGTERM as the queue lives it: the real binary relaying to Postfix's
//! `smtp-sink` made slow (`-W`), which logs (`-v`) every connection and command it sees. After
//! the signal no transaction begins; those under way finish and are recorded, or are cut before
//! their content is sent; the process exits within `drain-secs`; after a restart every message
//! is delivered exactly once.

use std::time::{Duration, Instant};

use mailgate_e2e::peers::{ScriptedSink, WatchedSmtpSink};
use mailgate_e2e::{wait_until, Gateway, RawSmtp};

fn route_to(port: u16, relay: &str) -> String {
    format!(
        r#"[[route]]
domains = ["*"]
type = "relay"
host = "127.0.0.1:{port}"
tls = "none"

[relay]
{relay}
"#
    )
}

fn server(drain_secs: u64) -> String {
    format!("relay-networks = [\"127.0.0.0/8\"]\ndrain-secs = {drain_secs}")
}

/// Queues one message for a remote recipient over SMTP.
fn queue(gw: &Gateway, subject: &str) {
    queue_to(gw, subject, &["rcpt@remote.test"]);
}

fn queue_to(gw: &Gateway, subject: &str, rcpts: &[&str]) {
    let reply = RawSmtp::send_message(gw.inbound, rcpts, subject);
    assert!(reply.starts_with("250"), "{reply}");
}

/// How many messages `mailgate queue list` shows (the server may be stopped).
fn queued(gw: &Gateway) -> usize {
    let run = gw.cli(&["queue", "list"]);
    assert_eq!(run.code, Some(0), "queue list: {}", run.stderr);
    run.stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("-- ")?
                .strip_suffix(" message(s)")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no count in {}", run.stdout))
}

/// How often each subject reached the sink (complete dumps only).
fn subject_counts(sink: &WatchedSmtpSink) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for dump in sink.messages() {
        if let Some(subject) = dump.lines().find_map(|l| l.strip_prefix("Subject: ")) {
            *counts.entry(subject.trim().to_string()).or_default() += 1;
        }
    }
    counts
}

/// Lines the sink logged after `at` that start with `prefix`.
fn seen_after(sink: &WatchedSmtpSink, at: Instant, prefix: &str) -> Vec<String> {
    sink.seen()
        .into_iter()
        .filter(|(when, line)| *when > at && line.starts_with(prefix))
        .map(|(_, line)| line)
        .collect()
}

/// Restarts the gateway and waits until the queue is empty and the sink has `n` messages.
fn restart_and_drain(gw: &mut Gateway, sink: &WatchedSmtpSink, n: usize) {
    gw.launch();
    assert!(
        wait_until(90, || queued(gw) == 0 && sink.messages().len() >= n),
        "after the restart: {} queued, {} at the sink\n{}",
        queued(gw),
        sink.messages().len(),
        gw.log()
    );
}

/// The issue's case: `smtp-sink -W .:2` (each final reply two seconds late), eight messages,
/// two connections at a time, SIGTERM just as the first message reaches the sink.
#[test]
fn sigterm_with_a_slow_sink_starts_no_transaction_and_a_restart_delivers_each_once() {
    const N: usize = 8;
    const DRAIN_SECS: u64 = 8;
    let sink = WatchedSmtpSink::start(&["-W", ".:2"]);
    let mut gw = Gateway::builder()
        .server(&server(DRAIN_SECS))
        .config(&route_to(sink.port, "max-per-destination = 2"))
        .start();
    let subjects: Vec<String> = (1..=N).map(|i| format!("drain-{i}")).collect();
    for subject in &subjects {
        queue(&gw, subject);
    }
    // A final '.' reached the sink: its reply comes two seconds later, and only then would a
    // pooled connection (or a waiting attempt) start the next transaction.
    assert!(
        wait_until(20, || sink.count(".") >= 1),
        "no delivery began\n{}",
        gw.log()
    );
    gw.send_sigterm();
    let signalled = Instant::now();
    let status = gw.wait_exit();
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}\n{}", gw.log());
    assert!(
        took < Duration::from_secs(DRAIN_SECS),
        "stopped within the drain bound: {took:?}\n{}",
        gw.log()
    );
    let new_connections = seen_after(&sink, signalled, "connect");
    let new_transactions = seen_after(&sink, signalled, "MAIL FROM");
    assert!(
        new_connections.is_empty() && new_transactions.is_empty(),
        "after SIGTERM the sink saw {new_connections:?} {new_transactions:?}\n{}",
        gw.log()
    );
    // The pooled connections were closed with QUIT, not dropped.
    assert_eq!(sink.count("QUIT"), sink.count("EHLO"), "{:?}", sink.seen());
    // What the sink took before the exit was recorded as delivered: it is no longer queued.
    let delivered = sink.count(".");
    let counts = subject_counts(&sink);
    assert_eq!(counts.len(), delivered, "{counts:?}");
    assert!(
        delivered < N,
        "nothing was left for the restart: {delivered}"
    );
    assert_eq!(queued(&gw), N - delivered, "{}", gw.log());

    restart_and_drain(&mut gw, &sink, N);
    let counts = subject_counts(&sink);
    for subject in &subjects {
        assert_eq!(counts.get(subject), Some(&1), "{subject}: {counts:?}");
    }
    assert_eq!(sink.messages().len(), N, "{counts:?}");
    eprintln!(
        "stopped in {took:?}; {delivered} of {N} delivered before the stop, the rest after the restart"
    );
}

/// Variant: a sink slow to answer DATA (`-W data:2`) and slower still after the content
/// (`-W .:3`). At SIGTERM the attempt waits for the `354`; when it comes, too little of the
/// four-second drain is left for the content and its reply, so the content is not sent: the
/// connection closes before the final '.', the sink discards the transaction, and the message
/// goes once, after the restart. (Sent regardless, the content's reply would come after the
/// process ended: the sink would hold the message and get it again after the restart.)
#[test]
fn a_transaction_that_cannot_finish_within_the_drain_is_cut_before_its_content() {
    const DRAIN_SECS: u64 = 4;
    let sink = WatchedSmtpSink::start(&["-W", "data:2", "-W", ".:3"]);
    let mut gw = Gateway::builder()
        .server(&server(DRAIN_SECS))
        .config(&route_to(sink.port, ""))
        .start();
    queue(&gw, "cut-before-content");
    assert!(
        wait_until(20, || sink.count("DATA") >= 1),
        "no delivery began\n{}",
        gw.log()
    );
    gw.send_sigterm();
    let signalled = Instant::now();
    let status = gw.wait_exit();
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}\n{}", gw.log());
    assert!(
        took < Duration::from_secs(DRAIN_SECS),
        "stopped within the drain bound: {took:?}\n{}",
        gw.log()
    );
    assert_eq!(sink.count("."), 0, "the content was sent\n{}", gw.log());
    assert!(
        gw.log().contains("message content not sent"),
        "{}",
        gw.log()
    );
    assert!(seen_after(&sink, signalled, "connect").is_empty());
    assert_eq!(queued(&gw), 1);
    // The cut is no failed attempt: the message is due at once after the restart.
    let listing = gw.cli(&["queue", "list"]).stdout;
    let row = listing
        .lines()
        .find(|l| l.contains("rcpt@remote.test"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(row.split_whitespace().nth(3) == Some("now"), "{listing}");
    assert!(!row.contains('('), "no error recorded: {listing}");

    restart_and_drain(&mut gw, &sink, 1);
    let counts = subject_counts(&sink);
    assert_eq!(counts.get("cut-before-content"), Some(&1), "{counts:?}");
    assert_eq!(sink.messages().len(), 1);
}

/// SIGKILL in the middle of the drain (the issue's slow sink): nothing acknowledged is lost.
/// Only a message whose final '.' had reached the sink with its reply still pending may come
/// twice (RFC 1047: the gateway cannot know the sink took it); at most two were in flight.
#[test]
fn a_kill_during_the_drain_loses_nothing() {
    const N: usize = 6;
    let sink = WatchedSmtpSink::start(&["-W", ".:2"]);
    let mut gw = Gateway::builder()
        .server(&server(30))
        .config(&route_to(sink.port, "max-per-destination = 2"))
        .start();
    let subjects: Vec<String> = (1..=N).map(|i| format!("killed-{i}")).collect();
    for subject in &subjects {
        queue(&gw, subject);
    }
    assert!(wait_until(20, || sink.count(".") >= 1), "{}", gw.log());
    gw.send_sigterm();
    // Draining: the replies to the messages in flight are still on their way.
    assert!(wait_until(5, || gw
        .log()
        .contains("shutting down: draining")));
    gw.kill();
    let in_flight = sink.count(".");

    restart_and_drain(&mut gw, &sink, N);
    let counts = subject_counts(&sink);
    for subject in &subjects {
        assert!(
            counts.get(subject).is_some_and(|&n| n >= 1),
            "{subject} lost: {counts:?}"
        );
    }
    let repeated = sink.messages().len() - N;
    assert!(
        repeated <= in_flight.min(2),
        "{repeated} repeated, {in_flight} in flight: {counts:?}"
    );
}

/// The bounce generator in the drain: a transaction under way at SIGTERM (sink.py answers the
/// final '.' two seconds late) finishes with one recipient refused at RCPT. Its DSN is queued
/// durably before the message leaves the queue, but not sent while the server stops; after the
/// restart it goes once, and the delivered recipient does not get the message again.
#[test]
fn a_bounce_made_during_the_drain_is_kept_and_sent_after_the_restart() {
    const DRAIN_SECS: u64 = 8;
    let port = mailgate_e2e::free_port();
    let sink = ScriptedSink::start_with(port, &["--reject", "no-", "--delay-dot", "2"]);
    let mut gw = Gateway::builder()
        .server(&server(DRAIN_SECS))
        .config(&route_to(port, ""))
        .start();
    queue_to(
        &gw,
        "bounced-in-the-drain",
        &["yes@remote.test", "no-such@remote.test"],
    );
    assert!(
        wait_until(20, || sink.received().len() == 1),
        "{}",
        gw.log()
    );
    gw.send_sigterm();
    let signalled = Instant::now();
    let status = gw.wait_exit();
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}\n{}", gw.log());
    assert!(
        took < Duration::from_secs(DRAIN_SECS),
        "stopped within the drain bound: {took:?}\n{}",
        gw.log()
    );
    assert_eq!(sink.received().len(), 1, "nothing sent during the drain");
    let listing = gw.cli(&["queue", "list"]).stdout;
    assert!(
        listing.contains("-- 1 message(s)") && listing.contains("-> sender@client.test"),
        "only the bounce is queued: {listing}"
    );

    gw.launch();
    assert!(
        wait_until(30, || queued(&gw) == 0 && sink.received().len() >= 2),
        "{}",
        gw.log()
    );
    let got = sink.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].envelope.contains("yes@remote.test"),
        "{}",
        got[0].envelope
    );
    assert!(
        got[1].envelope.contains("\"sender\": \"\"")
            && got[1].envelope.contains("sender@client.test"),
        "the DSN: {}",
        got[1].envelope
    );
    let dsn = String::from_utf8_lossy(&got[1].message);
    assert!(dsn.contains("no-such@remote.test"), "{dsn}");
}

/// Local delivery and the relay mixed: a transaction under way at SIGTERM finishes (`250`)
/// with one local and one remote recipient. Neither delivery starts while the server stops;
/// both are done once after the restart.
#[test]
fn a_message_accepted_during_the_drain_is_delivered_locally_and_relayed_after_the_restart() {
    let sink = WatchedSmtpSink::start(&[]);
    let mut gw = Gateway::builder()
        .server(&server(8))
        .config(&route_to(sink.port, ""))
        .start();
    let (mut smtp, _) = RawSmtp::connect(gw.inbound);
    assert!(smtp.cmd("EHLO client.test").starts_with("250"));
    assert!(smtp
        .cmd("MAIL FROM:<sender@client.test>")
        .starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<rcpt@remote.test>").starts_with("250"));
    gw.send_sigterm();
    let signalled = Instant::now();
    assert!(wait_until(5, || gw
        .log()
        .contains("shutting down: draining")));
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(b"Subject: accepted-while-stopping\r\n\r\nbody\r\n.\r\n");
    let reply = smtp.reply();
    assert!(reply.starts_with("250"), "{reply}");
    let status = gw.wait_exit();
    assert!(status.success(), "exit status {status:?}\n{}", gw.log());
    assert!(
        gw.mailbox("alice@example.test").is_empty(),
        "delivered locally while stopping"
    );
    assert!(
        seen_after(&sink, signalled, "MAIL FROM").is_empty(),
        "relayed while stopping"
    );
    assert_eq!(queued(&gw), 1);

    gw.launch();
    let mailbox = gw.wait_mailbox("alice@example.test", 1);
    assert!(
        wait_until(30, || queued(&gw) == 0 && sink.count(".") >= 1),
        "{}",
        gw.log()
    );
    assert_eq!(mailbox.len(), 1);
    assert!(mailbox[0].contains("accepted-while-stopping"));
    assert_eq!(gw.mailbox("alice@example.test").len(), 1, "once");
    let counts = subject_counts(&sink);
    assert_eq!(
        counts.get("accepted-while-stopping"),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(sink.messages().len(), 1);
}

/// One message for two destinations, tried one after the other in one attempt, both slow
/// (`-W .:2`). SIGTERM while the first takes it: that one finishes and is recorded, the
/// second is not begun; after the restart only the second gets it, once.
#[test]
fn a_message_for_two_destinations_records_the_first_and_leaves_the_second_for_the_restart() {
    let first = WatchedSmtpSink::start(&["-W", ".:2"]);
    let second = WatchedSmtpSink::start(&["-W", ".:2"]);
    let routes = format!(
        "[[route]]\ndomains = [\"one.test\"]\ntype = \"relay\"\nhost = \"127.0.0.1:{}\"\ntls = \"none\"\n\
         [[route]]\ndomains = [\"two.test\"]\ntype = \"relay\"\nhost = \"127.0.0.1:{}\"\ntls = \"none\"\n",
        first.port, second.port
    );
    let mut gw = Gateway::builder()
        .server(&server(8))
        .config(&routes)
        .start();
    queue_to(&gw, "two-destinations", &["a@one.test", "b@two.test"]);
    let dots = || first.count(".") + second.count(".");
    assert!(wait_until(20, || dots() == 1), "{}", gw.log());
    gw.send_sigterm();
    let status = gw.wait_exit();
    assert!(status.success(), "exit status {status:?}\n{}", gw.log());
    assert_eq!(
        dots(),
        1,
        "the second destination was not begun\n{}",
        gw.log()
    );
    let listing = gw.cli(&["queue", "list"]).stdout;
    assert!(listing.contains("-- 1 message(s)"), "{listing}");
    let (done, left) = if first.count(".") == 1 {
        ("a@one.test", "b@two.test")
    } else {
        ("b@two.test", "a@one.test")
    };
    assert!(
        listing.contains(left) && !listing.contains(done),
        "only {left} pending: {listing}"
    );

    gw.launch();
    assert!(
        wait_until(30, || queued(&gw) == 0 && dots() >= 2),
        "{}",
        gw.log()
    );
    for sink in [&first, &second] {
        let counts = subject_counts(sink);
        assert_eq!(counts.get("two-destinations"), Some(&1), "{counts:?}");
        assert_eq!(sink.messages().len(), 1);
    }
}

/// The retry timer in the drain: a message deferred (nothing listened downstream) falls due
/// again every second, while a session's open transaction keeps the drain going. The timer
/// starts nothing, though the downstream is back; the message goes once after the restart.
#[test]
fn a_retry_falling_due_during_the_drain_waits_for_the_restart() {
    let port = mailgate_e2e::free_port();
    let extra = format!("{}\n[queue]\nretry = [\"1s\"]\n", route_to(port, ""));
    let mut gw = Gateway::builder().server(&server(8)).config(&extra).start();
    queue(&gw, "retried-after-restart");
    assert!(
        wait_until(10, || gw
            .cli(&["queue", "list"])
            .stdout
            .contains("Connection refused")),
        "{}",
        gw.log()
    );
    let (mut smtp, _) = RawSmtp::connect(gw.inbound);
    assert!(smtp.cmd("EHLO client.test").starts_with("250"));
    assert!(smtp
        .cmd("MAIL FROM:<sender@client.test>")
        .starts_with("250"));
    assert!(smtp.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    gw.send_sigterm();
    assert!(wait_until(5, || gw
        .log()
        .contains("shutting down: draining")));
    let sink = WatchedSmtpSink::start_on(port, &[]);
    // Retries fall due every second: three seconds of drain see none reach the sink.
    let reached = wait_until(3, || sink.count("EHLO") > 0);
    assert!(!reached, "a retry ran during the drain: {:?}", sink.seen());
    assert!(smtp.cmd("DATA").starts_with("354"));
    smtp.send(b"Subject: keeps-the-drain-open\r\n\r\nbody\r\n.\r\n");
    assert!(smtp.reply().starts_with("250"));
    let status = gw.wait_exit();
    assert!(status.success(), "exit status {status:?}\n{}", gw.log());

    restart_and_drain(&mut gw, &sink, 1);
    let counts = subject_counts(&sink);
    assert_eq!(counts.get("retried-after-restart"), Some(&1), "{counts:?}");
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(gw.wait_mailbox("alice@example.test", 1).len(), 1);
}

/// One SMTP transaction that tolerates the server dying under it: the reply to the message's
/// final dot, if it came. `lines` lines of body.
fn transaction(port: u16, subject: &str, lines: usize) -> Option<String> {
    use std::io::{BufRead, BufReader, Write};
    let attempt = || -> std::io::Result<Option<String>> {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        let mut step = |command: &str| -> std::io::Result<String> {
            writer.write_all(command.as_bytes())?;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                if line.as_bytes().get(3) != Some(&b'-') {
                    return Ok(line);
                }
            }
        };
        let body = format!(
            "From: <sender@client.test>\r\nTo: <rcpt@remote.test>\r\n\
             Subject: {subject}\r\nMessage-ID: <{subject}@client.test>\r\n\r\n{}.\r\n",
            "body line of some length, to make the message larger\r\n".repeat(lines)
        );
        let steps = [
            ("", "220"),
            ("EHLO client.test\r\n", "250"),
            ("MAIL FROM:<sender@client.test>\r\n", "250"),
            ("RCPT TO:<rcpt@remote.test>\r\n", "250"),
            ("DATA\r\n", "354"),
        ];
        for (command, want) in steps {
            if !step(command)?.starts_with(want) {
                return Ok(None);
            }
        }
        let reply = step(&body)?;
        let _ = step("QUIT\r\n");
        Ok(Some(reply))
    };
    attempt().ok().flatten()
}

/// True only when the message got `250` (it is the gateway's from then on).
fn try_queue(port: u16, subject: &str) -> bool {
    transaction(port, subject, 80).is_some_and(|r| r.starts_with("250"))
}

/// The subjects smtp-sink received, with how many times.
fn sink_counts(sink: &mailgate_e2e::peers::SmtpSink) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for dump in sink.messages() {
        if let Some(subject) = dump.lines().find_map(|l| l.strip_prefix("Subject: ")) {
            *counts.entry(subject.trim().to_string()).or_default() += 1;
        }
    }
    counts
}

/// Every acknowledged subject reached the sink, and none came twice.
fn assert_each_once(acked: &[String], counts: &std::collections::BTreeMap<String, usize>) {
    let lost: Vec<&String> = acked.iter().filter(|s| !counts.contains_key(*s)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged and lost: {lost:?}",
        lost.len()
    );
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
}

/// kill -9 three times while 16 clients send at full speed (the destination down, so the
/// messages stay queued across the kills), then the destination comes up: every message that
/// got `250` reaches smtp-sink exactly once, and no message reaches it twice. Run with either
/// spool design (`MAILGATE_TEST_SPOOL=log` for the log).
#[test]
fn kill_9_under_sixteen_senders_loses_nothing_acknowledged_and_repeats_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    const SENDERS: usize = 16;
    const PER_ROUND: usize = 60;
    let port = mailgate_e2e::free_port();
    let mut gw = Gateway::builder()
        .server(&server(5))
        .config(&format!(
            "{}\n[queue]\nretry = [\"1h\"]\n",
            route_to(port, "")
        ))
        .start();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..SENDERS)
            .map(|t| {
                let (stop, acked, inbound) = (stop.clone(), acked.clone(), gw.inbound);
                std::thread::spawn(move || {
                    for n in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let subject = format!("crash-r{round}-t{t}-n{n}");
                        if try_queue(inbound, &subject) {
                            acked.lock().expect("lock").push(subject);
                        }
                    }
                })
            })
            .collect();
        let before = acked.lock().expect("lock").len();
        assert!(
            wait_until(120, || acked.lock().expect("lock").len()
                >= before + PER_ROUND),
            "round {round}: too few accepted\n{}",
            gw.log()
        );
        // The kill lands while every sender is in some step of its transaction.
        gw.kill();
        stop.store(true, Ordering::Relaxed);
        for sender in senders {
            sender.join().expect("sender");
        }
        gw.launch();
    }
    let acked = acked.lock().expect("lock").clone();
    let sink = mailgate_e2e::peers::SmtpSink::start_on(port);
    let run = gw.cli(&["queue", "retry", "--all"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        wait_until(180, || queued(&gw) == 0),
        "{} still queued, {} of {} at the sink\n{}",
        queued(&gw),
        sink_counts(&sink).len(),
        acked.len(),
        gw.log()
    );
    assert_each_once(&acked, &sink_counts(&sink));
}

/// A tmpfs mounted for one test, unmounted when it ends.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).ok()?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .ok()?;
        status.success().then(|| Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The queue's disk fills up while messages arrive (the log spool on a small tmpfs, with a
/// file taking the rest of it): the next message that needs a new segment gets `451 4.3.0`,
/// the server goes on, and once space returns messages are accepted again; every message that
/// got `250` is delivered once.
#[test]
fn a_full_disk_answers_451_loses_nothing_accepted_and_service_resumes() {
    let port = mailgate_e2e::free_port();
    let mut gw = Gateway::builder()
        .server(&server(5))
        .config(&format!(
            "{}\n[queue]\nspool = \"log\"\nsegment-mib = 1\nretry = [\"1h\"]\n",
            route_to(port, "")
        ))
        .start();
    gw.stop();
    let queue = gw.data().join("queue");
    let _ = std::fs::remove_dir_all(&queue);
    let Some(_mount) = Mount::tmpfs(&queue, "8m") else {
        panic!("cannot mount a tmpfs (this test needs root)");
    };
    gw.launch();
    // Leave about three segments' room.
    let filler = queue.join("filler");
    std::fs::write(&filler, vec![1u8; 5 << 20]).expect("filler");
    let mut acked = Vec::new();
    let mut refused = None;
    for n in 0..200 {
        let subject = format!("full-{n}");
        let reply = transaction(gw.inbound, &subject, 1500).unwrap_or_default();
        if reply.starts_with("250") {
            acked.push(subject);
        } else {
            refused = Some(reply);
            break;
        }
    }
    let refused = refused.unwrap_or_else(|| panic!("never refused\n{}", gw.log()));
    assert!(refused.starts_with("451 4.3.0"), "{refused}\n{}", gw.log());
    assert!(!acked.is_empty(), "{}", gw.log());
    assert!(gw.alive(), "{}", gw.log());
    // Space returns: the next message is taken.
    std::fs::remove_file(&filler).expect("filler");
    let again = "full-after".to_string();
    let reply = transaction(gw.inbound, &again, 1500).unwrap_or_default();
    assert!(reply.starts_with("250"), "{reply}\n{}", gw.log());
    acked.push(again);
    let sink = mailgate_e2e::peers::SmtpSink::start_on(port);
    let run = gw.cli(&["queue", "retry", "--all"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        wait_until(120, || queued(&gw) == 0),
        "{} still queued\n{}",
        queued(&gw),
        gw.log()
    );
    assert_each_once(&acked, &sink_counts(&sink));
    gw.stop();
}
