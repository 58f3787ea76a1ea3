//! The wasmtime engine: configuration, the epoch ticker that enforces deadlines, the linker
//! with our imports, and the on-disk cache of compiled components.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{v0_1, v0_2};
use super::cache::ArtifactCache;
use super::external::{ExternalFactory, NoExternals};
use super::host_api::HostState;
use super::ticker::{Running, Ticker, EPOCH_TICK};
use super::PluginError;
use crate::config::RuntimeConfig;

/// One engine for the whole process; plugin sets (and reloads) share it.
pub struct Runtime {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    cache: Option<ArtifactCache>,
    ticker: Option<Ticker>,
    /// Builds the chain members that are not components (milters).
    pub(super) externals: Arc<dyn ExternalFactory>,
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
        // Every contract version's imports, side by side: a component links against its own.
        v0_2::Gateway::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(PluginError::engine)?;
        v0_1::Plugin::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(PluginError::engine)?;
        let ticker = Ticker::start(&engine);
        Ok(Runtime {
            engine,
            linker,
            cache: cache_dir.as_deref().and_then(ArtifactCache::open),
            ticker,
            externals: Arc::new(NoExternals),
        })
    }

    /// The runtime with `factory` building its non-component members.
    pub fn with_externals(self, factory: Arc<dyn ExternalFactory>) -> Runtime {
        Runtime {
            externals: factory,
            ..self
        }
    }

    /// Reads, checks and compiles (or loads from the cache) one component. Returns it with the
    /// SHA-256 of the file, in hex.
    pub fn load_component(&self, path: &Path) -> Result<(Component, String), PluginError> {
        use crate::config::file::{read_regular, Links};
        let bytes =
            read_regular(path, MAX_COMPONENT, Links::Follow).map_err(|e| PluginError::Read {
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
        let key = self.cache_key(&sha256);
        if let Some(component) = self.cache.as_ref().and_then(|c| c.load(&self.engine, &key)) {
            return Ok((component, sha256));
        }
        // Another process or thread may be compiling the same component: wait for it, then
        // take what it stored.
        let _turn = self.cache.as_ref().and_then(|c| c.compile_lock(&key));
        if let Some(component) = self.cache.as_ref().and_then(|c| c.load(&self.engine, &key)) {
            return Ok((component, sha256));
        }
        let compiled = {
            let _progress = CompileProgress::start(path, bytes.len(), self.cache.is_some());
            self.engine.precompile_component(&bytes)
        }
        .map_err(|e| PluginError::NotComponent {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        })?;
        if let Some(cache) = &self.cache {
            cache.store(&key, &compiled);
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

    /// Held while plugin code runs, so that its deadline ticks.
    pub(super) fn running(&self) -> Option<Running> {
        self.ticker.as_ref().map(Ticker::running)
    }
}

/// Says that a plugin is being compiled, every [`CompileProgress::EVERY`] while it lasts, and
/// when it is done: a Python or JavaScript plugin takes seconds to compile cold (the first
/// start after a build), and a gateway that says nothing meanwhile looks hung.
struct CompileProgress {
    /// Dropped when the compilation ends, which wakes the reporter.
    done: Option<std::sync::mpsc::Sender<()>>,
    reporter: Option<std::thread::JoinHandle<()>>,
}

impl CompileProgress {
    const EVERY: Duration = Duration::from_secs(5);

    fn start(path: &Path, size: usize, cached: bool) -> CompileProgress {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let size = if size >= 1_000_000 {
            format!("{:.1} MB", size as f64 / 1e6)
        } else {
            format!("{} KB", size.div_ceil(1000))
        };
        let later = if cached {
            "later starts load it from the cache"
        } else {
            "no cache: every start compiles it"
        };
        tracing::info!("compiling plugin {name} ({size}); {later}");
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let started = std::time::Instant::now();
        let reporter = std::thread::Builder::new()
            .name("plugin-compile-progress".into())
            .spawn(move || loop {
                match finished.recv_timeout(Self::EVERY) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => tracing::info!(
                        "compiling plugin {name}: {} s so far",
                        started.elapsed().as_secs()
                    ),
                    _ => {
                        tracing::info!(
                            "compiling plugin {name}: done after {:.1} s",
                            started.elapsed().as_secs_f64()
                        );
                        return;
                    }
                }
            })
            .ok();
        CompileProgress {
            done: Some(done),
            reporter,
        }
    }
}

impl Drop for CompileProgress {
    fn drop(&mut self) {
        self.done.take();
        if let Some(reporter) = self.reporter.take() {
            let _ = reporter.join();
        }
    }
}

/// Largest component file loaded (a Python plugin with its interpreter is some 40 MB).
const MAX_COMPONENT: u64 = 512 << 20;

fn is_component(bytes: &[u8]) -> bool {
    // Components carry layer 1 in the version field: 0d 00 01 00.
    bytes.len() >= 8 && bytes.starts_with(b"\0asm") && bytes[6..8] == [1, 0]
}

/// Idle pool slots kept warm (their memory resident) for reuse by any module.
const UNUSED_WARM_SLOTS: u32 = 32;

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
            // A slot another module used last keeps up to this much of its memory resident;
            // capping how many such idle slots are kept bounds what reloads (each a new module)
            // leave behind at `UNUSED_WARM_SLOTS` x 1 MiB.
            .max_unused_warm_slots(UNUSED_WARM_SLOTS)
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    } else {
        // On demand, each memory would otherwise reserve 4 GiB of address space up front: a
        // process under an address-space limit (`ulimit -v`, `LimitAS=`), which is also where
        // pooling is refused, could then hardly hold one instance. Reserve what a plugin may
        // use instead (bounds are then checked explicitly, a little slower).
        let cap = u64::from(config.max_memory_mb) << 20;
        cfg.memory_reservation(cap)
            .memory_reservation_for_growth(0)
            .memory_guard_size(64 << 10);
    }
    Engine::new(&cfg).map_err(PluginError::engine)
}
