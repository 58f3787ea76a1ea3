//! The users source seen from outside: while it cannot be read (PostgreSQL down at start, or
//! lost later) no answer is permanent — RCPT 451, AUTH 454, IMAP `NO [UNAVAILABLE]`, POP3
//! `-ERR [SYS/TEMP]`, JMAP 503, `/healthz` 503 — and the same users are served once it is back.
//! User names have one canonical form: the CLI refuses names that are not addresses or that
//! name an existing user in another spelling, and a database row that does either serves no
//! mailbox (checked with Python's smtplib, imaplib, poplib and curl against the real binary).

use std::process::{Command, Stdio};

use mailgate_e2e::peers::Postgres;
use mailgate_e2e::{binary, wait_until, Gateway, RawSmtp};

/// `mailgate user add ADDRESS` with this gateway's config, the password on stdin: whether it
/// succeeded, and what it said on stderr.
fn user_add(gw: &Gateway, address: &str, password: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(binary())
        .args(["user", "add", address, "--config"])
        .arg(gw.config_path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mailgate user add");
    if let Some(mut stdin) = child.stdin.take() {
        // The CLI may refuse the name before it reads the password: a closed pipe is fine.
        let _ = stdin.write_all(format!("{password}\n").as_bytes());
    }
    let out = child.wait_with_output().expect("user add");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The reply to `RCPT TO:<to>` at the inbound port.
fn rcpt(gw: &Gateway, to: &str) -> String {
    let (mut c, _) = RawSmtp::connect(gw.inbound);
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<sender@client.test>");
    let reply = c.cmd(&format!("RCPT TO:<{to}>"));
    c.cmd("QUIT");
    reply
}

/// One message to `to`; the reply to its end of DATA.
fn send(gw: &Gateway, to: &str, subject: &str) -> String {
    let (mut c, _) = RawSmtp::connect(gw.inbound);
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<sender@client.test>");
    let reply = c.cmd(&format!("RCPT TO:<{to}>"));
    if !reply.starts_with("250") {
        return reply;
    }
    c.cmd("DATA");
    c.send(format!("Subject: {subject}\r\n\r\nhello\r\n.\r\n").as_bytes());
    let reply = c.reply();
    c.cmd("QUIT");
    reply
}

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const TLS: &str = "import ssl, sys\n\
    c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n";

/// SMTP AUTH PLAIN (smtplib, STARTTLS at the submission port): the code and text of the reply.
fn smtp_auth(gw: &Gateway, user: &str, password: &str) -> String {
    let script = format!(
        "{TLS}import smtplib\n\
         s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=20); s.starttls(context=c)\n\
         try:\n    code, text = s.login(sys.argv[2], sys.argv[3])\n\
         except smtplib.SMTPAuthenticationError as e:\n    code, text = e.smtp_code, e.smtp_error\n\
         print(code, text.decode())"
    );
    python(&script, &[&gw.submission.to_string(), user, password])
}

/// IMAP LOGIN (imaplib, implicit TLS): "OK", or the server's refusal.
fn imap_login(gw: &Gateway, user: &str, password: &str) -> String {
    imap_read(gw, user, password)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// IMAP LOGIN (AUTHENTICATE PLAIN for a name imaplib cannot send in LOGIN, not ASCII), then
/// the INBOX's subjects (imaplib): "OK" and one subject a line, or the refusal.
fn imap_read(gw: &Gateway, user: &str, password: &str) -> String {
    let script = format!(
        "{TLS}import imaplib\n\
         m = imaplib.IMAP4_SSL('127.0.0.1', int(sys.argv[1]), ssl_context=c)\n\
         u, p = sys.argv[2], sys.argv[3]\n\
         plain = lambda _: ('\\0' + u + '\\0' + p).encode()\n\
         try:\n    m.login(u, p) if u.isascii() else m.authenticate('PLAIN', plain)\n\
         except imaplib.IMAP4.error as e:\n    print(e); sys.exit(0)\n\
         print('OK')\n\
         typ, data = m.select('INBOX')\n\
         n = int(data[0])\n\
         for i in range(1, n + 1):\n\
         \x20   typ, d = m.fetch(str(i), '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')\n\
         \x20   print(d[0][1].decode().strip())\n\
         m.logout()"
    );
    python(&script, &[&gw.imaps.to_string(), user, password])
}

/// POP3 USER/PASS (poplib, implicit TLS): "OK", or the server's refusal.
fn pop3_login(gw: &Gateway, user: &str, password: &str) -> String {
    let script = format!(
        "{TLS}import poplib\n\
         p = poplib.POP3_SSL('127.0.0.1', int(sys.argv[1]), context=c, timeout=20)\n\
         try:\n    p.user(sys.argv[2]); p.pass_(sys.argv[3]); print('OK'); p.quit()\n\
         except poplib.error_proto as e:\n    print(e.args[0].decode())"
    );
    python(&script, &[&gw.pop3s.to_string(), user, password])
}

/// The HTTP status of the JMAP session resource for these credentials (curl).
fn jmap_status(gw: &Gateway, user: &str, password: &str) -> String {
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--user"])
        .arg(format!("{user}:{password}"))
        .arg(format!("https://127.0.0.1:{}/.well-known/jmap", gw.jmap))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `/healthz`: the status and the body (curl).
fn healthz(gw: &Gateway) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{}/healthz", gw.metrics))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (code.to_string(), body.trim().to_string())
}

/// A gateway on `pg` with one user, dana, who has one message.
fn gateway_with_dana(pg: &Postgres, local: &str) -> Gateway {
    gateway_with_dana_and(pg, local, "")
}

/// [`gateway_with_dana`] with `extra` config.
fn gateway_with_dana_and(pg: &Postgres, local: &str, extra: &str) -> Gateway {
    let gw = Gateway::builder()
        .users_database(&pg.url(), local)
        .config(extra)
        .start();
    let (ok, said) = user_add(&gw, "dana@example.test", "pw-dana");
    assert!(ok, "user add: {said}");
    assert!(
        wait_until(15, || rcpt(&gw, "dana@example.test").starts_with("250")),
        "the server reads the new user"
    );
    assert!(send(&gw, "dana@example.test", "first").starts_with("250"));
    assert_eq!(gw.wait_mailbox("dana@example.test", 1).len(), 1);
    gw
}

#[test]
fn a_node_started_while_its_users_database_is_down_answers_try_later_until_it_is_read() {
    let mut pg = Postgres::start();
    let mut gw = gateway_with_dana(&pg, "refresh-secs = 1\nstale-secs = 30\n");
    gw.kill();
    pg.stop();
    gw.launch();
    // The first read failed: nothing is known, so nothing is refused for good.
    for to in [
        "dana@example.test",
        "nobody@example.test",
        "x@elsewhere.test",
    ] {
        let reply = rcpt(&gw, to);
        assert!(reply.starts_with("451 4.4.3"), "RCPT {to}: {reply}");
    }
    let auth = smtp_auth(&gw, "dana@example.test", "pw-dana");
    assert!(auth.starts_with("454 4.7.0"), "{auth}");
    let imap = imap_login(&gw, "dana@example.test", "pw-dana");
    assert!(imap.contains("[UNAVAILABLE]"), "{imap}");
    let pop3 = pop3_login(&gw, "dana@example.test", "pw-dana");
    assert!(pop3.starts_with("-ERR [SYS/TEMP]"), "{pop3}");
    assert_eq!(jmap_status(&gw, "dana@example.test", "pw-dana"), "503");
    let (code, body) = healthz(&gw);
    assert_eq!(code, "503", "{body}");
    assert!(body.contains("users source not read yet"), "{body}");

    // The database comes back: the same user is served, by every protocol.
    pg.restart();
    assert!(
        wait_until(30, || smtp_auth(&gw, "dana@example.test", "pw-dana")
            .starts_with("235")),
        "SMTP AUTH once the database answers"
    );
    assert!(rcpt(&gw, "dana@example.test").starts_with("250"));
    assert!(rcpt(&gw, "nobody@example.test").starts_with("550 5.1.1"));
    assert_eq!(
        imap_read(&gw, "dana@example.test", "pw-dana"),
        "OK\nSubject: first"
    );
    assert_eq!(pop3_login(&gw, "dana@example.test", "pw-dana"), "OK");
    assert_eq!(jmap_status(&gw, "dana@example.test", "pw-dana"), "200");
    let (code, body) = healthz(&gw);
    assert_eq!(code, "200", "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(health["status"], "ok", "{body}");
}

#[test]
fn a_database_lost_after_a_good_read_keeps_its_users_receiving_and_refuses_nobody_for_good() {
    let mut pg = Postgres::start();
    let gw = gateway_with_dana(&pg, "refresh-secs = 1\nstale-secs = 4\n");
    assert!(rcpt(&gw, "nobody@example.test").starts_with("550 5.1.1"));
    pg.stop();
    // Once a read has failed, an address missing from the last good read may have been added
    // since: it is deferred, not refused.
    assert!(
        wait_until(15, || rcpt(&gw, "nobody@example.test")
            .starts_with("451 4.4.3")),
        "an unknown recipient during the outage"
    );
    // A known user still receives mail, delivered from the last good read.
    assert!(send(&gw, "dana@example.test", "during").starts_with("250"));
    assert_eq!(gw.wait_mailbox("dana@example.test", 2).len(), 2);
    // After stale-secs, logins are refused as temporary and the node says it is not ready.
    assert!(
        wait_until(15, || smtp_auth(&gw, "dana@example.test", "pw-dana")
            .starts_with("454 4.7.0")),
        "SMTP AUTH once stale"
    );
    assert!(imap_login(&gw, "dana@example.test", "pw-dana").contains("[UNAVAILABLE]"));
    assert!(pop3_login(&gw, "dana@example.test", "pw-dana").starts_with("-ERR [SYS/TEMP]"));
    assert_eq!(jmap_status(&gw, "dana@example.test", "pw-dana"), "503");
    let (code, body) = healthz(&gw);
    assert_eq!(code, "503", "{body}");
    assert!(body.contains("users source unavailable"), "{body}");
    assert!(rcpt(&gw, "dana@example.test").starts_with("250"));

    pg.restart();
    assert!(wait_until(30, || rcpt(&gw, "nobody@example.test")
        .starts_with("550 5.1.1")));
    assert!(smtp_auth(&gw, "dana@example.test", "pw-dana").starts_with("235"));
    assert_eq!(
        imap_read(&gw, "dana@example.test", "pw-dana"),
        "OK\nSubject: first\nSubject: during"
    );
    assert_eq!(healthz(&gw).0, "200");
}

#[test]
fn the_cli_refuses_names_that_are_not_canonical_addresses_or_name_an_existing_user() {
    // The users file (carol@example.test is one of the test users).
    let gw = Gateway::start("");
    for (name, why) in [
        (".carol@example.test", "starts with a dot"),
        ("carol.@example.test", "ends with a dot"),
        ("ca..rol@example.test", "two dots in a row"),
        ("x/../carol@example.test", "slash"),
        ("../carol@example.test", "slash"),
        (".@example.test", "starts with a dot"),
        ("carol@../example.test", "not a valid host name"),
        ("carol\u{7}@example.test", "control character"),
        ("\"carol\"@example.test", "quoted"),
        ("carol", "needs a local part"),
        ("Carol@example.test", "is user carol@example.test already"),
        ("CAROL@EXAMPLE.TEST", "is user carol@example.test already"),
        ("carol@example.test", "already exists"),
        ("e\u{301}lodie@example.test", ""),
        (
            "\u{c9}LODIE@example.test",
            "is user \u{e9}lodie@example.test already",
        ),
    ] {
        let (ok, said) = user_add(&gw, name, "pw-mallory");
        if why.is_empty() {
            assert!(ok, "{name:?}: {said}");
            continue;
        }
        assert!(!ok, "{name:?} accepted");
        assert!(said.contains(why), "{name:?}: {said}");
    }
    let (ok, said) = user_add(&gw, "Frank@Example.TEST", "pw-frank");
    assert!(ok && said.contains("added frank@example.test"), "{said}");
    let list = gw.cli(&["user", "list"]);
    let mut users: Vec<&str> = list.stdout.lines().collect();
    users.sort_unstable();
    assert_eq!(
        users,
        [
            "alice@example.test",
            "bob@example.test",
            "carol@example.test",
            "frank@example.test",
            "\u{e9}lodie@example.test"
        ]
    );
    // Carol's mail stays carol's: nobody else logs in with her name in another spelling.
    assert!(send(&gw, "carol@example.test", "for carol").starts_with("250"));
    assert_eq!(gw.wait_mailbox("carol@example.test", 1).len(), 1);
    assert_eq!(
        imap_read(&gw, "CAROL@example.test", "pw-carol"),
        "OK\nSubject: for carol",
        "any spelling of carol is carol"
    );
    assert!(imap_login(&gw, ".carol@example.test", "pw-mallory").contains("AUTHENTICATIONFAILED"));
    // The accented user's mail goes to the one Maildir of the canonical (NFC) name.
    assert!(send(&gw, "\u{c9}lodie@example.test", "bonjour").starts_with("250"));
    assert_eq!(gw.wait_mailbox("\u{e9}lodie@example.test", 1).len(), 1);
    assert_eq!(
        imap_read(&gw, "e\u{301}lodie@example.test", "pw-mallory"),
        "OK\nSubject: bonjour"
    );
}

#[test]
fn database_rows_that_are_invalid_or_collide_with_a_user_serve_no_mailbox() {
    let pg = Postgres::start();
    let gw = Gateway::builder()
        .users_database(&pg.url(), "refresh-secs = 1\n")
        .start();
    for (user, password) in [
        ("carol@example.test", "pw-carol"),
        ("mallory@example.test", "pw-mallory"),
    ] {
        let (ok, said) = user_add(&gw, user, password);
        assert!(ok, "{said}");
    }
    assert!(wait_until(15, || rcpt(&gw, "carol@example.test").starts_with("250")));
    assert!(send(&gw, "carol@example.test", "for carol only").starts_with("250"));
    assert_eq!(gw.wait_mailbox("carol@example.test", 1).len(), 1);
    // Rows written straight into the table, past the CLI, with mallory's password: one
    // spelled differently, one whose dot the old path rule would have stripped, one with a
    // path in it.
    pg.sql(
        "INSERT INTO users (address, password)
           SELECT a, password FROM users, (VALUES ('Carol@example.test'), ('.carol@example.test'),
                                                  ('../carol@example.test')) AS v(a)
           WHERE address = 'mallory@example.test'",
    );
    assert!(
        wait_until(15, || {
            let log = gw.log();
            [
                "Carol@example.test",
                ".carol@example.test",
                "../carol@example.test",
            ]
            .iter()
            .all(|row| {
                let user = format!("user={row:?}");
                log.lines()
                    .any(|l| l.contains("user refused") && l.contains(&user))
            })
        }),
        "each row refused with its reason in the log:\n{}",
        gw.log()
    );
    for spelling in [
        "Carol@example.test",
        ".carol@example.test",
        "../carol@example.test",
    ] {
        let answer = imap_read(&gw, spelling, "pw-mallory");
        assert!(
            answer.contains("AUTHENTICATIONFAILED"),
            "{spelling}: {answer}"
        );
        assert!(
            smtp_auth(&gw, spelling, "pw-mallory").starts_with("535"),
            "{spelling}"
        );
    }
    assert_eq!(
        imap_read(&gw, "carol@example.test", "pw-carol"),
        "OK\nSubject: for carol only"
    );
    // `user list` names the refused rows and why; `user remove` takes one out by its name.
    let list = gw.cli(&["user", "list"]);
    assert!(
        list.stderr.contains(
            "\"Carol@example.test\": its canonical form is that of user carol@example.test"
        ),
        "{}",
        list.stderr
    );
    assert!(list
        .stderr
        .contains("\".carol@example.test\": the local part starts with a dot"));
    let removed = gw.cli(&["user", "remove", ".carol@example.test"]);
    assert_eq!(removed.code, Some(0), "{}", removed.stderr);
    assert!(!gw
        .cli(&["user", "list"])
        .stderr
        .contains("\".carol@example.test\""));
}

/// A probe that counts in the kv store at RCPT and traps at DATA, refusing on failure.
fn counting_then_trapping() -> String {
    mailgate_e2e::probe_plugin(
        "trapper",
        "rcpt-to\", \"data",
        "action.rcpt-to = \"kv-incr\"\naction.data = \"trap\"\ncapabilities = [\"kv\"]",
    )
    .replace(
        "[plugin.config]",
        "grant = [\"kv\"]\non-failure = \"reject\"\ntimeout-ms = 3000\n[plugin.config]",
    )
}

#[test]
fn a_plugin_that_fails_while_the_kv_store_is_down_defers_even_when_its_policy_is_reject() {
    // Nothing listens at this port: every kv call fails within the store's deadline.
    let closed = mailgate_e2e::free_port();
    let down = format!("[kv]\nbackend = \"redis://127.0.0.1:{closed}\"\ntimeout-ms = 300\n");
    let gw = Gateway::start(&format!("{down}{}", counting_then_trapping()));
    let reply = send(&gw, "alice@example.test", "kv down");
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    assert!(
        gw.log().contains("plugin fault after a kv store error"),
        "{}",
        gw.log()
    );
    // The same plugin with a store that works: its fault is refused, as its policy says.
    let up = Gateway::start(&counting_then_trapping());
    let reply = send(&up, "alice@example.test", "kv up");
    assert!(reply.starts_with("550 5.7.0"), "{reply}");
}

/// Mail that could not be placed because the users could not be read (a queued message
/// recovered at a start while PostgreSQL is down) is delivered as soon as the database
/// answers again, not at its next retry an hour later.
#[test]
fn mail_deferred_while_the_users_database_is_down_is_delivered_as_soon_as_it_answers() {
    let mut pg = Postgres::start();
    let mut gw = gateway_with_dana_and(
        &pg,
        "refresh-secs = 1\nstale-secs = 30\n",
        "[queue]\nretry = [\"1h\"]\n",
    );
    // A message stays queued: dana's `new/` is, for a moment, not a directory of its own.
    let maildir = gw.data().join("mail/example.test/dana");
    std::fs::rename(maildir.join("new"), maildir.join("new.away")).expect("move new/");
    std::os::unix::fs::symlink(maildir.join("new.away"), maildir.join("new")).expect("link");
    assert!(send(&gw, "dana@example.test", "waited").starts_with("250"));
    assert!(
        wait_until(10, || gw.log().contains("not a directory of its own")),
        "{}",
        gw.log()
    );
    gw.kill();
    std::fs::remove_file(maildir.join("new")).expect("unlink");
    std::fs::rename(maildir.join("new.away"), maildir.join("new")).expect("move back");

    // Started with the database down: the message recovered from the queue cannot be placed.
    pg.stop();
    gw.launch();
    assert!(
        wait_until(15, || gw.log().contains(
            "users source unavailable, cannot tell where dana@example.test goes"
        )),
        "{}",
        gw.log()
    );
    assert_eq!(gw.mailbox("dana@example.test").len(), 1);
    let queued = gw.cli(&["queue", "list"]).stdout;
    assert!(queued.contains("dana@example.test"), "{queued}");

    pg.restart();
    let back = std::time::Instant::now();
    assert!(
        wait_until(10, || gw.mailbox("dana@example.test").len() == 2),
        "not delivered within 10 s of the database's return:\n{}",
        gw.log()
    );
    eprintln!("delivered {:?} after the database answered", back.elapsed());
    let delivered = gw.mailbox("dana@example.test");
    assert!(
        delivered.iter().any(|m| m.contains("Subject: waited")),
        "{delivered:?}"
    );
    // Once: the retry timer that was set finds it gone.
    let queued = gw.cli(&["queue", "list"]).stdout;
    assert!(!queued.contains("dana@example.test"), "{queued}");
}

/// Datagrams sent to a NOTIFY_SOCKET the test binds itself, as systemd would receive them.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    socket: std::os::unix::net::UnixDatagram,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        NotifySocket {
            _dir: dir,
            path,
            socket,
        }
    }

    /// The next datagram, waiting up to `secs`.
    fn next(&self, secs: u64) -> Option<String> {
        let _ = self
            .socket
            .set_read_timeout(Some(std::time::Duration::from_secs(secs)));
        let mut buf = [0u8; 512];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

/// Under systemd (`Type=notify`), a node whose users database is down at start is not ready:
/// it says why in `STATUS=` and sends `READY=1` only once the users are read — though its
/// listeners are bound and answering (temporarily) meanwhile.
#[test]
fn readiness_waits_for_the_first_read_of_the_users_database() {
    let mut pg = Postgres::start();
    let mut gw = gateway_with_dana(&pg, "refresh-secs = 1\nstale-secs = 30\n");
    gw.kill();
    pg.stop();
    let notify = NotifySocket::bind();
    gw.launch_with(&[("NOTIFY_SOCKET", notify.path.as_os_str())]);
    let first = notify.next(20).expect("a first notification");
    assert!(
        first.starts_with("STATUS=") && first.contains("users source"),
        "{first}"
    );
    // The listeners are bound and answer, but not for real: not ready.
    let reply = rcpt(&gw, "dana@example.test");
    assert!(reply.starts_with("451 4.4.3"), "{reply}");
    assert_eq!(
        notify.next(2),
        None,
        "nothing more while the database is down"
    );

    pg.restart();
    let ready = notify.next(30).expect("READY=1 once the database answers");
    assert_eq!(ready, "READY=1");
    assert!(rcpt(&gw, "dana@example.test").starts_with("250"));
}
