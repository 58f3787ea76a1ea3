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

/// A loopback port nothing listens on, never given twice in one test process. It is taken
/// below the kernel's ephemeral range (32768 and up): a port from there could become the
/// source port of some other test's outgoing connection between now and the moment a server
/// binds it, and that server would then fail to start.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Each test process starts elsewhere in the span, in case an earlier one left a server.
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + offset) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN)
}

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
    /// `RLIMIT_AS` for the server process, in bytes (see [`Gateway::start_bounded`]).
    address_space: Option<u64>,
}

/// The address space a gateway under attack runs in ([`Gateway::start_bounded`]): room for its
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
        Gateway::start_with("", extra)
    }

    /// Like [`Gateway::start`], with extra keys for the `[server]` table too.
    pub fn start_with(server: &str, extra: &str) -> Gateway {
        Gateway::start_with_domain("example.test", server, extra)
    }

    /// A gateway whose local domain (and users' domain) is `domain`.
    pub fn start_with_domain(domain: &str, server: &str, extra: &str) -> Gateway {
        Gateway::start_full(domain, server, "", extra)
    }

    /// A gateway whose users come from the database at `url` (`[local] source`), with `local`
    /// keys added to `[local]`; the test users are not added (the database has its own).
    pub fn start_with_users_database(url: &str, local: &str, extra: &str) -> Gateway {
        let local = format!("source = \"{url}\"\n{local}");
        Gateway::start_full("example.test", "", &local, extra)
    }

    /// Like [`Gateway::start_with`], the server running under an address-space limit
    /// ([`BOUNDED_ADDRESS_SPACE`], `setrlimit(RLIMIT_AS)` before exec): an allocation that
    /// grows with a request fails and the process dies, which the test sees.
    pub fn start_bounded(server: &str, extra: &str) -> Gateway {
        let mut gateway = Gateway::configure("example.test", server, "", extra);
        gateway.address_space = Some(BOUNDED_ADDRESS_SPACE);
        gateway.add_test_users("example.test", "");
        gateway.launch();
        gateway
    }

    fn start_full(domain: &str, server: &str, local: &str, extra: &str) -> Gateway {
        let mut gateway = Gateway::configure(domain, server, local, extra);
        gateway.add_test_users(domain, local);
        gateway.launch();
        gateway
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
        let text = format!(
            r#"[server]
hostname = "mx.example.test"
data-dir = "data"
{server}

[metrics]
address = "127.0.0.1:{metrics}"

[local]
domains = ["{domain}"]
{local}
[local.aliases]
"team@{domain}" = ["alice@{domain}", "bob@{domain}"]

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
[[listener]]
name = "pop3"
address = "127.0.0.1:{pop3}"
protocol = "pop3"
[[listener]]
name = "pop3s"
address = "127.0.0.1:{pop3s}"
protocol = "pop3"
tls = "implicit"
[[listener]]
name = "imap"
address = "127.0.0.1:{imap}"
protocol = "imap"
[[listener]]
name = "imaps"
address = "127.0.0.1:{imaps}"
protocol = "imap"
tls = "implicit"
[[listener]]
name = "jmap"
address = "127.0.0.1:{jmap}"
protocol = "jmap"
tls = "implicit"

{extra}
"#
        );
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
        mailgate(&all, &self.dir.path().join("cli-cache"))
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

    /// Sends messages to a local user over one plain SMTP session (each `data` is the DATA
    /// text, already dot-stuffed, without the final dot) and waits until all are delivered.
    pub fn deliver_local(&self, to: &str, data: &[String]) {
        let before = self.mailbox(to).len();
        let (mut smtp, _) = RawSmtp::connect(self.inbound);
        smtp.cmd("EHLO client.test");
        for text in data {
            assert!(smtp
                .cmd("MAIL FROM:<sender@client.test>")
                .starts_with("250"));
            assert!(smtp.cmd(&format!("RCPT TO:<{to}>")).starts_with("250"));
            assert!(smtp.cmd("DATA").starts_with("354"));
            smtp.send(format!("{text}.\r\n").as_bytes());
            assert!(smtp.reply().starts_with("250"));
        }
        smtp.cmd("QUIT");
        assert!(wait_until(10, || self.mailbox(to).len() == before + data.len()));
    }

    /// Waits until `address` has `n` messages (delivery is asynchronous to the 250).
    /// A file put into a user's Maildir (`new/`) by another program, as procmail, Postfix
    /// `virtual` or a migration would.
    pub fn store_directly(&self, address: &str, name: &str, raw: &[u8]) {
        let (local, domain) = address.split_once('@').expect("address");
        let maildir = self.data().join("mail").join(domain).join(local);
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
        }
        std::fs::write(maildir.join("new").join(name), raw).expect("store");
    }

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

    /// Waits for a delivered message of `address` containing `needle`, and returns it.
    pub fn wait_mailbox_matching(&self, address: &str, needle: &str) -> String {
        for _ in 0..200 {
            if let Some(m) = self
                .mailbox(address)
                .into_iter()
                .find(|m| m.contains(needle))
            {
                return m;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("no message with {needle:?} for {address}");
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

/// Taken by tests whose requests load the machine on purpose (the attacks of the hardening
/// tests), so that two of them in one test binary never run at once: one attack's load would
/// slow the other's probes, and each test's figures are its own.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// While a heavy request runs: another client's SMTP greeting and IMAP NOOP, over and over on
/// fresh connections, each answered within a second. Started by [`Responsiveness::watch`],
/// read by [`Responsiveness::finish`]: the slowest answer seen and the failures.
pub struct Responsiveness {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<ProbeLog>>,
}

/// What [`Responsiveness`] saw.
#[derive(Debug, Default)]
pub struct ProbeLog {
    pub rounds: u32,
    pub slowest: std::time::Duration,
    pub failures: Vec<String>,
}

impl Responsiveness {
    /// Starts probing `smtp` (greeting) and `imap` (greeting, NOOP) on loopback.
    pub fn watch(smtp: u16, imap: u16) -> Responsiveness {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut log = ProbeLog::default();
            while !flag.load(Ordering::Relaxed) {
                for (what, result) in [
                    ("SMTP greeting", probe_smtp(smtp)),
                    ("IMAP NOOP", probe_imap(imap)),
                ] {
                    match result {
                        Ok(took) => log.slowest = log.slowest.max(took),
                        Err(e) => log.failures.push(format!("{what}: {e}")),
                    }
                }
                log.rounds += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            log
        });
        Responsiveness {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops probing and asserts every answer came within a second (and at least one round ran).
    pub fn finish(mut self) -> ProbeLog {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let log = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        assert!(log.rounds > 0, "no probe ran");
        assert!(log.failures.is_empty(), "probes failed: {:?}", log.failures);
        assert!(
            log.slowest < std::time::Duration::from_secs(1),
            "slowest answer {:?}",
            log.slowest
        );
        log
    }
}

impl Drop for Responsiveness {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

const PROBE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// Connects and reads the first line; the time it took, or why it failed.
fn probe_line(port: u16, then: Option<&[u8]>) -> Result<std::time::Duration, String> {
    use std::io::{BufRead, BufReader, Write};
    let started = std::time::Instant::now();
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(PROBE_DEADLINE))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("greeting: {e}"))?;
    if let Some(bytes) = then {
        (&stream).write_all(bytes).map_err(|e| e.to_string())?;
        loop {
            line.clear();
            reader
                .read_line(&mut line)
                .map_err(|e| format!("reply: {e}"))?;
            if line.is_empty() || line.starts_with("p ") {
                break;
            }
        }
        if !line.starts_with("p OK") {
            return Err(format!("reply {line:?}"));
        }
    } else if !line.starts_with("220") {
        return Err(format!("greeting {line:?}"));
    }
    Ok(started.elapsed())
}

fn probe_smtp(port: u16) -> Result<std::time::Duration, String> {
    probe_line(port, None)
}

fn probe_imap(port: u16) -> Result<std::time::Duration, String> {
    probe_line(port, Some(b"p NOOP\r\n"))
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits for a listener (a gateway compiling a large plugin on first start takes seconds).
pub fn wait_for_port(port: u16) {
    for _ in 0..2400 {
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

    /// The socket itself, for reading replies that are not SMTP-shaped (POP3).
    pub fn stream(&mut self) -> &mut std::net::TcpStream {
        &mut self.stream
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

/// A `[[plugin]]` entry for the probe fixture named `name`, declaring `stage`, with extra
/// `[plugin.config]` lines (`action.<stage> = ...` and the like).
pub fn probe_plugin(name: &str, stage: &str, settings: &str) -> String {
    let path = root().join("target/test-plugins/probe-plugin.wasm");
    format!(
        "[[plugin]]\nname = \"{name}\"\npath = \"{}\"\n[plugin.config]\nname = \"{name}\"\nstages = [\"{stage}\"]\n{settings}\n",
        path.display()
    )
}

/// `curl -sS -k --user USER [EXTRA...] URL` (the gateway's self-signed certificate); its output.
/// Panics with curl's error when it fails.
pub fn curl(user: &str, extra: &[&str], url: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "-k", "--user", user])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Raw IMAP over implicit TLS: the greeting, then what each (bytes, wait-for) step read.
pub fn imap_raw(gw: &Gateway, steps: &[(&str, &str)]) -> Vec<String> {
    let steps: Vec<(String, String)> = steps
        .iter()
        .map(|(send, wait)| (send.to_string(), wait.to_string()))
        .collect();
    imap_raw_output(imap_raw_background(gw, &steps))
}

/// What a background imap_raw.py session read, step by step.
pub fn imap_raw_output(child: std::process::Child) -> Vec<String> {
    let out = child.wait_with_output().expect("imap_raw.py");
    assert!(
        out.status.success(),
        "imap_raw.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    out.as_array()
        .expect("list")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

/// Starts imap_raw.py in the background with `steps`; the caller collects its output.
pub fn imap_raw_background(gw: &Gateway, steps: &[(String, String)]) -> std::process::Child {
    spawn_imap_raw(gw, &serde_json::to_vec(steps).expect("json"))
}

/// Raw IMAP over several connections to the gateway at once: each step is (session number,
/// bytes, wait-for); session 0's greeting, then what each step read.
pub fn imap_sessions(gw: &Gateway, steps: &[(u32, &str, &str)]) -> Vec<String> {
    let steps: Vec<serde_json::Value> = steps
        .iter()
        .map(|(n, send, wait)| serde_json::json!([send, wait, n]))
        .collect();
    imap_raw_output(spawn_imap_raw(
        gw,
        &serde_json::to_vec(&steps).expect("json"),
    ))
}

fn spawn_imap_raw(gw: &Gateway, steps: &[u8]) -> std::process::Child {
    use std::io::Write;
    let script = root().join("tests/e2e/clients/imap_raw.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .arg(gw.imaps.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(steps)
        .expect("steps");
    child
}

/// Waits up to `secs` seconds for `done` to hold.
pub fn wait_until(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    done()
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

/// The Python with the PyPI clients (`cargo xtask test` makes it: target/pyenv).
pub fn pyenv_python() -> PathBuf {
    std::env::var_os("MAILGATE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/pyenv/bin/python"))
}

/// Runs `jmap_client.py` (the jmapc library from PyPI) against the gateway's JMAP listener
/// as `user` (password `pw-` + local part); its JSON output.
pub fn jmap_client(gw: &Gateway, user: &str, args: &[&str]) -> serde_json::Value {
    let local = user.split('@').next().unwrap_or(user);
    let out = Command::new(pyenv_python())
        .arg(root().join("tests/e2e/clients/jmap_client.py"))
        .arg(gw.jmap.to_string())
        .arg(user)
        .arg(format!("pw-{local}"))
        .args(args)
        .output()
        .expect("target/pyenv/bin/python (made by cargo xtask test)");
    assert!(
        out.status.success(),
        "jmap_client.py {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "jmap_client.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs `webmail_browser.py` (headless Chromium driven by Selenium) against the gateway's
/// webmail page as `user` (password `pw-` + local part); its JSON output. Screenshots are
/// kept in `target/test-artifacts/webmail/`.
pub fn webmail_browser(gw: &Gateway, user: &str, args: &[&str]) -> serde_json::Value {
    let local = user.split('@').next().unwrap_or(user);
    let artifacts = root().join("target/test-artifacts/webmail");
    let out = Command::new(pyenv_python())
        .arg(root().join("tests/e2e/clients/webmail_browser.py"))
        .arg(gw.jmap.to_string())
        .arg(user)
        .arg(format!("pw-{local}"))
        .arg(&artifacts)
        .args(args)
        .output()
        .expect("target/pyenv/bin/python (made by cargo xtask test)");
    assert!(
        out.status.success(),
        "webmail_browser.py {args:?} failed (screenshots in {}):\n{}\n{}",
        artifacts.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "webmail_browser.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A folder's messages as Python's imaplib sees them (`imap_flags.py`), after an optional
/// `UID STORE` given as `[uid, "+FLAGS", "(\\Seen)"]`: each `{uid, flags, subject}`.
pub fn imap_flags(
    gw: &Gateway,
    user: &str,
    folder: &str,
    change: &[&str],
) -> Vec<serde_json::Value> {
    let local = user.split('@').next().unwrap_or(user);
    let port = gw.imaps.to_string();
    let password = format!("pw-{local}");
    let mut args = vec![port.as_str(), user, password.as_str(), folder];
    args.extend(change);
    let out = python("imap_flags.py", &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("imap_flags.py: {e}: {out}"))
}

/// What dkimpy (Debian's python3-dkim) says of `message`, the DNS answered from `records`:
/// `mode` "dkim" gives one line per signature ("pass d=... a=..."), "arc" one line
/// "cv=RESULT sets=N ...".
pub fn dkimpy_verify(mode: &str, message: &[u8], records: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("message.eml");
    std::fs::write(&file, message).expect("write");
    let out = Command::new("/usr/bin/python3")
        .arg(root().join("tests/e2e/clients/dkim_verify.py"))
        .arg(mode)
        .arg(&file)
        .args(records.iter().map(|(name, txt)| format!("{name}={txt}")))
        .output()
        .expect("/usr/bin/python3 (Debian package python3-dkim)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The output of a Python client (run with Debian's /usr/bin/python3, which has dkimpy) that
/// reads `input` on its standard input.
pub fn python_filter(script: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("/usr/bin/python3")
        .arg(root().join("tests/e2e/clients").join(script))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("input");
    let out = child.wait_with_output().expect(script);
    assert!(
        out.status.success(),
        "{script} failed on:\n{}",
        String::from_utf8_lossy(input)
    );
    out.stdout
}

/// Test peers for the relay: SMTP servers downstream of the gateway, and a DNS server.
pub mod peers {
    use super::*;
    use std::process::{Child, Stdio};

    fn is_root() -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    }

    fn sbin(program: &str) -> PathBuf {
        ["/usr/sbin", "/usr/bin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(program))
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from(program))
    }

    /// A child process killed on drop.
    struct Process(Child);

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

    impl Drop for Process {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Postfix's `smtp-sink`, dumping every message it accepts into a directory.
    pub struct SmtpSink {
        pub port: u16,
        pub dir: tempfile::TempDir,
        _process: Process,
    }

    impl SmtpSink {
        pub fn start() -> SmtpSink {
            SmtpSink::start_on(free_port())
        }

        pub fn start_on(port: u16) -> SmtpSink {
            let dir = tempfile::tempdir().expect("tempdir");
            // smtp-sink drops to an unprivileged user when started as root.
            let _ = Command::new("chmod").args(["777"]).arg(dir.path()).status();
            let mut cmd = Command::new(sbin("smtp-sink"));
            if is_root() {
                cmd.args(["-u", "nobody"]);
            }
            let template = format!("{}/%Y%m%d%H%M%S.", dir.path().display());
            let child = cmd
                .args(["-d", &template, &format!("127.0.0.1:{port}"), "64"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("smtp-sink (Debian package postfix)");
            wait_for_port(port);
            SmtpSink {
                port,
                dir,
                _process: Process(child),
            }
        }

        /// Every dumped transaction (smtp-sink's own X- and Received lines first).
        pub fn messages(&self) -> Vec<String> {
            read_files(self.dir.path(), |_| true)
        }
    }

    /// Postfix's `smtp-sink` with extra options (delays such as `-W .:2`), dumping each
    /// message like [`SmtpSink`], and with `-v`: every connection and command it sees, as a
    /// line read from its stderr and the time it was read.
    pub struct WatchedSmtpSink {
        pub port: u16,
        pub dir: tempfile::TempDir,
        seen: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
        _process: Process,
    }

    impl WatchedSmtpSink {
        pub fn start(options: &[&str]) -> WatchedSmtpSink {
            WatchedSmtpSink::start_on(free_port(), options)
        }

        pub fn start_on(port: u16, options: &[&str]) -> WatchedSmtpSink {
            use std::io::BufRead;
            let dir = tempfile::tempdir().expect("tempdir");
            let _ = Command::new("chmod").args(["777"]).arg(dir.path()).status();
            let mut cmd = Command::new(sbin("smtp-sink"));
            if is_root() {
                cmd.args(["-u", "nobody"]);
            }
            let template = format!("{}/%Y%m%d%H%M%S.", dir.path().display());
            let mut child = cmd
                .arg("-v")
                .args(options)
                .args(["-d", &template, &format!("127.0.0.1:{port}"), "64"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("smtp-sink (Debian package postfix)");
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let stderr = child.stderr.take().expect("stderr");
            let lines = seen.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    // "/usr/sbin/smtp-sink: MAIL FROM:<...>" -> "MAIL FROM:<...>"
                    let text = line.split_once(": ").map_or(&line[..], |(_, t)| t);
                    let at = std::time::Instant::now();
                    lines.lock().expect("lines").push((at, text.to_string()));
                }
            });
            wait_for_port(port);
            WatchedSmtpSink {
                port,
                dir,
                seen,
                _process: Process(child),
            }
        }

        /// Every dump (a transaction whose content is being received, or was).
        pub fn messages(&self) -> Vec<String> {
            read_files(self.dir.path(), |_| true)
        }

        /// What the sink logged, each line with when it was read.
        pub fn seen(&self) -> Vec<(std::time::Instant, String)> {
            self.seen.lock().expect("lines").clone()
        }

        /// How many logged lines start with `prefix` (`connect`, `MAIL FROM`, `.`).
        pub fn count(&self, prefix: &str) -> usize {
            self.seen()
                .iter()
                .filter(|(_, l)| l.starts_with(prefix))
                .count()
        }
    }

    /// `tests/e2e/peers/sink.py`: stores each transaction's envelope, raw DATA and message.
    pub struct ScriptedSink {
        pub port: u16,
        pub dir: tempfile::TempDir,
        _process: Process,
    }

    /// One transaction the scripted sink received.
    #[derive(Debug)]
    pub struct Received {
        pub envelope: String,
        /// DATA as it came over the wire (dot-stuffed, without the final dot).
        pub raw: Vec<u8>,
        pub message: Vec<u8>,
    }

    impl ScriptedSink {
        /// Recipients whose local part starts with `reject` get 550 5.1.1.
        pub fn start(reject: Option<&str>) -> ScriptedSink {
            ScriptedSink::start_on("127.0.0.1", free_port(), reject)
        }

        pub fn start_on(_host: &str, port: u16, reject: Option<&str>) -> ScriptedSink {
            let reject: Vec<&str> = reject.into_iter().flat_map(|p| ["--reject", p]).collect();
            ScriptedSink::start_with(port, &reject)
        }

        /// With sink.py's options (`--reject PREFIX`, `--delay-dot SECONDS`).
        pub fn start_with(port: u16, options: &[&str]) -> ScriptedSink {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut cmd = Command::new("python3");
            cmd.arg(root().join("tests/e2e/peers/sink.py"))
                .arg(port.to_string())
                .arg(dir.path())
                .args(options);
            let child = cmd.spawn().expect("python3 sink.py");
            wait_for_port(port);
            ScriptedSink {
                port,
                dir,
                _process: Process(child),
            }
        }

        pub fn received(&self) -> Vec<Received> {
            let mut out = Vec::new();
            for n in 1.. {
                let base = self.dir.path().join(n.to_string());
                let Ok(envelope) = std::fs::read_to_string(base.with_extension("json")) else {
                    break;
                };
                out.push(Received {
                    envelope,
                    raw: std::fs::read(base.with_extension("raw")).unwrap_or_default(),
                    message: std::fs::read(base.with_extension("eml")).unwrap_or_default(),
                });
            }
            out
        }

        pub fn wait(&self, n: usize, secs: u64) -> Vec<Received> {
            wait_until(secs, || self.received().len() >= n);
            self.received()
        }
    }

    /// `tests/e2e/peers/milter.py`: a milter that answers as `mode` says and logs each
    /// command it receives.
    pub struct ScriptedMilter {
        pub port: u16,
        log: PathBuf,
        _dir: tempfile::TempDir,
        _process: Process,
    }

    impl ScriptedMilter {
        pub fn start(mode: &str) -> ScriptedMilter {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let log = dir.path().join("commands.log");
            let child = Command::new("python3")
                .arg(root().join("tests/e2e/peers/milter.py"))
                .arg(port.to_string())
                .arg(mode)
                .arg(&log)
                .spawn()
                .expect("python3 milter.py");
            wait_for_port(port);
            ScriptedMilter {
                port,
                log,
                _dir: dir,
                _process: Process(child),
            }
        }

        /// The commands received so far on the connection that saw `HELO helo`, one per
        /// line ("O", "C 127.0.0.1", "M <a@b>"...), and how many connections there were.
        pub fn conversation(&self, helo: &str) -> (Vec<String>, usize) {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<(&str, &str)> = log.lines().filter_map(|l| l.split_once(' ')).collect();
            let wanted = format!("H {helo}");
            let connection = lines.iter().find(|(_, c)| *c == wanted).map(|(n, _)| *n);
            let commands = lines
                .iter()
                .filter(|(n, _)| Some(*n) == connection)
                .map(|(_, c)| c.to_string())
                .collect();
            let mut numbers: Vec<&str> = lines.iter().map(|(n, _)| *n).collect();
            numbers.dedup();
            (commands, numbers.len())
        }
    }

    /// rspamd (Debian's package) with only its proxy worker, in milter mode and scanning by
    /// itself, on a loopback port; its own config layered over Debian's through
    /// `LOCAL_CONFDIR`, its state in a temporary directory, no network lookups.
    pub struct Rspamd {
        pub port: u16,
        pub dir: tempfile::TempDir,
        _process: Process,
    }

    impl Rspamd {
        pub fn start() -> Rspamd {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let local = dir.path().join("local");
            for sub in ["override.d", "local.d", "db", "run", "log"] {
                std::fs::create_dir_all(local.join(sub)).expect("mkdir");
            }
            let files = [
                (
                    "override.d/worker-proxy.inc",
                    format!(
                        "bind_socket = \"127.0.0.1:{port}\";\nmilter = yes;\ntimeout = 30s;\n\
                         upstream \"local\" {{\n  default = yes;\n  self_scan = yes;\n}}\n"
                    ),
                ),
                ("override.d/worker-normal.inc", "enabled = false;\n".into()),
                (
                    "override.d/worker-controller.inc",
                    "enabled = false;\n".into(),
                ),
                ("override.d/worker-fuzzy.inc", "enabled = false;\n".into()),
                (
                    "override.d/logging.inc",
                    "type = \"console\";\nlevel = \"notice\";\n".into(),
                ),
                (
                    // Tests connect from loopback, which rspamd otherwise leaves unmarked.
                    "local.d/milter_headers.conf",
                    "extended_spam_headers = true;\nskip_local = false;\n\
                     skip_authenticated = false;\n"
                        .into(),
                ),
                (
                    "local.d/options.inc",
                    "dns { nameserver = [\"127.0.0.1:1\"]; timeout = 1s; retransmits = 1; }\n"
                        .into(),
                ),
            ];
            for (name, text) in files {
                std::fs::write(local.join(name), text).expect("rspamd config");
            }
            let var = |name: &str, sub: &str| format!("--var={name}={}", local.join(sub).display());
            let mut cmd = Command::new(sbin("rspamd"));
            cmd.args(["-f", "-c", "/etc/rspamd/rspamd.conf"])
                .arg(format!("--var=LOCAL_CONFDIR={}", local.display()))
                .args([
                    var("DBDIR", "db"),
                    var("RUNDIR", "run"),
                    var("LOGDIR", "log"),
                ])
                .stdout(std::fs::File::create(dir.path().join("rspamd.log")).expect("log"))
                .stderr(Stdio::null());
            if is_root() {
                cmd.args(["-i", "-u", "root", "-g", "root"]);
            }
            let child = cmd.spawn().expect("rspamd (Debian package rspamd)");
            wait_for_port(port);
            Rspamd {
                port,
                dir,
                _process: Process(child),
            }
        }
    }

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

    /// A PostgreSQL server (Debian's) of its own: `initdb` into a temporary directory (as the
    /// `postgres` user when the tests run as root, which PostgreSQL refuses to run as), trust
    /// authentication on loopback, a database `mail`; `stop` and `restart` for the tests of a
    /// database that goes away.
    pub struct Postgres {
        pub port: u16,
        dir: tempfile::TempDir,
        process: Option<Process>,
    }

    impl Postgres {
        fn bin(program: &str) -> PathBuf {
            let versions = std::fs::read_dir("/usr/lib/postgresql")
                .expect("PostgreSQL (Debian package postgresql)");
            let mut dirs: Vec<PathBuf> = versions.flatten().map(|e| e.path()).collect();
            dirs.sort();
            dirs.last()
                .expect("a PostgreSQL version")
                .join("bin")
                .join(program)
        }

        /// `program` as the user PostgreSQL runs as (setpriv execs it: the process killed on
        /// drop is the server itself).
        fn command(program: &str) -> Command {
            if is_root() {
                let mut cmd = Command::new("setpriv");
                cmd.args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(Postgres::bin(program));
                cmd
            } else {
                Command::new(Postgres::bin(program))
            }
        }

        pub fn start() -> Postgres {
            let dir = tempfile::tempdir().expect("tempdir");
            if is_root() {
                let ok = Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(dir.path())
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "chown the PostgreSQL directory");
            }
            let data = dir.path().join("data");
            let ok = Postgres::command("initdb")
                .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("initdb")
                .success();
            assert!(ok, "initdb");
            let mut postgres = Postgres {
                port: free_port(),
                dir,
                process: None,
            };
            postgres.restart();
            let ok = Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &postgres.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args(["-q", "-c", "CREATE DATABASE mail"])
                .status()
                .expect("psql")
                .success();
            assert!(ok, "create the database");
            postgres
        }

        pub fn url(&self) -> String {
            format!("postgres://postgres@127.0.0.1:{}/mail", self.port)
        }

        /// Runs SQL on the `mail` database.
        pub fn sql(&self, statements: &str) {
            let ok = Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args([
                    "-d",
                    "mail",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    statements,
                ])
                .status()
                .expect("psql")
                .success();
            assert!(ok, "{statements}");
        }

        pub fn stop(&mut self) {
            self.process = None;
        }

        pub fn restart(&mut self) {
            let child = Postgres::command("postgres")
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-c",
                    "listen_addresses=127.0.0.1",
                ])
                .arg("-c")
                .arg(format!(
                    "unix_socket_directories={}",
                    self.dir.path().display()
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("postgres");
            self.process = Some(Process(child));
            wait_for_port(self.port);
            self.wait_accepting();
        }

        /// Waits until the server takes connections: it opens its port while it is still
        /// starting up, and answers "the database system is starting up" meanwhile.
        fn wait_accepting(&self) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let ready = Command::new("pg_isready")
                    .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                    .status()
                    .is_ok_and(|s| s.success());
                if ready {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "PostgreSQL never became ready"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }

    /// clamd and clamav-milter (Debian's packages) on loopback ports, with no database but
    /// `signatures` (ClamAV `.ndb` lines) — nothing is downloaded. Infected mail is rejected
    /// ("Infected: NAME"), clean mail gets `X-Virus-Status: Clean`.
    pub struct ClamAv {
        pub port: u16,
        pub dir: tempfile::TempDir,
        _clamd: Process,
        _milter: Process,
    }

    impl ClamAv {
        pub fn start(signatures: &str) -> ClamAv {
            let dir = tempfile::tempdir().expect("tempdir");
            let (clamd_port, port) = (free_port(), free_port());
            let d = dir.path();
            std::fs::create_dir_all(d.join("db")).expect("db");
            std::fs::write(d.join("db/test.ndb"), signatures).expect("signatures");
            let user = if is_root() { "User root\n" } else { "" };
            let clamd_conf = format!(
                "DatabaseDirectory {}\nTCPSocket {clamd_port}\nTCPAddr 127.0.0.1\n\
                 Foreground yes\nLogFile {}\nPidFile {}\n{user}",
                d.join("db").display(),
                d.join("clamd.log").display(),
                d.join("clamd.pid").display()
            );
            std::fs::write(d.join("clamd.conf"), clamd_conf).expect("clamd.conf");
            let milter_conf = format!(
                "MilterSocket inet:{port}@127.0.0.1\nClamdSocket tcp:127.0.0.1:{clamd_port}\n\
                 Foreground yes\nOnInfected Reject\nOnFail Defer\nRejectMsg Infected: %v\n\
                 AddHeader Replace\nLogFile {}\nPidFile {}\n{user}",
                d.join("milter.log").display(),
                d.join("milter.pid").display()
            );
            std::fs::write(d.join("milter.conf"), milter_conf).expect("milter.conf");
            let spawn = |program: &str, conf: &str| {
                Command::new(sbin(program))
                    .arg("-c")
                    .arg(d.join(conf))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("clamd/clamav-milter (Debian packages clamav-daemon, clamav-milter)")
            };
            let clamd = Process(spawn("clamd", "clamd.conf"));
            wait_for_port(clamd_port);
            let milter = Process(spawn("clamav-milter", "milter.conf"));
            wait_for_port(port);
            ClamAv {
                port,
                dir,
                _clamd: clamd,
                _milter: milter,
            }
        }
    }

    /// rspamd's scanner (its normal worker only) on a loopback port, asked with `rspamc`: the
    /// SPF, DKIM, DMARC and ARC checks of an implementation nobody here wrote, its DNS from
    /// `dns_port` (dnsmasq), loopback clients checked like any other.
    pub struct RspamdScanner {
        pub port: u16,
        _dir: tempfile::TempDir,
        child: Child,
    }

    impl Drop for RspamdScanner {
        /// SIGTERM, so that rspamd's main process stops its workers (killed outright, it
        /// leaves them running); killed after ten seconds.
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let stopped = wait_until(10, || matches!(self.child.try_wait(), Ok(Some(_))));
            if !stopped {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }

    impl RspamdScanner {
        pub fn start(dns_port: u16) -> RspamdScanner {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let local = dir.path().join("local");
            for sub in ["override.d", "local.d", "db", "run", "log"] {
                std::fs::create_dir_all(local.join(sub)).expect("mkdir");
            }
            let checks = "check_local = true;\ncheck_authed = true;\n";
            let files = [
                (
                    "override.d/worker-normal.inc",
                    format!("bind_socket = \"127.0.0.1:{port}\";\n"),
                ),
                ("override.d/worker-proxy.inc", "enabled = false;\n".into()),
                (
                    "override.d/worker-controller.inc",
                    "enabled = false;\n".into(),
                ),
                ("override.d/worker-fuzzy.inc", "enabled = false;\n".into()),
                (
                    "override.d/logging.inc",
                    "type = \"console\";\nlevel = \"notice\";\n".into(),
                ),
                (
                    "local.d/options.inc",
                    format!(
                        "{checks}dns {{ nameserver = [\"127.0.0.1:{dns_port}\"]; timeout = 1s; \
                         retransmits = 1; }}\n"
                    ),
                ),
                ("local.d/dkim.conf", checks.into()),
                ("local.d/spf.conf", checks.into()),
                ("local.d/dmarc.conf", checks.into()),
            ];
            for (name, text) in files {
                std::fs::write(local.join(name), text).expect("rspamd config");
            }
            let var = |name: &str, sub: &str| format!("--var={name}={}", local.join(sub).display());
            let mut cmd = Command::new(sbin("rspamd"));
            cmd.args(["-f", "-c", "/etc/rspamd/rspamd.conf"])
                .arg(format!("--var=LOCAL_CONFDIR={}", local.display()))
                .args([
                    var("DBDIR", "db"),
                    var("RUNDIR", "run"),
                    var("LOGDIR", "log"),
                ])
                .stdout(std::fs::File::create(dir.path().join("rspamd.log")).expect("log"))
                .stderr(Stdio::null());
            if is_root() {
                cmd.args(["-i", "-u", "root", "-g", "root"]);
            }
            let child = cmd.spawn().expect("rspamd (Debian package rspamd)");
            // Loading its rules takes rspamd a minute of CPU on a busy machine.
            let up = wait_until(180, || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            assert!(up, "rspamd never listened on {port}");
            RspamdScanner {
                port,
                _dir: dir,
                child,
            }
        }

        /// rspamd's symbols for `message`, each as `NAME[options]`, the SMTP envelope given as
        /// `rspamc` options (`--ip=...`, `--helo=...`, `--from=...`).
        pub fn symbols(&self, message: &[u8], envelope: &[&str]) -> Vec<String> {
            let dir = tempfile::tempdir().expect("tempdir");
            let file = dir.path().join("message.eml");
            std::fs::write(&file, message).expect("write");
            let out = Command::new("rspamc")
                .arg(format!("--connect=127.0.0.1:{}", self.port))
                .args(envelope)
                .arg("symbols")
                .arg(&file)
                .output()
                .expect("rspamc (Debian package rspamd)");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && text.contains("Action:"), "{text}");
            text.lines()
                .filter_map(|l| l.strip_prefix("Symbol: "))
                .map(|l| match l.split_once(" (") {
                    Some((name, rest)) => {
                        let options = rest.split_once(")").map_or("", |(_, o)| o);
                        format!("{name}{options}")
                    }
                    None => l.to_string(),
                })
                .collect()
        }
    }

    /// OpenDKIM (Debian's package) as a milter on a loopback port: `mode` "s" signs mail of
    /// `domain` with the key `key` under `selector`; "v" verifies, with public keys from
    /// `test_keys` (OpenDKIM's `TestPublicKeys`: "NAME RECORD" lines) instead of DNS.
    pub struct OpenDkim {
        pub port: u16,
        pub dir: tempfile::TempDir,
        _process: Process,
    }

    impl OpenDkim {
        pub fn start(
            mode: &str,
            domain: &str,
            selector: &str,
            key: &Path,
            test_keys: &str,
        ) -> OpenDkim {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let keys = dir.path().join("test-keys");
            std::fs::write(&keys, test_keys).expect("keys");
            let config = dir.path().join("opendkim.conf");
            let text = format!(
                "Mode {mode}\nDomain {domain}\nSelector {selector}\nKeyFile {}\n\
                 Socket inet:{port}@127.0.0.1\nBackground no\nSyslog no\n\
                 AuthservID opendkim.test\nTestPublicKeys {}\nPidFile {}\n\
                 RequireSafeKeys no\n",
                key.display(),
                keys.display(),
                dir.path().join("opendkim.pid").display()
            );
            std::fs::write(&config, text).expect("opendkim.conf");
            let child = Command::new(sbin("opendkim"))
                .args(["-f", "-x"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("opendkim.log")).expect("log"))
                .spawn()
                .expect("opendkim (Debian package opendkim)");
            wait_for_port(port);
            OpenDkim {
                port,
                dir,
                _process: Process(child),
            }
        }
    }

    /// A private Postfix instance (`tests/e2e/peers/postfix-downstream.sh`) that delivers mail
    /// for one domain into the Maildir `<dir>/mail/box/`.
    pub struct PostfixDownstream {
        pub port: u16,
        pub dir: tempfile::TempDir,
    }

    impl PostfixDownstream {
        pub fn start(domain: &str) -> PostfixDownstream {
            PostfixDownstream::start_with_milter(domain, "")
        }

        /// A Postfix whose `smtpd_milters` (and `non_smtpd_milters`) is `milter`, e.g.
        /// `inet:127.0.0.1:PORT`; empty for none.
        pub fn start_with_milter(domain: &str, milter: &str) -> PostfixDownstream {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let status = Command::new(root().join("tests/e2e/peers/postfix-downstream.sh"))
                .args(["start"])
                .arg(dir.path())
                .args([&port.to_string(), domain, milter])
                .status()
                .expect("postfix-downstream.sh");
            assert!(status.success(), "the downstream Postfix did not start");
            wait_for_port(port);
            PostfixDownstream { port, dir }
        }

        /// The delivered files.
        pub fn delivered(&self) -> Vec<String> {
            read_files(&self.dir.path().join("mail/box/new"), |_| true)
        }

        /// Postfix's log.
        pub fn log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("postfix.log")).unwrap_or_default()
        }
    }

    impl Drop for PostfixDownstream {
        fn drop(&mut self) {
            let _ = Command::new(root().join("tests/e2e/peers/postfix-downstream.sh"))
                .arg("stop")
                .arg(self.dir.path())
                .status();
        }
    }

    /// dnsmasq answering on 127.0.0.1:port from the records given as dnsmasq options
    /// (`--mx-host=...`, `--host-record=...`, `--cname=...`), nothing else.
    pub struct Dns {
        pub port: u16,
        _process: Process,
    }

    impl Dns {
        pub fn start(records: &[&str]) -> Dns {
            let port = free_port();
            let child = Command::new(sbin("dnsmasq"))
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    &format!("--port={port}"),
                    "--pid-file",
                ])
                .args(records)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq (Debian package dnsmasq-base)");
            // dnsmasq serves TCP too: wait for it.
            wait_for_port(port);
            Dns {
                port,
                _process: Process(child),
            }
        }
    }

    fn read_files(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<String> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && keep(p))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
            .collect()
    }
}
