//! `mailgate test`: case files (TOML) that script a transaction and say what must happen.
//!
//! ```toml
//! config = "gateway.toml"            # the chain to test (or inline [[plugin]] entries)
//!
//! [[case]]
//! name = "unknown domain is refused"
//! session = { ip = "192.0.2.7", helo = "client.example.net" }
//! envelope = { from = "a@example.net", to = ["b@elsewhere.test"] }
//! message = { text = "Subject: hi\n\nhello\n" }   # or { file = "msg.eml" }
//! dns = { "MX example.net" = ["10 mx.example.net"] }
//! clock = { now-ms = 1767225600000 }
//! kv = { greylist = { "key" = "value" } }
//! [case.expect]
//! disposition = "reject"
//! decided-by = "recipient-policy"
//! reply = { rcpt-to = 550 }
//! headers-present = ["X-Spam-Score"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use serde::Deserialize;

use super::check::load_chain;
use super::{run_transaction, TransactionInput, TransactionReport};
use crate::config::{Config, PluginConfig, RuntimeConfig};
use crate::message::{canonical_crlf, Message};
use crate::plugin::services::{FixedClock, MemoryKv, RecordType, Services, StaticDns};
use crate::plugin::{Session, Stage};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CaseFile {
    /// A gateway config whose plugins form the chain.
    config: Option<PathBuf>,
    /// Or the chain inline.
    #[serde(default, rename = "plugin")]
    plugins: Vec<PluginConfig>,
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Case {
    name: String,
    #[serde(default)]
    session: SessionSpec,
    envelope: EnvelopeSpec,
    #[serde(default)]
    message: MessageSpec,
    /// "TYPE name" -> answers, e.g. "MX example.org" = ["10 mx.example.org"].
    #[serde(default)]
    dns: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    clock: ClockSpec,
    /// plugin -> key -> value, loaded into the store before the case runs.
    #[serde(default)]
    kv: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
struct SessionSpec {
    ip: String,
    port: u16,
    helo: String,
    auth: Option<String>,
    tls: bool,
    listener: String,
}

impl Default for SessionSpec {
    fn default() -> Self {
        SessionSpec {
            ip: "192.0.2.1".into(),
            port: 52525,
            helo: "client.example.net".into(),
            auth: None,
            tls: false,
            listener: "inbound".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct EnvelopeSpec {
    from: String,
    to: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct MessageSpec {
    file: Option<PathBuf>,
    text: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ClockSpec {
    now_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Expect {
    disposition: Option<String>,
    decided_by: Option<String>,
    /// Reply code per stage (the last RCPT for rcpt-to).
    #[serde(default)]
    reply: BTreeMap<Stage, u16>,
    /// Reply code per recipient at RCPT.
    #[serde(default)]
    rcpt: BTreeMap<String, u16>,
    #[serde(default)]
    headers_present: Vec<String>,
    #[serde(default)]
    headers_absent: Vec<String>,
    /// Header name -> decoded value of its first instance.
    #[serde(default)]
    headers_equal: BTreeMap<String, String>,
    #[serde(default)]
    body_contains: Vec<String>,
    #[serde(default)]
    body_not_contains: Vec<String>,
    /// The final envelope recipients, in order.
    recipients: Option<Vec<String>>,
    sender: Option<String>,
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub file: String,
    pub name: String,
    pub failures: Vec<String>,
    pub micros: u128,
}

/// Runs every case in the given files (directories are searched for `*.toml` case files).
pub async fn run_files(
    paths: &[PathBuf],
    cache: Option<PathBuf>,
) -> anyhow::Result<Vec<CaseResult>> {
    let mut files = Vec::new();
    for path in paths {
        collect(path, &mut files)?;
    }
    if files.is_empty() {
        bail!(
            "no case files found in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut results = Vec::new();
    for file in files {
        results.extend(run_file(&file, cache.clone()).await?);
    }
    Ok(results)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        // Inside directories, a TOML file is a case file when it has cases: gateway configs
        // and Cargo manifests next to them are left alone.
        for entry in entries {
            let is_case_file = entry.extension().is_some_and(|e| e == "toml")
                && std::fs::read_to_string(&entry).is_ok_and(|t| t.contains("[[case]]"));
            let skip_dir = entry
                .file_name()
                .is_some_and(|n| n == "target" || n == "src");
            if (entry.is_dir() && !skip_dir) || is_case_file {
                collect(&entry, out)?;
            }
        }
    } else if path.exists() {
        out.push(path.to_path_buf());
    } else {
        bail!("case file {} does not exist", path.display());
    }
    Ok(())
}

async fn run_file(path: &Path, cache: Option<PathBuf>) -> anyhow::Result<Vec<CaseResult>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: CaseFile = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!("case file {}: {}", path.display(), e.to_string().trim_end())
    })?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let config = match &file.config {
        Some(config_path) => Config::load(&base.join(config_path))?,
        None => Config {
            runtime: RuntimeConfig {
                pooling: false,
                ..RuntimeConfig::default()
            },
            plugins: file.plugins.clone(),
            base_dir: base.clone(),
            ..Config::default()
        },
    };
    let set = load_chain(&config, cache).await?;
    let mut results = Vec::new();
    for case in &file.cases {
        let started = std::time::Instant::now();
        let failures = match run_case(&set, case, &base).await {
            Ok(report) => compare(&case.expect, &report),
            Err(e) => vec![format!("could not run: {e:#}")],
        };
        results.push(CaseResult {
            file: path.display().to_string(),
            name: case.name.clone(),
            failures,
            micros: started.elapsed().as_micros(),
        });
    }
    Ok(results)
}

async fn run_case(
    set: &Arc<crate::plugin::PluginSet>,
    case: &Case,
    base: &Path,
) -> anyhow::Result<TransactionReport> {
    let raw = match (&case.message.file, &case.message.text) {
        (Some(file), None) => std::fs::read(base.join(file))
            .with_context(|| format!("cannot read {}", file.display()))?,
        (None, Some(text)) => text.as_bytes().to_vec(),
        (None, None) => b"Subject: harness\r\n\r\nhello\r\n".to_vec(),
        (Some(_), Some(_)) => bail!("message: give either file or text, not both"),
    };
    let mut dns = StaticDns::default();
    for (query, answers) in &case.dns {
        let (kind, name) = query
            .split_once(' ')
            .context("dns keys look like \"MX example.org\"")?;
        let kind: RecordType = toml::Value::String(kind.to_ascii_uppercase())
            .try_into()
            .map_err(|_| anyhow::anyhow!("unknown DNS record type {kind}"))?;
        dns.insert(kind, name, answers.clone());
    }
    let kv = MemoryKv::default();
    for (plugin, entries) in &case.kv {
        for (k, v) in entries {
            kv.insert(plugin, k, v);
        }
    }
    let services = Services {
        kv: Arc::new(kv),
        dns: Arc::new(dns),
        clock: Arc::new(FixedClock(Mutex::new(
            case.clock.now_ms.unwrap_or(1_767_225_600_000),
        ))),
    };
    let s = &case.session;
    let input = TransactionInput {
        session: Session {
            id: "test".into(),
            peer_ip: s.ip.clone(),
            peer_port: s.port,
            listener: s.listener.clone(),
            tls: s.tls,
            helo: None,
            auth_user: s.auth.clone(),
        },
        helo: s.helo.clone(),
        sender: case.envelope.from.clone(),
        recipients: case.envelope.to.clone(),
        message: Message::new(canonical_crlf(&raw)),
    };
    Ok(run_transaction(set, services, input).await)
}

/// Every expectation that did not hold, as "what: expected X, got Y".
fn compare(expect: &Expect, report: &TransactionReport) -> Vec<String> {
    let mut failures = Vec::new();
    let mut check = |what: &str, expected: String, actual: String| {
        if expected != actual {
            failures.push(format!("{what}: expected {expected}, got {actual}"));
        }
    };
    if let Some(d) = &expect.disposition {
        if d != report.disposition.name() {
            check(
                "disposition",
                d.clone(),
                format!(
                    "{} ({})",
                    report.disposition.name(),
                    report.disposition.describe()
                ),
            );
        }
    }
    if let Some(by) = &expect.decided_by {
        check(
            "decided-by",
            by.clone(),
            report.decided_by().unwrap_or("nobody").to_string(),
        );
    }
    for (stage, code) in &expect.reply {
        let actual = report
            .reply_code(*stage)
            .map_or("no reply (stage not reached)".into(), |c| c.to_string());
        check(&format!("reply at {stage}"), code.to_string(), actual);
    }
    for (rcpt, code) in &expect.rcpt {
        let actual = report
            .recipients
            .iter()
            .find(|(r, _)| r == rcpt)
            .map_or("not tried".into(), |(_, c)| c.to_string());
        check(&format!("reply to RCPT <{rcpt}>"), code.to_string(), actual);
    }
    if let Some(recipients) = &expect.recipients {
        check(
            "recipients",
            format!("{recipients:?}"),
            format!("{:?}", report.state.envelope.recipients),
        );
    }
    if let Some(sender) = &expect.sender {
        check(
            "sender",
            sender.clone(),
            report.state.envelope.sender.clone(),
        );
    }
    let message = report.state.message.as_deref();
    let needs_message = !expect.headers_present.is_empty()
        || !expect.headers_absent.is_empty()
        || !expect.headers_equal.is_empty()
        || !expect.body_contains.is_empty()
        || !expect.body_not_contains.is_empty();
    let Some(message) = message else {
        if needs_message {
            failures
                .push("message expectations given, but the transaction never reached DATA".into());
        }
        return failures;
    };
    for name in &expect.headers_present {
        if message.header(name).is_empty() {
            failures.push(format!("header {name}: expected present, got absent"));
        }
    }
    for name in &expect.headers_absent {
        if let Some(v) = message.header_value(name) {
            failures.push(format!("header {name}: expected absent, got {v:?}"));
        }
    }
    for (name, value) in &expect.headers_equal {
        let actual = message
            .header_value(name)
            .map_or("absent".into(), |v| format!("{:?}", v.trim()));
        if actual != format!("{:?}", value.trim()) {
            failures.push(format!("header {name}: expected {value:?}, got {actual}"));
        }
    }
    let body = body_text(message);
    for needle in &expect.body_contains {
        if !body.contains(needle.as_str()) {
            failures.push(format!("body: expected to contain {needle:?}, it does not"));
        }
    }
    for needle in &expect.body_not_contains {
        if body.contains(needle.as_str()) {
            failures.push(format!("body: expected not to contain {needle:?}, it does"));
        }
    }
    failures
}

/// The raw body plus every decoded text part, so expectations see through encodings.
fn body_text(message: &Message) -> String {
    let mut text = String::from_utf8_lossy(message.body()).into_owned();
    for part in message.parts() {
        if let Some(t) = message.part_text(part.id) {
            text.push('\n');
            text.push_str(&t);
        }
        if let Some(name) = &part.filename {
            text.push('\n');
            text.push_str(name);
        }
    }
    text
}

/// The summary `mailgate test` prints.
pub fn summary(results: &[CaseResult]) -> String {
    let mut out = String::new();
    for r in results {
        let status = if r.failures.is_empty() {
            "ok  "
        } else {
            "FAIL"
        };
        out.push_str(&format!(
            "{status} {} :: {} ({} µs)\n",
            r.file, r.name, r.micros
        ));
        for f in &r.failures {
            out.push_str(&format!("       {f}\n"));
        }
    }
    let failed = results.iter().filter(|r| !r.failures.is_empty()).count();
    out.push_str(&format!(
        "\n{} passed, {failed} failed\n",
        results.len() - failed
    ));
    out
}

pub use super::junit::write as write_junit;
