//! The `[dns]` and `[kv]` tables: the name servers and the plugins' key-value store backend.

use std::path::PathBuf;

use serde::Deserialize;

/// DNS for plugins and for MX routing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DnsConfig {
    /// Name servers as ip:port; empty means the system's resolv.conf.
    pub servers: Vec<String>,
    pub timeout_ms: Option<u64>,
}

/// The plugins' key-value store: `local` (a file in the data directory, one node) or a Redis or
/// Valkey URL (`redis://host:port/db`, shared by every node).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct KvConfig {
    pub backend: String,
    /// Each request's deadline (Redis); past it the plugin gets an error.
    pub timeout_ms: u64,
    /// The first part of every Redis key, so several sites can share one server.
    pub prefix: String,
    /// A file holding the Redis password (mode 600), instead of a password in the URL.
    pub password_file: Option<PathBuf>,
}

impl Default for KvConfig {
    fn default() -> KvConfig {
        KvConfig {
            backend: "local".into(),
            timeout_ms: 1000,
            prefix: "mailgate".into(),
            password_file: None,
        }
    }
}
