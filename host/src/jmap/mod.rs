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

use crate::mail::Session;
use crate::net::connection::Client;
use crate::net::Protocol;
use crate::plugin::PluginSet;
use crate::shared::Shared;

pub mod account;
pub mod api;
pub mod changes;
mod email;
mod http;
mod mailbox;
pub mod message;
mod methods;

use account::Account;
use api::{Limits, MethodError, Problem, CORE, MAIL, SUBMISSION};
use methods::Call;

/// The session resource's state: it changes only with the server's capabilities.
const SESSION_STATE: &str = "0";

/// The JMAP service every JMAP listener shares.
pub struct Jmap {
    pub shared: Arc<Shared>,
    accounts: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Account>>>>,
    /// Names this run of the server in state strings.
    epoch: String,
    limits: Limits,
    logins: http::LoginCache,
}

impl Jmap {
    pub fn new(shared: Arc<Shared>) -> Jmap {
        let epoch = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        );
        let max_message = shared.config.limits.max_message_bytes;
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
            accounts: Mutex::new(HashMap::new()),
            epoch,
            logins: http::LoginCache::default(),
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
    pub async fn api(&self, user: &str, session: &Session, body: &[u8]) -> Result<Value, Problem> {
        let request = api::parse_request(body, &self.limits)?;
        let plugins = self.shared.plugins.current();
        let account = self.account(user);
        let mut account = account.lock().await;
        let mut context = Context {
            jmap: self,
            plugins,
            session,
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
    /// The bytes of a blob: an email's message as served, or one of its parts decoded.
    pub async fn blob(
        &self,
        user: &str,
        session: &Session,
        email_id: &str,
        part: Option<u32>,
    ) -> Option<Vec<u8>> {
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
        let bytes = account.read(&email).ok()?;
        match part {
            None => Some(bytes.as_ref().clone()),
            Some(part) => {
                message::part_bytes(&crate::message::Message::new(bytes.as_ref().clone()), part)
            }
        }
    }
}

/// One API request's view: who asks, under which plugins, what it created so far.
struct Context<'a> {
    jmap: &'a Jmap,
    plugins: Arc<PluginSet>,
    session: &'a Session,
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
            .refresh(&self.plugins, &self.jmap.shared.services, self.session)
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
            "Thread/get" => email::thread_get(account, &call)?,
            "Identity/get" => identity_get(account, &call),
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
        let mut not_created = Map::new();
        if let Some(create) = call.args.get("create").and_then(Value::as_object) {
            for creation in create.keys() {
                not_created.insert(
                    creation.clone(),
                    json!({"type": "forbidden", "description": "creating emails with Email/set is not supported yet"}),
                );
            }
        }
        let result = email::set_updates(account, call, &self.created)?;
        self.refresh(account).await;
        Ok(json!({
            "accountId": call.account_id,
            "oldState": old_state,
            "newState": account.email_states.state(),
            "created": {},
            "notCreated": not_created,
            "updated": result.updated,
            "notUpdated": result.not_updated,
            "destroyed": result.destroyed,
            "notDestroyed": result.not_destroyed,
        }))
    }
}

/// Identity/get: one identity, the user's own address.
fn identity_get(account: &Account, call: &Call) -> Value {
    json!({
        "accountId": call.account_id,
        "state": "0",
        "list": [{
            "id": "I0",
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
