//! The `[server]` table and the `[[listener]]` entries: the gateway's name, data directory
//! and certificate, and which addresses it listens on with what protocol and TLS.

use std::path::PathBuf;

use serde::Deserialize;

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

impl TlsMode {
    /// The word the config uses, for logs.
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::Starttls => "starttls",
            TlsMode::Implicit => "implicit",
            TlsMode::None => "none",
        }
    }
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
    /// Offer DSN (RFC 3461) in the EHLO reply. Unset: on submission listeners (those that
    /// require AUTH) only; authenticated clients get it on any listener. Success reports name
    /// the hosts mail went through, so an inbound MX listener offers it only when told to.
    #[serde(default)]
    pub dsn: Option<bool>,
}

impl ListenerConfig {
    /// DSN is offered to every client of this listener.
    pub fn offers_dsn(&self) -> bool {
        self.dsn.unwrap_or(self.require_auth)
    }

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
            dsn: None,
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
