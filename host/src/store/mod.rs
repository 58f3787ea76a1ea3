//! Stores: local users (and, later, mailboxes).

pub mod users;
