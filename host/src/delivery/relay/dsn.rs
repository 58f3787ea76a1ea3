//! Delivery status notifications (RFC 3464): the `multipart/report` sent from `<>` to the
//! envelope sender when recipients fail permanently or expire.

use crate::mail::date::rfc5322;
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
}

/// The whole DSN message (CRLF line ends), from the gateway `hostname`.
pub fn build(
    hostname: &str,
    original: &Original<'_>,
    failed: &[FailedRecipient],
    now: u64,
) -> Vec<u8> {
    let boundary = format!("{}/{}.dsn", original.queue_id, hostname);
    let mut human = String::new();
    human.push_str(&format!(
        "This is the mail gateway at {hostname}.\r\n\r\n\
         Your message could not be delivered to the following recipients.\r\n\
         It has not been delivered to them and will not be retried.\r\n\r\n"
    ));
    for f in failed {
        human.push_str(&format!("<{}>: {}\r\n", f.address, one_line(&f.reason)));
    }
    let mut status = format!(
        "Reporting-MTA: dns; {hostname}\r\nX-Mailgate-Queue-ID: {}\r\nArrival-Date: {}\r\n",
        original.queue_id,
        rfc5322(original.received_at)
    );
    for f in failed {
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\n",
            f.address,
            f.status()
        ));
        if let Some(remote) = &f.remote {
            status.push_str(&format!("Remote-MTA: dns; {remote}\r\n"));
        }
        let diagnostic = f.reply.clone().unwrap_or_else(|| f.reason.clone());
        let kind = if f.reply.is_some() {
            "smtp"
        } else {
            "x-mailgate"
        };
        status.push_str(&format!(
            "Diagnostic-Code: {kind}; {}\r\n",
            one_line(&diagnostic)
        ));
    }
    let block = HeaderBlock::parse(original.message, 0);
    let headers = &original.message[..block.fields_end.min(original.message.len())];
    let mut out = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
         To: <{to}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}.dsn@{hostname}>\r\n\
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
         Content-Type: text/rfc822-headers\r\n\r\n",
        to = original.sender,
        date = rfc5322(now),
        id = original.queue_id,
    )
    .into_bytes();
    out.extend_from_slice(headers);
    if !headers.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
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
        let original = Original {
            queue_id: "abc",
            sender: "a@local.test",
            received_at: 0,
            message: b"Subject: hello\r\nFrom: a@local.test\r\n\r\nbody\r\n",
        };
        let dsn = String::from_utf8(build("gw.test", &original, &failed, 0)).expect("utf8");
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
    }
}
