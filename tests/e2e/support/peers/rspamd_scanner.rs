//! rspamd's scanner asked with `rspamc`: SPF, DKIM, DMARC and ARC by another implementation.

use std::process::Command;

use super::{start_rspamd, Graceful};
use crate::free_port;

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
        let process = start_rspamd(dir.path(), port, &files);
        RspamdScanner {
            port,
            _dir: dir,
            _process: process,
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
