//! A running `mailgate serve` of a test: its config, ports, users and process (what it delivered:
//! `mailboxes.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{
    binary, free_port, mailgate, plugin_dir, shared_plugin_cache, wait_for_port, wait_until, Run,
};
pub use builder::GatewayBuilder;

mod builder;

/// A running `mailgate serve` with its own data directory and ports, killed on drop.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub inbound: u16,
    pub submission: u16,
    pub smtps: u16,
    pub pop3: u16,
    pub pop3s: u16,
    pub imap: u16,
    pub imaps: u16,
    /// JMAP over HTTPS.
    pub jmap: u16,
    /// The metrics listener (`/metrics`, `/healthz`).
    pub metrics: u16,
    child: Option<std::process::Child>,
    config: PathBuf,
    /// `RLIMIT_AS` for the server process, in bytes (see [`GatewayBuilder::bounded`]).
    address_space: Option<u64>,
}

/// The address space a gateway under attack runs in ([`GatewayBuilder::bounded`]): room for its
/// threads, allocator arenas and every legitimate request the tests make (30 MiB APPENDs
/// included), but far below what any of the unbounded expansions reached (4 to 30 GB), so
/// such a request aborts the server and fails the test instead of exhausting the machine.
pub const BOUNDED_ADDRESS_SPACE: u64 = 4 << 30;

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
        Gateway::builder().config(extra).start()
    }

    /// A gateway to describe before it starts:
    /// `Gateway::builder().server("...").config("...").start()`.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    fn add_test_users(&self, domain: &str, local: &str) {
        for user in USERS.iter().filter(|_| !local.contains("source")) {
            let local = user.split('@').next().unwrap_or("");
            self.add_user(&format!("{local}@{domain}"), &format!("pw-{local}"));
        }
    }

    /// Writes the config of a gateway; nothing runs yet.
    fn configure(domain: &str, server: &str, local: &str, extra: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let (inbound, submission, smtps) = (free_port(), free_port(), free_port());
        let (pop3, pop3s) = (free_port(), free_port());
        let (imap, imaps) = (free_port(), free_port());
        let (jmap, metrics) = (free_port(), free_port());
        let config = dir.path().join("gateway.toml");
        let local = format!(
            "{local}\n[local.aliases]\n\"team@{domain}\" = [\"alice@{domain}\", \"bob@{domain}\"]"
        );
        let text = crate::config::render(&[
            ("hostname", "mx.example.test"),
            ("server", server),
            ("metrics", &metrics.to_string()),
            ("domain", domain),
            ("local", &local),
            ("inbound", &inbound.to_string()),
            ("submission", &submission.to_string()),
            ("smtps", &smtps.to_string()),
            ("pop3", &pop3.to_string()),
            ("pop3s", &pop3s.to_string()),
            ("imap", &imap.to_string()),
            ("imaps", &imaps.to_string()),
            ("jmap", &jmap.to_string()),
            ("extra", &with_spool_design(extra)),
        ]);
        std::fs::write(&config, text).expect("config");
        Gateway {
            dir,
            inbound,
            submission,
            smtps,
            pop3,
            pop3s,
            imap,
            imaps,
            jmap,
            metrics,
            child: None,
            config,
            address_space: None,
        }
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
        self.launch_with(&[]);
    }

    /// [`Gateway::launch`] with extra environment variables for the server.
    pub fn launch_with(&mut self, env: &[(&str, &std::ffi::OsStr)]) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log");
        let mut command = Command::new(binary());
        command
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("MAILGATE_PLUGIN_DIR", plugin_dir())
            .env("MAILGATE_LOG", "info")
            // Compiled plugins shared by every test gateway (the plugins under test are
            // built once): a Python or JavaScript plugin compiles once, not in every test.
            .env("MAILGATE_CACHE_DIR", shared_plugin_cache())
            .envs(env.iter().copied())
            .stderr(log);
        if let Some(bytes) = self.address_space {
            limit_address_space(&mut command, bytes);
        }
        let child = command.spawn().expect("serve");
        self.child = Some(child);
        for port in [
            self.inbound,
            self.submission,
            self.smtps,
            self.pop3,
            self.pop3s,
            self.imap,
            self.imaps,
            self.jmap,
            self.metrics,
        ] {
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

    /// Runs `mailgate ARGS --config <this gateway's config>`.
    pub fn cli(&self, args: &[&str]) -> Run {
        let config = self.config.to_string_lossy().into_owned();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", &config]);
        mailgate(&all, &shared_plugin_cache())
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Resident memory of the server process, in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid().expect("running")))
                .expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    /// One request on the admin socket (what `mailgate reload` and friends send).
    pub fn admin(&self, request: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(self.data().join("admin.sock"))
            .expect("admin socket");
        stream
            .write_all(format!("{request}\n").as_bytes())
            .expect("request");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("reply");
        reply
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (up to a minute) for the process to exit: its status and how long
    /// it took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, std::time::Duration) {
        let started = std::time::Instant::now();
        self.send_sigterm();
        (self.wait_exit(), started.elapsed())
    }

    /// SIGTERM, without waiting.
    pub fn send_sigterm(&self) {
        let pid = self.pid().expect("a running server");
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }

    /// Waits (up to a minute, then SIGKILL) for the server to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("a running server");
        let mut status = None;
        wait_until(60, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        status.unwrap_or_else(|| {
            let _ = child.kill();
            child.wait().expect("wait")
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// The child runs with `RLIMIT_AS` at `bytes`, set between fork and exec.
fn limit_address_space(command: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

impl Gateway {
    /// Whether the server process is still running (false once it died, say on an aborted
    /// allocation).
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `MAILGATE_TEST_SPOOL=log` runs every test gateway on that spool design (`[queue] spool`),
/// added to the test's own `[queue]` table when it has one (a test that names a design keeps it).
fn with_spool_design(extra: &str) -> String {
    let Ok(design) = std::env::var("MAILGATE_TEST_SPOOL") else {
        return extra.to_string();
    };
    if extra.contains("\nspool = ") {
        // The test is about one design and names it.
        return extra.to_string();
    }
    let setting = format!("spool = \"{design}\"\n");
    match extra.find("[queue]\n") {
        Some(at) => {
            let after = at + "[queue]\n".len();
            format!("{}{setting}{}", &extra[..after], &extra[after..])
        }
        None => format!("{extra}\n[queue]\n{setting}"),
    }
}
