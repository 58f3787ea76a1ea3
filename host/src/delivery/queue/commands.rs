//! Operator commands on the queue (`mailgate queue ...`). A running server answers them on its
//! admin socket (see `crate::ops::admin_socket`), so they act on the live schedule; with no server running
//! the same commands work on the queue files directly.

use super::manager::QueueManager;
use super::state::{QueueEntry, QueueFiles};
use crate::mail::clock::unix_seconds;

/// One operator command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueCommand {
    List,
    Show(String),
    /// `None`: every message.
    Retry(Option<String>),
    Delete(String),
    Hold(String),
    Release(String),
}

impl QueueCommand {
    /// The line sent on the admin socket.
    pub fn to_line(&self) -> String {
        match self {
            QueueCommand::List => "queue list".into(),
            QueueCommand::Show(id) => format!("queue show {id}"),
            QueueCommand::Retry(None) => "queue retry --all".into(),
            QueueCommand::Retry(Some(id)) => format!("queue retry {id}"),
            QueueCommand::Delete(id) => format!("queue delete {id}"),
            QueueCommand::Hold(id) => format!("queue hold {id}"),
            QueueCommand::Release(id) => format!("queue release {id}"),
        }
    }

    pub fn parse(line: &str) -> Option<QueueCommand> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let id = |w: &str| w.to_string();
        Some(match words.as_slice() {
            ["queue", "list"] => QueueCommand::List,
            ["queue", "show", i] => QueueCommand::Show(id(i)),
            ["queue", "retry", "--all"] => QueueCommand::Retry(None),
            ["queue", "retry", i] => QueueCommand::Retry(Some(id(i))),
            ["queue", "delete", i] => QueueCommand::Delete(id(i)),
            ["queue", "hold", i] => QueueCommand::Hold(id(i)),
            ["queue", "release", i] => QueueCommand::Release(id(i)),
            _ => return None,
        })
    }
}

/// What the commands act on: the live manager, or the files of a stopped server.
pub trait QueueControl {
    fn files(&self) -> &QueueFiles;
    fn set_held(&self, id: &str, held: bool) -> Result<(), String>;
    fn retry(&self, id: Option<&str>) -> Result<usize, String>;
    fn delete(&self, id: &str) -> Result<(), String>;
}

impl QueueControl for QueueManager {
    fn files(&self) -> &QueueFiles {
        QueueManager::files(self)
    }
    fn set_held(&self, id: &str, held: bool) -> Result<(), String> {
        QueueManager::set_held(self, id, held)
    }
    fn retry(&self, id: Option<&str>) -> Result<usize, String> {
        QueueManager::retry(self, id)
    }
    fn delete(&self, id: &str) -> Result<(), String> {
        QueueManager::delete(self, id)
    }
}

impl QueueControl for QueueFiles {
    fn files(&self) -> &QueueFiles {
        self
    }
    fn set_held(&self, id: &str, held: bool) -> Result<(), String> {
        self.update(id, |s| s.held = held).map(|_| ())
    }
    fn retry(&self, id: Option<&str>) -> Result<usize, String> {
        match id {
            Some(id) => self.update(id, |s| s.next_attempt = 0).map(|_| 1),
            None => Ok(self
                .spool
                .list()
                .map_err(|e| e.to_string())?
                .iter()
                .filter(|id| self.update(id, |s| s.next_attempt = 0).is_ok())
                .count()),
        }
    }
    fn delete(&self, id: &str) -> Result<(), String> {
        if !self.exists(id) {
            return Err(format!("no message {id} in the queue"));
        }
        self.remove(id).map_err(|e| e.to_string())
    }
}

/// Runs a command; the text to print, or the error.
pub fn execute(control: &dyn QueueControl, command: &QueueCommand) -> Result<String, String> {
    let files = control.files();
    match command {
        QueueCommand::List => Ok(render_list(&files.entries())),
        QueueCommand::Show(id) => {
            let entry = files
                .entries()
                .into_iter()
                .find(|e| e.envelope.id == *id)
                .ok_or_else(|| format!("no message {id} in the queue"))?;
            let message = files.spool.load(id).map_err(|e| e.to_string())?.message;
            Ok(render_show(&entry, &message))
        }
        QueueCommand::Retry(id) => {
            let n = control.retry(id.as_deref())?;
            Ok(format!("{n} message(s) scheduled for immediate delivery\n"))
        }
        QueueCommand::Delete(id) => control.delete(id).map(|()| format!("deleted {id}\n")),
        QueueCommand::Hold(id) => control.set_held(id, true).map(|()| format!("held {id}\n")),
        QueueCommand::Release(id) => control
            .set_held(id, false)
            .map(|()| format!("released {id}\n")),
    }
}

fn ago(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn next_attempt(entry: &QueueEntry, now: u64) -> String {
    if entry.state.held {
        "held".into()
    } else if entry.state.next_attempt <= now {
        "now".into()
    } else {
        format!("in {}", ago(entry.state.next_attempt - now))
    }
}

fn render_list(entries: &[QueueEntry]) -> String {
    let now = unix_seconds();
    let mut out = format!(
        "{:<31} {:>5} {:>8} {:<10} {}\n",
        "ID", "AGE", "SIZE", "NEXT", "SENDER -> RECIPIENTS (LAST ERROR)"
    );
    for e in entries {
        let sender = if e.envelope.sender.is_empty() {
            "<>"
        } else {
            &e.envelope.sender
        };
        out.push_str(&format!(
            "{:<31} {:>5} {:>8} {:<10} {sender} -> {}\n",
            e.envelope.id,
            ago(now.saturating_sub(e.envelope.received_at)),
            e.size,
            next_attempt(e, now),
            e.state.pending(&e.envelope).join(", "),
        ));
        if let Some(error) = &e.state.last_error {
            out.push_str(&format!("{:>31}   ({error})\n", ""));
        }
    }
    out.push_str(&format!("-- {} message(s)\n", entries.len()));
    out
}

fn render_show(e: &QueueEntry, message: &[u8]) -> String {
    let now = unix_seconds();
    let env = &e.envelope;
    let mut out = format!(
        "id: {}\nsender: <{}>\nrecipients: {}\npending: {}\nreceived: {} ({} ago) from {} ({})\n",
        env.id,
        env.sender,
        env.recipients.join(", "),
        e.state.pending(env).join(", "),
        crate::mail::date::rfc5322(env.received_at),
        ago(now.saturating_sub(env.received_at)),
        env.helo,
        env.client_ip,
    );
    if !env.dsn.is_empty() {
        out.push_str(&render_dsn(&env.dsn));
    }
    out.push_str(&format!(
        "attempts: {}\nnext attempt: {}\nlast error: {}\nsize: {}\n\n",
        e.state.attempts,
        next_attempt(e, now),
        e.state.last_error.as_deref().unwrap_or("-"),
        e.size
    ));
    out.push_str(&String::from_utf8_lossy(message));
    out
}

/// The client's DSN requests (RFC 3461), one line for the message and one per recipient.
fn render_dsn(dsn: &crate::mail::dsn::EnvelopeDsn) -> String {
    let mut lines = dsn.describe().into_iter();
    let mut out = format!("dsn: {}\n", lines.next().unwrap_or_default());
    for line in lines {
        out.push_str(&format!("dsn {line}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        for command in [
            QueueCommand::List,
            QueueCommand::Show("ab".into()),
            QueueCommand::Retry(None),
            QueueCommand::Retry(Some("ab".into())),
            QueueCommand::Delete("ab".into()),
            QueueCommand::Hold("ab".into()),
            QueueCommand::Release("ab".into()),
        ] {
            assert_eq!(QueueCommand::parse(&command.to_line()), Some(command));
        }
        assert_eq!(QueueCommand::parse("queue frob"), None);
    }
}
