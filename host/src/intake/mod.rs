//! The intake: one mail transaction for every way mail enters (SMTP, JMAP submission; the
//! milter listener and the harness share its stage runner). It takes the session's facts,
//! the envelope and the message bytes, runs the plugin stages and the gateway's own checks
//! (relay policy, recipients, size, MIME shape, loops), verifies the sender (SPF, DKIM,
//! DMARC, ARC), adds the trace fields, seals, and hands the message to the spool. Every step
//! answers with a reply as a value; no wire is written here, and the bytes are kept as given.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::delivery::queue::intake::Intake;
use crate::mail::Reply;
use crate::plugin::StageReport;
use crate::sender_auth::Verifier;
use crate::session_context::SessionContext;

mod accept;
mod checks;
mod log;
pub mod networks;
mod stages;
mod transaction;

pub use checks::has_bare_line_end;
pub use stages::Stages;
pub use transaction::Transaction;

/// What accepting mail needs of the gateway: what every protocol shares, the way into the
/// queue, who may relay, and sender authentication when the config asks for it.
pub struct Gateway {
    pub shared: Arc<SessionContext>,
    pub spool: Intake,
    pub relay_networks: networks::RelayNetworks,
    pub verifier: Option<Arc<Verifier>>,
}

impl Gateway {
    /// True when `ip` may relay without authentication.
    pub fn may_relay(&self, ip: IpAddr) -> bool {
        self.relay_networks.contains(ip)
    }
}

/// What the entry point knows of the client session a transaction runs in.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The session id (journal, logs, plugin session).
    pub id: String,
    /// The listener's name (`jmap` for JMAP submissions).
    pub listener: String,
    pub peer: SocketAddr,
    pub tls: bool,
    /// The listener takes mail only from authenticated clients.
    pub require_auth: bool,
    /// The listener offers DSN (RFC 3461) to every client; authenticated ones always get it.
    pub dsn: bool,
    pub helo: Option<String>,
    /// The client greeted with EHLO.
    pub esmtp: bool,
    pub auth_user: Option<String>,
}

impl Facts {
    /// DSN parameters may be used in this session.
    pub fn offers_dsn(&self) -> bool {
        self.dsn || self.auth_user.is_some()
    }

    fn plugin_session(&self) -> crate::mail::Session {
        crate::mail::Session::client(
            &self.id,
            self.peer,
            &self.listener,
            self.tls,
            self.helo.clone(),
            self.auth_user.clone(),
        )
    }
}

/// The answer to one step of a transaction.
#[derive(Debug)]
pub struct Answer {
    pub reply: Reply,
    /// The session must end after this reply (a plugin said disconnect, or a limit was hit).
    pub close: bool,
    /// Wait this long before replying (refused recipients past a few: no guessing at line rate).
    pub delay: Option<std::time::Duration>,
    /// The plugin stage this step ran, for the journal.
    pub stage: Option<StageReport>,
    /// The message taken in at this step, for the journal.
    pub accepted: Option<Accepted>,
}

impl Answer {
    pub fn new(code: u16, enhanced: (u8, u16, u16), text: &str) -> Answer {
        Answer::of(Reply::new(code, enhanced, text))
    }

    fn of(reply: Reply) -> Answer {
        Answer {
            reply,
            close: false,
            delay: None,
            stage: None,
            accepted: None,
        }
    }

    /// True when the step was refused (4xx or 5xx).
    pub fn refused(&self) -> bool {
        self.reply.code >= 400
    }

    /// The reply's text lines joined, with the code and enhanced status in front (as a
    /// client would quote it).
    pub fn text(&self) -> String {
        let status = self
            .reply
            .enhanced
            .map(|(c, s, d)| format!(" {c}.{s}.{d}"))
            .unwrap_or_default();
        format!("{}{status} {}", self.reply.code, self.reply.lines.join(" "))
    }
}

/// A message the transaction took in: spooled, discarded or quarantined.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub queue_id: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub size: usize,
    /// The sender authentication results in brief, when verified.
    pub authentication: Option<String>,
    /// The DSN requests kept with the message, for people (none when nothing was asked).
    pub dsn: Vec<String>,
    /// `discarded` or `quarantined` with the detail, when the message was not spooled.
    pub disposition: Option<(&'static str, String)>,
}
