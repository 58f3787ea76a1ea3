//! Stores: local users and their mailboxes.

pub mod flags;
pub mod keywords;
pub mod mailbox;
pub mod names;
pub mod retrieval;
pub mod snapshots;
pub mod sql_users;
pub mod uidlist;
pub mod users;
pub mod watch;
