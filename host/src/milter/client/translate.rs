//! Translation between our records and the milter's: MAIL and RCPT arguments, header values
//! both ways, its modifications as edits, its answers and reply text as our verdicts.

use super::{Answer, Done, MilterConversation};
use crate::mail::Reply;
use crate::message::MessageEdit;
use crate::milter::codec::{actions, Response};
use crate::plugin::{Edit, ExternalFault, Stage, Verdict};

/// `<address> ARG=VALUE...` as the milter's MAIL and RCPT strings.
pub(super) fn with_params(address: String, params: &[crate::mail::EsmtpParam]) -> Vec<String> {
    std::iter::once(address)
        .chain(params.iter().map(|p| match &p.value {
            Some(v) => format!("{}={v}", p.name),
            None => p.name.clone(),
        }))
        .collect()
}

/// A header value as milters expect it: line breaks as LF (Sendmail's convention, which
/// libmilter filters such as OpenDKIM rebuild), the space after the colon only if asked for.
pub(super) fn header_value_out(raw: &[u8], leading_space: bool) -> String {
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    if leading_space {
        text
    } else {
        text.trim_start_matches([' ', '\t']).to_string()
    }
}

/// A header value from a milter as we store it: folded lines as CRLF, no space of its own
/// after the colon (we write one).
pub(super) fn header_value_in(value: &str, leading_space: bool) -> String {
    let value = if leading_space {
        value.strip_prefix([' ', '\t']).unwrap_or(value)
    } else {
        value
    };
    value.replace("\r\n", "\n").replace('\n', "\r\n")
}

pub(super) fn edit_from(
    change: Response,
    granted: u32,
    leading_space: bool,
) -> Result<Edit, ExternalFault> {
    Ok(match change {
        Response::AddHeader { name, value } => {
            need(granted, actions::ADD_HEADERS, "add header")?;
            let value = header_value_in(&value, leading_space);
            Edit::Message(MessageEdit::AddHeader { name, value })
        }
        Response::InsertHeader { index, name, value } => {
            need(granted, actions::ADD_HEADERS, "insert header")?;
            let value = header_value_in(&value, leading_space);
            Edit::Message(MessageEdit::InsertHeader { index, name, value })
        }
        Response::ChangeHeader { index, name, value } => {
            need(granted, actions::CHANGE_HEADERS, "change header")?;
            let value = header_value_in(&value, leading_space);
            Edit::Message(MessageEdit::ChangeHeader { name, index, value })
        }
        Response::AddRcpt(rcpt) => {
            need(granted, actions::ADD_RCPT, "add recipient")?;
            Edit::AddRecipient(unbracket(&rcpt))
        }
        Response::AddRcptPar { rcpt, .. } => {
            need(granted, actions::ADD_RCPT_PAR, "add recipient")?;
            Edit::AddRecipient(unbracket(&rcpt))
        }
        Response::DeleteRcpt(rcpt) => {
            need(granted, actions::DELETE_RCPT, "delete recipient")?;
            Edit::RemoveRecipient(unbracket(&rcpt))
        }
        Response::ChangeFrom { sender, .. } => {
            need(granted, actions::CHANGE_FROM, "change sender")?;
            Edit::ChangeSender(unbracket(&sender))
        }
        other => {
            return Err(ExternalFault::Peer(format!(
                "sent {} among its modifications",
                other.name()
            )))
        }
    })
}

/// Refuses a modification the milter did not ask to make at negotiation.
pub(super) fn need(granted: u32, action: u32, what: &str) -> Result<(), ExternalFault> {
    if granted & action == 0 {
        return Err(ExternalFault::Peer(format!(
            "sent {what} without having negotiated that action"
        )));
    }
    Ok(())
}

fn unbracket(address: &str) -> String {
    let trimmed = address.trim();
    trimmed
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(trimmed)
        .to_string()
}

/// The verdict a milter's own reply text asks for: `4xx` tempfail, `421` disconnect, `5xx`
/// reject. Lines may be `NNN-` continued; the enhanced status is optional. Text that is not
/// a usable reply becomes the default rejection (the chain validates the rest).
pub(super) fn reply_verdict(text: &str) -> Verdict {
    let lines: Vec<&str> = text.split(['\r', '\n']).filter(|l| !l.is_empty()).collect();
    let code = lines
        .first()
        .and_then(|l| l.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or(550);
    let mut enhanced = None;
    let texts: Vec<String> = lines
        .iter()
        .map(|line| {
            let rest = line.get(4..).unwrap_or("").trim_start();
            let (status, words) = rest.split_once(' ').unwrap_or((rest, ""));
            match parse_enhanced(status) {
                Some(e) => {
                    enhanced.get_or_insert(e);
                    words.to_string()
                }
                None => rest.to_string(),
            }
        })
        .collect();
    let reply = Reply {
        code,
        enhanced,
        lines: texts,
    };
    match code {
        421 => Verdict::Disconnect(reply),
        400..=499 => Verdict::Tempfail(reply),
        _ => Verdict::Reject(reply),
    }
}

fn parse_enhanced(text: &str) -> Option<(u8, u16, u16)> {
    let mut parts = text.split('.');
    let class = parts.next()?.parse().ok()?;
    let subject = parts.next()?.parse().ok()?;
    let detail = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((class, subject, detail))
}

pub(super) fn command_name(letter: u8) -> &'static str {
    match letter {
        b'C' => "connect",
        b'H' => "helo",
        b'M' => "mail",
        b'R' => "rcpt",
        b'T' => "data",
        b'L' => "header",
        b'N' => "end of headers",
        b'B' => "body",
        b'E' => "end of message",
        _ => "command",
    }
}

impl MilterConversation {
    /// Our verdict from the milter's answer at `stage`.
    pub(super) fn settle(&mut self, answer: Answer, stage: Stage) -> (Verdict, Vec<Edit>) {
        let at_message = stage == Stage::Data;
        let verdict = match &answer.last {
            Response::Continue | Response::Skip => match &answer.quarantine {
                Some(reason) => Verdict::Quarantine(reason.clone()),
                None => Verdict::Continue,
            },
            Response::Accept => {
                self.done = if matches!(stage, Stage::Connect | Stage::Helo) {
                    Done::Connection
                } else {
                    Done::Message
                };
                match &answer.quarantine {
                    Some(reason) => Verdict::Quarantine(reason.clone()),
                    None => Verdict::Continue,
                }
            }
            Response::Discard if at_message => Verdict::Discard,
            Response::Discard => {
                self.discard = true;
                self.done = Done::Message;
                Verdict::Continue
            }
            Response::Reject => Verdict::Reject(Reply::new(550, (5, 7, 1), "Command rejected")),
            Response::Tempfail => Verdict::Tempfail(Reply::new(
                451,
                (4, 7, 1),
                "Service unavailable - try again later",
            )),
            Response::ReplyCode(text) => reply_verdict(text),
            _ => Verdict::Continue,
        };
        let edits = match verdict {
            Verdict::Continue | Verdict::Quarantine(_) => answer.edits,
            _ => Vec::new(),
        };
        (verdict, edits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_become_verdicts() {
        let Verdict::Reject(r) = reply_verdict("554 5.7.1 Gtube pattern") else {
            panic!("not a reject")
        };
        assert_eq!((r.code, r.enhanced), (554, Some((5, 7, 1))));
        assert_eq!(r.lines, ["Gtube pattern"]);
        assert!(matches!(reply_verdict("451 later"), Verdict::Tempfail(_)));
        assert!(matches!(
            reply_verdict("421 4.3.2 bye"),
            Verdict::Disconnect(_)
        ));
        let Verdict::Reject(r) = reply_verdict("550-5.7.1 one\r\n550 5.7.1 two") else {
            panic!("not a reject")
        };
        assert_eq!(r.lines, ["one", "two"]);
    }

    #[test]
    fn header_values_keep_their_folding_both_ways() {
        assert_eq!(header_value_out(b" a;\r\n\tb=c", false), "a;\n\tb=c");
        assert_eq!(header_value_out(b" a", true), " a");
        assert_eq!(header_value_in("v=1;\n\tb=x", false), "v=1;\r\n\tb=x");
        assert_eq!(header_value_in(" Yes", true), "Yes");
    }

    #[test]
    fn modifications_need_their_action() {
        let add = Response::AddHeader {
            name: "X".into(),
            value: "1".into(),
        };
        assert!(edit_from(add.clone(), actions::ADD_HEADERS, false).is_ok());
        assert!(edit_from(add, actions::CHANGE_BODY, false).is_err());
        let Ok(Edit::AddRecipient(r)) =
            edit_from(Response::AddRcpt("<a@b>".into()), actions::ADD_RCPT, false)
        else {
            panic!("not an added recipient")
        };
        assert_eq!(r, "a@b");
    }
}
