//! One API request as the methods see it: who asks, under which plugins, what it created so
//! far; the dispatch of method calls to the handlers, and the `/set` and `/import` methods
//! that change the store and report the new states.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::account::Account;
use super::api::{MethodError, CORE, MAIL, SUBMISSION};
use super::budget::{self, Budget};
use super::methods::{Call, IDENTITY};
use super::{compose, email, mailbox, query, BlobFault, Caller, Jmap};
use crate::plugin::PluginSet;

/// One API request's view: who asks, under which plugins, what it created so far.
pub(super) struct Context<'a> {
    pub(super) jmap: &'a Jmap,
    pub(super) plugins: Arc<PluginSet>,
    pub(super) caller: &'a Caller<'a>,
    pub(super) account_id: String,
    pub(super) using: Vec<String>,
    /// Creation id -> the id it got.
    pub(super) created: HashMap<String, String>,
}

pub(super) type Answers = Vec<(String, Value)>;

/// The capability a method belongs to.
fn capability_of(method: &str) -> Option<&'static str> {
    match method.split('/').next()? {
        "Core" => Some(CORE),
        "Mailbox" | "Email" | "Thread" => Some(MAIL),
        "Identity" | "EmailSubmission" => Some(SUBMISSION),
        _ => None,
    }
}

impl Context<'_> {
    pub(super) async fn refresh(&self, account: &mut Account) -> std::io::Result<()> {
        let done = account
            .refresh(
                &self.plugins,
                &self.jmap.shared.services,
                &self.caller.session,
            )
            .await;
        if let Err(e) = &done {
            tracing::warn!(user = account.user, "JMAP: cannot read the Maildir: {e}");
        }
        done
    }

    /// Runs one method call. The account is locked for the call, except by the reads that may
    /// parse messages (Email/query, Email/get, Mailbox/get, Thread/get), which take a snapshot
    /// and run without the lock, within the request's work budget (see their modules).
    pub(super) async fn dispatch(
        &mut self,
        account: &tokio::sync::Mutex<Account>,
        name: &str,
        args: Map<String, Value>,
        budget: &Budget,
    ) -> Result<Answers, MethodError> {
        let unknown = || MethodError::with("unknownMethod", format!("{name} is not a method here"));
        let capability = capability_of(name).ok_or_else(unknown)?;
        if !self.using.iter().any(|u| u == capability) {
            return Err(MethodError::with(
                "unknownMethod",
                format!("{name} needs {capability} in \"using\""),
            ));
        }
        if name == "Core/echo" {
            return Ok(vec![(name.to_string(), Value::Object(args))]);
        }
        match args.get("accountId").and_then(Value::as_str) {
            Some(id) if id == self.account_id => {}
            Some(_) => return Err(MethodError::new("accountNotFound")),
            None => return Err(MethodError::invalid_arguments("accountId is required")),
        }
        let account_id = self.account_id.clone();
        let call = Call {
            args,
            account_id: &account_id,
            limits: &self.jmap.limits,
            budget,
        };
        // Reads that parse messages run without the account's lock (see their modules).
        if name == "Email/query" {
            return Ok(vec![(name.to_string(), query::run(account, &call).await?)]);
        }
        let unlocked = match name {
            "Email/get" => Some(email::get(account, &call).await?),
            "Mailbox/get" => Some(mailbox::get(account, &call).await?),
            "Thread/get" => Some(email::thread_get(account, &call).await?),
            _ => None,
        };
        if name == "EmailSubmission/set" {
            // Locks the account for one object at a time, as Email/set does.
            self.check_set_size(&call)?;
            return self.submission_set(account, &call).await;
        }
        if name == "Email/set" {
            // Locks the account for one object at a time.
            return Ok(vec![(
                name.to_string(),
                self.email_set(account, &call).await?,
            )]);
        }
        if name == "Email/import" {
            // Takes the account's lock itself, and leaves it while the files are written.
            return Ok(vec![(
                name.to_string(),
                self.email_import(account, &call).await?,
            )]);
        }
        if let Some(answer) = unlocked {
            return Ok(vec![(name.to_string(), answer)]);
        }
        let mut account = account.lock().await;
        let account = &mut *account;
        let answer = match name {
            "Mailbox/changes" => mailbox::changes(account, &call)?,
            "Mailbox/query" => mailbox::query(account, &call)?,
            "Mailbox/set" => self.mailbox_set(account, &call).await?,
            "Email/changes" => email::changes(account, &call)?,
            "Identity/get" => identity_get(account, &call),
            _ => return Err(unknown()),
        };
        Ok(vec![(name.to_string(), answer)])
    }

    /// `ifInState` of a `/set`: the state must still be the one the client saw.
    pub(super) fn check_state(call: &Call, state: &str) -> Result<(), MethodError> {
        match call.args.get("ifInState").and_then(Value::as_str) {
            Some(expected) if expected != state => Err(MethodError::new("stateMismatch")),
            _ => Ok(()),
        }
    }

    fn check_set_size(&self, call: &Call) -> Result<(), MethodError> {
        let count = ["create", "update"]
            .iter()
            .filter_map(|k| call.args.get(*k).and_then(Value::as_object).map(Map::len))
            .sum::<usize>()
            + call
                .args
                .get("destroy")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
        if count > self.jmap.limits.max_objects_in_set {
            return Err(MethodError::limit(
                "requestTooLarge",
                "maxObjectsInSet",
                format!(
                    "{count} objects; at most {} in one call",
                    self.jmap.limits.max_objects_in_set
                ),
            ));
        }
        Ok(())
    }

    async fn mailbox_set(
        &mut self,
        account: &mut Account,
        call: &Call<'_>,
    ) -> Result<Value, MethodError> {
        self.check_set_size(call)?;
        // A request whose work or time is spent makes no more changes (nor looks again).
        call.budget.work.add(0)?;
        let old_state = account.mailbox_states.state();
        Context::check_state(call, &old_state)?;
        let max_folders = self.jmap.shared.config.limits.max_folders_per_user;
        let outcome = mailbox::set(account, call, &mut self.created, max_folders)?;
        let changed = !(outcome.created.is_empty()
            && outcome.updated.is_empty()
            && outcome.destroyed.is_empty());
        if changed {
            // A failure is logged; the answer reports what was done.
            let _ = self.refresh(account).await;
        }
        Ok(json!({
            "accountId": call.account_id,
            "oldState": old_state,
            "newState": account.mailbox_states.state(),
            "created": outcome.created,
            "notCreated": outcome.not_created,
            "updated": outcome.updated,
            "notUpdated": outcome.not_updated,
            "destroyed": outcome.destroyed,
            "notDestroyed": outcome.not_destroyed,
        }))
    }

    /// Email/set. The account is locked for one object at a time, not for the whole call: a
    /// call of many objects (up to its time budget) lets the user's other requests in
    /// between them. Each create, update and destroy sees the account as it is when its
    /// turn comes.
    pub(super) async fn email_set(
        &mut self,
        account: &tokio::sync::Mutex<Account>,
        call: &Call<'_>,
    ) -> Result<Value, MethodError> {
        self.check_set_size(call)?;
        call.budget.work.add(0)?;
        let old_state = account.lock().await.email_states.state();
        Context::check_state(call, &old_state)?;
        let update = match call.args.get("update") {
            None | Some(Value::Null) => None,
            Some(Value::Object(update)) => Some(update),
            Some(_) => return Err(MethodError::invalid_arguments("update must be an object")),
        };
        let destroy = super::methods::id_list(&call.args, "destroy")?;
        let mut stored = Vec::new();
        let mut not_created = Map::new();
        if let Some(create) = call.args.get("create").and_then(Value::as_object) {
            for (creation, object) in create {
                // Each message built and written counts against the request's work and time.
                if let Err(e) = call.budget.work.add(budget::IMPORT_COST) {
                    not_created.insert(creation.clone(), e.to_value());
                    continue;
                }
                let composed = self.compose(&*account.lock().await, object);
                match composed {
                    Ok(placed) => stored.push((creation.clone(), placed)),
                    Err(e) => {
                        not_created.insert(creation.clone(), e);
                    }
                }
            }
        }
        let (mut updated, mut not_updated) = (Map::new(), Map::new());
        for (id, patch) in update.into_iter().flatten() {
            let done = email::update_one(&*account.lock().await, id, patch, &self.created);
            match done {
                Ok(()) => drop(updated.insert(id.clone(), Value::Null)),
                Err(error) => drop(not_updated.insert(id.clone(), error)),
            }
        }
        let (mut destroyed, mut not_destroyed) = (Vec::new(), Map::new());
        for id in destroy {
            let done = email::destroy_one(&*account.lock().await, &id);
            match done {
                Ok(()) => destroyed.push(id),
                Err(error) => drop(not_destroyed.insert(id, error)),
            }
        }
        let mut held = account.lock().await;
        let mut response = self
            .creation_response(&mut held, call, old_state, stored, not_created)
            .await;
        response.insert("updated".into(), json!(updated));
        response.insert("notUpdated".into(), json!(not_updated));
        response.insert("destroyed".into(), json!(destroyed));
        response.insert("notDestroyed".into(), json!(not_destroyed));
        Ok(Value::Object(response))
    }
}

impl Context<'_> {
    /// Email/set create: the message built from the object, stored in its mailbox; where.
    fn compose(&self, account: &Account, object: &Value) -> Result<(String, u32), Value> {
        let object = object
            .as_object()
            .ok_or_else(|| email::set_error("invalidProperties", "an email is an object"))?;
        let placement = email::Placement::read(object, &self.created)?;
        let max_size = self.jmap.shared.config.limits.max_message_bytes;
        let refusal = |(kind, why): compose::Refusal| match kind {
            "tooLarge" => super::too_large(max_size),
            _ => email::set_error(kind, why),
        };
        let blob = |id: &str, room: usize| {
            self.jmap
                .blob_within(account, id, room)
                .map_err(|fault| match fault {
                    BlobFault::Missing => ("blobNotFound", format!("no blob {id}")),
                    BlobFault::TooLarge => ("tooLarge", String::new()),
                    BlobFault::Unreadable(e) => {
                        ("serverFail", format!("blob {id} cannot be read: {e}"))
                    }
                })
        };
        let mut draft = compose::draft(object, max_size, blob).map_err(refusal)?;
        let now = crate::mail::clock::unix_seconds();
        let seed = format!(
            "{:x}",
            Sha256::digest(
                format!("{}{now}{:?}", account.user, std::time::Instant::now()).as_bytes()
            )
        )[..16]
            .to_string();
        let has = |draft: &compose::Draft, name: &str| draft.fields.iter().any(|(n, _)| n == name);
        if !has(&draft, "From") {
            draft
                .fields
                .insert(0, ("From".into(), format!("<{}>", account.user)));
        }
        let date = object
            .get("sentAt")
            .and_then(Value::as_str)
            .and_then(mail_parser::DateTime::parse_rfc3339)
            .unwrap_or_else(|| mail_parser::DateTime::from_timestamp(now as i64));
        draft.fields.push(("Date".into(), date.to_rfc822()));
        if !has(&draft, "Message-ID") {
            let host = &self.jmap.shared.config.server.hostname;
            draft
                .fields
                .push(("Message-ID".into(), format!("<{seed}@{host}>")));
        }
        let bytes = compose::build(&draft, &seed, max_size).map_err(refusal)?;
        if crate::message::header::header_too_large(&bytes) {
            let why = crate::message::header::HEADER_TOO_LARGE;
            return Err(email::set_error("invalidProperties", why));
        }
        let quota = self.jmap.shared.config.limits.max_mailbox_bytes_per_user;
        let uid = placement.store(account, &bytes, None, quota)?;
        Ok((placement.mailbox_id, uid))
    }

    /// The created map of a `/set` or `/import`, once the account has been refreshed; the
    /// creation ids are remembered for later calls.
    /// The response fields Email/set and Email/import share, once the account shows what was
    /// stored: the states and the created emails (whose ids later calls may refer to).
    pub(super) async fn creation_response(
        &mut self,
        account: &mut Account,
        call: &Call<'_>,
        old_state: String,
        stored: Vec<(String, (String, u32))>,
        not_created: Map<String, Value>,
    ) -> Map<String, Value> {
        // A failure is logged; the answer reports what was done.
        let _ = self.refresh(account).await;
        let mut created = Map::new();
        for (creation, (mailbox, uid)) in stored {
            if let Some(object) = email::created_object(account, &mailbox, uid) {
                if let Some(id) = object["id"].as_str() {
                    self.created.insert(creation.clone(), id.to_string());
                }
                created.insert(creation, object);
            }
        }
        let mut response = Map::new();
        response.insert("accountId".into(), json!(call.account_id));
        response.insert("oldState".into(), json!(old_state));
        response.insert("newState".into(), json!(account.email_states.state()));
        response.insert("created".into(), Value::Object(created));
        response.insert("notCreated".into(), Value::Object(not_created));
        response
    }
}

/// Identity/get: one identity, the user's own address.
pub(super) fn identity_get(account: &Account, call: &Call) -> Value {
    json!({
        "accountId": call.account_id,
        "state": "0",
        "list": [{
            "id": IDENTITY,
            "name": "",
            "email": account.user,
            "replyTo": null,
            "bcc": null,
            "textSignature": "",
            "htmlSignature": "",
            "mayDelete": false,
        }],
        "notFound": [],
    })
}
