//! JMAP (RFC 8620 core, RFC 8621 mail) over HTTPS, on `protocol = "jmap"` listeners: the
//! session resource, the API endpoint and blob downloads, over the same Maildirs, users and
//! retrieve stage as IMAP and POP3.
//!
//! Layout: `api` is the request envelope (no mail), `changes` the state strings, `account` a
//! user's mailboxes and emails under their ids, `message` a message's JMAP properties,
//! `mailbox`/`email` the methods, `http` the transport and authentication.

use crate::store::names::UserName;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::mail::Session;
use crate::net::connection::Client;
use crate::net::drain::DrainWatch;
use crate::net::Protocol;
use crate::session_context::SessionContext;

pub mod account;
pub mod api;
pub mod budget;
pub mod changes;
pub mod compose;
mod context;
mod email;
mod error;
mod frames;
pub mod html;
pub mod html_scan;
mod http;
mod import;
mod mailbox;
pub mod message;
mod methods;
pub mod push;
mod query;
mod submission;
mod uploads;
mod webmail;

use account::Account;
use api::{Limits, Problem, CORE, MAIL, SUBMISSION};
use context::Context;

/// The per-user limits on work at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Upload,
    Request,
    /// Event-source connections (push): each holds a task that looks at the account.
    Push,
    /// Blob downloads: each holds its blob in memory until the client has taken it.
    Download,
}

/// Downloads one user may have under way at once.
const MAX_DOWNLOADS: usize = 4;

/// Event-source connections one user may hold open at once.
const MAX_PUSH_CONNECTIONS: usize = 4;

/// Who makes a request: the plugin session (for the retrieve stage) and what a submission's
/// SMTP session needs.
pub struct Caller<'a> {
    pub session: Session,
    pub peer: std::net::SocketAddr,
    pub drain: &'a DrainWatch,
}

/// The session resource's state: it changes only with the server's capabilities.
const SESSION_STATE: &str = "0";

/// Why a blob's bytes were not given.
#[derive(Debug)]
pub enum BlobFault {
    /// There is no such blob (`blobNotFound`).
    Missing,
    /// It is larger than the room the caller has left (`tooLarge`); not read.
    TooLarge,
    /// It exists but could not be read (`serverFail`: not the client's fault).
    Unreadable(std::io::Error),
}

impl From<std::io::Error> for BlobFault {
    fn from(e: std::io::Error) -> BlobFault {
        match e.kind() {
            std::io::ErrorKind::NotFound => BlobFault::Missing,
            _ => BlobFault::Unreadable(e),
        }
    }
}

impl BlobFault {
    /// The SetError of an object that needed blob `id`; `max_size` is the bound it broke.
    pub fn set_error(&self, id: &str, max_size: usize) -> Value {
        match self {
            BlobFault::Missing => email::set_error("blobNotFound", format!("no blob {id}")),
            BlobFault::TooLarge => too_large(max_size),
            BlobFault::Unreadable(e) => {
                email::set_error("serverFail", format!("blob {id} cannot be read: {e}"))
            }
        }
    }
}

/// The `tooLarge` SetError of an email over `max_size` octets (RFC 8621 §7.5: `maxSize`).
pub fn too_large(max_size: usize) -> Value {
    json!({
        "type": "tooLarge",
        "maxSize": max_size,
        "description": format!("the email would be larger than {max_size} octets"),
    })
}

/// The JMAP service every JMAP listener shares.
pub struct Jmap {
    pub shared: Arc<SessionContext>,
    /// The intake submissions go through.
    intake: Arc<crate::intake::Gateway>,
    accounts: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Account>>>>,
    /// Names this run of the server in state strings.
    epoch: String,
    limits: Limits,
    logins: http::LoginCache,
    tokens: http::Tokens,
    uploads: uploads::Uploads,
    /// Sanitised HTML of messages the webmail opened, and the sanitisers at work.
    html_views: Arc<html::HtmlViews>,
    /// Tickets by which the webmail's frames load those documents.
    frames: frames::FrameTickets,
    /// Per user and kind: what may run at once.
    slots: Mutex<HashMap<(String, Slot), Arc<tokio::sync::Semaphore>>>,
}

impl Jmap {
    pub fn new(shared: Arc<SessionContext>, intake: Arc<crate::intake::Gateway>) -> Jmap {
        let epoch = format!("{:x}", crate::mail::clock::unix_millis());
        let max_message = shared.config.limits.max_message_bytes;
        // A user's uploads held at once: as many as four maximal uploads (an email with
        // attachments is built from several), however many small ones.
        let uploads = uploads::Uploads::new(
            shared.config.data_dir().join("jmap-uploads"),
            (max_message as u64).saturating_mul(4),
        );
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
            intake,
            accounts: Mutex::new(HashMap::new()),
            epoch,
            logins: http::LoginCache::default(),
            tokens: http::Tokens::default(),
            uploads,
            html_views: Arc::new(html::HtmlViews::default()),
            frames: frames::FrameTickets::default(),
            slots: Mutex::new(HashMap::new()),
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

    fn account(&self, user: &UserName) -> Arc<tokio::sync::Mutex<Account>> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        accounts
            .entry(user.to_string())
            .or_insert_with(|| {
                let maildir = user.maildir(&self.shared.config.data_dir().join("mail"));
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
                        SUBMISSION: {"maxDelayedSend": 0, "submissionExtensions": {"DSN": []}},
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
        user: &UserName,
        caller: &Caller<'_>,
        body: &[u8],
    ) -> Result<Value, Problem> {
        let request = api::parse_request(body, &self.limits)?;
        let plugins = self.shared.plugins.current();
        let account = self.account(user);
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
        if let Err(e) = context.refresh(&mut *account.lock().await).await {
            // Answering from a view that cannot be refreshed would show a stale or empty
            // account as if it were the truth.
            return Err(Problem::unavailable(format!(
                "the mail store cannot be read now: {e}"
            )));
        }
        // Everything the request materialises is counted here: what its references copy
        // (before they copy it) and every answer (methods whose answers grow with what is
        // asked stop building theirs when the budget left would not hold it).
        let budget = budget::Budget::new(budget::MAX_RESPONSE_BYTES);
        let mut responses: Vec<api::Response> = Vec::new();
        for call in request.calls {
            let mut arguments = call.arguments;
            let result = match api::resolve_references(&mut arguments, &responses, &budget) {
                Ok(()) => {
                    context
                        .dispatch(&account, &call.name, arguments, &budget)
                        .await
                }
                Err(e) => Err(e),
            };
            let answers = result.and_then(|answers| {
                for (_, value) in &answers {
                    budget.take_value(value)?;
                }
                Ok(answers)
            });
            match answers {
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
    /// An error when the Maildir cannot be read (a temporary answer, not "no such blob").
    pub async fn blob(
        &self,
        user: &UserName,
        session: &Session,
        blob: &str,
    ) -> std::io::Result<Option<Vec<u8>>> {
        let account = self.account(user);
        let mut account = account.lock().await;
        match self.blob_within(&account, blob, usize::MAX) {
            Ok(bytes) => return Ok(Some(bytes)),
            Err(BlobFault::Unreadable(e)) => return Err(e),
            Err(_) => {}
        }
        // Perhaps a message delivered since the account was last looked at.
        let plugins = self.shared.plugins.current();
        if let Err(e) = account
            .refresh(&plugins, &self.shared.services, session)
            .await
        {
            tracing::warn!(user = %user, "JMAP: cannot read the Maildir: {e}");
            return Err(e);
        }
        match self.blob_within(&account, blob, usize::MAX) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(BlobFault::Unreadable(e)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// The account's Email, Mailbox and Thread states after a fresh look (for push).
    pub async fn states(&self, user: &UserName, session: &Session) -> push::States {
        let account = self.account(user);
        let mut account = account.lock().await;
        let plugins = self.shared.plugins.current();
        if let Err(e) = account
            .refresh(&plugins, &self.shared.services, session)
            .await
        {
            tracing::warn!(user = %user, "JMAP: cannot read the Maildir: {e}");
        }
        let emails = account.email_states.state();
        vec![
            ("Email", emails.clone()),
            ("Mailbox", account.mailbox_states.state()),
            ("Thread", emails),
        ]
    }

    /// The sanitised HTML document of an email for the webmail page's frame: its HTML body
    /// parts (text parts among them escaped). The account is locked only to find and read the
    /// message; the sanitiser runs after, off the async workers (see `html`).
    pub async fn html_view(
        &self,
        user: &UserName,
        session: &Session,
        email_id: &str,
        images: webmail::Images,
    ) -> Option<Arc<html::View>> {
        let raw = {
            let account = self.account(user);
            let mut account = account.lock().await;
            if account.email(email_id).is_none() {
                let plugins = self.shared.plugins.current();
                if let Err(e) = account
                    .refresh(&plugins, &self.shared.services, session)
                    .await
                {
                    tracing::warn!(user = %user, "JMAP: cannot read the Maildir: {e}");
                }
            }
            let email = account.email(email_id)?.clone();
            account.read(&email).ok()?
        };
        Some(self.html_views.document(user, raw, images).await)
    }

    /// Stores an upload of `user`; the blob id.
    pub fn upload(&self, user: &str, bytes: &[u8]) -> std::io::Result<String> {
        crate::sys::blocking::run(|| self.uploads.store(user, bytes))
    }

    /// The bytes of one of the account's blobs if they are at most `limit`: a blob known to
    /// be larger is refused before it is read, so a caller adding blobs up never holds more
    /// than its bound. A blob that exists but cannot be read is [`BlobFault::Unreadable`].
    fn blob_within(
        &self,
        account: &Account,
        blob: &str,
        limit: usize,
    ) -> Result<Vec<u8>, BlobFault> {
        if blob.starts_with('U') {
            return crate::sys::blocking::run(|| self.uploads.read(&account.user, blob, limit));
        }
        let (email_id, part) = email::parse_blob_id(blob).ok_or(BlobFault::Missing)?;
        let email = account.email(&email_id).ok_or(BlobFault::Missing)?;
        let size = usize::try_from(account.size(email)).unwrap_or(usize::MAX);
        // A part is read out of its whole message: that costs the message's size, which
        // must be within the size of any message (a part's own size is checked after).
        let read_bound = match part {
            None => limit,
            Some(_) => self.shared.config.limits.max_message_bytes,
        };
        if size > read_bound {
            return Err(BlobFault::TooLarge);
        }
        let bytes = account.read(email).map_err(BlobFault::from)?;
        let bytes = match part {
            // The file just read is ours alone (no copy); an edited view is shared.
            None => Arc::try_unwrap(bytes).unwrap_or_else(|shared| shared.as_ref().clone()),
            Some(part) => {
                message::part_bytes(&crate::message::Message::new(bytes.as_ref().clone()), part)
                    .ok_or(BlobFault::Missing)?
            }
        };
        if bytes.len() > limit {
            return Err(BlobFault::TooLarge);
        }
        Ok(bytes)
    }

    /// One user's upload slots (`maxConcurrentUpload`).
    pub fn upload_slot(&self, user: &str) -> Arc<tokio::sync::Semaphore> {
        self.slot(user, Slot::Upload)
    }

    /// One user's event-source slots.
    pub fn push_slot(&self, user: &str) -> Arc<tokio::sync::Semaphore> {
        self.slot(user, Slot::Push)
    }

    /// One user's download slots.
    pub fn download_slot(&self, user: &str) -> Arc<tokio::sync::Semaphore> {
        self.slot(user, Slot::Download)
    }

    /// One user's API request slots (`maxConcurrentRequests`).
    pub fn request_slot(&self, user: &str) -> Arc<tokio::sync::Semaphore> {
        self.slot(user, Slot::Request)
    }

    fn slot(&self, user: &str, kind: Slot) -> Arc<tokio::sync::Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() > 10_000 {
            // Only users with something under way keep theirs.
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        let size = match kind {
            Slot::Upload => self.limits.max_concurrent_upload,
            Slot::Request => self.limits.max_concurrent_requests,
            Slot::Push => MAX_PUSH_CONNECTIONS,
            Slot::Download => MAX_DOWNLOADS,
        };
        slots
            .entry((user.to_string(), kind))
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(size)))
            .clone()
    }
}

impl Protocol for Jmap {
    fn refusal(&self, why: &str) -> String {
        format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\nRetry-After: 5\r\n\r\n{why}\n",
            why.len() + 1
        )
    }

    /// A stalled handshake may not outlast the time a request head may take.
    fn handshake_time(&self) -> std::time::Duration {
        http::HEADER_TIMEOUT
    }

    /// Opened at accept like IMAP's: the handshake is inside it, and a connection that has not
    /// authenticated may be closed to make room for another client.
    fn login_window(
        &self,
        ip: std::net::IpAddr,
    ) -> Result<Option<crate::net::limits::LoginWindow>, crate::net::limits::TooManyWaiting> {
        self.shared.prelogin_window(ip)
    }

    fn serve(
        self: Arc<Self>,
        client: Client,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(http::serve(self, client))
    }
}
