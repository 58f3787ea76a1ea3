//! rspamd as a milter (its proxy worker).

use std::process::{Command, Stdio};

use super::{is_root, sbin, Graceful};
use crate::free_port;

/// rspamd (Debian's package) with only its proxy worker, in milter mode and scanning by
/// itself, on a loopback port; its own config layered over Debian's through
/// `LOCAL_CONFDIR`, its state in a temporary directory, no network lookups.
pub struct Rspamd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _process: Graceful,
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
                "dns { nameserver = [\"127.0.0.1:1\"]; timeout = 1s; retransmits = 1; }\n".into(),
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
        // Loading its rules takes rspamd a minute of CPU, and several test binaries may start
        // one each at the same moment on two cores.
        // Made before the wait, so that a start that fails stops the process (on unwinding).
        let rspamd = Rspamd {
            port,
            dir,
            _process: Graceful(child),
        };
        let up = crate::wait_until(360, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "rspamd never listened on {port}");
        rspamd
    }
}
