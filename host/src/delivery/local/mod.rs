//! Local delivery: Maildir files, batches of messages, and the worker that runs them.

pub mod deliver;
pub mod maildir;
pub mod worker;
