//! Reports to the sender: one delivery status notification per occasion (failure, delay,
//! success, relayed), queued like any other message.

use tokio::sync::mpsc;

use super::manager::now_secs;
use super::spool::{new_queue_id, QueuedEnvelope, Spool, Spooled};
use crate::delivery::relay::dsn::{self, ReportRecipient};
use crate::telemetry::{journal, metrics};

/// Spools one report about `recipients` (who share one action) to the envelope sender and
/// returns its queue id; none when the sender is `<>` or nobody is to be told. Returns once
/// the report is durable, so that the message it is about may go: a stop (or a crash) right
/// after never loses it.
pub async fn queue_report(
    spool: &Spool,
    hostname: &str,
    spooled: &Spooled,
    recipients: &[ReportRecipient],
) -> Option<String> {
    let envelope = &spooled.envelope;
    if recipients.is_empty() {
        return None;
    }
    if envelope.sender.is_empty() {
        let kind = match recipients[0].action {
            dsn::Action::Failed => "undeliverable bounce dropped (a bounce is never sent to <>)",
            _ => "report dropped (a report is never sent to <>)",
        };
        tracing::warn!(queue_id = envelope.id, "{kind}");
        return None;
    }
    let original = dsn::Original {
        queue_id: &envelope.id,
        sender: &envelope.sender,
        received_at: envelope.received_at,
        message: &spooled.message,
        envid: envelope.dsn.envid.as_deref(),
        ret: envelope.dsn.ret,
    };
    let report = dsn::build(hostname, &original, recipients, now_secs());
    let queued = QueuedEnvelope {
        id: new_queue_id(),
        sender: String::new(),
        recipients: vec![envelope.sender.clone()],
        received_at: now_secs(),
        client_ip: "127.0.0.1".into(),
        helo: hostname.to_string(),
        auth_user: None,
        smtputf8: !envelope.sender.is_ascii(),
        binary: false,
        dsn: Default::default(),
        skip_plugins: Vec::new(),
    };
    match spool.store(&queued, &report).await {
        Ok(()) => Some(queued.id),
        Err(e) => {
            tracing::error!(queue_id = envelope.id, "cannot queue the report: {e}");
            None
        }
    }
}

/// The failure report (a bounce) for these recipients; none when the sender is `<>`, or when
/// none of them asked for one (NOTIFY without FAILURE). A report queued while the server is
/// stopping is delivered after the next start (the queue starts nothing new meanwhile).
pub(super) async fn queue_bounce(
    (spool, resubmit): (&Spool, &mpsc::UnboundedSender<String>),
    hostname: &str,
    spooled: &Spooled,
    failed: &[ReportRecipient],
) {
    let Some(bounce) = queue_report(spool, hostname, spooled, failed).await else {
        return;
    };
    let original_id = &spooled.envelope.id;
    metrics::bounce();
    let event = journal::Event::Bounced {
        bounce: bounce.clone(),
    };
    journal::record("", 0, original_id, event);
    tracing::info!(queue_id = original_id, bounce, "bounce queued");
    let _ = resubmit.send(bounce);
}

/// A report other than a bounce (delay, relayed): queued and sent on its way.
pub(super) async fn queue_notice(
    (spool, resubmit): (&Spool, &mpsc::UnboundedSender<String>),
    hostname: &str,
    spooled: &Spooled,
    recipients: &[ReportRecipient],
) -> bool {
    let Some(notice) = queue_report(spool, hostname, spooled, recipients).await else {
        return false;
    };
    let action = match recipients.first().map(|r| r.action) {
        Some(dsn::Action::Delayed) => "delay",
        Some(dsn::Action::Relayed) => "relayed",
        _ => "delivery",
    };
    tracing::info!(
        queue_id = spooled.envelope.id,
        notice,
        "{action} report queued"
    );
    let _ = resubmit.send(notice);
    true
}
