//! The SMTP client that delivers onward: greeting, EHLO (HELO when EHLO is refused), STARTTLS
//! as the route asks, AUTH PLAIN over TLS only, then transactions with PIPELINING when the peer
//! offers it. A connection serves several transactions (see [`Pool`]).
//!
//! At shutdown (a started [`Deadline`]) no transaction begins, on a new connection or a pooled
//! one. A transaction under way may finish, but every wait on the peer ends [`RECORD_AHEAD`]
//! before the process stops, and the message content is not sent when the end of the drain
//! is too close for the peer's final reply to arrive: closing the connection before the final
//! `.` makes the peer discard the transaction (RFC 5321 §4.1.1.4), so the message is sent once,
//! after the restart. Only a cut between the final `.` and its reply leaves the peer with a
//! message we do not know it took (RFC 1047): it is sent again after the restart, and logged.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::mx::Candidate;
use super::route::Target;
use crate::config::ClientTls;
use crate::mail::dsn::{EnvelopeDsn, RcptDsn};
use crate::net::connection::{Connection, Line, Stream};
use crate::net::drain::Deadline;
pub use pool::Pool;
use tls::tls_config;

/// How long a remote server may take no byte of what we send (RFC 5321 4.5.3.2.5).
const DATA_BLOCK_STALL: Duration = Duration::from_secs(180);

mod pool;
mod tls;
pub use tls::CheckedTls;

/// At shutdown, waits on a peer end this long before the process stops: time for the
/// attempt's outcome to be recorded (a state file, two fsyncs) while the process still runs.
pub const RECORD_AHEAD: Duration = Duration::from_secs(1);

/// At shutdown, the message content is sent only when at least this long is left (beyond
/// [`RECORD_AHEAD`]) for the peer's final reply, or the slowest final reply this destination
/// gave, if longer (see [`Outgoing::reply_allowance`]).
pub const MIN_REPLY_ALLOWANCE: Duration = Duration::from_secs(2);

/// Longest reply line we accept (RFC 5321 says 512; some servers send more).
const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one multi-line reply.
const MAX_REPLY_LINES: usize = 200;

/// A reply from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// `550 5.1.1 No such user` (lines joined by spaces).
    pub fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" "))
            .trim_end()
            .to_string()
    }

    fn is_ok(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// Why a delivery (or one recipient of it) did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// 5xx or a condition that will not change by waiting.
    pub permanent: bool,
    /// For the queue and the logs: what happened, where.
    pub text: String,
    /// The remote reply (`550 5.1.1 ...`) for the DSN's Diagnostic-Code, when there was one.
    pub reply: Option<String>,
    /// The remote host's name, when one was reached.
    pub remote: Option<String>,
    /// Not tried, or cut, because the server is stopping: not an attempt that failed, the
    /// message is due again at the next start.
    pub stopped: bool,
    /// Put off by a deliver-stage plugin, not by anything on the way (for the deferral metrics).
    pub by_plugin: bool,
}

impl Failure {
    pub fn temporary(text: impl Into<String>) -> Failure {
        Failure {
            permanent: false,
            text: text.into(),
            reply: None,
            remote: None,
            stopped: false,
            by_plugin: false,
        }
    }

    /// A deliver-stage plugin put the delivery off (see [`Failure::by_plugin`]).
    pub fn by_plugin(text: impl Into<String>) -> Failure {
        Failure {
            by_plugin: true,
            ..Failure::temporary(text)
        }
    }

    /// The server is stopping (see [`Failure::stopped`]).
    pub fn stopped(text: impl Into<String>) -> Failure {
        Failure {
            stopped: true,
            ..Failure::temporary(text)
        }
    }

    pub fn permanent(text: impl Into<String>) -> Failure {
        Failure {
            permanent: true,
            ..Failure::temporary(text)
        }
    }
}

/// How the client behaves on the wire.
#[derive(Debug, Clone)]
pub struct Settings {
    pub helo: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// The end of the drain, once the server is stopping.
    pub deadline: Deadline,
    /// Certificate checks with the configured extra roots; `None`: the system's roots only.
    pub checked_tls: Option<CheckedTls>,
}

/// What the peer said it supports in its EHLO reply.
#[derive(Debug, Clone, Default)]
struct Extensions {
    pipelining: bool,
    size: Option<u64>,
    eight_bit: bool,
    smtputf8: bool,
    starttls: bool,
    auth_plain: bool,
    chunking: bool,
    binarymime: bool,
    dsn: bool,
}

impl Extensions {
    fn parse(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => ext.eight_bit = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "STARTTLS" => ext.starttls = true,
                "CHUNKING" => ext.chunking = true,
                "BINARYMIME" => ext.binarymime = true,
                "DSN" => ext.dsn = true,
                "AUTH" => ext.auth_plain |= words.any(|m| m.eq_ignore_ascii_case("PLAIN")),
                _ => {}
            }
        }
        ext
    }
}

/// One message for one transaction.
pub struct Outgoing<'a> {
    pub sender: &'a str,
    pub recipients: &'a [String],
    /// The DATA payload, already dot-stuffed and terminated ([`super::wire::data_payload`]).
    pub payload: &'a [u8],
    /// The message size as declared in SIZE=.
    pub size: usize,
    pub eight_bit: bool,
    pub smtputf8: bool,
    /// BINARYMIME content: the payload is one `BDAT n LAST` chunk, sent without DATA.
    pub binary: bool,
    /// At shutdown: how long the content and the peer's final reply may take (sending it is
    /// not begun with less time left).
    pub reply_allowance: Duration,
    /// The client's DSN parameters, passed on to a peer that offers DSN.
    pub dsn: &'a EnvelopeDsn,
}

/// Per recipient: the final reply on success, or why not.
pub type RecipientResults = Vec<Result<String, Failure>>;

/// An open SMTP client session.
pub struct SmtpClient {
    conn: Connection,
    ext: Extensions,
    /// The peer's name (MX host or smarthost) and address.
    pub host: String,
    pub addr: SocketAddr,
    tls: bool,
    /// After STARTTLS: whether the peer's certificate is valid for its name.
    pub certificate: Option<Result<(), String>>,
    timeout: Duration,
    /// A transaction was left half-way: RSET before the next one.
    dirty: bool,
    last_used: Instant,
    /// Stopping: every wait on the peer ends ahead of this.
    deadline: Deadline,
    /// From the content sent to the final reply, in the last transaction that got that far.
    pub data_reply_time: Option<Duration>,
}

impl SmtpClient {
    /// Connects, reads the greeting, says EHLO, and does STARTTLS and AUTH as the target asks.
    /// With opportunistic TLS a failed handshake is retried once without TLS.
    pub async fn connect(
        candidate: &Candidate,
        target: &Target,
        settings: &Settings,
    ) -> Result<SmtpClient, Failure> {
        match Self::open(candidate, target, settings, true).await {
            Err(e)
                if e.text.contains("TLS handshake") && target.tls == ClientTls::Opportunistic =>
            {
                tracing::info!(host = candidate.name, "{}; retrying without TLS", e.text);
                Self::open(candidate, target, settings, false).await
            }
            other => other,
        }
    }

    async fn open(
        candidate: &Candidate,
        target: &Target,
        settings: &Settings,
        try_tls: bool,
    ) -> Result<SmtpClient, Failure> {
        let where_ = format!("{}[{}]", candidate.name, candidate.addr);
        let tcp = match tokio::time::timeout(
            settings.connect_timeout,
            TcpStream::connect(candidate.addr),
        )
        .await
        {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(Failure::temporary(format!("connect to {where_}: {e}"))),
            Err(_) => {
                return Err(Failure::temporary(format!(
                    "connect to {where_}: timed out"
                )))
            }
        };
        let _ = tcp.set_nodelay(true);
        let mut conn = Connection::new(Stream::Plain(tcp));
        // RFC 5321 4.5.3.2.5: a sending client waits up to 3 minutes for each data block.
        conn.set_write_stall(DATA_BLOCK_STALL);
        let mut client = SmtpClient {
            conn,
            ext: Extensions::default(),
            host: candidate.name.clone(),
            addr: candidate.addr,
            tls: false,
            certificate: None,
            timeout: settings.command_timeout,
            dirty: false,
            last_used: Instant::now(),
            deadline: settings.deadline.clone(),
            data_reply_time: None,
        };
        let greeting = client.read_reply().await?;
        if greeting.code != 220 {
            return Err(client.refused(&greeting, "the greeting"));
        }
        client.hello(&settings.helo).await?;
        let wants_tls = match target.tls {
            ClientTls::None => false,
            ClientTls::Opportunistic => try_tls && client.ext.starttls,
            ClientTls::Required => true,
        };
        if wants_tls {
            client.starttls(target, settings).await?;
            client.hello(&settings.helo).await?;
        }
        if let Some((user, password)) = &target.auth {
            client.authenticate(user, password).await?;
        }
        Ok(client)
    }

    /// EHLO, or HELO when the peer refuses EHLO.
    async fn hello(&mut self, name: &str) -> Result<(), Failure> {
        let reply = self.command(&format!("EHLO {name}")).await?;
        if reply.is_ok() {
            self.ext = Extensions::parse(&reply);
            return Ok(());
        }
        let reply = self.command(&format!("HELO {name}")).await?;
        if !reply.is_ok() {
            return Err(self.refused(&reply, "HELO"));
        }
        self.ext = Extensions::default();
        Ok(())
    }

    async fn starttls(&mut self, target: &Target, settings: &Settings) -> Result<(), Failure> {
        if !self.ext.starttls {
            return Err(Failure::temporary(format!(
                "{} does not offer STARTTLS and the route requires TLS",
                self.host
            )));
        }
        let reply = self.command("STARTTLS").await?;
        if reply.code != 220 {
            return Err(self.refused(&reply, "STARTTLS"));
        }
        let verify = target.tls == ClientTls::Required && target.tls_verify;
        let config = match &settings.checked_tls {
            Some(checked) if verify => checked.config.clone(),
            _ => tls_config(verify)?,
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = ServerName::try_from(self.host.clone())
            .map_err(|_| Failure::temporary(format!("{:?} is not a TLS server name", self.host)))?;
        let judge_name = name.clone();
        let Stream::Plain(tcp) = std::mem::replace(&mut self.conn.stream, Stream::Upgrading) else {
            return Err(Failure::temporary(
                "STARTTLS on a connection that is not plain",
            ));
        };
        self.conn.discard_input();
        let tls = tokio::time::timeout(self.timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| {
                Failure::temporary(format!("TLS handshake with {}: timed out", self.host))
            })?
            .map_err(|e| Failure::temporary(format!("TLS handshake with {}: {e}", self.host)))?;
        self.certificate = Some(match &settings.checked_tls {
            _ if verify => Ok(()),
            Some(checked) => checked.judge(tls.get_ref().1, &judge_name),
            None => Err("not checked".into()),
        });
        self.conn.stream = Stream::ClientTls(Box::new(tls));
        self.tls = true;
        Ok(())
    }

    async fn authenticate(&mut self, user: &str, password: &str) -> Result<(), Failure> {
        if !self.tls {
            return Err(Failure::temporary(format!(
                "not sending credentials to {} without TLS",
                self.host
            )));
        }
        if !self.ext.auth_plain {
            return Err(Failure::temporary(format!(
                "{} offers no AUTH PLAIN",
                self.host
            )));
        }
        let token =
            crate::message::encode::base64_lines(format!("\0{user}\0{password}").as_bytes());
        let token: String = String::from_utf8_lossy(&token).split_whitespace().collect();
        let reply = self.command(&format!("AUTH PLAIN {token}")).await?;
        if reply.code != 235 {
            // Wrong credentials are an operator's problem: keep the mail queued.
            let mut failure = self.refused(&reply, "AUTH");
            failure.permanent = false;
            return Err(failure);
        }
        Ok(())
    }

    /// One mail transaction. `Err` means the connection failed or the message cannot go to
    /// this peer at all; otherwise each recipient has its own result.
    pub async fn send(&mut self, out: &Outgoing<'_>) -> Result<RecipientResults, Failure> {
        // Stopping: no new transaction, on a fresh connection or a pooled one.
        if self.deadline.is_draining() {
            return Err(Failure::stopped("not started: the server is stopping"));
        }
        self.check_capabilities(out)?;
        if self.dirty {
            let reply = self.command("RSET").await?;
            if !reply.is_ok() {
                return Err(self.refused(&reply, "RSET"));
            }
            self.dirty = false;
        }
        self.dirty = true;
        let mut mail = format!("MAIL FROM:<{}>", out.sender);
        if self.ext.size.is_some() {
            mail.push_str(&format!(" SIZE={}", out.size));
        }
        if out.binary {
            mail.push_str(" BODY=BINARYMIME");
        } else if out.eight_bit {
            mail.push_str(" BODY=8BITMIME");
        }
        if out.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        if self.ext.dsn {
            mail.push_str(&mail_dsn(out.dsn));
        }
        let mut commands = vec![mail];
        commands.extend(out.recipients.iter().map(|r| {
            let dsn = if self.ext.dsn {
                rcpt_dsn(&out.dsn.recipient(r))
            } else {
                String::new()
            };
            format!("RCPT TO:<{r}>{dsn}")
        }));
        if !out.binary {
            commands.push("DATA".into());
        }
        let replies = self.exchange(&commands).await?;
        let mut replies = replies.into_iter();
        let mail_reply = replies.next();
        let mut results: RecipientResults = out
            .recipients
            .iter()
            .map(|_| Err(Failure::temporary("no reply")))
            .collect();
        match mail_reply {
            Some(r) if r.is_ok() => {}
            Some(r) => {
                let failure = self.refused(&r, "MAIL FROM");
                return Ok(results.iter().map(|_| Err(failure.clone())).collect());
            }
            None => return Err(Failure::temporary("no reply to MAIL FROM")),
        }
        for (slot, reply) in results.iter_mut().zip(replies.by_ref()) {
            *slot = if reply.is_ok() {
                Ok(String::new())
            } else {
                Err(self.refused(&reply, "RCPT TO"))
            };
        }
        let accepted = results.iter().any(Result::is_ok);
        if out.binary {
            // No DATA step: the chunk goes once a recipient was accepted.
            if !accepted {
                return Ok(results);
            }
            return self
                .send_content(out)
                .await
                .map(|end| self.apply_end(end, results));
        }
        let data_reply = replies.next();
        match data_reply {
            Some(r) if r.code == 354 && accepted => {}
            Some(r) if r.code == 354 => {
                // Nobody to deliver to, yet the peer wants data: end it empty.
                self.conn.queue(b".\r\n");
                let _ = self.read_reply().await?;
                return Ok(results);
            }
            Some(r) if accepted => {
                let failure = self.refused(&r, "DATA");
                fail_accepted(&mut results, &failure);
                return Ok(results);
            }
            _ => return Ok(results),
        }
        self.send_content(out)
            .await
            .map(|end| self.apply_end(end, results))
    }

    /// The content and its final reply, unless the server is stopping too soon for the reply
    /// to arrive: then the connection is to be dropped before the final `.`, which makes the
    /// peer discard the transaction.
    async fn send_content(&mut self, out: &Outgoing<'_>) -> Result<Reply, Failure> {
        if let Some(left) = self.deadline.left() {
            let usable = left.saturating_sub(RECORD_AHEAD);
            if usable < out.reply_allowance {
                tracing::info!(
                    host = self.host,
                    left_ms = usable.as_millis() as u64,
                    needed_ms = out.reply_allowance.as_millis() as u64,
                    "stopping: message content not sent, too close to the end of the drain"
                );
                return Err(self.cut("cut before the message content: the server is stopping"));
            }
        }
        let started = Instant::now();
        self.conn.queue(out.payload);
        match self.read_reply().await {
            Ok(end) => {
                self.data_reply_time = Some(started.elapsed());
                Ok(end)
            }
            Err(failure) => {
                if failure.stopped {
                    // RFC 1047: the peer may hold the message already; it goes again after
                    // the restart.
                    tracing::warn!(
                        host = self.host,
                        "stopping: cut while waiting for the reply to the end of data; the \
                         message may be delivered twice"
                    );
                }
                Err(failure)
            }
        }
    }

    /// Per recipient, what the reply to the end of data means.
    fn apply_end(&mut self, end: Reply, mut results: RecipientResults) -> RecipientResults {
        if end.is_ok() {
            self.dirty = false;
            for slot in results.iter_mut().filter(|r| r.is_ok()) {
                *slot = Ok(end.text());
            }
        } else {
            let failure = self.refused(&end, "end of DATA");
            fail_accepted(&mut results, &failure);
        }
        self.last_used = Instant::now();
        results
    }

    /// SIZE, 8BITMIME and SMTPUTF8: a message the peer cannot take is refused here rather
    /// than sent damaged.
    fn check_capabilities(&self, out: &Outgoing<'_>) -> Result<(), Failure> {
        if let Some(max) = self.ext.size.filter(|&m| m > 0) {
            if out.size as u64 > max {
                return Err(Failure::permanent(format!(
                    "5.3.4 message of {} bytes exceeds the {max} bytes {} accepts",
                    out.size, self.host
                )));
            }
        }
        if out.eight_bit && !self.ext.eight_bit {
            return Err(Failure::permanent(format!(
                "5.6.3 the message has 8-bit content and {} does not offer 8BITMIME",
                self.host
            )));
        }
        if out.binary && !(self.ext.chunking && self.ext.binarymime) {
            return Err(Failure::permanent(format!(
                "5.6.3 the message is binary (BODY=BINARYMIME) and {} does not offer CHUNKING \
                 with BINARYMIME; it cannot be converted",
                self.host
            )));
        }
        if out.smtputf8 && !self.ext.smtputf8 {
            return Err(Failure::permanent(format!(
                "5.6.7 the message needs SMTPUTF8 and {} does not offer it",
                self.host
            )));
        }
        Ok(())
    }

    /// Sends the commands and reads one reply each: all at once with PIPELINING, otherwise
    /// one by one, stopping after a refused MAIL or once DATA has been answered.
    async fn exchange(&mut self, commands: &[String]) -> Result<Vec<Reply>, Failure> {
        if self.ext.pipelining {
            for command in commands {
                self.conn.queue(command.as_bytes());
                self.conn.queue(b"\r\n");
            }
            let mut replies = Vec::with_capacity(commands.len());
            for _ in commands {
                replies.push(self.read_reply().await?);
            }
            return Ok(replies);
        }
        let mut replies = Vec::with_capacity(commands.len());
        for (i, command) in commands.iter().enumerate() {
            let is_data = i + 1 == commands.len();
            let reply = self.command(command).await?;
            let stop = i == 0 && !reply.is_ok();
            replies.push(reply);
            if stop || is_data {
                break;
            }
        }
        Ok(replies)
    }

    async fn command(&mut self, command: &str) -> Result<Reply, Failure> {
        self.conn.queue(command.as_bytes());
        self.conn.queue(b"\r\n");
        self.read_reply().await
    }

    /// Reads one (possibly multi-line) reply, sending whatever is queued first. At shutdown
    /// the wait ends [`RECORD_AHEAD`] before the process does.
    async fn read_reply(&mut self) -> Result<Reply, Failure> {
        let mut lines = Vec::new();
        loop {
            let read = tokio::select! {
                line = self.conn.read_line(MAX_REPLY_LINE, self.timeout) => Some(line),
                () = self.deadline.near(RECORD_AHEAD) => None,
            };
            let Some(read) = read else {
                return Err(self.cut("cut while waiting for a reply: the server is stopping"));
            };
            let line = match read {
                Line::Ok(line) => line,
                Line::TooLong => return Err(self.broken("a reply line too long")),
                Line::Closed => return Err(self.broken("connection closed")),
                Line::TimedOut => return Err(self.broken("timed out waiting for a reply")),
                Line::Draining => return Err(self.broken("shutting down")),
            };
            let text = String::from_utf8_lossy(&line);
            let code = text.get(..3).and_then(|c| c.parse::<u16>().ok());
            let (Some(code), sep) = (code, text.as_bytes().get(3).copied()) else {
                return Err(self.broken(&format!("malformed reply {text:?}")));
            };
            if !(200..600).contains(&code) {
                return Err(self.broken(&format!("malformed reply {text:?}")));
            }
            lines.push(text.get(4..).unwrap_or("").to_string());
            if sep != Some(b'-') {
                return Ok(Reply { code, lines });
            }
            if lines.len() > MAX_REPLY_LINES {
                return Err(self.broken("a reply of too many lines"));
            }
        }
    }

    /// Given up because the server is stopping (see [`Failure::stopped`]).
    fn cut(&self, what: &str) -> Failure {
        Failure {
            remote: Some(self.host.clone()),
            ..Failure::stopped(format!("{}[{}]: {what}", self.host, self.addr))
        }
    }

    fn broken(&self, what: &str) -> Failure {
        Failure {
            remote: Some(self.host.clone()),
            ..Failure::temporary(format!("{}[{}]: {what}", self.host, self.addr))
        }
    }

    /// A failure from a refusing reply: 5xx is permanent, anything else temporary.
    fn refused(&self, reply: &Reply, after: &str) -> Failure {
        Failure {
            permanent: (500..600).contains(&reply.code),
            text: format!(
                "{}[{}] said: {} (in reply to {after})",
                self.host,
                self.addr,
                reply.text()
            ),
            reply: Some(reply.text()),
            remote: Some(self.host.clone()),
            stopped: false,
            by_plugin: false,
        }
    }

    /// Says goodbye (best effort).
    /// The peer offers DSN: the client's DSN parameters go on to it, and it reports.
    pub fn offers_dsn(&self) -> bool {
        self.ext.dsn
    }

    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.command("QUIT")).await;
    }
}

/// RET and ENVID for MAIL FROM, each with its leading space.
fn mail_dsn(dsn: &EnvelopeDsn) -> String {
    crate::mail::dsn::param_text(&dsn.mail_params())
}

/// NOTIFY and ORCPT for RCPT TO, each with its leading space.
fn rcpt_dsn(dsn: &RcptDsn) -> String {
    crate::mail::dsn::param_text(&dsn.params())
}

#[cfg(test)]
mod dsn_tests {
    use super::*;
    use crate::mail::dsn::Ret;

    #[test]
    fn dsn_parameters_go_on_as_xtext() {
        let dsn = EnvelopeDsn {
            ret: Some(Ret::Full),
            envid: Some("a b=c".into()),
            ..EnvelopeDsn::default()
        };
        assert_eq!(mail_dsn(&dsn), " RET=FULL ENVID=a+20b+3Dc");
        let rcpt = RcptDsn {
            notify: Some(crate::mail::dsn::Notify {
                success: true,
                failure: true,
                delay: false,
            }),
            orcpt: Some(crate::mail::dsn::Orcpt {
                addr_type: "rfc822".into(),
                address: "x+y@a.test".into(),
            }),
        };
        assert_eq!(
            rcpt_dsn(&rcpt),
            " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+2By@a.test"
        );
        assert_eq!(rcpt_dsn(&RcptDsn::default()), "");
    }
}

fn fail_accepted(results: &mut RecipientResults, failure: &Failure) {
    for slot in results.iter_mut().filter(|r| r.is_ok()) {
        *slot = Err(failure.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// A peer that refuses EHLO (so no extensions, no PIPELINING) and logs every line it gets.
    async fn old_peer() -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let (read, mut write) = tcp.into_split();
            let mut lines = BufReader::new(read).lines();
            let mut seen = Vec::new();
            write
                .write_all(b"220-old.test\r\n220 hello\r\n")
                .await
                .expect("greet");
            let mut in_data = false;
            while let Ok(Some(line)) = lines.next_line().await {
                seen.push(line.clone());
                let reply: &[u8] = if in_data {
                    if line != "." {
                        continue;
                    }
                    in_data = false;
                    b"250 done\r\n"
                } else if line.starts_with("EHLO") {
                    b"502 what\r\n"
                } else if line.starts_with("RCPT TO:<no") {
                    b"550 5.1.1 unknown\r\n"
                } else if line == "DATA" {
                    in_data = true;
                    b"354 go\r\n"
                } else if line == "QUIT" {
                    write.write_all(b"221 bye\r\n").await.expect("bye");
                    break;
                } else {
                    b"250 ok\r\n"
                };
                write.write_all(reply).await.expect("reply");
            }
            seen
        });
        (addr, task)
    }

    fn plain_target() -> Target {
        Target {
            route: crate::mail::Route::Relay("old.test:25".into()),
            tls: ClientTls::Opportunistic,
            tls_verify: false,
            auth: None,
            mta_sts: false,
        }
    }

    fn settings() -> Settings {
        Settings {
            helo: "gw.test".into(),
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            deadline: Deadline::default(),
            checked_tls: None,
        }
    }

    #[tokio::test]
    async fn helo_fallback_without_pipelining_and_per_recipient_results() {
        let (addr, peer) = old_peer().await;
        let candidate = Candidate {
            name: "old.test".into(),
            addr,
        };
        let mut client = SmtpClient::connect(&candidate, &plain_target(), &settings())
            .await
            .expect("connect");
        let rcpts = vec!["yes@a.test".to_string(), "no@a.test".to_string()];
        let payload = super::super::wire::data_payload(b"Subject: x\r\n\r\n.dot\r\n");
        // Asked for, but the peer offers no DSN: none of it goes on the wire.
        let mut dsn = EnvelopeDsn {
            ret: Some(crate::mail::dsn::Ret::Hdrs),
            envid: Some("id 1".into()),
            ..EnvelopeDsn::default()
        };
        let notify = crate::mail::dsn::Notify {
            success: true,
            ..Default::default()
        };
        dsn.recipients.insert(
            "yes@a.test".into(),
            RcptDsn {
                notify: Some(notify),
                orcpt: None,
            },
        );
        let mut out = Outgoing {
            sender: "s@b.test",
            recipients: &rcpts,
            payload: &payload,
            size: 20,
            eight_bit: true,
            smtputf8: false,
            binary: false,
            reply_allowance: MIN_REPLY_ALLOWANCE,
            dsn: &dsn,
        };
        let refused = client.send(&out).await.expect_err("8-bit to a 7-bit peer");
        assert!(
            refused.permanent && refused.text.starts_with("5.6.3"),
            "{refused:?}"
        );
        out.eight_bit = false;
        let results = client.send(&out).await.expect("sent");
        assert_eq!(results[0], Ok("250 done".to_string()));
        let failure = results[1].clone().expect_err("refused recipient");
        assert!(failure.permanent);
        assert_eq!(failure.reply.as_deref(), Some("550 5.1.1 unknown"));
        client.quit().await;
        let seen = peer.await.expect("peer");
        assert_eq!(seen[0], "EHLO gw.test");
        assert_eq!(seen[1], "HELO gw.test");
        assert_eq!(
            seen[2], "MAIL FROM:<s@b.test>",
            "no SIZE or RET without EHLO"
        );
        assert_eq!(seen[3], "RCPT TO:<yes@a.test>", "no NOTIFY without DSN");
        assert!(seen.contains(&"..dot".to_string()), "dot-stuffed: {seen:?}");
    }
}
