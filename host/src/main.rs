//! The `mailgate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use mailgate::config::Config;
use mailgate::harness::{case, check};

#[derive(Parser)]
#[command(
    name = "mailgate",
    version,
    about = "Mail gateway with WebAssembly filters"
)]
struct Cli {
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
        #[command(flatten)]
        options: check::CheckOptions,
    },
    /// Run policy test cases (TOML case files or directories of them).
    Test {
        /// Write JUnit XML here.
        #[arg(long)]
        junit: Option<PathBuf>,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MAILGATE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config, options } => {
            let config = load_config(config.as_deref())?;
            let (text, accepted) = check::check(&options, &config, default_cache_dir()).await?;
            print!("{text}");
            Ok(if accepted {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Test { junit, paths } => {
            let results = case::run_files(&paths, default_cache_dir()).await?;
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

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(mailgate::defaults::config(
            &mailgate::defaults::plugin_dir(),
        )?),
    }
}

/// Compiled plugins are cached per user so the second run starts in milliseconds.
fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("MAILGATE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mailgate")))
}
