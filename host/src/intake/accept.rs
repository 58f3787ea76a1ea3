//! The message of a transaction: checks, sender authentication, trace fields, the data stage,
//! the ARC seal, then the spool (fsynced before the answer says so).

use std::sync::Arc;

use super::transaction::{refusal, with_stage};
use super::{checks, Accepted, Answer, Transaction};
use crate::delivery::queue::quarantine;
use crate::delivery::queue::spool::{new_queue_id, QueuedEnvelope};
use crate::message::{apply_message_edits, Message, MessageEdit};
use crate::plugin::{StageCall, StageReport, Verdict};
use crate::sender_auth::{AuthResults, SealInput};
use crate::telemetry::metrics;

impl Transaction {
    /// The message of the open transaction, exactly as the client sent it (no dot-stuffing,
    /// no line-end changes). The transaction ends here, whatever the answer.
    /// A refusal is logged with the envelope.
    pub async fn data(&mut self, body: Vec<u8>) -> Answer {
        let answer = match self.refused_content(&body) {
            Some(refused) => refused,
            None => self.take_in(body).await,
        };
        let envelope = &self.stages.state.envelope;
        let refused = super::log::Refused {
            command: "DATA",
            sender: &envelope.sender,
            recipients: &envelope.recipients,
            answer: &answer,
        };
        super::log::refused(&self.facts, &refused);
        self.reset();
        answer
    }

    fn refused_content(&self, body: &[u8]) -> Option<Answer> {
        if !self.is_open() || !self.has_recipients() {
            return Some(Answer::new(503, (5, 5, 1), "Send MAIL and RCPT first"));
        }
        let limits = self.limits();
        checks::content(body, self.binary, limits).or_else(|| checks::shape(body, limits))
    }

    /// Trace fields, data stage, seal, hand-off.
    async fn take_in(&mut self, body: Vec<u8>) -> Answer {
        let queue_id = new_queue_id();
        let (raw, seal) = self.traced(body, &queue_id).await;
        self.stages.state.message = Some(Arc::new(Message::new(raw)));
        let report = self.stage(StageCall::Data).await;
        if let Some(answer) = refusal(&report) {
            return with_stage(answer, report);
        }
        let Some(message) = self.stages.state.message.clone() else {
            let lost = Answer::new(451, (4, 3, 0), "Internal error: message lost");
            return with_stage(lost, report);
        };
        // Sealed after the data stage, so that the seal covers its edits.
        let message = self.arc_sealed(message, seal.as_ref());
        let envelope = self.queued_envelope(queue_id);
        let answer = self.hand_off(&envelope, &message, &report).await;
        with_stage(answer, report)
    }

    /// The message with the Received field on top, the authentication results below it and,
    /// for a submission, a Message-ID if it had none; what an ARC seal needs.
    async fn traced(&mut self, body: Vec<u8>, queue_id: &str) -> (Vec<u8>, Option<SealInput>) {
        let (body, auth, seal) = self.authenticate(body).await;
        let received = self.received_field(queue_id);
        let mut raw = Vec::with_capacity(received.len() + body.len());
        raw.extend_from_slice(received.as_bytes());
        raw.extend_from_slice(&body);
        if let Some(results) = &auth {
            raw = crate::sender_auth::stamp(&raw, &results.header_field(), &results.authserv_id);
        }
        self.stages.state.auth = auth;
        if self.facts.auth_user.is_some() {
            let hostname = &self.gateway.shared.config.server.hostname;
            raw = with_message_id(raw, queue_id, hostname);
        }
        (raw, seal)
    }

    /// The verification results of the message (which comes back unchanged), and what an ARC
    /// seal needs when the gateway seals.
    async fn authenticate(
        &mut self,
        body: Vec<u8>,
    ) -> (Vec<u8>, Option<Arc<AuthResults>>, Option<SealInput>) {
        let Some(verifier) = self.verifier().cloned() else {
            return (body, None, None);
        };
        // SPF, still running or done, is awaited beside the message's own lookups.
        let spf = self.spf.take();
        let checked = verifier
            .check_message(body, self.auth_envelope(), spf)
            .await;
        metrics::auth_results(&checked.results);
        let results = Some(Arc::new(checked.results));
        (checked.message, results, checked.seal)
    }

    /// The message with the gateway's ARC set on top, when it seals.
    fn arc_sealed(&self, message: Arc<Message>, seal: Option<&SealInput>) -> Arc<Message> {
        match (self.verifier(), seal) {
            (Some(verifier), Some(input)) => {
                Arc::new(Message::new(verifier.seal(message.raw().to_vec(), input)))
            }
            _ => message,
        }
    }

    fn received_field(&self, queue_id: &str) -> String {
        let facts = &self.facts;
        let protocol = match (facts.esmtp, facts.tls, facts.auth_user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let rcpt = match self.stages.state.envelope.recipients.as_slice() {
            [one] => format!("\r\n\tfor <{one}>"),
            _ => String::new(),
        };
        format!(
            "Received: from {} ({})\r\n\tby {} (mailgate) with {protocol} id {queue_id}{rcpt};\r\n\t{}\r\n",
            facts.helo.as_deref().unwrap_or("unknown"),
            facts.peer.ip(),
            self.gateway.shared.config.server.hostname,
            crate::mail::date::rfc5322_now()
        )
    }

    fn queued_envelope(&self, id: String) -> QueuedEnvelope {
        let envelope = &self.stages.state.envelope;
        QueuedEnvelope {
            id,
            sender: envelope.sender.clone(),
            recipients: envelope.recipients.clone(),
            received_at: crate::mail::clock::unix_seconds(),
            client_ip: self.facts.peer.ip().to_string(),
            helo: self.facts.helo.clone().unwrap_or_default(),
            auth_user: self.facts.auth_user.clone(),
            smtputf8: checks::wants_smtputf8(&envelope.params),
            binary: self.binary,
            dsn: self.queued_dsn(),
            skip_plugins: Vec::new(),
        }
    }

    /// The DSN parameters of the recipients that are still in the envelope (a data-stage
    /// plugin may have removed some).
    fn queued_dsn(&self) -> crate::mail::dsn::EnvelopeDsn {
        let recipients = &self.stages.state.envelope.recipients;
        let mut dsn = self.stages.state.envelope.dsn.clone();
        dsn.recipients
            .retain(|address, _| recipients.iter().any(|r| r.eq_ignore_ascii_case(address)));
        dsn
    }

    /// Spools the message (or discards or quarantines it, as the data stage said); 250 only
    /// once it is on stable storage.
    async fn hand_off(
        &mut self,
        envelope: &QueuedEnvelope,
        message: &Message,
        report: &StageReport,
    ) -> Answer {
        let queue_id = &envelope.id;
        let disposition = match self.keep(envelope, message, report).await {
            Ok(disposition) => disposition,
            Err(e) => {
                tracing::error!(queue_id, "cannot spool message: {e}");
                let text = "Temporary local problem, please try again later";
                return Answer::new(451, (4, 3, 0), text);
            }
        };
        let size = message.raw().len();
        metrics::message_size(size);
        tracing::info!(
            queue_id,
            from = envelope.sender,
            recipients = envelope.recipients.len(),
            size,
            "queued"
        );
        let mut answer = Answer::new(250, (2, 0, 0), &format!("Ok: queued as {queue_id}"));
        answer.accepted = Some(Accepted {
            queue_id: queue_id.clone(),
            sender: envelope.sender.clone(),
            recipients: envelope.recipients.clone(),
            size,
            authentication: self.stages.state.auth.as_ref().map(|r| r.summary()),
            dsn: if envelope.dsn.is_empty() {
                Vec::new()
            } else {
                envelope.dsn.describe()
            },
            disposition,
        });
        answer
    }

    /// Where the message goes: the spool, nowhere (discarded) or quarantine; the disposition
    /// when it is not the spool.
    async fn keep(
        &mut self,
        envelope: &QueuedEnvelope,
        message: &Message,
        report: &StageReport,
    ) -> Result<Option<(&'static str, String)>, String> {
        let queue_id = &envelope.id;
        let by = report.decided_by.clone().unwrap_or_default();
        let spool = &self.gateway.spool;
        match &report.decision {
            Verdict::Discard => {
                tracing::info!(queue_id, "message discarded by {by}");
                Ok(Some(("discarded", format!("by {by} at DATA"))))
            }
            Verdict::Quarantine(reason) => {
                let kept = self.quarantine_envelope(envelope, &by, reason);
                spool.quarantine(&kept, message.raw()).await?;
                Ok(Some(("quarantined", format!("by {by} at DATA: {reason}"))))
            }
            _ => spool.enqueue(envelope, message.raw()).await.map(|()| None),
        }
    }
}

impl Transaction {
    /// What quarantine keeps beside the message: the envelope with every parameter the client
    /// gave, and who decided.
    fn quarantine_envelope(
        &self,
        envelope: &QueuedEnvelope,
        by: &str,
        reason: &str,
    ) -> quarantine::Envelope {
        let params_of = |address: &str| {
            self.rcpt_params
                .iter()
                .find(|(r, _)| r.eq_ignore_ascii_case(address))
                .map(|(_, params)| quarantine::param_words(params))
                .unwrap_or_default()
        };
        quarantine::Envelope {
            queue_id: envelope.id.clone(),
            sender: envelope.sender.clone(),
            mail_params: quarantine::param_words(&self.stages.state.envelope.params),
            recipients: envelope
                .recipients
                .iter()
                .map(|address| quarantine::Recipient {
                    address: address.clone(),
                    params: params_of(address),
                })
                .collect(),
            client_ip: envelope.client_ip.clone(),
            helo: envelope.helo.clone(),
            auth_user: envelope.auth_user.clone(),
            received_at: envelope.received_at,
            quarantined_at: crate::mail::clock::unix_seconds(),
            stage: "data".into(),
            plugin: by.to_string(),
            reason: reason.to_string(),
            smtputf8: envelope.smtputf8,
            binary: envelope.binary,
        }
    }
}

/// Adds a Message-ID to a submitted message that has none (RFC 6409 §8.3).
fn with_message_id(raw: Vec<u8>, queue_id: &str, hostname: &str) -> Vec<u8> {
    let message = Message::new(raw);
    if !message.header("Message-ID").is_empty() {
        return message.into_raw();
    }
    let edit = MessageEdit::AddHeader {
        name: "Message-ID".into(),
        value: format!("<{queue_id}@{hostname}>"),
    };
    match apply_message_edits(&message, &[edit]) {
        Ok(Some(edited)) => edited.into_raw(),
        _ => message.into_raw(),
    }
}
