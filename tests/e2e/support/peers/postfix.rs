//! A private Postfix instance downstream of the gateway.

use std::process::Command;

use super::read_files;
use crate::{free_port, root, wait_for_port, wait_until};

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
        PostfixDownstream::launch(domain, milter, "")
    }

    /// A Postfix that puts every message it accepts on its hold queue, where
    /// [`PostfixDownstream::held`] reads it as Postfix keeps it.
    pub fn start_holding(domain: &str) -> PostfixDownstream {
        PostfixDownstream::launch(domain, "", "hold")
    }

    /// A holding Postfix ([`PostfixDownstream::start_holding`]) with a milter.
    pub fn start_holding_with_milter(domain: &str, milter: &str) -> PostfixDownstream {
        PostfixDownstream::launch(domain, milter, "hold")
    }

    fn launch(domain: &str, milter: &str, hold: &str) -> PostfixDownstream {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let status = Command::new(root().join("tests/e2e/peers/postfix-downstream.sh"))
            .args(["start"])
            .arg(dir.path())
            .args([&port.to_string(), domain, milter, hold])
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

    /// Each held message's queue file as Postfix's `postcat -q` prints it: the envelope
    /// records (with the DSN requests: `envelope_id`, `ret_flags`, `notify_flags`,
    /// `dsn_orig_rcpt`), then the content.
    pub fn held(&self) -> Vec<String> {
        let hold = self.dir.path().join("queue/hold");
        let mut ids: Vec<String> = std::fs::read_dir(hold)
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        let config = self.dir.path().join("etc");
        ids.iter()
            .filter_map(|id| {
                let out = Command::new("postcat")
                    .arg("-c")
                    .arg(&config)
                    .args(["-q", id])
                    .output()
                    .ok()?;
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            })
            .collect()
    }

    /// The one message Postfix holds, whole (as [`PostfixDownstream::held`] prints it), once
    /// it is there; `None` if none is within 30 s.
    pub fn the_held_message(&self) -> Option<String> {
        let mut held = Vec::new();
        let arrived = wait_until(30, || {
            held = self.held();
            held.len() == 1 && held[0].contains("*** MESSAGE FILE END")
        });
        arrived.then(|| held.remove(0))
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
