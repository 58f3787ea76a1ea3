//! The log line of each refused command, in the shape log watchers (fail2ban, pflogsumm-style
//! reports) read: the command, the client, the envelope and the reply, on one line, with the
//! same facts as fields for JSON logs. Target `mailgate::reject`, logged by default.

use super::{Answer, Facts};

/// What was refused: the command, the envelope as it stood, and the reply sent.
pub(super) struct Refused<'a> {
    pub command: &'static str,
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub answer: &'a Answer,
}

/// Logs `refused` when its reply is a refusal (4xx or 5xx).
pub(super) fn refused(facts: &Facts, refused: &Refused<'_>) {
    let reply = &refused.answer.reply;
    if reply.code < 400 {
        return;
    }
    let client = facts.peer.ip();
    let helo = facts.helo.as_deref().unwrap_or("");
    let to = refused.recipients.join(",");
    let plugin = refused
        .answer
        .stage
        .as_ref()
        .and_then(|report| report.decided_by.as_deref())
        .unwrap_or("");
    let kind = if reply.code >= 500 {
        "reject"
    } else {
        "tempfail"
    };
    tracing::info!(
        target: "mailgate::reject",
        session = facts.id,
        command = refused.command,
        client = %client,
        helo,
        from = refused.sender,
        to,
        reply = %reply,
        plugin,
        "{kind}: {} from [{client}]: {reply}; from=<{}> to=<{to}> helo=<{helo}>",
        refused.command,
        refused.sender,
    );
}
