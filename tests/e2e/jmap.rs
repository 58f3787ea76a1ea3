//! JMAP with clients nobody here wrote: jmapc (PyPI) for the API and downloads, Python's
//! imaplib beside it on the same Maildir, requests for malformed and unauthenticated calls.

use std::time::{Duration, Instant};

use mailgate_e2e::peers::SmtpSink;
use mailgate_e2e::{jmap_client, probe_plugin, wait_until, Gateway};
use serde_json::{json, Value};

const ALICE: &str = "alice@example.test";
const FIRST: &str = "From: Ann <ann@client.test>\r\nTo: alice@example.test\r\nSubject: first\r\nMessage-ID: <first@client.test>\r\n\r\nHello there, this is the first.\r\n";
const SECOND: &str = "From: Bob <bob@client.test>\r\nTo: alice@example.test\r\nSubject: second\r\nMessage-ID: <second@client.test>\r\n\r\nAnd the second one.\r\n";

fn deliver(gw: &Gateway, to: &str, messages: &[&str]) {
    let data: Vec<String> = messages.iter().map(|m| m.to_string()).collect();
    gw.deliver_local(to, &data);
}

/// A folder of alice's as imaplib sees it.
fn imap_flags(gw: &Gateway, folder: &str, change: &[&str]) -> Vec<Value> {
    mailgate_e2e::imap_flags(gw, ALICE, folder, change)
}

fn strings(value: &Value) -> Vec<String> {
    let mut out: Vec<String> = match value {
        Value::Array(list) => list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Value::Object(map) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    out.sort();
    out
}

#[test]
fn jmapc_reads_mail_delivered_over_smtp() {
    let gw = Gateway::start("");
    deliver(&gw, ALICE, &[FIRST, SECOND]);
    let session = jmap_client(&gw, ALICE, &["session"]);
    assert_eq!(session["username"], ALICE);
    assert_eq!(
        strings(&session["urns"]),
        vec![
            "urn:ietf:params:jmap:core",
            "urn:ietf:params:jmap:mail",
            "urn:ietf:params:jmap:submission"
        ]
    );
    let boxes = jmap_client(&gw, ALICE, &["mailboxes"]);
    for role in ["inbox", "sent", "drafts", "trash", "junk", "archive"] {
        assert!(boxes[role]["id"].is_string(), "{role} in {boxes}");
    }
    assert_eq!(boxes["inbox"]["total"], 2);
    assert_eq!(boxes["inbox"]["unread"], 2);
    let inbox = jmap_client(&gw, ALICE, &["inbox"]);
    let emails = inbox["emails"].as_array().expect("emails");
    assert_eq!(emails.len(), 2, "{inbox}");
    let first = emails
        .iter()
        .find(|e| e["subject"] == "first")
        .expect("the first message");
    assert_eq!(
        first["from"],
        json!([{"name": "Ann", "email": "ann@client.test"}])
    );
    assert_eq!(first["preview"], "Hello there, this is the first.");
    assert_eq!(first["keywords"], json!({}));
    assert_eq!(
        first["mailboxIds"],
        json!({ inbox["inbox"].as_str().expect("id"): true })
    );
    let id = first["id"].as_str().expect("id");
    let whole = jmap_client(&gw, ALICE, &["download", id]);
    assert_eq!(whole["status"], 200);
    let stored = gw
        .mailbox(ALICE)
        .into_iter()
        .find(|m| m.contains("Subject: first"))
        .expect("stored");
    assert_eq!(whole["text"], stored, "the blob is the message as stored");
    assert_eq!(first["size"], stored.len());
    let part = jmap_client(&gw, ALICE, &["download", id, "0"]);
    assert_eq!(part["text"], "Hello there, this is the first.\r\n");
    let got = jmap_client(
        &gw,
        ALICE,
        &["get", id, "textBody", "bodyValues", "messageId"],
    );
    let email = &got["list"][0];
    assert_eq!(email["messageId"], json!(["first@client.test"]));
    let part_id = email["textBody"][0]["partId"].as_str().expect("part id");
    assert_eq!(
        email["bodyValues"][part_id]["value"],
        "Hello there, this is the first.\r\n"
    );
}

#[test]
fn keywords_and_mailboxes_agree_between_jmap_and_imap() {
    let gw = Gateway::start("");
    deliver(&gw, ALICE, &[FIRST]);
    let inbox = jmap_client(&gw, ALICE, &["inbox"]);
    let id = inbox["emails"][0]["id"].as_str().expect("id").to_string();
    let before = inbox["state"].as_str().expect("state").to_string();

    let set = jmap_client(&gw, ALICE, &["keywords", &id, "$seen=on", "$flagged=on"]);
    assert_eq!(set["updated"], json!([id]), "{set}");
    let seen = imap_flags(&gw, "INBOX", &[]);
    assert_eq!(seen.len(), 1);
    assert_eq!(strings(&seen[0]["flags"]), vec!["\\Flagged", "\\Seen"]);

    let uid = seen[0]["uid"].to_string();
    imap_flags(&gw, "INBOX", &[&uid, "-FLAGS", "(\\Flagged)"]);
    imap_flags(&gw, "INBOX", &[&uid, "+FLAGS", "(\\Answered $Label1)"]);
    let got = jmap_client(&gw, ALICE, &["get", &id, "keywords"]);
    assert_eq!(
        strings(&got["list"][0]["keywords"]),
        vec!["$answered", "$label1", "$seen"],
        "IMAP's changes as JMAP keywords"
    );
    let changes = jmap_client(&gw, ALICE, &["changes", &before]);
    assert_eq!(changes["updated"], json!([id]), "{changes}");
    assert_ne!(changes["new_state"], json!(before));

    let moved = jmap_client(&gw, ALICE, &["move", &id, "archive"]);
    assert_eq!(moved["updated"], json!([id]), "{moved}");
    assert_eq!(imap_flags(&gw, "INBOX", &[]), Vec::<Value>::new());
    let archived = imap_flags(&gw, "Archive", &[]);
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0]["subject"], "first");
    assert!(
        strings(&archived[0]["flags"]).contains(&"\\Seen".to_string()),
        "{archived:?}"
    );
    let boxes = jmap_client(&gw, ALICE, &["mailboxes"]);
    let got = jmap_client(&gw, ALICE, &["get", &id, "mailboxIds"]);
    assert_eq!(
        got["list"][0]["mailboxIds"],
        json!({ boxes["archive"]["id"].as_str().expect("id"): true }),
        "the same id after the move"
    );

    let state = jmap_client(&gw, ALICE, &["state"]);
    deliver(&gw, ALICE, &[SECOND]);
    let changes = jmap_client(&gw, ALICE, &["changes", state.as_str().expect("state")]);
    assert_eq!(
        changes["created"].as_array().map(Vec::len),
        Some(1),
        "{changes}"
    );

    let destroyed = jmap_client(&gw, ALICE, &["destroy", &id]);
    assert_eq!(destroyed["destroyed"], json!([id]));
    assert_eq!(imap_flags(&gw, "Archive", &[]), Vec::<Value>::new());
}

#[test]
fn ids_survive_a_restart() {
    let mut gw = Gateway::start("");
    deliver(&gw, ALICE, &[FIRST, SECOND]);
    let before = jmap_client(&gw, ALICE, &["inbox"]);
    let boxes = jmap_client(&gw, ALICE, &["mailboxes"]);
    gw.stop();
    gw.launch();
    let after = jmap_client(&gw, ALICE, &["inbox"]);
    assert_eq!(strings(&before["ids"]), strings(&after["ids"]));
    assert_eq!(boxes, jmap_client(&gw, ALICE, &["mailboxes"]));
}

/// Posts `body` to the API as `auth` (`user:password`, or `-:` for no credentials).
fn raw(gw: &Gateway, body: &str, auth: Option<&str>) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("request.json");
    std::fs::write(&file, body).expect("write");
    let path = file.to_string_lossy().into_owned();
    let mut args = vec!["raw", path.as_str()];
    args.extend(auth);
    jmap_client(gw, ALICE, &args)
}

fn request(calls: Value) -> String {
    json!({"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"], "methodCalls": calls})
        .to_string()
}

#[test]
fn malformed_requests_get_the_rfc_errors() {
    let gw = Gateway::start("");
    deliver(&gw, ALICE, &[FIRST]);
    let problem = |body: &str| {
        let answer = raw(&gw, body, None);
        assert_eq!(answer["status"], 400, "{answer}");
        assert_eq!(answer["content_type"], "application/problem+json");
        answer["body"].clone()
    };
    let kind = |body: &str| problem(body)["type"].as_str().unwrap_or("").to_string();
    assert_eq!(kind("{not json"), "urn:ietf:params:jmap:error:notJSON");
    assert_eq!(
        kind(r#"{"using":[],"methodCalls":"x"}"#),
        "urn:ietf:params:jmap:error:notRequest"
    );
    assert_eq!(
        kind(r#"{"using":["urn:example:nope"],"methodCalls":[]}"#),
        "urn:ietf:params:jmap:error:unknownCapability"
    );
    let many: Vec<Value> = (0..40)
        .map(|i| json!(["Core/echo", {}, i.to_string()]))
        .collect();
    let limit = problem(&request(json!(many)));
    assert_eq!(limit["type"], "urn:ietf:params:jmap:error:limit");
    assert_eq!(limit["limit"], "maxCallsInRequest");
    let huge = format!(
        r#"{{"using":[],"methodCalls":[["Core/echo",{{"x":"{}"}},"a"]]}}"#,
        "x".repeat(11 << 20)
    );
    assert_eq!(problem(&huge)["limit"], "maxSizeRequest");

    let session = jmap_client(&gw, ALICE, &["session"]);
    let account = session["account_id"].as_str().expect("account");
    let answer = raw(
        &gw,
        &request(json!([
            ["Foo/bar", {}, "c0"],
            ["Email/query", {"accountId": account}, "c1"],
            ["Email/get", {"accountId": account, "#ids": {"resultOf": "c1", "name": "Mailbox/get", "path": "/ids"}}, "c2"],
            ["Email/get", {"accountId": "uSomebodyElse"}, "c3"],
            ["Email/get", {"accountId": account, "ids": vec!["x"; 1001]}, "c4"],
            ["Email/query", {"accountId": account, "sort": [{"property": "colour"}]}, "c5"],
            ["Email/changes", {"accountId": account, "sinceState": "bogus"}, "c6"],
            ["Email/get", {"accountId": account, "#ids": {"resultOf": "c1", "name": "Email/query", "path": "/ids"}, "properties": ["subject"]}, "c7"],
        ])),
        None,
    );
    assert_eq!(answer["status"], 200, "{answer}");
    let responses = answer["body"]["methodResponses"]
        .as_array()
        .expect("responses");
    let error = |i: usize| {
        assert_eq!(responses[i][0], "error", "{}", responses[i]);
        responses[i][1]["type"].as_str().unwrap_or("").to_string()
    };
    assert_eq!(error(0), "unknownMethod");
    assert_eq!(error(2), "invalidResultReference");
    assert_eq!(error(3), "accountNotFound");
    assert_eq!(error(4), "requestTooLarge");
    assert_eq!(error(5), "unsupportedSort");
    assert_eq!(error(6), "cannotCalculateChanges");
    assert_eq!(responses[7][0], "Email/get", "later calls go on");
    assert_eq!(responses[7][1]["list"][0]["subject"], "first");
}

#[test]
fn logins_are_checked_and_slowed_and_blobs_stay_with_their_owner() {
    let gw = Gateway::start("");
    deliver(&gw, "bob@example.test", &[FIRST]);
    let body = request(json!([["Core/echo", {"a": 1}, "e"]]));
    let anonymous = raw(&gw, &body, Some("-:"));
    assert_eq!(anonymous["status"], 401);
    let started = Instant::now();
    let wrong = raw(&gw, &body, Some("alice@example.test:wrong"));
    assert_eq!(wrong["status"], 401);
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "a failed login waits (limits.auth-failure-delay-ms): {:?}",
        started.elapsed()
    );
    let echo = raw(&gw, &body, None);
    assert_eq!(
        echo["body"]["methodResponses"][0],
        json!(["Core/echo", {"a": 1}, "e"])
    );

    let bobs = jmap_client(&gw, "bob@example.test", &["inbox"]);
    let bob_email = bobs["emails"][0]["id"].as_str().expect("bob's email");
    let stolen = jmap_client(&gw, ALICE, &["download", bob_email]);
    assert_eq!(stolen["status"], 404, "another user's blob is not found");
    let got = jmap_client(&gw, ALICE, &["get", bob_email, "subject"]);
    assert_eq!(got["not_found"], json!([bob_email]));
}

#[test]
fn the_retrieve_stage_hides_and_edits_what_jmap_serves() {
    let viewer = |action: &str| {
        probe_plugin(
            "viewer",
            "retrieve",
            &format!("action.retrieve = \"{action}\""),
        )
    };
    let hide = Gateway::start(&viewer("hide"));
    deliver(&hide, ALICE, &[FIRST]);
    let inbox = jmap_client(&hide, ALICE, &["inbox"]);
    assert_eq!(inbox["emails"], json!([]), "hidden messages are absent");
    assert_eq!(
        jmap_client(&hide, ALICE, &["mailboxes"])["inbox"]["total"],
        0
    );

    let tag = Gateway::start(&viewer("tag"));
    deliver(&tag, ALICE, &[FIRST]);
    let stored = tag.mailbox(ALICE);
    let inbox = jmap_client(&tag, ALICE, &["inbox"]);
    let email = &inbox["emails"][0];
    let id = email["id"].as_str().expect("id");
    let served = jmap_client(&tag, ALICE, &["download", id]);
    let text = served["text"].as_str().expect("text");
    assert!(text.contains("X-Probe: viewer\r\n"), "{text}");
    assert_eq!(email["size"], text.len(), "the size of what is served");
    assert_eq!(tag.mailbox(ALICE), stored, "the stored file is unchanged");
}

#[test]
fn a_submission_reaches_a_local_maildir_and_a_relay_sink_through_the_smtp_stages() {
    let sink = SmtpSink::start();
    let route = format!(
        "[[route]]\ndomains = [\"remote.test\"]\ntype = \"relay\"\nhost = \"127.0.0.1:{}\"\ntls = \"none\"\n",
        sink.port
    );
    let gw = Gateway::start(&route);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "attached notes\n").expect("write");
    let out = jmap_client(
        &gw,
        ALICE,
        &[
            "send",
            "bob@example.test,dave@remote.test",
            "Over JMAP",
            "Hello Bob and Dave.",
            &file.to_string_lossy(),
        ],
    );
    assert_eq!(out[1]["method"], "EmailSubmissionSetResponse", "{out}");
    assert!(
        out[1]["response"]["created"]["send"]["id"].is_string(),
        "{out}"
    );
    assert_eq!(
        out[2]["method"], "EmailSetResponse",
        "the implicit Email/set: {out}"
    );

    let bob = "bob@example.test";
    assert!(
        wait_until(10, || gw
            .mailbox(bob)
            .iter()
            .any(|m| m.contains("Subject: Over JMAP"))),
        "nothing reached bob: {}",
        gw.log()
    );
    let received = gw
        .mailbox(bob)
        .into_iter()
        .find(|m| m.contains("Subject: Over JMAP"))
        .expect("bob's copy");
    assert!(received.contains("Hello Bob and Dave."), "{received}");
    assert!(received.contains("filename=\"notes.txt\""), "{received}");
    assert!(received.contains("attached notes"), "{received}");
    assert!(
        received.contains("From: Test Sender <alice@example.test>"),
        "{received}"
    );
    assert!(
        wait_until(10, || sink
            .messages()
            .iter()
            .any(|m| m.contains("Subject: Over JMAP"))),
        "nothing reached the relay sink: {}",
        gw.log()
    );
    // The SMTP session it went through is on the `jmap` listener, authenticated.
    let queue_id = received
        .split("with ESMTPSA id ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_hexdigit()).next())
        .expect("the queue id in our Received field");
    // (The journal is written behind the session: wait for it.)
    let mut trace = String::new();
    let traced = wait_until(10, || {
        trace = gw.cli(&["trace", queue_id]).stdout;
        trace.contains("RCPT TO:<dave@remote.test>")
    });
    assert!(traced, "{trace}");
    assert!(trace.contains("on jmap, TLS"), "{trace}");

    let sent = imap_flags(&gw, "Sent", &[]);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["subject"], "Over JMAP");
    assert_eq!(
        strings(&sent[0]["flags"]),
        vec!["\\Seen"],
        "$draft removed on success"
    );
    assert_eq!(imap_flags(&gw, "Drafts", &[]), Vec::<Value>::new());
}

#[test]
fn a_message_file_is_imported_into_a_mailbox() {
    let gw = Gateway::start("");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("old.eml");
    std::fs::write(&file, SECOND).expect("write");
    let out = jmap_client(&gw, ALICE, &["import", &file.to_string_lossy(), "archive"]);
    assert_eq!(out[0], "Email/import", "{out}");
    let id = out[1]["created"]["one"]["id"].as_str().expect("created id");
    let archived = imap_flags(&gw, "Archive", &[]);
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0]["subject"], "second");
    assert_eq!(strings(&archived[0]["flags"]), vec!["\\Seen"]);
    let got = jmap_client(&gw, ALICE, &["get", id, "subject", "keywords"]);
    assert_eq!(got["list"][0]["subject"], "second");
}

#[test]
fn an_smtp_delivery_is_pushed_to_the_event_source() {
    let gw = Gateway::start("");
    let out = jmap_client(&gw, ALICE, &["push", &gw.inbound.to_string()]);
    let account = jmap_client(&gw, ALICE, &["session"])["account_id"].clone();
    let changed = &out["changed"][account.as_str().expect("account")];
    let email_state = changed["Email"]
        .as_str()
        .expect("an Email state in the event");
    assert_ne!(
        email_state,
        out["before"].as_str().expect("state before"),
        "{out}"
    );
    assert_eq!(
        email_state,
        jmap_client(&gw, ALICE, &["state"]).as_str().expect("state"),
        "the pushed state is the state Email/get gives now"
    );
}

#[test]
fn mailboxes_are_created_renamed_and_destroyed_as_maildir_folders() {
    let gw = Gateway::start("");
    let account = jmap_client(&gw, ALICE, &["session"])["account_id"]
        .as_str()
        .expect("account")
        .to_string();
    let maildir = gw.data().join("mail/example.test/alice");
    let set = |args: Value| {
        let mut args = args;
        args["accountId"] = account.clone().into();
        let answer = raw(&gw, &request(json!([["Mailbox/set", args, "s"]])), None);
        answer["body"]["methodResponses"][0][1].clone()
    };
    let created = set(json!({"create": {
        "p": {"name": "Projects"},
        "c": {"name": "2026", "parentId": "#p"},
        "bad": {"name": "a/b"},
    }}));
    let projects = created["created"]["p"]["id"]
        .as_str()
        .expect("created")
        .to_string();
    let child = created["created"]["c"]["id"]
        .as_str()
        .expect("child")
        .to_string();
    assert_eq!(
        created["notCreated"]["bad"]["type"], "invalidProperties",
        "{created}"
    );
    assert!(maildir.join(".Projects/cur").is_dir() && maildir.join(".Projects.2026/cur").is_dir());

    let refused = set(json!({"destroy": [projects]}));
    assert_eq!(
        refused["notDestroyed"][&projects]["type"], "mailboxHasChild",
        "{refused}"
    );
    let renamed = set(json!({"update": {child.clone(): {"name": "Done"}}}));
    assert_eq!(
        renamed["updated"],
        json!({ child.clone(): null }),
        "{renamed}"
    );
    assert!(maildir.join(".Projects.Done/cur").is_dir());
    let boxes = jmap_client(&gw, ALICE, &["mailboxes"]);
    assert_eq!(
        boxes["Done"]["id"],
        json!(child),
        "a rename keeps the id: {boxes}"
    );

    let gone = set(json!({"destroy": [child.clone(), projects.clone()]}));
    assert_eq!(gone["destroyed"], json!([child, projects]), "{gone}");
    assert!(!maildir.join(".Projects").exists() && !maildir.join(".Projects.Done").exists());
    let inbox = jmap_client(&gw, ALICE, &["mailboxes"])["inbox"]["id"].clone();
    let kept = set(json!({"destroy": [inbox.clone()]}));
    assert_eq!(
        kept["notDestroyed"][inbox.as_str().expect("id")]["type"],
        "forbidden"
    );
}
