//! The SMTP server: command parsing and the DATA reader (protocol, no I/O), the session state
//! machine, replies, the relay networks, and what a session tells the journal.

use std::future::Future;
use std::net::IpAddr;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;

use crate::delivery::queue::intake::Intake;
use crate::net::connection::Client;
use crate::session_context::SessionContext;

pub mod command;
mod command_log;
pub mod data;
pub mod networks;
pub mod reply;
mod session;

/// SMTP on a listener (inbound, submission), and what its sessions see of the gateway: what
/// every protocol shares, plus the way into the queue and who may relay.
pub struct Smtp {
    pub shared: Arc<SessionContext>,
    pub intake: Intake,
    pub relay_networks: networks::RelayNetworks,
    /// Sender authentication of received mail, when the config asks for it.
    pub verifier: Option<Arc<crate::sender_auth::Verifier>>,
}

impl Smtp {
    /// True when `ip` may relay without authentication.
    pub fn may_relay(&self, ip: IpAddr) -> bool {
        self.relay_networks.contains(ip)
    }
}

impl Deref for Smtp {
    type Target = SessionContext;

    fn deref(&self) -> &SessionContext {
        &self.shared
    }
}

impl crate::net::Protocol for Smtp {
    fn refusal(&self, why: &str) -> String {
        format!("421 4.7.0 {why}\r\n")
    }

    fn serve(self: Arc<Self>, client: Client) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move { session::Session::new(self, client).run().await })
    }
}
