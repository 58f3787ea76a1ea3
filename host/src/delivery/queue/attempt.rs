//! One delivery attempt of one queued message: its pending recipients grouped by destination,
//! the deliver stage for each group, the transmission, and what the results mean for the
//! message — delivered, bounced, or due again later. At shutdown a group not begun yet is left
//! for the next start, and so is one whose transaction was cut: neither counts as an attempt.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::manager::{now_secs, QueueManager};
use super::quarantine;
use super::spool::{QueuedEnvelope, Spooled};
use super::state::DeliveryState;
use crate::delivery::relay::client::Failure;
use crate::delivery::relay::dsn::{self, Action, FailedRecipient, ReportRecipient};
use crate::delivery::relay::route::Target;
use crate::delivery::relay::transmit::Body;
use crate::mail::{Delivery, Envelope, MailState, Session};
use crate::message::Message;
use crate::plugin::{Edit, Stage, StageCall, Verdict};
use crate::telemetry::{journal, metrics};

/// How one recipient fared in one attempt.
#[derive(Debug, Clone)]
enum Outcome {
    /// The final reply, whether the host took the DSN request on (it offered DSN), and the
    /// host's name.
    Delivered {
        reply: String,
        dsn_passed: bool,
        remote: Option<String>,
    },
    /// Not delivered and not to be retried, without a bounce (discard, removed by a plugin).
    Dropped(String),
    Temporary(Failure),
    Permanent(Failure),
    /// Not tried, or cut, because the server is stopping: due again at the next start.
    Stopped(String),
}

/// What quarantine keeps of a message a deliver-stage plugin set aside for `rcpts`.
fn quarantined_envelope(
    envelope: &QueuedEnvelope,
    rcpts: &[String],
    by: &str,
    reason: &str,
) -> quarantine::Envelope {
    quarantine::Envelope {
        queue_id: envelope.id.clone(),
        sender: envelope.sender.clone(),
        // The spool keeps no ESMTP parameters, only SMTPUTF8 and BINARYMIME (the flags below).
        mail_params: Vec::new(),
        recipients: rcpts
            .iter()
            .map(|address| quarantine::Recipient {
                address: address.clone(),
                params: Vec::new(),
            })
            .collect(),
        client_ip: envelope.client_ip.clone(),
        helo: envelope.helo.clone(),
        auth_user: envelope.auth_user.clone(),
        received_at: envelope.received_at,
        quarantined_at: now_secs(),
        stage: "deliver".into(),
        plugin: by.to_string(),
        reason: reason.to_string(),
        smtputf8: envelope.smtputf8,
        binary: envelope.binary,
    }
}

/// Counts one destination's recipients by how they fared.
fn count_outcomes(destination: &str, outcomes: &[(String, Outcome)]) {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (_, outcome) in outcomes {
        let result = match outcome {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Dropped(_) => "dropped",
            Outcome::Temporary(_) => "deferred",
            Outcome::Permanent(_) => "bounced",
            // Not an attempt of the destination: not counted.
            Outcome::Stopped(_) => continue,
        };
        *counts.entry(result).or_default() += 1;
    }
    for (result, n) in counts {
        metrics::deliveries(result, destination, n);
    }
}

/// Journals one attempt to one destination, per recipient.
fn journal_attempt(id: &str, attempt: u32, destination: &str, outcomes: &[(String, Outcome)]) {
    if !journal::enabled() {
        return;
    }
    let results = outcomes
        .iter()
        .map(|(rcpt, outcome)| {
            let (result, text) = match outcome {
                Outcome::Delivered { reply, .. } => ("delivered", reply.clone()),
                Outcome::Dropped(why) => ("dropped", why.clone()),
                Outcome::Temporary(f) => ("deferred", f.text.clone()),
                Outcome::Permanent(f) => ("bounced", f.text.clone()),
                Outcome::Stopped(why) => ("stopped", why.clone()),
            };
            journal::RecipientResult {
                rcpt: rcpt.clone(),
                result: result.into(),
                text,
            }
        })
        .collect();
    let event = journal::Event::Attempt {
        attempt,
        destination: destination.to_string(),
        results,
    };
    journal::record("", 0, id, event);
}

/// The delivery line of each recipient of one attempt to one destination, in the shape
/// pflogsumm-style reports read: recipient, relay, delay since acceptance, DSN status and
/// result, with the remote's reply or the reason. Target `mailgate::delivery`, logged by
/// default; a bounce is a warning.
fn log_results(id: &str, destination: &str, received_at: u64, outcomes: &[(String, Outcome)]) {
    let delay = now_secs().saturating_sub(received_at);
    for (rcpt, outcome) in outcomes {
        let (status, dsn, relay, text) = match outcome {
            Outcome::Delivered { reply, .. } => {
                let dsn = dsn::enhanced_code(reply).unwrap_or_else(|| "2.0.0".into());
                ("sent", dsn, destination, reply.as_str())
            }
            Outcome::Dropped(why) => ("dropped", "2.0.0".into(), destination, why.as_str()),
            Outcome::Temporary(f) => (
                "deferred",
                failure_code(f, "4.0.0"),
                relay_of(f, destination),
                f.text.as_str(),
            ),
            Outcome::Permanent(f) => (
                "bounced",
                failure_code(f, "5.0.0"),
                relay_of(f, destination),
                f.text.as_str(),
            ),
            // Not an attempt: `record` says it is left for the next start.
            Outcome::Stopped(_) => continue,
        };
        if status == "bounced" {
            tracing::warn!(target: "mailgate::delivery", queue_id = id, to = rcpt, relay, delay, dsn, status, "to=<{rcpt}>, relay={relay}, delay={delay}, dsn={dsn}, status={status} ({text})");
        } else {
            tracing::info!(target: "mailgate::delivery", queue_id = id, to = rcpt, relay, delay, dsn, status, "to=<{rcpt}>, relay={relay}, delay={delay}, dsn={dsn}, status={status} ({text})");
        }
    }
}

/// The enhanced code of a failure's reply or text, else `fallback`.
fn failure_code(failure: &Failure, fallback: &str) -> String {
    failure
        .reply
        .as_deref()
        .and_then(dsn::enhanced_code)
        .unwrap_or_else(|| fallback.to_string())
}

/// The host that answered, else the destination.
fn relay_of<'a>(failure: &'a Failure, destination: &'a str) -> &'a str {
    failure.remote.as_deref().unwrap_or(destination)
}

/// A recipient that asked for success and went to `remote`, a host that does not offer DSN.
fn relayed_recipient(
    rcpt: String,
    (reply, remote): (String, Option<String>),
    original: Option<crate::mail::dsn::Orcpt>,
    now: u64,
) -> ReportRecipient {
    let status = dsn::enhanced_code(&reply).unwrap_or_else(|| "2.0.0".into());
    ReportRecipient {
        address: rcpt,
        original,
        action: Action::Relayed,
        status,
        reason: "relayed to a mail system that does not report delivery".into(),
        reply: (!reply.is_empty()).then_some(reply),
        remote,
        last_attempt: Some(now),
        will_retry_until: None,
    }
}

/// How a message left the relay queue: delivered, dropped, expired or bounced.
fn queue_exit(failed: &[FailedRecipient], dropped: usize) -> &'static str {
    match failed {
        [] if dropped == 0 => "delivered",
        [] => "dropped",
        _ if failed.iter().any(|f| f.expired) => "expired",
        _ => "bounced",
    }
}

/// Why a recipient was put off (`metrics::words::DEFERRALS`): the remote's 4xx reply, a
/// deliver-stage plugin, or a connection that failed before or during the transaction.
fn deferral_reason(failure: &Failure) -> &'static str {
    if failure.reply.is_some() {
        "remote-reply"
    } else if failure.by_plugin {
        "plugin"
    } else {
        "connection"
    }
}

/// Journals the end of a message in the relay queue: nothing pending any more.
fn journal_done(id: &str, failed: &[FailedRecipient], dropped: usize) {
    let outcome = queue_exit(failed, dropped);
    let detail = match outcome {
        "delivered" => String::new(),
        "dropped" => format!("{dropped} recipient(s) not delivered on purpose"),
        "expired" => format!("{} recipient(s) bounced", failed.len()),
        _ => format!("{} recipient(s) failed", failed.len()),
    };
    let event = journal::Event::Disposition {
        outcome: outcome.into(),
        detail,
    };
    journal::record("", 0, id, event);
}

impl QueueManager {
    /// One delivery attempt of one message, all its pending recipients, in a span carrying
    /// the queue id (every log line of the attempt has it).
    pub(super) async fn attempt(&self, id: &str) {
        use tracing::Instrument;
        let span = tracing::info_span!("delivery", queue_id = id);
        self.attempt_in_span(id).instrument(span).await
    }

    async fn attempt_in_span(&self, id: &str) {
        let Some(kept) = self.begin(id) else {
            return;
        };
        let files = &self.inner.files;
        let (spooled, mut state) = match kept {
            Some(kept) => kept,
            None => match crate::sys::blocking::run(|| files.spool.load(id)) {
                Ok(s) => (s, crate::sys::blocking::run(|| files.state(id))),
                Err(e) => {
                    tracing::warn!(queue_id = id, "queued message unreadable or gone: {e}");
                    self.schedule().entries.remove(id);
                    return;
                }
            },
        };
        let pending = state.pending(&spooled.envelope).to_vec();
        let attempt = state.attempts + 1;
        let message = Arc::new(Message::new(spooled.message.clone()));
        let mut groups: BTreeMap<String, (Target, Vec<String>)> = BTreeMap::new();
        for rcpt in pending {
            let target = self.inner.router.target(&rcpt);
            groups
                .entry(target.key())
                .or_insert_with(|| (target, Vec::new()))
                .1
                .push(rcpt);
        }
        let mut outcomes: Vec<(String, Outcome)> = Vec::new();
        let mut defer = 0u64;
        for (destination, (target, rcpts)) in groups {
            let (results, deferred) = self
                .deliver_group(&spooled, &message, target, &rcpts, attempt)
                .await;
            defer = defer.max(deferred);
            count_outcomes(&destination, &results);
            log_results(id, &destination, spooled.envelope.received_at, &results);
            journal_attempt(id, attempt, &destination, &results);
            outcomes.extend(results);
        }
        self.record(&spooled, &mut state, outcomes, defer).await;
    }

    /// The DKIM-Signature fields for `raw`, if a key applies. Quick keys (Ed25519, ~50 us;
    /// RSA up to 2048 bits, ~0.3 ms) sign in place: handing 0.3 ms of work to another thread
    /// cost more than it spared (`SIGN=rsa-sha256 cargo xtask bench relay`: 815 against 878 us
    /// of CPU per message). Larger RSA keys (2 ms for 4096 bits) leave the worker
    /// (`blocking::run`).
    fn sign(&self, raw: &[u8]) -> Option<Result<String, String>> {
        let signers = &self.inner.signers;
        if signers.all_quick() {
            signers.sign(raw)
        } else {
            crate::sys::blocking::run(|| signers.sign(raw))
        }
    }

    /// Runs the deliver stage for one destination's recipients, then sends them.
    async fn deliver_group(
        &self,
        spooled: &Spooled,
        message: &Arc<Message>,
        target: Target,
        rcpts: &[String],
        attempt: u32,
    ) -> (Vec<(String, Outcome)>, u64) {
        let envelope = &spooled.envelope;
        let all = |outcome: Outcome| rcpts.iter().map(|r| (r.clone(), outcome.clone())).collect();
        // Stopping: the next destination (and its deliver stage) waits for the next start.
        if self.inner.deadline.is_draining() {
            return (
                all(Outcome::Stopped(
                    "not started: the server is stopping".into(),
                )),
                0,
            );
        }
        let mut mail = MailState {
            session: Session {
                id: envelope.id.clone(),
                peer_ip: envelope.client_ip.clone(),
                peer_port: 0,
                listener: "queue".into(),
                tls: false,
                helo: Some(envelope.helo.clone()),
                auth_user: envelope.auth_user.clone(),
            },
            envelope: Envelope {
                sender: envelope.sender.clone(),
                recipients: rcpts.to_vec(),
                params: Vec::new(),
                dsn: envelope.dsn.clone(),
            },
            message: Some(message.clone()),
            delivery: Some(Delivery {
                queue_id: envelope.id.clone(),
                attempt,
                route: target.route.clone(),
            }),
            ..MailState::default()
        };
        let plugins = self.inner.plugins.current();
        if plugins.handles(Stage::Deliver) {
            let mut chain = plugins.transaction(&envelope.id, self.inner.services.clone());
            chain.skip(&envelope.skip_plugins);
            let report = chain.run(StageCall::Deliver, &mut mail).await;
            if journal::enabled() {
                let stage = report.trace();
                journal::record("", 0, &envelope.id, journal::Event::Deliver { stage });
            }
            // Who decided, or (for a reroute or defer, which are edits) who asked for it.
            let by = report.decided_by.clone().unwrap_or_else(|| {
                report
                    .runs
                    .iter()
                    .rev()
                    .find(|r| {
                        r.edits
                            .iter()
                            .any(|e| matches!(e, Edit::Defer(_) | Edit::Reroute(_)))
                    })
                    .map(|r| r.plugin.clone())
                    .unwrap_or_default()
            });
            match report.decision {
                Verdict::Continue | Verdict::Accept => {}
                Verdict::Reject(reply) => {
                    let reply = reply.to_string();
                    return (
                        all(Outcome::Permanent(Failure {
                            reply: Some(reply.clone()),
                            ..Failure::permanent(format!("refused by plugin {by}: {reply}"))
                        })),
                        0,
                    );
                }
                Verdict::Tempfail(reply) | Verdict::Disconnect(reply) => {
                    return (
                        all(Outcome::Temporary(Failure::by_plugin(format!(
                            "deferred by plugin {by}: {reply}"
                        )))),
                        0,
                    );
                }
                Verdict::Discard => {
                    return (
                        all(Outcome::Dropped(format!("discarded by plugin {by}"))),
                        0,
                    );
                }
                Verdict::Quarantine(reason) => {
                    let raw = mail
                        .message
                        .as_ref()
                        .map_or(&spooled.message[..], |m| m.raw());
                    let kept = quarantined_envelope(envelope, rcpts, &by, &reason);
                    let kept = crate::sys::blocking::run(|| {
                        quarantine::keep(&self.inner.quarantine_dir, &kept, raw)
                    });
                    return match kept {
                        Ok(_) => (
                            all(Outcome::Dropped(format!(
                                "quarantined by plugin {by}: {reason}"
                            ))),
                            0,
                        ),
                        Err(e) => (
                            all(Outcome::Temporary(Failure::temporary(format!(
                                "quarantine: {e}"
                            )))),
                            0,
                        ),
                    };
                }
                Verdict::Hide => {}
            }
            if let Some(seconds) = mail.defer_seconds {
                let failure =
                    Failure::by_plugin(format!("deferred by plugin {by} for {seconds} s"));
                return (all(Outcome::Temporary(failure)), u64::from(seconds));
            }
        }
        let target = match &mail.reroute {
            Some(host) => Target::reroute(host),
            None => target,
        };
        let sent_to: Vec<String> = mail.envelope.recipients.clone();
        let raw = mail
            .message
            .as_ref()
            .map_or(&spooled.message[..], |m| m.raw());
        // Signed last, so that the signature covers exactly what is sent.
        let signed = match self.sign(raw) {
            None => None,
            Some(Ok(field)) => Some([field.as_bytes(), raw].concat()),
            Some(Err(e)) => return (all(Outcome::Temporary(Failure::temporary(e))), 0),
        };
        let raw = signed.as_deref().unwrap_or(raw);
        let sent = self
            .inner
            .transmitter
            .transmit(
                &target,
                (&mail.envelope.sender, &sent_to),
                raw,
                Body {
                    smtputf8: envelope.smtputf8,
                    binary: envelope.binary,
                },
                &envelope.dsn,
            )
            .await;
        let results = &sent.results;
        let mut outcomes = Vec::new();
        for rcpt in rcpts {
            let outcome = match sent_to.iter().position(|r| r.eq_ignore_ascii_case(rcpt)) {
                None => Outcome::Dropped("removed by a deliver-stage plugin".into()),
                Some(i) => match &results[i] {
                    Ok(reply) => Outcome::Delivered {
                        reply: reply.clone(),
                        dsn_passed: sent.dsn_passed,
                        remote: sent.remote.clone(),
                    },
                    Err(f) if f.stopped => Outcome::Stopped(f.text.clone()),
                    Err(f) if f.permanent => Outcome::Permanent(f.clone()),
                    Err(f) => Outcome::Temporary(f.clone()),
                },
            };
            outcomes.push((rcpt.clone(), outcome));
        }
        (outcomes, 0)
    }

    /// Applies one attempt's outcomes: bounces what failed for good (durably, before the
    /// message goes), then removes the message or schedules the next attempt. Recipients left
    /// by a shutdown stay pending, due at the next start; when that is all of them, nothing
    /// was attempted and the message's state stays as it was.
    async fn record(
        &self,
        spooled: &Spooled,
        state: &mut DeliveryState,
        outcomes: Vec<(String, Outcome)>,
        defer: u64,
    ) {
        let envelope = &spooled.envelope;
        let id = envelope.id.as_str();
        let now = now_secs();
        let waited = Duration::from_secs(now.saturating_sub(envelope.received_at));
        let mut pending = Vec::new();
        let mut failed = Vec::new();
        let mut errors = Vec::new();
        let mut dropped = 0usize;
        let mut stopped = Vec::new();
        let mut relayed = Vec::new();
        let total = outcomes.len();
        for (rcpt, outcome) in outcomes {
            match outcome {
                Outcome::Stopped(why) => {
                    tracing::info!(queue_id = id, rcpt, "left for the next start: {why}");
                    stopped.push(rcpt);
                }
                Outcome::Delivered {
                    reply,
                    dsn_passed,
                    remote,
                } => {
                    metrics::delivered_after("relay", waited);
                    let dsn = envelope.dsn.recipient(&rcpt);
                    if !dsn_passed && dsn.wants_success() {
                        relayed.push(relayed_recipient(rcpt, (reply, remote), dsn.orcpt, now));
                    }
                }
                Outcome::Dropped(_) => dropped += 1,
                Outcome::Permanent(f) => {
                    failed.push(FailedRecipient {
                        address: rcpt,
                        reason: f.text,
                        reply: f.reply,
                        remote: f.remote,
                        expired: false,
                    });
                }
                Outcome::Temporary(f) => {
                    metrics::deferrals(deferral_reason(&f), 1);
                    if !errors.contains(&f.text) {
                        errors.push(f.text.clone());
                    }
                    pending.push((rcpt, f));
                }
            }
        }
        if total > 0 && stopped.len() == total {
            self.leave_for_next_start(id);
            return;
        }
        state.attempts += 1;
        let expired =
            now.saturating_sub(envelope.received_at) >= self.inner.config.queue.max_age.as_secs();
        if expired && !pending.is_empty() {
            for (rcpt, f) in pending.drain(..) {
                tracing::warn!(queue_id = id, rcpt, "expired in the queue: {}", f.text);
                failed.push(FailedRecipient {
                    address: rcpt,
                    reason: format!("delivery time expired; last error: {}", f.text),
                    reply: f.reply,
                    remote: f.remote,
                    expired: true,
                });
            }
        }
        self.report(spooled, &failed, &relayed).await;
        if !pending.is_empty() {
            self.delay_report(spooled, state, &pending).await;
        }
        let files = &self.inner.files;
        if pending.is_empty() && stopped.is_empty() {
            metrics::left_queue(queue_exit(&failed, dropped), waited);
            journal_done(id, &failed, dropped);
            if let Err(e) = files.retire(id, spooled.message.len()) {
                tracing::error!(queue_id = id, "cannot remove the delivered message: {e}");
            }
            self.schedule().entries.remove(id);
            return;
        }
        let wait = self
            .inner
            .config
            .queue
            .retry_after(state.attempts)
            .as_secs()
            .max(defer);
        metrics::delivery_retry();
        // Recipients left by a shutdown are due at once at the next start.
        let due = if stopped.is_empty() { now + wait } else { now };
        let mut left: Vec<String> = pending.into_iter().map(|(r, _)| r).collect();
        left.extend(stopped);
        state.pending = Some(left);
        if !errors.is_empty() {
            state.last_error = Some(errors.join("; "));
        }
        state.next_attempt = due;
        // The state file is written (two fsyncs) outside the schedule lock, which SMTP sessions
        // take too; the entry stays `running` meanwhile, so a retry asked for now is not lost.
        let held = self.schedule().entries.get(id).map(|entry| entry.held);
        let Some(held) = held else {
            // Deleted while the attempt ran.
            let _ = files.remove(id);
            return;
        };
        state.held = held;
        let save = |state: &DeliveryState| {
            if let Err(e) = crate::sys::blocking::run(|| files.save(id, state)) {
                tracing::error!(queue_id = id, "cannot save the queue state: {e}");
            }
        };
        save(state);
        let mut schedule = self.schedule();
        let Some(entry) = schedule.entries.get_mut(id) else {
            drop(schedule);
            let _ = files.remove(id);
            return;
        };
        entry.running = false;
        entry.attempted = true;
        let (held_now, again) = (entry.held, entry.again);
        let at = if again { now } else { state.next_attempt };
        schedule.plan(id, at, now);
        drop(schedule);
        if held_now != held {
            // Held or released while the file was being written: write what holds now.
            state.held = held_now;
            save(state);
        }
        self.inner.wake.notify_one();
    }

    /// The failure report for the recipients that want one, and the relayed report for those
    /// that asked for success but went to a host that will not report it.
    async fn report(
        &self,
        spooled: &Spooled,
        failed: &[FailedRecipient],
        relayed: &[ReportRecipient],
    ) {
        let hostname = &self.inner.config.server.hostname;
        let queue = (&self.inner.files.spool, &self.inner.resubmit);
        let dsn = &spooled.envelope.dsn;
        let now = now_secs();
        let bounced: Vec<ReportRecipient> = failed
            .iter()
            .filter_map(|f| {
                let wanted = dsn.recipient(&f.address);
                wanted.wants_failure().then(|| f.report(wanted.orcpt, now))
            })
            .collect();
        if bounced.len() < failed.len() {
            tracing::info!(
                queue_id = spooled.envelope.id,
                "{} failed recipient(s) asked for no failure report",
                failed.len() - bounced.len()
            );
        }
        super::bounce::queue_bounce(queue, hostname, spooled, &bounced).await;
        super::bounce::queue_notice(queue, hostname, spooled, relayed).await;
    }

    /// Once per message, when it has waited `[queue] delay-notice-after`: a delay report for
    /// the recipients still pending that asked for one (or did not say).
    async fn delay_report(
        &self,
        spooled: &Spooled,
        state: &mut DeliveryState,
        pending: &[(String, Failure)],
    ) {
        let after = self.inner.config.queue.delay_notice_after.as_secs();
        let now = now_secs();
        let waited = now.saturating_sub(spooled.envelope.received_at);
        if after == 0 || waited < after || state.delay_notified {
            return;
        }
        state.delay_notified = true;
        let dsn = &spooled.envelope.dsn;
        let max_age = self.inner.config.queue.max_age.as_secs();
        let retry_until = spooled.envelope.received_at.saturating_add(max_age);
        let delayed: Vec<ReportRecipient> = pending
            .iter()
            .filter_map(|(rcpt, failure)| {
                let wanted = dsn.recipient(rcpt);
                wanted.wants_delay().then(|| ReportRecipient {
                    address: rcpt.clone(),
                    original: wanted.orcpt,
                    action: Action::Delayed,
                    status: failure_code(failure, "4.0.0"),
                    reason: failure.text.clone(),
                    reply: failure.reply.clone(),
                    remote: failure.remote.clone(),
                    last_attempt: Some(now),
                    will_retry_until: Some(retry_until),
                })
            })
            .collect();
        let hostname = &self.inner.config.server.hostname;
        let queue = (&self.inner.files.spool, &self.inner.resubmit);
        super::bounce::queue_notice(queue, hostname, spooled, &delayed).await;
    }

    /// Ends an attempt the shutdown kept from reaching any destination: no file changes, the
    /// entry is no longer running (nothing will start it before the process stops).
    fn leave_for_next_start(&self, id: &str) {
        if let Some(entry) = self.schedule().entries.get_mut(id) {
            entry.running = false;
        }
    }
}
