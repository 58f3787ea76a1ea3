//! `tests/e2e/peers/milter.py`: a milter that answers as it is told.

use std::path::PathBuf;
use std::process::Command;

use super::Process;
use crate::{free_port, root, wait_for_port};

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
        ScriptedMilter::start_on(free_port(), mode)
    }

    /// [`ScriptedMilter::start`] on a given port (a milter that comes back where it was).
    pub fn start_on(port: u16, mode: &str) -> ScriptedMilter {
        let dir = tempfile::tempdir().expect("tempdir");
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
