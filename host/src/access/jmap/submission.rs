//! EmailSubmission (RFC 8621 §7): a message is sent the way an authenticated SMTP client
//! sends it — through the intake's transaction, on a listener named `jmap` — so that it meets
//! the same stages (connect, HELO, MAIL, RCPT, DATA), limits, signing, spool and relay as any
//! submission, with its bytes exactly as stored. The transaction's refusals become the
//! submission's SetErrors.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::account::Account;
use super::api::MethodError;
use super::context::{Answers, Context};
use super::methods::{Call, IDENTITY};
use super::{email, message};

use crate::intake::{Answer, Facts, Gateway, Transaction};
use crate::mail::dsn::{self, DsnError};
use crate::mail::EsmtpParam;
use crate::net::drain::DrainWatch;
use crate::telemetry::journal::{self, Event};

/// Who is sending, from where.
pub struct Sender<'a> {
    pub user: &'a str,
    pub peer: SocketAddr,
    pub session_id: &'a str,
    pub drain: DrainWatch,
}

/// Why a submission was refused: the SetError type, and the reply that said so.
#[derive(Debug)]
pub struct Refused {
    pub kind: &'static str,
    pub reply: String,
    /// For `invalidRecipients`: the recipients refused.
    pub recipients: Vec<String>,
}

/// The SetError of a refused step: a message over the size limit is `tooLarge`; anything
/// else the step's kind (temporary refusals too: the reply text says to try again).
fn refused(kind: &'static str, answer: &Answer) -> Refused {
    let kind = if answer.reply.code == 552 {
        "tooLarge"
    } else {
        kind
    };
    Refused {
        kind,
        reply: answer.text(),
        recipients: Vec::new(),
    }
}

/// A submission's envelope: who from, to whom, and the DSN parameters (RFC 3461) given with
/// each address, as they go on the wire.
#[derive(Debug, Default)]
pub struct SubmissionEnvelope {
    pub mail_from: String,
    pub mail_params: Vec<EsmtpParam>,
    pub rcpt_to: Vec<String>,
    /// One list per recipient, in `rcpt_to`'s order.
    pub rcpt_params: Vec<Vec<EsmtpParam>>,
}

/// Sends `message` as `envelope` says; the reply that accepted it.
pub async fn send(
    intake: Arc<Gateway>,
    sender: Sender<'_>,
    envelope: &SubmissionEnvelope,
    message: Vec<u8>,
) -> Result<String, Refused> {
    let (mail_from, rcpt_to) = (envelope.mail_from.as_str(), &envelope.rcpt_to[..]);
    // Counts the submission as open work while the server drains.
    let _drain = sender.drain;
    let facts = Facts {
        id: format!("{}-submit", sender.session_id),
        listener: "jmap".into(),
        peer: sender.peer,
        tls: true,
        require_auth: true,
        dsn: false,
        helo: None,
        esmtp: false,
        auth_user: Some(sender.user.to_string()),
    };
    let mut trail = Trail::start(&facts);
    let mut tx = Transaction::new(intake, facts);
    trail.step("(connect)", tx.connect().await, "forbiddenToSend")?;
    trail.step("EHLO jmap", tx.helo("jmap", true).await, "forbiddenToSend")?;
    trail.tx = 1;
    let mut params = mail_params((mail_from, rcpt_to), &message);
    params.extend(envelope.mail_params.iter().cloned());
    let mail = tx.mail(mail_from.to_string(), params).await;
    let command = format!("MAIL FROM:<{mail_from}>");
    trail.step(&command, mail, "forbiddenMailFrom")?;
    let mut bad = Refused {
        kind: "invalidRecipients",
        reply: String::new(),
        recipients: Vec::new(),
    };
    for (i, rcpt) in rcpt_to.iter().enumerate() {
        let params = envelope.rcpt_params.get(i).cloned().unwrap_or_default();
        let answer = tx.rcpt(rcpt.clone(), params).await;
        if let Err(refusal) = trail.step(&format!("RCPT TO:<{rcpt}>"), answer, "") {
            bad.recipients.push(rcpt.clone());
            bad.reply = refusal.reply;
        }
    }
    if !bad.recipients.is_empty() {
        return Err(bad);
    }
    trail.step("DATA", tx.data(message).await, "forbiddenToSend")
}

/// The MAIL parameters the message needs: SMTPUTF8 for UTF-8 addresses or header fields
/// (RFC 6531/6532), BODY=8BITMIME for any other 8-bit content, so the relay offers it only to
/// peers that take it.
fn mail_params((from, to): (&str, &[String]), message: &[u8]) -> Vec<EsmtpParam> {
    let header_end = crate::message::header::HeaderBlock::parse(message, 0).fields_end;
    let utf8_header = !message[..header_end.min(message.len())].is_ascii();
    let utf8_address = !from.is_ascii() || to.iter().any(|r| !r.is_ascii());
    let mut params = Vec::new();
    if !message.is_ascii() {
        params.push(EsmtpParam {
            name: "BODY".into(),
            value: Some("8BITMIME".into()),
        });
    }
    if utf8_header || utf8_address {
        params.push(EsmtpParam {
            name: "SMTPUTF8".into(),
            value: None,
        });
    }
    params
}

/// What the submission tells the message journal, as an SMTP session would: its connection,
/// each step with the reply it got, and the message taken in.
struct Trail {
    id: String,
    tx: u32,
    on: bool,
}

impl Trail {
    fn start(facts: &Facts) -> Trail {
        let trail = Trail {
            id: facts.id.clone(),
            tx: 0,
            on: journal::enabled(),
        };
        let event = Event::Connect {
            peer: facts.peer.to_string(),
            listener: facts.listener.clone(),
            tls: facts.tls,
        };
        trail.record("", event);
        trail
    }

    fn record(&self, queue: &str, event: Event) {
        if self.on {
            journal::record(&self.id, self.tx, queue, event);
        }
    }

    /// Journals one step; its reply text, or the refusal as `kind`.
    fn step(
        &mut self,
        command: &str,
        answer: Answer,
        kind: &'static str,
    ) -> Result<String, Refused> {
        let stage = answer.stage.as_ref().filter(|r| !r.runs.is_empty());
        let event = Event::Command {
            command: command.to_string(),
            reply: answer.text(),
            stage: stage.map(|r| r.trace()),
        };
        self.record("", event);
        if let Some(taken) = &answer.accepted {
            if let Some((outcome, detail)) = &taken.disposition {
                let outcome = outcome.to_string();
                let detail = detail.clone();
                self.record(&taken.queue_id, Event::Disposition { outcome, detail });
            }
            let event = Event::Accepted {
                sender: taken.sender.clone(),
                recipients: taken.recipients.clone(),
                size: taken.size,
                authentication: taken.authentication.clone(),
                dsn: taken.dsn.clone(),
            };
            self.record(&taken.queue_id, event);
        }
        if answer.refused() {
            return Err(refused(kind, &answer));
        }
        Ok(answer.text())
    }
}

impl Context<'_> {
    /// EmailSubmission/set: each created submission sends its email through SMTP; then the
    /// `onSuccessUpdateEmail`/`onSuccessDestroyEmail` changes, as an implicit Email/set.
    pub(super) async fn submission_set(
        &mut self,
        account: &tokio::sync::Mutex<Account>,
        call: &Call<'_>,
    ) -> Result<Answers, MethodError> {
        let mut created = Map::new();
        let mut not_created = Map::new();
        let mut sent: HashMap<String, String> = HashMap::new();
        if let Some(create) = call.args.get("create").and_then(Value::as_object) {
            for (creation, object) in create {
                // The account is locked for one submission at a time (see Email/set).
                let submitted = self.submit_one(&*account.lock().await, object).await;
                match submitted {
                    Ok((email_id, reply)) => {
                        let id = format!("S{}", &email::blob_id(&email_id)[1..]);
                        self.created.insert(creation.clone(), id.clone());
                        sent.insert(format!("#{creation}"), email_id.clone());
                        sent.insert(id.clone(), email_id.clone());
                        created.insert(
                            creation.clone(),
                            json!({"id": id, "undoStatus": "final", "sendAt": email::utc_date(crate::mail::clock::unix_seconds()), "smtpReply": reply}),
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
        // A draft over the size of any message is refused before it is read (one stored
        // before the limit was checked, or by another way in, would be read whole).
        let max_size = self.jmap.shared.config.limits.max_message_bytes;
        if record.entry.size > max_size as u64 {
            return Err(super::too_large(max_size));
        }
        let stored = account
            .stored(&record)
            .map_err(|e| email::set_error("serverFail", e.to_string()))?;
        let message = crate::message::Message::new(stored);
        let envelope = envelope(object.get("envelope"), &message, &account.user)?;
        if !envelope.mail_from.eq_ignore_ascii_case(&account.user) {
            return Err(email::set_error(
                "forbiddenMailFrom",
                format!("{} may send as {} only", account.user, account.user),
            ));
        }
        if envelope.rcpt_to.is_empty() {
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
        match send(self.jmap.intake.clone(), sender, &envelope, without_bcc).await {
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

/// The envelope of a submission: as given (with its DSN parameters), or the identity's
/// address and the message's To, Cc and Bcc addresses.
fn envelope(
    given: Option<&Value>,
    message: &crate::message::Message,
    user: &str,
) -> Result<SubmissionEnvelope, Value> {
    let invalid = |why: &str| invalid_envelope(why.to_string());
    if let Some(envelope) = given.filter(|e| !e.is_null()) {
        let address = |v: &Value| {
            v.get("email")
                .and_then(Value::as_str)
                .filter(|e| e.contains('@') && !e.contains(['<', '>', ' ', '\r', '\n']))
                .map(str::to_string)
        };
        let mail_from = envelope.get("mailFrom");
        let from = mail_from
            .and_then(address)
            .ok_or_else(|| invalid("envelope.mailFrom needs an email"))?;
        let mail_params = parameters(mail_from, &["RET", "ENVID"], |p| {
            dsn::mail_params(p).map(|_| ())
        })?;
        let given_to = envelope
            .get("rcptTo")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("envelope.rcptTo is a list"))?;
        let mut to = Vec::with_capacity(given_to.len());
        let mut rcpt_params = Vec::with_capacity(given_to.len());
        for r in given_to {
            to.push(address(r).ok_or_else(|| invalid("every rcptTo needs an email"))?);
            rcpt_params.push(parameters(Some(r), &["NOTIFY", "ORCPT"], |p| {
                dsn::rcpt_params(p).map(|_| ())
            })?);
        }
        return Ok(SubmissionEnvelope {
            mail_from: from,
            mail_params,
            rcpt_to: to,
            rcpt_params,
        });
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
    Ok(SubmissionEnvelope {
        mail_from: user.to_string(),
        rcpt_to: to,
        ..SubmissionEnvelope::default()
    })
}

/// The SetError for an envelope that cannot be taken.
fn invalid_envelope(why: String) -> Value {
    let mut error = email::set_error("invalidProperties", why);
    error["properties"] = json!(["envelope"]);
    error
}

/// An address's `parameters` (RFC 8621 §7: names to values with xtext removed, or null):
/// only the DSN parameters `allowed` here, written for the wire and read by `check`, the
/// parser every entry point uses, so that what an SMTP client would be refused is refused.
fn parameters(
    address: Option<&Value>,
    allowed: &[&str],
    check: impl Fn(&[EsmtpParam]) -> Result<(), DsnError>,
) -> Result<Vec<EsmtpParam>, Value> {
    let given = match address.and_then(|a| a.get("parameters")) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(given)) => given,
        Some(_) => return Err(invalid_envelope("parameters is an object".into())),
    };
    let mut params = Vec::with_capacity(given.len());
    for (name, value) in given {
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
            let why = format!(
                "parameter {name} is not taken here (only {})",
                allowed.join(", ")
            );
            return Err(invalid_envelope(why));
        }
        let value = match value {
            Value::String(v) => Some(v.as_str()),
            Value::Null => None,
            _ => return Err(invalid_envelope(format!("parameter {name} is a string"))),
        };
        let param = dsn::from_decoded(name, value)
            .map_err(|e| invalid_envelope(format!("parameter {name}: {e}")))?;
        params.push(param);
    }
    check(&params).map_err(|e| invalid_envelope(e.to_string()))?;
    Ok(params)
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
    use super::mail_params;

    fn names(from: &str, to: &str, message: &[u8]) -> Vec<String> {
        let to = [to.to_string()];
        mail_params((from, &to), message)
            .into_iter()
            .map(|p| match p.value {
                Some(v) => format!("{}={v}", p.name),
                None => p.name,
            })
            .collect()
    }

    #[test]
    fn parameters_follow_what_the_message_needs() {
        let ascii = b"Subject: hi\r\n\r\nhello\r\n";
        assert!(names("a@x.test", "b@y.test", ascii).is_empty());
        let latin1_body = b"Subject: hi\r\n\r\nCaf\xe9\r\n";
        assert_eq!(
            names("a@x.test", "b@y.test", latin1_body),
            ["BODY=8BITMIME"]
        );
        let utf8_header = "Subject: Grüße\r\n\r\nhello\r\n".as_bytes();
        assert_eq!(
            names("a@x.test", "b@y.test", utf8_header),
            ["BODY=8BITMIME", "SMTPUTF8"]
        );
        assert_eq!(names("a@x.test", "jürgen@y.test", ascii), ["SMTPUTF8"]);
    }
}
