//! The clock: seconds since the Unix epoch (what the queue, the stores and the dates count in),
//! the `Clock` port plugins and the harness read the time through, and unique stamps built
//! from the time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long after the Unix epoch `time` is; zero for a time before it (a clock set wrong
/// gives old dates, never a failure).
pub fn since_epoch(time: SystemTime) -> Duration {
    time.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Whole seconds since the Unix epoch now.
pub fn unix_seconds() -> u64 {
    since_epoch(SystemTime::now()).as_secs()
}

/// Milliseconds since the Unix epoch now.
pub fn unix_millis() -> u64 {
    u64::try_from(since_epoch(SystemTime::now()).as_millis()).unwrap_or(u64::MAX)
}

/// The time `secs` seconds after the Unix epoch (a stored date back as a file time).
pub fn at_unix_seconds(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A stamp unique within the process and across restarts, sortable by time: seconds and
/// microseconds now, the process id and a counter, in hex (queue ids, POP3 APOP challenges).
pub fn unique_stamp() -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let now = since_epoch(SystemTime::now());
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:010x}{:05x}{:04x}{:06x}",
        now.as_secs(),
        now.subsec_micros(),
        process_id() & 0xffff,
        seq & 0xff_ffff
    )
}

/// The process id, asked of the kernel once (it is part of every stamp).
fn process_id() -> u32 {
    static ID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *ID.get_or_init(std::process::id)
}

/// Where the time comes from: the system's for the gateway, a fixed one for harness cases.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        unix_millis()
    }
}

/// A clock that says the same time until told otherwise (harness cases).
pub struct FixedClock(pub Mutex<u64>);

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_trip_through_a_file_time() {
        assert_eq!(
            since_epoch(at_unix_seconds(1_795_338_000)).as_secs(),
            1_795_338_000
        );
        assert_eq!(
            since_epoch(UNIX_EPOCH - Duration::from_secs(5)),
            Duration::ZERO
        );
        let (before, now, after) = (unix_seconds(), unix_millis() / 1000, unix_seconds());
        assert!(before <= now && now <= after);
    }

    #[test]
    fn stamps_differ_and_sort_by_time() {
        let (a, b) = (unique_stamp(), unique_stamp());
        assert_ne!(a, b);
        assert_eq!(a.len(), 25);
        assert!(a[..10] <= b[..10]);
    }
}
