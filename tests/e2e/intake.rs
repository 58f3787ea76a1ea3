//! One intake for every entry point, bytes kept exactly: messages submitted over JMAP (with
//! jmapc, from PyPI) arrive in the recipient's Maildir as they were uploaded, with only the
//! trace fields added in front; a BINARYMIME message sent by BDAT is relayed byte for byte to
//! a sink that speaks CHUNKING and BINARYMIME.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use mailgate_e2e::{free_port, pyenv_python, wait_for_port, wait_until, Gateway, RawSmtp};
use serde_json::Value;

const ALICE: &str = "alice@example.test";

/// jmapc's session and upload, then Email/import into the Drafts mailbox and an
/// EmailSubmission/set of that email to the given recipients (an explicit envelope).
/// Prints the EmailSubmission/set response.
const SUBMIT: &str = r#"
import json, sys
import requests, urllib3
urllib3.disable_warnings()
_request = requests.Session.request
def _insecure(self, *args, **kwargs):
    kwargs["verify"] = False
    return _request(self, *args, **kwargs)
requests.Session.request = _insecure
from jmapc import Client
port, user, password, path, rcpts = sys.argv[1:]
client = Client.create_with_password(host=f"127.0.0.1:{port}", user=user, password=password)
blob = client.upload_blob(path)
using = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail",
         "urn:ietf:params:jmap:submission"]
def call(method, args):
    args = dict(args, accountId=client.account_id)
    request = {"using": using, "methodCalls": [[method, args, "c"]]}
    response = client.requests_session.post(client.jmap_session.api_url, json=request, timeout=60)
    return response.json()["methodResponses"][0][1]
boxes = call("Mailbox/get", {})["list"]
drafts = next(b["id"] for b in boxes if b.get("role") == "drafts")
imported = call("Email/import", {"emails": {"one": {"blobId": blob.id, "mailboxIds": {drafts: True}}}})
email_id = imported["created"]["one"]["id"]
identity = call("Identity/get", {})["list"][0]["id"]
envelope = {"mailFrom": {"email": user}, "rcptTo": [{"email": r} for r in rcpts.split(",")]}
submission = {"identityId": identity, "emailId": email_id, "envelope": envelope}
print(json.dumps(call("EmailSubmission/set", {"create": {"s": submission}})))
"#;

/// Submits `message` as alice to `rcpts` over JMAP; the EmailSubmission/set response.
fn submit(gw: &Gateway, message: &[u8], rcpts: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("message.eml");
    std::fs::write(&path, message).expect("write message");
    let out = Command::new(pyenv_python())
        .args(["-c", SUBMIT, &gw.jmap.to_string(), ALICE, "pw-alice"])
        .arg(&path)
        .arg(rcpts.join(","))
        .output()
        .expect("target/pyenv/bin/python (made by cargo xtask test)");
    assert!(
        out.status.success(),
        "submission failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the submission")
}

/// The files delivered to `address` (new/ and cur/), as bytes.
fn maildir_files(gw: &Gateway, address: &str) -> Vec<Vec<u8>> {
    let (local, domain) = address.split_once('@').expect("address");
    let root = gw.data().join("mail").join(domain).join(local);
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        for entry in std::fs::read_dir(root.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(std::fs::read(entry.path()).expect("read delivered file"));
        }
    }
    out
}

/// Waits for the one file delivered to `address`.
fn delivered(gw: &Gateway, address: &str) -> Vec<u8> {
    assert!(
        wait_until(20, || !maildir_files(gw, address).is_empty()),
        "nothing delivered to {address}: {}",
        gw.log()
    );
    let mut files = maildir_files(gw, address);
    assert_eq!(files.len(), 1, "one delivery to {address}");
    files.remove(0)
}

/// The leading header fields (each with its folded lines) named in `names`, split off: the
/// names in order, and the rest of the bytes untouched.
fn strip_leading<'a>(raw: &'a [u8], names: &[&str]) -> (Vec<String>, &'a [u8]) {
    let mut rest = raw;
    let mut stripped = Vec::new();
    loop {
        let name = rest
            .iter()
            .position(|&b| b == b':')
            .map(|colon| String::from_utf8_lossy(&rest[..colon]).to_string());
        let Some(name) = name.filter(|n| names.iter().any(|t| t.eq_ignore_ascii_case(n))) else {
            return (stripped, rest);
        };
        let mut end = 0;
        // A field ends at a CRLF not followed by whitespace (a folded line continues it).
        while let Some(at) = rest[end..].windows(2).position(|w| w == b"\r\n") {
            end += at + 2;
            if !matches!(rest.get(end), Some(b' ' | b'\t')) {
                break;
            }
        }
        assert!(end > 0, "an unterminated field {name}");
        stripped.push(name);
        rest = &rest[end..];
    }
}

/// Asserts that `got` is `sent` with only trace fields (Return-Path from the delivery, our
/// Received) added in front, and that our Received is among them.
fn assert_trace_plus_exact(got: &[u8], sent: &[u8]) {
    let (trace, rest) = strip_leading(got, &["Return-Path", "Received"]);
    assert!(
        trace.iter().any(|n| n == "Received"),
        "no Received field added: {trace:?}"
    );
    assert!(
        rest == sent,
        "the delivered bytes differ from those submitted:\n--- delivered (after {trace:?})\n{}\n--- submitted\n{}",
        String::from_utf8_lossy(rest).escape_debug(),
        String::from_utf8_lossy(sent).escape_debug()
    );
}

fn assert_created(response: &Value) {
    assert!(
        response["created"]["s"]["id"].is_string(),
        "the submission was not created: {response}"
    );
}

#[test]
fn a_latin1_8bit_message_submitted_over_jmap_arrives_byte_for_byte() {
    let gw = Gateway::start("");
    let mut message = b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n\
Subject: menu\r\nMessage-ID: <latin1@client.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        .to_vec();
    // "Café crème" in ISO-8859-1: é and è are single bytes no UTF-8 decoder accepts.
    message.extend_from_slice(b"Caf\xe9 cr\xe8me, \xe0 la carte.\r\n");
    let response = submit(&gw, &message, &["bob@example.test"]);
    assert_created(&response);
    let got = delivered(&gw, "bob@example.test");
    assert!(
        got.windows(10).any(|w| w == b"Caf\xe9 cr\xe8me"),
        "the Latin-1 bytes are not in the delivered file"
    );
    assert_trace_plus_exact(&got, &message);
}

#[test]
fn a_message_with_a_utf8_address_and_utf8_headers_arrives_byte_for_byte() {
    let gw = Gateway::start("");
    let jurgen = "jürgen@example.test";
    gw.add_user(jurgen, "pw-jürgen");
    let message = "From: Zoë Ærø <alice@example.test>\r\nTo: Jürgen <jürgen@example.test>\r\n\
Subject: Grüße aus Köln — 東京\r\nMessage-ID: <utf8@client.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
Schöne Grüße, 你好.\r\n"
        .as_bytes()
        .to_vec();
    let response = submit(&gw, &message, &[jurgen]);
    assert_created(&response);
    let got = delivered(&gw, jurgen);
    assert_trace_plus_exact(&got, &message);
}

#[test]
fn a_five_megabyte_attachment_submitted_over_jmap_arrives_byte_for_byte() {
    let gw = Gateway::start("");
    let mut message = b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n\
Subject: the archive\r\nMessage-ID: <big@client.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
Attached.\r\n--b\r\nContent-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\n\r\n"
        .to_vec();
    // 5 MiB of varied bytes, base64 in lines of 76.
    let data: Vec<u8> = (0..5u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for line in base64(&data).as_bytes().chunks(76) {
        message.extend_from_slice(line);
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(b"--b--\r\n");
    let response = submit(&gw, &message, &["bob@example.test"]);
    assert_created(&response);
    let got = delivered(&gw, "bob@example.test");
    assert_trace_plus_exact(&got, &message);
}

#[test]
fn refusals_of_the_transaction_become_set_errors_with_the_reply_text() {
    let gw = Gateway::start("");
    let message = b"From: Alice <alice@example.test>\r\nTo: nobody@example.test\r\n\
Subject: lost\r\nMessage-ID: <lost@client.test>\r\n\r\nHello?\r\n";
    let response = submit(&gw, message, &["nobody@example.test", "bob@example.test"]);
    let error = &response["notCreated"]["s"];
    assert_eq!(error["type"], "invalidRecipients", "{response}");
    assert_eq!(
        error["invalidRecipients"],
        serde_json::json!(["nobody@example.test"]),
        "{response}"
    );
    let text = error["description"].as_str().unwrap_or_default();
    assert!(text.starts_with("550 5.1.1 "), "{response}");

    // A message that went round too often is refused at its content (the loop check).
    let mut looped = Vec::new();
    for hop in 0..60 {
        looped.extend_from_slice(
            format!("Received: from hop{hop}.test by hop{hop}.test\r\n").as_bytes(),
        );
    }
    looped.extend_from_slice(
        b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n\
Subject: looped\r\nMessage-ID: <looped@client.test>\r\n\r\nround and round\r\n",
    );
    let response = submit(&gw, &looped, &["bob@example.test"]);
    let error = &response["notCreated"]["s"];
    assert_eq!(error["type"], "forbiddenToSend", "{response}");
    let text = error["description"].as_str().unwrap_or_default();
    assert!(text.starts_with("554 5.4.6 "), "{response}");

    // Neither refused submission reached bob, who was a valid recipient of both: a message
    // sent after them is the only one delivered.
    let after = b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n\
Subject: after\r\nMessage-ID: <after@client.test>\r\n\r\nHello.\r\n";
    assert_created(&submit(&gw, after, &["bob@example.test"]));
    assert_trace_plus_exact(&delivered(&gw, "bob@example.test"), after);
}

/// The variant: lines that SMTP framing treats specially (a lone dot, dots in front, a line
/// that looks like the end of data after a bare-looking break) stay content, relayed too.
#[test]
fn dot_lines_submitted_over_jmap_stay_content_locally_and_through_the_relay() {
    let sink = BinarySink::start();
    let route = format!(
        "[[route]]\ndomains = [\"remote.test\"]\ntype = \"relay\"\nhost = \"127.0.0.1:{}\"\ntls = \"none\"\n",
        sink.port
    );
    let gw = Gateway::start(&route);
    let message = b"From: Alice <alice@example.test>\r\nTo: bob@example.test, dave@remote.test\r\n\
Subject: dots\r\nMessage-ID: <dots@client.test>\r\n\r\n.\r\n..\r\n.hidden\r\nend\r\n.\r\n"
        .to_vec();
    let response = submit(&gw, &message, &["bob@example.test", "dave@remote.test"]);
    assert_created(&response);
    assert_trace_plus_exact(&delivered(&gw, "bob@example.test"), &message);
    let relayed = sink.wait_one(&gw);
    assert_trace_plus_exact(&relayed.message, &message);
    assert!(
        relayed.commands.iter().any(|c| c.starts_with("DATA")),
        "{:?}",
        relayed.commands
    );
}

#[test]
fn a_binarymime_body_sent_by_bdat_is_relayed_byte_for_byte() {
    let sink = BinarySink::start();
    let route = format!(
        "[[route]]\ndomains = [\"remote.test\"]\ntype = \"relay\"\nhost = \"127.0.0.1:{}\"\ntls = \"none\"\n",
        sink.port
    );
    let gw = Gateway::builder()
        .server(r#"relay-networks = ["127.0.0.0/8"]"#)
        .config(&route)
        .start();
    let mut message =
        b"From: <sender@client.test>\r\nTo: <dave@remote.test>\r\nSubject: binary\r\n\
Message-ID: <binary@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: binary\r\n\r\n"
            .to_vec();
    // Every byte value, bare CR and LF and NUL included, then a lone LF and "\r.\r\n".
    message.extend((0..=255u8).chain(0..=255u8).collect::<Vec<u8>>());
    message.extend_from_slice(b"\n.\n\r.\r\n");
    let (mut smtp, greeting) = RawSmtp::connect(gw.inbound);
    assert!(greeting.starts_with("220"), "{greeting}");
    let ehlo = smtp.cmd("EHLO client.test");
    assert!(
        ehlo.contains("CHUNKING") && ehlo.contains("BINARYMIME"),
        "{ehlo}"
    );
    let mail = smtp.cmd("MAIL FROM:<sender@client.test> BODY=BINARYMIME");
    assert!(mail.starts_with("250"), "{mail}");
    let rcpt = smtp.cmd("RCPT TO:<dave@remote.test>");
    assert!(rcpt.starts_with("250"), "{rcpt}");
    assert!(
        smtp.cmd("DATA").starts_with("503"),
        "DATA is refused for BINARYMIME (RFC 3030 §3)"
    );
    let (first, last) = message.split_at(300);
    smtp.send(format!("BDAT {}\r\n", first.len()).as_bytes());
    smtp.send(first);
    assert!(smtp.reply().starts_with("250"));
    smtp.send(format!("BDAT {} LAST\r\n", last.len()).as_bytes());
    smtp.send(last);
    let end = smtp.reply();
    assert!(end.starts_with("250"), "{end}");
    let relayed = sink.wait_one(&gw);
    assert_trace_plus_exact(&relayed.message, &message);
    let mail_from = relayed.commands.iter().find(|c| c.starts_with("MAIL FROM"));
    assert!(
        mail_from.is_some_and(|c| c.contains("BODY=BINARYMIME")),
        "{:?}",
        relayed.commands
    );
}

#[test]
fn a_binarymime_body_is_bounced_not_relayed_to_a_peer_without_binarymime() {
    let sink = BinarySink::start_without_binarymime();
    let route = format!(
        "[[route]]\ndomains = [\"remote.test\"]\ntype = \"relay\"\nhost = \"127.0.0.1:{}\"\ntls = \"none\"\n",
        sink.port
    );
    let gw = Gateway::builder()
        .server(r#"relay-networks = ["127.0.0.0/8"]"#)
        .config(&route)
        .start();
    let message = b"From: <sender@remote.test>\r\nTo: <dave@remote.test>\r\nSubject: binary\r\n\r\na bare\nline end\r\n";
    let (mut smtp, _) = RawSmtp::connect(gw.inbound);
    smtp.cmd("EHLO client.test");
    let mail = smtp.cmd("MAIL FROM:<sender@remote.test> BODY=BINARYMIME");
    assert!(mail.starts_with("250"), "{mail}");
    assert!(smtp.cmd("RCPT TO:<dave@remote.test>").starts_with("250"));
    smtp.send(format!("BDAT {} LAST\r\n", message.len()).as_bytes());
    smtp.send(message);
    let end = smtp.reply();
    assert!(end.starts_with("250"), "{end}");
    // The sender gets a bounce that says why (to the same sink); the message itself never
    // goes out, since converting it is not allowed (RFC 3030 §3).
    let bounce = sink.wait_one(&gw);
    assert!(
        bounce
            .commands
            .iter()
            .any(|c| c.starts_with("MAIL FROM:<>")),
        "the first transaction is not a bounce: {:?}",
        bounce.commands
    );
    let text = String::from_utf8_lossy(&bounce.message);
    assert!(text.contains("BINARYMIME"), "{text}");
    assert!(
        !sink.transactions().iter().any(|t| t
            .commands
            .iter()
            .any(|c| c.starts_with("MAIL FROM:<sender@remote.test>"))),
        "the binary message went to a peer without BINARYMIME"
    );
}

/// Base64 (RFC 4648) without line breaks.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An SMTP server in Python's standard library that speaks PIPELINING, 8BITMIME, SMTPUTF8,
/// CHUNKING and BINARYMIME (RFC 3030) and keeps each transaction's commands and message bytes
/// exactly: DATA unstuffed, BDAT chunks as they came.
const SINK: &str = r#"
import json, os, socketserver, sys, threading
port, out = int(sys.argv[1]), sys.argv[2]
binary = sys.argv[3] == "binary"
counter, lock = [0], threading.Lock()
class Session(socketserver.StreamRequestHandler):
    def say(self, text):
        self.wfile.write(text.encode() + b"\r\n")
    def store(self, commands, message):
        with lock:
            counter[0] += 1
            n = counter[0]
        with open(os.path.join(out, "%d.eml" % n), "wb") as f:
            f.write(message)
        with open(os.path.join(out, "%d.json.tmp" % n), "w") as f:
            json.dump(commands, f)
        os.rename(os.path.join(out, "%d.json.tmp" % n), os.path.join(out, "%d.json" % n))
    def handle(self):
        self.say("220 binary-sink.test ESMTP")
        commands, chunks = [], []
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = text.split(" ")[0].upper()
            if verb == "EHLO":
                extensions = ["PIPELINING", "8BITMIME", "SMTPUTF8", "CHUNKING"]
                if binary:
                    extensions.append("BINARYMIME")
                self.say("\r\n".join(["250-binary-sink.test"] + ["250-" + e for e in extensions[:-1]] + ["250 " + extensions[-1]]))
                continue
            commands.append(text)
            if verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                if verb in ("MAIL", "RSET"):
                    commands, chunks = [text], []
                self.say("250 2.0.0 ok")
            elif verb == "DATA":
                self.say("354 go on")
                message = b""
                while True:
                    data = self.rfile.readline()
                    if data in (b".\r\n", b""):
                        break
                    message += data[1:] if data.startswith(b".") else data
                self.store(commands, message)
                self.say("250 2.0.0 stored")
            elif verb == "BDAT":
                size = int(text.split()[1])
                chunks.append(self.rfile.read(size))
                if text.upper().endswith(" LAST"):
                    self.store(commands, b"".join(chunks))
                    chunks = []
                self.say("250 2.0.0 %d octets" % size)
            elif verb == "QUIT":
                self.say("221 bye")
                return
            else:
                self.say("502 5.5.1 not here")
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("127.0.0.1", port), Session).serve_forever()
"#;

struct BinarySink {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

/// One transaction the sink stored.
struct Relayed {
    commands: Vec<String>,
    message: Vec<u8>,
}

impl BinarySink {
    fn start() -> BinarySink {
        BinarySink::launch("binary")
    }

    fn start_without_binarymime() -> BinarySink {
        BinarySink::launch("chunking")
    }

    fn launch(mode: &str) -> BinarySink {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new("python3")
            .args(["-c", SINK, &port.to_string()])
            .arg(dir.path())
            .arg(mode)
            .spawn()
            .expect("python3");
        wait_for_port(port);
        BinarySink { port, dir, child }
    }

    fn transactions(&self) -> Vec<Relayed> {
        let mut out = Vec::new();
        for n in 1.. {
            let base: PathBuf = self.dir.path().join(n.to_string());
            let Ok(commands) = std::fs::read(base.with_extension("json")) else {
                break;
            };
            out.push(Relayed {
                commands: serde_json::from_slice(&commands).unwrap_or_default(),
                message: read(&base.with_extension("eml")),
            });
        }
        out
    }

    fn wait_one(&self, gw: &Gateway) -> Relayed {
        assert!(
            wait_until(20, || !self.transactions().is_empty()),
            "nothing reached the sink: {}",
            gw.log()
        );
        self.transactions().remove(0)
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

impl Drop for BinarySink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
