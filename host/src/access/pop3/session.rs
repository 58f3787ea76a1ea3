//! One POP3 connection. AUTHORIZATION accepts USER/PASS, APOP and AUTH PLAIN, only over TLS
//! (STLS first on a plain listener). A successful login takes the user's maildrop lock (one
//! POP3 session per mailbox, RFC 1939) and fixes the message list; DELE only marks, and marked
//! messages are removed in UPDATE, after QUIT: a dropped connection deletes nothing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::command::{self, Command, ParseError};
use super::Pop3;
use crate::config::{Protocol, TlsMode};
use crate::net::connection::{Client, Line, TlsRefusal};
use crate::net::limits::LoginWindow;
use crate::plugin::retrieve::{self, EditedCopies, View};
use crate::plugin::Stage;
use crate::store::mailbox::{Folder, MailEntry};
use crate::telemetry::metrics;

/// RFC 1939 §3: at least 10 minutes of inactivity before closing.
const IDLE: Duration = Duration::from_secs(600);

/// Maildrops locked by a POP3 session of this process.
static LOCKED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// The exclusive maildrop lock: in this process, and (with `flock`) against other processes.
struct MaildropLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl MaildropLock {
    fn take(maildir: &Path) -> Option<MaildropLock> {
        std::fs::create_dir_all(maildir).ok()?;
        let mut locked = LOCKED.lock().unwrap_or_else(|e| e.into_inner());
        let set = locked.get_or_insert_with(HashSet::new);
        if set.contains(maildir) {
            return None;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(maildir.join("mailgate-pop3.lock"))
            .ok()?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).ok()?;
        set.insert(maildir.to_path_buf());
        Some(MaildropLock {
            path: maildir.to_path_buf(),
            _file: file,
        })
    }
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        let mut locked = LOCKED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = locked.as_mut() {
            set.remove(&self.path);
        }
        // Closing the file releases the flock.
    }
}

/// A message as this session shows it.
struct Listed {
    entry: MailEntry,
    /// Whether a retrieve-stage plugin changed it: the client then receives the copy kept in
    /// the maildrop's `edited` (else the file).
    edited: bool,
    size: u64,
    deleted: bool,
}

struct Maildrop {
    user: String,
    folder: Folder,
    uid_validity: u32,
    messages: Vec<Listed>,
    /// The edited copies, by UID: in memory up to a bound, the rest in a spill file.
    edited: EditedCopies,
    _lock: MaildropLock,
}

enum Next {
    Continue,
    Close,
}

pub struct Pop3Session {
    shared: Arc<Pop3>,
    /// The maildrop and the user's count of logged-in POP3 connections are given back before
    /// the connection closes (fields drop in order): a client that sees the close may log in
    /// again at once.
    maildrop: Option<Maildrop>,
    user_slot: Option<crate::session_context::UserSlot>,
    client: Client,
    /// The APOP challenge from the greeting.
    challenge: String,
    user: Option<String>,
    auth_failures: u32,
    /// Until login: the deadline to log in by, and this connection's place among its
    /// address's connections waiting to log in.
    login_window: Option<LoginWindow>,
}

impl Pop3Session {
    pub fn new(shared: Arc<Pop3>, client: Client) -> Pop3Session {
        // RFC 1939 §7: a timestamp unique to this greeting, <process-ID.clock@hostname>.
        let challenge = format!(
            "<{}.{}@{}>",
            std::process::id(),
            crate::mail::clock::unique_stamp(),
            shared.config.server.hostname
        );
        Pop3Session {
            shared,
            client,
            challenge,
            user: None,
            auth_failures: 0,
            maildrop: None,
            user_slot: None,
            login_window: None,
        }
    }

    fn ok(&mut self, text: &str) {
        metrics::reply("pop3", "ok");
        self.client.conn.queue(format!("+OK {text}\r\n").as_bytes());
    }

    fn err(&mut self, text: &str) {
        metrics::reply("pop3", "err");
        self.client
            .conn
            .queue(format!("-ERR {text}\r\n").as_bytes());
    }

    /// How long the client may stay silent: 10 minutes once logged in; before that, what is
    /// left of the time it has to log in.
    fn idle_limit(&self) -> Duration {
        match (&self.maildrop, &self.login_window) {
            (Some(_), _) => IDLE,
            (None, Some(window)) => window.remaining(),
            (None, None) => Duration::ZERO,
        }
    }

    pub async fn run(mut self) {
        // Opened at accept (it covers the TLS handshake); a connection from elsewhere opens it now.
        self.login_window = match self.client.login_window.take() {
            Some(window) => Some(window),
            None => self.shared.login_window(self.client.peer.ip()),
        };
        if self.login_window.is_none() {
            self.err("[SYS/TEMP] Too many connections from your address waiting to log in");
            let _ = self.client.conn.flush().await;
            return;
        }
        let greeting = format!("mailgate POP3 ready {}", self.challenge);
        self.ok(&greeting);
        loop {
            // Every POP3 command is whole in itself: a shutdown may end the session between any two.
            let line = self
                .client
                .next_line(command::MAX_LINE + 2, self.idle_limit(), true)
                .await;
            let line = match line {
                Line::Ok(line) => line,
                Line::TooLong => {
                    self.err("Line too long");
                    continue;
                }
                Line::TimedOut => {
                    self.err("Idle for too long, closing");
                    break;
                }
                Line::Draining => {
                    self.err("[SYS/TEMP] Server shutting down, closing");
                    break;
                }
                Line::Closed => break,
            };
            let next = match command::parse(&line) {
                Ok(cmd) => {
                    metrics::command("pop3", cmd.name());
                    self.command(cmd).await
                }
                Err(ParseError::Unknown(word)) => {
                    metrics::command("pop3", "unknown");
                    self.err(&format!("Unknown command {word}"));
                    Next::Continue
                }
                Err(ParseError::Syntax(why)) => {
                    self.err(&format!("Syntax error: {why}"));
                    Next::Continue
                }
            };
            if matches!(next, Next::Close) {
                break;
            }
        }
        let _ = self.client.conn.flush().await;
    }

    async fn command(&mut self, cmd: Command) -> Next {
        if self.maildrop.is_some() {
            return self.transaction(cmd).await;
        }
        match cmd {
            Command::Capa => self.capa(),
            Command::Stls => return self.stls().await,
            Command::Quit => {
                self.ok("Bye");
                return Next::Close;
            }
            Command::User(_) | Command::Pass(_) | Command::Apop(..) | Command::Auth(..)
                if !self.client.tls =>
            {
                self.err("[AUTH] Log in over TLS: use STLS first");
            }
            Command::User(name) => {
                self.user = Some(name);
                self.ok("Send PASS");
            }
            Command::Pass(password) => match self.user.take() {
                Some(user) => return self.login(user, Credential::Password(password)).await,
                None => self.err("USER first"),
            },
            Command::Apop(user, digest) => {
                return self.login(user, Credential::Apop(digest)).await;
            }
            Command::Auth(mechanism, initial) => return self.auth(&mechanism, initial).await,
            Command::Noop => self.ok(""),
            _ => self.err("Not valid before login"),
        }
        Next::Continue
    }

    fn capa(&mut self) {
        let mut lines = vec!["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"];
        if self.client.tls {
            lines.extend(["USER", "SASL PLAIN"]);
        } else if self.client.listener.tls == TlsMode::Starttls && self.shared.tls.is_some() {
            lines.push("STLS");
        }
        lines.push("IMPLEMENTATION mailgate");
        let mut text = String::from("+OK Capability list follows\r\n");
        for line in lines {
            text.push_str(line);
            text.push_str("\r\n");
        }
        text.push_str(".\r\n");
        self.client.conn.queue(text.as_bytes());
    }

    async fn stls(&mut self) -> Next {
        let acceptor = match self.client.starttls_acceptor(self.shared.tls.as_ref()) {
            Ok(acceptor) => acceptor,
            Err(TlsRefusal::AlreadyActive) => {
                self.err("TLS already active");
                return Next::Continue;
            }
            Err(TlsRefusal::NotAvailable) => {
                self.err("STLS not available");
                return Next::Continue;
            }
        };
        self.ok("Begin TLS negotiation");
        if !self.client.start_tls(&acceptor, self.idle_limit()).await {
            return Next::Close;
        }
        self.user = None;
        Next::Continue
    }

    async fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Next {
        if mechanism != "PLAIN" {
            self.err("Unsupported SASL mechanism (PLAIN only)");
            return Next::Continue;
        }
        let response = match initial {
            Some(text) => text,
            None => {
                self.client.conn.queue(b"+ \r\n");
                match self
                    .client
                    .conn
                    .read_line(command::MAX_LINE * 4, IDLE)
                    .await
                {
                    Line::Ok(line) => String::from_utf8_lossy(&line).into_owned(),
                    _ => return Next::Close,
                }
            }
        };
        if response == "*" {
            self.err("Authentication cancelled");
            return Next::Continue;
        }
        let decoded = mail_parser::decoders::base64::base64_decode(response.as_bytes());
        let parts: Option<(String, String)> = decoded.and_then(|bytes| {
            let mut fields = bytes.split(|&b| b == 0);
            let _authzid = fields.next()?;
            let user = String::from_utf8(fields.next()?.to_vec()).ok()?;
            let password = String::from_utf8(fields.next()?.to_vec()).ok()?;
            Some((user, password))
        });
        match parts {
            Some((user, password)) => self.login(user, Credential::Password(password)).await,
            None => {
                self.err("Malformed SASL PLAIN response");
                Next::Continue
            }
        }
    }

    async fn login(&mut self, user: String, credential: Credential) -> Next {
        if !self.shared.login_allowed(self.client.peer.ip()) {
            self.err("[AUTH] Too many failed logins from your address, try again later");
            return Next::Continue;
        }
        if !self.shared.users.available() {
            self.err("[SYS/TEMP] Authentication temporarily unavailable, try later");
            return Next::Continue;
        }
        let users = self.shared.users.get();
        let name = match credential {
            Credential::Password(password) => {
                self.shared
                    .verify_password(Protocol::Pop3, &user, password)
                    .await
            }
            Credential::Apop(digest) => {
                let name = users.apop_secret(&user).and_then(|(name, secret)| {
                    use md5::{Digest, Md5};
                    let expected: String = Md5::digest(format!("{}{secret}", self.challenge))
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    (expected == digest).then_some(name)
                });
                crate::telemetry::metrics::auth("pop3", name.is_some());
                name
            }
        };
        let Some(user) = name else {
            self.auth_failures += 1;
            if self
                .shared
                .login_failed(self.client.peer.ip(), &user, self.auth_failures)
                .await
            {
                self.err("[AUTH] Too many failures, closing");
                return Next::Close;
            }
            self.err("[AUTH] Invalid user name or password");
            return Next::Continue;
        };
        let Ok(slot) = self.shared.user_slot(Protocol::Pop3, &user) else {
            // RFC 2449: the user's maildrop is in use by their other sessions.
            self.err("[IN-USE] Too many connections for this user");
            return Next::Continue;
        };
        let maildir = user.maildir(&self.shared.config.data_dir().join("mail"));
        let Some(lock) = crate::sys::blocking::run(|| MaildropLock::take(&maildir)) else {
            self.err("[IN-USE] Maildrop already locked by another session");
            return Next::Continue;
        };
        match self.open_maildrop(&user, &maildir, lock).await {
            Ok(drop) => {
                let (count, size) = (drop.messages.len(), total(&drop.messages));
                self.maildrop = Some(drop);
                self.user_slot = Some(slot);
                self.login_window = None;
                tracing::info!(user = %user, count, "POP3 login");
                self.ok(&format!("{user} has {count} messages ({size} octets)"));
            }
            Err(e) => {
                tracing::error!(user = %user, "cannot open the maildrop: {e}");
                self.err("[SYS/TEMP] Cannot open the maildrop");
            }
        }
        Next::Continue
    }

    /// Scans the Maildir and, when plugins handle the retrieve stage, asks them about each
    /// message now: hidden ones are left out and edited ones keep the bytes this client gets,
    /// so every size reported matches what RETR sends.
    async fn open_maildrop(
        &self,
        user: &str,
        maildir: &Path,
        lock: MaildropLock,
    ) -> std::io::Result<Maildrop> {
        let folder = Folder::open(maildir)?;
        let scan_folder = folder.clone();
        let snapshot = tokio::task::spawn_blocking(move || scan_folder.scan(true))
            .await
            .map_err(std::io::Error::other)??;
        let plugins = self.shared.plugins.current();
        let mut messages = Vec::with_capacity(snapshot.entries.len());
        let mut edited = EditedCopies::default();
        for entry in snapshot.entries {
            if !plugins.handles(Stage::Retrieve) {
                messages.push(Listed {
                    size: entry.size,
                    entry,
                    edited: false,
                    deleted: false,
                });
                continue;
            }
            let bytes = crate::sys::blocking::run(|| folder.read(&entry))?;
            match self.retrieve_stage(&plugins, user, &entry, bytes).await {
                View::Hidden => {}
                View::Shown(copy) => {
                    let size = copy.as_ref().map_or(entry.size, |e| e.len() as u64);
                    let is_edited = copy.is_some();
                    if let Some(copy) = copy {
                        crate::sys::blocking::run(|| edited.insert(entry.uid, copy))?;
                    }
                    messages.push(Listed {
                        size,
                        entry,
                        edited: is_edited,
                        deleted: false,
                    });
                }
            }
        }
        Ok(Maildrop {
            user: user.to_string(),
            folder,
            uid_validity: snapshot.uid_validity,
            messages,
            edited,
            _lock: lock,
        })
    }

    async fn retrieve_stage(
        &self,
        plugins: &Arc<crate::plugin::PluginSet>,
        user: &str,
        entry: &MailEntry,
        bytes: Vec<u8>,
    ) -> View {
        let session = self.client.plugin_session(None, Some(user.to_string()));
        retrieve::view(
            plugins,
            &self.shared.services,
            session,
            "INBOX",
            entry.uid,
            bytes,
        )
        .await
    }

    async fn transaction(&mut self, cmd: Command) -> Next {
        match cmd {
            Command::Capa => self.capa(),
            Command::Stat => {
                let live: Vec<&Listed> = self.live().collect();
                let (n, size) = (live.len(), live.iter().map(|m| m.size).sum::<u64>());
                self.ok(&format!("{n} {size}"));
            }
            Command::List(None) => self.listing(|_, m| m.size.to_string()),
            Command::Uidl(None) => {
                let validity = self.uid_validity();
                self.listing(move |_, m| unique_id(&m.entry, validity))
            }
            Command::List(Some(n)) => {
                if let Some(size) = self.message(n).map(|m| m.size) {
                    self.ok(&format!("{n} {size}"));
                }
            }
            Command::Uidl(Some(n)) => {
                let validity = self.uid_validity();
                if let Some(id) = self.message(n).map(|m| unique_id(&m.entry, validity)) {
                    self.ok(&format!("{n} {id}"));
                }
            }
            Command::Retr(n) => self.send_message(n, None),
            Command::Top(n, lines) => self.send_message(n, Some(lines)),
            Command::Dele(n) => {
                if let Some(index) = self.index(n) {
                    if let Some(drop) = self.maildrop.as_mut() {
                        drop.messages[index].deleted = true;
                    }
                    self.ok(&format!("Message {n} deleted"));
                }
            }
            Command::Noop => self.ok(""),
            Command::Rset => {
                if let Some(drop) = self.maildrop.as_mut() {
                    drop.messages.iter_mut().for_each(|m| m.deleted = false);
                }
                let n = self.live().count();
                self.ok(&format!("{n} messages"));
            }
            Command::Quit => {
                crate::sys::blocking::run(|| self.update());
                return Next::Close;
            }
            _ => self.err("Not valid in the TRANSACTION state"),
        }
        Next::Continue
    }

    fn uid_validity(&self) -> u32 {
        self.maildrop.as_ref().map_or(0, |d| d.uid_validity)
    }

    fn live(&self) -> impl Iterator<Item = &Listed> {
        self.maildrop
            .iter()
            .flat_map(|d| d.messages.iter())
            .filter(|m| !m.deleted)
    }

    /// The index of message `n`, or an -ERR queued.
    fn index(&mut self, n: u32) -> Option<usize> {
        let found = self.maildrop.as_ref().and_then(|d| {
            let i = (n as usize).checked_sub(1)?;
            d.messages.get(i).filter(|m| !m.deleted).map(|_| i)
        });
        if found.is_none() {
            self.err(&format!("No message {n}"));
        }
        found
    }

    fn message(&mut self, n: u32) -> Option<&Listed> {
        let i = self.index(n)?;
        self.maildrop.as_ref().map(|d| &d.messages[i])
    }

    /// A multi-line scan listing of the messages not deleted.
    fn listing(&mut self, line: impl Fn(usize, &Listed) -> String) {
        let mut text = String::from("+OK\r\n");
        if let Some(drop) = self.maildrop.as_ref() {
            for (i, m) in drop.messages.iter().enumerate().filter(|(_, m)| !m.deleted) {
                text.push_str(&format!("{} {}\r\n", i + 1, line(i, m)));
            }
        }
        text.push_str(".\r\n");
        self.client.conn.queue(text.as_bytes());
    }

    /// RETR (all of it) or TOP (the header and `lines` lines of the body).
    fn send_message(&mut self, n: u32, lines: Option<u32>) {
        let Some(index) = self.index(n) else {
            return;
        };
        let Some(drop) = self.maildrop.as_ref() else {
            return;
        };
        let listed = &drop.messages[index];
        let bytes = if listed.edited {
            crate::sys::blocking::run(|| drop.edited.get(listed.entry.uid))
                .unwrap_or_else(|| Err(std::io::Error::other("edited copy lost")))
                .map(|copy| copy.as_ref().clone())
        } else {
            crate::sys::blocking::run(|| drop.folder.read(&listed.entry))
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(user = drop.user, uid = listed.entry.uid, "cannot read: {e}");
                self.err("[SYS/TEMP] Message unavailable (deleted by another client?)");
                return;
            }
        };
        let size = listed.size;
        let body = match lines {
            None => bytes,
            Some(lines) => top(&bytes, lines),
        };
        self.ok(&format!("{size} octets"));
        self.client.conn.queue(&command::multiline(&body));
        if lines.is_none() {
            // Mark as read, as other Maildir tools do.
            if let Some(drop) = self.maildrop.as_mut() {
                let entry = &mut drop.messages[index].entry;
                if !entry.flags.contains('S') {
                    if let Ok(Some(now)) = drop.folder.mark_seen(entry) {
                        *entry = now;
                    }
                }
            }
        }
    }

    /// UPDATE: removes the messages marked deleted.
    fn update(&mut self) {
        let Some(drop) = self.maildrop.take() else {
            return;
        };
        let mut failed = 0;
        for m in drop.messages.iter().filter(|m| m.deleted) {
            if let Err(e) = drop.folder.delete(&m.entry) {
                tracing::error!(user = drop.user, uid = m.entry.uid, "cannot delete: {e}");
                failed += 1;
            }
        }
        let left = drop.messages.iter().filter(|m| !m.deleted).count();
        if failed > 0 {
            self.err(&format!(
                "[SYS/TEMP] {failed} messages could not be deleted"
            ));
        } else {
            self.ok(&format!("Bye ({left} messages left)"));
        }
    }
}

enum Credential {
    Password(String),
    Apop(String),
}

fn total(messages: &[Listed]) -> u64 {
    messages.iter().map(|m| m.size).sum()
}

/// The UIDL of a message: its Maildir base name when that is a valid POP3 unique-id (RFC 1939:
/// 1 to 70 characters 0x21..0x7E), else UID and UIDVALIDITY.
fn unique_id(entry: &MailEntry, validity: u32) -> String {
    let key = &entry.key;
    if !key.is_empty() && key.len() <= 70 && key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        key.to_string()
    } else {
        format!("{}.{validity}", entry.uid)
    }
}

/// The header, the blank line, and the first `lines` lines of the body.
fn top(message: &[u8], lines: u32) -> Vec<u8> {
    let block = crate::message::header::HeaderBlock::parse(message, 0);
    let body_start = block.body_start.min(message.len());
    let mut out = message[..body_start].to_vec();
    let mut taken = 0;
    let mut pos = body_start;
    while taken < lines && pos < message.len() {
        let end = message[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |i| pos + i + 1);
        out.extend_from_slice(&message[pos..end]);
        pos = end;
        taken += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_keeps_header_and_n_lines() {
        let m = b"Subject: x\r\nFrom: a\r\n\r\none\r\ntwo\r\nthree\r\n";
        assert_eq!(top(m, 0), b"Subject: x\r\nFrom: a\r\n\r\n");
        assert_eq!(top(m, 2), b"Subject: x\r\nFrom: a\r\n\r\none\r\ntwo\r\n");
        assert_eq!(top(m, 9), m);
    }
}
