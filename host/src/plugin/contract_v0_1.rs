//! Contract 0.1.0, kept so plugins built against it run unchanged: one `handler` export with
//! every stage, `describe` listing the stages to call, edits returned in the outcome. This
//! module maps those bindings onto the host's own types; nothing else knows 0.1 exists.

use wasmtime::component::Resource;
use wasmtime::Store;

use super::bindings::v0_1::{handler, host, types as wit, Plugin, PluginPre};
use super::host_api::{
    message_resource, shared_conversions, shared_host_functions, Denial, HostState, MessageHandle,
};
use super::info::PluginInfo;
use super::services::{DnsFailure, RecordType};
use super::verdict::StageCall;
use super::verdict::{Edit, Verdict};
use super::{Capability, Stage};
use crate::mail::Reply;
use crate::mail::{Delivery, Envelope, EsmtpParam, MailState, Retrieval, Route, Session};
use crate::message::MessageEdit;

/// A component bound to the 0.1.0 world, ready to instantiate.
pub type Pre = PluginPre<HostState>;
pub use super::bindings::v0_1::Plugin as Instance;

/// The bindings of a component that exports the 0.1.0 `handler`, or the reason it does not.
pub fn bind(instance_pre: wasmtime::component::InstancePre<HostState>) -> Result<Pre, String> {
    PluginPre::new(instance_pre).map_err(|e| format!("{e:#}"))
}

/// What a 0.1.0 plugin says about itself; its stage list decides which stages are called.
pub async fn describe(
    plugin: &Plugin,
    store: &mut Store<HostState>,
) -> wasmtime::Result<PluginInfo> {
    let info = plugin
        .mailgate_plugin_handler()
        .call_describe(store)
        .await?;
    let mut stages: Vec<Stage> = info.stages.into_iter().map(stage).collect();
    stages.sort();
    stages.dedup();
    Ok(PluginInfo {
        name: info.name,
        version: info.version,
        stages,
        capabilities: info
            .capabilities
            .into_iter()
            .map(|c| match c {
                wit::Capability::Kv => Capability::Kv,
                wit::Capability::Dns => Capability::Dns,
            })
            .collect(),
        config: Vec::new(),
        contract: "0.1.0",
    })
}

fn stage(s: wit::Stage) -> Stage {
    match s {
        wit::Stage::Connect => Stage::Connect,
        wit::Stage::Helo => Stage::Helo,
        wit::Stage::MailFrom => Stage::MailFrom,
        wit::Stage::RcptTo => Stage::RcptTo,
        wit::Stage::Data => Stage::Data,
        wit::Stage::Deliver => Stage::Deliver,
        wit::Stage::Retrieve => Stage::Retrieve,
    }
}

/// Calls one stage and converts what comes back (validation is the caller's).
pub async fn call(
    plugin: &Plugin,
    store: &mut Store<HostState>,
    call: StageCall<'_>,
    state: &MailState,
) -> wasmtime::Result<(Verdict, Vec<Edit>)> {
    let handler = plugin.mailgate_plugin_handler();
    let session = wit_session(&state.session);
    let outcome = match call {
        StageCall::Connect => handler.call_connect(&mut *store, &session).await?,
        StageCall::Helo(name) => handler.call_helo(&mut *store, &session, name).await?,
        StageCall::MailFrom(params) => {
            let params = wit_params(params);
            (handler.call_mail_from(&mut *store, &session, &state.envelope.sender, &params)).await?
        }
        StageCall::RcptTo(rcpt, params) => {
            let (envelope, params) = (wit_envelope(&state.envelope), wit_params(params));
            (handler.call_rcpt_to(&mut *store, &session, &envelope, rcpt, &params)).await?
        }
        StageCall::Data | StageCall::Deliver | StageCall::Retrieve => {
            with_message(handler, store, call, state, &session).await?
        }
    };
    Ok((
        from_wit_verdict(outcome.verdict),
        outcome.edits.into_iter().map(edit).collect(),
    ))
}

async fn with_message(
    handler: &handler::Guest,
    store: &mut Store<HostState>,
    call: StageCall<'_>,
    state: &MailState,
    session: &wit::Session,
) -> wasmtime::Result<wit::Outcome> {
    let Some(message) = state.message.clone() else {
        wasmtime::bail!("the host has no message for the {} stage", call.stage());
    };
    let handle = store.data_mut().table.push(MessageHandle(message))?;
    let borrowed = Resource::<MessageHandle>::new_borrow(handle.rep());
    let envelope = wit_envelope(&state.envelope);
    let result = match call {
        StageCall::Data => (handler.call_data(&mut *store, session, &envelope, borrowed)).await,
        StageCall::Deliver => {
            let delivery = wit_delivery(state.delivery.as_ref());
            (handler.call_deliver(&mut *store, &delivery, &envelope, borrowed)).await
        }
        _ => {
            let retrieval = wit_retrieval(session, state.retrieval.as_ref());
            (handler.call_retrieve(&mut *store, &retrieval, borrowed)).await
        }
    };
    store.data_mut().table.delete(handle)?;
    result
}

fn edit(e: wit::Edit) -> Edit {
    use wit::Edit as W;
    match e {
        W::AddHeader(f) => Edit::Message(MessageEdit::AddHeader {
            name: f.name,
            value: f.value,
        }),
        W::InsertHeader(i) => Edit::Message(MessageEdit::InsertHeader {
            index: i.index,
            name: i.field.name,
            value: i.field.value,
        }),
        W::SetHeader(f) => Edit::Message(MessageEdit::SetHeader {
            name: f.name,
            value: f.value,
        }),
        W::RemoveHeader(n) => Edit::Message(MessageEdit::RemoveHeader(n)),
        W::ReplaceBody(b) => Edit::Message(MessageEdit::ReplaceBody(b)),
        W::ReplacePart(p) => Edit::Message(MessageEdit::ReplacePart {
            id: p.id,
            content_type: p.content_type,
            content: p.content,
        }),
        W::RemovePart(id) => Edit::Message(MessageEdit::RemovePart(id)),
        W::AppendFooter(t) => Edit::Message(MessageEdit::AppendFooter(t)),
        W::ChangeSender(s) => Edit::ChangeSender(s),
        W::AddRecipient(r) => Edit::AddRecipient(r),
        W::RemoveRecipient(r) => Edit::RemoveRecipient(r),
        W::Reroute(t) => Edit::Reroute(t),
        W::Defer(s) => Edit::Defer(s),
    }
}

fn wit_delivery(d: Option<&Delivery>) -> wit::Delivery {
    let d = d.cloned().unwrap_or_default();
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

impl host::Host for HostState {
    shared_host_functions!(host);

    async fn kv_get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, String>> {
        let kv = match self.kv() {
            Ok(kv) => kv,
            Err(denial) => return Ok(Err(denial.to_string())),
        };
        let got = self.until_deadline("kv-get", kv.get(&key), Denial::Failed);
        Ok(got.await.map_err(|d| d.to_string()))
    }

    async fn kv_set(
        &mut self,
        key: String,
        value: String,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), String>> {
        let kv = match self.kv() {
            Ok(kv) => kv,
            Err(denial) => return Ok(Err(denial.to_string())),
        };
        let set = kv.set(&key, &value, ttl_seconds);
        let set = self.until_deadline("kv-set", set, Denial::Failed).await;
        Ok(set.map_err(|d| d.to_string()))
    }

    async fn kv_delete(&mut self, key: String) -> wasmtime::Result<Result<(), String>> {
        let kv = match self.kv() {
            Ok(kv) => kv,
            Err(denial) => return Ok(Err(denial.to_string())),
        };
        let deleted = self.until_deadline("kv-delete", kv.delete(&key), Denial::Failed);
        Ok(deleted.await.map_err(|d| d.to_string()))
    }

    async fn dns_lookup(
        &mut self,
        record_type_: host::RecordType,
        name: String,
    ) -> wasmtime::Result<Result<Vec<String>, host::DnsError>> {
        let record = record_type(record_type_);
        let Ok(dns) = self.dns() else {
            return Ok(Err(host::DnsError::Denied));
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
}

impl wit::Host for HostState {}

message_resource!(super::bindings::v0_1::types);

shared_conversions!(wit, host);
