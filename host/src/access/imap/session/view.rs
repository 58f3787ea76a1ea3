//! The selected mailbox as this session shows it: SELECT and EXAMINE, and the refresh that
//! reports what others changed (NOOP, CHECK, IDLE, and before the tagged reply of commands that
//! change the folder): expunges, new messages, flag and keyword changes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use imap_codec::imap_types::mailbox::Mailbox;

use imap_codec::imap_types::sequence::SequenceSet;

use super::super::extensions::SelectParams;
use super::super::{flags, search, wire};
use super::mailboxes::quoted as wire_quoted;
use super::wake::{self, Wake};
use super::{ImapSession, Next, AUTOLOGOUT, SHUTDOWN_BYE};
use crate::message::Message;
use crate::net::connection::Line;
use crate::plugin::retrieve::{self, EditedCopies, View};
use crate::plugin::Stage;
use crate::store::keywords::Keywords;
use crate::store::mailbox::{Folder, MailEntry};
use crate::store::watch::FolderWatch;
use crate::sys::blocking;

/// What a refresh reports now (new messages always).
#[derive(Debug, Clone, Copy)]
pub(super) struct Report {
    pub expunges: bool,
    pub flags: bool,
    /// Flag changes carry the UID (RFC 5465 §5.1: NOTIFY's FETCH responses do).
    pub uid: bool,
}

impl Report {
    pub const ALL: Report = Report {
        expunges: true,
        flags: true,
        uid: false,
    };
}

pub(super) struct Selected {
    pub name: String,
    pub folder: Folder,
    pub read_only: bool,
    pub uid_next: u32,
    /// The folder's HIGHESTMODSEQ as this session last learnt it.
    pub highest_modseq: u64,
    /// The folder's keyword names as last announced to the client.
    pub keywords: Keywords,
    /// UIDs hidden from this session by a retrieve-stage plugin.
    pub hidden: HashSet<u32>,
    /// Change notification for the folder: a refresh rescans only after a change. `None`
    /// where the folder cannot be watched (then every refresh rescans).
    pub watch: Option<FolderWatch>,
    /// Changes seen but held back (NOTIFY reports some kinds only, or expunges later): the
    /// next refresh rescans whatever the watch says.
    pub stale: bool,
    /// The messages shown, by ascending UID (sequence number - 1 is the index). Sessions that
    /// see the folder alike share one list; a change here copies it first.
    messages: Arc<Vec<MailEntry>>,
    /// UIDs `\Recent` in this session (RFC 3501: in one session only).
    recent: HashSet<u32>,
    /// What a retrieve-stage plugin made of a message for this client, by UID (in memory up
    /// to a bound, the rest spilled to a file of the session's own).
    edited: EditedCopies,
    /// The messages this session read last, parsed (a FETCH after FETCH of one message
    /// neither reads nor parses it again).
    parsed: std::sync::Mutex<ParsedCache>,
}

/// Recently read messages with their parsed structure, by UID: at most
/// [`ParsedCache::ENTRIES`] of them and [`ParsedCache::BYTES`] of message data, the oldest
/// forgotten first. A UID's content never changes, so entries are never stale.
#[derive(Default)]
pub(super) struct ParsedCache {
    entries: std::collections::VecDeque<(u32, Arc<Message>)>,
    bytes: u64,
}

impl ParsedCache {
    const ENTRIES: usize = 16;
    const BYTES: u64 = 64 << 20;

    fn get(&mut self, uid: u32) -> Option<Arc<Message>> {
        let at = self.entries.iter().position(|(u, _)| *u == uid)?;
        let entry = self.entries.remove(at)?;
        let message = entry.1.clone();
        self.entries.push_back(entry);
        Some(message)
    }

    fn put(&mut self, uid: u32, message: Arc<Message>) {
        if message.size() > Self::BYTES / 4 {
            return;
        }
        self.bytes = self.bytes.saturating_add(message.size());
        self.entries.push_back((uid, message));
        while self.entries.len() > Self::ENTRIES || self.bytes > Self::BYTES {
            let Some((_, old)) = self.entries.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(old.size());
        }
    }
}

impl Selected {
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// The message with this UID if this session read it lately, parsed.
    pub fn parsed(&self, uid: u32) -> Option<Arc<Message>> {
        self.parsed.lock().ok()?.get(uid)
    }

    /// Keeps a message just read (with whatever of it gets parsed) for the next command.
    pub fn remember(&self, uid: u32, message: Message) -> Arc<Message> {
        let message = Arc::new(message);
        if let Ok(mut cache) = self.parsed.lock() {
            cache.put(uid, message.clone());
        }
        message
    }

    pub fn entries(&self) -> &[MailEntry] {
        &self.messages
    }

    pub fn entry(&self, i: usize) -> &MailEntry {
        &self.messages[i]
    }

    pub fn get(&self, i: usize) -> Option<&MailEntry> {
        self.messages.get(i)
    }

    pub fn last_uid(&self) -> u32 {
        self.messages.last().map_or(0, |e| e.uid)
    }

    pub fn is_recent(&self, i: usize) -> bool {
        self.messages
            .get(i)
            .is_some_and(|e| self.recent.contains(&e.uid))
    }

    pub fn recent_count(&self) -> usize {
        self.recent.len()
    }

    /// The edited copy of message `i`, if a plugin edited it (file work when it was spilled).
    pub fn edited(&self, i: usize) -> Option<std::io::Result<Arc<Vec<u8>>>> {
        self.edited.get(self.messages.get(i)?.uid)
    }

    /// Whether a plugin edited message `i` for this client (its copy is served, not the file).
    pub fn is_edited(&self, i: usize) -> bool {
        self.messages
            .get(i)
            .is_some_and(|e| self.edited.contains(e.uid))
    }

    /// The size this client is told: of the edited bytes when a plugin edited the message.
    pub fn size(&self, i: usize) -> u64 {
        self.messages
            .get(i)
            .map_or(0, |e| self.edited.size(e.uid).unwrap_or(e.size))
    }

    /// Takes a message out of the view; its UID.
    pub fn remove(&mut self, i: usize) -> u32 {
        let uid = Arc::make_mut(&mut self.messages).remove(i).uid;
        self.recent.remove(&uid);
        self.edited.remove(uid);
        uid
    }

    /// Takes in the flags (and mod-sequences) of messages as the store reports them after a
    /// change, so that the next refresh does not report them again.
    pub fn absorb(&mut self, entries: &[MailEntry]) {
        let newest = entries.iter().map(|e| e.modseq).max().unwrap_or(0);
        self.highest_modseq = self.highest_modseq.max(newest);
        for now in entries {
            let Some(i) = self.position(now.uid) else {
                continue;
            };
            let held = &self.messages[i];
            if (held.flags, held.modseq, held.in_new) != (now.flags, now.modseq, now.in_new) {
                let entry = &mut Arc::make_mut(&mut self.messages)[i];
                entry.flags = now.flags;
                entry.modseq = now.modseq;
                entry.in_new = now.in_new;
            }
        }
    }

    /// Index into the view of the message with this UID.
    pub fn position(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |e| e.uid).ok()
    }
}

/// Messages through the retrieve stage: those shown (`recent` cleared, for sharing), and
/// what is this session's own.
#[derive(Default)]
struct Screened {
    shown: Vec<MailEntry>,
    recent: Vec<u32>,
    hidden: Vec<u32>,
}

impl ImapSession {
    /// Runs the retrieve stage for entries not yet seen by this session; the edited copies go
    /// into `edited` as they are made (bounded in memory, see `EditedCopies`).
    async fn screen(
        &self,
        folder: &Folder,
        name: &str,
        entries: Vec<MailEntry>,
        edited: &mut EditedCopies,
    ) -> Screened {
        let plugins = self.shared.plugins.current();
        let mut out = Screened::default();
        for mut entry in entries {
            if entry.recent {
                out.recent.push(entry.uid);
                entry.recent = false;
            }
            if !plugins.handles(Stage::Retrieve) {
                out.shown.push(entry);
                continue;
            }
            let Ok(bytes) = blocking::run(|| folder.read(&entry)) else {
                continue;
            };
            let session = self
                .client
                .plugin_session(None, self.user.as_ref().map(ToString::to_string));
            let view = retrieve::view(
                &plugins,
                &self.shared.services,
                session,
                name,
                entry.uid,
                bytes,
            )
            .await;
            match view {
                View::Hidden => out.hidden.push(entry.uid),
                View::Shown(copy) => {
                    if let Some(copy) = copy {
                        if let Err(e) = edited.insert(entry.uid, copy) {
                            // Without its edited copy the message cannot be shown as the
                            // plugins want it: it is left out, as an unreadable one is.
                            tracing::warn!(uid = entry.uid, "edited copy not kept: {e}");
                            continue;
                        }
                    }
                    out.shown.push(entry);
                }
            }
        }
        out
    }

    pub(super) async fn select(
        &mut self,
        tag: &str,
        mailbox: &Mailbox<'_>,
        read_only: bool,
        params: Option<SelectParams>,
    ) {
        match params {
            Some(SelectParams::Qresync { .. }) if !self.qresync => {
                return self.send(&format!("{tag} BAD QRESYNC is not enabled"));
            }
            Some(SelectParams::CondStore) => self.condstore = true,
            _ => {}
        }
        if self.selected.take().is_some() && (self.qresync || self.rev2) {
            // RFC 7162 §3.2.11, RFC 9051 §6.3.2: what follows is about the new mailbox.
            self.send("* OK [CLOSED] Previous mailbox closed");
        }
        let (name, folder) = match self.folder(mailbox) {
            Ok(found) => found,
            Err(reply) => return self.send(&format!("{tag} {reply}")),
        };
        // Watching starts before the scan, so nothing that happens after it goes unnoticed.
        let watch = FolderWatch::new(&folder.path)
            .inspect_err(|e| tracing::debug!("folder not watched, refreshes rescan: {e}"))
            .ok();
        let snapshot = match blocking::run(|| folder.scan(!read_only)) {
            Ok(s) => s,
            Err(e) => {
                let reply = crate::access::imap::flags::failure("Cannot read the mailbox", &e);
                return self.send(&format!("{tag} {reply}"));
            }
        };
        let mut edited = EditedCopies::default();
        let mut screened = self
            .screen(&folder, &name, snapshot.entries, &mut edited)
            .await;
        self.saved.clear();
        let exists = screened.shown.len();
        let unseen = screened.shown.iter().position(|e| !e.flags.contains('S'));
        for line in flags::announcement(&snapshot.keywords, read_only) {
            self.send(&line);
        }
        self.send(&format!("* {exists} EXISTS"));
        if self.rev2 {
            // RFC 9051 §6.3.2: no \Recent, no UNSEEN; the mailbox's name as LIST gives it.
            screened.recent.clear();
            let shown = self.shown_name(&name);
            self.send(&format!("* LIST () \"/\" {}", wire_quoted(&shown)));
        } else {
            self.send(&format!("* {} RECENT", screened.recent.len()));
            if let Some(i) = unseen {
                self.send(&format!("* OK [UNSEEN {}] First unseen", i + 1));
            }
        }
        self.send(&format!(
            "* OK [UIDVALIDITY {}] UIDs valid",
            snapshot.uid_validity
        ));
        self.send(&format!(
            "* OK [UIDNEXT {}] Predicted next UID",
            snapshot.uid_next
        ));
        if self.condstore {
            self.send(&format!(
                "* OK [HIGHESTMODSEQ {}] Highest",
                snapshot.highest_modseq
            ));
        }
        let (mode, command) = if read_only {
            ("READ-ONLY", "EXAMINE")
        } else {
            ("READ-WRITE", "SELECT")
        };
        let folder_path = folder.path.clone();
        self.selected = Some(Selected {
            name,
            folder,
            read_only,
            uid_next: snapshot.uid_next,
            highest_modseq: snapshot.highest_modseq,
            keywords: snapshot.keywords,
            hidden: screened.hidden.into_iter().collect(),
            watch,
            stale: false,
            messages: self.shared.snapshots.intern(&folder_path, screened.shown),
            recent: screened.recent.into_iter().collect(),
            edited,
            parsed: Default::default(),
        });
        if let Some(SelectParams::Qresync {
            uid_validity,
            modseq,
            known_uids,
        }) = params
        {
            if uid_validity == snapshot.uid_validity {
                self.resync(modseq, known_uids.as_deref());
            }
        }
        self.send(&format!("{tag} OK [{mode}] {command} completed"));
    }

    /// QRESYNC at SELECT (RFC 7162 §3.2.5): what the client missed since `modseq` — the UIDs
    /// gone (of those it knows), then the flags of messages changed.
    fn resync(&mut self, modseq: u64, known_uids: Option<&str>) {
        let Some(largest) = self.selected.as_ref().map(|s| s.uid_next.saturating_sub(1)) else {
            return;
        };
        let known = known_uids
            .and_then(|k| SequenceSet::try_from(k).ok())
            .map_or(vec![(1, largest)], |set| search::intervals(&set, largest));
        let gone = self.missing_uids(&known);
        if !gone.is_empty() {
            self.send(&format!("* VANISHED (EARLIER) {gone}"));
        }
        let changed: Vec<usize> = self
            .selected
            .iter()
            .flat_map(|sel| (0..sel.len()).filter(move |&i| sel.entry(i).modseq > modseq))
            .collect();
        for i in changed {
            let line = self.flags_update(i, true);
            self.send(&line);
        }
    }

    /// The UIDs within `spans` that no message of the view (or hidden from it) has, as a
    /// sequence set: expunged, or never given. Computed from the gaps, never one by one.
    pub(super) fn missing_uids(&self, spans: &[(u32, u32)]) -> String {
        let Some(sel) = self.selected.as_ref() else {
            return String::new();
        };
        let mut present: Vec<u32> = sel.entries().iter().map(|e| e.uid).collect();
        present.extend(sel.hidden.iter().copied());
        present.sort_unstable();
        let largest = sel.uid_next.saturating_sub(1);
        let mut gaps = Vec::new();
        for &(a, b) in spans {
            let b = b.min(largest);
            let mut next = a;
            let from = present.partition_point(|&u| u < a);
            for &uid in present[from..].iter().take_while(|&&u| u <= b) {
                if uid > next {
                    gaps.push((next, uid - 1));
                }
                next = uid.saturating_add(1);
            }
            if next <= b && a <= b {
                gaps.push((next, b));
            }
        }
        gaps.iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}:{b}")
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `* n FETCH (FLAGS ...)` for a message whose flags the client should learn: with its UID
    /// under QRESYNC (or when `uid` asks), and its MODSEQ under CONDSTORE.
    pub(super) fn flags_update(&self, i: usize, uid: bool) -> String {
        let Some((sel, entry)) = self.selected.as_ref().and_then(|s| Some((s, s.get(i)?))) else {
            return String::new();
        };
        let mut items = Vec::new();
        if uid || self.qresync {
            items.push(format!("UID {}", entry.uid));
        }
        items.push(format!(
            "FLAGS {}",
            flags::render(entry.flags, sel.is_recent(i), &sel.keywords)
        ));
        if self.condstore {
            items.push(format!("MODSEQ ({})", entry.modseq));
        }
        format!("* {} FETCH ({})", i + 1, items.join(" "))
    }

    /// Tells the client of messages removed from the view (given highest sequence number
    /// first, each as its sequence number was when removed, with its UID): EXPUNGE lines, or
    /// one VANISHED under QRESYNC.
    pub(super) fn report_expunged(&mut self, removed: &[(usize, u32)]) {
        if removed.is_empty() {
            return;
        }
        self.expunged_from_kept(removed);
        if self.qresync {
            let mut uids: Vec<u32> = removed.iter().map(|&(_, uid)| uid).collect();
            uids.sort_unstable();
            self.send(&format!("* VANISHED {}", wire::sequence_set(uids)));
            return;
        }
        for &(i, _) in removed {
            self.send(&format!("* {} EXPUNGE", i + 1));
        }
    }

    /// Turns CONDSTORE on (ENABLE, or the first command that uses it); with a mailbox selected,
    /// the client learns its HIGHESTMODSEQ then (RFC 7162 §3.1).
    pub(super) fn enable_condstore(&mut self) {
        if self.condstore {
            return;
        }
        self.condstore = true;
        if let Some(highest) = self.selected.as_ref().map(|s| s.highest_modseq) {
            self.send(&format!("* OK [HIGHESTMODSEQ {highest}] Highest"));
        }
    }

    /// Announces the folder's keywords again when they changed since last told.
    pub(super) fn announce_keywords(&mut self, keywords: Keywords) {
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        if sel.keywords == keywords {
            return;
        }
        sel.keywords = keywords;
        for line in flags::announcement(&sel.keywords.clone(), sel.read_only) {
            self.send(&line);
        }
    }

    /// Rescans the selected folder and reports what changed: expunges, new messages, flags.
    pub(super) async fn refresh(&mut self) {
        self.refresh_with(Report::ALL).await;
    }

    /// Rescans the selected folder and reports the changes `report` names (new messages
    /// always); the others stay to be reported by the next refresh. The UIDs of the messages
    /// new to the view.
    pub(super) async fn refresh_with(&mut self, report: Report) -> Vec<u32> {
        let Some(sel) = self.selected.as_ref() else {
            return Vec::new();
        };
        if !sel.stale && sel.watch.as_ref().is_some_and(|w| !w.take_events()) {
            // Nothing changed in the folder since the last look.
            return Vec::new();
        }
        let Ok(snapshot) = blocking::run(|| sel.folder.scan(!sel.read_only)) else {
            return Vec::new();
        };
        self.announce_keywords(snapshot.keywords.clone());
        let Some(sel) = self.selected.as_mut() else {
            return Vec::new();
        };
        let (folder, name) = (sel.folder.clone(), sel.name.clone());
        let now: HashMap<u32, &MailEntry> = snapshot.entries.iter().map(|e| (e.uid, e)).collect();
        let mut held_back = false;
        // Expunged by someone else: highest sequence numbers first, each as numbered then.
        let mut removed = Vec::new();
        for i in (0..sel.len()).rev() {
            if !now.contains_key(&sel.entry(i).uid) {
                if report.expunges {
                    removed.push((i, sel.remove(i)));
                } else {
                    held_back = true;
                }
            }
        }
        // The rest as they are now (flags, mod-sequences), then what is new. Messages whose
        // expunge or flag change is held back stay as the client knows them.
        let mut list = Vec::with_capacity(snapshot.entries.len());
        let mut changed = Vec::new();
        for held in sel.entries() {
            match now.get(&held.uid) {
                Some(&current) if current.flags != held.flags && !report.flags => {
                    held_back = true;
                    list.push(held.clone());
                }
                Some(&current) => {
                    if current.flags != held.flags {
                        changed.push(held.uid);
                    }
                    let mut current = current.clone();
                    current.recent = false;
                    list.push(current);
                }
                None => list.push(held.clone()),
            }
        }
        sel.stale = held_back;
        let known: HashSet<u32> = sel
            .entries()
            .iter()
            .map(|e| e.uid)
            .chain(sel.hidden.iter().copied())
            .collect();
        let fresh: Vec<MailEntry> = snapshot
            .entries
            .iter()
            .filter(|e| !known.contains(&e.uid))
            .cloned()
            .collect();
        sel.uid_next = snapshot.uid_next;
        sel.highest_modseq = snapshot.highest_modseq;
        self.report_expunged(&removed);
        let mut edited = self
            .selected
            .as_mut()
            .map(|s| std::mem::take(&mut s.edited))
            .unwrap_or_default();
        let mut screened = self.screen(&folder, &name, fresh, &mut edited).await;
        if self.rev2 {
            screened.recent.clear();
        }
        let Some(sel) = self.selected.as_mut() else {
            return Vec::new();
        };
        let new_uids: Vec<u32> = screened.shown.iter().map(|e| e.uid).collect();
        sel.hidden.extend(screened.hidden);
        sel.recent.extend(screened.recent);
        sel.edited = edited;
        list.extend(screened.shown);
        list.sort_by_key(|e| e.uid);
        sel.messages = self.shared.snapshots.intern(&folder.path, list);
        let mut lines: Vec<String> = changed
            .iter()
            .filter_map(|&uid| self.selected.as_ref()?.position(uid))
            .map(|i| self.flags_update(i, report.uid))
            .collect();
        let Some(sel) = self.selected.as_ref() else {
            return Vec::new();
        };
        if !new_uids.is_empty() {
            lines.push(format!("* {} EXISTS", sel.len()));
            if !self.rev2 {
                lines.push(format!("* {} RECENT", sel.recent_count()));
            }
        }
        for line in lines {
            self.send(&line);
        }
        new_uids
    }

    /// IDLE: changes are reported as the folder's change notification reports them (polling
    /// every few seconds only where notification is not available), until DONE. After a
    /// NOTIFY, IDLE reports what NOTIFY asks for and nothing else (RFC 5465 §4).
    pub(super) async fn idle(&mut self, tag: &str) -> Next {
        // The selected folder's watch wakes IDLE; it is lent to this loop and given back.
        let watch = self.selected.as_mut().and_then(|sel| sel.watch.take());
        let next = self.idle_with(tag, watch.as_ref()).await;
        if let Some(sel) = self.selected.as_mut() {
            sel.watch = watch;
        }
        next
    }

    async fn idle_with(&mut self, tag: &str, watch: Option<&FolderWatch>) -> Next {
        self.send("+ idling");
        let started = tokio::time::Instant::now();
        loop {
            if let Some(line) = self.framer.take_line() {
                if line.eq_ignore_ascii_case(b"DONE") {
                    self.send(&format!("{tag} OK IDLE terminated"));
                } else {
                    self.send(&format!("{tag} BAD Expected DONE"));
                }
                return Next::Continue;
            }
            if started.elapsed() > AUTOLOGOUT {
                self.send("* BYE Idle for too long");
                return Next::Close;
            }
            // Replies go out before the wait (a flush cut short by a wake-up would be lost).
            if self.client.conn.flush().await.is_err() {
                return Next::Close;
            }
            let selected = (self.selected.is_some() && self.reports_selected()).then_some(watch);
            let (others, recheck) = self
                .notify
                .as_deref()
                .map_or((None, false), |n| n.other_mailboxes());
            let input = self.client.conn.read_until(AUTOLOGOUT, |bytes| {
                self.framer.push(bytes);
                (bytes.len(), true)
            });
            let drain = &self.client.drain;
            let woke = tokio::select! {
                read = input => match read {
                    Ok(()) => None,
                    Err(Line::TimedOut) => Some(Wake::Selected),
                    Err(_) => return Next::Close,
                },
                woke = wake::wake(selected, others, recheck) => Some(woke),
                () = drain.requested() => {
                    self.send(SHUTDOWN_BYE);
                    return Next::Close;
                }
            };
            let Some(woke) = woke else {
                continue;
            };
            if self.notify_used {
                if self.push_notifications(woke).await.is_err() {
                    return Next::Close;
                }
                continue;
            }
            self.refresh().await;
            if self.client.conn.flush().await.is_err() {
                return Next::Close;
            }
        }
    }
}
