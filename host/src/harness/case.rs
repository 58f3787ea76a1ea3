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
//! reply = { rcpt-to = "550 5.1.1 No such user" }   # or a code: 550
//! rcpt = { "b@elsewhere.test" = { code = 550, enhanced = "5.1.1", contains = "user" } }
//! headers-present = ["X-Spam-Score"]
//! ```
//!
//! A reply expectation is a code (`550`), the reply as the client sees it (`"550 5.7.1 text"`:
//! code, then the enhanced status if the string has one, then the exact text; lines of a
//! multi-line reply are joined with " / "), or a table of `code`, `enhanced`, `text` and
//! `contains`, each checked when given.

use super::check::MAX_MESSAGE_FILE;
use crate::config::file::{read_regular, read_regular_text, Links, MAX_SMALL_FILE};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use serde::Deserialize;

use super::check::load_chain;
use super::dns_server::ScriptedDnsServer;
use super::{run_transaction, TransactionInput, TransactionReport};
use crate::config::{AuthConfig, Config, PluginConfig};
use crate::dns::{RecordType, StaticDns};
use crate::mail::clock::FixedClock;
use crate::mail::Session;
use crate::message::lines::{into_crlf, BareEnds};
use crate::message::Message;
use crate::plugin::services::Services;
use crate::plugin::Stage;
use crate::sender_auth::Verifier;
use crate::store::kv::MemoryKv;

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
    /// Sender authentication as the gateway's `[auth]` table says (replacing the config's):
    /// the checks run against the case's `dns` table before the data stage.
    auth: Option<AuthConfig>,
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
    /// The reply per stage (the last RCPT for rcpt-to).
    #[serde(default)]
    reply: BTreeMap<Stage, ReplyExpect>,
    /// The reply per recipient at RCPT.
    #[serde(default)]
    rcpt: BTreeMap<String, ReplyExpect>,
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

/// What a reply must be: see the module documentation.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ReplyExpect {
    Code(u16),
    Text(String),
    Parts(ReplyParts),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyParts {
    code: Option<u16>,
    enhanced: Option<String>,
    text: Option<String>,
    contains: Option<String>,
}

impl ReplyExpect {
    /// The expectation as separate parts (a reply string is split into them).
    fn parts(&self) -> ReplyParts {
        match self {
            ReplyExpect::Code(code) => ReplyParts {
                code: Some(*code),
                ..ReplyParts::default()
            },
            ReplyExpect::Text(text) => {
                let (code, rest) = text.split_once(' ').unwrap_or((text, ""));
                let (enhanced, rest) = match rest.split_once(' ').unwrap_or((rest, "")) {
                    (first, rest) if is_enhanced_status(first) => (Some(first.to_string()), rest),
                    _ => (None, rest),
                };
                ReplyParts {
                    code: code.parse().ok(),
                    enhanced,
                    text: (!rest.is_empty()).then(|| rest.to_string()),
                    contains: None,
                }
            }
            ReplyExpect::Parts(parts) => ReplyParts {
                code: parts.code,
                enhanced: parts.enhanced.clone(),
                text: parts.text.clone(),
                contains: parts.contains.clone(),
            },
        }
    }

    /// Why the reply a client got (`code`, and the plugin's reply when one decided) does not
    /// meet the expectation, if it does not.
    fn mismatch(&self, code: u16, reply: Option<&crate::mail::Reply>) -> Option<String> {
        let want = self.parts();
        let enhanced = reply
            .and_then(|r| r.enhanced)
            .map(|(c, s, d)| format!("{c}.{s}.{d}"));
        let text = reply.map(|r| r.lines.join(" / ")).unwrap_or_default();
        let actual = [
            code.to_string(),
            enhanced.clone().unwrap_or_default(),
            text.clone(),
        ]
        .iter()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
        let wrong = want.code.is_some_and(|c| c != code)
            || want.enhanced.is_some() && want.enhanced != enhanced
            || want.text.as_ref().is_some_and(|t| *t != text)
            || want
                .contains
                .as_ref()
                .is_some_and(|c| !text.contains(c.as_str()));
        wrong.then(|| {
            let mut expected = Vec::new();
            if let Some(c) = want.code {
                expected.push(c.to_string());
            }
            expected.extend(want.enhanced.clone());
            expected.extend(want.text.clone());
            if let Some(c) = &want.contains {
                expected.push(format!("(containing {c:?})"));
            }
            format!("expected {}, got {actual}", expected.join(" "))
        })
    }
}

fn is_enhanced_status(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub file: String,
    pub name: String,
    pub failures: Vec<String>,
    pub micros: u128,
}

/// Runs every case in the given files (directories are searched for `*.toml` case files), or
/// only those whose name contains `only`.
pub async fn run_files(
    paths: &[PathBuf],
    cache: Option<PathBuf>,
    only: Option<&str>,
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
        results.extend(run_file(&file, cache.clone(), only).await?);
    }
    if let (Some(name), true) = (only, results.is_empty()) {
        bail!("no case named like {name:?} in the given files");
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
                && read_regular_text(&entry, MAX_SMALL_FILE, Links::Follow)
                    .is_ok_and(|t| t.contains("[[case]]"));
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

/// The chain a case file tests: its `config`, or its inline `[[plugin]]` entries.
fn chain_config(path: &Path, text: &str, file: &CaseFile) -> anyhow::Result<Config> {
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(match &file.config {
        Some(config_path) => Config::load(&base.join(config_path))?,
        None => Config::inline_chain(text, path, file.plugins.clone())?,
    })
}

fn parse_case_file(path: &Path) -> anyhow::Result<(String, CaseFile)> {
    let text = read_regular_text(path, MAX_SMALL_FILE, Links::Follow)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let file: CaseFile = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!("case file {}: {}", path.display(), e.to_string().trim_end())
    })?;
    Ok((text, file))
}

/// The chain of a case file as a config (for `mailgate check --cases FILE`).
pub fn case_file_config(path: &Path) -> anyhow::Result<Config> {
    let (text, file) = parse_case_file(path)?;
    chain_config(path, &text, &file)
}

async fn run_file(
    path: &Path,
    cache: Option<PathBuf>,
    only: Option<&str>,
) -> anyhow::Result<Vec<CaseResult>> {
    let (text, file) = parse_case_file(path)?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut config = chain_config(path, &text, &file)?;
    if let Some(auth) = &file.auth {
        config.auth = auth.clone();
    }
    let selected: Vec<&Case> = file
        .cases
        .iter()
        .filter(|c| only.is_none_or(|name| c.name.contains(name)))
        .collect();
    if selected.is_empty() {
        return Ok(Vec::new());
    }
    let set = load_chain(&config, cache).await?;
    let mut results = Vec::new();
    for case in selected {
        let started = std::time::Instant::now();
        let failures = match run_case(&set, &config, case, &base).await {
            Ok(report) => with_faults(compare(&case.expect, &report), &report),
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
    config: &Config,
    case: &Case,
    base: &Path,
) -> anyhow::Result<TransactionReport> {
    let raw = match (&case.message.file, &case.message.text) {
        (Some(file), None) => read_regular(&base.join(file), MAX_MESSAGE_FILE, Links::Follow)
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
    let dns = Arc::new(dns);
    // The checks resolve through a real resolver, here pointed at the case's table.
    let (verifier, _dns_server) = match config.auth.verify.is_empty() && config.arc_seal.is_none() {
        true => (None, None),
        false => {
            let server = ScriptedDnsServer::start(dns.clone())
                .await
                .context("cannot start the harness DNS server")?;
            let dns_config = crate::config::DnsConfig {
                servers: vec![server.addr.to_string()],
                timeout_ms: Some(1000),
            };
            let resolver = crate::dns::resolver(&dns_config).map_err(anyhow::Error::msg)?;
            let verifier = Verifier::new(config, resolver).map_err(anyhow::Error::msg)?;
            (verifier.map(Arc::new), Some(server))
        }
    };
    let kv = MemoryKv::default();
    for (plugin, entries) in &case.kv {
        for (k, v) in entries {
            kv.insert(plugin, k, v);
        }
    }
    let services = Services {
        kv: Arc::new(kv),
        dns,
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
        message: Message::new(into_crlf(raw, BareEnds::Lf)),
    };
    Ok(run_transaction(set, services, input, verifier.as_ref()).await)
}

/// Lines of guest output shown under a failed case (the log has all of them).
const OUTPUT_SHOWN: usize = 20;

/// A failed case also shows every plugin fault of the transaction (a trap's message, the
/// plugin's stderr) and what the plugins printed: usually the reason an expectation did not
/// hold.
fn with_faults(mut failures: Vec<String>, report: &TransactionReport) -> Vec<String> {
    if failures.is_empty() {
        return failures;
    }
    let mut printed = Vec::new();
    for stage in &report.stages {
        for run in &stage.runs {
            if let Some(fault) = &run.fault {
                failures.push(format!(
                    "plugin {} faulted at {}: {fault}",
                    run.plugin, stage.stage
                ));
                continue;
            }
            let output = run
                .logs
                .iter()
                .filter(|l| matches!(l.level, "stdout" | "stderr"));
            for line in output {
                printed.push(format!(
                    "plugin {} {} at {}: {}",
                    run.plugin, line.level, stage.stage, line.message
                ));
            }
        }
    }
    failures.extend(printed.into_iter().take(OUTPUT_SHOWN));
    failures
}

/// Every expectation that did not hold, as "what: expected X, got Y".
fn compare(expect: &Expect, report: &TransactionReport) -> Vec<String> {
    let mut failures = Vec::new();
    for (stage, want) in &expect.reply {
        let decision = report.stages.iter().rev().find(|r| r.stage == *stage);
        let mismatch = match decision {
            Some(d) => want.mismatch(super::reply_code(*stage, &d.decision), d.decision.reply()),
            None => Some("expected a reply, got none (stage not reached)".into()),
        };
        if let Some(why) = mismatch {
            failures.push(format!("reply at {stage}: {why}"));
        }
    }
    for (rcpt, want) in &expect.rcpt {
        let mismatch = match report.recipient_reply(rcpt) {
            Some((code, reply)) => want.mismatch(code, reply),
            None => Some("expected a reply, got none (not tried)".into()),
        };
        if let Some(why) = mismatch {
            failures.push(format!("reply to RCPT <{rcpt}>: {why}"));
        }
    }
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
            out.push_str(&format!("       {}\n", f.replace('\n', "\n         ")));
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
