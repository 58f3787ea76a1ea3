//! What tells whether a file or directory changed without reading it: its identity, size and
//! change times, and whether its mtime is old enough to prove that nothing changed since.

use std::time::{Duration, SystemTime};

use cap_std::fs::Dir;
use rustix::fs::{AtFlags, Stat};

/// How long a directory must have stayed unchanged before its mtime is taken as proof that
/// nothing changed since: two changes within one tick of the file system's clock (a jiffy on
/// Linux, a second on some file systems) leave the same mtime.
const SETTLE: Duration = Duration::from_secs(2);

/// What says whether a file or directory changed: its identity, size, and change times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, u64),
    ctime: (i64, u64),
}

impl Stamp {
    // The stat fields' types differ between platforms: the casts are needed elsewhere.
    #[allow(clippy::unnecessary_cast)]
    fn of(stat: &Stat) -> Stamp {
        Stamp {
            dev: stat.st_dev as u64,
            ino: stat.st_ino as u64,
            size: stat.st_size as u64,
            mtime: (stat.st_mtime as i64, stat.st_mtime_nsec as u64),
            ctime: (stat.st_ctime as i64, stat.st_ctime_nsec as u64),
        }
    }

    /// What tells one file from another (its content may change).
    pub(super) fn id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// The stamp of `name` inside `dir`; `None` when it does not exist.
    pub(super) fn at(dir: &Dir, name: &str) -> std::io::Result<Option<Stamp>> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(Stamp::of(&stat))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a change made now could leave this stamp as it is: its mtime is within
    /// [`SETTLE`] of `now`.
    pub(super) fn recent(&self, now: SystemTime) -> bool {
        let Some(changed) = u64::try_from(self.mtime.0)
            .ok()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::new(s, self.mtime.1 as u32))
        else {
            return true;
        };
        now.duration_since(changed).map_or(true, |age| age < SETTLE)
    }
}
