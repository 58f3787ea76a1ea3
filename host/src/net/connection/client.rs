//! One accepted connection as its session sees it: the buffered stream, the peer, the
//! listener, the drain, and its next command line.

use std::time::Duration;

use super::{Connection, Line};

/// One accepted connection, whatever the protocol: its buffered stream and what is known about
/// the other end.
pub struct Client {
    pub conn: Connection,
    pub peer: std::net::SocketAddr,
    /// The session id, in logs and for plugins.
    pub id: String,
    pub listener: crate::config::ListenerConfig,
    pub tls: bool,
    /// Says when the server shuts down; counts the session open until dropped.
    pub drain: crate::net::drain::DrainWatch,
    /// The time an IMAP or POP3 client has to log in, opened when its connection was
    /// accepted (the session takes it over); `None` elsewhere.
    pub login_window: Option<crate::net::limits::LoginWindow>,
    /// An SMTP connection's place among those that may be closed to make room (renewed by
    /// its session after each accepted message); `None` elsewhere.
    pub place: Option<crate::net::limits::WaitingPlace>,
}

impl Client {
    /// The next command line. When `may_cut` (the session is between transactions) and the
    /// server is shutting down, `Line::Draining` instead: the session says goodbye and ends.
    pub async fn next_line(&mut self, max: usize, timeout: Duration, may_cut: bool) -> Line {
        if !may_cut {
            return self.conn.read_line(max, timeout).await;
        }
        if self.drain.is_draining() {
            return Line::Draining;
        }
        tokio::select! {
            line = self.conn.read_line(max, timeout) => line,
            () = self.drain.requested() => Line::Draining,
        }
    }

    /// Whether the connection was closed to make room for another client (its reading side
    /// ends; the session may still say goodbye).
    pub fn evicted(&self) -> bool {
        self.place.as_ref().is_some_and(|p| p.evicted())
    }

    /// The connection is the newest of those that may be closed to make room.
    pub fn renew_place(&mut self) {
        if let Some(place) = self.place.as_mut() {
            place.renew();
        }
    }

    /// This connection as plugins see it.
    pub fn plugin_session(
        &self,
        helo: Option<String>,
        auth_user: Option<String>,
    ) -> crate::mail::Session {
        crate::mail::Session::client(
            &self.id,
            self.peer,
            &self.listener.name,
            self.tls,
            helo,
            auth_user,
        )
    }
}
