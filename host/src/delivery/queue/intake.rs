//! The way into the queue for a message an SMTP session accepted: spooled durably, then
//! handed to local delivery or, with no local recipient, straight to the relay queue; or kept
//! aside in quarantine.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::manager::QueueManager;
use super::spool::{QueuedEnvelope, Spool, Spooled};
use crate::store::users::UserDirectory;

/// Where accepted messages go.
pub struct Intake {
    pub spool: Spool,
    pub users: Arc<UserDirectory>,
    /// The local delivery worker's input.
    pub deliveries: mpsc::UnboundedSender<String>,
    pub relay: QueueManager,
    pub quarantine_dir: PathBuf,
}

impl Intake {
    /// Spools a message durably and schedules its delivery.
    pub async fn enqueue(&self, envelope: &QueuedEnvelope, raw: &[u8]) -> Result<(), String> {
        self.spool
            .store(envelope, raw)
            .await
            .map_err(|e| e.to_string())?;
        // A message with no local recipient goes straight to the relay queue; one whose
        // recipients the users cannot place now goes to local delivery, which keeps it queued
        // until they can.
        let local = envelope.recipients.iter().any(|r| {
            !matches!(
                self.users.recipient(r),
                crate::store::users::Recipient::Remote
            )
        });
        if local {
            let _ = self.deliveries.send(envelope.id.clone());
        } else {
            self.relay.submit_new(Spooled {
                envelope: envelope.clone(),
                message: raw.to_vec(),
            });
        }
        Ok(())
    }

    /// Keeps a message aside, with the reason, instead of delivering it.
    pub async fn quarantine(&self, id: &str, raw: &[u8], reason: &str) -> Result<(), String> {
        let (dir, id, raw, reason) = (
            self.quarantine_dir.clone(),
            id.to_string(),
            raw.to_vec(),
            reason.to_string(),
        );
        tokio::task::spawn_blocking(move || super::quarantine(&dir, &id, &raw, &reason))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}
