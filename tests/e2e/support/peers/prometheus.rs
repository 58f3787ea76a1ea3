//! Prometheus scraping the gateway's metrics.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use super::{sbin, Process};
use crate::{free_port, wait_for_port, wait_until};

/// A Prometheus server (Debian's `prometheus`) scraping `targets` every second, with its
/// storage in a temporary directory.
pub struct Prometheus {
    pub port: u16,
    _dir: tempfile::TempDir,
    _process: Process,
}

impl Prometheus {
    pub fn start(targets: &[u16]) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: mailgate\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).expect("prometheus.yml");
        let child = Command::new(sbin("prometheus"))
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus)");
        wait_for_port(port);
        Prometheus {
            port,
            _dir: dir,
            _process: Process(child),
        }
    }

    /// The value of an instant query's first series, if it has one.
    pub fn query(&self, expr: &str) -> Option<f64> {
        let out = Command::new("curl")
            .args(["-sS", "--get", "--data-urlencode"])
            .arg(format!("query={expr}"))
            .arg(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .output()
            .expect("curl");
        let body: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let value = body["data"]["result"].get(0)?["value"][1].as_str()?;
        value.parse().ok()
    }

    /// Every series of an instant query: its labels (`__name__` among them) and value.
    pub fn query_all(&self, expr: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let out = Command::new("curl")
            .args(["-sS", "--get", "--data-urlencode"])
            .arg(format!("query={expr}"))
            .arg(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .output()
            .expect("curl");
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return Vec::new();
        };
        let Some(results) = body["data"]["result"].as_array() else {
            return Vec::new();
        };
        results
            .iter()
            .filter_map(|series| {
                let labels = series["metric"]
                    .as_object()?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let value = series["value"][1].as_str()?.parse().ok()?;
                Some((labels, value))
            })
            .collect()
    }

    /// Waits (up to `secs`) until `expr` has a value meeting `ok`; the last value seen.
    pub fn wait_for(&self, secs: u64, expr: &str, ok: impl Fn(f64) -> bool) -> Option<f64> {
        let mut last = None;
        wait_until(secs, || {
            last = self.query(expr);
            last.is_some_and(&ok)
        });
        last
    }
}
