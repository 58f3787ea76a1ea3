//! rspamd's scanner asked with `rspamc`: SPF, DKIM, DMARC and ARC by another implementation.

use std::process::{Command, Stdio};

use super::{is_root, sbin, Graceful};
use crate::{free_port, wait_until};

/// rspamd's scanner (its normal worker only) on a loopback port, asked with `rspamc`: the
/// SPF, DKIM, DMARC and ARC checks of an implementation nobody here wrote, its DNS from
/// `dns_port` (dnsmasq), loopback clients checked like any other.
pub struct RspamdScanner {
    pub port: u16,
    _dir: tempfile::TempDir,
    _process: Graceful,
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
        // Loading its rules takes rspamd a minute of CPU, and several test binaries may start
        // one each at the same moment on two cores.
        // Made before the wait, so that a start that fails stops rspamd and its workers (the
        // drop runs on unwinding).
        let scanner = RspamdScanner {
            port,
            _dir: dir,
            _process: Graceful(child),
        };
        let up = wait_until(360, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "rspamd never listened on {port}");
        scanner
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
