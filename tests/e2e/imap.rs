//! IMAP end to end: Python's imaplib and curl against the real binary, on mail delivered over
//! SMTP; the retrieve stage; bad input.

use mailgate_e2e::{curl, python, Gateway, RawSmtp};
use serde_json::Value;

fn deliver(gw: &Gateway, to: &str, messages: &[&str]) {
    let data: Vec<String> = messages.iter().map(|m| m.to_string()).collect();
    gw.deliver_local(to, &data);
}

const PLAIN: &str = "From: Ann <ann@client.test>\r\nTo: alice@example.test\r\nSubject: first\r\n\r\nHello there, this is the first.\r\n";
const SECOND: &str = "From: Bob <bob@client.test>\r\nSubject: second\r\n\r\n0123456789abcdef\r\n";
const MIXED: &str = "From: Cy <cy@client.test>\r\nSubject: third\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"xx\"\r\n\r\n--xx\r\nContent-Type: text/plain\r\n\r\nbody\r\n\
--xx\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--xx--\r\n";

fn joined(v: &Value) -> String {
    serde_json::to_string(v).expect("json")
}

#[test]
fn imaplib_session_covers_what_clients_use() {
    let gw = Gateway::start("");
    deliver(&gw, "alice@example.test", &[PLAIN, SECOND, MIXED]);
    let out: Value = serde_json::from_str(&python(
        "imap_client.py",
        &[
            &gw.imap.to_string(),
            &gw.inbound.to_string(),
            "alice@example.test",
            "pw-alice",
        ],
    ))
    .expect("json");
    let caps = joined(&out["caps_before_tls"]);
    assert!(
        caps.contains("STARTTLS") && caps.contains("LOGINDISABLED"),
        "{caps}"
    );
    assert!(joined(&out["login_before_tls"]).contains("PRIVACYREQUIRED"));
    assert!(joined(&out["login"]).contains("OK"));
    assert!(joined(&out["list"]).contains("INBOX"));
    assert!(
        joined(&out["list_after_create"]).contains("Archive/2026"),
        "{}",
        out["list_after_create"]
    );
    assert_eq!(out["select"][1][0], "3");
    let structure = joined(&out["fetch_structure"]);
    assert!(
        structure.contains("BODYSTRUCTURE (\\\"text\\\" \\\"plain\\\""),
        "{structure}"
    );
    assert!(structure.contains("ENVELOPE ("), "{structure}");
    assert!(
        structure.contains("\\\"Ann\\\" NIL \\\"ann\\\" \\\"client.test\\\""),
        "{structure}"
    );
    let partial = joined(&out["fetch_partial"]);
    assert!(
        partial.contains("BODY[TEXT]<0> {10}") && partial.contains("0123456789"),
        "{partial}"
    );
    assert!(joined(&out["fetch_header_fields"]).contains("Subject: first"));
    let full = joined(&out["fetch_full"]);
    assert!(
        full.contains("multipart/mixed") && full.contains("\\\\Seen"),
        "BODY[] sets \\Seen: {full}"
    );
    assert_eq!(out["search_subject"][0], "2");
    assert_eq!(
        out["search_unseen"][0], "1 2",
        "message 3 was read by BODY[]"
    );
    assert_eq!(out["search_or_not"][0], "1");
    assert_eq!(out["uid_search_all"][0], "1 2 3");
    assert!(joined(&out["search_flagged"]).contains('1'));
    assert!(joined(&out["copy"]).contains("COPYUID"), "{}", out["copy"]);
    assert!(joined(&out["move"]).contains("OK"), "{}", out["move"]);
    let status = joined(&out["status_archive"]);
    assert!(status.contains("MESSAGES 2"), "copied + moved: {status}");
    assert!(joined(&out["expunge"]).contains('1'), "{}", out["expunge"]);
    assert!(
        joined(&out["append"]).contains("APPENDUID"),
        "{}",
        out["append"]
    );
    let archive = joined(&out["archive_subjects"]);
    for subject in ["first", "second", "appended"] {
        assert!(
            archive.contains(&format!("Subject: {subject}")),
            "{archive}"
        );
    }
    assert!(
        joined(&out["bad_name"]).contains("NO"),
        "{}",
        out["bad_name"]
    );
    assert!(
        joined(&out["idle_start"]).starts_with("\"+"),
        "{}",
        out["idle_start"]
    );
    assert!(
        joined(&out["idle_update"]).contains("EXISTS"),
        "IDLE saw the delivery: {}",
        out["idle_update"]
    );
    assert!(joined(&out["idle_done"]).contains("OK"));
    // INBOX lost message 1 (expunged) and message 2 (moved); the stored files say the same.
    assert_eq!(
        gw.mailbox("alice@example.test").len(),
        2,
        "the third and the one delivered during IDLE"
    );
}

#[test]
fn curl_imaps_fetches_byte_for_byte() {
    let gw = Gateway::start("");
    deliver(&gw, "bob@example.test", &[PLAIN]);
    let stored = gw.mailbox("bob@example.test");
    let out = curl(
        "bob@example.test:pw-bob",
        &[],
        &format!("imaps://127.0.0.1:{}/INBOX;UID=1", gw.imaps),
    );
    assert_eq!(String::from_utf8_lossy(&out), stored[0]);
}

fn probe(action: &str) -> String {
    mailgate_e2e::probe_plugin(
        "viewer",
        "retrieve",
        &format!("action.retrieve = \"{action}\""),
    )
}

#[test]
fn retrieve_stage_banner_and_hide_over_imap() {
    let gw = Gateway::start(&probe("tag"));
    deliver(&gw, "bob@example.test", &[PLAIN]);
    let before = gw.mailbox("bob@example.test");
    let out = curl(
        "bob@example.test:pw-bob",
        &[],
        &format!("imaps://127.0.0.1:{}/INBOX;UID=1", gw.imaps),
    );
    let got = String::from_utf8_lossy(&out).into_owned();
    assert!(got.contains("X-Probe: viewer\r\n"), "{got}");
    assert_eq!(
        gw.mailbox("bob@example.test"),
        before,
        "stored file unchanged"
    );
    let hide = Gateway::start(&probe("hide"));
    deliver(&hide, "bob@example.test", &[PLAIN]);
    let out = curl(
        "bob@example.test:pw-bob",
        &["-X", "SEARCH ALL"],
        &format!("imaps://127.0.0.1:{}/INBOX", hide.imaps),
    );
    let search = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(search.trim(), "* SEARCH", "hidden: {search}");
}

#[test]
fn bad_input_gets_the_right_error_and_the_session_goes_on() {
    let gw = Gateway::start("");
    let (mut c, greeting) = RawSmtp::connect(gw.imap);
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let mut ask = |line: &str| -> String {
        c.send(format!("{line}\r\n").as_bytes());
        let mut reply = Vec::new();
        loop {
            use std::io::Read;
            let mut byte = [0u8; 1];
            if c.stream().read(&mut byte).unwrap_or(0) == 0 {
                break;
            }
            reply.push(byte[0]);
            if reply.ends_with(b"\r\n") {
                let text = String::from_utf8_lossy(&reply).into_owned();
                let last = text.lines().last().unwrap_or("").to_string();
                if !last.starts_with('*') {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&reply).into_owned()
    };
    assert!(ask("a1 FROBNICATE").contains("a1 BAD"));
    assert!(ask("a2 SELECT INBOX").contains("a2 BAD Log in first"));
    assert!(ask("a3 LOGIN alice@example.test pw-alice").contains("a3 NO [PRIVACYREQUIRED]"));
    assert!(
        ask("a4 APPEND INBOX {999999999}").contains("a4 NO [TOOBIG]"),
        "refused before the literal is read"
    );
    let nested = format!("a5 SEARCH {}ALL{}", "(".repeat(200), ")".repeat(200));
    assert!(ask(&nested).contains("a5 BAD"));
    // A line the parser gives up on early (12 000 nested NOTs, 48 KB): answered once, and the
    // rest of the line is not taken for commands.
    let deep = format!("a55 SEARCH {}ALL", "NOT ".repeat(12_000));
    assert!(ask(&deep).contains("a55 BAD"));
    assert!(ask("a6 NOOP").contains("a6 OK"));
    assert!(ask("a7 LOGOUT").contains("a7 OK"));
}

#[test]
fn two_sessions_see_each_others_flags_and_expunges() {
    let gw = Gateway::start("");
    deliver(&gw, "carol@example.test", &[PLAIN, SECOND, MIXED]);
    let out: Value = serde_json::from_str(&python(
        "imap_two_sessions.py",
        &[&gw.imaps.to_string(), "carol@example.test", "pw-carol"],
    ))
    .expect("json");
    let all = joined(&out);
    assert!(all.contains("\\\\Flagged"), "B saw A's flag change: {all}");
    assert!(
        out["EXPUNGE"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x == "2")),
        "B saw the expunge: {all}"
    );
    assert_eq!(out["b_search_all"], "1 2");
}

#[test]
fn compress_deflate_carries_the_session_both_ways() {
    let gw = Gateway::start("");
    let body = "All work and no play makes a dull message.\r\n".repeat(200);
    let message = format!("Subject: long\r\n\r\n{body}");
    deliver(&gw, "alice@example.test", &[message.as_str()]);
    let out: Value = serde_json::from_str(&python(
        "imap_compress.py",
        &[&gw.imaps.to_string(), "alice@example.test", "pw-alice"],
    ))
    .expect("json");
    assert!(
        out["reply"].as_str().is_some_and(|r| r.starts_with("c OK")),
        "{out}"
    );
    let after = out["after"].as_str().expect("after");
    assert!(after.contains("s OK [READ-WRITE]"), "{after}");
    assert!(after.contains(&body), "the message arrives whole");
    assert!(after.contains("z OK"), "{after}");
    let compressed = out["compressed_bytes"].as_u64().expect("count");
    assert!(
        compressed * 5 < after.len() as u64,
        "{compressed} bytes on the wire for {} of replies",
        after.len()
    );
}
