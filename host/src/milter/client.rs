//! The milter client: a chain member that is a milter (rspamd, OpenDKIM, clamav-milter...).
//! Each client session gets one connection, opened at the first stage the milter takes part
//! in and kept across the session's transactions (ABORT between messages, as Postfix does).
//! Connect, HELO, MAIL and RCPT go to the milter at our stages of the same name; the whole
//! message (header fields, end of headers, body chunks, end of message) at DATA, since we
//! have it whole by then. Whatever the milter has not seen yet when a stage needs it (a
//! conversation opened late) is sent first, so its view of the session is always complete.
//!
//! Every wait is bounded: `timeout-ms` for each answer (a progress packet restarts it, up to
//! ten times that per stage), the packet size, the body a milter may send back. A milter that
//! fails is not asked again in that session; the member's failure policy answers for it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::codec::{actions, steps, Command, Family, Response, CHUNK};
use crate::mail::MailState;
use crate::message::MessageEdit;
use crate::plugin::{Conversation, Edit, ExternalFault, ExternalFilter, Stage, StageCall, Verdict};
use breaker::{Admission, Breaker};
use translate::{command_name, edit_from, header_value_out, need, with_params};
use transport::{channel_fault, earlier, fault_text, open_link, Address, Link};

pub mod breaker;
mod translate;
mod transport;

/// Modifications one end of message may carry.
const MAX_EDITS: usize = 10_000;
/// Progress packets stretch a stage's wait up to this many times `timeout-ms`.
const PROGRESS_STRETCH: u32 = 10;

/// One configured milter.
pub struct MilterFilter {
    params: Arc<MilterParams>,
}

/// What a milter's conversations need to know of it.
struct MilterParams {
    address: Address,
    /// As configured, for messages.
    spelled: String,
    timeout: Duration,
    /// Our host name, the `j` macro.
    hostname: String,
    /// The longest body a milter may hand back (the gateway's message size limit).
    max_body: usize,
    /// Shared by the sessions: whether the milter is worth a connection attempt.
    breaker: Arc<Breaker>,
}

impl MilterFilter {
    /// The milter at `spelled`, member `member` of the chain.
    pub fn new(
        member: &str,
        spelled: &str,
        timeout: Duration,
        hostname: &str,
        max_body: usize,
    ) -> Result<MilterFilter, String> {
        let params = MilterParams {
            address: Address::parse(spelled)?,
            spelled: spelled.to_string(),
            timeout,
            hostname: hostname.to_string(),
            max_body,
            breaker: breaker::for_member(member),
        };
        Ok(MilterFilter {
            params: Arc::new(params),
        })
    }
}

impl ExternalFilter for MilterFilter {
    fn target(&self) -> String {
        format!("milter {}", self.params.spelled)
    }

    fn protocol(&self) -> &'static str {
        "milter 6"
    }

    fn stages(&self) -> Vec<Stage> {
        vec![
            Stage::Connect,
            Stage::Helo,
            Stage::MailFrom,
            Stage::RcptTo,
            Stage::Data,
        ]
    }

    fn open(&self, session_id: &str) -> Box<dyn Conversation> {
        Box::new(MilterConversation {
            filter: self.params.clone(),
            session_id: session_id.to_string(),
            link: None,
            failed: None,
            seen: Seen::default(),
            done: Done::No,
            discard: false,
        })
    }
}

/// What the milter has been shown in this session.
#[derive(Default)]
struct Seen {
    connect: bool,
    helo: bool,
    mail: bool,
    rcpt: bool,
}

/// How far a milter's accept reaches.
#[derive(PartialEq, Eq)]
enum Done {
    No,
    /// Accepted the message: not asked again until the next MAIL.
    Message,
    /// Accepted the connection: not asked again in this session.
    Connection,
}

struct MilterConversation {
    filter: Arc<MilterParams>,
    session_id: String,
    link: Option<Link>,
    /// Why the milter failed earlier in this session.
    failed: Option<ExternalFault>,
    seen: Seen,
    done: Done,
    /// Discard asked for before the end of the message: applied at DATA.
    discard: bool,
}

/// A milter's last word on one step, with what it changed (at end of message).
struct Answer {
    last: Response,
    edits: Vec<Edit>,
    quarantine: Option<String>,
}

impl Answer {
    fn goes_on(&self) -> bool {
        matches!(self.last, Response::Continue | Response::Skip)
    }

    fn go_on() -> Answer {
        Answer {
            last: Response::Continue,
            edits: Vec::new(),
            quarantine: None,
        }
    }
}

/// One thing to show the milter.
enum Step<'a> {
    Connect,
    Helo(&'a str),
    Mail(&'a [crate::mail::EsmtpParam]),
    Rcpt(&'a str, std::borrow::Cow<'a, [crate::mail::EsmtpParam]>),
    Message,
}

#[async_trait]
impl Conversation for MilterConversation {
    async fn call(
        &mut self,
        call: StageCall<'_>,
        state: &MailState,
    ) -> Result<(Verdict, Vec<Edit>), ExternalFault> {
        if let Some(fault) = &self.failed {
            return Err(match fault {
                ExternalFault::Down(_) => {
                    self.filter.breaker.skipped();
                    fault.clone()
                }
                _ => earlier(fault),
            });
        }
        let result = self.run(call, state).await;
        if let Err(fault) = &result {
            if !matches!(fault, ExternalFault::Down(_)) {
                tracing::warn!(
                    session = self.session_id,
                    "milter {}: {}",
                    self.filter.spelled,
                    fault_text(fault)
                );
            }
            self.failed = Some(fault.clone());
            self.link = None;
        }
        result
    }
}

impl Drop for MilterConversation {
    fn drop(&mut self) {
        // Say goodbye without holding anyone up; a milter that does not read it loses nothing.
        if let (Some(mut link), Ok(runtime)) =
            (self.link.take(), tokio::runtime::Handle::try_current())
        {
            let deadline = Instant::now() + self.filter.timeout;
            runtime.spawn(async move {
                let _ = link.channel.send(&Command::Quit, deadline).await;
            });
        }
    }
}

impl MilterConversation {
    async fn run(
        &mut self,
        call: StageCall<'_>,
        state: &MailState,
    ) -> Result<(Verdict, Vec<Edit>), ExternalFault> {
        let stage = call.stage();
        if stage == Stage::MailFrom {
            self.next_message().await?;
        }
        if stage == Stage::Data && self.discard {
            return Ok((Verdict::Discard, Vec::new()));
        }
        if self.done != Done::No {
            return Ok((Verdict::Continue, Vec::new()));
        }
        let now = match call {
            StageCall::Connect => Step::Connect,
            StageCall::Helo(name) => Step::Helo(name),
            StageCall::MailFrom(params) => Step::Mail(params),
            StageCall::RcptTo(rcpt, params) => Step::Rcpt(rcpt, params.into()),
            StageCall::Data => Step::Message,
            StageCall::Deliver | StageCall::Retrieve => return Ok((Verdict::Continue, Vec::new())),
        };
        for step in self.catch_up(&now, state).into_iter().chain([now]) {
            let answer = self.step(&step, state).await?;
            if !answer.goes_on() || step_is_message(&step) {
                return Ok(self.settle(answer, stage));
            }
        }
        Ok((Verdict::Continue, Vec::new()))
    }

    /// What the milter must be shown before `now`: the connection, the HELO, the sender and
    /// the recipients it has not seen.
    fn catch_up<'s>(&self, now: &Step<'_>, state: &'s MailState) -> Vec<Step<'s>> {
        let mut before = Vec::new();
        if matches!(now, Step::Connect) {
            return before;
        }
        if !self.seen.connect {
            before.push(Step::Connect);
        }
        if matches!(now, Step::Helo(_)) {
            return before;
        }
        if let (false, Some(helo)) = (self.seen.helo, &state.session.helo) {
            before.push(Step::Helo(helo));
        }
        if matches!(now, Step::Mail(_)) {
            return before;
        }
        if !self.seen.mail {
            before.push(Step::Mail(&state.envelope.params));
        }
        if matches!(now, Step::Message) && !self.seen.rcpt {
            // Shown late, each recipient still carries its DSN parameters (NOTIFY, ORCPT).
            let dsn = &state.envelope.dsn;
            before.extend(
                (state.envelope.recipients.iter())
                    .map(|r| Step::Rcpt(r, dsn.recipient(r).params().into())),
            );
        }
        before
    }

    /// Opens the session's connection, unless the member's breaker says it is down; a
    /// connection that cannot be made counts against the breaker, which logs the outage (a
    /// milter that answers but breaks the protocol is a fault of each session, as before).
    async fn connect(filter: Arc<MilterParams>) -> Result<Link, ExternalFault> {
        let breaker = &filter.breaker;
        let stale_try = filter.timeout.saturating_add(Duration::from_secs(1));
        if let Admission::Skip(why) = breaker.admit(stale_try) {
            return Err(ExternalFault::Down(why));
        }
        match transport::connect(&filter).await {
            Ok(stream) => {
                breaker.connected();
                open_link(&filter, stream).await
            }
            Err(why) => {
                breaker.failed(&why);
                Err(ExternalFault::Down(format!("down: {why}")))
            }
        }
    }

    /// A new MAIL: the milter forgets the last message (if it saw one).
    async fn next_message(&mut self) -> Result<(), ExternalFault> {
        if self.done == Done::Message {
            self.done = Done::No;
        }
        self.discard = false;
        if self.seen.mail {
            self.seen.mail = false;
            self.seen.rcpt = false;
            if let Some(link) = self.link.as_mut() {
                let deadline = Instant::now() + self.filter.timeout;
                link.channel
                    .send(&Command::Abort, deadline)
                    .await
                    .map_err(|e| channel_fault(e, self.filter.timeout, "sending abort"))?;
            }
        }
        Ok(())
    }

    /// Shows the milter one step and returns its answer.
    async fn step(&mut self, step: &Step<'_>, state: &MailState) -> Result<Answer, ExternalFault> {
        if self.link.is_none() {
            self.link = Some(Self::connect(self.filter.clone()).await?);
        }
        let session = &state.session;
        match step {
            Step::Connect => {
                self.seen.connect = true;
                let macros = vec![
                    ("j", self.filter.hostname.clone()),
                    ("{daemon_name}", session.listener.clone()),
                    ("{client_addr}", session.peer_ip.clone()),
                    ("{client_port}", session.peer_port.to_string()),
                    ("_", format!("[{}]", session.peer_ip)),
                ];
                let family = match session.peer_ip.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V4(ip)) => Family::Inet(ip),
                    Ok(std::net::IpAddr::V6(ip)) => Family::Inet6(ip),
                    Err(_) => Family::Unknown,
                };
                let command = Command::Connect {
                    hostname: format!("[{}]", session.peer_ip),
                    family,
                    port: session.peer_port,
                };
                self.ask(
                    b'C',
                    macros,
                    command,
                    (steps::NO_CONNECT, steps::NO_REPLY_CONNECT),
                )
                .await
            }
            Step::Helo(name) => {
                self.seen.helo = true;
                let macros = if session.tls {
                    vec![("{tls_version}", "TLS".to_string())]
                } else {
                    Vec::new()
                };
                let command = Command::Helo(name.to_string());
                self.ask(
                    b'H',
                    macros,
                    command,
                    (steps::NO_HELO, steps::NO_REPLY_HELO),
                )
                .await
            }
            Step::Mail(params) => {
                self.seen.mail = true;
                let sender = &state.envelope.sender;
                let mut macros = vec![
                    ("i", self.session_id.clone()),
                    ("{mail_addr}", sender.clone()),
                ];
                if let Some(user) = &session.auth_user {
                    macros.push(("{auth_authen}", user.clone()));
                    macros.push(("{auth_type}", "PLAIN".into()));
                }
                let args = with_params(format!("<{sender}>"), params);
                self.ask(
                    b'M',
                    macros,
                    Command::Mail(args),
                    (steps::NO_MAIL, steps::NO_REPLY_MAIL),
                )
                .await
            }
            Step::Rcpt(rcpt, params) => {
                self.seen.rcpt = true;
                let macros = vec![("{rcpt_addr}", rcpt.to_string())];
                let args = with_params(format!("<{rcpt}>"), params.as_ref());
                self.ask(
                    b'R',
                    macros,
                    Command::Rcpt(args),
                    (steps::NO_RCPT, steps::NO_REPLY_RCPT),
                )
                .await
            }
            Step::Message => self.message(state).await,
        }
    }

    /// Sends the macros and one command, then reads the answer unless the milter declined
    /// the step or said it would not answer it.
    async fn ask(
        &mut self,
        letter: u8,
        macros: Vec<(&str, String)>,
        command: Command,
        (declined, unanswered): (u32, u32),
    ) -> Result<Answer, ExternalFault> {
        let timeout = self.filter.timeout;
        let Some(link) = self.link.as_mut() else {
            return Err(ExternalFault::Peer("not connected".into()));
        };
        if link.agreed.steps & declined != 0 {
            return Ok(Answer::go_on());
        }
        let deadline = Instant::now() + timeout;
        let fail = |e| channel_fault(e, timeout, command_name(letter));
        if !macros.is_empty() {
            let pairs = macros
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let packet = Command::Macros {
                stage: letter,
                pairs,
            };
            link.channel.send(&packet, deadline).await.map_err(fail)?;
        }
        link.channel.send(&command, deadline).await.map_err(fail)?;
        if link.agreed.steps & unanswered != 0 {
            return Ok(Answer::go_on());
        }
        self.answer(false, letter).await
    }

    /// The message: DATA, each header field, end of headers, the body in chunks, end of
    /// message; the milter's modifications come with its answer to the last.
    async fn message(&mut self, state: &MailState) -> Result<Answer, ExternalFault> {
        let Some(message) = state.message.clone() else {
            return Ok(Answer::go_on());
        };
        let answer = self
            .ask(
                b'T',
                Vec::new(),
                Command::Data,
                (steps::NO_DATA, steps::NO_REPLY_DATA),
            )
            .await?;
        if !answer.goes_on() {
            return Ok(answer);
        }
        let leading_space = self.agreed(steps::HEADER_LEADING_SPACE);
        let raw = message.raw();
        let header = message.header_block();
        for field in &header.fields {
            let name = String::from_utf8_lossy(&raw[field.name.clone()]).into_owned();
            let value = header_value_out(&raw[field.value.clone()], leading_space);
            let answer = self
                .ask(
                    b'L',
                    Vec::new(),
                    Command::Header { name, value },
                    (steps::NO_HEADERS, steps::NO_REPLY_HEADER),
                )
                .await?;
            if !answer.goes_on() {
                return Ok(answer);
            }
        }
        let answer = self
            .ask(
                b'N',
                Vec::new(),
                Command::EndOfHeaders,
                (steps::NO_EOH, steps::NO_REPLY_EOH),
            )
            .await?;
        if !answer.goes_on() {
            return Ok(answer);
        }
        for chunk in message.body().chunks(CHUNK) {
            let answer = self
                .ask(
                    b'B',
                    Vec::new(),
                    Command::Body(chunk.to_vec()),
                    (steps::NO_BODY, steps::NO_REPLY_BODY),
                )
                .await?;
            if answer.last == Response::Skip {
                break;
            }
            if !answer.goes_on() {
                return Ok(answer);
            }
        }
        let timeout = self.filter.timeout;
        let Some(link) = self.link.as_mut() else {
            return Err(ExternalFault::Peer("not connected".into()));
        };
        let deadline = Instant::now() + timeout;
        let fail = |e| channel_fault(e, timeout, "end of message");
        let macros = Command::Macros {
            stage: b'E',
            pairs: vec![("i".into(), self.session_id.clone())],
        };
        link.channel.send(&macros, deadline).await.map_err(fail)?;
        link.channel
            .send(&Command::EndOfMessage, deadline)
            .await
            .map_err(fail)?;
        self.answer(true, b'E').await
    }

    fn agreed(&self, flag: u32) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.agreed.steps & flag != 0)
    }

    /// Reads responses up to the final one. Progress restarts the wait (within the stretch);
    /// modifications are taken only at the end of the message, and only those negotiated.
    async fn answer(&mut self, end_of_message: bool, letter: u8) -> Result<Answer, ExternalFault> {
        let timeout = self.filter.timeout;
        let Some(link) = self.link.as_mut() else {
            return Err(ExternalFault::Peer("not connected".into()));
        };
        let (actions, leading_space) = (
            link.agreed.actions,
            link.agreed.steps & steps::HEADER_LEADING_SPACE != 0,
        );
        let started = Instant::now();
        let cap = started + timeout * PROGRESS_STRETCH;
        let mut deadline = started + timeout;
        let mut answer = Answer::go_on();
        let mut body: Option<Vec<u8>> = None;
        loop {
            let response = link
                .channel
                .response(deadline.min(cap))
                .await
                .map_err(|e| channel_fault(e, timeout, command_name(letter)))?;
            match response {
                Response::Progress => deadline = Instant::now() + timeout,
                Response::Continue
                | Response::Accept
                | Response::Reject
                | Response::Tempfail
                | Response::Discard
                | Response::ReplyCode(_) => {
                    if let Some(body) = body {
                        answer
                            .edits
                            .push(Edit::Message(MessageEdit::ReplaceBody(body)));
                    }
                    answer.last = response;
                    return Ok(answer);
                }
                Response::Skip if letter == b'B' => {
                    answer.last = response;
                    return Ok(answer);
                }
                Response::Skip | Response::Negotiate(_) => {
                    return Err(ExternalFault::Peer(format!(
                        "answered {} with {}",
                        command_name(letter),
                        response.name()
                    )))
                }
                change if !end_of_message => {
                    return Err(ExternalFault::Peer(format!(
                        "sent {} in answer to {}, before the end of the message",
                        change.name(),
                        command_name(letter)
                    )))
                }
                Response::Quarantine(reason) => {
                    need(actions, actions::QUARANTINE, "quarantine")?;
                    answer.quarantine = Some(reason);
                }
                Response::ReplaceBody(chunk) => {
                    need(actions, actions::CHANGE_BODY, "replace body")?;
                    let body = body.get_or_insert_with(Vec::new);
                    if body.len().saturating_add(chunk.len()) > self.filter.max_body {
                        return Err(ExternalFault::Peer(format!(
                            "replacement body is over the {}-byte message limit",
                            self.filter.max_body
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                change => {
                    if answer.edits.len() >= MAX_EDITS {
                        return Err(ExternalFault::Peer(format!(
                            "more than {MAX_EDITS} modifications"
                        )));
                    }
                    answer
                        .edits
                        .push(edit_from(change, actions, leading_space)?);
                }
            }
        }
    }
}

fn step_is_message(step: &Step<'_>) -> bool {
    matches!(step, Step::Message)
}
