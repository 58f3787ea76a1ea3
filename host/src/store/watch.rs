//! Change notification for a Maildir folder (inotify on `new/` and `cur/`): IDLE learns of
//! deliveries, flag changes and expunges when they happen instead of rescanning on a timer.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use std::collections::{BTreeSet, HashMap};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
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

/// Change notification for several folders of one Maildir at once, and for the Maildir's tree
/// (folders made, removed, renamed) and its subscriptions file, on one inotify instance: what
/// a session's NOTIFY (RFC 5465) watches besides its selected folder. Each event is traced to
/// the folder it happened in, so only that folder is read again.
pub struct MaildirWatch {
    fd: AsyncFd<File>,
    root: i32,
    /// Watch descriptors of the folders' `new/` and `cur/`, to the folder's name.
    folders: HashMap<i32, String>,
    by_name: HashMap<String, [i32; 2]>,
}

/// What changed since the last look.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Folders (by name) whose messages changed.
    pub folders: BTreeSet<String>,
    /// A folder was made, removed or renamed.
    pub tree: bool,
    /// The subscriptions file was written.
    pub subscriptions: bool,
    /// Folders renamed (old name, new name), as one rename of the kernel's reported them.
    pub renames: Vec<(String, String)>,
    /// Events were lost (the kernel's queue overflowed): anything may have changed.
    pub all: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.folders.is_empty() && !self.tree && !self.subscriptions && !self.all
    }

    /// For where nothing can be watched: look at everything.
    pub fn everything() -> Changes {
        Changes {
            tree: true,
            subscriptions: true,
            all: true,
            ..Changes::default()
        }
    }
}

const MESSAGE_EVENTS: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::CLOSE_WRITE);

impl MaildirWatch {
    /// Watches the tree of the Maildir at `maildir` (no folder yet: see [`MaildirWatch::watch`]).
    pub fn new(maildir: &Path) -> std::io::Result<MaildirWatch> {
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
        // Folders are directories made, removed or renamed in the Maildir; the subscriptions
        // file is written in place or renamed over.
        let root = inotify::add_watch(&fd, maildir, MESSAGE_EVENTS)?;
        // SAFETY: as in `FolderWatch::new`: the File owns the descriptor, AsyncFd the File.
        let fd = unsafe { AsyncFd::register(File::from(fd))? };
        Ok(MaildirWatch {
            fd,
            root,
            folders: HashMap::new(),
            by_name: HashMap::new(),
        })
    }

    /// Starts watching the messages of folder `name` (at `path`).
    pub fn watch(&mut self, name: &str, path: &Path) -> std::io::Result<()> {
        if self.by_name.contains_key(name) {
            return Ok(());
        }
        let fd = self.fd.get_ref();
        let new = inotify::add_watch(fd, path.join("new"), MESSAGE_EVENTS)?;
        let cur = match inotify::add_watch(fd, path.join("cur"), MESSAGE_EVENTS) {
            Ok(cur) => cur,
            Err(e) => {
                let _ = inotify::remove_watch(fd, new);
                return Err(e.into());
            }
        };
        self.folders.insert(new, name.to_string());
        self.folders.insert(cur, name.to_string());
        self.by_name.insert(name.to_string(), [new, cur]);
        Ok(())
    }

    /// Stops watching folder `name`.
    pub fn unwatch(&mut self, name: &str) {
        if let Some(wds) = self.by_name.remove(name) {
            for wd in wds {
                self.folders.remove(&wd);
                // Gone already when the folder was removed.
                let _ = inotify::remove_watch(self.fd.get_ref(), wd);
            }
        }
    }

    /// The folders watched.
    pub fn watched(&self) -> impl Iterator<Item = &String> {
        self.by_name.keys()
    }

    /// Reads the events so far without waiting.
    pub fn take(&self) -> Changes {
        let mut changes = Changes::default();
        if self.read_into(&mut changes).is_err() {
            changes.all = true;
        }
        changes
    }

    /// Waits until something watched changed; what did.
    pub async fn changed(&self) -> std::io::Result<Changes> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut changes = Changes::default();
            match self.read_into(&mut changes) {
                Ok(()) => guard.clear_ready(),
                Err(e) => return Err(e),
            }
            // Events of nothing watched here (a lock file in the Maildir) are dropped.
            if !changes.is_empty() {
                return Ok(changes);
            }
        }
    }

    /// Reads every event queued (until the descriptor would block) into `changes`.
    fn read_into(&self, changes: &mut Changes) -> std::io::Result<()> {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(self.fd.get_ref(), &mut buf);
        // The first half of a rename, by cookie, until its second half.
        let mut moved_from: Option<(u32, String)> = None;
        loop {
            let event = match reader.next() {
                Ok(event) => event,
                Err(e) if e == rustix::io::Errno::AGAIN => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let flags = event.events();
            if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                *changes = Changes::everything();
                continue;
            }
            if event.wd() != self.root {
                if let Some(name) = self.folders.get(&event.wd()) {
                    changes.folders.insert(name.clone());
                }
                continue;
            }
            let name = event
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if flags.contains(ReadFlags::ISDIR) && name.starts_with('.') && name.len() > 1 {
                changes.tree = true;
                // Maildir++: `.A.B` is folder `A/B`.
                let folder = name[1..].replace('.', "/");
                if flags.contains(ReadFlags::MOVED_FROM) {
                    moved_from = Some((event.cookie(), folder));
                } else if flags.contains(ReadFlags::MOVED_TO) {
                    if let Some((_, from)) = moved_from.take().filter(|(c, _)| *c == event.cookie())
                    {
                        changes.renames.push((from, folder));
                    }
                }
            } else if name == crate::store::subscriptions::FILE {
                changes.subscriptions = true;
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
