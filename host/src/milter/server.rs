//! The milter server: a listener (`protocol = "milter"`) through which an MTA — Postfix with
//! `smtpd_milters`, Sendmail with `INPUT_MAIL_FILTER` — runs mailgate's plugin chain on its own
//! traffic. Each milter step drives the stage of the same name (connect, HELO, MAIL, RCPT;
//! the header, body and end of message assemble the message for the data stage); verdicts go
//! back as milter replies with our reply codes and texts, and what the chain changed goes
//! back as milter modifications. The deliver and retrieve stages belong to the MTA there.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::channel::{Channel, ChannelError};
use super::codec::{actions, steps, Command, Family, Negotiation, Response, VERSION};
use super::modifications::modifications;
use crate::intake::Stages;
use crate::mail::dsn::{self, DsnError, EnvelopeDsn, RcptDsn};
use crate::mail::{Envelope, EsmtpParam, MailState, Reply, Session, MAX_ADDRESS_OCTETS};
use crate::message::Message;
use crate::net::connection::Client;
use crate::plugin::{StageCall, Verdict};
use crate::session_context::SessionContext;

/// The longest packet taken from an MTA (body chunks are at most 64 KiB).
const MAX_PACKET: usize = 1 << 20;
/// How long a reply may take to write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The actions we may need: every edit the chain can make.
const WANTED_ACTIONS: u32 = actions::ADD_HEADERS
    | actions::CHANGE_HEADERS
    | actions::CHANGE_BODY
    | actions::ADD_RCPT
    | actions::DELETE_RCPT
    | actions::CHANGE_FROM
    | actions::QUARANTINE;
/// The steps we do without a reply (fewer round trips), the unknown commands we do not need,
/// and header values with their leading space so the message is rebuilt byte for byte.
const WANTED_STEPS: u32 = steps::NO_REPLY_HEADER
    | steps::NO_REPLY_EOH
    | steps::NO_REPLY_BODY
    | steps::NO_REPLY_DATA
    | steps::NO_UNKNOWN
    | steps::NO_REPLY_UNKNOWN
    | steps::HEADER_LEADING_SPACE;

/// The milter protocol for a listener.
pub struct MilterServer {
    pub shared: Arc<SessionContext>,
}

impl crate::net::Protocol for MilterServer {
    fn refusal(&self, _why: &str) -> String {
        // A milter client expects no text: the closed connection is the refusal, and the MTA
        // applies its own default action (Postfix's `milter_default_action`).
        String::new()
    }

    fn serve(self: Arc<Self>, client: Client) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move { ServerSession::new(self, client).run().await })
    }
}

/// The macros a session reads (the authenticated user, the client's address when the MTA
/// gives no socket address, whether the client used TLS).
const USED_MACROS: [&str; 3] = ["{auth_authen}", "{client_addr}", "{tls_version}"];

struct ServerSession {
    server: Arc<MilterServer>,
    channel: Channel,
    id: String,
    listener: String,
    agreed: Negotiation,
    /// The latest value of each macro the MTA sent.
    macros: HashMap<String, String>,
    stages: Stages,
    /// The envelope as the MTA has it (its sender, the recipients it passed that we took):
    /// what the chain's envelope is compared with at the end of the message, so changes made
    /// at MAIL or RCPT reach the MTA too.
    given: Envelope,
    /// The message as it arrives (header fields, blank line, body).
    message: Vec<u8>,
    /// Set when the message outgrew the size limit: refused at its end.
    too_big: bool,
    _drain: crate::net::drain::DrainWatch,
}

/// What to do after a command.
enum Next {
    Continue,
    Close,
}

impl ServerSession {
    fn new(server: Arc<MilterServer>, client: Client) -> ServerSession {
        let shared = &server.shared;
        let stages = Stages::new(&shared.plugins, &shared.services, &client.id);
        ServerSession {
            channel: Channel::new(Box::new(client.conn.stream), MAX_PACKET),
            id: client.id,
            listener: client.listener.name,
            agreed: Negotiation {
                version: VERSION,
                actions: 0,
                steps: 0,
            },
            macros: HashMap::new(),
            stages,
            given: Envelope::default(),
            message: Vec::new(),
            too_big: false,
            _drain: client.drain,
            server,
        }
    }

    async fn run(mut self) {
        let idle = Duration::from_secs(self.server.shared.config.limits.command_timeout_secs);
        loop {
            let command = match self.channel.command(Instant::now() + idle).await {
                Ok(command) => command,
                Err(ChannelError::Closed) => return,
                Err(e) => {
                    tracing::info!("milter client: {e}");
                    return;
                }
            };
            let next = self.handle(command).await;
            // A client that streams packets keeps this task always ready; without a turn for
            // the others after each command, a flood of them held a worker for seconds while
            // other clients' greetings waited.
            tokio::task::yield_now().await;
            match next {
                Ok(Next::Continue) => {}
                Ok(Next::Close) => return,
                Err(e) => {
                    tracing::info!("milter client: {e}");
                    return;
                }
            }
        }
    }

    async fn handle(&mut self, command: Command) -> Result<Next, ChannelError> {
        match command {
            Command::Negotiate(offer) => {
                self.agreed = Negotiation {
                    version: VERSION.min(offer.version),
                    actions: WANTED_ACTIONS & offer.actions,
                    steps: WANTED_STEPS & offer.steps,
                };
                self.send(Response::Negotiate(self.agreed)).await?;
            }
            Command::Macros { pairs, .. } => self.keep_macros(pairs),
            Command::Connect {
                hostname,
                family,
                port,
            } => {
                self.new_session(&hostname, &family, port);
                let verdict = self.stage(StageCall::Connect).await;
                self.reply(&verdict, steps::NO_REPLY_CONNECT).await?;
            }
            Command::Helo(name) => {
                self.stages.state.session.helo = Some(name.clone());
                let verdict = self.stage(StageCall::Helo(&name)).await;
                self.reply(&verdict, steps::NO_REPLY_HELO).await?;
            }
            Command::Mail(args) => {
                self.next_transaction();
                let (sender, params) = envelope_args(&args);
                if sender.len() > MAX_ADDRESS_OCTETS {
                    let refused = Verdict::Reject(Reply::new(501, (5, 1, 7), "Address too long"));
                    self.reply(&refused, steps::NO_REPLY_MAIL).await?;
                    return Ok(Next::Continue);
                }
                let (ret, envid) = match dsn::mail_params(&params) {
                    Ok(found) => found,
                    Err(e) => {
                        let refused = Verdict::Reject(bad_dsn(&e));
                        self.reply(&refused, steps::NO_REPLY_MAIL).await?;
                        return Ok(Next::Continue);
                    }
                };
                self.stages.state.envelope = Envelope {
                    sender,
                    recipients: Vec::new(),
                    params: params.clone(),
                    dsn: EnvelopeDsn {
                        ret,
                        envid,
                        recipients: Default::default(),
                    },
                };
                self.given = self.stages.state.envelope.clone();
                self.stages.state.session.auth_user = self.macros.get("{auth_authen}").cloned();
                let verdict = self.stage(StageCall::MailFrom(&params)).await;
                self.reply(&verdict, steps::NO_REPLY_MAIL).await?;
            }
            Command::Rcpt(args) => {
                let (rcpt, params) = envelope_args(&args);
                let asked = dsn::rcpt_params(&params);
                let verdict = match (self.recipient_refusal(&rcpt), &asked) {
                    (Some(refused), _) => refused,
                    (None, Err(e)) => Verdict::Reject(bad_dsn(e)),
                    (None, Ok(_)) => self.stage(StageCall::RcptTo(&rcpt, &params)).await,
                };
                if matches!(verdict, Verdict::Continue | Verdict::Accept) {
                    self.given.recipients.push(rcpt.clone());
                    let envelope = &mut self.stages.state.envelope;
                    if let Some(asked) = asked.ok().filter(|a| *a != RcptDsn::default()) {
                        envelope.dsn.recipients.insert(rcpt.clone(), asked);
                    }
                    envelope.recipients.push(rcpt);
                }
                self.reply(&verdict, steps::NO_REPLY_RCPT).await?;
            }
            Command::Data => self.reply(&Verdict::Continue, steps::NO_REPLY_DATA).await?,
            Command::Header { name, value } => {
                let leading_space = self.agreed.steps & steps::HEADER_LEADING_SPACE != 0;
                let field = header_field(&name, &value, leading_space);
                self.take(&field);
                self.reply(&Verdict::Continue, steps::NO_REPLY_HEADER)
                    .await?;
            }
            Command::EndOfHeaders => {
                self.take(b"\r\n");
                self.reply(&Verdict::Continue, steps::NO_REPLY_EOH).await?;
            }
            Command::Body(chunk) => {
                self.take(&chunk);
                self.reply(&Verdict::Continue, steps::NO_REPLY_BODY).await?;
            }
            Command::EndOfMessage => self.end_of_message().await?,
            Command::Abort => self.next_transaction(),
            Command::Quit => return Ok(Next::Close),
            Command::QuitNewConnection => {
                self.next_transaction();
                self.stages.state = MailState::default();
                self.macros.clear();
            }
            Command::Unknown(_) => {
                self.reply(&Verdict::Continue, steps::NO_REPLY_UNKNOWN)
                    .await?
            }
        }
        Ok(Next::Continue)
    }

    /// The SMTP session's bounds on a recipient, applied to what the MTA passes: the address
    /// length and `max-recipients` per message (each kept recipient is held until the end of
    /// the message, so an MTA — or whoever reaches the port — cannot grow the list without end).
    fn recipient_refusal(&self, rcpt: &str) -> Option<Verdict> {
        if rcpt.len() > MAX_ADDRESS_OCTETS {
            return Some(Verdict::Reject(Reply::new(
                501,
                (5, 1, 3),
                "Address too long",
            )));
        }
        let limit = self.server.shared.config.limits.max_recipients;
        (self.given.recipients.len() >= limit)
            .then(|| Verdict::Tempfail(Reply::new(452, (4, 5, 3), "Too many recipients")))
    }

    /// Keeps the macros the session reads, and only those: an MTA sends dozens with every
    /// command, and a client that sent distinct names without end must not grow the table.
    fn keep_macros(&mut self, pairs: Vec<(String, String)>) {
        let used = pairs
            .into_iter()
            .filter(|(name, _)| USED_MACROS.contains(&name.as_str()));
        self.macros.extend(used);
    }

    /// A client of the MTA connected: the session as plugins see it.
    fn new_session(&mut self, hostname: &str, family: &Family, port: u16) {
        let peer_ip = match family {
            Family::Inet(ip) => ip.to_string(),
            Family::Inet6(ip) => ip.to_string(),
            Family::Unix(_) | Family::Unknown => self
                .macros
                .get("{client_addr}")
                .cloned()
                .unwrap_or_else(|| hostname.to_string()),
        };
        self.stages.state = MailState {
            session: Session {
                id: self.id.clone(),
                peer_ip,
                peer_port: port,
                listener: self.listener.clone(),
                tls: self.macros.contains_key("{tls_version}"),
                helo: None,
                auth_user: None,
            },
            ..MailState::default()
        };
    }

    /// A new transaction on the chain: fresh notes, the plugin set now in service, nothing of
    /// the last message.
    fn next_transaction(&mut self) {
        let shared = &self.server.shared;
        self.stages
            .next_transaction(&shared.plugins, &shared.services, &self.id);
        self.given = Envelope::default();
        self.message.clear();
        self.too_big = false;
    }

    async fn stage(&mut self, call: StageCall<'_>) -> Verdict {
        self.stages.run(call).await.decision
    }

    /// Adds message bytes, within the size limit.
    fn take(&mut self, bytes: &[u8]) {
        let limit = self.server.shared.config.limits.max_message_bytes;
        if self.too_big || self.message.len().saturating_add(bytes.len()) > limit {
            self.too_big = true;
            self.message = Vec::new();
            return;
        }
        self.message.extend_from_slice(bytes);
    }

    /// The message is in: the data stage runs, its edits go back as modifications.
    async fn end_of_message(&mut self) -> Result<(), ChannelError> {
        if self.too_big {
            let reply = Reply::new(552, (5, 3, 4), "Message too big");
            return self.send(Response::ReplyCode(reply_text(&reply))).await;
        }
        if crate::message::header::header_too_large(&self.message) {
            let why = crate::message::header::HEADER_TOO_LARGE;
            let reply = Reply::new(554, (5, 6, 0), why);
            return self.send(Response::ReplyCode(reply_text(&reply))).await;
        }
        let received = Arc::new(Message::new(std::mem::take(&mut self.message)));
        self.stages.state.message = Some(received.clone());
        let verdict = self.stage(StageCall::Data).await;
        let quarantine = match &verdict {
            Verdict::Continue | Verdict::Accept => None,
            Verdict::Quarantine(reason) => Some(reason.clone()),
            Verdict::Discard => return self.send(Response::Discard).await,
            refusal => return self.reply(refusal, 0).await,
        };
        let edited = self
            .stages
            .state
            .message
            .clone()
            .unwrap_or(received.clone());
        let changes = modifications(&received, &edited, &self.given, &self.stages.state.envelope);
        let leading_space = self.agreed.steps & steps::HEADER_LEADING_SPACE != 0;
        let mut responses = Vec::with_capacity(changes.len() + 2);
        for change in changes {
            let needed = action_of(&change);
            if self.agreed.actions & needed == 0 {
                tracing::warn!(
                    "the MTA did not allow {} (milter action {needed:#x}): message deferred",
                    change.name()
                );
                let reply = Reply::new(451, (4, 3, 0), "Policy edits cannot be applied here");
                return self.send(Response::ReplyCode(reply_text(&reply))).await;
            }
            responses.push(with_leading_space(change, leading_space));
        }
        if let Some(reason) = quarantine {
            responses.push(Response::Quarantine(reason));
        }
        responses.push(Response::Continue);
        for response in responses {
            self.send(response).await?;
        }
        Ok(())
    }

    /// The milter reply for a stage's verdict, unless the MTA was told we would not answer.
    async fn reply(&mut self, verdict: &Verdict, unanswered: u32) -> Result<(), ChannelError> {
        if unanswered != 0 && self.agreed.steps & unanswered != 0 {
            return Ok(());
        }
        let response = match verdict.reply() {
            Some(reply) => Response::ReplyCode(reply_text(reply)),
            None => Response::Continue,
        };
        self.send(response).await
    }

    async fn send(&mut self, response: Response) -> Result<(), ChannelError> {
        self.channel
            .send_response(&response, Instant::now() + WRITE_TIMEOUT)
            .await
    }
}

/// The milter action a modification needs.
fn action_of(change: &Response) -> u32 {
    match change {
        Response::AddHeader { .. } | Response::InsertHeader { .. } => actions::ADD_HEADERS,
        Response::ChangeHeader { .. } => actions::CHANGE_HEADERS,
        Response::ReplaceBody(_) => actions::CHANGE_BODY,
        Response::AddRcpt(_) | Response::AddRcptPar { .. } => actions::ADD_RCPT,
        Response::DeleteRcpt(_) => actions::DELETE_RCPT,
        Response::ChangeFrom { .. } => actions::CHANGE_FROM,
        Response::Quarantine(_) => actions::QUARANTINE,
        _ => 0,
    }
}

/// With `HEADER_LEADING_SPACE` agreed, a header value carries the space after the colon.
fn with_leading_space(change: Response, leading_space: bool) -> Response {
    if !leading_space {
        return change;
    }
    let spaced = |value: String| {
        if value.is_empty() {
            value
        } else {
            format!(" {value}")
        }
    };
    match change {
        Response::AddHeader { name, value } => Response::AddHeader {
            name,
            value: spaced(value),
        },
        Response::InsertHeader { index, name, value } => Response::InsertHeader {
            index,
            name,
            value: spaced(value),
        },
        Response::ChangeHeader { index, name, value } => Response::ChangeHeader {
            index,
            name,
            value: spaced(value),
        },
        other => other,
    }
}

/// One header field as it was in the message: `Name:` and the value (with its own leading
/// space when the MTA sends it, else one), line breaks as CRLF.
fn header_field(name: &str, value: &str, leading_space: bool) -> Vec<u8> {
    let value = value.replace("\r\n", "\n").replace('\n', "\r\n");
    let separator = if leading_space { ":" } else { ": " };
    [name, separator, &value, "\r\n"].concat().into_bytes()
}

/// The refusal of DSN parameters the intake's parser cannot take, as an SMTP server of ours
/// refuses them.
fn bad_dsn(e: &DsnError) -> Reply {
    Reply::new(501, (5, 5, 4), &e.to_string())
}

/// The address and ESMTP arguments of a MAIL or RCPT step.
fn envelope_args(args: &[String]) -> (String, Vec<EsmtpParam>) {
    let address = args.first().map_or("", |a| a.trim());
    let address = address
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(address)
        .to_string();
    let params = args
        .iter()
        .skip(1)
        .filter(|a| !a.is_empty())
        .map(|a| match a.split_once('=') {
            Some((name, value)) => EsmtpParam {
                name: name.to_string(),
                value: Some(value.to_string()),
            },
            None => EsmtpParam {
                name: a.to_string(),
                value: None,
            },
        })
        .collect();
    (address, params)
}

/// A reply as a milter reply-code text: `550 5.7.1 text`, more lines as `550-5.7.1 …`.
fn reply_text(reply: &Reply) -> String {
    let status = reply
        .enhanced
        .map(|(c, s, d)| format!("{c}.{s}.{d} "))
        .unwrap_or_default();
    let last = reply.lines.len().saturating_sub(1);
    let lines: Vec<String> = (reply.lines.iter().enumerate())
        .map(|(i, text)| {
            let dash = if i == last { ' ' } else { '-' };
            format!("{}{dash}{status}{text}", reply.code)
        })
        .collect();
    lines.join("\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_in_milter_form() {
        let one = Reply::new(550, (5, 7, 1), "No thanks");
        assert_eq!(reply_text(&one), "550 5.7.1 No thanks");
        let two = Reply {
            code: 451,
            enhanced: Some((4, 3, 0)),
            lines: vec!["first".into(), "100% second".into()],
        };
        assert_eq!(reply_text(&two), "451-4.3.0 first\r\n451 4.3.0 100% second");
    }

    #[test]
    fn envelope_arguments() {
        let (address, params) = envelope_args(&[
            "<a@b.test>".into(),
            "SIZE=10".into(),
            "BODY=8BITMIME".into(),
        ]);
        assert_eq!(address, "a@b.test");
        assert_eq!(params.len(), 2);
        assert_eq!(params[0].value.as_deref(), Some("10"));
        assert_eq!(envelope_args(&["<>".into()]).0, "");
    }

    #[test]
    fn header_fields_rebuilt_as_they_were() {
        assert_eq!(header_field("Subject", " Hi", true), b"Subject: Hi\r\n");
        assert_eq!(header_field("Subject", "Hi", false), b"Subject: Hi\r\n");
        assert_eq!(header_field("X", " a\n\tb", true), b"X: a\r\n\tb\r\n");
    }
}
