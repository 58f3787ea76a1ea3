//! The gateway's Prometheus metrics: one registry for the process, and one function per event
//! the rest of the gateway reports (a connection, a reply, a plugin call...). Every function
//! does nothing until [`enable`] has run, so the harness, the CLI and a server with
//! `[metrics] address = ""` pay nothing for them.
//!
//! Label values are bounded sets (listener and plugin names from the config, stage names, reply
//! classes, a capped set of destinations), so the series stay few however much mail passes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels whose values are fixed words: no allocation per event.
type Static1 = [(&'static str, &'static str); 1];
type Static2 = [(&'static str, &'static str); 2];
type Labels1 = [(&'static str, String); 1];
type Labels2 = [(&'static str, String); 2];
type Labels3 = [(&'static str, String); 3];
type HistogramFamily = Family<Labels2, Histogram, fn() -> Histogram>;
type StaticHistograms = Family<Static1, Histogram, fn() -> Histogram>;

/// Distinct relay destinations counted by name; the rest are counted as `other`.
const MAX_DESTINATIONS: usize = 200;

/// Every series the gateway exports.
pub struct Metrics {
    registry: Registry,
    connections: Family<Labels2, Counter>,
    connections_refused: Family<Labels2, Counter>,
    sessions_active: Family<Labels1, Gauge>,
    commands: Family<Static2, Counter>,
    replies: Family<Static2, Counter>,
    messages: Family<Labels3, Counter>,
    plugin_call_seconds: HistogramFamily,
    plugin_faults: Family<Labels2, Counter>,
    plugin_instances_created: Family<Labels1, Counter>,
    plugin_instances_idle: Family<Labels1, Gauge>,
    queue_messages: Gauge,
    queue_oldest_seconds: Gauge,
    deliveries: Family<Labels2, Counter>,
    delivery_retries: Counter,
    bounces: Counter,
    tls_handshakes: Family<Labels2, Counter>,
    auth: Family<Static2, Counter>,
    sender_auth: Family<Static2, Counter>,
    reloads: Family<Static1, Counter>,
    plugin_generation: Gauge,
    delivery_delay: StaticHistograms,
    queue_time: StaticHistograms,
    message_size: Histogram,
    queue_length: Family<Static1, Gauge>,
    deferrals: Family<Static1, Counter>,
    mta_sts_deliveries: Family<Static2, Counter>,
    mta_sts_fetches: Family<Static1, Counter>,
    dependency_up: Family<Labels1, Gauge>,
    milter_member_state: Family<Labels1, Gauge>,
    milter_skipped: Family<Labels1, Counter>,
    cpu_seconds: Counter<f64, AtomicU64>,
    resident_memory: Gauge,
    virtual_memory: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge<f64, AtomicU64>,
    destinations: Mutex<HashSet<String>>,
    ready: AtomicBool,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Turns metrics on for this process (idempotent) and returns them.
pub fn enable() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

fn plugin_call_histogram() -> Histogram {
    // 1 us to ~67 s, a factor of 4 apart: a plugin call is a few microseconds when all is well
    // and its deadline (at most 60 s) when not, which must land below +Inf.
    Histogram::new(exponential_buckets(1e-6, 4.0, 14))
}

/// From a tenth of a second to a day: a local delivery takes milliseconds, a relayed one
/// seconds, a deferred one hours (the buckets postfix_exporter users read delays from).
fn delay_histogram() -> Histogram {
    Histogram::new([
        0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
    ])
}

/// 1 KiB to 64 MiB, a factor of 4 apart.
fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1024.0, 4.0, 9))
}

/// The words some label takes, so each series can be made at zero before its first event.
pub mod words {
    pub const SMTP_VERBS: &[&str] = &[
        "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN",
        "HELP", "STARTTLS", "AUTH", "unknown",
    ];
    pub const REPLY_CLASSES: &[(&str, &[&str])] = &[
        ("smtp", &["2xx", "3xx", "4xx", "5xx"]),
        ("imap", &["ok", "no", "bad"]),
        ("pop3", &["ok", "err"]),
    ];
    pub const LOGIN_PROTOCOLS: &[&str] = &["smtp", "imap", "pop3", "jmap"];
    pub const OUTCOMES: &[&str] = &[
        "accepted",
        "rejected",
        "tempfailed",
        "discarded",
        "quarantined",
    ];
    pub const FAULTS: &[&str] = &["trap", "deadline", "memory", "invalid", "peer"];
    pub const REFUSALS: &[&str] = &[
        "max-connections",
        "protocol-limit",
        "per-ip-limit",
        "prelogin-per-ip-limit",
    ];
    pub const DELIVERY_RESULTS: &[&str] = &["delivered", "deferred", "bounced", "dropped"];
    pub const SENDER_AUTH: &[(&str, &[&str])] = &[
        (
            "spf",
            &[
                "none",
                "pass",
                "fail",
                "softfail",
                "neutral",
                "temperror",
                "permerror",
            ],
        ),
        (
            "dkim",
            &["none", "pass", "fail", "neutral", "temperror", "permerror"],
        ),
        ("dmarc", &["none", "pass", "fail", "temperror", "permerror"]),
        ("arc", &["none", "pass", "fail"]),
    ];
    /// Relay queue states, Postfix's names: never tried, being tried, waiting to retry, held.
    pub const QUEUE_STATES: &[&str] = &["incoming", "active", "deferred", "hold"];
    /// Why a delivery was put off: the remote's 4xx, a connection that failed before or
    /// during the transaction, a deliver-stage plugin, local delivery (users or disk).
    pub const DEFERRALS: &[&str] = &["remote-reply", "connection", "plugin", "local"];
    pub const ROUTES: &[&str] = &["local", "relay"];
    pub const MTA_STS_MODES: &[&str] = &["enforce", "testing"];
    pub const MTA_STS_FETCHES: &[&str] = &["fetched", "failed", "invalid"];
    pub const QUEUE_EXITS: &[&str] = &["delivered", "bounced", "dropped", "expired"];
}

/// What the running gateway is made of, to create its series at zero from the start.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Each listener's name and protocol.
    pub listeners: Vec<(String, &'static str)>,
    /// Each plugin's name and the stages it handles.
    pub plugins: Vec<(String, Vec<&'static str>)>,
    /// Delivery destinations known from the config (`local`, each relay route's label).
    pub destinations: Vec<String>,
    /// The dependencies `/healthz` reports.
    pub dependencies: Vec<String>,
    /// The milter members of the chain.
    pub milters: Vec<String>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let mut metrics = Metrics {
            registry: Registry::default(),
            connections: Family::default(),
            connections_refused: Family::default(),
            sessions_active: Family::default(),
            commands: Family::default(),
            replies: Family::default(),
            messages: Family::default(),
            plugin_call_seconds: Family::new_with_constructor(plugin_call_histogram),
            plugin_faults: Family::default(),
            plugin_instances_created: Family::default(),
            plugin_instances_idle: Family::default(),
            queue_messages: Gauge::default(),
            queue_oldest_seconds: Gauge::default(),
            deliveries: Family::default(),
            delivery_retries: Counter::default(),
            bounces: Counter::default(),
            tls_handshakes: Family::default(),
            auth: Family::default(),
            sender_auth: Family::default(),
            reloads: Family::default(),
            plugin_generation: Gauge::default(),
            delivery_delay: Family::new_with_constructor(delay_histogram),
            queue_time: Family::new_with_constructor(delay_histogram),
            message_size: size_histogram(),
            queue_length: Family::default(),
            deferrals: Family::default(),
            mta_sts_deliveries: Family::default(),
            mta_sts_fetches: Family::default(),
            dependency_up: Family::default(),
            milter_member_state: Family::default(),
            milter_skipped: Family::default(),
            cpu_seconds: Counter::default(),
            resident_memory: Gauge::default(),
            virtual_memory: Gauge::default(),
            open_fds: Gauge::default(),
            max_fds: Gauge::default(),
            start_time: Gauge::default(),
            destinations: Mutex::new(HashSet::new()),
            ready: AtomicBool::new(false),
        };
        let m = &metrics;
        let r = &mut registry;
        r.register(
            "mailgate_connections",
            "Connections accepted, by listener and protocol",
            m.connections.clone(),
        );
        r.register(
            "mailgate_connections_refused",
            "Connections turned away at a limit, by listener and reason",
            m.connections_refused.clone(),
        );
        r.register(
            "mailgate_sessions_active",
            "Sessions open now, by listener",
            m.sessions_active.clone(),
        );
        r.register(
            "mailgate_commands",
            "Client commands, by protocol and command",
            m.commands.clone(),
        );
        r.register(
            "mailgate_replies",
            "Replies sent, by protocol and class (2xx/4xx/5xx, ok/no/bad, ok/err)",
            m.replies.clone(),
        );
        r.register(
            "mailgate_messages",
            "Plugin-chain decisions on mail, by stage, outcome and deciding plugin",
            m.messages.clone(),
        );
        r.register(
            "mailgate_plugin_call_seconds",
            "Time of one plugin call, by plugin and stage",
            m.plugin_call_seconds.clone(),
        );
        r.register(
            "mailgate_plugin_faults",
            "Plugin calls that failed, by plugin and kind (trap, deadline, memory, invalid, peer)",
            m.plugin_faults.clone(),
        );
        r.register(
            "mailgate_plugin_instances_created",
            "Plugin instances created (the rest of the calls reuse pooled ones), by plugin",
            m.plugin_instances_created.clone(),
        );
        r.register(
            "mailgate_plugin_instances_idle",
            "Plugin instances pooled for reuse now, by plugin",
            m.plugin_instances_idle.clone(),
        );
        r.register(
            "mailgate_plugin_generation",
            "Generation of the plugin set in service (1 at start, +1 per reload)",
            m.plugin_generation.clone(),
        );
        r.register(
            "mailgate_reloads",
            "Plugin reloads, by outcome (applied, refused)",
            m.reloads.clone(),
        );
        r.register(
            "mailgate_queue_messages",
            "Messages in the relay queue",
            m.queue_messages.clone(),
        );
        r.register(
            "mailgate_queue_oldest_message_age_seconds",
            "Age of the oldest message in the relay queue (0 when empty)",
            m.queue_oldest_seconds.clone(),
        );
        r.register(
            "mailgate_deliveries",
            "Recipients handled by delivery attempts, by result and destination",
            m.deliveries.clone(),
        );
        r.register(
            "mailgate_delivery_retries",
            "Messages scheduled for another delivery attempt",
            m.delivery_retries.clone(),
        );
        r.register(
            "mailgate_bounces",
            "Delivery status notifications sent to senders",
            m.bounces.clone(),
        );
        r.register(
            "mailgate_tls_handshakes",
            "TLS handshakes (implicit and STARTTLS), by listener and result",
            m.tls_handshakes.clone(),
        );
        r.register(
            "mailgate_auth",
            "Login attempts, by protocol and result",
            m.auth.clone(),
        );
        r.register(
            "mailgate_sender_auth",
            "Sender authentication results of received messages (SPF per identity, DKIM per \
             signature, DMARC, ARC), by method and result",
            m.sender_auth.clone(),
        );
        r.register(
            "mailgate_delivery_delay_seconds",
            "Time from acceptance to delivery of each delivered recipient, by route (local, relay)",
            m.delivery_delay.clone(),
        );
        r.register(
            "mailgate_queue_time_seconds",
            "Time each message spent in the relay queue, by how it left (delivered, bounced, dropped, expired)",
            m.queue_time.clone(),
        );
        r.register(
            "mailgate_message_size_bytes",
            "Size of each accepted message",
            m.message_size.clone(),
        );
        r.register(
            "mailgate_queue_length",
            "Messages in the relay queue, by state (incoming, active, deferred, hold)",
            m.queue_length.clone(),
        );
        r.register(
            "mailgate_deferrals",
            "Recipients put off for a later attempt, by reason (remote-reply, connection, plugin, local)",
            m.deferrals.clone(),
        );
        r.register(
            "mailgate_mta_sts_deliveries",
            "Delivery attempts under an MTA-STS policy, by mode (enforce, testing) and result \
             (success; failure: no allowed MX host or no valid TLS, deferred under enforce)",
            m.mta_sts_deliveries.clone(),
        );
        r.register(
            "mailgate_mta_sts_policy_fetches",
            "MTA-STS policy fetches, by result (fetched, failed, invalid)",
            m.mta_sts_fetches.clone(),
        );
        r.register(
            "mailgate_dependency_up",
            "Whether a dependency answers (1) or not (0), by dependency (users, kv, ...)",
            m.dependency_up.clone(),
        );
        r.register(
            "mailgate_milter_member_state",
            "Circuit breaker of each milter member: 0 closed (up), 1 open (down, skipped), 2 half-open (one try)",
            m.milter_member_state.clone(),
        );
        r.register(
            "mailgate_milter_skipped_calls",
            "Stage calls not made to a milter member while its circuit breaker was open, by member",
            m.milter_skipped.clone(),
        );
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        r.register(
            "mailgate_build",
            "The running build, its version and profile as labels",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("profile", profile),
            ]),
        );
        r.register(
            "process_cpu_seconds",
            "User and system CPU time of the process",
            m.cpu_seconds.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the process",
            m.resident_memory.clone(),
        );
        r.register(
            "process_virtual_memory_bytes",
            "Virtual memory of the process",
            m.virtual_memory.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors of the process",
            m.open_fds.clone(),
        );
        r.register(
            "process_max_fds",
            "The process' limit on open file descriptors",
            m.max_fds.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "When the process started, in seconds since the epoch",
            m.start_time.clone(),
        );
        m.prime_fixed();
        metrics.registry = registry;
        metrics
    }

    /// The series whose labels are fixed words, at zero.
    fn prime_fixed(&self) {
        for verb in words::SMTP_VERBS {
            let _ = self
                .commands
                .get_or_create(&[("protocol", "smtp"), ("command", verb)]);
        }
        for (protocol, classes) in words::REPLY_CLASSES {
            for class in *classes {
                let _ = self
                    .replies
                    .get_or_create(&[("protocol", protocol), ("class", class)]);
            }
        }
        for protocol in words::LOGIN_PROTOCOLS {
            for result in ["success", "failure"] {
                let _ = self
                    .auth
                    .get_or_create(&[("protocol", protocol), ("result", result)]);
            }
        }
        for (method, results) in words::SENDER_AUTH {
            for result in *results {
                let _ = self
                    .sender_auth
                    .get_or_create(&[("method", method), ("result", result)]);
            }
        }
        for outcome in ["applied", "refused"] {
            let _ = self.reloads.get_or_create(&[("outcome", outcome)]);
        }
        for state in words::QUEUE_STATES {
            let _ = self.queue_length.get_or_create(&[("state", state)]);
        }
        for reason in words::DEFERRALS {
            let _ = self.deferrals.get_or_create(&[("reason", reason)]);
        }
        for mode in words::MTA_STS_MODES {
            for result in ["success", "failure"] {
                let _ = self
                    .mta_sts_deliveries
                    .get_or_create(&[("mode", mode), ("result", result)]);
            }
        }
        for result in words::MTA_STS_FETCHES {
            let _ = self.mta_sts_fetches.get_or_create(&[("result", result)]);
        }
        for route in words::ROUTES {
            let _ = self.delivery_delay.get_or_create(&[("route", route)]);
        }
        for exit in words::QUEUE_EXITS {
            let _ = self.queue_time.get_or_create(&[("outcome", exit)]);
        }
    }

    /// Makes at zero every series the gateway in `inventory` can report, so that `rate()` and
    /// `increase()` see the first event of each.
    pub fn prime(&self, inventory: &Inventory) {
        for (name, protocol) in &inventory.listeners {
            let _ = self
                .connections
                .get_or_create(&[("listener", label(name)), ("protocol", label(protocol))]);
            let _ = self
                .sessions_active
                .get_or_create(&[("listener", label(name))]);
            for result in ["ok", "failed"] {
                let _ = self
                    .tls_handshakes
                    .get_or_create(&[("listener", label(name)), ("result", label(result))]);
            }
            for reason in words::REFUSALS {
                let _ = self
                    .connections_refused
                    .get_or_create(&[("listener", label(name)), ("reason", label(reason))]);
            }
        }
        for (plugin, stages) in &inventory.plugins {
            let _ = self
                .plugin_instances_created
                .get_or_create(&[("plugin", label(plugin))]);
            for kind in words::FAULTS {
                let _ = self
                    .plugin_faults
                    .get_or_create(&[("plugin", label(plugin)), ("kind", label(kind))]);
            }
            for stage in stages {
                let _ = self
                    .plugin_call_seconds
                    .get_or_create(&[("plugin", label(plugin)), ("stage", label(stage))]);
                for outcome in words::OUTCOMES.iter().filter(|o| **o != "accepted") {
                    let _ = self.messages.get_or_create(&[
                        ("stage", label(stage)),
                        ("outcome", label(outcome)),
                        ("plugin", label(plugin)),
                    ]);
                }
            }
        }
        // Mail the chain lets through at DATA is accepted by no plugin in particular.
        let _ = self.messages.get_or_create(&[
            ("stage", label("data")),
            ("outcome", label("accepted")),
            ("plugin", String::new()),
        ]);
        for destination in &inventory.destinations {
            let destination = self.destination_label(destination);
            for result in words::DELIVERY_RESULTS {
                let _ = self.deliveries.get_or_create(&[
                    ("result", label(result)),
                    ("destination", destination.clone()),
                ]);
            }
        }
        for dependency in &inventory.dependencies {
            let _ = self
                .dependency_up
                .get_or_create(&[("dependency", label(dependency))]);
        }
        for member in &inventory.milters {
            let _ = self
                .milter_member_state
                .get_or_create(&[("member", label(member))]);
            let _ = self
                .milter_skipped
                .get_or_create(&[("member", label(member))]);
        }
    }

    /// The OpenMetrics text of every series, after refreshing the process gauges.
    pub fn render(&self) -> String {
        self.refresh_process();
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    fn refresh_process(&self) {
        let now = super::process::read();
        if let Some(seconds) = now.cpu_seconds {
            // A counter only grows: what was used since the last scrape.
            let more = seconds - self.cpu_seconds.get();
            if more > 0.0 {
                self.cpu_seconds.inc_by(more);
            }
        }
        let gauges = [
            (&self.resident_memory, now.resident_bytes),
            (&self.virtual_memory, now.virtual_bytes),
            (&self.open_fds, now.open_fds),
            (&self.max_fds, now.max_fds),
        ];
        for (gauge, value) in gauges {
            if let Some(value) = value {
                gauge.set(value);
            }
        }
        if let Some(started) = now.start_time_seconds {
            self.start_time.set(started);
        }
    }

    /// Ready once the listeners are bound and the chain is loaded; not ready while stopping.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The relay queue's size and its oldest message's age, read at each scrape.
    pub fn set_queue(&self, messages: usize, oldest_age: Duration) {
        self.queue_messages
            .set(i64::try_from(messages).unwrap_or(i64::MAX));
        self.queue_oldest_seconds
            .set(i64::try_from(oldest_age.as_secs()).unwrap_or(i64::MAX));
    }

    /// The relay queue's messages in one state (`words::QUEUE_STATES`), read at each scrape.
    pub fn set_queue_length(&self, state: &'static str, messages: usize) {
        self.queue_length
            .get_or_create(&[("state", state)])
            .set(i64::try_from(messages).unwrap_or(i64::MAX));
    }

    /// Whether a dependency answers, read at each scrape and health check.
    pub fn set_dependency_up(&self, dependency: &str, up: bool) {
        self.dependency_up
            .get_or_create(&[("dependency", label(dependency))])
            .set(i64::from(up));
    }

    /// Pooled instances of one plugin, read at each scrape.
    pub fn set_instances_idle(&self, plugin: &str, idle: usize) {
        self.plugin_instances_idle
            .get_or_create(&[("plugin", plugin.to_string())])
            .set(i64::try_from(idle).unwrap_or(i64::MAX));
    }

    /// Forgets the pooled-instance series (before setting those of the plugins in service).
    pub fn clear_instances_idle(&self) {
        self.plugin_instances_idle.clear();
    }

    fn destination_label(&self, destination: &str) -> String {
        let mut known = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
        if known.contains(destination) {
            return destination.to_string();
        }
        if known.len() < MAX_DESTINATIONS {
            known.insert(destination.to_string());
            return destination.to_string();
        }
        "other".to_string()
    }
}

fn label(value: &str) -> String {
    value.to_string()
}

/// A session counted in `mailgate_sessions_active` until dropped.
pub struct SessionGuard {
    gauge: Option<Gauge>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Some(gauge) = &self.gauge {
            gauge.dec();
        }
    }
}

/// A connection accepted on `listener`; the session counts as active until the guard drops.
pub fn connection_opened(listener: &str, protocol: &str) -> SessionGuard {
    let Some(m) = get() else {
        return SessionGuard { gauge: None };
    };
    m.connections
        .get_or_create(&[("listener", label(listener)), ("protocol", label(protocol))])
        .inc();
    let gauge = m
        .sessions_active
        .get_or_create_owned(&[("listener", label(listener))]);
    gauge.inc();
    SessionGuard { gauge: Some(gauge) }
}

/// A connection turned away because a limit was reached.
pub fn connection_refused(listener: &str, reason: &str) {
    if let Some(m) = get() {
        m.connections_refused
            .get_or_create(&[("listener", label(listener)), ("reason", label(reason))])
            .inc();
    }
}

/// A client command (`command` from a fixed set: the verb, or `other`).
pub fn command(protocol: &'static str, command: &'static str) {
    if let Some(m) = get() {
        m.commands
            .get_or_create(&[("protocol", protocol), ("command", command)])
            .inc();
    }
}

/// A reply of class `class` (`2xx`, `ok`, `no`...).
pub fn reply(protocol: &'static str, class: &'static str) {
    if let Some(m) = get() {
        m.replies
            .get_or_create(&[("protocol", protocol), ("class", class)])
            .inc();
    }
}

/// The chain decided on mail at `stage`: `outcome` is accepted, rejected, tempfailed,
/// discarded or quarantined; `plugin` the deciding plugin, empty when none decided.
pub fn message(stage: &str, outcome: &str, plugin: &str) {
    if let Some(m) = get() {
        m.messages
            .get_or_create(&[
                ("stage", label(stage)),
                ("outcome", label(outcome)),
                ("plugin", label(plugin)),
            ])
            .inc();
    }
}

/// One plugin call and how long it took.
pub fn plugin_call(plugin: &str, stage: &str, elapsed: Duration) {
    if let Some(m) = get() {
        m.plugin_call_seconds
            .get_or_create(&[("plugin", label(plugin)), ("stage", label(stage))])
            .observe(elapsed.as_secs_f64());
    }
}

/// A plugin call that failed: `kind` is trap, deadline, memory or invalid.
pub fn plugin_fault(plugin: &str, kind: &str) {
    if let Some(m) = get() {
        m.plugin_faults
            .get_or_create(&[("plugin", label(plugin)), ("kind", label(kind))])
            .inc();
    }
}

/// A new plugin instance (none was pooled).
pub fn plugin_instance_created(plugin: &str) {
    if let Some(m) = get() {
        m.plugin_instances_created
            .get_or_create(&[("plugin", label(plugin))])
            .inc();
    }
}

/// A reload attempt: `applied` or `refused`, and the generation now in service.
pub fn reload(outcome: &'static str, generation: u64) {
    if let Some(m) = get() {
        m.reloads.get_or_create(&[("outcome", outcome)]).inc();
        plugin_generation(generation);
    }
}

/// The generation of the plugin set in service.
pub fn plugin_generation(generation: u64) {
    if let Some(m) = get() {
        m.plugin_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }
}

/// Recipients of one delivery attempt: `result` is delivered, deferred, bounced or dropped;
/// `destination` the relay target (a relay host, an MX domain, or `local`).
pub fn deliveries(result: &str, destination: &str, recipients: usize) {
    if recipients == 0 {
        return;
    }
    if let Some(m) = get() {
        let destination = m.destination_label(destination);
        m.deliveries
            .get_or_create(&[("result", label(result)), ("destination", destination)])
            .inc_by(u64::try_from(recipients).unwrap_or(u64::MAX));
    }
}

/// One delivered recipient, `delay` after its message was accepted; `route` is local or relay.
pub fn delivered_after(route: &'static str, delay: Duration) {
    if let Some(m) = get() {
        m.delivery_delay
            .get_or_create(&[("route", route)])
            .observe(delay.as_secs_f64());
    }
}

/// A message left the relay queue (`outcome` in `words::QUEUE_EXITS`) after `time` in it.
pub fn left_queue(outcome: &'static str, time: Duration) {
    if let Some(m) = get() {
        m.queue_time
            .get_or_create(&[("outcome", outcome)])
            .observe(time.as_secs_f64());
    }
}

/// An accepted message of `bytes`.
pub fn message_size(bytes: usize) {
    if let Some(m) = get() {
        m.message_size.observe(bytes as f64);
    }
}

/// Recipients put off for a later attempt, for `reason` (`words::DEFERRALS`).
pub fn deferrals(reason: &'static str, recipients: usize) {
    if recipients == 0 {
        return;
    }
    if let Some(m) = get() {
        m.deferrals
            .get_or_create(&[("reason", reason)])
            .inc_by(u64::try_from(recipients).unwrap_or(u64::MAX));
    }
}

/// One delivery attempt under an MTA-STS policy in `mode` (enforce, testing) ended in
/// `result` (success, failure).
pub fn mta_sts_delivery(mode: &'static str, result: &'static str) {
    if let Some(m) = get() {
        m.mta_sts_deliveries
            .get_or_create(&[("mode", mode), ("result", result)])
            .inc();
    }
}

/// One MTA-STS policy fetch: fetched, failed or invalid.
pub fn mta_sts_fetch(result: &'static str) {
    if let Some(m) = get() {
        m.mta_sts_fetches.get_or_create(&[("result", result)]).inc();
    }
}

/// The circuit breaker of milter member `member` is now closed (0), open (1) or half-open (2).
pub fn milter_member_state(member: &str, state: i64) {
    if let Some(m) = get() {
        m.milter_member_state
            .get_or_create(&[("member", label(member))])
            .set(state);
    }
}

/// A stage call not made to milter member `member`: its circuit breaker is open.
pub fn milter_skipped(member: &str) {
    if let Some(m) = get() {
        m.milter_skipped
            .get_or_create(&[("member", label(member))])
            .inc();
    }
}

/// Whether dependency `name` (users, kv, mail-store...) is up, as `/healthz` last found it.
pub fn dependency_up(name: &str, up: bool) {
    if let Some(m) = get() {
        m.set_dependency_up(name, up);
    }
}

/// A message scheduled for another attempt.
pub fn delivery_retry() {
    if let Some(m) = get() {
        m.delivery_retries.inc();
    }
}

/// A bounce queued for a sender.
pub fn bounce() {
    if let Some(m) = get() {
        m.bounces.inc();
    }
}

/// A TLS handshake on `listener`, successful or not.
pub fn tls_handshake(listener: &str, ok: bool) {
    if let Some(m) = get() {
        let result = if ok { "ok" } else { "failed" };
        m.tls_handshakes
            .get_or_create(&[("listener", label(listener)), ("result", label(result))])
            .inc();
    }
}

/// A login attempt over `protocol`, successful or not.
pub fn auth(protocol: &'static str, ok: bool) {
    if let Some(m) = get() {
        let result = if ok { "success" } else { "failure" };
        m.auth
            .get_or_create(&[("protocol", protocol), ("result", result)])
            .inc();
    }
}

/// The sender authentication results of one received message.
pub fn auth_results(results: &crate::sender_auth::AuthResults) {
    let Some(m) = get() else { return };
    let count = |method: &'static str, outcome: crate::sender_auth::Outcome| {
        m.sender_auth
            .get_or_create(&[("method", method), ("result", outcome.name())])
            .inc();
    };
    for check in &results.spf {
        count("spf", check.outcome);
    }
    for check in results.dkim.iter().flatten() {
        count("dkim", check.outcome);
    }
    if let Some(dmarc) = &results.dmarc {
        count("dmarc", dmarc.outcome);
    }
    if let Some(arc) = &results.arc {
        count("arc", arc.outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_show_in_the_text_with_their_labels() {
        let m = enable();
        plugin_call("probe", "rcpt-to", Duration::from_micros(3));
        message("rcpt-to", "rejected", "probe");
        for _ in 0..3 {
            deliveries("delivered", "relay.example:25", 2);
        }
        let text = m.render();
        assert!(
            text.contains(
                "mailgate_messages_total{stage=\"rcpt-to\",outcome=\"rejected\",plugin=\"probe\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "mailgate_deliveries_total{result=\"delivered\",destination=\"relay.example:25\"} 6"
            ),
            "{text}"
        );
        assert!(text.contains(
            "mailgate_plugin_call_seconds_bucket{le=\"4.0e-6\",plugin=\"probe\",stage=\"rcpt-to\"} 1"
        ) || text.contains("mailgate_plugin_call_seconds_count{plugin=\"probe\",stage=\"rcpt-to\"} 1"),
            "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn destinations_beyond_the_cap_are_counted_as_other() {
        let m = Metrics::new();
        for i in 0..MAX_DESTINATIONS + 5 {
            let _ = m.destination_label(&format!("cap-test-{i}.example"));
        }
        assert_eq!(m.destination_label("one-too-many.example"), "other");
    }
}
