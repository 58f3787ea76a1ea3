//! What the Rust benchmarks share: a session, services, CPU time, units.

use std::sync::Arc;
use std::time::Duration;

use mailgate::plugin::services::{Services, StaticDns};
use mailgate::plugin::Session;

pub fn services() -> Services {
    Services::with_dns(Arc::new(StaticDns::default()))
}

pub fn session() -> Session {
    Session {
        id: "bench".into(),
        peer_ip: "192.0.2.1".into(),
        peer_port: 40000,
        listener: "inbound".into(),
        ..Session::default()
    }
}

pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p) as usize]
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// CPU time of this process (user + system), from /proc.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or("").split(' ').collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Runs `bench` when cargo asks for benchmarks (`cargo bench` passes --bench; `cargo test
/// --benches` passes nothing and only wants it to build).
pub fn run_when_benchmarking<F: std::future::Future<Output = ()>>(bench: impl FnOnce() -> F) {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(bench());
}
