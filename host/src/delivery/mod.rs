//! Everything after a message is accepted: the durable queue, onward relay by SMTP, and
//! local delivery into Maildir.

pub mod local;
pub mod queue;
pub mod relay;
