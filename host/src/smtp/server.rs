//! `mailgate serve`: the listeners, connection limits, and the local delivery worker.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::io::Stream;
use super::session::Session;
use crate::admin::Admin;
use crate::config::{Config, ConfigSource, ListenerConfig, Protocol, TlsMode};
use crate::delivery::local;
use crate::limits::{AuthBudget, PerIp};
use crate::net::drain::{Drain, DrainWatch};
use crate::plugin::services::{Clock, DiskKv, SystemClock, SystemDns};
use crate::plugin::{ActivePlugins, PluginSet, Runtime, Services};
use crate::queue::manager::QueueManager;
use crate::queue::spool::{QueuedEnvelope, Spool};
use crate::queue::state::QueueFiles;
use crate::reload::Reloader;
use crate::store::snapshots::SnapshotCache;
use crate::store::users::UserDirectory;
use crate::telemetry::{endpoint, journal, metrics};

/// What every session shares.
pub struct Shared {
    pub config: Arc<Config>,
    pub plugins: Arc<ActivePlugins>,
    pub services: Services,
    pub users: Arc<UserDirectory>,
    pub spool: Spool,
    pub tls: Option<TlsAcceptor>,
    relay_networks: Vec<(IpAddr, u8)>,
    deliveries: mpsc::UnboundedSender<String>,
    relay: QueueManager,
    quarantine_dir: PathBuf,
    /// Password checks running at once (argon2 takes ~19 MiB and milliseconds each).
    password_checks: Arc<Semaphore>,
    /// Failed logins per client address, across connections and protocols.
    auth_budget: AuthBudget,
    /// Folder message lists shared by the IMAP sessions that see them alike.
    pub snapshots: SnapshotCache,
}

impl Shared {
    /// True when `ip` is in one of the configured relay networks.
    pub fn may_relay(&self, ip: IpAddr) -> bool {
        self.relay_networks
            .iter()
            .any(|(net, bits)| in_network(ip, *net, *bits))
    }

    /// Spools a message durably and schedules its delivery.
    pub async fn enqueue(&self, envelope: &QueuedEnvelope, raw: &[u8]) -> Result<(), String> {
        self.spool
            .store(envelope, raw)
            .await
            .map_err(|e| e.to_string())?;
        // A message with no local recipient goes straight to the relay queue.
        let users = self.users.get();
        let local = envelope
            .recipients
            .iter()
            .any(|r| users.is_local_domain(r.rsplit_once('@').map_or("", |(_, d)| d)));
        if local {
            let _ = self.deliveries.send(envelope.id.clone());
        } else {
            self.relay.submit_new(crate::queue::spool::Spooled {
                envelope: envelope.clone(),
                message: raw.to_vec(),
            });
        }
        Ok(())
    }

    /// Checks a password off the async threads (argon2 takes milliseconds on purpose), at most
    /// one check per core at a time, so that a flood of logins queues instead of exhausting
    /// memory.
    pub async fn verify_password(&self, protocol: Protocol, user: &str, password: String) -> bool {
        let Ok(_permit) = self.password_checks.clone().acquire_owned().await else {
            return false;
        };
        let (users, user) = (self.users.get(), user.to_string());
        let ok = tokio::task::spawn_blocking(move || users.verify(&user, &password))
            .await
            .unwrap_or(false);
        metrics::auth(protocol.name(), ok);
        ok
    }

    /// Whether a client at `ip` may try to log in now (its failure budget is not used up).
    pub fn login_allowed(&self, ip: IpAddr) -> bool {
        let allowed = self.auth_budget.allows(ip);
        if !allowed {
            tracing::info!(%ip, "login refused: failure budget of the address used up");
        }
        allowed
    }

    /// After a failed login (SMTP AUTH, POP3, IMAP): takes from the address's budget, waits
    /// longer with each failure of the session, and says whether the client has used up its
    /// attempts (the connection is then closed).
    pub async fn login_failed(&self, ip: IpAddr, user: &str, failures: u32) -> bool {
        tracing::info!(user, failures, "login failed");
        self.auth_budget.failed(ip);
        let limits = &self.config.limits;
        let delay = limits.auth_failure_delay_ms * u64::from(failures);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        failures >= limits.max_auth_failures
    }

    /// Keeps a message aside, with the reason, instead of delivering it.
    pub async fn quarantine(&self, id: &str, raw: &[u8], reason: &str) -> Result<(), String> {
        let (dir, id, raw, reason) = (
            self.quarantine_dir.clone(),
            id.to_string(),
            raw.to_vec(),
            reason.to_string(),
        );
        tokio::task::spawn_blocking(move || crate::queue::quarantine(&dir, &id, &raw, &reason))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}

fn parse_network(text: &str) -> anyhow::Result<(IpAddr, u8)> {
    let (addr, bits) = match text.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (text, None),
    };
    let ip: IpAddr = addr
        .parse()
        .with_context(|| format!("server.relay-networks: {text:?} is not an address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => b
            .parse::<u8>()
            .ok()
            .filter(|&b| b <= max)
            .with_context(|| format!("server.relay-networks: bad prefix in {text:?}"))?,
        None => max,
    };
    Ok((ip, bits))
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Starts everything and serves until interrupted.
pub async fn serve(source: ConfigSource) -> anyhow::Result<()> {
    let config = Arc::new(source.load()?);
    crate::message::mime::set_max_depth(config.limits.max_mime_depth);
    // Before anything in the data dir is touched: one server per data dir.
    let data_dir = config.data_dir();
    let _owner = crate::datadir::DataDir::lock(&data_dir)?;
    // Bound first, so that /healthz answers (not ready) while the chain loads.
    let metrics_socket = match config.metrics.address {
        Some(address) => Some(endpoint::bind(address).await?),
        None => None,
    };
    let metrics = metrics_socket.as_ref().map(|_| metrics::enable());
    if config.journal.enabled {
        let caps = journal::Caps {
            max_bytes: config.journal.max_mb.saturating_mul(1 << 20),
            max_age: Duration::from_secs(config.journal.max_age_days.saturating_mul(86_400)),
        };
        let dir = config.journal_dir();
        journal::enable(&dir, caps)
            .with_context(|| format!("journal: cannot write {}", dir.display()))?;
    }
    let users = Arc::new(UserDirectory::open(&config.users_file(), &config.local)?);
    let spool = Spool::open(&data_dir.join("queue"))?;
    let tls = Some(super::tls::acceptor(
        config
            .resolve_opt(config.server.tls_cert.as_ref())
            .as_deref(),
        config
            .resolve_opt(config.server.tls_key.as_ref())
            .as_deref(),
        &data_dir,
        &config.server.hostname,
    )?);
    let cache = config
        .resolve_opt(config.runtime.cache_dir.as_ref())
        .unwrap_or_else(|| data_dir.join("cache"));
    let runtime = Arc::new(Runtime::new(&config.runtime, Some(cache))?);
    let plugins = Arc::new(ActivePlugins::new(
        PluginSet::load(runtime.clone(), &config).await?,
    ));
    let dns = SystemDns::new(
        &config.dns.servers,
        Duration::from_millis(config.dns.timeout_ms.unwrap_or(5000)),
    )
    .map_err(|e| anyhow::anyhow!("dns: {e}"))?;
    let kv =
        DiskKv::open(&data_dir.join("kv.redb")).map_err(|e| anyhow::anyhow!("kv store: {e}"))?;
    let kv: Arc<dyn crate::plugin::services::KvStore> = Arc::new(kv);
    tokio::spawn(purge_expired_kv(kv.clone()));
    let services = Services {
        kv,
        dns: Arc::new(dns),
        clock: Arc::new(SystemClock),
    };
    let relay_networks = config
        .server
        .relay_networks
        .iter()
        .map(|n| parse_network(n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (deliveries, queue) = mpsc::unbounded_channel();
    let files = QueueFiles::new(spool.clone(), &data_dir.join("queue"))?;
    let relay = QueueManager::start(
        files,
        config.clone(),
        plugins.clone(),
        services.clone(),
        deliveries.clone(),
    );
    let shared = Arc::new(Shared {
        config: config.clone(),
        plugins,
        services,
        users: users.clone(),
        spool: spool.clone(),
        tls,
        relay_networks,
        deliveries: deliveries.clone(),
        relay: relay.clone(),
        quarantine_dir: data_dir.join("quarantine"),
        auth_budget: AuthBudget::new(
            config.limits.auth_failures_per_ip,
            Duration::from_secs(config.limits.auth_failure_window_secs),
        ),
        password_checks: Arc::new(Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        )),
        snapshots: SnapshotCache::default(),
    });
    // Recovery: whatever was acknowledged before a stop is delivered now.
    let recovered = spool.list()?;
    if !recovered.is_empty() {
        tracing::info!(count = recovered.len(), "recovering queued messages");
    }
    for id in recovered {
        let _ = deliveries.send(id);
    }
    if let (Some(socket), Some(metrics)) = (metrics_socket, metrics) {
        let (queue, plugins) = (relay.clone(), shared.plugins.clone());
        let refresh: endpoint::Refresh = Arc::new(move |m: &metrics::Metrics| {
            let (messages, oldest) = queue.stats();
            m.set_queue(messages, oldest);
            m.clear_instances_idle();
            for plugin in &plugins.current().plugins {
                m.set_instances_idle(&plugin.name, plugin.idle_instances());
            }
        });
        tracing::info!(target: "mailgate::lifecycle", address = ?config.metrics.address, "metrics listening");
        tokio::spawn(endpoint::serve(socket, metrics, refresh));
    }
    metrics::plugin_generation(shared.plugins.current().generation);
    let reloader = Reloader::new(source, &config, runtime, shared.plugins.clone());
    reloader.spawn_triggers();
    let admin = Arc::new(Admin {
        queue: relay.clone(),
        reloader,
    });
    crate::admin::serve(&crate::admin::socket_path(&data_dir), admin)
        .await
        .context("cannot open the admin socket")?;
    tokio::spawn(delivery_worker(
        spool,
        users,
        data_dir.join("mail"),
        queue,
        relay.clone(),
        deliveries.clone(),
        config.queue.clone(),
    ));

    let total = Arc::new(Semaphore::new(config.limits.max_connections));
    let limits = &config.limits;
    let per_protocol: HashMap<Protocol, Arc<Semaphore>> = [
        (Protocol::Smtp, limits.max_smtp_connections),
        (Protocol::Imap, limits.max_imap_connections),
        (Protocol::Pop3, limits.max_pop3_connections),
    ]
    .into_iter()
    .map(|(protocol, max)| (protocol, Arc::new(Semaphore::new(max))))
    .collect();
    let per_ip = Arc::new(PerIp::default());
    let sessions = Arc::new(AtomicU64::new(0));
    let drain = Drain::new();
    let mut tasks = Vec::new();
    for listener in config.listeners() {
        let socket = TcpListener::bind(listener.address).await.with_context(|| {
            format!(
                "listener {}: cannot bind {}",
                listener.name, listener.address
            )
        })?;
        tracing::info!(
            target: "mailgate::lifecycle",
            listener = listener.name,
            address = %listener.address,
            tls = ?listener.tls,
            "listening"
        );
        let slots = Slots {
            total: total.clone(),
            protocol: per_protocol[&listener.protocol].clone(),
            per_ip: per_ip.clone(),
        };
        tasks.push(tokio::spawn(accept_loop(
            socket,
            listener,
            shared.clone(),
            slots,
            (sessions.clone(), drain.clone()),
        )));
    }
    // Every listener is bound and the chain is loaded: ready for mail.
    crate::service_manager::notify("READY=1");
    if let Some(metrics) = metrics {
        metrics.set_ready(true);
    }
    shutdown_signal().await;
    crate::service_manager::notify("STOPPING=1");
    if let Some(metrics) = metrics {
        metrics.set_ready(false);
    }
    // No new connections; the listening sockets close with their tasks.
    for task in tasks {
        task.abort();
    }
    let bound = Duration::from_secs(config.server.drain_secs);
    let started = std::time::Instant::now();
    tracing::info!(
        target: "mailgate::lifecycle",
        sessions = drain.open(),
        bound_secs = bound.as_secs(),
        "shutting down: draining sessions"
    );
    let cut = drain.run(bound).await;
    let left = bound.saturating_sub(started.elapsed());
    let attempts_cut = relay.stop(left).await;
    tracing::info!(
        target: "mailgate::lifecycle",
        sessions_cut = cut,
        deliveries_cut = attempts_cut,
        ms = started.elapsed().as_millis() as u64,
        "stopped"
    );
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}

/// The connection slots a listener draws from.
struct Slots {
    total: Arc<Semaphore>,
    protocol: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
}

/// Every slot one connection holds, given back when it ends.
type Held = (
    tokio::sync::OwnedSemaphorePermit,
    tokio::sync::OwnedSemaphorePermit,
    crate::limits::IpSlot,
);

/// Which connection limit turned a client away.
#[derive(Clone, Copy)]
enum Refusal {
    Total,
    Protocol,
    PerIp,
}

impl Refusal {
    /// What the client is told.
    fn text(self) -> &'static str {
        match self {
            Refusal::Total | Refusal::Protocol => "Too many connections, try again later",
            Refusal::PerIp => "Too many connections from your address",
        }
    }

    /// The metrics label.
    fn metric(self) -> &'static str {
        match self {
            Refusal::Total => "max-connections",
            Refusal::Protocol => "protocol-limit",
            Refusal::PerIp => "per-ip-limit",
        }
    }
}

impl Slots {
    /// All the slots a new connection from `ip` needs, or why it cannot have them.
    fn take(&self, ip: IpAddr, per_ip_max: usize) -> Result<Held, Refusal> {
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
        let ip = self.per_ip.take(ip, per_ip_max).ok_or(Refusal::PerIp)?;
        Ok((total, protocol, ip))
    }
}

async fn accept_loop(
    socket: TcpListener,
    listener: ListenerConfig,
    shared: Arc<Shared>,
    slots: Slots,
    (sessions, drain): (Arc<AtomicU64>, Drain),
) {
    loop {
        let (tcp, peer) = match socket.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!("accept on {}: {e}", listener.name);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let held = match slots.take(peer.ip(), shared.config.limits.max_connections_per_ip) {
            Ok(held) => held,
            Err(why) => {
                metrics::connection_refused(&listener.name, why.metric());
                // Answered in the clear even on a TLS port: the refusal must not cost a handshake.
                tokio::spawn(refuse(tcp, listener.protocol, why.text()));
                continue;
            }
        };
        let id = format!("{:x}", sessions.fetch_add(1, Ordering::Relaxed) + 1);
        let watch = drain.watch();
        let span = tracing::info_span!("session", id, peer = %peer, listener = listener.name);
        let (shared, listener) = (shared.clone(), listener.clone());
        tokio::spawn(
            async move {
                let counted = metrics::connection_opened(&listener.name, listener.protocol.name());
                session(tcp, peer, listener, shared, (id, watch)).await;
                drop((held, counted));
            }
            .instrument(span),
        );
    }
}

/// Turns a connection away in its protocol's words.
async fn refuse(mut tcp: TcpStream, protocol: Protocol, why: &str) {
    let reply = match protocol {
        Protocol::Smtp => format!("421 4.7.0 {why}\r\n"),
        Protocol::Imap => format!("* BYE [UNAVAILABLE] {why}\r\n"),
        Protocol::Pop3 => format!("-ERR [SYS/TEMP] {why}\r\n"),
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.write_all(reply.as_bytes())).await;
    let _ = tcp.shutdown().await;
}

async fn session(
    tcp: TcpStream,
    peer: SocketAddr,
    listener: ListenerConfig,
    shared: Arc<Shared>,
    (id, drain): (String, DrainWatch),
) {
    let stream = if listener.tls == TlsMode::Implicit {
        let Some(acceptor) = shared.tls.clone() else {
            return;
        };
        let handshake = tokio::time::timeout(Duration::from_secs(30), acceptor.accept(tcp)).await;
        metrics::tls_handshake(&listener.name, matches!(handshake, Ok(Ok(_))));
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
    let protocol = listener.protocol;
    let client = super::io::Client {
        conn: super::io::Connection::new(stream),
        peer,
        id,
        listener,
        tls,
        drain,
    };
    match protocol {
        Protocol::Smtp => Session::new(shared, client).run().await,
        Protocol::Pop3 => {
            crate::pop3::session::Pop3Session::new(shared, client)
                .run()
                .await
        }
        Protocol::Imap => {
            crate::imap::session::ImapSession::new(shared, client)
                .run()
                .await
        }
    }
    tracing::debug!("closed");
}

/// How often expired plugin kv entries are dropped from disk.
const KV_PURGE_EVERY: Duration = Duration::from_secs(600);

/// Expired kv entries read as absent at once, but take disk space until purged here.
async fn purge_expired_kv(kv: Arc<dyn crate::plugin::services::KvStore>) {
    let mut every = tokio::time::interval(KV_PURGE_EVERY);
    loop {
        every.tick().await;
        let kv = kv.clone();
        let now = SystemClock.now_ms();
        match tokio::task::spawn_blocking(move || kv.purge_expired(now)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "expired kv entries purged"),
            Ok(Err(e)) => tracing::warn!("kv purge: {e}"),
            Err(e) => tracing::warn!("kv purge task: {e}"),
        }
    }
}

/// Most messages delivered in one batch (two filesystem syncs per batch).
const DELIVERY_BATCH: usize = 64;

/// Delivers queued messages as they arrive (and those recovered at start), in batches of what
/// has accumulated while the previous batch was being written; messages with remote recipients
/// then go to the relay queue. A message that fails (a full disk, a broken Maildir) stays
/// queued and comes back after the queue's retry intervals, or at `mailgate queue retry`.
async fn delivery_worker(
    spool: Spool,
    users: Arc<UserDirectory>,
    mail_root: PathBuf,
    mut queue: mpsc::UnboundedReceiver<String>,
    relay: QueueManager,
    again: mpsc::UnboundedSender<String>,
    retry: crate::config::QueueConfig,
) {
    while let Some(first) = queue.recv().await {
        let mut ids = vec![first];
        while ids.len() < DELIVERY_BATCH {
            match queue.try_recv() {
                Ok(id) => ids.push(id),
                Err(_) => break,
            }
        }
        let (spool, users, root) = (spool.clone(), users.get(), mail_root.clone());
        let (files, retry) = (relay.files().clone(), retry.clone());
        let batch = ids.len();
        let result = tokio::task::spawn_blocking(move || {
            let outcome = local::deliver_batch(&spool, &users, &root, &ids);
            let retries = record_local_outcome(&files, &outcome, &retry);
            (outcome.done, retries)
        })
        .await;
        match result {
            Ok((done, retries)) => {
                tracing::debug!(batch, done = done.len(), "local delivery");
                let mailboxes = done.iter().map(|d| d.mailboxes).sum();
                metrics::deliveries("delivered", "local", mailboxes);
                metrics::deliveries("deferred", "local", retries.len());
                for message in done.iter().filter(|d| d.remote) {
                    relay.submit(&message.id);
                }
                for (id, wait) in retries {
                    let again = again.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = again.send(id);
                    });
                }
            }
            Err(e) => tracing::error!("local delivery task failed: {e}"),
        }
    }
}

/// Notes each failure in the message's queue state (for `mailgate queue list`) and says when
/// to try it again; a message done locally leaves no state behind unless it goes on to the
/// relay.
fn record_local_outcome(
    files: &QueueFiles,
    outcome: &local::BatchOutcome,
    retry: &crate::config::QueueConfig,
) -> Vec<(String, Duration)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut retries = Vec::new();
    for (id, error) in &outcome.failed {
        // Gone meanwhile (delivered by an earlier retry, or deleted): nothing to retry.
        let Ok(state) = files.update(id, |s| {
            s.attempts += 1;
            s.next_attempt = now + retry.retry_after(s.attempts).as_secs();
            s.last_error = Some(format!("local delivery: {error}"));
        }) else {
            continue;
        };
        let wait = Duration::from_secs(state.next_attempt.saturating_sub(now));
        retries.push((id.clone(), wait));
        let result = journal::RecipientResult {
            rcpt: "(local recipients)".into(),
            result: "deferred".into(),
            text: error.to_string(),
        };
        let event = journal::Event::Attempt {
            attempt: state.attempts,
            destination: "local".into(),
            results: vec![result],
        };
        journal::record("", 0, id, event);
    }
    for done in &outcome.done {
        if done.mailboxes > 0 {
            let event = journal::Event::Local {
                mailboxes: done.mailboxes,
            };
            journal::record("", 0, &done.id, event);
        }
        if !done.remote {
            files.forget_state(&done.id);
            let event = journal::Event::Disposition {
                outcome: "delivered".into(),
                detail: String::new(),
            };
            journal::record("", 0, &done.id, event);
        }
    }
    retries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let (net, bits) = parse_network("192.0.2.0/24").expect("net");
        assert!(in_network("192.0.2.77".parse().expect("ip"), net, bits));
        assert!(!in_network("192.0.3.1".parse().expect("ip"), net, bits));
        let (net, bits) = parse_network("::1").expect("net");
        assert!(in_network("::1".parse().expect("ip"), net, bits));
        assert!(parse_network("10.0.0.0/33").is_err());
    }
}
