//! One circuit breaker per milter member, shared by every session. A milter that cannot be
//! reached would otherwise cost each session a connection attempt, a warning and a fault per
//! stage; after [`THRESHOLD`] connection failures in a row the breaker opens, and sessions skip
//! the member (its failure policy answers) without trying to connect. After a backoff that
//! doubles from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`] one session tries again (half-open): a
//! connection closes the breaker, a failure opens it for the next backoff. The outage is
//! logged once when the breaker opens and once when the member is back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::telemetry::metrics;

/// Connection failures in a row that open the breaker.
pub const THRESHOLD: u32 = 3;
/// How long the breaker stays open the first time.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest it stays open before another try.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The member is used.
    Closed,
    /// The member is skipped until the backoff is over.
    Open,
    /// One session is trying the member again.
    HalfOpen,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }

    /// The value of `mailgate_milter_member_state`.
    fn metric(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
}

/// What a session may do with the member now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Connect (the breaker is closed, or this is the half-open try).
    Try,
    /// Do not: the member is down, for this reason.
    Skip(String),
}

/// The breaker of one member.
pub struct Breaker {
    member: String,
    inner: Mutex<Inner>,
}

struct Inner {
    state: State,
    /// Connection failures in a row.
    failures: u32,
    /// The backoff of the current (or last) opening.
    backoff: Duration,
    /// While open: when the next try may start; while half-open: when the try started.
    since: Instant,
    /// When the outage began (the breaker first opened).
    down_since: Option<Instant>,
    last_error: String,
    skipped: u64,
}

impl Breaker {
    fn new(member: &str) -> Breaker {
        metrics::milter_member_state(member, State::Closed.metric());
        Breaker {
            member: member.to_string(),
            inner: Mutex::new(Inner {
                state: State::Closed,
                failures: 0,
                backoff: FIRST_BACKOFF,
                since: Instant::now(),
                down_since: None,
                last_error: String::new(),
                skipped: 0,
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state now, and the last connection error while the member is down.
    pub fn state(&self) -> (State, Option<String>) {
        let inner = self.inner();
        let error = (inner.state != State::Closed).then(|| inner.last_error.clone());
        (inner.state, error)
    }

    /// Whether a session may connect now; `stale_try` is how long a half-open try may take
    /// before another session is let in (a session that ended mid-try never reports).
    pub fn admit(&self, stale_try: Duration) -> Admission {
        let mut inner = self.inner();
        let now = Instant::now();
        let skip = match inner.state {
            State::Closed => false,
            State::Open => now < inner.since,
            State::HalfOpen => now.saturating_duration_since(inner.since) < stale_try,
        };
        if skip {
            inner.skipped = inner.skipped.saturating_add(1);
            metrics::milter_skipped(&self.member);
            return Admission::Skip(format!(
                "down, not asked (circuit open): {}",
                inner.last_error
            ));
        }
        if inner.state != State::Closed {
            inner.state = State::HalfOpen;
            inner.since = now;
            metrics::milter_member_state(&self.member, State::HalfOpen.metric());
        }
        Admission::Try
    }

    /// A later stage of a session that found the member down: not asked either.
    pub fn skipped(&self) {
        let mut inner = self.inner();
        inner.skipped = inner.skipped.saturating_add(1);
        metrics::milter_skipped(&self.member);
    }

    /// A connection was opened.
    pub fn connected(&self) {
        let mut inner = self.inner();
        if let Some(down) = inner.down_since.take() {
            tracing::info!(
                member = self.member,
                down_secs = down.elapsed().as_secs(),
                skipped = inner.skipped,
                "milter {}: back up, circuit closed",
                self.member
            );
        }
        inner.state = State::Closed;
        inner.failures = 0;
        inner.backoff = FIRST_BACKOFF;
        inner.skipped = 0;
        metrics::milter_member_state(&self.member, State::Closed.metric());
    }

    /// A connection could not be opened (or negotiated), for `why`.
    pub fn failed(&self, why: &str) {
        let mut inner = self.inner();
        let now = Instant::now();
        inner.failures = inner.failures.saturating_add(1);
        inner.last_error = why.to_string();
        match inner.state {
            State::HalfOpen => {
                inner.backoff = inner.backoff.saturating_mul(2).min(MAX_BACKOFF);
                tracing::debug!(
                    member = self.member,
                    "milter {}: still down: {why}",
                    self.member
                );
            }
            State::Closed if inner.failures >= THRESHOLD => {
                inner.backoff = FIRST_BACKOFF;
                inner.down_since = Some(now);
                tracing::warn!(
                    member = self.member,
                    failures = inner.failures,
                    "milter {}: down, circuit open ({why}); sessions skip it and apply its failure policy, trying again after {:?} and less and less often",
                    self.member,
                    inner.backoff
                );
            }
            State::Closed | State::Open => {
                tracing::debug!(
                    member = self.member,
                    "milter {}: cannot connect: {why}",
                    self.member
                );
                return;
            }
        }
        inner.state = State::Open;
        inner.since = now + inner.backoff;
        metrics::milter_member_state(&self.member, State::Open.metric());
    }
}

/// The breakers of the members in service, by member name: a reload that keeps a member keeps
/// its breaker, and `/healthz` reads them all.
fn registry() -> &'static Mutex<BTreeMap<String, Weak<Breaker>>> {
    static BREAKERS: OnceLock<Mutex<BTreeMap<String, Weak<Breaker>>>> = OnceLock::new();
    BREAKERS.get_or_init(Default::default)
}

/// The breaker of `member`: the one in service, or a new one (closed).
pub fn for_member(member: &str) -> Arc<Breaker> {
    let mut breakers = registry().lock().unwrap_or_else(|e| e.into_inner());
    breakers.retain(|_, b| b.strong_count() > 0);
    if let Some(breaker) = breakers.get(member).and_then(Weak::upgrade) {
        return breaker;
    }
    let breaker = Arc::new(Breaker::new(member));
    breakers.insert(member.to_string(), Arc::downgrade(&breaker));
    breaker
}

/// Each member in service, its breaker's state and, while down, its last connection error.
pub fn states() -> Vec<(String, State, Option<String>)> {
    let breakers = registry().lock().unwrap_or_else(|e| e.into_inner());
    breakers
        .iter()
        .filter_map(|(member, b)| {
            let (state, error) = b.upgrade()?.state();
            Some((member.clone(), state, error))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_skips_then_lets_one_try_and_closes_on_success() {
        let breaker = Breaker::new("unit-breaker");
        let stale = Duration::from_secs(5);
        for _ in 0..THRESHOLD - 1 {
            assert_eq!(breaker.admit(stale), Admission::Try);
            breaker.failed("refused");
        }
        assert_eq!(breaker.state().0, State::Closed);
        assert_eq!(breaker.admit(stale), Admission::Try);
        breaker.failed("refused");
        assert_eq!(breaker.state(), (State::Open, Some("refused".into())));
        assert!(matches!(breaker.admit(stale), Admission::Skip(why) if why.contains("refused")));
        // The backoff is over: one try, the others skip while it runs.
        breaker.inner().since = Instant::now();
        assert_eq!(breaker.admit(stale), Admission::Try);
        assert_eq!(breaker.state().0, State::HalfOpen);
        assert!(matches!(breaker.admit(stale), Admission::Skip(_)));
        breaker.failed("refused again");
        assert_eq!(breaker.state().0, State::Open);
        assert_eq!(breaker.inner().backoff, FIRST_BACKOFF * 2);
        breaker.inner().since = Instant::now();
        assert_eq!(breaker.admit(stale), Admission::Try);
        breaker.connected();
        assert_eq!(breaker.state(), (State::Closed, None));
        assert_eq!(breaker.admit(stale), Admission::Try);
    }

    #[test]
    fn the_backoff_stops_growing_at_its_cap() {
        let breaker = Breaker::new("unit-breaker-cap");
        for _ in 0..THRESHOLD {
            breaker.failed("refused");
        }
        for _ in 0..20 {
            breaker.inner().since = Instant::now();
            assert_eq!(breaker.admit(Duration::from_secs(5)), Admission::Try);
            breaker.failed("refused");
        }
        assert_eq!(breaker.inner().backoff, MAX_BACKOFF);
    }
}
