//! The `[limits]` table: protocol limits, each default safe for an exposed server.

use serde::Deserialize;

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
    /// Logged-in connections one user may hold on each of IMAP, POP3 and JMAP (counted
    /// apart, over every client address), so that one user's clients cannot take every slot
    /// of a protocol; more logins are refused (IMAP `NO [LIMIT]`, POP3 `-ERR [IN-USE]`, JMAP
    /// 429). Dovecot's `mail_max_userip_connections` has the same default, per address. 0: no
    /// cap.
    pub max_connections_per_user: usize,
    /// SMTP, IMAP and POP3 clients (and JMAP downloads) that take no byte of a reply for
    /// this many seconds are disconnected (at least 1).
    pub write_stall_secs: u64,
    /// Folders one user may have (INBOX aside): more are refused by IMAP CREATE (`NO
    /// [LIMIT]`) and JMAP Mailbox/set (`overQuota`). Each costs inodes and a look at every
    /// LIST, STATUS and JMAP refresh; Dovecot's `mailbox_list_limit` bounds them likewise.
    pub max_folders_per_user: usize,
    /// Bytes one user's messages may take, every folder together (as served, CRLF line ends):
    /// IMAP APPEND and COPY answer `NO [OVERQUOTA]`, JMAP `overQuota`, SMTP RCPT `452 4.2.2`
    /// and local delivery waits in the queue once it is reached. MOVE, which adds nothing,
    /// is allowed. 0: no limit.
    pub max_mailbox_bytes_per_user: u64,
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
            max_connections_per_user: 10,
            write_stall_secs: 60,
            max_folders_per_user: 10_000,
            max_mailbox_bytes_per_user: 10 << 30,
        }
    }
}
