//! Delivery status notifications (RFC 3464): the `multipart/report` sent from `<>` to the
//! envelope sender when recipients fail permanently or expire, and, when the client asked
//! (RFC 3461), when they are delivered, relayed to a host that does not report, or delayed.

use crate::mail::date::rfc5322;
use crate::mail::dsn::{Orcpt, Ret};
use crate::message::header::HeaderBlock;

/// One recipient the report is about.
#[derive(Debug, Clone)]
pub struct FailedRecipient {
    pub address: String,
    /// Why, for people.
    pub reason: String,
    /// The remote reply (`550 5.1.1 ...`), if a server gave one.
    pub reply: Option<String>,
    pub remote: Option<String>,
    /// True when the recipient expired in the queue rather than being refused.
    pub expired: bool,
}

impl FailedRecipient {
    /// The enhanced status code: from the reply or reason when it carries one, else 5.0.0
    /// (4.4.7 for an expired message).
    pub fn status(&self) -> String {
        let from = |text: &str| {
            text.split_whitespace()
                .take(2)
                .find(|w| is_enhanced_code(w))
                .map(str::to_string)
        };
        self.reply
            .as_deref()
            .and_then(from)
            .or_else(|| from(&self.reason))
            .unwrap_or_else(|| if self.expired { "4.4.7" } else { "5.0.0" }.into())
    }
}

/// The enhanced status code (`5.1.1`) a reply text carries after its code, if any.
pub fn enhanced_code(reply: &str) -> Option<String> {
    reply
        .split_whitespace()
        .take(2)
        .find(|w| is_enhanced_code(w))
        .map(str::to_string)
}

fn is_enhanced_code(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// What the report needs to know about the original message.
pub struct Original<'a> {
    pub queue_id: &'a str,
    pub sender: &'a str,
    pub received_at: u64,
    pub message: &'a [u8],
    /// The client's ENVID, returned as Original-Envelope-Id.
    pub envid: Option<&'a str>,
    /// RET: the whole message (FULL) or its header (HDRS, and when absent).
    pub ret: Option<Ret>,
}

/// What became of a recipient, as the report's Action field says (RFC 3464 §2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    /// Passed to a host that does not offer DSN: no further report will come.
    Relayed,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }

    fn subject(self) -> &'static str {
        match self {
            Action::Failed => "Undelivered Mail Returned to Sender",
            Action::Delayed => "Delayed Mail (still being retried)",
            Action::Delivered => "Successful Mail Delivery Report",
            Action::Relayed => "Mail Relayed Report",
        }
    }

    fn explanation(self) -> &'static str {
        match self {
            Action::Failed => {
                "Your message could not be delivered to the following recipients.\r\n\
                 It has not been delivered to them and will not be retried."
            }
            Action::Delayed => {
                "Your message could not be delivered yet to the following recipients.\r\n\
                 It is still being retried; you need not send it again."
            }
            Action::Delivered => {
                "Your message was delivered to the following recipients' mailboxes."
            }
            Action::Relayed => {
                "Your message was passed on to a mail system that does not report delivery.\r\n\
                 No further notification will come for these recipients."
            }
        }
    }
}

/// One recipient of a report, with the per-recipient fields of RFC 3464 §2.3.
#[derive(Debug, Clone)]
pub struct ReportRecipient {
    pub address: String,
    /// The ORCPT the client gave, returned as Original-Recipient.
    pub original: Option<Orcpt>,
    pub action: Action,
    /// The enhanced status code (`5.1.1`).
    pub status: String,
    /// Why, for people.
    pub reason: String,
    /// The remote reply (`smtp; 550 ...`), else the gateway's own words (`x-mailgate; ...`).
    pub reply: Option<String>,
    pub remote: Option<String>,
    /// Unix seconds of the last attempt, when there was one.
    pub last_attempt: Option<u64>,
    /// For a delayed recipient: Unix seconds when the gateway stops retrying (RFC 3464
    /// §2.3.9), the message's arrival plus `[queue] max-age`.
    pub will_retry_until: Option<u64>,
}

impl FailedRecipient {
    /// This failure as a report recipient.
    pub fn report(&self, original: Option<Orcpt>, now: u64) -> ReportRecipient {
        ReportRecipient {
            address: self.address.clone(),
            original,
            action: Action::Failed,
            status: self.status(),
            reason: self.reason.clone(),
            reply: self.reply.clone(),
            remote: self.remote.clone(),
            last_attempt: Some(now),
            will_retry_until: None,
        }
    }
}

/// The whole DSN message (CRLF line ends), from the gateway `hostname`, about recipients that
/// share one action.
pub fn build(
    hostname: &str,
    original: &Original<'_>,
    recipients: &[ReportRecipient],
    now: u64,
) -> Vec<u8> {
    let action = recipients.first().map_or(Action::Failed, |r| r.action);
    let boundary = format!("{}/{}.dsn", original.queue_id, hostname);
    let human = human_part(hostname, action, recipients);
    let status = status_part(hostname, original, recipients);
    // The whole message only for a failure with RET=FULL (RFC 3461 §4.3); else its header.
    let full = action == Action::Failed && original.ret == Some(Ret::Full);
    let content_type = if full {
        "message/rfc822"
    } else {
        "text/rfc822-headers"
    };
    let mut out = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
         To: <{to}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}.{action}.dsn@{hostname}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated delivery status notification.\r\n\
         \r\n--{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n\
         {human}\
         \r\n--{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\r\n\
         {status}\
         \r\n--{boundary}\r\n\
         Content-Type: {content_type}\r\n\r\n",
        to = original.sender,
        subject = action.subject(),
        date = rfc5322(now),
        id = original.queue_id,
        action = action.word(),
    )
    .into_bytes();
    let returned = if full {
        original.message
    } else {
        let block = HeaderBlock::parse(original.message, 0);
        &original.message[..block.fields_end.min(original.message.len())]
    };
    out.extend_from_slice(returned);
    if !returned.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

fn human_part(hostname: &str, action: Action, recipients: &[ReportRecipient]) -> String {
    let mut human = format!(
        "This is the mail gateway at {hostname}.\r\n\r\n{}\r\n\r\n",
        action.explanation()
    );
    for r in recipients {
        human.push_str(&format!("<{}>: {}\r\n", r.address, one_line(&r.reason)));
    }
    human
}

/// The message/delivery-status body: the per-message fields, then one block per recipient.
fn status_part(hostname: &str, original: &Original<'_>, recipients: &[ReportRecipient]) -> String {
    let mut status = format!("Reporting-MTA: dns; {hostname}\r\n");
    if let Some(envid) = original.envid {
        status.push_str(&format!("Original-Envelope-Id: {}\r\n", one_line(envid)));
    }
    status.push_str(&format!(
        "X-Mailgate-Queue-ID: {}\r\nArrival-Date: {}\r\n",
        original.queue_id,
        rfc5322(original.received_at)
    ));
    for r in recipients {
        status.push_str("\r\n");
        if let Some(orcpt) = &r.original {
            status.push_str(&format!(
                "Original-Recipient: {}; {}\r\n",
                orcpt.addr_type,
                one_line(&orcpt.address)
            ));
        }
        let kind = if r.address.is_ascii() {
            "rfc822"
        } else {
            "utf-8"
        };
        status.push_str(&format!(
            "Final-Recipient: {kind}; {}\r\nAction: {}\r\nStatus: {}\r\n",
            r.address,
            r.action.word(),
            r.status
        ));
        if let Some(remote) = &r.remote {
            status.push_str(&format!("Remote-MTA: dns; {remote}\r\n"));
        }
        let (kind, diagnostic) = match &r.reply {
            Some(reply) => ("smtp", reply.as_str()),
            None => ("x-mailgate", r.reason.as_str()),
        };
        if !diagnostic.is_empty() {
            status.push_str(&format!(
                "Diagnostic-Code: {kind}; {}\r\n",
                one_line(diagnostic)
            ));
        }
        if let Some(at) = r.last_attempt {
            status.push_str(&format!("Last-Attempt-Date: {}\r\n", rfc5322(at)));
        }
        if let Some(until) = r.will_retry_until.filter(|_| r.action == Action::Delayed) {
            status.push_str(&format!("Will-Retry-Until: {}\r\n", rfc5322(until)));
        }
    }
    status
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_the_recipient_and_the_reply() {
        let failed = [FailedRecipient {
            address: "gone@remote.test".into(),
            reason: "mx.remote.test said: 550 5.1.1 No such user (in reply to RCPT TO)".into(),
            reply: Some("550 5.1.1 No such user".into()),
            remote: Some("mx.remote.test".into()),
            expired: false,
        }];
        let mut original = Original {
            queue_id: "abc",
            sender: "a@local.test",
            received_at: 0,
            message: b"Subject: hello\r\nFrom: a@local.test\r\n\r\nbody\r\n",
            envid: None,
            ret: None,
        };
        let recipients = [failed[0].report(None, 0)];
        let dsn = String::from_utf8(build("gw.test", &original, &recipients, 0)).expect("utf8");
        assert!(dsn.contains("report-type=delivery-status"));
        assert!(dsn.contains(
            "Final-Recipient: rfc822; gone@remote.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
        assert!(dsn.contains("Diagnostic-Code: smtp; 550 5.1.1 No such user"));
        assert!(dsn.contains("Subject: hello\r\n"));
        assert!(!dsn.contains("body\r\n"), "only the headers are returned");
        let parsed = mail_parser::MessageParser::default()
            .parse(dsn.as_bytes())
            .expect("parses");
        assert_eq!(parsed.parts.len(), 4, "report + three parts");
        let expired = FailedRecipient {
            expired: true,
            reply: None,
            reason: "gave up".into(),
            ..failed[0].clone()
        };
        assert_eq!(expired.status(), "4.4.7");

        // RET=FULL returns the whole message; ENVID and ORCPT come back.
        original.ret = Some(Ret::Full);
        original.envid = Some("env-1");
        let orcpt = Orcpt {
            addr_type: "rfc822".into(),
            address: "alias@remote.test".into(),
        };
        let recipients = [failed[0].report(Some(orcpt), 0)];
        let dsn = String::from_utf8(build("gw.test", &original, &recipients, 0)).expect("utf8");
        assert!(dsn.contains("Original-Envelope-Id: env-1\r\n"));
        assert!(dsn.contains("Original-Recipient: rfc822; alias@remote.test\r\n"));
        assert!(dsn.contains("Content-Type: message/rfc822\r\n"));
        assert!(dsn.contains("body\r\n"), "the whole message is returned");
        assert!(dsn.contains("Last-Attempt-Date: "));
    }
}
