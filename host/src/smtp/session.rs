//! One SMTP session: the RFC 5321 protocol with ESMTP extensions — commands, replies, DATA and
//! BDAT framing, STARTTLS and AUTH. What a command means for the mail (stages, checks, the
//! spool) is the intake's transaction; the session puts its answers on the wire.

use std::sync::Arc;
use std::time::Duration;

use super::command::{self, Command, ParseError};
use super::command_log::{command_text, CommandLog};
use super::data::{DataError, DataReader};
use super::reply;
use super::Smtp;
use crate::config::{Protocol, TlsMode};
use crate::intake::{Answer, Facts, Transaction};
use crate::mail::{EsmtpParam, Reply};
use crate::net::connection::{Client, Line, Pace, TlsRefusal};
use crate::telemetry::journal::{self, Event};
use crate::telemetry::metrics;

/// What a handler tells the command loop.
enum Next {
    Continue,
    Close,
}

pub struct Session {
    shared: Arc<Smtp>,
    client: Client,
    auth_failures: u32,
    /// Junk commands since the last message (see `is_junk`), and greetings so far.
    junk: u32,
    greetings: u32,
    /// A MAIL was given since the last message data (DATA or BDAT): another one before data
    /// starts a transaction that moved no mail either.
    mail_without_data: bool,
    tx: Transaction,
    /// Message bytes gathered by BDAT so far.
    chunks: Option<Vec<u8>>,
    log: CommandLog,
}

impl Session {
    pub fn new(shared: Arc<Smtp>, client: Client) -> Session {
        let facts = Facts {
            id: client.id.clone(),
            listener: client.listener.name.clone(),
            peer: client.peer,
            tls: client.tls,
            require_auth: client.listener.require_auth,
            dsn: client.listener.offers_dsn(),
            helo: None,
            esmtp: false,
            auth_user: None,
        };
        Session {
            tx: Transaction::new(shared.intake.clone(), facts),
            shared,
            client,
            auth_failures: 0,
            junk: 0,
            greetings: 0,
            mail_without_data: false,
            chunks: None,
            log: CommandLog::new(),
        }
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

    /// Puts a transaction's answer on the wire (after its delay, if any).
    async fn answer(&mut self, answer: Answer) -> Next {
        if let Some(report) = &answer.stage {
            self.log.stage_ran(report);
        }
        if let Some(delay) = answer.delay {
            // The client waits for this reply: send what it is owed first, then make it wait.
            let _ = self.client.conn.flush().await;
            tokio::time::sleep(delay).await;
        }
        self.send(&reply::format(&answer.reply));
        if let Some(accepted) = answer.accepted {
            self.log.taken_in(&self.client.id, accepted);
            self.junk = 0;
            // Mail moved: the session goes to the back of the line of those that may be
            // closed to make room.
            self.client.renew_place();
        }
        if answer.close {
            Next::Close
        } else {
            Next::Continue
        }
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
        let answer = self.tx.connect().await;
        if answer.refused() {
            // A refused connection: say why, then close (RFC 5321 §3.1 allows 554 here).
            self.answer(answer).await;
            self.log
                .command_done(&self.client.id, Some("(connect)".into()));
            let _ = self.client.conn.flush().await;
            return;
        }
        if let Some(report) = &answer.stage {
            self.log.stage_ran(report);
        }
        // No enhanced status in the greeting: clients learn of ENHANCEDSTATUSCODES only at EHLO.
        let greeting = format!(
            "220 {} ESMTP mailgate ready\r\n",
            self.shared.config.server.hostname
        );
        self.send(greeting.as_bytes());
        self.commands().await;
        let _ = self.client.conn.flush().await;
    }

    /// The command loop.
    async fn commands(&mut self) {
        let mut commands = 0usize;
        loop {
            let timeout = Duration::from_secs(self.limits().command_timeout_secs);
            // A transaction under way is let finish when the server shuts down.
            let may_cut = !self.tx.is_open();
            let max = self.limits().max_command_line;
            let line = match self.client.next_line(max, timeout, may_cut).await {
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
                Line::Closed => {
                    self.goodbye_if_evicted();
                    break;
                }
            };
            commands += 1;
            if commands > self.limits().max_commands_per_session {
                self.reply(421, (4, 7, 0), "Too many commands, closing connection");
                break;
            }
            if let Next::Close = self.command(&line).await {
                break;
            }
        }
    }
    /// Tells a client whose connection was closed to make room for another why it goes.
    fn goodbye_if_evicted(&mut self) {
        if self.client.evicted() {
            tracing::info!("closed to make room for another client");
            self.reply(
                421,
                (4, 7, 0),
                "Too many connections, closing connection to make room",
            );
        }
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
            Err(error) => {
                // A command that could not be read moves no mail either.
                if let Next::Close = self.count_junk() {
                    return Next::Close;
                }
                match error {
                    ParseError::Unknown => {
                        metrics::command("smtp", "unknown");
                        self.reply(500, (5, 5, 1), "Command unrecognized");
                    }
                    ParseError::Syntax(why) => self.reply(501, (5, 5, 4), why),
                    ParseError::Address(why) => self.reply(501, (5, 1, 3), why),
                }
                return Next::Continue;
            }
        };
        metrics::command("smtp", command.verb());
        if self.is_junk(&command) {
            if let Next::Close = self.count_junk() {
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

    /// One more command that moved no mail: past `limits.max-junk-commands` since the last
    /// message, the session is told so and closed.
    fn count_junk(&mut self) -> Next {
        self.junk += 1;
        if self.junk > self.limits().max_junk_commands {
            self.reply(
                421,
                (4, 7, 0),
                "Too many commands without mail, closing connection",
            );
            return Next::Close;
        }
        Next::Continue
    }

    /// Commands that move no mail along (Postfix's junk commands, and greetings past the one
    /// before and the one after STARTTLS; a MAIL after a transaction that never reached its
    /// data; RCPT, DATA and BDAT out of sequence): a client may send only so many of them
    /// between messages, so a loop of them cannot hold a connection slot (or a plugin stage)
    /// forever. Commands that cannot be read count too (see `dispatch`).
    fn is_junk(&mut self, command: &Command) -> bool {
        match command {
            Command::Helo(_) | Command::Ehlo(_) => {
                self.greetings += 1;
                self.greetings > 2
            }
            Command::Rset | Command::Noop | Command::Vrfy(_) | Command::Expn(_) | Command::Help => {
                true
            }
            Command::Mail(..) => std::mem::replace(&mut self.mail_without_data, true),
            Command::Rcpt(..) => !self.tx.is_open(),
            Command::Data | Command::Bdat(..) => {
                let ready = self.tx.is_open() && self.tx.has_recipients();
                if ready {
                    self.mail_without_data = false;
                }
                !ready
            }
            Command::StartTls | Command::Auth(..) | Command::Quit => false,
        }
    }

    /// Ends the transaction under way, with the BDAT chunks gathered for it.
    fn reset(&mut self) {
        self.chunks = None;
        self.tx.reset();
    }

    async fn helo(&mut self, name: String, esmtp: bool) -> Next {
        self.chunks = None;
        let answer = self.tx.helo(&name, esmtp).await;
        if answer.refused() {
            return self.answer(answer).await;
        }
        if let Some(report) = &answer.stage {
            self.log.stage_ran(report);
        }
        let host = self.shared.config.server.hostname.clone();
        if !esmtp {
            self.reply(250, (2, 0, 0), &format!("{host} Hello {name}"));
            return Next::Continue;
        }
        let lines = self.extensions(format!("{host} Hello {name}"));
        let reply = Reply {
            code: 250,
            enhanced: None,
            lines,
        };
        self.send(&reply::format(&reply));
        Next::Continue
    }

    /// The EHLO reply's lines: the greeting, then the extensions offered now.
    fn extensions(&self, greeting: String) -> Vec<String> {
        let mut lines = vec![
            greeting,
            "PIPELINING".into(),
            format!("SIZE {}", self.limits().max_message_bytes),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
            "BINARYMIME".into(),
        ];
        if self.tx.facts().offers_dsn() {
            lines.push("DSN".into());
        }
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
        lines
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
        self.chunks = None;
        self.tx.secured();
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
        if self.tx.facts().auth_user.is_some() {
            self.reply(503, (5, 5, 1), "Already authenticated");
            return Next::Continue;
        }
        if self.tx.is_open() {
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
            self.tx.authenticated(name.to_string());
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
        if self.tx.facts().helo.is_none() {
            self.reply(503, (5, 5, 1), "Send EHLO or HELO first");
            return Next::Continue;
        }
        if self.tx.is_open() {
            self.reply(503, (5, 5, 1), "Nested MAIL command");
            return Next::Continue;
        }
        let answer = self.tx.mail(sender, params).await;
        self.answer(answer).await
    }

    async fn rcpt(&mut self, recipient: String, params: Vec<EsmtpParam>) -> Next {
        if !self.tx.is_open() {
            self.reply(503, (5, 5, 1), "Send MAIL first");
            return Next::Continue;
        }
        let answer = self.tx.rcpt(recipient, params).await;
        self.answer(answer).await
    }

    async fn data(&mut self) -> Next {
        if !self.tx.is_open() || !self.tx.has_recipients() {
            let text = if self.tx.is_open() {
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
        if self.tx.is_binary() {
            // RFC 3030 §3: a BINARYMIME message comes by BDAT only.
            self.reply(503, (5, 5, 1), "BODY=BINARYMIME requires BDAT");
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
            Ok(message) => self.message(message).await,
            Err(error) => {
                let (code, status, text) = data_error_reply(error);
                self.reply(code, status, text);
                self.reset();
                Next::Continue
            }
        }
    }

    /// The message is in: the transaction takes it (or not), and the chunks are gone.
    async fn message(&mut self, body: Vec<u8>) -> Next {
        self.chunks = None;
        let answer = self.tx.data(body).await;
        self.answer(answer).await
    }

    /// One BDAT chunk (RFC 3030): every chunk gets its own reply, `BDAT 0` included. A chunk
    /// that would take the message over the size limit is answered 552 and ends the transaction.
    async fn bdat(&mut self, size: u64, last: bool) -> Next {
        if !self.tx.is_open() || !self.tx.has_recipients() {
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
        self.message(buffer).await
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
        } else {
            self.goodbye_if_evicted();
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
