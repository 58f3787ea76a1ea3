//! What the Rust benchmarks share: a session, services, CPU time, units.

// Each benchmark is a crate of its own and uses a part of this.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use mailgate::dns::StaticDns;
use mailgate::mail::Session;
use mailgate::message::Message;
use mailgate::plugin::services::Services;

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

/// A message of about `size` bytes: headers, a text part and a base64 attachment.
pub fn message(size: usize, n: usize) -> Message {
    let mut raw = format!(
        "From: Sender <sender{n}@example.net>\r\nTo: rcpt@example.org\r\nSubject: bench message {n}\r\n\
         Date: Sun, 22 Nov 2026 09:00:00 +0000\r\nMessage-ID: <{n}@example.net>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b{n}\"\r\n\r\n--b{n}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    );
    for i in 0..16 {
        raw.push_str(&format!(
            "Line {i} of the text part, nothing remarkable in it.\r\n"
        ));
    }
    raw.push_str(&format!(
        "--b{n}\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    ));
    while raw.len() + 100 < size {
        raw.push_str(
            "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZURlY29kZT4+\r\n",
        );
    }
    raw.push_str(&format!("--b{n}--\r\n"));
    Message::new(raw.into_bytes())
}
