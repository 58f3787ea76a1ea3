//! Connection slots under attack, end to end: one user's clients cannot take every slot of a
//! protocol (`limits.max-connections-per-user`), and SMTP sessions that never have a message
//! accepted are closed to make room for clients that deliver.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mailgate_e2e::{root, wait_until, Gateway, RawSmtp};
use serde_json::Value;

const ALICE: (&str, &str) = ("alice@example.test", "pw-alice");
const BOB: (&str, &str) = ("bob@example.test", "pw-bob");

/// `held_logins.py`: connections held open as the test says, over IMAPS, POP3S and JMAP.
struct Held {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Held {
    fn start(gw: &Gateway) -> Held {
        let mut child = Command::new("python3")
            .arg(root().join("tests/e2e/clients/held_logins.py"))
            .args([gw.imaps, gw.pop3s, gw.jmap].map(|p| p.to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let input = child.stdin.take().expect("stdin");
        let output = BufReader::new(child.stdout.take().expect("stdout"));
        Held {
            child,
            input,
            output,
        }
    }

    /// One command; its answer.
    fn ask(&mut self, command: &str) -> Value {
        writeln!(self.input, "{command}").expect("command");
        let mut line = String::new();
        self.output.read_line(&mut line).expect("answer");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{command}: {e}: {line:?}"))
    }

    /// Logs `name` in as `user` over `protocol`; the server's answer.
    fn open(&mut self, name: &str, protocol: &str, (user, password): (&str, &str)) -> Value {
        self.ask(&format!("open {name} {protocol} {user} {password}"))
    }

    fn close(&mut self, name: &str) {
        assert_eq!(self.ask(&format!("close {name}"))["reply"], "closed");
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reply(answer: &Value) -> &str {
    answer["reply"].as_str().unwrap_or_default()
}

#[test]
fn a_user_at_the_imap_cap_is_refused_while_others_log_in() {
    let gw = Gateway::start("[limits]\nmax-connections-per-user = 3\n");
    let mut held = Held::start(&gw);
    for name in ["a1", "a2", "a3"] {
        let answer = held.open(name, "imap", ALICE);
        assert!(reply(&answer).starts_with("a OK"), "{name}: {answer}");
    }
    let refused = held.open("a4", "imap", ALICE);
    assert_eq!(
        reply(&refused),
        "a NO [LIMIT] Too many connections for this user"
    );
    let bob = held.open("b1", "imap", BOB);
    assert!(reply(&bob).starts_with("a OK"), "{bob}");
    // The refused connection is still there, not logged in: once one of alice's sessions
    // ends, it logs in (by AUTHENTICATE this time).
    held.close("a1");
    let mut last = Value::Null;
    let in_again = wait_until(10, || {
        last = held.ask("plain a4 alice@example.test pw-alice");
        reply(&last).starts_with("p OK")
    });
    assert!(in_again, "{last}");
    // And it counts: alice is at her cap again.
    let refused = held.open("a5", "imap", ALICE);
    assert!(reply(&refused).starts_with("a NO [LIMIT]"), "{refused}");
}

#[test]
fn a_user_at_the_pop3_cap_is_refused_while_others_log_in() {
    // POP3 holds one session per maildrop anyway (its lock): the cap of 1 answers first.
    let gw = Gateway::start("[limits]\nmax-connections-per-user = 1\n");
    let mut held = Held::start(&gw);
    let first = held.open("a1", "pop3", ALICE);
    assert!(reply(&first).starts_with("+OK"), "{first}");
    let refused = held.open("a2", "pop3", ALICE);
    assert_eq!(
        reply(&refused),
        "-ERR [IN-USE] Too many connections for this user"
    );
    let bob = held.open("b1", "pop3", BOB);
    assert!(reply(&bob).starts_with("+OK"), "{bob}");
    held.close("a1");
    held.close("a2");
    let mut attempt = 0;
    let mut last = Value::Null;
    let in_again = wait_until(10, || {
        attempt += 1;
        last = held.open(&format!("again{attempt}"), "pop3", ALICE);
        reply(&last).starts_with("+OK")
    });
    assert!(in_again, "{last}");
}

/// Whether a JMAP answer is the per-user connection refusal: 429 with the RFC 7807 body.
fn refused_for_user(answer: &Value) -> bool {
    answer["status"] == 429
        && answer["json"]["type"] == "urn:ietf:params:jmap:error:limit"
        && answer["json"]["limit"] == "maxConnectionsPerUser"
        && answer["json"]["status"] == 429
}

/// Opens new JMAP connections as alice (closing the refused ones) until one is served.
fn alice_served_again(held: &mut Held) -> Value {
    let mut attempt = 0;
    let mut last = Value::Null;
    wait_until(20, || {
        attempt += 1;
        let name = format!("again{attempt}");
        last = held.open(&name, "jmap", ALICE);
        if last["status"] != 200 {
            held.close(&name);
        }
        last["status"] == 200
    });
    last
}

#[test]
fn a_user_at_the_jmap_cap_is_refused_while_others_are_served() {
    let gw = Gateway::start("[limits]\nmax-connections-per-user = 3\n");
    let mut held = Held::start(&gw);
    for name in ["a1", "a2", "a3"] {
        let answer = held.open(name, "jmap", ALICE);
        assert_eq!(answer["status"], 200, "{name}: {answer}");
    }
    let refused = held.open("a4", "jmap", ALICE);
    assert!(refused_for_user(&refused), "{refused}");
    let bob = held.open("b1", "jmap", BOB);
    assert_eq!(bob["status"], 200, "{bob}");
    held.close("a4");
    held.close("a1");
    let again = alice_served_again(&mut held);
    assert_eq!(again["status"], 200, "{again}");
}

#[test]
fn jmap_event_sources_count_toward_the_users_cap() {
    let gw = Gateway::start("[limits]\nmax-connections-per-user = 3\n");
    let mut held = Held::start(&gw);
    for name in ["e1", "e2", "e3"] {
        let answer = held.ask(&format!("events {name} alice@example.test pw-alice"));
        assert_eq!(answer["status"], 200, "{name}: {answer}");
    }
    // Three streams held open: an API client of alice's is refused, bob's is served.
    let refused = held.open("a1", "jmap", ALICE);
    assert!(refused_for_user(&refused), "{refused}");
    let bob = held.open("b1", "jmap", BOB);
    assert_eq!(bob["status"], 200, "{bob}");
    held.close("a1");
    held.close("e1");
    let again = alice_served_again(&mut held);
    assert_eq!(again["status"], 200, "{again}");
}

/// An SMTP client that never delivers: EHLO, then MAIL, RSET and NOOP over and over until
/// the server closes the connection or the test says stop. The server's last reply before it
/// closed, if it did.
fn looping_client(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Option<String>> {
    let (mut smtp, greeting) = RawSmtp::connect(port);
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(smtp.cmd("EHLO looper.test").starts_with("250"));
    std::thread::spawn(move || {
        loop {
            // Read before looking at `stop`: a goodbye sent while this thread slept is counted.
            if let Some(told) = unasked_reply(&mut smtp) {
                return Some(told);
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            for command in ["MAIL FROM:<looper@client.test>", "RSET", "NOOP"] {
                let reply = smtp.cmd(command);
                if !reply.starts_with("250") {
                    return Some(reply);
                }
            }
            // A few commands a second, as a client holding its slot cheaply would.
            std::thread::sleep(Duration::from_millis(200));
        }
        smtp.cmd("QUIT");
        None
    })
}

/// A reply the server sent without a command (its goodbye), read before the client writes
/// again: a write to a closed connection could reset it before the goodbye is read.
fn unasked_reply(smtp: &mut RawSmtp) -> Option<String> {
    let stream = smtp.stream();
    stream.set_nonblocking(true).expect("nonblocking");
    let waiting = stream.peek(&mut [0u8; 1]);
    stream.set_nonblocking(false).expect("blocking");
    match waiting {
        Ok(0) => Some("<closed>".into()),
        Ok(_) => Some(smtp.reply()),
        Err(_) => None,
    }
}

/// A message from a client that is not in the way: swaks on the inbound port.
fn swaks(gw: &Gateway, subject: &str) -> String {
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &gw.inbound.to_string()])
        .args(["--from", "sender@client.test", "--to", "alice@example.test"])
        .args([
            "--header",
            &format!("Subject: {subject}"),
            "--timeout",
            "20",
        ])
        .output()
        .expect("swaks");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text
}

/// `count` looping clients, connected one after the other (the first is the oldest).
fn fill_with_loopers(
    gw: &Gateway,
    (open_before, count): (u64, usize),
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Option<String>>> {
    // The start-up checks' connections must be gone first, or one of them is the oldest.
    assert!(
        wait_until(20, || inbound_sessions(gw) == Some(open_before)),
        "sessions left on the inbound listener: {:?}",
        inbound_sessions(gw)
    );
    (0..count)
        .map(|_| looping_client(gw.inbound, stop.clone()))
        .collect()
}

/// The inbound listener's open sessions, as `/metrics` says.
fn inbound_sessions(gw: &Gateway) -> Option<u64> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", gw.metrics)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    std::io::Read::read_to_string(&mut stream, &mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with("mailgate_sessions_active{listener=\"inbound\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Which loopers the server closed, and what it said to them.
fn ended(
    stop: &Arc<AtomicBool>,
    loopers: Vec<std::thread::JoinHandle<Option<String>>>,
) -> Vec<Option<String>> {
    stop.store(true, Ordering::Relaxed);
    loopers
        .into_iter()
        .map(|l| l.join().expect("looper"))
        .collect()
}

const SMTP_CAP: &str = "[limits]\nmax-smtp-connections = 4\nmax-junk-commands = 1000\n";

#[test]
fn smtp_sessions_that_never_deliver_make_room_for_one_that_does() {
    let gw = Gateway::start(SMTP_CAP);
    let stop = Arc::new(AtomicBool::new(false));
    let loopers = fill_with_loopers(&gw, (0, 4), &stop);
    let out = swaks(&gw, "through a full house");
    assert!(out.contains("250 2.0.0 Ok: queued as"), "{out}");
    gw.wait_mailbox_matching("alice@example.test", "through a full house");
    let ended = ended(&stop, loopers);
    let evicted: Vec<usize> = (0..ended.len()).filter(|&i| ended[i].is_some()).collect();
    assert_eq!(evicted, vec![0], "the oldest looper, only: {ended:?}");
    let told = ended[0].as_deref().unwrap_or_default();
    assert!(
        told.starts_with("421 4.7.0") && told.contains("make room"),
        "{told}"
    );
}

#[test]
fn an_smtp_session_that_delivers_goes_to_the_back_of_the_line() {
    let gw = Gateway::start(SMTP_CAP);
    // The oldest session of all, but it delivers.
    let (mut sender, greeting) = RawSmtp::connect(gw.inbound);
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(sender.cmd("EHLO sender.test").starts_with("250"));
    let stop = Arc::new(AtomicBool::new(false));
    let loopers = fill_with_loopers(&gw, (1, 3), &stop);
    let deliver = |smtp: &mut RawSmtp, subject: &str| {
        assert!(smtp
            .cmd("MAIL FROM:<sender@client.test>")
            .starts_with("250"));
        assert!(smtp.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
        assert!(smtp.cmd("DATA").starts_with("354"));
        smtp.send(format!("Subject: {subject}\r\n\r\nhello\r\n.\r\n").as_bytes());
        smtp.reply()
    };
    let first = deliver(&mut sender, "first of a session");
    assert!(first.starts_with("250"), "{first}");
    // A newcomer: the oldest looper makes room, not the sender (older by its connection).
    let out = swaks(&gw, "the newcomer");
    assert!(out.contains("250 2.0.0 Ok: queued as"), "{out}");
    let second = deliver(&mut sender, "second of a session");
    assert!(second.starts_with("250"), "{second}");
    let ended = ended(&stop, loopers);
    assert!(
        ended[0]
            .as_deref()
            .is_some_and(|r| r.starts_with("421 4.7.0")),
        "{ended:?}"
    );
    assert!(ended[1..].iter().all(Option::is_none), "{ended:?}");
    gw.wait_mailbox_matching("alice@example.test", "second of a session");
}

#[test]
fn repeated_mail_and_unreadable_commands_count_as_junk() {
    let gw = Gateway::start("[limits]\nmax-junk-commands = 3\n");
    let (mut smtp, _) = RawSmtp::connect(gw.inbound);
    assert!(smtp.cmd("EHLO client.test").starts_with("250"));
    assert!(smtp
        .cmd("MAIL FROM:<sender@client.test>")
        .starts_with("250"));
    // A MAIL that starts nothing new, three times: each one moves no mail.
    for _ in 0..3 {
        assert!(smtp
            .cmd("MAIL FROM:<sender@client.test>")
            .starts_with("503"));
    }
    let reply = smtp.cmd("MAIL FROM:<sender@client.test>");
    assert!(reply.starts_with("421 4.7.0"), "{reply}");
    // Unknown commands and RCPT without MAIL likewise.
    let (mut smtp, _) = RawSmtp::connect(gw.inbound);
    assert!(smtp.cmd("EHLO client.test").starts_with("250"));
    assert!(smtp.cmd("XYZZY").starts_with("500"));
    assert!(smtp.cmd("RCPT TO:<alice@example.test>").starts_with("503"));
    assert!(smtp.cmd("XYZZY").starts_with("500"));
    let reply = smtp.cmd("RCPT TO:<alice@example.test>");
    assert!(reply.starts_with("421 4.7.0"), "{reply}");
}
