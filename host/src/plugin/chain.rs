//! Running the chain for one transaction: plugins in configured order, each plugin's edits
//! validated and applied before the next one runs, the first plugin to decide recorded, and
//! every fault turned into that plugin's failure policy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Resource;
use wasmtime::{Store, Trap};

use super::bindings::{types as wit, Plugin};
use super::engine::Runtime;
use super::host_api::{HostState, MessageHandle, PluginLog, TransactionContext};
use super::loader::{LoadedPlugin, PluginSet};
use super::services::Services;
use super::verdict::{Edit, Outcome, Reply, Stage, Verdict};
use crate::config::FailurePolicy;
use crate::message::{apply_message_edits, Message, MessageEdit};

/// One client connection, as plugins see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub peer_ip: String,
    pub peer_port: u16,
    pub listener: String,
    pub tls: bool,
    pub helo: Option<String>,
    pub auth_user: Option<String>,
}

impl Session {
    /// A client connection as plugins see it.
    pub fn client(
        id: &str,
        peer: std::net::SocketAddr,
        listener: &str,
        tls: bool,
        helo: Option<String>,
        auth_user: Option<String>,
    ) -> Session {
        Session {
            id: id.to_string(),
            peer_ip: peer.ip().to_string(),
            peer_port: peer.port(),
            listener: listener.to_string(),
            tls,
            helo,
            auth_user,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsmtpParam {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<String>,
    pub params: Vec<EsmtpParam>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Local,
    Relay(String),
    Mx(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub queue_id: String,
    pub attempt: u32,
    pub route: Route,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retrieval {
    pub user: String,
    pub folder: String,
    pub uid: u32,
}

/// What the chain works on and changes: the session, envelope and message, plus the
/// delivery-only outcomes (reroute, defer).
#[derive(Debug, Clone, Default)]
pub struct MailState {
    pub session: Session,
    pub envelope: Envelope,
    pub message: Option<Arc<Message>>,
    pub delivery: Option<Delivery>,
    pub retrieval: Option<Retrieval>,
    pub reroute: Option<String>,
    pub defer_seconds: Option<u32>,
}

/// The stage to run and its stage-specific arguments.
#[derive(Debug, Clone, Copy)]
pub enum StageCall<'a> {
    Connect,
    Helo(&'a str),
    /// The sender is `MailState::envelope.sender`.
    MailFrom(&'a [EsmtpParam]),
    RcptTo(&'a str, &'a [EsmtpParam]),
    Data,
    Deliver,
    Retrieve,
}

impl StageCall<'_> {
    pub fn stage(&self) -> Stage {
        match self {
            StageCall::Connect => Stage::Connect,
            StageCall::Helo(_) => Stage::Helo,
            StageCall::MailFrom(_) => Stage::MailFrom,
            StageCall::RcptTo(..) => Stage::RcptTo,
            StageCall::Data => Stage::Data,
            StageCall::Deliver => Stage::Deliver,
            StageCall::Retrieve => Stage::Retrieve,
        }
    }
}

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

/// A live plugin instance. A transaction keeps it for all its stages; afterwards it goes back
/// to its plugin's idle pool and serves later transactions, up to `runtime.instance-reuse`
/// of them (instantiation costs ~20 us per plugin, a call ~2 us). A trapped one is dropped.
pub(super) struct Live {
    store: Store<HostState>,
    plugin: Plugin,
    transactions: u32,
}

/// Idle instances kept per plugin.
const IDLE_PER_PLUGIN: usize = 32;

/// The chain for one transaction (or one SMTP session).
pub struct Transaction {
    set: Arc<PluginSet>,
    ctx: Arc<TransactionContext>,
    live: Vec<Option<Live>>,
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
        }
    }
}

enum Fault {
    Trap(String),
    Invalid(String),
}

impl Transaction {
    /// The generation of the plugin set this transaction runs.
    pub fn generation(&self) -> u64 {
        self.set.generation
    }

    /// Takes over notes from an earlier chain of the same session (after a reload).
    pub fn carry_notes(&self, notes: std::collections::BTreeMap<String, String>) {
        self.ctx
            .notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(notes);
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
            if !plugin.handles(stage) {
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
            let decision = match result {
                Ok(outcome) => {
                    run.verdict = Some(outcome.verdict.clone());
                    run.edits = outcome.edits;
                    outcome.verdict
                }
                Err(Fault::Trap(reason) | Fault::Invalid(reason)) => {
                    tracing::warn!(plugin = plugin.name, %stage, session = self.ctx.session_id, "plugin fault: {reason}");
                    run.fault = Some(reason);
                    match plugin.policy {
                        FailurePolicy::Continue => Verdict::Continue,
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
        report
    }

    /// Calls one plugin's stage export, instantiating it first if needed.
    async fn call(
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
            return Err(Fault::Trap("instance missing".into()));
        };
        live.store
            .set_epoch_deadline(Runtime::deadline_ticks(plugin.timeout));
        let result = call_stage(live, call, state).await;
        let memory_hit = live.store.data().memory.hit;
        match result {
            Ok(outcome) => Outcome::from_wit(outcome, call.stage()).map_err(Fault::Invalid),
            Err(e) => {
                // A trapped instance is poisoned: the next stage gets a fresh one.
                self.live[index] = None;
                Err(Fault::Trap(describe_trap(&e, &plugin, memory_hit)))
            }
        }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        let reuse = self.set.instance_reuse;
        for (plugin, live) in self.set.plugins.iter().zip(self.live.drain(..)) {
            if let Some(mut live) = live {
                live.transactions += 1;
                if live.transactions < reuse {
                    plugin.put_idle(live, IDLE_PER_PLUGIN);
                }
            }
        }
    }
}

async fn instantiate(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    ctx: &Arc<TransactionContext>,
) -> Result<Live, Fault> {
    let state = HostState::new(plugin.identity.clone(), ctx.clone(), plugin.memory_bytes);
    let mut store = Store::new(&runtime.engine, state);
    store.limiter(|s| &mut s.memory);
    store.set_epoch_deadline(Runtime::deadline_ticks(plugin.timeout));
    match plugin.pre.instantiate_async(&mut store).await {
        Ok(instance) => Ok(Live {
            store,
            plugin: instance,
            transactions: 0,
        }),
        Err(e) => {
            let hit = store.data().memory.hit;
            Err(Fault::Trap(describe_trap(&e, plugin, hit)))
        }
    }
}

fn describe_trap(e: &wasmtime::Error, plugin: &LoadedPlugin, memory_hit: bool) -> String {
    if memory_hit {
        format!("memory cap of {} MiB exceeded", plugin.memory_bytes >> 20)
    } else if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        format!("deadline of {} ms exceeded", plugin.timeout.as_millis())
    } else {
        format!("trap: {e:#}")
    }
}

async fn call_stage(
    live: &mut Live,
    call: StageCall<'_>,
    state: &MailState,
) -> wasmtime::Result<wit::Outcome> {
    let handler = live.plugin.mailgate_plugin_handler();
    let store = &mut live.store;
    let session = wit_session(&state.session);
    match call {
        StageCall::Connect => handler.call_connect(store, &session).await,
        StageCall::Helo(name) => handler.call_helo(store, &session, name).await,
        StageCall::MailFrom(params) => {
            handler
                .call_mail_from(store, &session, &state.envelope.sender, &wit_params(params))
                .await
        }
        StageCall::RcptTo(rcpt, params) => {
            handler
                .call_rcpt_to(
                    store,
                    &session,
                    &wit_envelope(&state.envelope),
                    rcpt,
                    &wit_params(params),
                )
                .await
        }
        StageCall::Data | StageCall::Deliver | StageCall::Retrieve => {
            let Some(message) = state.message.clone() else {
                wasmtime::bail!("the host has no message for the {} stage", call.stage());
            };
            let handle = store.data_mut().table.push(MessageHandle(message))?;
            let borrowed = Resource::<MessageHandle>::new_borrow(handle.rep());
            let envelope = wit_envelope(&state.envelope);
            let result = match call {
                StageCall::Data => {
                    handler
                        .call_data(&mut *store, &session, &envelope, borrowed)
                        .await
                }
                StageCall::Deliver => {
                    let delivery = wit_delivery(state.delivery.as_ref());
                    handler
                        .call_deliver(&mut *store, &delivery, &envelope, borrowed)
                        .await
                }
                _ => {
                    let retrieval = wit_retrieval(&session, state.retrieval.as_ref());
                    handler
                        .call_retrieve(&mut *store, &retrieval, borrowed)
                        .await
                }
            };
            store.data_mut().table.delete(handle)?;
            result
        }
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

fn wit_session(s: &Session) -> wit::Session {
    wit::Session {
        id: s.id.clone(),
        peer_ip: s.peer_ip.clone(),
        peer_port: s.peer_port,
        listener: s.listener.clone(),
        tls: s.tls,
        helo: s.helo.clone(),
        auth_user: s.auth_user.clone(),
    }
}

fn wit_params(params: &[EsmtpParam]) -> Vec<wit::EsmtpParam> {
    params
        .iter()
        .map(|p| wit::EsmtpParam {
            name: p.name.clone(),
            value: p.value.clone(),
        })
        .collect()
}

fn wit_envelope(e: &Envelope) -> wit::Envelope {
    wit::Envelope {
        sender: e.sender.clone(),
        recipients: e.recipients.clone(),
        params: wit_params(&e.params),
    }
}

fn wit_delivery(d: Option<&Delivery>) -> wit::Delivery {
    let d = d.cloned().unwrap_or(Delivery {
        queue_id: String::new(),
        attempt: 1,
        route: Route::Local,
    });
    wit::Delivery {
        queue_id: d.queue_id,
        attempt: d.attempt,
        route: match d.route {
            Route::Local => wit::Route::Local,
            Route::Relay(target) => wit::Route::Relay(target),
            Route::Mx(domain) => wit::Route::Mx(domain),
        },
    }
}

fn wit_retrieval(session: &wit::Session, r: Option<&Retrieval>) -> wit::Retrieval {
    let r = r.cloned().unwrap_or(Retrieval {
        user: String::new(),
        folder: "INBOX".into(),
        uid: 0,
    });
    wit::Retrieval {
        session: session.clone(),
        user: r.user,
        folder: r.folder,
        uid: r.uid,
    }
}
