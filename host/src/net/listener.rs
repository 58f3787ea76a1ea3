//! A listening socket: accepts connections within the connection limits, turns away the
//! rest in their protocol's words, does implicit TLS, and hands each connection to its
//! protocol in a session span, counted for the drain and the metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::connection::{Client, Connection, Stream, HANDSHAKE_TIME};
use super::drain::{Drain, DrainWatch};
use super::limits::{LoginWindow, PerIp, Waiting, WaitingPlace};
use super::Protocol;
use crate::config::{LimitsConfig, ListenerConfig, Protocol as ProtocolKind, TlsMode};
use crate::telemetry::metrics;

/// The connection slots a listener draws from: the gateway's, its protocol's, its client
/// address's.
pub struct Slots {
    total: Arc<Semaphore>,
    protocol: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    per_ip_max: usize,
    /// The connections (of every protocol) that may be closed to make room: those waiting
    /// to log in, and SMTP sessions; this listener's are of `group`.
    waiting: Arc<Waiting>,
    group: &'static str,
    /// `limits.write-stall-secs`.
    write_stall: Duration,
}

/// Every connection limit of the gateway, from which each listener gets its [`Slots`].
pub struct ConnectionLimits {
    total: Arc<Semaphore>,
    smtp: Arc<Semaphore>,
    imap: Arc<Semaphore>,
    pop3: Arc<Semaphore>,
    jmap: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    per_ip_max: usize,
    waiting: Arc<Waiting>,
    write_stall: Duration,
}

impl ConnectionLimits {
    pub fn new(limits: &LimitsConfig) -> ConnectionLimits {
        let semaphore = |max: usize| Arc::new(Semaphore::new(max));
        ConnectionLimits {
            total: semaphore(limits.max_connections),
            smtp: semaphore(limits.max_smtp_connections),
            imap: semaphore(limits.max_imap_connections),
            pop3: semaphore(limits.max_pop3_connections),
            jmap: semaphore(limits.max_jmap_connections),
            per_ip: Arc::new(PerIp::default()),
            per_ip_max: limits.max_connections_per_ip,
            waiting: Arc::new(Waiting::default()),
            write_stall: Duration::from_secs(limits.write_stall_secs),
        }
    }

    pub fn slots(&self, kind: ProtocolKind) -> Slots {
        let protocol = match kind {
            // A milter connection carries the SMTP sessions of the MTA that opened it.
            ProtocolKind::Smtp | ProtocolKind::Milter => &self.smtp,
            ProtocolKind::Imap => &self.imap,
            ProtocolKind::Pop3 => &self.pop3,
            ProtocolKind::Jmap => &self.jmap,
        };
        Slots {
            total: self.total.clone(),
            protocol: protocol.clone(),
            per_ip: self.per_ip.clone(),
            per_ip_max: self.per_ip_max,
            waiting: self.waiting.clone(),
            group: slot_group(kind),
            write_stall: self.write_stall,
        }
    }
}

/// The protocols that share one set of slots (SMTP and milter connections).
fn slot_group(kind: ProtocolKind) -> &'static str {
    match kind {
        ProtocolKind::Smtp | ProtocolKind::Milter => "smtp",
        other => other.name(),
    }
}

/// How long a new client waits for the slot of a connection closed to make room for it.
const EVICTION_WAIT: Duration = Duration::from_millis(500);

/// Every slot one connection holds, given back when it ends.
type Held = (
    tokio::sync::OwnedSemaphorePermit,
    tokio::sync::OwnedSemaphorePermit,
    super::limits::IpSlot,
);

/// Which connection limit turned a client away.
#[derive(Clone, Copy)]
enum Refusal {
    Total,
    Protocol,
    PerIp,
    /// `limits.max-prelogin-connections-per-ip` of the address's connections are waiting to
    /// log in (IMAP and POP3).
    WaitingToLogIn,
}

impl Refusal {
    /// What the client is told.
    fn text(self) -> &'static str {
        match self {
            Refusal::Total | Refusal::Protocol => "Too many connections, try again later",
            Refusal::PerIp => "Too many connections from your address",
            Refusal::WaitingToLogIn => "Too many connections from your address waiting to log in",
        }
    }

    /// The metrics label.
    fn metric(self) -> &'static str {
        match self {
            Refusal::Total => "max-connections",
            Refusal::Protocol => "protocol-limit",
            Refusal::PerIp => "per-ip-limit",
            Refusal::WaitingToLogIn => "prelogin-per-ip-limit",
        }
    }
}

impl Slots {
    /// All the slots a new connection from `ip` needs, or why it cannot have them.
    fn take(&self, ip: IpAddr) -> Result<Held, Refusal> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Total)?;
        let protocol = self
            .protocol
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Protocol)?;
        let ip = self
            .per_ip
            .take(ip, self.per_ip_max)
            .ok_or(Refusal::PerIp)?;
        Ok((total, protocol, ip))
    }

    /// [`Slots::take`]; but when the protocol's slots or the gateway's are all taken, the
    /// oldest connection that may be closed (waiting to log in, or an SMTP session without a
    /// message accepted since it became the oldest; of this protocol, or any for the
    /// gateway's) is closed to make room, and the new one waits, briefly, for the slot it
    /// gives back.
    async fn take_or_make_room(&self, ip: IpAddr) -> Result<Held, Refusal> {
        let why = match self.take(ip) {
            Err(why @ (Refusal::Protocol | Refusal::Total)) => why,
            taken => return taken,
        };
        let group = matches!(why, Refusal::Protocol).then_some(self.group);
        if !self.waiting.evict_oldest(group) {
            return Err(why);
        }
        let freed = async {
            let total = self.total.clone().acquire_owned().await.ok()?;
            let protocol = self.protocol.clone().acquire_owned().await.ok()?;
            Some((total, protocol))
        };
        let Ok(Some((total, protocol))) = tokio::time::timeout(EVICTION_WAIT, freed).await else {
            return Err(why);
        };
        let ip = self
            .per_ip
            .take(ip, self.per_ip_max)
            .ok_or(Refusal::PerIp)?;
        Ok((total, protocol, ip))
    }
}

/// One listening socket and what its connections need.
pub struct Listener {
    pub socket: TcpListener,
    pub config: ListenerConfig,
    pub protocol: Arc<dyn Protocol>,
    /// For implicit TLS (and offered to the protocol for STARTTLS).
    pub tls: Option<TlsAcceptor>,
    pub slots: Slots,
    /// Numbers the sessions of every listener (the session ids).
    pub sessions: Arc<AtomicU64>,
    pub drain: Drain,
    /// Refusals in their TLS handshake ([`TLS_REFUSALS_AT_ONCE`]).
    pub tls_refusals: Arc<Semaphore>,
}

impl Listener {
    /// Accepts connections until the task is aborted.
    pub async fn run(self) {
        let listener = Arc::new(self);
        loop {
            let (tcp, peer) = match listener.socket.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!("accept on {}: {e}", listener.config.name);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            // The login window opens at accept: the TLS handshake is inside it, and a
            // connection counts as waiting to log in from its first byte.
            // Full: a connection that has not logged in, or an SMTP session that has had no
            // message accepted lately, may make room (which can take a moment, the accept loop
            // waits for it: the next client would find it full too).
            let held = listener.slots.take_or_make_room(peer.ip()).await;
            let held = held.and_then(|held| {
                let window = listener
                    .protocol
                    .login_window(peer.ip())
                    .map_err(|_| Refusal::WaitingToLogIn)?;
                Ok((held, listener.evictable(window, &tcp)))
            });
            let (held, places) = match held {
                Ok(held) => held,
                Err(why) => {
                    metrics::connection_refused(&listener.config.name, why.metric());
                    let reply = listener.protocol.refusal(why.text());
                    tokio::spawn(listener.clone().refuse(tcp, reply));
                    continue;
                }
            };
            let id = format!(
                "{:x}",
                listener.sessions.fetch_add(1, Ordering::Relaxed) + 1
            );
            let watch = listener.drain.watch();
            let name = listener.config.name.clone();
            let span = tracing::info_span!("session", id, peer = %peer, listener = name);
            let listener = listener.clone();
            tokio::spawn(
                async move {
                    let kind = listener.config.protocol.name();
                    let counted = metrics::connection_opened(&listener.config.name, kind);
                    listener.session(tcp, peer, (id, watch), places).await;
                    drop((held, counted));
                }
                .instrument(span),
            );
        }
    }

    /// A new connection's place among those that may be closed to make room: in its login
    /// window where it has one, else its own where the protocol allows.
    fn evictable(
        &self,
        window: Option<LoginWindow>,
        tcp: &TcpStream,
    ) -> (Option<LoginWindow>, Option<WaitingPlace>) {
        let (waiting, group) = (&self.slots.waiting, self.slots.group);
        match window {
            Some(window) => (Some(window.evictable(waiting.register(group, tcp))), None),
            None if self.protocol.evictable() => (None, waiting.register_told(group, tcp)),
            None => (None, None),
        }
    }

    /// One connection: implicit TLS if the listener has it, then the protocol's session.
    async fn session(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        (id, drain): (String, DrainWatch),
        (login_window, place): (Option<LoginWindow>, Option<WaitingPlace>),
    ) {
        let stream = if self.config.tls == TlsMode::Implicit {
            let Some(acceptor) = self.tls.clone() else {
                return;
            };
            // Cut at the client's deadline to log in, where it has one.
            let most = self.protocol.handshake_time().min(HANDSHAKE_TIME);
            let limit = login_window
                .as_ref()
                .map_or(most, |w| w.remaining().min(most));
            let handshake = tokio::time::timeout(limit, acceptor.accept(tcp)).await;
            metrics::tls_handshake(&self.config.name, matches!(handshake, Ok(Ok(_))));
            match handshake {
                Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
                _ => {
                    tracing::info!("TLS handshake failed");
                    return;
                }
            }
        } else {
            Stream::Plain(tcp)
        };
        let tls = matches!(stream, Stream::Tls(_));
        tracing::debug!("connected");
        let mut conn = Connection::new(stream);
        conn.set_write_stall(self.slots.write_stall);
        let client = Client {
            conn,
            peer,
            id,
            listener: self.config.clone(),
            tls,
            drain,
            login_window,
            place,
        };
        self.protocol.clone().serve(client).await;
        tracing::debug!("closed");
    }
}

/// Refusals on an implicit-TLS port that may be in their handshake at once: a client is told
/// why in words it can read, but a flood of connections cannot make the refusals cost more
/// than this many handshakes (beyond it, the connection is closed unanswered).
const TLS_REFUSALS_AT_ONCE: usize = 16;
/// How long a refused client has to complete its handshake and read the refusal.
const REFUSAL_TIME: Duration = Duration::from_secs(5);

impl Listener {
    /// The turns for refusals in TLS, one set per listener.
    pub fn refusal_turns() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(TLS_REFUSALS_AT_ONCE))
    }

    /// Sends a refusal and closes; on an implicit-TLS port inside TLS, since a client reads
    /// nothing there before its handshake (a refusal in clear text is a TLS error to it).
    async fn refuse(self: Arc<Self>, tcp: TcpStream, reply: String) {
        let acceptor = match (&self.tls, self.config.tls) {
            (Some(acceptor), TlsMode::Implicit) => acceptor.clone(),
            _ => return send_and_close(tcp, reply).await,
        };
        let Ok(_turn) = self.tls_refusals.clone().try_acquire_owned() else {
            return;
        };
        let refusal = async {
            let tls = acceptor.accept(tcp).await?;
            send_and_close(tls, reply).await;
            Ok::<(), std::io::Error>(())
        };
        let _ = tokio::time::timeout(REFUSAL_TIME, refusal).await;
    }
}

/// Writes `reply` (within the refusal time) and shuts the stream down.
async fn send_and_close<S: tokio::io::AsyncWrite + Unpin>(mut stream: S, reply: String) {
    let _ = tokio::time::timeout(REFUSAL_TIME, stream.write_all(reply.as_bytes())).await;
    let _ = stream.shutdown().await;
}
