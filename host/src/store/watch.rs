//! Change notification for a Maildir folder (inotify on `new/` and `cur/`): IDLE learns of
//! deliveries, flag changes and expunges when they happen instead of rescanning on a timer.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
use tokio::io::unix::AsyncFd;

pub struct FolderWatch {
    fd: AsyncFd<File>,
}

impl FolderWatch {
    /// Watches `folder`; an error (no inotify, too many watches) means: poll instead.
    pub fn new(folder: &Path) -> std::io::Result<FolderWatch> {
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
        // A delivery is a create or a move into new/; flag changes are renames in cur/;
        // expunges are deletes.
        let events = WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::CLOSE_WRITE;
        for sub in ["new", "cur"] {
            inotify::add_watch(&fd, folder.join(sub), events)?;
        }
        // SAFETY: the File owns the inotify descriptor, and AsyncFd owns the File until it
        // is dropped; nothing else closes or replaces the descriptor meanwhile.
        let fd = unsafe { AsyncFd::register(File::from(fd))? };
        Ok(FolderWatch { fd })
    }

    /// Takes in the events so far without waiting; true when there were any (or when the
    /// watch cannot tell: then the caller should look).
    pub fn take_events(&self) -> bool {
        let mut buf = [0u8; 4096];
        let mut got = false;
        loop {
            match self.fd.get_ref().read(&mut buf) {
                Ok(0) => return got,
                Ok(_) => got = true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return got,
                Err(_) => return true,
            }
        }
    }

    /// Waits until something in the folder changed, and takes in every event so far.
    pub async fn changed(&self) -> std::io::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            let mut guard = self.fd.readable().await?;
            let mut got = false;
            loop {
                match guard.get_ref().get_ref().read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => got = true,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if got {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_delivery_and_a_flag_change_are_noticed() {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).expect("maildir");
        }
        let watch = FolderWatch::new(dir.path()).expect("watch");
        assert!(!watch.take_events(), "nothing happened yet");
        std::fs::write(dir.path().join("new/1.x"), "mail").expect("deliver");
        tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("noticed in time")
            .expect("read");
        std::fs::rename(dir.path().join("new/1.x"), dir.path().join("cur/1.x:2,S")).expect("flag");
        tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("noticed in time")
            .expect("read");
    }
}
