//! One SMTP session: the RFC 5321 state machine with ESMTP extensions, the plugin stages, and
//! the hand-over of accepted messages to the spool.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::command::{self, Command, ParseError};
use super::command_log::{command_text, CommandLog};
use super::data::{DataError, DataReader};
use super::reply;
use super::Smtp;
use crate::config::{Protocol, TlsMode};
use crate::delivery::queue::spool::{new_queue_id, QueuedEnvelope};
use crate::mail::{EsmtpParam, MailState, Reply, Session as PluginSession};
use crate::message::Message;
use crate::net::connection::{Client, Line, Pace, TlsRefusal};
use crate::plugin::{StageCall, StageReport, Transaction, Verdict};
use crate::sender_auth::{AuthResults, SealInput, SpfOutcome, Verifier};
use crate::store::users::Recipient;
use crate::telemetry::journal::{self, Event};
use crate::telemetry::metrics;

/// Messages from this size on have their structure scanned on a blocking thread (a hand-off
/// costs more than scanning a small message in place).
const SCAN_IN_PLACE_BELOW: usize = 256 * 1024;

/// What a handler tells the command loop.
enum Next {
    Continue,
    Close,
}

pub struct Session {
    shared: Arc<Smtp>,
    client: Client,
    helo: Option<String>,
    esmtp: bool,
    auth_user: Option<String>,
    auth_failures: u32,
    /// Recipients refused by the gateway's own rules in this session.
    rcpt_errors: u32,
    /// Junk commands since the last message (see `is_junk`), and greetings so far.
    junk: u32,
    greetings: u32,
    chain: Transaction,
    state: MailState,
    in_transaction: bool,
    /// Message bytes gathered by BDAT so far.
    chunks: Option<Vec<u8>>,
    /// The SPF checks started at MAIL FROM, when the sender is verified.
    spf: Option<JoinHandle<SpfOutcome>>,
    log: CommandLog,
}

impl Session {
    pub fn new(shared: Arc<Smtp>, client: Client) -> Session {
        let chain = shared
            .plugins
            .current()
            .transaction(&client.id, shared.services.clone());
        let auth_user = client.authenticated.clone();
        let mut session = Session {
            shared,
            client,
            helo: None,
            esmtp: false,
            auth_user,
            auth_failures: 0,
            rcpt_errors: 0,
            junk: 0,
            greetings: 0,
            chain,
            state: MailState::default(),
            in_transaction: false,
            chunks: None,
            spf: None,
            log: CommandLog::new(),
        };
        session.state.session = session.plugin_session();
        session
    }

    fn plugin_session(&self) -> PluginSession {
        self.client
            .plugin_session(self.helo.clone(), self.auth_user.clone())
    }

    fn send(&mut self, bytes: &[u8]) {
        if let Some(class) = reply::class(bytes) {
            metrics::reply("smtp", class);
            self.log.reply_sent(bytes);
        }
        self.client.conn.queue(bytes);
    }

    fn reply(&mut self, code: u16, enhanced: (u8, u16, u16), text: &str) {
        self.send(&reply::line(code, enhanced, text));
    }

    fn limits(&self) -> &crate::config::LimitsConfig {
        &self.shared.config.limits
    }

    /// Runs the session to its end.
    pub async fn run(mut self) {
        journal::record(
            &self.client.id,
            0,
            "",
            Event::Connect {
                peer: self.client.peer.to_string(),
                listener: self.client.listener.name.clone(),
                tls: self.client.tls,
            },
        );
        let report = self.stage(StageCall::Connect).await;
        if let Some(reply) = report.decision.reply() {
            // A refused connection: say why, then close (RFC 5321 §3.1 allows 554 here).
            let reply = reply.clone();
            self.send(&reply::format(&reply));
            self.log
                .command_done(&self.client.id, Some("(connect)".into()));
            let _ = self.client.conn.flush().await;
            return;
        }
        // No enhanced status in the greeting: clients learn of ENHANCEDSTATUSCODES only at EHLO.
        let greeting = format!(
            "220 {} ESMTP mailgate ready\r\n",
            self.shared.config.server.hostname
        );
        self.send(greeting.as_bytes());
        let mut commands = 0usize;
        loop {
            let timeout = Duration::from_secs(self.limits().command_timeout_secs);
            // A transaction under way is let finish when the server shuts down.
            let may_cut = !self.in_transaction;
            let max = self.limits().max_command_line;
            let line = self.client.next_line(max, timeout, may_cut).await;
            let line = match line {
                Line::Ok(line) => line,
                Line::TooLong => {
                    self.reply(500, (5, 5, 2), "Line too long");
                    continue;
                }
                Line::TimedOut => {
                    self.reply(421, (4, 4, 2), "Idle timeout, closing connection");
                    break;
                }
                Line::Draining => {
                    self.reply(421, (4, 3, 2), "Service shutting down, closing connection");
                    break;
                }
                Line::Closed => break,
            };
            commands += 1;
            if commands > self.limits().max_commands_per_session {
                self.reply(421, (4, 7, 0), "Too many commands, closing connection");
                break;
            }
            match self.command(&line).await {
                Next::Continue => {}
                Next::Close => break,
            }
        }
        let _ = self.client.conn.flush().await;
    }

    /// Handles one command line, then journals it with its reply.
    async fn command(&mut self, line: &[u8]) -> Next {
        let parsed = command::parse(line);
        // Made only for the journal: no allocation per command otherwise.
        let text = self
            .log
            .is_on()
            .then(|| command_text(line, parsed.as_ref().ok()));
        if matches!(parsed, Ok(Command::Mail(..))) {
            self.log.tx += 1;
        }
        let next = self.dispatch(parsed).await;
        self.log.command_done(&self.client.id, text);
        next
    }

    async fn dispatch(&mut self, parsed: Result<Command, ParseError>) -> Next {
        let command = match parsed {
            Ok(c) => c,
            Err(ParseError::Unknown) => {
                metrics::command("smtp", "unknown");
                self.reply(500, (5, 5, 1), "Command unrecognized");
                return Next::Continue;
            }
            Err(ParseError::Syntax(why)) => {
                self.reply(501, (5, 5, 4), why);
                return Next::Continue;
            }
            Err(ParseError::Address(why)) => {
                self.reply(501, (5, 1, 3), why);
                return Next::Continue;
            }
        };
        metrics::command("smtp", command.verb());
        if self.is_junk(&command) {
            self.junk += 1;
            if self.junk > self.limits().max_junk_commands {
                self.reply(
                    421,
                    (4, 7, 0),
                    "Too many commands without mail, closing connection",
                );
                return Next::Close;
            }
        }
        match command {
            Command::Helo(name) => return self.helo(name, false).await,
            Command::Ehlo(name) => return self.helo(name, true).await,
            Command::StartTls => return self.starttls().await,
            Command::Auth(mechanism, initial) => return self.auth(&mechanism, initial).await,
            Command::Mail(sender, params) => return self.mail(sender, params).await,
            Command::Rcpt(rcpt, params) => return self.rcpt(rcpt, params).await,
            Command::Data => return self.data().await,
            Command::Bdat(size, last) => return self.bdat(size, last).await,
            Command::Rset => {
                self.reset();
                self.reply(250, (2, 0, 0), "Ok");
            }
            Command::Noop => self.reply(250, (2, 0, 0), "Ok"),
            Command::Quit => {
                self.reply(221, (2, 0, 0), "Bye");
                return Next::Close;
            }
            Command::Vrfy(_) => self.reply(252, (2, 5, 2), "Cannot VRFY user, but will accept message and attempt delivery"),
            Command::Expn(_) => self.reply(502, (5, 5, 1), "EXPN is disabled"),
            Command::Help => self.reply(214, (2, 0, 0), "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH"),
        }
        Next::Continue
    }

    /// Commands that move no mail along (Postfix's junk commands, and greetings past the one
    /// before and the one after STARTTLS): a client may send only so many of them between
    /// messages, so a loop of them cannot hold a connection slot (or a plugin stage) forever.
    fn is_junk(&mut self, command: &Command) -> bool {
        match command {
            Command::Helo(_) | Command::Ehlo(_) => {
                self.greetings += 1;
                self.greetings > 2
            }
            Command::Rset | Command::Noop | Command::Vrfy(_) | Command::Expn(_) | Command::Help => {
                true
            }
            _ => false,
        }
    }

    /// Runs a plugin stage on the session's state.
    async fn stage(&mut self, call: StageCall<'_>) -> StageReport {
        self.state.session = self.plugin_session();
        let report = self.chain.run(call, &mut self.state).await;
        self.log.stage_ran(&report);
        report
    }

    /// Sends the reply a refusing verdict carries; true if the session must close.
    fn refuse(&mut self, decision: &Verdict) -> Option<bool> {
        let reply = decision.reply()?.clone();
        self.send(&reply::format(&reply));
        Some(matches!(decision, Verdict::Disconnect(_)))
    }

    fn reset(&mut self) {
        self.state.envelope = Default::default();
        self.state.message = None;
        self.in_transaction = false;
        self.chunks = None;
        self.state.auth = None;
        if let Some(spf) = self.spf.take() {
            spf.abort();
        }
        // A new plugin transaction: fresh notes for the next message; outside filters go on
        // with the session's conversation.
        let mut fresh = self
            .shared
            .plugins
            .current()
            .transaction(&self.client.id, self.shared.services.clone());
        fresh.take_over(&mut self.chain);
        self.chain = fresh;
    }

    /// A transaction runs on the plugin set in service when it starts (MAIL): after a reload,
    /// the chain is rebuilt on the new set, keeping the notes plugins left so far.
    fn refresh_chain(&mut self) {
        let current = self.shared.plugins.current();
        if current.generation != self.chain.generation() {
            let mut fresh = current.transaction(&self.client.id, self.shared.services.clone());
            fresh.carry_notes(self.chain.notes());
            fresh.take_over(&mut self.chain);
            self.chain = fresh;
        }
    }

    async fn helo(&mut self, name: String, esmtp: bool) -> Next {
        self.reset();
        self.helo = Some(name.clone());
        self.esmtp = esmtp;
        let report = self.stage(StageCall::Helo(&name)).await;
        if let Some(close) = self.refuse(&report.decision) {
            self.helo = None;
            return if close { Next::Close } else { Next::Continue };
        }
        let host = self.shared.config.server.hostname.clone();
        if !esmtp {
            self.reply(250, (2, 0, 0), &format!("{host} Hello {name}"));
            return Next::Continue;
        }
        let mut lines = vec![
            format!("{host} Hello {name}"),
            "PIPELINING".into(),
            format!("SIZE {}", self.limits().max_message_bytes),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
        ];
        if !self.client.tls
            && self.client.listener.tls == TlsMode::Starttls
            && self.shared.tls.is_some()
        {
            lines.push("STARTTLS".into());
        }
        if self.client.tls {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        lines.push("HELP".into());
        let reply = Reply {
            code: 250,
            enhanced: None,
            lines,
        };
        self.send(&reply::format(&reply));
        Next::Continue
    }

    async fn starttls(&mut self) -> Next {
        let acceptor = match self.client.starttls_acceptor(self.shared.tls.as_ref()) {
            Ok(acceptor) => acceptor,
            Err(TlsRefusal::AlreadyActive) => {
                self.reply(503, (5, 5, 1), "TLS already active");
                return Next::Continue;
            }
            Err(TlsRefusal::NotAvailable) => {
                self.reply(502, (5, 5, 1), "STARTTLS not available");
                return Next::Continue;
            }
        };
        self.reply(220, (2, 0, 0), "Ready to start TLS");
        if !self
            .client
            .start_tls(&acceptor, crate::net::connection::HANDSHAKE_TIME)
            .await
        {
            return Next::Close;
        }
        // RFC 3207: forget everything learned before the handshake.
        self.helo = None;
        self.esmtp = false;
        self.auth_user = None;
        self.reset();
        Next::Continue
    }

    async fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Next {
        if !self.client.tls {
            self.reply(
                538,
                (5, 7, 11),
                "Encryption required for requested authentication mechanism",
            );
            return Next::Continue;
        }
        if self.auth_user.is_some() {
            self.reply(503, (5, 5, 1), "Already authenticated");
            return Next::Continue;
        }
        if self.in_transaction {
            self.reply(503, (5, 5, 1), "AUTH not allowed during a mail transaction");
            return Next::Continue;
        }
        if !self.shared.login_allowed(self.client.peer.ip()) {
            self.reply(
                454,
                (4, 7, 0),
                "Too many failed authentications from your address, try again later",
            );
            return Next::Continue;
        }
        let credentials = match mechanism {
            "PLAIN" => self.sasl_plain(initial).await,
            "LOGIN" => self.sasl_login(initial).await,
            _ => {
                self.reply(504, (5, 5, 4), "Unrecognized authentication mechanism");
                return Next::Continue;
            }
        };
        let Some((user, password)) = credentials else {
            self.reply(501, (5, 7, 0), "Authentication cancelled or malformed");
            return Next::Continue;
        };
        if !self.shared.users.available() {
            self.reply(454, (4, 7, 0), "Temporary authentication failure");
            return Next::Continue;
        }
        if let Some(name) = self
            .shared
            .verify_password(Protocol::Smtp, &user, password)
            .await
        {
            self.auth_user = Some(name.to_string());
            self.reply(235, (2, 7, 0), "Authentication successful");
            return Next::Continue;
        }
        self.auth_failures += 1;
        if self
            .shared
            .login_failed(self.client.peer.ip(), &user, self.auth_failures)
            .await
        {
            self.reply(
                421,
                (4, 7, 0),
                "Too many failed authentications, closing connection",
            );
            return Next::Close;
        }
        self.reply(535, (5, 7, 8), "Authentication credentials invalid");
        Next::Continue
    }

    /// Reads one SASL response line (base64); `None` when cancelled with `*` or malformed.
    async fn sasl_response(&mut self, prompt: &str) -> Option<Vec<u8>> {
        self.send(format!("334 {prompt}\r\n").as_bytes());
        let timeout = Duration::from_secs(self.limits().command_timeout_secs);
        match self
            .client
            .conn
            .read_line(self.limits().max_command_line, timeout)
            .await
        {
            Line::Ok(line) if line != b"*" => mail_parser::decoders::base64::base64_decode(&line),
            _ => None,
        }
    }

    async fn sasl_plain(&mut self, initial: Option<String>) -> Option<(String, String)> {
        let decoded = match initial {
            Some(text) if text == "=" => Vec::new(),
            Some(text) => mail_parser::decoders::base64::base64_decode(text.as_bytes())?,
            None => self.sasl_response("").await?,
        };
        let mut fields = decoded.split(|&b| b == 0);
        let _authzid = fields.next()?;
        let user = String::from_utf8(fields.next()?.to_vec()).ok()?;
        let password = String::from_utf8(fields.next()?.to_vec()).ok()?;
        Some((user, password))
    }

    async fn sasl_login(&mut self, initial: Option<String>) -> Option<(String, String)> {
        let user = match initial {
            Some(text) => mail_parser::decoders::base64::base64_decode(text.as_bytes())?,
            None => self.sasl_response("VXNlcm5hbWU6").await?,
        };
        let password = self.sasl_response("UGFzc3dvcmQ6").await?;
        Some((
            String::from_utf8(user).ok()?,
            String::from_utf8(password).ok()?,
        ))
    }

    async fn mail(&mut self, sender: String, params: Vec<EsmtpParam>) -> Next {
        if self.helo.is_none() {
            self.reply(503, (5, 5, 1), "Send EHLO or HELO first");
            return Next::Continue;
        }
        if self.in_transaction {
            self.reply(503, (5, 5, 1), "Nested MAIL command");
            return Next::Continue;
        }
        if self.client.listener.require_auth && self.auth_user.is_none() {
            self.reply(530, (5, 7, 0), "Authentication required");
            return Next::Continue;
        }
        let declared_size = params
            .iter()
            .find(|p| p.name == "SIZE")
            .and_then(|p| p.value.as_deref())
            .and_then(|v| v.parse::<usize>().ok());
        if declared_size.is_some_and(|s| s > self.limits().max_message_bytes) {
            self.reply(
                552,
                (5, 3, 4),
                "Message size exceeds fixed maximum message size",
            );
            return Next::Continue;
        }
        self.refresh_chain();
        self.state.envelope.sender = sender;
        self.state.envelope.params = params.clone();
        let report = self.stage(StageCall::MailFrom(&params)).await;
        if let Some(close) = self.refuse(&report.decision) {
            self.state.envelope = Default::default();
            return if close { Next::Close } else { Next::Continue };
        }
        self.in_transaction = true;
        self.start_spf();
        self.reply(250, (2, 1, 0), "Sender ok");
        Next::Continue
    }

    async fn rcpt(&mut self, recipient: String, params: Vec<EsmtpParam>) -> Next {
        if !self.in_transaction {
            self.reply(503, (5, 5, 1), "Send MAIL first");
            return Next::Continue;
        }
        if self.state.envelope.recipients.len() >= self.limits().max_recipients {
            self.reply(452, (4, 5, 3), "Too many recipients");
            return Next::Continue;
        }
        let recipient = if recipient == "postmaster" {
            format!("postmaster@{}", self.shared.config.server.hostname)
        } else {
            recipient
        };
        if let Some((code, status, text)) = self.acceptance(&recipient) {
            if code < 500 {
                // Tells a guesser nothing: not counted against the session.
                self.reply(code, status, text);
                return Next::Continue;
            }
            return self.refuse_recipient(code, status, text).await;
        }
        let report = self.stage(StageCall::RcptTo(&recipient, &params)).await;
        if let Some(close) = self.refuse(&report.decision) {
            return if close { Next::Close } else { Next::Continue };
        }
        if !self
            .state
            .envelope
            .recipients
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&recipient))
        {
            self.state.envelope.recipients.push(recipient);
        }
        self.reply(250, (2, 1, 5), "Recipient ok");
        Next::Continue
    }

    /// Refuses a recipient; after a few refusals each further one is answered more slowly,
    /// and after many the session ends, so that addresses cannot be guessed at line rate.
    async fn refuse_recipient(&mut self, code: u16, status: (u8, u16, u16), text: &str) -> Next {
        self.rcpt_errors += 1;
        let limits = self.limits();
        if self.rcpt_errors > limits.max_rcpt_errors {
            self.reply(
                421,
                (4, 7, 0),
                "Too many refused recipients, closing connection",
            );
            return Next::Close;
        }
        let over = self
            .rcpt_errors
            .saturating_sub(limits.rcpt_errors_before_delay);
        if over > 0 {
            let delay = limits
                .rcpt_error_delay_ms
                .saturating_mul(u64::from(over.min(10)));
            // The client waits for this reply: send what it is owed first, then make it wait.
            let _ = self.client.conn.flush().await;
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.reply(code, status, text);
        Next::Continue
    }

    /// The gateway's own acceptance rules: local recipients must exist; other domains relay
    /// only for authenticated clients or configured networks. `None` means acceptable. A
    /// recipient the users source cannot place now is deferred, never refused for good.
    fn acceptance(&self, recipient: &str) -> Option<(u16, (u8, u16, u16), &'static str)> {
        match self.shared.users.recipient(recipient) {
            Recipient::Mailboxes(_) => None,
            Recipient::Unknown => Some((550, (5, 1, 1), "Mailbox unavailable: no such user here")),
            Recipient::Unavailable => Some((
                451,
                (4, 4, 3),
                "Users directory temporarily unavailable, try again later",
            )),
            Recipient::Remote
                if self.auth_user.is_some() || self.shared.may_relay(self.client.peer.ip()) =>
            {
                None
            }
            Recipient::Remote => Some((554, (5, 7, 1), "Relay access denied")),
        }
    }

    async fn data(&mut self) -> Next {
        if !self.in_transaction || self.state.envelope.recipients.is_empty() {
            let text = if self.in_transaction {
                "No valid recipients"
            } else {
                "Send MAIL first"
            };
            self.reply(503, (5, 5, 1), text);
            return Next::Continue;
        }
        if self.chunks.is_some() {
            self.reply(503, (5, 5, 1), "DATA not allowed after BDAT");
            return Next::Continue;
        }
        self.reply(354, (2, 0, 0), "End data with <CR><LF>.<CR><LF>");
        let limits = self.limits().clone();
        let mut reader = DataReader::new(limits.max_message_bytes, limits.max_text_line);
        let timeout = Duration::from_secs(limits.data_timeout_secs);
        let read = self
            .client
            .conn
            .read_until_paced(timeout, self.data_pace(), |bytes| reader.feed(bytes))
            .await;
        if let Err(end) = read {
            return self.data_failed(end);
        }
        match reader.finish() {
            Ok(message) => self.accept_message(message).await,
            Err(error) => {
                let (code, status, text) = data_error_reply(error);
                self.reply(code, status, text);
                self.reset();
                Next::Continue
            }
        }
    }

    /// One BDAT chunk (RFC 3030): every chunk gets its own reply, `BDAT 0` included. A chunk
    /// that would take the message over the size limit is answered 552 and ends the transaction.
    async fn bdat(&mut self, size: u64, last: bool) -> Next {
        if !self.in_transaction || self.state.envelope.recipients.is_empty() {
            // The chunk must still be read so its bytes are not taken for commands.
            if !self.skip_chunk(size).await {
                return Next::Close;
            }
            self.reply(503, (5, 5, 1), "Send MAIL and RCPT first");
            return Next::Continue;
        }
        let max = self.limits().max_message_bytes as u64;
        let mut buffer = self.chunks.take().unwrap_or_default();
        let fits = (buffer.len() as u64)
            .checked_add(size)
            .is_some_and(|total| total <= max);
        if !fits {
            // A chunk we would read at most twice the limit for is skipped, so the session can
            // go on; a larger one (up to 2^64 - 1 octets) is never read: answer, then close.
            let skippable = size <= max.saturating_mul(2);
            let skipped = skippable && self.skip_chunk(size).await;
            self.reset();
            self.reply(
                552,
                (5, 3, 4),
                "Message size exceeds fixed maximum message size",
            );
            return if skipped { Next::Continue } else { Next::Close };
        }
        // `fits` bounds size by max-message-bytes, so it is a usize.
        let mut remaining = size as usize;
        if remaining > 0 {
            let timeout = Duration::from_secs(self.limits().data_timeout_secs);
            let pace = self.data_pace();
            let read = self
                .client
                .conn
                .read_until_paced(timeout, pace, |bytes| {
                    let take = remaining.min(bytes.len());
                    buffer.extend_from_slice(&bytes[..take]);
                    remaining -= take;
                    (take, remaining == 0)
                })
                .await;
            if let Err(end) = read {
                return self.data_failed(end);
            }
        }
        if !last {
            self.chunks = Some(buffer);
            self.reply(250, (2, 0, 0), &format!("{size} octets received"));
            return Next::Continue;
        }
        if has_bare_line_end(&buffer) {
            self.reset();
            self.reply(550, (5, 6, 11), "Bare CR or LF in message data");
            return Next::Continue;
        }
        self.accept_message(buffer).await
    }

    /// The slowest message data accepted.
    fn data_pace(&self) -> Pace {
        Pace {
            min_rate: self.limits().min_data_rate,
            grace: Duration::from_secs(self.limits().min_data_rate_grace_secs),
        }
    }

    /// Message data stopped coming (too slowly, or not at all): say so, then close.
    fn data_failed(&mut self, end: Line) -> Next {
        if end == Line::TimedOut {
            self.reply(421, (4, 4, 2), "Message data too slow, closing connection");
        }
        self.reset();
        Next::Close
    }

    /// Reads and drops a chunk's bytes; false when the client went away first.
    async fn skip_chunk(&mut self, size: u64) -> bool {
        let mut remaining = size;
        if remaining == 0 {
            return true;
        }
        let timeout = Duration::from_secs(self.limits().data_timeout_secs);
        self.client
            .conn
            .read_until_paced(timeout, self.data_pace(), |bytes| {
                let take = remaining.min(bytes.len() as u64) as usize;
                remaining -= take as u64;
                (take, remaining == 0)
            })
            .await
            .is_ok()
    }

    /// The bound the message's MIME structure passes, if any, and its Received fields: the
    /// scan of a large message runs on a blocking thread, not on the worker other sessions
    /// share.
    fn shape(&self, body: &[u8]) -> (Option<crate::message::mime::Excess>, usize) {
        let bounds = crate::message::mime::Bounds {
            depth: self.limits().max_mime_depth,
            parts: self.limits().max_mime_parts,
        };
        let scan = || {
            let received =
                crate::message::header::HeaderBlock::parse(body, 0).count(body, "Received");
            (crate::message::mime::excess(body, bounds), received)
        };
        if body.len() < SCAN_IN_PLACE_BELOW {
            scan()
        } else {
            crate::sys::blocking::run(scan)
        }
    }

    /// Loop check, nesting check, trace header, data stage, spool, reply.
    async fn accept_message(&mut self, body: Vec<u8>) -> Next {
        let (excess, received_count) = self.shape(&body);
        if let Some(excess) = excess {
            // Permanent: the same bytes would be refused again on every retry.
            self.reset();
            self.reply(554, (5, 6, 0), excess.describe());
            return Next::Continue;
        }
        if received_count > self.limits().max_received_headers {
            self.reset();
            self.reply(
                554,
                (5, 4, 6),
                "Too many Received headers: mail loop detected",
            );
            return Next::Continue;
        }
        let queue_id = new_queue_id();
        let (body, auth, seal) = self.authenticate(body).await;
        let mut raw = self.received_header(&queue_id).into_bytes();
        raw.extend_from_slice(&body);
        if let Some(results) = &auth {
            raw = crate::sender_auth::stamp(&raw, &results.header_field(), &results.authserv_id);
        }
        self.state.auth = auth;
        if self.auth_user.is_some() {
            raw = with_message_id(raw, &queue_id, &self.shared.config.server.hostname);
        }
        self.state.message = Some(Arc::new(Message::new(raw)));
        let report = self.stage(StageCall::Data).await;
        let decision = report.decision.clone();
        if let Some(close) = self.refuse(&decision) {
            self.reset();
            return if close { Next::Close } else { Next::Continue };
        }
        let Some(message) = self.state.message.clone() else {
            self.reply(451, (4, 3, 0), "Internal error: message lost");
            return Next::Continue;
        };
        // Sealed after the data stage, so that the seal covers its edits.
        let message = self.arc_sealed(message, seal.as_ref());
        let envelope = QueuedEnvelope {
            id: queue_id.clone(),
            sender: self.state.envelope.sender.clone(),
            recipients: self.state.envelope.recipients.clone(),
            received_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            client_ip: self.client.peer.ip().to_string(),
            helo: self.helo.clone().unwrap_or_default(),
            auth_user: self.auth_user.clone(),
            smtputf8: self
                .state
                .envelope
                .params
                .iter()
                .any(|p| p.name == "SMTPUTF8"),
        };
        let authentication = self.state.auth.as_ref().map(|r| r.summary());
        let by = report.decided_by.clone().unwrap_or_default();
        let outcome = match decision {
            Verdict::Discard => {
                tracing::info!(queue_id, "message discarded by {by}");
                let detail = format!("by {by} at DATA");
                self.log
                    .disposition(&self.client.id, &queue_id, "discarded", detail);
                Ok(())
            }
            Verdict::Quarantine(reason) => {
                let kept = self
                    .shared
                    .intake
                    .quarantine(&queue_id, message.raw(), &reason)
                    .await;
                let detail = format!("by {by} at DATA: {reason}");
                self.log
                    .disposition(&self.client.id, &queue_id, "quarantined", detail);
                kept
            }
            _ => self.shared.intake.enqueue(&envelope, message.raw()).await,
        };
        self.reset();
        match outcome {
            Ok(()) => {
                self.log.accepted(
                    &queue_id,
                    &envelope.sender,
                    &envelope.recipients,
                    message.raw().len(),
                    authentication,
                );
                tracing::info!(
                    queue_id,
                    from = envelope.sender,
                    recipients = envelope.recipients.len(),
                    size = message.raw().len(),
                    "queued"
                );
                self.junk = 0;
                self.reply(250, (2, 0, 0), &format!("Ok: queued as {queue_id}"))
            }
            Err(e) => {
                tracing::error!(queue_id, "cannot spool message: {e}");
                self.reply(
                    451,
                    (4, 3, 0),
                    "Temporary local problem, please try again later",
                );
            }
        }
        Next::Continue
    }

    /// The sender checked by the configured methods, unless it logged in or sends from a
    /// relay network: mail from our own users is not judged by its domain's records.
    fn verifier(&self) -> Option<&Arc<Verifier>> {
        let trusted = self.auth_user.is_some() || self.shared.may_relay(self.client.peer.ip());
        self.shared.verifier.as_ref().filter(|_| !trusted)
    }

    fn auth_envelope(&self) -> crate::sender_auth::Envelope {
        crate::sender_auth::Envelope {
            client_ip: self.client.peer.ip(),
            helo: self.helo.clone().unwrap_or_default(),
            sender: self.state.envelope.sender.clone(),
        }
    }

    /// SPF runs while the client sends its recipients and message.
    fn start_spf(&mut self) {
        let Some(verifier) = self.verifier().filter(|v| v.checks_spf()).cloned() else {
            return;
        };
        let envelope = self.auth_envelope();
        // The budget of these lookups starts now, not when the message is in.
        let deadline = verifier.deadline();
        self.spf = Some(tokio::spawn(async move {
            verifier.spf(&envelope, deadline).await
        }));
    }

    /// The verification results of the message (which comes back unchanged), and what an ARC
    /// seal needs when the gateway seals.
    async fn authenticate(
        &mut self,
        body: Vec<u8>,
    ) -> (Vec<u8>, Option<Arc<AuthResults>>, Option<SealInput>) {
        let Some(verifier) = self.verifier().cloned() else {
            return (body, None, None);
        };
        // SPF, still running or done, is awaited beside the message's own lookups.
        let spf = self.spf.take();
        let checked = verifier
            .check_message(body, self.auth_envelope(), spf)
            .await;
        metrics::auth_results(&checked.results);
        (
            checked.message,
            Some(Arc::new(checked.results)),
            checked.seal,
        )
    }

    /// The message with the gateway's ARC set on top, when it seals.
    fn arc_sealed(&self, message: Arc<Message>, seal: Option<&SealInput>) -> Arc<Message> {
        match (self.verifier(), seal) {
            (Some(verifier), Some(input)) => {
                Arc::new(Message::new(verifier.seal(message.raw().to_vec(), input)))
            }
            _ => message,
        }
    }

    fn received_header(&self, queue_id: &str) -> String {
        let protocol = match (self.esmtp, self.client.tls, self.auth_user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let rcpt = match self.state.envelope.recipients.as_slice() {
            [one] => format!("\r\n\tfor <{one}>"),
            _ => String::new(),
        };
        format!(
            "Received: from {} ({})\r\n\tby {} (mailgate) with {protocol} id {queue_id}{rcpt};\r\n\t{}\r\n",
            self.helo.as_deref().unwrap_or("unknown"),
            self.client.peer.ip(),
            self.shared.config.server.hostname,
            reply::rfc5322_now()
        )
    }
}

fn data_error_reply(error: DataError) -> (u16, (u8, u16, u16), &'static str) {
    match error {
        DataError::BareLineEnd => (550, (5, 6, 11), "Bare CR or LF in message data"),
        DataError::TooBig => (
            552,
            (5, 3, 4),
            "Message size exceeds fixed maximum message size",
        ),
        DataError::LineTooLong => (554, (5, 6, 0), "Message has a line longer than 1000 octets"),
    }
}

fn has_bare_line_end(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || bytes[i - 1] != b'\r',
        _ => false,
    })
}

/// Adds a Message-ID to a submitted message that has none (RFC 6409 §8.3).
fn with_message_id(raw: Vec<u8>, queue_id: &str, hostname: &str) -> Vec<u8> {
    let message = Message::new(raw);
    if !message.header("Message-ID").is_empty() {
        return message.into_raw();
    }
    let edit = crate::message::MessageEdit::AddHeader {
        name: "Message-ID".into(),
        value: format!("<{queue_id}@{hostname}>"),
    };
    match crate::message::apply_message_edits(&message, &[edit]) {
        Ok(Some(edited)) => edited.into_raw(),
        _ => message.into_raw(),
    }
}
