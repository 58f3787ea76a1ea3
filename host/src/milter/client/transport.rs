//! The way to a milter: where it listens, opening the connection and agreeing on what it
//! does and sees, and a broken or silent link as the fault the chain reports.

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

use super::MilterParams;
use crate::milter::channel::{Channel, ChannelError, Io};
use crate::milter::codec::{actions, steps, Command, Negotiation, Response, VERSION};
use crate::plugin::ExternalFault;

/// The longest packet taken from a milter: a body chunk (64 KiB) or a header with room to spare.
const MAX_PACKET: usize = 1 << 20;
/// What we let a milter do.
const OFFERED_ACTIONS: u32 = actions::ADD_HEADERS
    | actions::CHANGE_BODY
    | actions::ADD_RCPT
    | actions::DELETE_RCPT
    | actions::CHANGE_HEADERS
    | actions::QUARANTINE
    | actions::CHANGE_FROM
    | actions::ADD_RCPT_PAR;
/// The steps a milter may decline or not answer (all but being shown rejected recipients).
const OFFERED_STEPS: u32 = steps::ALL & !steps::RCPT_REJECTED;

/// Where a milter listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl Address {
    /// Postfix's and Sendmail's spellings: `inet:HOST:PORT`, `inet:PORT@HOST`, `inet6:…`,
    /// `unix:/path` or `local:/path`.
    pub fn parse(text: &str) -> Result<Address, String> {
        let bad = |why: &str| format!("milter = {text:?}: {why}");
        let (scheme, rest) = text
            .split_once(':')
            .ok_or_else(|| bad("want inet:HOST:PORT, inet:PORT@HOST or unix:/path"))?;
        match scheme {
            "unix" | "local" if rest.starts_with('/') => Ok(Address::Unix(PathBuf::from(rest))),
            "unix" | "local" => Err(bad("a Unix socket path must be absolute")),
            "inet" | "inet6" => {
                let (host, port) = match rest.split_once('@') {
                    Some((port, host)) => (host, port),
                    None => rest.rsplit_once(':').ok_or_else(|| bad("no port"))?,
                };
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| bad("the port must be 1..=65535"))?;
                if host.is_empty() {
                    return Err(bad("no host"));
                }
                Ok(Address::Tcp {
                    host: host.to_string(),
                    port,
                })
            }
            _ => Err(bad("the scheme must be inet, inet6, unix or local")),
        }
    }

    async fn connect(&self) -> std::io::Result<Box<dyn Io>> {
        Ok(match self {
            Address::Tcp { host, port } => {
                let stream = TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
            Address::Unix(path) => Box::new(UnixStream::connect(path).await?),
        })
    }
}

/// An open, negotiated connection.
pub(super) struct Link {
    pub(super) channel: Channel,
    pub(super) agreed: Negotiation,
}

/// Opens the connection, within the member's timeout: the stream, or why not.
pub(super) async fn connect(filter: &MilterParams) -> Result<Box<dyn Io>, String> {
    let timeout = filter.timeout;
    match tokio::time::timeout(timeout, filter.address.connect()).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("cannot connect: {e}")),
        Err(_) => Err(format!("cannot connect within {timeout:?}")),
    }
}

/// Agrees on what the milter does and wants to see, over a fresh connection.
pub(super) async fn open_link(
    filter: &MilterParams,
    stream: Box<dyn Io>,
) -> Result<Link, ExternalFault> {
    let timeout = filter.timeout;
    let deadline = Instant::now() + timeout;
    let mut channel = Channel::new(stream, MAX_PACKET);
    let offer = Negotiation {
        version: VERSION,
        actions: OFFERED_ACTIONS,
        steps: OFFERED_STEPS,
    };
    let fail = |e| channel_fault(e, timeout, "negotiating");
    channel
        .send(&Command::Negotiate(offer), deadline)
        .await
        .map_err(fail)?;
    let theirs = match channel.response(deadline).await.map_err(fail)? {
        Response::Negotiate(theirs) => theirs,
        other => {
            return Err(ExternalFault::Peer(format!(
                "answered the negotiation with {}",
                other.name()
            )))
        }
    };
    if !(2..=VERSION).contains(&theirs.version) {
        return Err(ExternalFault::Peer(format!(
            "speaks milter protocol version {}, not 2 to {VERSION}",
            theirs.version
        )));
    }
    if theirs.actions & !OFFERED_ACTIONS != 0 {
        return Err(ExternalFault::Peer(format!(
            "asks for actions {:#x}, more than the {OFFERED_ACTIONS:#x} offered",
            theirs.actions
        )));
    }
    Ok(Link {
        channel,
        agreed: Negotiation {
            version: theirs.version,
            actions: theirs.actions,
            steps: theirs.steps & OFFERED_STEPS,
        },
    })
}

pub(super) fn channel_fault(e: ChannelError, timeout: Duration, during: &str) -> ExternalFault {
    match e {
        ChannelError::Timeout => {
            ExternalFault::Timeout(timeout, format!("no answer to {during} within {timeout:?}"))
        }
        other => ExternalFault::Peer(format!("{during}: {other}")),
    }
}

pub(super) fn fault_text(fault: &ExternalFault) -> &str {
    match fault {
        ExternalFault::Timeout(_, text) | ExternalFault::Peer(text) | ExternalFault::Down(text) => {
            text
        }
    }
}

/// A failure repeated at a later stage of the same session, without asking again.
pub(super) fn earlier(fault: &ExternalFault) -> ExternalFault {
    let text = format!("failed earlier in this session: {}", fault_text(fault));
    match fault {
        ExternalFault::Timeout(t, _) => ExternalFault::Timeout(*t, text),
        ExternalFault::Peer(_) => ExternalFault::Peer(text),
        ExternalFault::Down(_) => ExternalFault::Down(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_postfix_and_sendmail_spelling() {
        let tcp = |host: &str, port| Address::Tcp {
            host: host.into(),
            port,
        };
        assert_eq!(
            Address::parse("inet:127.0.0.1:11332"),
            Ok(tcp("127.0.0.1", 11332))
        );
        assert_eq!(
            Address::parse("inet:8891@localhost"),
            Ok(tcp("localhost", 8891))
        );
        assert_eq!(Address::parse("inet6:[::1]:25"), Ok(tcp("::1", 25)));
        assert_eq!(
            Address::parse("unix:/run/milter.sock"),
            Ok(Address::Unix("/run/milter.sock".into()))
        );
        for bad in [
            "127.0.0.1:25",
            "inet:host",
            "inet::25",
            "inet:h:0",
            "unix:rel",
            "tcp:h:1",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }
}
