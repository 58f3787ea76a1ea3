//! mailgate: a mail gateway whose filters are sandboxed WebAssembly components.
//!
//! The folders read top down, from the program's face to its floors:
//! - `app` composes and runs the gateway; `ops` is what an operator drives at run time (the
//!   admin socket, config checks, hot reload, service manager readiness).
//! - Protocols over `net` (listeners, connections, TLS, limits, drain): `smtp` (the wire of
//!   inbound and submission), `milter` (both ways), and `access` — the readers of stored mail,
//!   IMAP, POP3 and JMAP. `session_context` is what every protocol's sessions share.
//! - `delivery`: everything after acceptance — the durable `queue`, onward `relay` by SMTP,
//!   `local` delivery into Maildir.
//! - `plugin` is the plugin runtime (it knows no protocol); `sender_auth` checks and makes SPF,
//!   DKIM, DMARC and ARC; `harness` runs chains offline (`check`, `test`).
//! - `store` holds users, mailboxes and the kv backends, behind their traits.
//! - Floors: `mail` (domain types, dates, the clock), `message` (the model plugins read and
//!   edit), `config`, `telemetry`, `dns`, and `sys` (small operating-system helpers).

pub mod access;
pub mod app;
pub mod config;
pub mod delivery;
pub mod dns;
pub mod harness;
pub mod intake;
pub mod mail;
pub mod message;
pub mod milter;
pub mod net;
pub mod ops;
pub mod plugin;
pub mod sender_auth;
pub mod session_context;
pub mod smtp;
pub mod store;
pub mod sys;
pub mod telemetry;
