//! `tests/e2e/peers/sink.py`: an SMTP server that keeps each transaction as it came.

use std::process::Command;

use super::Process;
use crate::{free_port, root, wait_for_port, wait_until};

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

    /// With sink.py's options (`--reject PREFIX`, `--tempfail PREFIX`, `--delay-dot SECONDS`).
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
