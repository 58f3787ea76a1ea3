//! What the queue knows about a message between delivery attempts, kept beside the spool file
//! in `queue/state/<id>.json`: attempts, the next attempt, the last error, the hold flag and
//! which recipients are still to deliver. No state file means a fresh message: every recipient
//! of its envelope pending, never tried.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spool::{QueuedEnvelope, Spool, SpoolError};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    pub attempts: u32,
    /// Unix seconds; 0 means as soon as possible.
    pub next_attempt: u64,
    pub last_error: Option<String>,
    pub held: bool,
    /// Recipients still to deliver; `None` means all of the envelope's.
    pub pending: Option<Vec<String>>,
    /// The delay report (`[queue] delay-notice-after`) was sent, or was due and nobody
    /// wanted it: there is one per message at most.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delay_notified: bool,
}

impl DeliveryState {
    pub fn pending<'a>(&'a self, envelope: &'a QueuedEnvelope) -> &'a [String] {
        self.pending.as_deref().unwrap_or(&envelope.recipients)
    }
}

/// One line of `mailgate queue list`.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub envelope: QueuedEnvelope,
    pub state: DeliveryState,
    pub size: usize,
}

/// The queue's files: spool entries and their state files (`state/` held as a cap-std
/// directory handle: no id names a file outside it).
#[derive(Clone)]
pub struct QueueFiles {
    pub spool: Spool,
    state_dir: PathBuf,
    states: std::sync::Arc<cap_std::fs::Dir>,
}

impl QueueFiles {
    pub fn new(spool: Spool, queue_root: &Path) -> Result<QueueFiles, SpoolError> {
        let state_dir = queue_root.join("state");
        std::fs::create_dir_all(&state_dir).map_err(|source| SpoolError::Io {
            path: state_dir.clone(),
            source,
        })?;
        let states = cap_std::fs::Dir::open_ambient_dir(&state_dir, cap_std::ambient_authority())
            .map_err(|source| SpoolError::Io {
            path: state_dir.clone(),
            source,
        })?;
        Ok(QueueFiles {
            spool,
            state_dir,
            states: std::sync::Arc::new(states),
        })
    }

    fn name(id: &str) -> String {
        format!("{id}.json")
    }

    fn path(&self, id: &str) -> PathBuf {
        self.state_dir.join(Self::name(id))
    }

    /// The state of a message (default when it has none yet or the file is unreadable).
    pub fn state(&self, id: &str) -> DeliveryState {
        match self.states.read(Self::name(id)) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(
                    queue_id = id,
                    "unreadable queue state, starting afresh: {e}"
                );
                DeliveryState::default()
            }),
            Err(_) => DeliveryState::default(),
        }
    }

    /// Writes the state durably (it may record recipients already delivered).
    pub fn save(&self, id: &str, state: &DeliveryState) -> Result<(), SpoolError> {
        use std::io::Write;
        let path = self.path(id);
        let tmp = format!(".{id}.tmp");
        let io = |source| SpoolError::Io {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec(state).map_err(|e| SpoolError::Damaged {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut file = self.states.create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_data().map_err(io)?;
        drop(file);
        self.states
            .rename(&tmp, &self.states, Self::name(id))
            .map_err(io)?;
        // The handle itself cannot be synced (O_PATH): a readable one of the same directory can.
        self.states.open(".").and_then(|d| d.sync_all()).map_err(io)
    }

    /// Removes a message and its state (delivered, bounced or deleted).
    pub fn remove(&self, id: &str) -> Result<(), SpoolError> {
        let _ = self.states.remove_file(Self::name(id));
        self.spool.remove(id)
    }

    /// Removes a delivered message of `size` bytes and its state, keeping its spool file as a
    /// spare when small.
    pub fn retire(&self, id: &str, size: usize) -> Result<(), SpoolError> {
        let _ = self.states.remove_file(Self::name(id));
        self.spool.retire(id, size)
    }

    /// Drops a message's state file (its spool entry is gone already).
    pub fn forget_state(&self, id: &str) {
        let _ = self.states.remove_file(Self::name(id));
    }

    pub fn exists(&self, id: &str) -> bool {
        self.spool.contains(id)
    }

    /// Every queued message, oldest first.
    pub fn entries(&self) -> Vec<QueueEntry> {
        let ids = self.spool.list().unwrap_or_default();
        ids.iter()
            .filter_map(|id| {
                let spooled = self.spool.load(id).ok()?;
                Some(QueueEntry {
                    state: self.state(id),
                    size: spooled.message.len(),
                    envelope: spooled.envelope,
                })
            })
            .collect()
    }

    /// Changes the state of one message with `change`, durably.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut DeliveryState),
    ) -> Result<DeliveryState, String> {
        if !self.exists(id) {
            return Err(format!("no message {id} in the queue"));
        }
        let mut state = self.state(id);
        change(&mut state);
        self.save(id, &state).map_err(|e| e.to_string())?;
        Ok(state)
    }
}
