//! `cargo xtask cluster`: two gateways and one Redis on loopback, for trying a multi-node site
//! by hand. Node A serves SMTP on 2525 (IMAP 2143), node B on 3525 (IMAP 3143); both run the
//! greylist with its triplets in the shared Redis (port 6390). Everything lives under
//! target/cluster/; Ctrl-C stops it all.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::{build_plugins, cargo, root};

const REDIS_PORT: u16 = 6390;

/// Children killed when this ends, however it ends.
struct Running(Vec<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn node_config(name: &str, offset: u16) -> String {
    let plugins = root().join("target/plugins");
    format!(
        r#"# Node {name} of the trial cluster (cargo xtask cluster).
[server]
hostname = "node-{name}.localhost"
data-dir = "data"

[metrics]
address = "127.0.0.1:{metrics}"

[kv]
backend = "redis://127.0.0.1:{REDIS_PORT}/0"

[[listener]]
name = "inbound"
address = "127.0.0.1:{smtp}"
[[listener]]
name = "imap"
address = "127.0.0.1:{imap}"
protocol = "imap"

[[plugin]]
path = "{greylist}"
grant = ["kv"]
memory-mb = 128
timeout-ms = 2000
[plugin.config]
delay-seconds = 10
"#,
        metrics = 9925 + offset / 100,
        smtp = 2525 + offset,
        imap = 2143 + offset,
        greylist = plugins.join("greylist.wasm").display(),
    )
}

fn spawn(cmd: &mut Command, what: &str) -> Result<Child, String> {
    cmd.spawn().map_err(|e| format!("cannot start {what}: {e}"))
}

pub fn cluster() -> Result<(), String> {
    build_plugins()?;
    cargo(&["build", "--release", "-p", "mailgate"])?;
    crate::ensure_packages("the trial cluster", &[("redis-server", "redis-server")])?;
    let dir = root().join("target/cluster");
    let mut running = Running(Vec::new());
    std::fs::create_dir_all(dir.join("redis")).map_err(|e| e.to_string())?;
    running.0.push(spawn(
        Command::new("redis-server")
            .args(["--port", &REDIS_PORT.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.join("redis"))
            .stdout(Stdio::null()),
        "redis-server",
    )?);
    for (name, offset) in [("a", 0u16), ("b", 1000)] {
        let node = dir.join(name);
        std::fs::create_dir_all(&node).map_err(|e| e.to_string())?;
        let config = node.join("gateway.toml");
        std::fs::write(&config, node_config(name, offset)).map_err(|e| e.to_string())?;
        running.0.push(spawn(
            Command::new(root().join("target/release/mailgate"))
                .args(["serve", "--config"])
                .arg(&config)
                .stderr(log_file(&node)?),
            "mailgate",
        )?);
    }
    println!(
        "cluster: Redis on 127.0.0.1:{REDIS_PORT}; node A SMTP 127.0.0.1:2525, node B 127.0.0.1:3525\n\
         (logs and data in {}). Try the shared greylist:\n  \
         swaks --server 127.0.0.1:2525 --to postmaster@localhost   # 451 4.7.1 Greylisted\n  \
         sleep 10; swaks --server 127.0.0.1:3525 --to postmaster@localhost   # 250 at node B\n\
         Ctrl-C stops both nodes and Redis.",
        dir.display()
    );
    // Wait for any of them to end (Ctrl-C ends them all, with us).
    loop {
        for child in &mut running.0 {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("a cluster process ended ({status}); see the logs"));
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn log_file(node: &Path) -> Result<std::fs::File, String> {
    std::fs::File::create(node.join("server.log")).map_err(|e| e.to_string())
}
