//! The way into the queue for a message an SMTP session accepted: spooled durably, then
//! handed to local delivery or, with no local recipient, straight to the relay queue; or kept
//! aside in quarantine.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::manager::QueueManager;
use super::quarantine;
use super::spool::{QueuedEnvelope, Spool, Spooled};
use crate::store::users::UserDirectory;

/// Where accepted messages go.
#[derive(Clone)]
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

    /// Keeps a message aside with its envelope and the reason, durably; returns its
    /// quarantine id.
    pub async fn quarantine(
        &self,
        envelope: &quarantine::Envelope,
        raw: &[u8],
    ) -> Result<String, String> {
        let (dir, envelope, raw) = (self.quarantine_dir.clone(), envelope.clone(), raw.to_vec());
        tokio::task::spawn_blocking(move || quarantine::keep(&dir, &envelope, &raw))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Puts a quarantined message back in the queue for its original recipients (durably, then
    /// scheduled), and removes it from quarantine.
    pub async fn release(&self, id: &str, skip_plugin: bool) -> Result<String, String> {
        let dir = self.quarantine_dir.clone();
        let spool = self.spool.clone();
        let id_owned = id.to_string();
        let release = tokio::task::spawn_blocking(move || {
            quarantine::prepare_release(&dir, &id_owned, skip_plugin, |q| spool.contains(q))
        })
        .await
        .map_err(|e| e.to_string())??;
        self.enqueue(&release.envelope, &release.message).await?;
        let dir = self.quarantine_dir.clone();
        let id_owned = id.to_string();
        tokio::task::spawn_blocking(move || quarantine::delete(&dir, &id_owned))
            .await
            .map_err(|e| e.to_string())??;
        tracing::info!(
            queue_id = %release.envelope.id,
            "released from quarantine {id}"
        );
        Ok(quarantine::released_text(id, &release))
    }
}
