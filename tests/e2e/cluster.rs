//! Two gateways sharing one Redis (Debian's redis-server, started here): plugin state is the
//! site's, not the node's — the greylist that deferred at one node accepts the retry at the
//! other, counters from both nodes add up — and a store that goes away costs errors, not hangs.

use std::time::{Duration, Instant};

use mailgate_e2e::peers::Redis;
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
