//! Mail authentication: outgoing mail signed with DKIM by the relay, with keys and records from
//! `mailgate dkim keygen`, checked by implementations nobody here wrote: dkimpy (Debian's
//! python3-dkim), OpenDKIM (`opendkim -t`) and rspamd (strict about the key's form).

use std::path::Path;
use std::process::Command;

use mailgate_e2e::peers::{Dns, RspamdScanner, ScriptedSink};
use mailgate_e2e::{dkimpy_verify, Gateway, RawSmtp};

/// `mailgate dkim keygen`: the key file and the TXT record it says to publish.
fn keygen(dir: &Path, selector: &str, algorithm: &str) -> (String, String) {
    keygen_with(dir, selector, &["--algorithm", algorithm])
}

/// `mailgate dkim keygen` with `options`.
fn keygen_with(dir: &Path, selector: &str, options: &[&str]) -> (String, String) {
    let key = dir.join(format!("{selector}.key"));
    let key_text = key.to_string_lossy().into_owned();
    let mut args = vec!["dkim", "keygen", "example.test", selector];
    args.extend(options);
    args.extend(["--out", &key_text]);
    let run = mailgate_e2e::mailgate(&args, &mailgate_e2e::shared_plugin_cache());
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

/// The public key of the private key in `key`, derived by OpenSSL, as base64: RSA as its DER
/// SubjectPublicKeyInfo, Ed25519 as the raw 32-byte key (the last 32 bytes of its
/// SubjectPublicKeyInfo, RFC 8410 §4). OpenSSL must be able to read the key file.
fn derived_public(key: &str, ed25519: bool) -> String {
    let script = if ed25519 {
        format!("openssl pkey -in '{key}' -pubout -outform DER | tail -c 32 | base64 -w0")
    } else {
        format!("openssl pkey -in '{key}' -pubout -outform DER | base64 -w0")
    };
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail; {script}"))
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `openssl pkey -in KEY -noout`: whether OpenSSL reads the key file, and what it said.
fn openssl_reads(key: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["pkey", "-in", key, "-noout"])
        .output()
        .expect("openssl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// OpenDKIM's verdict on each signature of `message` (`opendkim -t`, the keys from `records`
/// through its `TestPublicKeys`): "pass s=SELECTOR", "fail s=SELECTOR", ... in its order.
fn opendkim_verify(message: &[u8], records: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let lines: String = records.iter().map(|(n, r)| format!("{n} {r}\n")).collect();
    std::fs::write(&keys, lines).expect("keys");
    let config = dir.path().join("opendkim.conf");
    std::fs::write(
        &config,
        format!(
            "Mode v\nSyslog no\nAuthservID opendkim.test\nTestPublicKeys {}\n",
            keys.display()
        ),
    )
    .expect("config");
    let file = dir.path().join("message.eml");
    std::fs::write(&file, message).expect("message");
    let out = Command::new("/usr/sbin/opendkim")
        .arg("-x")
        .arg(&config)
        .arg("-vvv")
        .arg("-t")
        .arg(&file)
        .output()
        .expect("opendkim (Debian package opendkim)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Its Authentication-Results (printed in test mode with -vvv): one `dkim=` per signature.
    let verdicts: Vec<String> = text
        .split(';')
        .map(str::trim)
        .filter(|m| m.starts_with("dkim="))
        .map(|m| {
            let result = m["dkim=".len()..].split(' ').next().unwrap_or("?");
            let selector = m
                .split_whitespace()
                .find_map(|p| p.strip_prefix("header.s="))
                .unwrap_or("?");
            format!("{result} s={selector}")
        })
        .collect();
    assert!(!verdicts.is_empty(), "opendkim said:\n{text}");
    verdicts
}

/// The DKIM symbols of rspamd's verdict, sorted: `R_DKIM_ALLOW[example.test:s=ed1]`, ...
fn rspamd_dkim(rspamd: &RspamdScanner, message: &[u8]) -> Vec<String> {
    let mut symbols: Vec<String> = rspamd
        .symbols(message, &["--ip=192.0.2.1"])
        .into_iter()
        .filter(|s| s.starts_with("R_DKIM_"))
        .collect();
    symbols.sort();
    symbols
}

/// A dnsmasq option serving `text` at `name`, in strings of at most 250 bytes.
fn txt(name: &str, text: &str) -> String {
    let strings: Vec<String> = text
        .as_bytes()
        .chunks(250)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    format!("--txt-record={name},{}", strings.join(","))
}

#[test]
fn keygen_records_are_the_public_keys_openssl_derives_and_config_check_prints_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rsa_key, rsa_record) = keygen(dir.path(), "rsa1", "rsa-sha256");
    let (ed_key, ed_record) = keygen(dir.path(), "ed1", "ed25519-sha256");
    // RSA as the SubjectPublicKeyInfo every signer publishes (RFC 6376 §3.6.1), not the PKCS#1
    // RSAPublicKey (MIIBCgKCAQEA...) OpenDKIM and rspamd refuse.
    assert_eq!(
        rsa_record,
        format!("v=DKIM1; k=rsa; p={}", derived_public(&rsa_key, false))
    );
    assert!(
        rsa_record.starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"),
        "{rsa_record}"
    );
    // Every key file is one OpenSSL reads (an Ed25519 key as PKCS#8 v1, RFC 8410: OpenSSL
    // 3.0 refuses the v2 form with the public key).
    for key in [&rsa_key, &ed_key] {
        let (ok, said) = openssl_reads(key);
        assert!(ok, "openssl pkey -in {key}: {said}");
    }
    // Ed25519 as the raw 32-byte key (RFC 8463 §4).
    assert_eq!(
        ed_record,
        format!("v=DKIM1; k=ed25519; p={}", derived_public(&ed_key, true))
    );
    // A larger RSA key, whose lengths take more bytes.
    let (big_key, big_record) = keygen_with(
        dir.path(),
        "rsa3",
        &["--algorithm", "rsa-sha256", "--bits", "3072"],
    );
    assert_eq!(
        big_record,
        format!("v=DKIM1; k=rsa; p={}", derived_public(&big_key, false))
    );

    // `config check` prints the record each configured key needs, the ARC seal's included,
    // so that a record published from an older build can be compared and replaced.
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[[dkim]]\ndomain = \"example.test\"\nselector = \"rsa1\"\nkey = \"{rsa_key}\"\n\
             algorithm = \"rsa-sha256\"\n\n[[dkim]]\ndomain = \"example.test\"\nselector = \"ed1\"\n\
             key = \"{ed_key}\"\nalgorithm = \"ed25519-sha256\"\n\n[auth]\nverify = [\"dkim\"]\n\n\
             [arc-seal]\ndomain = \"seal.test\"\nselector = \"rsa3\"\nkey = \"{big_key}\"\n"
        ),
    )
    .expect("config");
    let run = mailgate_e2e::mailgate(
        &["config", "check", "--config", &config.to_string_lossy()],
        &dir.path().join("cache"),
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    for (name, record) in [
        ("rsa1._domainkey.example.test", &rsa_record),
        ("ed1._domainkey.example.test", &ed_record),
        ("rsa3._domainkey.seal.test", &big_record),
    ] {
        let line = format!("publish: {name}. IN TXT \"{record}\"");
        assert!(run.stdout.contains(&line), "{line} in:\n{}", run.stdout);
    }
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
fn relayed_mail_is_signed_after_deliver_edits_and_dkimpy_opendkim_and_rspamd_verify_it() {
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

    // rspamd takes its time to start: it loads while the gateway works.
    let dns = Dns::start(&[
        "--local=/test/",
        &txt("ed1._domainkey.example.test", &ed_record),
        &txt("rsa1._domainkey.example.test", &rsa_record),
    ]);
    let rspamd = RspamdScanner::start(dns.port);
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
    let gw = Gateway::builder()
        .server(r#"relay-networks = ["127.0.0.0/8"]"#)
        .config(&config)
        .start();
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
    // OpenDKIM and rspamd, which refuse an RSA key published as PKCS#1, pass both.
    assert_eq!(
        opendkim_verify(&signed, &records),
        ["pass s=ed1", "pass s=rsa1"],
        "{text}"
    );
    let symbols = rspamd_dkim(&rspamd, &signed);
    assert!(
        symbols.len() == 1
            && symbols[0].starts_with("R_DKIM_ALLOW[")
            && symbols[0].contains("example.test:s=ed1")
            && symbols[0].contains("example.test:s=rsa1"),
        "{symbols:?}\n{text}"
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
    let verdicts = opendkim_verify(tampered.as_bytes(), &records);
    assert!(
        verdicts.iter().all(|v| v.starts_with("fail")),
        "{verdicts:?}"
    );
    let symbols = rspamd_dkim(&rspamd, tampered.as_bytes());
    assert!(
        symbols.iter().any(|s| s.starts_with("R_DKIM_REJECT"))
            && !symbols.iter().any(|s| s.starts_with("R_DKIM_ALLOW")),
        "{symbols:?}"
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

/// The record `mailgate config check` prints for an Ed25519 key file.
fn checked_record(dir: &Path, key: &Path) -> String {
    let config = dir.join("check.toml");
    std::fs::write(
        &config,
        format!(
            "[[dkim]]\ndomain = \"example.test\"\nselector = \"ed1\"\nkey = \"{}\"\n\
             algorithm = \"ed25519-sha256\"\n",
            key.display()
        ),
    )
    .expect("config");
    let run = mailgate_e2e::mailgate(
        &["config", "check", "--config", &config.to_string_lossy()],
        &dir.join("cache"),
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    run.stdout
        .lines()
        .find_map(|l| {
            l.split_once("IN TXT \"")
                .map(|(_, r)| r.trim_end_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("no record in:\n{}", run.stdout))
}

/// Base64 of `der` as a PEM private key.
fn pem(der: &[u8]) -> String {
    let out = Command::new("base64")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(der)?;
            child.wait_with_output()
        })
        .expect("base64");
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}-----END PRIVATE KEY-----\n",
        String::from_utf8_lossy(&out.stdout)
    )
}

/// Ed25519 key files of every form in use are read: the PKCS#8 v2 an earlier build wrote (with
/// the public key), and, as a variant, a key from `openssl genpkey` — each gives the record
/// OpenSSL derives.
#[test]
fn ed25519_keys_written_before_and_by_openssl_are_still_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ed_key, ed_record) = keygen(dir.path(), "ed1", "ed25519-sha256");
    let public = derived_public(&ed_key, true);
    // The v2 document an earlier build wrote: version 1, the seed, then [1] the public key.
    let der = Command::new("sh")
        .arg("-c")
        .arg(format!("openssl pkey -in '{ed_key}' -outform DER"))
        .output()
        .expect("openssl")
        .stdout;
    assert_eq!(der.len(), 48, "a v1 document: {der:?}");
    let raw_public = Command::new("sh")
        .arg("-c")
        .arg(format!("echo {public} | base64 -d"))
        .output()
        .expect("base64")
        .stdout;
    let mut v2 = vec![0x30, 0x51, 0x02, 0x01, 0x01];
    v2.extend_from_slice(&der[5..48]);
    v2.extend_from_slice(&[0x81, 0x21, 0x00]);
    v2.extend_from_slice(&raw_public);
    let old = dir.path().join("old.key");
    std::fs::write(&old, pem(&v2)).expect("old key");
    assert_eq!(checked_record(dir.path(), &old), ed_record);

    let theirs = dir.path().join("openssl.key");
    let ok = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&theirs)
        .status()
        .expect("openssl genpkey")
        .success();
    assert!(ok);
    let theirs_text = theirs.to_string_lossy().into_owned();
    assert_eq!(
        checked_record(dir.path(), &theirs),
        format!(
            "v=DKIM1; k=ed25519; p={}",
            derived_public(&theirs_text, true)
        )
    );
}
