//! JMAP (RFC 8620 core, RFC 8621 mail) over HTTPS, on `protocol = "jmap"` listeners: the
//! session resource, the API endpoint and blob downloads, over the same Maildirs, users and
//! retrieve stage as IMAP and POP3.
//!
//! Layout: `api` is the request envelope (no mail), `changes` the state strings, `account` a
//! user's mailboxes and emails under their ids, `message` a message's JMAP properties,
//! `mailbox`/`email` the methods, `http` the transport and authentication.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::mail::Session;
use crate::net::connection::Client;
use crate::net::drain::DrainWatch;
use crate::net::Protocol;
use crate::plugin::PluginSet;
use crate::shared::Shared;

pub mod account;
pub mod api;
pub mod changes;
mod compose;
mod email;
mod http;
mod mailbox;
pub mod message;
mod methods;
mod push;
mod submission;
mod uploads;
mod webmail;

use account::Account;
use api::{Limits, MethodError, Problem, CORE, MAIL, SUBMISSION};
use methods::Call;

/// Who makes a request: the plugin session (for the retrieve stage) and what a submission's
/// SMTP session needs.
pub struct Caller<'a> {
    pub session: Session,
    pub peer: std::net::SocketAddr,
    pub drain: &'a DrainWatch,
}

/// The session resource's state: it changes only with the server's capabilities.
const SESSION_STATE: &str = "0";

/// The JMAP service every JMAP listener shares.
pub struct Jmap {
    pub shared: Arc<Shared>,
    /// The SMTP service submissions go through.
    smtp: Arc<dyn Protocol>,
    accounts: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Account>>>>,
    /// Names this run of the server in state strings.
    epoch: String,
    limits: Limits,
    logins: http::LoginCache,
    tokens: http::Tokens,
    uploads: uploads::Uploads,
    upload_slots: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl Jmap {
    pub fn new(shared: Arc<Shared>, smtp: Arc<dyn Protocol>) -> Jmap {
        let epoch = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        );
        let max_message = shared.config.limits.max_message_bytes;
        let uploads = uploads::Uploads::new(shared.config.data_dir().join("jmap-uploads"));
        Jmap {
            limits: Limits {
                max_size_request: 10 << 20,
                max_calls_in_request: 32,
                max_objects_in_get: 1000,
                max_objects_in_set: 500,
                max_size_upload: max_message,
                max_concurrent_upload: 4,
                max_concurrent_requests: 8,
            },
            shared,
            smtp,
            accounts: Mutex::new(HashMap::new()),
            epoch,
            logins: http::LoginCache::default(),
            tokens: http::Tokens::default(),
            uploads,
            upload_slots: Mutex::new(HashMap::new()),
        }
    }

    /// A user's account id: `u` and the address in URL-safe base64 (ids are opaque to
    /// clients, and this one needs no table).
    pub fn account_id(user: &str) -> String {
        format!(
            "u{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user.as_bytes())
        )
    }

    fn account(&self, user: &str) -> Arc<tokio::sync::Mutex<Account>> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        accounts
            .entry(user.to_string())
            .or_insert_with(|| {
                let maildir = crate::delivery::maildir::maildir_of(
                    &self.shared.config.data_dir().join("mail"),
                    user,
                );
                Arc::new(tokio::sync::Mutex::new(Account::new(
                    user,
                    maildir,
                    &self.epoch,
                )))
            })
            .clone()
    }

    /// The session resource (RFC 8620 §2) for `user`, with URLs under `base` (`https://host`).
    pub fn session_resource(&self, user: &str, base: &str) -> Value {
        let id = Jmap::account_id(user);
        let max_attachments = self.limits.max_size_upload;
        json!({
            "capabilities": {
                CORE: self.limits.capability(),
                MAIL: {},
                SUBMISSION: {},
            },
            "accounts": {
                id.clone(): {
                    "name": user,
                    "isPersonal": true,
                    "isReadOnly": false,
                    "accountCapabilities": {
                        MAIL: {
                            "maxMailboxesPerEmail": 1,
                            "maxMailboxDepth": 10,
                            "maxSizeMailboxName": 200,
                            "maxSizeAttachmentsPerEmail": max_attachments,
                            "emailQuerySortOptions": ["receivedAt", "size", "from", "to", "subject", "sentAt", "hasKeyword"],
                            "mayCreateTopLevelMailbox": true,
                        },
                        SUBMISSION: {"maxDelayedSend": 0, "submissionExtensions": {}},
                    },
                },
            },
            "primaryAccounts": {CORE: id.clone(), MAIL: id.clone(), SUBMISSION: id},
            "username": user,
            "apiUrl": format!("{base}/jmap/api/"),
            "downloadUrl": format!("{base}/jmap/download/{{accountId}}/{{blobId}}/{{name}}?accept={{type}}"),
            "uploadUrl": format!("{base}/jmap/upload/{{accountId}}/"),
            "eventSourceUrl": format!("{base}/jmap/eventsource?types={{types}}&closeafter={{closeafter}}&ping={{ping}}"),
            "state": SESSION_STATE,
        })
    }

    /// Serves one API request of `user`: every method call in order, each seeing the
    /// responses before it.
    pub async fn api(
        &self,
        user: &str,
        caller: &Caller<'_>,
        body: &[u8],
    ) -> Result<Value, Problem> {
        let request = api::parse_request(body, &self.limits)?;
        let plugins = self.shared.plugins.current();
        let account = self.account(user);
        let mut account = account.lock().await;
        let mut context = Context {
            jmap: self,
            plugins,
            caller,
            account_id: Jmap::account_id(user),
            using: request.using,
            created: request
                .created_ids
                .iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect(),
        };
        context.refresh(&mut account).await;
        let mut responses: Vec<api::Response> = Vec::new();
        for call in request.calls {
            let mut arguments = call.arguments;
            let result = match api::resolve_references(&mut arguments, &responses) {
                Ok(()) => context.dispatch(&mut account, &call.name, arguments).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(answers) => responses.extend(
                    answers
                        .into_iter()
                        .map(|(name, value)| (name, value, call.id.clone())),
                ),
                Err(e) => responses.push(("error".into(), e.to_value(), call.id)),
            }
        }
        let mut out = json!({
            "methodResponses": responses.into_iter().map(|(n, v, i)| json!([n, v, i])).collect::<Vec<_>>(),
            "sessionState": SESSION_STATE,
        });
        if request.created_ids.is_some() {
            out["createdIds"] = json!(context.created);
        }
        Ok(out)
    }
}

impl Jmap {
    /// The bytes of one of `user`'s blobs (an upload, a message as served, a part decoded).
    pub async fn blob(&self, user: &str, session: &Session, blob: &str) -> Option<Vec<u8>> {
        let account = self.account(user);
        let mut account = account.lock().await;
        if let Some(bytes) = self.blob_bytes(&account, blob) {
            return Some(bytes);
        }
        // Perhaps a message delivered since the account was last looked at.
        let plugins = self.shared.plugins.current();
        if let Err(e) = account
            .refresh(&plugins, &self.shared.services, session)
            .await
        {
            tracing::warn!(user, "JMAP: cannot read the Maildir: {e}");
        }
        self.blob_bytes(&account, blob)
    }

    /// The account's Email, Mailbox and Thread states after a fresh look (for push).
    pub async fn states(&self, user: &str, session: &Session) -> push::States {
        let account = self.account(user);
        let mut account = account.lock().await;
        let plugins = self.shared.plugins.current();
        if let Err(e) = account
            .refresh(&plugins, &self.shared.services, session)
            .await
        {
            tracing::warn!(user, "JMAP: cannot read the Maildir: {e}");
        }
        let emails = account.email_states.state();
        vec![
            ("Email", emails.clone()),
            ("Mailbox", account.mailbox_states.state()),
            ("Thread", emails),
        ]
    }

    /// The sanitised HTML document of an email for the webmail page's frame: its HTML body
    /// parts (text parts among them escaped).
    pub async fn html_view(&self, user: &str, session: &Session, email_id: &str) -> Option<String> {
        let account = self.account(user);
        let mut account = account.lock().await;
        if account.email(email_id).is_none() {
            let plugins = self.shared.plugins.current();
            if let Err(e) = account
                .refresh(&plugins, &self.shared.services, session)
                .await
            {
                tracing::warn!(user, "JMAP: cannot read the Maildir: {e}");
            }
        }
        let email = account.email(email_id)?.clone();
        let parsed = account.message(&email).ok()?;
        let lists = message::BodyLists::of(&parsed);
        let mut html = String::new();
        for id in &lists.html {
            let part = parsed.part(*id)?;
            let text = parsed.part_text(*id).unwrap_or_default();
            if part.subtype.eq_ignore_ascii_case("html") {
                html.push_str(&text);
            } else {
                html.push_str("<pre>");
                html.push_str(&escape_html(&text));
                html.push_str("</pre>");
            }
        }
        if html.len() > webmail::MAX_HTML {
            html = format!("<pre>{}</pre>", escape_html(&message::strip_tags(&html)));
        }
        Some(crate::blocking::run(|| webmail::message_document(&html)))
    }

    /// Stores an upload of `user`; the blob id.
    pub fn upload(&self, user: &str, bytes: &[u8]) -> std::io::Result<String> {
        crate::blocking::run(|| self.uploads.store(user, bytes))
    }

    /// The bytes of one of the account's blobs: an upload, a message, or a part of one.
    fn blob_bytes(&self, account: &Account, blob: &str) -> Option<Vec<u8>> {
        if blob.starts_with('U') {
            return crate::blocking::run(|| self.uploads.read(&account.user, blob));
        }
        let (email_id, part) = email::parse_blob_id(blob)?;
        let bytes = account.read(account.email(&email_id)?).ok()?;
        match part {
            None => Some(bytes.as_ref().clone()),
            Some(part) => {
                message::part_bytes(&crate::message::Message::new(bytes.as_ref().clone()), part)
            }
        }
    }

    /// One user's upload slots (`maxConcurrentUpload`).
    pub fn upload_slot(&self, user: &str) -> Arc<tokio::sync::Semaphore> {
        let mut slots = self.upload_slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() > 10_000 {
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        slots
            .entry(user.to_string())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    self.limits.max_concurrent_upload,
                ))
            })
            .clone()
    }
}

/// One API request's view: who asks, under which plugins, what it created so far.
struct Context<'a> {
    jmap: &'a Jmap,
    plugins: Arc<PluginSet>,
    caller: &'a Caller<'a>,
    account_id: String,
    using: Vec<String>,
    /// Creation id -> the id it got.
    created: HashMap<String, String>,
}

type Answers = Vec<(String, Value)>;

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
    async fn refresh(&self, account: &mut Account) {
        if let Err(e) = account
            .refresh(
                &self.plugins,
                &self.jmap.shared.services,
                &self.caller.session,
            )
            .await
        {
            tracing::warn!(user = account.user, "JMAP: cannot read the Maildir: {e}");
        }
    }

    async fn dispatch(
        &mut self,
        account: &mut Account,
        name: &str,
        args: Map<String, Value>,
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
        };
        let answer = match name {
            "Mailbox/get" => mailbox::get(account, &call)?,
            "Mailbox/changes" => mailbox::changes(account, &call)?,
            "Mailbox/query" => mailbox::query(account, &call)?,
            "Mailbox/set" => self.mailbox_set(account, &call).await?,
            "Email/get" => email::get(account, &call)?,
            "Email/changes" => email::changes(account, &call)?,
            "Email/query" => email::query(account, &call)?,
            "Email/set" => self.email_set(account, &call).await?,
            "Email/import" => self.email_import(account, &call).await?,
            "Thread/get" => email::thread_get(account, &call)?,
            "Identity/get" => identity_get(account, &call),
            "EmailSubmission/set" => return self.submission_set(account, &call).await,
            _ => return Err(unknown()),
        };
        Ok(vec![(name.to_string(), answer)])
    }

    /// `ifInState` of a `/set`: the state must still be the one the client saw.
    fn check_state(call: &Call, state: &str) -> Result<(), MethodError> {
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
            return Err(MethodError::with(
                "requestTooLarge",
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
        let old_state = account.mailbox_states.state();
        Context::check_state(call, &old_state)?;
        let outcome = mailbox::set(account, call, &mut self.created)?;
        self.refresh(account).await;
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

    async fn email_set(
        &mut self,
        account: &mut Account,
        call: &Call<'_>,
    ) -> Result<Value, MethodError> {
        self.check_set_size(call)?;
        let old_state = account.email_states.state();
        Context::check_state(call, &old_state)?;
        let mut stored = Vec::new();
        let mut not_created = Map::new();
        if let Some(create) = call.args.get("create").and_then(Value::as_object) {
            for (creation, object) in create {
                match self.compose(account, object) {
                    Ok(placed) => stored.push((creation.clone(), placed)),
                    Err(e) => {
                        not_created.insert(creation.clone(), e);
                    }
                }
            }
        }
        let result = email::set_updates(account, call, &self.created)?;
        self.refresh(account).await;
        let created = self.report_created(account, stored);
        Ok(json!({
            "accountId": call.account_id,
            "oldState": old_state,
            "newState": account.email_states.state(),
            "created": created,
            "notCreated": not_created,
            "updated": result.updated,
            "notUpdated": result.not_updated,
            "destroyed": result.destroyed,
            "notDestroyed": result.not_destroyed,
        }))
    }
}

impl Context<'_> {
    /// Email/set create: the message built from the object, stored in its mailbox; where.
    fn compose(&self, account: &Account, object: &Value) -> Result<(String, u32), Value> {
        let object = object
            .as_object()
            .ok_or_else(|| email::set_error("invalidProperties", "an email is an object"))?;
        let placement = email::Placement::read(object, &self.created)?;
        let mut draft = compose::draft(object, |blob| self.jmap.blob_bytes(account, blob))
            .map_err(|(kind, why)| email::set_error(kind, why))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
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
        let bytes = compose::build(&draft, &seed);
        let uid = placement.store(account, &bytes, None)?;
        Ok((placement.mailbox_id, uid))
    }

    /// The created map of a `/set` or `/import`, once the account has been refreshed; the
    /// creation ids are remembered for later calls.
    fn report_created(
        &mut self,
        account: &mut Account,
        stored: Vec<(String, (String, u32))>,
    ) -> Map<String, Value> {
        let mut created = Map::new();
        for (creation, (mailbox, uid)) in stored {
            if let Some(object) = email::created_object(account, &mailbox, uid) {
                if let Some(id) = object["id"].as_str() {
                    self.created.insert(creation.clone(), id.to_string());
                }
                created.insert(creation, object);
            }
        }
        created
    }

    async fn email_import(
        &mut self,
        account: &mut Account,
        call: &Call<'_>,
    ) -> Result<Value, MethodError> {
        let old_state = account.email_states.state();
        Context::check_state(call, &old_state)?;
        let emails = call
            .args
            .get("emails")
            .and_then(Value::as_object)
            .ok_or_else(|| MethodError::invalid_arguments("emails is an object of EmailImport"))?;
        if emails.len() > self.jmap.limits.max_objects_in_set {
            return Err(MethodError::new("requestTooLarge"));
        }
        let mut stored = Vec::new();
        let mut not_created = Map::new();
        for (creation, import) in emails {
            match self.import_one(account, import) {
                Ok(placed) => stored.push((creation.clone(), placed)),
                Err(e) => {
                    not_created.insert(creation.clone(), e);
                }
            }
        }
        self.refresh(account).await;
        let created = self.report_created(account, stored);
        Ok(json!({
            "accountId": call.account_id,
            "oldState": old_state,
            "newState": account.email_states.state(),
            "created": created,
            "notCreated": not_created,
        }))
    }

    fn import_one(&self, account: &Account, import: &Value) -> Result<(String, u32), Value> {
        let import = import
            .as_object()
            .ok_or_else(|| email::set_error("invalidProperties", "an EmailImport is an object"))?;
        let blob = import
            .get("blobId")
            .and_then(Value::as_str)
            .ok_or_else(|| email::set_error("invalidProperties", "blobId is required"))?;
        let bytes = self
            .jmap
            .blob_bytes(account, blob)
            .ok_or_else(|| email::set_error("blobNotFound", format!("no blob {blob}")))?;
        let message = crate::message::Message::new(bytes);
        if message.headers().is_empty() {
            return Err(email::set_error(
                "invalidEmail",
                "the blob is not a message",
            ));
        }
        let received = import
            .get("receivedAt")
            .and_then(Value::as_str)
            .and_then(mail_parser::DateTime::parse_rfc3339)
            .map(|d| u64::try_from(d.to_timestamp()).unwrap_or(0));
        let placement = email::Placement::read(import, &self.created)?;
        let uid = placement.store(account, message.raw(), received)?;
        Ok((placement.mailbox_id, uid))
    }
}

/// The identity every account has: its own address.
const IDENTITY: &str = "I0";

impl Context<'_> {
    /// EmailSubmission/set: each created submission sends its email through SMTP; then the
    /// `onSuccessUpdateEmail`/`onSuccessDestroyEmail` changes, as an implicit Email/set.
    async fn submission_set(
        &mut self,
        account: &mut Account,
        call: &Call<'_>,
    ) -> Result<Answers, MethodError> {
        let mut created = Map::new();
        let mut not_created = Map::new();
        let mut sent: HashMap<String, String> = HashMap::new();
        if let Some(create) = call.args.get("create").and_then(Value::as_object) {
            for (creation, object) in create {
                match self.submit_one(account, object).await {
                    Ok((email_id, reply)) => {
                        let id = format!("S{}", &email::blob_id(&email_id)[1..]);
                        self.created.insert(creation.clone(), id.clone());
                        sent.insert(format!("#{creation}"), email_id.clone());
                        sent.insert(id.clone(), email_id.clone());
                        created.insert(
                            creation.clone(),
                            json!({"id": id, "undoStatus": "final", "sendAt": email::utc_date(now_secs()), "smtpReply": reply}),
                        );
                    }
                    Err(e) => {
                        not_created.insert(creation.clone(), e);
                    }
                }
            }
        }
        let mut answers = vec![(
            "EmailSubmission/set".to_string(),
            json!({
                "accountId": call.account_id,
                "oldState": null,
                "newState": "0",
                "created": created,
                "notCreated": not_created,
                "updated": null,
                "notUpdated": null,
                "destroyed": null,
                "notDestroyed": null,
            }),
        )];
        let mut update = Map::new();
        for (reference, patch) in call
            .args
            .get("onSuccessUpdateEmail")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if let Some(email_id) = sent.get(reference) {
                update.insert(email_id.clone(), patch.clone());
            }
        }
        let destroy: Vec<Value> = call
            .args
            .get("onSuccessDestroyEmail")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().and_then(|r| sent.get(r)))
            .map(|id| Value::String(id.clone()))
            .collect();
        if !update.is_empty() || !destroy.is_empty() {
            let mut args = Map::new();
            args.insert("accountId".into(), call.account_id.into());
            args.insert("update".into(), Value::Object(update));
            args.insert("destroy".into(), Value::Array(destroy));
            let implied = Call {
                args,
                account_id: call.account_id,
                limits: call.limits,
            };
            answers.push(("Email/set".into(), self.email_set(account, &implied).await?));
        }
        Ok(answers)
    }

    /// Sends one submission; the email id and the SMTP reply, or the SetError.
    async fn submit_one(
        &self,
        account: &Account,
        object: &Value,
    ) -> Result<(String, String), Value> {
        let invalid = |why: &str| email::set_error("invalidProperties", why);
        let object = object
            .as_object()
            .ok_or_else(|| invalid("a submission is an object"))?;
        if object.get("identityId").and_then(Value::as_str) != Some(IDENTITY) {
            return Err(invalid("identityId must be one of Identity/get's"));
        }
        let given = object
            .get("emailId")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("emailId is required"))?;
        let email_id = match given.strip_prefix('#') {
            Some(creation) => self.created.get(creation).cloned().unwrap_or_default(),
            None => given.to_string(),
        };
        let record = account
            .email(&email_id)
            .ok_or_else(|| email::set_error("invalidEmail", format!("no email {given}")))?
            .clone();
        let stored = account
            .stored(&record)
            .map_err(|e| email::set_error("serverFail", e.to_string()))?;
        let message = crate::message::Message::new(stored);
        let (mail_from, rcpt_to) = envelope(object.get("envelope"), &message, &account.user)?;
        if !mail_from.eq_ignore_ascii_case(&account.user) {
            return Err(email::set_error(
                "forbiddenMailFrom",
                format!("{} may send as {} only", account.user, account.user),
            ));
        }
        if rcpt_to.is_empty() {
            return Err(email::set_error(
                "noRecipients",
                "the email names no recipients",
            ));
        }
        let without_bcc = without_bcc(&message);
        let sender = submission::Sender {
            user: &account.user,
            peer: self.caller.peer,
            session_id: &self.caller.session.id,
            drain: self.caller.drain.another(),
        };
        match submission::send(
            self.jmap.smtp.clone(),
            sender,
            (&mail_from, &rcpt_to),
            &without_bcc,
        )
        .await
        {
            Ok(reply) => {
                tracing::info!(
                    user = account.user,
                    email = email_id,
                    "JMAP submission: {reply}"
                );
                Ok((email_id, reply))
            }
            Err(refused) => {
                let mut error = email::set_error(refused.kind, refused.reply);
                if !refused.recipients.is_empty() {
                    error["invalidRecipients"] = json!(refused.recipients);
                }
                Err(error)
            }
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The envelope of a submission: as given, or the identity's address and the message's
/// To, Cc and Bcc addresses.
fn envelope(
    given: Option<&Value>,
    message: &crate::message::Message,
    user: &str,
) -> Result<(String, Vec<String>), Value> {
    let invalid = |why: &str| email::set_error("invalidProperties", why);
    if let Some(envelope) = given.filter(|e| !e.is_null()) {
        let address = |v: &Value| {
            v.get("email")
                .and_then(Value::as_str)
                .filter(|e| e.contains('@') && !e.contains(['<', '>', ' ', '\r', '\n']))
                .map(str::to_string)
        };
        let from = envelope
            .get("mailFrom")
            .and_then(address)
            .ok_or_else(|| invalid("envelope.mailFrom needs an email"))?;
        let to = envelope
            .get("rcptTo")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("envelope.rcptTo is a list"))?
            .iter()
            .map(|r| address(r).ok_or_else(|| invalid("every rcptTo needs an email")))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok((from, to));
    }
    let mut to = Vec::new();
    for name in ["To", "Cc", "Bcc"] {
        for field in message.header(name) {
            if let Value::Array(list) =
                message::header_form(&field.raw, "asAddresses").unwrap_or(Value::Null)
            {
                for a in list {
                    if let Some(email) = a["email"].as_str().filter(|e| e.contains('@')) {
                        if !to.iter().any(|t: &String| t.eq_ignore_ascii_case(email)) {
                            to.push(email.to_string());
                        }
                    }
                }
            }
        }
    }
    Ok((user.to_string(), to))
}

/// The message as sent: its Bcc field removed (RFC 8621 §7.5).
fn without_bcc(message: &crate::message::Message) -> Vec<u8> {
    if message.header("Bcc").is_empty() {
        return message.raw().to_vec();
    }
    let edit = crate::message::MessageEdit::RemoveHeader("Bcc".into());
    match crate::message::apply_message_edits(message, &[edit]) {
        Ok(Some(edited)) => edited.into_raw(),
        _ => message.raw().to_vec(),
    }
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Identity/get: one identity, the user's own address.
fn identity_get(account: &Account, call: &Call) -> Value {
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

impl Protocol for Jmap {
    fn refusal(&self, why: &str) -> String {
        format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\nRetry-After: 5\r\n\r\n{why}\n",
            why.len() + 1
        )
    }

    fn serve(
        self: Arc<Self>,
        client: Client,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(http::serve(self, client))
    }
}
