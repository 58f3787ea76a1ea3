//! The command line: its definitions ([`args`]) and the administration commands behind them;
//! `main.rs` starts the runtime and dispatches.

pub mod args;
pub mod dkim;
pub mod load;
pub mod plugin_authoring;
pub mod quarantine;
pub mod queue;
pub mod server;
pub mod users;
