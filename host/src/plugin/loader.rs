//! Turns the config's `[[plugin]]` entries into ready-to-instantiate plugins: compile (or load
//! from cache), find which contract version the component implements and which stages it
//! exports, ask it to describe itself, and check its grants and settings.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::contract_v0_1 as v0_1;
use super::contract_v0_2 as v0_2;
use super::engine::Runtime;
use super::external::ExternalFilter;
use super::host_api::{HostState, PluginIdentity, TransactionContext};
use super::info::PluginInfo;
use super::services::Services;
use super::trap::{describe_trap, Fault};
use super::{Capability, PluginError, Stage};
use crate::config::{Config, FailurePolicy, PluginConfig};
use crate::telemetry::metrics;

/// How long past its deadline a stage call may go before it is dropped: guest code is
/// stopped by the epoch within a tick or two, host calls answer at the deadline, so only
/// a wait the host does not bound reaches this.
pub(super) const OVERRUN_GRACE: Duration = Duration::from_millis(50);

/// How to instantiate a component, by the contract version it implements.
pub(super) enum Bindings {
    V0_1(v0_1::Pre),
    V0_2 {
        pre: InstancePre<HostState>,
        exports: v0_2::Exports,
    },
}

/// A live instance's bindings.
pub(super) enum LiveInstance {
    V0_1(v0_1::Instance),
    V0_2(v0_2::Instance),
}

impl Bindings {
    pub(super) async fn instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<LiveInstance> {
        match self {
            Bindings::V0_1(pre) => Ok(LiveInstance::V0_1(pre.instantiate_async(store).await?)),
            Bindings::V0_2 { pre, exports } => {
                let instance = pre.instantiate_async(&mut *store).await?;
                Ok(LiveInstance::V0_2(exports.load(store, &instance)?))
            }
        }
    }

    async fn describe(
        &self,
        instance: &LiveInstance,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Result<PluginInfo, String>> {
        match (self, instance) {
            (Bindings::V0_1(_), LiveInstance::V0_1(plugin)) => {
                v0_1::describe(plugin, store).await.map(Ok)
            }
            (Bindings::V0_2 { exports, .. }, LiveInstance::V0_2(plugin)) => {
                v0_2::describe(plugin, exports.stages(), store).await
            }
            _ => wasmtime::bail!("instance of another contract version"),
        }
    }
}

/// A live plugin instance. A transaction keeps it for all its stages; afterwards it goes back
/// to its plugin's idle pool and serves later transactions, up to `runtime.instance-reuse`
/// of them (instantiation costs ~20 us per plugin, a call ~2 us). A trapped one is dropped.
pub(super) struct Live {
    pub store: Store<HostState>,
    pub instance: LiveInstance,
    pub transactions: u32,
}

/// A fresh instance of `plugin` for the transaction `ctx`, within its memory cap and deadline.
pub(super) async fn instantiate(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    ctx: &Arc<TransactionContext>,
) -> Result<Live, Fault> {
    let state = HostState::new(plugin.identity.clone(), ctx.clone(), plugin.memory_bytes);
    let mut store = Store::new(&runtime.engine, state);
    store.limiter(|s| &mut s.memory);
    store.set_epoch_deadline(Runtime::deadline_ticks(plugin.timeout));
    metrics::plugin_instance_created(&plugin.name);
    let _running = runtime.running();
    let Member::Component(bindings) = &plugin.member else {
        return Err(Fault::Invalid(format!(
            "{} is not a component",
            plugin.name
        )));
    };
    let limit = plugin.timeout + OVERRUN_GRACE;
    let Ok(instantiated) = tokio::time::timeout(limit, bindings.instantiate(&mut store)).await
    else {
        let text = format!("deadline of {} ms exceeded", plugin.timeout.as_millis());
        return Err(Fault::Trap(super::trap::TrapKind::Deadline, text));
    };
    match instantiated {
        Ok(instance) => Ok(Live {
            store,
            instance,
            transactions: 0,
        }),
        Err(e) => {
            let output = store.data_mut().collect_output();
            let hit = store.data().memory.hit;
            Err(describe_trap(
                &e,
                (plugin.memory_bytes, plugin.timeout),
                hit,
                &output,
            ))
        }
    }
}

/// What a chain member is.
pub(super) enum Member {
    /// A WebAssembly component, instantiated per transaction.
    Component(Bindings),
    /// A filter outside the process, with one conversation per client session.
    External(Arc<dyn ExternalFilter>),
}

/// A chain member ready to run: a component to instantiate for each transaction, or an
/// outside filter.
pub struct LoadedPlugin {
    /// The name from the config, else from `describe`; used in logs, notes, kv and reports.
    pub name: String,
    pub info: PluginInfo,
    pub policy: FailurePolicy,
    pub timeout: Duration,
    pub memory_bytes: usize,
    /// Transactions one instance serves before a fresh one replaces it.
    pub instance_reuse: u32,
    /// The component file and its SHA-256 (hex); for an outside filter, its address and "-".
    pub path: PathBuf,
    pub sha256: String,
    /// Stage calls and faults since this set was loaded.
    pub calls: AtomicU64,
    pub faults: AtomicU64,
    pub(super) identity: Arc<PluginIdentity>,
    pub(super) member: Member,
    idle: Mutex<Vec<Live>>,
}

impl LoadedPlugin {
    pub fn handles(&self, stage: Stage) -> bool {
        self.info.stages.contains(&stage)
    }

    /// The outside filter this member is, if it is not a component.
    pub fn external(&self) -> Option<&Arc<dyn ExternalFilter>> {
        match &self.member {
            Member::External(filter) => Some(filter),
            Member::Component(_) => None,
        }
    }

    pub(super) fn count_call(&self, fault: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if fault {
            self.faults.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Instances pooled for reuse now.
    pub fn idle_instances(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
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
        for loaded in PluginSet::load_each(&runtime, config).await {
            plugins.push(loaded?);
        }
        Ok(PluginSet::of(runtime, plugins))
    }

    /// Loads every plugin of the config to be explained (`mailgate plugins --explain`): a
    /// `[plugin.config]` the plugin would refuse does not stop it, since that refusal is what
    /// an explanation helps to fix. Other failures are returned as by [`PluginSet::load`].
    pub async fn load_to_explain(
        runtime: Arc<Runtime>,
        config: &Config,
    ) -> Result<PluginSet, PluginError> {
        let mut plugins = Vec::with_capacity(config.plugins.len());
        for entry in &config.plugins {
            plugins.push(Arc::new(
                load_one(&runtime, config, entry, Settings::Unchecked).await?,
            ));
        }
        Ok(PluginSet::of(runtime, plugins))
    }

    /// Loads each plugin of the config, going on past failures: one result per `[[plugin]]`
    /// entry, in order (`mailgate config check` reports every problem, not the first).
    pub async fn load_each(
        runtime: &Arc<Runtime>,
        config: &Config,
    ) -> Vec<Result<Arc<LoadedPlugin>, PluginError>> {
        let mut results: Vec<Result<Arc<LoadedPlugin>, PluginError>> =
            Vec::with_capacity(config.plugins.len());
        for entry in &config.plugins {
            let loaded = load_one(runtime, config, entry, Settings::Checked)
                .await
                .and_then(|plugin| {
                    let earlier = results.iter().flatten().find(|p| p.name == plugin.name);
                    match earlier {
                        Some(other) => Err(PluginError::Settings {
                            origin: config.origin.clone(),
                            reason: format!(
                            "line {}: two plugins are named {:?} ({} and {}); give one a `name`",
                            entry.line,
                            plugin.name,
                            other.path.display(),
                            plugin.path.display()
                        ),
                        }),
                        None => Ok(Arc::new(plugin)),
                    }
                });
            results.push(loaded);
        }
        results
    }

    /// The set of these loaded plugins, in this order.
    pub fn of(runtime: Arc<Runtime>, plugins: Vec<Arc<LoadedPlugin>>) -> PluginSet {
        PluginSet {
            runtime,
            plugins,
            generation: 1,
            loaded_at: SystemTime::now(),
        }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }
}

/// Whether a plugin's `[plugin.config]` is checked against the keys it declares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settings {
    Checked,
    /// Only to explain the plugin.
    Unchecked,
}

async fn load_one(
    runtime: &Runtime,
    config: &Config,
    entry: &PluginConfig,
    settings: Settings,
) -> Result<LoadedPlugin, PluginError> {
    if entry.milter.is_some() {
        return load_external(runtime, config, entry);
    }
    let path = config.resolve(&entry.path);
    // Compiling takes seconds to a minute (and may wait for another process compiling the
    // same component): not on a runtime worker, where other clients' tasks would wait.
    let (component, sha256) = crate::sys::blocking::run(|| runtime.load_component(&path))?;
    let contract_err = |reason: String| PluginError::Contract {
        path: path.clone(),
        reason,
    };
    let instance_pre =
        (runtime.linker.instantiate_pre(&component)).map_err(|e| contract_err(format!("{e:#}")))?;
    let bindings = match v0_2::Exports::find(&instance_pre) {
        Ok(exports) => Bindings::V0_2 {
            pre: instance_pre,
            exports,
        },
        Err(v0_2_reason) => match v0_1::bind(instance_pre) {
            Ok(pre) => Bindings::V0_1(pre),
            Err(v0_1_reason) => {
                return Err(contract_err(format!(
                    "0.2: {v0_2_reason}; 0.1: {v0_1_reason}"
                )))
            }
        },
    };
    let memory_bytes = entry.memory_mb as usize * 1024 * 1024;
    let timeout = entry.timeout();
    let describing = entry.name.clone().unwrap_or_else(|| entry.display_name());
    let info = describe(
        runtime,
        &bindings,
        &describing,
        &entry.config,
        memory_bytes,
        timeout,
    )
    .await
    .map_err(|reason| PluginError::Describe {
        path: path.clone(),
        reason,
    })?;
    let info = match &bindings {
        Bindings::V0_2 { .. } => PluginInfo {
            contract: v0_2::contract_version(&component, &runtime.engine),
            ..info
        },
        Bindings::V0_1(_) => info,
    };
    let name = entry.name.clone().unwrap_or_else(|| info.name.clone());
    let problems = match settings {
        Settings::Checked => check_settings(&info, entry),
        Settings::Unchecked => Vec::new(),
    };
    if !problems.is_empty() {
        // One problem per line, each naming the file and line as the first does.
        let origin = config.origin.display().to_string();
        return Err(PluginError::Settings {
            origin: config.origin.clone(),
            reason: format!(
                "{} (plugin {name}; `mailgate plugins --config {origin} --explain {name}`)",
                problems.join(&format!("\n  {origin}: "))
            ),
        });
    }
    let granted: Vec<Capability> = entry.grant.iter().map(|&g| Capability::from(g)).collect();
    warn_about_grants(&name, &info.capabilities, &granted);
    let files = match &entry.files {
        Some(dir) if info.capabilities.contains(&Capability::Files) => {
            let dir = config.resolve(dir);
            let opened = cap_std::fs::Dir::open_ambient_dir(&dir, cap_std::ambient_authority())
                .map_err(|e| PluginError::Grant {
                    path: path.clone(),
                    reason: format!("files = {}: {e}", dir.display()),
                })?;
            Some(Arc::new(opened))
        }
        _ => None,
    };
    Ok(LoadedPlugin {
        identity: Arc::new(PluginIdentity {
            name: name.clone(),
            config: entry.config.clone(),
            declared: info.capabilities.clone(),
            granted,
            files,
        }),
        name,
        info,
        policy: entry.on_failure,
        timeout,
        memory_bytes,
        instance_reuse: entry
            .instance_reuse
            .unwrap_or(config.runtime.instance_reuse)
            .max(1),
        path,
        sha256,
        calls: AtomicU64::new(0),
        faults: AtomicU64::new(0),
        member: Member::Component(bindings),
        idle: Mutex::new(Vec::new()),
    })
}

/// A member that is an outside filter, built by the runtime's factory. Nothing is connected
/// yet: a filter that is down when the chain loads is met by its failure policy when used.
fn load_external(
    runtime: &Runtime,
    config: &Config,
    entry: &PluginConfig,
) -> Result<LoadedPlugin, PluginError> {
    let filter =
        runtime
            .externals
            .build(entry, config)
            .map_err(|reason| PluginError::Settings {
                origin: config.origin.clone(),
                reason: format!("line {}: {reason}", entry.line),
            })?;
    let name = entry.display_name();
    let info = PluginInfo {
        name: name.clone(),
        version: "-".into(),
        stages: filter.stages(),
        capabilities: Vec::new(),
        config: Vec::new(),
        contract: filter.protocol(),
    };
    Ok(LoadedPlugin {
        identity: Arc::new(PluginIdentity::bare(&name, &entry.config)),
        name,
        info,
        policy: entry.on_failure,
        timeout: entry.timeout(),
        memory_bytes: 0,
        instance_reuse: 1,
        path: PathBuf::from(filter.target()),
        sha256: "-".into(),
        calls: AtomicU64::new(0),
        faults: AtomicU64::new(0),
        member: Member::External(filter),
        idle: Mutex::new(Vec::new()),
    })
}

/// Declared but not granted, and granted but not declared: both are worth a line in the log.
fn warn_about_grants(name: &str, declared: &[Capability], granted: &[Capability]) {
    for missing in declared.iter().filter(|c| !granted.contains(c)) {
        tracing::warn!(
            plugin = name,
            "asks for capability {}, which the config does not grant: its calls will be refused",
            missing.name()
        );
    }
    for unused in granted.iter().filter(|c| !declared.contains(c)) {
        tracing::warn!(
            plugin = name,
            "is granted capability {}, which it does not declare: the grant has no effect",
            unused.name()
        );
    }
}

/// Checks `[plugin.config]` against the keys the plugin declares (when it declares any):
/// every key it does not know (with the nearest it does), every value of the wrong type, every
/// required key missing, each as `line N: ...`.
fn check_settings(info: &PluginInfo, entry: &PluginConfig) -> Vec<String> {
    if info.config.is_empty() {
        return Vec::new();
    }
    let line = |key: &str| entry.config_lines.get(key).copied().unwrap_or(entry.line);
    let known: Vec<&str> = info.config.iter().map(|k| k.name.as_str()).collect();
    let mut problems = Vec::new();
    // In the order of the file, as an operator reads it.
    let mut keys: Vec<(&String, &toml::Value)> = entry.config.iter().collect();
    keys.sort_by_key(|(key, _)| line(key));
    for (key, value) in keys {
        let Some(declared) = info.config.iter().find(|k| &k.name == key) else {
            let hint = nearest(key, &known)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            problems.push(format!(
                "line {}: config key `{key}` is not one the plugin declares{hint} (it knows: {})",
                line(key),
                known.join(", ")
            ));
            continue;
        };
        if !declared.value_type.accepts(value) {
            problems.push(format!(
                "line {}: config key `{key}` must be of type {}, not {}",
                line(key),
                declared.value_type.name(),
                value.type_str()
            ));
        }
    }
    for missing in
        (info.config.iter()).filter(|k| k.required && !entry.config.contains_key(&k.name))
    {
        problems.push(format!(
            "line {}: config key `{}` is required ({})",
            entry.line, missing.name, missing.doc
        ));
    }
    problems
}

/// The known key closest to a misspelt one, if one is close: at most a third of its letters
/// (rounded up) changed, added or dropped.
fn nearest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let most = key.chars().count().div_ceil(3);
    known
        .iter()
        .map(|k| {
            (
                edit_distance(&key.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                *k,
            )
        })
        .filter(|(d, _)| *d <= most)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Instantiates the plugin once and asks it what it is.
async fn describe(
    runtime: &Runtime,
    bindings: &Bindings,
    name: &str,
    config: &toml::Table,
    memory_bytes: usize,
    timeout: Duration,
) -> Result<PluginInfo, String> {
    // The plugin sees its config already: what it declares may depend on it.
    let identity = Arc::new(PluginIdentity::bare(name, config));
    let tx = Arc::new(TransactionContext::new(
        "describe".into(),
        Services::with_dns(Arc::new(crate::dns::StaticDns::default())),
    ));
    let mut store = Store::new(&runtime.engine, HostState::new(identity, tx, memory_bytes));
    store.limiter(|s| &mut s.memory);
    let budget = timeout.max(Duration::from_secs(1));
    store.set_epoch_deadline(Runtime::deadline_ticks(budget));
    let _running = runtime.running();
    // Bounded as a stage call is: a component waiting in the host (a WASI clock sleep) while
    // it starts or describes itself would otherwise hold the load, or `config check`, forever.
    let describing = async {
        match bindings.instantiate(&mut store).await {
            Ok(instance) => bindings.describe(&instance, &mut store).await,
            Err(e) => Err(e),
        }
    };
    let limit = budget + OVERRUN_GRACE;
    let Ok(described) = tokio::time::timeout(limit, describing).await else {
        return Err(format!(
            "deadline of {} ms exceeded while starting and describing",
            budget.as_millis()
        ));
    };
    let output = store.data_mut().collect_output();
    let info = match described {
        Ok(info) => info?,
        Err(e) => return Err(super::trap::trap_text(&e, &output)),
    };
    if info.name.trim().is_empty() {
        return Err("describe returned an empty name".into());
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::ConfigKey;

    fn info(keys: Vec<ConfigKey>) -> PluginInfo {
        PluginInfo {
            name: "p".into(),
            version: "1".into(),
            stages: vec![],
            capabilities: vec![],
            config: keys,
            contract: "0.2.0",
        }
    }

    #[test]
    fn settings_are_checked_against_the_declared_keys_with_lines() {
        let text = "[[plugin]]\npath = \"p.wasm\"\n[plugin.config]\nlimit = 5\nlsit = 3\n";
        let config = Config::parse(text, std::path::Path::new("g.toml"), ".".into()).unwrap();
        let entry = &config.plugins[0];
        let limit = ConfigKey::new("limit".into(), "integer", None, "max".into(), false).unwrap();
        let err = check_settings(&info(vec![limit.clone()]), entry).join("\n");
        assert!(
            err.starts_with(
                "line 5: config key `lsit` is not one the plugin declares; did you mean `limit`?"
            ),
            "{err}"
        );
        let text = "[[plugin]]\npath = \"p.wasm\"\nconfig = { limit = \"five\", zzz = 1 }\n";
        let config = Config::parse(text, std::path::Path::new("g.toml"), ".".into()).unwrap();
        let problems = check_settings(&info(vec![limit]), &config.plugins[0]);
        assert_eq!(problems.len(), 2, "every problem is reported: {problems:?}");
        assert!(
            problems[0].contains("line 3: config key `limit` must be of type integer"),
            "{problems:?}"
        );
        // Nothing close: no guess.
        assert!(
            problems[1].contains("`zzz` is not one the plugin declares (it knows: limit)"),
            "{problems:?}"
        );
        assert!(ConfigKey::new("x".into(), "number", None, String::new(), false).is_err());
    }
}
