//! Stores: local users and their mailboxes.

pub mod mailbox;
pub mod users;
