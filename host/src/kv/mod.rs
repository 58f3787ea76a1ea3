//! The plugins' key-value store behind the contract's `kv-*` imports: `local` (redb in the
//! data directory, the embedded default) or Redis/Valkey (`redis://…`, shared by the nodes of
//! a site). Both keep the contract's semantics — per-plugin namespaces, expiry, atomic
//! increments — and answer within a deadline. The harness keeps its in-memory store.

pub mod local;
pub mod redis;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::KvConfig;
use crate::plugin::services::KvStore;

/// The store the config names. The Redis one connects on first use, so a store that is down
/// does not stop the gateway: plugins get errors until it is back.
pub fn open(config: &KvConfig, data_dir: &Path) -> Result<Arc<dyn KvStore>, String> {
    match config.backend.as_str() {
        "local" => Ok(Arc::new(local::DiskKv::open(&data_dir.join("kv.redb"))?)),
        url if url.starts_with("redis://") || url.starts_with("redis+unix://") => {
            let timeout = Duration::from_millis(config.timeout_ms.max(1));
            Ok(Arc::new(redis::RedisKv::new(url, &config.prefix, timeout)?))
        }
        other => Err(format!(
            "[kv] backend = {other:?}: want \"local\", a redis:// or a redis+unix:// URL"
        )),
    }
}
