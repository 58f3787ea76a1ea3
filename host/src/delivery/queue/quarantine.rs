//! Messages a plugin set aside: `<data>/quarantine/ID.eml` (the message, below an
//! `X-Mailgate-Quarantine` field with the reason) and, beside it, `ID.json`: the envelope and
//! who decided, written before the message is acknowledged. Both files are owner-only.
//! Files from before the envelope was kept have no `ID.json`: they are listed with the
//! envelope unknown, and can be deleted but not released.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spool::QueuedEnvelope;
use crate::mail::EsmtpParam;

/// The field put on top of a quarantined message.
const REASON_FIELD: &str = "X-Mailgate-Quarantine:";

/// Largest envelope file read back (a few thousand recipients with their parameters).
const MAX_ENVELOPE_BYTES: u64 = 4 << 20;

/// The envelope of a quarantined message, and why it is there (`ID.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The queue id the message was accepted under (`250 Ok: queued as ID`).
    pub queue_id: String,
    /// Empty for the null sender.
    pub sender: String,
    /// MAIL FROM's ESMTP parameters, as the client wrote them (`BODY=8BITMIME`).
    #[serde(default)]
    pub mail_params: Vec<String>,
    pub recipients: Vec<Recipient>,
    pub client_ip: String,
    pub helo: String,
    #[serde(default)]
    pub auth_user: Option<String>,
    /// Unix seconds when the message was accepted, and when it was set aside.
    pub received_at: u64,
    pub quarantined_at: u64,
    /// `data` or `deliver`.
    pub stage: String,
    /// The plugin whose verdict it was, and its reason.
    pub plugin: String,
    pub reason: String,
    #[serde(default)]
    pub smtputf8: bool,
    #[serde(default)]
    pub binary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    /// RCPT TO's ESMTP parameters (none for a recipient a plugin added).
    #[serde(default)]
    pub params: Vec<String>,
}

/// The parameters of words kept by [`param_words`].
fn params_of(words: &[String]) -> Vec<EsmtpParam> {
    words
        .iter()
        .map(|word| match word.split_once('=') {
            Some((name, value)) => EsmtpParam {
                name: name.to_string(),
                value: Some(value.to_string()),
            },
            None => EsmtpParam {
                name: word.clone(),
                value: None,
            },
        })
        .collect()
}

/// The delivery status notifications a released message's sender and recipients asked for,
/// from the parameters kept with it (they were checked when the message came in; any that no
/// longer parse are left out).
fn dsn_of(kept: &Envelope) -> crate::mail::dsn::EnvelopeDsn {
    use crate::mail::dsn;
    let (ret, envid) = dsn::mail_params(&params_of(&kept.mail_params)).unwrap_or_default();
    let recipients = kept
        .recipients
        .iter()
        .filter_map(|r| {
            let asked = dsn::rcpt_params(&params_of(&r.params)).ok()?;
            (asked != dsn::RcptDsn::default()).then(|| (r.address.clone(), asked))
        })
        .collect();
    dsn::EnvelopeDsn {
        ret,
        envid,
        recipients,
    }
}

/// Parameters as the client wrote them.
pub fn param_words(params: &[EsmtpParam]) -> Vec<String> {
    params
        .iter()
        .map(|p| match &p.value {
            Some(value) => format!("{}={value}", p.name),
            None => p.name.clone(),
        })
        .collect()
}

/// One quarantined message as listed.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    /// `None` for a file kept before envelopes were.
    pub envelope: Option<Envelope>,
    /// The reason from the message's own field (what old files have).
    pub reason: String,
    /// Unix seconds: when it was set aside (the file's time when the envelope is unknown).
    pub time: u64,
    /// The message's size as accepted, without the reason field.
    pub size: u64,
}

/// Quarantine ids are queue ids, with `-N` when one message was set aside more than once
/// (for two destinations at the deliver stage); anything else never names a file here.
pub fn is_quarantine_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 72
        && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && !id.starts_with('-')
}

fn message_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.eml"))
}

fn envelope_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Keeps a message aside with its envelope, durably: the envelope first, then the message,
/// then the directory; returns the quarantine id. The caller acknowledges only after this.
pub fn keep(dir: &Path, envelope: &Envelope, raw: &[u8]) -> std::io::Result<String> {
    std::fs::create_dir_all(dir)?;
    let id = free_id(dir, &envelope.queue_id);
    let json = serde_json::to_vec_pretty(envelope).map_err(std::io::Error::other)?;
    write_atomically(dir, &envelope_path(dir, &id), &[&json])?;
    let field = format!(
        "{REASON_FIELD} {}\r\n",
        envelope.reason.replace(['\r', '\n'], " ")
    );
    write_atomically(dir, &message_path(dir, &id), &[field.as_bytes(), raw])?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(id)
}

/// The queue id, or the queue id with the first free `-N`.
fn free_id(dir: &Path, queue_id: &str) -> String {
    let taken = |id: &str| message_path(dir, id).exists() || envelope_path(dir, id).exists();
    if !taken(queue_id) {
        return queue_id.to_string();
    }
    (2u32..)
        .map(|n| format!("{queue_id}-{n}"))
        .find(|id| !taken(id))
        .unwrap_or_else(|| queue_id.to_string())
}

/// Writes `parts` to a temporary file (mode 0600), syncs it and renames it to `path`.
fn write_atomically(dir: &Path, path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{}.tmp", name.unwrap_or_default()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    for part in parts {
        file.write_all(part)?;
    }
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Every quarantined message, oldest first.
pub fn list(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found: Vec<Entry> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".eml")?;
            if !is_quarantine_id(id) {
                return None;
            }
            entry(dir, id).ok()
        })
        .collect();
    found.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    Ok(found)
}

/// One quarantined message's listing.
pub fn entry(dir: &Path, id: &str) -> Result<Entry, String> {
    if !is_quarantine_id(id) {
        return Err(format!("{id:?} is not a quarantine id"));
    }
    let path = message_path(dir, id);
    let meta = std::fs::metadata(&path).map_err(|_| format!("no message {id} in quarantine"))?;
    let envelope = read_envelope(dir, id)?;
    let head = read_head(&path)?;
    let reason = reason_of(&head).unwrap_or_default();
    let field_len = reason_field_len(&head) as u64;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Ok(Entry {
        id: id.to_string(),
        time: envelope.as_ref().map_or(modified, |e| e.quarantined_at),
        envelope,
        reason,
        size: meta.len().saturating_sub(field_len),
    })
}

/// The envelope file, `None` when there is none (an old quarantine file).
fn read_envelope(dir: &Path, id: &str) -> Result<Option<Envelope>, String> {
    let path = envelope_path(dir, id);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_ENVELOPE_BYTES),
        &mut bytes,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("{} is damaged: {e}", path.display()))
}

/// The first bytes of a quarantine file: enough for the reason field.
fn read_head(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut head = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, 4096), &mut head)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(head)
}

/// The length of the reason field on top, 0 when the file does not start with one.
fn reason_field_len(file: &[u8]) -> usize {
    if !file.starts_with(REASON_FIELD.as_bytes()) {
        return 0;
    }
    file.windows(2)
        .position(|w| w == b"\r\n")
        .map_or(0, |end| end + 2)
}

fn reason_of(file: &[u8]) -> Option<String> {
    let len = reason_field_len(file);
    let field = file.get(REASON_FIELD.len()..len.checked_sub(2)?)?;
    Some(String::from_utf8_lossy(field).trim().to_string())
}

/// The message as it was accepted: the file without the reason field on top.
pub fn load_message(dir: &Path, id: &str) -> Result<Vec<u8>, String> {
    if !is_quarantine_id(id) {
        return Err(format!("{id:?} is not a quarantine id"));
    }
    let path = message_path(dir, id);
    let mut file = std::fs::read(&path).map_err(|_| format!("no message {id} in quarantine"))?;
    let len = reason_field_len(&file);
    file.drain(..len);
    Ok(file)
}

/// `mailgate quarantine show`: the envelope, then the message's header section.
pub fn render_show(dir: &Path, id: &str) -> Result<String, String> {
    let entry = entry(dir, id)?;
    let message = load_message(dir, id)?;
    let mut out = format!("id: {}\n", entry.id);
    match &entry.envelope {
        Some(e) => out.push_str(&describe_envelope(e)),
        None => out.push_str(&format!(
            "envelope: unknown (kept before envelopes were)\nquarantined: {}\nreason: {}\n",
            crate::mail::date::rfc5322(entry.time),
            entry.reason
        )),
    }
    out.push_str(&format!("size: {}\n\n", entry.size));
    out.push_str(&String::from_utf8_lossy(header_section(&message)));
    Ok(out)
}

fn describe_envelope(e: &Envelope) -> String {
    let mut out = format!(
        "queue id: {}\nsender: <{}>{}\n",
        e.queue_id,
        e.sender,
        params_suffix(&e.mail_params)
    );
    for r in &e.recipients {
        out.push_str(&format!(
            "recipient: <{}>{}\n",
            r.address,
            params_suffix(&r.params)
        ));
    }
    out.push_str(&format!(
        "client: {} (HELO {}){}\nreceived: {}\nquarantined: {} at the {} stage by plugin {}\nreason: {}\n",
        e.client_ip,
        e.helo,
        e.auth_user
            .as_ref()
            .map(|u| format!(", authenticated as {u}"))
            .unwrap_or_default(),
        crate::mail::date::rfc5322(e.received_at),
        crate::mail::date::rfc5322(e.quarantined_at),
        e.stage,
        e.plugin,
        e.reason
    ));
    out
}

fn params_suffix(params: &[String]) -> String {
    if params.is_empty() {
        String::new()
    } else {
        format!(" {}", params.join(" "))
    }
}

/// The header section, up to and with the empty line (the whole message when it has none).
fn header_section(message: &[u8]) -> &[u8] {
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => &message[..end + 4],
        None => match message.windows(2).position(|w| w == b"\n\n") {
            Some(end) => &message[..end + 2],
            None => message,
        },
    }
}

/// `mailgate quarantine list`.
pub fn render_list(entries: &[Entry]) -> String {
    let mut out = format!(
        "{:<33} {:<20} {:>8} {:<12} {:<30} {} (REASON)\n",
        "ID", "TIME", "SIZE", "PLUGIN", "SENDER", "RECIPIENTS"
    );
    for e in entries {
        let time = crate::mail::date::rfc5322(e.time);
        // `Sun, 22 Nov 2026 09:00:00 +0000` without the day name and zone.
        let time = time
            .get(5..time.len().saturating_sub(6))
            .unwrap_or(time.as_str());
        let (plugin, sender, recipients) = match &e.envelope {
            Some(env) => (
                env.plugin.clone(),
                format!("<{}>", env.sender),
                env.recipients
                    .iter()
                    .map(|r| r.address.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            None => ("?".into(), "?".into(), "(envelope unknown)".into()),
        };
        out.push_str(&format!(
            "{:<33} {time:<20} {:>8} {plugin:<12} {sender:<30} {recipients} ({})\n",
            e.id, e.size, e.reason
        ));
    }
    out.push_str(&format!("-- {} message(s) in quarantine\n", entries.len()));
    out
}

/// Removes a quarantined message (and its envelope).
pub fn delete(dir: &Path, id: &str) -> Result<(), String> {
    if !is_quarantine_id(id) {
        return Err(format!("{id:?} is not a quarantine id"));
    }
    std::fs::remove_file(message_path(dir, id))
        .map_err(|_| format!("no message {id} in quarantine"))?;
    match std::fs::remove_file(envelope_path(dir, id)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{id}: {e}")),
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| e.to_string())
}

/// What a release puts in the queue: the message as accepted and an envelope for its
/// original recipients. The queue id is the original one unless `taken` says the queue
/// still holds it (other recipients of a message quarantined at the deliver stage).
pub struct Release {
    pub envelope: QueuedEnvelope,
    pub message: Vec<u8>,
}

/// Reads a quarantined message back for the queue. `skip_plugin`: the deciding plugin is
/// not run again at the deliver stage for it.
pub fn prepare_release(
    dir: &Path,
    id: &str,
    skip_plugin: bool,
    taken: impl Fn(&str) -> bool,
) -> Result<Release, String> {
    let entry = entry(dir, id)?;
    let Some(kept) = entry.envelope else {
        return Err(format!(
            "{id} was quarantined without its envelope (sender and recipients unknown): it \
             cannot be released; read it in {} and resend it, or delete it",
            message_path(dir, id).display()
        ));
    };
    if kept.recipients.is_empty() {
        return Err(format!("{id} has no recipients to release it to"));
    }
    let message = load_message(dir, id)?;
    let queue_id = if taken(&kept.queue_id) || !super::spool::is_queue_id(&kept.queue_id) {
        super::spool::new_queue_id()
    } else {
        kept.queue_id.clone()
    };
    let dsn = dsn_of(&kept);
    let envelope = QueuedEnvelope {
        id: queue_id,
        sender: kept.sender,
        recipients: kept.recipients.into_iter().map(|r| r.address).collect(),
        received_at: kept.received_at,
        client_ip: kept.client_ip,
        helo: kept.helo,
        auth_user: kept.auth_user,
        smtputf8: kept.smtputf8,
        binary: kept.binary,
        dsn,
        skip_plugins: if skip_plugin {
            vec![kept.plugin]
        } else {
            Vec::new()
        },
    };
    Ok(Release { envelope, message })
}

/// The operator's words for a release.
pub fn released_text(id: &str, release: &Release) -> String {
    let skipped = match release.envelope.skip_plugins.first() {
        Some(plugin) => format!(" (plugin {plugin} skipped at delivery)"),
        None => String::new(),
    };
    format!(
        "released {id} as queue id {} to {}{skipped}\n",
        release.envelope.id,
        release.envelope.recipients.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn envelope(queue_id: &str) -> Envelope {
        Envelope {
            queue_id: queue_id.into(),
            sender: "a@example.net".into(),
            mail_params: vec!["BODY=8BITMIME".into()],
            recipients: vec![Recipient {
                address: "b@example.test".into(),
                params: vec!["NOTIFY=NEVER".into()],
            }],
            client_ip: "192.0.2.1".into(),
            helo: "client.example.net".into(),
            auth_user: None,
            received_at: 1_800_000_000,
            quarantined_at: 1_800_000_001,
            stage: "data".into(),
            plugin: "gate".into(),
            reason: "held\r\nby gate".into(),
            smtputf8: false,
            binary: false,
        }
    }

    #[test]
    fn keeps_lists_releases_and_deletes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = b"Subject: hi\r\n\r\nbody\r\n";
        let id = keep(dir.path(), &envelope("abc1"), raw).expect("kept");
        assert_eq!(id, "abc1");
        for file in ["abc1.eml", "abc1.json"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        // The same message again (another destination) gets its own id.
        assert_eq!(
            keep(dir.path(), &envelope("abc1"), raw).expect("kept"),
            "abc1-2"
        );
        let listed = list(dir.path()).expect("list");
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].reason, "held  by gate");
        assert_eq!(listed[0].size, raw.len() as u64);
        assert_eq!(load_message(dir.path(), "abc1").expect("message"), raw);
        let shown = render_show(dir.path(), "abc1").expect("show");
        assert!(
            shown.contains("sender: <a@example.net> BODY=8BITMIME"),
            "{shown}"
        );
        assert!(
            shown.contains("recipient: <b@example.test> NOTIFY=NEVER"),
            "{shown}"
        );
        assert!(shown.ends_with("Subject: hi\r\n\r\n"), "{shown}");

        let release = prepare_release(dir.path(), "abc1", true, |_| false).expect("release");
        assert_eq!(release.envelope.id, "abc1");
        assert_eq!(release.envelope.recipients, ["b@example.test"]);
        assert_eq!(release.envelope.skip_plugins, ["gate"]);
        assert_eq!(release.message, raw);
        let again = prepare_release(dir.path(), "abc1", false, |_| true).expect("release");
        assert_ne!(again.envelope.id, "abc1", "the queue holds abc1: a new id");
        assert!(again.envelope.skip_plugins.is_empty());

        delete(dir.path(), "abc1").expect("deleted");
        assert!(!dir.path().join("abc1.json").exists());
        assert!(delete(dir.path(), "abc1").is_err());
        assert!(delete(dir.path(), "../abc1").is_err());
    }

    #[test]
    fn an_old_file_without_envelope_is_listed_and_deletable_not_releasable() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("0f.eml"),
            "X-Mailgate-Quarantine: virus\r\nSubject: x\r\n\r\nbody\r\n",
        )
        .expect("write");
        let listed = list(dir.path()).expect("list");
        assert_eq!(listed.len(), 1);
        assert!(listed[0].envelope.is_none());
        assert_eq!(listed[0].reason, "virus");
        assert!(render_list(&listed).contains("(envelope unknown) (virus)"));
        let refused = prepare_release(dir.path(), "0f", false, |_| false)
            .err()
            .expect("refused");
        assert!(refused.contains("without its envelope"), "{refused}");
        delete(dir.path(), "0f").expect("deleted");
        assert!(list(dir.path()).expect("list").is_empty());
    }
}
