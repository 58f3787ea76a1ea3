//! Protocol clients driven byte by byte: raw SMTP, raw IMAP (imap_raw.py), curl.

use std::process::Command;

use crate::{root, Gateway};

/// A plain-text SMTP client that sends exactly the bytes it is given.
pub struct RawSmtp {
    stream: std::net::TcpStream,
    pending: Vec<u8>,
}

impl RawSmtp {
    /// Connects and reads the greeting.
    pub fn connect(port: u16) -> (RawSmtp, String) {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        let mut client = RawSmtp {
            stream,
            pending: Vec::new(),
        };
        let greeting = client.reply();
        (client, greeting)
    }

    /// The socket itself, for reading replies that are not SMTP-shaped (POP3).
    pub fn stream(&mut self) -> &mut std::net::TcpStream {
        &mut self.stream
    }

    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).expect("send");
    }

    /// One whole reply (all its lines), e.g. "250-a\r\n250 b".
    pub fn reply(&mut self) -> String {
        use std::io::Read;
        let mut lines = Vec::new();
        loop {
            while let Some(pos) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.pending.drain(..pos + 2).take(pos).collect();
                let line = String::from_utf8_lossy(&line).into_owned();
                let last = line.as_bytes().get(3) != Some(&b'-');
                lines.push(line);
                if last {
                    return lines.join("\r\n");
                }
            }
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return lines.join("\r\n"),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Sends a command line and returns the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// One small message from `sender@client.test` to `rcpts` over plain SMTP on `port`, its
    /// Subject and Message-ID made of `subject` (every step up to DATA must be accepted); the
    /// reply to its final dot.
    pub fn send_message(port: u16, rcpts: &[&str], subject: &str) -> String {
        let (mut smtp, greeting) = RawSmtp::connect(port);
        assert!(greeting.starts_with("220"), "{greeting}");
        assert!(smtp.cmd("EHLO client.test").starts_with("250"));
        let reply = smtp.cmd("MAIL FROM:<sender@client.test>");
        assert!(reply.starts_with("250"), "{reply}");
        for rcpt in rcpts {
            let reply = smtp.cmd(&format!("RCPT TO:<{rcpt}>"));
            assert!(reply.starts_with("250"), "{reply}");
        }
        assert!(smtp.cmd("DATA").starts_with("354"));
        let to = rcpts.first().copied().unwrap_or_default();
        smtp.send(
            format!(
                "From: <sender@client.test>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
                 Message-ID: <{subject}@client.test>\r\n\r\nBody.\r\n.\r\n"
            )
            .as_bytes(),
        );
        let reply = smtp.reply();
        smtp.cmd("QUIT");
        reply
    }
}

/// `curl -sS -k --user USER [EXTRA...] URL` (the gateway's self-signed certificate); its output.
/// Panics with curl's error when it fails.
pub fn curl(user: &str, extra: &[&str], url: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "-k", "--user", user])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Raw IMAP over implicit TLS: the greeting, then what each (bytes, wait-for) step read.
pub fn imap_raw(gw: &Gateway, steps: &[(&str, &str)]) -> Vec<String> {
    let steps: Vec<(String, String)> = steps
        .iter()
        .map(|(send, wait)| (send.to_string(), wait.to_string()))
        .collect();
    imap_raw_output(imap_raw_background(gw, &steps))
}

/// What a background imap_raw.py session read, step by step.
pub fn imap_raw_output(child: std::process::Child) -> Vec<String> {
    let out = child.wait_with_output().expect("imap_raw.py");
    assert!(
        out.status.success(),
        "imap_raw.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    out.as_array()
        .expect("list")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

/// Starts imap_raw.py in the background with `steps`; the caller collects its output.
pub fn imap_raw_background(gw: &Gateway, steps: &[(String, String)]) -> std::process::Child {
    spawn_imap_raw(gw, &serde_json::to_vec(steps).expect("json"))
}

/// Raw IMAP over several connections to the gateway at once: each step is (session number,
/// bytes, wait-for); session 0's greeting, then what each step read.
pub fn imap_sessions(gw: &Gateway, steps: &[(u32, &str, &str)]) -> Vec<String> {
    let steps: Vec<serde_json::Value> = steps
        .iter()
        .map(|(n, send, wait)| serde_json::json!([send, wait, n]))
        .collect();
    imap_raw_output(spawn_imap_raw(
        gw,
        &serde_json::to_vec(&steps).expect("json"),
    ))
}

fn spawn_imap_raw(gw: &Gateway, steps: &[u8]) -> std::process::Child {
    use std::io::Write;
    let script = root().join("tests/e2e/clients/imap_raw.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .arg(gw.imaps.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(steps)
        .expect("steps");
    child
}
