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
                Some(file) => with_password(url, &crate::secret::read(file)?),
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
    let encoded = crate::secret::percent_encode(password);
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
