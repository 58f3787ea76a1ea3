//! Chain members that are not WebAssembly components: filters outside the process, reached
//! over their own protocol (a milter is one). The runtime knows them only through these traits:
//! whoever builds the gateway hands `PluginSet::load` a factory that turns a config entry into
//! a filter, and the chain asks the filter for one conversation per client session.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::verdict::{Edit, Stage, StageCall, Verdict};
use crate::config::{Config, PluginConfig};
use crate::mail::MailState;

/// Builds the filter a `[[plugin]]` entry names (an entry that is not a component).
pub trait ExternalFactory: Send + Sync {
    /// The filter, or why the entry cannot be one (shown with the entry's line).
    fn build(
        &self,
        entry: &PluginConfig,
        config: &Config,
    ) -> Result<Arc<dyn ExternalFilter>, String>;
}

/// The factory of a runtime that runs components only.
pub struct NoExternals;

impl ExternalFactory for NoExternals {
    fn build(&self, entry: &PluginConfig, _: &Config) -> Result<Arc<dyn ExternalFilter>, String> {
        Err(format!(
            "{} is not a component, and this program runs components only",
            entry.target()
        ))
    }
}

/// A filter outside the process.
pub trait ExternalFilter: Send + Sync {
    /// The kind and address, e.g. `milter inet:127.0.0.1:11332`.
    fn target(&self) -> String;
    /// The protocol it speaks, shown where a component shows its contract version.
    fn protocol(&self) -> &'static str;
    /// The stages it takes part in.
    fn stages(&self) -> Vec<Stage>;
    /// A conversation for one client session; nothing is sent until its first call.
    fn open(&self, session_id: &str) -> Box<dyn Conversation>;
}

/// One client session's exchange with an outside filter. It lives as long as the session's
/// transactions keep handing it on (`Transaction::take_over`), so the filter sees one
/// connection per session as an MTA would show it; dropping it ends the conversation.
#[async_trait]
pub trait Conversation: Send {
    /// Runs one stage; the outcome is validated by the chain like a component's.
    async fn call(
        &mut self,
        call: StageCall<'_>,
        state: &MailState,
    ) -> Result<(Verdict, Vec<Edit>), ExternalFault>;
}

/// Why an outside filter gave no usable answer.
#[derive(Debug, Clone)]
pub enum ExternalFault {
    /// It did not answer within its deadline.
    Timeout(Duration, String),
    /// It hung up or broke its protocol.
    Peer(String),
    /// It is known to be down (it could not be reached, or it was not asked while its circuit
    /// breaker is open). The filter reports its outage once itself, so the chain applies the
    /// member's failure policy without a warning or a fault of its own for each call.
    Down(String),
}
