//! Mail access: the readers of stored mail — IMAP, POP3 and JMAP (with the webmail).

pub mod imap;
pub mod jmap;
pub mod pop3;
