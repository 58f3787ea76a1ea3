//! Stores: local users and their mailboxes.

pub mod flags;
pub mod keywords;
pub mod mailbox;
pub mod retrieval;
pub mod snapshots;
pub mod special_use;
pub mod sql_users;
pub mod subscriptions;
pub mod uidlist;
pub mod users;
pub mod watch;
