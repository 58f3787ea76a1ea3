//! Abuse limits shared by every protocol: connection slots per client address and per
//! protocol, and a failed-login budget per client address across connections and protocols.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts connections per client address; the guard gives the slot back.
#[derive(Default)]
pub struct PerIp(Mutex<HashMap<IpAddr, usize>>);

pub struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    pub fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = map.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// The time a client has to log in, counted from its connection (not from its last byte, so
/// that a NOOP now and then cannot hold a connection open forever), and its place among its
/// address's connections that have not logged in. Dropped at login: the place is given back.
pub struct LoginWindow {
    deadline: Instant,
    _slot: IpSlot,
    /// Its place among the connections that may be closed to make room (see [`Waiting`]).
    _place: Option<WaitingPlace>,
}

impl LoginWindow {
    /// A window of `timeout` for a client at `ip`, unless `max` of its connections are already
    /// waiting to log in.
    pub fn open(
        table: &Arc<PerIp>,
        ip: IpAddr,
        max: usize,
        timeout: Duration,
    ) -> Option<LoginWindow> {
        Some(LoginWindow {
            deadline: Instant::now() + timeout,
            _slot: table.take(ip, max)?,
            _place: None,
        })
    }

    /// The window of a connection that may be closed, while it waits, to make room for
    /// another client (`place`, from [`Waiting::register`]).
    pub fn evictable(self, place: Option<WaitingPlace>) -> LoginWindow {
        LoginWindow {
            _place: place,
            ..self
        }
    }

    /// What is left of the window (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// The connections waiting to log in, oldest first, each with a handle on its socket. When a
/// protocol's slots (or the gateway's) are full, the oldest of them is closed to make room for
/// the new client: connections that never log in, from however many addresses, cannot keep a
/// user out for longer than it takes them to be replaced, and a user's new connection, which
/// logs in with its first command or request, is the newest of all.
#[derive(Default)]
pub struct Waiting {
    next: std::sync::atomic::AtomicU64,
    entries: Mutex<std::collections::BTreeMap<u64, (&'static str, std::net::TcpStream)>>,
}

/// One connection's place in [`Waiting`], given up when dropped (at login, or at its end).
pub struct WaitingPlace {
    table: Arc<Waiting>,
    key: u64,
}

impl Waiting {
    /// Registers a connection of protocol `group` waiting to log in; `None` if its socket
    /// cannot be shared (it then just cannot be closed early).
    pub fn register(
        self: &Arc<Self>,
        group: &'static str,
        socket: &impl std::os::fd::AsFd,
    ) -> Option<WaitingPlace> {
        // A duplicate descriptor: shutting it down ends the connection, and it stays valid (no
        // reuse of the number by another connection) until the place is given up.
        let handle = std::net::TcpStream::from(socket.as_fd().try_clone_to_owned().ok()?);
        let key = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().insert(key, (group, handle));
        Some(WaitingPlace {
            table: self.clone(),
            key,
        })
    }

    /// Closes the oldest connection waiting to log in, of protocol `group` (or any): whether
    /// there was one. Its session sees the end of its connection and gives its slots back.
    pub fn evict_oldest(&self, group: Option<&str>) -> bool {
        let mut entries = self.lock();
        let key = entries
            .iter()
            .find(|(_, (g, _))| group.is_none_or(|want| *g == want))
            .map(|(key, _)| *key);
        let Some((_, socket)) = key.and_then(|key| entries.remove(&key)) else {
            return false;
        };
        drop(entries);
        let _ = socket.shutdown(std::net::Shutdown::Both);
        true
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::BTreeMap<u64, (&'static str, std::net::TcpStream)>,
    > {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for WaitingPlace {
    fn drop(&mut self) {
        self.table.lock().remove(&self.key);
    }
}

/// A client address has `limits.max-prelogin-connections-per-ip` connections waiting to log in.
#[derive(Debug)]
pub struct TooManyWaiting;

/// Failed logins per client address: a bucket of `capacity` tries that refills one try every
/// `window / capacity`. While it is empty, logins from that address are refused unchecked.
pub struct AuthBudget {
    capacity: u32,
    refill: Duration,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tries: f64,
    at: Instant,
}

/// Above this many addresses tracked, full buckets are dropped (they hold nothing).
const PRUNE_ABOVE: usize = 10_000;

impl AuthBudget {
    /// `capacity` 0 turns the budget off.
    pub fn new(capacity: u32, window: Duration) -> AuthBudget {
        AuthBudget {
            capacity,
            refill: window / capacity.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn level(&self, bucket: Bucket, now: Instant) -> f64 {
        let earned = now.duration_since(bucket.at).as_secs_f64() / self.refill.as_secs_f64();
        (bucket.tries + earned).min(f64::from(self.capacity))
    }

    /// Whether `ip` may try a login now.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.capacity == 0 {
            return true;
        }
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets
            .get(&ip)
            .is_none_or(|b| self.level(*b, Instant::now()) >= 1.0)
    }

    /// Takes one try from `ip`'s bucket after a failed login.
    pub fn failed(&self, ip: IpAddr) {
        if self.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let full = f64::from(self.capacity);
            buckets.retain(|_, b| self.level(*b, now) < full);
        }
        let level = buckets
            .get(&ip)
            .map_or(f64::from(self.capacity), |b| self.level(*b, now));
        buckets.insert(
            ip,
            Bucket {
                tries: (level - 1.0).max(0.0),
                at: now,
            },
        );
    }
}

#[cfg(test)]
mod login_window_tests {
    use super::*;

    #[test]
    fn windows_per_address_are_capped_and_given_back() {
        let table = Arc::new(PerIp::default());
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let minute = Duration::from_secs(60);
        let first = LoginWindow::open(&table, ip, 2, minute).expect("first");
        let _second = LoginWindow::open(&table, ip, 2, minute).expect("second");
        assert!(LoginWindow::open(&table, ip, 2, minute).is_none());
        assert!(LoginWindow::open(&table, other, 2, minute).is_some());
        drop(first);
        assert!(LoginWindow::open(&table, ip, 2, minute).is_some());
    }

    #[test]
    fn the_oldest_waiting_connection_of_a_group_is_closed_once_and_a_login_leaves_the_list() {
        use std::io::Read;
        let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = server.local_addr().expect("address");
        let mut clients = Vec::new();
        let mut accepted = Vec::new();
        for _ in 0..3 {
            clients.push(std::net::TcpStream::connect(address).expect("connect"));
            accepted.push(server.accept().expect("accept").0);
        }
        let waiting = Arc::new(Waiting::default());
        let oldest = waiting.register("imap", &accepted[0]).expect("register");
        let logged_in = waiting.register("imap", &accepted[1]).expect("register");
        let _other = waiting.register("pop3", &accepted[2]).expect("register");
        drop(logged_in);
        assert!(waiting.evict_oldest(Some("imap")));
        let mut buf = [0u8; 1];
        assert_eq!(clients[0].read(&mut buf).expect("end of stream"), 0);
        // The only other imap one logged in: nothing more to close of that group.
        assert!(!waiting.evict_oldest(Some("imap")));
        assert!(waiting.evict_oldest(None), "any group");
        drop(oldest);
        assert!(!waiting.evict_oldest(None));
    }

    #[test]
    fn the_window_is_a_deadline() {
        let table = Arc::new(PerIp::default());
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let window = LoginWindow::open(&table, ip, 1, Duration::from_millis(30)).expect("open");
        assert!(window.remaining() <= Duration::from_millis(30));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(window.remaining(), Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_empties_per_address_and_refills() {
        let budget = AuthBudget::new(3, Duration::from_millis(300));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            assert!(budget.allows(a));
            budget.failed(a);
        }
        assert!(!budget.allows(a), "empty after three failures");
        assert!(budget.allows(b), "other addresses unaffected");
        // One try comes back every 100 ms.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !budget.allows(a) {
            assert!(Instant::now() < deadline, "never refilled");
            std::thread::sleep(Duration::from_millis(10));
        }
        budget.failed(a);
        assert!(!budget.allows(a));
    }

    #[test]
    fn zero_capacity_is_off() {
        let budget = AuthBudget::new(0, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..100 {
            budget.failed(ip);
        }
        assert!(budget.allows(ip));
    }
}
