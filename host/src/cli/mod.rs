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

/// An administration command's answer: its text on stdout (exit 0), or its error on stderr
/// (exit 1).
pub fn answer(result: Result<String, String>) -> std::process::ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mailgate: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
