//! The transaction: the session-level stages (connect, HELO), then MAIL, RCPT and the
//! message, each step answered with a reply value.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{checks, log, Answer, Facts, Gateway, Stages};
use crate::config::LimitsConfig;
use crate::mail::dsn::{self, EnvelopeDsn};
use crate::mail::EsmtpParam;
use crate::plugin::{StageCall, StageReport, Verdict};
use crate::sender_auth::{SpfOutcome, Verifier};

/// One client's way in: its facts, the plugin stages, and the transaction under way.
pub struct Transaction {
    pub(super) gateway: Arc<Gateway>,
    pub(super) facts: Facts,
    pub(super) stages: Stages,
    open: bool,
    /// MAIL said BODY=BINARYMIME.
    pub(super) binary: bool,
    /// The SPF checks started at MAIL FROM, when the sender is verified.
    pub(super) spf: Option<JoinHandle<SpfOutcome>>,
    /// Recipients refused by the gateway's own rules so far.
    rcpt_errors: u32,
    /// The ESMTP parameters of each accepted RCPT, kept for a quarantined message's envelope.
    pub(super) rcpt_params: Vec<(String, Vec<EsmtpParam>)>,
}

impl Transaction {
    pub fn new(gateway: Arc<Gateway>, facts: Facts) -> Transaction {
        let shared = &gateway.shared;
        let mut stages = Stages::new(&shared.plugins, &shared.services, &facts.id);
        stages.state.session = facts.plugin_session();
        Transaction {
            gateway,
            facts,
            stages,
            open: false,
            binary: false,
            spf: None,
            rcpt_errors: 0,
            rcpt_params: Vec::new(),
        }
    }

    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    pub(super) fn limits(&self) -> &LimitsConfig {
        &self.gateway.shared.config.limits
    }

    /// MAIL was accepted and the message is not in yet.
    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn has_recipients(&self) -> bool {
        !self.stages.state.envelope.recipients.is_empty()
    }

    /// The open transaction's content is BINARYMIME (it may come by BDAT only).
    pub fn is_binary(&self) -> bool {
        self.binary
    }

    /// Runs a plugin stage with the session's facts as they are now.
    pub(super) async fn stage(&mut self, call: StageCall<'_>) -> StageReport {
        self.stages.state.session = self.facts.plugin_session();
        self.stages.run(call).await
    }

    /// The connect stage; a refusal ends the session.
    pub async fn connect(&mut self) -> Answer {
        let report = self.stage(StageCall::Connect).await;
        let mut answer = refusal(&report).unwrap_or_else(|| Answer::new(220, (2, 0, 0), "Ok"));
        answer.close |= answer.refused();
        answer.stage = Some(report);
        answer
    }

    /// The HELO stage on a new greeting (the transaction under way is dropped).
    pub async fn helo(&mut self, name: &str, esmtp: bool) -> Answer {
        self.reset();
        self.facts.helo = Some(name.to_string());
        self.facts.esmtp = esmtp;
        let report = self.stage(StageCall::Helo(name)).await;
        let Some(mut answer) = refusal(&report) else {
            return with_stage(Answer::new(250, (2, 0, 0), "Ok"), report);
        };
        self.facts.helo = None;
        answer.stage = Some(report);
        answer
    }

    /// The client logged in as `user`.
    pub fn authenticated(&mut self, user: String) {
        self.facts.auth_user = Some(user);
    }

    /// After STARTTLS: everything learned before the handshake is forgotten (RFC 3207).
    pub fn secured(&mut self) {
        self.facts.tls = true;
        self.facts.helo = None;
        self.facts.esmtp = false;
        self.facts.auth_user = None;
        self.reset();
    }

    /// Drops the transaction under way; the next one gets fresh plugin notes.
    pub fn reset(&mut self) {
        self.open = false;
        self.binary = false;
        self.rcpt_params.clear();
        if let Some(spf) = self.spf.take() {
            spf.abort();
        }
        let shared = &self.gateway.shared;
        self.stages
            .next_transaction(&shared.plugins, &shared.services, &self.facts.id);
    }

    /// MAIL FROM: the listener's policy, the declared size, then the mail stage; a refusal
    /// is logged.
    pub async fn mail(&mut self, sender: String, params: Vec<EsmtpParam>) -> Answer {
        let answer = self.decide_mail(sender.clone(), params).await;
        let refused = log::Refused {
            command: "MAIL",
            sender: &sender,
            recipients: &[],
            answer: &answer,
        };
        log::refused(&self.facts, &refused);
        answer
    }

    async fn decide_mail(&mut self, sender: String, params: Vec<EsmtpParam>) -> Answer {
        if self.facts.require_auth && self.facts.auth_user.is_none() {
            return Answer::new(530, (5, 7, 0), "Authentication required");
        }
        if let Some(refused) = checks::declared_size(&params, self.limits().max_message_bytes) {
            return refused;
        }
        if let Some(refused) = self.unoffered_dsn(&params) {
            return refused;
        }
        let (ret, envid) = match dsn::mail_params(&params) {
            Ok(found) => found,
            Err(e) => return Answer::new(501, (5, 5, 4), &e.to_string()),
        };
        let shared = &self.gateway.shared;
        self.stages
            .refresh(&shared.plugins, &shared.services, &self.facts.id);
        self.stages.state.envelope.sender = sender;
        self.stages.state.envelope.params = params.clone();
        self.stages.state.envelope.dsn = EnvelopeDsn {
            ret,
            envid,
            recipients: Default::default(),
        };
        let report = self.stage(StageCall::MailFrom(&params)).await;
        if let Some(answer) = refusal(&report) {
            self.stages.state.envelope = Default::default();
            return with_stage(answer, report);
        }
        self.open = true;
        self.binary = checks::is_binary(&params);
        self.start_spf();
        with_stage(Answer::new(250, (2, 1, 0), "Sender ok"), report)
    }

    /// RCPT TO: the recipient limit, the gateway's acceptance rules, then the rcpt stage; a
    /// refusal is logged.
    pub async fn rcpt(&mut self, recipient: String, params: Vec<EsmtpParam>) -> Answer {
        let answer = self.decide_rcpt(recipient.clone(), params).await;
        let refused = log::Refused {
            command: "RCPT",
            sender: &self.stages.state.envelope.sender,
            recipients: std::slice::from_ref(&recipient),
            answer: &answer,
        };
        log::refused(&self.facts, &refused);
        answer
    }

    async fn decide_rcpt(&mut self, recipient: String, params: Vec<EsmtpParam>) -> Answer {
        if self.stages.state.envelope.recipients.len() >= self.limits().max_recipients {
            return Answer::new(452, (4, 5, 3), "Too many recipients");
        }
        if let Some(refused) = self.unoffered_dsn(&params) {
            return refused;
        }
        let rcpt_dsn = match dsn::rcpt_params(&params) {
            Ok(found) => found,
            Err(e) => return Answer::new(501, (5, 5, 4), &e.to_string()),
        };
        let recipient = if recipient == "postmaster" {
            format!("postmaster@{}", self.gateway.shared.config.server.hostname)
        } else {
            recipient
        };
        let trusted = self.trusted();
        if let Some(refused) = checks::recipient(&self.gateway.shared.users, &recipient, trusted) {
            return self.recipient_refused(refused);
        }
        let config = &self.gateway.shared.config;
        let (mail_root, quota) = (
            config.data_dir().join("mail"),
            config.limits.max_mailbox_bytes_per_user,
        );
        let users = &self.gateway.shared.users;
        if let Some(full) = checks::room(users, &recipient, &mail_root, quota) {
            return self.recipient_refused(full);
        }
        let report = self.stage(StageCall::RcptTo(&recipient, &params)).await;
        if let Some(answer) = refusal(&report) {
            return with_stage(answer, report);
        }
        let envelope = &mut self.stages.state.envelope;
        if !envelope
            .recipients
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&recipient))
        {
            if rcpt_dsn != Default::default() {
                envelope.dsn.recipients.insert(recipient.clone(), rcpt_dsn);
            }
            envelope.recipients.push(recipient.clone());
            self.rcpt_params.push((recipient, params));
        }
        with_stage(Answer::new(250, (2, 1, 5), "Recipient ok"), report)
    }

    /// DSN parameters in a session that was not offered DSN (RFC 5321 §4.1.1.11: 555).
    fn unoffered_dsn(&self, params: &[EsmtpParam]) -> Option<Answer> {
        let used = params.iter().find(|p| dsn::is_dsn_param(&p.name))?;
        if self.facts.offers_dsn() {
            return None;
        }
        let text = format!(
            "{} parameter not supported here: DSN is not offered",
            used.name
        );
        Some(Answer::new(555, (5, 5, 4), &text))
    }

    /// A recipient refused by the gateway's rules: a temporary refusal tells a guesser
    /// nothing and is not counted; after a few permanent ones each further one is answered
    /// more slowly, and after many the session ends.
    fn recipient_refused(&mut self, mut answer: Answer) -> Answer {
        if answer.reply.code < 500 {
            return answer;
        }
        self.rcpt_errors += 1;
        let limits = self.limits();
        if self.rcpt_errors > limits.max_rcpt_errors {
            let mut closing = Answer::new(
                421,
                (4, 7, 0),
                "Too many refused recipients, closing connection",
            );
            closing.close = true;
            return closing;
        }
        let over = self
            .rcpt_errors
            .saturating_sub(limits.rcpt_errors_before_delay);
        if over > 0 {
            let delay = limits
                .rcpt_error_delay_ms
                .saturating_mul(u64::from(over.min(10)));
            answer.delay = Some(Duration::from_millis(delay));
        }
        answer
    }

    /// Mail from our own users, or from a relay network, is trusted: it may relay, and it is
    /// not judged by its domain's records.
    pub(super) fn trusted(&self) -> bool {
        self.facts.auth_user.is_some() || self.gateway.may_relay(self.facts.peer.ip())
    }

    /// The verifier, unless the sender is trusted.
    pub(super) fn verifier(&self) -> Option<&Arc<Verifier>> {
        self.gateway.verifier.as_ref().filter(|_| !self.trusted())
    }

    pub(super) fn auth_envelope(&self) -> crate::sender_auth::Envelope {
        crate::sender_auth::Envelope {
            client_ip: self.facts.peer.ip(),
            helo: self.facts.helo.clone().unwrap_or_default(),
            sender: self.stages.state.envelope.sender.clone(),
        }
    }

    /// SPF runs while the client sends its recipients and message.
    fn start_spf(&mut self) {
        let Some(verifier) = self.verifier().filter(|v| v.checks_spf()).cloned() else {
            return;
        };
        let envelope = self.auth_envelope();
        // The budget of these lookups starts now, not when the message is in.
        let deadline = verifier.deadline();
        self.spf = Some(tokio::spawn(async move {
            verifier.spf(&envelope, deadline).await
        }));
    }
}

/// The answer a refusing verdict carries, if it refuses.
pub(super) fn refusal(report: &StageReport) -> Option<Answer> {
    let reply = report.decision.reply()?.clone();
    let mut answer = Answer::of(reply);
    answer.close = matches!(report.decision, Verdict::Disconnect(_));
    Some(answer)
}

pub(super) fn with_stage(mut answer: Answer, report: StageReport) -> Answer {
    answer.stage = Some(report);
    answer
}
