//! The admin socket, `<data>/admin.sock` (owner-only): how `mailgate queue ...`, `mailgate
//! quarantine release`, `mailgate reload` and `mailgate plugins` reach the running server. One request line in; `ok` or
//! `error`, a newline, then text out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::delivery::queue::commands::{execute, QueueCommand};
use crate::delivery::queue::intake::Intake;
use crate::delivery::queue::manager::QueueManager;
use crate::ops::reload::Reloader;

/// What the socket can act on.
pub struct Admin {
    pub queue: QueueManager,
    pub reloader: Arc<Reloader>,
    /// Where a message released from quarantine goes.
    pub intake: Intake,
}

/// The admin socket of a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.sock")
}

/// Serves requests on the admin socket until the process ends.
pub async fn serve(path: &Path, admin: Arc<Admin>) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let _ = answer(stream, &admin).await;
            });
        }
    });
    Ok(())
}

async fn answer(stream: UnixStream, admin: &Admin) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(4096)).read_line(&mut line).await?;
    let result = handle(admin, line.trim()).await;
    let reply = match result {
        Ok(text) => format!("ok\n{text}"),
        Err(e) => format!("error\n{e}\n"),
    };
    write.write_all(reply.as_bytes()).await?;
    write.shutdown().await
}

async fn handle(admin: &Admin, line: &str) -> Result<String, String> {
    match line {
        "reload" => admin
            .reloader
            .reload("mailgate reload")
            .await
            .map(|generation| {
                format!(
                    "reloaded: generation {generation} serving\n{}",
                    admin.reloader.describe_active()
                )
            }),
        "plugins" => Ok(admin.reloader.describe_active()),
        "plugins history" => Ok(admin.reloader.describe_history()),
        _ if line.starts_with("quarantine ") => match release_request(line) {
            Some((id, skip_plugin)) => admin.intake.release(id, skip_plugin).await,
            None => Err(format!("unknown command {line:?}")),
        },
        _ => {
            let command =
                QueueCommand::parse(line).ok_or_else(|| format!("unknown command {line:?}"))?;
            let queue = admin.queue.clone();
            tokio::task::spawn_blocking(move || execute(&queue, &command))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        }
    }
}

/// The line that asks the server to release a quarantined message.
pub fn release_line(id: &str, skip_plugin: bool) -> String {
    let skip = if skip_plugin { " --skip-plugin" } else { "" };
    format!("quarantine release {id}{skip}")
}

/// `quarantine release ID [--skip-plugin]`: the id, and whether to skip the plugin.
fn release_request(line: &str) -> Option<(&str, bool)> {
    match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["quarantine", "release", id] => Some((*id, false)),
        ["quarantine", "release", id, "--skip-plugin"] => Some((*id, true)),
        _ => None,
    }
}

/// Sends one request to the server of `data_dir`. `None` when no server listens there.
pub async fn ask(data_dir: &Path, request: &str) -> Option<Result<String, String>> {
    let mut stream = UnixStream::connect(socket_path(data_dir)).await.ok()?;
    let exchange = async {
        stream.write_all(format!("{request}\n").as_bytes()).await?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    Some(match exchange.await {
        Ok(reply) => match reply.split_once('\n') {
            Some(("ok", text)) => Ok(text.to_string()),
            Some((_, text)) => Err(text.trim_end().to_string()),
            None => Err(format!("unexpected reply from the server: {reply:?}")),
        },
        Err(e) => Err(format!("admin socket: {e}")),
    })
}
