//! `mailgate check`: one message through the whole chain, printed stage by stage.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::{diff, run_transaction, Disposition, TransactionInput, TransactionReport};
use crate::config::Config;
use crate::mail::Session;
use crate::message::lines::{into_crlf, BareEnds};
use crate::message::Message;
use crate::plugin::{stage_list, PluginSet, Runtime, Services, StageReport};

/// The options of `mailgate check` (besides the config).
#[derive(Debug, Clone, clap::Args)]
pub struct CheckOptions {
    /// Envelope sender.
    #[arg(long, default_value = "sender@example.net")]
    pub from: String,
    /// Envelope recipient (repeat for more).
    #[arg(long = "rcpt", default_value = "postmaster@localhost")]
    pub rcpt: Vec<String>,
    /// Client IP address.
    #[arg(long, default_value = "192.0.2.1")]
    pub ip: String,
    /// HELO/EHLO name.
    #[arg(long, default_value = "client.example.net")]
    pub helo: String,
    /// Authenticated user (implies TLS).
    #[arg(long)]
    pub auth: Option<String>,
    /// Show what changed instead of the whole final message.
    #[arg(long)]
    pub diff: bool,
    /// The message file (.eml).
    pub message: PathBuf,
}

/// Loads the config's plugin chain (or none) with the compiled-artifact cache under `cache`.
pub async fn load_chain(config: &Config, cache: Option<PathBuf>) -> anyhow::Result<Arc<PluginSet>> {
    let runtime = chain_runtime(config, cache)?;
    Ok(Arc::new(PluginSet::load(runtime, config).await?))
}

/// Loads the config's plugin chain to explain it: a plugin's settings the plugin would refuse
/// do not stop it (see [`PluginSet::load_to_explain`]).
pub async fn load_chain_to_explain(
    config: &Config,
    cache: Option<PathBuf>,
) -> anyhow::Result<Arc<PluginSet>> {
    let runtime = chain_runtime(config, cache)?;
    Ok(Arc::new(PluginSet::load_to_explain(runtime, config).await?))
}

/// The runtime the offline commands load a config's chain on (its milters included).
pub fn chain_runtime(config: &Config, cache: Option<PathBuf>) -> anyhow::Result<Arc<Runtime>> {
    let cache = config
        .resolve_opt(config.runtime.cache_dir.as_ref())
        .or(cache);
    Ok(Arc::new(
        Runtime::new(&config.runtime, cache)?.with_externals(Arc::new(crate::milter::Milters)),
    ))
}

/// Largest message file the offline commands read.
pub const MAX_MESSAGE_FILE: u64 = 256 << 20;

/// Reads a message file, turning bare LF line ends into CRLF as the SMTP reader would demand.
pub fn read_message(path: &Path) -> anyhow::Result<Message> {
    use crate::config::file::{read_regular, Links};
    let raw = read_regular(path, MAX_MESSAGE_FILE, Links::Follow)
        .with_context(|| format!("cannot read message {}", path.display()))?;
    Ok(Message::new(into_crlf(raw, BareEnds::Lf)))
}

/// Runs the check and returns the printed report and whether the message was accepted.
pub async fn check(
    options: &CheckOptions,
    config: &Config,
    cache: Option<PathBuf>,
) -> anyhow::Result<(String, bool)> {
    let set = load_chain(config, cache).await?;
    let message = read_message(&options.message)?;
    let original = message.raw().to_vec();
    let input = TransactionInput {
        session: Session {
            id: "check".into(),
            peer_ip: options.ip.clone(),
            peer_port: 52525,
            listener: "check".into(),
            tls: options.auth.is_some(),
            helo: None,
            auth_user: options.auth.clone(),
        },
        helo: options.helo.clone(),
        sender: options.from.clone(),
        recipients: options.rcpt.clone(),
        message,
    };
    let dns = crate::dns::resolver(&config.dns)
        .map(|r| Arc::new(crate::dns::SystemDns::new(r)) as Arc<dyn crate::dns::Dns>)
        .unwrap_or_else(|_| Arc::new(crate::dns::StaticDns::default()));
    let report = run_transaction(&set, Services::with_dns(dns), input, None).await;
    let text = render(&report, &original, options.diff);
    Ok((text, report.disposition == Disposition::Accepted))
}

/// What one loaded plugin is, for `mailgate plugins --explain`.
pub fn explain(plugin: &crate::plugin::LoadedPlugin) -> String {
    let info = &plugin.info;
    let mut out = String::new();
    if let Some(filter) = plugin.external() {
        let _ = writeln!(out, "{} ({})", plugin.name, filter.target());
        let _ = writeln!(out, "protocol:     {}", filter.protocol());
        let _ = writeln!(out, "stages:       {}", stage_list(&info.stages, ", "));
        let _ = writeln!(
            out,
            "limits:       {} ms per answer; on failure: {:?}",
            plugin.timeout.as_millis(),
            plugin.policy
        );
        return out;
    }
    let _ = writeln!(
        out,
        "{} {} ({})",
        plugin.name,
        info.version,
        plugin.path.display()
    );
    let _ = writeln!(out, "contract:     mailgate:plugin@{}", info.contract);
    let _ = writeln!(out, "stages:       {}", stage_list(&info.stages, ", "));
    let capabilities: Vec<&str> = info.capabilities.iter().map(|c| c.name()).collect();
    let shown = if capabilities.is_empty() {
        "none".to_string()
    } else {
        capabilities.join(", ")
    };
    let _ = writeln!(out, "capabilities: {shown}");
    let _ = writeln!(
        out,
        "limits:       {} ms per call, {} MiB, instance reused for {} transactions",
        plugin.timeout.as_millis(),
        plugin.memory_bytes >> 20,
        plugin.instance_reuse
    );
    if info.config.is_empty() {
        let _ = writeln!(
            out,
            "config:       not declared (any [plugin.config] is passed as is)"
        );
        return out;
    }
    let _ = writeln!(out, "config keys:");
    for key in &info.config {
        let default = key
            .default
            .as_deref()
            .map(|d| format!(" = {d}"))
            .unwrap_or_default();
        let required = if key.required { " (required)" } else { "" };
        let _ = writeln!(
            out,
            "  {} ({}){default}{required}: {}",
            key.name,
            key.value_type.name(),
            key.doc
        );
    }
    out
}

/// The human-readable report.
pub fn render(report: &TransactionReport, original: &[u8], show_diff: bool) -> String {
    let mut out = String::new();
    for stage in &report.stages {
        render_stage(&mut out, stage);
    }
    let _ = writeln!(out, "\nrecipients:");
    for (rcpt, code) in &report.recipients {
        let _ = writeln!(out, "  <{rcpt}> {code}");
    }
    let _ = writeln!(out, "\ndisposition: {}", report.disposition.describe());
    if let Some(by) = report.decided_by() {
        let _ = writeln!(out, "decided by: {by}");
    }
    let env = &report.state.envelope;
    let _ = writeln!(
        out,
        "envelope: from <{}> to {}",
        env.sender,
        env.recipients
            .iter()
            .map(|r| format!("<{r}>"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if let Some(message) = &report.state.message {
        if show_diff {
            let _ = writeln!(out, "\nchanges to the message:");
            out.push_str(&diff::unified(original, message.raw()));
        } else {
            let _ = writeln!(out, "\nfinal message:");
            out.push_str(&String::from_utf8_lossy(message.raw()));
        }
    }
    out
}

fn render_stage(out: &mut String, stage: &StageReport) {
    let _ = writeln!(out, "[{}]", stage.stage);
    if stage.runs.is_empty() {
        let _ = writeln!(out, "  (no plugin handles this stage)");
    }
    for run in &stage.runs {
        let micros = run.elapsed.as_micros();
        match (&run.verdict, &run.fault) {
            (_, Some(fault)) => {
                let fault = fault.replace('\n', &format!("\n  {:<20}   ", ""));
                let _ = writeln!(out, "  {:<20} FAULT {fault} ({micros} µs)", run.plugin);
            }
            (Some(verdict), None) => {
                let reply = verdict.reply().map(|r| format!(" {r}")).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {:<20} {}{reply} ({micros} µs)",
                    run.plugin,
                    verdict.name()
                );
            }
            (None, None) => {}
        }
        for edit in &run.edits {
            let _ = writeln!(out, "  {:<20}   edit: {}", "", edit.describe());
        }
        for log in &run.logs {
            let _ = writeln!(out, "  {:<20}   log {}: {}", "", log.level, log.message);
        }
    }
    if let Some(by) = &stage.decided_by {
        let _ = writeln!(out, "  => {} by {by}", stage.decision.name());
    }
}
