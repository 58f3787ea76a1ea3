//! The mail domain: what SMTP, the queue, the relay and the plugins all talk about — the client
//! session, the envelope, where mail goes, the reply a client gets, and the mail in flight.

pub mod clock;
pub mod date;
pub mod dsn;
pub mod xtext;

/// The longest address taken in an envelope: RFC 5321's 256-octet path less its angle brackets.
pub const MAX_ADDRESS_OCTETS: usize = 254;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::message::header::valid_field_value;
use crate::message::Message;

/// One client connection, as the gateway and its plugins see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub peer_ip: String,
    pub peer_port: u16,
    pub listener: String,
    pub tls: bool,
    pub helo: Option<String>,
    pub auth_user: Option<String>,
}

impl Session {
    /// A client connection as plugins see it.
    pub fn client(
        id: &str,
        peer: std::net::SocketAddr,
        listener: &str,
        tls: bool,
        helo: Option<String>,
        auth_user: Option<String>,
    ) -> Session {
        Session {
            id: id.to_string(),
            peer_ip: peer.ip().to_string(),
            peer_port: peer.port(),
            listener: listener.to_string(),
            tls,
            helo,
            auth_user,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsmtpParam {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<String>,
    pub params: Vec<EsmtpParam>,
    /// The delivery status notifications asked for (RFC 3461): RET and ENVID of MAIL (also
    /// in `params`), each recipient's NOTIFY and ORCPT, as checked when they came.
    pub dsn: dsn::EnvelopeDsn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Local,
    Relay(String),
    Mx(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub queue_id: String,
    pub attempt: u32,
    pub route: Route,
}

impl Default for Delivery {
    fn default() -> Delivery {
        Delivery {
            queue_id: String::new(),
            attempt: 1,
            route: Route::Local,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retrieval {
    pub user: String,
    pub folder: String,
    pub uid: u32,
}

impl Default for Retrieval {
    fn default() -> Retrieval {
        Retrieval {
            user: String::new(),
            folder: "INBOX".into(),
            uid: 0,
        }
    }
}

/// What the chain works on and changes: the session, envelope and message, plus the
/// delivery-only outcomes (reroute, defer).
#[derive(Debug, Clone, Default)]
pub struct MailState {
    pub session: Session,
    pub envelope: Envelope,
    pub message: Option<Arc<Message>>,
    pub delivery: Option<Delivery>,
    pub retrieval: Option<Retrieval>,
    pub reroute: Option<String>,
    pub defer_seconds: Option<u32>,
    /// SPF, DKIM, DMARC and ARC results of the message, once it is in and when verified.
    pub auth: Option<Arc<crate::sender_auth::AuthResults>>,
}

/// An SMTP reply: code, optional enhanced status, text lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<(u8, u16, u16)>,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: (u8, u16, u16), text: &str) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.to_string()],
        }
    }

    /// Checks the code against the allowed range and the text for smuggled line breaks.
    pub fn validate(&self, codes: std::ops::RangeInclusive<u16>) -> Result<(), String> {
        if !codes.contains(&self.code) {
            return Err(format!("reply code {} is outside {codes:?}", self.code));
        }
        if let Some((class, subject, detail)) = self.enhanced {
            if u16::from(class) != self.code / 100 || subject > 999 || detail > 999 {
                return Err(format!(
                    "enhanced status {class}.{subject}.{detail} does not fit reply code {}",
                    self.code
                ));
            }
        }
        if let Some(bad) = self
            .lines
            .iter()
            .find(|l| !valid_field_value(l) || l.len() > 500)
        {
            return Err(format!(
                "reply text {bad:?} has CR, LF or NUL or is too long"
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some((c, s, d)) = self.enhanced {
            write!(f, " {c}.{s}.{d}")?;
        }
        write!(f, " {}", self.lines.join(" / "))
    }
}
