//! What an SMTP session tells the message journal: each command with the stage it ran and
//! the reply the client got, and each message accepted (see `telemetry::journal`).

use super::command::Command;
use crate::intake::Accepted;
use crate::plugin::StageReport;
use crate::telemetry::journal::{self, Event, StageTrace};

/// Longest command text kept.
const MAX_COMMAND_TEXT: usize = 256;

/// The session's journal bookkeeping between a command and its record.
pub(super) struct CommandLog {
    on: bool,
    /// The transaction number: one more at each MAIL.
    pub tx: u32,
    reply: String,
    stage: Option<StageTrace>,
    accepted: Option<(String, Event)>,
}

impl CommandLog {
    pub fn new() -> CommandLog {
        CommandLog {
            on: journal::enabled(),
            tx: 0,
            reply: String::new(),
            stage: None,
            accepted: None,
        }
    }

    /// Whether records are kept (the command text is only made then).
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// A reply went out: the last one before the command's record is the one kept (the
    /// first line of it).
    pub fn reply_sent(&mut self, bytes: &[u8]) {
        if self.on {
            let first = bytes.split(|&b| b == b'\n').next().unwrap_or(bytes);
            self.reply = String::from_utf8_lossy(first).trim_end().to_string();
        }
    }

    /// A stage ran (kept only when some plugin ran at it).
    pub fn stage_ran(&mut self, report: &StageReport) {
        if self.on && !report.runs.is_empty() {
            self.stage = Some(report.trace());
        }
    }

    /// A message was taken in (journalled after the command that ended it); one discarded or
    /// quarantined says so at once.
    pub fn taken_in(&mut self, session: &str, accepted: Accepted) {
        if !self.on {
            return;
        }
        if let Some((outcome, detail)) = accepted.disposition {
            let event = Event::Disposition {
                outcome: outcome.to_string(),
                detail,
            };
            journal::record(session, self.tx, &accepted.queue_id, event);
        }
        let event = Event::Accepted {
            sender: accepted.sender,
            recipients: accepted.recipients,
            size: accepted.size,
            authentication: accepted.authentication,
            dsn: accepted.dsn,
        };
        self.accepted = Some((accepted.queue_id, event));
    }

    /// Journals the command just handled (`text`, made only when the journal is on), and the
    /// message it accepted if any.
    pub fn command_done(&mut self, session: &str, text: Option<String>) {
        let (true, Some(text)) = (self.on, text) else {
            return;
        };
        let event = Event::Command {
            command: text,
            reply: std::mem::take(&mut self.reply),
            stage: self.stage.take(),
        };
        journal::record(session, self.tx, "", event);
        if let Some((queue_id, event)) = self.accepted.take() {
            journal::record(session, self.tx, &queue_id, event);
        }
    }
}

/// The command as the journal shows it: the line, except AUTH's credentials.
pub(super) fn command_text(line: &[u8], command: Option<&Command>) -> String {
    if let Some(Command::Auth(mechanism, _)) = command {
        return format!("AUTH {mechanism}");
    }
    let line = &line[..line.len().min(MAX_COMMAND_TEXT)];
    String::from_utf8_lossy(line).into_owned()
}
