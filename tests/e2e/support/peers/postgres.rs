//! A PostgreSQL server of its own, for the users database.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{is_root, Process};
use crate::{free_port, wait_for_port};

/// A PostgreSQL server (Debian's) of its own: `initdb` into a temporary directory (as the
/// `postgres` user when the tests run as root, which PostgreSQL refuses to run as), trust
/// authentication on loopback, a database `mail`; `stop` and `restart` for the tests of a
/// database that goes away.
pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    process: Option<Process>,
}

impl Postgres {
    fn bin(program: &str) -> PathBuf {
        let versions = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL (Debian package postgresql)");
        let mut dirs: Vec<PathBuf> = versions.flatten().map(|e| e.path()).collect();
        dirs.sort();
        dirs.last()
            .expect("a PostgreSQL version")
            .join("bin")
            .join(program)
    }

    /// `program` as the user PostgreSQL runs as (setpriv execs it: the process killed on
    /// drop is the server itself).
    fn command(program: &str) -> Command {
        if is_root() {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(Postgres::bin(program));
            cmd
        } else {
            Command::new(Postgres::bin(program))
        }
    }

    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().expect("tempdir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the PostgreSQL directory");
        }
        let data = dir.path().join("data");
        let ok = Postgres::command("initdb")
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb")
            .success();
        assert!(ok, "initdb");
        let mut postgres = Postgres {
            port: free_port(),
            dir,
            process: None,
        };
        postgres.restart();
        let ok = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &postgres.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-q", "-c", "CREATE DATABASE mail"])
            .status()
            .expect("psql")
            .success();
        assert!(ok, "create the database");
        postgres
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/mail", self.port)
    }

    /// Runs SQL on the `mail` database.
    pub fn sql(&self, statements: &str) {
        let ok = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args([
                "-d",
                "mail",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                statements,
            ])
            .status()
            .expect("psql")
            .success();
        assert!(ok, "{statements}");
    }

    pub fn stop(&mut self) {
        self.process = None;
    }

    pub fn restart(&mut self) {
        let child = Postgres::command("postgres")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres");
        self.process = Some(Process(child));
        wait_for_port(self.port);
        self.wait_accepting();
    }

    /// Waits until the server takes connections: it opens its port while it is still
    /// starting up, and answers "the database system is starting up" meanwhile.
    fn wait_accepting(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let ready = Command::new("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL never became ready"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
