//! The storage a user's messages take, every folder together, against their quota. Each
//! folder's part is the sum of its messages' served sizes, which its index records (`W=` or
//! counted once per message): kept in the folder's memory with the stamps it was made from,
//! so a folder unchanged since is answered without listing it, and a folder changed (here or
//! by another program copying a file into `new/`) is listed again, reading only the files it
//! does not know. After a restart the sizes come from the uidlist, not from the files.

use std::path::Path;

use super::memo::{self, Stamps};
use super::{list_folders, Folder};

/// Adding a message would take a user past their storage quota.
#[derive(Debug, thiserror::Error)]
#[error("mailbox full: {used} of {limit} bytes used, {adding} more asked for")]
pub struct OverQuota {
    pub used: u64,
    pub limit: u64,
    pub adding: u64,
}

/// Whether an I/O error is an [`OverQuota`].
pub fn is_over_quota(error: &std::io::Error) -> bool {
    error.get_ref().is_some_and(|e| e.is::<OverQuota>())
}

impl Folder {
    /// The bytes of the folder's messages as served.
    pub fn stored_bytes(&self) -> std::io::Result<u64> {
        let shared = memo::of(&self.dir)?;
        {
            let memo = memo::lock(&shared);
            let stamps = Stamps::take(&self.dir)?;
            if memo.unchanged(&stamps).is_some() {
                return Ok(memo.bytes);
            }
        }
        let snapshot = self.scan(false)?;
        Ok(snapshot
            .entries
            .iter()
            .fold(0u64, |sum, e| sum.saturating_add(e.size)))
    }
}

/// The bytes of every folder of the Maildir at `maildir` (0 when it does not exist yet).
pub fn usage(maildir: &Path) -> std::io::Result<u64> {
    if !maildir.is_dir() {
        return Ok(0);
    }
    let mut total = 0u64;
    for name in list_folders(maildir) {
        let folder = match Folder::open_in(maildir, &name) {
            Ok(folder) => folder,
            // Deleted since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        total = total.saturating_add(folder.stored_bytes()?);
    }
    Ok(total)
}

/// Whether `adding` more bytes fit in the Maildir's `limit` (0: no limit): an [`OverQuota`]
/// error when they do not, or when it is full already (`adding` 0: a recipient before its
/// message is known). Concurrent additions may each pass and together go a message over, as
/// with Dovecot's and Courier's quotas: the limit holds to within what is in flight.
pub fn room_for(maildir: &Path, limit: u64, adding: u64) -> std::io::Result<()> {
    if limit == 0 {
        return Ok(());
    }
    let used = usage(maildir)?;
    if used.saturating_add(adding) > limit || used >= limit {
        return Err(std::io::Error::other(OverQuota {
            used,
            limit,
            adding,
        }));
    }
    Ok(())
}
