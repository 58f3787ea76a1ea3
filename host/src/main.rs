//! The `mailgate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mailgate::config::ConfigSource;
use mailgate::config::LogFormat;
use mailgate::harness::{case, check};

mod cli;

use cli::args::{Cli, Command, ConfigAction, DkimAction};
use cli::dkim::dkim_keygen;
use cli::load::{default_cache_dir, load_config, load_with_data_dir};
use cli::quarantine::quarantine_command;
use cli::queue::queue_command;
use cli::server::ask_running_server;
use cli::users::{sql_user_command, user_command};

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
/// warnings, plus the listeners, shutdown, every plugin reload, every refused command and every
/// delivery attempt's result per recipient (`MAILGATE_LOG=info` adds every queued message).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILGATE_LOG")
        .unwrap_or_else(|_| "warn,mailgate::ops::reload=info,mailgate::lifecycle=info,mailgate::reject=info,mailgate::delivery=info".into());
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
            let set = check::load_chain_to_explain(&config, default_cache_dir()).await?;
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
        Command::Quarantine {
            config,
            data_dir,
            action,
        } => {
            let config = load_with_data_dir(config, data_dir)?;
            quarantine_command(&config, action).await
        }
        Command::Config {
            action: ConfigAction::Check { config },
        } => {
            let (text, verdict) =
                mailgate::ops::config_check::check(config, default_cache_dir()).await;
            print!("{text}");
            Ok(match verdict {
                mailgate::ops::config_check::Verdict::Good => ExitCode::SUCCESS,
                mailgate::ops::config_check::Verdict::Refused => ExitCode::from(1),
                mailgate::ops::config_check::Verdict::Unchecked => ExitCode::from(2),
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
            cli::plugin_authoring::run(action)?;
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
