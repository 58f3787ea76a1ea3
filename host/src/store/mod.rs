//! Stores: local users and their mailboxes.

pub mod mailbox;
pub mod retrieval;
pub mod users;
pub mod watch;
