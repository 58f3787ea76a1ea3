//! mailgate: a mail gateway whose filters are sandboxed WebAssembly components.
//!
//! `app` builds and runs the gateway over `net` (listeners, connections, TLS, limits, drain),
//! with `smtp`, `pop3`, `imap`, `jmap` and `milter` as its protocols and `shared` what their sessions share.
//! `mail` holds the domain types, `message` the message model plugins read and edit, `plugin`
//! the plugin runtime, `queue` the durable spool and relay queue, `relay` onward delivery,
//! `delivery` local Maildir delivery, `store` users and mailboxes, `telemetry` metrics and the
//! message journal, `config` the TOML config; `harness` runs chains offline (`check`, `test`).

pub mod admin;
pub mod app;
pub mod blocking;
pub mod config;
pub mod config_check;
pub mod datadir;
pub mod delivery;
pub mod dns;
pub mod harness;
pub mod imap;
pub mod intake;
pub mod jmap;
pub mod kv;
pub mod mail;
pub mod mailauth;
pub mod message;
pub mod milter;
pub mod net;
pub mod plugin;
pub mod pop3;
pub mod queue;
pub mod relay;
pub mod reload;
pub mod secret;
pub mod service_manager;
pub mod shared;
pub mod smtp;
pub mod store;
pub mod telemetry;
