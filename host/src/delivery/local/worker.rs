//! The local delivery worker: takes spooled messages, writes them into their recipients'
//! Maildirs in batches, passes those with remote recipients on to the relay queue, and
//! schedules retries for those that failed. At shutdown it finishes the batch under way and
//! takes no other: what is left stays in the spool for the next start.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::QueueConfig;
use crate::delivery::queue::bounce::queue_report;
use crate::delivery::queue::manager::QueueManager;
use crate::delivery::queue::spool::Spool;
use crate::delivery::queue::state::QueueFiles;
use crate::net::drain::Deadline;
use crate::store::users::{Standing, UserDirectory};
use crate::telemetry::{journal, metrics};

/// Most messages delivered in one batch (two filesystem syncs per batch).
const DELIVERY_BATCH: usize = 64;

/// The worker. Delivers queued messages as they arrive (and those recovered at start), in batches of what
/// has accumulated while the previous batch was being written; messages with remote recipients
/// then go to the relay queue. A message that fails (a full disk, a broken Maildir) stays
/// queued and comes back after the queue's retry intervals, or at `mailgate queue retry`.
pub struct LocalDelivery {
    pub spool: Spool,
    pub users: Arc<UserDirectory>,
    /// The root of the Maildirs.
    pub mail_root: PathBuf,
    /// Bytes each user's Maildir may hold (0: no limit); a message for a full one waits.
    pub quota: u64,
    /// Messages with remote recipients go on to the relay queue.
    pub relay: QueueManager,
    /// Where a message to retry is sent again (the worker's own input).
    pub again: mpsc::UnboundedSender<String>,
    pub retry: QueueConfig,
    /// Set when the server starts stopping.
    pub deadline: Deadline,
    /// The gateway's name, for the success reports it sends.
    pub hostname: String,
}

impl LocalDelivery {
    /// Delivers the ids that arrive on `queue` until it closes or the server starts
    /// stopping; returns once the batch under way then is written and recorded. (Delivery is
    /// idempotent, so even a batch cut by the process ending is not delivered twice.)
    pub async fn run(self, mut queue: mpsc::UnboundedReceiver<String>) {
        let LocalDelivery {
            spool,
            users: directory,
            mail_root,
            quota,
            relay,
            again,
            retry,
            deadline,
            hostname,
        } = self;
        let parked = Parked::default();
        tokio::spawn(
            parked
                .clone()
                .release_on_recovery(directory.recoveries(), again.clone()),
        );
        loop {
            let next = tokio::select! {
                next = queue.recv() => next,
                () = deadline.begun() => None,
            };
            // Stopping: what is queued stays in the spool (recovered at the next start).
            let Some(first) = next.filter(|_| !deadline.is_draining()) else {
                break;
            };
            let mut ids = vec![first];
            while ids.len() < DELIVERY_BATCH {
                match queue.try_recv() {
                    Ok(id) => ids.push(id),
                    Err(_) => break,
                }
            }
            let (batch_spool, root) = (spool.clone(), mail_root.clone());
            let (users, standing) = (directory.get(), directory.standing());
            let (files, retry) = (relay.files().clone(), retry.clone());
            let batch = ids.len();
            let result = tokio::task::spawn_blocking(move || {
                let outcome = super::deliver::deliver_batch(
                    &batch_spool,
                    (&users, standing),
                    (&root, quota),
                    &ids,
                );
                let retries = record_local_outcome(&files, &outcome, &retry);
                (outcome.done, retries, outcome.waiting_for_users)
            })
            .await;
            match result {
                Ok((done, retries, waiting)) => {
                    tracing::debug!(batch, done = done.len(), "local delivery");
                    let mailboxes = done.iter().map(|d| d.mailboxes).sum();
                    metrics::deliveries("delivered", "local", mailboxes);
                    metrics::deliveries("deferred", "local", retries.len());
                    metrics::deferrals("local", retries.len());
                    let now = crate::mail::clock::unix_seconds();
                    for message in &done {
                        let waited = now.saturating_sub(accepted_at(&message.id).unwrap_or(now));
                        if message.mailboxes > 0 {
                            tracing::info!(
                                target: "mailgate::delivery",
                                queue_id = message.id,
                                mailboxes = message.mailboxes,
                                relay = "local",
                                delay = waited,
                                dsn = "2.0.0",
                                status = "sent",
                                "to={} local mailbox(es), relay=local, delay={waited}, dsn=2.0.0, status=sent",
                                message.mailboxes
                            );
                        }
                        for _ in 0..message.mailboxes {
                            metrics::delivered_after("local", Duration::from_secs(waited));
                        }
                    }
                    for message in done.iter().filter(|d| d.remote) {
                        relay.submit(&message.id);
                    }
                    for notice in done.iter().filter_map(|d| d.notice.as_ref()) {
                        let queued =
                            queue_report(&spool, &hostname, &notice.spooled, &notice.recipients)
                                .await;
                        if let Some(id) = queued {
                            let about = &notice.spooled.envelope.id;
                            tracing::info!(queue_id = about, notice = id, "success report queued");
                            let _ = again.send(id);
                        }
                    }
                    for (id, wait) in retries {
                        let parks = waiting.contains(&id);
                        parked.retry_later(id, wait, parks, again.clone());
                    }
                    // Read again while the batch ran: the recovery may have passed before
                    // those were parked.
                    if !waiting.is_empty() && directory.standing() == Standing::Current {
                        parked.release(&again);
                    }
                }
                Err(e) => tracing::error!("local delivery task failed: {e}"),
            }
        }
    }
}

/// The messages deferred because the users source could not be read: each goes again at its
/// retry time or as soon as the source is read again, whichever comes first, and only once.
#[derive(Clone, Default)]
struct Parked(Arc<Mutex<HashSet<String>>>);

impl Parked {
    /// Sends `id` back to the worker after `wait`; if it `parks` (waits for the users), sooner
    /// when they are back.
    fn retry_later(
        &self,
        id: String,
        wait: Duration,
        parks: bool,
        again: mpsc::UnboundedSender<String>,
    ) {
        if parks {
            self.lock().insert(id.clone());
        }
        let parked = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            // Released at the recovery already: not a second time.
            if !parks || parked.lock().remove(&id) {
                let _ = again.send(id);
            }
        });
    }

    /// Each time the users become readable again, sends every parked message back to the
    /// worker at once.
    async fn release_on_recovery(
        self,
        mut recoveries: tokio::sync::watch::Receiver<u64>,
        again: mpsc::UnboundedSender<String>,
    ) {
        while recoveries.changed().await.is_ok() {
            self.release(&again);
        }
    }

    /// Sends every parked message back to the worker.
    fn release(&self, again: &mpsc::UnboundedSender<String>) {
        let ids: Vec<String> = self.lock().drain().collect();
        if !ids.is_empty() {
            tracing::info!(
                messages = ids.len(),
                "users source readable again: delivering what waited for it"
            );
        }
        for id in ids {
            let _ = again.send(id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// When a message was accepted: its queue id begins with the time, ten hex digits of seconds.
fn accepted_at(id: &str) -> Option<u64> {
    id.get(..10).and_then(|t| u64::from_str_radix(t, 16).ok())
}

/// Notes each failure in the message's queue state (for `mailgate queue list`) and says when
/// to try it again; a message done locally leaves no state behind unless it goes on to the
/// relay.
fn record_local_outcome(
    files: &QueueFiles,
    outcome: &super::deliver::BatchOutcome,
    retry: &QueueConfig,
) -> Vec<(String, Duration)> {
    let now = crate::mail::clock::unix_seconds();
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
