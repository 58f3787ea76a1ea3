//! What JMAP serves of a message's bodies and how safely: the textBody/htmlBody/attachments
//! lists of RFC 8621 §4.1.4 as jmapc (PyPI) and raw JSON over curl read them, the webmail's
//! HTML view of hostile HTML (bounded, cached, never holding the user's other requests), and
//! cross-site requests a browser holding Basic credentials is made to send (headless
//! Chromium driven by Selenium), refused.

use std::process::Command;
use std::time::{Duration, Instant};

use mailgate_e2e::{free_port, jmap_client, pyenv_python, root, Gateway};
use serde_json::{json, Value};

const ALICE: &str = "alice@example.test";
const PASSWORD: &str = "pw-alice";

/// `curl` as alice against the JMAP listener: (HTTP status, response headers, body).
fn curl_as_alice(gw: &Gateway, extra: &[&str], path: &str) -> (u16, String, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sS", "-k", "-D", "/dev/stderr", "--user"])
        .arg(format!("{ALICE}:{PASSWORD}"))
        .args(["-w", "\n%{http_code}"])
        .args(extra)
        .arg(format!("https://127.0.0.1:{}{path}", gw.jmap))
        .output()
        .expect("curl");
    let mut body = out.stdout;
    let cut = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let status = String::from_utf8_lossy(&body[cut..])
        .trim()
        .parse()
        .unwrap_or(0);
    body.truncate(cut);
    (
        status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        body,
    )
}

/// One API request as raw JSON with curl (Content-Type application/json): the answer.
fn api(gw: &Gateway, calls: Value) -> Value {
    let request = json!({
        "using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
        "methodCalls": calls,
    });
    let (status, headers, body) = curl_as_alice(
        gw,
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &request.to_string(),
        ],
        "/jmap/api/",
    );
    assert_eq!(status, 200, "{headers}{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("JSON answer")
}

fn account_id(gw: &Gateway) -> String {
    let session = jmap_client(gw, ALICE, &["session"]);
    session["account_id"].as_str().expect("account").to_string()
}

/// Alice's inbox as jmapc lists it: subject -> email id.
fn ids_by_subject(gw: &Gateway) -> std::collections::HashMap<String, String> {
    let inbox = jmap_client(gw, ALICE, &["inbox"]);
    inbox["emails"]
        .as_array()
        .expect("emails")
        .iter()
        .filter_map(|e| Some((e["subject"].as_str()?.into(), e["id"].as_str()?.into())))
        .collect()
}

/// Each listed part as `type:first line of its text` (the value fetched with it), or just
/// the type for a part with no text value.
fn described(list: &Value, values: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list of parts")
        .iter()
        .map(|part| {
            let kind = part["type"].as_str().unwrap_or("?");
            let id = part["partId"].as_str().unwrap_or("");
            match values[id]["value"].as_str() {
                Some(text) => format!("{kind}:{}", text.lines().next().unwrap_or("").trim()),
                None => kind.to_string(),
            }
        })
        .collect()
}

const TOP_ALTERNATIVE: &str = "From: Ann <ann@client.test>\r\nTo: alice@example.test\r\nSubject: top alternative\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=A\r\n\r\n--A\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain words\r\n--A\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html words</p>\r\n--A--\r\n";

/// The variant: mixed around an alternative whose rich form is HTML with an inline image
/// (related), then a forwarded message.
const NESTED: &str = "From: Ann <ann@client.test>\r\nTo: alice@example.test\r\nSubject: nested shapes\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=M\r\n\r\n--M\r\nContent-Type: multipart/alternative; boundary=A\r\n\r\n--A\r\nContent-Type: text/plain\r\n\r\nnested plain\r\n--A\r\nContent-Type: multipart/related; boundary=R\r\n\r\n--R\r\nContent-Type: text/html\r\n\r\n<p>nested html <img src=\"cid:logo@x\"></p>\r\n--R\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--R--\r\n--A--\r\n--M\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@client.test\r\nSubject: forwarded\r\n\r\nforwarded body\r\n--M--\r\n";

#[test]
fn body_lists_follow_rfc_8621_for_jmapc_and_raw_json() {
    let gw = Gateway::start("");
    gw.store_directly(ALICE, "1.top:2,", TOP_ALTERNATIVE.as_bytes());
    gw.store_directly(ALICE, "2.nested:2,", NESTED.as_bytes());
    let ids = ids_by_subject(&gw);
    let expected = [
        (
            "top alternative",
            [
                vec!["text/plain:plain words"],
                vec!["text/html:<p>html words</p>"],
                vec![],
            ],
        ),
        (
            "nested shapes",
            [
                vec!["text/plain:nested plain"],
                vec!["text/html:<p>nested html <img src=\"cid:logo@x\"></p>"],
                vec!["image/png", "message/rfc822"],
            ],
        ),
    ];
    let account = account_id(&gw);
    for (subject, [text, html, attachments]) in expected {
        let id = &ids[subject];
        // jmapc's Email model, values fetched for both body lists.
        let got = jmap_client(
            &gw,
            ALICE,
            &[
                "get",
                id,
                "textBody",
                "htmlBody",
                "attachments",
                "bodyValues",
            ],
        );
        let email = &got["list"][0];
        let values = &email["bodyValues"];
        assert_eq!(
            described(&email["textBody"], values),
            text,
            "jmapc: {email}"
        );
        // jmapc asked for text values only: the HTML list is checked by type.
        let html_types: Vec<String> = html
            .iter()
            .map(|h| h.split(':').next().unwrap_or("").to_string())
            .collect();
        let got_html: Vec<String> = email["htmlBody"]
            .as_array()
            .expect("htmlBody")
            .iter()
            .map(|p| p["type"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(got_html, html_types, "jmapc: {email}");
        let got_attachments: Vec<String> = email["attachments"]
            .as_array()
            .expect("attachments")
            .iter()
            .map(|p| p["type"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(got_attachments, attachments, "jmapc: {email}");

        // The same as raw JSON, with the HTML values too.
        let answer = api(
            &gw,
            json!([["Email/get", {"accountId": account, "ids": [id],
                "properties": ["textBody", "htmlBody", "attachments", "bodyValues"],
                "fetchAllBodyValues": true}, "g"]]),
        );
        let email = &answer["methodResponses"][0][1]["list"][0];
        let values = &email["bodyValues"];
        assert_eq!(described(&email["textBody"], values), text, "raw: {email}");
        assert_eq!(described(&email["htmlBody"], values), html, "raw: {email}");
        assert_eq!(
            described(&email["attachments"], &json!({})),
            attachments,
            "raw: {email}"
        );
    }
    // What the webmail shows of the top-level alternative: its HTML alone, once.
    let (status, _, page) = curl_as_alice(
        &gw,
        &[],
        &format!("/webmail/html/{}", ids["top alternative"]),
    );
    let page = String::from_utf8_lossy(&page);
    assert_eq!(status, 200);
    assert!(
        page.contains("html words") && !page.contains("plain words"),
        "{page}"
    );
}

/// An HTML-only message of `html`.
fn html_message(subject: &str, html: &str) -> Vec<u8> {
    format!("From: m@client.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n").into_bytes()
}

/// Opens the webmail's HTML view of `id` on another thread while this one makes Email/get
/// requests of the same user, one after the other, until the open is answered. The open's
/// (seconds, document) and the slowest of the other requests, with how many were made while
/// the open was under way.
fn open_while_busy(gw: &Gateway, id: &str) -> (f64, String, Duration, usize) {
    let account = account_id(gw);
    let port = gw.jmap;
    let path = format!("/webmail/html/{id}");
    let opened = Instant::now();
    let open = std::thread::spawn(move || {
        let out = Command::new("curl")
            .args(["-sS", "-k", "--user", &format!("{ALICE}:{PASSWORD}")])
            .arg(format!("https://127.0.0.1:{port}{path}"))
            .output()
            .expect("curl");
        (
            opened.elapsed(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    });
    let (mut slowest, mut during) = (Duration::ZERO, 0);
    while !open.is_finished() {
        let started = Instant::now();
        let answer = api(gw, json!([["Email/query", {"accountId": account}, "q"]]));
        assert!(
            answer["methodResponses"][0][1]["ids"].is_array(),
            "{answer}"
        );
        slowest = slowest.max(started.elapsed());
        during += 1;
    }
    let (took, document) = open.join().expect("open");
    assert!(
        during > 0,
        "no request was made while the open was under way ({took:?})"
    );
    (took.as_secs_f64(), document, slowest, during)
}

#[test]
fn heavy_html_is_bounded_cached_and_never_holds_the_account() {
    let gw = Gateway::start("");
    let depth = 100_000;
    let deep = format!(
        "{}deep words{}",
        "<div>".repeat(depth),
        "</div>".repeat(depth)
    );
    gw.store_directly(ALICE, "1.deep:2,", &html_message("deep", &deep));
    // The variant: a large newsletter within every bound (60 000 elements, 2.6 MB), which
    // the sanitiser really works through.
    let rows: String = (0..20_000)
        .map(|i| format!("<p class=\"row\">row {i} <b>bold</b> <a href=\"https://example.org/{i}\">link</a></p>\n"))
        .collect();
    gw.store_directly(ALICE, "2.large:2,", &html_message("large", &rows));
    let ids = ids_by_subject(&gw);

    let (first, document, slowest, during) = open_while_busy(&gw, &ids["deep"]);
    assert!(
        document.contains("nested too deeply") && document.contains("deep words"),
        "the deep HTML shown as its text: {:.400}",
        document
    );
    assert!(!document.contains("<div>"), "{:.400}", document);
    assert!(
        slowest < Duration::from_secs(1),
        "another request waited {slowest:?}"
    );
    assert!(first < 5.0, "the deep message took {first} s to open");
    let (second, again, _, _) = open_while_busy(&gw, &ids["deep"]);
    assert_eq!(again, document);
    assert!(second < 1.0, "the second open took {second} s");
    eprintln!("deep: first open {first:.3} s, second {second:.3} s, other requests at most {slowest:?} ({during} during)");

    let (first, document, slowest, during) = open_while_busy(&gw, &ids["large"]);
    assert!(
        document.contains("row 19999 <b>bold</b>") && !document.contains("shown as text"),
        "the large HTML sanitised, not degraded: {:.400}",
        document
    );
    assert!(
        slowest < Duration::from_secs(1),
        "another request waited {slowest:?} ({during} made)"
    );
    let (second, again, _, _) = open_while_busy(&gw, &ids["large"]);
    assert_eq!(again, document);
    assert!(
        second < 1.0,
        "the second open took {second} s (first {first} s)"
    );
    eprintln!("large: first open {first:.3} s, second {second:.3} s, other requests at most {slowest:?} ({during} during)");
}

fn mailbox_names(gw: &Gateway) -> Vec<String> {
    let boxes = jmap_client(gw, ALICE, &["mailboxes"]);
    boxes
        .as_object()
        .expect("mailboxes")
        .values()
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_text_plain_post_is_refused_with_a_clear_error() {
    let gw = Gateway::start("");
    let account = account_id(&gw);
    let request = json!({
        "using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
        "methodCalls": [["Mailbox/set", {"accountId": account, "create": {"p": {"name": "Posted as text"}}}, "c"]],
    })
    .to_string();
    for kind in ["text/plain", "application/x-www-form-urlencoded"] {
        let (status, headers, body) = curl_as_alice(
            &gw,
            &[
                "-H",
                &format!("Content-Type: {kind}"),
                "--data-binary",
                &request,
            ],
            "/jmap/api/",
        );
        let body: Value = serde_json::from_slice(&body).expect("a problem document");
        assert_eq!(status, 400, "{headers}{body}");
        assert_eq!(body["type"], "urn:ietf:params:jmap:error:notJSON", "{body}");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("application/json") && d.contains(kind)),
            "{body}"
        );
    }
    // Another site's Origin is refused even with the right type.
    let (status, _, body) = curl_as_alice(
        &gw,
        &[
            "-H",
            "Content-Type: application/json",
            "-H",
            "Origin: https://evil.example",
            "--data-binary",
            &request,
        ],
        "/jmap/api/",
    );
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("cross-site"));
    assert!(!mailbox_names(&gw).iter().any(|n| n == "Posted as text"));
    // The same request as JSON is taken: the refusals above were for how it came.
    let answer = api(
        &gw,
        serde_json::from_str::<Value>(&request).expect("json")["methodCalls"].clone(),
    );
    assert!(
        answer["methodResponses"][0][1]["created"]["p"].is_object(),
        "{answer}"
    );

    // A browser is challenged for a bearer token (no Basic dialog to remember); API clients
    // still for Basic.
    let challenge = |extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "-k", "-o", "/dev/null", "-D", "-"])
            .args(extra)
            .arg(format!("https://127.0.0.1:{}/.well-known/jmap", gw.jmap))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    };
    assert!(challenge(&[]).contains("www-authenticate: basic"));
    let browser = challenge(&["-H", "Sec-Fetch-Mode: navigate", "-H", "Accept: text/html"]);
    assert!(
        browser.contains("www-authenticate: bearer") && !browser.contains("basic"),
        "{browser}"
    );
}

#[test]
fn a_cross_site_form_in_chromium_creates_no_mailbox() {
    let gw = Gateway::start("");
    gw.store_directly(ALICE, "1.top:2,", TOP_ALTERNATIVE.as_bytes());
    let id = ids_by_subject(&gw)["top alternative"].clone();
    let blob = format!("B{}", &id[1..]);
    let account = account_id(&gw);
    let out = Command::new(pyenv_python())
        .arg(root().join("tests/e2e/clients/csrf_browser.py"))
        .args([&gw.jmap.to_string(), ALICE, PASSWORD, &account, &blob])
        .arg(free_port().to_string())
        .output()
        .expect("target/pyenv/bin/python (made by cargo xtask test)");
    assert!(
        out.status.success(),
        "csrf_browser.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let responses = report["responses"].as_array().expect("responses");
    let status_of = |method: &str, path: &str| -> Vec<u64> {
        responses
            .iter()
            .filter(|r| {
                r["method"] == method && r["url"].as_str().is_some_and(|u| u.contains(path))
            })
            .filter_map(|r| r["status"].as_u64())
            .collect()
    };
    // The form's navigation: refused, and the page says why.
    assert!(
        report["landed"]
            .as_str()
            .is_some_and(|u| u.ends_with("/jmap/api/")),
        "{report}"
    );
    assert_eq!(
        status_of("POST", "/jmap/api/").last(),
        Some(&403),
        "{report}"
    );
    assert!(
        report["shown"]
            .as_str()
            .is_some_and(|t| t.contains("cross-site request refused")),
        "{report}"
    );
    // The upload and the type-less JSON sent with fetch (their answers are opaque to the
    // page, not to the browser's log), and the image load of a real blob: refused too.
    assert_eq!(status_of("POST", "/jmap/upload/"), vec![403], "{report}");
    assert_eq!(status_of("POST", "/jmap/api/").len(), 2, "{report}");
    assert_eq!(status_of("POST", "/jmap/api/")[0], 403, "{report}");
    assert_eq!(status_of("GET", "/jmap/download/"), vec![403], "{report}");
    // A page of the gateway opened with no credentials is not challenged for Basic.
    let first = &report["unauthenticated"][0];
    assert_eq!(first["status"], 401, "{report}");
    let challenge = first["headers"]["www-authenticate"].as_str().unwrap_or("");
    assert!(challenge.starts_with("Bearer"), "{report}");

    let names = mailbox_names(&gw);
    assert!(
        !names.iter().any(|n| n.starts_with("Forged")),
        "a forged request created a mailbox: {names:?}"
    );
}
