//! Graceful shutdown: the signal every session watches, and the count of sessions still open.
//!
//! On SIGTERM the server stops accepting and starts the drain: sessions between transactions
//! are told the server is going away (`421 4.3.2`, `* BYE`, `-ERR`) and closed; sessions in a
//! transaction finish it first. The server waits for the last session, bounded by
//! `server.drain-secs`, then stops.
//!
//! Background work (the relay queue, local delivery) sees the same drain as a [`Deadline`]:
//! from the signal on it starts nothing new, and what it has under way knows when the process
//! will stop, so that it can stop waiting on a peer in time to record its outcome.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Default)]
struct State {
    draining: AtomicBool,
    started: Notify,
    sessions: AtomicUsize,
    ended: Notify,
}

/// The server's side: starts the drain and waits for it.
#[derive(Clone, Default)]
pub struct Drain {
    state: Arc<State>,
    deadline: Deadline,
}

/// When the drain ends, for work that is not a session: unset until the signal, then the
/// instant the process stops whatever is still running. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Deadline {
    state: Arc<DeadlineState>,
}

#[derive(Debug, Default)]
struct DeadlineState {
    at: OnceLock<Instant>,
    started: Notify,
}

/// A session's side: whether to go, and (while held) one open session.
pub struct DrainWatch {
    state: Arc<State>,
}

impl Drain {
    pub fn new() -> Drain {
        Drain::default()
    }

    /// A watch for one new session, counted until dropped.
    pub fn watch(&self) -> DrainWatch {
        self.state.sessions.fetch_add(1, Ordering::SeqCst);
        DrainWatch {
            state: self.state.clone(),
        }
    }

    /// The drain's end as background work sees it.
    pub fn deadline(&self) -> Deadline {
        self.deadline.clone()
    }

    /// Tells every session to finish, then waits until none is open or `bound` has passed.
    /// Returns the sessions still open at the end (cut off when the process exits). The
    /// [`Deadline`] starts here too (if it has not already), with the same bound.
    pub async fn run(&self, bound: Duration) -> usize {
        self.deadline.start(bound);
        self.state.draining.store(true, Ordering::SeqCst);
        self.state.started.notify_waiters();
        let all_ended = async {
            loop {
                let ended = self.state.ended.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                if self.open() == 0 {
                    return;
                }
                ended.await;
            }
        };
        let _ = tokio::time::timeout(bound, all_ended).await;
        self.open()
    }

    pub fn open(&self) -> usize {
        self.state.sessions.load(Ordering::SeqCst)
    }
}

impl Deadline {
    /// Starts the drain: the process stops `bound` from now. Later calls change nothing.
    pub fn start(&self, bound: Duration) {
        let _ = self.state.at.set(Instant::now() + bound);
        self.state.started.notify_waiters();
    }

    pub fn is_draining(&self) -> bool {
        self.state.at.get().is_some()
    }

    /// Time left before the process stops; `None` while it is not draining.
    pub fn left(&self) -> Option<Duration> {
        self.state
            .at
            .get()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Resolves once the drain has started (at once if it has).
    pub async fn begun(&self) {
        let started = self.state.started.notified();
        tokio::pin!(started);
        started.as_mut().enable();
        if self.state.at.get().is_none() {
            started.await;
        }
    }

    /// Resolves `ahead` of the end of the drain (at once if that time has passed); never
    /// while no drain has started.
    pub async fn near(&self, ahead: Duration) {
        self.begun().await;
        if let Some(&at) = self.state.at.get() {
            tokio::time::sleep_until(at.checked_sub(ahead).unwrap_or(at)).await;
        }
    }
}

impl DrainWatch {
    /// A watch for a session this one opens inside the server (a JMAP submission's SMTP
    /// session), counted until dropped like any other.
    pub fn another(&self) -> DrainWatch {
        self.state.sessions.fetch_add(1, Ordering::SeqCst);
        DrainWatch {
            state: self.state.clone(),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.state.draining.load(Ordering::SeqCst)
    }

    /// Resolves once the drain has started (at once if it has).
    pub async fn requested(&self) {
        let started = self.state.started.notified();
        tokio::pin!(started);
        started.as_mut().enable();
        if self.is_draining() {
            return;
        }
        started.await;
    }
}

impl Drop for DrainWatch {
    fn drop(&mut self) {
        self.state.sessions.fetch_sub(1, Ordering::SeqCst);
        self.state.ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_drain_waits_for_open_sessions_and_no_longer_than_its_bound() {
        let drain = Drain::new();
        let watch = drain.watch();
        let session = tokio::spawn(async move {
            watch.requested().await;
            // Finishing a transaction.
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(watch);
        });
        assert_eq!(drain.run(Duration::from_secs(5)).await, 0);
        session.await.expect("session");

        let stuck = drain.watch();
        let started = std::time::Instant::now();
        assert_eq!(drain.run(Duration::from_millis(100)).await, 1);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(stuck.is_draining());
    }

    #[tokio::test]
    async fn the_deadline_is_unset_until_the_drain_and_fires_ahead_of_its_end() {
        let drain = Drain::new();
        let deadline = drain.deadline();
        assert!(!deadline.is_draining());
        assert_eq!(deadline.left(), None);
        let early = tokio::time::timeout(
            Duration::from_millis(100),
            deadline.near(Duration::from_secs(1)),
        )
        .await;
        assert!(early.is_err(), "nothing to be near before the drain");

        let waiter = {
            let deadline = deadline.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                deadline.near(Duration::from_millis(300)).await;
                started.elapsed()
            })
        };
        tokio::task::yield_now().await;
        drain.run(Duration::from_millis(500)).await;
        let waited = waiter.await.expect("waiter");
        assert!(deadline.is_draining());
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_millis(450),
            "{waited:?}"
        );
        let left = deadline.left().expect("draining");
        assert!(left <= Duration::from_millis(300), "{left:?}");
        // A second start does not move the end.
        deadline.start(Duration::from_secs(60));
        assert!(deadline.left().is_some_and(|l| l <= left));
    }
}
