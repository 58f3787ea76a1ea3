//! The thread that advances the engine's epoch, which is how plugin deadlines are enforced.
//! It ticks every [`EPOCH_TICK`] while plugin code runs or has run in the last
//! [`IDLE_BEFORE_PARKING`] ticks, and sleeps otherwise: an idle gateway does not wake a
//! thousand times a second. A call that starts wakes it; since a parked epoch does not move,
//! a deadline set at the call's start still counts from then.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use wasmtime::Engine;

/// How often the engine's epoch advances: the granularity of plugin deadlines.
/// Coarse on purpose: deadlines are tens of milliseconds or more, and each tick wakes a core
/// (at 1 ms, a thousand wakeups a second under load).
pub const EPOCH_TICK: Duration = Duration::from_millis(4);

/// Ticks without any plugin call before the thread parks (200 ms).
const IDLE_BEFORE_PARKING: u32 = 50;

/// A parked ticker still looks every so often (a safety net; calls wake it at once).
const PARKED_CHECK: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    stop: AtomicBool,
    parked: AtomicBool,
    /// Plugin calls running now.
    running: AtomicUsize,
    /// Plugin calls started so far.
    started: AtomicU64,
}

pub(super) struct Ticker {
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

/// Held while plugin code runs: keeps the ticker ticking.
pub(super) struct Running {
    state: Arc<State>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.state.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ticker {
    pub(super) fn start(engine: &Engine) -> Option<Ticker> {
        let state = Arc::new(State::default());
        let shared = state.clone();
        let engine = engine.clone();
        let thread = std::thread::Builder::new()
            .name("mailgate-epoch".into())
            .spawn(move || tick(&engine, &shared))
            .ok()?;
        Some(Ticker {
            state,
            thread: Some(thread),
        })
    }

    /// Marks plugin code as running until the guard is dropped, waking the ticker if parked.
    pub(super) fn running(&self) -> Running {
        self.state.running.fetch_add(1, Ordering::SeqCst);
        self.state.started.fetch_add(1, Ordering::SeqCst);
        if self.state.parked.load(Ordering::SeqCst) {
            if let Some(thread) = &self.thread {
                thread.thread().unpark();
            }
        }
        Running {
            state: self.state.clone(),
        }
    }

    fn thread(&self) -> Option<Thread> {
        self.thread.as_ref().map(|t| t.thread().clone())
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread() {
            thread.unpark();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn tick(engine: &Engine, state: &State) {
    let mut idle = 0u32;
    let mut seen = state.started.load(Ordering::SeqCst);
    while !state.stop.load(Ordering::SeqCst) {
        std::thread::sleep(EPOCH_TICK);
        engine.increment_epoch();
        let started = state.started.load(Ordering::SeqCst);
        if started != seen || state.running.load(Ordering::SeqCst) > 0 {
            (seen, idle) = (started, 0);
            continue;
        }
        idle += 1;
        if idle < IDLE_BEFORE_PARKING {
            continue;
        }
        // Announce the park, then look again: a call that started before the announcement is
        // seen here; one that starts after it finds `parked` set and unparks us.
        state.parked.store(true, Ordering::SeqCst);
        if state.running.load(Ordering::SeqCst) == 0
            && state.started.load(Ordering::SeqCst) == seen
            && !state.stop.load(Ordering::SeqCst)
        {
            std::thread::park_timeout(PARKED_CHECK);
        }
        state.parked.store(false, Ordering::SeqCst);
        idle = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parks_when_idle_and_wakes_for_a_call() {
        let engine = Engine::default();
        let ticker = Ticker::start(&engine).expect("thread");
        let parked = |want: bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if ticker.state.parked.load(Ordering::SeqCst) == want {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        };
        assert!(parked(true), "an idle ticker parks");
        let running = ticker.running();
        assert!(parked(false), "a call wakes it");
        // While the call runs it keeps ticking, past the idle bound.
        std::thread::sleep(EPOCH_TICK * (IDLE_BEFORE_PARKING + 50));
        assert!(!ticker.state.parked.load(Ordering::SeqCst));
        drop(running);
        assert!(parked(true), "and parks again afterwards");
    }
}
