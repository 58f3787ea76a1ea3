//! Local delivery of queued messages: every recipient in a local domain gets the message in
//! its Maildir (once per mailbox, even through aliases), with a `Return-Path:` line. Recipients in
//! other domains stay queued for the relay.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use crate::delivery::queue::spool::Spooled;
use crate::delivery::relay::dsn::{Action, ReportRecipient};

use super::maildir;
use crate::delivery::queue::spool::{Spool, SpoolError};
use crate::store::mailbox::{is_over_quota, room_for};
use crate::store::names::UserName;
use crate::store::users::{Recipient, Standing, Users};

/// The local mailboxes (users, through aliases and catch-alls, each once) and the remote
/// recipients; or why the message must wait: a recipient the users cannot tell now (the users
/// source unread, or stale and the address not in the last good read) is never dropped,
/// bounced nor relayed on a guess.
fn split_recipients(
    users: &Users,
    standing: Standing,
    id: &str,
    recipients: &[String],
) -> Result<Split, NotNow> {
    let mut split = Split::default();
    for rcpt in recipients {
        match users.recipient(rcpt, standing) {
            Recipient::Remote => split.remote.push(rcpt.clone()),
            Recipient::Mailboxes(targets) => {
                split.mailboxes.extend(targets);
                split.local.push(rcpt.clone());
            }
            Recipient::Unknown => tracing::warn!(
                queue_id = id,
                rcpt,
                "local recipient no longer exists; dropped"
            ),
            Recipient::Unavailable => {
                return Err(NotNow {
                    reason: format!(
                        "users source unavailable, cannot tell where {rcpt} goes (stays queued)"
                    ),
                    waits_for_users: true,
                })
            }
        }
    }
    Ok(split)
}

/// A message's recipients by where they go.
#[derive(Default)]
struct Split {
    /// Every mailbox, each once.
    mailboxes: BTreeSet<UserName>,
    /// The recipients that go to those mailboxes.
    local: Vec<String>,
    remote: Vec<String>,
}

/// Why a message cannot be delivered now, and whether it is the users source that it waits
/// for (it is tried again as soon as that is back, not at its next retry).
struct NotNow {
    reason: String,
    waits_for_users: bool,
}

impl From<String> for NotNow {
    fn from(reason: String) -> NotNow {
        NotNow {
            reason,
            waits_for_users: false,
        }
    }
}

/// A stable name per (message, mailbox): a retry after a crash finds the file and skips it.
fn file_name(spooled: &Spooled, mailbox: &UserName) -> String {
    let e = &spooled.envelope;
    format!(
        "{}.{}.{:016x}.mailgate",
        e.received_at,
        e.id,
        fnv1a(mailbox.as_bytes())
    )
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A message whose local recipients are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub id: String,
    /// It still has recipients in other domains (for the relay queue).
    pub remote: bool,
    /// Local mailboxes it went to.
    pub mailboxes: usize,
    /// The success report its local recipients asked for (NOTIFY=SUCCESS), to queue.
    pub notice: Option<SuccessNotice>,
}

/// A success report to send: the message it is about and its delivered recipients.
#[derive(Debug, Clone)]
pub struct SuccessNotice {
    pub spooled: Spooled,
    pub recipients: Vec<ReportRecipient>,
}

impl PartialEq for SuccessNotice {
    fn eq(&self, other: &SuccessNotice) -> bool {
        self.spooled.envelope == other.spooled.envelope
    }
}

impl Eq for SuccessNotice {}

/// The report for the local recipients that asked for one, if any did.
fn success_notice(spooled: &Spooled, local: &[String]) -> Option<SuccessNotice> {
    let dsn = &spooled.envelope.dsn;
    let now = crate::mail::clock::unix_seconds();
    let recipients: Vec<ReportRecipient> = local
        .iter()
        .filter_map(|rcpt| {
            let wanted = dsn.recipient(rcpt);
            wanted.wants_success().then(|| ReportRecipient {
                address: rcpt.clone(),
                original: wanted.orcpt,
                action: Action::Delivered,
                status: "2.0.0".into(),
                reason: "delivered to the mailbox".into(),
                reply: None,
                remote: None,
                last_attempt: Some(now),
                will_retry_until: None,
            })
        })
        .collect();
    (!recipients.is_empty()).then(|| SuccessNotice {
        spooled: spooled.clone(),
        recipients,
    })
}

/// What a batch came to: the messages done, and those that stay queued with the reason.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub done: Vec<Delivered>,
    pub failed: Vec<(String, String)>,
    /// Those of `failed` that wait for the users source.
    pub waiting_for_users: Vec<String>,
}

impl BatchOutcome {
    fn fail(&mut self, id: &str, error: String) {
        tracing::error!(
            queue_id = id,
            "local delivery failed (message stays queued): {error}"
        );
        self.failed.push((id.to_string(), error));
    }
}

/// One message of a batch, staged in every Maildir it goes to.
struct Prepared {
    spooled: Spooled,
    staged: Vec<maildir::Staged>,
    local: Vec<String>,
    remote: Vec<String>,
    mailboxes: usize,
    /// Mailboxes at their storage quota, which did not get it: the message stays queued for
    /// them (the others have it, and a retry skips them: their file is found by its name).
    full: Vec<String>,
}

/// Delivers several queued messages with two filesystem syncs in all: every file is written into
/// its Maildir's `tmp/`, one `syncfs` makes the data durable, the files move into `new/`, a second
/// `syncfs` makes the moves durable, and only then do the spool entries go. A message that fails
/// stays queued (delivery is idempotent, so a retry never duplicates) and is reported with its
/// reason, for the caller to retry.
pub fn deliver_batch(
    spool: &Spool,
    (users, standing): (&Users, Standing),
    (mail_root, quota): (&Path, u64),
    ids: &[String],
) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
    let mut prepared = Vec::new();
    for id in ids {
        match prepare(spool, (users, standing), (mail_root, quota), id) {
            Ok(p) => prepared.push(p),
            Err(e) => {
                if e.waits_for_users {
                    outcome.waiting_for_users.push(id.clone());
                }
                outcome.fail(id, e.reason);
            }
        }
    }
    // Nothing written (every recipient remote): nothing to sync either.
    let wrote = prepared.iter().any(|p| !p.staged.is_empty());
    let sync = |what: &str| -> Result<(), String> {
        if !wrote {
            return Ok(());
        }
        std::fs::File::open(mail_root)
            .map_err(|e| e.to_string())
            .and_then(|d| rustix::fs::syncfs(&d).map_err(|e| e.to_string()))
            .map_err(|e| format!("sync after {what} failed: {e}"))
    };
    if let Err(e) = sync("writing") {
        prepared
            .iter()
            .for_each(|p| outcome.fail(&p.spooled.envelope.id, e.clone()));
        return outcome;
    }
    let mut published = Vec::new();
    for p in &prepared {
        match p.staged.iter().try_for_each(maildir::publish) {
            Ok(()) => published.push(p),
            Err(e) => outcome.fail(&p.spooled.envelope.id, e.to_string()),
        }
    }
    if let Err(e) = sync("renaming") {
        published
            .iter()
            .for_each(|p| outcome.fail(&p.spooled.envelope.id, e.clone()));
        return outcome;
    }
    for p in published {
        let id = &p.spooled.envelope.id;
        if !p.full.is_empty() {
            let reason = format!("mailbox full: {} (stays queued)", p.full.join(", "));
            outcome.fail(id, reason);
            continue;
        }
        let finished = if p.remote.is_empty() {
            spool.retire(id, p.spooled.message.len())
        } else if p.remote.len() != p.spooled.envelope.recipients.len() {
            let mut rest = p.spooled.clone();
            rest.envelope.recipients = p.remote.clone();
            spool.rewrite(&rest)
        } else {
            Ok(())
        };
        match finished {
            Ok(()) => outcome.done.push(Delivered {
                id: id.clone(),
                remote: !p.remote.is_empty(),
                mailboxes: p.mailboxes,
                notice: success_notice(&p.spooled, &p.local),
            }),
            Err(e) => outcome.fail(id, format!("spool update after delivery failed: {e}")),
        }
    }
    outcome
}

fn prepare(
    spool: &Spool,
    (users, standing): (&Users, Standing),
    (mail_root, quota): (&Path, u64),
    id: &str,
) -> Result<Prepared, NotNow> {
    let spooled = spool.load(id).map_err(|e| e.to_string())?;
    let Split {
        mailboxes,
        local,
        remote,
    } = split_recipients(users, standing, id, &spooled.envelope.recipients)?;
    let return_path = format!("Return-Path: <{}>\r\n", spooled.envelope.sender);
    let mut staged = Vec::new();
    let mut full = Vec::new();
    let size = (return_path.len() + spooled.message.len()) as u64;
    for mailbox in &mailboxes {
        let name = file_name(&spooled, mailbox);
        match room_for(&mailbox.maildir(mail_root), quota, size) {
            Err(e) if is_over_quota(&e) => {
                tracing::info!(queue_id = id, mailbox = %mailbox, "{e}: delivery deferred");
                full.push(mailbox.to_string());
                continue;
            }
            _ => {}
        }
        let parts: [&[u8]; 2] = [return_path.as_bytes(), &spooled.message];
        let staging = maildir::Maildir::open(mail_root, mailbox)
            .and_then(|dir| maildir::stage(Arc::new(dir), &name, &parts));
        match staging {
            Ok(Some(file)) => staged.push(file),
            Ok(None) => {}
            Err(source) => {
                let path = mailbox.maildir(mail_root);
                return Err(SpoolError::Io { path, source }.to_string().into());
            }
        }
    }
    Ok(Prepared {
        spooled,
        staged,
        local,
        remote,
        mailboxes: mailboxes.len(),
        full,
    })
}
