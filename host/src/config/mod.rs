//! The gateway's TOML configuration. Unknown keys are errors; every error names the file,
//! the line and the key.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

pub mod defaults;
pub mod file;

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
    /// On SIGTERM/SIGINT: how long sessions in a transaction and delivery attempts under way
    /// may take to finish before the server stops regardless.
    pub drain_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".into(),
            data_dir: None,
            relay_networks: Vec::new(),
            tls_cert: None,
            tls_key: None,
            drain_secs: 30,
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

/// What a listener speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    #[default]
    Smtp,
    Pop3,
    Imap,
    /// An MTA (Postfix, Sendmail) runs the plugin chain on its mail through this listener.
    Milter,
    /// JMAP (RFC 8620, RFC 8621) over HTTPS, and the webmail page.
    Jmap,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Pop3 => "pop3",
            Protocol::Imap => "imap",
            Protocol::Milter => "milter",
            Protocol::Jmap => "jmap",
        }
    }
}

/// One listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ListenerConfig {
    pub name: String,
    pub address: std::net::SocketAddr,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub tls: TlsMode,
    /// Submission: MAIL is refused until the client has authenticated.
    #[serde(default)]
    pub require_auth: bool,
}

impl ListenerConfig {
    /// The embedded defaults, on loopback: SMTP relay/inbound 2525, submission 2587, implicit
    /// TLS submission 2465; POP3 2110 (STLS) and 2995 (implicit TLS); IMAP 2143 (STARTTLS) and
    /// 2993 (implicit TLS); JMAP and the webmail page 2443 (HTTPS).
    pub fn defaults() -> Vec<ListenerConfig> {
        let listener = |name: &str, port: u16, protocol, tls, require_auth| ListenerConfig {
            name: name.into(),
            address: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            protocol,
            tls,
            require_auth,
        };
        vec![
            listener("inbound", 2525, Protocol::Smtp, TlsMode::Starttls, false),
            listener("submission", 2587, Protocol::Smtp, TlsMode::Starttls, true),
            listener("submissions", 2465, Protocol::Smtp, TlsMode::Implicit, true),
            listener("pop3", 2110, Protocol::Pop3, TlsMode::Starttls, false),
            listener("pop3s", 2995, Protocol::Pop3, TlsMode::Implicit, false),
            listener("imap", 2143, Protocol::Imap, TlsMode::Starttls, false),
            listener("imaps", 2993, Protocol::Imap, TlsMode::Implicit, false),
            listener("jmap", 2443, Protocol::Jmap, TlsMode::Implicit, false),
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
    /// Users, aliases and domains from PostgreSQL (`postgres://user@host/db`) instead of the
    /// users file; added to the domains, aliases and catch-alls above.
    pub source: Option<String>,
    /// A file holding the database password (mode 600), instead of a password in the URL.
    pub source_password_file: Option<PathBuf>,
    /// How often the SQL tables are read again.
    pub refresh_secs: u64,
    /// Logins are refused (454 4.7.0, NO [UNAVAILABLE]) when the tables could not be read for
    /// this long; recipients are still accepted from the last read.
    pub stale_secs: u64,
    /// The SQL that reads each table (see the README for the default schema).
    pub queries: SqlQueries,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            domains: vec!["localhost".into()],
            users_file: None,
            aliases: Default::default(),
            catch_all: Default::default(),
            source: None,
            source_password_file: None,
            refresh_secs: 5,
            stale_secs: 60,
            queries: SqlQueries::default(),
        }
    }
}

/// The queries that read users, aliases, catch-alls and domains from SQL: each returns rows of
/// text columns, in this order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SqlQueries {
    /// `name`
    pub domains: String,
    /// `address`, `password` (an argon2 PHC string)
    pub users: String,
    /// `address`, `target`
    pub aliases: String,
    /// `domain`, `target`
    pub catch_alls: String,
    /// `mailgate user add`: `$1` the address, `$2` the argon2 hash.
    pub add_user: String,
    /// `mailgate user remove`: `$1` the address.
    pub remove_user: String,
}

impl Default for SqlQueries {
    fn default() -> SqlQueries {
        SqlQueries {
            domains: "SELECT name FROM domains".into(),
            users: "SELECT address, password FROM users".into(),
            aliases: "SELECT address, target FROM aliases".into(),
            catch_alls: "SELECT domain, target FROM catch_alls".into(),
            add_user: "INSERT INTO users (address, password) VALUES ($1, $2)".into(),
            remove_user: "DELETE FROM users WHERE address = $1".into(),
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
    /// Deepest MIME nesting (multiparts and encapsulated messages) accepted at DATA; a stored
    /// message nested deeper is served with the excess as one opaque part.
    #[serde(deserialize_with = "mime_depth")]
    pub max_mime_depth: usize,
    /// Most MIME parts (the message, its multiparts, inner messages and leaves) accepted at
    /// DATA; a stored message with more is served with the multipart that passes the bound
    /// kept as one opaque part.
    #[serde(deserialize_with = "mime_parts")]
    pub max_mime_parts: usize,
    /// Failed logins one client address may make (all protocols, all connections) before its
    /// logins are refused unchecked; one try comes back every window / this. 0: no budget.
    pub auth_failures_per_ip: u32,
    pub auth_failure_window_secs: u64,
    /// Refused recipients (unknown, or relaying denied) one SMTP session may have before each
    /// further refusal is delayed (by `rcpt-error-delay-ms`, growing), and before the session
    /// is closed (as Postfix's smtpd_soft_error_limit, smtpd_error_sleep_time and
    /// smtpd_hard_error_limit do).
    pub rcpt_errors_before_delay: u32,
    /// Commands that move no mail along (NOOP, RSET, VRFY, EXPN, HELP, a third HELO/EHLO) one
    /// SMTP session may send between messages before it is closed (Postfix's
    /// smtpd_junk_command_limit).
    pub max_junk_commands: u32,
    pub rcpt_error_delay_ms: u64,
    pub max_rcpt_errors: u32,
    /// Message data (DATA, BDAT) must arrive at this many bytes per second on average once
    /// `min-data-rate-grace-secs` have passed; 0: no minimum.
    pub min_data_rate: u64,
    pub min_data_rate_grace_secs: u64,
    /// Connections per protocol (within `max-connections`), so that idle IMAP or POP3 clients
    /// cannot take the slots incoming mail needs.
    pub max_smtp_connections: usize,
    pub max_imap_connections: usize,
    pub max_pop3_connections: usize,
    /// HTTP connections of the JMAP listeners (browsers open several each).
    pub max_jmap_connections: usize,
    /// IMAP and POP3 clients that have not logged in this long after connecting are
    /// disconnected, whatever they sent meanwhile.
    pub login_timeout_secs: u64,
    /// IMAP and POP3 connections one client address may hold before logging in; more are
    /// refused at once, so that a few addresses cannot take every slot with idle connections.
    /// The default leaves room for a burst from an office behind NAT (20 clients connecting
    /// at once, as imaptest's stress mode does).
    pub max_prelogin_connections_per_ip: usize,
}

/// The highest `limits.max-mime-depth`: every walk of a MIME tree stays far from stack limits.
pub const MAX_MIME_DEPTH: usize = 200;

fn mime_depth<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let depth = usize::deserialize(d)?;
    if !(1..=MAX_MIME_DEPTH).contains(&depth) {
        return Err(serde::de::Error::custom(format!(
            "max-mime-depth must be between 1 and {MAX_MIME_DEPTH}, not {depth}"
        )));
    }
    Ok(depth)
}

/// The highest `limits.max-mime-parts`.
pub const MAX_MIME_PARTS: usize = 100_000;

fn mime_parts<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let parts = usize::deserialize(d)?;
    if !(1..=MAX_MIME_PARTS).contains(&parts) {
        return Err(serde::de::Error::custom(format!(
            "max-mime-parts must be between 1 and {MAX_MIME_PARTS}, not {parts}"
        )));
    }
    Ok(parts)
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 500,
            max_connections_per_ip: 50,
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
            max_mime_depth: 50,
            max_mime_parts: 10_000,
            auth_failures_per_ip: 10,
            auth_failure_window_secs: 600,
            rcpt_errors_before_delay: 3,
            max_junk_commands: 100,
            rcpt_error_delay_ms: 1000,
            max_rcpt_errors: 20,
            min_data_rate: 500,
            min_data_rate_grace_secs: 30,
            max_smtp_connections: 300,
            max_imap_connections: 200,
            max_pop3_connections: 100,
            max_jmap_connections: 200,
            login_timeout_secs: 60,
            max_prelogin_connections_per_ip: 32,
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
        }
    }
}

impl QueueConfig {
    /// The wait after the given failed attempt (1 = the first).
    pub fn retry_after(&self, attempt: u32) -> std::time::Duration {
        let index = (attempt.max(1) as usize - 1).min(self.retry.len().saturating_sub(1));
        self.retry
            .get(index)
            .copied()
            .unwrap_or(std::time::Duration::from_secs(3600))
    }
}

/// Parses `90`, `90s`, `5m`, `2h`, `5d`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 5m, 1h or 5d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(n * seconds))
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<std::time::Duration>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    if texts.is_empty() {
        return Err(serde::de::Error::custom(
            "the retry schedule needs at least one wait",
        ));
    }
    texts
        .iter()
        .map(|t| parse_duration(t).map_err(serde::de::Error::custom))
        .collect()
}

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
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            address: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9925))),
        }
    }
}

/// A DKIM key signing the relay's outgoing mail whose From domain is `domain` (or under it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DkimConfig {
    pub domain: String,
    pub selector: String,
    /// The private key, PEM (PKCS#8; PKCS#1 too for RSA), relative to this file.
    pub key: PathBuf,
    #[serde(default)]
    pub algorithm: DkimAlgorithm,
    /// Header fields to sign; default: the usual set, From signed twice so that none can be
    /// added, and absent ones so that none can be added later.
    #[serde(default)]
    pub headers: Option<Vec<String>>,
}

/// Sender authentication of received mail: which methods run, and how results are labelled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AuthConfig {
    /// The methods to verify; empty (the default) verifies nothing.
    pub verify: Vec<AuthMethod>,
    /// The name in `Authentication-Results: NAME; ...`; default: `server.hostname`.
    pub authserv_id: Option<String>,
    /// How many parsed DNS answers (SPF, DKIM key, DMARC records, addresses) are kept.
    pub cache_entries: usize,
    /// The budget of one message's DNS lookups: SPF's from MAIL FROM, DKIM's, ARC's and
    /// DMARC's (side by side with what SPF still waits for) from the end of DATA; a method
    /// whose answers are not in by then reports `temperror`, the others what they found.
    pub timeout_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            verify: Vec::new(),
            authserv_id: None,
            cache_entries: 8192,
            timeout_ms: 10_000,
        }
    }
}

/// A sender authentication method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    Spf,
    Dkim,
    Dmarc,
    Arc,
}

/// The signature algorithm of a DKIM key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub enum DkimAlgorithm {
    /// RSA with SHA-256: what every verifier understands.
    #[default]
    #[serde(rename = "rsa-sha256")]
    #[value(name = "rsa-sha256")]
    RsaSha256,
    /// Ed25519 (RFC 8463): short keys, fast; many verifiers still want an RSA one beside it.
    #[serde(rename = "ed25519-sha256")]
    #[value(name = "ed25519-sha256")]
    Ed25519Sha256,
}

impl DkimAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            DkimAlgorithm::RsaSha256 => "rsa-sha256",
            DkimAlgorithm::Ed25519Sha256 => "ed25519-sha256",
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

/// Records where each `[[plugin]]` entry starts and on which line each key of its config table
/// is, so errors found later (against a plugin's declared settings) can name the line.
fn locate_plugin_keys(text: &str, plugins: &mut [PluginConfig]) {
    let mut index: Option<usize> = None;
    let mut in_config = false;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            if line.starts_with("[[plugin]]") {
                index = Some(index.map_or(0, |i| i + 1));
                if let Some(plugin) = index.and_then(|i| plugins.get_mut(i)) {
                    plugin.line = number + 1;
                }
            }
            in_config = line.starts_with("[plugin.config");
            continue;
        }
        let Some(plugin) = index.and_then(|i| plugins.get_mut(i)) else {
            continue;
        };
        let inline = line.strip_prefix("config").map(str::trim_start);
        let keys: Vec<&str> = match inline.and_then(|rest| rest.strip_prefix('=')) {
            // `config = { a = 1, b = 2 }`: the keys of the inline table.
            Some(table) => table
                .trim()
                .trim_start_matches('{')
                .split(',')
                .filter_map(|item| item.split_once('=').map(|(k, _)| k))
                .collect(),
            None if in_config => line.split_once('=').map(|(k, _)| k).into_iter().collect(),
            None => Vec::new(),
        };
        for key in keys {
            let key = key.trim().trim_matches('"').to_string();
            plugin.config_lines.entry(key).or_insert(number + 1);
        }
    }
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

    /// The shared stores' addresses: a kv backend and a users source of a kind we speak.
    fn check_stores(&self) -> Result<(), String> {
        let backend = &self.kv.backend;
        let redis = backend.starts_with("redis://") || backend.starts_with("redis+unix://");
        if backend != "local" && !redis {
            return Err(format!(
                "[kv] backend = {backend:?}: want \"local\" or a redis:// (redis+unix://) URL"
            ));
        }
        if let Some(source) = &self.local.source {
            if !(source.starts_with("postgres://") || source.starts_with("postgresql://")) {
                return Err(format!(
                    "[local] source = {source:?}: want a postgres:// URL"
                ));
            }
        }
        Ok(())
    }

    /// Plugin entry rules that serde cannot express.
    fn check_plugins(&self) -> Result<(), String> {
        let ceiling = self.runtime.max_memory_mb;
        for plugin in &self.plugins {
            let at = format!("line {}: plugin {}", plugin.line, plugin.target());
            match (&plugin.milter, plugin.path.as_os_str().is_empty()) {
                (Some(_), false) => {
                    return Err(format!("{at}: set `path` or `milter`, not both"));
                }
                (None, true) => {
                    return Err(format!(
                        "{at}: needs `path` (a component) or `milter` (an address)"
                    ));
                }
                _ => {}
            }
            if plugin.memory_mb > ceiling || plugin.memory_mb == 0 {
                return Err(format!(
                    "{at}: memory-mb = {} is outside 1..={ceiling} (runtime.max-memory-mb)",
                    plugin.memory_mb
                ));
            }
            if let Some(ms @ (0 | 60_001..)) = plugin.timeout_ms {
                return Err(format!("{at}: timeout-ms = {ms} is outside 1..=60000"));
            }
            if plugin.instance_reuse == Some(0) {
                return Err(format!("{at}: instance-reuse must be at least 1"));
            }
            match (plugin.grant.contains(&Grant::Files), &plugin.files) {
                (true, None) => {
                    return Err(format!(
                        "{at}: grant \"files\" needs `files`, the directory to open"
                    ))
                }
                (false, Some(_)) => {
                    return Err(format!("{at}: `files` is set but \"files\" is not granted"))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Route rules that serde cannot express; `local` routes make their domains local.
    fn check_routes(&mut self) -> Result<(), String> {
        for (index, route) in self.routes.iter().enumerate() {
            let at = format!("route #{} ({})", index + 1, route.domains.join(", "));
            if route.domains.is_empty() {
                return Err(format!("{at}: `domains` is empty"));
            }
            match (route.kind, &route.host) {
                (RouteKind::Relay, None) => {
                    return Err(format!("{at}: type \"relay\" needs `host`"))
                }
                (RouteKind::Relay, Some(host)) if !is_host_port(host) => {
                    return Err(format!("{at}: host {host:?} is not host:port"))
                }
                (RouteKind::Local | RouteKind::Mx, Some(_)) => {
                    return Err(format!("{at}: `host` is only for type \"relay\""))
                }
                _ => {}
            }
            if route.auth_user.is_some() != route.auth_password.is_some() {
                return Err(format!("{at}: auth-user and auth-password go together"));
            }
            if route.kind == RouteKind::Local && route.domains.iter().any(|d| d.contains('*')) {
                return Err(format!("{at}: a local route needs exact domains"));
            }
        }
        let local: Vec<String> = self
            .routes
            .iter()
            .filter(|r| r.kind == RouteKind::Local)
            .flat_map(|r| r.domains.clone())
            .collect();
        for domain in local {
            if !self
                .local
                .domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(&domain))
            {
                self.local.domains.push(domain);
            }
        }
        Ok(())
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

/// A store's URL from the config with its password (between `user:` and `@`) masked, for
/// logs and messages.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            let shown = if credentials.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{shown}@{host}")
        }
        None => url.to_string(),
    }
}

/// `host:port` with a non-empty host and a valid port (`[v6]:port` too).
pub fn is_host_port(text: &str) -> bool {
    split_host_port(text).is_some()
}

/// Splits `host:port`; brackets around an IPv6 host are removed.
pub fn split_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|&p| p > 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| (host.to_string(), port))
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
