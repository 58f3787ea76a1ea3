//! APPEND of several messages (MULTIAPPEND, RFC 3502) or of messages put together by CATENATE
//! (RFC 4469). Every message is assembled first — its URLs resolved in the user's own
//! mailboxes, sizes counted before any byte is read — and only then are all of them written,
//! together: one that fails leaves none in the mailbox.

use imap_codec::imap_types::mailbox::Mailbox;

use super::super::append::{self, Content, Part, Request};
use super::super::{budget, mutf7, url, wire};
use super::{ImapSession, Next};
use crate::message::{encode, header, Message};
use crate::store::mailbox::{served_len, Folder, NewMessage};
use crate::sys::blocking;
use crate::telemetry::metrics;

/// Bytes a CATENATE may read from stored messages, per byte it may produce: a section of a
/// large message costs the message.
const READ_AMPLIFICATION: u64 = 4;

/// Why a message could not be put together: the tagged reply's text.
type Refusal = String;

/// What one command may still produce and read.
struct Allowance {
    /// Bytes the messages together may hold.
    produce: u64,
    /// Bytes of stored messages that may be read for URLs.
    read: u64,
}

impl ImapSession {
    /// An APPEND that `append::parse` claims; `None` for any other command.
    pub(super) async fn extended_append(&mut self, command: &[u8]) -> Option<Next> {
        let tag = super::framing::tag_of(command);
        let request = match append::parse(command) {
            Ok(Some(request)) => request,
            Ok(None) => return None,
            Err(why) => {
                self.send(&format!("{tag} BAD {why}"));
                return Some(Next::Continue);
            }
        };
        metrics::command("imap", "APPEND");
        if self.user.is_none() {
            self.send(&format!("{tag} BAD Log in first"));
            return Some(Next::Continue);
        }
        let done = blocking::run(|| self.append_request(&request));
        // The new messages are announced before the tagged reply (RFC 3501 §7).
        self.refresh().await;
        self.send(&format!("{tag} {done}"));
        Some(Next::Continue)
    }

    /// Assembles every message, then appends them all or none; the tagged reply's text.
    fn append_request(&self, request: &Request) -> String {
        let Ok(mailbox) = Mailbox::try_from(request.mailbox.as_str()) else {
            return "NO [CANNOT] Bad mailbox name".into();
        };
        let folder = match self.folder(&mailbox) {
            Ok((_, folder)) => folder,
            Err(reply) => return reply,
        };
        let largest = self.shared.config.limits.max_message_bytes as u64;
        let produce = self.budget().command;
        let mut allowance = Allowance {
            produce,
            read: produce.saturating_mul(READ_AMPLIFICATION),
        };
        let mut assembled = Vec::with_capacity(request.messages.len());
        for message in &request.messages {
            if message.keywords.len() > budget::FLAGS_PER_COMMAND {
                return "NO [LIMIT] Too many flags for one message".into();
            }
            let bytes = match &message.content {
                Content::Literal { bytes, binary } => {
                    let bytes = match binary {
                        true => encode::binary_parts_to_base64(bytes.clone()),
                        false => bytes.clone(),
                    };
                    match take(&mut allowance.produce, bytes.len() as u64) {
                        true => bytes,
                        false => return too_big(),
                    }
                }
                Content::Catenate(parts) => match self.catenate(parts, &mut allowance) {
                    Ok(bytes) => bytes,
                    Err(refusal) => return refusal,
                },
            };
            if bytes.is_empty() {
                return "NO Cannot append an empty message".into();
            }
            if bytes.len() as u64 > largest {
                return format!("NO [TOOBIG] A message is over the limit of {largest} octets");
            }
            if header::header_too_large(&bytes) {
                return format!("NO [LIMIT] {}", header::HEADER_TOO_LARGE);
            }
            assembled.push(bytes);
        }
        let new: Vec<NewMessage<'_>> = request
            .messages
            .iter()
            .zip(&assembled)
            .map(|(m, bytes)| NewMessage {
                bytes,
                system: m.system,
                keywords: &m.keywords,
                internal_date: m.date,
            })
            .collect();
        let adding = assembled
            .iter()
            .fold(0u64, |sum, b| sum.saturating_add(served_len(b)));
        if let Err(reply) = self.room_for(adding) {
            return reply;
        }
        match folder
            .append_all(&new)
            .and_then(|uids| Ok((folder.uid_validity()?, uids)))
        {
            Ok((validity, uids)) => format!(
                "OK [APPENDUID {validity} {}] APPEND completed",
                wire::sequence_set(uids)
            ),
            Err(e) => crate::access::imap::flags::failure("Cannot append", &e),
        }
    }

    /// One CATENATE's parts joined.
    fn catenate(&self, parts: &[Part], allowance: &mut Allowance) -> Result<Vec<u8>, Refusal> {
        let mut out = Vec::new();
        for part in parts {
            match part {
                Part::Text(text) => {
                    if !take(&mut allowance.produce, text.len() as u64) {
                        return Err(too_big());
                    }
                    out.extend_from_slice(text);
                }
                Part::Url(address) => {
                    let bytes = self
                        .fetch_url(address, allowance)
                        .map_err(|why| format!("NO [BADURL {}] {why}", url_text(address)))?;
                    let bytes = bytes.map_err(|()| too_big())?;
                    out.extend_from_slice(&bytes);
                }
            }
        }
        Ok(out)
    }

    /// The bytes a URL names: `Err(why)` when it names nothing the user may read,
    /// `Ok(Err(()))` when they would go over the allowance.
    fn fetch_url(
        &self,
        address: &str,
        allowance: &mut Allowance,
    ) -> Result<Result<Vec<u8>, ()>, String> {
        let user = self.user.as_deref().unwrap_or_default();
        let found = url::parse(address, user)?;
        let folder = self.url_folder(&found.mailbox)?;
        let snapshot = folder
            .scan(false)
            .map_err(|_| "cannot read the mailbox".to_string())?;
        if found
            .uid_validity
            .is_some_and(|v| v != snapshot.uid_validity)
        {
            return Err("UIDVALIDITY has changed".into());
        }
        let entry = snapshot
            .entries
            .binary_search_by_key(&found.uid, |e| e.uid)
            .ok()
            .and_then(|i| snapshot.entries.get(i))
            .ok_or("no such message")?;
        // The message is read whole whatever part is asked for: counted before it is.
        if !take(&mut allowance.read, entry.size) {
            return Ok(Err(()));
        }
        let raw = folder
            .read(entry)
            .map_err(|_| "the message is gone".to_string())?;
        let bytes = found.extract(&Message::new(raw));
        if !take(&mut allowance.produce, bytes.len() as u64) {
            return Ok(Err(()));
        }
        Ok(Ok(bytes))
    }

    /// The folder a URL's (UTF-8) mailbox name refers to, checked as a command's would be.
    pub(super) fn url_folder(&self, utf8: &str) -> Result<Folder, String> {
        // `folder` reads names as this client sends them.
        let sent = match self.rev2 {
            true => utf8.to_string(),
            false => mutf7::encode(utf8),
        };
        let mailbox = Mailbox::try_from(sent.as_str()).map_err(|_| "bad mailbox name")?;
        self.folder(&mailbox)
            .map(|(_, folder)| folder)
            .map_err(|_| "no such mailbox".to_string())
    }
}

/// Takes `amount` from `left`; false (and nothing taken) when there is not that much.
fn take(left: &mut u64, amount: u64) -> bool {
    match left.checked_sub(amount) {
        Some(rest) => {
            *left = rest;
            true
        }
        None => false,
    }
}

fn too_big() -> String {
    "NO [TOOBIG] The messages are over the size limit".into()
}

/// The URL as a response code may quote it (RFC 4469 `BADURL url`): no `]` or line break.
fn url_text(address: &str) -> String {
    address
        .chars()
        .filter(|c| !matches!(c, ']' | '\r' | '\n'))
        .take(1024)
        .collect()
}
