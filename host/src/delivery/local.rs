//! Local delivery of queued messages: every recipient in a local domain gets the message in
//! its Maildir (once per mailbox, even through aliases), with a `Return-Path:` line. Recipients in
//! other domains stay queued for the relay.

use std::collections::BTreeSet;
use std::path::Path;

use super::maildir;
use crate::queue::spool::{Spool, SpoolError};
use crate::store::users::Users;

/// Delivers the local recipients of queued message `id`; returns how many mailboxes got it.
pub fn deliver_queued(
    spool: &Spool,
    users: &Users,
    mail_root: &Path,
    id: &str,
) -> Result<usize, SpoolError> {
    let mut spooled = spool.load(id)?;
    let envelope = spooled.envelope.clone();
    let return_path = format!("Return-Path: <{}>\r\n", envelope.sender);
    let mut mailboxes = BTreeSet::new();
    let mut remote = Vec::new();
    for rcpt in &envelope.recipients {
        let domain = rcpt.rsplit_once('@').map_or("", |(_, d)| d);
        if !users.is_local_domain(domain) {
            remote.push(rcpt.clone());
            continue;
        }
        let targets = users.resolve(rcpt);
        if targets.is_empty() {
            tracing::warn!(
                queue_id = id,
                rcpt,
                "local recipient no longer exists; dropped"
            );
        }
        mailboxes.extend(targets);
    }
    let mut delivered = 0;
    for mailbox in &mailboxes {
        let dir = maildir::maildir_of(mail_root, mailbox);
        // A stable name per (message, mailbox) makes a retry after a crash a no-op.
        let name = format!(
            "{}.{}.{:016x}.mailgate",
            envelope.received_at,
            envelope.id,
            fnv1a(mailbox.as_bytes())
        );
        let parts: [&[u8]; 2] = [return_path.as_bytes(), &spooled.message];
        match maildir::deliver(&dir, &name, &parts) {
            Ok(_) => delivered += 1,
            Err(source) => {
                // Leave the message queued; the next pass retries every mailbox idempotently.
                return Err(SpoolError::Io { path: dir, source });
            }
        }
    }
    if remote.is_empty() {
        spool.remove(id)?;
    } else if remote.len() != envelope.recipients.len() {
        spooled.envelope.recipients = remote;
        spool.rewrite(&spooled)?;
    }
    tracing::info!(queue_id = id, mailboxes = delivered, "delivered locally");
    Ok(delivered)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
