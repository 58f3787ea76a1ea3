//! The SMTP server: command parsing and the DATA reader (protocol, no I/O), the session state
//! machine, replies, and what a session tells the journal.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::net::connection::Client;
use crate::shared::Shared;

pub mod command;
pub mod data;
mod journal;
pub mod reply;
mod session;

/// SMTP on a listener (inbound, submission).
pub struct Smtp(pub Arc<Shared>);

impl crate::net::Protocol for Smtp {
    fn refusal(&self, why: &str) -> String {
        format!("421 4.7.0 {why}\r\n")
    }

    fn serve(&self, client: Client) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let shared = self.0.clone();
        Box::pin(async move { session::Session::new(shared, client).run().await })
    }
}
