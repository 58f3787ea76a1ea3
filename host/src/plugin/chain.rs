//! Running the chain for one transaction: plugins in configured order, each plugin's edits
//! validated and applied before the next one runs, the first plugin to decide recorded, and
//! every fault turned into that plugin's failure policy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::contract_v0_1 as v0_1;
use super::contract_v0_2 as v0_2;
use super::engine::Runtime;
use super::external::{Conversation, ExternalFault};
use super::host_api::{PluginLog, TransactionContext};
use super::loader::{instantiate, Live, LiveInstance, PluginSet, OVERRUN_GRACE};
use super::services::Services;
use super::trap::{describe_trap, Fault, TrapKind};
use super::verdict::{Edit, Outcome, Stage, StageCall, Verdict};
use crate::config::FailurePolicy;
use crate::mail::{MailState, Reply};
use crate::message::{apply_message_edits, MessageEdit};
use crate::telemetry::journal::{RunTrace, StageTrace};
use crate::telemetry::metrics;

/// What one plugin did at one stage.
#[derive(Debug, Clone)]
pub struct PluginRun {
    pub plugin: String,
    /// `None` when the plugin faulted.
    pub verdict: Option<Verdict>,
    pub edits: Vec<Edit>,
    pub elapsed: Duration,
    /// Trap, deadline, memory cap or invalid result, with the reason.
    pub fault: Option<String>,
    pub logs: Vec<PluginLog>,
}

/// The result of one stage: the decision and who made it, plus every plugin's run.
#[derive(Debug, Clone)]
pub struct StageReport {
    pub stage: Stage,
    /// `Continue` when no plugin decided.
    pub decision: Verdict,
    pub decided_by: Option<String>,
    pub runs: Vec<PluginRun>,
}

impl StageReport {
    /// The report as the journal keeps it.
    pub fn trace(&self) -> StageTrace {
        StageTrace {
            stage: self.stage.name().to_string(),
            decision: self.decision.name().to_string(),
            decided_by: self.decided_by.clone(),
            runs: self
                .runs
                .iter()
                .map(|run| RunTrace {
                    plugin: run.plugin.clone(),
                    verdict: run
                        .verdict
                        .as_ref()
                        .map_or("fault", |v| v.name())
                        .to_string(),
                    reply: run
                        .verdict
                        .as_ref()
                        .and_then(|v| v.reply())
                        .map(|r| r.to_string()),
                    edits: run.edits.iter().map(Edit::describe).collect(),
                    micros: u64::try_from(run.elapsed.as_micros()).unwrap_or(u64::MAX),
                    fault: run.fault.clone(),
                })
                .collect(),
        }
    }
}

/// Idle instances kept per plugin.
const IDLE_PER_PLUGIN: usize = 32;

/// The chain for one transaction (or one SMTP session).
pub struct Transaction {
    set: Arc<PluginSet>,
    ctx: Arc<TransactionContext>,
    live: Vec<Option<Live>>,
    /// Outside filters' conversations, opened on first use, by member index.
    conversations: Vec<Option<Box<dyn Conversation>>>,
    /// Plugins not run in this transaction (an operator released a message with
    /// `--skip-plugin`).
    skipped: Vec<String>,
}

/// The reply for a plugin fault under the `tempfail` policy.
pub fn fault_tempfail() -> Reply {
    Reply::new(
        451,
        (4, 3, 0),
        "Temporary policy failure, please try again later",
    )
}

fn fault_reject() -> Reply {
    Reply::new(550, (5, 7, 0), "Message refused by policy")
}

impl PluginSet {
    /// Starts the chain for one transaction. Instances are created on first use.
    pub fn transaction(self: &Arc<Self>, session_id: &str, services: Services) -> Transaction {
        Transaction {
            set: self.clone(),
            ctx: Arc::new(TransactionContext::new(session_id.to_string(), services)),
            live: (0..self.plugins.len()).map(|_| None).collect(),
            conversations: (0..self.plugins.len()).map(|_| None).collect(),
            skipped: Vec::new(),
        }
    }
}

impl Transaction {
    /// The generation of the plugin set this transaction runs.
    pub fn generation(&self) -> u64 {
        self.set.generation
    }

    /// Leaves out these plugins at every stage of this transaction.
    pub fn skip(&mut self, plugins: &[String]) {
        self.skipped.extend_from_slice(plugins);
    }

    /// Takes over notes from an earlier chain of the same session (after a reload).
    pub fn carry_notes(&self, notes: std::collections::BTreeMap<String, String>) {
        self.ctx
            .notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(notes);
    }

    /// Carries on the outside filters' conversations of an earlier transaction of the same
    /// session on the same set, so a filter sees one connection per session (a milter gets
    /// the next MAIL on the connection that saw CONNECT and HELO). After a reload the
    /// members are new and their conversations start afresh.
    pub fn take_over(&mut self, earlier: &mut Transaction) {
        if Arc::ptr_eq(&self.set, &earlier.set) {
            for (mine, theirs) in self
                .conversations
                .iter_mut()
                .zip(&mut earlier.conversations)
            {
                if mine.is_none() {
                    *mine = theirs.take();
                }
            }
        }
    }

    /// The notes plugins left in this transaction.
    pub fn notes(&self) -> std::collections::BTreeMap<String, String> {
        self.ctx
            .notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs every plugin that handles this stage, in order, until one decides.
    pub async fn run(&mut self, call: StageCall<'_>, state: &mut MailState) -> StageReport {
        let stage = call.stage();
        let mut report = StageReport {
            stage,
            decision: Verdict::Continue,
            decided_by: None,
            runs: Vec::new(),
        };
        for index in 0..self.set.plugins.len() {
            let plugin = self.set.plugins[index].clone();
            if !plugin.handles(stage) || self.skipped.contains(&plugin.name) {
                continue;
            }
            let started = Instant::now();
            let result = self.call(index, call, state).await;
            let result = result.and_then(|o| apply(&o, state).map(|()| o).map_err(Fault::Invalid));
            let mut run = PluginRun {
                plugin: plugin.name.clone(),
                verdict: None,
                edits: Vec::new(),
                elapsed: started.elapsed(),
                fault: None,
                logs: self.ctx.take_logs(),
            };
            plugin.count_call(result.is_err());
            metrics::plugin_call(&plugin.name, stage.name(), run.elapsed);
            if let Some(fault) = result.as_ref().err().filter(|f| !f.is_known_outage()) {
                metrics::plugin_fault(&plugin.name, fault.kind());
            }
            let decision = match result {
                Ok(outcome) => {
                    run.verdict = Some(outcome.verdict.clone());
                    run.edits = outcome.edits;
                    outcome.verdict
                }
                Err(fault) => {
                    let reason = fault.reason().to_string();
                    if fault.is_known_outage() {
                        tracing::debug!(plugin = plugin.name, %stage, session = self.ctx.session_id, "skipped, down: {reason}");
                    } else {
                        tracing::warn!(plugin = plugin.name, %stage, session = self.ctx.session_id, "plugin fault: {reason}");
                    }
                    run.fault = Some(reason);
                    // A fault in a transaction where a kv operation failed may well be the
                    // store's outage: it must not refuse the mail for good.
                    let store_failed = self.ctx.store_failures() > 0;
                    match plugin.policy {
                        FailurePolicy::Continue => Verdict::Continue,
                        FailurePolicy::Reject if store_failed => {
                            tracing::warn!(plugin = plugin.name, %stage, "plugin fault after a kv store error: tempfail, not the reject of its failure policy");
                            Verdict::Tempfail(fault_tempfail())
                        }
                        FailurePolicy::Tempfail => Verdict::Tempfail(fault_tempfail()),
                        FailurePolicy::Reject => Verdict::Reject(fault_reject()),
                    }
                }
            };
            report.runs.push(run);
            if decision != Verdict::Continue {
                report.decision = decision;
                report.decided_by = Some(plugin.name.clone());
                break;
            }
        }
        if let Some(outcome) = outcome_name(stage, &report.decision) {
            let by = report.decided_by.as_deref().unwrap_or("");
            metrics::message(stage.name(), outcome, by);
        }
        if let Some(by) = &report.decided_by {
            let code = report.decision.reply().map(|r| r.code);
            tracing::info!(
                stage = stage.name(),
                plugin = by,
                verdict = report.decision.name(),
                code,
                "chain decided"
            );
        }
        report
    }

    /// Calls one member at one stage.
    async fn call(
        &mut self,
        index: usize,
        call: StageCall<'_>,
        state: &MailState,
    ) -> Result<Outcome, Fault> {
        match self.set.plugins[index].external() {
            Some(filter) => {
                let filter = filter.clone();
                let conversation = self.conversations[index]
                    .get_or_insert_with(|| filter.open(&self.ctx.session_id));
                let (verdict, edits) =
                    conversation.call(call, state).await.map_err(|f| match f {
                        ExternalFault::Timeout(_, reason) => {
                            Fault::Trap(TrapKind::Deadline, reason)
                        }
                        ExternalFault::Peer(reason) => Fault::Peer(reason),
                        ExternalFault::Down(reason) => Fault::Down(reason),
                    })?;
                Outcome::validated(verdict, edits, call.stage()).map_err(Fault::Invalid)
            }
            None => self.call_component(index, call, state).await,
        }
    }

    /// Calls one component's stage export, instantiating it first if needed.
    async fn call_component(
        &mut self,
        index: usize,
        call: StageCall<'_>,
        state: &MailState,
    ) -> Result<Outcome, Fault> {
        let plugin = self.set.plugins[index].clone();
        if self.live[index].is_none() {
            let live = match plugin.take_idle() {
                Some(mut live) => {
                    live.store.data_mut().tx = self.ctx.clone();
                    live
                }
                None => instantiate(&self.set.runtime, &plugin, &self.ctx).await?,
            };
            self.live[index] = Some(live);
        }
        let Some(live) = self.live[index].as_mut() else {
            return Err(Fault::Trap(TrapKind::Trap, "instance missing".into()));
        };
        let _running = self.set.runtime.running();
        live.store
            .set_epoch_deadline(Runtime::deadline_ticks(plugin.timeout));
        let stage = call.stage();
        let deadline = Instant::now() + plugin.timeout;
        live.store
            .data_mut()
            .begin_call(Some(stage), state.auth.clone(), Some(deadline));
        // Host calls answer by the deadline; this bounds anything else the guest could wait
        // in (a WASI clock sleep, a host call not yet bounded): dropping the call unwinds it.
        let bounded = deadline + OVERRUN_GRACE;
        let result = tokio::time::timeout_at(bounded.into(), call_stage(live, call, state)).await;
        let output = live.store.data_mut().collect_output();
        let memory_hit = live.store.data().memory.hit;
        let refused = live.store.data_mut().call.refused.take();
        let overran = live.store.data_mut().call.overran.take();
        let edits = std::mem::take(&mut live.store.data_mut().call.edits);
        live.store.data_mut().begin_call(None, None, None);
        let late = |what: &str| {
            format!(
                "deadline of {} ms exceeded (waiting in {what})",
                plugin.timeout.as_millis()
            )
        };
        let result = match result {
            Ok(result) => result,
            Err(_) => {
                self.live[index] = None;
                return Err(Fault::Trap(TrapKind::Deadline, late("a host call")));
            }
        };
        if let Some(what) = overran {
            // The guest got an error at the deadline; whatever it did next, the call overran.
            self.live[index] = None;
            return Err(Fault::Trap(TrapKind::Deadline, late(what)));
        }
        match result {
            Ok(_) if refused.is_some() => Err(Fault::Invalid(format!(
                "edit refused: {}",
                refused.unwrap_or_default()
            ))),
            Ok((verdict, returned_edits)) => {
                let edits = if returned_edits.is_empty() {
                    edits
                } else {
                    returned_edits
                };
                Outcome::validated(verdict, edits, stage).map_err(Fault::Invalid)
            }
            Err(e) => {
                // A trapped instance is poisoned: the next stage gets a fresh one.
                self.live[index] = None;
                Err(describe_trap(
                    &e,
                    (plugin.memory_bytes, plugin.timeout),
                    memory_hit,
                    &output,
                ))
            }
        }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        for (plugin, live) in self.set.plugins.iter().zip(self.live.drain(..)) {
            if let Some(mut live) = live {
                live.transactions += 1;
                if live.transactions < plugin.instance_reuse {
                    plugin.put_idle(live, IDLE_PER_PLUGIN);
                }
            }
        }
    }
}

/// Calls the stage through the contract version the plugin implements. Returns the verdict and
/// the edits returned with it (0.1); 0.2 edits arrive as host calls instead.
async fn call_stage(
    live: &mut Live,
    call: StageCall<'_>,
    state: &MailState,
) -> wasmtime::Result<(Verdict, Vec<Edit>)> {
    match &live.instance {
        LiveInstance::V0_1(plugin) => v0_1::call(plugin, &mut live.store, call, state).await,
        LiveInstance::V0_2(instance) => {
            let verdict = v0_2::call(instance, &mut live.store, call, state).await?;
            Ok((verdict, Vec::new()))
        }
    }
}

/// How a stage's decision counts in the message metrics; `None` for a stage passed with no
/// decision before DATA (a recipient let through is not yet a message accepted).
fn outcome_name(stage: Stage, decision: &Verdict) -> Option<&'static str> {
    match decision {
        Verdict::Continue if stage == Stage::Data => Some("accepted"),
        Verdict::Continue => None,
        Verdict::Accept => Some("accepted"),
        Verdict::Reject(_) | Verdict::Disconnect(_) => Some("rejected"),
        Verdict::Tempfail(_) => Some("tempfailed"),
        Verdict::Discard => Some("discarded"),
        Verdict::Quarantine(_) => Some("quarantined"),
        Verdict::Hide => Some("hidden"),
    }
}

/// Applies a validated outcome's edits to the state, all or nothing.
fn apply(outcome: &Outcome, state: &mut MailState) -> Result<(), String> {
    let mut envelope = state.envelope.clone();
    let mut message_edits: Vec<MessageEdit> = Vec::new();
    let (mut reroute, mut defer) = (state.reroute.clone(), state.defer_seconds);
    for edit in &outcome.edits {
        match edit {
            Edit::Message(m) => message_edits.push(m.clone()),
            Edit::ChangeSender(s) => envelope.sender = s.clone(),
            Edit::AddRecipient(r) => {
                if !envelope
                    .recipients
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(r))
                {
                    envelope.recipients.push(r.clone());
                }
            }
            Edit::RemoveRecipient(r) => envelope.recipients.retain(|x| !x.eq_ignore_ascii_case(r)),
            Edit::Reroute(target) => reroute = Some(target.clone()),
            Edit::Defer(seconds) => defer = Some(*seconds),
        }
    }
    let message = match (&state.message, message_edits.is_empty()) {
        (Some(message), false) => apply_message_edits(message, &message_edits)
            .map_err(|e| format!("edit refused: {e}"))?
            .map(Arc::new),
        _ => None,
    };
    state.envelope = envelope;
    state.reroute = reroute;
    state.defer_seconds = defer;
    if let Some(message) = message {
        state.message = Some(message);
    }
    Ok(())
}
