//! MTA-STS (RFC 8461) end to end: the real gateway delivering to MX hosts (the scripted sink
//! with STARTTLS) with the `_mta-sts` TXT record and the MX records answered by dnsmasq, and
//! the policy served over HTTPS by a local server whose certificate a test CA issued.

use std::process::Command;

use mailgate_e2e::peers::{Dns, PolicyServer, ScriptedSink, TestCa};
use mailgate_e2e::{free_port, wait_until, Gateway, RawSmtp};

const DOMAIN: &str = "sts.test";
const MX: &str = "mx.sts.test";

/// The gateway relays for loopback clients.
const RELAY_FOR_LOOPBACK: &str = r#"relay-networks = ["127.0.0.0/8"]"#;

fn policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n")
}

/// dnsmasq options: `sts.test` has one MX, `mx.sts.test` on loopback, and an STSv1 record
/// with `id`.
fn records(id: &str) -> Vec<String> {
    vec![
        format!("--mx-host={DOMAIN},{MX},10"),
        format!("--host-record={MX},127.0.0.1"),
        format!("--txt-record=_mta-sts.{DOMAIN},v=STSv1; id={id}"),
    ]
}

fn dns(id: &str) -> Dns {
    let records = records(id);
    Dns::start(&records.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The sink on its own port with STARTTLS, presenting `cert`.
fn sink(cert: &(std::path::PathBuf, std::path::PathBuf)) -> ScriptedSink {
    let (cert, key) = (cert.0.to_string_lossy(), cert.1.to_string_lossy());
    ScriptedSink::start_with(free_port(), &["--tls", &cert, &key])
}

/// A gateway whose MX deliveries go to `sink`, names resolved by `dns`, policies of
/// `sts.test` fetched from 127.0.0.1:`policy_port`, the test CA trusted; `extra` appended.
fn gateway(ca: &TestCa, dns: &Dns, sink: &ScriptedSink, policy_port: u16, extra: &str) -> Gateway {
    let config = format!(
        "[dns]\nservers = [\"127.0.0.1:{}\"]\n\
         [relay]\nmx-port = {}\nconnect-timeout-secs = 5\nextra-roots = \"{}\"\n\
         [relay.mta-sts]\nfetch-timeout-secs = 5\n\
         policy-host-override = {{ \"{DOMAIN}\" = \"127.0.0.1:{policy_port}\" }}\n\
         [queue]\nretry = [\"1s\"]\n{extra}",
        dns.port,
        sink.port,
        ca.root().display()
    );
    Gateway::builder()
        .server(RELAY_FOR_LOOPBACK)
        .config(&config)
        .start()
}

/// Sends one message over plain SMTP; the final reply.
fn send(gw: &Gateway, subject: &str) -> String {
    RawSmtp::send_message(gw.inbound, &[&format!("user@{DOMAIN}")], subject)
}

fn queue_list(gw: &Gateway) -> String {
    let run = gw.cli(&["queue", "list"]);
    assert_eq!(run.code, Some(0), "queue list: {}", run.stderr);
    run.stdout
}

/// The value of one series on `/metrics`, as curl gets it.
fn metric(gw: &Gateway, series: &str) -> Option<f64> {
    let out = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{}/metrics", gw.metrics)])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

const ENFORCE_OK: &str = "mailgate_mta_sts_deliveries_total{mode=\"enforce\",result=\"success\"}";
const ENFORCE_FAILED: &str =
    "mailgate_mta_sts_deliveries_total{mode=\"enforce\",result=\"failure\"}";
const TESTING_FAILED: &str =
    "mailgate_mta_sts_deliveries_total{mode=\"testing\",result=\"failure\"}";
const FETCH_FAILED: &str = "mailgate_mta_sts_policy_fetches_total{result=\"failed\"}";

#[test]
fn enforce_delivers_to_a_matching_mx_over_checked_tls() {
    let ca = TestCa::new();
    let server = PolicyServer::start(&ca.issue(&format!("mta-sts.{DOMAIN}")));
    server.serve(&policy("enforce", "*.sts.test"));
    let dns = dns("20261208");
    let sink = sink(&ca.issue(MX));
    let gw = gateway(&ca, &dns, &sink, server.port, "");
    assert_eq!(
        metric(&gw, ENFORCE_OK),
        Some(0.0),
        "the series exists at zero"
    );
    assert!(send(&gw, "enforced").starts_with("250"));
    let got = sink.wait(1, 20);
    assert_eq!(got.len(), 1, "not delivered:\n{}", gw.log());
    assert!(
        got[0].envelope.contains("\"tls\": true"),
        "{}",
        got[0].envelope
    );
    assert!(
        wait_until(5, || metric(&gw, ENFORCE_OK) == Some(1.0)),
        "{:?}",
        metric(&gw, ENFORCE_OK)
    );
    assert!(
        gw.log().contains("MTA-STS policy enforce applies"),
        "{}",
        gw.log()
    );
    let kept = std::fs::read_to_string(gw.data().join("mta-sts").join(DOMAIN)).expect("on disk");
    assert!(kept.starts_with("id 20261208\n"), "{kept}");
    assert!(kept.contains("mx: *.sts.test"), "{kept}");
    assert_eq!(server.requests(), 1);
}

#[test]
fn enforce_defers_when_no_mx_matches() {
    let ca = TestCa::new();
    let server = PolicyServer::start(&ca.issue(&format!("mta-sts.{DOMAIN}")));
    server.serve(&policy("enforce", "mail.elsewhere.test"));
    let dns = dns("1");
    let sink = sink(&ca.issue(MX));
    let gw = gateway(&ca, &dns, &sink, server.port, "");
    assert!(send(&gw, "nomatch").starts_with("250"));
    assert!(
        wait_until(15, || queue_list(&gw).contains("no MX host matches")),
        "{}\n{}",
        queue_list(&gw),
        gw.log()
    );
    assert!(metric(&gw, ENFORCE_FAILED).unwrap_or(0.0) >= 1.0);
    assert!(sink.received().is_empty(), "nothing went to the MX");
}

#[test]
fn enforce_defers_when_the_mx_certificate_is_not_valid() {
    let ca = TestCa::new();
    let server = PolicyServer::start(&ca.issue(&format!("mta-sts.{DOMAIN}")));
    server.serve(&policy("enforce", MX));
    let dns = dns("1");
    let sink = sink(&ca.self_signed(MX));
    let gw = gateway(&ca, &dns, &sink, server.port, "");
    assert!(send(&gw, "badcert").starts_with("250"));
    assert!(
        wait_until(15, || queue_list(&gw).contains("TLS handshake")),
        "{}\n{}",
        queue_list(&gw),
        gw.log()
    );
    assert!(
        wait_until(5, || metric(&gw, ENFORCE_FAILED).unwrap_or(0.0) >= 1.0),
        "{}",
        gw.log()
    );
    assert!(
        sink.received().is_empty(),
        "not sent in clear nor to the unchecked host"
    );
}

#[test]
fn testing_delivers_and_counts_the_failure() {
    let ca = TestCa::new();
    let server = PolicyServer::start(&ca.issue(&format!("mta-sts.{DOMAIN}")));
    server.serve(&policy("testing", "mail.elsewhere.test"));
    let dns = dns("1");
    let sink = sink(&ca.issue(MX));
    let gw = gateway(&ca, &dns, &sink, server.port, "");
    assert_eq!(metric(&gw, TESTING_FAILED), Some(0.0));
    assert!(send(&gw, "testing").starts_with("250"));
    assert_eq!(sink.wait(1, 20).len(), 1, "{}", gw.log());
    assert!(
        wait_until(5, || metric(&gw, TESTING_FAILED) == Some(1.0)),
        "{:?}",
        metric(&gw, TESTING_FAILED)
    );
    assert!(gw.log().contains("not in the policy"), "{}", gw.log());
}

#[test]
fn testing_counts_an_mx_certificate_that_is_not_valid() {
    let ca = TestCa::new();
    let server = PolicyServer::start(&ca.issue(&format!("mta-sts.{DOMAIN}")));
    server.serve(&policy("testing", MX));
    let dns = dns("1");
    let sink = sink(&ca.self_signed(MX));
    let gw = gateway(&ca, &dns, &sink, server.port, "");
    assert!(send(&gw, "testing-cert").starts_with("250"));
    let got = sink.wait(1, 20);
    assert_eq!(got.len(), 1, "{}", gw.log());
    assert!(
        got[0].envelope.contains("\"tls\": true"),
        "{}",
        got[0].envelope
    );
    assert!(
        wait_until(5, || metric(&gw, TESTING_FAILED) == Some(1.0)),
        "{}",
        gw.log()
    );
    assert!(
        gw.log()
            .contains("the certificate of mx.sts.test is not valid"),
        "{}",
        gw.log()
    );
}

#[test]
fn a_new_record_id_brings_the_new_policy() {
    let ca = TestCa::new();
    let server = PolicyServer::start(&ca.issue(&format!("mta-sts.{DOMAIN}")));
    server.serve(&policy("enforce", "mail.elsewhere.test"));
    let first = dns("1");
    let sink = sink(&ca.issue(MX));
    let gw = gateway(&ca, &first, &sink, server.port, "");
    assert!(send(&gw, "changed").starts_with("250"));
    assert!(
        wait_until(15, || queue_list(&gw).contains("no MX host matches")),
        "{}",
        queue_list(&gw)
    );
    // The policy changes but the record does not: retries keep the cached policy.
    server.serve(&policy("enforce", MX));
    let deferrals = || gw.log().matches("no MX host matches").count();
    let before = deferrals();
    assert!(wait_until(15, || deferrals() >= before + 2), "{}", gw.log());
    assert!(sink.received().is_empty(), "{}", gw.log());
    assert_eq!(server.requests(), 1, "one fetch while the id stays");
    let port = first.port;
    drop(first);
    let records = records("2");
    let _second = Dns::start_on(
        port,
        &records.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(sink.wait(1, 20).len(), 1, "{}", gw.log());
    assert_eq!(server.requests(), 2);
}

#[test]
fn a_restart_keeps_the_policy_while_its_host_is_down() {
    let ca = TestCa::new();
    let server = PolicyServer::start(&ca.issue(&format!("mta-sts.{DOMAIN}")));
    server.serve(&policy("enforce", "mail.elsewhere.test"));
    let dns = dns("1");
    let sink = sink(&ca.issue(MX));
    let mut gw = gateway(&ca, &dns, &sink, server.port, "");
    assert!(send(&gw, "restart").starts_with("250"));
    assert!(
        wait_until(15, || queue_list(&gw).contains("no MX host matches")),
        "{}",
        queue_list(&gw)
    );
    drop(server);
    gw.kill();
    // A fresh log: without the policy kept on disk the fetch would fail and the message go.
    gw.launch();
    assert!(
        wait_until(15, || gw.log().matches("no MX host matches").count() >= 2),
        "{}",
        gw.log()
    );
    assert!(sink.received().is_empty(), "{}", gw.log());
    assert!(!gw.log().contains("policy fetch failed"), "{}", gw.log());
}

#[test]
fn without_a_cached_policy_an_unreachable_policy_host_changes_nothing() {
    let ca = TestCa::new();
    let dns = dns("1");
    let sink = sink(&ca.issue(MX));
    let nothing_there = free_port();
    let gw = gateway(&ca, &dns, &sink, nothing_there, "");
    assert!(send(&gw, "down").starts_with("250"));
    assert_eq!(sink.wait(1, 20).len(), 1, "{}", gw.log());
    assert!(metric(&gw, FETCH_FAILED).unwrap_or(0.0) >= 1.0);
    assert!(
        gw.log().contains("delivering without a policy"),
        "{}",
        gw.log()
    );
}

#[test]
fn a_route_with_mta_sts_off_ignores_the_policy() {
    let ca = TestCa::new();
    let server = PolicyServer::start(&ca.issue(&format!("mta-sts.{DOMAIN}")));
    server.serve(&policy("enforce", "mail.elsewhere.test"));
    let dns = dns("1");
    let sink = sink(&ca.issue(MX));
    let route = format!("[[route]]\ndomains = [\"{DOMAIN}\"]\ntype = \"mx\"\nmta-sts = \"off\"\n");
    let gw = gateway(&ca, &dns, &sink, server.port, &route);
    assert!(send(&gw, "off").starts_with("250"));
    assert_eq!(sink.wait(1, 20).len(), 1, "{}", gw.log());
    assert_eq!(server.requests(), 0, "no policy fetched");
}
