//! Plugin runtime costs, printed as figures (run with `cargo xtask bench`):
//! - one stage call on a live instance (a trivial Rust plugin, rcpt-to);
//! - instantiation from `InstancePre` plus that call (a new transaction each time);
//! - a 5-plugin chain through every stage for 1000 messages of 4 KiB, 64 KiB and 512 KiB;
//! - the same stage call, instantiation and chain with a contract 0.1.0 component (the bundled
//!   recipient-policy as built before 0.2, `tests/fixtures/contract-0.1/`) through the adapter,
//!   beside the same plugin built for 0.2.
//!
//! Targets (issue #2): stage call <= 2 us median, instantiation <= 20 us, whole 5-plugin chain
//! <= 100 us CPU per 4 KiB message.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailgate::config::{Config, RuntimeConfig};
use mailgate::harness::{run_transaction, TransactionInput};
use mailgate::mail::MailState;
use mailgate::message::Message;
use mailgate::plugin::{PluginSet, Runtime, StageCall};

mod support;
use support::{cpu_time, message, percentile, services, session, us};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn load(runtime: &Arc<Runtime>, toml: &str) -> Arc<PluginSet> {
    let config = Config::parse(
        toml,
        std::path::Path::new("bench.toml"),
        root().join("target"),
    )
    .expect("config");
    Arc::new(
        PluginSet::load(runtime.clone(), &config)
            .await
            .expect("plugins (run `cargo xtask plugins`)"),
    )
}

fn report(name: &str, samples: &mut [Duration]) {
    let median = percentile(samples, 0.5);
    let p99 = percentile(samples, 0.99);
    println!(
        "{name:<48} median {:>9.2} us   p99 {:>9.2} us   (n={})",
        us(median),
        us(p99),
        samples.len()
    );
}

const TRIVIAL: &str =
    "[runtime]\ninstance-reuse = 1\n[[plugin]]\npath = \"test-plugins/sdk-example.wasm\"\n";

const POLICY_0_2: &str = "[runtime]\ninstance-reuse = 1\n[[plugin]]\npath = \"plugins/recipient-policy.wasm\"\n[plugin.config]\ndomains = [\"example.org\"]\n";
const POLICY_0_1: &str = "[runtime]\ninstance-reuse = 1\n[[plugin]]\npath = \"../tests/fixtures/contract-0.1/recipient-policy-0.1.wasm\"\n[plugin.config]\ndomains = [\"example.org\"]\n";

const CHAIN: &str = r#"
[[plugin]]
path = "plugins/recipient-policy.wasm"
[plugin.config]
domains = ["example.org"]
[[plugin]]
path = "test-plugins/sdk-example.wasm"
[[plugin]]
path = "plugins/mime-guard.wasm"
[plugin.config]
action = "reject"
extensions = ["exe", "scr", "js", "vbs"]
[[plugin]]
path = "plugins/header-rewrite.wasm"
[plugin.config]
remove = ["X-Originating-IP"]
trace-header = "X-Mailgate"
[[plugin]]
name = "probe"
path = "test-plugins/probe-plugin.wasm"
[plugin.config]
stages = ["connect", "helo", "mail-from", "rcpt-to", "data", "deliver", "retrieve"]
"#;

/// A rcpt-to call on a live instance, then instantiation plus the first call (the set has
/// `instance-reuse = 1`, so every transaction instantiates).
async fn stage_call_and_instantiation(set: &Arc<PluginSet>, label: &str) {
    let rcpt = "someone@example.org";
    let mut tx = set.transaction("bench", services());
    let mut state = MailState {
        session: session(),
        ..MailState::default()
    };
    tx.run(StageCall::RcptTo(rcpt, &[]), &mut state).await;
    let mut samples = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let t = Instant::now();
        tx.run(StageCall::RcptTo(rcpt, &[]), &mut state).await;
        samples.push(t.elapsed());
    }
    report(
        &format!("stage call, live instance ({label})"),
        &mut samples,
    );
    drop(tx);

    let mut samples = Vec::with_capacity(5_000);
    for _ in 0..5_000 {
        let t = Instant::now();
        let mut tx = set.transaction("bench", services());
        tx.run(StageCall::RcptTo(rcpt, &[]), &mut state).await;
        samples.push(t.elapsed());
        drop(tx);
    }
    report(&format!("instantiate + first call ({label})"), &mut samples);
}

async fn bench() {
    let runtime = Arc::new(Runtime::new(&RuntimeConfig::default(), None).expect("engine"));
    let trivial = load(&runtime, TRIVIAL).await;
    stage_call_and_instantiation(&trivial, "sdk example, rcpt-to").await;
    let policy = load(&runtime, POLICY_0_2).await;
    stage_call_and_instantiation(&policy, "recipient-policy 0.2").await;
    let policy = load(&runtime, POLICY_0_1).await;
    stage_call_and_instantiation(&policy, "recipient-policy 0.1, adapter").await;

    // The 5-plugin chain through every stage, with instances reused across transactions (the
    // default) and with a fresh instance per plugin and transaction.
    let reused = load(&runtime, CHAIN).await;
    let fresh = load(&runtime, &format!("[runtime]\ninstance-reuse = 1\n{CHAIN}")).await;
    let with_0_1 = CHAIN.replace(
        "plugins/recipient-policy.wasm",
        "../tests/fixtures/contract-0.1/recipient-policy-0.1.wasm",
    );
    let adapted = load(&runtime, &with_0_1).await;
    for (label, chain, size) in [
        ("reused", &reused, 4 << 10),
        ("reused, one plugin 0.1", &adapted, 4 << 10),
        ("fresh", &fresh, 4 << 10),
        ("reused", &reused, 64 << 10),
        ("reused", &reused, 512 << 10),
    ] {
        let messages: Vec<Message> = (0..1000).map(|n| message(size, n)).collect();
        let mut samples = Vec::with_capacity(messages.len());
        let cpu_start = cpu_time();
        let wall = Instant::now();
        for message in messages {
            let input = TransactionInput {
                session: session(),
                helo: "client.example.net".into(),
                sender: "sender@example.net".into(),
                recipients: vec!["rcpt@example.org".into()],
                message,
            };
            let t = Instant::now();
            let result = run_transaction(chain, services(), input, None).await;
            samples.push(t.elapsed());
            assert_eq!(result.disposition.name(), "accept");
        }
        let cpu = cpu_time().saturating_sub(cpu_start);
        report(
            &format!("5-plugin chain, all stages, {} KiB, {label}", size >> 10),
            &mut samples,
        );
        println!(
            "{:<48} {:>9.2} us CPU per message ({:.2} s wall for 1000)",
            "",
            us(cpu) / 1000.0,
            wall.elapsed().as_secs_f64()
        );
    }
}

fn main() {
    support::run_when_benchmarking(bench);
}
