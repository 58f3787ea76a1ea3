//! The `[runtime]` table and the `[[plugin]]` entries: how plugins run, and the chain.

use std::path::PathBuf;

use serde::Deserialize;

/// How plugins are run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RuntimeConfig {
    /// Where compiled plugin artifacts are kept between runs.
    pub cache_dir: Option<PathBuf>,
    /// Preallocate instance slots (faster instantiation); off falls back to on-demand memory.
    pub pooling: bool,
    /// Most plugin instances alive at once (transactions x plugins) with pooling.
    pub max_instances: u32,
    /// Largest memory any plugin may be granted, in MiB (a per-plugin `memory-mb` is capped by it).
    pub max_memory_mb: u32,
    /// Transactions one plugin instance serves before a fresh one replaces it; 1 gives every
    /// transaction a fresh instance (strict isolation, ~20 us more per plugin and message).
    pub instance_reuse: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            pooling: true,
            max_instances: 1000,
            max_memory_mb: 256,
            instance_reuse: 1000,
        }
    }
}

/// What happens when a plugin traps, runs out of time or memory, or returns something invalid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// 451 4.3.0: the client tries again later; nothing is lost.
    #[default]
    Tempfail,
    /// Fail open: carry on as if the plugin said `continue`.
    Continue,
    /// 550 5.7.0.
    Reject,
}

/// One plugin in the chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginConfig {
    /// The name used in logs and reports; defaults to the name the plugin gives in `describe`.
    pub name: Option<String>,
    /// The component file (.wasm), relative to the config file. Empty for a milter.
    #[serde(default)]
    pub path: PathBuf,
    /// A milter instead of a component: `inet:HOST:PORT`, `inet:PORT@HOST`, `inet6:…` or
    /// `unix:/path`.
    pub milter: Option<String>,
    /// Capabilities the operator grants (the plugin must also ask for them).
    #[serde(default)]
    pub grant: Vec<Grant>,
    /// The directory a `files` grant opens to the plugin, read-only (relative to the config).
    pub files: Option<PathBuf>,
    /// Transactions one instance of this plugin serves before a fresh one replaces it
    /// (default `runtime.instance-reuse`); 1 starts every transaction with fresh globals.
    pub instance_reuse: Option<u32>,
    #[serde(default)]
    pub on_failure: FailurePolicy,
    /// Wall-clock budget of one stage call (for a milter, of each wait for an answer);
    /// see [`PluginConfig::timeout`] for the defaults.
    pub timeout_ms: Option<u64>,
    /// Linear memory cap.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// The plugin's own settings, readable through `config-get`.
    #[serde(default)]
    pub config: toml::Table,
    /// The line of each key of `config` in the config file, for errors about them.
    #[serde(skip)]
    pub config_lines: std::collections::BTreeMap<String, usize>,
    /// The line of this entry's `[[plugin]]` header.
    #[serde(skip)]
    pub line: usize,
}

/// A host power the operator grants to a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grant {
    /// The persistent per-plugin key-value store.
    Kv,
    /// DNS lookups.
    Dns,
    /// Reading files under the entry's `files` directory.
    Files,
}

fn default_memory_mb() -> u32 {
    32
}

impl PluginConfig {
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| match &self.milter {
            Some(address) => format!("milter {address}"),
            None => self
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().replace('_', "-"))
                .unwrap_or_else(|| "plugin".into()),
        })
    }

    /// The configured `timeout-ms`, else 100 ms for a component (a call that runs our CPU)
    /// and 5 s for a milter (a peer on the network, as Postfix's milter timeouts are).
    pub fn timeout(&self) -> std::time::Duration {
        let default = if self.milter.is_some() { 5_000 } else { 100 };
        std::time::Duration::from_millis(self.timeout_ms.unwrap_or(default).max(1))
    }

    /// What the entry names: the component file or the milter's address.
    pub fn target(&self) -> String {
        match &self.milter {
            Some(address) => format!("milter {address}"),
            None => self.path.display().to_string(),
        }
    }
}
