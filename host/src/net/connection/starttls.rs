//! Upgrading a plain connection to TLS in band (STARTTLS, STLS): who may, and the handshake
//! after the go-ahead, with whatever the client pipelined behind the command dropped.

use std::time::Duration;

use super::{Client, Connection, Stream};

/// Why STARTTLS (or STLS) cannot start.
pub enum TlsRefusal {
    AlreadyActive,
    NotAvailable,
}

/// The longest a TLS handshake may take (shorter where the client's time to log in is).
pub const HANDSHAKE_TIME: Duration = Duration::from_secs(30);

impl Connection {
    /// Server side of STARTTLS/STLS, after the "go ahead" reply was queued: sends it, drops
    /// whatever the client pipelined behind the command (it came in the clear), and does the
    /// handshake within `limit` (at most [`HANDSHAKE_TIME`]). Returns how many pipelined bytes were dropped.
    pub async fn start_server_tls(
        &mut self,
        acceptor: &tokio_rustls::TlsAcceptor,
        limit: Duration,
    ) -> std::io::Result<usize> {
        self.flush().await?;
        let dropped = self.discard_input();
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Upgrading) else {
            return Err(std::io::ErrorKind::InvalidInput.into());
        };
        // A client that stalls the handshake must not hold its connection slot forever, nor
        // past its time to log in.
        let tls = tokio::time::timeout(limit.min(HANDSHAKE_TIME), acceptor.accept(tcp))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))?;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(dropped)
    }

    /// Drops everything buffered (used after STARTTLS).
    pub fn discard_input(&mut self) -> usize {
        let n = self.input.len();
        self.input.clear();
        n
    }
}

impl Client {
    /// The acceptor for an in-band TLS upgrade on this connection.
    pub fn starttls_acceptor(
        &self,
        acceptor: Option<&tokio_rustls::TlsAcceptor>,
    ) -> Result<tokio_rustls::TlsAcceptor, TlsRefusal> {
        match (acceptor, self.tls, self.listener.tls) {
            (_, true, _) => Err(TlsRefusal::AlreadyActive),
            (Some(a), false, crate::config::TlsMode::Starttls) => Ok(a.clone()),
            _ => Err(TlsRefusal::NotAvailable),
        }
    }

    /// Upgrades to TLS once the go-ahead reply is queued (see
    /// [`Connection::start_server_tls`]); false when the handshake failed (close then).
    pub async fn start_tls(
        &mut self,
        acceptor: &tokio_rustls::TlsAcceptor,
        limit: Duration,
    ) -> bool {
        let result = self.conn.start_server_tls(acceptor, limit).await;
        crate::telemetry::metrics::tls_handshake(&self.listener.name, result.is_ok());
        match result {
            Ok(dropped) => {
                if dropped > 0 {
                    tracing::info!(dropped, "discarded bytes pipelined after the TLS command");
                }
                self.tls = true;
                true
            }
            Err(e) => {
                tracing::info!("TLS handshake failed: {e}");
                false
            }
        }
    }
}
