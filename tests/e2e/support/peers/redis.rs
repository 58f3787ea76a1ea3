//! A Redis server of its own, for the shared key-value store.

use std::process::{Command, Stdio};

use super::{sbin, Process};
use crate::{free_port, wait_for_port};

/// redis-server (Debian's) on a loopback port, nothing persisted; `stop` and `restart`
/// for the tests of a store that goes away.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    process: Option<Process>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut redis = Redis {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            process: None,
        };
        redis.restart();
        redis
    }

    /// The URL gateways use: `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts it (again) on the same port, empty.
    pub fn restart(&mut self) {
        let child = Command::new(sbin("redis-server"))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server)");
        self.process = Some(Process(child));
        wait_for_port(self.port);
    }
}
