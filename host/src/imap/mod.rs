//! IMAP4rev1 (RFC 3501) over the users' Maildirs. Commands are decoded with `imap-codec`
//! (literals and LITERAL+ included); responses are written by `wire` (strings, ENVELOPE,
//! BODYSTRUCTURE, body sections); `search` evaluates SEARCH keys; `session` is the state machine.

pub mod framing;
pub mod search;
pub mod session;
pub mod wire;
