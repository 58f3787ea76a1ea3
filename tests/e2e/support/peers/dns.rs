//! dnsmasq answering from given records.

use std::process::{Command, Stdio};

use super::{sbin, Process};
use crate::{free_port, wait_for_port};

/// dnsmasq answering on 127.0.0.1:port from the records given as dnsmasq options
/// (`--mx-host=...`, `--host-record=...`, `--cname=...`), nothing else.
pub struct Dns {
    pub port: u16,
    _process: Process,
}

impl Dns {
    pub fn start(records: &[&str]) -> Dns {
        Dns::start_on(free_port(), records)
    }

    /// On a given port: a second one with other records replaces a stopped one.
    pub fn start_on(port: u16, records: &[&str]) -> Dns {
        let child = Command::new(sbin("dnsmasq"))
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                &format!("--port={port}"),
                "--pid-file",
            ])
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian package dnsmasq-base)");
        // dnsmasq serves TCP too: wait for it.
        wait_for_port(port);
        Dns {
            port,
            _process: Process(child),
        }
    }
}
