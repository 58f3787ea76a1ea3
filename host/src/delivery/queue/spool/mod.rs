//! The durable spool: a message is acknowledged only once it is on stable storage, and stays
//! there until it is delivered, bounced or deleted. Two designs behind one interface, chosen
//! by `[queue] spool`: one file per message ([`files`], the default) or an append-only log of
//! records with one sync per batch ([`log`]).

mod files;
pub mod log;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{QueueConfig, SpoolDesign};
use crate::mail::dsn::EnvelopeDsn;
use files::FileSpool;
use log::LogSpool;

#[derive(Debug, Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool file {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error("the spool committer has stopped")]
    Stopped,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the queue keeps about a message besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedEnvelope {
    pub id: String,
    pub sender: String,
    pub recipients: Vec<String>,
    /// Unix seconds when the message was accepted.
    pub received_at: u64,
    pub client_ip: String,
    pub helo: String,
    pub auth_user: Option<String>,
    /// The client asked for SMTPUTF8 (the message must not go to a peer without it).
    #[serde(default)]
    pub smtputf8: bool,
    /// The client sent the content as BODY=BINARYMIME (RFC 3030): it goes on by BDAT only,
    /// to peers that offer BINARYMIME, never converted.
    #[serde(default)]
    pub binary: bool,
    /// What the client asked of delivery status notifications (RFC 3461); an entry queued
    /// without it reads as no parameters given.
    #[serde(default, skip_serializing_if = "EnvelopeDsn::is_empty")]
    pub dsn: EnvelopeDsn,
    /// Plugins not run at the deliver stage for this message: the one that quarantined it,
    /// when the operator released it with `--skip-plugin`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_plugins: Vec<String>,
}

/// A message in the spool.
#[derive(Debug, Clone)]
pub struct Spooled {
    pub envelope: QueuedEnvelope,
    pub message: Vec<u8>,
}

/// A queue id: sortable by time, unique within the process and across restarts.
pub fn new_queue_id() -> String {
    crate::mail::clock::unique_stamp()
}

/// Queue ids are hex (see [`new_queue_id`]); anything else never names a spool entry.
pub fn is_queue_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A file spool's file: the envelope as one JSON line, then the message.
fn parse_file(bytes: &[u8]) -> Result<Spooled, String> {
    let split = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no envelope line")?;
    let envelope: QueuedEnvelope =
        serde_json::from_slice(&bytes[..split]).map_err(|e| e.to_string())?;
    Ok(Spooled {
        envelope,
        message: bytes[split + 1..].to_vec(),
    })
}

/// The spool directory (`<data>/queue`), in the configured design.
#[derive(Clone)]
pub struct Spool {
    design: Design,
}

#[derive(Clone)]
enum Design {
    Files(FileSpool),
    Log(LogSpool),
}

impl Spool {
    /// Opens (creating) the spool for the server. Needs a tokio runtime.
    pub fn open(root: &Path, queue: &QueueConfig) -> Result<Spool, SpoolError> {
        let design = match queue.spool {
            SpoolDesign::Files => Design::Files(FileSpool::open(root)?),
            SpoolDesign::Log => Design::Log(LogSpool::open_sized(root, queue.segment_bytes())?),
        };
        Ok(Spool { design })
    }

    /// Uses an existing spool for the operator's commands when no server runs.
    pub fn attach(root: &Path, queue: &QueueConfig) -> Result<Spool, SpoolError> {
        let design = match queue.spool {
            SpoolDesign::Files => Design::Files(FileSpool::attach(root)?),
            SpoolDesign::Log => Design::Log(LogSpool::open_sized(root, queue.segment_bytes())?),
        };
        Ok(Spool { design })
    }

    /// Writes and commits a message; returns once it is durable.
    pub async fn store(&self, envelope: &QueuedEnvelope, message: &[u8]) -> Result<(), SpoolError> {
        match &self.design {
            Design::Files(s) => s.store(envelope, message).await,
            Design::Log(s) => s.store(envelope, message).await,
        }
    }

    /// Reads one queued message.
    pub fn load(&self, id: &str) -> Result<Spooled, SpoolError> {
        match &self.design {
            Design::Files(s) => s.load(id),
            Design::Log(s) => s.load(id),
        }
    }

    /// Replaces the envelope (e.g. fewer recipients left), durably.
    pub fn rewrite(&self, spooled: &Spooled) -> Result<(), SpoolError> {
        match &self.design {
            Design::Files(s) => s.rewrite(spooled),
            Design::Log(s) => s.rewrite(spooled),
        }
    }

    /// Removes a fully delivered message of `size` bytes.
    pub fn retire(&self, id: &str, size: usize) -> Result<(), SpoolError> {
        match &self.design {
            Design::Files(s) => s.retire(id, size),
            Design::Log(s) => s.remove(id),
        }
    }

    /// Removes a message (delivered, bounced or deleted).
    pub fn remove(&self, id: &str) -> Result<(), SpoolError> {
        match &self.design {
            Design::Files(s) => s.remove(id),
            Design::Log(s) => s.remove(id),
        }
    }

    /// True when the message is in the spool.
    pub fn contains(&self, id: &str) -> bool {
        match &self.design {
            Design::Files(s) => s.contains(id),
            Design::Log(s) => s.contains(id),
        }
    }

    /// Ids of every queued message, oldest first (recovery after a restart).
    pub fn list(&self) -> Result<Vec<String>, SpoolError> {
        match &self.design {
            Design::Files(s) => s.list(),
            Design::Log(s) => s.list(),
        }
    }
}
