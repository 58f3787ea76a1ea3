//! The `[log]`, `[metrics]` and `[journal]` tables: what the gateway tells its operator.

use std::path::PathBuf;

use serde::Deserialize;

/// How the gateway writes its log (to stderr).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// The metrics listener: Prometheus text at `/metrics`, readiness at `/healthz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct MetricsConfig {
    /// `ip:port` to listen on; `""` turns metrics off (`None`).
    #[serde(deserialize_with = "address_or_off")]
    pub address: Option<std::net::SocketAddr>,
    /// Free space the data directory's file system must keep for `/healthz` to say the mail
    /// store and the spool can take mail, in MiB.
    pub min_free_mb: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            address: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9925))),
            min_free_mb: 100,
        }
    }
}

/// The message journal that `mailgate trace` reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct JournalConfig {
    pub enabled: bool,
    /// Where the segments go; default `journal` in the data dir.
    pub dir: Option<PathBuf>,
    /// Size cap of all segments together, in MiB.
    pub max_mb: u64,
    /// Segments older than this are deleted.
    pub max_age_days: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            enabled: true,
            dir: None,
            max_mb: 64,
            max_age_days: 7,
        }
    }
}

/// An `ip:port` string, or `""` for none (serde names the key and line when it is neither).
fn address_or_off<'de, D>(d: D) -> Result<Option<std::net::SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim().parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!("{text:?} is not ip:port (\"\" turns metrics off)"))
    })
}

/// `text` (for people) or `json` (one object per line, for log collectors).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
