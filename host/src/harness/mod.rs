//! The offline policy harness: runs a plugin chain through a whole SMTP transaction without a
//! network. `mailgate check` prints what happened; `mailgate test` compares it with the
//! expectations written in case files.

pub mod case;
pub mod check;
mod diff;
pub mod dns_server;
mod junit;

use std::sync::Arc;

use crate::intake::Stages;
use crate::mail::{Delivery, MailState, Reply, Retrieval, Route, Session};
use crate::message::Message;
use crate::plugin::{PluginSet, Services, Stage, StageCall, StageReport, Verdict};
use crate::sender_auth::{AuthResults, Verifier};

/// The sender authentication results of the input's message, and the message with them on top
/// as the gateway would write them.
async fn authenticate(
    verifier: &Arc<Verifier>,
    input: &TransactionInput,
) -> (Message, Arc<AuthResults>) {
    let envelope = crate::sender_auth::Envelope {
        client_ip: input
            .session
            .peer_ip
            .parse()
            .unwrap_or(std::net::IpAddr::from([192, 0, 2, 1])),
        helo: input.helo.clone(),
        sender: input.sender.clone(),
    };
    let checked = verifier
        .check_message(input.message.raw().to_vec(), envelope, None)
        .await;
    let results = checked.results;
    let stamped = crate::sender_auth::stamp(
        &checked.message,
        &results.header_field(),
        &results.authserv_id,
    );
    (Message::new(stamped), Arc::new(results))
}

/// What goes into one offline transaction.
#[derive(Debug, Clone)]
pub struct TransactionInput {
    pub session: Session,
    pub helo: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub message: Message,
}

/// How the transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Accepted,
    Rejected {
        stage: Stage,
        reply: Reply,
    },
    Tempfailed {
        stage: Stage,
        reply: Reply,
    },
    Disconnected {
        stage: Stage,
        reply: Reply,
    },
    /// Every recipient was refused.
    NoRecipients,
    Discarded,
    Quarantined(String),
}

impl Disposition {
    /// The word used in case files: accept, reject, tempfail, disconnect, discard, quarantine.
    pub fn name(&self) -> &'static str {
        match self {
            Disposition::Accepted => "accept",
            Disposition::Rejected { .. } | Disposition::NoRecipients => "reject",
            Disposition::Tempfailed { .. } => "tempfail",
            Disposition::Disconnected { .. } => "disconnect",
            Disposition::Discarded => "discard",
            Disposition::Quarantined(_) => "quarantine",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Disposition::Accepted => "accepted".into(),
            Disposition::Rejected { stage, reply } => format!("rejected at {stage}: {reply}"),
            Disposition::Tempfailed { stage, reply } => {
                format!("deferred (tempfail) at {stage}: {reply}")
            }
            Disposition::Disconnected { stage, reply } => {
                format!("disconnected at {stage}: {reply}")
            }
            Disposition::NoRecipients => "rejected: no recipient was accepted".into(),
            Disposition::Discarded => "accepted and discarded".into(),
            Disposition::Quarantined(reason) => format!("accepted into quarantine: {reason}"),
        }
    }
}

/// Everything that happened, for printing or checking.
pub struct TransactionReport {
    pub stages: Vec<StageReport>,
    /// The reply each recipient got at RCPT (code).
    pub recipients: Vec<(String, u16)>,
    pub disposition: Disposition,
    /// The envelope and message after the data stage (what would be stored).
    pub state: MailState,
    pub notes: std::collections::BTreeMap<String, String>,
}

impl TransactionReport {
    /// The SMTP reply code a client would have seen at this stage (the last one for RCPT).
    pub fn reply_code(&self, stage: Stage) -> Option<u16> {
        self.stages
            .iter()
            .rev()
            .find(|r| r.stage == stage)
            .map(|r| reply_code(stage, &r.decision))
    }

    /// The reply code a recipient got at RCPT, and the plugin's reply when one decided.
    pub fn recipient_reply(&self, rcpt: &str) -> Option<(u16, Option<&Reply>)> {
        let index = self.recipients.iter().position(|(r, _)| r == rcpt)?;
        let code = self.recipients[index].1;
        let decision = self
            .stages
            .iter()
            .filter(|s| s.stage == Stage::RcptTo)
            .nth(index)
            .and_then(|s| s.decision.reply());
        Some((code, decision))
    }

    /// The first plugin that decided anything in this transaction.
    pub fn decided_by(&self) -> Option<&str> {
        self.stages.iter().find_map(|r| r.decided_by.as_deref())
    }
}

/// The reply code a stage's decision maps to (what the SMTP server sends).
pub fn reply_code(stage: Stage, decision: &Verdict) -> u16 {
    match decision.reply() {
        Some(reply) => reply.code,
        None if stage == Stage::Connect => 220,
        None if stage == Stage::Data => 250,
        None => 250,
    }
}

/// Runs connect, HELO, MAIL, each RCPT and DATA, then the delivery and retrieval stages on
/// the stored result, stopping where a real SMTP transaction would stop.
pub async fn run_transaction(
    set: &Arc<PluginSet>,
    services: Services,
    input: TransactionInput,
    verifier: Option<&Arc<Verifier>>,
) -> TransactionReport {
    let mut stages = Stages::on(set.transaction(&input.session.id, services));
    stages.state.session = input.session.clone();
    let mut report = TransactionReport {
        stages: Vec::new(),
        recipients: Vec::new(),
        disposition: Disposition::Accepted,
        state: MailState::default(),
        notes: Default::default(),
    };
    let ended = 'smtp: {
        for call in [StageCall::Connect, StageCall::Helo(&input.helo)] {
            if let StageCall::Helo(name) = call {
                stages.state.session.helo = Some(name.to_string());
            }
            let stage = stages.run(call).await;
            if let Some(end) = refusal(&stage) {
                report.stages.push(stage);
                break 'smtp Some(end);
            }
            report.stages.push(stage);
        }
        stages.state.envelope.sender = input.sender.clone();
        let stage = stages.run(StageCall::MailFrom(&[])).await;
        let end = refusal(&stage);
        report.stages.push(stage);
        if end.is_some() {
            break 'smtp end;
        }
        for rcpt in &input.recipients {
            let stage = stages.run(StageCall::RcptTo(rcpt, &[])).await;
            let code = reply_code(Stage::RcptTo, &stage.decision);
            report.recipients.push((rcpt.clone(), code));
            let end = match &stage.decision {
                Verdict::Disconnect(reply) => Some(Disposition::Disconnected {
                    stage: Stage::RcptTo,
                    reply: reply.clone(),
                }),
                _ => None,
            };
            if code < 400
                && !stages
                    .state
                    .envelope
                    .recipients
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(rcpt))
            {
                stages.state.envelope.recipients.push(rcpt.clone());
            }
            report.stages.push(stage);
            if end.is_some() {
                break 'smtp end;
            }
        }
        if stages.state.envelope.recipients.is_empty() {
            break 'smtp Some(Disposition::NoRecipients);
        }
        let message = match verifier.filter(|_| input.session.auth_user.is_none()) {
            Some(verifier) => {
                let (message, results) = authenticate(verifier, &input).await;
                stages.state.auth = Some(results);
                message
            }
            None => input.message.clone(),
        };
        stages.state.message = Some(Arc::new(message));
        let stage = stages.run(StageCall::Data).await;
        let end = refusal(&stage).or(match &stage.decision {
            Verdict::Discard => Some(Disposition::Discarded),
            Verdict::Quarantine(reason) => Some(Disposition::Quarantined(reason.clone())),
            _ => None,
        });
        report.stages.push(stage);
        end
    };
    report.disposition = ended.unwrap_or(Disposition::Accepted);
    if report.disposition == Disposition::Accepted {
        // Delivery and retrieval work on copies: their edits never change what was stored.
        let mut delivery = stages.state.clone();
        delivery.delivery = Some(Delivery {
            queue_id: format!("{}.check", input.session.id),
            attempt: 1,
            route: Route::Local,
        });
        report
            .stages
            .push(stages.run_on(StageCall::Deliver, &mut delivery).await);
        let mut retrieval = stages.state.clone();
        retrieval.retrieval = Some(Retrieval {
            user: stages
                .state
                .envelope
                .recipients
                .first()
                .cloned()
                .unwrap_or_default(),
            folder: "INBOX".into(),
            uid: 1,
        });
        report
            .stages
            .push(stages.run_on(StageCall::Retrieve, &mut retrieval).await);
    }
    report.notes = stages.notes();
    report.state = stages.state;
    report
}

/// The disposition a refusing decision ends the transaction with.
fn refusal(report: &StageReport) -> Option<Disposition> {
    let stage = report.stage;
    match &report.decision {
        Verdict::Reject(reply) => Some(Disposition::Rejected {
            stage,
            reply: reply.clone(),
        }),
        Verdict::Tempfail(reply) => Some(Disposition::Tempfailed {
            stage,
            reply: reply.clone(),
        }),
        Verdict::Disconnect(reply) => Some(Disposition::Disconnected {
            stage,
            reply: reply.clone(),
        }),
        _ => None,
    }
}
