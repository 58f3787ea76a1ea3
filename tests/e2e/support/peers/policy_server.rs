//! `tests/e2e/peers/policy_server.py`: MTA-STS policies over HTTPS; and a test certificate
//! authority (openssl) whose certificates it and the SMTP sinks present.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Process;
use crate::{free_port, root, wait_for_port};

/// A CA made for one test, and certificates it issued (or that it did not).
pub struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa { dir };
        ca.request(
            ("ca.pem", "ca.key"),
            "/CN=mailgate test CA",
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        ca
    }

    /// The CA certificate (PEM).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `name` issued by this CA: (certificate, key) PEM files.
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        self.server(name, name, &["-CA", "ca.pem", "-CAkey", "ca.key"])
    }

    /// A self-signed certificate for `name`, unknown to this CA.
    pub fn self_signed(&self, name: &str) -> (PathBuf, PathBuf) {
        self.server(&format!("self-{name}"), name, &[])
    }

    fn server(&self, file: &str, name: &str, issuer: &[&str]) -> (PathBuf, PathBuf) {
        let (cert, key) = (format!("{file}.pem"), format!("{file}.key"));
        let san = format!("subjectAltName=DNS:{name}");
        let mut extra = vec![
            "-addext",
            &san,
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ];
        extra.extend_from_slice(issuer);
        self.request((&cert, &key), &format!("/CN={name}"), &extra);
        (self.dir.path().join(cert), self.dir.path().join(key))
    }

    /// `openssl req -x509` for a new P-256 key: the (certificate, key) files in the CA's
    /// directory, valid two days, with `subject` and the `extra` arguments.
    fn request(&self, (cert, key): (&str, &str), subject: &str, extra: &[&str]) {
        let mut args = vec![
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            subject,
        ];
        args.extend_from_slice(extra);
        openssl(self.dir.path(), &args);
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Serves `<dir>/.well-known/mta-sts.txt` over HTTPS on 127.0.0.1.
pub struct PolicyServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _process: Process,
}

impl PolicyServer {
    /// With a certificate (and key) for `mta-sts.<domain>`.
    pub fn start((cert, key): &(PathBuf, PathBuf)) -> PolicyServer {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(".well-known")).expect("mkdir");
        let child = Command::new("python3")
            .arg(root().join("tests/e2e/peers/policy_server.py"))
            .arg(port.to_string())
            .arg(dir.path())
            .args([cert, key])
            .spawn()
            .expect("python3 policy_server.py");
        wait_for_port(port);
        PolicyServer {
            port,
            dir,
            _process: Process(child),
        }
    }

    /// The policy served from now on.
    pub fn serve(&self, policy: &str) {
        let path = self.dir.path().join(".well-known/mta-sts.txt");
        std::fs::write(path.with_extension("new"), policy).expect("policy");
        std::fs::rename(path.with_extension("new"), path).expect("policy");
    }

    /// How many times the policy was asked for.
    pub fn requests(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("requests.log"))
            .map(|log| log.lines().count())
            .unwrap_or(0)
    }
}
