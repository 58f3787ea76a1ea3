//! The command line's definitions: every subcommand and its options (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use mailgate::config::LogFormat;
use mailgate::delivery::queue::commands::QueueCommand;
use mailgate::harness::check;

#[derive(Parser)]
#[command(
    name = "mailgate",
    version,
    about = "Mail gateway with WebAssembly filters"
)]
pub(crate) struct Cli {
    /// The log format on stderr: text, or json (one object per line, with the session and queue
    /// ids of the spans around each event). Default: the config's `[log] format`, else text.
    #[arg(long, global = true, value_enum)]
    pub(crate) log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run one message through the plugin chain offline and print every stage's result.
    Check {
        /// Gateway config (TOML). Without it, the embedded defaults with the bundled plugins.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Take the chain from a case file (its `config` or its `[[plugin]]` entries).
        #[arg(long, conflicts_with = "config")]
        cases: Option<PathBuf>,
        #[command(flatten)]
        options: check::CheckOptions,
    },
    /// Run the gateway: SMTP listeners, spool, local delivery.
    Serve {
        /// Gateway config (TOML). Without it, the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (queue, mailboxes, users, certificate); overrides server.data-dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Manage local users (the password is read from standard input).
    User {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        action: UserAction,
    },
    /// Reload the plugin chain of the running server now (it also reloads by itself when the
    /// config or a plugin file changes, and on SIGHUP). Exit 1 when the reload failed (the
    /// plugins in service stay), 2 when no server runs.
    Reload {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// The running server's plugins: order per stage, version, file hash, calls, faults.
    Plugins {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The last reloads and their outcome instead.
        #[arg(long)]
        history: bool,
        /// Offline: what the named plugin of the config is, its stages, capabilities and the
        /// config keys it takes.
        #[arg(long, value_name = "NAME", conflicts_with = "history")]
        explain: Option<String>,
    },
    /// Inspect and manage the queue; talks to the running server, or works on the files when
    /// none runs.
    Queue {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Messages plugins set aside: list them, show one, release one into the queue for its
    /// original recipients, or delete one.
    Quarantine {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        action: QuarantineAction,
    },
    /// Check a config before deploying it: parse it, load every plugin, print the listeners,
    /// routes and the chain per stage. Exit 0 when good, 1 when refused (the reason printed),
    /// 2 when the file cannot be read.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// One message's journey from the journal: its session, each stage with each plugin's
    /// verdict, edits and time, the replies, the delivery attempts, the end. Works whether or
    /// not the server runs. Exit 1 when the journal has nothing for it.
    Trace {
        /// A queue id (`250 Ok: queued as ID`) or a session id (from the logs).
        #[arg(required_unless_present = "rcpt")]
        id: Option<String>,
        /// Instead: the recent transactions that named this recipient, accepted or refused.
        #[arg(long, value_name = "ADDRESS", conflicts_with = "id")]
        rcpt: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// DKIM keys for outgoing mail.
    Dkim {
        #[command(subcommand)]
        action: DkimAction,
    },
    /// Write plugins: start one from a template, build one.
    Plugin {
        #[command(subcommand)]
        action: crate::cli::plugin_authoring::PluginAction,
    },
    /// Run policy test cases (TOML case files or directories of them).
    Test {
        /// Write JUnit XML here.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Only the cases whose name contains this text.
        #[arg(long, value_name = "NAME")]
        case: Option<String>,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
pub(crate) enum DkimAction {
    /// Make a signing key: writes it (mode 0600, never over an existing file) and prints the
    /// DNS record to publish and the `[[dkim]]` entry that uses it.
    Keygen {
        domain: String,
        selector: String,
        #[arg(long, value_enum, default_value = "rsa-sha256")]
        algorithm: mailgate::config::DkimAlgorithm,
        /// RSA key size (2048 at least: smaller keys are refused by verifiers and by the signer).
        #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u16).range(2048..=4096))]
        bits: u16,
        /// Where to write the key (default `DOMAIN.SELECTOR.key` here).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub(crate) enum ConfigAction {
    /// Parse the config (default: the embedded defaults) and load its plugins.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub(crate) enum UserAction {
    /// Add a user; the password is the first line of standard input.
    Add {
        address: String,
        /// Also allow POP3 APOP logins (stores the password itself, not only its hash).
        #[arg(long)]
        apop: bool,
    },
    /// List the users.
    List,
    /// Remove a user.
    Remove { address: String },
}

#[derive(Subcommand)]
pub(crate) enum QueueAction {
    /// Every queued message: id, age, size, next attempt, sender, recipients, last error.
    List,
    /// One message: envelope, delivery state and content.
    Show { id: String },
    /// Try a message (or all of them) now.
    Retry {
        #[arg(required_unless_present = "all")]
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Remove a message without delivering it or bouncing it.
    Delete { id: String },
    /// Keep a message from being delivered until it is released.
    Hold { id: String },
    /// Let a held message be delivered again.
    Release { id: String },
}

impl QueueAction {
    pub(crate) fn command(self) -> QueueCommand {
        match self {
            QueueAction::List => QueueCommand::List,
            QueueAction::Show { id } => QueueCommand::Show(id),
            QueueAction::Retry { id, .. } => QueueCommand::Retry(id),
            QueueAction::Delete { id } => QueueCommand::Delete(id),
            QueueAction::Hold { id } => QueueCommand::Hold(id),
            QueueAction::Release { id } => QueueCommand::Release(id),
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum QuarantineAction {
    /// Every quarantined message: id, time, size, deciding plugin, sender, recipients, reason.
    List,
    /// One message: its envelope, who quarantined it and why, and its header section.
    Show { id: String },
    /// Put the message back in the queue for its original recipients and remove it from
    /// quarantine. The data stage does not run again (the release is the operator's
    /// decision); the deliver stage runs as for any queued message. Through the running
    /// server, or into the queue files (delivered at the next start) when none runs.
    Release {
        id: String,
        /// Also leave the plugin that quarantined the message out of its deliver stage (so a
        /// deliver-stage quarantine does not happen again).
        #[arg(long)]
        skip_plugin: bool,
    },
    /// Remove the message for good.
    Delete { id: String },
}
