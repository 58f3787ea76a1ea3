//! The SMTP server: command parsing and the DATA reader (protocol, no I/O), the session state
//! machine, replies, and what a session tells the journal. What the mail meets is the intake's.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;

use crate::intake::Gateway;
use crate::net::connection::Client;
use crate::session_context::SessionContext;

pub mod command;
mod command_log;
pub mod data;
pub mod reply;
mod session;

/// SMTP on a listener (inbound, submission): the protocol in front of the intake.
pub struct Smtp {
    pub intake: Arc<Gateway>,
}

impl Deref for Smtp {
    type Target = SessionContext;

    fn deref(&self) -> &SessionContext {
        &self.intake.shared
    }
}

impl crate::net::Protocol for Smtp {
    fn refusal(&self, why: &str) -> String {
        format!("421 4.7.0 {why}\r\n")
    }

    /// A session that holds its slot without having mail accepted may be closed to make
    /// room: from its connection, and from each accepted message on (see `session`).
    fn evictable(&self) -> bool {
        true
    }

    fn serve(self: Arc<Self>, client: Client) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move { session::Session::new(self, client).run().await })
    }
}
