//! clamd and clamav-milter.

use std::process::{Command, Stdio};

use super::{is_root, sbin, Process};
use crate::{free_port, wait_for_port};

/// clamd and clamav-milter (Debian's packages) on loopback ports, with no database but
/// `signatures` (ClamAV `.ndb` lines) — nothing is downloaded. Infected mail is rejected
/// ("Infected: NAME"), clean mail gets `X-Virus-Status: Clean`.
pub struct ClamAv {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _clamd: Process,
    _milter: Process,
}

impl ClamAv {
    pub fn start(signatures: &str) -> ClamAv {
        let dir = tempfile::tempdir().expect("tempdir");
        let (clamd_port, port) = (free_port(), free_port());
        let d = dir.path();
        std::fs::create_dir_all(d.join("db")).expect("db");
        std::fs::write(d.join("db/test.ndb"), signatures).expect("signatures");
        let user = if is_root() { "User root\n" } else { "" };
        let clamd_conf = format!(
            "DatabaseDirectory {}\nTCPSocket {clamd_port}\nTCPAddr 127.0.0.1\n\
             Foreground yes\nLogFile {}\nPidFile {}\n{user}",
            d.join("db").display(),
            d.join("clamd.log").display(),
            d.join("clamd.pid").display()
        );
        std::fs::write(d.join("clamd.conf"), clamd_conf).expect("clamd.conf");
        let milter_conf = format!(
            "MilterSocket inet:{port}@127.0.0.1\nClamdSocket tcp:127.0.0.1:{clamd_port}\n\
             Foreground yes\nOnInfected Reject\nOnFail Defer\nRejectMsg Infected: %v\n\
             AddHeader Replace\nLogFile {}\nPidFile {}\n{user}",
            d.join("milter.log").display(),
            d.join("milter.pid").display()
        );
        std::fs::write(d.join("milter.conf"), milter_conf).expect("milter.conf");
        let spawn = |program: &str, conf: &str| {
            Command::new(sbin(program))
                .arg("-c")
                .arg(d.join(conf))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("clamd/clamav-milter (Debian packages clamav-daemon, clamav-milter)")
        };
        let clamd = Process(spawn("clamd", "clamd.conf"));
        wait_for_port(clamd_port);
        let milter = Process(spawn("clamav-milter", "milter.conf"));
        wait_for_port(port);
        ClamAv {
            port,
            dir,
            _clamd: clamd,
            _milter: milter,
        }
    }
}
