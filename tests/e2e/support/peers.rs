//! External programs the tests run beside the gateway, each on loopback ports of its own and
//! stopped on drop: SMTP servers downstream of it, milters and scanners, the shared stores,
//! DNS, an HTTPS server for MTA-STS policies and a metrics scraper.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

mod clamav;
mod dns;
mod opendkim;
mod policy_server;
mod postfix;
mod postgres;
mod prometheus;
mod redis;
mod rspamd;
mod rspamd_scanner;
mod scripted_milter;
mod scripted_sink;
mod smtp_sink;

pub use clamav::ClamAv;
pub use dns::Dns;
pub use opendkim::OpenDkim;
pub use policy_server::{PolicyServer, TestCa};
pub use postfix::PostfixDownstream;
pub use postgres::Postgres;
pub use prometheus::Prometheus;
pub use redis::Redis;
pub use rspamd::Rspamd;
pub use rspamd_scanner::RspamdScanner;
pub use scripted_milter::ScriptedMilter;
pub use scripted_sink::{Received, ScriptedSink};
pub use smtp_sink::{SmtpSink, WatchedSmtpSink};

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

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// rspamd with `files` (paths under its local config dir, and their text) added to Debian's
/// config, its state and log in `dir`, listening on `port`: started and waited for. The
/// process is owned before the wait, so a start that fails still stops it.
fn start_rspamd(dir: &Path, port: u16, files: &[(&str, String)]) -> Graceful {
    let local = dir.join("local");
    for sub in ["override.d", "local.d", "db", "run", "log"] {
        std::fs::create_dir_all(local.join(sub)).expect("mkdir");
    }
    for (name, text) in files {
        std::fs::write(local.join(name), text).expect("rspamd config");
    }
    use_short_tld_list(&local);
    let var = |name: &str, sub: &str| format!("--var={name}={}", local.join(sub).display());
    let mut cmd = Command::new(sbin("rspamd"));
    cmd.args(["-f", "-c", "/etc/rspamd/rspamd.conf"])
        .arg(format!("--var=LOCAL_CONFDIR={}", local.display()))
        .args([
            var("DBDIR", "db"),
            var("RUNDIR", "run"),
            var("LOGDIR", "log"),
        ])
        .stdout(std::fs::File::create(dir.join("rspamd.log")).expect("log"))
        .stderr(std::process::Stdio::null());
    if is_root() {
        cmd.args(["-i", "-u", "root", "-g", "root"]);
    }
    let process = Graceful(cmd.spawn().expect("rspamd (Debian package rspamd)"));
    // Loading its rules takes rspamd seconds of CPU, and several test binaries may start one
    // each at the same moment on two cores.
    let up = crate::wait_until(360, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "rspamd never listened on {port}");
    process
}

/// The public suffixes rspamd starts from: Debian's full list (9 628 entries) costs each
/// start 10–20 s of CPU to compile, most of an rspamd start; the tests' addresses end in
/// these. The organisational domain DMARC computes is the same with either list for them.
const TEST_TLDS: &str = "test\nexample\ninvalid\nlocalhost\ncom\norg\nnet\n";

/// Points rspamd's `url_tld` at [`TEST_TLDS`], added to the test's own `local.d/options.inc`.
fn use_short_tld_list(local: &Path) {
    let list = local.join("tld.dat");
    std::fs::write(&list, TEST_TLDS).expect("tld list");
    let options = local.join("local.d/options.inc");
    let mut text = std::fs::read_to_string(&options).unwrap_or_default();
    text.push_str(&format!("url_tld = \"{}\";\n", list.display()));
    std::fs::write(&options, text).expect("rspamd options");
}

/// A peer whose main process must stop its own workers (rspamd: killed outright, it leaves
/// them running, and they pile up run after run): SIGTERM, then killed after ten seconds.
struct Graceful(Child);

impl Drop for Graceful {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let stopped = crate::wait_until(10, || matches!(self.0.try_wait(), Ok(Some(_))));
        if !stopped {
            let _ = self.0.kill();
            let _ = self.0.wait();
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
