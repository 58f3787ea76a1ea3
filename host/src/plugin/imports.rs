//! The host imports of the newest contract (0.2.1): the one body of every function a plugin
//! can call. Older contracts have none of their own: their bindings convert their types and
//! call these (see `contract_v0_1`), as Spin does for its older worlds.

use wasmtime::component::Resource;

use super::bindings::v0_2::{auth, edits, host, types};
use super::host_api::{Denial, HostState, MessageHandle};
use super::services::{DnsFailure, RecordType};
use super::verdict::Edit;
use super::Capability;
use crate::message::MessageEdit;
use crate::sender_auth as checks;

/// A refusal as the contract says it.
fn denied(d: Denial) -> host::Denied {
    match d {
        Denial::NotDeclared(c) => host::Denied::NotDeclared(c.name().into()),
        Denial::NotGranted(c) => host::Denied::NotGranted(c.name().into()),
        Denial::Failed(reason) => host::Denied::Failed(reason),
    }
}

/// The host's refusal behind the contract's (whose capability names come from [`denied`]).
impl From<host::Denied> for Denial {
    fn from(d: host::Denied) -> Denial {
        let named = |name: String, known: fn(Capability) -> Denial| match Capability::parse(&name) {
            Some(c) => known(c),
            None => Denial::Failed(name),
        };
        match d {
            host::Denied::NotDeclared(name) => named(name, Denial::NotDeclared),
            host::Denied::NotGranted(name) => named(name, Denial::NotGranted),
            host::Denied::Failed(reason) => Denial::Failed(reason),
        }
    }
}

fn level(level: host::Level) -> &'static str {
    match level {
        host::Level::Trace => "trace",
        host::Level::Debug => "debug",
        host::Level::Info => "info",
        host::Level::Warn => "warn",
        host::Level::Error => "error",
    }
}

fn record_type(record_type: host::RecordType) -> RecordType {
    match record_type {
        host::RecordType::A => RecordType::A,
        host::RecordType::Aaaa => RecordType::Aaaa,
        host::RecordType::Mx => RecordType::Mx,
        host::RecordType::Txt => RecordType::Txt,
        host::RecordType::Ptr => RecordType::Ptr,
    }
}

impl host::Host for HostState {
    fn log(
        &mut self,
        level_: host::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        HostState::log(self, level(level_), message, fields);
        Ok(())
    }

    fn config_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(HostState::config_get(self, &key))
    }

    fn config_list(&mut self, key: String) -> wasmtime::Result<Vec<String>> {
        Ok(HostState::config_list(self, &key))
    }

    fn config_json(&mut self) -> wasmtime::Result<String> {
        Ok(HostState::config_json(self))
    }

    fn note_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(HostState::note_get(self, &key))
    }

    fn note_set(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        HostState::note_set(self, key, value);
        Ok(())
    }

    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(HostState::now_ms(self))
    }

    async fn kv_get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, host::Denied>> {
        let kv = match self.kv() {
            Ok(kv) => kv,
            Err(denial) => return Ok(Err(denied(denial))),
        };
        let got = self.until_deadline("kv-get", kv.get(&key), Denial::Failed);
        Ok(got.await.map_err(denied))
    }

    async fn kv_set(
        &mut self,
        key: String,
        value: String,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), host::Denied>> {
        let kv = match self.kv() {
            Ok(kv) => kv,
            Err(denial) => return Ok(Err(denied(denial))),
        };
        let set = kv.set(&key, &value, ttl_seconds);
        let set = self.until_deadline("kv-set", set, Denial::Failed).await;
        Ok(set.map_err(denied))
    }

    async fn kv_delete(&mut self, key: String) -> wasmtime::Result<Result<(), host::Denied>> {
        let kv = match self.kv() {
            Ok(kv) => kv,
            Err(denial) => return Ok(Err(denied(denial))),
        };
        let deleted = self.until_deadline("kv-delete", kv.delete(&key), Denial::Failed);
        Ok(deleted.await.map_err(denied))
    }

    async fn kv_incr(
        &mut self,
        key: String,
        delta: i64,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<i64, host::Denied>> {
        let kv = match self.kv() {
            Ok(kv) => kv,
            Err(denial) => return Ok(Err(denied(denial))),
        };
        let incr = kv.incr(&key, delta, ttl_seconds);
        let incr = self.until_deadline("kv-incr", incr, Denial::Failed).await;
        Ok(incr.map_err(denied))
    }

    async fn dns_lookup(
        &mut self,
        record_type_: host::RecordType,
        name: String,
    ) -> wasmtime::Result<Result<Vec<String>, host::DnsError>> {
        let record = record_type(record_type_);
        let dns = match self.dns() {
            Ok(dns) => dns,
            Err(denial) => return Ok(Err(host::DnsError::Denied(denied(denial)))),
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
            Err(denial) => return Ok(Err(denied(denial))),
        };
        let read = self.until_deadline("file-read", read, Denial::Failed).await;
        Ok(read.map_err(denied))
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

    fn reroute(&mut self, target: types::HostPort) -> wasmtime::Result<Result<(), String>> {
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

impl types::Host for HostState {}

/// The message resource: lazy, read-only views of the host's message.
impl types::HostMessage for HostState {
    fn size(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<u64> {
        Ok(self.message(&this)?.size())
    }

    fn headers(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<types::Header>> {
        let headers = self.message(&this)?.headers();
        Ok(headers.into_iter().map(header).collect())
    }

    fn header(
        &mut self,
        this: Resource<MessageHandle>,
        name: String,
    ) -> wasmtime::Result<Vec<types::Header>> {
        let headers = self.message(&this)?.header(&name);
        Ok(headers.into_iter().map(header).collect())
    }

    fn body(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.message(&this)?.body().to_vec())
    }

    fn body_range(
        &mut self,
        this: Resource<MessageHandle>,
        offset: u64,
        len: u64,
    ) -> wasmtime::Result<Vec<u8>> {
        Ok(self.message(&this)?.body_range(offset, len).to_vec())
    }

    fn parts(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<Vec<types::MimePart>> {
        let message = self.message(&this)?;
        Ok(message.parts().iter().map(part).collect())
    }

    fn part_content(
        &mut self,
        this: Resource<MessageHandle>,
        id: u32,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.message(&this)?.part_content(id))
    }

    fn part_text(
        &mut self,
        this: Resource<MessageHandle>,
        id: u32,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.message(&this)?.part_text(id))
    }

    fn drop(&mut self, this: Resource<MessageHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

fn header(h: crate::message::HeaderField) -> types::Header {
    types::Header {
        name: h.name,
        raw: h.raw,
        decoded: h.decoded,
    }
}

fn part(p: &crate::message::Part) -> types::MimePart {
    types::MimePart {
        id: p.id,
        parent: p.parent,
        content_type: types::ContentType {
            media_type: p.media_type.clone(),
            subtype: p.subtype.clone(),
            params: p.params.clone(),
        },
        disposition: p.disposition.clone(),
        filename: p.filename.clone(),
        transfer_encoding: p.transfer_encoding.clone(),
        size: p.size,
        is_multipart: p.is_multipart,
        is_message: p.is_message,
    }
}

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
