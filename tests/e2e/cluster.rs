//! Two gateways sharing one Redis (Debian's redis-server, started here): plugin state is the
//! site's, not the node's — the greylist that deferred at one node accepts the retry at the
//! other, counters from both nodes add up — and a store that goes away costs errors, not hangs.
//! Users, aliases and domains in one PostgreSQL (Debian's, initdb'd here) are the same on both.

use std::time::{Duration, Instant};

use mailgate_e2e::peers::{Postgres, Redis};
use mailgate_e2e::{probe_plugin, root, wait_until, Gateway, RawSmtp};

fn kv(redis: &Redis) -> String {
    format!("[kv]\nbackend = \"{}\"\ntimeout-ms = 500\n", redis.url())
}

fn greylist() -> String {
    format!(
        "[[plugin]]\npath = \"{}\"\ngrant = [\"kv\"]\nmemory-mb = 128\n[plugin.config]\ndelay-seconds = 1\n",
        root().join("target/plugins/greylist.wasm").display()
    )
}

fn rcpt(gw: &Gateway) -> String {
    let (mut c, _) = RawSmtp::connect(gw.inbound);
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<sender@client.test>");
    let reply = c.cmd("RCPT TO:<alice@example.test>");
    c.cmd("QUIT");
    reply
}

#[test]
fn the_greylist_deferred_at_one_node_accepts_the_retry_at_the_other() {
    let redis = Redis::start();
    let config = format!("{}{}", kv(&redis), greylist());
    let (a, b) = (Gateway::start(&config), Gateway::start(&config));
    let first = rcpt(&a);
    assert!(first.starts_with("451 4.7.1 Greylisted"), "{first}");
    let early = rcpt(&b);
    assert!(
        early.starts_with("451 4.7.1"),
        "node B knows the triple is new: {early}"
    );
    assert!(
        wait_until(10, || rcpt(&b).starts_with("250")),
        "B accepts after the delay"
    );
    assert!(rcpt(&a).starts_with("250"), "and A remembers the pass");
}

#[test]
fn the_greylist_says_in_words_why_its_store_is_unavailable() {
    let mut redis = Redis::start();
    let gw = Gateway::start(&format!("{}{}", kv(&redis), greylist()));
    assert!(rcpt(&gw).starts_with("451 4.7.1 Greylisted"));
    redis.stop();
    // The plugin fails open, and its log line carries the store's own reason.
    let reply = rcpt(&gw);
    assert!(reply.starts_with("250"), "{reply}");
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("greylist store unavailable"))
        .unwrap_or_else(|| panic!("no greylist warning: {log}"));
    assert!(
        line.contains(&format!(
            "greylist store unavailable: kv store {}",
            redis.url()
        )),
        "{line}"
    );
    assert!(!log.contains("[object Object]"), "{log}");
}

/// Sends `n` messages to alice at node `gw` over `sessions` parallel sessions.
fn load(gw: &Gateway, n: usize, sessions: usize) -> Vec<String> {
    load_port(gw.inbound, n, sessions)
}

/// The X-Probe-Counter values of the mail alice got.
fn counters(gw: &Gateway, n: usize) -> Vec<String> {
    gw.wait_mailbox("alice@example.test", n)
        .iter()
        .filter_map(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("X-Probe-Counter: "))
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn counters_from_both_nodes_add_up_and_a_lost_store_costs_errors_not_hangs() {
    let mut redis = Redis::start();
    let config = format!(
        "{}{}",
        kv(&redis),
        probe_plugin(
            "counter",
            "data",
            "action.data = \"kv-incr\"\ncapabilities = [\"kv\"]"
        )
        // The call's budget covers the store's deadline (500 ms) with room to spare.
        .replace(
            "[plugin.config]",
            "grant = [\"kv\"]\ntimeout-ms = 3000\n[plugin.config]"
        )
    );
    let (a, b) = (Gateway::start(&config), Gateway::start(&config));
    let (ta, tb) = (
        std::thread::spawn({
            let port = a.inbound;
            move || load_port(port, 60, 4)
        }),
        std::thread::spawn({
            let port = b.inbound;
            move || load_port(port, 60, 4)
        }),
    );
    let replies: Vec<String> = [ta, tb]
        .into_iter()
        .flat_map(|t| t.join().expect("load"))
        .collect();
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");
    let mut values: Vec<i64> = counters(&a, 60)
        .into_iter()
        .chain(counters(&b, 60))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("not a count: {v}")))
        .collect();
    values.sort_unstable();
    assert_eq!(
        values,
        (1..=120).collect::<Vec<i64>>(),
        "every increment once, across nodes"
    );

    // The store goes away: the plugin sees the error (its header says so), mail still flows
    // within the deadline, and service comes back with the store.
    redis.stop();
    let started = Instant::now();
    let replies = load(&a, 4, 2);
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let during = counters(&a, 64);
    assert!(
        during.iter().filter(|v| v.starts_with("error")).count() >= 4,
        "{during:?}"
    );
    redis.restart();
    assert!(
        wait_until(20, || {
            load(&b, 1, 1);
            counters(&b, 61).iter().any(|v| v == "1")
        }),
        "counting starts again on the new, empty store"
    );
}

/// Every reply to DATA of `n` messages sent over `sessions` parallel sessions to `port`.
fn load_port(port: u16, n: usize, sessions: usize) -> Vec<String> {
    let workers: Vec<_> = (0..sessions)
        .map(|s| {
            std::thread::spawn(move || {
                let (mut c, _) = RawSmtp::connect(port);
                c.cmd("EHLO client.test");
                let mut replies = Vec::new();
                for i in (s..n).step_by(sessions) {
                    c.cmd("MAIL FROM:<sender@client.test>");
                    c.cmd("RCPT TO:<alice@example.test>");
                    c.cmd("DATA");
                    c.send(format!("Subject: load {i}\r\n\r\nmessage {i}\r\n.\r\n").as_bytes());
                    replies.push(c.reply());
                }
                c.cmd("QUIT");
                replies
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect()
}

/// `mailgate user add ADDRESS` with this node's config (the users database), password on stdin.
fn user_add(gw: &Gateway, address: &str, password: &str) -> bool {
    use std::io::Write;
    let mut child = std::process::Command::new(mailgate_e2e::binary())
        .args(["user", "add", address, "--config"])
        .arg(gw.config_path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("mailgate user add");
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes());
    child.wait().is_ok_and(|s| s.success())
}

/// SMTP AUTH PLAIN over STARTTLS at the submission port: the reply to AUTH.
fn smtp_auth(gw: &Gateway, user: &str, password: &str) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import smtplib, ssl, sys\n\
             c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n\
             s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=20); s.starttls(context=c)\n\
             try:\n    code, text = s.login(sys.argv[2], sys.argv[3])\nexcept smtplib.SMTPAuthenticationError as e:\n    code, text = e.smtp_code, e.smtp_error\n\
             print(code, text.decode())",
        )
        .args([&gw.submission.to_string(), user, password])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// IMAP LOGIN over STARTTLS: imaplib's outcome, "OK" or the server's NO text.
fn imap_login(gw: &Gateway, user: &str, password: &str) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import imaplib, ssl, sys\n\
             c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n\
             m = imaplib.IMAP4('127.0.0.1', int(sys.argv[1])); m.starttls(ssl_context=c)\n\
             try:\n    print(m.login(sys.argv[2], sys.argv[3])[0])\nexcept imaplib.IMAP4.error as e:\n    print(e)",
        )
        .args([&gw.imap.to_string(), user, password])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn users_in_postgres_log_in_on_both_nodes_and_sql_changes_apply_without_restart() {
    let mut pg = Postgres::start();
    let local = "refresh-secs = 1\nstale-secs = 3\n";
    let (a, b) = (
        Gateway::builder().users_database(&pg.url(), local).start(),
        Gateway::builder().users_database(&pg.url(), local).start(),
    );
    assert!(
        user_add(&a, "dana@example.test", "pw-dana"),
        "user add on the database"
    );
    assert!(
        !user_add(&b, "dana@example.test", "other"),
        "the same user twice"
    );
    assert!(
        !user_add(&b, "eve@elsewhere.test", "x"),
        "not a local domain"
    );
    let list = b.cli(&["user", "list"]);
    assert_eq!(list.stdout.trim(), "dana@example.test", "{}", list.stderr);
    // Both nodes see the new user within the refresh interval, over SMTP and IMAP.
    for node in [&a, &b] {
        assert!(
            wait_until(10, || smtp_auth(node, "dana@example.test", "pw-dana")
                .starts_with("235")),
            "SMTP AUTH"
        );
        assert_eq!(imap_login(node, "dana@example.test", "pw-dana"), "OK");
        assert!(smtp_auth(node, "dana@example.test", "wrong").starts_with("535"));
    }
    // An alias added in SQL takes effect without a restart.
    let rcpt = |gw: &Gateway, to: &str| {
        let (mut c, _) = RawSmtp::connect(gw.inbound);
        c.cmd("EHLO client.test");
        c.cmd("MAIL FROM:<sender@client.test>");
        let reply = c.cmd(&format!("RCPT TO:<{to}>"));
        c.cmd("QUIT");
        reply
    };
    assert!(rcpt(&b, "sales@example.test").starts_with("550 5.1.1"));
    pg.sql(
        "INSERT INTO aliases (address, target) VALUES ('sales@example.test', 'dana@example.test')",
    );
    assert!(wait_until(10, || rcpt(&b, "sales@example.test").starts_with("250")));

    // The database goes away: logins fail cleanly once the users are stale, mail to known
    // recipients is still taken (from the last read), and all is well again when it is back.
    pg.stop();
    assert!(
        wait_until(20, || smtp_auth(&a, "dana@example.test", "pw-dana")
            .starts_with("454 4.7.0")),
        "SMTP AUTH during the outage"
    );
    assert!(
        imap_login(&a, "dana@example.test", "pw-dana").contains("[UNAVAILABLE]"),
        "IMAP LOGIN during the outage"
    );
    assert!(
        rcpt(&a, "dana@example.test").starts_with("250"),
        "a known recipient"
    );
    pg.restart();
    assert!(wait_until(20, || smtp_auth(
        &a,
        "dana@example.test",
        "pw-dana"
    )
    .starts_with("235")));
}

/// One message to alice at `gw` with this subject; the X-Probe-Mark alice got with it.
fn mark(gw: &Gateway, subject: &str) -> String {
    let (mut c, _) = RawSmtp::connect(gw.inbound);
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<sender@client.test>");
    c.cmd("RCPT TO:<alice@example.test>");
    c.cmd("DATA");
    c.send(format!("Subject: {subject}\r\n\r\nmark\r\n.\r\n").as_bytes());
    let reply = c.reply();
    c.cmd("QUIT");
    assert!(reply.starts_with("250"), "{reply}");
    let delivered =
        gw.wait_mailbox_matching("alice@example.test", &format!("Subject: {subject}\r\n"));
    delivered
        .lines()
        .find_map(|l| l.strip_prefix("X-Probe-Mark: "))
        .unwrap_or("(no header)")
        .to_string()
}

#[test]
fn an_entry_set_at_one_node_is_seen_and_expires_at_both() {
    let redis = Redis::start();
    let config = format!(
        "{}{}",
        kv(&redis),
        probe_plugin(
            "marker",
            "data",
            "action.data = \"kv-mark\"\ncapabilities = [\"kv\"]\nmark-ttl = 2"
        )
        .replace(
            "[plugin.config]",
            "grant = [\"kv\"]\ntimeout-ms = 3000\n[plugin.config]"
        )
    );
    let (a, b) = (Gateway::start(&config), Gateway::start(&config));
    assert_eq!(mark(&a, "set blue"), "blue");
    assert_eq!(mark(&b, "look 1"), "blue", "node B reads what node A wrote");
    let mut n = 1;
    assert!(
        wait_until(15, || {
            n += 1;
            mark(&b, &format!("look {n}")) == "none"
        }),
        "the entry expires (2 s TTL)"
    );
    assert_eq!(mark(&a, "look again"), "none", "for node A too");
}

#[test]
fn a_schema_of_the_sites_own_works_through_the_configured_queries() {
    let pg = Postgres::start();
    pg.sql(
        "CREATE TABLE accounts (email text PRIMARY KEY, pw text NOT NULL);
         CREATE TABLE maildomains (domain text PRIMARY KEY);
         CREATE TABLE forwards (source text, destination text);
         CREATE TABLE catchalls (domain text, destination text);
         INSERT INTO maildomains VALUES ('branch.test');",
    );
    let queries = "refresh-secs = 1\n[local.queries]\n\
        domains = \"SELECT domain FROM maildomains\"\n\
        users = \"SELECT email, pw FROM accounts\"\n\
        aliases = \"SELECT source, destination FROM forwards\"\n\
        catch-alls = \"SELECT domain, destination FROM catchalls\"\n\
        add-user = \"INSERT INTO accounts (email, pw) VALUES ($1, $2)\"\n\
        remove-user = \"DELETE FROM accounts WHERE email = $1\"\n";
    let gw = Gateway::builder()
        .users_database(&pg.url(), queries)
        .start();
    // A domain that only the site's table names is local; its user lands in `accounts`.
    assert!(user_add(&gw, "erin@branch.test", "pw-erin"), "user add");
    assert!(
        wait_until(10, || smtp_auth(&gw, "erin@branch.test", "pw-erin")
            .starts_with("235")),
        "the user, read back through the site's query"
    );
    let removed = gw.cli(&["user", "remove", "erin@branch.test"]);
    assert_eq!(removed.code, Some(0), "{}", removed.stderr);
    assert!(wait_until(10, || smtp_auth(
        &gw,
        "erin@branch.test",
        "pw-erin"
    )
    .starts_with("535")));
}
