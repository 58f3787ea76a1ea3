//! Graceful shutdown: the signal every session watches, and the count of sessions still open.
//!
//! On SIGTERM the server stops accepting and starts the drain: sessions between transactions
//! are told the server is going away (`421 4.3.2`, `* BYE`, `-ERR`) and closed; sessions in a
//! transaction finish it first. The server waits for the last session, bounded by
//! `server.drain-secs`, then stops.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

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

    /// Tells every session to finish, then waits until none is open or `bound` has passed.
    /// Returns the sessions still open at the end (cut off when the process exits).
    pub async fn run(&self, bound: Duration) -> usize {
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
}
