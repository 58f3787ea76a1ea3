//! Blocking work (file-system scans, fsyncs, database commits) from async code that cannot
//! hand it to `spawn_blocking` (it borrows, or runs inside a plugin call): on the server's
//! multi-threaded runtime the worker thread becomes a blocking thread for the duration and
//! its other tasks move to a fresh worker, so no other client waits behind the work.
//! Elsewhere (the offline harness, tests on a current-thread runtime) it simply runs.

use tokio::runtime::{Handle, RuntimeFlavor};

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
