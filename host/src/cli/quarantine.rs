//! `mailgate quarantine`: list, show and delete work on the quarantine files whether or not the
//! server runs; release goes through the running server (so the message is scheduled at
//! once), or into the queue files when none runs.

use std::path::Path;
use std::process::ExitCode;

use mailgate::config::Config;
use mailgate::delivery::queue::quarantine;
use mailgate::delivery::queue::spool::Spool;
use mailgate::ops::admin_socket;

use crate::cli::args::QuarantineAction;

pub(crate) async fn quarantine_command(
    config: &Config,
    action: QuarantineAction,
) -> anyhow::Result<ExitCode> {
    let data_dir = config.data_dir();
    let dir = data_dir.join("quarantine");
    let result = match action {
        QuarantineAction::List => quarantine::list(&dir)
            .map(|entries| quarantine::render_list(&entries))
            .map_err(|e| format!("{}: {e}", dir.display())),
        QuarantineAction::Show { id } => quarantine::render_show(&dir, &id),
        QuarantineAction::Delete { id } => {
            quarantine::delete(&dir, &id).map(|()| format!("deleted {id}\n"))
        }
        QuarantineAction::Release { id, skip_plugin } => {
            let line = admin_socket::release_line(&id, skip_plugin);
            match admin_socket::ask(&data_dir, &line).await {
                Some(result) => result,
                None => release_offline(config, &dir, &id, skip_plugin).await,
            }
        }
    };
    Ok(crate::cli::answer(result))
}

/// With no server running: the message goes into the spool, durably, and is delivered when
/// the server next starts (it recovers the spool).
async fn release_offline(
    config: &Config,
    dir: &Path,
    id: &str,
    skip_plugin: bool,
) -> Result<String, String> {
    let root = config.data_dir().join("queue");
    let spool = Spool::attach(&root, &config.queue).map_err(|e| e.to_string())?;
    let release = quarantine::prepare_release(dir, id, skip_plugin, |q| spool.contains(q))?;
    spool
        .store(&release.envelope, &release.message)
        .await
        .map_err(|e| e.to_string())?;
    quarantine::delete(dir, id)?;
    Ok(format!(
        "{}(no server running: delivered when it starts)\n",
        quarantine::released_text(id, &release)
    ))
}
