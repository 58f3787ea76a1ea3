//! Finding and running the real `mailgate` binary and the built plugins.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// `$MAILGATE_BIN`, or the binary cargo built next to this test (target/debug/mailgate).
/// Cargo rebuilds it only when the `mailgate` package is among those tested: run
/// `cargo test -p mailgate -p mailgate-e2e` (or `cargo xtask test`), not this package alone.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("MAILGATE_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test exe path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("mailgate");
    assert!(
        bin.exists(),
        "{} missing: run `cargo xtask test`",
        bin.display()
    );
    bin
}

/// The bundled plugins, as `cargo xtask plugins` leaves them.
pub fn plugin_dir() -> PathBuf {
    let dir = root().join("target/plugins");
    assert!(
        dir.join("recipient-policy.wasm").exists(),
        "plugins missing in {}: run `cargo xtask plugins`",
        dir.display()
    );
    dir
}

/// The result of one run of the binary.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `mailgate ARGS` from the workspace root with the bundled plugins and a private cache.
pub fn mailgate(args: &[&str], cache: &Path) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(binary())
        .args(args)
        .current_dir(root())
        .env("MAILGATE_PLUGIN_DIR", plugin_dir())
        .env("MAILGATE_CACHE_DIR", cache)
        .output()
        .expect("run mailgate");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A free TCP port on loopback (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `mailgate serve` with its own data directory and ports, killed on drop.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub inbound: u16,
    pub submission: u16,
    pub smtps: u16,
    child: Option<std::process::Child>,
    config: PathBuf,
}

/// Users every test gateway has (password: `pw-` + local part).
pub const USERS: [&str; 3] = [
    "alice@example.test",
    "bob@example.test",
    "carol@example.test",
];

impl Gateway {
    /// Starts a gateway for the local domain `example.test` with the given extra config
    /// (plugins, limits...), the bundled plugin directory as the plugin base.
    pub fn start(extra: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let (inbound, submission, smtps) = (free_port(), free_port(), free_port());
        let config = dir.path().join("gateway.toml");
        let text = format!(
            r#"[server]
hostname = "mx.example.test"
data-dir = "data"

[local]
domains = ["example.test"]
[local.aliases]
"team@example.test" = ["alice@example.test", "bob@example.test"]

[[listener]]
name = "inbound"
address = "127.0.0.1:{inbound}"
[[listener]]
name = "submission"
address = "127.0.0.1:{submission}"
require-auth = true
[[listener]]
name = "submissions"
address = "127.0.0.1:{smtps}"
tls = "implicit"
require-auth = true

{extra}
"#
        );
        std::fs::write(&config, text).expect("config");
        let mut gateway = Gateway {
            dir,
            inbound,
            submission,
            smtps,
            child: None,
            config,
        };
        for user in USERS {
            gateway.add_user(
                user,
                &format!("pw-{}", user.split('@').next().unwrap_or("")),
            );
        }
        gateway.launch();
        gateway
    }

    /// `mailgate user add` with the password on standard input.
    pub fn add_user(&self, address: &str, password: &str) {
        use std::io::Write;
        let mut child = Command::new(binary())
            .args(["user", "add", address, "--config"])
            .arg(&self.config)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("user add");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("password");
        assert!(
            child.wait().expect("user add").success(),
            "user add {address}"
        );
    }

    /// Starts (or restarts) the server process and waits for its ports.
    pub fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log");
        let child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("MAILGATE_PLUGIN_DIR", plugin_dir())
            .env("MAILGATE_LOG", "info")
            .stderr(log)
            .spawn()
            .expect("serve");
        self.child = Some(child);
        for port in [self.inbound, self.submission, self.smtps] {
            wait_for_port(port);
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The delivered files of a user (new/ and cur/), read.
    pub fn mailbox(&self, address: &str) -> Vec<String> {
        let (local, domain) = address.split_once('@').expect("address");
        let root = self.data().join("mail").join(domain).join(local);
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(root.join(sub)) {
                for e in entries.flatten() {
                    out.push(
                        String::from_utf8_lossy(&std::fs::read(e.path()).expect("read mail"))
                            .into_owned(),
                    );
                }
            }
        }
        out
    }

    /// Waits until `address` has `n` messages (delivery is asynchronous to the 250).
    pub fn wait_mailbox(&self, address: &str, n: usize) -> Vec<String> {
        for _ in 0..100 {
            let mail = self.mailbox(address);
            if mail.len() >= n {
                return mail;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.mailbox(address)
    }

    /// The mailbox once delivery has had time to run (for checking that nothing arrived).
    pub fn settled_mailbox(&self, address: &str) -> Vec<String> {
        std::thread::sleep(std::time::Duration::from_millis(300));
        self.mailbox(address)
    }

    /// Files left in any Maildir tmp/ (half-written deliveries).
    pub fn half_written(&self) -> usize {
        let root = self.data().join("mail");
        let mut count = 0;
        for domain in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for user in std::fs::read_dir(domain.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                count += std::fs::read_dir(user.path().join("tmp"))
                    .map(|d| d.count())
                    .unwrap_or(0);
            }
        }
        count
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("port {port} never opened");
}

/// A plain-text SMTP client that sends exactly the bytes it is given.
pub struct RawSmtp {
    stream: std::net::TcpStream,
    pending: Vec<u8>,
}

impl RawSmtp {
    /// Connects and reads the greeting.
    pub fn connect(port: u16) -> (RawSmtp, String) {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        let mut client = RawSmtp {
            stream,
            pending: Vec::new(),
        };
        let greeting = client.reply();
        (client, greeting)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).expect("send");
    }

    /// One whole reply (all its lines), e.g. "250-a\r\n250 b".
    pub fn reply(&mut self) -> String {
        use std::io::Read;
        let mut lines = Vec::new();
        loop {
            while let Some(pos) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.pending.drain(..pos + 2).take(pos).collect();
                let line = String::from_utf8_lossy(&line).into_owned();
                let last = line.as_bytes().get(3) != Some(&b'-');
                lines.push(line);
                if last {
                    return lines.join("\r\n");
                }
            }
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return lines.join("\r\n"),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Sends a command line and returns the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }
}

/// Runs a Python script (from tests/e2e/clients) with arguments; returns its stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    let path = root().join("tests/e2e/clients").join(script);
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
