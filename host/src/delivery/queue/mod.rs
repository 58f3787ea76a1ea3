//! The durable queue of accepted messages: the spool (message files, group commit), the
//! per-message delivery state, and the relay queue — its manager (`manager`), when each message
//! is due (`schedule`), one delivery attempt (`attempt`), bounces (`bounce`) — with the
//! operator's commands. Sending itself is the relay's (`relay::transmit`).

mod attempt;
pub mod bounce;
pub mod commands;
pub mod intake;
pub mod manager;
mod schedule;
mod spares;
pub mod spool;
pub mod state;

use std::path::Path;

/// Keeps a message aside, with the reason, instead of delivering it (durably).
pub fn quarantine(dir: &Path, id: &str, raw: &[u8], reason: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{id}.eml"));
    let mut file = std::fs::File::create(&path)?;
    let header = format!(
        "X-Mailgate-Quarantine: {}\r\n",
        reason.replace(['\r', '\n'], " ")
    );
    std::io::Write::write_all(&mut file, header.as_bytes())?;
    std::io::Write::write_all(&mut file, raw)?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}
