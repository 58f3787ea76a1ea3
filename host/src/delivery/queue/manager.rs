//! The relay queue manager: schedules delivery attempts for messages with remote recipients,
//! runs the `deliver` stage, hands each destination's recipients to the SMTP client in one
//! transaction, records per-recipient results, retries on the configured schedule (kept across
//! restarts in the state files), and bounces permanent failures and expired messages with one
//! DSN to the sender (never to `<>`).
//!
//! At shutdown (the drain's [`Deadline`]) the scheduler starts no attempt — none from the ready
//! list, a retry timer, `mailgate queue retry` or a bounce just queued — and [`QueueManager::stop`]
//! waits for those under way to record their outcome. What was not attempted keeps its state
//! and is due at the next start.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify, Semaphore};

use super::schedule::{Entry, Schedule, MAX_FRESH_IN_MEMORY};
use super::spool::Spooled;
use super::state::{DeliveryState, QueueEntry, QueueFiles};
use crate::config::Config;
use crate::delivery::relay::client::{CheckedTls, Pool, Settings};
use crate::delivery::relay::dkim::Signers;
use crate::delivery::relay::mta_sts::MtaSts;
use crate::delivery::relay::route::Router;
use crate::delivery::relay::transmit::Transmitter;
use crate::net::drain::Deadline;
use crate::plugin::{ActivePlugins, Services};

/// The relay queue. Cheap to clone.
#[derive(Clone)]
pub struct QueueManager {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub files: QueueFiles,
    pub config: Arc<Config>,
    pub router: Router,
    pub plugins: Arc<ActivePlugins>,
    pub services: Services,
    pub transmitter: Transmitter,
    /// DKIM keys for outgoing mail.
    pub signers: Arc<Signers>,
    schedule: Mutex<Schedule>,
    pub wake: Notify,
    attempts: Arc<Semaphore>,
    /// New messages (bounces) go through the normal delivery path.
    pub resubmit: mpsc::UnboundedSender<String>,
    pub quarantine_dir: std::path::PathBuf,
    /// Set when the server starts stopping.
    pub deadline: Deadline,
}

pub(super) use crate::mail::clock::unix_seconds as now_secs;

impl QueueManager {
    /// Starts the manager and its scheduler task.
    pub fn start(
        files: QueueFiles,
        config: Arc<Config>,
        plugins: Arc<ActivePlugins>,
        services: Services,
        (resubmit, signers): (mpsc::UnboundedSender<String>, Arc<Signers>),
        deadline: Deadline,
    ) -> QueueManager {
        let relay = &config.relay;
        let settings = Settings {
            helo: relay
                .helo_name
                .clone()
                .unwrap_or_else(|| config.server.hostname.clone()),
            connect_timeout: Duration::from_secs(relay.connect_timeout_secs),
            command_timeout: Duration::from_secs(relay.command_timeout_secs),
            deadline: deadline.clone(),
            checked_tls: checked_tls(&config),
        };
        let mta_sts = settings.checked_tls.as_ref().map(|checked| {
            MtaSts::new(
                &relay.mta_sts,
                services.dns.clone(),
                config.data_dir().join("mta-sts"),
                checked.config.clone(),
            )
        });
        let transmitter = Transmitter::new(
            Pool::new(Duration::from_secs(relay.idle_connection_secs)),
            settings,
            services.dns.clone(),
            relay.mx_port,
            relay.max_per_destination,
        );
        let transmitter = match mta_sts {
            Some(mta_sts) => transmitter.with_mta_sts(mta_sts),
            None => transmitter,
        };
        let manager = QueueManager {
            inner: Arc::new(Inner {
                files,
                router: Router::new(&config.routes),
                plugins,
                services,
                transmitter,
                signers,
                schedule: Mutex::new(Schedule::default()),
                wake: Notify::new(),
                attempts: Arc::new(Semaphore::new(relay.max_deliveries.max(1))),
                resubmit,
                quarantine_dir: config.data_dir().join("quarantine"),
                config,
                deadline,
            }),
        };
        tokio::spawn(manager.clone().scheduler());
        manager
    }

    pub(super) fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
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
                attempted: state.attempts > 0,
                ..Entry::default()
            },
        );
        schedule.plan(id, state.next_attempt, now);
        drop(schedule);
        self.inner.wake.notify_one();
    }

    /// Starts the attempts that are due, until the drain begins: from then on it starts
    /// nothing (what is left in the ready list stays queued for the next start).
    async fn scheduler(self) {
        let deadline = &self.inner.deadline;
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        while !deadline.is_draining() {
            let (next_timer, ready) = {
                let mut schedule = self.schedule();
                let next = schedule.due(now_secs());
                (next, schedule.ready.drain(..).collect::<Vec<String>>())
            };
            for id in ready {
                let Ok(permit) = self.inner.attempts.clone().acquire_owned().await else {
                    return;
                };
                // The drain may have begun while waiting for a permit.
                if deadline.is_draining() {
                    return;
                }
                let manager = self.clone();
                tokio::spawn(async move {
                    manager.attempt(&id).await;
                    drop(permit);
                });
            }
            let wait = next_timer.map_or(Duration::from_secs(3600), |at| {
                Duration::from_secs(at.saturating_sub(now_secs())).max(Duration::from_millis(50))
            });
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = sweep.tick() => self.inner.transmitter.sweep(),
                () = deadline.begun() => {}
            }
        }
    }

    /// Marks the entry running; `None` when it is held, gone or already running, or the
    /// server is stopping. Otherwise the message's bytes and state if they were kept in memory.
    pub(super) fn begin(&self, id: &str) -> Option<Option<(Spooled, DeliveryState)>> {
        let mut schedule = self.schedule();
        if self.inner.deadline.is_draining() {
            return None;
        }
        match schedule.entries.get_mut(id) {
            Some(entry) if !entry.held && !entry.running => {
                entry.running = true;
                entry.again = false;
                Some(entry.fresh.take().map(|s| (s, DeliveryState::default())))
            }
            _ => None,
        }
    }

    // ---- operator commands (see `admin`) ----

    /// At shutdown, once the drain's deadline has started (the scheduler starts nothing from
    /// then on): waits, until the deadline, for the attempts under way, so that a message sent
    /// downstream is also recorded as sent (not sent again after a restart). They stop waiting
    /// on their peers ahead of the deadline (`relay::client::RECORD_AHEAD`) to leave time for
    /// that. Returns the attempts still running when the deadline passed.
    pub async fn stop(&self) -> usize {
        let all = u32::try_from(self.inner.config.relay.max_deliveries.max(1)).unwrap_or(u32::MAX);
        let attempts = self.inner.attempts.clone();
        let bound = self.inner.deadline.left().unwrap_or_default();
        let waited = tokio::time::timeout(bound, attempts.clone().acquire_many_owned(all)).await;
        let running = match waited {
            Ok(Ok(_permits)) => 0,
            _ => (all as usize).saturating_sub(attempts.available_permits()),
        };
        // Pooled connections are told goodbye rather than dropped, in the time left.
        let left = self.inner.deadline.left().unwrap_or_default();
        let _ = tokio::time::timeout(left, self.inner.transmitter.close_idle()).await;
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

    /// Messages in the relay queue by state, Postfix's names: `incoming` (not tried yet),
    /// `active` (being tried), `deferred` (waiting to be tried again), `hold`.
    pub fn lengths(&self) -> [(&'static str, usize); 4] {
        let schedule = self.schedule();
        let (mut incoming, mut active, mut deferred, mut hold) = (0, 0, 0, 0);
        for entry in schedule.entries.values() {
            if entry.running {
                active += 1;
            } else if entry.held {
                hold += 1;
            } else if !entry.attempted {
                incoming += 1;
            } else {
                deferred += 1;
            }
        }
        [
            ("incoming", incoming),
            ("active", active),
            ("deferred", deferred),
            ("hold", hold),
        ]
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

/// Certificate checks with the system's roots and `[relay] extra-roots`; without the extra
/// roots when they cannot be read (logged), none when the system has no roots either.
fn checked_tls(config: &Config) -> Option<CheckedTls> {
    let extra = config
        .relay
        .extra_roots
        .as_deref()
        .map(|p| config.resolve(p));
    match CheckedTls::new(extra.as_deref()) {
        Ok(tls) => return Some(tls),
        Err(e) => tracing::error!("relay certificate roots: {e}"),
    }
    CheckedTls::new(None)
        .map_err(|e| tracing::error!("relay certificate roots: {e}; MTA-STS is off"))
        .ok()
}
