//! The milter protocol (Sendmail's filter interface, spoken by Postfix, rspamd, OpenDKIM,
//! ClamAV): its wire format, a packet channel with bounded reads, the client that runs a
//! milter as a member of the chain, and the server that lets an MTA run the chain.

mod channel;
pub mod client;
pub mod codec;
mod modifications;
pub mod server;

use std::sync::Arc;

use crate::config::{Config, PluginConfig};
use crate::plugin::{ExternalFactory, ExternalFilter};

/// Builds the milter members of a chain (`[[plugin]] milter = "inet:HOST:PORT"`).
pub struct Milters;

impl ExternalFactory for Milters {
    fn build(
        &self,
        entry: &PluginConfig,
        config: &Config,
    ) -> Result<Arc<dyn ExternalFilter>, String> {
        let Some(address) = &entry.milter else {
            return Err(format!("{} is not a milter", entry.target()));
        };
        let filter = client::MilterFilter::new(
            &entry.display_name(),
            address,
            entry.timeout(),
            &config.server.hostname,
            config.limits.max_message_bytes,
        )?;
        Ok(Arc::new(filter))
    }
}
