//! The host's own view of what plugins return: verdicts, replies and edits, converted from the
//! generated bindings and validated before anything acts on them.

use std::fmt;

use serde::Serialize;

use crate::mail::{EsmtpParam, Reply};
use crate::message::header::valid_field_value;
use crate::message::MessageEdit;

/// A stage of a message's life, as in the contract.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Connect,
    Helo,
    MailFrom,
    RcptTo,
    Data,
    Deliver,
    Retrieve,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Connect,
        Stage::Helo,
        Stage::MailFrom,
        Stage::RcptTo,
        Stage::Data,
        Stage::Deliver,
        Stage::Retrieve,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::MailFrom => "mail-from",
            Stage::RcptTo => "rcpt-to",
            Stage::Data => "data",
            Stage::Deliver => "deliver",
            Stage::Retrieve => "retrieve",
        }
    }

    fn has_message(self) -> bool {
        matches!(self, Stage::Data | Stage::Deliver | Stage::Retrieve)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The stage to run and its stage-specific arguments.
#[derive(Debug, Clone, Copy)]
pub enum StageCall<'a> {
    Connect,
    Helo(&'a str),
    /// The sender is `MailState::envelope.sender`.
    MailFrom(&'a [EsmtpParam]),
    RcptTo(&'a str, &'a [EsmtpParam]),
    Data,
    Deliver,
    Retrieve,
}

impl StageCall<'_> {
    pub fn stage(&self) -> Stage {
        match self {
            StageCall::Connect => Stage::Connect,
            StageCall::Helo(_) => Stage::Helo,
            StageCall::MailFrom(_) => Stage::MailFrom,
            StageCall::RcptTo(..) => Stage::RcptTo,
            StageCall::Data => Stage::Data,
            StageCall::Deliver => Stage::Deliver,
            StageCall::Retrieve => Stage::Retrieve,
        }
    }
}

/// A plugin's verdict on one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "verdict", content = "detail")]
pub enum Verdict {
    Continue,
    Accept,
    Reject(Reply),
    Tempfail(Reply),
    Disconnect(Reply),
    Discard,
    Quarantine(String),
    Hide,
}

impl Verdict {
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Continue => "continue",
            Verdict::Accept => "accept",
            Verdict::Reject(_) => "reject",
            Verdict::Tempfail(_) => "tempfail",
            Verdict::Disconnect(_) => "disconnect",
            Verdict::Discard => "discard",
            Verdict::Quarantine(_) => "quarantine",
            Verdict::Hide => "hide",
        }
    }

    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Verdict::Reject(r) | Verdict::Tempfail(r) | Verdict::Disconnect(r) => Some(r),
            _ => None,
        }
    }

    pub(super) fn validate(&self, stage: Stage) -> Result<(), String> {
        let allowed = match self {
            Verdict::Continue | Verdict::Accept => true,
            Verdict::Reject(r) => return r.validate(500..=599),
            Verdict::Tempfail(r) => return r.validate(400..=499),
            Verdict::Disconnect(r) => return r.validate(400..=599),
            Verdict::Discard => matches!(stage, Stage::Data | Stage::Deliver),
            Verdict::Quarantine(reason) => {
                if !valid_field_value(reason) {
                    return Err("quarantine reason has CR, LF or NUL".into());
                }
                matches!(stage, Stage::Data | Stage::Deliver)
            }
            Verdict::Hide => stage == Stage::Retrieve,
        };
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "verdict {} is not allowed at the {stage} stage",
                self.name()
            ))
        }
    }
}

/// An edit a plugin asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Message(MessageEdit),
    ChangeSender(String),
    AddRecipient(String),
    RemoveRecipient(String),
    Reroute(String),
    Defer(u32),
}

impl Edit {
    pub(super) fn validate(&self, stage: Stage) -> Result<(), String> {
        let allowed = match self {
            Edit::Message(m) => {
                m.validate().map_err(|e| e.to_string())?;
                stage.has_message()
            }
            Edit::ChangeSender(s) => {
                check_address(s, true)?;
                matches!(
                    stage,
                    Stage::MailFrom | Stage::RcptTo | Stage::Data | Stage::Deliver
                )
            }
            Edit::AddRecipient(r) | Edit::RemoveRecipient(r) => {
                check_address(r, false)?;
                matches!(stage, Stage::RcptTo | Stage::Data | Stage::Deliver)
            }
            Edit::Reroute(target) => {
                check_host_port(target)?;
                stage == Stage::Deliver
            }
            Edit::Defer(_) => stage == Stage::Deliver,
        };
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "edit {} is not allowed at the {stage} stage",
                self.describe()
            ))
        }
    }

    /// A short human description, as the harness prints it.
    pub fn describe(&self) -> String {
        match self {
            Edit::Message(MessageEdit::AddHeader { name, value }) => {
                format!("add-header {name}: {value}")
            }
            Edit::Message(MessageEdit::InsertHeader { index, name, value }) => {
                format!("insert-header #{index} {name}: {value}")
            }
            Edit::Message(MessageEdit::SetHeader { name, value }) => {
                format!("set-header {name}: {value}")
            }
            Edit::Message(MessageEdit::RemoveHeader(name)) => format!("remove-header {name}"),
            Edit::Message(MessageEdit::ChangeHeader { name, index, value }) if value.is_empty() => {
                format!("remove-header {name} #{index}")
            }
            Edit::Message(MessageEdit::ChangeHeader { name, index, value }) => {
                format!("change-header {name} #{index}: {value}")
            }
            Edit::Message(MessageEdit::ReplaceBody(b)) => {
                format!("replace-body ({} bytes)", b.len())
            }
            Edit::Message(MessageEdit::ReplacePart {
                id,
                content_type,
                content,
            }) => {
                format!(
                    "replace-part {id} with {content_type} ({} bytes)",
                    content.len()
                )
            }
            Edit::Message(MessageEdit::RemovePart(id)) => format!("remove-part {id}"),
            Edit::Message(MessageEdit::AppendFooter(t)) => format!("append-footer {t:?}"),
            Edit::ChangeSender(s) => format!("change-sender <{s}>"),
            Edit::AddRecipient(r) => format!("add-recipient <{r}>"),
            Edit::RemoveRecipient(r) => format!("remove-recipient <{r}>"),
            Edit::Reroute(t) => format!("reroute {t}"),
            Edit::Defer(s) => format!("defer {s}s"),
        }
    }
}

/// A mailbox as used in the envelope: `local@domain`, printable, no spaces or angle brackets.
/// The sender may be empty (the null reverse-path).
pub fn check_address(address: &str, may_be_null: bool) -> Result<(), String> {
    if address.is_empty() && may_be_null {
        return Ok(());
    }
    let printable = address
        .chars()
        .all(|c| !c.is_control() && !c.is_whitespace() && c != '<' && c != '>');
    let shaped = address
        .rsplit_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if printable && shaped && address.len() <= 320 {
        Ok(())
    } else {
        Err(format!("invalid address {address:?}"))
    }
}

fn check_host_port(target: &str) -> Result<(), String> {
    let ok = target.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c))
            && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid reroute target {target:?} (want host:port)"
        ))
    }
}

/// A validated stage result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub edits: Vec<Edit>,
}

impl Outcome {
    /// Validates what a plugin returned at `stage`; an error names what was wrong.
    pub fn validated(verdict: Verdict, edits: Vec<Edit>, stage: Stage) -> Result<Outcome, String> {
        verdict.validate(stage)?;
        for edit in &edits {
            edit.validate(stage)?;
        }
        Ok(Outcome { verdict, edits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_must_match_the_verdict() {
        let r = Reply::new(451, (4, 7, 1), "later");
        assert!(Verdict::Tempfail(r.clone()).validate(Stage::RcptTo).is_ok());
        assert!(Verdict::Reject(r).validate(Stage::RcptTo).is_err());
        let mismatched = Reply::new(550, (4, 7, 1), "x");
        assert!(Verdict::Reject(mismatched).validate(Stage::RcptTo).is_err());
        let smuggled = Reply::new(550, (5, 7, 1), "no\r\n250 ok");
        assert!(Verdict::Reject(smuggled).validate(Stage::Data).is_err());
    }

    #[test]
    fn edits_are_checked_per_stage() {
        assert!(Edit::Defer(10).validate(Stage::Data).is_err());
        assert!(Edit::Defer(10).validate(Stage::Deliver).is_ok());
        assert!(Edit::AddRecipient("a@b".into())
            .validate(Stage::Connect)
            .is_err());
        assert!(Edit::AddRecipient("a@b\r\nRCPT".into())
            .validate(Stage::Data)
            .is_err());
        assert!(Edit::Reroute("mx.example.org:25".into())
            .validate(Stage::Deliver)
            .is_ok());
        assert!(Edit::Reroute("mx.example.org".into())
            .validate(Stage::Deliver)
            .is_err());
    }

    #[test]
    fn addresses() {
        assert!(check_address("", true).is_ok());
        assert!(check_address("", false).is_err());
        assert!(check_address("user@example.org", false).is_ok());
        assert!(check_address("a b@example.org", false).is_err());
        assert!(check_address("<x@y>", false).is_err());
    }
}
