//! `mailgate serve`: the composition root. Builds the gateway from its config — plugins and
//! their services, the users, the spool and both queues, the state the sessions share, the
//! protocols — binds the listeners, serves until SIGTERM/SIGINT, then drains and stops.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::access::imap::Imap;
use crate::access::jmap::Jmap;
use crate::access::pop3::Pop3;
use crate::config::{Config, ConfigSource, Protocol as ProtocolKind};
use crate::delivery::local::worker::LocalDelivery;
use crate::delivery::queue::intake::Intake;
use crate::delivery::queue::manager::QueueManager;
use crate::delivery::queue::spool::Spool;
use crate::delivery::queue::state::QueueFiles;
use crate::delivery::relay::dkim::Signers;
use crate::dns::SystemDns;
use crate::intake::networks::RelayNetworks;
use crate::intake::Gateway;
use crate::mail::clock::{Clock, SystemClock};
use crate::milter::server::MilterServer;
use crate::net::drain::Drain;
use crate::net::listener::{ConnectionLimits, Listener};
use crate::net::Protocol;
use crate::ops::admin_socket::Admin;
use crate::ops::health::HealthCheck;
use crate::ops::reload::Reloader;
use crate::plugin::{ActivePlugins, PluginSet, Runtime, Services};
use crate::sender_auth::Verifier;
use crate::session_context::SessionContext;
use crate::smtp::Smtp;
use crate::store::kv::KvStore;
use crate::store::snapshots::SnapshotCache;
use crate::store::sql_users::SqlUsers;
use crate::store::users::UserDirectory;
use crate::telemetry::{endpoint, journal, metrics};
use hickory_resolver::TokioResolver;

/// Starts everything and serves until interrupted.
pub async fn serve(source: ConfigSource) -> anyhow::Result<()> {
    let config = Arc::new(source.load()?);
    crate::message::mime::set_max_depth(config.limits.max_mime_depth);
    crate::message::mime::set_max_parts(config.limits.max_mime_parts);
    // Before anything in the data dir is touched: one server per data dir.
    let data_dir = config.data_dir();
    let _owner = crate::sys::datadir::DataDir::lock(&data_dir)?;
    // Bound first, so that /healthz answers (not ready) while the chain loads.
    let metrics_socket = match config.metrics.address {
        Some(address) => Some(endpoint::bind(address).await?),
        None => None,
    };
    start_journal(&config)?;
    let cache = config
        .resolve_opt(config.runtime.cache_dir.as_ref())
        .or_else(|| std::env::var_os("MAILGATE_CACHE_DIR").map(std::path::PathBuf::from))
        .unwrap_or_else(|| data_dir.join("cache"));
    let runtime = Arc::new(
        Runtime::new(&config.runtime, Some(cache))?
            .with_externals(Arc::new(crate::milter::Milters)),
    );
    let plugins = Arc::new(ActivePlugins::new(
        PluginSet::load(runtime.clone(), &config).await?,
    ));
    let resolver = crate::dns::resolver(&config.dns).map_err(|e| anyhow::anyhow!("dns: {e}"))?;
    let services = plugin_services(&config, &data_dir, resolver.clone())?;
    let kv = services.kv.clone();
    // Made first: the queues watch its deadline.
    let drain = Drain::new();
    let built = build(&config, plugins.clone(), services, resolver, &drain).await?;
    let relay = built.relay.clone();
    recover_spool(&built.spool, &built.again)?;
    let check = Arc::new(HealthCheck::new(
        built.users.clone(),
        kv,
        (data_dir.join("mail"), data_dir.join("queue")),
        config.metrics.min_free_mb,
        config.listeners().into_iter().map(|l| l.name).collect(),
    ));
    let metrics = metrics_socket.map(|socket| {
        let metrics = start_metrics(socket, (&relay, &plugins), check.clone());
        let mut inventory = inventory(&config, &plugins);
        inventory.dependencies = check.names();
        metrics.prime(&inventory);
        metrics
    });
    check.spawn_prober();
    metrics::plugin_generation(plugins.current().generation);
    let reloader = Reloader::new(source, &config, runtime, plugins);
    reloader.spawn_triggers();
    let admin = Arc::new(Admin {
        queue: relay.clone(),
        reloader,
        intake: built.intake.clone(),
    });
    crate::ops::admin_socket::serve(&crate::ops::admin_socket::socket_path(&data_dir), admin)
        .await
        .context("cannot open the admin socket")?;
    let LocalParts { worker, deliveries } = built.local;
    let local = tokio::spawn(worker.run(deliveries));

    let listeners = bind_listeners(&config, &built.protocols, &drain).await?;
    check.set_listening(true);
    if let Some(metrics) = metrics {
        metrics.set_ready(true);
    }
    let signal = shutdown_signal();
    tokio::pin!(signal);
    tokio::select! {
        () = &mut signal => {}
        () = announce_ready(&built.users) => signal.await,
    }
    crate::ops::service_manager::notify("STOPPING=1");
    check.set_listening(false);
    if let Some(metrics) = metrics {
        metrics.set_ready(false);
    }
    stop(listeners, &drain, (&relay, local), &config).await;
    journal::close();
    Ok(())
}

/// Tells the service manager `READY=1` once the gateway can answer for real: every listener is
/// bound and the chain loaded (the caller's part), and the users have been read — until then
/// every recipient and login gets "try again later", which is not ready. Says why it waits in
/// `STATUS=` meanwhile.
async fn announce_ready(users: &UserDirectory) {
    if users.standing() == crate::store::users::Standing::Unread {
        crate::ops::service_manager::notify("STATUS=waiting for the users source to be read");
        users.read_once().await;
    }
    crate::ops::service_manager::notify("READY=1");
}

/// The message journal that `mailgate trace` reads, when the config keeps one.
fn start_journal(config: &Config) -> anyhow::Result<()> {
    if !config.journal.enabled {
        return Ok(());
    }
    let caps = journal::Caps {
        max_bytes: config.journal.max_mb.saturating_mul(1 << 20),
        max_age: Duration::from_secs(config.journal.max_age_days.saturating_mul(86_400)),
    };
    let dir = config.journal_dir();
    journal::enable(&dir, caps).with_context(|| format!("journal: cannot write {}", dir.display()))
}

/// What plugins may use: DNS, the key-value store (purged of expired entries now and then),
/// the clock.
fn plugin_services(
    config: &Config,
    data_dir: &Path,
    resolver: TokioResolver,
) -> anyhow::Result<Services> {
    let dns = SystemDns::new(resolver.clone());
    let password_file = config.resolve_opt(config.kv.password_file.as_ref());
    let kv = crate::store::kv::open(&config.kv, data_dir, password_file.as_deref())
        .map_err(|e| anyhow::anyhow!("kv store: {e}"))?;
    tracing::info!(target: "mailgate::lifecycle", backend = %crate::config::without_password(&config.kv.backend), "kv store");
    tokio::spawn(purge_expired_kv(kv.clone()));
    Ok(Services {
        kv,
        dns: Arc::new(dns),
        clock: Arc::new(SystemClock),
    })
}

/// The local delivery worker before it starts, and its input.
struct LocalParts {
    worker: LocalDelivery,
    deliveries: mpsc::UnboundedReceiver<String>,
}

/// The protocols over what their sessions share, the relay queue, the spool, and the local
/// delivery worker to start.
struct Built {
    protocols: Protocols,
    /// For `/healthz`: how the users source stands.
    users: Arc<UserDirectory>,
    relay: QueueManager,
    spool: Spool,
    again: mpsc::UnboundedSender<String>,
    local: LocalParts,
    /// The way into the queue, for messages released from quarantine.
    intake: Intake,
}

/// The users, the spool, both queues and TLS, and over them each protocol's view.
async fn build(
    config: &Arc<Config>,
    plugins: Arc<ActivePlugins>,
    services: Services,
    resolver: TokioResolver,
    drain: &Drain,
) -> anyhow::Result<Built> {
    let data_dir = config.data_dir();
    let users = match &config.local.source {
        Some(url) => {
            let password = config.resolve_opt(config.local.source_password_file.as_ref());
            let source = SqlUsers::new(url, password.as_deref(), &config.local.queries)
                .map_err(anyhow::Error::msg)?;
            crate::store::sql_users::directory(source, &config.users_file(), &config.local).await
        }
        None => Arc::new(UserDirectory::open(&config.users_file(), &config.local)?),
    };
    let spool = Spool::open(&data_dir.join("queue"), &config.queue)?;
    let tls = Some(crate::net::tls::acceptor(
        config
            .resolve_opt(config.server.tls_cert.as_ref())
            .as_deref(),
        config
            .resolve_opt(config.server.tls_key.as_ref())
            .as_deref(),
        &data_dir,
        &config.server.hostname,
    )?);
    let (again, deliveries) = mpsc::unbounded_channel();
    let files = QueueFiles::new(spool.clone(), &data_dir.join("queue"))?;
    let signers = Arc::new(Signers::load(config).map_err(anyhow::Error::msg)?);
    let verifier = Verifier::new(config, resolver)
        .map_err(anyhow::Error::msg)?
        .map(Arc::new);
    let relay = QueueManager::start(
        files,
        config.clone(),
        plugins.clone(),
        services.clone(),
        (again.clone(), signers),
        drain.deadline(),
    );
    let worker = LocalDelivery {
        spool: spool.clone(),
        users: users.clone(),
        mail_root: data_dir.join("mail"),
        quota: config.limits.max_mailbox_bytes_per_user,
        relay: relay.clone(),
        again: again.clone(),
        retry: config.queue.clone(),
        deadline: drain.deadline(),
        hostname: config.server.hostname.clone(),
    };
    let intake = Intake {
        spool: spool.clone(),
        users: users.clone(),
        deliveries: again.clone(),
        relay: relay.clone(),
        quarantine_dir: data_dir.join("quarantine"),
    };
    let shared = Arc::new(SessionContext::new(
        config.clone(),
        (plugins, services),
        users.clone(),
        tls.clone(),
    ));
    let gateway = Arc::new(Gateway {
        shared: shared.clone(),
        spool: intake.clone(),
        relay_networks: RelayNetworks::parse(&config.server.relay_networks)?,
        verifier,
    });
    let protocols = Protocols {
        tls,
        jmap: Arc::new(Jmap::new(shared.clone(), gateway.clone())),
        smtp: Arc::new(Smtp { intake: gateway }),
        pop3: Arc::new(Pop3 {
            shared: shared.clone(),
        }),
        imap: Arc::new(Imap {
            shared: shared.clone(),
            snapshots: SnapshotCache::default(),
        }),
        milter: Arc::new(MilterServer { shared }),
    };
    Ok(Built {
        protocols,
        users,
        relay,
        spool,
        again,
        local: LocalParts { worker, deliveries },
        intake,
    })
}

/// One object per protocol, shared by its listeners, and the server's TLS for the listeners
/// with implicit TLS.
struct Protocols {
    tls: Option<TlsAcceptor>,
    smtp: Arc<Smtp>,
    pop3: Arc<Pop3>,
    imap: Arc<Imap>,
    jmap: Arc<Jmap>,
    milter: Arc<MilterServer>,
}

impl Protocols {
    fn of(&self, kind: ProtocolKind) -> Arc<dyn Protocol> {
        match kind {
            ProtocolKind::Smtp => self.smtp.clone(),
            ProtocolKind::Pop3 => self.pop3.clone(),
            ProtocolKind::Imap => self.imap.clone(),
            ProtocolKind::Milter => self.milter.clone(),
            ProtocolKind::Jmap => self.jmap.clone(),
        }
    }
}

/// Whatever was acknowledged before a stop is delivered now.
fn recover_spool(spool: &Spool, deliveries: &mpsc::UnboundedSender<String>) -> anyhow::Result<()> {
    let recovered = spool.list()?;
    if !recovered.is_empty() {
        tracing::info!(count = recovered.len(), "recovering queued messages");
    }
    for id in recovered {
        let _ = deliveries.send(id);
    }
    Ok(())
}

/// Serves the metrics listener; the queue and the instance pools are read at each scrape.
fn start_metrics(
    socket: TcpListener,
    (relay, plugins): (&QueueManager, &Arc<ActivePlugins>),
    check: Arc<HealthCheck>,
) -> &'static metrics::Metrics {
    let metrics = metrics::enable();
    let (queue, plugins) = (relay.clone(), plugins.clone());
    let health: endpoint::Health = {
        let check = check.clone();
        Arc::new(move || {
            let report = check.report();
            (report.serving, report.body)
        })
    };
    let refresh: endpoint::Refresh = Arc::new(move |m: &metrics::Metrics| {
        // The dependency gauges as `/healthz` would say now.
        let _ = check.report();
        let (messages, oldest) = queue.stats();
        m.set_queue(messages, oldest);
        for (state, messages) in queue.lengths() {
            m.set_queue_length(state, messages);
        }
        m.clear_instances_idle();
        for plugin in &plugins.current().plugins {
            m.set_instances_idle(&plugin.name, plugin.idle_instances());
        }
    });
    match socket.local_addr() {
        Ok(address) => {
            tracing::info!(target: "mailgate::lifecycle", %address, "metrics listening")
        }
        Err(e) => tracing::warn!("metrics listener: no local address: {e}"),
    }
    tokio::spawn(endpoint::serve(socket, metrics, refresh, health));
    metrics
}

/// The listeners, plugins and destinations of this gateway, for its series at zero.
fn inventory(config: &Config, plugins: &ActivePlugins) -> metrics::Inventory {
    let listeners = config
        .listeners()
        .into_iter()
        .map(|l| (l.name, l.protocol.name()))
        .collect();
    let plugins = plugins
        .current()
        .plugins
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.info.stages.iter().map(|s| s.name()).collect(),
            )
        })
        .collect();
    let relays = config.routes.iter().filter_map(|route| match route.kind {
        crate::config::RouteKind::Relay => route.host.as_ref().map(|h| format!("relay:{h}")),
        _ => None,
    });
    metrics::Inventory {
        listeners,
        plugins,
        destinations: std::iter::once("local".to_string()).chain(relays).collect(),
        dependencies: Vec::new(),
        milters: crate::milter::client::breaker::states()
            .into_iter()
            .map(|(member, _, _)| member)
            .collect(),
    }
}

/// Binds every configured listener and starts accepting.
async fn bind_listeners(
    config: &Config,
    protocols: &Protocols,
    drain: &Drain,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let limits = ConnectionLimits::new(&config.limits);
    let sessions = Arc::new(AtomicU64::new(0));
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
            tls = listener.tls.name(),
            "listening"
        );
        let listener = Listener {
            socket,
            protocol: protocols.of(listener.protocol),
            tls: protocols.tls.clone(),
            slots: limits.slots(listener.protocol),
            sessions: sessions.clone(),
            drain: drain.clone(),
            tls_refusals: Listener::refusal_turns(),
            config: listener,
        };
        tasks.push(tokio::spawn(listener.run()));
    }
    Ok(tasks)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}

/// Stops accepting and starting deliveries, lets sessions and delivery attempts under way
/// finish within `server.drain-secs` (the same bound for both, from the signal), and returns.
async fn stop(
    listeners: Vec<JoinHandle<()>>,
    drain: &Drain,
    (relay, local): (&QueueManager, JoinHandle<()>),
    config: &Config,
) {
    let bound = Duration::from_secs(config.server.drain_secs);
    let started = std::time::Instant::now();
    // First of all: from here the relay and local delivery start nothing new.
    drain.deadline().start(bound);
    // No new connections; the listening sockets close with their tasks.
    for task in listeners {
        task.abort();
    }
    tracing::info!(
        target: "mailgate::lifecycle",
        sessions = drain.open(),
        bound_secs = bound.as_secs(),
        "shutting down: draining sessions and deliveries"
    );
    let local_done = async {
        let left = drain.deadline().left().unwrap_or_default();
        tokio::time::timeout(left, local).await.is_ok()
    };
    let (cut, attempts_cut, local_done) = tokio::join!(drain.run(bound), relay.stop(), local_done);
    // The bound is over: searches and queries still running on the blocking pool give up,
    // else the process could not exit until they end.
    crate::sys::blocking::stop_all();
    tracing::info!(
        target: "mailgate::lifecycle",
        sessions_cut = cut,
        deliveries_cut = attempts_cut,
        local_delivery_cut = !local_done,
        ms = started.elapsed().as_millis() as u64,
        "stopped"
    );
}

/// How often expired plugin kv entries are dropped from disk.
const KV_PURGE_EVERY: Duration = Duration::from_secs(600);

/// Expired kv entries read as absent at once, but take disk space until purged here.
async fn purge_expired_kv(kv: Arc<dyn KvStore>) {
    let mut every = tokio::time::interval(KV_PURGE_EVERY);
    loop {
        every.tick().await;
        let kv = kv.clone();
        let now = SystemClock.now_ms();
        match tokio::task::spawn_blocking(move || kv.purge_expired(now)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "expired kv entries purged"),
            Ok(Err(e)) => tracing::warn!("kv purge: {e}"),
            Err(e) => tracing::warn!("kv purge: {e}"),
        }
    }
}
