//! Builders for what a stage returns: verdicts with their replies, and edits.

use crate::{
    Edit, EnhancedStatus, HeaderField, HeaderInsert, Outcome, PartReplacement, Reply, Verdict,
};

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

impl Outcome {
    fn of(verdict: Verdict) -> Outcome {
        Outcome {
            verdict,
            edits: Vec::new(),
        }
    }

    /// No objection: the next plugin runs.
    pub fn proceed() -> Outcome {
        Outcome::of(Verdict::Continue)
    }
    /// Accept and stop the chain for this stage.
    pub fn accept() -> Outcome {
        Outcome::of(Verdict::Accept)
    }
    /// Refuse with a 5xx reply.
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
    /// Accept the message and drop it.
    pub fn discard() -> Outcome {
        Outcome::of(Verdict::Discard)
    }
    /// Accept the message and hold it aside.
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
    pub fn add_header(self, name: &str, value: &str) -> Outcome {
        self.edit(Edit::AddHeader(field(name, value)))
    }
    pub fn insert_header(self, index: u32, name: &str, value: &str) -> Outcome {
        self.edit(Edit::InsertHeader(HeaderInsert {
            index,
            field: field(name, value),
        }))
    }
    pub fn set_header(self, name: &str, value: &str) -> Outcome {
        self.edit(Edit::SetHeader(field(name, value)))
    }
    pub fn remove_header(self, name: &str) -> Outcome {
        self.edit(Edit::RemoveHeader(name.to_string()))
    }
    pub fn replace_body(self, body: &[u8]) -> Outcome {
        self.edit(Edit::ReplaceBody(body.to_vec()))
    }
    pub fn replace_part(self, id: u32, content_type: &str, content: &[u8]) -> Outcome {
        self.edit(Edit::ReplacePart(PartReplacement {
            id,
            content_type: content_type.to_string(),
            content: content.to_vec(),
        }))
    }
    pub fn remove_part(self, id: u32) -> Outcome {
        self.edit(Edit::RemovePart(id))
    }
    pub fn append_footer(self, text: &str) -> Outcome {
        self.edit(Edit::AppendFooter(text.to_string()))
    }
    pub fn change_sender(self, sender: &str) -> Outcome {
        self.edit(Edit::ChangeSender(sender.to_string()))
    }
    pub fn add_recipient(self, rcpt: &str) -> Outcome {
        self.edit(Edit::AddRecipient(rcpt.to_string()))
    }
    pub fn remove_recipient(self, rcpt: &str) -> Outcome {
        self.edit(Edit::RemoveRecipient(rcpt.to_string()))
    }
    /// Delivery only: send this attempt to `host:port`.
    pub fn reroute(self, target: &str) -> Outcome {
        self.edit(Edit::Reroute(target.to_string()))
    }
    /// Delivery only: try again after `seconds`.
    pub fn defer(self, seconds: u32) -> Outcome {
        self.edit(Edit::Defer(seconds))
    }
}

fn field(name: &str, value: &str) -> HeaderField {
    HeaderField {
        name: name.to_string(),
        value: value.to_string(),
    }
}
