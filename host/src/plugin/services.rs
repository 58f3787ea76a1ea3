//! What host imports reach outside a plugin: the key-value store, DNS and the clock. Each is a
//! trait so the gateway uses real ones and the harness uses fixed, scripted ones.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// DNS record types plugins may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordType {
    A,
    Aaaa,
    Mx,
    Txt,
    Ptr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsFailure {
    NotFound,
    Temporary(String),
}

pub type DnsFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<String>, DnsFailure>> + Send + 'a>>;

pub trait Dns: Send + Sync {
    fn lookup<'a>(&'a self, record: RecordType, name: &'a str) -> DnsFuture<'a>;
}

pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// Per-plugin persistent key-value store. Keys are namespaced by plugin name; expiry times are
/// milliseconds of the Unix clock. Backends: [`MemoryKv`] here, the local and Redis stores in
/// `crate::kv`.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync {
    async fn get(&self, plugin: &str, key: &str, now_ms: u64) -> Result<Option<String>, String>;
    async fn set(
        &self,
        plugin: &str,
        key: &str,
        value: &str,
        expires_ms: Option<u64>,
    ) -> Result<(), String>;
    async fn delete(&self, plugin: &str, key: &str) -> Result<(), String>;
    /// Adds `delta` to the integer at `key` (absent, expired or non-numeric counts as 0) in one
    /// atomic step and returns the new value; a created entry expires at `expires_ms`, an
    /// existing one keeps its expiry.
    async fn incr(
        &self,
        plugin: &str,
        key: &str,
        delta: i64,
        expires_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<i64, String>;
    /// Drops every entry expired at `now_ms`; how many went. Blocking: run off the workers.
    fn purge_expired(&self, now_ms: u64) -> Result<usize, String>;
}

/// The services a chain runs with.
#[derive(Clone)]
pub struct Services {
    pub kv: Arc<dyn KvStore>,
    pub dns: Arc<dyn Dns>,
    pub clock: Arc<dyn Clock>,
}

impl Services {
    /// In-memory store, system clock, and the given resolver.
    pub fn with_dns(dns: Arc<dyn Dns>) -> Services {
        Services {
            kv: Arc::new(MemoryKv::default()),
            dns,
            clock: Arc::new(SystemClock),
        }
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that says the same time until told otherwise (harness cases).
pub struct FixedClock(pub Mutex<u64>);

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type KvMap = HashMap<(String, String), (String, Option<u64>)>;

/// Key-value store in memory (harness, tests).
#[derive(Default)]
pub struct MemoryKv(Mutex<KvMap>);

impl MemoryKv {
    pub fn insert(&self, plugin: &str, key: &str, value: &str) {
        self.lock()
            .insert((plugin.into(), key.into()), (value.into(), None));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KvMap> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl KvStore for MemoryKv {
    async fn get(&self, plugin: &str, key: &str, now_ms: u64) -> Result<Option<String>, String> {
        let map = self.lock();
        Ok(map
            .get(&(plugin.to_string(), key.to_string()))
            .filter(|(_, exp)| exp.is_none_or(|e| e > now_ms))
            .map(|(v, _)| v.clone()))
    }

    async fn set(
        &self,
        plugin: &str,
        key: &str,
        value: &str,
        expires_ms: Option<u64>,
    ) -> Result<(), String> {
        self.lock()
            .insert((plugin.into(), key.into()), (value.into(), expires_ms));
        Ok(())
    }

    async fn delete(&self, plugin: &str, key: &str) -> Result<(), String> {
        self.lock().remove(&(plugin.to_string(), key.to_string()));
        Ok(())
    }

    async fn incr(
        &self,
        plugin: &str,
        key: &str,
        delta: i64,
        expires_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<i64, String> {
        let mut map = self.lock();
        let slot = map.entry((plugin.to_string(), key.to_string()));
        let entry = slot.or_insert_with(|| (String::new(), expires_ms));
        let (value, expires) = counted(&entry.0, entry.1, delta, expires_ms, now_ms)?;
        *entry = (value.to_string(), expires);
        Ok(value)
    }

    fn purge_expired(&self, now_ms: u64) -> Result<usize, String> {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, (_, expires)| expires.is_none_or(|e| e > now_ms));
        Ok(before - map.len())
    }
}

/// The counter after adding `delta` to the stored text, and its expiry: an expired or absent
/// entry starts again from 0 with the new expiry.
pub fn counted(
    stored: &str,
    expires: Option<u64>,
    delta: i64,
    new_expiry: Option<u64>,
    now_ms: u64,
) -> Result<(i64, Option<u64>), String> {
    let live = expires.is_none_or(|e| e > now_ms) && !stored.is_empty();
    let (current, expires) = if live {
        (stored.trim().parse::<i64>().unwrap_or(0), expires)
    } else {
        (0, new_expiry)
    };
    current
        .checked_add(delta)
        .map(|v| (v, expires))
        .ok_or_else(|| format!("counter overflow at {current} + {delta}"))
}

/// Scripted DNS answers (harness cases): `(type, name) -> answers`; anything else is not found.
#[derive(Default)]
pub struct StaticDns(pub BTreeMap<(String, String), Vec<String>>);

impl StaticDns {
    pub fn insert(&mut self, record: RecordType, name: &str, answers: Vec<String>) {
        self.0
            .insert((format!("{record:?}"), normalise(name)), answers);
    }
}

impl StaticDns {
    /// The answers for a name and type, if the table has them.
    pub fn get(&self, record: RecordType, name: &str) -> Option<&Vec<String>> {
        self.0.get(&(format!("{record:?}"), normalise(name)))
    }

    /// True when the table has any record for this name.
    pub fn has_name(&self, name: &str) -> bool {
        let name = normalise(name);
        self.0.keys().any(|(_, n)| *n == name)
    }
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Dns for StaticDns {
    fn lookup<'a>(&'a self, record: RecordType, name: &'a str) -> DnsFuture<'a> {
        let answer = self.get(record, name).cloned().ok_or(DnsFailure::NotFound);
        Box::pin(async move { answer })
    }
}

/// The real resolver (hickory), with the system's or the configured name servers.
pub struct SystemDns {
    resolver: hickory_resolver::TokioResolver,
}

impl SystemDns {
    pub fn new(resolver: hickory_resolver::TokioResolver) -> SystemDns {
        SystemDns { resolver }
    }
}

impl Dns for SystemDns {
    fn lookup<'a>(&'a self, record: RecordType, name: &'a str) -> DnsFuture<'a> {
        Box::pin(async move {
            use hickory_resolver::proto::rr::RecordType as R;
            let answers: Vec<String> = if record == RecordType::Ptr {
                let ip: std::net::IpAddr = name
                    .parse()
                    .map_err(|_| DnsFailure::Temporary(format!("{name:?} is not an IP address")))?;
                let lookup = self
                    .resolver
                    .reverse_lookup(ip)
                    .await
                    .map_err(map_dns_error)?;
                lookup
                    .answers()
                    .iter()
                    .map(|r| r.data.to_string())
                    .collect()
            } else {
                let kind = match record {
                    RecordType::A => R::A,
                    RecordType::Aaaa => R::AAAA,
                    RecordType::Mx => R::MX,
                    RecordType::Txt => R::TXT,
                    RecordType::Ptr => R::PTR,
                };
                let lookup = self
                    .resolver
                    .lookup(name, kind)
                    .await
                    .map_err(map_dns_error)?;
                lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == kind)
                    .map(|r| r.data.to_string())
                    .collect()
            };
            if answers.is_empty() {
                Err(DnsFailure::NotFound)
            } else {
                Ok(answers)
            }
        })
    }
}

fn map_dns_error(e: hickory_resolver::net::NetError) -> DnsFailure {
    if e.is_no_records_found() || e.is_nx_domain() {
        DnsFailure::NotFound
    } else {
        DnsFailure::Temporary(e.to_string())
    }
}
