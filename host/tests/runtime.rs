//! The plugin runtime against real components: chain semantics, contained faults, failure
//! policies, stage subscription and load errors.

mod common;

use std::time::{Duration, Instant};

use common::{chain, probe, transact, try_chain};
use mailgate::harness::Disposition;
use mailgate::plugin::{Stage, Verdict};

fn fault_of<'a>(report: &'a mailgate::harness::TransactionReport, plugin: &str) -> Option<&'a str> {
    report
        .stages
        .iter()
        .flat_map(|s| &s.runs)
        .find(|r| r.plugin == plugin && r.fault.is_some())
        .and_then(|r| r.fault.as_deref())
}

fn tempfailed_with_4_3_0(report: &mailgate::harness::TransactionReport, stage: Stage) -> bool {
    matches!(&report.disposition, Disposition::Tempfailed { stage: s, reply }
        if *s == stage && reply.code == 451 && reply.enhanced == Some((4, 3, 0)))
}

#[tokio::test]
async fn endless_loop_is_cut_off_at_its_deadline_with_451() {
    let set = chain(&probe(
        "spinner",
        &["data"],
        &[("data", "loop")],
        "timeout-ms = 50",
    ))
    .await;
    let started = Instant::now();
    let report = transact(&set, &["b@example.org"]).await;
    let elapsed = started.elapsed();
    assert!(
        tempfailed_with_4_3_0(&report, Stage::Data),
        "{:?}",
        report.disposition
    );
    let fault = fault_of(&report, "spinner").expect("fault recorded");
    assert!(fault.contains("deadline of 50 ms"), "{fault}");
    // Correctness bound, not a performance target: an uncut loop would never return.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[tokio::test]
async fn memory_growth_past_the_cap_applies_the_failure_policy() {
    let set = chain(&probe(
        "hoarder",
        &["data"],
        &[("data", "grow")],
        "memory-mb = 8\non-failure = \"continue\"",
    ))
    .await;
    let report = transact(&set, &["b@example.org"]).await;
    assert_eq!(
        report.disposition,
        Disposition::Accepted,
        "fail-open policy carries on"
    );
    let fault = fault_of(&report, "hoarder").expect("fault recorded");
    assert!(fault.contains("memory cap of 8 MiB"), "{fault}");
}

#[tokio::test]
async fn header_with_crlf_is_refused_and_never_reaches_the_message() {
    let set = chain(&probe(
        "smuggler",
        &["data"],
        &[("data", "crlf-header")],
        "",
    ))
    .await;
    let report = transact(&set, &["b@example.org"]).await;
    assert!(
        tempfailed_with_4_3_0(&report, Stage::Data),
        "{:?}",
        report.disposition
    );
    let fault = fault_of(&report, "smuggler").expect("fault recorded");
    assert!(fault.contains("X-Evil"), "{fault}");
    let message = report.state.message.expect("message");
    assert!(message.header("X-Evil").is_empty());
    assert!(message.header("Bcc").is_empty());
}

#[tokio::test]
async fn invalid_reply_code_is_a_fault() {
    let set = chain(&probe(
        "liar",
        &["rcpt-to"],
        &[("rcpt-to", "bad-code")],
        "on-failure = \"reject\"",
    ))
    .await;
    let report = transact(&set, &["b@example.org"]).await;
    assert_eq!(report.recipients, vec![("b@example.org".to_string(), 550)]);
    let fault = fault_of(&report, "liar").expect("fault recorded");
    assert!(fault.contains("250"), "{fault}");
}

#[tokio::test]
async fn trap_with_each_policy() {
    let tempfail = chain(&probe(
        "crash",
        &["mail-from"],
        &[("mail-from", "trap")],
        "",
    ))
    .await;
    let report = transact(&tempfail, &["b@example.org"]).await;
    assert!(
        tempfailed_with_4_3_0(&report, Stage::MailFrom),
        "{:?}",
        report.disposition
    );
    assert!(fault_of(&report, "crash").expect("fault").contains("trap"));

    let open = chain(&probe(
        "crash",
        &["mail-from"],
        &[("mail-from", "trap")],
        "on-failure = \"continue\"",
    ))
    .await;
    assert_eq!(
        transact(&open, &["b@example.org"]).await.disposition,
        Disposition::Accepted
    );

    let closed = chain(&probe(
        "crash",
        &["mail-from"],
        &[("mail-from", "trap")],
        "on-failure = \"reject\"",
    ))
    .await;
    match transact(&closed, &["b@example.org"]).await.disposition {
        Disposition::Rejected {
            stage: Stage::MailFrom,
            reply,
        } => assert_eq!(reply.code, 550),
        other => panic!("expected a reject at MAIL, got {other:?}"),
    }
}

#[tokio::test]
async fn the_process_keeps_serving_after_faults() {
    for action in ["loop", "grow", "trap", "crlf-header"] {
        let set = chain(&probe(
            "bad",
            &["data"],
            &[("data", action)],
            "timeout-ms = 20\nmemory-mb = 8",
        ))
        .await;
        let report = transact(&set, &["b@example.org"]).await;
        assert!(fault_of(&report, "bad").is_some(), "{action} faulted");
    }
    let good = chain(&probe("good", &["data"], &[("data", "tag")], "")).await;
    let report = transact(&good, &["b@example.org"]).await;
    assert_eq!(report.disposition, Disposition::Accepted);
    assert_eq!(
        report
            .state
            .message
            .expect("message")
            .header_value("X-Probe")
            .as_deref(),
        Some("good")
    );
}

#[tokio::test]
async fn chain_runs_in_order_and_edits_are_visible_downstream() {
    let config = [
        probe("first", &["mail-from", "data"], &[("data", "tag")], ""),
        probe(
            "second",
            &["mail-from", "data"],
            &[("data", "require-tag")],
            "",
        ),
    ]
    .concat();
    let set = chain(&config).await;
    let report = transact(&set, &["b@example.org"]).await;
    assert_eq!(report.disposition, Disposition::Accepted);
    assert_eq!(
        report.notes["trace"],
        "first:mail-from,second:mail-from,first:data,second:data,"
    );
    let message = report.state.message.expect("message");
    assert_eq!(
        message.header_value("X-Probe-Saw").as_deref(),
        Some("first")
    );

    // The same two plugins in the other order: the second no longer sees the tag and rejects.
    let reversed = [
        probe("second", &["data"], &[("data", "require-tag")], ""),
        probe("first", &["data"], &[("data", "tag")], ""),
    ]
    .concat();
    let report = transact(&chain(&reversed).await, &["b@example.org"]).await;
    assert_eq!(report.disposition.name(), "reject");
    assert_eq!(report.decided_by(), Some("second"));
}

#[tokio::test]
async fn accept_stops_the_chain_for_that_stage_only() {
    let config = [
        probe("yes", &["rcpt-to", "data"], &[("rcpt-to", "accept")], ""),
        probe("no", &["rcpt-to", "data"], &[("rcpt-to", "reject")], ""),
    ]
    .concat();
    let report = transact(&chain(&config).await, &["b@example.org"]).await;
    assert_eq!(report.recipients, vec![("b@example.org".to_string(), 250)]);
    assert_eq!(report.notes["trace"], "yes:rcpt-to,yes:data,no:data,");
}

#[tokio::test]
async fn reject_decides_the_reply_and_records_the_decider() {
    let config = [
        probe("p1", &["rcpt-to"], &[], ""),
        probe("p2", &["rcpt-to"], &[("rcpt-to", "reject")], ""),
        probe("p3", &["rcpt-to"], &[("rcpt-to", "tempfail")], ""),
    ]
    .concat();
    let report = transact(&chain(&config).await, &["b@example.org", "c@example.org"]).await;
    assert_eq!(report.disposition, Disposition::NoRecipients);
    let rcpt = report
        .stages
        .iter()
        .find(|s| s.stage == Stage::RcptTo)
        .expect("rcpt stage");
    assert_eq!(rcpt.decided_by.as_deref(), Some("p2"));
    match &rcpt.decision {
        Verdict::Reject(reply) => {
            assert_eq!(reply.code, 550);
            assert_eq!(reply.lines, vec!["rejected by p2".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !report.notes["trace"].contains("p3"),
        "p3 never ran: {}",
        report.notes["trace"]
    );
}

#[tokio::test]
async fn a_plugin_is_called_only_at_the_stages_it_describes() {
    let set = chain(&probe("rcpt-only", &["rcpt-to"], &[], "")).await;
    let report = transact(&set, &["b@example.org", "c@example.org"]).await;
    // The probe rejects any call at a stage it did not list; none happened.
    assert_eq!(report.disposition, Disposition::Accepted);
    assert_eq!(
        report.notes["trace"],
        "rcpt-only:rcpt-to,rcpt-only:rcpt-to,"
    );
    for stage in &report.stages {
        let ran = stage.runs.iter().any(|r| r.plugin == "rcpt-only");
        assert_eq!(ran, stage.stage == Stage::RcptTo, "stage {}", stage.stage);
    }
}

#[tokio::test]
async fn the_sdk_example_rejects_its_domain() {
    let set = chain("[[plugin]]\npath = \"sdk-example.wasm\"\n").await;
    let report = transact(&set, &["x@example.com", "y@example.org"]).await;
    assert_eq!(
        report.recipients,
        vec![
            ("x@example.com".to_string(), 550),
            ("y@example.org".to_string(), 250)
        ]
    );
    assert_eq!(
        report.state.envelope.recipients,
        vec!["y@example.org".to_string()]
    );
}

#[tokio::test]
async fn load_errors_name_the_file_and_the_reason() {
    let missing = try_chain("[[plugin]]\npath = \"nowhere.wasm\"\n")
        .await
        .unwrap_err();
    assert!(
        missing.contains("nowhere.wasm") && missing.contains("cannot read"),
        "{missing}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"this is not wasm").expect("write");
    let err = try_chain(&format!("[[plugin]]\npath = \"{}\"\n", junk.display()))
        .await
        .unwrap_err();
    assert!(
        err.contains("junk.wasm") && err.contains("not a WebAssembly file"),
        "{err}"
    );

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let err = try_chain(&format!("[[plugin]]\npath = \"{}\"\n", core.display()))
        .await
        .unwrap_err();
    assert!(
        err.contains("core WebAssembly module, not a component"),
        "{err}"
    );
}

#[tokio::test]
async fn reused_instances_start_each_transaction_with_fresh_notes_and_trapped_ones_are_replaced() {
    let set = chain(
        &[
            probe("keeper", &["rcpt-to", "data"], &[], ""),
            probe(
                "crash",
                &["data"],
                &[("data", "trap")],
                "on-failure = \"continue\"",
            ),
        ]
        .concat(),
    )
    .await;
    for _ in 0..3 {
        let report = transact(&set, &["b@example.org"]).await;
        assert_eq!(report.disposition, Disposition::Accepted);
        assert_eq!(
            report.notes["trace"],
            "keeper:rcpt-to,keeper:data,crash:data,"
        );
        assert!(fault_of(&report, "crash")
            .expect("traps every time")
            .contains("trap"));
    }
}

mod capabilities {
    use std::sync::Arc;

    use super::common::{chain, probe, transact, transact_with};
    use mailgate::plugin::services::{RecordType, Services, StaticDns};

    fn header(report: &mailgate::harness::TransactionReport, name: &str) -> String {
        report
            .state
            .message
            .as_ref()
            .and_then(|m| m.header_value(name))
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn kv_works_only_when_declared_and_granted() {
        let granted = chain(
            &probe(
                "counter",
                &["data"],
                &[("data", "kv-count")],
                "grant = [\"kv\"]",
            )
            .replace(
                "stages = [\"data\"]",
                "stages = [\"data\"]\ncapabilities = [\"kv\"]",
            ),
        )
        .await;
        let services = Services::with_dns(Arc::new(StaticDns::default()));
        let first = transact_with(&granted, &["b@example.org"], services.clone()).await;
        let second = transact_with(&granted, &["b@example.org"], services).await;
        assert_eq!(header(&first, "X-Probe-Count"), "1");
        assert_eq!(
            header(&second, "X-Probe-Count"),
            "2",
            "the store persists across transactions"
        );

        let declared_only = chain(
            &probe("counter", &["data"], &[("data", "kv-count")], "").replace(
                "stages = [\"data\"]",
                "stages = [\"data\"]\ncapabilities = [\"kv\"]",
            ),
        )
        .await;
        let report = transact(&declared_only, &["b@example.org"]).await;
        assert!(
            header(&report, "X-Probe-Count").starts_with("error capability kv"),
            "{}",
            header(&report, "X-Probe-Count")
        );

        let granted_only = chain(&probe(
            "counter",
            &["data"],
            &[("data", "kv-count")],
            "grant = [\"kv\"]",
        ))
        .await;
        let report = transact(&granted_only, &["b@example.org"]).await;
        assert!(
            header(&report, "X-Probe-Count").starts_with("error capability kv"),
            "{}",
            header(&report, "X-Probe-Count")
        );
    }

    #[tokio::test]
    async fn dns_answers_only_when_declared_and_granted() {
        let mut dns = StaticDns::default();
        dns.insert(
            RecordType::Mx,
            "example.org",
            vec!["10 mx1.example.org.".into(), "20 mx2.example.org.".into()],
        );
        let services = Services::with_dns(Arc::new(dns));
        let entry = probe(
            "resolver",
            &["data"],
            &[("data", "dns-mx")],
            "grant = [\"dns\"]",
        )
        .replace(
            "stages = [\"data\"]",
            "stages = [\"data\"]\ncapabilities = [\"dns\"]",
        );
        let report =
            transact_with(&chain(&entry).await, &["b@example.org"], services.clone()).await;
        assert_eq!(
            header(&report, "X-Probe-Mx"),
            "10 mx1.example.org.,20 mx2.example.org."
        );

        let ungranted = entry.replace("grant = [\"dns\"]", "");
        let report = transact_with(&chain(&ungranted).await, &["b@example.org"], services).await;
        assert_eq!(header(&report, "X-Probe-Mx"), "error DnsError::Denied");
    }

    #[tokio::test]
    async fn wasi_grants_no_environment_arguments_or_files() {
        let set = chain(&probe("curious", &["data"], &[("data", "ambient")], "")).await;
        let report = transact(&set, &["b@example.org"]).await;
        assert_eq!(
            header(&report, "X-Probe-Ambient"),
            "env=0 args=0 file=denied dir=denied"
        );
    }
}
