//! DKIM signing cost per 4 KiB message, for Ed25519 and RSA-2048 keys, through the relay's
//! signer (`cargo xtask bench dkim`): p50 and p99 of one message's signing, and the rate one
//! core signs at.

use std::path::Path;
use std::time::{Duration, Instant};

use mailgate::config::{Config, DkimAlgorithm};
use mailgate::relay::dkim::{keygen, Signers};

mod support;
use support::{message, percentile, us};

const MESSAGES: usize = 2000;

async fn bench() {
    let dir = tempfile::tempdir().expect("tempdir");
    println!("DKIM signing, 4 KiB messages, {MESSAGES} each (relaxed/relaxed, default headers)");
    for (algorithm, file) in [
        (DkimAlgorithm::Ed25519Sha256, "ed.key"),
        (DkimAlgorithm::RsaSha256, "rsa.key"),
    ] {
        let (pem, _) = keygen(algorithm, 2048).expect("keygen");
        std::fs::write(dir.path().join(file), pem).expect("key");
        let text = format!(
            "[[dkim]]\ndomain = \"example.net\"\nselector = \"b\"\nkey = \"{file}\"\nalgorithm = \"{}\"\n",
            algorithm.name()
        );
        let config = Config::parse(&text, Path::new("bench.toml"), dir.path().to_path_buf())
            .expect("config");
        let signers = Signers::load(&config).expect("signers");
        let messages: Vec<Vec<u8>> = (0..MESSAGES)
            .map(|n| message(4096, n).raw().to_vec())
            .collect();
        let mut samples: Vec<Duration> = Vec::with_capacity(MESSAGES);
        let wall = Instant::now();
        for raw in &messages {
            let t = Instant::now();
            let signed = signers.sign(raw);
            samples.push(t.elapsed());
            assert!(matches!(signed, Some(Ok(_))));
        }
        let rate = MESSAGES as f64 / wall.elapsed().as_secs_f64();
        println!(
            "  {:<15} p50 {:>8.1} us   p99 {:>8.1} us   {:>7.0} messages/s on one core",
            algorithm.name(),
            us(percentile(&mut samples, 0.5)),
            us(percentile(&mut samples, 0.99)),
            rate
        );
    }
}

fn main() {
    support::run_when_benchmarking(bench);
}
