//! Hot reload end to end: plugin files and the config change under a running gateway, which
//! must swap its plugin set without failing or dropping a transaction, keep the old set when the
//! new one is broken, and not grow its memory over many reloads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mailgate_e2e::{root, wait_until, Gateway, RawSmtp};

fn fixture(name: &str) -> PathBuf {
    let path = root().join("target/test-plugins").join(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo xtask plugins`",
        path.display()
    );
    path
}

/// Replaces a file the way a deploy tool does: write beside it, rename over it.
fn install(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename");
}

fn install_bytes(bytes: &[u8], to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, to).expect("rename");
}

/// A gateway whose chain is one plugin loaded from `<plugins>/filter.wasm` (stamp v1 at first).
fn gateway_with_filter() -> (Gateway, tempfile::TempDir, PathBuf) {
    let plugins = tempfile::tempdir().expect("tempdir");
    let filter = plugins.path().join("filter.wasm");
    install(&fixture("stamp-v1.wasm"), &filter);
    let gw = Gateway::start(&format!(
        "[limits]\nmax-connections-per-ip = 50\n[[plugin]]\nname = \"filter\"\npath = \"{}\"\n",
        filter.display()
    ));
    (gw, plugins, filter)
}

fn generation(gw: &Gateway) -> u64 {
    let reply = gw.admin("plugins");
    reply
        .lines()
        .find_map(|l| l.strip_prefix("generation "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no generation in {reply:?}"))
}

/// One message over an open session; the final reply.
fn transaction(smtp: &mut RawSmtp, subject: &str) -> String {
    let mail = smtp.cmd("MAIL FROM:<load@client.test>");
    if !mail.starts_with("250") {
        return format!("MAIL: {mail}");
    }
    let rcpt = smtp.cmd("RCPT TO:<alice@example.test>");
    if !rcpt.starts_with("250") {
        return format!("RCPT: {rcpt}");
    }
    let data = smtp.cmd("DATA");
    if !data.starts_with("354") {
        return format!("DATA: {data}");
    }
    smtp.send(format!("Subject: {subject}\r\n\r\nload\r\n.\r\n").as_bytes());
    smtp.reply()
}

fn send_one(gw: &Gateway, subject: &str) -> String {
    let (mut smtp, _) = RawSmtp::connect(gw.inbound);
    smtp.cmd("EHLO client.test");
    let reply = transaction(&mut smtp, subject);
    smtp.cmd("QUIT");
    reply
}

/// The stamps of the delivered message with this subject.
fn stamps_of(gw: &Gateway, subject: &str) -> Vec<String> {
    let needle = format!("Subject: {subject}\r\n");
    let mail = gw.wait_mailbox_matching("alice@example.test", &needle);
    stamps(&mail)
}

fn stamps(message: &str) -> Vec<String> {
    message
        .lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("X-Filter-Version: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn fifty_swaps_under_load_lose_nothing_and_stamp_once() {
    let (gw, _plugins, filter) = gateway_with_filter();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let port = gw.inbound;
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (stop, sent, failures) = (stop.clone(), sent.clone(), failures.clone());
            std::thread::spawn(move || {
                let (mut smtp, _) = RawSmtp::connect(port);
                smtp.cmd("EHLO load.test");
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    // A fresh connection now and then, so sessions start during swaps too.
                    if n % 20 == 19 {
                        smtp.cmd("QUIT");
                        smtp = RawSmtp::connect(port).0;
                        smtp.cmd("EHLO load.test");
                    }
                    let reply = transaction(&mut smtp, &format!("load-{worker}-{n}"));
                    if reply.starts_with("250") {
                        sent.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.lock().expect("lock").push(reply);
                    }
                    n += 1;
                }
                smtp.cmd("QUIT");
            })
        })
        .collect();
    let first = generation(&gw);
    for swap in 1..=50u64 {
        let version = if swap % 2 == 1 {
            "stamp-v2.wasm"
        } else {
            "stamp-v1.wasm"
        };
        install(&fixture(version), &filter);
        assert!(
            wait_until(10, || generation(&gw) == first + swap),
            "swap {swap} not picked up:\n{}",
            gw.admin("plugins history")
        );
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("load worker");
    }
    let failures = failures.lock().expect("lock").clone();
    assert!(failures.is_empty(), "failed transactions: {failures:?}");
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        sent > 100,
        "the load kept going during the swaps ({sent} messages)"
    );
    // After an even number of swaps v1 serves again.
    let last = send_one(&gw, "after-the-last-swap");
    assert!(last.starts_with("250"), "{last}");
    assert_eq!(stamps_of(&gw, "after-the-last-swap"), ["1"]);
    let delivered = gw.wait_mailbox("alice@example.test", sent + 1);
    assert_eq!(
        delivered.len(),
        sent + 1,
        "every accepted message delivered"
    );
    let mut seen = [0usize; 2];
    for message in &delivered {
        let stamps = stamps(message);
        assert_eq!(stamps.len(), 1, "exactly one stamp: {message}");
        seen[if stamps[0] == "1" { 0 } else { 1 }] += 1;
    }
    assert!(seen[0] > 0 && seen[1] > 0, "both versions served: {seen:?}");
    eprintln!(
        "{sent} messages during 50 swaps; v1 stamped {}, v2 stamped {}",
        seen[0], seen[1]
    );
}

#[test]
fn a_broken_plugin_or_config_leaves_the_old_set_serving() {
    let (gw, _plugins, filter) = gateway_with_filter();
    let start = generation(&gw);
    // Not WebAssembly at all.
    install_bytes(b"this is not a component", &filter);
    assert!(wait_until(10, || gw
        .admin("plugins history")
        .contains("failed")));
    assert!(gw
        .admin("plugins history")
        .contains("not a WebAssembly file"));
    assert_eq!(generation(&gw), start);
    assert!(send_one(&gw, "while-broken").starts_with("250"));
    assert_eq!(
        stamps_of(&gw, "while-broken"),
        ["1"],
        "the old set still serves"
    );
    let reload = gw.cli(&["reload"]);
    assert_eq!(reload.code, Some(1), "mailgate reload reports the failure");
    assert!(
        reload.stderr.contains("not a WebAssembly file"),
        "{}",
        reload.stderr
    );
    // A core module where a component belongs.
    install_bytes(b"\0asm\x01\0\0\0", &filter);
    let reload = gw.cli(&["reload"]);
    assert_eq!(reload.code, Some(1));
    assert!(
        reload
            .stderr
            .contains("core WebAssembly module, not a component"),
        "{}",
        reload.stderr
    );
    // Fixed: the next change is picked up.
    install(&fixture("stamp-v2.wasm"), &filter);
    assert!(
        wait_until(10, || generation(&gw) == start + 1),
        "{}",
        gw.admin("plugins history")
    );
    assert!(send_one(&gw, "fixed").starts_with("250"));
    assert_eq!(stamps_of(&gw, "fixed"), ["2"]);
    // A broken config: an unknown key. The reason names the key and the line.
    let config = std::fs::read_to_string(gw.config_path()).expect("config");
    std::fs::write(
        gw.config_path(),
        format!("{config}\n[relay]\nmax-frobs = 3\n"),
    )
    .expect("write");
    let reload = gw.cli(&["reload"]);
    assert_eq!(reload.code, Some(1), "{}", reload.stderr);
    assert!(
        reload.stderr.contains("max-frobs") && reload.stderr.contains("line"),
        "{}",
        reload.stderr
    );
    assert_eq!(generation(&gw), start + 1);
    assert!(send_one(&gw, "config-broken").starts_with("250"));
    assert_eq!(stamps_of(&gw, "config-broken"), ["2"]);
    // A plugin whose describe traps.
    let probe = fixture("probe-plugin.wasm");
    std::fs::write(
        gw.config_path(),
        format!(
            "{config}\n[[plugin]]\nname = \"bad\"\npath = \"{}\"\n[plugin.config]\ndescribe = \"trap\"\n",
            probe.display()
        ),
    )
    .expect("write");
    let reload = gw.cli(&["reload"]);
    assert_eq!(reload.code, Some(1));
    assert!(reload.stderr.contains("describe"), "{}", reload.stderr);
    assert_eq!(generation(&gw), start + 1);
    // Config fixed: picked up.
    std::fs::write(gw.config_path(), &config).expect("write");
    assert!(
        wait_until(10, || generation(&gw) == start + 2),
        "{}",
        gw.admin("plugins history")
    );
}

#[test]
fn memory_stays_flat_over_500_reloads() {
    let gw = Gateway::start(&format!(
        "[[plugin]]\npath = \"{}\"\n[[plugin]]\npath = \"{}\"\n",
        fixture("stamp-v1.wasm").display(),
        fixture("probe-plugin.wasm").display()
    ));
    for i in 0..5 {
        assert!(send_one(&gw, &format!("warm-{i}")).starts_with("250"));
    }
    // Two rounds of the same work: reloads with a message now and then. Each generation's
    // instances take pool slots of their own, and the pool keeps a bounded number of idle
    // slots' memory resident, so over the first round RSS climbs to a ceiling and then moves
    // below it as slots are reused. The highest RSS seen in a round is its ceiling.
    let round = |name: &str| {
        let mut highest = 0;
        for i in 0..500 {
            let reply = gw.admin("reload");
            assert!(reply.starts_with("ok"), "{name} reload {i}: {reply}");
            if i % 100 == 0 {
                assert!(send_one(&gw, &format!("{name}-{i}")).starts_with("250"));
            }
            if i % 25 == 24 {
                highest = highest.max(gw.rss_kib());
            }
        }
        highest
    };
    let warm = round("warm-up");
    let after = round("after");
    let plugins = gw.admin("plugins");
    assert!(plugins.contains("generation 1001"), "{plugins}");
    assert!(
        plugins.contains("(0 older generation(s) still in use)"),
        "old sets freed: {plugins}"
    );
    eprintln!("highest RSS over the warm-up {warm} KiB, over 500 more reloads {after} KiB");
    assert!(
        after < warm + 8 * 1024,
        "RSS grew from {warm} KiB to {after} KiB over 500 reloads"
    );
}

#[test]
fn sighup_reloads_the_plugins() {
    let (gw, _plugins, _filter) = gateway_with_filter();
    let start = generation(&gw);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().expect("running").to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(
        wait_until(10, || generation(&gw) == start + 1),
        "{}",
        gw.admin("plugins history")
    );
    assert!(gw.admin("plugins history").contains("SIGHUP"));
    // The new set's chain per stage, said as `config check` says it; stages nobody handles are
    // left out here.
    let plugins = gw.admin("plugins");
    let order: Vec<&str> = (plugins.split_once("order per stage:\n"))
        .map(|(_, order)| order.lines().collect())
        .unwrap_or_default();
    assert_eq!(order, ["  data       filter"], "{plugins}");
    let logged = |gw: &Gateway| {
        gw.log()
            .lines()
            .any(|l| l.contains("plugins reloaded") && l.contains("(contract 0.2.1)"))
    };
    assert!(
        wait_until(10, || logged(&gw)),
        "the reload is logged with the plugins in service:\n{}",
        gw.log()
    );
    assert!(
        send_one(&gw, "after-hup").starts_with("250"),
        "still serving"
    );
}
