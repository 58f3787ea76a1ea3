//! The log spool (`[queue] spool = "log"`): every change to the queue is a record appended to
//! preallocated segment files in `queue/log/` by one writer thread, which syncs once per batch
//! (group commit) and answers the waiters after that sync — a message's `250`, a rewrite's or a
//! removal's return. Reads go straight to the segment files through an in-memory index of each
//! message's latest record, rebuilt from the segments at start; a torn or damaged record is
//! found by its checksum, logged and left out. One process owns the log at a time (an
//! exclusive `flock` on `log/lock`). A queue written by the file spool (`queue/active/`) is
//! taken over when the log opens: its messages are appended, synced, and only then unlinked.

mod index;
pub mod record;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{io, is_queue_id, parse_file, QueuedEnvelope, SpoolError, Spooled};
use record::Kind;
use writer::{Ack, Request, Shared, Writer};

/// Bytes preallocated per segment.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Messages taken over from `active/` per synced batch.
const TAKEOVER_BATCH: usize = 256;
/// Records larger than this are encoded on the blocking pool, not on a runtime worker.
const INLINE_ENCODE_MAX: usize = 1 << 20;

#[derive(Clone)]
pub struct LogSpool {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    /// Held for the exclusive lock on `log/lock` while any handle lives.
    _lock: Arc<File>,
}

impl LogSpool {
    /// Opens (creating) the log under `root` (`<data>/queue`), takes over the file spool's
    /// messages if any, and starts the writer.
    pub fn open(root: &Path) -> Result<LogSpool, SpoolError> {
        LogSpool::open_sized(root, DEFAULT_SEGMENT_SIZE)
    }

    pub fn open_sized(root: &Path, segment_size: u64) -> Result<LogSpool, SpoolError> {
        let dir = root.join("log");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        // `active/` stays as the place a file-spool message is taken from at start.
        std::fs::create_dir_all(root.join("active")).map_err(io(root))?;
        let lock = Arc::new(lock(&dir)?);
        let (index, last_seq) = writer::rebuild(&dir).map_err(io(&dir))?;
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            index: Mutex::new(index),
            segment_size,
        });
        let mut writer = Writer::new(shared.clone(), last_seq, lock.clone()).map_err(io(&dir))?;
        take_over(root, &shared, &mut writer)?;
        let (requests, incoming) = mpsc::channel();
        std::thread::Builder::new()
            .name("spool-log".into())
            .spawn(move || writer.run(incoming))
            .map_err(io(&dir))?;
        Ok(LogSpool {
            shared,
            requests,
            _lock: lock,
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.shared.dir.join(id)
    }

    /// Appends a message and returns once it is durable.
    pub async fn store(&self, envelope: &QueuedEnvelope, message: &[u8]) -> Result<(), SpoolError> {
        let request = if message.len() <= INLINE_ENCODE_MAX {
            self.message_record(envelope, message)?
        } else {
            crate::sys::blocking::run(|| self.message_record(envelope, message))?
        };
        let (done, wait) = oneshot::channel();
        self.send(request, Ack::Async(done))?;
        let outcome = wait.await.map_err(|_| SpoolError::Stopped)?;
        outcome.map_err(|reason| self.failed(&envelope.id, reason))
    }

    /// Replaces a message's envelope (fewer recipients left), durably: a new record for it.
    pub fn rewrite(&self, spooled: &Spooled) -> Result<(), SpoolError> {
        let request = self.message_record(&spooled.envelope, &spooled.message)?;
        self.send_and_wait(&spooled.envelope.id, request)
    }

    /// Removes a message, durably (a crash after this returns never brings it back).
    pub fn remove(&self, id: &str) -> Result<(), SpoolError> {
        if !self.contains(id) {
            return Err(self.failed(id, "no such message".into()));
        }
        let request = Request {
            record: record::encode_remove(id),
            kind: Kind::Remove,
            id: id.to_string(),
            ack: Ack::Nobody,
        };
        self.send_and_wait(id, request)
    }

    /// Reads one message from its latest record.
    pub fn load(&self, id: &str) -> Result<Spooled, SpoolError> {
        let damaged = |reason: &str| SpoolError::Damaged {
            path: self.path(id),
            reason: reason.into(),
        };
        let (at, file) = self
            .shared
            .index()
            .find(id)
            .ok_or_else(|| self.failed(id, "no such message".into()))?;
        let bytes = writer::read_record(&file, at).map_err(io(&self.path(id)))?;
        let (kind, payload) = record::verify(&bytes).ok_or_else(|| damaged("checksum mismatch"))?;
        let parts = (kind == Kind::Message)
            .then(|| record::decode_message(payload))
            .flatten()
            .ok_or_else(|| damaged("not a message record"))?;
        let envelope: QueuedEnvelope =
            serde_json::from_slice(parts.envelope_json).map_err(|e| damaged(&e.to_string()))?;
        Ok(Spooled {
            envelope,
            message: parts.message.to_vec(),
        })
    }

    pub fn contains(&self, id: &str) -> bool {
        is_queue_id(id) && self.shared.index().messages.contains_key(id)
    }

    /// Ids of every queued message, oldest first.
    pub fn list(&self) -> Result<Vec<String>, SpoolError> {
        Ok(self.shared.index().messages.keys().cloned().collect())
    }

    fn message_record(
        &self,
        envelope: &QueuedEnvelope,
        message: &[u8],
    ) -> Result<Request, SpoolError> {
        let id = &envelope.id;
        if !is_queue_id(id) {
            return Err(self.failed(id, "not a queue id".into()));
        }
        let json = serde_json::to_vec(envelope).map_err(|e| SpoolError::Damaged {
            path: self.path(id),
            reason: e.to_string(),
        })?;
        let record = record::encode_message(id, &json, message)
            .ok_or_else(|| self.failed(id, "message too large for one record".into()))?;
        Ok(Request {
            record,
            kind: Kind::Message,
            id: id.clone(),
            ack: Ack::Nobody,
        })
    }

    fn send(&self, mut request: Request, ack: Ack) -> Result<(), SpoolError> {
        request.ack = ack;
        self.requests.send(request).map_err(|_| SpoolError::Stopped)
    }

    /// Sends a record and blocks (off the runtime's workers) until it is durable.
    fn send_and_wait(&self, id: &str, request: Request) -> Result<(), SpoolError> {
        let (done, wait) = mpsc::sync_channel(1);
        self.send(request, Ack::Blocking(done))?;
        let outcome = crate::sys::blocking::run(|| wait.recv()).map_err(|_| SpoolError::Stopped)?;
        outcome.map_err(|reason| self.failed(id, reason))
    }

    fn failed(&self, id: &str, reason: String) -> SpoolError {
        SpoolError::Io {
            path: self.path(id),
            source: std::io::Error::other(reason),
        }
    }
}

/// The exclusive lock that makes this process the log's only writer.
fn lock(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |e| SpoolError::Io {
            path: path.clone(),
            source: std::io::Error::other(format!(
                "the queue is open in another process (a running server?): {e}"
            )),
        },
    )?;
    Ok(file)
}

/// Moves the messages of a file spool (`root/active/`) into the log: appended and synced in
/// batches, each file unlinked only after its record is durable. A file that cannot be read
/// stays where it is, with a log line.
fn take_over(root: &Path, shared: &Arc<Shared>, writer: &mut Writer) -> Result<(), SpoolError> {
    let active = root.join("active");
    let Ok(entries) = std::fs::read_dir(&active) else {
        return Ok(());
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|name| is_queue_id(name))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    tracing::info!(
        count = names.len(),
        "spool log: taking over the file spool's messages"
    );
    for chunk in names.chunks(TAKEOVER_BATCH) {
        let mut batch = Vec::with_capacity(chunk.len());
        let mut waits = Vec::with_capacity(chunk.len());
        for name in chunk {
            let path = active.join(name);
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| parse_file(&bytes).map_err(|e| e.to_string()));
            let spooled = match parsed {
                Ok(spooled) if spooled.envelope.id == *name => spooled,
                Ok(_) => {
                    tracing::error!("spool log: {} names another id: left", path.display());
                    continue;
                }
                Err(e) => {
                    tracing::error!("spool log: cannot take over {}: {e}: left", path.display());
                    continue;
                }
            };
            let json = serde_json::to_vec(&spooled.envelope).map_err(|e| SpoolError::Damaged {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let Some(record) = record::encode_message(name, &json, &spooled.message) else {
                continue;
            };
            let (done, wait) = mpsc::sync_channel(1);
            batch.push(Request {
                record,
                kind: Kind::Message,
                id: name.clone(),
                ack: Ack::Blocking(done),
            });
            waits.push((path, wait));
        }
        writer.commit(batch);
        for (path, wait) in waits {
            match wait.recv() {
                Ok(Ok(())) => std::fs::remove_file(&path).map_err(io(&path))?,
                Ok(Err(reason)) => {
                    return Err(SpoolError::Io {
                        path,
                        source: std::io::Error::other(reason),
                    })
                }
                Err(_) => return Err(SpoolError::Stopped),
            }
        }
    }
    File::open(&active)
        .and_then(|d| d.sync_all())
        .map_err(io(&active))?;
    tracing::info!(
        queued = shared.index().messages.len(),
        "spool log: file spool taken over"
    );
    Ok(())
}

#[cfg(test)]
mod tests;
