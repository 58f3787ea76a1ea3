//! Bounces: one delivery status notification to the sender for the recipients that failed
//! for good, queued like any other message.

use tokio::sync::mpsc;

use super::manager::now_secs;
use super::spool::{new_queue_id, QueuedEnvelope, Spool, Spooled};
use crate::delivery::relay::dsn::{self, FailedRecipient};
use crate::telemetry::{journal, metrics};

/// One DSN for these recipients to the envelope sender; none when the sender is `<>`. Returns
/// once the DSN is durable in the spool, so that the failed message may go: a stop (or a
/// crash) right after never loses the bounce. A DSN queued while the server is stopping is
/// delivered after the next start (the queue starts nothing new meanwhile).
pub(super) async fn queue_bounce(
    (spool, resubmit): (&Spool, &mpsc::UnboundedSender<String>),
    hostname: &str,
    spooled: &Spooled,
    failed: &[FailedRecipient],
) {
    let envelope = &spooled.envelope;
    if envelope.sender.is_empty() {
        tracing::warn!(
            queue_id = envelope.id,
            "undeliverable bounce dropped (a bounce is never sent to <>)"
        );
        return;
    }
    let original = dsn::Original {
        queue_id: &envelope.id,
        sender: &envelope.sender,
        received_at: envelope.received_at,
        message: &spooled.message,
    };
    let report = dsn::build(hostname, &original, failed, now_secs());
    let bounce = QueuedEnvelope {
        id: new_queue_id(),
        sender: String::new(),
        recipients: vec![envelope.sender.clone()],
        received_at: now_secs(),
        client_ip: "127.0.0.1".into(),
        helo: hostname.to_string(),
        auth_user: None,
        smtputf8: false,
        binary: false,
        skip_plugins: Vec::new(),
    };
    let original_id = &envelope.id;
    match spool.store(&bounce, &report).await {
        Ok(()) => {
            metrics::bounce();
            let event = journal::Event::Bounced {
                bounce: bounce.id.clone(),
            };
            journal::record("", 0, original_id, event);
            tracing::info!(queue_id = original_id, bounce = bounce.id, "bounce queued");
            let _ = resubmit.send(bounce.id);
        }
        Err(e) => tracing::error!(queue_id = original_id, "cannot queue the bounce: {e}"),
    }
}
