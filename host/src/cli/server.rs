//! Questions to the running server over its admin socket (`reload`, `plugins`).

use std::process::ExitCode;

use mailgate::ops::admin_socket;

pub(crate) async fn ask_running_server(
    data_dir: &std::path::Path,
    request: &str,
) -> anyhow::Result<ExitCode> {
    match admin_socket::ask(data_dir, request).await {
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
                admin_socket::socket_path(data_dir).display()
            );
            Ok(ExitCode::from(2))
        }
    }
}
