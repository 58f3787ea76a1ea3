//! One IMAP connection: NOT AUTHENTICATED -> AUTHENTICATED -> SELECTED -> LOGOUT. The framer
//! cuts whole commands out of the stream (synchronising literals get a `+` continuation;
//! LITERAL+ ones do not; literals over the budget — 64 KiB a command before login, a message's
//! size after — are refused before a byte of them is read), then `imap-codec` parses each once.
//! ID, NAMESPACE and UID EXPUNGE, which imap-codec 1.0 does not parse, are recognised here.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::fetch::{Macro, MacroOrMessageDataItemNames, MessageDataItemName};
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::sequence::SequenceSet;
use imap_codec::imap_types::status::StatusDataItemName;
use imap_codec::CommandCodec;

use super::framing::{self, Budget, Frame, Framer};
use super::search::{self, Candidate};
use super::wire;
use crate::blocking;
use crate::config::TlsMode;
use crate::delivery::maildir::maildir_of;
use crate::message::Message;
use crate::plugin::{Session as PluginSession, Stage};
use crate::smtp::io::{Client, Line};
use crate::smtp::server::Shared;
use crate::store::mailbox::{folder_path, list_folders, Flags, Folder, MailEntry};
use crate::store::retrieval::{self, View};
use crate::store::watch::FolderWatch;

/// RFC 3501 §5.4: at least 30 minutes before an idle client is logged out.
const AUTOLOGOUT: Duration = Duration::from_secs(1800);
/// Before login a command carries at most this much, literals included.
const PRE_LOGIN_COMMAND: u64 = 64 * 1024;
/// Work one SEARCH may do: bytes of text examined, plus 64 per key and message.
const SEARCH_BUDGET: u64 = 1 << 30;
/// How often IDLE looks for changes where the folder cannot be watched.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// A message as this session shows it.
struct Shown {
    entry: MailEntry,
    recent: bool,
    edited: Option<Arc<Vec<u8>>>,
}

impl Shown {
    fn size(&self) -> u64 {
        self.edited
            .as_ref()
            .map_or(self.entry.size, |e| e.len() as u64)
    }
}

struct Selected {
    name: String,
    folder: Folder,
    read_only: bool,
    uid_next: u32,
    view: Vec<Shown>,
    /// UIDs hidden from this session by a retrieve-stage plugin.
    hidden: HashSet<u32>,
    /// Change notification for the folder: a refresh rescans only after a change. `None`
    /// where the folder cannot be watched (then every refresh rescans).
    watch: Option<FolderWatch>,
}

enum Next {
    Continue,
    Close,
}

pub struct ImapSession {
    shared: Arc<Shared>,
    client: Client,
    user: Option<String>,
    auth_failures: u32,
    selected: Option<Selected>,
    /// Bytes received, cut into whole commands.
    framer: Framer,
}

fn flags_text(letters: Flags, recent: bool) -> String {
    let mut flags: Vec<&str> = [
        ('D', "\\Draft"),
        ('F', "\\Flagged"),
        ('R', "\\Answered"),
        ('S', "\\Seen"),
        ('T', "\\Deleted"),
    ]
    .into_iter()
    .filter(|&(letter, _)| letters.contains(letter))
    .map(|(_, name)| name)
    .collect();
    if recent {
        flags.push("\\Recent");
    }
    format!("({})", flags.join(" "))
}

fn flag_letters(flags: &[Flag<'_>]) -> String {
    flags
        .iter()
        .filter_map(|f| match f {
            Flag::Draft => Some('D'),
            Flag::Flagged => Some('F'),
            Flag::Answered => Some('R'),
            Flag::Seen => Some('S'),
            Flag::Deleted => Some('T'),
            _ => None,
        })
        .collect()
}

fn mailbox_name(mailbox: &Mailbox<'_>) -> String {
    match mailbox {
        Mailbox::Inbox => "INBOX".into(),
        Mailbox::Other(other) => String::from_utf8_lossy(other.as_ref()).into_owned(),
    }
}

/// LIST wildcards: `*` matches anything, `%` anything but the hierarchy separator. Dynamic
/// programming over (pattern, name) positions: a pattern of many wildcards costs O(p × n), not
/// an exponential backtrack.
fn wildcard(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // matches[j]: pattern[..i] matches name[..j], for the current i.
    let mut matches = vec![false; n.len() + 1];
    matches[0] = true;
    for &c in &p {
        let mut next = vec![false; n.len() + 1];
        match c {
            '*' | '%' => {
                for j in 0..=n.len() {
                    // Either the wildcard matches nothing, or it extends a match by one char.
                    next[j] = matches[j] || (j > 0 && next[j - 1] && (c == '*' || n[j - 1] != '/'));
                }
            }
            _ => {
                for j in 1..=n.len() {
                    next[j] = matches[j - 1] && n[j - 1].eq_ignore_ascii_case(&c);
                }
            }
        }
        matches = next;
    }
    matches[n.len()]
}

impl ImapSession {
    pub fn new(shared: Arc<Shared>, client: Client) -> ImapSession {
        ImapSession {
            shared,
            client,
            user: None,
            auth_failures: 0,
            selected: None,
            framer: Framer::new(),
        }
    }

    fn send(&mut self, text: &str) {
        self.client.conn.queue(text.as_bytes());
        self.client.conn.queue(b"\r\n");
    }

    fn capabilities(&self) -> String {
        let mut caps = vec![
            "IMAP4rev1",
            "LITERAL+",
            "IDLE",
            "UIDPLUS",
            "MOVE",
            "NAMESPACE",
            "ID",
            "UNSELECT",
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
    async fn receive(&mut self, timeout: Duration) -> Result<(), Line> {
        let framer = &mut self.framer;
        self.client
            .conn
            .read_until(timeout, |bytes| {
                framer.push(bytes);
                (bytes.len(), true)
            })
            .await
    }

    /// How long the client may stay silent: briefly before login, 30 minutes after.
    fn idle_limit(&self) -> Duration {
        match self.user {
            Some(_) => AUTOLOGOUT,
            None => Duration::from_secs(self.shared.config.limits.login_timeout_secs),
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
        let greeting = format!(
            "* OK [CAPABILITY {}] mailgate IMAP ready",
            self.capabilities()
        );
        self.send(&greeting);
        loop {
            let budget = self.budget();
            let next = match self.framer.next(budget) {
                Frame::NeedMore => match self.receive(self.idle_limit()).await {
                    Ok(()) => Next::Continue,
                    Err(Line::TimedOut) => {
                        self.send("* BYE Idle for too long");
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

    /// One whole command: ours (ID, NAMESPACE, UID EXPUNGE) or imap-codec's.
    async fn dispatch(&mut self, bytes: &[u8]) -> Next {
        if let Some(next) = self.special_command(bytes) {
            return next;
        }
        match CommandCodec::default().decode(bytes) {
            Ok((_, command)) => self.command(command).await,
            Err(_) => {
                let tag = framing::tag_of(bytes);
                self.send(&format!("{tag} BAD Command not understood"));
                Next::Continue
            }
        }
    }

    /// ID, NAMESPACE and UID EXPUNGE, handled before imap-codec sees the line.
    fn special_command(&mut self, command: &[u8]) -> Option<Next> {
        let line = String::from_utf8_lossy(command.strip_suffix(b"\r\n")?).into_owned();
        let mut words = line.split_whitespace();
        let tag = words.next()?.to_string();
        let verb = words.next()?.to_ascii_uppercase();
        let next = match verb.as_str() {
            "ID" => {
                self.send("* ID (\"name\" \"mailgate\")");
                self.send(&format!("{tag} OK ID completed"));
                Next::Continue
            }
            "NAMESPACE" if self.user.is_some() => {
                self.send("* NAMESPACE ((\"\" \"/\")) NIL NIL");
                self.send(&format!("{tag} OK NAMESPACE completed"));
                Next::Continue
            }
            "UID"
                if words
                    .next()
                    .is_some_and(|w| w.eq_ignore_ascii_case("EXPUNGE")) =>
            {
                let set = words.next().unwrap_or("").to_string();
                let parsed =
                    imap_codec::imap_types::sequence::SequenceSet::try_from(set.as_str()).ok();
                match (parsed, self.selected.is_some()) {
                    (Some(set), true) => {
                        blocking::run(|| self.expunge(Some(&set), true));
                        self.send(&format!("{tag} OK UID EXPUNGE completed"));
                    }
                    (None, _) => self.send(&format!("{tag} BAD UID EXPUNGE needs a UID set")),
                    (_, false) => self.send(&format!("{tag} BAD No mailbox selected")),
                }
                Next::Continue
            }
            _ => return None,
        };
        Some(next)
    }

    async fn command(&mut self, command: Command<'_>) -> Next {
        let tag = command.tag.as_ref().to_string();
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
                if mechanism != imap_codec::imap_types::auth::AuthMechanism::Plain {
                    self.send(&format!("{tag} NO Only AUTHENTICATE PLAIN is supported"));
                    return Next::Continue;
                }
                let data = match initial_response {
                    Some(data) => Some(data.declassify().to_vec()),
                    None => self.sasl_response().await,
                };
                let Some(data) = data else {
                    self.send(&format!("{tag} BAD Authentication cancelled"));
                    return Next::Continue;
                };
                let mut fields = data.split(|&b| b == 0).skip(1);
                let user = fields
                    .next()
                    .map(|u| String::from_utf8_lossy(u).into_owned());
                let password = fields
                    .next()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                match (user, password) {
                    (Some(u), Some(p)) => return self.login(&tag, u, p).await,
                    _ => self.send(&format!("{tag} BAD Malformed PLAIN response")),
                }
            }
            body if self.user.is_none() => {
                let _ = body;
                self.send(&format!("{tag} BAD Log in first"));
            }
            CommandBody::Select { mailbox } => self.select(&tag, &mailbox, false).await,
            CommandBody::Examine { mailbox } => self.select(&tag, &mailbox, true).await,
            CommandBody::Create { mailbox } => blocking::run(|| self.create(&tag, &mailbox)),
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
            } => blocking::run(|| self.list(&tag, &reference, &mailbox_wildcard, false)),
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => blocking::run(|| self.list(&tag, &reference, &mailbox_wildcard, true)),
            CommandBody::Status {
                mailbox,
                item_names,
            } => blocking::run(|| self.status(&tag, &mailbox, &item_names)),
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                let date = date.map(|d| d.as_ref().timestamp().max(0) as u64);
                let letters = flag_letters(&flags);
                blocking::run(|| self.append(&tag, &mailbox, &letters, date, message.as_ref()));
                self.refresh().await;
            }
            CommandBody::Idle => return self.idle(&tag).await,
            body if self.selected.is_none() => {
                let _ = body;
                self.send(&format!("{tag} BAD No mailbox selected"));
            }
            CommandBody::Close => {
                if self.selected.as_ref().is_some_and(|s| !s.read_only) {
                    blocking::run(|| self.expunge(None, false));
                }
                self.selected = None;
                self.send(&format!("{tag} OK CLOSE completed"));
            }
            CommandBody::Unselect => {
                self.selected = None;
                self.send(&format!("{tag} OK UNSELECT completed"));
            }
            CommandBody::Expunge => {
                blocking::run(|| self.expunge(None, true));
                self.send(&format!("{tag} OK EXPUNGE completed"));
            }
            CommandBody::Search { criteria, uid, .. } => {
                let Some(found) = self.search(&criteria, uid) else {
                    self.send(&format!(
                        "{tag} NO [LIMIT] Search too complex, narrow it down"
                    ));
                    return Next::Continue;
                };
                let list: Vec<String> = found.iter().map(u32::to_string).collect();
                self.send(&format!(
                    "* SEARCH{}{}",
                    if list.is_empty() { "" } else { " " },
                    list.join(" ")
                ));
                self.send(&format!("{tag} OK SEARCH completed"));
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
            } => {
                self.fetch(&sequence_set, &macro_or_item_names, uid).await;
                self.send(&format!("{tag} OK FETCH completed"));
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
            } => {
                let letters = flag_letters(&flags);
                blocking::run(|| self.store(&sequence_set, &kind, &response, &letters, uid));
                self.send(&format!("{tag} OK STORE completed"));
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => blocking::run(|| self.copy(&tag, &sequence_set, &mailbox, uid, false)),
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => blocking::run(|| self.copy(&tag, &sequence_set, &mailbox, uid, true)),
            _ => self.send(&format!("{tag} BAD Command not supported")),
        }
        Next::Continue
    }

    async fn starttls(&mut self, tag: &str) -> Next {
        let Ok(acceptor) = self.client.starttls_acceptor(self.shared.tls.as_ref()) else {
            self.send(&format!("{tag} BAD STARTTLS not available"));
            return Next::Continue;
        };
        self.send(&format!("{tag} OK Begin TLS negotiation now"));
        // Bytes pipelined behind STARTTLS came in the clear: they are dropped.
        self.framer.clear();
        if self.client.start_tls(&acceptor).await {
            Next::Continue
        } else {
            Next::Close
        }
    }

    /// One line of base64 after a `+` continuation (AUTHENTICATE without initial response).
    async fn sasl_response(&mut self) -> Option<Vec<u8>> {
        self.send("+ ");
        loop {
            if let Some(line) = self.framer.take_line() {
                if line == b"*" {
                    return None;
                }
                return mail_parser::decoders::base64::base64_decode(&line);
            }
            if self.framer.buffered().len() > framing::MAX_LINE
                || self.receive(self.idle_limit()).await.is_err()
            {
                return None;
            }
        }
    }

    async fn login(&mut self, tag: &str, user: String, password: String) -> Next {
        if !self.client.tls {
            self.send(&format!(
                "{tag} NO [PRIVACYREQUIRED] Log in over TLS (STARTTLS first)"
            ));
            return Next::Continue;
        }
        if self.user.is_some() {
            self.send(&format!("{tag} BAD Already logged in"));
            return Next::Continue;
        }
        if !self.shared.login_allowed(self.client.peer.ip()) {
            self.send(&format!(
                "{tag} NO [UNAVAILABLE] Too many failed logins from your address, try later"
            ));
            return Next::Continue;
        }
        if !self.shared.verify_password(&user, password).await {
            self.auth_failures += 1;
            if self
                .shared
                .login_failed(self.client.peer.ip(), &user, self.auth_failures)
                .await
            {
                self.send("* BYE Too many failed logins");
                return Next::Close;
            }
            self.send(&format!(
                "{tag} NO [AUTHENTICATIONFAILED] Invalid credentials"
            ));
            return Next::Continue;
        }
        self.user = Some(user.to_ascii_lowercase());
        tracing::info!(user, "IMAP login");
        let caps = self.capabilities();
        self.send(&format!("{tag} OK [CAPABILITY {caps}] Logged in"));
        Next::Continue
    }

    fn maildir(&self) -> PathBuf {
        maildir_of(
            &self.shared.config.data_dir().join("mail"),
            self.user.as_deref().unwrap_or(""),
        )
    }

    /// The folder a mailbox name refers to, if it exists (or `create` it).
    fn folder(&mut self, tag: &str, mailbox: &Mailbox<'_>) -> Option<(String, Folder)> {
        let name = mailbox_name(mailbox);
        let path = match folder_path(&self.maildir(), &name) {
            Ok(path) => path,
            Err(e) => {
                self.send(&format!("{tag} NO [CANNOT] Bad mailbox name: {}", e.0));
                return None;
            }
        };
        if !name.eq_ignore_ascii_case("INBOX") && !path.join("cur").is_dir() {
            self.send(&format!("{tag} NO [TRYCREATE] No such mailbox"));
            return None;
        }
        match Folder::open_in(&self.maildir(), &name) {
            Ok(folder) => Some((name, folder)),
            Err(e) => {
                self.send(&format!(
                    "{tag} NO [SERVERBUG] Cannot open the mailbox: {e}"
                ));
                None
            }
        }
    }

    fn plugin_session(&self) -> PluginSession {
        self.client.plugin_session(None, self.user.clone())
    }

    /// Runs the retrieve stage for entries not yet seen by this session.
    async fn screen(
        &self,
        folder: &Folder,
        name: &str,
        entries: Vec<(MailEntry, bool)>,
    ) -> (Vec<Shown>, Vec<u32>) {
        let plugins = self.shared.plugins.current();
        let mut shown = Vec::with_capacity(entries.len());
        let mut hidden = Vec::new();
        for (entry, recent) in entries {
            if !plugins.handles(Stage::Retrieve) {
                shown.push(Shown {
                    entry,
                    recent,
                    edited: None,
                });
                continue;
            }
            let Ok(bytes) = blocking::run(|| folder.read(&entry)) else {
                continue;
            };
            match retrieval::view(
                &plugins,
                &self.shared.services,
                self.plugin_session(),
                name,
                entry.uid,
                bytes,
            )
            .await
            {
                View::Hidden => hidden.push(entry.uid),
                View::Shown(edited) => shown.push(Shown {
                    entry,
                    recent,
                    edited,
                }),
            }
        }
        (shown, hidden)
    }

    async fn select(&mut self, tag: &str, mailbox: &Mailbox<'_>, read_only: bool) {
        self.selected = None;
        let Some((name, folder)) = self.folder(tag, mailbox) else {
            return;
        };
        // Watching starts before the scan, so nothing that happens after it goes unnoticed.
        let watch = FolderWatch::new(&folder.path)
            .inspect_err(|e| tracing::debug!("folder not watched, refreshes rescan: {e}"))
            .ok();
        let snapshot = match blocking::run(|| folder.scan(!read_only)) {
            Ok(s) => s,
            Err(e) => {
                self.send(&format!("{tag} NO [SERVERBUG] {e}"));
                return;
            }
        };
        let entries = snapshot.entries.into_iter().map(|e| {
            let recent = e.recent;
            (e, recent)
        });
        let (view, hidden) = self.screen(&folder, &name, entries.collect()).await;
        let exists = view.len();
        let recent = view.iter().filter(|s| s.recent).count();
        let unseen = view.iter().position(|s| !s.entry.flags.contains('S'));
        self.send("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)");
        self.send(
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)] Flags permitted",
        );
        self.send(&format!("* {exists} EXISTS"));
        self.send(&format!("* {recent} RECENT"));
        if let Some(i) = unseen {
            self.send(&format!("* OK [UNSEEN {}] First unseen", i + 1));
        }
        self.send(&format!(
            "* OK [UIDVALIDITY {}] UIDs valid",
            snapshot.uid_validity
        ));
        self.send(&format!(
            "* OK [UIDNEXT {}] Predicted next UID",
            snapshot.uid_next
        ));
        let mode = if read_only { "READ-ONLY" } else { "READ-WRITE" };
        self.selected = Some(Selected {
            name,
            folder,
            read_only,
            uid_next: snapshot.uid_next,
            view,
            hidden: hidden.into_iter().collect(),
            watch,
        });
        self.send(&format!("{tag} OK [{mode}] SELECT completed"));
    }

    /// Rescans the selected folder and reports what changed: expunges, new messages, flags.
    async fn refresh(&mut self) {
        let Some(sel) = self.selected.as_ref() else {
            return;
        };
        if sel.watch.as_ref().is_some_and(|w| !w.take_events()) {
            // Nothing changed in the folder since the last look.
            return;
        }
        let Ok(snapshot) = blocking::run(|| sel.folder.scan(!sel.read_only)) else {
            return;
        };
        let (folder, name) = (sel.folder.clone(), sel.name.clone());
        let now: std::collections::HashMap<u32, MailEntry> = snapshot
            .entries
            .iter()
            .map(|e| (e.uid, e.clone()))
            .collect();
        let mut lines = Vec::new();
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        // Expunged by someone else: highest sequence numbers first.
        for i in (0..sel.view.len()).rev() {
            if !now.contains_key(&sel.view[i].entry.uid) {
                sel.view.remove(i);
                lines.push(format!("* {} EXPUNGE", i + 1));
            }
        }
        for (i, shown) in sel.view.iter_mut().enumerate() {
            if let Some(current) = now.get(&shown.entry.uid) {
                if current.flags != shown.entry.flags {
                    lines.push(format!(
                        "* {} FETCH (FLAGS {})",
                        i + 1,
                        flags_text(current.flags, shown.recent)
                    ));
                }
                shown.entry = current.clone();
            }
        }
        let known: HashSet<u32> = sel
            .view
            .iter()
            .map(|s| s.entry.uid)
            .chain(sel.hidden.iter().copied())
            .collect();
        let fresh: Vec<(MailEntry, bool)> = snapshot
            .entries
            .into_iter()
            .filter(|e| !known.contains(&e.uid))
            .map(|e| {
                let recent = e.recent;
                (e, recent)
            })
            .collect();
        sel.uid_next = snapshot.uid_next;
        let had_new = !fresh.is_empty();
        let (shown, hidden) = self.screen(&folder, &name, fresh).await;
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        sel.hidden.extend(hidden);
        sel.view.extend(shown);
        sel.view.sort_by_key(|s| s.entry.uid);
        if had_new {
            lines.push(format!("* {} EXISTS", sel.view.len()));
            lines.push(format!(
                "* {} RECENT",
                sel.view.iter().filter(|s| s.recent).count()
            ));
        }
        for line in lines {
            self.send(&line);
        }
    }

    /// IDLE: changes are reported as the folder's change notification reports them (polling
    /// every few seconds only where notification is not available), until DONE.
    async fn idle(&mut self, tag: &str) -> Next {
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
            let changed = async {
                match watch {
                    Some(watch) => watch.changed().await.is_ok(),
                    None => {
                        tokio::time::sleep(IDLE_POLL).await;
                        true
                    }
                }
            };
            let input = self.client.conn.read_until(AUTOLOGOUT, |bytes| {
                self.framer.push(bytes);
                (bytes.len(), true)
            });
            let refresh = tokio::select! {
                read = input => match read {
                    Ok(()) => false,
                    Err(Line::TimedOut) => true,
                    Err(_) => return Next::Close,
                },
                ok = changed => ok,
            };
            if refresh {
                self.refresh().await;
                if self.client.conn.flush().await.is_err() {
                    return Next::Close;
                }
            }
        }
    }

    fn create(&mut self, tag: &str, mailbox: &Mailbox<'_>) {
        let name = mailbox_name(mailbox);
        match folder_path(&self.maildir(), &name) {
            Err(e) => self.send(&format!("{tag} NO [CANNOT] {}", e.0)),
            Ok(_) if name.eq_ignore_ascii_case("INBOX") => {
                self.send(&format!("{tag} NO [ALREADYEXISTS] INBOX exists"))
            }
            Ok(path) if path.join("cur").is_dir() => {
                self.send(&format!("{tag} NO [ALREADYEXISTS] Mailbox exists"))
            }
            Ok(_) => match Folder::open_in(&self.maildir(), &name) {
                Ok(_) => self.send(&format!("{tag} OK CREATE completed")),
                Err(e) => self.send(&format!("{tag} NO [SERVERBUG] {e}")),
            },
        }
    }

    fn delete(&mut self, tag: &str, mailbox: &Mailbox<'_>) {
        let name = mailbox_name(mailbox);
        if name.eq_ignore_ascii_case("INBOX") {
            self.send(&format!("{tag} NO [CANNOT] INBOX cannot be deleted"));
            return;
        }
        match folder_path(&self.maildir(), &name) {
            Err(e) => self.send(&format!("{tag} NO [CANNOT] {}", e.0)),
            Ok(path) if !path.join("cur").is_dir() => {
                self.send(&format!("{tag} NO [NONEXISTENT] No such mailbox"))
            }
            Ok(path) => match std::fs::remove_dir_all(&path) {
                Ok(()) => self.send(&format!("{tag} OK DELETE completed")),
                Err(e) => self.send(&format!("{tag} NO [SERVERBUG] {e}")),
            },
        }
    }

    fn rename(&mut self, tag: &str, from: &Mailbox<'_>, to: &Mailbox<'_>) {
        let maildir = self.maildir();
        let (from, to) = (mailbox_name(from), mailbox_name(to));
        match (folder_path(&maildir, &from), folder_path(&maildir, &to)) {
            (Ok(a), Ok(b))
                if !from.eq_ignore_ascii_case("INBOX") && a.join("cur").is_dir() && !b.exists() =>
            {
                match std::fs::rename(&a, &b) {
                    Ok(()) => self.send(&format!("{tag} OK RENAME completed")),
                    Err(e) => self.send(&format!("{tag} NO [SERVERBUG] {e}")),
                }
            }
            (Err(e), _) | (_, Err(e)) => self.send(&format!("{tag} NO [CANNOT] {}", e.0)),
            _ => self.send(&format!("{tag} NO [CANNOT] Cannot rename {from} to {to}")),
        }
    }

    fn subscriptions(&self) -> Vec<String> {
        std::fs::read_to_string(self.maildir().join("subscriptions"))
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn subscribe(&mut self, tag: &str, mailbox: &Mailbox<'_>, on: bool) {
        let name = mailbox_name(mailbox);
        let mut list = self.subscriptions();
        list.retain(|n| n != &name);
        if on {
            list.push(name);
        }
        let _ = std::fs::create_dir_all(self.maildir());
        match std::fs::write(self.maildir().join("subscriptions"), list.join("\n") + "\n") {
            Ok(()) => self.send(&format!("{tag} OK Done")),
            Err(e) => self.send(&format!("{tag} NO [SERVERBUG] {e}")),
        }
    }

    fn list(&mut self, tag: &str, reference: &Mailbox<'_>, pattern: &ListMailbox<'_>, lsub: bool) {
        let verb = if lsub { "LSUB" } else { "LIST" };
        let pattern = match pattern {
            ListMailbox::Token(t) => String::from_utf8_lossy(t.as_ref()).into_owned(),
            ListMailbox::String(s) => String::from_utf8_lossy(s.as_ref()).into_owned(),
        };
        if pattern.is_empty() {
            self.send(&format!("* {verb} (\\Noselect) \"/\" \"\""));
            self.send(&format!("{tag} OK {verb} completed"));
            return;
        }
        let reference = match reference {
            Mailbox::Inbox => String::new(),
            other => mailbox_name(other),
        };
        let full = format!("{reference}{pattern}");
        let subscribed = self.subscriptions();
        let _ = std::fs::create_dir_all(self.maildir());
        for name in list_folders(&self.maildir()) {
            if !wildcard(&full, &name) || (lsub && name != "INBOX" && !subscribed.contains(&name)) {
                continue;
            }
            let quoted = String::from_utf8_lossy(&wire::string(name.as_bytes())).into_owned();
            self.send(&format!("* {verb} (\\HasNoChildren) \"/\" {quoted}"));
        }
        self.send(&format!("{tag} OK {verb} completed"));
    }

    fn status(&mut self, tag: &str, mailbox: &Mailbox<'_>, items: &[StatusDataItemName]) {
        let Some((name, folder)) = self.folder(tag, mailbox) else {
            return;
        };
        let Ok(snapshot) = folder.scan(false) else {
            self.send(&format!("{tag} NO [SERVERBUG] Cannot read the mailbox"));
            return;
        };
        let values: Vec<String> = items
            .iter()
            .filter_map(|item| {
                Some(match item {
                    StatusDataItemName::Messages => format!("MESSAGES {}", snapshot.entries.len()),
                    StatusDataItemName::Recent => format!(
                        "RECENT {}",
                        snapshot.entries.iter().filter(|e| e.in_new).count()
                    ),
                    StatusDataItemName::UidNext => format!("UIDNEXT {}", snapshot.uid_next),
                    StatusDataItemName::UidValidity => {
                        format!("UIDVALIDITY {}", snapshot.uid_validity)
                    }
                    StatusDataItemName::Unseen => format!(
                        "UNSEEN {}",
                        snapshot
                            .entries
                            .iter()
                            .filter(|e| !e.flags.contains('S'))
                            .count()
                    ),
                    #[allow(unreachable_patterns)]
                    _ => return None,
                })
            })
            .collect();
        let quoted = String::from_utf8_lossy(&wire::string(name.as_bytes())).into_owned();
        self.send(&format!("* STATUS {quoted} ({})", values.join(" ")));
        self.send(&format!("{tag} OK STATUS completed"));
    }

    fn append(
        &mut self,
        tag: &str,
        mailbox: &Mailbox<'_>,
        flags: &str,
        date: Option<u64>,
        bytes: &[u8],
    ) {
        let Some((_, folder)) = self.folder(tag, mailbox) else {
            return;
        };
        match folder.append(bytes, Flags::parse(flags), date) {
            Ok(uid) => {
                let validity = folder.scan(false).map_or(0, |s| s.uid_validity);
                self.send(&format!(
                    "{tag} OK [APPENDUID {validity} {uid}] APPEND completed"
                ));
            }
            Err(e) => self.send(&format!("{tag} NO [SERVERBUG] {e}")),
        }
    }

    /// Indexes into the view for a sequence or UID set.
    fn resolve(&self, set: &SequenceSet, uid: bool) -> Vec<usize> {
        let Some(sel) = self.selected.as_ref() else {
            return Vec::new();
        };
        let largest_seq = sel.view.len() as u32;
        let largest_uid = sel.view.last().map_or(0, |s| s.entry.uid);
        (0..sel.view.len())
            .filter(|&i| {
                if uid {
                    search::in_set(set, sel.view[i].entry.uid, largest_uid)
                } else {
                    search::in_set(set, i as u32 + 1, largest_seq)
                }
            })
            .collect()
    }

    fn load(&self, i: usize) -> Option<Message> {
        let sel = self.selected.as_ref()?;
        let shown = sel.view.get(i)?;
        let bytes = match &shown.edited {
            Some(e) => e.as_ref().clone(),
            None => sel.folder.read(&shown.entry).ok()?,
        };
        Some(Message::new(bytes))
    }

    /// Evaluates SEARCH off the async workers (it reads and parses messages), each message
    /// read and parsed at most once; `None` when the command ran over its work budget.
    fn search(
        &self,
        key: &imap_codec::imap_types::search::SearchKey<'_>,
        uid: bool,
    ) -> Option<Vec<u32>> {
        let sel = self.selected.as_ref()?;
        let largest = (
            sel.view.len() as u32,
            sel.view.last().map_or(0, |s| s.entry.uid),
        );
        blocking::run(|| {
            let work = std::cell::Cell::new(0u64);
            let mut out = Vec::new();
            for (i, shown) in sel.view.iter().enumerate() {
                let load = || self.load(i);
                let message = search::LazyMessage::new(&load);
                let candidate = Candidate {
                    seq: i as u32 + 1,
                    uid: shown.entry.uid,
                    flags: shown.entry.flags,
                    recent: shown.recent,
                    size: shown.size(),
                    internal_date: shown.entry.internal_date,
                    message: &message,
                    work: &work,
                };
                if search::matches(key, &candidate, largest) {
                    out.push(if uid { shown.entry.uid } else { i as u32 + 1 });
                }
                if work.get() > SEARCH_BUDGET {
                    return None;
                }
            }
            Some(out)
        })
    }

    async fn fetch(
        &mut self,
        set: &SequenceSet,
        what: &MacroOrMessageDataItemNames<'_>,
        uid: bool,
    ) {
        let mut items: Vec<MessageDataItemName<'_>> = match what {
            MacroOrMessageDataItemNames::Macro(m) => match m {
                Macro::All => vec![
                    MessageDataItemName::Flags,
                    MessageDataItemName::InternalDate,
                    MessageDataItemName::Rfc822Size,
                    MessageDataItemName::Envelope,
                ],
                Macro::Fast => vec![
                    MessageDataItemName::Flags,
                    MessageDataItemName::InternalDate,
                    MessageDataItemName::Rfc822Size,
                ],
                _ => vec![
                    MessageDataItemName::Flags,
                    MessageDataItemName::InternalDate,
                    MessageDataItemName::Rfc822Size,
                    MessageDataItemName::Envelope,
                    MessageDataItemName::Body,
                ],
            },
            MacroOrMessageDataItemNames::MessageDataItemNames(names) => names.clone(),
        };
        if uid && !items.contains(&MessageDataItemName::Uid) {
            items.insert(0, MessageDataItemName::Uid);
        }
        // Reading and parsing the messages is file and CPU work: off the async workers.
        blocking::run(|| {
            for i in self.resolve(set, uid) {
                let line = self.fetch_one(i, &items);
                self.client.conn.queue(&line);
                self.client.conn.queue(b"\r\n");
            }
        });
    }

    fn fetch_one(&mut self, i: usize, items: &[MessageDataItemName<'_>]) -> Vec<u8> {
        let needs_message = items.iter().any(|it| {
            !matches!(
                it,
                MessageDataItemName::Uid
                    | MessageDataItemName::Flags
                    | MessageDataItemName::InternalDate
                    | MessageDataItemName::Rfc822Size
            )
        });
        let message = if needs_message { self.load(i) } else { None };
        let empty = Message::new(Vec::new());
        let m = message.as_ref().unwrap_or(&empty);
        let mut sets_seen = false;
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let Some(sel) = self.selected.as_ref() else {
            return Vec::new();
        };
        let shown = &sel.view[i];
        for item in items {
            let part: Vec<u8> = match item {
                MessageDataItemName::Uid => format!("UID {}", shown.entry.uid).into_bytes(),
                MessageDataItemName::Flags => continue,
                MessageDataItemName::InternalDate => format!(
                    "INTERNALDATE \"{}\"",
                    wire::internal_date(shown.entry.internal_date)
                )
                .into_bytes(),
                MessageDataItemName::Rfc822Size => {
                    format!("RFC822.SIZE {}", shown.size()).into_bytes()
                }
                MessageDataItemName::Envelope => {
                    [b"ENVELOPE ".to_vec(), wire::envelope(m)].concat()
                }
                MessageDataItemName::BodyStructure => {
                    [b"BODYSTRUCTURE ".to_vec(), wire::body_structure(m, true)].concat()
                }
                MessageDataItemName::Body => {
                    [b"BODY ".to_vec(), wire::body_structure(m, false)].concat()
                }
                MessageDataItemName::Rfc822 => {
                    sets_seen = true;
                    [b"RFC822 ".to_vec(), wire::string_literal(m.raw())].concat()
                }
                MessageDataItemName::Rfc822Header => {
                    let header = wire::section_bytes(
                        m,
                        Some(&imap_codec::imap_types::fetch::Section::Header(None)),
                    );
                    [b"RFC822.HEADER ".to_vec(), wire::string_literal(&header)].concat()
                }
                MessageDataItemName::Rfc822Text => {
                    sets_seen = true;
                    [b"RFC822.TEXT ".to_vec(), wire::string_literal(m.body())].concat()
                }
                MessageDataItemName::BodyExt {
                    section,
                    partial,
                    peek,
                } => {
                    sets_seen |= !peek;
                    let bytes = wire::section_bytes(m, section.as_ref());
                    let name = wire::section_name(section.as_ref());
                    let (bytes, origin) = match partial {
                        Some((start, len)) => {
                            let start = (*start as usize).min(bytes.len());
                            let end = start.saturating_add(len.get() as usize).min(bytes.len());
                            (bytes[start..end].to_vec(), format!("<{start}>"))
                        }
                        None => (bytes, String::new()),
                    };
                    [
                        format!("BODY[{name}]{origin} ").into_bytes(),
                        wire::string_literal(&bytes),
                    ]
                    .concat()
                }
            };
            parts.push(part);
        }
        let wants_flags = items.contains(&MessageDataItemName::Flags);
        let mut flags = shown.entry.flags;
        let recent = shown.recent;
        if sets_seen && !sel.read_only && !flags.contains('S') {
            flags = flags.union(Flags::parse("S"));
            if let Some(sel) = self.selected.as_mut() {
                let shown = &mut sel.view[i];
                if sel.folder.set_flags(&shown.entry, flags).is_ok() {
                    shown.entry.in_new = false;
                    shown.entry.flags = flags;
                }
            }
        }
        if wants_flags || sets_seen {
            parts.push(format!("FLAGS {}", flags_text(flags, recent)).into_bytes());
        }
        let mut out = format!("* {} FETCH (", i + 1).into_bytes();
        for (n, part) in parts.iter().enumerate() {
            if n > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(part);
        }
        out.push(b')');
        out
    }

    fn store(
        &mut self,
        set: &SequenceSet,
        kind: &StoreType,
        response: &StoreResponse,
        letters: &str,
        uid: bool,
    ) {
        let indexes = self.resolve(set, uid);
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        if sel.read_only {
            return;
        }
        let mut lines = Vec::new();
        for i in indexes {
            let shown = &mut sel.view[i];
            let current = shown.entry.flags;
            let given = Flags::parse(letters);
            let new = match kind {
                StoreType::Replace => given,
                StoreType::Add => current.union(given),
                StoreType::Remove => current.without(given),
            };
            if new != current && sel.folder.set_flags(&shown.entry, new).is_ok() {
                shown.entry.in_new = false;
                shown.entry.flags = new;
            }
            if matches!(response, StoreResponse::Answer) {
                let uid_part = if uid {
                    format!("UID {} ", shown.entry.uid)
                } else {
                    String::new()
                };
                lines.push(format!(
                    "* {} FETCH ({uid_part}FLAGS {})",
                    i + 1,
                    flags_text(shown.entry.flags, shown.recent)
                ));
            }
        }
        for line in lines {
            self.send(&line);
        }
    }

    /// Removes \Deleted messages (all, or those in the UID set), reporting each EXPUNGE.
    fn expunge(&mut self, only: Option<&SequenceSet>, report: bool) {
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        if sel.read_only {
            return;
        }
        let largest = sel.view.last().map_or(0, |s| s.entry.uid);
        let mut lines = Vec::new();
        for i in (0..sel.view.len()).rev() {
            let shown = &sel.view[i];
            let chosen = only.is_none_or(|set| search::in_set(set, shown.entry.uid, largest));
            if shown.entry.flags.contains('T') && chosen && sel.folder.delete(&shown.entry).is_ok()
            {
                sel.view.remove(i);
                lines.push(format!("* {} EXPUNGE", i + 1));
            }
        }
        if report {
            for line in lines {
                self.send(&line);
            }
        }
    }

    fn copy(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
        moving: bool,
    ) {
        let Some((_, target)) = self.folder(tag, mailbox) else {
            return;
        };
        let indexes = self.resolve(set, uid);
        let Some(sel) = self.selected.as_ref() else {
            return;
        };
        let mut from = Vec::new();
        let mut to = Vec::new();
        for &i in &indexes {
            let shown = &sel.view[i];
            let Ok(bytes) = sel.folder.read(&shown.entry) else {
                continue;
            };
            match target.append(&bytes, shown.entry.flags, Some(shown.entry.internal_date)) {
                Ok(new_uid) => {
                    from.push(shown.entry.uid.to_string());
                    to.push(new_uid.to_string());
                }
                Err(e) => {
                    self.send(&format!("{tag} NO [SERVERBUG] Copy failed: {e}"));
                    return;
                }
            }
        }
        let validity = target.scan(false).map_or(0, |s| s.uid_validity);
        let code = format!("COPYUID {validity} {} {}", from.join(","), to.join(","));
        if !moving {
            self.send(&format!("{tag} OK [{code}] COPY completed"));
            return;
        }
        self.send(&format!("* OK [{code}] Moved"));
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        let mut lines = Vec::new();
        let mut sorted = indexes;
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        for i in sorted {
            if sel.folder.delete(&sel.view[i].entry).is_ok() {
                sel.view.remove(i);
                lines.push(format!("* {} EXPUNGE", i + 1));
            }
        }
        for line in lines {
            self.send(&line);
        }
        self.send(&format!("{tag} OK MOVE completed"));
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn list_wildcards() {
        assert!(wildcard("*", "Archive/2026"));
        assert!(wildcard("%", "INBOX"));
        assert!(!wildcard("%", "Archive/2026"));
        assert!(wildcard("Archive/%", "Archive/2026"));
        assert!(wildcard("inbox", "INBOX"));
        assert!(!wildcard("Arch", "Archive"));
        // Many wildcards stay cheap.
        let pattern = format!("{}x", "*%".repeat(500));
        assert!(!wildcard(&pattern, &"a".repeat(200)));
    }
}
