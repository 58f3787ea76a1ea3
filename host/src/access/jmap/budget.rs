//! What one API request may cost, counted before it is spent.
//!
//! The work and memory of a JMAP request grow with what it asks for: a result reference copies
//! a whole earlier response, `*` pointers map over lists, `/get` renders as many objects and
//! properties as named, a wide message has as many body parts as it was built with, a query
//! runs every condition against every email. Each of those expansions takes from the
//! request's [`Budget`] *before* it is built; when the budget would go below zero the call
//! gets `requestTooLarge` with a `limit` property naming which budget, and the request goes
//! on with the calls after it (which find the budget spent). The response as a whole is
//! therefore bounded by [`MAX_RESPONSE_BYTES`] plus the small error objects.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use super::error::MethodError;

/// Bytes one request may materialise: its responses and the values its result references
/// copy, counted as they are held in memory ([`json_size_within`]). Eight requests of a user
/// at once (`maxConcurrentRequests`) stay within a few hundred MiB.
pub const MAX_RESPONSE_BYTES: u64 = 16 << 20;
/// The limit name for [`MAX_RESPONSE_BYTES`].
pub const RESPONSE_LIMIT: &str = "maxSizeResponse";

/// Work one API request may do, all its calls together: bytes of message text examined (each
/// message read counts its size once), plus [`CONDITION_COST`] for every condition checked on
/// every email — the same measure and size as IMAP SEARCH's budget.
pub const MAX_QUERY_WORK: u64 = 1 << 30;
/// The limit name for [`MAX_QUERY_WORK`] and the query's deadline.
pub const QUERY_WORK_LIMIT: &str = "maxQueryWork";
/// What checking one condition on one email costs at least.
pub const CONDITION_COST: u64 = 64;

/// What storing one imported email counts against the request's work (besides its bytes, see
/// [`WRITE_FACTOR`]): a file written and synced. With [`MAX_QUERY_WORK`], a request stores at
/// most 4 096 emails, however they are spread over its calls.
pub const IMPORT_COST: u64 = 256 << 10;
/// What creating, changing or destroying one mailbox counts against the request's work: a
/// directory made, renamed or removed, and its index written — as an import's file.
pub const FOLDER_COST: u64 = IMPORT_COST;
/// What each byte of an imported email counts: it is read, parsed and written to disk.
pub const WRITE_FACTOR: u64 = 4;

/// What an estimate of one rendered body part counts, before its properties' own size.
pub const PART_COST: u64 = 64;
/// What an estimate counts for each property of an object, besides the value.
pub const PROPERTY_COST: u64 = 96;

/// The error of a call that would go over a budget: `requestTooLarge` with the limit's name.
pub fn too_large(limit: &'static str, description: impl Into<String>) -> MethodError {
    MethodError::limit("requestTooLarge", limit, description)
}

/// One request's budget of materialised JSON bytes, and of work, shared by its method calls.
#[derive(Debug)]
pub struct Budget {
    left: AtomicU64,
    /// The request's work: every method that scans emails adds to it.
    pub work: Work,
}

impl Budget {
    pub fn new(bytes: u64) -> Budget {
        Budget {
            left: AtomicU64::new(bytes),
            work: Work::new(MAX_QUERY_WORK, REQUEST_TIME),
        }
    }

    /// Bytes still to be had.
    pub fn left(&self) -> u64 {
        self.left.load(Ordering::Relaxed)
    }

    /// Takes `bytes`, or spends what is left and refuses: once a request has gone over, every
    /// later expansion is refused at once (no second walk of a large value to find out).
    pub fn take(&self, bytes: u64) -> Result<(), MethodError> {
        let taken = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes)
            });
        if taken.is_err() {
            self.left.store(0, Ordering::Relaxed);
            return Err(too_large(
                RESPONSE_LIMIT,
                format!("the request's response would exceed {MAX_RESPONSE_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    /// Takes the serialised size of `value`, measured only up to what is left.
    pub fn take_value(&self, value: &Value) -> Result<(), MethodError> {
        let size = json_size_within(value, self.left()).unwrap_or(u64::MAX);
        self.take(size)
    }
}

/// A meter for one method's own estimates while it builds its answer, started from what the
/// request's budget has left; the answer's real size is taken from the [`Budget`] afterwards.
#[derive(Debug)]
pub struct Meter {
    left: u64,
}

impl Meter {
    pub fn new(budget: &Budget) -> Meter {
        Meter {
            left: budget.left(),
        }
    }

    /// A meter that never runs out, for callers bounded otherwise.
    pub fn unbounded() -> Meter {
        Meter { left: u64::MAX }
    }

    #[cfg(test)]
    pub fn with(left: u64) -> Meter {
        Meter { left }
    }

    pub fn take(&mut self, bytes: u64) -> Result<(), MethodError> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => {
                self.left = 0;
                Err(too_large(
                    RESPONSE_LIMIT,
                    format!("the answer would exceed {MAX_RESPONSE_BYTES} bytes"),
                ))
            }
        }
    }
}

/// What `value` costs held in memory as a `serde_json::Value` (each value's 32-byte slot, a
/// string's bytes, an object's keys and entries) — more than its serialised size, which it
/// bounds from above — or `None` as soon as that is known to exceed `cap`: the walk costs at
/// most about `cap` steps.
pub fn json_size_within(value: &Value, cap: u64) -> Option<u64> {
    const SLOT: u64 = 32;
    let mut size = 0u64;
    let mut pending: Vec<&Value> = vec![value];
    while let Some(value) = pending.pop() {
        let here = match value {
            Value::Null | Value::Bool(_) | Value::Number(_) => SLOT,
            Value::String(s) => SLOT + s.len() as u64,
            Value::Array(items) => {
                pending.extend(items.iter());
                SLOT
            }
            Value::Object(map) => {
                // A key's string and a map entry besides the value's own slot.
                let keys: u64 = map.keys().map(|k| k.len() as u64 + 48).sum();
                pending.extend(map.values());
                SLOT + keys
            }
        };
        size = size.saturating_add(here);
        if size > cap {
            return None;
        }
    }
    Some(size)
}

/// How long one API request may work, all its method calls together: past it, the call
/// under way and every later one get `requestTooLarge` (limit [`QUERY_WORK_LIMIT`]).
pub const REQUEST_TIME: std::time::Duration = std::time::Duration::from_secs(20);

/// A request's work budget, shared by all its method calls (queries, gets, threads): a
/// counter every scan adds to, and one deadline from the request's start. Each addition also
/// checks the clock, so the loops that add as they go stop at the deadline, not after.
#[derive(Debug)]
pub struct Work {
    done: AtomicU64,
    max: u64,
    deadline: std::time::Instant,
}

impl Work {
    pub fn new(max: u64, time: std::time::Duration) -> Work {
        Work {
            done: AtomicU64::new(0),
            max,
            deadline: std::time::Instant::now() + time,
        }
    }

    /// Counts `units` of work; past the maximum, or past the deadline, refuses (and keeps
    /// refusing: a request that went over does no more work).
    pub fn add(&self, units: u64) -> Result<(), MethodError> {
        let before = self
            .done
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |done| {
                Some(done.saturating_add(units))
            })
            .unwrap_or_else(|done| done);
        if before.saturating_add(units) > self.max {
            return Err(too_large(
                QUERY_WORK_LIMIT,
                format!(
                    "the request would examine more than {} bytes: narrow it",
                    self.max
                ),
            ));
        }
        self.check_time()
    }

    /// Past the deadline the work stops, and when the server stops.
    pub fn check_time(&self) -> Result<(), MethodError> {
        if crate::sys::blocking::stopping() {
            return Err(MethodError::with(
                "serverUnavailable",
                "the server is shutting down",
            ));
        }
        if std::time::Instant::now() > self.deadline {
            return Err(too_large(
                QUERY_WORK_LIMIT,
                format!(
                    "the request ran past its {} s: narrow it",
                    REQUEST_TIME.as_secs()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_are_close_to_the_serialised_length_and_stop_at_the_cap() {
        let value = json!({"list": [{"id": "abc", "n": 1}, null, true], "s": "hello"});
        let exact = serde_json::to_vec(&value).expect("serialises").len() as u64;
        let measured = json_size_within(&value, u64::MAX).expect("within");
        assert!(measured >= exact, "{measured} < {exact}");
        assert!(measured <= exact * 10, "{measured} far above {exact}");
        assert_eq!(json_size_within(&value, 10), None);
    }

    #[test]
    fn a_budget_refuses_what_goes_over_and_stays_spent() {
        let budget = Budget::new(100);
        assert!(budget.take(60).is_ok());
        let error = budget.take(50).expect_err("over");
        assert_eq!(error.kind, "requestTooLarge");
        assert_eq!(error.limit, Some(RESPONSE_LIMIT));
        assert_eq!(budget.left(), 0);
        assert!(budget.take(1).is_err());
        assert!(budget.take(0).is_ok());
    }

    #[test]
    fn taking_a_value_counts_its_size() {
        let budget = Budget::new(1000);
        budget.take_value(&json!(vec!["a"; 10])).expect("fits");
        assert!(budget.left() < 1000 - 30);
        let big = json!(vec!["x".repeat(100); 20]);
        assert!(budget.take_value(&big).is_err());
    }

    #[test]
    fn meters_and_work_refuse_past_their_bound() {
        let mut meter = Meter::with(10);
        assert!(meter.take(10).is_ok());
        assert_eq!(
            meter.take(1).err().and_then(|e| e.limit),
            Some(RESPONSE_LIMIT)
        );
        let work = Work::new(100, std::time::Duration::from_secs(60));
        assert!(work.add(100).is_ok());
        assert_eq!(
            work.add(1).err().and_then(|e| e.limit),
            Some(QUERY_WORK_LIMIT)
        );
        let late = Work::new(100, std::time::Duration::ZERO);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(late.check_time().is_err());
        assert!(late.add(1).is_err(), "adding checks the clock too");
    }

    #[test]
    fn one_request_s_calls_share_one_work_budget() {
        let budget = Budget::new(1000);
        let max = MAX_QUERY_WORK / 2 + 1;
        assert!(budget.work.add(max).is_ok(), "a first call");
        assert!(budget.work.add(max).is_err(), "a second one finds it spent");
        assert!(budget.work.add(0).is_err(), "and so does every later one");
    }
}
