//! POP3 end to end: Python's poplib, curl and mpop against the real binary, on mail delivered
//! over SMTP; the retrieve stage; bad input.

use mailgate_e2e::{python, wait_until, Gateway, RawSmtp};
use serde_json::Value;

/// Delivers one message per subject to a local user over SMTP.
fn deliver(gw: &Gateway, to: &str, subjects: &[&str]) {
    let data: Vec<String> = subjects
        .iter()
        .map(|subject| {
            format!(
                "Subject: {subject}\r\nFrom: <sender@client.test>\r\n\r\nBody of {subject}.\r\n..a stuffed dot\r\nline 3\r\n"
            )
        })
        .collect();
    gw.deliver_local(to, &data);
}

/// Runs pop3_client.py; the results by step.
fn pop(port: u16, mode: &str, user: &str, password: &str, steps: &[&str]) -> Vec<Value> {
    let mut args = vec![port.to_string(), mode.into(), user.into(), password.into()];
    args.extend(steps.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    python("pop3_client.py", &args)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .map(|v| v["out"].clone())
        .collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The stored files of a user's Maildir, oldest first, as bytes.
fn stored(gw: &Gateway, user: &str) -> Vec<Vec<u8>> {
    let (local, domain) = user.split_once('@').expect("address");
    let root = gw.data().join("mail").join(domain).join(local);
    let mut files: Vec<std::path::PathBuf> = ["cur", "new"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(root.join(d))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .collect();
    files.sort_by_key(|p| p.file_name().map(|n| n.to_owned()));
    files
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect()
}

#[test]
fn poplib_stls_session_then_a_new_session_sees_the_deletion() {
    let gw = Gateway::start("");
    deliver(&gw, "alice@example.test", &["first", "second", "third"]);
    let files = stored(&gw, "alice@example.test");
    let out = pop(
        gw.pop3,
        "stls",
        "alice@example.test",
        "pw-alice",
        &[
            "stat", "list", "uidl", "top:1:1", "retr:2", "dele:1", "quit",
        ],
    );
    let sizes: Vec<u64> = files.iter().map(|f| f.len() as u64).collect();
    assert_eq!(out[0], serde_json::json!([3, sizes.iter().sum::<u64>()]));
    let list: Vec<String> = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{} {s}", i + 1))
        .collect();
    assert_eq!(out[1], serde_json::json!(list));
    let uidl = out[2].as_array().expect("uidl");
    assert_eq!(uidl.len(), 3);
    assert!(uidl[0].as_str().expect("uid").starts_with("1 "));
    let top = String::from_utf8(unhex(out[3].as_str().expect("top"))).expect("utf8");
    assert!(top.contains("Subject: first\r\n"), "{top}");
    assert!(
        top.ends_with("\r\n\r\nBody of first.\r\n"),
        "header + one line: {top:?}"
    );
    let retr = unhex(out[4]["message"].as_str().expect("retr"));
    assert_eq!(retr, files[1], "RETR gives the stored bytes");
    // A new session: the deletion took effect at QUIT.
    let again = pop(
        gw.pop3s,
        "ssl",
        "alice@example.test",
        "pw-alice",
        &["stat", "uidl", "quit"],
    );
    assert_eq!(again[0][0], 2);
    let uids: Vec<&str> = again[1]
        .as_array()
        .expect("uidl")
        .iter()
        .map(|v| v.as_str().expect("s"))
        .collect();
    assert!(!uids
        .iter()
        .any(|u| u.ends_with(uidl[0].as_str().expect("s").split(' ').nth(1).expect("id"))));
}

#[test]
fn a_dropped_session_deletes_nothing() {
    let gw = Gateway::start("");
    deliver(&gw, "bob@example.test", &["keep-1", "keep-2"]);
    let out = pop(
        gw.pop3s,
        "ssl",
        "bob@example.test",
        "pw-bob",
        &["dele:1", "dele:2", "drop"],
    );
    assert_eq!(out[2], "dropped");
    // The lock goes with the connection; the next session finds both messages.
    let mut stat = Value::Null;
    assert!(wait_until(5, || {
        let out = std::process::Command::new("python3")
            .arg(mailgate_e2e::root().join("tests/e2e/clients/pop3_client.py"))
            .args([
                &gw.pop3s.to_string(),
                "ssl",
                "bob@example.test",
                "pw-bob",
                "stat",
                "quit",
            ])
            .output()
            .expect("python3");
        if !out.status.success() {
            return false;
        }
        let first = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        stat = serde_json::from_str::<Value>(&first)
            .map(|v| v["out"].clone())
            .unwrap_or(Value::Null);
        true
    }));
    assert_eq!(stat[0], 2, "nothing deleted");
    assert_eq!(gw.mailbox("bob@example.test").len(), 2);
}

#[test]
fn apop_login_and_a_maildrop_in_use() {
    let gw = Gateway::start("");
    let child = std::process::Command::new(mailgate_e2e::binary())
        .args(["user", "add", "dave@example.test", "--apop", "--config"])
        .arg(gw.config_path())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("user add");
    {
        use std::io::Write;
        let mut child = child;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"apop-secret\n")
            .expect("pw");
        assert!(child.wait().expect("wait").success());
    }
    // The server rereads the users file within half a second.
    std::thread::sleep(std::time::Duration::from_millis(800));
    deliver(&gw, "dave@example.test", &["for-dave"]);
    let out = pop(
        gw.pop3s,
        "apop",
        "dave@example.test",
        "apop-secret",
        &["stat", "quit"],
    );
    assert_eq!(out[0][0], 1);
    // Users without --apop cannot use APOP at all.
    let refused = std::process::Command::new("python3")
        .arg(mailgate_e2e::root().join("tests/e2e/clients/pop3_client.py"))
        .args([
            &gw.pop3s.to_string(),
            "apop",
            "alice@example.test",
            "pw-alice",
            "stat",
        ])
        .output()
        .expect("python3");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("-ERR [AUTH]"));
}

#[test]
fn curl_pop3s_lists_and_retrieves() {
    let gw = Gateway::start("");
    deliver(&gw, "carol@example.test", &["curl-1", "curl-2"]);
    let files = stored(&gw, "carol@example.test");
    let curl = |path: &str| {
        mailgate_e2e::curl(
            "carol@example.test:pw-carol",
            &[],
            &format!("pop3s://127.0.0.1:{}/{path}", gw.pop3s),
        )
    };
    let list = String::from_utf8(curl("")).expect("utf8");
    assert_eq!(
        list,
        format!("1 {}\r\n2 {}\r\n", files[0].len(), files[1].len())
    );
    assert_eq!(curl("2"), files[1], "byte for byte");
}

#[test]
fn mpop_downloads_a_mailbox_of_100_messages_intact() {
    let gw = Gateway::start("");
    let subjects: Vec<String> = (0..100).map(|i| format!("bulk-{i:03}")).collect();
    let refs: Vec<&str> = subjects.iter().map(String::as_str).collect();
    deliver(&gw, "alice@example.test", &refs);
    let files = stored(&gw, "alice@example.test");
    let target = tempfile::tempdir().expect("tempdir");
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(target.path().join(sub)).expect("maildir");
    }
    let out = std::process::Command::new("mpop")
        .args([
            "--host=127.0.0.1",
            &format!("--port={}", gw.pop3s),
            "--tls=on",
            "--tls-starttls=off",
            "--tls-certcheck=off",
            "--auth=user",
            "--user=alice@example.test",
            "--passwordeval=echo pw-alice",
            "--keep=off",
            "--received-header=off",
            &format!("--delivery=maildir,{}", target.path().display()),
        ])
        .output()
        .expect("mpop (Debian package mpop)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut fetched: Vec<Vec<u8>> = std::fs::read_dir(target.path().join("new"))
        .expect("new")
        .flatten()
        .map(|e| std::fs::read(e.path()).expect("read"))
        .collect();
    assert_eq!(fetched.len(), 100);
    // mpop stores LF line ends; compare content that way, in the same order.
    let lf = |b: &[u8]| String::from_utf8_lossy(b).replace("\r\n", "\n");
    let mut expected: Vec<String> = files.iter().map(|f| lf(f)).collect();
    let mut got: Vec<String> = fetched.drain(..).map(|f| lf(&f)).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "every message intact");
    assert!(
        gw.settled_mailbox("alice@example.test").is_empty(),
        "downloaded and deleted"
    );
}

fn probe(action: &str) -> String {
    mailgate_e2e::probe_plugin(
        "viewer",
        "retrieve",
        &format!("action.retrieve = \"{action}\""),
    )
}

#[test]
fn retrieve_stage_hides_or_edits_what_this_client_gets() {
    let hide = Gateway::start(&probe("hide"));
    deliver(&hide, "alice@example.test", &["secret"]);
    let out = pop(
        hide.pop3s,
        "ssl",
        "alice@example.test",
        "pw-alice",
        &["stat", "quit"],
    );
    assert_eq!(out[0], serde_json::json!([0, 0]), "hidden from POP3");
    assert_eq!(hide.mailbox("alice@example.test").len(), 1, "still stored");

    let tag = Gateway::start(&probe("tag"));
    deliver(&tag, "alice@example.test", &["tagged"]);
    let before = stored(&tag, "alice@example.test");
    let out = pop(
        tag.pop3s,
        "ssl",
        "alice@example.test",
        "pw-alice",
        &["list", "retr:1", "quit"],
    );
    let retr = unhex(out[1]["message"].as_str().expect("retr"));
    let text = String::from_utf8_lossy(&retr).into_owned();
    assert!(text.contains("X-Probe: viewer\r\n"), "{text}");
    assert_eq!(
        out[0],
        serde_json::json!([format!("1 {}", retr.len())]),
        "LIST size = bytes sent"
    );
    assert_eq!(
        out[1]["resp"].as_str().expect("resp"),
        format!("+OK {} octets", retr.len())
    );
    let after = stored(&tag, "alice@example.test");
    assert_eq!(before, after, "the stored file is unchanged");
}

#[test]
fn bad_input_gets_errors_and_the_session_goes_on() {
    let gw = Gateway::start("");
    let (mut c, greeting) = RawSmtp::connect(gw.pop3);
    assert!(
        greeting.starts_with("+OK mailgate POP3 ready <"),
        "{greeting}"
    );
    let mut ask = |line: &[u8]| {
        c.send(line);
        c.send(b"\r\n");
        let mut reply = Vec::new();
        loop {
            let mut byte = [0u8; 1];
            use std::io::Read;
            if c.stream().read(&mut byte).unwrap_or(0) == 0 {
                break;
            }
            reply.push(byte[0]);
            if reply.ends_with(b"\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&reply).into_owned()
    };
    assert!(ask(b"XYZZY").starts_with("-ERR Unknown command"));
    assert!(ask(b"STAT").starts_with("-ERR Not valid before login"));
    assert!(ask(b"USER alice@example.test").starts_with("-ERR [AUTH] Log in over TLS"));
    assert!(ask(b"RETR zero").starts_with("-ERR Syntax error"));
    assert!(ask(&[b'A'; 600]).starts_with("-ERR Line too long"));
    assert!(ask(b"\x00\xff\xfe garbage").starts_with("-ERR"));
    assert!(ask(b"NOOP").starts_with("+OK"));
    assert!(ask(b"QUIT").starts_with("+OK"));
}
