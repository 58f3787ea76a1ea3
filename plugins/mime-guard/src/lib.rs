//! mime-guard: dangerous attachments and a disclaimer footer.
//!
//! Looks at every MIME part, nested multiparts and attached messages (message/rfc822)
//! included, using the decoded file name (RFC 2231 parameters, RFC 2047 encoded words).
//!
//! Config (`[plugin.config]`):
//! - `extensions = ["exe", "scr", "js", "vbs"]`: file extensions blocked (case-insensitive);
//! - `content-types = ["application/x-msdownload"]`: media types blocked;
//! - `action = "reject"` (550 5.7.1) or `"strip"` (the part is removed, or replaced by a short
//!   note where removing it would leave its container empty; `X-Mailgate-Stripped` lists them);
//! - `footer = "..."`: a disclaimer appended to the text parts.

use mailgate_sdk::prelude::*;

struct MimeGuard;

fn blocked(part: &MimePart) -> bool {
    if part.is_multipart || part.is_message {
        return false;
    }
    let by_extension = part.filename.as_deref().is_some_and(|name| {
        let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
        config::list("extensions").iter().any(|ext| {
            name.ends_with(&format!(
                ".{}",
                ext.trim_start_matches('.').to_ascii_lowercase()
            ))
        })
    });
    let media = format!(
        "{}/{}",
        part.content_type.media_type, part.content_type.subtype
    );
    let by_type = config::list("content-types")
        .iter()
        .any(|t| t.eq_ignore_ascii_case(&media));
    by_extension || by_type
}

fn label(part: &MimePart) -> String {
    part.filename.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            part.content_type.media_type, part.content_type.subtype
        )
    })
}

/// Strips the blocked parts: removes each one whose container keeps another child, and
/// replaces the others by a note so every multipart stays non-empty.
fn strip(parts: &[MimePart], bad: &[&MimePart], mut outcome: Outcome) -> Outcome {
    for part in bad {
        let siblings_left = parts
            .iter()
            .filter(|p| p.parent.is_some() && p.parent == part.parent)
            .filter(|p| !bad.iter().any(|b| b.id == p.id))
            .count();
        let parent_is_multipart = part
            .parent
            .and_then(|id| parts.iter().find(|p| p.id == id))
            .is_some_and(|p| p.is_multipart);
        if parent_is_multipart && siblings_left > 0 {
            outcome = outcome.remove_part(part.id);
        } else {
            let note = format!(
                "The attachment {} was removed by the mail gateway's policy.\r\n",
                label(part)
            );
            outcome = outcome.replace_part(part.id, "text/plain; charset=utf-8", note.as_bytes());
        }
    }
    let names: Vec<String> = bad.iter().map(|p| label(p)).collect();
    outcome.add_header("X-Mailgate-Stripped", &names.join(", "))
}

impl Plugin for MimeGuard {
    const NAME: &'static str = "mime-guard";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    // Declared, so that a misspelt key (`extension`, which would block nothing) is refused.
    const CONFIG: &'static [ConfigKey] = &[
        ConfigKey::new(
            "extensions",
            ValueType::StringList,
            "file extensions blocked, case-insensitive (exe, scr, ...)",
        )
        .default("[]"),
        ConfigKey::new(
            "content-types",
            ValueType::StringList,
            "media types blocked (application/x-msdownload, ...)",
        )
        .default("[]"),
        ConfigKey::new(
            "action",
            ValueType::String,
            "reject (550 5.7.1), or strip (the part is removed and listed in X-Mailgate-Stripped)",
        )
        .default("\"reject\""),
        ConfigKey::new(
            "footer",
            ValueType::String,
            "a disclaimer appended to the text parts",
        ),
    ];
}

impl Data for MimeGuard {
    fn data(_: &Session, _: &Envelope, message: &Message) -> Outcome {
        let parts = message.parts();
        let bad: Vec<&MimePart> = parts.iter().filter(|p| blocked(p)).collect();
        let mut outcome = Outcome::proceed();
        if !bad.is_empty() {
            if config::get_or("action", "reject") == "reject" {
                let text = format!("Attachment type not allowed: {}", label(bad[0]));
                return Outcome::reject(550, "5.7.1", &text);
            }
            outcome = strip(&parts, &bad, outcome);
        }
        if let Some(footer) = config::get("footer").filter(|f| !f.is_empty()) {
            outcome = outcome.append_footer(&footer);
        }
        outcome
    }
}

export_plugin!(MimeGuard: Data);
