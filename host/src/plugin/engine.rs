//! The wasmtime engine: configuration, the epoch ticker that enforces deadlines, the linker
//! with our imports, and the on-disk cache of compiled components.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::Plugin;
use super::host_api::HostState;
use super::PluginError;
use crate::config::RuntimeConfig;

/// How often the engine's epoch advances: the granularity of plugin deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// One engine for the whole process; plugin sets (and reloads) share it.
pub struct Runtime {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    ticker: Option<Ticker>,
}

struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Runtime {
    pub fn new(config: &RuntimeConfig, cache_dir: Option<PathBuf>) -> Result<Runtime, PluginError> {
        let engine = build_engine(config, config.pooling).or_else(|e| {
            // Pooling reserves a lot of address space; some systems refuse it.
            tracing::warn!("pooling allocator unavailable ({e}); using on-demand allocation");
            build_engine(config, false)
        })?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(PluginError::engine)?;
        Plugin::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(PluginError::engine)?;
        let ticker = start_ticker(&engine);
        Ok(Runtime {
            engine,
            linker,
            cache_dir,
            ticker: Some(ticker),
        })
    }

    /// Loads a component, from the compiled cache when it holds this exact file for this
    /// exact engine, otherwise compiling it (and filling the cache).
    /// Reads, checks and compiles (or loads from the cache) one component. Returns it with the
    /// SHA-256 of the file, in hex.
    pub fn load_component(&self, path: &Path) -> Result<(Component, String), PluginError> {
        let bytes = std::fs::read(path).map_err(|e| PluginError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if !is_component(&bytes) {
            return Err(PluginError::NotComponent {
                path: path.to_path_buf(),
                reason: if bytes.starts_with(b"\0asm") {
                    "it is a core WebAssembly module, not a component (build for wasm32-wasip2 or run `component new`)".into()
                } else {
                    "it is not a WebAssembly file".into()
                },
            });
        }
        let sha256: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let cached = self
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(self.cache_key(&sha256)));
        let cached = cached.filter(|_| self.cache_is_private());
        if let Some(file) = cached.as_ref().filter(|f| f.exists()) {
            match load_artifact(&self.engine, file) {
                Ok(component) => return Ok((component, sha256)),
                Err(e) => tracing::warn!("discarding cached artifact {}: {e}", file.display()),
            }
        }
        let compiled =
            self.engine
                .precompile_component(&bytes)
                .map_err(|e| PluginError::NotComponent {
                    path: path.to_path_buf(),
                    reason: format!("{e:#}"),
                })?;
        if let Some(file) = &cached {
            store_artifact(file, &compiled);
        }
        // SAFETY: `compiled` was produced just now by this engine.
        let component = unsafe { Component::deserialize(&self.engine, &compiled) }
            .map_err(PluginError::engine)?;
        Ok((component, sha256))
    }

    /// Content hash of the component plus the engine's compatibility hash.
    fn cache_key(&self, sha256: &str) -> String {
        let mut compat = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut compat);
        format!("{}-{:016x}.cwasm", &sha256[..32], compat.finish())
    }

    /// Converts a timeout into epoch ticks (at least one).
    pub fn deadline_ticks(timeout: Duration) -> u64 {
        (timeout.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
    }

    pub fn stop_ticker(&mut self) {
        self.ticker = None;
    }
}

fn is_component(bytes: &[u8]) -> bool {
    // Components carry layer 1 in the version field: 0d 00 01 00.
    bytes.len() >= 8 && bytes.starts_with(b"\0asm") && bytes[6..8] == [1, 0]
}

/// Compiled artifacts start with this tag and the SHA-256 of what follows.
const ARTIFACT_TAG: &[u8; 8] = b"MGCWASM1";

impl Runtime {
    /// The cache is used only when it is a directory of ours that nobody else can write:
    /// loading an artifact runs its native code inside the gateway.
    fn cache_is_private(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(dir) = &self.cache_dir else {
            return false;
        };
        if let Err(e) = create_private_dir(dir) {
            tracing::warn!("plugin cache {}: {e}; compiling without it", dir.display());
            return false;
        }
        match std::fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() && meta.uid() == rustix::process::geteuid().as_raw() => {
                if meta.mode() & 0o022 != 0 {
                    tracing::warn!(
                        "plugin cache {} is writable by others (mode {:o}); not used",
                        dir.display(),
                        meta.mode() & 0o7777
                    );
                    return false;
                }
                true
            }
            Ok(_) => {
                tracing::warn!(
                    "plugin cache {} is not a directory owned by this user; not used",
                    dir.display()
                );
                false
            }
            Err(e) => {
                tracing::warn!("plugin cache {}: {e}; not used", dir.display());
                false
            }
        }
    }
}

/// Creates `dir` (and its parents) with mode 0700 where it does not exist yet.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Reads an artifact, checks the hash recorded in it, then deserializes it.
fn load_artifact(engine: &Engine, file: &Path) -> Result<Component, String> {
    let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
    let (recorded, compiled) = bytes
        .strip_prefix(ARTIFACT_TAG)
        .filter(|rest| rest.len() >= 32)
        .map(|rest| rest.split_at(32))
        .ok_or("not an artifact of this version")?;
    if Sha256::digest(compiled).as_slice() != recorded {
        return Err("its content does not match its recorded hash".into());
    }
    // SAFETY: the artifact is one `store_artifact` wrote from `precompile_component` of an engine
    // with the same compatibility hash (part of the file name), in a directory only this user
    // can write, and its content still has the hash recorded when it was written.
    unsafe { Component::deserialize(engine, compiled) }.map_err(|e| format!("{e:#}"))
}

fn store_artifact(file: &Path, compiled: &[u8]) {
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        out.write_all(ARTIFACT_TAG)?;
        out.write_all(&Sha256::digest(compiled))?;
        out.write_all(compiled)?;
        drop(out);
        std::fs::rename(&tmp, file)
    };
    if let Err(e) = write() {
        tracing::warn!("cannot cache compiled plugin at {}: {e}", file.display());
    }
}

fn build_engine(config: &RuntimeConfig, pooling: bool) -> Result<Engine, PluginError> {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true);
    cfg.epoch_interruption(true);
    cfg.memory_init_cow(true);
    cfg.parallel_compilation(true);
    if pooling {
        let n = config.max_instances.max(16);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 4)
            .total_stacks(n)
            .max_core_instances_per_component(50)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_memory_size(config.max_memory_mb as usize * 1024 * 1024)
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&cfg).map_err(PluginError::engine)
}

fn start_ticker(engine: &Engine) -> Ticker {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let engine = engine.clone();
    let thread = std::thread::Builder::new()
        .name("mailgate-epoch".into())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .ok();
    Ticker { stop, thread }
}
