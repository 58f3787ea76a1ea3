//! The shared backend: Redis 7 or Valkey, so that every node of a site sees the same greylist
//! triplets and counters. One multiplexed connection serves all sessions and reconnects by
//! itself; it is opened on first use, so a gateway starts while the store is down. Every
//! call has a deadline: past it, or with the store unreachable, the plugin gets the error
//! (and applies its own policy), and the session is never held longer.
//!
//! Keys are `PREFIX:kv:LEN:PLUGIN:KEY` — the plugin name's length makes the namespaces
//! unambiguous whatever the names hold. Expiry is Redis's own (`PXAT`, the Unix time in ms);
//! increments are one Lua script, atomic across nodes.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use super::KvStore;

/// Adds ARGV[1] to the integer at KEYS[1]: absent or non-integer text counts as 0, a created
/// entry expires at ARGV[2] (Unix ms, "" for never), an existing one keeps its expiry. Lua
/// numbers are doubles: results past 2^53 are refused rather than rounded.
const INCR: &str = r#"
local stored = redis.call('GET', KEYS[1])
local current = 0
if stored and string.match(stored, '^%s*-?%d+%s*$') then current = tonumber(stored) end
local result = current + tonumber(ARGV[1])
if result > 9007199254740991 or result < -9007199254740991 then
  return redis.error_reply('ERR counter overflow at ' .. string.format('%.0f', current) .. ' + ' .. ARGV[1])
end
local text = string.format('%.0f', result)
if stored then
  redis.call('SET', KEYS[1], text, 'KEEPTTL')
elseif ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], text, 'PXAT', ARGV[2])
else
  redis.call('SET', KEYS[1], text)
end
return text
"#;

pub struct RedisKv {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    incr: Script,
    /// As configured, without a password, for messages.
    shown: String,
}

impl RedisKv {
    /// A store at `url` (`redis://[user:password@]host:port/db`); nothing is connected yet.
    /// Called within the Tokio runtime (the connection's task lives there).
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<RedisKv, String> {
        let client = redis::Client::open(url).map_err(|e| format!("kv backend {url:?}: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("kv backend {url:?}: {e}"))?;
        Ok(RedisKv {
            connection,
            prefix: prefix.to_string(),
            timeout,
            incr: Script::new(INCR),
            shown: crate::config::without_password(url),
        })
    }

    fn key(&self, plugin: &str, key: &str) -> String {
        format!("{}:kv:{}:{plugin}:{key}", self.prefix, plugin.len())
    }

    /// Runs one request within the deadline, with errors in the words a plugin will show.
    async fn bounded<T>(
        &self,
        request: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(format!("kv store {}: {e}", self.shown)),
            Err(_) => Err(format!(
                "kv store {}: no answer within {} ms",
                self.shown,
                self.timeout.as_millis()
            )),
        }
    }
}

#[async_trait::async_trait]
impl KvStore for RedisKv {
    async fn get(&self, plugin: &str, key: &str, _now_ms: u64) -> Result<Option<String>, String> {
        let mut connection = self.connection.clone();
        let key = self.key(plugin, key);
        self.bounded(async move { connection.get(key).await }).await
    }

    async fn set(
        &self,
        plugin: &str,
        key: &str,
        value: &str,
        expires_ms: Option<u64>,
    ) -> Result<(), String> {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("SET");
        command.arg(self.key(plugin, key)).arg(value);
        if let Some(at) = expires_ms {
            command.arg("PXAT").arg(at.max(1));
        }
        self.bounded(async move { command.query_async::<()>(&mut connection).await })
            .await
    }

    async fn delete(&self, plugin: &str, key: &str) -> Result<(), String> {
        let mut connection = self.connection.clone();
        let key = self.key(plugin, key);
        self.bounded(async move { connection.del::<_, ()>(key).await })
            .await
    }

    async fn incr(
        &self,
        plugin: &str,
        key: &str,
        delta: i64,
        expires_ms: Option<u64>,
        _now_ms: u64,
    ) -> Result<i64, String> {
        let mut connection = self.connection.clone();
        let mut invocation = self.incr.key(self.key(plugin, key));
        invocation.arg(delta).arg(
            expires_ms
                .map(|at| at.max(1).to_string())
                .unwrap_or_default(),
        );
        let text: String = self
            .bounded(async move { invocation.invoke_async(&mut connection).await })
            .await?;
        text.parse().map_err(|_| {
            format!(
                "kv store {}: counter {text:?} is not an integer",
                self.shown
            )
        })
    }

    async fn probe(&self) -> Result<(), String> {
        let mut connection = self.connection.clone();
        self.bounded(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        })
        .await
        .map(|_| ())
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn purge_expired(&self, _now_ms: u64) -> Result<usize, String> {
        // Redis drops expired keys itself.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        use crate::config::without_password;
        assert_eq!(
            without_password("postgres://mail@db/users"),
            "postgres://mail@db/users"
        );
        assert_eq!(
            without_password("redis://mg:secret@10.0.0.5:6379/2"),
            "redis://mg:***@10.0.0.5:6379/2"
        );
        assert_eq!(
            without_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[tokio::test]
    async fn an_unreachable_store_is_an_error_within_the_deadline() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let kv = RedisKv::new(
            &format!("redis://127.0.0.1:{port}/0"),
            "t",
            Duration::from_millis(300),
        )
        .expect("lazy client");
        let started = std::time::Instant::now();
        let err = kv.get("p", "k", 0).await.expect_err("nothing listens");
        assert!(err.starts_with("kv store redis://127.0.0.1:"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn namespaces_cannot_collide() {
        let kv = RedisKv::new("redis://127.0.0.1:1/0", "mg", Duration::from_secs(1)).expect("lazy");
        assert_ne!(kv.key("a:b", "c"), kv.key("a", "b:c"));
        assert_eq!(kv.key("greylist", "t"), "mg:kv:8:greylist:t");
    }
}
