//! The webmail page in a real browser: headless Chromium (Debian) driven by Selenium (PyPI),
//! against the real binary; what it did checked in the Maildirs over IMAP and on disk.
//! Screenshots are kept in target/test-artifacts/webmail/.

use mailgate_e2e::{free_port, imap_flags, wait_until, webmail_browser, Gateway};
use serde_json::Value;

const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";

fn deliver(gw: &Gateway, to: &str, message: &str) {
    gw.deliver_local(to, &[message.to_string()]);
}

#[test]
fn log_in_read_and_reply_with_an_attachment() {
    let gw = Gateway::start("");
    deliver(
        &gw,
        ALICE,
        "From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: Browser test\r\nMessage-ID: <browser-1@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nPlease reply with the report.\r\n--B\r\nContent-Type: text/plain; name=notes.txt\r\nContent-Disposition: attachment; filename=notes.txt\r\nContent-Transfer-Encoding: base64\r\n\r\nbm90ZXMgZnJvbSBib2IK\r\n--B--\r\n",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("report.txt");
    std::fs::write(&file, "the quarterly report\n").expect("write");
    let out = webmail_browser(
        &gw,
        ALICE,
        &["reply", "Browser test", &file.to_string_lossy()],
    );
    assert_eq!(out["body"], "Please reply with the report.", "{out}");
    assert_eq!(
        out["downloaded"],
        serde_json::json!({"name": "notes.txt", "content": "notes from bob\n"}),
        "the attachment as downloaded in the browser"
    );
    assert_eq!(out["to"], BOB);
    assert_eq!(out["subject"], "Re: Browser test");
    assert_eq!(
        out["console"],
        serde_json::json!([]),
        "no errors in the browser console"
    );

    let reply = |m: &String| m.contains("Subject: Re: Browser test");
    assert!(
        wait_until(10, || gw.mailbox(BOB).iter().any(reply)),
        "the reply did not reach bob: {}",
        gw.log()
    );
    let got = gw.mailbox(BOB).into_iter().find(reply).expect("reply");
    assert!(
        got.contains("In-Reply-To: <browser-1@example.test>"),
        "{got}"
    );
    assert!(got.contains("Thanks, the file is attached."), "{got}");
    assert!(got.contains("filename=\"report.txt\""), "{got}");
    assert!(got.contains("the quarterly report"), "{got}");
    let sent = imap_flags(&gw, ALICE, "Sent", &[]);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["subject"], "Re: Browser test");
    let inbox = imap_flags(&gw, ALICE, "INBOX", &[]);
    let flags: Vec<&str> = inbox[0]["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        flags.contains(&"\\Seen") && flags.contains(&"\\Answered"),
        "{flags:?}"
    );
}

#[test]
fn mark_unread_move_and_delete() {
    let gw = Gateway::start("");
    deliver(
        &gw,
        ALICE,
        "From: Carol <carol@example.test>\r\nTo: alice@example.test\r\nSubject: Sort me\r\n\r\nMove me around.\r\n",
    );
    let out = webmail_browser(&gw, ALICE, &["manage", "Sort me"]);
    assert_eq!(out["in_archive"], true, "{out}");
    assert_eq!(imap_flags(&gw, ALICE, "INBOX", &[]), Vec::<Value>::new());
    let archived = imap_flags(&gw, ALICE, "Archive", &[]);
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0]["subject"], "Sort me");
    assert_eq!(
        archived[0]["flags"],
        serde_json::json!([]),
        "marked unread, then moved"
    );

    let out = webmail_browser(&gw, ALICE, &["delete", "archive", "Sort me"]);
    assert_eq!(out["in_trash"], true, "{out}");
    assert_eq!(imap_flags(&gw, ALICE, "Archive", &[]), Vec::<Value>::new());
    let trash = imap_flags(&gw, ALICE, "Trash", &[]);
    assert_eq!(trash.len(), 1);
    assert_eq!(trash[0]["subject"], "Sort me");
}

#[test]
fn hostile_html_runs_nothing_and_loads_nothing() {
    let gw = Gateway::start("");
    let tracker = free_port();
    let html = format!(
        "<html><head><style>body{{background:url(http://127.0.0.1:{tracker}/css.png)}}</style>\r\n\
<script>window.parent.pwned = 1; alert('script')</script></head>\r\n\
<body onload=\"window.parent.pwned = 2\"><p>Readable hostile text</p>\r\n\
<img src=\"http://127.0.0.1:{tracker}/pixel.png\" onerror=\"window.parent.pwned = 3\">\r\n\
<a href=\"javascript:window.parent.pwned=4\">click me</a>\r\n\
<div style=\"width: expression(alert(1)); background-image: url('http://127.0.0.1:{tracker}/div.png')\">styled block</div>\r\n\
</body></html>\r\n"
    );
    deliver(
        &gw,
        ALICE,
        &format!("From: Mallory <m@evil.test>\r\nTo: alice@example.test\r\nSubject: Hostile HTML\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}"),
    );
    let out = webmail_browser(
        &gw,
        ALICE,
        &["hostile", "Hostile HTML", &tracker.to_string()],
    );
    assert_eq!(out["alert"], false, "{out}");
    assert_eq!(
        out["pwned"],
        Value::Null,
        "no script of the message ran: {out}"
    );
    assert!(
        out["frame_text"]
            .as_str()
            .is_some_and(|t| t.contains("Readable hostile text") && t.contains("styled block")),
        "{out}"
    );
    assert_eq!(
        out["tracker_hits"],
        serde_json::json!([]),
        "nothing reached the tracker"
    );
    let leaked: Vec<&str> = out["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(Value::as_str)
        .filter(|url| !url.starts_with(&format!("https://127.0.0.1:{}/", gw.jmap)))
        .collect();
    assert_eq!(leaked, Vec::<&str>::new(), "requests that left the page");
    for link in out["frame_links"].as_array().expect("links") {
        assert!(
            !link.as_str().unwrap_or("").starts_with("javascript:"),
            "{link}"
        );
    }
    for image in out["frame_images"].as_array().expect("images") {
        assert!(image.is_null(), "remote image source kept: {image}");
    }
}

#[test]
fn an_alternative_is_shown_once_and_html_is_quoted_as_text() {
    let gw = Gateway::start("");
    deliver(
        &gw,
        ALICE,
        "From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: Both forms\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=A\r\n\r\n--A\r\nContent-Type: text/plain\r\n\r\nThe plain form.\r\n--A\r\nContent-Type: text/html\r\n\r\n<p>The <b>rich</b> form.</p>\r\n--A--\r\n",
    );
    deliver(
        &gw,
        ALICE,
        "From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: Only HTML\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n<div><p>Lunch at <i>noon</i>?</p></div>\r\n",
    );
    let both = webmail_browser(&gw, ALICE, &["quote", "Both forms"]);
    assert_eq!(
        both["shown"], "The rich form.",
        "the HTML alone, once: {both}"
    );
    assert_eq!(both["quoted"], "\n\n> The plain form.", "{both}");
    let html = webmail_browser(&gw, ALICE, &["quote", "Only HTML"]);
    assert_eq!(html["shown"], "Lunch at noon?", "{html}");
    assert_eq!(
        html["quoted"], "\n\n> Lunch at noon?",
        "its words, not its markup: {html}"
    );
}
