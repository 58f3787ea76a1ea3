//! Delivery status notifications end to end (RFC 3461 requests, RFC 3464 reports): smtplib
//! asks for them, the real binary delivers locally and relays to Postfix's smtp-sink or the
//! scripted sink, and the reports that come back are read with Python's `email` package.

use mailgate_e2e::peers::{ScriptedSink, SmtpSink};
use mailgate_e2e::{free_port, python, wait_until, Gateway, RawSmtp};
use serde_json::Value;

fn route_to(port: u16) -> String {
    format!(
        r#"[[route]]
domains = ["remote.test"]
type = "relay"
host = "127.0.0.1:{port}"
tls = "none"
"#
    )
}

const ALL: &str = "NOTIFY=SUCCESS,DELAY,FAILURE";

/// Submits as alice with RET and ENVID, each recipient with its options
/// (`address;NOTIFY=...;ORCPT=...`); the final reply.
fn submit(gw: &Gateway, ret: &str, envid: &str, rcpts: &[String]) -> String {
    let port = gw.submission.to_string();
    let mut args = vec![port.as_str(), "alice@example.test", "pw-alice", ret, envid];
    args.extend(rcpts.iter().map(String::as_str));
    python("dsn_submit.py", &args)
}

/// A report as Python's `email` package reads it.
fn parse(report: &str) -> Value {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), report).expect("write report");
    let out = python("dsn_parse.py", &[&file.path().display().to_string()]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The reports in alice's mailbox, parsed, once there are `n`.
fn reports(gw: &Gateway, n: usize) -> Vec<Value> {
    let arrived = wait_until(30, || gw.mailbox("alice@example.test").len() >= n);
    assert!(arrived, "{} report(s) expected:\n{}", n, gw.log());
    gw.mailbox("alice@example.test")
        .iter()
        .map(|m| parse(m))
        .collect()
}

/// The report whose recipients' Action is `action`.
fn with_action<'a>(reports: &'a [Value], action: &str) -> &'a Value {
    reports
        .iter()
        .find(|r| r["recipients"][0]["Action"] == action)
        .unwrap_or_else(|| panic!("no {action} report in {reports:#?}"))
}

fn queue_is_empty(gw: &Gateway) -> bool {
    let run = gw.cli(&["queue", "list"]);
    run.stdout.contains("-- 0 message(s)")
}

fn assert_is_report(report: &Value) {
    assert_eq!(report["content_type"], "multipart/report", "{report:#}");
    assert_eq!(report["report_type"], "delivery-status", "{report:#}");
    let parts = report["parts"].as_array().expect("parts");
    assert_eq!(parts[0], "text/plain", "{report:#}");
    assert_eq!(parts[1], "message/delivery-status", "{report:#}");
    assert_eq!(
        report["per_message"]["Reporting-MTA"],
        "dns; mx.example.test"
    );
    assert_eq!(report["per_message"]["Original-Envelope-Id"], "env-42");
}

#[test]
fn success_failure_and_relayed_reports_carry_the_requested_fields() {
    // The scripted sink offers no DSN and refuses recipients starting with "reject".
    let sink = ScriptedSink::start(Some("reject"));
    let gw = Gateway::builder().config(&route_to(sink.port)).start();
    let rcpts = [
        format!("bob@example.test;{ALL};ORCPT=rfc822;bob+2Balias@example.test"),
        format!("reject-me@remote.test;{ALL};ORCPT=rfc822;reject-orig@remote.test"),
        "taken@remote.test;NOTIFY=SUCCESS".to_string(),
    ];
    let reply = submit(&gw, "HDRS", "env-42", &rcpts);
    assert!(reply.starts_with("250 2.0.0 Ok: queued as"), "{reply}");
    let reports = reports(&gw, 3);
    for report in &reports {
        assert_is_report(report);
    }

    let delivered = with_action(&reports, "delivered");
    let bob = &delivered["recipients"][0];
    assert_eq!(bob["Final-Recipient"], "rfc822; bob@example.test");
    assert_eq!(bob["Original-Recipient"], "rfc822; bob+alias@example.test");
    assert_eq!(bob["Status"], "2.0.0");
    assert!(bob["Last-Attempt-Date"].is_string(), "{delivered:#}");
    assert_eq!(delivered["recipients"].as_array().map(Vec::len), Some(1));

    let failed = with_action(&reports, "failed");
    let refused = &failed["recipients"][0];
    assert_eq!(refused["Final-Recipient"], "rfc822; reject-me@remote.test");
    assert_eq!(
        refused["Original-Recipient"],
        "rfc822; reject-orig@remote.test"
    );
    assert_eq!(refused["Status"], "5.1.1");
    assert_eq!(refused["Remote-MTA"], "dns; 127.0.0.1");
    let diagnostic = refused["Diagnostic-Code"].as_str().unwrap_or_default();
    assert!(diagnostic.starts_with("smtp; 550 5.1.1"), "{failed:#}");
    assert!(refused["Last-Attempt-Date"].is_string(), "{failed:#}");
    assert_eq!(failed["parts"][2], "text/rfc822-headers", "RET=HDRS");
    let returned = failed["returned"].as_str().unwrap_or_default();
    assert!(returned.contains("Subject: dsn test"), "{failed:#}");
    assert!(!returned.contains("The body of the original"), "{failed:#}");

    let relayed = with_action(&reports, "relayed");
    assert_eq!(
        relayed["recipients"][0]["Final-Recipient"],
        "rfc822; taken@remote.test"
    );
    let got = sink.received();
    assert_eq!(got.len(), 1, "the accepted recipient got the message");
    assert!(
        got[0].envelope.contains("taken@remote.test"),
        "{:?}",
        got[0]
    );
}

#[test]
fn notify_never_gives_no_bounce() {
    let sink = ScriptedSink::start(Some("reject"));
    let gw = Gateway::builder().config(&route_to(sink.port)).start();
    let rcpts = [
        "reject-quiet@remote.test;NOTIFY=NEVER".to_string(),
        "reject-told@remote.test".to_string(),
        "reject-success-only@remote.test;NOTIFY=SUCCESS".to_string(),
    ];
    let reply = submit(&gw, "FULL", "env-42", &rcpts);
    assert!(reply.starts_with("250"), "{reply}");
    let reports = reports(&gw, 1);
    assert!(wait_until(20, || queue_is_empty(&gw)), "{}", gw.log());
    // The queue is empty: every report there was to queue has been delivered.
    let reports_now = gw.mailbox("alice@example.test");
    assert_eq!(reports_now.len(), 1, "one bounce only: {reports_now:#?}");
    let failed = with_action(&reports, "failed");
    let recipients = failed["recipients"].as_array().expect("recipients");
    assert_eq!(recipients.len(), 1, "{failed:#}");
    assert_eq!(
        recipients[0]["Final-Recipient"],
        "rfc822; reject-told@remote.test"
    );
    // RET=FULL: the whole message comes back.
    assert_eq!(failed["parts"][2], "message/rfc822", "{failed:#}");
    let returned = failed["returned"].as_str().unwrap_or_default();
    assert!(returned.contains("The body of the original"), "{failed:#}");
}

#[test]
fn a_next_hop_that_offers_dsn_gets_the_parameters_and_no_relayed_report() {
    let sink = SmtpSink::start();
    let gw = Gateway::builder().config(&route_to(sink.port)).start();
    let rcpts = [format!(
        "far@remote.test;{ALL};ORCPT=rfc822;far+2Boriginal@remote.test"
    )];
    // The ENVID "env 42+", as xtext.
    let reply = submit(&gw, "HDRS", "env+2042+2B", &rcpts);
    assert!(reply.starts_with("250"), "{reply}");
    assert!(
        wait_until(20, || sink.messages().len() == 1),
        "nothing reached smtp-sink:\n{}",
        gw.log()
    );
    let dump = &sink.messages()[0];
    let mail_args = dump
        .lines()
        .find(|l| l.starts_with("X-Mail-Args:"))
        .unwrap_or_default();
    assert!(mail_args.contains(" RET=HDRS ENVID=env+2042+2B"), "{dump}");
    assert!(
        dump.contains(
            "X-Rcpt-Args: <far@remote.test> NOTIFY=SUCCESS,DELAY,FAILURE ORCPT=rfc822;far+2Boriginal@remote.test"
        ),
        "{dump}"
    );
    assert!(wait_until(20, || queue_is_empty(&gw)), "{}", gw.log());
    assert!(
        gw.mailbox("alice@example.test").is_empty(),
        "smtp-sink reports from here on: no relayed report"
    );
}

#[test]
fn dsn_is_offered_where_configured_and_bad_parameters_are_refused_with_text() {
    let mx = free_port();
    let listener =
        format!("[[listener]]\nname = \"mx-dsn\"\naddress = \"127.0.0.1:{mx}\"\ndsn = true\n");
    let gw = Gateway::builder()
        .server(r#"relay-networks = ["127.0.0.0/8"]"#)
        .config(&listener)
        .start();

    // The inbound listener offers no DSN: its parameters are refused with 555.
    let (mut plain, _) = RawSmtp::connect(gw.inbound);
    let ehlo = plain.cmd("EHLO client.test");
    assert!(!ehlo.contains("DSN"), "{ehlo}");
    let reply = plain.cmd("MAIL FROM:<a@client.test> RET=FULL");
    assert!(reply.starts_with("555 5.5.4 "), "{reply}");
    assert!(plain.cmd("MAIL FROM:<a@client.test>").starts_with("250"));
    let reply = plain.cmd("RCPT TO:<bob@example.test> NOTIFY=NEVER");
    assert!(reply.starts_with("555 5.5.4 "), "{reply}");

    let (mut smtp, _) = RawSmtp::connect(mx);
    let ehlo = smtp.cmd("EHLO client.test");
    assert!(
        ehlo.contains("250-DSN") || ehlo.contains("250 DSN"),
        "{ehlo}"
    );
    for (command, text) in [
        (
            "MAIL FROM:<a@client.test> RET=ALL",
            "RET must be FULL or HDRS",
        ),
        (
            "MAIL FROM:<a@client.test> RET=FULL RET=HDRS",
            "RET given more than once",
        ),
        (
            "MAIL FROM:<a@client.test> ENVID=a+ZZ",
            "ENVID is not valid xtext",
        ),
    ] {
        let reply = smtp.cmd(command);
        assert_eq!(reply.trim_end(), format!("501 5.5.4 {text}"), "{command}");
    }
    let long = "x".repeat(101);
    let reply = smtp.cmd(&format!("MAIL FROM:<a@client.test> ENVID={long}"));
    assert!(reply.starts_with("501 5.5.4 ENVID is longer"), "{reply}");
    let reply = smtp.cmd("MAIL FROM:<a@client.test> RET=HDRS ENVID=ok");
    assert!(reply.starts_with("250"), "{reply}");
    for (command, text) in [
        (
            "RCPT TO:<bob@example.test> NOTIFY=NEVER,SUCCESS",
            "NOTIFY=NEVER cannot be combined with other values",
        ),
        (
            "RCPT TO:<bob@example.test> NOTIFY=SOMETIMES",
            "NOTIFY must be NEVER, or a list of SUCCESS, DELAY, FAILURE",
        ),
        (
            "RCPT TO:<bob@example.test> ORCPT=x400;bob",
            "ORCPT address type must be rfc822 or utf-8",
        ),
        (
            "RCPT TO:<bob@example.test> NOTIFY=NEVER NOTIFY=NEVER",
            "NOTIFY given more than once",
        ),
    ] {
        let reply = smtp.cmd(command);
        assert_eq!(reply.trim_end(), format!("501 5.5.4 {text}"), "{command}");
    }
    let reply =
        smtp.cmd("RCPT TO:<bob@example.test> NOTIFY=SUCCESS ORCPT=utf-8;b\\x{F6}b@example.test");
    assert!(reply.starts_with("250"), "{reply}");
    smtp.cmd("QUIT");
}
