//! The key-value store in memory: the harness's, and tests'.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{counted, KvStore};

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
