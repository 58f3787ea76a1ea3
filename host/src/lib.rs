//! mailgate: a mail gateway whose filters are sandboxed WebAssembly components.
//!
//! `config` reads the gateway's TOML; `plugin` loads and runs the plugin chain; `message` is
//! the message model plugins read and edit; `harness` runs chains offline (`check`, `test`);
//! `smtp` is the server, `queue` the durable spool, `delivery` local Maildir delivery and
//! `store` the local users.

pub mod admin;
pub mod blocking;
pub mod config;
pub mod config_check;
pub mod datadir;
pub mod delivery;
pub mod harness;
pub mod imap;
pub mod limits;
pub mod mail;
pub mod message;
pub mod net;
pub mod plugin;
pub mod pop3;
pub mod queue;
pub mod relay;
pub mod reload;
pub mod service_manager;
pub mod smtp;
pub mod store;
pub mod telemetry;
