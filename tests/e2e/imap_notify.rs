//! IMAP NOTIFY (RFC 5465) with Python's imaplib as the client (clients/imap_notify.py): what a
//! watching session is told with no command outstanding — between commands and during IDLE —
//! when mail arrives by SMTP, when a second IMAP session appends, flags, expunges, creates,
//! subscribes and deletes; SELECTED-DELAYED; refusals; and a client that stops reading, which
//! is told NOTIFICATIONOVERFLOW while the server's memory stays bounded.

use mailgate_e2e::{python, Gateway};
use serde_json::Value;

const USER: &str = "alice@example.test";
const PASSWORD: &str = "pw-alice";

/// Runs one scenario of imap_notify.py against `gw`; its JSON report.
fn scenario(gw: &Gateway, name: &str, extra: &[&str]) -> Value {
    let imaps = gw.imaps.to_string();
    let smtp = gw.inbound.to_string();
    let mut args = vec![name, imaps.as_str(), smtp.as_str(), USER, PASSWORD];
    args.extend_from_slice(extra);
    let out = python("imap_notify.py", &args);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The lines of a step, as strings.
fn lines(report: &Value, step: &str) -> Vec<String> {
    let value = &report[step];
    let list = match value.as_array() {
        // `command` steps are [untagged lines, tagged line].
        Some(pair) if pair.len() == 2 && pair[1].is_string() && pair[0].is_array() => {
            let mut all: Vec<Value> = pair[0].as_array().cloned().unwrap_or_default();
            all.push(pair[1].clone());
            all
        }
        Some(list) => list.clone(),
        None => vec![value.clone()],
    };
    list.iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn has(report: &Value, step: &str, words: &[&str]) -> bool {
    lines(report, step)
        .iter()
        .any(|l| words.iter().all(|w| l.contains(w)))
}

#[test]
fn notify_tells_deliveries_appends_flags_and_expunges_as_they_happen() {
    let gw = Gateway::start("");
    let r = scenario(&gw, "events", &[]);
    let show = || serde_json::to_string_pretty(&r).unwrap_or_default();
    // NOTIFY SET STATUS: the other mailbox's STATUS before the tagged OK.
    assert!(
        has(&r, "set", &["* STATUS", "Lists", "MESSAGES 0", "UIDNEXT 1"]),
        "{}",
        show()
    );
    assert!(has(&r, "set", &["OK"]), "{}", show());
    // Mail delivered by SMTP to the selected mailbox: EXISTS, then the FETCH asked for.
    assert!(has(&r, "smtp", &["* 1 EXISTS"]), "{}", show());
    assert!(
        has(&r, "smtp", &["* 1 FETCH", "UID 1", "first by smtp"]),
        "{}",
        show()
    );
    // An APPEND elsewhere by another session: STATUS of that mailbox.
    assert!(
        has(
            &r,
            "append_elsewhere",
            &["* STATUS", "Lists", "MESSAGES 1", "UIDNEXT 2"]
        ),
        "{}",
        show()
    );
    // FlagChange: FETCH with UID and FLAGS (RFC 5465 §5.1).
    assert!(
        has(&r, "flag_elsewhere", &["* 1 FETCH", "UID 1", "\\Flagged"]),
        "{}",
        show()
    );
    assert!(has(&r, "expunge_elsewhere", &["* 1 EXPUNGE"]), "{}", show());
    // During IDLE, the same.
    assert!(
        lines(&r, "idle_start")
            .first()
            .is_some_and(|l| l.starts_with('+')),
        "{}",
        show()
    );
    assert!(
        has(&r, "idle_smtp", &["FETCH", "second by smtp"]),
        "{}",
        show()
    );
    assert!(
        has(
            &r,
            "idle_append_elsewhere",
            &["* STATUS", "Lists", "MESSAGES 2"]
        ),
        "{}",
        show()
    );
    assert!(has(&r, "idle_done", &["OK"]), "{}", show());
    // Refusals: NO [BADEVENT (supported events)], BAD for MessageNew without MessageExpunge.
    assert!(
        has(&r, "badevent", &["NO [BADEVENT (MessageNew MessageExpunge"]),
        "{}",
        show()
    );
    assert!(
        lines(&r, "bad").last().is_some_and(|l| l.contains(" BAD ")),
        "{}",
        show()
    );
    // After NOTIFY NONE nothing comes unasked; NOOP still tells the new message.
    assert!(has(&r, "none", &["OK"]), "{}", show());
    assert!(lines(&r, "after_none").is_empty(), "{}", show());
    assert!(has(&r, "noop_after_none", &["EXISTS"]), "{}", show());
}

#[test]
fn notify_tells_mailboxes_made_subscribed_and_removed_by_another_session() {
    let gw = Gateway::start("");
    let r = scenario(&gw, "names", &[]);
    let show = || serde_json::to_string_pretty(&r).unwrap_or_default();
    assert!(has(&r, "set", &["OK"]), "{}", show());
    assert!(
        has(
            &r,
            "created",
            &["* LIST (\\HasNoChildren) \"/\" \"Projects\""]
        ),
        "{}",
        show()
    );
    assert!(
        has(
            &r,
            "subscribed",
            &["* LIST (\\Subscribed) \"/\" \"Projects\""]
        ),
        "{}",
        show()
    );
    assert!(
        has(
            &r,
            "deleted",
            &["* LIST (\\NonExistent) \"/\" \"Projects\""]
        ),
        "{}",
        show()
    );
}

/// The variant: SELECTED-DELAYED holds an expunge back until a command that allows it (NOOP),
/// while a new message is told at once.
#[test]
fn selected_delayed_holds_expunges_until_noop() {
    let gw = Gateway::start("");
    let r = scenario(&gw, "delayed", &[]);
    let show = || serde_json::to_string_pretty(&r).unwrap_or_default();
    assert!(has(&r, "set", &["OK"]), "{}", show());
    assert!(lines(&r, "expunge_unsolicited").is_empty(), "{}", show());
    // The expunged message still counts: the new one is the second.
    assert!(has(&r, "new_unsolicited", &["* 2 EXISTS"]), "{}", show());
    assert!(has(&r, "noop", &["* 1 EXPUNGE"]), "{}", show());
}

/// A client that stops reading while 48 messages of 512 KiB arrive, each asked for three times
/// over (72 MiB of FETCH): after STALL (10 s) without taking anything it is told
/// NOTIFICATIONOVERFLOW, having been sent only part of them; the session goes on without
/// notifications; the server holds far less than what was asked for meanwhile. (The client's
/// 14 s without reading is the behaviour under test, not a wait for something.)
#[test]
fn a_client_that_stops_reading_gets_notificationoverflow_and_memory_stays_bounded() {
    let gw = Gateway::start("");
    let before = gw.rss_kib();
    let r = std::thread::scope(|s| {
        let run = s.spawn(|| scenario(&gw, "overflow", &["48", "524288", "14"]));
        // Peak memory while the client does not read (sampled until the scenario ends).
        let mut peak = 0;
        while !run.is_finished() {
            peak = peak.max(gw.rss_kib());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let report = run.join().expect("scenario");
        (report, peak)
    });
    let (r, peak) = r;
    let show = || serde_json::to_string_pretty(&r).unwrap_or_default();
    assert!(
        r["set"].as_str().is_some_and(|l| l.starts_with("c OK")),
        "{}",
        show()
    );
    assert!(
        r["overflow"]
            .as_str()
            .is_some_and(|l| l.starts_with("* OK [NOTIFICATIONOVERFLOW]")),
        "{}",
        show()
    );
    let fetched = r["fetches_before_overflow"].as_u64().unwrap_or(u64::MAX);
    assert!(fetched < 48, "all 48 were sent: {}", show());
    assert!(
        r["noop"].as_str().is_some_and(|l| l.starts_with("d OK")),
        "{}",
        show()
    );
    assert_eq!(r["after_overflow"], serde_json::json!([]), "{}", show());
    assert!(has(&r, "noop_after", &["EXISTS"]), "{}", show());
    // 72 MiB were asked for; the session queues at most QUEUE (256 KiB) plus one message's
    // response ahead of the socket. Most of the growth is the 24 MiB of APPENDs' own work.
    let grown = peak.saturating_sub(before);
    eprintln!("RSS before {before} KiB, peak {peak} KiB, grown {grown} KiB");
    assert!(grown < 36 * 1024, "grew {grown} KiB: {}", show());
}
