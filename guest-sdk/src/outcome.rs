//! What a stage returns: a verdict with its reply, and the edits to make.

use crate::bindings::mailgate::plugin::edits;
use crate::{EnhancedStatus, HostPort, Reply, Verdict};

impl Reply {
    /// A reply with an enhanced status given as text, e.g. `Reply::new(550, "5.1.1", "No such user")`.
    /// An empty or malformed status leaves it out.
    pub fn new(code: u16, enhanced: &str, text: &str) -> Reply {
        Reply {
            code,
            enhanced: parse_status(enhanced),
            lines: vec![text.to_string()],
        }
    }

    /// Adds a line of reply text.
    pub fn line(mut self, text: &str) -> Reply {
        self.lines.push(text.to_string());
        self
    }
}

fn parse_status(text: &str) -> Option<EnhancedStatus> {
    let mut it = text.split('.');
    let status = EnhancedStatus {
        class: it.next()?.parse().ok()?,
        subject: it.next()?.parse().ok()?,
        detail: it.next()?.parse().ok()?,
    };
    it.next().is_none().then_some(status)
}

/// A change to the message or envelope. The host checks each one; one it refuses (a header
/// with CR or LF, `defer` outside the deliver stage, ...) makes the stage call a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Appends a field at the end of the header.
    AddHeader {
        /// Field name.
        name: String,
        /// Field value (no CR, LF or NUL).
        value: String,
    },
    /// Inserts a field at `index` (0 is first; past the end appends).
    InsertHeader {
        /// Position among the fields.
        index: u32,
        /// Field name.
        name: String,
        /// Field value.
        value: String,
    },
    /// Replaces every field with this name by one (appended if there is none).
    SetHeader {
        /// Field name.
        name: String,
        /// Field value.
        value: String,
    },
    /// Removes every field with this name.
    RemoveHeader(String),
    /// Replaces everything after the header (CRLF line ends).
    ReplaceBody(Vec<u8>),
    /// Replaces a part's content; the host picks the transfer encoding.
    ReplacePart {
        /// The part's id from [`crate::Message::parts`].
        id: u32,
        /// The full Content-Type value.
        content_type: String,
        /// The new content, not encoded.
        content: Vec<u8>,
    },
    /// Removes a part (by id) and everything inside it.
    RemovePart(u32),
    /// Appends text to every text/plain and text/html part that is not an attachment.
    AppendFooter(String),
    /// Replaces the envelope sender (`""` for `<>`).
    ChangeSender(String),
    /// Adds an envelope recipient.
    AddRecipient(String),
    /// Removes an envelope recipient.
    RemoveRecipient(String),
    /// Deliver stage only: send this attempt elsewhere.
    Reroute(HostPort),
    /// Deliver stage only: try again after this many seconds.
    Defer(u32),
}

impl Edit {
    /// Hands the edit to the host, which checks it now and applies it when the call returns.
    fn submit(&self) -> Result<(), String> {
        match self {
            Edit::AddHeader { name, value } => edits::add_header(name, value),
            Edit::InsertHeader { index, name, value } => edits::insert_header(*index, name, value),
            Edit::SetHeader { name, value } => edits::set_header(name, value),
            Edit::RemoveHeader(name) => edits::remove_header(name),
            Edit::ReplaceBody(body) => edits::replace_body(body),
            Edit::ReplacePart {
                id,
                content_type,
                content,
            } => edits::replace_part(*id, content_type, content),
            Edit::RemovePart(id) => edits::remove_part(*id),
            Edit::AppendFooter(text) => edits::append_footer(text),
            Edit::ChangeSender(address) => edits::change_sender(address),
            Edit::AddRecipient(address) => edits::add_recipient(address),
            Edit::RemoveRecipient(address) => edits::remove_recipient(address),
            Edit::Reroute(target) => edits::reroute(target),
            Edit::Defer(seconds) => edits::defer(*seconds),
        }
    }
}

/// A verdict and the edits that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What the stage decides.
    pub verdict: Verdict,
    /// The changes to make, in order.
    pub edits: Vec<Edit>,
}

impl Outcome {
    fn of(verdict: Verdict) -> Outcome {
        Outcome {
            verdict,
            edits: Vec::new(),
        }
    }

    /// Submits the edits and returns the verdict (the host records a refused edit itself and
    /// faults the call, so the error needs no handling here beyond the log line).
    pub(crate) fn submit(self) -> Verdict {
        for edit in &self.edits {
            if let Err(why) = edit.submit() {
                crate::log::error(&format!("edit refused: {why}"));
            }
        }
        self.verdict
    }

    /// No objection: the next plugin runs.
    pub fn proceed() -> Outcome {
        Outcome::of(Verdict::Continue)
    }
    /// Accept and stop the chain for this stage.
    pub fn accept() -> Outcome {
        Outcome::of(Verdict::Accept)
    }
    /// Refuse with a 5xx reply, e.g. `Outcome::reject(550, "5.7.1", "Not here")`.
    pub fn reject(code: u16, enhanced: &str, text: &str) -> Outcome {
        Outcome::of(Verdict::Reject(Reply::new(code, enhanced, text)))
    }
    /// Refuse for now with a 4xx reply.
    pub fn tempfail(code: u16, enhanced: &str, text: &str) -> Outcome {
        Outcome::of(Verdict::Tempfail(Reply::new(code, enhanced, text)))
    }
    /// Reply, then close the connection.
    pub fn disconnect(code: u16, enhanced: &str, text: &str) -> Outcome {
        Outcome::of(Verdict::Disconnect(Reply::new(code, enhanced, text)))
    }
    /// Accept the message and drop it (data and deliver stages).
    pub fn discard() -> Outcome {
        Outcome::of(Verdict::Discard)
    }
    /// Accept the message and hold it aside (data and deliver stages).
    pub fn quarantine(reason: &str) -> Outcome {
        Outcome::of(Verdict::Quarantine(reason.to_string()))
    }
    /// Retrieval only: do not show this message to this client.
    pub fn hide() -> Outcome {
        Outcome::of(Verdict::Hide)
    }

    /// Adds any edit.
    pub fn edit(mut self, edit: Edit) -> Outcome {
        self.edits.push(edit);
        self
    }
    /// Appends a header field.
    pub fn add_header(self, name: &str, value: &str) -> Outcome {
        self.edit(Edit::AddHeader {
            name: name.into(),
            value: value.into(),
        })
    }
    /// Inserts a header field at `index` (0 is first).
    pub fn insert_header(self, index: u32, name: &str, value: &str) -> Outcome {
        self.edit(Edit::InsertHeader {
            index,
            name: name.into(),
            value: value.into(),
        })
    }
    /// Replaces every field named `name` by one (appended when absent).
    pub fn set_header(self, name: &str, value: &str) -> Outcome {
        self.edit(Edit::SetHeader {
            name: name.into(),
            value: value.into(),
        })
    }
    /// Removes every field named `name`.
    pub fn remove_header(self, name: &str) -> Outcome {
        self.edit(Edit::RemoveHeader(name.into()))
    }
    /// Replaces the body (CRLF line ends).
    pub fn replace_body(self, body: &[u8]) -> Outcome {
        self.edit(Edit::ReplaceBody(body.to_vec()))
    }
    /// Replaces a part's content; the host picks the transfer encoding.
    pub fn replace_part(self, id: u32, content_type: &str, content: &[u8]) -> Outcome {
        self.edit(Edit::ReplacePart {
            id,
            content_type: content_type.into(),
            content: content.to_vec(),
        })
    }
    /// Removes a part and everything inside it.
    pub fn remove_part(self, id: u32) -> Outcome {
        self.edit(Edit::RemovePart(id))
    }
    /// Appends text to every text part that is not an attachment.
    pub fn append_footer(self, text: &str) -> Outcome {
        self.edit(Edit::AppendFooter(text.into()))
    }
    /// Replaces the envelope sender.
    pub fn change_sender(self, sender: &str) -> Outcome {
        self.edit(Edit::ChangeSender(sender.into()))
    }
    /// Adds an envelope recipient.
    pub fn add_recipient(self, rcpt: &str) -> Outcome {
        self.edit(Edit::AddRecipient(rcpt.into()))
    }
    /// Removes an envelope recipient.
    pub fn remove_recipient(self, rcpt: &str) -> Outcome {
        self.edit(Edit::RemoveRecipient(rcpt.into()))
    }
    /// Delivery only: send this attempt to `host` and `port`.
    pub fn reroute(self, host: &str, port: u16) -> Outcome {
        self.edit(Edit::Reroute(HostPort {
            host: host.into(),
            port,
        }))
    }
    /// Delivery only: try again after `seconds`.
    pub fn defer(self, seconds: u32) -> Outcome {
        self.edit(Edit::Defer(seconds))
    }
}
