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
use prometheus_client::registry::Registry;

/// Labels whose values are fixed words: no allocation per event.
type Static1 = [(&'static str, &'static str); 1];
type Static2 = [(&'static str, &'static str); 2];
type Labels1 = [(&'static str, String); 1];
type Labels2 = [(&'static str, String); 2];
type Labels3 = [(&'static str, String); 3];
type HistogramFamily = Family<Labels2, Histogram, fn() -> Histogram>;

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
    resident_memory: Gauge,
    open_fds: Gauge,
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
    // 1 us to ~4 s, a factor of 4 apart: a plugin call is a few microseconds when all is well
    // and its deadline (at most 60 s) when not.
    Histogram::new(exponential_buckets(1e-6, 4.0, 12))
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
            resident_memory: Gauge::default(),
            open_fds: Gauge::default(),
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
            "process_resident_memory_bytes",
            "Resident memory of the process",
            m.resident_memory.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors of the process",
            m.open_fds.clone(),
        );
        metrics.registry = registry;
        metrics
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
        // statm's second field: resident pages.
        let resident = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok());
        if let Some(pages) = resident {
            self.resident_memory.set(pages.saturating_mul(page_size()));
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds
                .set(i64::try_from(dir.count()).unwrap_or(i64::MAX));
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

fn page_size() -> i64 {
    rustix::param::page_size().try_into().unwrap_or(4096)
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
