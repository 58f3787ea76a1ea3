//! The local backend (the embedded default): a redb file in the data directory. It survives
//! restarts and serves one node; several nodes need the Redis backend.

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable};

use super::{counted, KvStore};

/// Key-value store on disk (redb): survives restarts; expired entries read as absent.
pub struct DiskKv {
    db: redb::Database,
}

const KV_TABLE: redb::TableDefinition<'static, (&str, &str), (&str, u64)> =
    redb::TableDefinition::new("kv");

impl DiskKv {
    pub fn open(path: &Path) -> Result<DiskKv, String> {
        let db = redb::Database::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(DiskKv { db })
    }
}

fn kv_err(e: impl std::fmt::Display) -> String {
    format!("kv store: {e}")
}

#[async_trait::async_trait]
impl KvStore for DiskKv {
    async fn get(&self, plugin: &str, key: &str, now_ms: u64) -> Result<Option<String>, String> {
        let tx = self.db.begin_read().map_err(kv_err)?;
        let table = match tx.open_table(KV_TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(kv_err(e)),
        };
        let entry = table.get((plugin, key)).map_err(kv_err)?;
        Ok(entry.and_then(|v| {
            let (value, expires) = v.value();
            (expires == 0 || expires > now_ms).then(|| value.to_string())
        }))
    }

    async fn set(
        &self,
        plugin: &str,
        key: &str,
        value: &str,
        expires_ms: Option<u64>,
    ) -> Result<(), String> {
        self.write(|table| {
            table
                .insert((plugin, key), (value, expires_ms.unwrap_or(0)))
                .map(|_| ())
        })
    }

    async fn delete(&self, plugin: &str, key: &str) -> Result<(), String> {
        self.write(|table| table.remove((plugin, key)).map(|_| ()))
    }

    async fn incr(
        &self,
        plugin: &str,
        key: &str,
        delta: i64,
        expires_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<i64, String> {
        let mut result = Err(String::new());
        self.write(|table| {
            let old = table
                .get((plugin, key))?
                .map(|v| {
                    let (value, expires) = v.value();
                    (value.to_string(), (expires != 0).then_some(expires))
                })
                .unwrap_or_default();
            result = counted(&old.0, old.1, delta, expires_ms, now_ms);
            if let Ok((value, expires)) = &result {
                let text = value.to_string();
                table.insert((plugin, key), (text.as_str(), expires.unwrap_or(0)))?;
            }
            Ok(())
        })?;
        result.map(|(value, _)| value)
    }

    fn purge_expired(&self, now_ms: u64) -> Result<usize, String> {
        let mut removed = 0;
        self.write(|table| {
            table.retain(|_, (_, expires)| {
                let keep = expires == 0 || expires > now_ms;
                removed += usize::from(!keep);
                keep
            })
        })?;
        Ok(removed)
    }
}

impl DiskKv {
    /// One committed write transaction on the table.
    fn write(
        &self,
        change: impl FnOnce(
            &mut redb::Table<'_, (&str, &str), (&str, u64)>,
        ) -> Result<(), redb::StorageError>,
    ) -> Result<(), String> {
        // The commit syncs to disk: off the async workers (this runs inside a plugin call).
        crate::sys::blocking::run(|| {
            let tx = self.db.begin_write().map_err(kv_err)?;
            {
                let mut table = tx.open_table(KV_TABLE).map_err(kv_err)?;
                change(&mut table).map_err(kv_err)?;
            }
            tx.commit().map_err(kv_err)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn disk_kv_persists_and_expires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kv.redb");
        {
            let kv = DiskKv::open(&path).expect("open");
            assert_eq!(kv.get("p", "k", 0).await, Ok(None));
            kv.set("p", "k", "v", Some(1_000)).await.expect("set");
            kv.set("p", "forever", "x", None).await.expect("set");
            kv.set("other", "k", "w", None).await.expect("set");
        }
        let kv = DiskKv::open(&path).expect("reopen");
        assert_eq!(kv.get("p", "k", 999).await, Ok(Some("v".into())));
        assert_eq!(kv.get("p", "k", 1_000).await, Ok(None), "expired");
        assert_eq!(
            kv.get("p", "forever", u64::MAX - 1).await,
            Ok(Some("x".into()))
        );
        assert_eq!(
            kv.get("other", "k", 0).await,
            Ok(Some("w".into())),
            "namespaced per plugin"
        );
        kv.delete("p", "forever").await.expect("delete");
        assert_eq!(kv.purge_expired(1_000), Ok(1), "the expired entry goes");
        assert_eq!(
            kv.get("other", "k", 5_000).await,
            Ok(Some("w".into())),
            "the rest stays"
        );
        assert_eq!(kv.get("p", "forever", 0).await, Ok(None));
    }
}
