//! One IMAP connection: NOT AUTHENTICATED -> AUTHENTICATED -> SELECTED -> LOGOUT. The framer
//! cuts whole commands out of the stream (synchronising literals get a `+` continuation;
//! LITERAL+ ones do not; literals over the budget — 64 KiB a command before login, a message's
//! size after — are refused before a byte of them is read), then `imap-codec` parses each once
//! and [`ImapSession::command`] hands it to its family:
//!
//! - `auth`: STARTTLS, LOGIN, AUTHENTICATE;
//! - `mailboxes`: CREATE, DELETE, RENAME, (UN)SUBSCRIBE, LIST, LSUB, STATUS, APPEND;
//! - `multiappend`: APPEND of several messages (MULTIAPPEND) or with CATENATE;
//! - `updates`: searches kept up to date (CONTEXT=SEARCH: RETURN (UPDATE), CANCELUPDATE);
//! - `notify`: NOTIFY (RFC 5465), and what it tells between commands and during IDLE;
//! - `view`: the selected mailbox as this session shows it — SELECT, EXAMINE, refresh (NOOP,
//!   CHECK, IDLE), CLOSE, UNSELECT;
//! - `messages`: FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE;
//! - `urlauth`: RESETKEY, GENURLAUTH, URLFETCH (RFC 4467; its extended form, RFC 5524).
//!
//! ID, NAMESPACE and UID EXPUNGE, which imap-codec 1.0 does not parse, are recognised here;
//! the extension syntax it does not know is taken out first by `extensions`.

mod auth;
mod cached;
mod mailboxes;
mod messages;
mod multiappend;
mod notify;
mod quota;
mod updates;
mod urlauth;
mod view;
mod wake;

use std::sync::Arc;
use std::time::Duration;

use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::CommandCodec;

use super::budget::{self, OverBudget, Work};
use super::extensions::{self, Extras, Refused};
use super::framing::{self, Budget, Frame, Framer};
use super::sets::{self, Intervals};
use super::Imap;
use super::{flags, wire};
use crate::config::TlsMode;
use crate::message::encode;
use crate::net::connection::{Client, Line};
use crate::net::limits::LoginWindow;
use crate::store::special_use;
use crate::sys::blocking;
use crate::telemetry::metrics;

use view::Selected;

/// RFC 3501 §5.4: at least 30 minutes before an idle client is logged out.
const AUTOLOGOUT: Duration = Duration::from_secs(1800);
/// What an idle session is told when the server shuts down.
const SHUTDOWN_BYE: &str = "* BYE [UNAVAILABLE] Server shutting down";
/// Before login a command carries at most this much, literals included.
const PRE_LOGIN_COMMAND: u64 = 64 * 1024;

enum Next {
    Continue,
    Close,
}

pub struct ImapSession {
    shared: Arc<Imap>,
    /// The user's count of logged-in IMAP connections holds this one while it lasts (given
    /// back before the connection closes: a client that sees the close may log in again).
    user_slot: Option<crate::session_context::UserSlot>,
    client: Client,
    /// The canonical name of the user logged in.
    user: Option<crate::store::names::UserName>,
    auth_failures: u32,
    selected: Option<Selected>,
    /// Bytes received, cut into whole commands.
    framer: Framer,
    /// RFC 7162: mod-sequences are reported (enabled by ENABLE or the first command using them).
    condstore: bool,
    /// RFC 7162: expunges are reported as VANISHED, with UIDs.
    qresync: bool,
    /// RFC 9051 (ENABLE IMAP4rev2): UTF-8 mailbox names, ESEARCH replies, no `\Recent`.
    rev2: bool,
    /// RFC 5182: the UIDs of the last `SEARCH RETURN (SAVE)`, for `$`.
    saved: Vec<u32>,
    /// Until login: the deadline to log in by, and this connection's place among its
    /// address's connections waiting to log in.
    login_window: Option<LoginWindow>,
    /// RFC 5267: searches kept to report changes of their results.
    kept: Vec<updates::Kept>,
    /// RFC 5465: what NOTIFY SET asked for; `None` before any NOTIFY, after NOTIFY NONE and
    /// after an overflow.
    notify: Option<Box<notify::Notifier>>,
    /// A NOTIFY was given: IDLE then reports only what it asked for (RFC 5465 §4).
    notify_used: bool,
    /// A FETCH for a NOTIFY notification runs: its output waits for the notification's own
    /// bounded flush.
    pushing: bool,
}

/// What the extension syntax needs to know of this session (see `extensions::take`).
impl extensions::Context for ImapSession {
    /// The selected messages changed at or after `since` (the SEARCH key MODSEQ).
    fn changed_since(&self, since: u64) -> String {
        let uids = self.selected.iter().flat_map(|sel| {
            sel.entries()
                .iter()
                .filter(move |e| e.modseq >= since)
                .map(|e| e.uid)
        });
        match wire::sequence_set(uids) {
            set if set.is_empty() => "NOT ALL".into(),
            set => format!("UID {set}"),
        }
    }
}

impl ImapSession {
    /// The saved search result (RFC 5182 `$`), as ascending UIDs or as the sequence numbers
    /// those messages have now; empty when nothing is saved or none of them is left.
    fn saved_numbers(&self, uid: bool) -> Vec<u32> {
        let Some(sel) = self.selected.as_ref() else {
            return Vec::new();
        };
        let mut numbers: Vec<u32> = self
            .saved
            .iter()
            .filter_map(|&u| sel.position(u).map(|i| if uid { u } else { i as u32 + 1 }))
            .collect();
        numbers.sort_unstable();
        numbers
    }

    /// Resolves one sequence or UID set (`$` included), counting its ranges against `work`.
    fn intervals(
        &self,
        set: &imap_codec::imap_types::sequence::SequenceSet,
        uid: bool,
        work: &Work,
    ) -> Result<std::rc::Rc<Intervals>, OverBudget> {
        SetResolver::new(self).resolve(set, uid, work)
    }

    /// The largest sequence number and UID of the view (what `*` stands for).
    fn largest(&self) -> (u32, u32) {
        self.selected
            .as_ref()
            .map_or((0, 0), |sel| (sel.len() as u32, sel.last_uid()))
    }
}

/// Resolves the sequence sets of one command. The saved result (`$`) is worked out once per
/// numbering, on first use, and a set that is `$` alone shares it: a command naming `$` many
/// times neither recomputes nor copies it.
pub(super) struct SetResolver<'s> {
    session: &'s ImapSession,
    /// The saved result as sequence numbers, and as UIDs.
    saved: [std::cell::OnceCell<std::rc::Rc<Intervals>>; 2],
}

impl<'s> SetResolver<'s> {
    pub(super) fn new(session: &'s ImapSession) -> SetResolver<'s> {
        SetResolver {
            session,
            saved: Default::default(),
        }
    }

    fn saved(&self, uid: bool) -> &std::rc::Rc<Intervals> {
        self.saved[usize::from(uid)].get_or_init(|| {
            std::rc::Rc::new(Intervals::of_numbers(&self.session.saved_numbers(uid)))
        })
    }

    pub(super) fn resolve(
        &self,
        set: &imap_codec::imap_types::sequence::SequenceSet,
        uid: bool,
        work: &Work,
    ) -> Result<std::rc::Rc<Intervals>, OverBudget> {
        if sets::is_only_saved(set) {
            work.charge(budget::KEY_COST)?;
            return Ok(self.saved(uid).clone());
        }
        let (last_seq, last_uid) = self.session.largest();
        let largest = if uid { last_uid } else { last_seq };
        let none = Intervals::default();
        let saved = if sets::refers_to_saved(set) {
            self.saved(uid).as_ref()
        } else {
            &none
        };
        Intervals::compile(set, largest, saved, work).map(std::rc::Rc::new)
    }
}

impl ImapSession {
    pub fn new(shared: Arc<Imap>, client: Client) -> ImapSession {
        ImapSession {
            shared,
            client,
            user: None,
            user_slot: None,
            auth_failures: 0,
            selected: None,
            framer: Framer::new(),
            condstore: false,
            qresync: false,
            rev2: false,
            saved: Vec::new(),
            login_window: None,
            kept: Vec::new(),
            notify: None,
            notify_used: false,
            pushing: false,
        }
    }

    fn send(&mut self, text: &str) {
        if let Some(class) = framing::status_class(text) {
            // Kept searches report their changes before the command completes.
            self.report_kept();
            metrics::reply("imap", class);
        }
        self.client.conn.queue(text.as_bytes());
        self.client.conn.queue(b"\r\n");
    }

    fn capabilities(&self) -> String {
        let mut caps = vec![
            "IMAP4rev1",
            "IMAP4rev2",
            "SEARCHRES",
            "LITERAL+",
            "IDLE",
            "UIDPLUS",
            "MOVE",
            "NAMESPACE",
            "ID",
            "UNSELECT",
            "ENABLE",
            "CONDSTORE",
            "QRESYNC",
            "ESEARCH",
            "SORT",
            "SORT=DISPLAY",
            "THREAD=REFERENCES",
            "THREAD=ORDEREDSUBJECT",
            "SPECIAL-USE",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "COMPRESS=DEFLATE",
            "SASL-IR",
            "STATUS=SIZE",
            "BINARY",
            "MULTIAPPEND",
            "CATENATE",
            "ESORT",
            "CONTEXT=SEARCH",
            "CONTEXT=SORT",
            "PARTIAL",
            "CREATE-SPECIAL-USE",
            "NOTIFY",
            "URLAUTH",
            "URLAUTH=BINARY",
            "QUOTA",
            "QUOTA=RES-STORAGE",
        ];
        if self.client.tls {
            caps.push("AUTH=PLAIN");
        } else {
            if self.client.listener.tls == TlsMode::Starttls && self.shared.tls.is_some() {
                caps.push("STARTTLS");
            }
            caps.push("LOGINDISABLED");
        }
        caps.join(" ")
    }

    /// More bytes from the client into the framer; an error when the connection is gone.
    /// Reads more of the next command. Between commands (nothing of one buffered), a server
    /// shutdown ends the wait with `Line::Draining`.
    async fn receive(&mut self, timeout: Duration) -> Result<(), Line> {
        let may_cut = self.framer.buffered().is_empty();
        if may_cut && self.client.drain.is_draining() {
            return Err(Line::Draining);
        }
        let framer = &mut self.framer;
        let read = self.client.conn.read_until(timeout, |bytes| {
            framer.push(bytes);
            (bytes.len(), true)
        });
        if !may_cut {
            return read.await;
        }
        tokio::select! {
            read = read => read,
            () = self.client.drain.requested() => Err(Line::Draining),
        }
    }

    /// How long the client may stay silent: 30 minutes once logged in; before that, what is
    /// left of the time it has to log in.
    fn idle_limit(&self) -> Duration {
        match (&self.user, &self.login_window) {
            (Some(_), _) => AUTOLOGOUT,
            (None, Some(window)) => window.remaining(),
            (None, None) => Duration::ZERO,
        }
    }

    /// What one command may carry: little before login, a message's worth after.
    fn budget(&self) -> Budget {
        if self.user.is_none() {
            return Budget {
                literal: PRE_LOGIN_COMMAND,
                command: PRE_LOGIN_COMMAND,
            };
        }
        let literal = self.shared.config.limits.max_message_bytes as u64;
        Budget {
            literal,
            command: literal.saturating_add(1 << 20),
        }
    }

    pub async fn run(mut self) {
        // Opened at accept (it covers the TLS handshake); a connection from elsewhere opens it now.
        self.login_window = match self.client.login_window.take() {
            Some(window) => Some(window),
            None => self.shared.login_window(self.client.peer.ip()),
        };
        if self.login_window.is_none() {
            self.send(
                "* BYE [UNAVAILABLE] Too many connections from your address waiting to log in",
            );
            let _ = self.client.conn.flush().await;
            return;
        }
        let greeting = format!(
            "* OK [CAPABILITY {}] mailgate IMAP ready",
            self.capabilities()
        );
        self.send(&greeting);
        loop {
            // Commands pipelined into the framer run without a read: a turn for the other
            // tasks now and then (see `Connection::read_line`).
            tokio::task::coop::consume_budget().await;
            let budget = self.budget();
            let next = match self.framer.next(budget) {
                Frame::NeedMore => match self.receive_notifying(self.idle_limit()).await {
                    Ok(()) => Next::Continue,
                    Err(Line::TimedOut) => {
                        self.send("* BYE Idle for too long");
                        Next::Close
                    }
                    Err(Line::Draining) => {
                        self.send(SHUTDOWN_BYE);
                        Next::Close
                    }
                    Err(_) => Next::Close,
                },
                Frame::Continue => {
                    self.send("+ Ready for literal data");
                    Next::Continue
                }
                Frame::LiteralRefused { tag, length, sync } => {
                    let limit = budget.literal.min(budget.command);
                    if sync {
                        self.send(&format!(
                            "{tag} NO [TOOBIG] Literal of {length} octets is over the limit of {limit}"
                        ));
                        Next::Continue
                    } else {
                        // Its bytes are coming regardless: close rather than read them.
                        self.send("* BYE Literal too large");
                        Next::Close
                    }
                }
                Frame::LineTooLong { tag } => {
                    self.send(&format!("{tag} BAD Command line too long"));
                    Next::Continue
                }
                Frame::Command(bytes) => self.dispatch(&bytes).await,
            };
            if matches!(next, Next::Close) {
                break;
            }
        }
        let _ = self.client.conn.flush().await;
    }

    /// One whole command: ours (NOTIFY, ID, NAMESPACE, UID EXPUNGE) or imap-codec's.
    async fn dispatch(&mut self, bytes: &[u8]) -> Next {
        if let Some(next) = self.notify_command(bytes).await {
            return next;
        }
        if let Some(next) = self.special_command(bytes).await {
            return next;
        }
        if let Some(next) = self.extended_append(bytes).await {
            return next;
        }
        if let Some(next) = self.urlauth_command(bytes).await {
            return next;
        }
        if let Some(next) = self.cancel_update(bytes) {
            return next;
        }
        // Extension syntax imap-codec does not know comes out first.
        let taken = extensions::take(bytes, &*self);
        let (bytes, extras) = match taken {
            Ok(taken) => taken,
            Err(Refused::Bad(why)) => {
                let tag = framing::tag_of(bytes);
                self.send(&format!("{tag} BAD {why}"));
                return Next::Continue;
            }
            Err(Refused::Limit(why)) => {
                let tag = framing::tag_of(bytes);
                self.send(&budget::refusal(&tag, &why));
                return Next::Continue;
            }
        };
        match CommandCodec::default().decode(&bytes) {
            Ok((_, command)) => self.command(command, extras).await,
            Err(_) => {
                let tag = framing::tag_of(&bytes);
                self.send(&format!("{tag} BAD Command not understood"));
                Next::Continue
            }
        }
    }

    /// ID, NAMESPACE and UID EXPUNGE, handled before imap-codec sees the command.
    async fn special_command(&mut self, command: &[u8]) -> Option<Next> {
        let first_line = command.split(|&b| b == b'\n').next()?;
        let line = String::from_utf8_lossy(first_line).trim_end().to_string();
        let mut words = line.split_whitespace();
        let tag = framing::tag_of(command);
        words.next()?;
        let verb = words.next()?.to_ascii_uppercase();
        match verb.as_str() {
            // RFC 2971: the client's fields (literals included) are read and not needed.
            "ID" => {
                self.send("* ID (\"name\" \"mailgate\")");
                self.send(&format!("{tag} OK ID completed"));
            }
            "GETQUOTAROOT" | "GETQUOTA" | "SETQUOTA" if self.user.is_some() => {
                let argument = line.splitn(3, ' ').nth(2).unwrap_or("").to_string();
                let (untagged, done) = blocking::run(|| self.quota_command(&verb, &argument));
                for reply in untagged {
                    self.send(&reply);
                }
                self.send(&format!("{tag} {done}"));
            }
            "NAMESPACE" if self.user.is_some() => {
                self.send("* NAMESPACE ((\"\" \"/\")) NIL NIL");
                self.send(&format!("{tag} OK NAMESPACE completed"));
            }
            "UID"
                if words
                    .next()
                    .is_some_and(|w| w.eq_ignore_ascii_case("EXPUNGE")) =>
            {
                let set = words.next().unwrap_or("");
                let parsed = imap_codec::imap_types::sequence::SequenceSet::try_from(set).ok();
                match (parsed, self.selected.is_some()) {
                    (Some(set), true) => {
                        self.refresh().await;
                        let work = Work::new(budget::SEARCH_WORK);
                        let Ok(only) = self.intervals(&set, true, &work) else {
                            self.send(&budget::refusal(&tag, "UID set too complex"));
                            return Some(Next::Continue);
                        };
                        blocking::run(|| self.expunge(Some(&only), true));
                        self.send(&format!("{tag} OK UID EXPUNGE completed"));
                    }
                    (None, _) => self.send(&format!("{tag} BAD UID EXPUNGE needs a UID set")),
                    (_, false) => self.send(&format!("{tag} BAD No mailbox selected")),
                }
            }
            _ => return None,
        }
        Some(Next::Continue)
    }

    /// COMPRESS DEFLATE (RFC 4978): the OK goes out plain, everything after it compressed.
    async fn compress(&mut self, tag: &str) -> Next {
        if self.client.conn.compressed() {
            self.send(&format!(
                "{tag} NO [COMPRESSIONACTIVE] DEFLATE is already on"
            ));
            return Next::Continue;
        }
        self.send(&format!("{tag} OK DEFLATE active"));
        // Bytes the client sent after the command are compressed already.
        let received = self.framer.buffered().to_vec();
        self.framer.clear();
        match self.client.conn.start_deflate(received).await {
            Ok(()) => Next::Continue,
            Err(_) => Next::Close,
        }
    }

    /// ENABLE (RFC 5161): CONDSTORE, QRESYNC (which implies it), IMAP4rev2 (RFC 9051).
    fn enable(&mut self, tag: &str, wanted: &[CapabilityEnable<'_>]) {
        let mut enabled = Vec::new();
        for capability in wanted {
            match capability {
                CapabilityEnable::CondStore if !self.condstore => {
                    self.condstore = true;
                    enabled.push("CONDSTORE");
                }
                CapabilityEnable::Other(_)
                    if capability.to_string().eq_ignore_ascii_case("QRESYNC") && !self.qresync =>
                {
                    self.qresync = true;
                    self.condstore = true;
                    enabled.push("QRESYNC");
                }
                CapabilityEnable::Other(_)
                    if capability.to_string().eq_ignore_ascii_case("IMAP4rev2") && !self.rev2 =>
                {
                    self.rev2 = true;
                    enabled.push("IMAP4rev2");
                }
                _ => {}
            }
        }
        self.send(&format!(
            "* ENABLED{}",
            enabled.iter().map(|c| format!(" {c}")).collect::<String>()
        ));
        self.send(&format!("{tag} OK ENABLE completed"));
    }

    async fn command(&mut self, command: Command<'_>, extras: Extras) -> Next {
        let tag = command.tag.as_ref().to_string();
        metrics::command("imap", command.body.name());
        match command.body {
            CommandBody::Capability => {
                let caps = self.capabilities();
                self.send(&format!("* CAPABILITY {caps}"));
                self.send(&format!("{tag} OK CAPABILITY completed"));
            }
            CommandBody::Noop | CommandBody::Check => {
                self.refresh().await;
                self.send(&format!("{tag} OK Done"));
            }
            CommandBody::Logout => {
                self.send("* BYE mailgate IMAP logging out");
                self.send(&format!("{tag} OK LOGOUT completed"));
                return Next::Close;
            }
            CommandBody::StartTLS => return self.starttls(&tag).await,
            CommandBody::Login { username, password } => {
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                let password = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                return self.login(&tag, user, password).await;
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                let initial = initial_response.map(|data| data.declassify().to_vec());
                return self.authenticate(&tag, &mechanism, initial).await;
            }
            _ if self.user.is_none() => {
                self.send(&format!("{tag} BAD Log in first"));
            }
            CommandBody::Enable { capabilities } => self.enable(&tag, capabilities.as_ref()),
            CommandBody::Compress { .. } => return self.compress(&tag).await,
            // Searches kept for updates end with the selection they ran over (RFC 5267 §4.3).
            CommandBody::Select { mailbox } => {
                self.kept.clear();
                self.select(&tag, &mailbox, false, extras.select).await
            }
            CommandBody::Examine { mailbox } => {
                self.kept.clear();
                self.select(&tag, &mailbox, true, extras.select).await
            }
            CommandBody::Create { mailbox } => {
                // RFC 6154 §3: only uses a folder of messages can have; else nothing is made.
                let asked = extras.create_use.unwrap_or_default();
                let uses: Option<Vec<&str>> =
                    asked.iter().map(|u| special_use::assignable(u)).collect();
                match uses {
                    Some(uses) => blocking::run(|| self.create(&tag, &mailbox, &uses)),
                    None => self.send(&format!(
                        "{tag} NO [USEATTR] Only {} can be given",
                        special_use::ASSIGNABLE.join(" ")
                    )),
                }
            }
            CommandBody::Delete { mailbox } => blocking::run(|| self.delete(&tag, &mailbox)),
            CommandBody::Rename { from, to } => blocking::run(|| self.rename(&tag, &from, &to)),
            CommandBody::Subscribe { mailbox } => {
                blocking::run(|| self.subscribe(&tag, &mailbox, true))
            }
            CommandBody::Unsubscribe { mailbox } => {
                blocking::run(|| self.subscribe(&tag, &mailbox, false))
            }
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => blocking::run(|| {
                self.list(&tag, &reference, &mailbox_wildcard, extras.list.as_ref())
            }),
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => blocking::run(|| self.lsub(&tag, &reference, &mailbox_wildcard)),
            CommandBody::Status {
                mailbox,
                item_names,
            } => {
                let items = extensions::status_items(&item_names);
                blocking::run(|| self.status(&tag, &mailbox, &items))
            }
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                if flags.len() > budget::FLAGS_PER_COMMAND {
                    self.send(&budget::refusal(&tag, "Too many flags for one message"));
                    return Next::Continue;
                }
                let date = date.map(|d| d.as_ref().timestamp().max(0) as u64);
                let (system, keywords) = flags::requested(&flags);
                // Binary data (`~{n}`) is stored with its binary parts in base64.
                let binary = extras.append_binary.map(encode::binary_parts_to_base64);
                let bytes = binary.as_deref().unwrap_or(message.as_ref());
                let done = blocking::run(|| self.append(&mailbox, system, &keywords, date, bytes));
                // The new message is announced before the tagged reply (RFC 3501 §7).
                self.refresh().await;
                self.send(&format!("{tag} {done}"));
            }
            CommandBody::Idle => return self.idle(&tag).await,
            _ if self.selected.is_none() => {
                self.send(&format!("{tag} BAD No mailbox selected"));
            }
            CommandBody::Close => {
                if self.selected.as_ref().is_some_and(|s| !s.read_only) {
                    blocking::run(|| self.expunge(None, false));
                }
                self.selected = None;
                self.kept.clear();
                self.send(&format!("{tag} OK CLOSE completed"));
            }
            CommandBody::Unselect => {
                self.selected = None;
                self.kept.clear();
                self.send(&format!("{tag} OK UNSELECT completed"));
            }
            CommandBody::Expunge => {
                if self.selected.as_ref().is_some_and(|s| s.read_only) {
                    self.send(&format!("{tag} NO [READ-ONLY] Mailbox is read-only"));
                    return Next::Continue;
                }
                self.refresh().await;
                blocking::run(|| self.expunge(None, true));
                self.send(&format!("{tag} OK EXPUNGE completed"));
            }
            CommandBody::Search { criteria, uid, .. } => self.search(&tag, &criteria, uid, &extras),
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
            } => {
                let done = self
                    .fetch(&sequence_set, &macro_or_item_names, uid, &extras)
                    .await;
                self.send(&format!("{tag} {done}"));
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
            } => {
                let done = blocking::run(|| {
                    let change = (&kind, &flags[..], extras.unchanged_since);
                    self.store(&sequence_set, change, &response, uid)
                });
                self.send(&format!("{tag} {done}"));
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => {
                let done = blocking::run(|| self.copy(&sequence_set, &mailbox, uid, false));
                self.refresh().await;
                self.send(&format!("{tag} {done}"));
            }
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => {
                let done = blocking::run(|| self.copy(&sequence_set, &mailbox, uid, true));
                self.refresh().await;
                self.send(&format!("{tag} {done}"));
            }
            _ => self.send(&format!("{tag} BAD Command not supported")),
        }
        Next::Continue
    }
}
