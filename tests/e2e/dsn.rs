//! Delivery status notifications end to end (RFC 3461 requests, RFC 3464 reports): smtplib
//! asks for them, the real binary delivers locally and relays to Postfix's smtp-sink or the
//! scripted sink, and the reports that come back are read with Python's `email` package.

use mailgate_e2e::peers::{PostfixDownstream, ScriptedSink, SmtpSink};
use mailgate_e2e::{free_port, jmap_client, python, wait_until, Gateway, RawSmtp};
use serde_json::{json, Value};

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

/// The `X-Mail-Args` and `X-Rcpt-Args` lines of smtp-sink's dump of one message.
fn sink_args(dump: &str) -> (String, Vec<String>) {
    let mail = dump
        .lines()
        .find(|l| l.starts_with("X-Mail-Args:"))
        .unwrap_or_default()
        .to_string();
    let rcpts = dump
        .lines()
        .filter(|l| l.starts_with("X-Rcpt-Args:"))
        .map(str::to_string)
        .collect();
    (mail, rcpts)
}

/// The queue id in a `250 2.0.0 Ok: queued as ID` reply.
fn queue_id(reply: &str) -> String {
    assert!(reply.starts_with("250 2.0.0 Ok: queued as"), "{reply}");
    reply
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The delivery log lines that put off `rcpt`.
fn deferrals(gw: &Gateway, rcpt: &str) -> usize {
    let line = format!("to=<{rcpt}>");
    gw.log()
        .lines()
        .filter(|l| l.contains(&line) && l.contains("status=deferred"))
        .count()
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
    assert!(
        bob.get("Remote-MTA").is_none(),
        "delivered here: {delivered:#}"
    );
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
    let taken = &relayed["recipients"][0];
    assert_eq!(taken["Final-Recipient"], "rfc822; taken@remote.test");
    assert_eq!(taken["Remote-MTA"], "dns; 127.0.0.1", "{relayed:#}");
    let diagnostic = taken["Diagnostic-Code"].as_str().unwrap_or_default();
    assert!(diagnostic.starts_with("smtp; 250 2.0.0"), "{relayed:#}");
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

/// The envelope records `postcat` shows before each `recipient:` record (its DSN requests),
/// by recipient.
fn postfix_recipients(queue_file: &str) -> Vec<(String, Vec<String>)> {
    let envelope = queue_file
        .split("*** MESSAGE CONTENTS")
        .next()
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut records = Vec::new();
    for line in envelope.lines() {
        match line.strip_prefix("recipient: ") {
            Some(rcpt) => out.push((rcpt.to_string(), std::mem::take(&mut records))),
            None => records.push(line.to_string()),
        }
    }
    out
}

#[test]
fn a_real_postfix_downstream_keeps_the_dsn_parameters_it_was_handed() {
    // Postfix holds what it accepts: its queue file shows what it took from our MAIL and RCPT.
    let postfix = PostfixDownstream::start_holding("remote.test");
    let gw = Gateway::builder().config(&route_to(postfix.port)).start();
    let rcpts = [
        format!("far@remote.test;{ALL};ORCPT=rfc822;far+2Boriginal@remote.test"),
        "near@remote.test;NOTIFY=NEVER".to_string(),
    ];
    // The ENVID "env 42+", as xtext.
    let reply = submit(&gw, "HDRS", "env+2042+2B", &rcpts);
    assert!(reply.starts_with("250"), "{reply}");
    let kept = postfix
        .the_held_message()
        .unwrap_or_else(|| panic!("Postfix holds nothing:\n{}\n{}", gw.log(), postfix.log()));
    let kept = &kept;
    assert!(
        kept.contains("named_attribute: envelope_id=env 42+\n"),
        "{kept}"
    );
    // Postfix's DSN_RET_HDRS is 2; its notify bits NEVER 1, SUCCESS 2, FAILURE 4, DELAY 8.
    assert!(kept.contains("named_attribute: ret_flags=2\n"), "{kept}");
    let recipients = postfix_recipients(kept);
    let names: Vec<&str> = recipients.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(names, ["far@remote.test", "near@remote.test"], "{kept}");
    let far = &recipients[0].1;
    assert!(
        far.contains(&"named_attribute: notify_flags=14".to_string()),
        "{kept}"
    );
    let orcpt = "named_attribute: dsn_orig_rcpt=rfc822;far+original@remote.test";
    assert!(far.contains(&orcpt.to_string()), "{kept}");
    let near = &recipients[1].1;
    assert!(
        near.contains(&"named_attribute: notify_flags=1".to_string()),
        "{kept}"
    );
    // Postfix offered DSN: it reports from here on, this gateway sends no relayed report.
    assert!(wait_until(20, || queue_is_empty(&gw)), "{}", gw.log());
    assert!(gw.mailbox("alice@example.test").is_empty());
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

#[test]
fn a_delay_report_comes_once_to_the_recipients_that_asked() {
    // Recipients starting with "busy" get 450 4.2.1 at every attempt.
    let sink = ScriptedSink::start_with(free_port(), &["--tempfail", "busy"]);
    let config = format!(
        "{}\n[queue]\nretry = [\"1s\"]\ndelay-notice-after = \"2s\"\n",
        route_to(sink.port)
    );
    let gw = Gateway::builder().config(&config).start();
    let asked = [
        "busy-delay@remote.test;NOTIFY=DELAY,FAILURE;ORCPT=rfc822;busy-orig@remote.test"
            .to_string(),
    ];
    let asked_id = queue_id(&submit(&gw, "HDRS", "env-42", &asked));
    let quiet = ["busy-quiet@remote.test;NOTIFY=FAILURE".to_string()];
    let quiet_id = queue_id(&submit(&gw, "HDRS", "env-quiet", &quiet));

    let reports = reports(&gw, 1);
    let delayed = with_action(&reports, "delayed");
    assert_is_report(delayed);
    let subject = delayed["subject"].as_str().unwrap_or_default();
    assert!(subject.starts_with("Delayed Mail"), "{delayed:#}");
    assert_eq!(delayed["parts"][2], "text/rfc822-headers", "{delayed:#}");
    let recipients = delayed["recipients"].as_array().expect("recipients");
    assert_eq!(recipients.len(), 1, "{delayed:#}");
    let busy = &recipients[0];
    assert_eq!(busy["Final-Recipient"], "rfc822; busy-delay@remote.test");
    assert_eq!(busy["Original-Recipient"], "rfc822; busy-orig@remote.test");
    assert_eq!(busy["Status"], "4.2.1", "{delayed:#}");
    assert_eq!(busy["Remote-MTA"], "dns; 127.0.0.1", "{delayed:#}");
    let diagnostic = busy["Diagnostic-Code"].as_str().unwrap_or_default();
    assert!(diagnostic.starts_with("smtp; 450 4.2.1"), "{delayed:#}");
    assert!(busy["Last-Attempt-Date"].is_string(), "{delayed:#}");
    // Retried until the message expires: [queue] max-age, five days by default.
    let until = busy["will_retry_until_unix"].as_i64().unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    assert!(
        (now + 4 * 86400..=now + 5 * 86400).contains(&until),
        "Will-Retry-Until {until}, now {now}: {delayed:#}"
    );

    // Both messages go on being retried well past delay-notice-after: no second report for
    // the first, none at all for the one that asked for failures only.
    let seen = deferrals(&gw, "busy-delay@remote.test");
    let retried = wait_until(30, || {
        deferrals(&gw, "busy-delay@remote.test") >= seen + 2
            && deferrals(&gw, "busy-quiet@remote.test") >= 4
    });
    assert!(retried, "both messages are retried:\n{}", gw.log());
    let queue = gw.cli(&["queue", "list"]).stdout;
    assert!(
        queue.contains("-- 2 message(s)"),
        "no report waiting: {queue}"
    );
    let mailbox = gw.mailbox("alice@example.test");
    assert_eq!(mailbox.len(), 1, "one delay report only: {mailbox:#?}");

    // What was asked is kept with each message and told by `queue show` and `trace`.
    let shown = gw.cli(&["queue", "show", &asked_id]).stdout;
    assert!(shown.contains("dsn: ret=HDRS envid=env-42\n"), "{shown}");
    let wanted =
        "<busy-delay@remote.test>: notify=DELAY,FAILURE orcpt=rfc822;busy-orig@remote.test";
    assert!(shown.contains(&format!("dsn {wanted}\n")), "{shown}");
    let shown = gw.cli(&["queue", "show", &quiet_id]).stdout;
    assert!(
        shown.contains("dsn <busy-quiet@remote.test>: notify=FAILURE orcpt=-\n"),
        "{shown}"
    );
    let trace = gw.cli(&["trace", &asked_id]).stdout;
    assert!(trace.contains("dsn ret=HDRS envid=env-42\n"), "{trace}");
    assert!(trace.contains(&format!("dsn {wanted}\n")), "{trace}");
}

/// Sends a draft as alice over JMAP with this submission envelope (jmapc's EmailSubmission);
/// the EmailSubmission/set response.
fn jmap_send(gw: &Gateway, envelope: &Value) -> Value {
    let args = ["send-envelope", &envelope.to_string(), "dsn over jmap"];
    let out = jmap_client(gw, "alice@example.test", &args);
    assert_eq!(out[1]["method"], "EmailSubmissionSetResponse", "{out}");
    out[1]["response"].clone()
}

#[test]
fn jmap_submission_envelope_parameters_reach_the_next_hop_and_bad_ones_are_refused() {
    let sink = SmtpSink::start();
    let gw = Gateway::builder().config(&route_to(sink.port)).start();
    // RFC 8621 section 7: the values come with xtext removed; they go on encoded again.
    let envelope = json!({
        "mailFrom": {"email": "alice@example.test",
                     "parameters": {"RET": "HDRS", "ENVID": "jmap env+1"}},
        "rcptTo": [{"email": "far@remote.test",
                    "parameters": {"NOTIFY": "SUCCESS,FAILURE",
                                   "ORCPT": "rfc822;far+orig@remote.test"}}],
    });
    let sent = jmap_send(&gw, &envelope);
    assert!(sent["created"]["send"]["id"].is_string(), "{sent:#}");
    assert!(
        wait_until(20, || sink.messages().len() == 1),
        "nothing reached smtp-sink:\n{}",
        gw.log()
    );
    let dump = &sink.messages()[0];
    let (mail, rcpts) = sink_args(dump);
    assert!(mail.ends_with(" RET=HDRS ENVID=jmap+20env+2B1"), "{dump}");
    assert_eq!(
        rcpts,
        ["X-Rcpt-Args: <far@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;far+2Borig@remote.test"],
        "{dump}"
    );
    assert!(wait_until(20, || queue_is_empty(&gw)), "{}", gw.log());

    let rcpt = |parameters: Value| {
        json!({"mailFrom": {"email": "alice@example.test"},
               "rcptTo": [{"email": "far@remote.test", "parameters": parameters}]})
    };
    for (bad, why) in [
        (
            rcpt(json!({"NOTIFY": "SOMETIMES"})),
            "NOTIFY must be NEVER, or a list of SUCCESS, DELAY, FAILURE",
        ),
        (
            rcpt(json!({"NOTIFY": "NEVER,SUCCESS"})),
            "NOTIFY=NEVER cannot be combined with other values",
        ),
        (
            rcpt(json!({"ORCPT": "x400;far"})),
            "ORCPT address type must be rfc822 or utf-8",
        ),
        (
            rcpt(json!({"RET": "FULL"})),
            "parameter RET is not taken here",
        ),
        (
            json!({"mailFrom": {"email": "alice@example.test",
                                "parameters": {"ENVID": "x".repeat(101)}},
                   "rcptTo": [{"email": "far@remote.test"}]}),
            "ENVID is longer than 100 characters",
        ),
        (
            json!({"mailFrom": {"email": "alice@example.test", "parameters": {"RET": "ALL"}},
                   "rcptTo": [{"email": "far@remote.test"}]}),
            "RET must be FULL or HDRS",
        ),
    ] {
        let refused = jmap_send(&gw, &bad);
        let error = &refused["notCreated"]["send"];
        assert_eq!(error["type"], "invalidProperties", "{bad}: {refused:#}");
        assert_eq!(error["properties"], json!(["envelope"]), "{refused:#}");
        let description = error["description"].as_str().unwrap_or_default();
        assert!(description.contains(why), "{bad}: {refused:#}");
    }
    assert!(queue_is_empty(&gw), "nothing refused was queued");
    assert_eq!(sink.messages().len(), 1, "nothing refused was sent");
}
