//! `mailgate queue`: through the running server, or on the queue's files when none runs.

use std::process::ExitCode;

use mailgate::config::Config;
use mailgate::delivery::queue::commands::{execute, QueueCommand};
use mailgate::delivery::queue::spool::Spool;
use mailgate::delivery::queue::state::QueueFiles;
use mailgate::ops::admin_socket;

pub(crate) async fn queue_command(
    config: &Config,
    command: QueueCommand,
) -> anyhow::Result<ExitCode> {
    let data_dir = config.data_dir();
    let result = match admin_socket::ask(&data_dir, &command.to_line()).await {
        Some(result) => result,
        None => {
            let root = data_dir.join("queue");
            anyhow::ensure!(
                root.join("active").is_dir() || root.join("log").is_dir(),
                "no queue in {} (wrong --data-dir or --config?)",
                data_dir.display()
            );
            let files = QueueFiles::new(Spool::attach(&root, &config.queue)?, &root)?;
            execute(&files, &command)
        }
    };
    Ok(crate::cli::answer(result))
}
