//! The plugin runtime: loads WebAssembly components named in the config, runs them in order at
//! each stage of a message's life, and contains whatever they do wrong.

mod active;
pub mod bindings;
mod cache;
mod chain;
mod contract_v0_1;
mod contract_v0_2;
mod engine;
pub mod external;
pub mod host_api;
mod imports;
mod info;
mod loader;
mod order;
pub mod retrieve;
pub mod services;
mod ticker;
mod trap;
pub mod verdict;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use active::ActivePlugins;
pub use chain::{PluginRun, StageReport, Transaction};
pub use engine::Runtime;
pub use external::{Conversation, ExternalFactory, ExternalFault, ExternalFilter};
pub use info::{ConfigKey, PluginInfo, ValueType};
pub use loader::{LoadedPlugin, PluginSet};
pub use order::{stage_list, StageOrder};
pub use services::Services;
pub use verdict::{Edit, Stage, StageCall, Verdict};

/// Host powers a plugin must declare and the operator must grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Kv,
    Dns,
    Files,
}

impl Capability {
    pub fn name(self) -> &'static str {
        match self {
            Capability::Kv => "kv",
            Capability::Dns => "dns",
            Capability::Files => "files",
        }
    }

    pub fn parse(name: &str) -> Option<Capability> {
        [Capability::Kv, Capability::Dns, Capability::Files]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

impl From<crate::config::Grant> for Capability {
    fn from(grant: crate::config::Grant) -> Capability {
        match grant {
            crate::config::Grant::Kv => Capability::Kv,
            crate::config::Grant::Dns => Capability::Dns,
            crate::config::Grant::Files => Capability::Files,
        }
    }
}

#[derive(Debug, Error)]
pub enum PluginError {
    #[error("plugin {path}: cannot read: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("plugin {path}: not a usable WebAssembly component: {reason}")]
    NotComponent { path: PathBuf, reason: String },
    #[error(
        "plugin {path}: implements no contract this gateway runs \
         (mailgate:plugin@0.2.x or @0.1.0): {reason}"
    )]
    Contract { path: PathBuf, reason: String },
    #[error("plugin {path}: describe failed: {reason}")]
    Describe { path: PathBuf, reason: String },
    #[error("{origin}: {reason}")]
    Settings { origin: PathBuf, reason: String },
    #[error("plugin {path}: {reason}")]
    Grant { path: PathBuf, reason: String },
    #[error("plugin runtime: {0}")]
    Engine(String),
}

impl PluginError {
    fn engine(e: impl std::fmt::Display) -> PluginError {
        PluginError::Engine(e.to_string())
    }
}
