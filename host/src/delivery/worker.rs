//! The local delivery worker: takes spooled messages, writes them into their recipients'
//! Maildirs in batches, passes those with remote recipients on to the relay queue, and
//! schedules retries for those that failed. At shutdown it finishes the batch under way and
//! takes no other: what is left stays in the spool for the next start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::QueueConfig;
use crate::net::drain::Deadline;
use crate::queue::manager::QueueManager;
use crate::queue::spool::Spool;
use crate::queue::state::QueueFiles;
use crate::store::users::UserDirectory;
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
    /// Messages with remote recipients go on to the relay queue.
    pub relay: QueueManager,
    /// Where a message to retry is sent again (the worker's own input).
    pub again: mpsc::UnboundedSender<String>,
    pub retry: QueueConfig,
    /// Set when the server starts stopping.
    pub deadline: Deadline,
}

impl LocalDelivery {
    /// Delivers the ids that arrive on `queue` until it closes or the server starts
    /// stopping; returns once the batch under way then is written and recorded. (Delivery is
    /// idempotent, so even a batch cut by the process ending is not delivered twice.)
    pub async fn run(self, mut queue: mpsc::UnboundedReceiver<String>) {
        let LocalDelivery {
            spool,
            users,
            mail_root,
            relay,
            again,
            retry,
            deadline,
        } = self;
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
            let (spool, root) = (spool.clone(), mail_root.clone());
            let (users, standing) = (users.get(), users.standing());
            let (files, retry) = (relay.files().clone(), retry.clone());
            let batch = ids.len();
            let result = tokio::task::spawn_blocking(move || {
                let outcome = super::local::deliver_batch(&spool, (&users, standing), &root, &ids);
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
}

/// Notes each failure in the message's queue state (for `mailgate queue list`) and says when
/// to try it again; a message done locally leaves no state behind unless it goes on to the
/// relay.
fn record_local_outcome(
    files: &QueueFiles,
    outcome: &super::local::BatchOutcome,
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
