//! NOTIFY (RFC 5465) in a session: `NOTIFY SET` / `NOTIFY NONE`, and the notifications sent
//! between commands and during IDLE.
//!
//! The selected mailbox is watched as IDLE watches it (its `FolderWatch`) and reported by the
//! view's refresh, limited to the events asked for: EXISTS (then FETCH of the attributes
//! MessageNew names), EXPUNGE or VANISHED (held back for SELECTED-DELAYED until a command
//! that allows them), FETCH (UID FLAGS) for FlagChange. Other mailboxes are watched on one
//! inotify instance per session (`MaildirWatch`: their `new/` and `cur/`, the Maildir's tree
//! and its subscriptions file); a change there is told as an unsolicited STATUS, a folder
//! made or removed as LIST (MailboxName), a subscription change as LIST with or without
//! `\Subscribed` (SubscriptionChange).
//!
//! The client's share of memory is bounded: notifications are queued at most [`QUEUE`] bytes
//! ahead of what the client has taken; past that the session waits for the client, and one
//! that takes nothing for [`STALL`] is told `* OK [NOTIFICATIONOVERFLOW]` and gets no more
//! notifications (as after NOTIFY NONE, RFC 5465 §5.8). Changes themselves are never queued:
//! each wake-up reads the folders as they are now.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::CommandCodec;

use super::super::notify::{self as syntax, Events, Filter, Group, Refusal, Request};
use super::super::{extensions, framing, mutf7};
use super::mailboxes::quoted;
use super::view::Report;
use super::wake::{wake, Wake};
use super::{ImapSession, Next};
use crate::net::connection::Line;
use crate::store::mailbox::{list_folders, Folder, Snapshot};
use crate::store::subscriptions;
use crate::store::watch::{Changes, MaildirWatch};
use crate::sys::blocking;

/// Folders one session may watch besides the selected one (two inotify watches each).
pub const WATCHED: usize = 256;
/// Notification bytes queued ahead of what the client has taken before the session waits.
pub const QUEUE: usize = 256 * 1024;
/// How long a client may take none of its notifications before they stop.
pub const STALL: Duration = Duration::from_secs(10);

/// What the session has told (or would tell) of a watched mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Summary {
    validity: u32,
    uid_next: u32,
    messages: usize,
    unseen: usize,
    highest_modseq: u64,
}

impl Summary {
    fn of(snapshot: &Snapshot) -> Summary {
        Summary {
            validity: snapshot.uid_validity,
            uid_next: snapshot.uid_next,
            messages: snapshot.entries.len(),
            unseen: snapshot
                .entries
                .iter()
                .filter(|e| !e.flags.contains('S'))
                .count(),
            highest_modseq: snapshot.highest_modseq,
        }
    }
}

/// STATUS items, in the order they are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Items {
    messages: bool,
    uid_next: bool,
    validity: bool,
    unseen: bool,
    modseq: bool,
}

impl Items {
    fn any(&self) -> bool {
        self.messages || self.uid_next || self.validity || self.unseen || self.modseq
    }

    fn union(self, o: Items) -> Items {
        Items {
            messages: self.messages || o.messages,
            uid_next: self.uid_next || o.uid_next,
            validity: self.validity || o.validity,
            unseen: self.unseen || o.unseen,
            modseq: self.modseq || o.modseq,
        }
    }

    /// What a mailbox's first STATUS carries (RFC 5465 §3.1): MESSAGES, UIDNEXT, UIDVALIDITY
    /// for MessageNew; MESSAGES for MessageExpunge; UIDVALIDITY, HIGHESTMODSEQ for FlagChange.
    /// UNSEEN too where new messages or flags are watched (what a client shows of a mailbox).
    fn initial(events: Events, condstore: bool) -> Items {
        Items {
            messages: events.new || events.expunge,
            uid_next: events.new,
            validity: events.new || events.flags,
            unseen: events.new || events.flags,
            modseq: events.flags || (condstore && (events.new || events.expunge)),
        }
    }

    /// What to tell of what happened, for the events asked for (RFC 5465 §5.1-5.3).
    fn changed(events: Events, happened: Happened, condstore: bool) -> Items {
        if happened.validity {
            return Items::initial(events, condstore).union(Items {
                validity: true,
                ..Items::default()
            });
        }
        let mut items = Items::default();
        if happened.new && events.new {
            items = items.union(Items {
                messages: true,
                uid_next: true,
                unseen: true,
                modseq: condstore,
                ..Items::default()
            });
        }
        if happened.expunge && events.expunge {
            items = items.union(Items {
                messages: true,
                uid_next: true,
                unseen: events.new || events.flags,
                modseq: condstore,
                ..Items::default()
            });
        }
        if happened.flags && events.flags {
            items = items.union(Items {
                validity: true,
                unseen: true,
                modseq: true,
                ..Items::default()
            });
        }
        items
    }
}

/// What happened in a mailbox between two looks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Happened {
    new: bool,
    expunge: bool,
    flags: bool,
    validity: bool,
}

fn compare(old: &Summary, snapshot: &Snapshot) -> Happened {
    if snapshot.uid_validity != old.validity {
        return Happened {
            new: true,
            expunge: true,
            flags: true,
            validity: true,
        };
    }
    let older = |uid: u32| uid < old.uid_next;
    let kept = snapshot.entries.iter().filter(|e| older(e.uid)).count();
    Happened {
        new: snapshot.uid_next != old.uid_next,
        expunge: kept < old.messages,
        // A flag change gives the message a new mod-sequence.
        flags: snapshot
            .entries
            .iter()
            .any(|e| older(e.uid) && e.modseq > old.highest_modseq),
        validity: false,
    }
}

/// The selected mailbox's part of a NOTIFY SET.
#[derive(Debug, Clone)]
pub(super) struct SelectedEvents {
    pub delayed: bool,
    pub events: Events,
    pub fetch: Option<Vec<u8>>,
}

/// What one NOTIFY SET asked for, and what the session knows of the mailboxes it watches.
pub(super) struct Notifier {
    selected: Option<SelectedEvents>,
    others: Vec<Group>,
    /// `None` where inotify is not available: then the mailboxes are polled.
    watch: Option<MaildirWatch>,
    summaries: BTreeMap<String, Summary>,
    folders: BTreeSet<String>,
    subscribed: BTreeSet<String>,
    recheck: bool,
}

impl Notifier {
    /// The other mailboxes' watch, for [`super::wake::wake`]: `None` when there are none to
    /// watch, `Some(None)` to poll them; and whether to read the tree again soon.
    pub(super) fn other_mailboxes(&self) -> (Option<Option<&MaildirWatch>>, bool) {
        (
            (!self.others.is_empty()).then_some(self.watch.as_ref()),
            self.recheck,
        )
    }
}

/// What the mailbox side of NOTIFY needs of the session.
struct Scope<'a> {
    maildir: &'a Path,
    selected: Option<&'a str>,
    condstore: bool,
    rev2: bool,
}

impl Scope<'_> {
    fn shown(&self, name: &str) -> String {
        let shown = match self.rev2 {
            true => mutf7::decode(name).unwrap_or_else(|| name.to_string()),
            false => name.to_string(),
        };
        quoted(&shown)
    }
}

/// Whether `filter` (not a selected one) takes mailbox `name`.
fn matches(filter: &Filter, name: &str, subscribed: &BTreeSet<String>) -> bool {
    match filter {
        Filter::Selected { .. } => false,
        // Mail is delivered to INBOX only (RFC 5465 §6.3).
        Filter::Inboxes => name == "INBOX",
        Filter::Personal => true,
        Filter::Subscribed => subscribed.contains(name),
        Filter::Subtree(roots) => roots.iter().any(|r| {
            name == r
                || name
                    .strip_prefix(r.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        }),
        Filter::Mailboxes(names) => names.iter().any(|n| n == name),
    }
}

fn read_tree(maildir: &Path) -> BTreeSet<String> {
    list_folders(maildir).into_iter().collect()
}

fn read_subscriptions(maildir: &Path) -> BTreeSet<String> {
    subscriptions::read(maildir).into_iter().collect()
}

fn scan(maildir: &Path, name: &str) -> Option<Snapshot> {
    Folder::open_in(maildir, name).ok()?.scan(false).ok()
}

impl Notifier {
    fn new(groups: Vec<Group>, maildir: &Path) -> Notifier {
        let mut selected = None;
        let mut others = Vec::new();
        for group in groups {
            match group.filter {
                Filter::Selected { delayed } => {
                    selected = Some(SelectedEvents {
                        delayed,
                        events: group.events,
                        fetch: group.fetch,
                    })
                }
                _ if group.events.any() => others.push(group),
                _ => {}
            }
        }
        let watch = match others.is_empty() {
            true => None,
            false => MaildirWatch::new(maildir)
                .inspect_err(|e| tracing::debug!("mailboxes not watched, NOTIFY polls: {e}"))
                .ok(),
        };
        Notifier {
            selected,
            others,
            watch,
            summaries: BTreeMap::new(),
            folders: read_tree(maildir),
            subscribed: read_subscriptions(maildir),
            recheck: false,
        }
    }

    /// The events asked for about mailbox `name` (not as the selected one).
    fn events_for(&self, name: &str) -> Events {
        self.others
            .iter()
            .filter(|g| matches(&g.filter, name, &self.subscribed))
            .fold(Events::default(), |all, g| all.union(g.events))
    }

    /// The selected mailbox's message events, if any were asked for.
    pub(super) fn selected_events(&self) -> Option<&SelectedEvents> {
        self.selected.as_ref().filter(|s| s.events.messages())
    }

    /// The mailboxes whose messages are watched: existing ones some group asks message events
    /// of, but the selected one (reported as selected, RFC 5465 §6.1).
    fn desired(&self, selected: Option<&str>) -> BTreeSet<String> {
        self.folders
            .iter()
            .filter(|name| Some(name.as_str()) != selected)
            .filter(|name| self.events_for(name).messages())
            .cloned()
            .collect()
    }

    /// Watches the mailboxes [`Notifier::desired`] names, reading each newly watched one for
    /// what is known of it (nothing is told); `false` when they are too many.
    fn reconcile(&mut self, scope: &Scope) -> bool {
        let desired = self.desired(scope.selected);
        if desired.len() > WATCHED {
            return false;
        }
        let gone: Vec<String> = self
            .summaries
            .keys()
            .filter(|n| !desired.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.summaries.remove(&name);
            if let Some(watch) = self.watch.as_mut() {
                watch.unwatch(&name);
            }
        }
        for name in desired {
            if self.summaries.contains_key(&name) {
                continue;
            }
            if let (Some(watch), Ok(path)) = (
                self.watch.as_mut(),
                crate::store::mailbox::folder_path(scope.maildir, &name),
            ) {
                // Watching starts before the read, so nothing after it goes unnoticed.
                if let Err(e) = watch.watch(&name, &path) {
                    tracing::debug!("{name} not watched: {e}");
                    self.watch = None;
                }
            }
            if let Some(snapshot) = scan(scope.maildir, &name) {
                self.summaries.insert(name, Summary::of(&snapshot));
            }
        }
        true
    }

    /// NOTIFY SET STATUS: a STATUS for every watched mailbox.
    fn initial_status(&self, scope: &Scope) -> Vec<String> {
        self.summaries
            .iter()
            .map(|(name, summary)| {
                let items = Items::initial(self.events_for(name), scope.condstore);
                status_line(&scope.shown(name), summary, items)
            })
            .collect()
    }

    /// What to tell of `changes`; `None` when the mailboxes became too many to watch.
    fn lines(&mut self, scope: &Scope, changes: &Changes) -> Option<Vec<String>> {
        let mut lines = Vec::new();
        if changes.tree || changes.all {
            let now = read_tree(scope.maildir);
            lines.extend(self.name_lines(scope, &now, &changes.renames));
            self.folders = now;
        }
        if changes.subscriptions || changes.all {
            let now = read_subscriptions(scope.maildir);
            lines.extend(self.subscription_lines(scope, &now));
            self.subscribed = now;
        }
        if !self.reconcile(scope) {
            return None;
        }
        let looked: Vec<String> = match changes.all || self.watch.is_none() {
            true => self.summaries.keys().cloned().collect(),
            false => changes
                .folders
                .iter()
                .filter(|n| self.summaries.contains_key(*n))
                .cloned()
                .collect(),
        };
        for name in looked {
            let (Some(old), Some(snapshot)) =
                (self.summaries.get(&name), scan(scope.maildir, &name))
            else {
                continue;
            };
            let happened = compare(old, &snapshot);
            let now = Summary::of(&snapshot);
            let items = Items::changed(self.events_for(&name), happened, scope.condstore);
            if items.any() && now != *old {
                lines.push(status_line(&scope.shown(&name), &now, items));
            }
            self.summaries.insert(name, now);
        }
        Some(lines)
    }

    /// MailboxName (RFC 5465 §5.4): a LIST for each mailbox made, one with `\NonExistent` for
    /// each removed, and for each renamed (as `renames` saw it) one for the new name with the
    /// old one as OLDNAME.
    fn name_lines(
        &self,
        scope: &Scope,
        now: &BTreeSet<String>,
        renames: &[(String, String)],
    ) -> Vec<String> {
        let renamed: Vec<&(String, String)> = renames
            .iter()
            .filter(|(from, _)| self.folders.contains(from) && !now.contains(from))
            .filter(|(_, to)| now.contains(to) && !self.folders.contains(to))
            .collect();
        let attributes = |name: &str| match has_children(now, name) {
            true => "\\HasChildren",
            false => "\\HasNoChildren",
        };
        let mut lines: Vec<String> = renamed
            .iter()
            .filter(|(from, to)| self.events_for(from).names || self.events_for(to).names)
            .map(|(from, to)| {
                format!(
                    "* LIST ({}) \"/\" {} (\"OLDNAME\" ({}))",
                    attributes(to),
                    scope.shown(to),
                    scope.shown(from)
                )
            })
            .collect();
        let made = now
            .difference(&self.folders)
            .filter(|n| !renamed.iter().any(|(_, to)| to == *n))
            .map(|n| (n, true));
        let removed = self
            .folders
            .difference(now)
            .filter(|n| !renamed.iter().any(|(from, _)| from == *n))
            .map(|n| (n, false));
        lines.extend(
            made.chain(removed)
                .filter(|(name, _)| self.events_for(name).names)
                .map(|(name, exists)| {
                    let attributes = match exists {
                        false => "\\NonExistent",
                        true => attributes(name),
                    };
                    format!("* LIST ({attributes}) \"/\" {}", scope.shown(name))
                }),
        );
        lines
    }

    /// SubscriptionChange (RFC 5465 §5.5): a LIST for each name subscribed or unsubscribed,
    /// `\Subscribed` when it now is.
    fn subscription_lines(&self, scope: &Scope, now: &BTreeSet<String>) -> Vec<String> {
        let changed = now.symmetric_difference(&self.subscribed);
        changed
            .filter(|name| {
                // A `subscribed` filter takes the name as it was or as it is.
                self.events_for(name).subscriptions
                    || self
                        .others
                        .iter()
                        .any(|g| g.events.subscriptions && matches(&g.filter, name, now))
            })
            .map(|name| {
                let mut attributes = Vec::new();
                if !self.folders.contains(name) {
                    attributes.push("\\NonExistent");
                }
                if now.contains(name) {
                    attributes.push("\\Subscribed");
                }
                format!(
                    "* LIST ({}) \"/\" {}",
                    attributes.join(" "),
                    scope.shown(name)
                )
            })
            .collect()
    }
}

fn has_children(folders: &BTreeSet<String>, name: &str) -> bool {
    let prefix = format!("{name}/");
    folders
        .range(prefix.clone()..)
        .next()
        .is_some_and(|n| n.starts_with(&prefix))
}

fn status_line(shown: &str, s: &Summary, items: Items) -> String {
    let mut values = Vec::new();
    if items.messages {
        values.push(format!("MESSAGES {}", s.messages));
    }
    if items.uid_next {
        values.push(format!("UIDNEXT {}", s.uid_next));
    }
    if items.validity {
        values.push(format!("UIDVALIDITY {}", s.validity));
    }
    if items.unseen {
        values.push(format!("UNSEEN {}", s.unseen));
    }
    if items.modseq {
        values.push(format!("HIGHESTMODSEQ {}", s.highest_modseq));
    }
    format!("* STATUS {shown} ({})", values.join(" "))
}

/// The client is gone.
pub(super) struct Gone;

impl ImapSession {
    /// NOTIFY; `None` for any other command.
    pub(super) async fn notify_command(&mut self, command: &[u8]) -> Option<Next> {
        let parsed = syntax::parse(command)?;
        let tag = framing::tag_of(command);
        if self.user.is_none() {
            self.send(&format!("{tag} BAD Log in first"));
            return Some(Next::Continue);
        }
        match parsed {
            Err(Refusal::Bad(why)) => self.send(&format!("{tag} BAD {why}")),
            // RFC 5465 §3.1: NO (not BAD), listing the events that are supported.
            Err(Refusal::BadEvent(names)) => self.send(&format!(
                "{tag} NO [BADEVENT ({})] Events not supported: {names}",
                syntax::SUPPORTED
            )),
            Err(Refusal::TooMany) => self.send(&format!(
                "{tag} NO [NOTIFICATIONOVERFLOW] At most {} mailbox names",
                syntax::NAMES
            )),
            Ok(Request::None) => {
                self.notify = None;
                self.notify_used = true;
                self.send(&format!("{tag} OK NOTIFY completed"));
            }
            Ok(Request::Set { status, groups }) => self.notify_set(&tag, status, groups).await,
        }
        Some(Next::Continue)
    }

    /// A name as given in NOTIFY, as folders are named on disk (see `mailbox_name`).
    fn disk_name(&self, name: &str) -> String {
        if self.rev2 && !name.chars().any(char::is_control) {
            mutf7::encode(name)
        } else {
            name.to_string()
        }
    }

    async fn notify_set(&mut self, tag: &str, status: bool, mut groups: Vec<Group>) {
        for group in &mut groups {
            if let Filter::Subtree(names) | Filter::Mailboxes(names) = &mut group.filter {
                for name in names.iter_mut() {
                    *name = self.disk_name(name);
                }
            }
            if let Some(fetch) = &group.fetch {
                if fetch_command(1, fetch, self).is_none() {
                    return self.send(&format!("{tag} BAD Bad FETCH attributes for MessageNew"));
                }
            }
        }
        // FlagChange is told with mod-sequences (STATUS HIGHESTMODSEQ, RFC 5465 §5.1): it
        // turns CONDSTORE on, as Dovecot does.
        if groups.iter().any(|g| g.events.flags) {
            self.enable_condstore();
        }
        let maildir = self.maildir();
        let selected = self.selected.as_ref().map(|s| s.name.clone());
        let scope = Scope {
            maildir: &maildir,
            selected: selected.as_deref(),
            condstore: self.condstore,
            rev2: self.rev2,
        };
        let made = blocking::run(|| {
            let mut notifier = Notifier::new(groups, &maildir);
            notifier.reconcile(&scope).then_some(notifier)
        });
        let Some(notifier) = made else {
            return self.send(&format!(
                "{tag} NO [NOTIFICATIONOVERFLOW] More than {WATCHED} mailboxes to watch"
            ));
        };
        if status {
            for line in notifier.initial_status(&scope) {
                self.send(&line);
            }
        }
        self.notify = Some(Box::new(notifier));
        self.notify_used = true;
        // RFC 5465 §3.1: NOTIFY SET implies a NOOP.
        self.refresh().await;
        self.send(&format!("{tag} OK NOTIFY completed"));
    }

    /// Whether changes of the selected mailbox are reported unasked (IDLE without NOTIFY, or
    /// with the selected mailbox's message events).
    pub(super) fn reports_selected(&self) -> bool {
        match &self.notify {
            Some(notifier) => notifier.selected_events().is_some(),
            None => !self.notify_used,
        }
    }

    /// Waits for more of the next command. Between commands, with NOTIFY set, what changes
    /// meanwhile is told as it happens.
    pub(super) async fn receive_notifying(&mut self, limit: Duration) -> Result<(), Line> {
        let started = tokio::time::Instant::now();
        loop {
            let left = limit.saturating_sub(started.elapsed());
            if self.notify.is_none() || !self.framer.buffered().is_empty() || left.is_zero() {
                return self.receive(left).await;
            }
            if self.client.drain.is_draining() {
                return Err(Line::Draining);
            }
            // The selection may have changed since the last wait.
            if !self.notify_sync().await {
                continue;
            }
            // Replies go out before the wait (a flush cut short by a wake-up would be lost).
            if self.client.conn.flush().await.is_err() {
                return Err(Line::Closed);
            }
            let selected = match self.reports_selected() {
                true => self.selected.as_ref().map(|s| s.watch.as_ref()),
                false => None,
            };
            let (others, recheck) = self
                .notify
                .as_deref()
                .map_or((None, false), Notifier::other_mailboxes);
            let framer = &mut self.framer;
            let read = self.client.conn.read_until(left, |bytes| {
                framer.push(bytes);
                (bytes.len(), true)
            });
            let woke = tokio::select! {
                read = read => return read,
                woke = wake(selected, others, recheck) => woke,
                () = self.client.drain.requested() => return Err(Line::Draining),
            };
            if self.push_notifications(woke).await.is_err() {
                return Err(Line::Closed);
            }
        }
    }

    /// Watches what the current selection calls for; `false` after an overflow.
    async fn notify_sync(&mut self) -> bool {
        let Some(mut notifier) = self.notify.take() else {
            return false;
        };
        let maildir = self.maildir();
        let selected = self.selected.as_ref().map(|s| s.name.clone());
        let scope = Scope {
            maildir: &maildir,
            selected: selected.as_deref(),
            condstore: self.condstore,
            rev2: self.rev2,
        };
        if !blocking::run(|| notifier.reconcile(&scope)) {
            self.overflow("Too many mailboxes to watch");
            return false;
        }
        self.notify = Some(notifier);
        true
    }

    /// Tells what woke the session, as NOTIFY asks; `Err` when the client is gone.
    pub(super) async fn push_notifications(&mut self, woke: Wake) -> Result<(), Gone> {
        if self.notify.is_none() {
            return Ok(());
        }
        match woke {
            Wake::Selected => {
                if let Some(sel) = self.selected.as_mut() {
                    sel.stale = true;
                }
                self.push_selected().await?;
            }
            Wake::Others(changes) => self.push_others(&changes, changes.tree),
            Wake::Recheck => {
                let tree = Changes {
                    tree: true,
                    ..Changes::default()
                };
                self.push_others(&tree, false);
            }
        }
        self.deliver().await.map(|_| ())
    }

    /// The selected mailbox's changes, as its NOTIFY events ask.
    async fn push_selected(&mut self) -> Result<(), Gone> {
        let Some(spec) = self
            .notify
            .as_ref()
            .and_then(|n| n.selected_events().cloned())
        else {
            return Ok(());
        };
        let report = Report {
            expunges: !spec.delayed,
            flags: spec.events.flags,
            uid: true,
        };
        let new = self.refresh_with(report).await;
        let Some(fetch) = spec.fetch else {
            return Ok(());
        };
        // RFC 5465 §5.2: the attributes MessageNew names, for each new message.
        for uid in new {
            self.push_fetch(uid, &fetch).await;
            if self.client.conn.pending() > QUEUE && !self.deliver().await? {
                break;
            }
        }
        Ok(())
    }

    async fn push_fetch(&mut self, uid: u32, fetch: &[u8]) {
        let Some((bytes, extras)) = fetch_command(uid, fetch, self) else {
            return;
        };
        let Ok((_, command)) = CommandCodec::default().decode(&bytes) else {
            return;
        };
        if let CommandBody::Fetch {
            sequence_set,
            macro_or_item_names,
            ..
        } = command.body
        {
            self.pushing = true;
            // The tagged reply's text is not for the client: nothing asked.
            let _ = self
                .fetch(&sequence_set, &macro_or_item_names, true, &extras)
                .await;
            self.pushing = false;
        }
    }

    /// Other mailboxes' changes: STATUS and LIST lines; `recheck`: read the tree again soon.
    fn push_others(&mut self, changes: &Changes, recheck: bool) {
        let Some(mut notifier) = self.notify.take() else {
            return;
        };
        let maildir: PathBuf = self.maildir();
        let selected = self.selected.as_ref().map(|s| s.name.clone());
        let scope = Scope {
            maildir: &maildir,
            selected: selected.as_deref(),
            condstore: self.condstore,
            rev2: self.rev2,
        };
        let lines = blocking::run(|| notifier.lines(&scope, changes));
        notifier.recheck = recheck;
        match lines {
            Some(lines) => {
                self.notify = Some(notifier);
                for line in lines {
                    self.send(&line);
                }
            }
            None => self.overflow("Too many mailboxes to watch"),
        }
    }

    /// Sends what is queued while the client takes it; `Ok(false)` when it stalled (and
    /// notifications stopped), `Err` when it is gone.
    pub(super) async fn deliver(&mut self) -> Result<bool, Gone> {
        match self.client.conn.flush_within(STALL).await {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.overflow("The client did not read its notifications");
                Ok(false)
            }
            Err(_) => Err(Gone),
        }
    }

    /// RFC 5465 §5.8: tells the client, then behaves as after NOTIFY NONE.
    fn overflow(&mut self, why: &str) {
        tracing::debug!("NOTIFY turned off: {why}");
        self.notify = None;
        self.notify_used = true;
        self.send(&format!("* OK [NOTIFICATIONOVERFLOW] {why}"));
    }
}

/// `x UID FETCH uid (attributes)` with its extension syntax taken out, as FETCH reads it.
fn fetch_command(
    uid: u32,
    fetch: &[u8],
    session: &ImapSession,
) -> Option<(Vec<u8>, extensions::Extras)> {
    let mut bytes = format!("x UID FETCH {uid} ").into_bytes();
    bytes.extend_from_slice(fetch);
    bytes.extend_from_slice(b"\r\n");
    let (bytes, extras) = extensions::take(&bytes, session).ok()?;
    let bytes = bytes.into_owned();
    match CommandCodec::default().decode(&bytes) {
        Ok((_, command)) if matches!(command.body, CommandBody::Fetch { uid: true, .. }) => {}
        _ => return None,
    }
    Some((bytes, extras))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(validity: u32, uid_next: u32, entries: &[(u32, u64, &str)]) -> Snapshot {
        use crate::store::mailbox::{Flags, MailEntry};
        Snapshot {
            uid_validity: validity,
            uid_next,
            highest_modseq: entries.iter().map(|e| e.1).max().unwrap_or(0),
            entries: entries
                .iter()
                .map(|&(uid, modseq, flags)| MailEntry {
                    uid,
                    size: 1,
                    internal_date: 0,
                    modseq,
                    key: uid.to_string().into(),
                    in_new: false,
                    flags: Flags::parse(flags),
                    recent: false,
                })
                .collect(),
            keywords: Default::default(),
        }
    }

    #[test]
    fn what_happened_between_two_looks() {
        let before = snapshot(7, 4, &[(1, 1, ""), (2, 2, "S"), (3, 3, "")]);
        let old = Summary::of(&before);
        assert_eq!(old.unseen, 2);
        assert_eq!(compare(&old, &before), Happened::default());
        let delivered = snapshot(7, 5, &[(1, 1, ""), (2, 2, "S"), (3, 3, ""), (4, 4, "")]);
        assert_eq!(
            compare(&old, &delivered),
            Happened {
                new: true,
                ..Happened::default()
            }
        );
        let expunged = snapshot(7, 4, &[(1, 1, ""), (3, 3, "")]);
        assert!(compare(&old, &expunged).expunge);
        let flagged = snapshot(7, 4, &[(1, 5, "S"), (2, 2, "S"), (3, 3, "")]);
        let happened = compare(&old, &flagged);
        assert!(happened.flags && !happened.new && !happened.expunge);
        assert!(compare(&old, &snapshot(8, 4, &[])).validity);
    }

    #[test]
    fn status_items_follow_the_events_asked_for() {
        let new_only = Events {
            new: true,
            ..Events::default()
        };
        let expunged = Happened {
            expunge: true,
            ..Happened::default()
        };
        assert!(!Items::changed(new_only, expunged, false).any());
        let s = Summary {
            validity: 9,
            uid_next: 5,
            messages: 3,
            unseen: 1,
            highest_modseq: 12,
        };
        let items = Items::changed(
            new_only,
            Happened {
                new: true,
                ..expunged
            },
            false,
        );
        assert_eq!(
            status_line("\"x\"", &s, items),
            "* STATUS \"x\" (MESSAGES 3 UIDNEXT 5 UNSEEN 1)"
        );
        let flags = Events {
            flags: true,
            ..Events::default()
        };
        assert_eq!(
            status_line("x", &s, Items::initial(flags, false)),
            "* STATUS x (UIDVALIDITY 9 UNSEEN 1 HIGHESTMODSEQ 12)"
        );
    }

    #[test]
    fn filters_take_their_mailboxes() {
        let subscribed: BTreeSet<String> = ["Lists/a".to_string()].into();
        let subtree = Filter::Subtree(vec!["Lists".into()]);
        assert!(matches(&subtree, "Lists", &subscribed));
        assert!(matches(&subtree, "Lists/rust", &subscribed));
        assert!(!matches(&subtree, "Listsx", &subscribed));
        assert!(matches(&Filter::Inboxes, "INBOX", &subscribed));
        assert!(!matches(&Filter::Inboxes, "Sent", &subscribed));
        assert!(matches(&Filter::Subscribed, "Lists/a", &subscribed));
        assert!(!matches(&Filter::Subscribed, "Lists", &subscribed));
        assert!(!matches(
            &Filter::Selected { delayed: false },
            "INBOX",
            &subscribed
        ));
    }
}
