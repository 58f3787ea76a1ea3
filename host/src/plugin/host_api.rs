//! The host side of the contract: what a plugin's imports do, and the per-store state they use.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{host, types};
use super::services::{DnsFailure, RecordType, Services};
use super::Capability;
use crate::message::Message;

/// The message as a WIT resource: a shared, read-only handle.
pub struct MessageHandle(pub Arc<Message>);

/// A log line a plugin wrote (kept for the harness report as well as sent to tracing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLog {
    pub plugin: String,
    pub level: &'static str,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

/// State shared by every plugin of one transaction.
pub struct TransactionContext {
    pub session_id: String,
    pub services: Services,
    pub notes: Mutex<BTreeMap<String, String>>,
    pub logs: Mutex<Vec<PluginLog>>,
}

impl TransactionContext {
    pub fn new(session_id: String, services: Services) -> TransactionContext {
        TransactionContext {
            session_id,
            services,
            notes: Mutex::new(BTreeMap::new()),
            logs: Mutex::new(Vec::new()),
        }
    }

    pub fn take_logs(&self) -> Vec<PluginLog> {
        std::mem::take(&mut *self.logs.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What a plugin is, as far as its imports are concerned.
pub struct PluginIdentity {
    pub name: String,
    /// Its table from the gateway config.
    pub config: toml::Table,
    /// Capabilities both declared by the plugin and granted by the operator.
    pub capabilities: Vec<Capability>,
}

/// A memory cap that says which limit was hit, so the fault report is precise.
pub struct MemoryCap {
    pub max_bytes: usize,
    pub hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            wasmtime::bail!(
                "memory cap of {} bytes exceeded (wanted {desired})",
                self.max_bytes
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The data of one plugin instance's store.
pub struct HostState {
    pub plugin: Arc<PluginIdentity>,
    pub tx: Arc<TransactionContext>,
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub memory: MemoryCap,
}

impl HostState {
    pub fn new(
        plugin: Arc<PluginIdentity>,
        tx: Arc<TransactionContext>,
        memory_bytes: usize,
    ) -> HostState {
        HostState {
            plugin,
            tx,
            table: ResourceTable::new(),
            // Grants nothing: no files, sockets, environment or arguments.
            wasi: WasiCtx::builder().build(),
            memory: MemoryCap {
                max_bytes: memory_bytes,
                hit: false,
            },
        }
    }

    fn granted(&self, capability: Capability) -> bool {
        self.plugin.capabilities.contains(&capability)
    }

    fn message(&self, handle: &Resource<MessageHandle>) -> wasmtime::Result<Arc<Message>> {
        Ok(self.table.get(handle)?.0.clone())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn level_name(level: host::Level) -> &'static str {
    match level {
        host::Level::Trace => "trace",
        host::Level::Debug => "debug",
        host::Level::Info => "info",
        host::Level::Warn => "warn",
        host::Level::Error => "error",
    }
}

/// Renders a config value for `config-get`: strings as they are, other scalars as text,
/// arrays and tables as JSON.
fn render(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

fn lookup<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let mut parts = key.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = match value {
            toml::Value::Table(t) => t.get(part)?,
            toml::Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

const KV_DENIED: &str = "capability kv was not declared and granted";

impl host::Host for HostState {
    fn log(
        &mut self,
        level: host::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let level = level_name(level);
        let plugin = &self.plugin.name;
        let session = &self.tx.session_id;
        match level {
            "error" => tracing::error!(plugin, session, ?fields, "{message}"),
            "warn" => tracing::warn!(plugin, session, ?fields, "{message}"),
            "info" => tracing::info!(plugin, session, ?fields, "{message}"),
            _ => tracing::debug!(plugin, session, ?fields, "{message}"),
        }
        let mut logs = self.tx.logs.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a chatty plugin cannot grow host memory without limit.
        if logs.len() < 1000 {
            logs.push(PluginLog {
                plugin: plugin.clone(),
                level,
                message,
                fields,
            });
        }
        Ok(())
    }

    fn config_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(lookup(&self.plugin.config, &key).map(render))
    }

    fn config_list(&mut self, key: String) -> wasmtime::Result<Vec<String>> {
        Ok(match lookup(&self.plugin.config, &key) {
            Some(toml::Value::Array(items)) => items.iter().map(render).collect(),
            Some(scalar) => vec![render(scalar)],
            None => Vec::new(),
        })
    }

    fn config_json(&mut self) -> wasmtime::Result<String> {
        Ok(serde_json::to_string(&self.plugin.config)?)
    }

    fn note_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self
            .tx
            .notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned())
    }

    fn note_set(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        let mut notes = self.tx.notes.lock().unwrap_or_else(|e| e.into_inner());
        if notes.len() < 10_000 || notes.contains_key(&key) {
            notes.insert(key, value);
        }
        Ok(())
    }

    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(self.tx.services.clock.now_ms())
    }

    fn kv_get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, String>> {
        if !self.granted(Capability::Kv) {
            return Ok(Err(KV_DENIED.into()));
        }
        let now = self.tx.services.clock.now_ms();
        Ok(self.tx.services.kv.get(&self.plugin.name, &key, now))
    }

    fn kv_set(
        &mut self,
        key: String,
        value: String,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), String>> {
        if !self.granted(Capability::Kv) {
            return Ok(Err(KV_DENIED.into()));
        }
        let expires = ttl_seconds.map(|s| self.tx.services.clock.now_ms() + u64::from(s) * 1000);
        Ok(self
            .tx
            .services
            .kv
            .set(&self.plugin.name, &key, &value, expires))
    }

    fn kv_delete(&mut self, key: String) -> wasmtime::Result<Result<(), String>> {
        if !self.granted(Capability::Kv) {
            return Ok(Err(KV_DENIED.into()));
        }
        Ok(self.tx.services.kv.delete(&self.plugin.name, &key))
    }

    async fn dns_lookup(
        &mut self,
        record_type: host::RecordType,
        name: String,
    ) -> wasmtime::Result<Result<Vec<String>, host::DnsError>> {
        if !self.granted(Capability::Dns) {
            return Ok(Err(host::DnsError::Denied));
        }
        let record = match record_type {
            host::RecordType::A => RecordType::A,
            host::RecordType::Aaaa => RecordType::Aaaa,
            host::RecordType::Mx => RecordType::Mx,
            host::RecordType::Txt => RecordType::Txt,
            host::RecordType::Ptr => RecordType::Ptr,
        };
        let dns = self.tx.services.dns.clone();
        Ok(dns.lookup(record, &name).await.map_err(|e| match e {
            DnsFailure::NotFound => host::DnsError::NotFound,
            DnsFailure::Temporary(reason) => host::DnsError::Temporary(reason),
        }))
    }
}

impl types::Host for HostState {}

impl types::HostMessage for HostState {
    fn size(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<u64> {
        Ok(self.message(&this)?.size())
    }

    fn headers(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<types::Header>> {
        Ok(self
            .message(&this)?
            .headers()
            .into_iter()
            .map(to_wit_header)
            .collect())
    }

    fn header(
        &mut self,
        this: Resource<MessageHandle>,
        name: String,
    ) -> wasmtime::Result<Vec<types::Header>> {
        Ok(self
            .message(&this)?
            .header(&name)
            .into_iter()
            .map(to_wit_header)
            .collect())
    }

    fn body(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.message(&this)?.body().to_vec())
    }

    fn body_range(
        &mut self,
        this: Resource<MessageHandle>,
        offset: u64,
        len: u64,
    ) -> wasmtime::Result<Vec<u8>> {
        Ok(self.message(&this)?.body_range(offset, len).to_vec())
    }

    fn parts(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<types::MimePart>> {
        let message = self.message(&this)?;
        Ok(message.parts().iter().map(to_wit_part).collect())
    }

    fn part_content(
        &mut self,
        this: Resource<MessageHandle>,
        id: u32,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.message(&this)?.part_content(id))
    }

    fn part_text(
        &mut self,
        this: Resource<MessageHandle>,
        id: u32,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.message(&this)?.part_text(id))
    }

    fn drop(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

fn to_wit_header(h: crate::message::HeaderField) -> types::Header {
    types::Header {
        name: h.name,
        raw: h.raw,
        decoded: h.decoded,
    }
}

fn to_wit_part(p: &crate::message::Part) -> types::MimePart {
    types::MimePart {
        id: p.id,
        parent: p.parent,
        content_type: types::ContentType {
            media_type: p.media_type.clone(),
            subtype: p.subtype.clone(),
            params: p.params.clone(),
        },
        disposition: p.disposition.clone(),
        filename: p.filename.clone(),
        transfer_encoding: p.transfer_encoding.clone(),
        size: p.size,
        is_multipart: p.is_multipart,
        is_message: p.is_message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_render_for_plugins() {
        let table: toml::Table =
            toml::from_str("a = \"x\"\nn = 3\n[t]\nlist = [\"p\", \"q\"]\n").unwrap();
        assert_eq!(lookup(&table, "a").map(render).as_deref(), Some("x"));
        assert_eq!(lookup(&table, "n").map(render).as_deref(), Some("3"));
        assert_eq!(lookup(&table, "t.list.1").map(render).as_deref(), Some("q"));
        assert_eq!(
            lookup(&table, "t.list").map(render).as_deref(),
            Some("[\"p\",\"q\"]")
        );
        assert!(lookup(&table, "missing.key").is_none());
    }
}
