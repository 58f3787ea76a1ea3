//! rspamd as a milter (its proxy worker).

use super::{start_rspamd, Graceful};
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
        let process = start_rspamd(dir.path(), port, &files);
        Rspamd {
            port,
            dir,
            _process: process,
        }
    }
}
