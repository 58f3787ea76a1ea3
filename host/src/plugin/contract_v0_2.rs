//! Contract 0.2 (0.2.0, and 0.2.1 which adds `auth`), the newest: one optional export per stage
//! (the host calls exactly those a component exports), `describe` without a stage list, edits
//! asked for through the `edits` import. This module calls the exports; the imports are in
//! `imports`.

use wasmtime::component::{Instance as ComponentInstance, InstancePre, Resource};
use wasmtime::Store;

use super::bindings::v0_2::{stages, types as wit};
use super::host_api::{HostState, MessageHandle};
use super::info::{ConfigKey, PluginInfo};
use super::verdict::{StageCall, Verdict};
use super::{Capability, Stage};
use crate::mail::Reply;
use crate::mail::{Delivery, Envelope, EsmtpParam, MailState, Retrieval, Route, Session};

/// Where a component's exports are, found once at load.
pub struct Exports {
    plugin: stages::info::GuestIndices,
    connect: Option<stages::connect::GuestIndices>,
    helo: Option<stages::helo::GuestIndices>,
    mail_from: Option<stages::mail_from::GuestIndices>,
    rcpt_to: Option<stages::rcpt_to::GuestIndices>,
    data: Option<stages::data::GuestIndices>,
    deliver: Option<stages::deliver::GuestIndices>,
    retrieve: Option<stages::retrieve::GuestIndices>,
}

/// A live instance's exported functions.
pub struct Instance {
    plugin: stages::info::Guest,
    connect: Option<stages::connect::Guest>,
    helo: Option<stages::helo::Guest>,
    mail_from: Option<stages::mail_from::Guest>,
    rcpt_to: Option<stages::rcpt_to::Guest>,
    data: Option<stages::data::Guest>,
    deliver: Option<stages::deliver::Guest>,
    retrieve: Option<stages::retrieve::Guest>,
}

impl Exports {
    /// The exports of a 0.2 component, or why it is not one (it must export `plugin`).
    pub fn find(pre: &InstancePre<HostState>) -> Result<Exports, String> {
        let plugin = stages::info::GuestIndices::new(pre).map_err(|e| format!("{e:#}"))?;
        Ok(Exports {
            plugin,
            connect: stages::connect::GuestIndices::new(pre).ok(),
            helo: stages::helo::GuestIndices::new(pre).ok(),
            mail_from: stages::mail_from::GuestIndices::new(pre).ok(),
            rcpt_to: stages::rcpt_to::GuestIndices::new(pre).ok(),
            data: stages::data::GuestIndices::new(pre).ok(),
            deliver: stages::deliver::GuestIndices::new(pre).ok(),
            retrieve: stages::retrieve::GuestIndices::new(pre).ok(),
        })
    }

    /// The stages the component exports, in order.
    pub fn stages(&self) -> Vec<Stage> {
        let present = [
            (Stage::Connect, self.connect.is_some()),
            (Stage::Helo, self.helo.is_some()),
            (Stage::MailFrom, self.mail_from.is_some()),
            (Stage::RcptTo, self.rcpt_to.is_some()),
            (Stage::Data, self.data.is_some()),
            (Stage::Deliver, self.deliver.is_some()),
            (Stage::Retrieve, self.retrieve.is_some()),
        ];
        present
            .into_iter()
            .filter(|(_, p)| *p)
            .map(|(s, _)| s)
            .collect()
    }

    /// Looks up (and type-checks) the exported functions in a new instance.
    pub fn load(
        &self,
        store: &mut Store<HostState>,
        instance: &ComponentInstance,
    ) -> wasmtime::Result<Instance> {
        macro_rules! load {
            ($field:ident) => {
                match &self.$field {
                    Some(indices) => Some(indices.load(&mut *store, instance)?),
                    None => None,
                }
            };
        }
        Ok(Instance {
            plugin: self.plugin.load(&mut *store, instance)?,
            connect: load!(connect),
            helo: load!(helo),
            mail_from: load!(mail_from),
            rcpt_to: load!(rcpt_to),
            data: load!(data),
            deliver: load!(deliver),
            retrieve: load!(retrieve),
        })
    }
}

/// What a 0.2 plugin says about itself; unknown capability names and config types refuse it.
pub async fn describe(
    instance: &Instance,
    stages: Vec<Stage>,
    store: &mut Store<HostState>,
) -> wasmtime::Result<Result<PluginInfo, String>> {
    let info = instance.plugin.call_describe(&mut *store).await?;
    let mut capabilities = Vec::new();
    for name in &info.capabilities {
        match Capability::parse(name) {
            Some(c) => capabilities.push(c),
            None => {
                return Ok(Err(format!(
                    "describe asks for capability {name:?}, which this gateway does not know \
                     (known: kv, dns, files)"
                )))
            }
        }
    }
    let mut config = Vec::new();
    for key in info.config {
        match ConfigKey::new(
            key.name,
            &key.value_type,
            key.default,
            key.doc,
            key.required,
        ) {
            Ok(k) => config.push(k),
            Err(why) => return Ok(Err(format!("describe declares config {why}"))),
        }
    }
    Ok(Ok(PluginInfo {
        name: info.name,
        version: info.version,
        stages,
        capabilities,
        config,
        contract: "0.2",
    }))
}

/// Which 0.2.x the component was built against, from the version in its interface names (an
/// 0.2.0 plugin links to this 0.2.1 gateway unchanged).
pub fn contract_version(
    component: &wasmtime::component::Component,
    engine: &wasmtime::Engine,
) -> &'static str {
    let kind = component.component_type();
    let built_for_0_2_1 = kind
        .imports(engine)
        .map(|(name, _)| name)
        .chain(kind.exports(engine).map(|(name, _)| name))
        .any(|name| name.starts_with("mailgate:plugin/") && name.ends_with("@0.2.1"));
    if built_for_0_2_1 {
        "0.2.1"
    } else {
        "0.2.0"
    }
}

/// Calls one stage; the edits arrive through `edits` during the call (in `HostState::call`).
pub async fn call(
    instance: &Instance,
    store: &mut Store<HostState>,
    call: StageCall<'_>,
    state: &MailState,
) -> wasmtime::Result<Verdict> {
    let session = wit_session(&state.session);
    let missing = || wasmtime::format_err!("the plugin does not export the {} stage", call.stage());
    let verdict = match call {
        StageCall::Connect => {
            let guest = instance.connect.as_ref().ok_or_else(missing)?;
            guest.call_handle(&mut *store, &session).await?
        }
        StageCall::Helo(name) => {
            let guest = instance.helo.as_ref().ok_or_else(missing)?;
            guest.call_handle(&mut *store, &session, name).await?
        }
        StageCall::MailFrom(params) => {
            let guest = instance.mail_from.as_ref().ok_or_else(missing)?;
            let params = wit_params(params);
            (guest.call_handle(&mut *store, &session, &state.envelope.sender, &params)).await?
        }
        StageCall::RcptTo(rcpt, params) => {
            let guest = instance.rcpt_to.as_ref().ok_or_else(missing)?;
            let (envelope, params) = (wit_envelope(&state.envelope), wit_params(params));
            (guest.call_handle(&mut *store, &session, &envelope, rcpt, &params)).await?
        }
        StageCall::Data | StageCall::Deliver | StageCall::Retrieve => {
            with_message(instance, store, call, state, &session).await?
        }
    };
    Ok(from_wit_verdict(verdict))
}

async fn with_message(
    instance: &Instance,
    store: &mut Store<HostState>,
    call: StageCall<'_>,
    state: &MailState,
    session: &wit::Session,
) -> wasmtime::Result<wit::Verdict> {
    let Some(message) = state.message.clone() else {
        wasmtime::bail!("the host has no message for the {} stage", call.stage());
    };
    let missing = || wasmtime::format_err!("the plugin does not export the {} stage", call.stage());
    let handle = store.data_mut().table.push(MessageHandle(message))?;
    let borrowed = Resource::<MessageHandle>::new_borrow(handle.rep());
    let envelope = wit_envelope(&state.envelope);
    let result = match call {
        StageCall::Data => match &instance.data {
            Some(guest) => (guest.call_handle(&mut *store, session, &envelope, borrowed)).await,
            None => Err(missing()),
        },
        StageCall::Deliver => match &instance.deliver {
            Some(guest) => {
                let delivery = wit_delivery(state.delivery.as_ref());
                (guest.call_handle(&mut *store, &delivery, &envelope, borrowed)).await
            }
            None => Err(missing()),
        },
        _ => match &instance.retrieve {
            Some(guest) => {
                let retrieval = wit_retrieval(session, state.retrieval.as_ref());
                (guest.call_handle(&mut *store, &retrieval, borrowed)).await
            }
            None => Err(missing()),
        },
    };
    store.data_mut().table.delete(handle)?;
    result
}

/// `host:port` (IPv6 in brackets) as the typed record.
fn host_port(target: &str) -> wit::HostPort {
    let (host, port) = target.rsplit_once(':').unwrap_or((target, "25"));
    wit::HostPort {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: port.parse().unwrap_or(25),
    }
}

fn wit_delivery(d: Option<&Delivery>) -> wit::Delivery {
    let d = d.cloned().unwrap_or_default();
    wit::Delivery {
        queue_id: d.queue_id,
        attempt: d.attempt,
        route: match d.route {
            Route::Local => wit::Route::Local,
            Route::Relay(target) => wit::Route::Relay(host_port(&target)),
            Route::Mx(domain) => wit::Route::Mx(domain),
        },
    }
}

// The records a stage call passes, as this contract spells them. Contract 0.1's are the same
// records, converted from these (see `contract_v0_1`).

pub(super) fn wit_session(s: &Session) -> wit::Session {
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

pub(super) fn wit_params(params: &[EsmtpParam]) -> Vec<wit::EsmtpParam> {
    params
        .iter()
        .map(|p| wit::EsmtpParam {
            name: p.name.clone(),
            value: p.value.clone(),
        })
        .collect()
}

pub(super) fn wit_envelope(e: &Envelope) -> wit::Envelope {
    wit::Envelope {
        sender: e.sender.clone(),
        recipients: e.recipients.clone(),
        params: wit_params(&e.params),
    }
}

pub(super) fn wit_retrieval(session: &wit::Session, r: Option<&Retrieval>) -> wit::Retrieval {
    let r = r.cloned().unwrap_or_default();
    wit::Retrieval {
        session: session.clone(),
        user: r.user,
        folder: r.folder,
        uid: r.uid,
    }
}

fn from_wit_reply(r: wit::Reply) -> Reply {
    Reply {
        code: r.code,
        enhanced: r.enhanced.map(|e| (e.class, e.subject, e.detail)),
        lines: r.lines,
    }
}

pub(super) fn from_wit_verdict(v: wit::Verdict) -> Verdict {
    match v {
        wit::Verdict::Continue => Verdict::Continue,
        wit::Verdict::Accept => Verdict::Accept,
        wit::Verdict::Reject(r) => Verdict::Reject(from_wit_reply(r)),
        wit::Verdict::Tempfail(r) => Verdict::Tempfail(from_wit_reply(r)),
        wit::Verdict::Disconnect(r) => Verdict::Disconnect(from_wit_reply(r)),
        wit::Verdict::Discard => Verdict::Discard,
        wit::Verdict::Quarantine(reason) => Verdict::Quarantine(reason),
        wit::Verdict::Hide => Verdict::Hide,
    }
}
