//! One policy in four languages, printed as figures (run with `cargo xtask bench languages`,
//! which first builds the `mailgate plugin new` template in Rust, Python, JavaScript and C into
//! target/bench-plugins/): refuse recipients at the domains in `blocked-domains` (rcpt-to, one
//! host call), stamp `X-Checked-By` (data, one edit). Per language: component size, cold
//! compile, cached load, instantiation + first call, a live rcpt-to and data call; then the four
//! in one chain, every stage, per 4 KiB message.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailgate::config::{Config, RuntimeConfig};
use mailgate::harness::{run_transaction, TransactionInput};
use mailgate::mail::MailState;
use mailgate::plugin::{PluginSet, Runtime, StageCall};

mod support;
use support::{cpu_time, message, percentile, services, session, us};

const LANGUAGES: [&str; 4] = ["rust", "python", "js", "c"];

fn plugins_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-plugins")
}

fn plugin_table(lang: &str) -> String {
    format!(
        "[[plugin]]\nname = \"{lang}\"\npath = \"policy-{lang}.wasm\"\nmemory-mb = 128\n\
         [plugin.config]\nblocked-domains = [\"blocked.example\"]\n"
    )
}

async fn load(runtime: &Arc<Runtime>, toml: &str) -> Arc<PluginSet> {
    let config = Config::parse(toml, Path::new("bench.toml"), plugins_dir()).expect("config");
    Arc::new(
        PluginSet::load(runtime.clone(), &config)
            .await
            .expect("plugins (run `cargo xtask bench languages`)"),
    )
}

fn runtime(cache: &Path) -> Arc<Runtime> {
    Arc::new(Runtime::new(&RuntimeConfig::default(), Some(cache.to_path_buf())).expect("engine"))
}

fn median(samples: &mut [Duration]) -> Duration {
    percentile(samples, 0.5)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median of `n` timed runs of `body` (a macro: the bodies await and borrow).
macro_rules! median_of {
    ($n:expr, $body:block) => {{
        let mut samples = Vec::with_capacity($n);
        for _ in 0..$n {
            let t = Instant::now();
            $body
            samples.push(t.elapsed());
        }
        median(&mut samples)
    }};
}

async fn one_language(lang: &str, scratch: &Path) {
    let file = plugins_dir().join(format!("policy-{lang}.wasm"));
    let size = std::fs::metadata(&file).expect("component").len();
    let cache = scratch.join(lang);
    let table = plugin_table(lang);

    let (cpu, wall) = (cpu_time(), Instant::now());
    load(&runtime(&cache), &table).await;
    let (cold_wall, cold_cpu) = (wall.elapsed(), cpu_time().saturating_sub(cpu));
    let wall = Instant::now();
    let warm = runtime(&cache);
    let set = load(&warm, &table).await;
    let cached = wall.elapsed();

    let fresh = load(&warm, &format!("[runtime]\ninstance-reuse = 1\n{table}")).await;
    let mut state = MailState {
        session: session(),
        ..MailState::default()
    };
    let rounds = if matches!(lang, "python" | "js") {
        200
    } else {
        2000
    };
    let instantiate = median_of!(rounds, {
        let mut tx = fresh.transaction("bench", services());
        tx.run(StageCall::RcptTo("a@example.org", &[]), &mut state)
            .await;
    });

    let mut tx = set.transaction("bench", services());
    tx.run(StageCall::RcptTo("a@example.org", &[]), &mut state)
        .await;
    let rcpt = median_of!(5000, {
        tx.run(StageCall::RcptTo("a@example.org", &[]), &mut state)
            .await;
    });
    let original = Arc::new(message(4 << 10, 0));
    let data = median_of!(5000, {
        state.message = Some(original.clone());
        tx.run(StageCall::Data, &mut state).await;
    });
    println!(
        "{lang:<7} {:>9.1} KB {:>8.0} ms ({:>6.0} ms CPU) {:>8.2} ms {:>10.1} us {:>9.2} us {:>9.2} us",
        size as f64 / 1000.0,
        ms(cold_wall),
        ms(cold_cpu),
        ms(cached),
        us(instantiate),
        us(rcpt),
        us(data),
    );
}

async fn chain_of_four(scratch: &Path) {
    let tables: String = LANGUAGES.iter().map(|l| plugin_table(l)).collect();
    let warm = runtime(&scratch.join("chain"));
    for (label, reuse) in [
        ("instances reused", ""),
        ("fresh instances", "[runtime]\ninstance-reuse = 1\n"),
    ] {
        let chain = load(&warm, &format!("{reuse}{tables}")).await;
        let count = if reuse.is_empty() { 2000 } else { 200 };
        let mut samples = Vec::with_capacity(count);
        let cpu = cpu_time();
        for n in 0..count {
            let input = TransactionInput {
                session: session(),
                helo: "client.example.net".into(),
                sender: "sender@example.net".into(),
                recipients: vec!["rcpt@example.org".into()],
                message: message(4 << 10, n),
            };
            let t = Instant::now();
            let result = run_transaction(&chain, services(), input, None).await;
            samples.push(t.elapsed());
            assert_eq!(result.disposition.name(), "accept");
        }
        let cpu = cpu_time().saturating_sub(cpu);
        println!(
            "4-language chain, every stage, 4 KiB, {label:<17} median {:>8.1} us   {:>8.1} us CPU per message (n={count})",
            us(median(&mut samples)),
            us(cpu) / count as f64,
        );
    }
}

async fn bench() {
    let scratch = tempfile::tempdir().expect("tempdir");
    println!(
        "{:<7} {:>12} {:>26} {:>11} {:>13} {:>12} {:>12}",
        "", "component", "cold compile", "cached load", "inst.+call", "rcpt-to", "data"
    );
    for lang in LANGUAGES {
        one_language(lang, scratch.path()).await;
    }
    chain_of_four(scratch.path()).await;
}

fn main() {
    support::run_when_benchmarking(bench);
}
