//! Turns the config's `[[plugin]]` entries into ready-to-instantiate plugins: compile (or load
//! from cache), check the contract, ask the plugin to describe itself.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use wasmtime::Store;

use super::bindings::{types as wit, PluginPre};
use super::chain::Live;
use super::engine::Runtime;
use super::host_api::{HostState, PluginIdentity, TransactionContext};
use super::services::Services;
use super::{Capability, PluginError, Stage};
use crate::config::{Config, FailurePolicy, PluginConfig};

/// What a plugin said about itself in `describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub stages: Vec<Stage>,
    pub capabilities: Vec<Capability>,
}

/// A plugin ready to be instantiated for each transaction.
pub struct LoadedPlugin {
    /// The name from the config (or file name); used in logs, notes and reports.
    pub name: String,
    pub info: PluginInfo,
    pub policy: FailurePolicy,
    pub timeout: Duration,
    pub memory_bytes: usize,
    /// The component file and its SHA-256 (hex).
    pub path: PathBuf,
    pub sha256: String,
    /// Stage calls and faults since this set was loaded.
    pub calls: AtomicU64,
    pub faults: AtomicU64,
    pub(super) identity: Arc<PluginIdentity>,
    pub(super) pre: PluginPre<HostState>,
    idle: Mutex<Vec<Live>>,
}

impl LoadedPlugin {
    pub fn handles(&self, stage: Stage) -> bool {
        self.info.stages.contains(&stage)
    }

    pub(super) fn count_call(&self, fault: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if fault {
            self.faults.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn take_idle(&self) -> Option<Live> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    pub(super) fn put_idle(&self, live: Live, max: usize) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < max {
            idle.push(live);
        }
    }
}

/// The plugin chain, in configured order, and the engine it runs on. Immutable once built; a
/// reload builds a new set beside it. Dropping the last reference frees its compiled code and
/// its idle instances.
pub struct PluginSet {
    pub(super) runtime: Arc<Runtime>,
    pub plugins: Vec<Arc<LoadedPlugin>>,
    /// Transactions one instance serves before it is replaced by a fresh one.
    pub(super) instance_reuse: u32,
    /// 1 for the set loaded at start, one more for each successful reload.
    pub generation: u64,
    pub loaded_at: SystemTime,
}

impl std::fmt::Debug for PluginSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.plugins.iter().map(|p| p.name.as_str()).collect();
        f.debug_struct("PluginSet")
            .field("plugins", &names)
            .finish()
    }
}

impl PluginSet {
    /// True when some plugin in the set runs at `stage`.
    pub fn handles(&self, stage: super::Stage) -> bool {
        self.plugins.iter().any(|p| p.handles(stage))
    }

    /// Loads every plugin of the config. The first failure is returned with the file and reason.
    pub async fn load(runtime: Arc<Runtime>, config: &Config) -> Result<PluginSet, PluginError> {
        let mut plugins = Vec::with_capacity(config.plugins.len());
        for entry in &config.plugins {
            let plugin = load_one(&runtime, config, entry, &config.runtime.max_memory_mb).await?;
            plugins.push(Arc::new(plugin));
        }
        Ok(PluginSet {
            runtime,
            plugins,
            instance_reuse: config.runtime.instance_reuse.max(1),
            generation: 1,
            loaded_at: SystemTime::now(),
        })
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }
}

async fn load_one(
    runtime: &Runtime,
    config: &Config,
    entry: &PluginConfig,
    max_memory_mb: &u32,
) -> Result<LoadedPlugin, PluginError> {
    let path = config.resolve(&entry.path);
    let (component, sha256) = runtime.load_component(&path)?;
    let instance_pre =
        runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Contract {
                path: path.clone(),
                reason: format!("{e:#}"),
            })?;
    let pre = PluginPre::new(instance_pre).map_err(|e| PluginError::Contract {
        path: path.clone(),
        reason: format!("{e:#}"),
    })?;
    let name = entry.display_name();
    let memory_bytes = entry.memory_mb.min(*max_memory_mb) as usize * 1024 * 1024;
    let timeout = Duration::from_millis(entry.timeout_ms.max(1));
    let describe_err = |reason: String| PluginError::Describe {
        path: path.clone(),
        reason,
    };
    let info = describe(runtime, &pre, &name, &entry.config, memory_bytes, timeout)
        .await
        .map_err(describe_err)?;
    let capabilities: Vec<Capability> = info
        .capabilities
        .iter()
        .copied()
        .filter(|c| entry.grant.contains(c))
        .collect();
    for missing in info
        .capabilities
        .iter()
        .filter(|c| !capabilities.contains(c))
    {
        tracing::warn!(
            plugin = name,
            "asks for capability {missing:?}, which the config does not grant"
        );
    }
    Ok(LoadedPlugin {
        identity: Arc::new(PluginIdentity {
            name: name.clone(),
            config: entry.config.clone(),
            capabilities,
        }),
        name,
        info,
        policy: entry.on_failure,
        timeout,
        memory_bytes,
        path,
        sha256,
        calls: AtomicU64::new(0),
        faults: AtomicU64::new(0),
        pre,
        idle: Mutex::new(Vec::new()),
    })
}

/// Instantiates the plugin once and asks it what it is.
async fn describe(
    runtime: &Runtime,
    pre: &PluginPre<HostState>,
    name: &str,
    config: &toml::Table,
    memory_bytes: usize,
    timeout: Duration,
) -> Result<PluginInfo, String> {
    // The plugin sees its config already: the stages it wants may depend on it.
    let identity = Arc::new(PluginIdentity {
        name: name.to_string(),
        config: config.clone(),
        capabilities: Vec::new(),
    });
    let tx = Arc::new(TransactionContext::new(
        "describe".into(),
        Services::with_dns(Arc::new(super::services::StaticDns::default())),
    ));
    let mut store = Store::new(&runtime.engine, HostState::new(identity, tx, memory_bytes));
    store.limiter(|s| &mut s.memory);
    store.set_epoch_deadline(Runtime::deadline_ticks(timeout.max(Duration::from_secs(1))));
    let plugin = pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let info: wit::PluginInfo = plugin
        .mailgate_plugin_handler()
        .call_describe(&mut store)
        .await
        .map_err(|e| format!("{e:#}"))?;
    if info.name.trim().is_empty() {
        return Err("describe returned an empty name".into());
    }
    let mut stages: Vec<Stage> = info.stages.into_iter().map(Stage::from).collect();
    stages.dedup();
    Ok(PluginInfo {
        name: info.name,
        version: info.version,
        stages,
        capabilities: info
            .capabilities
            .into_iter()
            .map(|c| match c {
                wit::Capability::Kv => Capability::Kv,
                wit::Capability::Dns => Capability::Dns,
            })
            .collect(),
    })
}
