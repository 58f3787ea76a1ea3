//! The file-per-message spool (`[queue] spool = "files"`, the default). A message is acknowledged only after its file (envelope and message) and
//! the directory entry that names it are on stable storage. Concurrent transactions share the
//! flushes (group commit): writers only write their file (into `tmp/`, or over a spare in
//! `spare/`); one committer takes every file ready, makes their data durable with a single
//! `syncfs`, renames them into `active/` and fsyncs that directory once, then acknowledges the
//! whole batch. Two flushes per batch, however many messages it holds. `tmp/` and `active/` are
//! held as `cap_std` directory handles: no queue id, whatever its text, can name a file outside
//! them. Delivered small files are kept in `spare/` and written over by later messages (see
//! [`super::spares`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use tokio::sync::{mpsc, oneshot};

use super::{io, is_queue_id, parse_file, QueuedEnvelope, SpoolError, Spooled};
use crate::delivery::queue::spares::Spares;

struct Commit {
    /// The file's name in `active/`, and in `tmp/` unless it was written over a spare.
    name: String,
    /// The spare it was written over, in `spare/`.
    spare: Option<String>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The spool directory (`<data>/queue`): `tmp/` for files being written, `active/` for
/// acknowledged messages waiting for delivery.
#[derive(Clone)]
pub struct FileSpool {
    root: PathBuf,
    dirs: Arc<Dirs>,
    commits: mpsc::UnboundedSender<Commit>,
    /// The running server's spare files; `None` for a spool attached to by operator commands.
    pub(super) spares: Option<Arc<Spares>>,
}

struct Dirs {
    tmp: Dir,
    active: Dir,
    /// A readable handle of `active/` for `syncfs` and `fsync` (cap-std's directory handles
    /// are `O_PATH` and cannot be synced), opened once rather than per batch.
    active_sync: cap_std::fs::File,
}

/// Messages up to this size are written without the blocking pool.
const INLINE_WRITE_MAX: usize = 64 * 1024;

impl FileSpool {
    /// Opens (creating) the spool and starts its committer task.
    pub fn open(root: &Path) -> Result<FileSpool, SpoolError> {
        for sub in ["tmp", "active", "spare"] {
            std::fs::create_dir_all(root.join(sub)).map_err(io(root))?;
        }
        let spares = Spares::open(open_dir(root, "spare")?);
        let spool = FileSpool::start(root, Some(Arc::new(spares)))?;
        // Files left in tmp/ were never acknowledged: they can go.
        if let Ok(entries) = spool.dirs.tmp.entries() {
            for entry in entries.flatten() {
                let _ = spool.dirs.tmp.remove_file(entry.file_name());
            }
        }
        Ok(spool)
    }

    /// Uses an existing spool without touching its `tmp/` or `spare/` (a server may be writing
    /// there): for the operator's commands. Needs a tokio runtime (it starts the committer).
    pub fn attach(root: &Path) -> Result<FileSpool, SpoolError> {
        FileSpool::start(root, None)
    }

    fn start(root: &Path, spares: Option<Arc<Spares>>) -> Result<FileSpool, SpoolError> {
        let active = open_dir(root, "active")?;
        let active_sync = active.open(".").map_err(io(&root.join("active")))?;
        let dirs = Arc::new(Dirs {
            tmp: open_dir(root, "tmp")?,
            active,
            active_sync,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let active = root.join("active");
        tokio::spawn(committer(dirs.clone(), spares.clone(), active, rx));
        Ok(FileSpool {
            root: root.to_path_buf(),
            dirs,
            commits: tx,
            spares,
        })
    }

    /// Where a message lives, for messages about it.
    fn active(&self, id: &str) -> PathBuf {
        self.root.join("active").join(id)
    }

    /// Writes and commits a message; returns once it is durable.
    pub async fn store(&self, envelope: &QueuedEnvelope, message: &[u8]) -> Result<(), SpoolError> {
        let name = envelope.id.clone();
        let mut bytes = serde_json::to_vec(envelope).map_err(|e| SpoolError::Damaged {
            path: self.active(&name),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        bytes.extend_from_slice(message);
        // Small messages are written from the task itself: an unsynced write into the page
        // cache takes microseconds, less than the two thread switches of a hand-off to the
        // blocking pool. Large ones still go there.
        let spare = if bytes.len() <= INLINE_WRITE_MAX {
            self.write_new(&name, &bytes)?
        } else {
            let (spool, name) = (self.clone(), name.clone());
            tokio::task::spawn_blocking(move || spool.write_new(&name, &bytes))
                .await
                .map_err(|_| SpoolError::Stopped)??
        };
        let (done, wait) = oneshot::channel();
        self.commits
            .send(Commit {
                name: name.clone(),
                spare,
                done,
            })
            .map_err(|_| SpoolError::Stopped)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(SpoolError::Io {
                path: self.active(&name),
                source: std::io::Error::other(reason),
            }),
            Err(_) => Err(SpoolError::Stopped),
        }
    }

    /// Writes a new message's file, over a spare when there is one (whose name it returns:
    /// the committer publishes it from there), else as `tmp/<name>`.
    fn write_new(&self, name: &str, bytes: &[u8]) -> Result<Option<String>, SpoolError> {
        if let Some((spare, mut file)) = self.spares.as_ref().and_then(|s| s.take()) {
            let path = self.root.join("spare").join(&spare);
            // The old content beyond the new length goes.
            file.write_all(bytes).map_err(io(&path))?;
            file.set_len(bytes.len() as u64).map_err(io(&path))?;
            return Ok(Some(spare));
        }
        self.write_tmp(name, bytes, false)?;
        Ok(None)
    }

    /// Writes `tmp/<name>`, synced when asked.
    fn write_tmp(&self, name: &str, bytes: &[u8], synced: bool) -> Result<(), SpoolError> {
        let path = self.root.join("tmp").join(name);
        let mut file = self.dirs.tmp.create(name).map_err(io(&path))?;
        file.write_all(bytes).map_err(io(&path))?;
        if synced {
            file.sync_data().map_err(io(&path))?;
        }
        Ok(())
    }

    /// Reads one queued message.
    pub fn load(&self, id: &str) -> Result<Spooled, SpoolError> {
        let path = self.active(id);
        let bytes = self.dirs.active.read(id).map_err(io(&path))?;
        parse_file(&bytes).map_err(|reason| SpoolError::Damaged { path, reason })
    }

    /// Replaces the envelope (e.g. fewer recipients left), durably.
    pub fn rewrite(&self, spooled: &Spooled) -> Result<(), SpoolError> {
        let id = &spooled.envelope.id;
        let path = self.active(id);
        let tmp = format!("{id}.rewrite");
        let mut bytes = serde_json::to_vec(&spooled.envelope).map_err(|e| SpoolError::Damaged {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        bytes.extend_from_slice(&spooled.message);
        self.write_tmp(&tmp, &bytes, true)?;
        self.dirs
            .tmp
            .rename(&tmp, &self.dirs.active, id)
            .map_err(io(&path))?;
        rustix::fs::fsync(&self.dirs.active_sync).map_err(|e| SpoolError::Io {
            path: self.root.join("active"),
            source: e.into(),
        })
    }

    /// Removes a fully delivered message of `size` bytes (its file is kept as a spare when
    /// small). As with [`FileSpool::remove`], the directory is not fsynced.
    pub fn retire(&self, id: &str, size: usize) -> Result<(), SpoolError> {
        match &self.spares {
            Some(spares) if spares.keep(&self.dirs.active, id, size) => Ok(()),
            _ => self.remove(id),
        }
    }

    /// Removes a fully delivered message. The directory is not fsynced: if a crash brings the
    /// entry back, delivery runs again and finds every copy already in place (it is idempotent).
    pub fn remove(&self, id: &str) -> Result<(), SpoolError> {
        self.dirs
            .active
            .remove_file(id)
            .map_err(io(&self.active(id)))
    }

    /// True when the message is in the spool.
    pub fn contains(&self, id: &str) -> bool {
        is_queue_id(id) && self.dirs.active.metadata(id).is_ok_and(|m| m.is_file())
    }

    /// Ids of every queued message, oldest first (recovery after a restart).
    pub fn list(&self) -> Result<Vec<String>, SpoolError> {
        let dir = self.root.join("active");
        let mut ids: Vec<String> = self
            .dirs
            .active
            .entries()
            .map_err(io(&dir))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

fn open_dir(root: &Path, sub: &str) -> Result<Dir, SpoolError> {
    let path = root.join(sub);
    Dir::open_ambient_dir(&path, ambient_authority()).map_err(io(&path))
}

/// Takes every waiting file: one `syncfs` for their data, the renames into `active/`, one fsync
/// of the directory; then acknowledges them all.
async fn committer(
    dirs: Arc<Dirs>,
    spares: Option<Arc<Spares>>,
    active: PathBuf,
    mut commits: mpsc::UnboundedReceiver<Commit>,
) {
    while let Some(first) = commits.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = commits.try_recv() {
            batch.push(more);
        }
        let (dirs, spares, path) = (dirs.clone(), spares.clone(), active.clone());
        let result = tokio::task::spawn_blocking(move || {
            let failed =
                |what: &str, e: rustix::io::Errno| format!("{what} {}: {e}", path.display());
            // Every dirty file of the filesystem at once: one call for the whole batch.
            let data = rustix::fs::syncfs(&dirs.active_sync).map_err(|e| failed("syncfs", e));
            let mut outcomes = Vec::with_capacity(batch.len());
            for commit in batch {
                let renamed = data.clone().and_then(|()| {
                    match (&commit.spare, &spares) {
                        (Some(spare), Some(spares)) => {
                            spares.publish(spare, &dirs.active, &commit.name)
                        }
                        _ => dirs.tmp.rename(&commit.name, &dirs.active, &commit.name),
                    }
                    .map_err(|e| e.to_string())
                });
                outcomes.push((commit.done, renamed));
            }
            let synced = rustix::fs::fsync(&dirs.active_sync).map_err(|e| failed("fsync", e));
            for (done, renamed) in outcomes {
                let _ = done.send(renamed.and(synced.clone()));
            }
        })
        .await;
        if result.is_err() {
            tracing::error!("spool committer task failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::queue::spool::new_queue_id;

    fn envelope(id: &str) -> QueuedEnvelope {
        QueuedEnvelope {
            id: id.into(),
            sender: "a@example.net".into(),
            recipients: vec!["b@localhost".into()],
            received_at: 1,
            client_ip: "127.0.0.1".into(),
            helo: "client".into(),
            auth_user: None,
            smtputf8: false,
            binary: false,
            dsn: Default::default(),
            skip_plugins: Vec::new(),
        }
    }

    #[tokio::test]
    async fn stores_lists_rewrites_and_removes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = FileSpool::open(dir.path()).expect("open");
        let ids: Vec<String> = (0..20).map(|_| new_queue_id()).collect();
        let stores = ids.iter().map(|id| {
            let spool = spool.clone();
            let env = envelope(id);
            async move { spool.store(&env, b"Subject: x\r\n\r\nhi\r\n").await }
        });
        for result in futures_join(stores).await {
            result.expect("stored");
        }
        assert_eq!(spool.list().expect("list"), ids);
        let mut first = spool.load(&ids[0]).expect("load");
        assert_eq!(first.message, b"Subject: x\r\n\r\nhi\r\n");
        first.envelope.recipients.clear();
        spool.rewrite(&first).expect("rewrite");
        assert!(spool
            .load(&ids[0])
            .expect("reload")
            .envelope
            .recipients
            .is_empty());
        spool.remove(&ids[0]).expect("remove");
        assert_eq!(spool.list().expect("list").len(), 19);
        let reopened = FileSpool::open(dir.path()).expect("reopen");
        assert!(
            spool.load("../../etc/passwd").is_err(),
            "ids never leave the spool"
        );
        assert!(!spool.contains("../active/x"));
        assert_eq!(
            reopened.list().expect("list").len(),
            19,
            "survives a restart"
        );
    }

    #[tokio::test]
    async fn delivered_small_files_are_written_over_by_later_messages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = FileSpool::open(dir.path()).expect("open");
        let spares = spool
            .spares
            .clone()
            .expect("the server's spool keeps spares");
        let long = vec![b'x'; 5000];
        let first = new_queue_id();
        spool.store(&envelope(&first), &long).await.expect("stored");
        spool.retire(&first, long.len()).expect("retired");
        assert!(spool.list().expect("list").is_empty());
        assert_eq!(spares.len(), 1);
        // A shorter message over the longer file: nothing of the old one is left.
        let second = new_queue_id();
        spool
            .store(&envelope(&second), b"short\r\n")
            .await
            .expect("stored");
        assert_eq!(spares.len(), 0, "the spare was used");
        let loaded = spool.load(&second).expect("load");
        assert_eq!(loaded.message, b"short\r\n");
        assert_eq!(loaded.envelope, envelope(&second));
        // A large message is removed, not kept.
        let big = vec![b'y'; crate::delivery::queue::spares::MAX_SPARE_BYTES + 1];
        let third = new_queue_id();
        spool.store(&envelope(&third), &big).await.expect("stored");
        spool.retire(&third, big.len()).expect("retired");
        assert_eq!(spares.len(), 0);
        spool.retire(&second, 7).expect("retired");
        // Spares survive a restart; an operator's attached spool neither takes nor keeps any.
        drop(spool);
        let reopened = FileSpool::open(dir.path()).expect("reopen");
        assert_eq!(reopened.spares.as_ref().map(|s| s.len()), Some(1));
        let attached = FileSpool::attach(dir.path()).expect("attach");
        let fourth = new_queue_id();
        attached
            .store(&envelope(&fourth), b"x\r\n")
            .await
            .expect("stored");
        attached.retire(&fourth, 3).expect("retired");
        assert_eq!(
            std::fs::read_dir(dir.path().join("spare"))
                .expect("dir")
                .count(),
            1
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("active"))
                .expect("dir")
                .count(),
            0
        );
    }

    async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = futures.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("task"));
        }
        out
    }
}
