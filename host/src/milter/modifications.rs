//! What the chain changed, as milter modifications for the MTA that asked: the envelope
//! (sender, recipients added and removed), the header fields (changed, removed, added — in an
//! order whose indexes stay right however the MTA counts removed fields) and the body.
//!
//! Working from the message before and after, rather than from each plugin's edit, covers
//! every edit the chain has (MIME part replacement and footers included) with the few
//! modifications the milter protocol offers.

use super::codec::{Response, CHUNK};
use crate::mail::Envelope;
use crate::message::Message;

/// The modifications that turn `before` into `after`.
pub fn modifications(
    before: &Message,
    after: &Message,
    old: &Envelope,
    new: &Envelope,
) -> Vec<Response> {
    let mut out = envelope_changes(old, new);
    out.extend(header_changes(before, after));
    if before.body() != after.body() {
        let body = after.body();
        if body.is_empty() {
            out.push(Response::ReplaceBody(Vec::new()));
        }
        out.extend(
            body.chunks(CHUNK)
                .map(|c| Response::ReplaceBody(c.to_vec())),
        );
    }
    out
}

fn envelope_changes(old: &Envelope, new: &Envelope) -> Vec<Response> {
    let mut out = Vec::new();
    if old.sender != new.sender {
        // The MTA's RET and ENVID go with the new sender: an MTA that takes the arguments of
        // a sender change as the new MAIL's (Sendmail) keeps the client's DSN requests.
        let args = crate::mail::dsn::param_text(&old.dsn.mail_params());
        out.push(Response::ChangeFrom {
            sender: format!("<{}>", new.sender),
            args: args.trim_start().to_string(),
        });
    }
    let has = |list: &[String], r: &str| list.iter().any(|x| x.eq_ignore_ascii_case(r));
    for gone in old.recipients.iter().filter(|r| !has(&new.recipients, r)) {
        out.push(Response::DeleteRcpt(format!("<{gone}>")));
    }
    for added in new.recipients.iter().filter(|r| !has(&old.recipients, r)) {
        out.push(Response::AddRcpt(format!("<{added}>")));
    }
    out
}

/// One header field: its name and its value as a milter carries it (no space after the
/// colon, line breaks as LF).
#[derive(PartialEq, Eq)]
struct Field {
    name: String,
    value: String,
}

fn fields(message: &Message) -> Vec<Field> {
    let raw = message.raw();
    let header = message.header_block();
    header
        .fields
        .iter()
        .map(|f| {
            let value = String::from_utf8_lossy(&raw[f.value.clone()]);
            Field {
                name: String::from_utf8_lossy(&raw[f.name.clone()]).into_owned(),
                value: value.trim_start_matches([' ', '\t']).replace("\r\n", "\n"),
            }
        })
        .collect()
}

/// Per field name: the occurrences present in both get changed where they differ, the extra
/// ones before are removed (last first, so earlier indexes hold whether or not the MTA still
/// counts removed fields), the extra ones after are added where they stand.
fn header_changes(before: &Message, after: &Message) -> Vec<Response> {
    let (old, new) = (fields(before), fields(after));
    let same_name = |list: &[Field], name: &str| -> Vec<usize> {
        (0..list.len())
            .filter(|&i| list[i].name.eq_ignore_ascii_case(name))
            .collect()
    };
    let mut names: Vec<&str> = Vec::new();
    for f in old.iter().chain(&new) {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(&f.name)) {
            names.push(&f.name);
        }
    }
    let mut changes = Vec::new();
    let mut removals = Vec::new();
    let mut added: Vec<usize> = Vec::new();
    for name in names {
        let (was, is) = (same_name(&old, name), same_name(&new, name));
        for (n, (&i, &j)) in was.iter().zip(&is).enumerate() {
            if old[i] != new[j] {
                changes.push(change(n + 1, &new[j].name, &new[j].value));
            }
        }
        for n in (is.len()..was.len()).rev() {
            removals.push(change(n + 1, &old[was[n]].name, ""));
        }
        added.extend(is.iter().skip(was.len()));
    }
    added.sort_unstable();
    // Fields kept from before, in the new order: an added field after all of them is
    // appended, one among them is inserted at its place.
    let kept_last = (0..new.len()).rev().find(|i| !added.contains(i));
    let mut out = removals;
    out.extend(changes);
    for j in added {
        let field = &new[j];
        if kept_last.is_none_or(|last| j > last) {
            out.push(Response::AddHeader {
                name: field.name.clone(),
                value: field.value.clone(),
            });
        } else {
            out.push(Response::InsertHeader {
                index: u32::try_from(j).unwrap_or(u32::MAX),
                name: field.name.clone(),
                value: field.value.clone(),
            });
        }
    }
    out
}

fn change(index: usize, name: &str, value: &str) -> Response {
    Response::ChangeHeader {
        index: u32::try_from(index).unwrap_or(u32::MAX),
        name: name.to_string(),
        value: value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> Message {
        Message::new(text.as_bytes().to_vec())
    }

    #[test]
    fn header_edits_become_changes_removals_and_additions() {
        let before = message("A: 1\r\nX-Tag: one\r\nSubject: s\r\nX-Tag: two\r\n\r\nbody\r\n");
        let after = message(
            "X-New: top\r\nA: 1\r\nX-Tag: one\r\nSubject: [tag] s\r\nX-End: e\r\n\r\nbody\r\n",
        );
        let changes = modifications(&before, &after, &Envelope::default(), &Envelope::default());
        let names: Vec<String> = changes
            .iter()
            .map(|c| match c {
                Response::ChangeHeader { index, name, value } => {
                    format!("m {index} {name} {value}")
                }
                Response::AddHeader { name, value } => format!("h {name} {value}"),
                Response::InsertHeader { index, name, value } => {
                    format!("i {index} {name} {value}")
                }
                other => other.name().to_string(),
            })
            .collect();
        assert_eq!(
            names,
            [
                "m 2 X-Tag ",
                "m 1 Subject [tag] s",
                "i 0 X-New top",
                "h X-End e"
            ]
        );
    }

    #[test]
    fn envelope_and_body() {
        let before = message("A: 1\r\n\r\nold\r\n");
        let after = message("A: 1\r\n\r\nnew\r\n");
        let old = Envelope {
            sender: "a@x".into(),
            recipients: vec!["b@x".into(), "c@x".into()],
            ..Envelope::default()
        };
        let new = Envelope {
            sender: "bounce@x".into(),
            recipients: vec!["C@x".into(), "d@x".into()],
            ..Envelope::default()
        };
        let changes = modifications(&before, &after, &old, &new);
        assert_eq!(
            changes,
            [
                Response::ChangeFrom {
                    sender: "<bounce@x>".into(),
                    args: String::new()
                },
                Response::DeleteRcpt("<b@x>".into()),
                Response::AddRcpt("<d@x>".into()),
                Response::ReplaceBody(b"new\r\n".to_vec()),
            ]
        );
        assert!(modifications(&before, &before, &old, &old).is_empty());
        // The client's RET and ENVID go with a changed sender.
        let asked = Envelope {
            dsn: crate::mail::dsn::EnvelopeDsn {
                ret: Some(crate::mail::dsn::Ret::Hdrs),
                envid: Some("e 1".into()),
                ..Default::default()
            },
            ..old.clone()
        };
        let changes = modifications(&before, &before, &asked, &new);
        assert_eq!(
            changes[0],
            Response::ChangeFrom {
                sender: "<bounce@x>".into(),
                args: "RET=HDRS ENVID=e+201".into()
            }
        );
    }
}
