//! Stores: local users (their canonical names, the file or database they come from) and their
//! mailboxes.

pub mod flags;
pub mod keywords;
pub mod kv;
pub mod mailbox;
pub mod names;
pub mod snapshots;
pub mod special_use;
pub mod sql_users;
pub mod subscriptions;
pub mod uidlist;
pub mod urlauth_keys;
pub mod users;
pub mod watch;
