//! Contract 0.1.0, kept so plugins built against it run unchanged: one `handler` export with
//! every stage, `describe` listing the stages to call, edits returned in the outcome. Nothing
//! here has a body of its own: each import converts its arguments to the newest contract's
//! types, calls that contract's import (`imports`) and converts the answer back, and a stage
//! call's records are built as the newest contract's and converted, as Spin does for its older
//! worlds. Nothing else knows 0.1 exists.

use wasmtime::component::Resource;
use wasmtime::Store;

use super::bindings::v0_1::{handler, host, types as wit, Plugin, PluginPre};
use super::bindings::v0_2::{host as new_host, types as new};
use super::contract_v0_2::{
    from_wit_verdict, wit_envelope, wit_params, wit_retrieval, wit_session,
};
use super::host_api::{Denial, HostState, MessageHandle};
use super::info::PluginInfo;
use super::verdict::{Edit, StageCall, Verdict};
use super::{Capability, Stage};
use crate::mail::{Delivery, MailState, Route};
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
    let session = old_session(wit_session(&state.session));
    let outcome = match call {
        StageCall::Connect => handler.call_connect(&mut *store, &session).await?,
        StageCall::Helo(name) => handler.call_helo(&mut *store, &session, name).await?,
        StageCall::MailFrom(params) => {
            let params = old_params(wit_params(params));
            (handler.call_mail_from(&mut *store, &session, &state.envelope.sender, &params)).await?
        }
        StageCall::RcptTo(rcpt, params) => {
            let envelope = old_envelope(wit_envelope(&state.envelope));
            let params = old_params(wit_params(params));
            (handler.call_rcpt_to(&mut *store, &session, &envelope, rcpt, &params)).await?
        }
        StageCall::Data | StageCall::Deliver | StageCall::Retrieve => {
            with_message(handler, store, call, state, &session).await?
        }
    };
    Ok((
        from_wit_verdict(new_verdict(outcome.verdict)),
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
    let envelope = old_envelope(wit_envelope(&state.envelope));
    let result = match call {
        StageCall::Data => (handler.call_data(&mut *store, session, &envelope, borrowed)).await,
        StageCall::Deliver => {
            let delivery = wit_delivery(state.delivery.as_ref());
            (handler.call_deliver(&mut *store, &delivery, &envelope, borrowed)).await
        }
        _ => {
            let session = wit_session(&state.session);
            let retrieval = old_retrieval(wit_retrieval(&session, state.retrieval.as_ref()));
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

// The records of a stage call, from the newest contract's to 0.1's (the same fields).

fn old_session(s: new::Session) -> wit::Session {
    wit::Session {
        id: s.id,
        peer_ip: s.peer_ip,
        peer_port: s.peer_port,
        listener: s.listener,
        tls: s.tls,
        helo: s.helo,
        auth_user: s.auth_user,
    }
}

fn old_params(params: Vec<new::EsmtpParam>) -> Vec<wit::EsmtpParam> {
    let old = |p: new::EsmtpParam| wit::EsmtpParam {
        name: p.name,
        value: p.value,
    };
    params.into_iter().map(old).collect()
}

fn old_envelope(e: new::Envelope) -> wit::Envelope {
    wit::Envelope {
        sender: e.sender,
        recipients: e.recipients,
        params: old_params(e.params),
    }
}

fn old_retrieval(r: new::Retrieval) -> wit::Retrieval {
    wit::Retrieval {
        session: old_session(r.session),
        user: r.user,
        folder: r.folder,
        uid: r.uid,
    }
}

fn new_verdict(v: wit::Verdict) -> new::Verdict {
    let reply = |r: wit::Reply| new::Reply {
        code: r.code,
        enhanced: r.enhanced.map(|e| new::EnhancedStatus {
            class: e.class,
            subject: e.subject,
            detail: e.detail,
        }),
        lines: r.lines,
    };
    match v {
        wit::Verdict::Continue => new::Verdict::Continue,
        wit::Verdict::Accept => new::Verdict::Accept,
        wit::Verdict::Reject(r) => new::Verdict::Reject(reply(r)),
        wit::Verdict::Tempfail(r) => new::Verdict::Tempfail(reply(r)),
        wit::Verdict::Disconnect(r) => new::Verdict::Disconnect(reply(r)),
        wit::Verdict::Discard => new::Verdict::Discard,
        wit::Verdict::Quarantine(reason) => new::Verdict::Quarantine(reason),
        wit::Verdict::Hide => new::Verdict::Hide,
    }
}

/// The imports: each calls the newest contract's. 0.1 said a kv refusal as text: the text of
/// the host's refusal, which the newest contract's `denied` carries.
impl host::Host for HostState {
    fn log(
        &mut self,
        level: host::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        new_host::Host::log(self, new_level(level), message, fields)
    }

    fn config_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        new_host::Host::config_get(self, key)
    }

    fn config_list(&mut self, key: String) -> wasmtime::Result<Vec<String>> {
        new_host::Host::config_list(self, key)
    }

    fn config_json(&mut self) -> wasmtime::Result<String> {
        new_host::Host::config_json(self)
    }

    fn note_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        new_host::Host::note_get(self, key)
    }

    fn note_set(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        new_host::Host::note_set(self, key, value)
    }

    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        new_host::Host::now_ms(self)
    }

    async fn kv_get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, String>> {
        let got = new_host::Host::kv_get(self, key).await?;
        Ok(got.map_err(denied_text))
    }

    async fn kv_set(
        &mut self,
        key: String,
        value: String,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), String>> {
        let set = new_host::Host::kv_set(self, key, value, ttl_seconds).await?;
        Ok(set.map_err(denied_text))
    }

    async fn kv_delete(&mut self, key: String) -> wasmtime::Result<Result<(), String>> {
        let deleted = new_host::Host::kv_delete(self, key).await?;
        Ok(deleted.map_err(denied_text))
    }

    async fn dns_lookup(
        &mut self,
        record_type: host::RecordType,
        name: String,
    ) -> wasmtime::Result<Result<Vec<String>, host::DnsError>> {
        let found = new_host::Host::dns_lookup(self, new_record_type(record_type), name).await?;
        Ok(found.map_err(|e| match e {
            new_host::DnsError::NotFound => host::DnsError::NotFound,
            new_host::DnsError::Temporary(reason) => host::DnsError::Temporary(reason),
            new_host::DnsError::Denied(_) => host::DnsError::Denied,
        }))
    }
}

fn denied_text(denied: new_host::Denied) -> String {
    Denial::from(denied).to_string()
}

fn new_level(level: host::Level) -> new_host::Level {
    match level {
        host::Level::Trace => new_host::Level::Trace,
        host::Level::Debug => new_host::Level::Debug,
        host::Level::Info => new_host::Level::Info,
        host::Level::Warn => new_host::Level::Warn,
        host::Level::Error => new_host::Level::Error,
    }
}

fn new_record_type(record_type: host::RecordType) -> new_host::RecordType {
    match record_type {
        host::RecordType::A => new_host::RecordType::A,
        host::RecordType::Aaaa => new_host::RecordType::Aaaa,
        host::RecordType::Mx => new_host::RecordType::Mx,
        host::RecordType::Txt => new_host::RecordType::Txt,
        host::RecordType::Ptr => new_host::RecordType::Ptr,
    }
}

impl wit::Host for HostState {}

/// The message resource, the same in both contracts: each accessor calls the newest's.
impl wit::HostMessage for HostState {
    fn size(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<u64> {
        new::HostMessage::size(self, this)
    }

    fn headers(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<wit::Header>> {
        let headers = new::HostMessage::headers(self, this)?;
        Ok(headers.into_iter().map(old_header).collect())
    }

    fn header(
        &mut self,
        this: Resource<MessageHandle>,
        name: String,
    ) -> wasmtime::Result<Vec<wit::Header>> {
        let headers = new::HostMessage::header(self, this, name)?;
        Ok(headers.into_iter().map(old_header).collect())
    }

    fn body(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<u8>> {
        new::HostMessage::body(self, this)
    }

    fn body_range(
        &mut self,
        this: Resource<MessageHandle>,
        offset: u64,
        len: u64,
    ) -> wasmtime::Result<Vec<u8>> {
        new::HostMessage::body_range(self, this, offset, len)
    }

    fn parts(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<wit::MimePart>> {
        let parts = new::HostMessage::parts(self, this)?;
        Ok(parts.into_iter().map(old_part).collect())
    }

    fn part_content(
        &mut self,
        this: Resource<MessageHandle>,
        id: u32,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        new::HostMessage::part_content(self, this, id)
    }

    fn part_text(
        &mut self,
        this: Resource<MessageHandle>,
        id: u32,
    ) -> wasmtime::Result<Option<String>> {
        new::HostMessage::part_text(self, this, id)
    }

    fn drop(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<()> {
        new::HostMessage::drop(self, this)
    }
}

fn old_header(h: new::Header) -> wit::Header {
    wit::Header {
        name: h.name,
        raw: h.raw,
        decoded: h.decoded,
    }
}

fn old_part(p: new::MimePart) -> wit::MimePart {
    wit::MimePart {
        id: p.id,
        parent: p.parent,
        content_type: wit::ContentType {
            media_type: p.content_type.media_type,
            subtype: p.content_type.subtype,
            params: p.content_type.params,
        },
        disposition: p.disposition,
        filename: p.filename,
        transfer_encoding: p.transfer_encoding,
        size: p.size,
        is_multipart: p.is_multipart,
        is_message: p.is_message,
    }
}
