//! Getting queued messages to their destination: local Maildir delivery (relay comes next).

pub mod local;
pub mod maildir;
