//! What a session waiting for its client (IDLE, or between commands under NOTIFY) wakes up
//! for: a change in the selected folder, a change in the other watched mailboxes, or the time
//! to read the folder tree again.

use std::time::Duration;

use crate::store::watch::{Changes, FolderWatch, MaildirWatch};

/// How often IDLE looks for changes where the folder cannot be watched.
pub(super) const IDLE_POLL: Duration = Duration::from_secs(5);
/// After the tree changed, when to read it again (a folder being made may lack `cur/` yet).
const RECHECK: Duration = Duration::from_secs(1);

/// What woke a waiting session.
pub(super) enum Wake {
    Selected,
    Others(Changes),
    Recheck,
}

/// Waits for a change to report: in the selected folder (`selected`: its watch, or `None` to
/// poll it; not looked at when `None` outside) or in the other watched mailboxes (`others`
/// likewise), or for the time to read the tree again.
pub(super) async fn wake(
    selected: Option<Option<&FolderWatch>>,
    others: Option<Option<&MaildirWatch>>,
    recheck: bool,
) -> Wake {
    let in_selected = async {
        match selected {
            Some(Some(watch)) => {
                if watch.changed().await.is_err() {
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
            Some(None) => tokio::time::sleep(IDLE_POLL).await,
            None => std::future::pending().await,
        }
    };
    let in_others = async {
        match others {
            Some(Some(watch)) => match watch.changed().await {
                Ok(changes) => changes,
                Err(_) => {
                    tokio::time::sleep(IDLE_POLL).await;
                    Changes::everything()
                }
            },
            Some(None) => {
                tokio::time::sleep(IDLE_POLL).await;
                Changes::everything()
            }
            None => std::future::pending().await,
        }
    };
    let again = async {
        match recheck {
            true => tokio::time::sleep(RECHECK).await,
            false => std::future::pending().await,
        }
    };
    tokio::select! {
        () = in_selected => Wake::Selected,
        changes = in_others => Wake::Others(changes),
        () = again => Wake::Recheck,
    }
}
