//! Abuse limits shared by every protocol: connection slots per client address, per protocol
//! and per user, the connections that may be closed to make room for others, and a
//! failed-login budget per client address across connections and protocols.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts connections per key (a client address, a user); the guard gives the slot back.
pub struct PerKey<K: Eq + Hash>(Mutex<HashMap<K, usize>>);

/// One connection counted in a [`PerKey`] table, until dropped.
pub struct KeySlot<K: Eq + Hash> {
    table: Arc<PerKey<K>>,
    key: K,
}

/// Connections per client address.
pub type PerIp = PerKey<IpAddr>;
pub type IpSlot = KeySlot<IpAddr>;

impl<K: Eq + Hash> Default for PerKey<K> {
    fn default() -> Self {
        PerKey(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + Hash + Clone> PerKey<K> {
    /// A slot for `key`, unless `max` of its connections hold one already.
    pub fn take(self: &Arc<Self>, key: K, max: usize) -> Option<KeySlot<K>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = map.entry(key.clone()).or_insert(0);
        if *count >= max {
            if *count == 0 {
                map.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(KeySlot {
            table: self.clone(),
            key,
        })
    }
}

impl<K: Eq + Hash> KeySlot<K> {
    /// Whom (or what) the slot counts.
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Eq + Hash> Drop for KeySlot<K> {
    fn drop(&mut self) {
        let mut map = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = map.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.key);
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

/// The connections that may be closed to make room, oldest first, each with a handle on its
/// socket: those waiting to log in (IMAP, POP3, JMAP), and SMTP sessions from their connection
/// or their last accepted message on. When a protocol's slots (or the gateway's) are full, the
/// oldest of them is closed to make room for the new client: connections that never log in or
/// never deliver, from however many addresses, cannot keep a user or a sender out for longer
/// than it takes them to be replaced, and a user's new connection, which logs in with its
/// first command or request, is the newest of all.
#[derive(Default)]
pub struct Waiting {
    next: std::sync::atomic::AtomicU64,
    entries: Mutex<std::collections::BTreeMap<u64, Entry>>,
}

/// One connection in [`Waiting`].
struct Entry {
    group: &'static str,
    socket: std::net::TcpStream,
    /// Set when its session says goodbye itself (see [`Waiting::register_told`]).
    told: Option<Arc<AtomicBool>>,
}

/// One connection's place in [`Waiting`], given up when dropped (at login, or at its end).
pub struct WaitingPlace {
    table: Arc<Waiting>,
    key: u64,
    /// Set when the connection was chosen to make room.
    evicted: Arc<AtomicBool>,
}

impl Waiting {
    /// Registers a connection of protocol `group` waiting to log in; `None` if its socket
    /// cannot be shared (it then just cannot be closed early). Chosen to make room, it is
    /// closed both ways at once.
    pub fn register(
        self: &Arc<Self>,
        group: &'static str,
        socket: &impl std::os::fd::AsFd,
    ) -> Option<WaitingPlace> {
        self.insert(group, socket, false)
    }

    /// [`Waiting::register`] for a session that tells its client why it goes (SMTP's 421):
    /// chosen to make room, only its reading side is shut, which ends the read it waits in,
    /// and its place says [`WaitingPlace::evicted`]; it then writes its goodbye and closes.
    pub fn register_told(
        self: &Arc<Self>,
        group: &'static str,
        socket: &impl std::os::fd::AsFd,
    ) -> Option<WaitingPlace> {
        self.insert(group, socket, true)
    }

    fn insert(
        self: &Arc<Self>,
        group: &'static str,
        socket: &impl std::os::fd::AsFd,
        told: bool,
    ) -> Option<WaitingPlace> {
        // A duplicate descriptor: shutting it down ends the connection, and it stays valid (no
        // reuse of the number by another connection) until the place is given up.
        let handle = std::net::TcpStream::from(socket.as_fd().try_clone_to_owned().ok()?);
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let evicted = Arc::new(AtomicBool::new(false));
        let entry = Entry {
            group,
            socket: handle,
            told: told.then(|| evicted.clone()),
        };
        self.lock().insert(key, entry);
        Some(WaitingPlace {
            table: self.clone(),
            key,
            evicted,
        })
    }

    /// Closes the oldest connection that may be closed, of protocol `group` (or any): whether
    /// there was one. Its session sees the end of its connection and gives its slots back.
    pub fn evict_oldest(&self, group: Option<&str>) -> bool {
        let mut entries = self.lock();
        let key = entries
            .iter()
            .find(|(_, entry)| group.is_none_or(|want| entry.group == want))
            .map(|(key, _)| *key);
        let Some(entry) = key.and_then(|key| entries.remove(&key)) else {
            return false;
        };
        drop(entries);
        match entry.told {
            Some(evicted) => {
                evicted.store(true, Ordering::Release);
                let _ = entry.socket.shutdown(std::net::Shutdown::Read);
            }
            None => {
                let _ = entry.socket.shutdown(std::net::Shutdown::Both);
            }
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl WaitingPlace {
    /// Moves the connection to the back of the line, as if it had just connected (an SMTP
    /// session after each accepted message). Nothing if it was already chosen to make room.
    pub fn renew(&mut self) {
        let mut entries = self.table.lock();
        if let Some(entry) = entries.remove(&self.key) {
            self.key = self.table.next.fetch_add(1, Ordering::Relaxed);
            entries.insert(self.key, entry);
        }
    }

    /// Whether the connection was chosen to make room for another.
    pub fn evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
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

    /// A session that says goodbye itself: its reading side ends, it may still write, and
    /// its place says why; a renewed place goes to the back of the line.
    #[test]
    fn a_told_connection_can_still_write_and_a_renewed_one_is_the_newest() {
        use std::io::{Read, Write};
        let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = server.local_addr().expect("address");
        let mut clients = Vec::new();
        let mut accepted = Vec::new();
        for _ in 0..2 {
            clients.push(std::net::TcpStream::connect(address).expect("connect"));
            accepted.push(server.accept().expect("accept").0);
        }
        let waiting = Arc::new(Waiting::default());
        let mut delivered = waiting
            .register_told("smtp", &accepted[0])
            .expect("register");
        let idle = waiting
            .register_told("smtp", &accepted[1])
            .expect("register");
        delivered.renew();
        assert!(waiting.evict_oldest(Some("smtp")));
        assert!(idle.evicted() && !delivered.evicted());
        let mut buf = [0u8; 8];
        assert_eq!(accepted[1].read(&mut buf).expect("end of reading"), 0);
        accepted[1].write_all(b"421\r\n").expect("still writable");
        drop(accepted.remove(1));
        let mut told = String::new();
        clients[1].read_to_string(&mut told).expect("goodbye");
        assert_eq!(told, "421\r\n");
        assert!(waiting.evict_oldest(None));
        assert!(delivered.evicted());
    }

    #[test]
    fn slots_per_user_are_capped_and_given_back() {
        let table: Arc<PerKey<(&str, String)>> = Arc::new(PerKey::default());
        let ann = ("imap", "ann@example.test".to_string());
        let first = table.take(ann.clone(), 2).expect("first");
        let _second = table.take(ann.clone(), 2).expect("second");
        assert!(table.take(ann.clone(), 2).is_none());
        assert!(table.take(("pop3", ann.1.clone()), 2).is_some());
        assert_eq!(first.key(), &ann);
        drop(first);
        assert!(table.take(ann, 2).is_some());
        assert!(table.take(("jmap", "bob".into()), 0).is_none());
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
