//! The relay queue manager: schedules delivery attempts for messages with remote recipients,
//! runs the `deliver` stage, hands each destination's recipients to the SMTP client in one
//! transaction, records per-recipient results, retries on the configured schedule (kept across
//! restarts in the state files), and bounces permanent failures and expired messages with one
//! DSN to the sender (never to `<>`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, Notify, Semaphore};

use super::spool::{new_queue_id, QueuedEnvelope, Spooled};
use super::state::{DeliveryState, QueueEntry, QueueFiles};
use crate::config::split_host_port;
use crate::config::Config;
use crate::mail::{Delivery, Envelope, MailState, Route, Session};
use crate::message::Message;
use crate::plugin::{ActivePlugins, Edit, Services, Stage, StageCall, Verdict};
use crate::relay::client::{Failure, Outgoing, Pool, Settings, SmtpClient};
use crate::relay::dsn::{self, FailedRecipient};
use crate::relay::mx::{self, Candidate, ResolveError};
use crate::relay::route::{Router, Target};
use crate::relay::wire;
use crate::telemetry::{journal, metrics};

/// How one recipient fared in one attempt.
#[derive(Debug, Clone)]
enum Outcome {
    Delivered(String),
    /// Not delivered and not to be retried, without a bounce (discard, removed by a plugin).
    Dropped(String),
    Temporary(Failure),
    Permanent(Failure),
}

/// Counts one destination's recipients by how they fared.
fn count_outcomes(destination: &str, outcomes: &[(String, Outcome)]) {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (_, outcome) in outcomes {
        let result = match outcome {
            Outcome::Delivered(_) => "delivered",
            Outcome::Dropped(_) => "dropped",
            Outcome::Temporary(_) => "deferred",
            Outcome::Permanent(_) => "bounced",
        };
        *counts.entry(result).or_default() += 1;
    }
    for (result, n) in counts {
        metrics::deliveries(result, destination, n);
    }
}

/// Journals one attempt to one destination, per recipient.
fn journal_attempt(id: &str, attempt: u32, destination: &str, outcomes: &[(String, Outcome)]) {
    if !journal::enabled() {
        return;
    }
    let results = outcomes
        .iter()
        .map(|(rcpt, outcome)| {
            let (result, text) = match outcome {
                Outcome::Delivered(reply) => ("delivered", reply.clone()),
                Outcome::Dropped(why) => ("dropped", why.clone()),
                Outcome::Temporary(f) => ("deferred", f.text.clone()),
                Outcome::Permanent(f) => ("bounced", f.text.clone()),
            };
            journal::RecipientResult {
                rcpt: rcpt.clone(),
                result: result.into(),
                text,
            }
        })
        .collect();
    let event = journal::Event::Attempt {
        attempt,
        destination: destination.to_string(),
        results,
    };
    journal::record("", 0, id, event);
}

/// Journals the end of a message in the relay queue: nothing pending any more.
fn journal_done(id: &str, failed: &[FailedRecipient], dropped: usize) {
    let (outcome, detail) = match failed {
        [] if dropped == 0 => ("delivered", String::new()),
        [] => (
            "dropped",
            format!("{dropped} recipient(s) not delivered on purpose"),
        ),
        _ if failed.iter().any(|f| f.expired) => {
            ("expired", format!("{} recipient(s) bounced", failed.len()))
        }
        _ => ("bounced", format!("{} recipient(s) failed", failed.len())),
    };
    let event = journal::Event::Disposition {
        outcome: outcome.into(),
        detail,
    };
    journal::record("", 0, id, event);
}

/// When each message is due, which are held, which are being tried.
#[derive(Default)]
struct Schedule {
    entries: HashMap<String, Entry>,
    timers: BTreeSet<(u64, String)>,
    ready: VecDeque<String>,
}

#[derive(Default)]
struct Entry {
    next_attempt: u64,
    held: bool,
    running: bool,
    /// A retry was asked for while an attempt was running.
    again: bool,
    /// A message just accepted, kept in memory for its first attempt (no re-read, no state).
    fresh: Option<Spooled>,
}

/// Fresh messages kept in memory at most; beyond that the first attempt reads the spool file.
const MAX_FRESH_IN_MEMORY: usize = 1000;

impl Schedule {
    fn plan(&mut self, id: &str, at: u64, now: u64) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        self.timers.remove(&(entry.next_attempt, id.to_string()));
        entry.next_attempt = at;
        if entry.held || entry.running {
            return;
        }
        if at <= now {
            self.ready.push_back(id.to_string());
        } else {
            self.timers.insert((at, id.to_string()));
        }
    }

    /// Moves due timers to the ready list and returns the next timer's time.
    fn due(&mut self, now: u64) -> Option<u64> {
        while let Some((at, id)) = self.timers.first().cloned() {
            if at > now {
                return Some(at);
            }
            self.timers.pop_first();
            self.ready.push_back(id);
        }
        None
    }
}

/// The relay queue. Cheap to clone.
#[derive(Clone)]
pub struct QueueManager {
    inner: Arc<Inner>,
}

struct Inner {
    files: QueueFiles,
    config: Arc<Config>,
    router: Router,
    plugins: Arc<ActivePlugins>,
    services: Services,
    pool: Pool,
    settings: Settings,
    schedule: Mutex<Schedule>,
    wake: Notify,
    destinations: Mutex<HashMap<String, Arc<Semaphore>>>,
    attempts: Arc<Semaphore>,
    /// New messages (bounces) go through the normal delivery path.
    resubmit: mpsc::UnboundedSender<String>,
    quarantine_dir: std::path::PathBuf,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl QueueManager {
    /// Starts the manager and its scheduler task.
    pub fn start(
        files: QueueFiles,
        config: Arc<Config>,
        plugins: Arc<ActivePlugins>,
        services: Services,
        resubmit: mpsc::UnboundedSender<String>,
    ) -> QueueManager {
        let relay = &config.relay;
        let settings = Settings {
            helo: relay
                .helo_name
                .clone()
                .unwrap_or_else(|| config.server.hostname.clone()),
            connect_timeout: Duration::from_secs(relay.connect_timeout_secs),
            command_timeout: Duration::from_secs(relay.command_timeout_secs),
        };
        let manager = QueueManager {
            inner: Arc::new(Inner {
                files,
                router: Router::new(&config.routes),
                plugins,
                services,
                pool: Pool::new(Duration::from_secs(relay.idle_connection_secs)),
                settings,
                schedule: Mutex::new(Schedule::default()),
                wake: Notify::new(),
                destinations: Mutex::new(HashMap::new()),
                attempts: Arc::new(Semaphore::new(relay.max_deliveries.max(1))),
                resubmit,
                quarantine_dir: config.data_dir().join("quarantine"),
                config,
            }),
        };
        tokio::spawn(manager.clone().scheduler());
        manager
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.inner
            .schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a spooled message whose local recipients are done; its state file (if any)
    /// says when it is due.
    pub fn submit(&self, id: &str) {
        self.schedule_entry(id, self.inner.files.state(id), None);
    }

    /// Takes a message just accepted and spooled (it has no state yet): due now. Its bytes
    /// are kept for the first attempt unless many are waiting already.
    pub fn submit_new(&self, spooled: Spooled) {
        let id = spooled.envelope.id.clone();
        let keep = self.schedule().ready.len() < MAX_FRESH_IN_MEMORY;
        self.schedule_entry(&id, DeliveryState::default(), keep.then_some(spooled));
    }

    fn schedule_entry(&self, id: &str, state: DeliveryState, fresh: Option<Spooled>) {
        let now = now_secs();
        let mut schedule = self.schedule();
        if let Some(entry) = schedule.entries.get_mut(id) {
            entry.again |= entry.running;
            return;
        }
        schedule.entries.insert(
            id.to_string(),
            Entry {
                held: state.held,
                fresh,
                ..Entry::default()
            },
        );
        schedule.plan(id, state.next_attempt, now);
        drop(schedule);
        self.inner.wake.notify_one();
    }

    async fn scheduler(self) {
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            let (next_timer, ready) = {
                let mut schedule = self.schedule();
                let next = schedule.due(now_secs());
                (next, schedule.ready.drain(..).collect::<Vec<String>>())
            };
            {
                for id in ready {
                    let Ok(permit) = self.inner.attempts.clone().acquire_owned().await else {
                        return;
                    };
                    let manager = self.clone();
                    tokio::spawn(async move {
                        manager.attempt(&id).await;
                        drop(permit);
                    });
                }
            }
            let wait = next_timer.map_or(Duration::from_secs(3600), |at| {
                Duration::from_secs(at.saturating_sub(now_secs())).max(Duration::from_millis(50))
            });
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = sweep.tick() => self.inner.pool.sweep(),
            }
        }
    }

    /// Marks the entry running; `None` when it is held, gone or already running. Otherwise
    /// the message's bytes and state if they were kept in memory.
    fn begin(&self, id: &str) -> Option<Option<(Spooled, DeliveryState)>> {
        let mut schedule = self.schedule();
        match schedule.entries.get_mut(id) {
            Some(entry) if !entry.held && !entry.running => {
                entry.running = true;
                entry.again = false;
                Some(entry.fresh.take().map(|s| (s, DeliveryState::default())))
            }
            _ => None,
        }
    }

    /// One delivery attempt of one message, all its pending recipients, in a span carrying
    /// the queue id (every log line of the attempt has it).
    async fn attempt(&self, id: &str) {
        use tracing::Instrument;
        let span = tracing::info_span!("delivery", queue_id = id);
        self.attempt_in_span(id).instrument(span).await
    }

    async fn attempt_in_span(&self, id: &str) {
        let Some(kept) = self.begin(id) else {
            return;
        };
        let files = &self.inner.files;
        let (spooled, mut state) = match kept {
            Some(kept) => kept,
            None => match crate::blocking::run(|| files.spool.load(id)) {
                Ok(s) => (s, crate::blocking::run(|| files.state(id))),
                Err(e) => {
                    tracing::warn!(queue_id = id, "queued message unreadable or gone: {e}");
                    self.schedule().entries.remove(id);
                    return;
                }
            },
        };
        let pending = state.pending(&spooled.envelope).to_vec();
        let attempt = state.attempts + 1;
        let message = Arc::new(Message::new(spooled.message.clone()));
        let mut groups: BTreeMap<String, (Target, Vec<String>)> = BTreeMap::new();
        for rcpt in pending {
            let target = self.inner.router.target(&rcpt);
            groups
                .entry(target.key())
                .or_insert_with(|| (target, Vec::new()))
                .1
                .push(rcpt);
        }
        let mut outcomes: Vec<(String, Outcome)> = Vec::new();
        let mut defer = 0u64;
        for (destination, (target, rcpts)) in groups {
            let (results, deferred) = self
                .deliver_group(&spooled, &message, target, &rcpts, attempt)
                .await;
            defer = defer.max(deferred);
            count_outcomes(&destination, &results);
            journal_attempt(id, attempt, &destination, &results);
            outcomes.extend(results);
        }
        self.record(&spooled, &mut state, outcomes, defer);
    }

    /// Runs the deliver stage for one destination's recipients, then sends them.
    async fn deliver_group(
        &self,
        spooled: &Spooled,
        message: &Arc<Message>,
        target: Target,
        rcpts: &[String],
        attempt: u32,
    ) -> (Vec<(String, Outcome)>, u64) {
        let envelope = &spooled.envelope;
        let all = |outcome: Outcome| rcpts.iter().map(|r| (r.clone(), outcome.clone())).collect();
        let mut mail = MailState {
            session: Session {
                id: envelope.id.clone(),
                peer_ip: envelope.client_ip.clone(),
                peer_port: 0,
                listener: "queue".into(),
                tls: false,
                helo: Some(envelope.helo.clone()),
                auth_user: envelope.auth_user.clone(),
            },
            envelope: Envelope {
                sender: envelope.sender.clone(),
                recipients: rcpts.to_vec(),
                params: Vec::new(),
            },
            message: Some(message.clone()),
            delivery: Some(Delivery {
                queue_id: envelope.id.clone(),
                attempt,
                route: target.route.clone(),
            }),
            ..MailState::default()
        };
        let plugins = self.inner.plugins.current();
        if plugins.handles(Stage::Deliver) {
            let mut chain = plugins.transaction(&envelope.id, self.inner.services.clone());
            let report = chain.run(StageCall::Deliver, &mut mail).await;
            if journal::enabled() {
                let stage = report.trace();
                journal::record("", 0, &envelope.id, journal::Event::Deliver { stage });
            }
            // Who decided, or (for a reroute or defer, which are edits) who asked for it.
            let by = report.decided_by.clone().unwrap_or_else(|| {
                report
                    .runs
                    .iter()
                    .rev()
                    .find(|r| {
                        r.edits
                            .iter()
                            .any(|e| matches!(e, Edit::Defer(_) | Edit::Reroute(_)))
                    })
                    .map(|r| r.plugin.clone())
                    .unwrap_or_default()
            });
            match report.decision {
                Verdict::Continue | Verdict::Accept => {}
                Verdict::Reject(reply) => {
                    let reply = reply.to_string();
                    return (
                        all(Outcome::Permanent(Failure {
                            reply: Some(reply.clone()),
                            ..Failure::permanent(format!("refused by plugin {by}: {reply}"))
                        })),
                        0,
                    );
                }
                Verdict::Tempfail(reply) | Verdict::Disconnect(reply) => {
                    return (
                        all(Outcome::Temporary(Failure::temporary(format!(
                            "deferred by plugin {by}: {reply}"
                        )))),
                        0,
                    );
                }
                Verdict::Discard => {
                    return (
                        all(Outcome::Dropped(format!("discarded by plugin {by}"))),
                        0,
                    );
                }
                Verdict::Quarantine(reason) => {
                    let raw = mail
                        .message
                        .as_ref()
                        .map_or(&spooled.message[..], |m| m.raw());
                    let kept = crate::blocking::run(|| {
                        crate::queue::quarantine(
                            &self.inner.quarantine_dir,
                            &envelope.id,
                            raw,
                            &reason,
                        )
                    });
                    return match kept {
                        Ok(()) => (
                            all(Outcome::Dropped(format!(
                                "quarantined by plugin {by}: {reason}"
                            ))),
                            0,
                        ),
                        Err(e) => (
                            all(Outcome::Temporary(Failure::temporary(format!(
                                "quarantine: {e}"
                            )))),
                            0,
                        ),
                    };
                }
                Verdict::Hide => {}
            }
            if let Some(seconds) = mail.defer_seconds {
                let failure =
                    Failure::temporary(format!("deferred by plugin {by} for {seconds} s"));
                return (all(Outcome::Temporary(failure)), u64::from(seconds));
            }
        }
        let target = match &mail.reroute {
            Some(host) => Target::reroute(host),
            None => target,
        };
        let sent_to: Vec<String> = mail.envelope.recipients.clone();
        let raw = mail
            .message
            .as_ref()
            .map_or(&spooled.message[..], |m| m.raw());
        let results = self
            .transmit(
                &target,
                &mail.envelope.sender,
                &sent_to,
                raw,
                envelope.smtputf8,
            )
            .await;
        let mut outcomes = Vec::new();
        for rcpt in rcpts {
            let outcome = match sent_to.iter().position(|r| r.eq_ignore_ascii_case(rcpt)) {
                None => Outcome::Dropped("removed by a deliver-stage plugin".into()),
                Some(i) => match &results[i] {
                    Ok(reply) => Outcome::Delivered(reply.clone()),
                    Err(f) if f.permanent => Outcome::Permanent(f.clone()),
                    Err(f) => Outcome::Temporary(f.clone()),
                },
            };
            outcomes.push((rcpt.clone(), outcome));
        }
        (outcomes, 0)
    }

    /// Sends one message to one target's hosts in turn until one takes it (or refuses it for
    /// good). Per recipient: the final reply, or the failure.
    async fn transmit(
        &self,
        target: &Target,
        sender: &str,
        rcpts: &[String],
        raw: &[u8],
        smtputf8: bool,
    ) -> Vec<Result<String, Failure>> {
        let fail_all = |f: Failure| rcpts.iter().map(|_| Err(f.clone())).collect();
        if rcpts.is_empty() {
            return Vec::new();
        }
        let candidates = match self.candidates(target).await {
            Ok(c) => c,
            Err(ResolveError::Temporary(e)) => return fail_all(Failure::temporary(e)),
            Err(ResolveError::Permanent(e)) => {
                return fail_all(Failure::permanent(format!("5.1.2 {e}")))
            }
        };
        let key = target.key();
        let slots = self.destination_slots(&key);
        let Ok(_slot) = slots.acquire().await else {
            return fail_all(Failure::temporary("shutting down"));
        };
        let payload = wire::data_payload(raw);
        let needs_utf8 = smtputf8 || !sender.is_ascii() || rcpts.iter().any(|r| !r.is_ascii());
        let out = Outgoing {
            sender,
            recipients: rcpts,
            payload: &payload,
            size: raw.len(),
            eight_bit: wire::is_8bit(raw),
            smtputf8: needs_utf8,
        };
        let mut results = fail_all(Failure::temporary("no host could be tried"));
        for candidate in &candidates {
            match self.send_via(candidate, target, &key, &out).await {
                Err(failure) if failure.permanent => return fail_all(failure),
                Err(failure) => {
                    tracing::info!(host = candidate.name, addr = %candidate.addr, "{}", failure.text);
                    results = fail_all(failure);
                }
                Ok(sent) => {
                    let all_temporary = sent.iter().all(|r| matches!(r, Err(f) if !f.permanent));
                    results = sent;
                    if !all_temporary {
                        break;
                    }
                }
            }
        }
        results
    }

    /// One host: a pooled connection if there is one (a fresh one if that turns out stale).
    async fn send_via(
        &self,
        candidate: &Candidate,
        target: &Target,
        key: &str,
        out: &Outgoing<'_>,
    ) -> Result<Vec<Result<String, Failure>>, Failure> {
        let pool = &self.inner.pool;
        if let Some(mut client) = pool.take(candidate.addr, key) {
            match client.send(out).await {
                Ok(results) => {
                    pool.put(key, client);
                    return Ok(results);
                }
                Err(f) if f.permanent => {
                    pool.put(key, client);
                    return Err(f);
                }
                Err(f) => tracing::debug!("pooled connection failed, reconnecting: {}", f.text),
            }
        }
        let mut client = SmtpClient::connect(candidate, target, &self.inner.settings).await?;
        match client.send(out).await {
            Ok(results) => {
                pool.put(key, client);
                Ok(results)
            }
            Err(f) if f.permanent => {
                pool.put(key, client);
                Err(f)
            }
            Err(f) => Err(f),
        }
    }

    async fn candidates(&self, target: &Target) -> Result<Vec<Candidate>, ResolveError> {
        let dns = &*self.inner.services.dns;
        match &target.route {
            Route::Relay(host_port) => {
                let (host, port) = split_host_port(host_port).ok_or_else(|| {
                    ResolveError::Permanent(format!("bad relay host {host_port:?}"))
                })?;
                let addrs = mx::addresses(dns, &host, port).await?;
                Ok(addrs
                    .into_iter()
                    .map(|addr| Candidate {
                        name: host.clone(),
                        addr,
                    })
                    .collect())
            }
            Route::Mx(domain) => mx::candidates(dns, domain, self.inner.config.relay.mx_port).await,
            Route::Local => Err(ResolveError::Temporary(
                "a local route reached the relay queue".into(),
            )),
        }
    }

    fn destination_slots(&self, key: &str) -> Arc<Semaphore> {
        let mut map = self
            .inner
            .destinations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Semaphore::new(
                    self.inner.config.relay.max_per_destination.max(1),
                ))
            })
            .clone()
    }

    /// Applies one attempt's outcomes: bounces what failed for good, then removes the message
    /// or schedules the next attempt.
    fn record(
        &self,
        spooled: &Spooled,
        state: &mut DeliveryState,
        outcomes: Vec<(String, Outcome)>,
        defer: u64,
    ) {
        let envelope = &spooled.envelope;
        let id = envelope.id.as_str();
        let now = now_secs();
        let mut pending = Vec::new();
        let mut failed = Vec::new();
        let mut errors = Vec::new();
        let mut dropped = 0usize;
        for (rcpt, outcome) in outcomes {
            match outcome {
                Outcome::Delivered(reply) => {
                    tracing::info!(queue_id = id, rcpt, "delivered: {reply}")
                }
                Outcome::Dropped(why) => {
                    dropped += 1;
                    tracing::info!(queue_id = id, rcpt, "not delivered: {why}")
                }
                Outcome::Permanent(f) => {
                    tracing::warn!(queue_id = id, rcpt, "bounced: {}", f.text);
                    failed.push(FailedRecipient {
                        address: rcpt,
                        reason: f.text,
                        reply: f.reply,
                        remote: f.remote,
                        expired: false,
                    });
                }
                Outcome::Temporary(f) => {
                    tracing::info!(queue_id = id, rcpt, "deferred: {}", f.text);
                    if !errors.contains(&f.text) {
                        errors.push(f.text.clone());
                    }
                    pending.push((rcpt, f));
                }
            }
        }
        state.attempts += 1;
        let expired =
            now.saturating_sub(envelope.received_at) >= self.inner.config.queue.max_age.as_secs();
        if expired && !pending.is_empty() {
            for (rcpt, f) in pending.drain(..) {
                tracing::warn!(queue_id = id, rcpt, "expired in the queue: {}", f.text);
                failed.push(FailedRecipient {
                    address: rcpt,
                    reason: format!("delivery time expired; last error: {}", f.text),
                    reply: f.reply,
                    remote: f.remote,
                    expired: true,
                });
            }
        }
        if !failed.is_empty() {
            self.bounce(spooled, &failed);
        }
        let files = &self.inner.files;
        if pending.is_empty() {
            journal_done(id, &failed, dropped);
            if let Err(e) = files.remove(id) {
                tracing::error!(queue_id = id, "cannot remove the delivered message: {e}");
            }
            self.schedule().entries.remove(id);
            return;
        }
        let wait = self
            .inner
            .config
            .queue
            .retry_after(state.attempts)
            .as_secs()
            .max(defer);
        metrics::delivery_retry();
        state.pending = Some(pending.into_iter().map(|(r, _)| r).collect());
        state.last_error = Some(errors.join("; "));
        state.next_attempt = now + wait;
        // The state file is written (two fsyncs) outside the schedule lock, which SMTP sessions
        // take too; the entry stays `running` meanwhile, so a retry asked for now is not lost.
        let held = self.schedule().entries.get(id).map(|entry| entry.held);
        let Some(held) = held else {
            // Deleted while the attempt ran.
            let _ = files.remove(id);
            return;
        };
        state.held = held;
        let save = |state: &DeliveryState| {
            if let Err(e) = crate::blocking::run(|| files.save(id, state)) {
                tracing::error!(queue_id = id, "cannot save the queue state: {e}");
            }
        };
        save(state);
        let mut schedule = self.schedule();
        let Some(entry) = schedule.entries.get_mut(id) else {
            drop(schedule);
            let _ = files.remove(id);
            return;
        };
        entry.running = false;
        let (held_now, again) = (entry.held, entry.again);
        let at = if again { now } else { state.next_attempt };
        schedule.plan(id, at, now);
        drop(schedule);
        if held_now != held {
            // Held or released while the file was being written: write what holds now.
            state.held = held_now;
            save(state);
        }
        self.inner.wake.notify_one();
    }

    /// One DSN for these recipients to the envelope sender; none when the sender is `<>`.
    fn bounce(&self, spooled: &Spooled, failed: &[FailedRecipient]) {
        let envelope = &spooled.envelope;
        if envelope.sender.is_empty() {
            tracing::warn!(
                queue_id = envelope.id,
                "undeliverable bounce dropped (a bounce is never sent to <>)"
            );
            return;
        }
        let hostname = &self.inner.config.server.hostname;
        let original = dsn::Original {
            queue_id: &envelope.id,
            sender: &envelope.sender,
            received_at: envelope.received_at,
            message: &spooled.message,
        };
        let report = dsn::build(hostname, &original, failed, now_secs());
        let bounce = QueuedEnvelope {
            id: new_queue_id(),
            sender: String::new(),
            recipients: vec![envelope.sender.clone()],
            received_at: now_secs(),
            client_ip: "127.0.0.1".into(),
            helo: hostname.clone(),
            auth_user: None,
            smtputf8: false,
        };
        let (spool, resubmit) = (self.inner.files.spool.clone(), self.inner.resubmit.clone());
        let original_id = envelope.id.clone();
        tokio::spawn(async move {
            match spool.store(&bounce, &report).await {
                Ok(()) => {
                    metrics::bounce();
                    let event = journal::Event::Bounced {
                        bounce: bounce.id.clone(),
                    };
                    journal::record("", 0, &original_id, event);
                    tracing::info!(queue_id = original_id, bounce = bounce.id, "bounce queued");
                    let _ = resubmit.send(bounce.id);
                }
                Err(e) => tracing::error!(queue_id = original_id, "cannot queue the bounce: {e}"),
            }
        });
    }

    // ---- operator commands (see `admin`) ----

    /// At shutdown: starts no more attempts and waits (up to `bound`) for those under way, so
    /// that a message sent downstream is also recorded as sent (not sent again after a
    /// restart). Returns the attempts still running when the bound passed.
    pub async fn stop(&self, bound: Duration) -> usize {
        let all = u32::try_from(self.inner.config.relay.max_deliveries.max(1)).unwrap_or(u32::MAX);
        let attempts = self.inner.attempts.clone();
        // Holding every permit: the scheduler can start nothing more.
        let waited = tokio::time::timeout(bound, attempts.clone().acquire_many_owned(all)).await;
        let running = match waited {
            Ok(Ok(_permits)) => 0,
            _ => (all as usize).saturating_sub(attempts.available_permits()),
        };
        // A closed semaphore stops the scheduler for good.
        attempts.close();
        running
    }

    /// Messages in the relay queue and the age of the oldest (queue ids begin with the
    /// time they were accepted).
    pub fn stats(&self) -> (usize, Duration) {
        let schedule = self.schedule();
        let oldest = schedule
            .entries
            .keys()
            .filter_map(|id| id.get(..10).and_then(|t| u64::from_str_radix(t, 16).ok()))
            .min();
        let age = oldest.map_or(0, |at| now_secs().saturating_sub(at));
        (schedule.entries.len(), Duration::from_secs(age))
    }

    pub fn entries(&self) -> Vec<QueueEntry> {
        self.inner.files.entries()
    }

    pub fn files(&self) -> &QueueFiles {
        &self.inner.files
    }

    /// Holds or releases a message.
    pub fn set_held(&self, id: &str, held: bool) -> Result<(), String> {
        self.inner.files.update(id, |s| s.held = held)?;
        let now = now_secs();
        let mut schedule = self.schedule();
        if let Some(entry) = schedule.entries.get_mut(id) {
            entry.held = held;
            let at = entry.next_attempt;
            if held {
                schedule.timers.remove(&(at, id.to_string()));
                schedule.ready.retain(|r| r != id);
            } else {
                schedule.plan(id, at, now);
            }
        }
        drop(schedule);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Makes a message (or every message) due now. Returns how many.
    pub fn retry(&self, id: Option<&str>) -> Result<usize, String> {
        let count = match id {
            Some(id) => self.retry_one(id).map(|()| 1)?,
            None => {
                let ids = self.inner.files.spool.list().map_err(|e| e.to_string())?;
                ids.iter().filter(|id| self.retry_one(id).is_ok()).count()
            }
        };
        self.inner.wake.notify_one();
        Ok(count)
    }

    fn retry_one(&self, id: &str) -> Result<(), String> {
        self.inner.files.update(id, |s| s.next_attempt = 0)?;
        let mut schedule = self.schedule();
        match schedule.entries.get_mut(id) {
            Some(entry) if entry.running => entry.again = true,
            Some(_) => schedule.plan(id, 0, now_secs()),
            // Not in the relay's schedule: its local recipients are not done yet (a failed
            // Maildir write). Local delivery takes it, and hands it on if it goes further.
            None => {
                drop(schedule);
                let _ = self.inner.resubmit.send(id.to_string());
            }
        }
        Ok(())
    }

    /// Removes a message without delivering or bouncing it.
    pub fn delete(&self, id: &str) -> Result<(), String> {
        if !self.inner.files.exists(id) {
            return Err(format!("no message {id} in the queue"));
        }
        let mut schedule = self.schedule();
        if let Some(entry) = schedule.entries.remove(id) {
            schedule
                .timers
                .remove(&(entry.next_attempt, id.to_string()));
            schedule.ready.retain(|r| r != id);
        }
        drop(schedule);
        self.inner.files.remove(id).map_err(|e| e.to_string())
    }
}
