//! CONTEXT=SEARCH updates (RFC 5267 §4): `SEARCH RETURN (UPDATE ...)` keeps the search, and
//! while the mailbox stays selected the client is told of messages that join its result
//! (`ESEARCH ... ADDTO`) or leave it (`REMOVEFROM`) until it sends CANCELUPDATE.
//!
//! A kept search is evaluated again before each tagged reply, only when the view changed
//! since its last evaluation (messages, flags), all of them within one SEARCH work budget;
//! at most [`KEPT`] are kept per session. Expunged messages leave a result before their
//! EXPUNGE lines go out, numbered as they were. The search is kept as the command imap-codec
//! encodes from its key, and decoded again for each evaluation.

use std::collections::BTreeSet;

use imap_codec::decode::Decoder;
use imap_codec::encode::Encoder;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::CommandCodec;

use super::super::budget::{self, Work};
use super::super::partial::ordered_set;
use super::{ImapSession, Next};
use crate::sys::blocking;

/// Searches one session may keep for updates.
pub const KEPT: usize = 5;

/// A kept search.
pub(super) struct Kept {
    tag: String,
    uid: bool,
    /// `x [UID] SEARCH criteria`, as imap-codec encodes it.
    command: Vec<u8>,
    /// The mailbox it runs over.
    mailbox: String,
    /// UIDs of the result as the client knows it.
    result: BTreeSet<u32>,
    /// The view's state at the last evaluation.
    seen: Fingerprint,
}

/// What changes when the view does: messages, and their flags (mod-sequences).
type Fingerprint = (usize, u32, u64);

impl ImapSession {
    fn fingerprint(&self) -> Fingerprint {
        let Some(sel) = self.selected.as_ref() else {
            return (0, 0, 0);
        };
        let modseq = sel.entries().iter().map(|e| e.modseq).max().unwrap_or(0);
        (sel.len(), sel.last_uid(), modseq)
    }

    /// Keeps a search (its result: `found`, indexes into the view) for updates; false when
    /// no more may be kept (the caller says NOUPDATE).
    pub(super) fn keep_search(
        &mut self,
        tag: &str,
        key: &SearchKey<'_>,
        uid: bool,
        found: &[usize],
    ) -> bool {
        let Some(sel) = self.selected.as_ref() else {
            return false;
        };
        let over = self.kept.len() >= KEPT && !self.kept.iter().any(|k| k.tag == tag);
        let command = Command::new("x", CommandBody::search(None, key.clone(), uid));
        let Ok(command) = command else {
            return false;
        };
        if over {
            return false;
        }
        let kept = Kept {
            tag: tag.to_string(),
            uid,
            command: CommandCodec::default().encode(&command).dump(),
            mailbox: sel.name.clone(),
            result: found.iter().map(|&i| sel.entry(i).uid).collect(),
            seen: self.fingerprint(),
        };
        // A tag names one search: a new one with the same tag replaces it.
        self.kept.retain(|k| k.tag != tag);
        self.kept.push(kept);
        true
    }

    /// CANCELUPDATE "tag" ... (RFC 5267 §4.4); `None` for any other command.
    pub(super) fn cancel_update(&mut self, command: &[u8]) -> Option<Next> {
        let line = String::from_utf8_lossy(command.split(|&b| b == b'\r').next()?).into_owned();
        let mut words = line.split_whitespace();
        let tag = words.next()?.to_string();
        if !words.next()?.eq_ignore_ascii_case("CANCELUPDATE") {
            return None;
        }
        let tags: Vec<String> = words.map(|w| w.trim_matches('"').to_string()).collect();
        if self.user.is_none() || tags.is_empty() {
            self.send(&format!(
                "{tag} BAD CANCELUPDATE needs the tags of searches"
            ));
            return Some(Next::Continue);
        }
        self.kept.retain(|k| !tags.contains(&k.tag));
        self.send(&format!("{tag} OK CANCELUPDATE completed"));
        Some(Next::Continue)
    }

    /// Before EXPUNGE lines go out: the removed messages (sequence number as when removed,
    /// highest first, and UID) leave the kept results.
    pub(super) fn expunged_from_kept(&mut self, removed: &[(usize, u32)]) {
        if self.kept.is_empty() {
            return;
        }
        let mut lines = Vec::new();
        for kept in &mut self.kept {
            let mut numbers: Vec<u32> = removed
                .iter()
                .filter(|(_, uid)| kept.result.remove(uid))
                .map(|&(i, uid)| if kept.uid { uid } else { i as u32 + 1 })
                .collect();
            if numbers.is_empty() {
                continue;
            }
            numbers.sort_unstable();
            lines.push(change_line(&kept.tag, kept.uid, "REMOVEFROM", &numbers));
        }
        for line in lines {
            self.send(&line);
        }
    }

    /// Before a tagged reply: each kept search over a view that changed is evaluated again,
    /// and the difference reported.
    pub(super) fn report_kept(&mut self) {
        if self.kept.is_empty() {
            return;
        }
        let now = self.fingerprint();
        let mailbox = self.selected.as_ref().map(|s| s.name.clone());
        // Searches of a mailbox no longer selected end (RFC 5267 §4.3).
        self.kept.retain(|k| Some(&k.mailbox) == mailbox.as_ref());
        let stale: Vec<usize> = (0..self.kept.len())
            .filter(|&i| self.kept[i].seen != now)
            .collect();
        // One budget for all of them: a command that changes the view costs at most one
        // search's work, however many searches are kept (each re-run whole on its own budget,
        // five kept searches made every one-flag STORE cost five searches).
        let work = Work::new(budget::SEARCH_WORK);
        for i in stale.into_iter().rev() {
            let lines = blocking::run(|| self.evaluate(i, now, &work));
            for line in lines {
                self.send(&line);
            }
        }
    }

    /// Runs kept search `i` again, within what is left of `work`; the lines telling the
    /// client what changed. One that runs out is dropped (NOUPDATE).
    fn evaluate(&mut self, i: usize, now: Fingerprint, work: &Work) -> Vec<String> {
        let (tag, uid) = (self.kept[i].tag.clone(), self.kept[i].uid);
        let found = match CommandCodec::default().decode(&self.kept[i].command) {
            Ok((
                _,
                Command {
                    body: CommandBody::Search { criteria, .. },
                    ..
                },
            )) => self.matching(&criteria, work).ok(),
            _ => None,
        };
        let Some(found) = found else {
            self.kept.remove(i);
            return vec![format!(
                "* NO [NOUPDATE \"{tag}\"] The search is too complex to keep up to date"
            )];
        };
        let Some(sel) = self.selected.as_ref() else {
            return Vec::new();
        };
        let now_in: BTreeSet<u32> = found.iter().map(|&i| sel.entry(i).uid).collect();
        let kept = &mut self.kept[i];
        let number = |u: &u32| -> Option<u32> {
            match uid {
                true => Some(*u),
                false => sel.position(*u).map(|p| p as u32 + 1),
            }
        };
        let gone: Vec<u32> = kept.result.difference(&now_in).filter_map(number).collect();
        let new: Vec<u32> = now_in.difference(&kept.result).filter_map(number).collect();
        kept.result = now_in;
        kept.seen = now;
        let mut lines = Vec::new();
        if !gone.is_empty() {
            lines.push(change_line(&tag, uid, "REMOVEFROM", &gone));
        }
        if !new.is_empty() {
            lines.push(change_line(&tag, uid, "ADDTO", &new));
        }
        lines
    }
}

/// `* ESEARCH (TAG "t") [UID] ADDTO (0 set)`: position 0, as the result of a SEARCH has no
/// order to place the numbers in (RFC 5267 §4.4.1).
fn change_line(tag: &str, uid: bool, what: &str, numbers: &[u32]) -> String {
    let uid = if uid { " UID" } else { "" };
    // A tag holds no quote or backslash (RFC 3501 `tag`): it can be quoted as it is.
    format!(
        "* ESEARCH (TAG \"{tag}\"){uid} {what} (0 {})",
        ordered_set(numbers)
    )
}
