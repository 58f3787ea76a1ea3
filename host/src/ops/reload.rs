//! Hot reload of the plugin chain. Triggers: a change to the config file or to a plugin file
//! (polled, debounced), SIGHUP, and `mailgate reload` on the admin socket. A reload reads the
//! config, loads every plugin off the serving path (compiled artifacts come from the cache when
//! the file is unchanged), runs each `describe`, and only then swaps the active set. Any failure
//! leaves the old set serving and is reported. Only the `[[plugin]]` chain is reloaded; other
//! settings take effect at the next start.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::mail::clock::since_epoch;

use crate::config::{Config, ConfigSource};
use crate::plugin::{stage_list, ActivePlugins, PluginSet, Runtime, StageOrder};

/// How often watched files are checked, and how long a change must hold still before a reload.
const POLL: Duration = Duration::from_millis(100);
/// Reloads remembered for `mailgate plugins --history`.
const HISTORY: usize = 50;

/// One reload, for the history.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    pub at: SystemTime,
    pub trigger: String,
    /// The new generation, or why nothing changed.
    pub outcome: Result<u64, String>,
    pub took: Duration,
}

/// Size and modification time of each watched file (`None`: missing).
type Stamps = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

pub struct Reloader {
    source: ConfigSource,
    runtime: Arc<Runtime>,
    active: Arc<ActivePlugins>,
    history: Mutex<VecDeque<ReloadRecord>>,
    /// One reload at a time.
    running: tokio::sync::Mutex<()>,
    /// The files the active set came from, as they were when it was loaded.
    watched: Mutex<Stamps>,
}

fn stamps(paths: &[PathBuf]) -> Stamps {
    paths
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().unwrap_or(UNIX_EPOCH), m.len()));
            (p.clone(), meta)
        })
        .collect()
}

fn watched_paths(
    source: &ConfigSource,
    config: Option<&Config>,
    previous: &Stamps,
) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = source.path.iter().cloned().collect();
    match config {
        Some(config) => paths.extend(
            (config.plugins.iter())
                .filter(|p| p.milter.is_none())
                .map(|p| config.resolve(&p.path)),
        ),
        // The config did not parse: keep watching the plugin files it named before.
        None => paths.extend(
            previous
                .iter()
                .skip(source.path.iter().count())
                .map(|(p, _)| p.clone()),
        ),
    }
    paths
}

impl Reloader {
    pub fn new(
        source: ConfigSource,
        config: &Config,
        runtime: Arc<Runtime>,
        active: Arc<ActivePlugins>,
    ) -> Arc<Reloader> {
        let watched = stamps(&watched_paths(&source, Some(config), &Vec::new()));
        Arc::new(Reloader {
            source,
            runtime,
            active,
            history: Mutex::new(VecDeque::new()),
            running: tokio::sync::Mutex::new(()),
            watched: Mutex::new(watched),
        })
    }

    /// Builds a new set from the config as it is now and puts it in service. Returns the new
    /// generation; on any error the old set stays.
    pub async fn reload(&self, trigger: &str) -> Result<u64, String> {
        let _one_at_a_time = self.running.lock().await;
        let started = Instant::now();
        let previous = self
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let config = self.source.load().map_err(|e| e.to_string());
        let paths = watched_paths(&self.source, config.as_ref().ok(), &previous);
        // What is on disk now is what this attempt saw: the next change triggers the next one.
        *self.watched.lock().unwrap_or_else(|e| e.into_inner()) = stamps(&paths);
        let outcome = match config {
            Ok(config) => PluginSet::load(self.runtime.clone(), &config)
                .await
                .map(|set| self.active.replace(set))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let took = started.elapsed();
        let result = if outcome.is_ok() {
            "applied"
        } else {
            "refused"
        };
        crate::telemetry::metrics::reload(result, self.active.current().generation);
        match &outcome {
            Ok(generation) => {
                let set = self.active.current();
                let plugins: Vec<String> = set
                    .plugins
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {} (contract {})",
                            p.name, p.info.version, p.info.contract
                        )
                    })
                    .collect();
                tracing::info!(
                    trigger,
                    generation,
                    ms = took.as_millis() as u64,
                    plugins = plugins.join(", "),
                    "plugins reloaded"
                )
            }
            Err(e) => tracing::error!(trigger, "reload failed, the current plugins stay: {e}"),
        }
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(ReloadRecord {
            at: SystemTime::now(),
            trigger: trigger.to_string(),
            outcome: outcome.clone(),
            took,
        });
        outcome
    }

    /// Watches the config and plugin files, and SIGHUP.
    pub fn spawn_triggers(self: &Arc<Self>) {
        let watcher = self.clone();
        tokio::spawn(async move { watcher.watch().await });
        let hup = self.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut signals) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP");
                return;
            };
            while signals.recv().await.is_some() {
                let _ = hup.reload("SIGHUP").await;
            }
        });
    }

    /// Reloads once the watched files changed and then held still for one poll.
    async fn watch(&self) {
        let mut seen: Option<Stamps> = None;
        loop {
            tokio::time::sleep(POLL).await;
            let loaded = self
                .watched
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let paths: Vec<PathBuf> = loaded.iter().map(|(p, _)| p.clone()).collect();
            let now = stamps(&paths);
            if now == loaded {
                seen = None;
                continue;
            }
            if seen.as_ref() == Some(&now) {
                seen = None;
                let _ = self.reload("file change").await;
            } else {
                seen = Some(now);
            }
        }
    }

    /// `mailgate plugins`: the active set.
    pub fn describe_active(&self) -> String {
        let set = self.active.current();
        let loaded = since_epoch(set.loaded_at).as_secs();
        let mut out = format!(
            "generation {} loaded {} ({} older generation(s) still in use)\n",
            set.generation,
            crate::mail::date::rfc5322(loaded),
            self.active.retired_in_use()
        );
        out.push_str(&format!(
            "{:<3} {:<20} {:<10} {:<14} {:>9} {:>7}  {}\n",
            "#", "NAME", "VERSION", "SHA256", "CALLS", "FAULTS", "STAGES"
        ));
        for (i, p) in set.plugins.iter().enumerate() {
            out.push_str(&format!(
                "{:<3} {:<20} {:<10} {:<14} {:>9} {:>7}  {}\n",
                i + 1,
                p.name,
                p.info.version,
                &p.sha256[..12.min(p.sha256.len())],
                p.calls.load(Ordering::Relaxed),
                p.faults.load(Ordering::Relaxed),
                stage_list(&p.info.stages, ",")
            ));
        }
        out.push_str("order per stage:\n");
        out.push_str(&StageOrder::new(&set.plugins).lines(None));
        out
    }

    /// `mailgate plugins --history`: the last reloads, oldest first.
    pub fn describe_history(&self) -> String {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for r in history.iter() {
            let at = since_epoch(r.at).as_secs();
            let outcome = match &r.outcome {
                Ok(generation) => format!("ok, generation {generation}"),
                Err(e) => format!("failed: {e}"),
            };
            out.push_str(&format!(
                "{}  {:<12} {:>6} ms  {outcome}\n",
                crate::mail::date::rfc5322(at),
                r.trigger,
                r.took.as_millis()
            ));
        }
        if out.is_empty() {
            out.push_str("no reloads since the start\n");
        }
        out
    }
}
