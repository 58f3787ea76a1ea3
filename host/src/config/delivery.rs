//! The `[[route]]` entries and the `[relay]` and `[queue]` tables: where accepted mail goes,
//! how the SMTP client delivers it, and how long the queue keeps trying.

use serde::Deserialize;

use super::values::{duration, durations};

/// How one group of recipient domains is delivered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RouteConfig {
    /// `example.com` (exactly), `*.example.com` (its subdomains) or `*` (every other domain).
    pub domains: Vec<String>,
    #[serde(rename = "type")]
    pub kind: RouteKind,
    /// `relay` only: the smarthost as host:port.
    pub host: Option<String>,
    #[serde(default)]
    pub tls: ClientTls,
    /// With `tls = "required"`: check the peer's certificate against the system's roots.
    #[serde(default = "yes")]
    pub tls_verify: bool,
    /// AUTH PLAIN credentials for the smarthost (sent only over TLS).
    pub auth_user: Option<String>,
    pub auth_password: Option<String>,
    /// `mx` only: follow the domain's MTA-STS policy (RFC 8461), `"on"` (the default) or `"off"`.
    #[serde(default)]
    pub mta_sts: MtaStsSwitch,
}

/// Whether an MX route follows MTA-STS policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MtaStsSwitch {
    #[default]
    On,
    Off,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteKind {
    /// Treat the domains as local (Maildir delivery).
    Local,
    /// To a fixed host:port.
    Relay,
    /// To the domain's MX hosts.
    Mx,
}

/// STARTTLS when delivering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTls {
    None,
    /// STARTTLS when offered, without checking the certificate (RFC 7435).
    #[default]
    Opportunistic,
    /// No delivery without TLS.
    Required,
}

/// The SMTP client that delivers onward.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RelayConfig {
    /// The name sent in EHLO; default `server.hostname`.
    pub helo_name: Option<String>,
    /// The port MX hosts are contacted on (25; tests point it elsewhere).
    pub mx_port: u16,
    pub connect_timeout_secs: u64,
    /// Seconds to wait for each reply (RFC 5321 §4.5.3.2 asks for minutes; 10 min after DATA).
    pub command_timeout_secs: u64,
    /// Most simultaneous deliveries to one destination (smarthost or domain).
    pub max_per_destination: usize,
    /// Most deliveries in progress in total.
    pub max_deliveries: usize,
    /// Seconds an idle connection is kept for the next message to the same host.
    pub idle_connection_secs: u64,
    /// A PEM file of CA certificates trusted besides the system's wherever the relay checks
    /// certificates: MTA-STS policy hosts and MX hosts, routes with `tls-verify`. Read at start.
    pub extra_roots: Option<std::path::PathBuf>,
    /// MTA-STS (RFC 8461) for MX delivery.
    pub mta_sts: MtaStsConfig,
}

/// `[relay.mta-sts]`: fetching domains' MTA-STS policies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct MtaStsConfig {
    /// Seconds a policy fetch (connection, TLS, request and body) may take.
    pub fetch_timeout_secs: u64,
    /// Per policy domain, the host:port to fetch its policy from instead of
    /// `mta-sts.<domain>:443` (tests, split horizons); the certificate is still checked
    /// against `mta-sts.<domain>`.
    pub policy_host_override: std::collections::BTreeMap<String, String>,
}

impl Default for MtaStsConfig {
    fn default() -> Self {
        MtaStsConfig {
            fetch_timeout_secs: 10,
            policy_host_override: std::collections::BTreeMap::new(),
        }
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            helo_name: None,
            mx_port: 25,
            connect_timeout_secs: 30,
            command_timeout_secs: 300,
            max_per_destination: 20,
            max_deliveries: 200,
            idle_connection_secs: 10,
            extra_roots: None,
            mta_sts: MtaStsConfig::default(),
        }
    }
}

/// Retry schedule and lifetime of queued messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct QueueConfig {
    /// Waits between attempts ("30s", "5m", "1h", "2d"); the last repeats until `max-age`.
    #[serde(deserialize_with = "durations")]
    pub retry: Vec<std::time::Duration>,
    /// After this long undelivered recipients bounce.
    #[serde(deserialize_with = "duration")]
    pub max_age: std::time::Duration,
    /// How accepted messages are kept on disk: `"files"` (one file per message, the default)
    /// or `"log"` (append-only segments, one sync per batch).
    pub spool: SpoolDesign,
    /// The log spool's segment size in MiB, preallocated (a larger message gets a segment of
    /// its own size).
    pub segment_mib: u64,
    /// A message still undelivered this long after it came in gets one delay report
    /// (RFC 3464, `Action: delayed`) for the recipients that asked (or did not say); like
    /// Postfix's `delay_warning_time`. `"0"` sends none.
    #[serde(deserialize_with = "duration")]
    pub delay_notice_after: std::time::Duration,
}

/// The spool's on-disk design (`[queue] spool`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoolDesign {
    /// One file per message in `queue/active/`, group-committed with `syncfs`.
    #[default]
    Files,
    /// Records appended to preallocated segments in `queue/log/`, one `fdatasync` per batch.
    Log,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let minutes = |m: u64| std::time::Duration::from_secs(m * 60);
        QueueConfig {
            retry: vec![
                minutes(1),
                minutes(5),
                minutes(15),
                minutes(30),
                minutes(60),
            ],
            max_age: minutes(5 * 24 * 60),
            spool: SpoolDesign::default(),
            segment_mib: 64,
            delay_notice_after: minutes(4 * 60),
        }
    }
}

impl QueueConfig {
    /// The log spool's segment size in bytes (at least 64 KiB).
    pub fn segment_bytes(&self) -> u64 {
        self.segment_mib.saturating_mul(1 << 20).max(64 << 10)
    }

    /// The wait after the given failed attempt (1 = the first).
    pub fn retry_after(&self, attempt: u32) -> std::time::Duration {
        let index = (attempt.max(1) as usize - 1).min(self.retry.len().saturating_sub(1));
        self.retry
            .get(index)
            .copied()
            .unwrap_or(std::time::Duration::from_secs(3600))
    }
}
