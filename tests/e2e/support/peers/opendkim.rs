//! OpenDKIM as a signing or verifying milter.

use std::path::Path;
use std::process::{Command, Stdio};

use super::{sbin, Process};
use crate::{free_port, wait_for_port};

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
