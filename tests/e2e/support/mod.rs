//! What the end-to-end tests share: where the binary and plugins are, a running gateway
//! ([`Gateway::start`] or [`Gateway::builder`]), the config it starts from, clients that speak
//! its protocols, the external programs that stand beside it ([`peers`]), and waits with
//! deadlines.

mod authoring;
mod clients;
mod config;
mod gateway;
mod mailboxes;
mod paths;
pub mod peers;
mod python_clients;
mod responsiveness;
mod waits;

pub use authoring::{home_with_tools, mailgate_as_user};
pub use clients::{curl, imap_raw, imap_raw_background, imap_raw_output, imap_sessions, RawSmtp};
pub use config::probe_plugin;
pub use gateway::{Gateway, GatewayBuilder, BOUNDED_ADDRESS_SPACE, USERS};
pub use paths::{binary, mailgate, plugin_dir, pyenv_python, root, shared_plugin_cache, Run};
pub use python_clients::{
    dkimpy_verify, imap_flags, jmap_client, python, python_filter, webmail_browser,
};
pub use responsiveness::{exclusive, ProbeLog, Responsiveness};
pub use waits::{free_port, wait_for_port, wait_until};
