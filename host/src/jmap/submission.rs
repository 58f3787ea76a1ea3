//! EmailSubmission (RFC 8621 §7): a message is sent the way an authenticated SMTP client
//! sends it — through an SMTP session the server holds with itself, on a listener named
//! `jmap` — so that it meets the same stages (connect, HELO, MAIL, RCPT, DATA), limits,
//! signing, spool and relay as any submission. The session is pre-authenticated as the JMAP
//! user; its replies become the submission's result.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

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

#[cfg(test)]
mod tests {
    use super::data;

    #[test]
    fn data_is_dot_stuffed_and_terminated() {
        assert_eq!(data(b"a\r\n.b\r\n..c"), "a\r\n..b\r\n...c\r\n.\r\n");
    }
}
