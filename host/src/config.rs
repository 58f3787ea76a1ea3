//! The gateway's TOML configuration. Unknown keys are errors; every error names the file,
//! the line and the key.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::plugin::Capability;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// The whole gateway configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub dns: DnsConfig,
    /// The plugin chain, in the order plugins run at each stage.
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginConfig>,
    #[serde(default)]
    pub server: ServerConfig,
    /// SMTP listeners; none configured means the embedded defaults (2525, 2587, 2465 on loopback).
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub local: LocalConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Directory that relative paths are resolved against (the config file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// The gateway as a whole.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ServerConfig {
    /// The name the gateway uses in its greeting, EHLO reply and Received headers.
    pub hostname: String,
    /// Queue, mailboxes, users, TLS certificate; relative to the config file (default `data`
    /// under the current directory).
    pub data_dir: Option<PathBuf>,
    /// Client networks (CIDR) allowed to relay without authentication. Empty: nobody.
    pub relay_networks: Vec<String>,
    /// PEM certificate chain and key; when absent a self-signed one is generated in the data dir.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".into(),
            data_dir: None,
            relay_networks: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// How a listener treats TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain text, STARTTLS offered.
    #[default]
    Starttls,
    /// TLS from the first byte (RFC 8314, port 465).
    Implicit,
    /// Plain text only, no STARTTLS.
    None,
}

/// One SMTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ListenerConfig {
    pub name: String,
    pub address: std::net::SocketAddr,
    #[serde(default)]
    pub tls: TlsMode,
    /// Submission: MAIL is refused until the client has authenticated.
    #[serde(default)]
    pub require_auth: bool,
}

impl ListenerConfig {
    /// The embedded defaults: relay/inbound 2525, submission 2587, implicit TLS 2465, loopback.
    pub fn defaults() -> Vec<ListenerConfig> {
        let listener = |name: &str, port: u16, tls, require_auth| ListenerConfig {
            name: name.into(),
            address: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            tls,
            require_auth,
        };
        vec![
            listener("inbound", 2525, TlsMode::Starttls, false),
            listener("submission", 2587, TlsMode::Starttls, true),
            listener("submissions", 2465, TlsMode::Implicit, true),
        ]
    }
}

/// Local delivery: which domains are ours and who lives there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LocalConfig {
    /// Domains delivered locally (`localhost` is always one).
    pub domains: Vec<String>,
    /// The users file (argon2 hashes); default `users.toml` in the data dir.
    pub users_file: Option<PathBuf>,
    /// address -> local addresses it delivers to.
    pub aliases: std::collections::BTreeMap<String, Vec<String>>,
    /// domain -> the local address that receives mail for unknown users of that domain.
    pub catch_all: std::collections::BTreeMap<String, String>,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            domains: vec!["localhost".into()],
            users_file: None,
            aliases: Default::default(),
            catch_all: Default::default(),
        }
    }
}

/// Protocol limits; every default is safe for an exposed server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LimitsConfig {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_commands_per_session: usize,
    pub max_recipients: usize,
    pub max_message_bytes: usize,
    /// Longest command line, CRLF included (RFC 5321: 512).
    pub max_command_line: usize,
    /// Longest text line in DATA, CRLF included (RFC 5321: 1000).
    pub max_text_line: usize,
    /// Messages with more Received headers than this are refused (mail loop).
    pub max_received_headers: usize,
    /// Seconds to wait for a command (RFC 5321: 5 minutes).
    pub command_timeout_secs: u64,
    /// Seconds to wait for each DATA block (RFC 5321: 3 minutes, 10 for the terminator).
    pub data_timeout_secs: u64,
    pub max_auth_failures: u32,
    /// Delay after each failed AUTH, growing with each failure.
    pub auth_failure_delay_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 500,
            max_connections_per_ip: 20,
            max_commands_per_session: 10_000,
            max_recipients: 100,
            max_message_bytes: 25 << 20,
            max_command_line: 512,
            max_text_line: 1000,
            max_received_headers: 50,
            command_timeout_secs: 300,
            data_timeout_secs: 600,
            max_auth_failures: 3,
            auth_failure_delay_ms: 1000,
        }
    }
}

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

/// DNS for plugins (and, later, for MX routing).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DnsConfig {
    /// Name servers as ip:port; empty means the system's resolv.conf.
    pub servers: Vec<String>,
    pub timeout_ms: Option<u64>,
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
    /// The name used in logs and reports; defaults to the file name without extension.
    pub name: Option<String>,
    /// The component file (.wasm), relative to the config file.
    pub path: PathBuf,
    /// Capabilities the operator grants (the plugin must also ask for them).
    #[serde(default)]
    pub grant: Vec<Capability>,
    #[serde(default)]
    pub on_failure: FailurePolicy,
    /// Wall-clock budget of one stage call.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Linear memory cap.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// The plugin's own settings, readable through `config-get`.
    #[serde(default)]
    pub config: toml::Table,
}

fn default_timeout_ms() -> u64 {
    100
}

fn default_memory_mb() -> u32 {
    32
}

impl PluginConfig {
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.path
                .file_stem()
                .map(|s| s.to_string_lossy().replace('_', "-"))
                .unwrap_or_else(|| "plugin".into())
        })
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Config::parse(&text, path, base)
    }

    /// Parses config text; `origin` names it in errors, `base_dir` anchors relative paths.
    pub fn parse(text: &str, origin: &Path, base_dir: PathBuf) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.base_dir = base_dir;
        Ok(config)
    }

    /// The data directory, resolved.
    pub fn data_dir(&self) -> PathBuf {
        match &self.server.data_dir {
            Some(dir) => self.resolve(dir),
            None => PathBuf::from("data"),
        }
    }

    /// The users file: `local.users-file`, or `users.toml` in the data directory.
    pub fn users_file(&self) -> PathBuf {
        self.resolve_opt(self.local.users_file.as_ref())
            .unwrap_or_else(|| self.data_dir().join("users.toml"))
    }

    /// An optional path from the config, resolved.
    pub fn resolve_opt(&self, path: Option<&PathBuf>) -> Option<PathBuf> {
        path.map(|p| self.resolve(p))
    }

    /// The listeners, or the embedded defaults.
    pub fn listeners(&self) -> Vec<ListenerConfig> {
        if self.listeners.is_empty() {
            ListenerConfig::defaults()
        } else {
            self.listeners.clone()
        }
    }

    /// A path from the config, resolved against the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = "[[plugin]]\npath = \"a.wasm\"\ntimeout = 5\n";
        let err = Config::parse(text, Path::new("gw.toml"), PathBuf::new()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("gw.toml"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("timeout"), "{msg}");
    }

    #[test]
    fn plugin_defaults() {
        let text = "[[plugin]]\npath = \"dir/recipient_policy.wasm\"\n[plugin.config]\ndomains = [\"a\"]\n";
        let config = Config::parse(text, Path::new("x"), PathBuf::from("/etc/mg")).unwrap();
        let p = &config.plugins[0];
        assert_eq!(p.display_name(), "recipient-policy");
        assert_eq!(p.on_failure, FailurePolicy::Tempfail);
        assert_eq!(
            config.resolve(&p.path),
            PathBuf::from("/etc/mg/dir/recipient_policy.wasm")
        );
    }
}
