//! `cargo xtask cluster`: two gateways, one Redis and one PostgreSQL on loopback, for trying a
//! multi-node site by hand. Each node is configured from the template the end-to-end tests'
//! gateways start from. Node A serves every protocol on the embedded defaults' ports (SMTP
//! 2525, submission 2587 and 2465, POP3 2110 and 2995, IMAP 2143 and 2993, JMAP 2443), node B
//! on those plus 1000 (3525, 3587, 3143...); both run the greylist with its triplets in the shared Redis (port 6390)
//! and take their users from the shared PostgreSQL (port 5440, database `mail`). Everything
//! lives under target/cluster/; Ctrl-C stops it all.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{build_plugins, cargo, root};

const REDIS_PORT: u16 = 6390;
const POSTGRES_PORT: u16 = 5440;

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

/// The config every test gateway starts from (`tests/e2e/support/config.rs` fills it in too),
/// so a node is set up as the tests' gateways are.
const GATEWAY_TEMPLATE: &str = include_str!("../../tests/e2e/support/gateway.toml.template");

/// [`GATEWAY_TEMPLATE`] with each `{name}` replaced by its value, in one pass.
fn render(values: &[(&str, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(GATEWAY_TEMPLATE.len() + 1024);
    let mut rest = GATEWAY_TEMPLATE;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("gateway template: an unclosed {")?;
        let name = &after[..close];
        let (_, value) = values
            .iter()
            .find(|(key, _)| *key == name)
            .ok_or_else(|| format!("gateway template: no value for {{{name}}}"))?;
        out.push_str(value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Node `name`'s config: the listeners at the embedded defaults' ports plus `offset`, the
/// users from the shared PostgreSQL, the greylist with its triplets in the shared Redis.
fn node_config(name: &str, offset: u16) -> Result<String, String> {
    let plugins = root().join("target/plugins");
    let port = |base: u16| (base + offset).to_string();
    let extra = format!(
        r#"[kv]
backend = "redis://127.0.0.1:{REDIS_PORT}/0"

[[plugin]]
path = "{greylist}"
grant = ["kv"]
memory-mb = 128
timeout-ms = 2000
[plugin.config]
delay-seconds = 10
"#,
        greylist = plugins.join("greylist.wasm").display(),
    );
    let config = render(&[
        ("hostname", format!("node-{name}.localhost")),
        ("server", String::new()),
        ("metrics", (9925 + offset / 100).to_string()),
        ("domain", "localhost".into()),
        (
            "local",
            format!("source = \"postgres://postgres@127.0.0.1:{POSTGRES_PORT}/mail\""),
        ),
        ("inbound", port(2525)),
        ("submission", port(2587)),
        ("smtps", port(2465)),
        ("pop3", port(2110)),
        ("pop3s", port(2995)),
        ("imap", port(2143)),
        ("imaps", port(2993)),
        ("jmap", port(2443)),
        ("extra", extra),
    ])?;
    Ok(format!(
        "# Node {name} of the trial cluster (cargo xtask cluster).\n{config}"
    ))
}

fn spawn(cmd: &mut Command, what: &str) -> Result<Child, String> {
    cmd.spawn().map_err(|e| format!("cannot start {what}: {e}"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A PostgreSQL program, run as the `postgres` user when we are root (it refuses root).
fn postgres_command(program: &str) -> Result<Command, String> {
    let versions = std::fs::read_dir("/usr/lib/postgresql").map_err(|e| e.to_string())?;
    let mut dirs: Vec<PathBuf> = versions.flatten().map(|e| e.path()).collect();
    dirs.sort();
    let bin = dirs
        .last()
        .ok_or("no PostgreSQL under /usr/lib/postgresql")?
        .join("bin")
        .join(program);
    Ok(if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(bin);
        cmd
    } else {
        Command::new(bin)
    })
}

/// initdb on first use, then the server; returns it.
fn start_postgres(dir: &Path) -> Result<Child, String> {
    let data = dir.join("data");
    if !data.exists() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        if is_root() {
            crate::status(Command::new("chown").arg("postgres:postgres").arg(dir))?;
        }
        crate::status(
            postgres_command("initdb")?
                .args(["--auth=trust", "--username=postgres", "-D"])
                .arg(&data)
                .stdout(Stdio::null()),
        )?;
    }
    spawn(
        postgres_command("postgres")?
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &POSTGRES_PORT.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .stderr(std::fs::File::create(dir.join("postgres.log")).map_err(|e| e.to_string())?),
        "postgres",
    )
}

fn wait_port(port: u16) -> Result<(), String> {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(format!("port {port} never opened"))
}

/// `mailgate user add` on node A's config (the shared database); a user already there is fine.
fn add_user(config: &Path, address: &str, password: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new(root().join("target/release/mailgate"))
        .args(["user", "add", address, "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{password}");
    }
    child.wait().map(|_| ()).map_err(|e| e.to_string())
}

pub fn cluster() -> Result<(), String> {
    build_plugins()?;
    cargo(&["build", "--release", "-p", "mailgate"])?;
    crate::ensure_packages(
        "the trial cluster",
        &[
            ("redis-server", "redis-server"),
            ("pg_ctlcluster", "postgresql"),
        ],
    )?;
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
    running.0.push(start_postgres(&dir.join("postgres"))?);
    wait_port(POSTGRES_PORT)?;
    // The database for the users; "already exists" on later runs is fine.
    let _ = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &POSTGRES_PORT.to_string(),
            "-U",
            "postgres",
        ])
        .args(["-q", "-c", "CREATE DATABASE mail"])
        .stderr(Stdio::null())
        .status();
    for (name, offset) in [("a", 0u16), ("b", 1000)] {
        let node = dir.join(name);
        std::fs::create_dir_all(&node).map_err(|e| e.to_string())?;
        let config = node.join("gateway.toml");
        std::fs::write(&config, node_config(name, offset)?).map_err(|e| e.to_string())?;
        if name == "a" {
            add_user(&config, "postmaster@localhost", "cluster-pw")?;
        }
        running.0.push(spawn(
            Command::new(root().join("target/release/mailgate"))
                .args(["serve", "--config"])
                .arg(&config)
                .stderr(log_file(&node)?),
            "mailgate",
        )?);
    }
    println!(
        "cluster: Redis 127.0.0.1:{REDIS_PORT}, PostgreSQL 127.0.0.1:{POSTGRES_PORT} (database mail);\n\
         node A: SMTP 2525, submission 2587, IMAP 2143; node B: 3525, 3587, 3143 (logs and data in {}).\n\
         The shared greylist:\n  \
         swaks --server 127.0.0.1:2525 --to postmaster@localhost   # 451 4.7.1 Greylisted\n  \
         sleep 10; swaks --server 127.0.0.1:3525 --to postmaster@localhost   # 250 at node B\n\
         The shared users (postmaster@localhost, password cluster-pw), on either node:\n  \
         swaks --server 127.0.0.1:3587 -tls --auth-user postmaster@localhost --auth-password cluster-pw --to postmaster@localhost\n  \
         psql -h 127.0.0.1 -p {POSTGRES_PORT} -U postgres mail -c \"INSERT INTO aliases VALUES ('sales@localhost', 'postmaster@localhost')\"\n\
         Ctrl-C stops both nodes, Redis and PostgreSQL.",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Both nodes come from the shared template, every placeholder filled, node B on ports
    /// 1000 above node A's.
    #[test]
    fn nodes_are_rendered_from_the_gateway_template() {
        let a = node_config("A", 0).expect("node A");
        let b = node_config("B", 1000).expect("node B");
        for (config, smtp, imap) in [(&a, 2525, 2143), (&b, 3525, 3143)] {
            assert!(!config.contains('{'), "placeholder left:\n{config}");
            assert!(config.contains(&format!("address = \"127.0.0.1:{smtp}\"")));
            assert!(config.contains(&format!("address = \"127.0.0.1:{imap}\"")));
            assert!(config.contains("source = \"postgres://postgres@127.0.0.1:5440/mail\""));
            assert!(config.contains("backend = \"redis://127.0.0.1:6390/0\""));
        }
        assert!(a.contains("hostname = \"node-A.localhost\""));
    }
}
