//! Mail authentication costs per 4 KiB message (`cargo xtask bench dkim`): DKIM signing with
//! Ed25519 and RSA-2048 keys through the relay's signer, then verification of those signed
//! messages as received mail (SPF for MAIL FROM and HELO, DKIM, DMARC) with a warm cache of
//! DNS answers: p50 and p99 of one message, and the rate one core gets through.

use std::path::Path;
use std::time::{Duration, Instant};

use std::sync::Arc;

use mailgate::config::{AuthConfig, AuthMethod, Config, DkimAlgorithm, DnsConfig};
use mailgate::delivery::relay::dkim::{keygen, Signers};
use mailgate::dns::{RecordType, StaticDns};
use mailgate::harness::dns_server::ScriptedDnsServer;
use mailgate::sender_auth::{Envelope, Outcome, Verifier};

mod support;
use support::{message, percentile, us};

const MESSAGES: usize = 2000;

async fn bench() {
    let dir = tempfile::tempdir().expect("tempdir");
    println!("DKIM signing, 4 KiB messages, {MESSAGES} each (relaxed/relaxed, default headers)");
    let mut signed_sets = Vec::new();
    for (algorithm, file) in [
        (DkimAlgorithm::Ed25519Sha256, "ed.key"),
        (DkimAlgorithm::RsaSha256, "rsa.key"),
    ] {
        let (pem, record) = keygen(algorithm, 2048).expect("keygen");
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
        let mut signed_messages = Vec::with_capacity(MESSAGES);
        for raw in &messages {
            let t = Instant::now();
            let signed = signers.sign(raw);
            samples.push(t.elapsed());
            match signed {
                Some(Ok(fields)) => signed_messages.push([fields.as_bytes(), raw].concat()),
                _ => panic!("not signed"),
            }
        }
        let rate = MESSAGES as f64 / wall.elapsed().as_secs_f64();
        println!(
            "  {:<15} p50 {:>8.1} us   p99 {:>8.1} us   {:>7.0} messages/s on one core",
            algorithm.name(),
            us(percentile(&mut samples, 0.5)),
            us(percentile(&mut samples, 0.99)),
            rate
        );
        signed_sets.push((algorithm, record, signed_messages));
    }
    for (algorithm, record, messages) in signed_sets {
        verify(algorithm, &record, &messages).await;
    }
}

/// Verifies signed messages as the SMTP session does (SPF, DKIM, DMARC; the checks on a
/// blocking thread), after one pass that fills the cache of DNS answers.
async fn verify(algorithm: DkimAlgorithm, record: &str, messages: &[Vec<u8>]) {
    let mut table = StaticDns::default();
    let spf = vec!["v=spf1 ip4:192.0.2.0/24 -all".to_string()];
    table.insert(RecordType::Txt, "example.net", spf.clone());
    table.insert(RecordType::Txt, "client.example.net", spf);
    table.insert(
        RecordType::Txt,
        "b._domainkey.example.net",
        vec![record.to_string()],
    );
    table.insert(
        RecordType::Txt,
        "_dmarc.example.net",
        vec!["v=DMARC1; p=reject".into()],
    );
    let server = ScriptedDnsServer::start(Arc::new(table))
        .await
        .expect("dns");
    let dns = DnsConfig {
        servers: vec![server.addr.to_string()],
        timeout_ms: Some(1000),
    };
    let config = Config {
        auth: AuthConfig {
            verify: vec![AuthMethod::Spf, AuthMethod::Dkim, AuthMethod::Dmarc],
            ..AuthConfig::default()
        },
        ..Config::default()
    };
    let resolver = mailgate::dns::resolver(&dns).expect("resolver");
    let verifier = Verifier::new(&config, resolver).expect("verifier");
    let verifier = Arc::new(verifier.expect("checks configured"));
    let envelope = Envelope {
        client_ip: "192.0.2.1".parse().expect("ip"),
        helo: "client.example.net".into(),
        sender: "bounce@example.net".into(),
    };
    let check = |raw: &Vec<u8>| verifier.check_message(raw.clone(), envelope.clone(), None);
    let warm = check(&messages[0]).await.results;
    let dmarc = warm.dmarc.as_ref().map(|d| d.outcome);
    assert_eq!(dmarc, Some(Outcome::Pass), "{}", warm.header_field());
    let mut samples: Vec<Duration> = Vec::with_capacity(messages.len());
    let wall = Instant::now();
    for raw in messages {
        let t = Instant::now();
        let results = check(raw).await.results;
        samples.push(t.elapsed());
        let dkim = results.dkim.as_deref().unwrap_or_default();
        assert!(dkim.iter().all(|c| c.outcome == Outcome::Pass));
    }
    let rate = messages.len() as f64 / wall.elapsed().as_secs_f64();
    println!(
        "  verify {:<8} p50 {:>8.1} us   p99 {:>8.1} us   {:>7.0} messages/s (SPF x2 + DKIM + DMARC, warm DNS cache)",
        algorithm.name().split('-').next().unwrap_or(""),
        us(percentile(&mut samples, 0.5)),
        us(percentile(&mut samples, 0.99)),
        rate
    );
}

fn main() {
    support::run_when_benchmarking(bench);
}
