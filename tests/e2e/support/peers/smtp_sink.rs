//! Postfix's `smtp-sink`, plain and watched (with `-v`, every command it sees).

use std::process::{Command, Stdio};

use super::{is_root, read_files, sbin, Process};
use crate::{free_port, wait_for_port};

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
