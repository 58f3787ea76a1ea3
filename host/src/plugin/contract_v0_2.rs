//! Contract 0.2 (0.2.0, and 0.2.1 which adds `auth`): one optional export per stage (the host calls exactly those a component
//! exports), `describe` without a stage list, edits asked for through the `edits` import.

use wasmtime::component::{Instance as ComponentInstance, InstancePre, Resource};
use wasmtime::Store;

use super::bindings::v0_2::{auth, edits, host, stages, types as wit};
use super::host_api::{
    message_resource, shared_conversions, shared_host_functions, Denial, HostState, MessageHandle,
};
use super::info::{ConfigKey, PluginInfo};
use super::services::{DnsFailure, RecordType};
use super::verdict::StageCall;
use super::verdict::{Edit, Verdict};
use super::{Capability, Stage};
use crate::mail::Reply;
use crate::mail::{Delivery, Envelope, EsmtpParam, MailState, Retrieval, Route, Session};
use crate::message::MessageEdit;
use crate::sender_auth as checks;

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

fn wit_denied(d: Denial) -> host::Denied {
    match d {
        Denial::NotDeclared(c) => host::Denied::NotDeclared(c.name().into()),
        Denial::NotGranted(c) => host::Denied::NotGranted(c.name().into()),
        Denial::Failed(reason) => host::Denied::Failed(reason),
    }
}

impl host::Host for HostState {
    shared_host_functions!(host);

    async fn kv_get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, host::Denied>> {
        let kv = match self.kv() {
            Ok(kv) => kv,
            Err(denial) => return Ok(Err(wit_denied(denial))),
        };
        let got = self.until_deadline("kv-get", kv.get(&key), Denial::Failed);
        Ok(got.await.map_err(wit_denied))
    }

    async fn kv_set(
        &mut self,
        key: String,
        value: String,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), host::Denied>> {
        let kv = match self.kv() {
            Ok(kv) => kv,
            Err(denial) => return Ok(Err(wit_denied(denial))),
        };
        let set = kv.set(&key, &value, ttl_seconds);
        Ok(self
            .until_deadline("kv-set", set, Denial::Failed)
            .await
            .map_err(wit_denied))
    }

    async fn kv_delete(&mut self, key: String) -> wasmtime::Result<Result<(), host::Denied>> {
        let kv = match self.kv() {
            Ok(kv) => kv,
            Err(denial) => return Ok(Err(wit_denied(denial))),
        };
        let deleted = self.until_deadline("kv-delete", kv.delete(&key), Denial::Failed);
        Ok(deleted.await.map_err(wit_denied))
    }

    async fn kv_incr(
        &mut self,
        key: String,
        delta: i64,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<i64, host::Denied>> {
        let kv = match self.kv() {
            Ok(kv) => kv,
            Err(denial) => return Ok(Err(wit_denied(denial))),
        };
        let incr = kv.incr(&key, delta, ttl_seconds);
        Ok(self
            .until_deadline("kv-incr", incr, Denial::Failed)
            .await
            .map_err(wit_denied))
    }

    async fn dns_lookup(
        &mut self,
        record_type_: host::RecordType,
        name: String,
    ) -> wasmtime::Result<Result<Vec<String>, host::DnsError>> {
        let record = record_type(record_type_);
        let dns = match self.dns() {
            Ok(dns) => dns,
            Err(denial) => return Ok(Err(host::DnsError::Denied(wit_denied(denial)))),
        };
        let lookup = async {
            dns.lookup(record, &name).await.map_err(|e| match e {
                DnsFailure::NotFound => host::DnsError::NotFound,
                DnsFailure::Temporary(reason) => host::DnsError::Temporary(reason),
            })
        };
        Ok(self
            .until_deadline("dns-lookup", lookup, host::DnsError::Temporary)
            .await)
    }

    async fn file_read(&mut self, path: String) -> wasmtime::Result<Result<Vec<u8>, host::Denied>> {
        let read = match HostState::file_read(self, path) {
            Ok(read) => read,
            Err(denial) => return Ok(Err(wit_denied(denial))),
        };
        Ok(self
            .until_deadline("file-read", read, Denial::Failed)
            .await
            .map_err(wit_denied))
    }
}

impl edits::Host for HostState {
    fn add_header(&mut self, name: String, value: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.edit(Edit::Message(MessageEdit::AddHeader { name, value })))
    }

    fn insert_header(
        &mut self,
        index: u32,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.edit(Edit::Message(MessageEdit::InsertHeader {
            index,
            name,
            value,
        })))
    }

    fn set_header(&mut self, name: String, value: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.edit(Edit::Message(MessageEdit::SetHeader { name, value })))
    }

    fn remove_header(&mut self, name: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.edit(Edit::Message(MessageEdit::RemoveHeader(name))))
    }

    fn replace_body(&mut self, body: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        Ok(self.edit(Edit::Message(MessageEdit::ReplaceBody(body))))
    }

    fn replace_part(
        &mut self,
        id: u32,
        content_type: String,
        content: Vec<u8>,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.edit(Edit::Message(MessageEdit::ReplacePart {
            id,
            content_type,
            content,
        })))
    }

    fn remove_part(&mut self, id: u32) -> wasmtime::Result<Result<(), String>> {
        Ok(self.edit(Edit::Message(MessageEdit::RemovePart(id))))
    }

    fn append_footer(&mut self, text: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.edit(Edit::Message(MessageEdit::AppendFooter(text))))
    }

    fn change_sender(&mut self, address: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.edit(Edit::ChangeSender(address)))
    }

    fn add_recipient(&mut self, address: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.edit(Edit::AddRecipient(address)))
    }

    fn remove_recipient(&mut self, address: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.edit(Edit::RemoveRecipient(address)))
    }

    fn reroute(&mut self, target: wit::HostPort) -> wasmtime::Result<Result<(), String>> {
        let host = if target.host.contains(':') {
            format!("[{}]", target.host)
        } else {
            target.host
        };
        Ok(self.edit(Edit::Reroute(format!("{host}:{}", target.port))))
    }

    fn defer(&mut self, seconds: u32) -> wasmtime::Result<Result<(), String>> {
        Ok(self.edit(Edit::Defer(seconds)))
    }
}

impl wit::Host for HostState {}

message_resource!(super::bindings::v0_2::types);

shared_conversions!(wit, host);

/// Contract 0.2.1: the message's sender authentication results, copied out of the call's.
impl auth::Host for HostState {
    fn spf(&mut self) -> wasmtime::Result<Vec<auth::SpfCheck>> {
        let results = self.call.auth.as_deref();
        Ok(results
            .map(|r| r.spf.iter().map(wit_spf).collect())
            .unwrap_or_default())
    }

    fn dkim(&mut self) -> wasmtime::Result<Vec<auth::DkimCheck>> {
        let results = self.call.auth.as_deref();
        Ok(results
            .and_then(|r| r.dkim.as_ref())
            .map(|checks| checks.iter().map(wit_dkim).collect())
            .unwrap_or_default())
    }

    fn dmarc(&mut self) -> wasmtime::Result<Option<auth::DmarcCheck>> {
        let results = self.call.auth.as_deref();
        Ok(results.and_then(|r| r.dmarc.as_ref()).map(wit_dmarc))
    }

    fn arc(&mut self) -> wasmtime::Result<Option<auth::ArcCheck>> {
        let results = self.call.auth.as_deref();
        Ok(results
            .and_then(|r| r.arc.as_ref())
            .map(|arc| auth::ArcCheck {
                outcome: wit_outcome(arc.outcome),
                sealers: arc.sealers.clone(),
                reason: arc.reason.clone(),
            }))
    }
}

fn wit_outcome(outcome: checks::Outcome) -> auth::Outcome {
    match outcome {
        checks::Outcome::None => auth::Outcome::None,
        checks::Outcome::Pass => auth::Outcome::Pass,
        checks::Outcome::Fail => auth::Outcome::Fail,
        checks::Outcome::Softfail => auth::Outcome::Softfail,
        checks::Outcome::Neutral => auth::Outcome::Neutral,
        checks::Outcome::Temperror => auth::Outcome::Temperror,
        checks::Outcome::Permerror => auth::Outcome::Permerror,
    }
}

fn wit_spf(check: &checks::SpfCheck) -> auth::SpfCheck {
    auth::SpfCheck {
        identity: match check.identity {
            checks::SpfIdentity::MailFrom => auth::SpfIdentity::MailFrom,
            checks::SpfIdentity::Helo => auth::SpfIdentity::Helo,
        },
        outcome: wit_outcome(check.outcome),
        domain: check.domain.clone(),
        subject: check.subject.clone(),
        reason: check.reason.clone(),
    }
}

fn wit_dkim(check: &checks::DkimCheck) -> auth::DkimCheck {
    auth::DkimCheck {
        outcome: wit_outcome(check.outcome),
        domain: check.domain.clone(),
        selector: check.selector.clone(),
        algorithm: check.algorithm.clone(),
        reason: check.reason.clone(),
    }
}

fn wit_dmarc(check: &checks::DmarcCheck) -> auth::DmarcCheck {
    auth::DmarcCheck {
        outcome: wit_outcome(check.outcome),
        domain: check.domain.clone(),
        policy: check.policy.map(|policy| match policy {
            checks::DmarcPolicy::None => auth::DmarcPolicy::None,
            checks::DmarcPolicy::Quarantine => auth::DmarcPolicy::Quarantine,
            checks::DmarcPolicy::Reject => auth::DmarcPolicy::Reject,
        }),
        spf_aligned: check.spf_aligned,
        dkim_aligned: check.dkim_aligned,
        reason: check.reason.clone(),
    }
}
