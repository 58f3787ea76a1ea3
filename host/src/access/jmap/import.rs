//! Email/import (RFC 8621 §4.8): the emails of one call are read from their blobs under the
//! account's lock, in batches of at most [`BATCH_BYTES`], and each batch is written with one
//! [`Folder::append_all`] per mailbox off the lock — one index rewrite per batch and mailbox,
//! not one per email, and the user's other requests wait for reads, not for disk syncs.
//! Every email is charged to the request's work budget before it is written (see
//! [`budget::IMPORT_COST`]): past the budget, the call, or the rest of it, gets the limit.

use std::iter::Peekable;
use std::path::Path;

use serde_json::{Map, Value};

use super::account::Account;
use super::budget;
use super::context::Context;
use super::email::{set_error, Placement};
use super::error::MethodError;
use super::methods::Call;
use crate::store::mailbox::{is_over_quota, room_for, served_len, Folder, NewMessage};
use crate::sys::blocking;

/// Bytes of emails held in memory between reading them and writing them.
const BATCH_BYTES: usize = 16 << 20;

/// One email read from its blob, to be written.
struct Ready {
    creation: String,
    mailbox_id: String,
    folder: Folder,
    placement: Placement,
    bytes: Vec<u8>,
    received: Option<u64>,
}

type Pending = Peekable<std::vec::IntoIter<(String, Value)>>;

impl Context<'_> {
    pub(super) async fn email_import(
        &mut self,
        account: &tokio::sync::Mutex<Account>,
        call: &Call<'_>,
    ) -> Result<Value, MethodError> {
        let (old_state, emails, maildir) = {
            let held = account.lock().await;
            let old_state = held.email_states.state();
            Context::check_state(call, &old_state)?;
            (old_state, self.import_list(call)?, held.maildir.clone())
        };
        let quota = Quota {
            maildir: &maildir,
            limit: self.jmap.shared.config.limits.max_mailbox_bytes_per_user,
        };
        // The fixed cost of every email at once: a call of too many is refused whole.
        let count = u64::try_from(emails.len()).unwrap_or(u64::MAX);
        call.budget
            .work
            .add(count.saturating_mul(budget::IMPORT_COST))?;
        let mut stored = Vec::new();
        let mut not_created = Map::new();
        let mut pending = emails.into_iter().peekable();
        while pending.peek().is_some() {
            let batch = {
                let held = account.lock().await;
                self.read_batch(&held, &mut pending, call, &mut not_created)
            };
            stored.extend(write_batch(batch, &quota, &mut not_created));
        }
        let mut held = account.lock().await;
        let response = self
            .creation_response(&mut held, call, old_state, stored, not_created)
            .await;
        Ok(Value::Object(response))
    }

    /// The call's `emails`, within `maxObjectsInSet`.
    fn import_list(&self, call: &Call<'_>) -> Result<Vec<(String, Value)>, MethodError> {
        let emails = call
            .args
            .get("emails")
            .and_then(Value::as_object)
            .ok_or_else(|| MethodError::invalid_arguments("emails is an object of EmailImport"))?;
        if emails.len() > self.jmap.limits.max_objects_in_set {
            return Err(MethodError::limit(
                "requestTooLarge",
                "maxObjectsInSet",
                format!(
                    "{} emails; at most {} in one call",
                    emails.len(),
                    self.jmap.limits.max_objects_in_set
                ),
            ));
        }
        Ok(emails.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// Reads emails from `pending` until [`BATCH_BYTES`] are held, each charged to the work
    /// budget; an email the budget refuses ends the call: it and the rest are not created.
    fn read_batch(
        &self,
        account: &Account,
        pending: &mut Pending,
        call: &Call<'_>,
        not_created: &mut Map<String, Value>,
    ) -> Vec<Ready> {
        let mut batch = Vec::new();
        let mut held = 0usize;
        while held < BATCH_BYTES {
            let Some((creation, import)) = pending.next() else {
                break;
            };
            let ready = match self.read_one(account, creation.clone(), &import) {
                Ok(ready) => ready,
                Err(e) => {
                    not_created.insert(creation, e);
                    continue;
                }
            };
            let size = u64::try_from(ready.bytes.len()).unwrap_or(u64::MAX);
            if let Err(e) = call
                .budget
                .work
                .add(size.saturating_mul(budget::WRITE_FACTOR))
            {
                // The limit's error (`requestTooLarge`, its `limit`) as each one's SetError.
                let refusal = e.to_value();
                not_created.insert(creation, refusal.clone());
                for (creation, _) in pending.by_ref() {
                    not_created.insert(creation, refusal.clone());
                }
                break;
            }
            held = held.saturating_add(ready.bytes.len());
            batch.push(ready);
        }
        batch
    }

    /// One EmailImport checked and its blob read.
    fn read_one(
        &self,
        account: &Account,
        creation: String,
        import: &Value,
    ) -> Result<Ready, Value> {
        let import = import
            .as_object()
            .ok_or_else(|| set_error("invalidProperties", "an EmailImport is an object"))?;
        let blob = import
            .get("blobId")
            .and_then(Value::as_str)
            .ok_or_else(|| set_error("invalidProperties", "blobId is required"))?;
        // An imported email is a message like any other: within max-message-bytes.
        let max_size = self.jmap.shared.config.limits.max_message_bytes;
        let bytes = self
            .jmap
            .blob_within(account, blob, max_size)
            .map_err(|fault| fault.set_error(blob, max_size))?;
        if crate::message::header::header_too_large(&bytes) {
            let why = crate::message::header::HEADER_TOO_LARGE;
            return Err(set_error("invalidEmail", why));
        }
        let message = crate::message::Message::new(bytes);
        if message.headers().is_empty() {
            return Err(set_error("invalidEmail", "the blob is not a message"));
        }
        let received = import
            .get("receivedAt")
            .and_then(Value::as_str)
            .and_then(mail_parser::DateTime::parse_rfc3339)
            .map(|d| u64::try_from(d.to_timestamp()).unwrap_or(0));
        let placement = Placement::read(import, &self.created)?;
        let folder = account
            .mailbox(&placement.mailbox_id)
            .ok_or_else(|| {
                set_error(
                    "invalidProperties",
                    format!("no mailbox {}", placement.mailbox_id),
                )
            })?
            .folder
            .clone();
        Ok(Ready {
            creation,
            mailbox_id: placement.mailbox_id.clone(),
            folder,
            placement,
            bytes: message.raw().to_vec(),
            received,
        })
    }
}

/// The user's Maildir and storage quota (0: none), for the writes of one call.
struct Quota<'a> {
    maildir: &'a Path,
    limit: u64,
}

/// Writes a batch, one [`Folder::append_all`] per mailbox (off the async workers); what was
/// stored, as (creation id, (mailbox id, UID)). A mailbox whose write fails stores none of
/// the batch's emails (`serverFail`).
fn write_batch(
    batch: Vec<Ready>,
    quota: &Quota<'_>,
    not_created: &mut Map<String, Value>,
) -> Vec<(String, (String, u32))> {
    let mut groups: Vec<Vec<Ready>> = Vec::new();
    for ready in batch {
        match groups
            .iter_mut()
            .find(|g| g[0].mailbox_id == ready.mailbox_id)
        {
            Some(group) => group.push(ready),
            None => groups.push(vec![ready]),
        }
    }
    let mut stored = Vec::new();
    for group in groups {
        let new: Vec<NewMessage<'_>> = group
            .iter()
            .map(|r| NewMessage {
                bytes: &r.bytes,
                system: r.placement.system,
                keywords: &r.placement.keywords,
                internal_date: r.received,
            })
            .collect();
        let adding = group
            .iter()
            .fold(0u64, |sum, r| sum.saturating_add(served_len(&r.bytes)));
        let written = blocking::run(|| {
            room_for(quota.maildir, quota.limit, adding)?;
            group[0].folder.append_all(&new)
        });
        match written {
            Ok(uids) => {
                for (ready, uid) in group.iter().zip(uids) {
                    stored.push((ready.creation.clone(), (ready.mailbox_id.clone(), uid)));
                }
            }
            Err(e) => {
                let kind = if is_over_quota(&e) {
                    "overQuota"
                } else {
                    tracing::warn!("JMAP: Email/import cannot store: {e}");
                    "serverFail"
                };
                for ready in &group {
                    not_created.insert(ready.creation.clone(), set_error(kind, e.to_string()));
                }
            }
        }
    }
    stored
}
