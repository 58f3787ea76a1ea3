//! Sender authentication of received mail: SPF, DKIM and DMARC records served by dnsmasq on
//! loopback, messages signed by dkimpy (an implementation nobody here wrote), and the
//! `Authentication-Results` field the gateway writes into what it delivers.

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};

use mailgate_e2e::peers::{Dns, RspamdScanner};
use mailgate_e2e::{dkimpy_verify, python_filter, Gateway, RawSmtp};

/// A dnsmasq option serving `text` at `name`, split into strings of at most 250 bytes (on
/// dnsmasq's command line commas separate the strings and quotes would be kept as text).
fn txt(name: &str, text: &str) -> String {
    assert!(!text.contains(','), "{text}");
    let strings: Vec<String> = text
        .as_bytes()
        .chunks(250)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    format!("--txt-record={name},{}", strings.join(","))
}

/// dnsmasq answering for `.test` only from `records`: every other name there does not exist.
fn dns(records: &[String]) -> Dns {
    let mut args: Vec<&str> = vec!["--local=/test/"];
    args.extend(records.iter().map(String::as_str));
    Dns::start(&args)
}

/// Sends `message` from `sender` to alice and returns the Authentication-Results fields of
/// what alice got, found by `subject`.
fn deliver(gw: &Gateway, helo: &str, sender: &str, message: &str, subject: &str) -> Vec<String> {
    let (mut c, _) = RawSmtp::connect(gw.inbound);
    c.cmd(&format!("EHLO {helo}"));
    let reply = c.cmd(&format!("MAIL FROM:<{sender}>"));
    assert!(reply.starts_with("250"), "{reply}");
    assert!(c.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(message.as_bytes());
    c.send(b".\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250"), "{reply}");
    c.cmd("QUIT");
    let delivered =
        gw.wait_mailbox_matching("alice@example.test", &format!("Subject: {subject}\r\n"));
    results_fields(&delivered)
}

/// The Authentication-Results fields of a message, unfolded, in order.
fn results_fields(message: &str) -> Vec<String> {
    let header = message.split("\r\n\r\n").next().unwrap_or("");
    let unfolded = header.replace("\r\n\t", " ").replace("\r\n ", " ");
    unfolded
        .lines()
        .filter_map(|l| l.strip_prefix("Authentication-Results: "))
        .map(str::to_string)
        .collect()
}

fn plain(from: &str, subject: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <alice@example.test>\r\nSubject: {subject}\r\n\
         Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@sender.test>\r\n\
         \r\nHello Alice.\r\n"
    )
}

/// `message` signed by dkimpy with the key `dknewkey` made.
fn dkimpy_sign(message: &str, key: &Path, selector: &str, domain: &str, algorithm: &str) -> String {
    let key = key.to_str().expect("utf-8");
    let out = python_filter(
        "dkim_sign.py",
        &[key, selector, domain, algorithm],
        message.as_bytes(),
    );
    String::from_utf8(out).expect("utf-8")
}

/// `message` with one more ARC set from dkimpy, sealed by `domain`.
fn arcsign(message: &str, key: &Path, selector: &str, domain: &str) -> String {
    let key = key.to_str().expect("utf-8");
    let out = python_filter(
        "arc_sign.py",
        &[key, selector, domain, domain],
        message.as_bytes(),
    );
    String::from_utf8(out).expect("utf-8")
}

/// dkimpy's verdict on the ARC chain of `message`: "cv=pass sets=2 ...".
fn arcverify(message: &str, records: &[(&str, &str)]) -> String {
    dkimpy_verify("arc", message.as_bytes(), records).join("\n")
}

/// A key pair from dkimpy's `dknewkey`: the key file and the TXT record to publish.
fn dknewkey(dir: &Path, name: &str, ktype: &str) -> (std::path::PathBuf, String) {
    let base = dir.join(name);
    let ok = Command::new("/usr/bin/dknewkey")
        .args(["--ktype", ktype])
        .arg(&base)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("dknewkey (Debian package python3-dkim)")
        .success();
    assert!(ok);
    let record = std::fs::read_to_string(base.with_extension("dns")).expect("dns");
    (base.with_extension("key"), record.trim().to_string())
}

fn config(dns_port: u16, methods: &str, dns_timeout_ms: u32) -> String {
    format!(
        "[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\ntimeout-ms = {dns_timeout_ms}\n\n\
         [auth]\nverify = [{methods}]\ntimeout-ms = 5000\n"
    )
}

#[test]
fn spf_results_for_each_kind_of_record_and_the_rfc7208_limits() {
    // A name server that takes queries and never answers: lookups under temperror.test.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let silent_port = silent.local_addr().expect("addr").port();
    let mut records = vec![
        txt("client.example.test", "v=spf1 ip4:127.0.0.1 -all"),
        txt("pass.test", "v=spf1 ip4:127.0.0.0/8 -all"),
        txt("fail.test", "v=spf1 ip4:192.0.2.0/24 -all"),
        txt("softfail.test", "v=spf1 ip4:192.0.2.1 ~all"),
        txt("neutral.test", "v=spf1 ?all"),
        "--host-record=none.test,192.0.2.9".to_string(),
        txt("permerror.test", "v=spf1 ip4:not-an-address -all"),
        txt("loop.test", "v=spf1 include:loop.test -all"),
        format!("--server=/temperror.test/127.0.0.1#{silent_port}"),
    ];
    // A record of 2 KB (no lookups of its own, answered over TCP) ends in the client's address.
    let mut huge = String::from("v=spf1");
    for i in 0..120 {
        huge.push_str(&format!(" ip4:198.51.{}.{}/32", i / 200, i % 200 + 1));
    }
    huge.push_str(" ip4:127.0.0.1 -all");
    assert!(huge.len() > 2000);
    records.push(txt("huge.test", &huge));
    // Eleven includes deep: past the limit of ten lookups, though the last would pass.
    for i in 1..=11 {
        records.push(txt(
            &format!("d{i}.deep.test"),
            &format!("v=spf1 include:d{}.deep.test -all", i + 1),
        ));
    }
    records.push(txt("d12.deep.test", "v=spf1 ip4:127.0.0.1 -all"));
    records.push(txt("deep.test", "v=spf1 include:d1.deep.test -all"));
    let dns = dns(&records);
    let gw = Gateway::start(&config(dns.port, "\"spf\"", 400));

    let cases = [
        ("pass.test", "pass"),
        ("huge.test", "pass"),
        ("fail.test", "fail"),
        ("softfail.test", "softfail"),
        ("neutral.test", "neutral"),
        ("none.test", "none"),
        ("permerror.test", "permerror"),
        ("loop.test", "permerror"),
        ("deep.test", "permerror"),
        ("temperror.test", "temperror"),
    ];
    for (domain, expected) in cases {
        let subject = format!("spf-{domain}");
        let sender = format!("user@{domain}");
        let fields = deliver(
            &gw,
            "client.example.test",
            &sender,
            &plain(&sender, &subject),
            &subject,
        );
        assert_eq!(
            fields,
            [format!(
                "mx.example.test; spf={expected} smtp.mailfrom={sender}; \
                 spf=pass smtp.helo=client.example.test"
            )],
            "{domain}"
        );
    }
    // The null sender is checked as postmaster@ the HELO name.
    let fields = deliver(
        &gw,
        "client.example.test",
        "",
        &plain("mailer-daemon@x.test", "bounce"),
        "bounce",
    );
    assert_eq!(
        fields,
        [
            "mx.example.test; spf=pass smtp.mailfrom=postmaster@client.example.test; \
          spf=pass smtp.helo=client.example.test"
        ]
    );
    drop(silent);
}

#[test]
fn dkim_signatures_from_dkimpy_verify_and_dmarc_judges_alignment() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (ed_key, ed_record) = dknewkey(keys.path(), "ed", "ed25519");
    let (rsa_key, rsa_record) = dknewkey(keys.path(), "rsa", "rsa");
    // The same RSA key published as a PKCS#1 RSAPublicKey (as older `mailgate dkim keygen`
    // did): accepted too.
    let pkcs1 = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl rsa -in '{}' -RSAPublicKey_out -outform DER | base64 -w0",
            rsa_key.display()
        ))
        .output()
        .expect("openssl");
    let pkcs1_record = format!(
        "v=DKIM1; k=rsa; p={}",
        String::from_utf8_lossy(&pkcs1.stdout)
    );
    assert!(pkcs1_record.contains("p=MIIBCgKCAQEA"), "{pkcs1_record}");
    let dns = dns(&[
        txt("ed1._domainkey.signer.test", &ed_record),
        txt("rsa1._domainkey.signer.test", &rsa_record),
        txt("old1._domainkey.signer.test", &pkcs1_record),
        txt("_dmarc.signer.test", "v=DMARC1; p=reject"),
        txt("_dmarc.spoofed.test", "v=DMARC1; p=quarantine"),
        txt("mail.signer.test", "v=spf1 ip4:127.0.0.1 -all"),
        txt("client.example.test", "v=spf1 ip4:127.0.0.1 -all"),
    ]);
    let gw = Gateway::start(&config(dns.port, "\"spf\", \"dkim\", \"dmarc\"", 1000));
    let helo = "client.example.test";
    let helo_pass = "spf=pass smtp.helo=client.example.test";
    let sign_both = |message: &str| {
        let once = dkimpy_sign(message, &rsa_key, "rsa1", "signer.test", "rsa-sha256");
        dkimpy_sign(&once, &ed_key, "ed1", "signer.test", "ed25519-sha256")
    };

    // Signed by the From domain with both algorithms: DKIM passes and aligns.
    let signed = sign_both(&plain("news@signer.test", "signed"));
    let fields = deliver(&gw, helo, "bounce@other.test", &signed, "signed");
    assert_eq!(fields.len(), 1, "{fields:?}");
    let field = &fields[0];
    assert!(
        field.starts_with("mx.example.test; spf=none smtp.mailfrom=bounce@other.test; "),
        "{field}"
    );
    assert!(field.contains(helo_pass), "{field}");
    assert!(
        field.contains("dkim=pass header.d=signer.test header.s=ed1 header.a=ed25519-sha256"),
        "{field}"
    );
    assert!(
        field.contains("dkim=pass header.d=signer.test header.s=rsa1 header.a=rsa-sha256"),
        "{field}"
    );
    assert!(
        field.ends_with("dmarc=pass header.from=signer.test policy.dmarc=reject"),
        "{field}"
    );

    let old = dkimpy_sign(
        &plain("news@signer.test", "pkcs1"),
        &rsa_key,
        "old1",
        "signer.test",
        "rsa-sha256",
    );
    let field = &deliver(&gw, helo, "bounce@other.test", &old, "pkcs1")[0];
    assert!(
        field.contains("dkim=pass header.d=signer.test header.s=old1 header.a=rsa-sha256"),
        "{field}"
    );

    // Changed after signing: both signatures fail, and nothing aligned passes.
    let tampered =
        sign_both(&plain("news@signer.test", "tampered")).replace("Hello Alice.", "Hello Mallory.");
    let fields = deliver(&gw, helo, "bounce@other.test", &tampered, "tampered");
    let field = &fields[0];
    assert_eq!(field.matches("dkim=fail").count(), 2, "{field}");
    assert!(
        field.ends_with(
            "dmarc=fail reason=\"neither SPF nor DKIM passed aligned with the From domain\" \
                             header.from=signer.test policy.dmarc=reject"
        ),
        "{field}"
    );

    // A valid signature of another domain does not make a spoofed From pass DMARC.
    let spoofed = sign_both(&plain("ceo@spoofed.test", "spoofed"));
    let field = &deliver(&gw, helo, "bounce@other.test", &spoofed, "spoofed")[0];
    assert!(field.contains("dkim=pass header.d=signer.test"), "{field}");
    assert!(field.contains("dmarc=fail"), "{field}");
    assert!(
        field.ends_with("header.from=spoofed.test policy.dmarc=quarantine"),
        "{field}"
    );

    // Unsigned, but SPF passes for a subdomain of the From domain: relaxed alignment.
    let field = &deliver(
        &gw,
        helo,
        "bounce@mail.signer.test",
        &plain("news@signer.test", "spf-aligned"),
        "spf-aligned",
    )[0];
    assert!(
        field.contains("spf=pass smtp.mailfrom=bounce@mail.signer.test"),
        "{field}"
    );
    assert!(field.contains("dkim=none"), "{field}");
    assert!(
        field.ends_with("dmarc=pass header.from=signer.test policy.dmarc=reject"),
        "{field}"
    );

    // No DMARC record for the From domain.
    let field = &deliver(
        &gw,
        helo,
        "bounce@other.test",
        &plain("a@nodmarc.test", "no-record"),
        "no-record",
    )[0];
    assert!(
        field.ends_with("dmarc=none header.from=nodmarc.test"),
        "{field}"
    );

    // Malformed signatures: a clear result each, the message still delivered.
    let broken = format!(
        "DKIM-Signature: v=1; a=rsa-sha256; d=signer.test; s=rsa1; h=from; bh=!!!; b=???\r\n\
         DKIM-Signature: v=1; a=rsa-sha256; d=signer.test; s=missing; c=relaxed/relaxed; h=from:subject; \
         bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\n{}",
        plain("news@signer.test", "malformed")
    );
    let field = &deliver(&gw, helo, "bounce@other.test", &broken, "malformed")[0];
    let dkim: Vec<&str> = field
        .split("; ")
        .filter(|m| m.starts_with("dkim="))
        .collect();
    assert_eq!(dkim.len(), 2, "{field}");
    for method in dkim {
        assert!(
            method.starts_with("dkim=permerror")
                || method.starts_with("dkim=neutral")
                || method.starts_with("dkim=fail"),
            "{method}"
        );
        assert!(method.contains("reason=\""), "{method}");
    }
}

#[test]
fn arc_chains_sealed_by_dkimpy_validate() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (forwarder_key, forwarder_record) = dknewkey(keys.path(), "fwd", "rsa");
    let (list_key, list_record) = dknewkey(keys.path(), "list", "rsa");
    let dns = dns(&[
        txt("arc1._domainkey.forwarder.test", &forwarder_record),
        txt("arc2._domainkey.lists.test", &list_record),
    ]);
    let gw = Gateway::start(&config(dns.port, "\"arc\"", 1000));
    // Each forwarder records what it found, then seals; the second found the chain valid.
    let hop = |message: &str, key: &Path, selector: &str, domain: &str| {
        let found = match message.contains("ARC-Seal:") {
            true => "arc=pass",
            false => "spf=pass smtp.mailfrom=a@origin.test",
        };
        let seen = format!("Authentication-Results: {domain}; {found}\r\n{message}");
        arcsign(&seen, key, selector, domain)
    };
    let once = hop(
        &plain("a@origin.test", "arc-one"),
        &forwarder_key,
        "arc1",
        "forwarder.test",
    );
    assert!(once.contains("ARC-Seal: i=1"), "{once}");
    let field = &deliver(
        &gw,
        "client.example.test",
        "a@forwarder.test",
        &once,
        "arc-one",
    )[0];
    assert_eq!(field, "mx.example.test; arc=pass smtp.remote-ip=127.0.0.1");

    let twice = hop(
        &plain("a@origin.test", "arc-two"),
        &forwarder_key,
        "arc1",
        "forwarder.test",
    );
    let twice = hop(&twice, &list_key, "arc2", "lists.test");
    assert!(twice.contains("ARC-Seal: i=2"), "{twice}");
    let field = &deliver(
        &gw,
        "client.example.test",
        "a@lists.test",
        &twice,
        "arc-two",
    )[0];
    assert_eq!(field, "mx.example.test; arc=pass smtp.remote-ip=127.0.0.1");

    // Changed after the last seal: the chain no longer validates.
    let changed = hop(
        &plain("a@origin.test", "arc-changed"),
        &forwarder_key,
        "arc1",
        "forwarder.test",
    )
    .replace("Hello Alice.", "Hello Mallory.");
    let field = &deliver(
        &gw,
        "client.example.test",
        "a@forwarder.test",
        &changed,
        "arc-changed",
    )[0];
    assert!(field.starts_with("mx.example.test; arc=fail"), "{field}");

    // No ARC set at all.
    let field = &deliver(
        &gw,
        "client.example.test",
        "a@origin.test",
        &plain("a@origin.test", "arc-none"),
        "arc-none",
    )[0];
    assert_eq!(field, "mx.example.test; arc=none smtp.remote-ip=127.0.0.1");
}

#[test]
fn forged_results_claiming_our_name_are_removed_and_others_kept() {
    let dns = dns(&[txt("pass.test", "v=spf1 ip4:127.0.0.1 -all")]);
    let gw = Gateway::start(&format!(
        "{}authserv-id = \"mx.example.test\"\n",
        config(dns.port, "\"spf\", \"dkim\", \"dmarc\"", 1000)
    ));
    let message = format!(
        "Authentication-Results: mx.example.test; dkim=pass header.d=bank.test; dmarc=pass\r\n\
         Authentication-Results: (upstream) MX.EXAMPLE.TEST;\r\n\tspf=pass\r\n\
         Authentication-Results: relay.other.test; spf=pass smtp.mailfrom=user@pass.test\r\n{}",
        plain("user@pass.test", "forged")
    );
    let fields = deliver(&gw, "helo.test", "user@pass.test", &message, "forged");
    assert_eq!(fields.len(), 2, "{fields:?}");
    assert!(
        fields[0].starts_with("mx.example.test; spf=pass smtp.mailfrom=user@pass.test"),
        "{fields:?}"
    );
    assert!(
        fields[0].contains("dkim=none"),
        "ours says what it found: {fields:?}"
    );
    assert_eq!(
        fields[1],
        "relay.other.test; spf=pass smtp.mailfrom=user@pass.test"
    );
}

#[test]
fn a_dns_server_that_never_answers_gives_temperror_within_the_deadline() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let port = silent.local_addr().expect("addr").port();
    let gw = Gateway::start(&format!(
        "[dns]\nservers = [\"127.0.0.1:{port}\"]\ntimeout-ms = 300\n\n\
         [auth]\nverify = [\"spf\", \"dkim\", \"dmarc\"]\ntimeout-ms = 2000\n"
    ));
    let keys = tempfile::tempdir().expect("tempdir");
    let (key, _) = dknewkey(keys.path(), "ed", "ed25519");
    let message = dkimpy_sign(
        &plain("user@slow.test", "silent-dns"),
        &key,
        "s1",
        "slow.test",
        "ed25519-sha256",
    );
    let started = std::time::Instant::now();
    let fields = deliver(
        &gw,
        "client.slow.test",
        "user@slow.test",
        &message,
        "silent-dns",
    );
    // One budget (2 s) for all the lookups, plus delivery: a bound, not a pace.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let field = &fields[0];
    assert!(field.contains("spf=temperror"), "{field}");
    assert!(field.contains("dkim=temperror"), "{field}");
    assert!(field.contains("dmarc=temperror"), "{field}");
    drop(silent);
}

/// Each result of `fields` as python3-authres reads it: "spf=pass smtp.mailfrom=..." (a field
/// it cannot parse fails the test).
fn authres(fields: &[String]) -> Vec<String> {
    let out = python_filter("authres_parse.py", &[], fields.join("\n").as_bytes());
    String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_string)
        .collect()
}

/// What rspamd (an independent verifier, same DNS) finds, in the terms of RFC 8601: SPF of
/// MAIL FROM, DKIM per signing domain, DMARC, ARC, sorted.
fn rspamd_results(rspamd: &RspamdScanner, message: &str, sender: &str) -> Vec<String> {
    let from = format!("--from={sender}");
    let symbols = rspamd.symbols(
        message.as_bytes(),
        &["--ip=127.0.0.1", "--helo=client.example.test", &from],
    );
    let mut results = Vec::new();
    for symbol in &symbols {
        let (name, options) = symbol.split_once('[').unwrap_or((symbol, ""));
        let options = options.trim_end_matches(']');
        let result = match name {
            "R_SPF_ALLOW" => "spf=pass",
            "R_SPF_FAIL" => "spf=fail",
            "R_SPF_SOFTFAIL" => "spf=softfail",
            "R_SPF_NEUTRAL" => "spf=neutral",
            "R_SPF_NA" => "spf=none",
            "R_SPF_DNSFAIL" => "spf=temperror",
            "R_SPF_PERMFAIL" => "spf=permerror",
            "DMARC_POLICY_ALLOW" => "dmarc=pass",
            "DMARC_POLICY_REJECT" | "DMARC_POLICY_QUARANTINE" | "DMARC_POLICY_SOFTFAIL" => {
                "dmarc=fail"
            }
            "DMARC_NA" => "dmarc=none",
            "DMARC_DNSFAIL" => "dmarc=temperror",
            "ARC_NA" => "arc=none",
            "ARC_ALLOW" => "arc=pass",
            "ARC_REJECT" => "arc=fail",
            "ARC_DNSFAIL" => "arc=temperror",
            "R_DKIM_NA" => "dkim=none",
            _ => "",
        };
        if !result.is_empty() {
            results.push(result.to_string());
        }
        let dkim = match name {
            "R_DKIM_ALLOW" => "pass",
            "R_DKIM_REJECT" => "fail",
            "R_DKIM_TEMPFAIL" => "temperror",
            "R_DKIM_PERMFAIL" => "permerror",
            _ => continue,
        };
        for signer in options.split(',') {
            let domain = signer.split(':').next().unwrap_or(signer);
            results.push(format!("dkim={dkim} header.d={domain}"));
        }
    }
    results.sort();
    results
}

/// The same, from our field as python3-authres read it.
fn our_results(parsed: &[String]) -> Vec<String> {
    let mut results: Vec<String> = parsed
        .iter()
        .filter(|r| !r.contains("smtp.helo="))
        .map(|r| {
            let method = r.split(' ').next().unwrap_or(r);
            match r.split(' ').find(|p| p.starts_with("header.d=")) {
                Some(d) => format!("{method} {d}"),
                None => method.to_string(),
            }
        })
        .collect();
    results.sort();
    results
}

/// With the sender's name server silent (it takes queries, never answers) and the HELO
/// name's answering, each message costs one budget (`[auth] timeout-ms`), not one per step,
/// and each method says what it found: SPF of the HELO name passes, SPF of MAIL FROM is
/// `temperror`, an unsigned message is `dkim=none`, one with no ARC set `arc=none`, DMARC
/// `temperror` with its From domain. Every field parses (python3-authres) and says what rspamd,
/// asking the same DNS, says. Variant: a message of an answering domain also signed by the
/// silent one keeps its DKIM pass and DMARC pass beside the silent signature's `temperror`.
#[test]
fn a_silent_name_server_costs_one_budget_and_each_method_gets_its_own_result() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let silent_port = silent.local_addr().expect("addr").port();
    let keys = tempfile::tempdir().expect("tempdir");
    let (slow_key, _) = dknewkey(keys.path(), "slow", "ed25519");
    let (fast_key, fast_record) = dknewkey(keys.path(), "fast", "rsa");
    let dns = dns(&[
        format!("--server=/slow.test/127.0.0.1#{silent_port}"),
        txt("client.example.test", "v=spf1 ip4:127.0.0.1 -all"),
        txt("fast.test", "v=spf1 ip4:127.0.0.1 -all"),
        txt("_dmarc.fast.test", "v=DMARC1; p=reject"),
        txt("s1._domainkey.fast.test", &fast_record),
    ]);
    let rspamd = RspamdScanner::start(dns.port);
    // The resolver's own timeout (5 s per query by default) is longer than the budget.
    let budget = std::time::Duration::from_millis(2000);
    let gw = Gateway::start(&format!(
        "[dns]\nservers = [\"127.0.0.1:{}\"]\n\n\
         [auth]\nverify = [\"spf\", \"dkim\", \"dmarc\", \"arc\"]\ntimeout-ms = {}\n",
        dns.port,
        budget.as_millis()
    ));
    let helo = "client.example.test";
    let slow_signed =
        |message: &str| dkimpy_sign(message, &slow_key, "s1", "slow.test", "ed25519-sha256");
    let fast_signed =
        |message: &str| dkimpy_sign(message, &fast_key, "s1", "fast.test", "rsa-sha256");
    let cases = [
        ("user@slow.test", plain("user@slow.test", "silent-unsigned")),
        (
            "user@slow.test",
            slow_signed(&plain("user@slow.test", "silent-signed")),
        ),
        (
            "bounce@fast.test",
            slow_signed(&fast_signed(&plain("news@fast.test", "silent-cosigner"))),
        ),
    ];
    let mut fields = Vec::new();
    for (sender, message) in &cases {
        let subject = message
            .split("Subject: ")
            .nth(1)
            .and_then(|s| s.split("\r\n").next())
            .expect("subject");
        let (mut c, _) = RawSmtp::connect(gw.inbound);
        c.cmd(&format!("EHLO {helo}"));
        let started = std::time::Instant::now();
        assert!(c.cmd(&format!("MAIL FROM:<{sender}>")).starts_with("250"));
        assert!(c.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(message.as_bytes());
        c.send(b".\r\n");
        let reply = c.reply();
        let waited = started.elapsed();
        eprintln!("{subject}: MAIL FROM to the final reply in {waited:?}");
        assert!(reply.starts_with("250"), "{reply}");
        c.cmd("QUIT");
        // One budget from MAIL FROM to the reply (SPF's lookups start at MAIL FROM, the
        // message's run beside what SPF still waits for), not one per step.
        assert!(waited < budget * 3 / 2, "{subject}: {waited:?}");
        let delivered =
            gw.wait_mailbox_matching("alice@example.test", &format!("Subject: {subject}\r\n"));
        let ours = results_fields(&delivered);
        assert_eq!(ours.len(), 1, "{ours:?}");
        let parsed = authres(&ours);
        assert_eq!(
            our_results(&parsed),
            rspamd_results(&rspamd, message, sender),
            "{subject}: ours {parsed:?}"
        );
        fields.push((ours[0].clone(), parsed));
    }
    let late = "reason=\"DNS resolution error: no DNS answer in time\"";
    let (field, parsed) = &fields[0];
    assert!(
        field.starts_with(&format!(
            "mx.example.test; spf=temperror {late} smtp.mailfrom=user@slow.test; \
             spf=pass smtp.helo=client.example.test; dkim=none; dmarc=temperror reason="
        )),
        "{field}"
    );
    assert!(
        field.ends_with("header.from=slow.test; arc=none smtp.remote-ip=127.0.0.1"),
        "{field}"
    );
    assert_eq!(parsed.len(), 5, "{parsed:?}");
    let (field, _) = &fields[1];
    assert!(
        field.contains(&format!(
            "dkim=temperror {late} header.d=slow.test header.s=s1 header.a=ed25519-sha256"
        )),
        "{field}"
    );
    let (field, _) = &fields[2];
    assert!(
        field.starts_with(
            "mx.example.test; spf=pass smtp.mailfrom=bounce@fast.test; \
             spf=pass smtp.helo=client.example.test; "
        ),
        "{field}"
    );
    assert!(
        field.contains("dkim=pass header.d=fast.test header.s=s1"),
        "{field}"
    );
    assert!(
        field.contains(&format!("dkim=temperror {late} header.d=slow.test")),
        "{field}"
    );
    assert!(
        field.ends_with(
            "dmarc=pass header.from=fast.test policy.dmarc=reject; arc=none smtp.remote-ip=127.0.0.1"
        ),
        "{field}"
    );
    drop(silent);
}

/// The bundled dmarc-policy plugin enforces `p=reject` at DATA with its documented reply, lets
/// aligned mail through, and the results are counted in the metrics.
#[test]
fn dmarc_policy_plugin_refuses_failing_mail_of_a_p_reject_domain() {
    let dns = dns(&[
        txt("_dmarc.bank.test", "v=DMARC1; p=reject"),
        txt("bank.test", "v=spf1 ip4:127.0.0.1 -all"),
    ]);
    let gw = Gateway::start(&format!(
        "{}\n[[plugin]]\npath = \"{}\"\n",
        config(dns.port, "\"spf\", \"dkim\", \"dmarc\"", 1000),
        mailgate_e2e::plugin_dir()
            .join("dmarc-policy.wasm")
            .display()
    ));
    let (mut c, _) = RawSmtp::connect(gw.inbound);
    c.cmd("EHLO client.example.test");
    assert!(c
        .cmd("MAIL FROM:<phisher@elsewhere.test>")
        .starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(plain("security@bank.test", "phish").as_bytes());
    c.send(b".\r\n");
    let reply = c.reply();
    assert_eq!(
        reply.trim_end(),
        "550 5.7.1 Message rejected: bank.test publishes DMARC policy reject and this message \
         fails DMARC"
    );
    // The session goes on: the bank's own mail, SPF-aligned, is delivered.
    assert!(c.cmd("MAIL FROM:<bounces@bank.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(plain("security@bank.test", "statement").as_bytes());
    c.send(b".\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250"), "{reply}");
    c.cmd("QUIT");
    let queue_id = reply.trim_end().rsplit(' ').next().expect("queue id");
    let delivered = gw.wait_mailbox_matching("alice@example.test", "Subject: statement\r\n");
    // The journal keeps the results with the message (written within a moment).
    let expected = "authentication: mx.example.test; spf=pass smtp.mailfrom=bounces@bank.test;";
    let traced = mailgate_e2e::wait_until(10, || {
        gw.cli(&["trace", queue_id]).stdout.contains(expected)
    });
    assert!(traced, "{}", gw.cli(&["trace", queue_id]).stdout);
    assert!(
        results_fields(&delivered)[0]
            .contains("dmarc=pass header.from=bank.test policy.dmarc=reject"),
        "{delivered}"
    );
    assert!(gw
        .settled_mailbox("alice@example.test")
        .iter()
        .all(|m| !m.contains("Subject: phish")));
    let metrics = mailgate_e2e::curl("", &[], &format!("http://127.0.0.1:{}/metrics", gw.metrics));
    let metrics = String::from_utf8_lossy(&metrics);
    for series in [
        "mailgate_sender_auth_total{method=\"dmarc\",result=\"fail\"} 1",
        "mailgate_sender_auth_total{method=\"dmarc\",result=\"pass\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} in:\n{metrics}");
    }
}

/// With `[arc-seal]`, received mail leaves the data stage with the gateway's ARC set: after a
/// list's set (i=1), ours is i=2 with cv=pass, its signature covers the footer a plugin added,
/// and dkimpy's arc_verify validates the chain; mail with no chain gets i=1, cv=none.
#[test]
fn the_gateway_seals_received_mail_and_dkimpy_validates_the_chain() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (list_key, list_record) = dknewkey(keys.path(), "list", "rsa");
    let key = keys.path().join("seal.key");
    let run = mailgate_e2e::mailgate(
        &[
            "dkim",
            "keygen",
            "example.test",
            "seal1",
            "--out",
            key.to_str().expect("utf-8"),
        ],
        &keys.path().join("cache"),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let our_record = run
        .stdout
        .lines()
        .find_map(|l| {
            l.split_once("IN TXT \"")
                .map(|(_, r)| r.trim_end_matches('"').to_string())
        })
        .expect("TXT record");
    let dns = dns(&[
        txt("arc1._domainkey.lists.test", &list_record),
        txt("seal1._domainkey.example.test", &our_record),
    ]);
    // rspamd (strict about the key's form) validates the chain too.
    let rspamd = RspamdScanner::start(dns.port);
    let rspamd_arc = |message: &str| -> Vec<String> {
        rspamd
            .symbols(message.as_bytes(), &["--ip=192.0.2.1"])
            .into_iter()
            .filter(|s| s.starts_with("ARC_"))
            .collect()
    };
    let gw = Gateway::start(&format!(
        "{}\n[arc-seal]\ndomain = \"example.test\"\nselector = \"seal1\"\nkey = \"{}\"\n\n\
         [[plugin]]\npath = \"{}\"\n[plugin.config]\nfooter = \"-- scanned by the gateway\"\n",
        config(dns.port, "\"spf\", \"dkim\"", 1000),
        key.display(),
        mailgate_e2e::plugin_dir().join("mime-guard.wasm").display()
    ));
    let records = [
        ("arc1._domainkey.lists.test", list_record.as_str()),
        ("seal1._domainkey.example.test", our_record.as_str()),
    ];

    let listed = format!(
        "Authentication-Results: lists.test; spf=pass smtp.mailfrom=a@origin.test\r\n{}",
        plain("a@origin.test", "sealed-twice")
    );
    let listed = arcsign(&listed, &list_key, "arc1", "lists.test");
    let fields = deliver(
        &gw,
        "client.example.test",
        "a@lists.test",
        &listed,
        "sealed-twice",
    );
    assert!(fields[0].contains("arc=pass"), "{fields:?}");
    let delivered = gw.wait_mailbox_matching("alice@example.test", "Subject: sealed-twice\r\n");
    assert!(
        delivered.contains("-- scanned by the gateway"),
        "{delivered}"
    );
    assert!(
        delivered.contains("ARC-Seal: i=2; a=rsa-sha256; s=seal1; d=example.test; cv=pass"),
        "{delivered}"
    );
    let verdict = arcverify(&delivered, &records);
    assert!(
        verdict.starts_with("cv=pass sets=2"),
        "{verdict}\n{delivered}"
    );
    let symbols = rspamd_arc(&delivered);
    assert!(
        symbols.len() == 1 && symbols[0].starts_with("ARC_ALLOW[example.test:s=seal1:i=2]"),
        "{symbols:?}\n{delivered}"
    );
    // Our ARC-Authentication-Results, past its instance tag, reads as RFC 8601 says.
    let header = delivered.split("\r\n\r\n").next().unwrap_or("");
    let ours: Vec<String> = header
        .replace("\r\n\t", " ")
        .replace("\r\n ", " ")
        .lines()
        .filter_map(|l| l.strip_prefix("ARC-Authentication-Results: i=2; "))
        .map(str::to_string)
        .collect();
    assert_eq!(ours.len(), 1, "{delivered}");
    let parsed = authres(&ours);
    assert!(
        parsed.iter().any(|r| r.starts_with("arc=pass")),
        "{parsed:?}"
    );

    let fields = deliver(
        &gw,
        "client.example.test",
        "a@origin.test",
        &plain("a@origin.test", "sealed-once"),
        "sealed-once",
    );
    assert!(fields[0].contains("arc=none"), "{fields:?}");
    let delivered = gw.wait_mailbox_matching("alice@example.test", "Subject: sealed-once\r\n");
    let verdict = arcverify(&delivered, &records);
    assert!(
        verdict.starts_with("cv=pass sets=1"),
        "{verdict}\n{delivered}"
    );
    // Changed after the gateway sealed it: the chain fails.
    let symbols = rspamd_arc(&delivered);
    assert!(
        symbols.len() == 1 && symbols[0].starts_with("ARC_ALLOW[example.test:s=seal1:i=1]"),
        "{symbols:?}\n{delivered}"
    );
    let changed = delivered.replace("Hello Alice.", "Hello Mallory.");
    assert!(arcverify(&changed, &records).starts_with("cv=fail"));
    let symbols = rspamd_arc(&changed);
    assert!(
        symbols.len() == 1 && symbols[0].starts_with("ARC_REJECT"),
        "{symbols:?}"
    );
}

/// The value of property `name` (`header.b`, `smtp.helo`, ...) in an unfolded results field, as
/// written (quotes included).
fn property_as_written<'a>(field: &'a str, name: &str) -> Option<&'a str> {
    let start = field.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &field[start..];
    let end = match rest.strip_prefix('"') {
        Some(quoted) => quoted.find('"')? + 2,
        None => rest.find([' ', ';']).unwrap_or(rest.len()),
    };
    Some(&rest[..end])
}

/// RFC 8601 §2.2 `pvalue` as this test needs it: a quoted-string, an RFC 2045 token (printable
/// ASCII but the tspecials), or `local-part@domain`.
fn is_pvalue(value: &str) -> bool {
    let token = |v: &str| {
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
    };
    let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
    let address = value.split_once('@').is_some_and(|(l, d)| {
        !l.is_empty()
            && !d.is_empty()
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
    });
    quoted || token(value) || address
}

/// The first eight characters of the `b=` of the first DKIM-Signature of `message` (what a
/// results field's `header.b` carries).
fn signature_prefix(message: &str) -> String {
    let header = message.split("\r\n\r\n").next().unwrap_or("");
    let start = header.find("DKIM-Signature:").expect("signed");
    let field = &header[start..];
    let b = field
        .split(';')
        .map(|t| t.trim_start())
        .find_map(|t| t.strip_prefix("b="))
        .expect("b= tag");
    b.chars().filter(|c| !c.is_whitespace()).take(8).collect()
}

/// The gateway's ARC-Authentication-Results quote what RFC 8601 wants quoted: a `header.b`
/// whose signature starts with `/` (a tspecial of RFC 2045), and, as a variant, the
/// `smtp.helo` of a client that said HELO with an address literal (`[` and `]`). The field
/// parses (python3-authres) to the same values, and the seal still validates (dkimpy, rspamd).
#[test]
fn the_seals_results_quote_values_that_are_not_tokens() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (sender_key, sender_record) = dknewkey(keys.path(), "sender", "ed25519");
    let key = keys.path().join("seal.key");
    let run = mailgate_e2e::mailgate(
        &[
            "dkim",
            "keygen",
            "example.test",
            "seal1",
            "--out",
            key.to_str().expect("utf-8"),
        ],
        &keys.path().join("cache"),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let our_record = run
        .stdout
        .lines()
        .find_map(|l| {
            l.split_once("IN TXT \"")
                .map(|(_, r)| r.trim_end_matches('"').to_string())
        })
        .expect("TXT record");
    let dns = dns(&[
        txt("ed1._domainkey.origin.test", &sender_record),
        txt("seal1._domainkey.example.test", &our_record),
        txt("origin.test", "v=spf1 ip4:127.0.0.1 -all"),
    ]);
    let rspamd = RspamdScanner::start(dns.port);
    let gw = Gateway::start(&format!(
        "{}\n[arc-seal]\ndomain = \"example.test\"\nselector = \"seal1\"\nkey = \"{}\"\n",
        config(dns.port, "\"spf\", \"dkim\", \"arc\"", 1000),
        key.display(),
    ));
    // A signature whose first base64 characters hold a `/`: the subject changes until one does.
    let (subject, signed) = (0..400)
        .map(|n| {
            let subject = format!("slash-{n}");
            let signed = dkimpy_sign(
                &plain("a@origin.test", &subject),
                &sender_key,
                "ed1",
                "origin.test",
                "ed25519-sha256",
            );
            (subject, signed)
        })
        .find(|(_, signed)| signature_prefix(signed).contains('/'))
        .expect("a signature with a slash in its first bytes");
    let prefix = signature_prefix(&signed);
    deliver(&gw, "[127.0.0.1]", "a@origin.test", &signed, &subject);
    let delivered =
        gw.wait_mailbox_matching("alice@example.test", &format!("Subject: {subject}\r\n"));
    let header = delivered.split("\r\n\r\n").next().unwrap_or("");
    let aar: Vec<String> = header
        .replace("\r\n\t", " ")
        .replace("\r\n ", " ")
        .lines()
        .filter_map(|l| l.strip_prefix("ARC-Authentication-Results: i=1; "))
        .map(str::to_string)
        .collect();
    assert_eq!(aar.len(), 1, "{delivered}");
    for (name, expected) in [("header.b", prefix.as_str()), ("smtp.helo", "[127.0.0.1]")] {
        let written =
            property_as_written(&aar[0], name).unwrap_or_else(|| panic!("no {name} in {}", aar[0]));
        assert!(
            is_pvalue(written),
            "{name}={written} is not an RFC 8601 pvalue: {}",
            aar[0]
        );
        assert_eq!(written.trim_matches('"'), expected, "{}", aar[0]);
    }
    let parsed = authres(&aar);
    assert!(
        parsed
            .iter()
            .any(|r| r.starts_with("dkim=pass") && r.contains(&format!("header.b={prefix}"))),
        "{parsed:?}"
    );
    assert!(
        parsed
            .iter()
            .any(|r| r.starts_with("spf=") && r.contains("smtp.helo=[127.0.0.1]")),
        "{parsed:?}"
    );
    // The seal covers the field as written.
    let records = [
        ("ed1._domainkey.origin.test", sender_record.as_str()),
        ("seal1._domainkey.example.test", our_record.as_str()),
    ];
    let verdict = arcverify(&delivered, &records);
    assert!(
        verdict.starts_with("cv=pass sets=1"),
        "{verdict}\n{delivered}"
    );
    let symbols: Vec<String> = rspamd
        .symbols(delivered.as_bytes(), &["--ip=192.0.2.1"])
        .into_iter()
        .filter(|s| s.starts_with("ARC_"))
        .collect();
    assert!(
        symbols.len() == 1 && symbols[0].starts_with("ARC_ALLOW[example.test:s=seal1:i=1]"),
        "{symbols:?}\n{delivered}"
    );
}
