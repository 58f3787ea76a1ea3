//! Shared helpers for the runtime tests: one engine for the test process, chains from inline
//! TOML, and transactions run through the offline harness.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use mailgate::config::{Config, RuntimeConfig};
use mailgate::dns::StaticDns;
use mailgate::harness::{run_transaction, TransactionInput, TransactionReport};
use mailgate::mail::Session;
use mailgate::message::Message;
use mailgate::plugin::services::Services;
use mailgate::plugin::{PluginSet, Runtime};

/// Where `cargo xtask plugins` puts the test components.
pub fn test_plugins() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugins");
    assert!(
        dir.join("probe-plugin.wasm").exists(),
        "test components missing in {}: run `cargo xtask plugins` (or `cargo xtask test`)",
        dir.display()
    );
    dir
}

pub fn bundled_plugins() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins")
}

/// The compiled-component cache the end-to-end gateways use too: each test component is
/// compiled once per build of it, not once per test.
pub fn shared_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-plugin-cache")
}

/// One engine (and epoch ticker) for all tests of a binary, as in the gateway.
pub static RUNTIME: LazyLock<Arc<Runtime>> = LazyLock::new(|| {
    let config = RuntimeConfig {
        max_instances: 200,
        ..RuntimeConfig::default()
    };
    Arc::new(Runtime::new(&config, Some(shared_cache())).expect("engine"))
});

/// A chain from config text; plugin paths are relative to the test components.
pub async fn chain(toml: &str) -> Arc<PluginSet> {
    try_chain(toml)
        .await
        .unwrap_or_else(|e| panic!("loading chain: {e}"))
}

pub async fn try_chain(toml: &str) -> Result<Arc<PluginSet>, String> {
    let config = Config::parse(toml, std::path::Path::new("test.toml"), test_plugins())
        .map_err(|e| e.to_string())?;
    PluginSet::load(RUNTIME.clone(), &config)
        .await
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// A probe plugin entry: `name`, declared stages and per-stage actions.
pub fn probe(name: &str, stages: &[&str], actions: &[(&str, &str)], extra: &str) -> String {
    let stages: Vec<String> = stages.iter().map(|s| format!("\"{s}\"")).collect();
    let mut out = format!(
        "[[plugin]]\nname = \"{name}\"\npath = \"probe-plugin.wasm\"\n{extra}\n[plugin.config]\nname = \"{name}\"\nstages = [{}]\n",
        stages.join(", ")
    );
    if !actions.is_empty() {
        out.push_str("[plugin.config.action]\n");
        for (stage, action) in actions {
            out.push_str(&format!("\"{stage}\" = \"{action}\"\n"));
        }
    }
    out
}

pub const MESSAGE: &[u8] =
    b"From: a@example.net\r\nTo: b@example.org\r\nSubject: test\r\n\r\nHello.\r\n";

pub async fn transact(set: &Arc<PluginSet>, recipients: &[&str]) -> TransactionReport {
    transact_with(
        set,
        recipients,
        Services::with_dns(Arc::new(StaticDns::default())),
    )
    .await
}

pub async fn transact_with(
    set: &Arc<PluginSet>,
    recipients: &[&str],
    services: Services,
) -> TransactionReport {
    let input = TransactionInput {
        session: Session {
            id: "t1".into(),
            peer_ip: "192.0.2.9".into(),
            peer_port: 40000,
            listener: "inbound".into(),
            ..Session::default()
        },
        helo: "client.example.net".into(),
        sender: "a@example.net".into(),
        recipients: recipients.iter().map(|s| s.to_string()).collect(),
        message: Message::new(MESSAGE.to_vec()),
    };
    run_transaction(set, services, input, None).await
}
