//! Connections from the network, whatever their protocol: listeners and connection limits, the
//! buffered connection (plain or TLS), the server's TLS, and the drain at shutdown. A protocol
//! (SMTP, POP3, IMAP) plugs in through [`Protocol`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub mod connection;
pub mod drain;
pub mod limits;
pub mod listener;
pub mod tls;

/// What a listener needs of the protocol it speaks.
pub trait Protocol: Send + Sync + 'static {
    /// The line that turns a client away at a connection limit (sent in the clear).
    fn refusal(&self, why: &str) -> String;

    /// The time a new client at `ip` has to log in, opened at accept so that it covers the
    /// TLS handshake too; `Err` when its address has too many connections waiting to log in.
    /// `None` for protocols without one (their own timeouts apply once they are served).
    fn login_window(
        &self,
        _ip: std::net::IpAddr,
    ) -> Result<Option<limits::LoginWindow>, limits::TooManyWaiting> {
        Ok(None)
    }

    /// Whether a connection without a login window may be closed to make room for another
    /// client, after being told so by its session (SMTP: until its session has a message
    /// accepted, and again from each accepted message on; see `limits::Waiting`).
    fn evictable(&self) -> bool {
        false
    }

    /// The longest an implicit-TLS handshake may take on this protocol's listeners when the
    /// client has no login window (which cuts it sooner): no longer than the protocol's own
    /// wait for a first request.
    fn handshake_time(&self) -> std::time::Duration {
        connection::HANDSHAKE_TIME
    }

    /// Serves one connection until it ends.
    fn serve(
        self: Arc<Self>,
        client: connection::Client,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}
