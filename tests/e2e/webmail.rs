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
    let quote = |out: &Value| {
        let text = out["quoted"].as_str().unwrap_or("").to_string();
        let (attribution, quoted) = text.trim_start().split_once('\n').unwrap_or_default();
        assert!(
            attribution.starts_with("On ")
                && attribution.ends_with("Bob <bob@example.test> wrote:"),
            "{out}"
        );
        quoted.to_string()
    };
    assert_eq!(quote(&both), "> The plain form.", "{both}");
    let html = webmail_browser(&gw, ALICE, &["quote", "Only HTML"]);
    assert_eq!(html["shown"], "Lunch at noon?", "{html}");
    assert_eq!(
        quote(&html),
        "> Lunch at noon?",
        "its words, not its markup: {html}"
    );
}

fn html_message(from: &str, subject: &str, html: &str) -> String {
    format!(
        "From: {from}\r\nTo: alice@example.test\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
    )
}

#[test]
fn a_link_opens_in_a_new_tab_and_the_webmail_stays() {
    let gw = Gateway::start("");
    let site = free_port();
    deliver(
        &gw,
        ALICE,
        &html_message(
            "Bob <bob@example.test>",
            "A link",
            &format!(
                "<p>See the <a href=\"http://127.0.0.1:{site}/landing\">Landing page</a>.</p>"
            ),
        ),
    );
    let out = webmail_browser(&gw, ALICE, &["links", "A link", &site.to_string()]);
    let landing = format!("http://127.0.0.1:{site}/landing");
    assert_eq!(out["link"]["target"], "_blank", "{out}");
    assert_eq!(out["link"]["rel"], "noopener noreferrer", "{out}");
    assert_eq!(
        out["link"]["hover_shows"],
        format!("\"{landing}\""),
        "hovering a link shows where it goes: {out}"
    );
    assert_eq!(out["new_tab_url"], landing.as_str(), "{out}");
    assert_eq!(out["new_tab_opener"], Value::Null, "noopener: {out}");
    assert_eq!(
        out["webmail_url"],
        format!("https://127.0.0.1:{}/", gw.jmap),
        "the webmail did not navigate: {out}"
    );
    assert_eq!(out["webmail_still_shown"], true, "{out}");
    // The new tab's own requests (its favicon) aside.
    let landed: Vec<&Value> = out["site_hits"]
        .as_array()
        .expect("hits")
        .iter()
        .filter(|hit| hit["path"] == "/landing")
        .collect();
    assert_eq!(landed.len(), 1, "{out}");
    assert_eq!(landed[0]["referer"], Value::Null, "no referrer: {out}");
    assert_eq!(landed[0]["cookie"], Value::Null, "{out}");
}

#[test]
fn remote_images_load_only_when_asked_and_styles_survive() {
    let gw = Gateway::start("");
    let server = free_port();
    let image = |name: &str| {
        format!(
            "<p>Hello <span style=\"color: rgb(200, 0, 0); font-weight: bold; position: fixed\">in red</span></p>\
<img src=\"http://127.0.0.1:{server}/{name}.png\" alt=\"{name}\" width=\"40\" height=\"30\">"
        )
    };
    let sender = "News <news@shop.test>";
    for (subject, name) in [
        ("Images one", "one"),
        ("Images two", "two"),
        ("Images three", "three"),
    ] {
        deliver(&gw, ALICE, &html_message(sender, subject, &image(name)));
    }
    let out = webmail_browser(
        &gw,
        ALICE,
        &[
            "images",
            "Images one",
            "Images two",
            "Images three",
            &server.to_string(),
        ],
    );
    assert_eq!(
        out["hits_before_click"],
        serde_json::json!([]),
        "nothing fetched before the click: {out}"
    );
    assert_eq!(
        out["first_before"]["srcs"],
        serde_json::json!([null]),
        "{out}"
    );
    assert!(
        out["first_bar"]
            .as_str()
            .is_some_and(|t| t.contains("remote image") && t.contains("news@shop.test")),
        "{out}"
    );
    let font = out["first_before"]["font"].as_str().unwrap_or("");
    assert!(
        font.starts_with("system-ui") && !font.contains("Times"),
        "a readable base style: {out}"
    );
    assert_eq!(
        out["first_before"]["styled_color"], "rgba(200, 0, 0, 1)",
        "safe inline styles survive: {out}"
    );
    assert_eq!(
        out["first_after"]["loaded"],
        serde_json::json!([40]),
        "{out}"
    );
    assert_eq!(out["first_bar_after"], false, "{out}");
    assert_eq!(
        out["hits_before_always"]
            .as_array()
            .map(|h| h.iter().filter(|h| h["path"] != "/one.png").count()),
        Some(0),
        "the second message's image waits for its own click: {out}"
    );
    assert_eq!(
        out["third_bar"], false,
        "always for this sender: shown without asking"
    );
    let hits = out["hits"].as_array().expect("hits");
    let paths: Vec<&str> = hits.iter().filter_map(|h| h["path"].as_str()).collect();
    assert_eq!(paths, ["/one.png", "/two.png", "/three.png"], "{out}");
    for hit in hits {
        assert_eq!(hit["referer"], Value::Null, "no referrer: {hit}");
        assert_eq!(hit["cookie"], Value::Null, "no cookie: {hit}");
    }
}

#[test]
fn a_pushed_message_appears_without_reload() {
    let gw = Gateway::start("");
    deliver(
        &gw,
        ALICE,
        "From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: Already here\r\n\r\nOld.\r\n",
    );
    let out = webmail_browser(
        &gw,
        ALICE,
        &["push", "Arrived by itself", &gw.inbound.to_string()],
    );
    assert!(
        !out["listed_before"]
            .to_string()
            .contains("Arrived by itself"),
        "{out}"
    );
    assert_eq!(out["same_page"], true, "no reload: {out}");
}

#[test]
fn at_phone_width_the_list_then_the_message_and_previews_are_text() {
    let gw = Gateway::start("");
    deliver(
        &gw,
        ALICE,
        &html_message(
            "Shop <news@shop.test>",
            "Weekly offers",
            "<html><head><title>Offers</title><style>p { color: red }</style></head><body>\
<!--[if mso]><table><tr><td><![endif]--><p>Caf&eacute; <b>deals</b> &amp; more&nbsp;inside</p>\
<div style=\"width: 900px\">A wide block of text that must not widen the page.</div></body></html>",
        ),
    );
    let out = webmail_browser(&gw, ALICE, &["phone", "Weekly offers"]);
    assert_eq!(
        out["preview"],
        "Café deals & more inside A wide block of text that must not widen the page.",
        "the preview is the text rendering: {out}"
    );
    for view in ["list_view", "message_view", "back_view"] {
        let layout = &out[view];
        assert_eq!(layout["viewport"], 360, "{view}: {out}");
        assert!(
            layout["scroll_width"].as_i64() <= Some(360),
            "{view}: nothing wider than the window: {out}"
        );
    }
    let list = &out["list_view"];
    assert_eq!(list["list"]["shown"], true, "{out}");
    assert_eq!(
        list["list"]["width"], 360,
        "the list takes the width: {out}"
    );
    assert_eq!(list["reader"]["shown"], false, "{out}");
    assert_eq!(list["search"]["shown"], true, "{out}");
    let message = &out["message_view"];
    assert_eq!(
        message["list"]["shown"], false,
        "the message in the list's place: {out}"
    );
    assert_eq!(message["reader"]["shown"], true, "{out}");
    assert_eq!(message["reader"]["width"], 360, "{out}");
    assert_eq!(out["back_view"]["list"]["shown"], true, "{out}");
    let wide = &out["wide_view"];
    assert_eq!(wide["list"]["shown"], true, "side by side when wide: {out}");
    assert_eq!(wide["reader"]["shown"], true, "{out}");
    assert!(wide["reader"]["left"].as_i64() > wide["list"]["left"].as_i64());
}

#[test]
fn shortcuts_move_reply_as_a_draft_archive_and_delete() {
    let gw = Gateway::start("");
    let subjects = ["Keys first", "Keys second", "Keys third"];
    for subject in subjects {
        deliver(
            &gw,
            ALICE,
            &format!("From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\r\nLine one of {subject}.\r\n\r\nLine two.\r\n"),
        );
    }
    let out = webmail_browser(&gw, ALICE, &["keys", subjects[0], subjects[1], subjects[2]]);
    let order: Vec<&str> = out["order"]
        .as_array()
        .expect("order")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(order.len(), 3, "{out}");
    // j, j, k, j: on the second; r answers it.
    let answered = order[1];
    assert_eq!(out["reply_subject"], format!("Re: {answered}"), "{out}");
    assert_eq!(out["reply_to"], BOB, "{out}");
    let quoted = out["quoted"].as_str().unwrap_or("");
    let mut lines = quoted.lines().skip_while(|l| l.is_empty());
    let attribution = lines.next().unwrap_or("");
    assert!(
        attribution.starts_with("On ") && attribution.ends_with(", Bob <bob@example.test> wrote:"),
        "the reply says who wrote what it quotes: {out}"
    );
    assert_eq!(
        lines.collect::<Vec<_>>(),
        [
            format!("> Line one of {answered}.").as_str(),
            ">",
            "> Line two."
        ],
        "{out}"
    );
    let drafts = imap_flags(&gw, ALICE, "Drafts", &[]);
    assert_eq!(drafts.len(), 1, "saved to Drafts: {drafts:?}");
    assert_eq!(drafts[0]["subject"], format!("Re: {answered}"));
    assert!(
        drafts[0]["flags"].to_string().contains("Draft"),
        "{drafts:?}"
    );
    let archived = imap_flags(&gw, ALICE, "Archive", &[]);
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert_eq!(archived[0]["subject"], answered, "y archives");
    let trash = imap_flags(&gw, ALICE, "Trash", &[]);
    assert_eq!(trash.len(), 1, "{trash:?}");
    assert_eq!(trash[0]["subject"], order[2], "# deletes");
    let inbox = imap_flags(&gw, ALICE, "INBOX", &[]);
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0]["subject"], order[0]);
}

#[test]
fn the_search_box_finds_by_words_and_a_forward_carries_text_and_attachment() {
    let gw = Gateway::start("");
    deliver(
        &gw,
        ALICE,
        "From: Carol <carol@example.test>\r\nTo: alice@example.test\r\nSubject: Budget plan\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nThe zeppelin budget is attached.\r\n--B\r\nContent-Type: text/plain; name=budget.txt\r\nContent-Disposition: attachment; filename=budget.txt\r\n\r\nten thousand\r\n--B--\r\n",
    );
    deliver(
        &gw,
        ALICE,
        "From: Carol <carol@example.test>\r\nTo: alice@example.test\r\nSubject: Lunch\r\n\r\nNothing about airships.\r\n",
    );
    let out = webmail_browser(&gw, ALICE, &["search", "zeppelin", "Budget plan", BOB]);
    assert_eq!(out["found"], serde_json::json!(["📎 Budget plan"]), "{out}");
    assert_eq!(out["forward_subject"], "Fwd: Budget plan", "{out}");
    let body = out["forward_body"].as_str().unwrap_or("");
    assert!(
        body.contains("---------- Forwarded message ----------\nFrom: Carol <carol@example.test>")
            && body.contains("The zeppelin budget is attached."),
        "{out}"
    );
    assert_eq!(
        out["forwarded_attachments"],
        serde_json::json!(["📎 budget.txt"])
    );
    let forwarded = |m: &String| m.contains("Subject: Fwd: Budget plan");
    assert!(
        wait_until(10, || gw.mailbox(BOB).iter().any(forwarded)),
        "{}",
        gw.log()
    );
    let got = gw
        .mailbox(BOB)
        .into_iter()
        .find(forwarded)
        .expect("forward");
    assert!(got.contains("The zeppelin budget is attached."), "{got}");
    assert!(
        got.contains("budget.txt") && got.contains("ten thousand"),
        "{got}"
    );
}
