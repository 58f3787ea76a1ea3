//! POP3 (RFC 1939, 2449 CAPA, 2595 STLS, 5034 SASL) over the users' Maildirs: the command
//! parser (no I/O) and the session (AUTHORIZATION, TRANSACTION, UPDATE), with the chain's
//! retrieve stage deciding what each client sees.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;

use crate::net::connection::Client;
use crate::session_context::SessionContext;

pub mod command;
pub mod session;

/// POP3 on a listener; its sessions see only what every protocol shares.
pub struct Pop3 {
    pub shared: Arc<SessionContext>,
}

impl Deref for Pop3 {
    type Target = SessionContext;

    fn deref(&self) -> &SessionContext {
        &self.shared
    }
}

impl crate::net::Protocol for Pop3 {
    fn refusal(&self, why: &str) -> String {
        format!("-ERR [SYS/TEMP] {why}\r\n")
    }

    fn login_window(
        &self,
        ip: std::net::IpAddr,
    ) -> Result<Option<crate::net::limits::LoginWindow>, crate::net::limits::TooManyWaiting> {
        self.shared.prelogin_window(ip)
    }

    fn serve(self: Arc<Self>, client: Client) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move { session::Pop3Session::new(self, client).run().await })
    }
}
