//! The `mailgate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use mailgate::admin;
use mailgate::config::ConfigSource;
use mailgate::config::{Config, LogFormat};
use mailgate::harness::{case, check};
use mailgate::queue::admin::{execute, QueueCommand};
use mailgate::queue::spool::Spool;
use mailgate::queue::state::QueueFiles;

mod plugin_authoring;

#[derive(Parser)]
#[command(
    name = "mailgate",
    version,
    about = "Mail gateway with WebAssembly filters"
)]
struct Cli {
    /// The log format on stderr: text, or json (one object per line, with the session and queue
    /// ids of the spans around each event). Default: the config's `[log] format`, else text.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        action: plugin_authoring::PluginAction,
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
enum DkimAction {
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
enum ConfigAction {
    /// Parse the config (default: the embedded defaults) and load its plugins.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UserAction {
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
enum QueueAction {
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
    fn command(self) -> QueueCommand {
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

fn main() -> ExitCode {
    return_large_buffers_to_the_system();
    let cli = Cli::parse();
    init_logging(log_format(&cli));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mailgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailgate: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The log format: `--log-format`, else the served config's `[log] format`, else text.
fn log_format(cli: &Cli) -> LogFormat {
    if let Some(format) = cli.log_format {
        return format;
    }
    match &cli.command {
        Command::Serve { config, data_dir } => ConfigSource {
            path: config.clone(),
            data_dir: data_dir.clone(),
        }
        .load()
        .map(|c| c.log.format)
        .unwrap_or_default(),
        _ => LogFormat::Text,
    }
}

/// Logs go to stderr, results to stdout. Text has colour only on a terminal; JSON is one object
/// per line with the fields of the spans around the event (session, queue id). By default:
/// warnings, plus the listeners, shutdown and every plugin reload (`MAILGATE_LOG=info` adds
/// every queued message and delivery).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILGATE_LOG")
        .unwrap_or_else(|_| "warn,mailgate::reload=info,mailgate::lifecycle=info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

/// glibc serves an allocation above 128 KiB with its own mapping, but once it has freed one it
/// raises that threshold to the freed size (up to 32 MiB), and later blocks of that size come
/// from the heap and stay there when freed. Every login's argon2 check needs a 19 MiB work area:
/// measured, 200 IMAP logins left ~160 MiB resident (815 KiB per connection). A fixed 1 MiB
/// threshold hands such buffers (and large messages) back when freed: 36 KiB per connection.
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called once, before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check {
            config,
            cases,
            options,
        } => {
            let config = match cases {
                Some(file) => case::case_file_config(&file)?,
                None => load_config(config.as_deref())?,
            };
            mailgate::message::mime::set_max_depth(config.limits.max_mime_depth);
            mailgate::message::mime::set_max_parts(config.limits.max_mime_parts);
            let (text, accepted) = check::check(&options, &config, default_cache_dir()).await?;
            print!("{text}");
            Ok(if accepted {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Serve { config, data_dir } => {
            let source = ConfigSource {
                path: config,
                data_dir,
            };
            mailgate::app::serve(source).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload { config, data_dir } => {
            let source = ConfigSource {
                path: config,
                data_dir,
            };
            ask_running_server(&source.data_dir_lenient(), "reload").await
        }
        Command::Plugins {
            config,
            explain: Some(name),
            ..
        } => {
            let config = load_config(config.as_deref())?;
            let set = check::load_chain(&config, default_cache_dir()).await?;
            let Some(plugin) = set.plugins.iter().find(|p| p.name == name) else {
                let names: Vec<&str> = set.plugins.iter().map(|p| p.name.as_str()).collect();
                anyhow::bail!(
                    "no plugin named {name:?} in the chain ({})",
                    names.join(", ")
                );
            };
            print!("{}", check::explain(plugin));
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins {
            config,
            data_dir,
            history,
            ..
        } => {
            let source = ConfigSource {
                path: config,
                data_dir,
            };
            let request = if history {
                "plugins history"
            } else {
                "plugins"
            };
            ask_running_server(&source.data_dir_lenient(), request).await
        }
        Command::User {
            config,
            data_dir,
            action,
        } => {
            let config = load_with_data_dir(config, data_dir)?;
            match config.local.source.clone() {
                Some(url) => sql_user_command(&config, &url, action).await?,
                None => user_command(&config, action)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Queue {
            config,
            data_dir,
            action,
        } => {
            let config = load_with_data_dir(config, data_dir)?;
            queue_command(&config, action.command()).await
        }
        Command::Config {
            action: ConfigAction::Check { config },
        } => {
            let (text, verdict) = mailgate::config_check::check(config, default_cache_dir()).await;
            print!("{text}");
            Ok(match verdict {
                mailgate::config_check::Verdict::Good => ExitCode::SUCCESS,
                mailgate::config_check::Verdict::Refused => ExitCode::from(1),
                mailgate::config_check::Verdict::Unchecked => ExitCode::from(2),
            })
        }
        Command::Trace {
            id,
            rcpt,
            config,
            data_dir,
        } => {
            use mailgate::telemetry::{journal, trace};
            let config = load_with_data_dir(config, data_dir)?;
            let query = match (id, rcpt) {
                (_, Some(address)) => trace::Query::Recipient(address),
                (Some(id), None) => trace::Query::Id(id),
                (None, None) => anyhow::bail!("give a queue or session id, or --rcpt"),
            };
            let records = journal::read(&config.journal_dir());
            match trace::trace(&records, &query) {
                Ok(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(why) => {
                    eprintln!("{why} ({})", config.journal_dir().display());
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Dkim {
            action:
                DkimAction::Keygen {
                    domain,
                    selector,
                    algorithm,
                    bits,
                    out,
                },
        } => {
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{domain}.{selector}.key")));
            dkim_keygen(&domain, &selector, algorithm, bits, &out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin { action } => {
            plugin_authoring::run(action)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { junit, case, paths } => {
            let results = case::run_files(&paths, default_cache_dir(), case.as_deref()).await?;
            print!("{}", case::summary(&results));
            if let Some(path) = junit {
                case::write_junit(&path, &results)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            let failed = results.iter().any(|r| !r.failures.is_empty());
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// `mailgate user` on the users database (`[local] source`).
async fn sql_user_command(config: &Config, url: &str, action: UserAction) -> anyhow::Result<()> {
    use mailgate::store::sql_users::SqlUsers;
    use mailgate::store::users::{hash_password, Users};
    let password = config.resolve_opt(config.local.source_password_file.as_ref());
    let sql = SqlUsers::new(url, password.as_deref(), &config.local.queries)
        .map_err(anyhow::Error::msg)?;
    sql.ensure_schema().await.map_err(anyhow::Error::msg)?;
    let tables = sql.read().await.map_err(anyhow::Error::msg)?;
    let users = Users::build(&config.users_file(), tables, &config.local);
    match action {
        UserAction::Add { address, apop } => {
            anyhow::ensure!(
                !apop,
                "--apop needs the users file (APOP secrets are not kept in SQL)"
            );
            let address = users.new_user(&address)?;
            let hash = hash_password(&read_password()?)?;
            sql.add(&address, &hash).await.map_err(anyhow::Error::msg)?;
            eprintln!("added {address} to the users database");
        }
        UserAction::List => list_users(&users),
        UserAction::Remove { address } => {
            // The canonical spelling first, then the row exactly as given (an invalid or
            // colliding row is removed by its stored name).
            let canonical = mailgate::store::users::canonical(&address).map(|n| n.to_string());
            let mut removed = false;
            for name in canonical.iter().chain(std::iter::once(&address)) {
                if sql.remove(name).await.map_err(anyhow::Error::msg)? {
                    eprintln!("removed {name} from the users database");
                    removed = true;
                    break;
                }
            }
            anyhow::ensure!(removed, "no user {address}");
        }
    }
    Ok(())
}

/// `mailgate user list`: the users (canonical names) on standard output, and the rows that
/// serve no mailbox, with the reason, on standard error.
fn list_users(users: &mailgate::store::users::Users) {
    for user in users.list() {
        println!("{user}");
    }
    for row in users.refused() {
        eprintln!(
            "refused (serves no mailbox): {:?}: {}",
            row.address, row.reason
        );
    }
}

/// The password for `user add`: the first line of standard input.
fn read_password() -> anyhow::Result<String> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("cannot read the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(
        !password.is_empty(),
        "empty password (give it on standard input)"
    );
    Ok(password)
}

fn user_command(config: &Config, action: UserAction) -> anyhow::Result<()> {
    use mailgate::store::users::Users;
    let path = config.users_file();
    let mut users = Users::load(&path, &config.local)?;
    match action {
        UserAction::Add { address, apop } => {
            // Checked before the password is asked for.
            users.new_user(&address)?;
            let password = read_password()?;
            let name = if apop {
                users.add_with_apop(&address, &password)?
            } else {
                users.add(&address, &password)?
            };
            eprintln!("added {name} to {}", path.display());
        }
        UserAction::List => list_users(&users),
        UserAction::Remove { address } => {
            users.remove(&address)?;
            eprintln!("removed {address} from {}", path.display());
        }
    }
    Ok(())
}

async fn ask_running_server(data_dir: &std::path::Path, request: &str) -> anyhow::Result<ExitCode> {
    match admin::ask(data_dir, request).await {
        Some(Ok(text)) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Some(Err(e)) => {
            eprintln!("mailgate: {e}");
            Ok(ExitCode::from(1))
        }
        None => {
            eprintln!(
                "mailgate: no server is running on {} (no answer on {})",
                data_dir.display(),
                admin::socket_path(data_dir).display()
            );
            Ok(ExitCode::from(2))
        }
    }
}

async fn queue_command(config: &Config, command: QueueCommand) -> anyhow::Result<ExitCode> {
    let data_dir = config.data_dir();
    let result = match admin::ask(&data_dir, &command.to_line()).await {
        Some(result) => result,
        None => {
            let root = data_dir.join("queue");
            anyhow::ensure!(
                root.join("active").is_dir(),
                "no queue in {} (wrong --data-dir or --config?)",
                data_dir.display()
            );
            let files = QueueFiles::new(Spool::attach(&root)?, &root)?;
            execute(&files, &command)
        }
    };
    match result {
        Ok(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("mailgate: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Ok(ConfigSource {
        path: path.map(PathBuf::from),
        data_dir: None,
    }
    .load()?)
}

fn load_with_data_dir(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<Config> {
    Ok(ConfigSource {
        path: config,
        data_dir,
    }
    .load()?)
}

/// Compiled plugins are cached per user so the second run starts in milliseconds.
fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("MAILGATE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mailgate")))
}

/// `mailgate dkim keygen`: the key file, then what to publish and configure.
fn dkim_keygen(
    domain: &str,
    selector: &str,
    algorithm: mailgate::config::DkimAlgorithm,
    bits: u16,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (pem, record) =
        mailgate::relay::dkim::keygen(algorithm, usize::from(bits)).map_err(anyhow::Error::msg)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    file.write_all(pem.as_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("key written to {} (mode 0600)\n", out.display());
    println!("publish this TXT record:\n");
    println!("{selector}._domainkey.{domain}. IN TXT \"{record}\"\n");
    println!("and sign with it:\n");
    println!(
        "[[dkim]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nkey = \"{}\"\nalgorithm = \"{}\"",
        out.display(),
        algorithm.name()
    );
    Ok(())
}
