//! The gateway's TOML configuration. Unknown keys are errors; every error names the file,
//! the line and the key.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

pub mod defaults;
mod delivery;
pub mod file;
mod limits;
mod local;
mod observability;
mod plugins;
mod sender_auth;
mod server;
mod services;
mod validate;
mod values;

pub use delivery::{
    ClientTls, MtaStsConfig, MtaStsSwitch, QueueConfig, RelayConfig, RouteConfig, RouteKind,
    SpoolDesign,
};
pub use limits::{LimitsConfig, MAX_MIME_DEPTH, MAX_MIME_PARTS};
pub use local::{LocalConfig, SqlQueries};
pub use observability::{JournalConfig, LogConfig, LogFormat, MetricsConfig};
pub use plugins::{FailurePolicy, Grant, PluginConfig, RuntimeConfig};
pub use sender_auth::{AuthConfig, AuthMethod, DkimAlgorithm, DkimConfig};
pub use server::{ListenerConfig, Protocol, ServerConfig, TlsMode};
pub use services::{DnsConfig, KvConfig};
use validate::locate_plugin_keys;
pub use values::{is_host_port, parse_duration, split_host_port, without_password};

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

/// Where the config comes from (a file, or the embedded defaults) plus the command line's
/// overrides, so that a reload reads it exactly as the start did.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    /// `--data-dir`: overrides `server.data-dir`.
    pub data_dir: Option<PathBuf>,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.path {
            Some(path) => Config::load(path)?,
            None => Config::embedded(&defaults::plugin_dir())?,
        };
        if let Some(dir) = &self.data_dir {
            config.server.data_dir = Some(std::path::absolute(dir).unwrap_or(dir.clone()));
        }
        Ok(config)
    }

    /// The data directory, even from a config that does not load (for `mailgate reload`,
    /// which must reach the server to be told what is wrong): `--data-dir`, else
    /// `server.data-dir` if the file is at least TOML, else the default.
    pub fn data_dir_lenient(&self) -> PathBuf {
        if let Ok(config) = self.load() {
            return config.data_dir();
        }
        if let Some(dir) = &self.data_dir {
            return std::path::absolute(dir).unwrap_or(dir.clone());
        }
        let from_file = self.path.as_ref().and_then(|path| {
            let text = file::read_regular_text(path, file::MAX_SMALL_FILE, file::Links::Follow);
            let table: toml::Table = text.ok()?.parse().ok()?;
            let dir = table.get("server")?.get("data-dir")?.as_str()?;
            Some(path.parent().unwrap_or(Path::new(".")).join(dir))
        });
        from_file.unwrap_or_else(|| PathBuf::from("data"))
    }
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
    /// Where mail for each recipient domain goes; local domains always stay local.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Keys that sign outgoing mail, one per sender domain.
    #[serde(default, rename = "dkim")]
    pub dkim: Vec<DkimConfig>,
    /// Sender authentication of received mail.
    #[serde(default)]
    pub auth: AuthConfig,
    /// The key that adds an ARC set to received mail (RFC 8617), when configured.
    #[serde(default, rename = "arc-seal")]
    pub arc_seal: Option<DkimConfig>,
    #[serde(default)]
    pub relay: RelayConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    /// Where plugins' key-value data lives.
    #[serde(default)]
    pub kv: KvConfig,
    /// Directory that relative paths are resolved against (the config file's directory).
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub journal: JournalConfig,
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file the config came from (for errors found after parsing, e.g. plugin settings).
    #[serde(skip)]
    pub origin: PathBuf,
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = file::read_regular_text(path, file::MAX_SMALL_FILE, file::Links::Follow)
            .map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Config::parse(&text, path, base)
    }

    /// The embedded defaults, with plugin paths anchored at `plugin_dir`.
    pub fn embedded(plugin_dir: &Path) -> Result<Config, ConfigError> {
        Config::parse(
            defaults::DEFAULT_CONFIG,
            Path::new("<embedded defaults>"),
            plugin_dir.to_path_buf(),
        )
    }

    /// Parses config text; `origin` names it in errors, `base_dir` anchors relative paths.
    pub fn parse(text: &str, origin: &Path, base_dir: PathBuf) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.base_dir = base_dir;
        config.origin = origin.to_path_buf();
        locate_plugin_keys(text, &mut config.plugins);
        let checked = (config.check_routes())
            .and_then(|()| config.check_plugins())
            .and_then(|()| config.check_stores());
        checked.map_err(|message| ConfigError::Parse {
            path: origin.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// A config that is only a plugin chain, given inline in another file (a case file):
    /// checked like a gateway config's chain, errors naming `origin`.
    pub fn inline_chain(
        text: &str,
        origin: &Path,
        mut plugins: Vec<PluginConfig>,
    ) -> Result<Config, ConfigError> {
        locate_plugin_keys(text, &mut plugins);
        let config = Config {
            runtime: RuntimeConfig {
                pooling: false,
                ..RuntimeConfig::default()
            },
            plugins,
            base_dir: origin.parent().unwrap_or(Path::new(".")).to_path_buf(),
            origin: origin.to_path_buf(),
            ..Config::default()
        };
        config
            .check_plugins()
            .map_err(|message| ConfigError::Parse {
                path: origin.to_path_buf(),
                message,
            })?;
        Ok(config)
    }

    /// The data directory, resolved.
    pub fn data_dir(&self) -> PathBuf {
        match &self.server.data_dir {
            Some(dir) => self.resolve(dir),
            None => PathBuf::from("data"),
        }
    }

    /// The journal directory: `journal.dir`, or `journal` in the data directory.
    pub fn journal_dir(&self) -> PathBuf {
        self.resolve_opt(self.journal.dir.as_ref())
            .unwrap_or_else(|| self.data_dir().join("journal"))
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
    fn routes_and_queue() {
        let text = "[queue]\nretry = [\"30s\", \"2m\"]\nmax-age = \"1d\"\n\
            [[route]]\ndomains = [\"*\"]\ntype = \"relay\"\nhost = \"smart.example:2525\"\n\
            [[route]]\ndomains = [\"internal.test\"]\ntype = \"local\"\n";
        let config = Config::parse(text, Path::new("x"), PathBuf::new()).unwrap();
        assert_eq!(config.queue.retry_after(1).as_secs(), 30);
        assert_eq!(config.queue.retry_after(9).as_secs(), 120);
        assert_eq!(config.queue.max_age.as_secs(), 86400);
        assert!(config.local.domains.contains(&"internal.test".to_string()));
        let bad = "[[route]]\ndomains = [\"*\"]\ntype = \"relay\"\n";
        let err = Config::parse(bad, Path::new("gw.toml"), PathBuf::new()).unwrap_err();
        assert!(err.to_string().contains("needs `host`"), "{err}");
        let bad = "[queue]\nretry = [\"5 minutes\"]\n";
        let err = Config::parse(bad, Path::new("gw.toml"), PathBuf::new()).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
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
