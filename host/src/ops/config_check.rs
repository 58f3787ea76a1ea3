//! `mailgate config check`: what a config would run, checked before it is deployed — the
//! config parsed, every plugin loaded and described, then the listeners, routes and the chain
//! per stage printed.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::file::Links;
use crate::config::{Config, ConfigSource, RouteKind, TlsMode};
use crate::harness::check::chain_runtime;
use crate::plugin::{LoadedPlugin, PluginError, PluginSet, StageOrder};

/// The TXT record the key of `entry` needs, to compare with what DNS serves (the keys were
/// loaded once already, so this one cannot fail but is skipped if it does).
fn published_record(out: &mut String, config: &Config, entry: &crate::config::DkimConfig) {
    let path = config.resolve(&entry.key);
    if let Ok(key) = crate::sender_auth::key::PrivateKey::load(entry.algorithm, &path) {
        let _ = writeln!(
            out,
            "    publish: {}._domainkey.{}. IN TXT \"{}\"",
            entry.selector,
            entry.domain,
            key.dns_record()
        );
    }
}

/// How a check ended, as the exit status says it: 0 good, 1 the config (or a plugin it names)
/// is wrong, 2 the check could not be made.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Good,
    Refused,
    /// The config file could not be read at all (missing, not readable).
    Unchecked,
}

/// Checks the config at `path` (or the embedded defaults); returns what to print and whether
/// it is good. Errors are the reasons it is refused, already in the text.
pub async fn check(path: Option<PathBuf>, cache: Option<PathBuf>) -> (String, Verdict) {
    let shown = path
        .as_ref()
        .map_or("the embedded defaults".to_string(), |p| {
            p.display().to_string()
        });
    let source = ConfigSource {
        path,
        data_dir: None,
    };
    let config = match source.load() {
        Ok(config) => config,
        Err(e @ crate::config::ConfigError::Read { .. }) => {
            return (
                format!("config {shown}: not checked\n  {e}\n"),
                Verdict::Unchecked,
            )
        }
        Err(e) => {
            return (
                format!("config {shown}: refused\n  {e}\n"),
                Verdict::Refused,
            )
        }
    };
    let runtime = match chain_runtime(&config, cache) {
        Ok(runtime) => runtime,
        Err(e) => {
            return (
                format!("config {shown}: refused\n  {e:#}\n"),
                Verdict::Refused,
            )
        }
    };
    let loaded = PluginSet::load_each(&runtime, &config).await;
    let warnings = undeclared_settings(&config, &loaded);
    let mut errors = Vec::new();
    let mut plugins = Vec::new();
    for result in loaded {
        match result {
            Ok(plugin) => plugins.push(plugin),
            Err(e) => errors.push(e.to_string()),
        }
    }
    errors.extend(key_errors(&config));
    if !errors.is_empty() {
        let mut out = format!("config {shown}: refused\n");
        for line in errors.iter().chain(&warnings) {
            let _ = writeln!(out, "  {line}");
        }
        return (out, Verdict::Refused);
    }
    let chain = PluginSet::of(runtime, plugins);
    let mut out = format!("config {shown}: ok\n");
    for line in &warnings {
        let _ = writeln!(out, "  {line}");
    }
    listeners(&mut out, &config);
    routes(&mut out, &config);
    stores(&mut out, &config);
    for key in &config.dkim {
        let _ = writeln!(
            out,
            "  dkim: mail from {} signed {} with selector {}",
            key.domain,
            key.algorithm.name(),
            key.selector
        );
        published_record(&mut out, &config, key);
    }
    if !config.auth.verify.is_empty() {
        let methods: Vec<String> = config
            .auth
            .verify
            .iter()
            .map(|m| format!("{m:?}").to_lowercase())
            .collect();
        let _ = writeln!(
            out,
            "  auth: received mail checked for {}",
            methods.join(", ")
        );
    }
    if let Some(seal) = &config.arc_seal {
        let _ = writeln!(
            out,
            "  arc-seal: received mail sealed by {} ({}, selector {})",
            seal.domain,
            seal.algorithm.name(),
            seal.selector
        );
        published_record(&mut out, &config, seal);
    }
    for member in &chain.plugins {
        if let Some(filter) = member.external() {
            let _ = writeln!(
                out,
                "  {}: {} ({}, {} ms per answer)",
                member.name,
                filter.target(),
                filter.protocol(),
                member.timeout.as_millis()
            );
        }
    }
    let _ = writeln!(out, "chain:");
    out.push_str(&StageOrder::new(&chain.plugins).lines(Some("(none)")));
    (out, Verdict::Good)
}

/// Every key file the config names that cannot be used (DKIM, ARC seal, TLS), each naming the
/// file. Read as the server reads them: a FIFO or device there is refused, not waited on.
fn key_errors(config: &Config) -> Vec<String> {
    let mut errors = Vec::new();
    if let Err(e) = crate::delivery::relay::dkim::Signers::load(config) {
        errors.push(e);
    }
    if let Err(e) = crate::sender_auth::Sealer::load(config) {
        errors.push(e);
    }
    let server = &config.server;
    let cert = config.resolve_opt(server.tls_cert.as_ref());
    let key = config.resolve_opt(server.tls_key.as_ref());
    match (cert, key) {
        (Some(cert), Some(key)) => {
            if let Err(e) = crate::net::tls::read_pair(&cert, &key, Links::Follow) {
                errors.push(format!("tls: {e:#}"));
            }
        }
        (None, None) => {}
        _ => errors.push("server.tls-cert and server.tls-key must be given together".into()),
    }
    errors
}

/// Warnings for the settings of plugins that declare none: nothing checks those keys, so a
/// misspelt one is silently ignored by the plugin.
fn undeclared_settings(
    config: &Config,
    loaded: &[Result<Arc<LoadedPlugin>, PluginError>],
) -> Vec<String> {
    let origin = config.origin.display();
    let mut warnings = Vec::new();
    // One result per entry, in order. A plugin that did not load has its error instead.
    for (entry, plugin) in config.plugins.iter().zip(loaded) {
        let Ok(plugin) = plugin else { continue };
        if !plugin.info.config.is_empty() {
            continue;
        }
        for key in entry.config.keys() {
            let line = entry.config_lines.get(key).copied().unwrap_or(entry.line);
            warnings.push(format!(
                "warning: {origin}: line {line}: config key `{key}` of plugin {} is not \
                 checked: the plugin declares no settings",
                plugin.name
            ));
        }
    }
    warnings
}

/// Where plugin data and users live.
fn stores(out: &mut String, config: &Config) {
    let kv = match config.kv.backend.as_str() {
        "local" => format!("local ({})", config.data_dir().join("kv.redb").display()),
        url => format!(
            "{} (each request within {} ms)",
            crate::config::without_password(url),
            config.kv.timeout_ms
        ),
    };
    let users = match &config.local.source {
        Some(url) => format!(
            "PostgreSQL {} (read every {} s; logins refused after {} s without a read)",
            crate::config::without_password(url),
            config.local.refresh_secs,
            config.local.stale_secs
        ),
        None => format!("the users file {}", config.users_file().display()),
    };
    let _ = writeln!(out, "  kv store: {kv}\n  users: {users}");
}

fn listeners(out: &mut String, config: &Config) {
    let _ = writeln!(out, "listeners:");
    for l in config.listeners() {
        let protocol = l.protocol.name();
        let tls = match l.tls {
            TlsMode::Starttls => "starttls",
            TlsMode::Implicit => "implicit tls",
            TlsMode::None => "no tls",
        };
        let auth = if l.require_auth {
            ", auth required"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {:<12} {protocol} {} ({tls}{auth})",
            l.name, l.address
        );
    }
}

fn routes(out: &mut String, config: &Config) {
    let _ = writeln!(out, "routes:");
    if !config.local.domains.is_empty() {
        let _ = writeln!(out, "  {} -> local", config.local.domains.join(", "));
    }
    for route in &config.routes {
        let target = match (route.kind, &route.host) {
            (RouteKind::Local, _) => "local".to_string(),
            (RouteKind::Relay, Some(host)) => format!("relay {host}"),
            (RouteKind::Relay, None) => "relay".to_string(),
            (RouteKind::Mx, _) => "mx".to_string(),
        };
        let _ = writeln!(out, "  {} -> {target}", route.domains.join(", "));
    }
    if !config
        .routes
        .iter()
        .any(|r| r.domains.iter().any(|d| d == "*"))
    {
        let _ = writeln!(
            out,
            "  * -> mx (no route for other domains: their MX hosts)"
        );
    }
}
