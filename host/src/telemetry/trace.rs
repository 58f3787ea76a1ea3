//! `mailgate trace`: one message's journey told from the journal — the session that brought
//! it, each command with each plugin's verdict, edits and time and the reply the client got,
//! then each delivery attempt with the remote replies, and the final disposition.

use std::fmt::Write;

use super::journal::{Event, Record, StageTrace};

/// What to trace.
pub enum Query {
    /// A queue id (from `250 Ok: queued as …`) or a session id (from the logs).
    Id(String),
    /// Recent transactions that named this recipient, accepted or not.
    Recipient(String),
}

/// Transactions shown at most for a recipient query (the most recent).
const MAX_TRANSACTIONS: usize = 10;

/// The trace text, or why there is none.
pub fn trace(records: &[Record], query: &Query) -> Result<String, String> {
    match query {
        // Both kinds are hex: a queue id is tried first, being the longer and unique one.
        Query::Id(id) if records.iter().any(|r| r.queue == *id) => message(records, id),
        Query::Id(id) => session(records, id),
        Query::Recipient(address) => recipient(records, address),
    }
}

/// A transaction of a session: (boot, session, tx).
type TransactionKey = (u64, String, u32);

fn message(records: &[Record], queue_id: &str) -> Result<String, String> {
    let mine: Vec<&Record> = records.iter().filter(|r| r.queue == queue_id).collect();
    let mut out = format!("message {queue_id}\n");
    match mine
        .iter()
        .find(|r| matches!(r.event, Event::Accepted { .. }))
    {
        Some(queued) if !queued.session.is_empty() => {
            let key = (queued.boot, queued.session.clone(), queued.tx);
            write_transaction(&mut out, records, &key);
        }
        _ => out.push_str("  (no session: made by the gateway, e.g. a bounce)\n"),
    }
    write_queue_part(&mut out, records, queue_id);
    Ok(out)
}

fn session(records: &[Record], id: &str) -> Result<String, String> {
    // Session ids start again from 1 with each server start: the latest one with this id.
    let boot = records
        .iter()
        .filter(|r| r.session == id)
        .map(|r| r.boot)
        .max()
        .ok_or_else(|| format!("no message or session {id} in the journal"))?;
    let mut transactions: Vec<u32> = records
        .iter()
        .filter(|r| r.boot == boot && r.session == id && r.tx > 0)
        .map(|r| r.tx)
        .collect();
    transactions.dedup();
    let mut out = String::new();
    if transactions.is_empty() {
        write_transaction(&mut out, records, &(boot, id.to_string(), 0));
    }
    for tx in transactions {
        write_transaction(&mut out, records, &(boot, id.to_string(), tx));
        if let Some(queue) = queued_id(records, &(boot, id.to_string(), tx)) {
            write_queue_part(&mut out, records, &queue);
        }
    }
    Ok(out)
}

fn recipient(records: &[Record], address: &str) -> Result<String, String> {
    let needle = format!("<{}>", address.to_ascii_lowercase());
    let mut keys: Vec<TransactionKey> = Vec::new();
    for r in records {
        if let Event::Command { command, .. } = &r.event {
            let key = (r.boot, r.session.clone(), r.tx);
            if command.to_ascii_lowercase().contains(&needle) && !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    if keys.is_empty() {
        return Err(format!("no transaction for {address} in the journal"));
    }
    let mut out = String::new();
    for key in &keys[keys.len().saturating_sub(MAX_TRANSACTIONS)..] {
        write_transaction(&mut out, records, key);
        if let Some(queue) = queued_id(records, key) {
            write_queue_part(&mut out, records, &queue);
        }
        out.push('\n');
    }
    Ok(out)
}

fn queued_id(records: &[Record], key: &TransactionKey) -> Option<String> {
    records
        .iter()
        .find(|r| {
            matches!(r.event, Event::Accepted { .. })
                && (r.boot, r.session.as_str(), r.tx) == (key.0, key.1.as_str(), key.2)
        })
        .map(|r| r.queue.clone())
}

/// The session's connection, its commands before the first transaction (HELO...), and the
/// commands of transaction `tx`.
fn write_transaction(out: &mut String, records: &[Record], key: &TransactionKey) {
    let (boot, session, tx) = key;
    let of_session = records
        .iter()
        .filter(|r| r.boot == *boot && r.session == *session);
    let _ = writeln!(out, "session {session}");
    for r in of_session {
        match &r.event {
            Event::Connect {
                peer,
                listener,
                tls,
            } => {
                let tls = if *tls { ", TLS" } else { "" };
                let _ = writeln!(
                    out,
                    "  {}  connect from {peer} on {listener}{tls}",
                    time(r.t)
                );
            }
            Event::Command {
                command,
                reply,
                stage,
            } if r.tx == 0 || r.tx == *tx => {
                let _ = writeln!(out, "  {}  {command}", time(r.t));
                if let Some(stage) = stage {
                    write_stage(out, stage);
                }
                let _ = writeln!(out, "  {:<23}  -> {reply}", "");
            }
            Event::Accepted {
                sender,
                recipients,
                size,
                authentication,
                dsn,
            } if r.tx == *tx => {
                let _ = writeln!(
                    out,
                    "  {}  accepted as {}: from <{sender}> to {}, {size} bytes",
                    time(r.t),
                    r.queue,
                    recipients
                        .iter()
                        .map(|r| format!("<{r}>"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if let Some(authentication) = authentication {
                    let _ = writeln!(out, "  {:<23}  authentication: {authentication}", "");
                }
                for line in dsn {
                    let _ = writeln!(out, "  {:<23}  dsn {line}", "");
                }
            }
            _ => {}
        }
    }
}

/// What the queue did with the message: deliver stage, attempts, local delivery, the end.
fn write_queue_part(out: &mut String, records: &[Record], queue_id: &str) {
    let mut done = false;
    for r in records.iter().filter(|r| r.queue == queue_id) {
        match &r.event {
            Event::Deliver { stage } => {
                let _ = writeln!(out, "  {}  deliver stage", time(r.t));
                write_stage(out, stage);
            }
            Event::Attempt {
                attempt,
                destination,
                results,
            } => {
                let _ = writeln!(
                    out,
                    "  {}  delivery attempt {attempt} to {destination}",
                    time(r.t)
                );
                for result in results {
                    let _ = writeln!(
                        out,
                        "  {:<23}    <{}> {}: {}",
                        "", result.rcpt, result.result, result.text
                    );
                }
            }
            Event::Bounced { bounce } => {
                let _ = writeln!(out, "  {}  bounce queued as {bounce}", time(r.t));
            }
            Event::Local { mailboxes } => {
                let _ = writeln!(
                    out,
                    "  {}  delivered to {mailboxes} local mailbox(es)",
                    time(r.t)
                );
            }
            Event::Disposition { outcome, detail } => {
                done = true;
                let detail = if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                };
                let _ = writeln!(out, "  {}  {outcome}{detail}", time(r.t));
            }
            _ => {}
        }
    }
    if !done {
        let _ = writeln!(
            out,
            "  (still in the queue, or its end is not journalled yet)"
        );
    }
}

fn write_stage(out: &mut String, stage: &StageTrace) {
    for run in &stage.runs {
        let reply = run
            .reply
            .as_ref()
            .map(|r| format!(" {r}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<23}    {:<20} {}{reply} ({} us)",
            "", run.plugin, run.verdict, run.micros
        );
        if let Some(fault) = &run.fault {
            write_fault(out, fault);
        }
        for edit in &run.edits {
            let _ = writeln!(out, "  {:<23}    {:<20}   edit: {edit}", "", "");
        }
    }
    if let Some(by) = &stage.decided_by {
        let _ = writeln!(
            out,
            "  {:<23}    {} stage: {} by {by}",
            "", stage.stage, stage.decision
        );
    }
}

/// A fault whole, as the log has it: the cause, then the plugin's own words (its stderr: a
/// panic message, a Python traceback, a JavaScript exception) and the wasm frames, indented.
fn write_fault(out: &mut String, fault: &str) {
    let mut lines = fault.lines();
    let first = lines.next().unwrap_or("");
    let _ = writeln!(out, "  {:<23}    {:<20}   fault: {first}", "", "");
    for line in lines {
        let _ = writeln!(out, "  {:<23}    {:<20}     {line}", "", "");
    }
}

/// `2026-11-25 23:43:19.123` (UTC).
fn time(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| {
            let naive = t.naive_utc();
            let text = naive.to_string();
            // Milliseconds, not nanoseconds.
            match text.split_once('.') {
                Some((whole, fraction)) => format!("{whole}.{:.3}", fraction),
                None => format!("{text}.000"),
            }
        },
    )
}

#[cfg(test)]
mod fault_tests {
    use super::write_fault;

    #[test]
    fn a_fault_keeps_the_plugins_own_words() {
        let mut out = String::new();
        write_fault(
            &mut out,
            "trap: wasm `unreachable` instruction executed\nplugin stderr:\n  Traceback (most recent call last):\n  TypeError: RcptTo.handle returned None",
        );
        assert!(
            out.contains("fault: trap: wasm `unreachable` instruction executed\n"),
            "{out}"
        );
        assert!(out.contains("plugin stderr:\n"), "{out}");
        assert!(
            out.trim_end()
                .ends_with("TypeError: RcptTo.handle returned None"),
            "{out}"
        );
    }
}
