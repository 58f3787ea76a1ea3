//! POP3 (RFC 1939, 2449 CAPA, 2595 STLS, 5034 SASL) over the users' Maildirs: the command
//! parser (no I/O) and the session (AUTHORIZATION, TRANSACTION, UPDATE), with the chain's
//! retrieve stage deciding what each client sees.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::net::connection::Client;
use crate::shared::Shared;

pub mod command;
pub mod session;

/// POP3 on a listener.
pub struct Pop3(pub Arc<Shared>);

impl crate::net::Protocol for Pop3 {
    fn refusal(&self, why: &str) -> String {
        format!("-ERR [SYS/TEMP] {why}\r\n")
    }

    fn serve(&self, client: Client) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let shared = self.0.clone();
        Box::pin(async move { session::Pop3Session::new(shared, client).run().await })
    }
}
