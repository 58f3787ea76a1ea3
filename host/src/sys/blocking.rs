//! Blocking work (file-system scans, fsyncs, database commits) from async code that cannot
//! hand it to `spawn_blocking` (it borrows, or runs inside a plugin call): on the server's
//! multi-threaded runtime the worker thread becomes a blocking thread for the duration and
//! its other tasks move to a fresh worker, so no other client waits behind the work.
//! Elsewhere (the offline harness, tests on a current-thread runtime) it simply runs.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::runtime::{Handle, RuntimeFlavor};

/// Set once the server's drain has run out: work on the blocking pool cannot be cancelled
/// from outside, and the process cannot exit while it runs, so every work budget (searches,
/// queries, scans) checks this flag as it counts and gives up.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Tells every budgeted piece of blocking work to stop: the process is about to exit.
pub fn stop_all() {
    STOPPING.store(true, Ordering::Relaxed);
}

/// Whether blocking work should give up now.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

pub fn run<T>(work: impl FnOnce() -> T) -> T {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_outside_any_runtime() {
        assert_eq!(super::run(|| 7), 7);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn runs_on_a_current_thread_runtime() {
        assert_eq!(super::run(|| 8), 8);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leaves_the_worker_on_a_multi_thread_runtime() {
        assert_eq!(super::run(|| 9), 9);
    }
}
