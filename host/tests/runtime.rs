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

/// A chain of one plugin that loops forever at the data stage, with a 50 ms deadline.
async fn spinner() -> std::sync::Arc<mailgate::plugin::PluginSet> {
    chain(&probe(
        "spinner",
        &["data"],
        &[("data", "loop")],
        "timeout-ms = 50",
    ))
    .await
}

#[tokio::test]
async fn endless_loop_is_cut_off_at_its_deadline_with_451() {
    let set = spinner().await;
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
async fn endless_loop_after_an_idle_spell_is_still_cut_off() {
    let set = spinner().await;
    // Long enough for the epoch thread to park (it does after 200 idle ticks): the call must
    // wake it, or the loop would never be cut off.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let started = Instant::now();
    let report = transact(&set, &["b@example.org"]).await;
    assert!(
        tempfailed_with_4_3_0(&report, Stage::Data),
        "{:?}",
        report.disposition
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
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

/// The stages at which `plugin` ran in a transaction.
fn stages_run(report: &mailgate::harness::TransactionReport, plugin: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = report
        .stages
        .iter()
        .filter(|s| s.runs.iter().any(|r| r.plugin == plugin))
        .map(|s| s.stage)
        .collect();
    stages.dedup();
    stages
}

#[tokio::test]
async fn a_0_2_plugin_exporting_only_data_gets_only_data_calls() {
    // The stamp fixture exports `info` and `data` only.
    let set = chain(
        "[[plugin]]
path = \"stamp-v1.wasm\"\n",
    )
    .await;
    // Built from this tree, so against the current contract.
    assert_eq!(set.plugins[0].info.contract, "0.2.1");
    assert_eq!(set.plugins[0].info.stages, vec![Stage::Data]);
    let report = transact(&set, &["b@example.org", "c@example.org"]).await;
    assert_eq!(report.disposition, Disposition::Accepted);
    assert_eq!(stages_run(&report, "stamp"), vec![Stage::Data]);
}

#[tokio::test]
async fn a_0_1_plugin_runs_through_the_adapter_at_the_stages_it_describes() {
    // Built against contract 0.1.0 before 0.2 existed (tests/fixtures/contract-0.1).
    let set = chain(
        "[[plugin]]\npath = \"../../tests/fixtures/contract-0.1/recipient-policy-0.1.wasm\"\n\
         [plugin.config]\ndomains = [\"example.org\"]\nreject-senders = [\"@junk.test\"]\n",
    )
    .await;
    let plugin = &set.plugins[0];
    assert_eq!(plugin.info.contract, "0.1.0");
    assert_eq!(
        plugin.name, "recipient-policy",
        "the name comes from describe"
    );
    let report = transact(&set, &["b@example.org", "x@elsewhere.test"]).await;
    assert_eq!(
        report.recipients,
        vec![
            ("b@example.org".to_string(), 250),
            ("x@elsewhere.test".to_string(), 550)
        ]
    );
    assert_eq!(
        stages_run(&report, "recipient-policy"),
        vec![Stage::MailFrom, Stage::RcptTo]
    );
}

/// 0.1 said a kv refusal as text; its import now converts the newest contract's `denied`, and
/// a 0.1 plugin must still read the same words.
#[tokio::test]
async fn a_0_1_plugin_refused_its_store_reads_the_refusal_in_0_1_words() {
    // greylist 0.1 (JavaScript, built against wit/v0.1) declares kv; not granted here, it logs
    // the error it got and lets the mail through.
    let set = chain("[[plugin]]\npath = \"greylist-0.1.wasm\"\nmemory-mb = 128\n").await;
    assert_eq!(set.plugins[0].info.contract, "0.1.0");
    let report = transact(&set, &["b@example.org"]).await;
    assert_eq!(report.recipients, vec![("b@example.org".to_string(), 250)]);
    let logs: Vec<&str> = (report.stages.iter())
        .flat_map(|stage| &stage.runs)
        .flat_map(|run| &run.logs)
        .map(|log| log.message.as_str())
        .collect();
    let refusal = "capability kv was not granted: the operator must add it to the plugin's `grant`";
    assert!(
        logs.iter()
            .any(|l| l.starts_with("greylist store unavailable") && l.contains(refusal)),
        "{logs:?}"
    );
}

#[tokio::test]
async fn guest_globals_persist_while_an_instance_is_reused_and_instance_reuse_is_per_plugin() {
    let count = |reuse: &str| {
        let entry = probe("global", &["data"], &[("data", "global-count")], reuse);
        async move {
            let set = chain(&entry).await;
            let mut seen = Vec::new();
            for _ in 0..3 {
                let report = transact(&set, &["b@example.org"]).await;
                let message = report.state.message.as_ref().expect("message");
                seen.push(message.header_value("X-Probe-Global").unwrap_or_default());
            }
            seen
        }
    };
    assert_eq!(
        count("").await,
        ["1", "2", "3"],
        "one instance serves all three"
    );
    assert_eq!(
        count("instance-reuse = 1").await,
        ["1", "1", "1"],
        "fresh every time"
    );
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
    use super::fault_of;
    use mailgate::dns::{RecordType, StaticDns};
    use mailgate::plugin::services::Services;

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
        assert_eq!(
            header(&report, "X-Probe-Count"),
            "error Denied::NotGranted(\"kv\")"
        );

        let granted_only = chain(&probe(
            "counter",
            &["data"],
            &[("data", "kv-count")],
            "grant = [\"kv\"]",
        ))
        .await;
        let report = transact(&granted_only, &["b@example.org"]).await;
        assert_eq!(
            header(&report, "X-Probe-Count"),
            "error Denied::NotDeclared(\"kv\")"
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
        assert_eq!(
            header(&report, "X-Probe-Mx"),
            "error DnsError::Denied(Denied::NotGranted(\"dns\"))"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn kv_incr_counts_exactly_under_concurrent_transactions() {
        // The 40 increments commit one after another, each with a disk sync; `timeout-ms` is a
        // wall-clock budget, so the default 100 ms would measure the disk under a loaded test
        // run instead of the counting this test is about.
        let set = chain(
            &probe(
                "counter",
                &["data"],
                &[("data", "kv-incr")],
                "grant = [\"kv\"]\ntimeout-ms = 30000",
            )
            .replace(
                "stages = [\"data\"]",
                "stages = [\"data\"]\ncapabilities = [\"kv\"]",
            ),
        )
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = mailgate::store::kv::local::DiskKv::open(&dir.path().join("kv.redb")).expect("kv");
        let mut services = Services::with_dns(Arc::new(StaticDns::default()));
        services.kv = Arc::new(kv);
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let (set, services) = (set.clone(), services.clone());
                tokio::spawn(async move {
                    let report = transact_with(&set, &["b@example.org"], services).await;
                    let fault = fault_of(&report, "counter").map(str::to_owned);
                    (header(&report, "X-Probe-Counter"), fault)
                })
            })
            .collect();
        let mut seen: Vec<i64> = Vec::new();
        for task in tasks {
            let (value, fault) = task.await.expect("task");
            seen.push(
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("not a count: {value:?}, fault: {fault:?}")),
            );
        }
        seen.sort();
        assert_eq!(
            seen,
            (1..=40).collect::<Vec<i64>>(),
            "every increment seen once"
        );
    }

    #[tokio::test]
    async fn a_files_grant_reads_inside_its_directory_only() {
        let root = tempfile::tempdir().expect("tempdir");
        let lists = root.path().join("lists");
        std::fs::create_dir(&lists).expect("mkdir");
        std::fs::write(lists.join("block.txt"), "spam.example\n").expect("write");
        std::fs::write(root.path().join("secret.txt"), "do not read\n").expect("write");
        let entry = |file: &str| {
            probe(
                "reader",
                &["data"],
                &[("data", "file")],
                &format!("grant = [\"files\"]\nfiles = \"{}\"", lists.display()),
            )
            .replace(
                "stages = [\"data\"]",
                &format!("stages = [\"data\"]\ncapabilities = [\"files\"]\nfile = \"{file}\""),
            )
        };
        let read = |file: &'static str| {
            let entry = entry(file);
            async move {
                let report = transact(&chain(&entry).await, &["b@example.org"]).await;
                header(&report, "X-Probe-File")
            }
        };
        assert_eq!(read("block.txt").await, "spam.example");
        let outside = read("../secret.txt").await;
        assert!(outside.starts_with("error Denied::Failed"), "{outside}");
        let secret = root.path().join("secret.txt");
        let absolute = read(Box::leak(secret.display().to_string().into_boxed_str())).await;
        assert!(absolute.starts_with("error Denied::Failed"), "{absolute}");
        assert!(!outside.contains("do not read") && !absolute.contains("do not read"));
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

mod guest_errors {
    use super::common::{chain, probe, transact};
    use super::fault_of;

    /// The fault and every log line of one plugin in a transaction, as `mailgate test` shows them.
    async fn fault_and_logs(entry: &str, plugin: &str) -> (String, Vec<String>) {
        let report = transact(&chain(entry).await, &["b@example.org"]).await;
        let fault = fault_of(&report, plugin).unwrap_or_default().to_string();
        let logs = report
            .stages
            .iter()
            .flat_map(|s| &s.runs)
            .flat_map(|r| &r.logs)
            .map(|l| format!("{} {}", l.level, l.message))
            .collect();
        (fault, logs)
    }

    #[tokio::test]
    async fn a_rust_panic_shows_its_message() {
        let (fault, logs) = fault_and_logs(
            &probe("panicky", &["data"], &[("data", "trap")], ""),
            "panicky",
        )
        .await;
        assert!(fault.starts_with("trap: "), "{fault}");
        assert!(
            logs.iter()
                .any(|l| l.starts_with("error panic:") && l.contains("probe asked to trap")),
            "{logs:?}"
        );
    }

    #[tokio::test]
    async fn a_python_exception_shows_its_traceback() {
        let entry = "[[plugin]]\npath = \"py-misbehave.wasm\"\nmemory-mb = 128\n\
                     [plugin.config]\naction = \"raise\"\n";
        let (fault, logs) = fault_and_logs(entry, "py-misbehave").await;
        assert!(fault.contains("AttributeError"), "{fault}");
        assert!(fault.contains("missing_attribute"), "{fault}");
        assert!(
            fault.contains("lookup_setting"),
            "the traceback names the function: {fault}"
        );
        assert!(logs
            .iter()
            .any(|l| l.starts_with("stderr ") && l.contains("AttributeError")));
    }

    #[tokio::test]
    async fn a_javascript_exception_shows_its_message() {
        let entry = "[[plugin]]\npath = \"js-misbehave.wasm\"\nmemory-mb = 128\n\
                     [plugin.config]\naction = \"throw\"\n";
        let (fault, _) = fault_and_logs(entry, "js-misbehave").await;
        // SpiderMonkey's TypeError text and the stack, written to stderr by the runtime.
        assert!(fault.contains("settings.missing is undefined"), "{fault}");
        assert!(
            fault.contains("lookupSetting@"),
            "the stack names the function: {fault}"
        );
    }

    #[tokio::test]
    async fn guest_stdout_and_stderr_reach_the_log() {
        let (fault, logs) = fault_and_logs(
            &probe("talker", &["data"], &[("data", "print")], ""),
            "talker",
        )
        .await;
        assert!(fault.is_empty(), "{fault}");
        assert!(
            logs.contains(&"stdout probe says hello on stdout".to_string()),
            "{logs:?}"
        );
        assert!(
            logs.contains(&"stderr probe says hello on stderr".to_string()),
            "{logs:?}"
        );
        let entry = "[[plugin]]\npath = \"py-misbehave.wasm\"\nmemory-mb = 128\n\
                     [plugin.config]\naction = \"print\"\n";
        let (_, logs) = fault_and_logs(entry, "py-misbehave").await;
        assert!(
            logs.contains(&"stdout py-misbehave says hello on stdout".to_string()),
            "{logs:?}"
        );
    }
}
