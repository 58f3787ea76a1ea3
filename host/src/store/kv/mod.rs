//! The plugins' key-value store behind the contract's `kv-*` imports: `local` (redb in the
//! data directory, the embedded default) or Redis/Valkey (`redis://…`, shared by the nodes of
//! a site). Both keep the contract's semantics — per-plugin namespaces, expiry, atomic
//! increments — and answer within a deadline. The harness keeps its in-memory store.

pub mod local;
pub mod memory;
pub mod redis;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::KvConfig;
pub use memory::MemoryKv;

/// Per-plugin persistent key-value store. Keys are namespaced by plugin name; expiry times are
/// milliseconds of the Unix clock. Backends: [`MemoryKv`], `local` and `redis`.
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
    /// Whether the store answers, within its deadline (for `/healthz`). A store in the
    /// process always does.
    async fn probe(&self) -> Result<(), String> {
        Ok(())
    }
    /// Whether the store is a server of its own (so worth a probe and a health entry).
    fn is_remote(&self) -> bool {
        false
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

/// The store the config names (`password_file` already resolved against the config's
/// directory). The Redis one connects on first use, so a store that is down does not stop the
/// gateway: plugins get errors until it is back.
pub fn open(
    config: &KvConfig,
    data_dir: &Path,
    password_file: Option<&Path>,
) -> Result<Arc<dyn KvStore>, String> {
    match config.backend.as_str() {
        "local" => Ok(Arc::new(local::DiskKv::open(&data_dir.join("kv.redb"))?)),
        url if url.starts_with("redis://") || url.starts_with("redis+unix://") => {
            let timeout = Duration::from_millis(config.timeout_ms.max(1));
            let url = match password_file {
                Some(file) => with_password(url, &crate::sys::secret::read(file)?),
                None => url.to_string(),
            };
            Ok(Arc::new(redis::RedisKv::new(
                &url,
                &config.prefix,
                timeout,
            )?))
        }
        other => Err(format!(
            "[kv] backend = {other:?}: want \"local\", a redis:// or a redis+unix:// URL"
        )),
    }
}

/// `url` with `password` in it: `redis://[user]:PASSWORD@host…`, or `pass=` for a Unix socket.
fn with_password(url: &str, password: &str) -> String {
    let encoded = crate::sys::secret::percent_encode(password);
    if let Some(path) = url.strip_prefix("redis+unix://") {
        let joiner = if path.contains('?') { '&' } else { '?' };
        return format!("{url}{joiner}pass={encoded}");
    }
    let rest = url.strip_prefix("redis://").unwrap_or(url);
    let (user, host) = match rest.split_once('@') {
        Some((credentials, host)) => (credentials.split(':').next().unwrap_or(""), host),
        None => ("", rest),
    };
    format!("redis://{user}:{encoded}@{host}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_password_from_its_file_goes_into_the_url() {
        use super::with_password;
        assert_eq!(
            with_password("redis://10.0.0.5:6379/0", "a:b@c"),
            "redis://:a%3Ab%40c@10.0.0.5:6379/0"
        );
        assert_eq!(
            with_password("redis://mg:old@h:1/2", "new"),
            "redis://mg:new@h:1/2"
        );
        assert_eq!(
            with_password("redis+unix:///run/redis.sock?db=1", "p"),
            "redis+unix:///run/redis.sock?db=1&pass=p"
        );
    }
}
