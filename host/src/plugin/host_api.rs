//! The host side of the contract, in the host's own types: the per-store state, and what the
//! imports do (log, config, notes, clock, kv, DNS, files). `imports` implements the newest
//! contract's bindings on these; older contracts convert and call that.

use crate::sender_auth::AuthResults;
use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::ResourceLimiter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::services::{Dns, KvStore, Services};
use super::verdict::Edit;
use super::{Capability, Stage};
use crate::message::Message;

/// The message as a WIT resource: a shared, read-only handle.
pub struct MessageHandle(pub Arc<Message>);

/// A log line a plugin wrote, or a line of its stdout/stderr (kept for the harness report as
/// well as sent to tracing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLog {
    pub plugin: String,
    /// `trace` .. `error`, or `stdout` / `stderr` for the guest's own output.
    pub level: &'static str,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

/// Log lines kept per transaction: a chatty plugin cannot grow host memory without limit.
const MAX_LOGS: usize = 1000;

/// Notes one transaction may hold, in entries and in bytes of keys and values.
const MAX_NOTES: usize = 10_000;
const MAX_NOTE_BYTES: usize = 4 << 20;

/// State shared by every plugin of one transaction.
pub struct TransactionContext {
    pub session_id: String,
    pub services: Services,
    pub notes: Mutex<BTreeMap<String, String>>,
    pub logs: Mutex<Vec<PluginLog>>,
    /// kv store operations that failed (the store down or slow), so that a plugin fault in
    /// this transaction is not taken to refuse the mail for good (see the chain).
    store_failures: std::sync::atomic::AtomicU64,
}

impl TransactionContext {
    pub fn new(session_id: String, services: Services) -> TransactionContext {
        TransactionContext {
            session_id,
            services,
            notes: Mutex::new(BTreeMap::new()),
            logs: Mutex::new(Vec::new()),
            store_failures: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// kv store operations that have failed in this transaction so far.
    pub fn store_failures(&self) -> u64 {
        self.store_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn store_failed(&self) {
        self.store_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn take_logs(&self) -> Vec<PluginLog> {
        std::mem::take(&mut *self.logs.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn push_log(&self, line: PluginLog) {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        if logs.len() < MAX_LOGS {
            logs.push(line);
        }
    }
}

/// What a plugin is, as far as its imports are concerned.
pub struct PluginIdentity {
    pub name: String,
    /// Its table from the gateway config.
    pub config: toml::Table,
    /// Capabilities the plugin asked for in `describe`.
    pub declared: Vec<Capability>,
    /// Capabilities the operator granted in the config.
    pub granted: Vec<Capability>,
    /// The directory granted with `files`, opened once at load.
    pub files: Option<Arc<cap_std::fs::Dir>>,
}

impl PluginIdentity {
    /// An identity with no powers (used while asking a plugin to describe itself).
    pub fn bare(name: &str, config: &toml::Table) -> PluginIdentity {
        PluginIdentity {
            name: name.to_string(),
            config: config.clone(),
            declared: Vec::new(),
            granted: Vec::new(),
            files: None,
        }
    }
}

/// Why a capability's import refused to work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    NotDeclared(Capability),
    NotGranted(Capability),
    Failed(String),
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denial::NotDeclared(c) => write!(
                f,
                "capability {} was not declared: the plugin must list it in describe",
                c.name()
            ),
            Denial::NotGranted(c) => write!(
                f,
                "capability {} was not granted: the operator must add it to the plugin's `grant`",
                c.name()
            ),
            Denial::Failed(reason) => f.write_str(reason),
        }
    }
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

/// What one stage call has asked for so far (contract 0.2: edits arrive as host calls).
#[derive(Default)]
pub struct CallState {
    pub stage: Option<Stage>,
    pub edits: Vec<Edit>,
    /// The first edit the host refused: the call is then a fault, whatever it returns.
    pub refused: Option<String>,
    /// The message's sender authentication results, when verified.
    pub auth: Option<Arc<AuthResults>>,
    /// When the stage's deadline passes. Epoch interruption stops guest code, not a host
    /// call the guest is waiting in: host calls are awaited until this instant, no longer.
    pub deadline: Option<Instant>,
    /// The first host call cut off at the deadline: the call is then a deadline fault,
    /// whatever the guest makes of the error it got.
    pub overran: Option<&'static str>,
}

/// Guest stdout or stderr, kept in memory up to a bound per call and read after each call.
#[derive(Clone, Default)]
pub struct OutputCapture(Arc<Mutex<Captured>>);

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: usize,
}

/// Output kept per stream and call; the rest is counted, not stored.
const MAX_OUTPUT: usize = 16 * 1024;

impl OutputCapture {
    fn append(&self, bytes: &[u8]) {
        let mut captured = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = MAX_OUTPUT.saturating_sub(captured.bytes.len());
        let kept = bytes.len().min(room);
        captured.bytes.extend_from_slice(&bytes[..kept]);
        captured.dropped += bytes.len() - kept;
    }

    /// The lines written since the last call, with a note of what did not fit.
    pub fn take_lines(&self) -> Vec<String> {
        let mut captured = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if captured.bytes.is_empty() && captured.dropped == 0 {
            return Vec::new();
        }
        let text = String::from_utf8_lossy(&captured.bytes).into_owned();
        let mut lines: Vec<String> = text
            .lines()
            .map(|l| l.trim_end().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        if captured.dropped > 0 {
            lines.push(format!("({} more bytes not kept)", captured.dropped));
        }
        captured.bytes.clear();
        captured.dropped = 0;
        lines
    }
}

impl IsTerminal for OutputCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputCapture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for OutputCapture {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        // Always writable: what exceeds the bound is dropped, never an error for the guest.
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for OutputCapture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for OutputCapture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The data of one plugin instance's store.
pub struct HostState {
    pub plugin: Arc<PluginIdentity>,
    pub tx: Arc<TransactionContext>,
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub memory: MemoryCap,
    pub call: CallState,
    stdout: OutputCapture,
    stderr: OutputCapture,
}

impl HostState {
    pub fn new(
        plugin: Arc<PluginIdentity>,
        tx: Arc<TransactionContext>,
        memory_bytes: usize,
    ) -> HostState {
        let (stdout, stderr) = (OutputCapture::default(), OutputCapture::default());
        // No files, sockets, environment or arguments; stdout and stderr are captured.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        HostState {
            plugin,
            tx,
            table: ResourceTable::new(),
            wasi,
            memory: MemoryCap {
                max_bytes: memory_bytes,
                hit: false,
            },
            call: CallState::default(),
            stdout,
            stderr,
        }
    }

    /// Starts a stage call that must end by `deadline`: no edits yet.
    pub fn begin_call(
        &mut self,
        stage: Option<Stage>,
        auth: Option<Arc<AuthResults>>,
        deadline: Option<Instant>,
    ) {
        self.call = CallState {
            stage,
            auth,
            deadline,
            ..CallState::default()
        };
    }

    /// Awaits the work of the host call `what` until the call's deadline (outside a stage
    /// call, [`OUTSIDE_CALL_BUDGET`] from now). Past it the work is dropped (a read stuck in
    /// the kernel is left to its blocking thread), the guest gets `late(reason)`, and the
    /// call is marked as overrun.
    pub async fn until_deadline<T, E>(
        &mut self,
        what: &'static str,
        work: impl std::future::Future<Output = Result<T, E>>,
        late: impl FnOnce(String) -> E,
    ) -> Result<T, E> {
        let deadline = (self.call.deadline).unwrap_or_else(|| Instant::now() + OUTSIDE_CALL_BUDGET);
        match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(result) => result,
            Err(_) => {
                self.call.overran.get_or_insert(what);
                Err(late(format!(
                    "{what} did not answer before the stage's deadline"
                )))
            }
        }
    }

    /// Moves what the guest printed during the call into the log (and the harness report).
    /// Returns stderr's lines, which explain a trap.
    pub fn collect_output(&mut self) -> Vec<String> {
        let plugin = &self.plugin.name;
        let session = &self.tx.session_id;
        for line in self.stdout.take_lines() {
            tracing::info!(plugin, session, stream = "stdout", "{line}");
            self.tx.push_log(guest_line(plugin, "stdout", line));
        }
        let stderr = self.stderr.take_lines();
        for line in &stderr {
            tracing::warn!(plugin, session, stream = "stderr", "{line}");
            self.tx.push_log(guest_line(plugin, "stderr", line.clone()));
        }
        stderr
    }

    pub fn message(&self, handle: &Resource<MessageHandle>) -> wasmtime::Result<Arc<Message>> {
        Ok(self.table.get(handle)?.0.clone())
    }

    /// Records an edit asked for during a stage call, after checking it against the stage.
    pub fn edit(&mut self, edit: Edit) -> Result<(), String> {
        let checked = match self.call.stage {
            Some(stage) => edit.validate(stage),
            None => Err("edits are only possible during a stage call".into()),
        };
        match checked {
            Ok(()) => {
                self.call.edits.push(edit);
                Ok(())
            }
            Err(why) => {
                self.call.refused.get_or_insert_with(|| why.clone());
                Err(why)
            }
        }
    }

    /// Ok when the plugin both declared and was granted `capability`.
    pub fn check(&self, capability: Capability) -> Result<(), Denial> {
        if !self.plugin.declared.contains(&capability) {
            Err(Denial::NotDeclared(capability))
        } else if !self.plugin.granted.contains(&capability) {
            Err(Denial::NotGranted(capability))
        } else {
            Ok(())
        }
    }

    pub fn log(&mut self, level: &'static str, message: String, fields: Vec<(String, String)>) {
        let plugin = &self.plugin.name;
        let session = &self.tx.session_id;
        // The plugin's own fields as `key=value` pairs, not Rust's rendering of a list.
        let pairs = fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        match level {
            "error" => tracing::error!(plugin, session, fields = pairs, "{message}"),
            "warn" => tracing::warn!(plugin, session, fields = pairs, "{message}"),
            "info" => tracing::info!(plugin, session, fields = pairs, "{message}"),
            _ => tracing::debug!(plugin, session, fields = pairs, "{message}"),
        }
        self.tx.push_log(PluginLog {
            plugin: plugin.clone(),
            level,
            message,
            fields,
        });
    }

    pub fn config_get(&self, key: &str) -> Option<String> {
        lookup(&self.plugin.config, key).map(render)
    }

    pub fn config_list(&self, key: &str) -> Vec<String> {
        match lookup(&self.plugin.config, key) {
            Some(toml::Value::Array(items)) => items.iter().map(render).collect(),
            Some(scalar) => vec![render(scalar)],
            None => Vec::new(),
        }
    }

    pub fn config_json(&self) -> String {
        serde_json::to_string(&self.plugin.config).unwrap_or_else(|_| "{}".into())
    }

    pub fn note_get(&self, key: &str) -> Option<String> {
        self.tx
            .notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Sets a note unless the transaction's notes would pass [`MAX_NOTES`] entries or
    /// [`MAX_NOTE_BYTES`] bytes (keys and values): notes are a scratchpad, not a store.
    pub fn note_set(&self, key: String, value: String) {
        let mut notes = self.tx.notes.lock().unwrap_or_else(|e| e.into_inner());
        let replaced = notes.get(&key).map_or(0, |old| key.len() + old.len());
        let held: usize = notes.iter().map(|(k, v)| k.len() + v.len()).sum();
        let after = (held - replaced).saturating_add(key.len() + value.len());
        let fits_count = notes.len() < MAX_NOTES || notes.contains_key(&key);
        if fits_count && after <= MAX_NOTE_BYTES {
            notes.insert(key, value);
        } else {
            tracing::warn!(
                plugin = self.plugin.name,
                "note {key:?} not kept: the transaction's notes are full"
            );
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.tx.services.clock.now_ms()
    }

    /// The kv store in this plugin's namespace, when the plugin may use it. It is awaited
    /// without borrowing the state: the store may be across the network.
    pub fn kv(&self) -> Result<KvAccess, Denial> {
        self.check(Capability::Kv)?;
        Ok(KvAccess {
            kv: self.tx.services.kv.clone(),
            tx: self.tx.clone(),
            plugin: self.plugin.clone(),
            now_ms: self.now_ms(),
        })
    }

    /// The resolver, when the plugin may use it (awaited without borrowing the state).
    pub fn dns(&self) -> Result<Arc<dyn Dns>, Denial> {
        self.check(Capability::Dns)?;
        Ok(self.tx.services.dns.clone())
    }

    /// A file under the granted directory, read on the blocking pool (awaited under the
    /// deadline by the caller). `cap_std` resolves the path inside the directory handle, so
    /// `..`, absolute paths and symlinks cannot reach outside it.
    pub fn file_read(
        &self,
        path: String,
    ) -> Result<impl std::future::Future<Output = Result<Vec<u8>, Denial>>, Denial> {
        self.check(Capability::Files)?;
        let Some(dir) = self.plugin.files.clone() else {
            return Err(Denial::NotGranted(Capability::Files));
        };
        let read = tokio::task::spawn_blocking(move || {
            read_granted(&dir, &path).map_err(|e| Denial::Failed(format!("{path}: {e}")))
        });
        Ok(async move {
            read.await
                .unwrap_or_else(|e| Err(Denial::Failed(format!("file read failed: {e}"))))
        })
    }
}

/// How long a host call may wait when no stage call set a deadline (none can reach the
/// network or the disk then: describing a plugin grants it nothing).
const OUTSIDE_CALL_BUDGET: Duration = Duration::from_secs(1);

/// One plugin's use of the kv store, taken out of the state for the await.
pub struct KvAccess {
    kv: Arc<dyn KvStore>,
    tx: Arc<TransactionContext>,
    plugin: Arc<PluginIdentity>,
    now_ms: u64,
}

impl KvAccess {
    pub async fn get(self, key: &str) -> Result<Option<String>, Denial> {
        let result = self.kv.get(&self.plugin.name, key, self.now_ms).await;
        self.noted(result)
    }

    pub async fn set(self, key: &str, value: &str, ttl: Option<u32>) -> Result<(), Denial> {
        let expires = ttl.map(|s| self.expiry(s));
        let result = self.kv.set(&self.plugin.name, key, value, expires).await;
        self.noted(result)
    }

    pub async fn delete(self, key: &str) -> Result<(), Denial> {
        let result = self.kv.delete(&self.plugin.name, key).await;
        self.noted(result)
    }

    pub async fn incr(self, key: &str, delta: i64, ttl: Option<u32>) -> Result<i64, Denial> {
        let expires = ttl.map(|s| self.expiry(s));
        let (plugin, now) = (&self.plugin.name, self.now_ms);
        let result = self.kv.incr(plugin, key, delta, expires, now).await;
        self.noted(result)
    }

    /// The store's answer for the plugin, a failure counted in the transaction.
    fn noted<T>(&self, result: Result<T, String>) -> Result<T, Denial> {
        result.map_err(|e| {
            self.tx.store_failed();
            Denial::Failed(e)
        })
    }

    fn expiry(&self, ttl_seconds: u32) -> u64 {
        self.now_ms
            .saturating_add(u64::from(ttl_seconds).saturating_mul(1000))
    }
}

/// A whole regular file under the granted directory, at most [`MAX_FILE_READ`] bytes. Opened
/// without blocking and checked through the handle: a FIFO, device or socket there (or a
/// link to one) is refused at once instead of blocking the call.
fn read_granted(dir: &cap_std::fs::Dir, path: &str) -> Result<Vec<u8>, String> {
    use crate::config::file::{open_flags, read_bounded, regular_len, Links};
    use cap_std::fs::OpenOptionsExt;
    let mut options = cap_std::fs::OpenOptions::new();
    // Links are followed, but cap_std keeps them inside the directory.
    options.read(true).custom_flags(open_flags(Links::Follow));
    let file = dir.open_with(path, &options).map_err(|e| e.to_string())?;
    let file = file.into_std();
    let len = regular_len(&file).map_err(|e| e.to_string())?;
    read_bounded(file, len, MAX_FILE_READ).map_err(|e| e.to_string())
}

/// Largest file `file-read` returns (the plugin's memory cap bounds it further).
const MAX_FILE_READ: u64 = 64 * 1024 * 1024;

fn guest_line(plugin: &str, stream: &'static str, message: String) -> PluginLog {
    PluginLog {
        plugin: plugin.to_string(),
        level: stream,
        message,
        fields: Vec::new(),
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

    #[test]
    fn captured_output_is_bounded_and_drained_per_call() {
        let capture = OutputCapture::default();
        capture.append(b"first line\nsecond");
        assert_eq!(capture.take_lines(), ["first line", "second"]);
        assert!(capture.take_lines().is_empty());
        capture.append(&vec![b'x'; MAX_OUTPUT + 10]);
        let lines = capture.take_lines();
        assert_eq!(lines[0].len(), MAX_OUTPUT);
        assert_eq!(lines[1], "(10 more bytes not kept)");
    }
}
