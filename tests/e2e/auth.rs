//! Mail authentication: outgoing mail signed with DKIM by the relay, checked by an
//! implementation nobody here wrote (dkimpy, Debian's python3-dkim).

use std::path::Path;

use mailgate_e2e::peers::ScriptedSink;
use mailgate_e2e::{dkimpy_verify, Gateway, RawSmtp};

/// `mailgate dkim keygen`: the key file and the TXT record it says to publish.
fn keygen(dir: &Path, selector: &str, algorithm: &str) -> (String, String) {
    let key = dir.join(format!("{selector}.key"));
    let key_text = key.to_string_lossy().into_owned();
    let run = mailgate_e2e::mailgate(
        &[
            "dkim",
            "keygen",
            "example.test",
            selector,
            "--algorithm",
            algorithm,
            "--out",
            &key_text,
        ],
        &dir.join("cache"),
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{selector}._domainkey.example.test. IN TXT \"")))
        .unwrap_or_else(|| panic!("no TXT record in:\n{}", run.stdout));
    let record = line
        .split_once("IN TXT \"")
        .map(|(_, r)| r.trim_end_matches('"').to_string())
        .expect("record");
    (key_text, record)
}

fn send(port: u16, from: &str, rcpt: &str, subject: &str) {
    let (mut c, _) = RawSmtp::connect(port);
    c.cmd("EHLO client.example.net");
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    assert!(c.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let message = format!(
        "From: Sender <{from}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n\
         Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@example.test>\r\n\
         \r\nHello,\r\n\r\nsigned on the way out.\r\n.\r\n"
    );
    c.send(message.as_bytes());
    let reply = c.reply();
    assert!(reply.starts_with("250"), "{reply}");
    c.cmd("QUIT");
}

#[test]
fn relayed_mail_is_signed_with_both_algorithms_after_deliver_edits_and_dkimpy_verifies_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ed_key, ed_record) = keygen(dir.path(), "ed1", "ed25519-sha256");
    let (rsa_key, rsa_record) = keygen(dir.path(), "rsa1", "rsa-sha256");
    assert!(
        ed_record.starts_with("v=DKIM1; k=ed25519; p="),
        "{ed_record}"
    );
    assert!(rsa_record.starts_with("v=DKIM1; k=rsa; p="), "{rsa_record}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&ed_key)
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key is readable by its owner only");
    // An existing key is never overwritten.
    let before = std::fs::read(&ed_key).expect("key");
    let again = mailgate_e2e::mailgate(
        &["dkim", "keygen", "example.test", "ed1", "--out", &ed_key],
        &dir.path().join("cache"),
    );
    assert_ne!(again.code, Some(0));
    assert_eq!(std::fs::read(&ed_key).expect("key"), before);

    let sink = ScriptedSink::start(None);
    // The deliver stage adds X-Probe; the RSA key signs X-Probe, so its signature verifies only
    // if signing came after that edit.
    let config = format!(
        "{probe}
[[dkim]]
domain = \"example.test\"
selector = \"ed1\"
key = \"{ed_key}\"
algorithm = \"ed25519-sha256\"

[[dkim]]
domain = \"example.test\"
selector = \"rsa1\"
key = \"{rsa_key}\"
algorithm = \"rsa-sha256\"
headers = [\"From\", \"From\", \"To\", \"Subject\", \"Date\", \"Message-ID\", \"X-Probe\"]

[[route]]
domains = [\"remote.example\"]
type = \"relay\"
host = \"127.0.0.1:{port}\"
tls = \"none\"
",
        probe = mailgate_e2e::probe_plugin("tagger", "deliver", "action.deliver = \"tag\""),
        port = sink.port,
    );
    let gw = Gateway::start_with(r#"relay-networks = ["127.0.0.0/8"]"#, &config);
    send(
        gw.inbound,
        "alice@example.test",
        "bob@remote.example",
        "signed",
    );
    send(
        gw.inbound,
        "carol@other.example",
        "bob@remote.example",
        "unsigned",
    );
    let got = sink.wait(2, 30);
    assert_eq!(got.len(), 2, "{}", gw.log());
    let find = |subject: &str| {
        got.iter()
            .map(|r| r.message.clone())
            .find(|m| String::from_utf8_lossy(m).contains(&format!("Subject: {subject}")))
            .unwrap_or_else(|| panic!("no message {subject}"))
    };
    let signed = find("signed");
    let text = String::from_utf8_lossy(&signed).into_owned();
    assert!(
        text.contains("X-Probe: tagger"),
        "the deliver edit:\n{text}"
    );
    let records = [
        ("ed1._domainkey.example.test", ed_record.as_str()),
        ("rsa1._domainkey.example.test", rsa_record.as_str()),
    ];
    assert_eq!(
        dkimpy_verify("dkim", &signed, &records),
        [
            "pass d=example.test a=ed25519-sha256",
            "pass d=example.test a=rsa-sha256"
        ],
        "{text}"
    );
    // Changed on the way: both signatures fail.
    let tampered = text.replace("Subject: signed", "Subject: changed");
    assert_eq!(
        dkimpy_verify("dkim", tampered.as_bytes(), &records),
        [
            "fail d=example.test a=ed25519-sha256",
            "fail d=example.test a=rsa-sha256"
        ]
    );
    // No key for other.example: sent as it was.
    let unsigned = find("unsigned");
    assert!(!String::from_utf8_lossy(&unsigned).contains("DKIM-Signature"));
}

#[test]
fn config_check_refuses_an_unusable_dkim_key_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("broken.key");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("key");
    let config = dir.path().join("gw.toml");
    let refusal = |text: String| {
        std::fs::write(&config, text).expect("config");
        let run = mailgate_e2e::mailgate(
            &["config", "check", "--config", &config.to_string_lossy()],
            &dir.path().join("cache"),
        );
        assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
        run.stdout
    };
    let key = key.display();
    let out = refusal(format!(
        "[[dkim]]\ndomain = \"example.test\"\nselector = \"s\"\nkey = \"{key}\"\nalgorithm = \"ed25519-sha256\"\n"
    ));
    assert!(
        out.contains("broken.key") && out.contains("example.test"),
        "{out}"
    );
    // The same for the key that seals received mail with ARC.
    let out = refusal(format!(
        "[auth]\nverify = [\"dkim\"]\n\n[arc-seal]\ndomain = \"seal.test\"\nselector = \"s\"\nkey = \"{key}\"\n"
    ));
    assert!(
        out.contains("arc-seal key") && out.contains("broken.key"),
        "{out}"
    );
}
