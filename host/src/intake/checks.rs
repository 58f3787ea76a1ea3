//! The gateway's own checks of a transaction, apart from any session: who may relay to whom,
//! the declared and real size, line ends, the MIME shape and mail loops. Each refusal is an
//! answer; `None` means the check passed.

use std::path::Path;

use super::Answer;
use crate::config::LimitsConfig;
use crate::mail::EsmtpParam;
use crate::message::header::HeaderBlock;
use crate::message::mime::{excess, Bounds};
use crate::store::mailbox::{is_over_quota, room_for};
use crate::store::users::{Recipient, UserDirectory};

/// Messages from this size on have their structure scanned on a blocking thread (a hand-off
/// costs more than scanning a small message in place).
const SCAN_IN_PLACE_BELOW: usize = 256 * 1024;

pub(super) fn too_big() -> Answer {
    Answer::new(
        552,
        (5, 3, 4),
        "Message size exceeds fixed maximum message size",
    )
}

/// MAIL's SIZE parameter over the limit.
pub(super) fn declared_size(params: &[EsmtpParam], max: usize) -> Option<Answer> {
    let declared = params
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case("SIZE"))
        .and_then(|p| p.value.as_deref())
        .and_then(|v| v.parse::<usize>().ok());
    declared.is_some_and(|s| s > max).then(too_big)
}

/// MAIL's BODY parameter says BINARYMIME (RFC 3030): the content is taken as it comes,
/// bare CR and LF included.
pub(super) fn is_binary(params: &[EsmtpParam]) -> bool {
    params.iter().any(|p| {
        p.name.eq_ignore_ascii_case("BODY")
            && p.value
                .as_deref()
                .is_some_and(|v| v.eq_ignore_ascii_case("BINARYMIME"))
    })
}

pub(super) fn wants_smtputf8(params: &[EsmtpParam]) -> bool {
    params
        .iter()
        .any(|p| p.name.eq_ignore_ascii_case("SMTPUTF8"))
}

/// Local recipients must exist; other domains relay only for authenticated clients or
/// configured networks (`trusted`). A recipient the users source cannot place now is
/// deferred, never refused for good.
pub(super) fn recipient(users: &UserDirectory, rcpt: &str, trusted: bool) -> Option<Answer> {
    match users.recipient(rcpt) {
        Recipient::Mailboxes(_) => None,
        Recipient::Unknown => Some(Answer::new(
            550,
            (5, 1, 1),
            "Mailbox unavailable: no such user here",
        )),
        Recipient::Unavailable => Some(Answer::new(
            451,
            (4, 4, 3),
            "Users directory temporarily unavailable, try again later",
        )),
        Recipient::Remote if trusted => None,
        Recipient::Remote => Some(Answer::new(554, (5, 7, 1), "Relay access denied")),
    }
}

/// A local recipient one of whose mailboxes is at its storage quota (`limit` bytes, 0: none):
/// `452 4.2.2`, a temporary refusal (RFC 3463 "mailbox full"), as Postfix and Dovecot's LMTP
/// answer, so the sender's queue tries again once the user has made room.
pub(super) fn room(
    users: &UserDirectory,
    rcpt: &str,
    mail_root: &Path,
    limit: u64,
) -> Option<Answer> {
    if limit == 0 {
        return None;
    }
    let Recipient::Mailboxes(targets) = users.recipient(rcpt) else {
        return None;
    };
    let full = crate::sys::blocking::run(|| {
        targets.iter().any(|target| {
            matches!(room_for(&target.maildir(mail_root), limit, 0), Err(e) if is_over_quota(&e))
        })
    });
    full.then(|| Answer::new(452, (4, 2, 2), "Mailbox full"))
}

/// The content as such: within the size limit, and (unless BINARYMIME) with CRLF line ends
/// only — what the DATA reader enforces on the wire, for entry points without one.
pub(super) fn content(body: &[u8], binary: bool, limits: &LimitsConfig) -> Option<Answer> {
    if body.len() > limits.max_message_bytes {
        return Some(too_big());
    }
    if !binary && has_bare_line_end(body) {
        return Some(Answer::new(
            550,
            (5, 6, 11),
            "Bare CR or LF in message data",
        ));
    }
    None
}

/// True when a CR not before LF, or an LF not after CR, is in `bytes`.
pub fn has_bare_line_end(bytes: &[u8]) -> bool {
    memchr::memchr2_iter(b'\r', b'\n', bytes).any(|i| match bytes[i] {
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        _ => i == 0 || bytes[i - 1] != b'\r',
    })
}

/// The MIME nesting bound and the loop check (too many Received fields). The scan of a large
/// message runs on a blocking thread, not on the worker other sessions share.
pub(super) fn shape(body: &[u8], limits: &LimitsConfig) -> Option<Answer> {
    // First, before anything splits the header into fields: a scan of at most a megabyte.
    if crate::message::header::header_too_large(body) {
        return Some(Answer::new(
            554,
            (5, 6, 0),
            crate::message::header::HEADER_TOO_LARGE,
        ));
    }
    let bounds = Bounds {
        depth: limits.max_mime_depth,
        parts: limits.max_mime_parts,
    };
    let scan = || {
        let received = HeaderBlock::parse(body, 0).count(body, "Received");
        (excess(body, bounds), received)
    };
    let (excess, received) = if body.len() < SCAN_IN_PLACE_BELOW {
        scan()
    } else {
        crate::sys::blocking::run(scan)
    };
    if let Some(excess) = excess {
        // Permanent: the same bytes would be refused again on every retry.
        return Some(Answer::new(554, (5, 6, 0), excess.describe()));
    }
    (received > limits.max_received_headers).then(|| {
        Answer::new(
            554,
            (5, 4, 6),
            "Too many Received headers: mail loop detected",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_line_ends_are_found_anywhere() {
        assert!(!has_bare_line_end(b"a\r\nb\r\n"));
        assert!(has_bare_line_end(b"\na"));
        assert!(has_bare_line_end(b"a\rb"));
        assert!(has_bare_line_end(b"a\r"));
        assert!(has_bare_line_end(b"a\n"));
        assert!(!has_bare_line_end(b""));
    }

    #[test]
    fn binarymime_is_read_from_the_body_parameter() {
        let param = |name: &str, value: &str| EsmtpParam {
            name: name.into(),
            value: Some(value.into()),
        };
        assert!(is_binary(&[param("BODY", "binarymime")]));
        assert!(!is_binary(&[param("BODY", "8BITMIME")]));
        assert!(!is_binary(&[param("SIZE", "10")]));
    }
}
