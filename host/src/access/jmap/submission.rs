//! EmailSubmission (RFC 8621 §7): a message is sent the way an authenticated SMTP client
//! sends it — through an SMTP session the server holds with itself, on a listener named
//! `jmap` — so that it meets the same stages (connect, HELO, MAIL, RCPT, DATA), limits,
//! signing, spool and relay as any submission. The session is pre-authenticated as the JMAP
//! user; its replies become the submission's result.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::account::Account;
use super::api::MethodError;
use super::context::{Answers, Context};
use super::methods::{Call, IDENTITY};
use super::{email, message};

use crate::config::{ListenerConfig, Protocol as ProtocolKind, TlsMode};
use crate::net::connection::{Client, Connection, Stream};
use crate::net::drain::DrainWatch;
use crate::net::Protocol;

/// How long the whole dialogue may take.
const DEADLINE: Duration = Duration::from_secs(120);
/// The longest reply line read back.
const MAX_REPLY_LINE: usize = 2048;

/// Who is sending, from where.
pub struct Sender<'a> {
    pub user: &'a str,
    pub peer: SocketAddr,
    pub session_id: &'a str,
    pub drain: DrainWatch,
}

/// Why a submission was refused: the SetError type, and the SMTP reply that said so.
#[derive(Debug)]
pub struct Refused {
    pub kind: &'static str,
    pub reply: String,
    /// For `invalidRecipients`: the recipients refused.
    pub recipients: Vec<String>,
}

fn refused(kind: &'static str, reply: impl Into<String>) -> Refused {
    Refused {
        kind,
        reply: reply.into(),
        recipients: Vec::new(),
    }
}

/// Sends `message` from `mail_from` to `rcpt_to`; the SMTP reply that accepted it.
pub async fn send(
    smtp: Arc<dyn Protocol>,
    sender: Sender<'_>,
    (mail_from, rcpt_to): (&str, &[String]),
    message: &[u8],
) -> Result<String, Refused> {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let client = Client {
        conn: Connection::new(Stream::Memory(theirs)),
        peer: sender.peer,
        id: format!("{}-submit", sender.session_id),
        listener: ListenerConfig {
            name: "jmap".into(),
            address: sender.peer,
            protocol: ProtocolKind::Smtp,
            tls: TlsMode::Implicit,
            require_auth: true,
        },
        tls: true,
        login_window: None,
        drain: sender.drain,
        authenticated: Some(sender.user.to_string()),
    };
    let session = tokio::spawn(smtp.serve(client));
    let dialogue = async {
        let mut smtp = Dialogue {
            stream: BufReader::new(ours),
        };
        smtp.expect("", 220, "forbiddenToSend").await?;
        smtp.expect("EHLO jmap\r\n", 250, "forbiddenToSend").await?;
        smtp.expect(
            &format!("MAIL FROM:<{mail_from}>\r\n"),
            250,
            "forbiddenMailFrom",
        )
        .await?;
        let mut bad = Vec::new();
        let mut last = String::new();
        for rcpt in rcpt_to {
            let (code, reply) = smtp.command(&format!("RCPT TO:<{rcpt}>\r\n")).await?;
            if code != 250 && code != 251 {
                bad.push(rcpt.clone());
                last = reply;
            }
        }
        if !bad.is_empty() {
            let _ = smtp.command("QUIT\r\n").await;
            return Err(Refused {
                recipients: bad,
                ..refused("invalidRecipients", last)
            });
        }
        smtp.expect("DATA\r\n", 354, "forbiddenToSend").await?;
        let accepted = smtp.expect(&data(message), 250, "forbiddenToSend").await?;
        let _ = smtp.command("QUIT\r\n").await;
        Ok(accepted)
    };
    let result = tokio::time::timeout(DEADLINE, dialogue)
        .await
        .unwrap_or_else(|_| Err(refused("serverFail", "the submission timed out")));
    let _ = session.await;
    result
}

/// The message dot-stuffed, with the end-of-data line.
fn data(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let mut out = String::with_capacity(message.len() + 64);
    for line in text.split_inclusive("\r\n") {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
    }
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}

struct Dialogue {
    stream: BufReader<tokio::io::DuplexStream>,
}

impl Dialogue {
    /// Sends `line` (nothing when empty) and reads one reply: its code and text.
    async fn command(&mut self, line: &str) -> Result<(u16, String), Refused> {
        let lost = |_| refused("serverFail", "the SMTP session ended");
        if !line.is_empty() {
            self.stream
                .get_mut()
                .write_all(line.as_bytes())
                .await
                .map_err(lost)?;
        }
        let mut reply = String::new();
        loop {
            let mut one = Vec::new();
            let read = (&mut self.stream)
                .take(MAX_REPLY_LINE as u64)
                .read_until(b'\n', &mut one)
                .await
                .map_err(lost)?;
            if read == 0 {
                return Err(refused("serverFail", "the SMTP session ended"));
            }
            let text = String::from_utf8_lossy(&one).trim_end().to_string();
            let last = text.as_bytes().get(3) != Some(&b'-');
            reply.push_str(&text);
            if last {
                let code = text.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Ok((code, reply));
            }
            reply.push(' ');
        }
    }

    /// [`Dialogue::command`] that must get `code`; else the submission is refused as `kind`.
    async fn expect(
        &mut self,
        line: &str,
        code: u16,
        kind: &'static str,
    ) -> Result<String, Refused> {
        let (got, reply) = self.command(line).await?;
        if got == code {
            Ok(reply)
        } else {
            // A message over the size limit is `tooLarge`; anything else keeps the step's kind
            // (temporary refusals too: the reply text says to try again).
            let kind = if got == 552 { "tooLarge" } else { kind };
            Err(refused(kind, reply))
        }
    }
}

impl Context<'_> {
    /// EmailSubmission/set: each created submission sends its email through SMTP; then the
    /// `onSuccessUpdateEmail`/`onSuccessDestroyEmail` changes, as an implicit Email/set.
    pub(super) async fn submission_set(
        &mut self,
        account: &mut Account,
        call: &Call<'_>,
    ) -> Result<Answers, MethodError> {
        let mut created = Map::new();
        let mut not_created = Map::new();
        let mut sent: HashMap<String, String> = HashMap::new();
        if let Some(create) = call.args.get("create").and_then(Value::as_object) {
            for (creation, object) in create {
                match self.submit_one(account, object).await {
                    Ok((email_id, reply)) => {
                        let id = format!("S{}", &email::blob_id(&email_id)[1..]);
                        self.created.insert(creation.clone(), id.clone());
                        sent.insert(format!("#{creation}"), email_id.clone());
                        sent.insert(id.clone(), email_id.clone());
                        created.insert(
                            creation.clone(),
                            json!({"id": id, "undoStatus": "final", "sendAt": email::utc_date(now_secs()), "smtpReply": reply}),
                        );
                    }
                    Err(e) => {
                        not_created.insert(creation.clone(), e);
                    }
                }
            }
        }
        let mut answers = vec![(
            "EmailSubmission/set".to_string(),
            json!({
                "accountId": call.account_id,
                "oldState": null,
                "newState": "0",
                "created": created,
                "notCreated": not_created,
                "updated": null,
                "notUpdated": null,
                "destroyed": null,
                "notDestroyed": null,
            }),
        )];
        let mut update = Map::new();
        for (reference, patch) in call
            .args
            .get("onSuccessUpdateEmail")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if let Some(email_id) = sent.get(reference) {
                update.insert(email_id.clone(), patch.clone());
            }
        }
        let destroy: Vec<Value> = call
            .args
            .get("onSuccessDestroyEmail")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().and_then(|r| sent.get(r)))
            .map(|id| Value::String(id.clone()))
            .collect();
        if !update.is_empty() || !destroy.is_empty() {
            let mut args = Map::new();
            args.insert("accountId".into(), call.account_id.into());
            args.insert("update".into(), Value::Object(update));
            args.insert("destroy".into(), Value::Array(destroy));
            let implied = Call {
                args,
                account_id: call.account_id,
                limits: call.limits,
                budget: call.budget,
            };
            answers.push(("Email/set".into(), self.email_set(account, &implied).await?));
        }
        Ok(answers)
    }

    /// Sends one submission; the email id and the SMTP reply, or the SetError.
    async fn submit_one(
        &self,
        account: &Account,
        object: &Value,
    ) -> Result<(String, String), Value> {
        let invalid = |why: &str| email::set_error("invalidProperties", why);
        let object = object
            .as_object()
            .ok_or_else(|| invalid("a submission is an object"))?;
        if object.get("identityId").and_then(Value::as_str) != Some(IDENTITY) {
            return Err(invalid("identityId must be one of Identity/get's"));
        }
        let given = object
            .get("emailId")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("emailId is required"))?;
        let email_id = match given.strip_prefix('#') {
            Some(creation) => self.created.get(creation).cloned().unwrap_or_default(),
            None => given.to_string(),
        };
        let record = account
            .email(&email_id)
            .ok_or_else(|| email::set_error("invalidEmail", format!("no email {given}")))?
            .clone();
        let stored = account
            .stored(&record)
            .map_err(|e| email::set_error("serverFail", e.to_string()))?;
        let message = crate::message::Message::new(stored);
        let (mail_from, rcpt_to) = envelope(object.get("envelope"), &message, &account.user)?;
        if !mail_from.eq_ignore_ascii_case(&account.user) {
            return Err(email::set_error(
                "forbiddenMailFrom",
                format!("{} may send as {} only", account.user, account.user),
            ));
        }
        if rcpt_to.is_empty() {
            return Err(email::set_error(
                "noRecipients",
                "the email names no recipients",
            ));
        }
        let without_bcc = without_bcc(&message);
        let sender = Sender {
            user: &account.user,
            peer: self.caller.peer,
            session_id: &self.caller.session.id,
            drain: self.caller.drain.another(),
        };
        match send(
            self.jmap.smtp.clone(),
            sender,
            (&mail_from, &rcpt_to),
            &without_bcc,
        )
        .await
        {
            Ok(reply) => {
                tracing::info!(
                    user = account.user,
                    email = email_id,
                    "JMAP submission: {reply}"
                );
                Ok((email_id, reply))
            }
            Err(refused) => {
                let mut error = email::set_error(refused.kind, refused.reply);
                if !refused.recipients.is_empty() {
                    error["invalidRecipients"] = json!(refused.recipients);
                }
                Err(error)
            }
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The envelope of a submission: as given, or the identity's address and the message's
/// To, Cc and Bcc addresses.
fn envelope(
    given: Option<&Value>,
    message: &crate::message::Message,
    user: &str,
) -> Result<(String, Vec<String>), Value> {
    let invalid = |why: &str| email::set_error("invalidProperties", why);
    if let Some(envelope) = given.filter(|e| !e.is_null()) {
        let address = |v: &Value| {
            v.get("email")
                .and_then(Value::as_str)
                .filter(|e| e.contains('@') && !e.contains(['<', '>', ' ', '\r', '\n']))
                .map(str::to_string)
        };
        let from = envelope
            .get("mailFrom")
            .and_then(address)
            .ok_or_else(|| invalid("envelope.mailFrom needs an email"))?;
        let to = envelope
            .get("rcptTo")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("envelope.rcptTo is a list"))?
            .iter()
            .map(|r| address(r).ok_or_else(|| invalid("every rcptTo needs an email")))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok((from, to));
    }
    let mut to = Vec::new();
    for name in ["To", "Cc", "Bcc"] {
        for field in message.header(name) {
            if let Value::Array(list) =
                message::header_form(&field.raw, "asAddresses").unwrap_or(Value::Null)
            {
                for a in list {
                    if let Some(email) = a["email"].as_str().filter(|e| e.contains('@')) {
                        if !to.iter().any(|t: &String| t.eq_ignore_ascii_case(email)) {
                            to.push(email.to_string());
                        }
                    }
                }
            }
        }
    }
    Ok((user.to_string(), to))
}

/// The message as sent: its Bcc field removed (RFC 8621 §7.5).
fn without_bcc(message: &crate::message::Message) -> Vec<u8> {
    if message.header("Bcc").is_empty() {
        return message.raw().to_vec();
    }
    let edit = crate::message::MessageEdit::RemoveHeader("Bcc".into());
    match crate::message::apply_message_edits(message, &[edit]) {
        Ok(Some(edited)) => edited.into_raw(),
        _ => message.raw().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::data;

    #[test]
    fn data_is_dot_stuffed_and_terminated() {
        assert_eq!(data(b"a\r\n.b\r\n..c"), "a\r\n..b\r\n...c\r\n.\r\n");
    }
}
