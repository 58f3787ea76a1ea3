//! What `/healthz` says, dependency by dependency: the users source, the plugins' kv store
//! (when it is a server), the mail store and the spool (writable, with free space above
//! `[metrics] min-free-mb`), each milter member's circuit breaker, the listeners.
//!
//! Essential dependencies decide whether the gateway can serve (200) or not (503): without the
//! users, the disk or its listeners it cannot take mail. The others only degrade it: a kv store
//! that is down fails the plugins that use it (each by its failure policy), a milter that is
//! down answers by its member's failure policy; the status says `degraded` and stays 200.
//!
//! Probes that touch the network or the disk run in a task of their own every
//! [`PROBE_EVERY`], each within [`PROBE_TIMEOUT`]; `/healthz` reads their last results, so a
//! dead Redis or a hung disk never makes it wait. Each result is also `mailgate_dependency_up`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::milter::client::breaker;
use crate::store::kv::KvStore;
use crate::store::users::{Standing, UserDirectory};
use crate::telemetry::metrics;

/// How often the kv store and the disks are probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// The longest one probe may take; past it the dependency counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The file written and removed to learn that a directory takes files.
const PROBE_FILE: &str = ".healthz-probe";

/// The dependencies and the last results of their probes.
pub struct HealthCheck {
    users: Arc<UserDirectory>,
    kv: Arc<dyn KvStore>,
    mail_dir: PathBuf,
    spool_dir: PathBuf,
    min_free_bytes: u64,
    listeners: Vec<String>,
    listening: AtomicBool,
    probed: Mutex<Probed>,
}

/// What the last probes found; `None` before the first.
#[derive(Default, Clone)]
struct Probed {
    kv: Option<Result<(), String>>,
    mail: Option<Result<u64, String>>,
    spool: Option<Result<u64, String>>,
}

/// One dependency as `/healthz` shows it.
struct Dependency {
    name: String,
    essential: bool,
    up: bool,
    state: String,
    error: Option<String>,
    extra: Vec<(&'static str, Value)>,
}

/// The answer to `/healthz`: whether the gateway can serve, and the JSON body.
pub struct Report {
    pub serving: bool,
    pub body: String,
}

impl HealthCheck {
    pub fn new(
        users: Arc<UserDirectory>,
        kv: Arc<dyn KvStore>,
        (mail_dir, spool_dir): (PathBuf, PathBuf),
        min_free_mb: u64,
        listeners: Vec<String>,
    ) -> HealthCheck {
        HealthCheck {
            users,
            kv,
            mail_dir,
            spool_dir,
            min_free_bytes: min_free_mb.saturating_mul(1 << 20),
            listeners,
            listening: AtomicBool::new(false),
            probed: Mutex::new(Probed::default()),
        }
    }

    /// Every listener is bound (true), or the gateway is stopping (false).
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Relaxed);
    }

    /// The names of the dependencies, for their series at zero.
    pub fn names(&self) -> Vec<String> {
        self.dependencies().into_iter().map(|d| d.name).collect()
    }

    /// Probes now and then until the process ends.
    pub fn spawn_prober(self: &Arc<Self>) {
        let check = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PROBE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                check.probe().await;
                let _ = check.report();
            }
        });
    }

    /// Runs the probes that wait on something, each bounded.
    async fn probe(&self) {
        let kv = if self.kv.is_remote() {
            let probe = tokio::time::timeout(PROBE_TIMEOUT, self.kv.probe()).await;
            Some(probe.unwrap_or_else(|_| {
                Err(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis()))
            }))
        } else {
            None
        };
        let mail = disk_probe(&self.mail_dir, self.min_free_bytes).await;
        let spool = disk_probe(&self.spool_dir, self.min_free_bytes).await;
        *self.probed.lock().unwrap_or_else(|e| e.into_inner()) = Probed {
            kv,
            mail: Some(mail),
            spool: Some(spool),
        };
    }

    /// The state of every dependency now (from the last probes for those that wait), also
    /// set in `mailgate_dependency_up`.
    pub fn report(&self) -> Report {
        let dependencies = self.dependencies();
        let serving = dependencies.iter().all(|d| d.up || !d.essential);
        let all_up = dependencies.iter().all(|d| d.up);
        let status = match (serving, all_up) {
            (true, true) => "ok",
            (true, false) => "degraded",
            (false, _) => "unavailable",
        };
        let mut shown = Map::new();
        for d in &dependencies {
            metrics::dependency_up(&d.name, d.up);
            let mut entry = Map::new();
            entry.insert("up".into(), json!(d.up));
            entry.insert("essential".into(), json!(d.essential));
            entry.insert("state".into(), json!(d.state));
            if let Some(error) = &d.error {
                entry.insert("error".into(), json!(error));
            }
            for (key, value) in &d.extra {
                entry.insert((*key).into(), value.clone());
            }
            shown.insert(d.name.clone(), Value::Object(entry));
        }
        let body = json!({ "status": status, "dependencies": shown });
        Report {
            serving,
            body: format!("{body}\n"),
        }
    }

    fn dependencies(&self) -> Vec<Dependency> {
        let probed = self
            .probed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut all = vec![self.users()];
        if self.kv.is_remote() {
            all.push(kv(probed.kv));
        }
        all.push(disk("mail-store", probed.mail));
        all.push(disk("spool", probed.spool));
        all.extend(milters());
        all.push(self.listeners());
        all
    }

    fn users(&self) -> Dependency {
        let state = match self.users.standing() {
            Standing::Current => "current",
            Standing::Stale => "stale",
            Standing::Unread => "unread",
        };
        let health = self.users.health();
        Dependency {
            name: "users".into(),
            essential: true,
            up: health.is_ok(),
            state: state.into(),
            error: health.err(),
            extra: Vec::new(),
        }
    }

    fn listeners(&self) -> Dependency {
        let bound = self.listening.load(Ordering::Relaxed);
        Dependency {
            name: "listeners".into(),
            essential: true,
            up: bound,
            state: if bound { "bound" } else { "not bound" }.into(),
            error: None,
            extra: vec![("names", json!(self.listeners))],
        }
    }
}

fn kv(probed: Option<Result<(), String>>) -> Dependency {
    let (up, state, error) = match probed {
        None => (false, "not probed yet", None),
        Some(Ok(())) => (true, "reachable", None),
        Some(Err(e)) => (false, "unreachable", Some(e)),
    };
    Dependency {
        name: "kv".into(),
        essential: false,
        up,
        state: state.into(),
        error,
        extra: Vec::new(),
    }
}

fn disk(name: &str, probed: Option<Result<u64, String>>) -> Dependency {
    let (up, state, error, free) = match probed {
        None => (true, "not probed yet", None, None),
        Some(Ok(free)) => (true, "writable", None, Some(free)),
        Some(Err(e)) => (false, "unusable", Some(e), None),
    };
    Dependency {
        name: name.into(),
        essential: true,
        up,
        state: state.into(),
        error,
        extra: free
            .map(|f| vec![("free_bytes", json!(f))])
            .unwrap_or_default(),
    }
}

fn milters() -> Vec<Dependency> {
    breaker::states()
        .into_iter()
        .map(|(member, state, error)| Dependency {
            name: format!("milter:{member}"),
            essential: false,
            up: state == breaker::State::Closed,
            state: state.name().into(),
            error,
            extra: Vec::new(),
        })
        .collect()
}

/// Whether `dir` takes a file and keeps `min_free` bytes free, on the blocking pool within
/// [`PROBE_TIMEOUT`]: the free bytes, or why not.
async fn disk_probe(dir: &Path, min_free: u64) -> Result<u64, String> {
    let dir = dir.to_path_buf();
    let work = tokio::task::spawn_blocking(move || writable_with_room(&dir, min_free));
    match tokio::time::timeout(PROBE_TIMEOUT, work).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(format!("probe failed: {e}")),
        Err(_) => Err(format!(
            "no answer from the disk within {} ms",
            PROBE_TIMEOUT.as_millis()
        )),
    }
}

fn writable_with_room(dir: &Path, min_free: u64) -> Result<u64, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let probe = dir.join(PROBE_FILE);
    std::fs::write(&probe, b"ok").map_err(|e| format!("{}: not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    let stat = rustix::fs::statvfs(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free < min_free {
        return Err(format!(
            "{}: {} MiB free, below the floor of {} MiB",
            dir.display(),
            free >> 20,
            min_free >> 20
        ));
    }
    Ok(free)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_below_the_floor_or_not_writable_is_unusable() {
        let dir = std::env::temp_dir().join(format!("mailgate-health-{}", std::process::id()));
        assert!(writable_with_room(&dir, 0).is_ok());
        let err = writable_with_room(&dir, u64::MAX).unwrap_err();
        assert!(err.contains("below the floor"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        let file =
            std::env::temp_dir().join(format!("mailgate-health-file-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        assert!(writable_with_room(&file.join("sub"), 0).is_err());
        let _ = std::fs::remove_file(&file);
    }
}
