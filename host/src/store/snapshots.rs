//! One copy of a folder's message list for every session that sees it the same way: a session
//! hands the list it built to [`SnapshotCache::intern`] and gets back the copy already held
//! when it is equal. Two hundred idle sessions on a 10 000-message INBOX then hold one list, not
//! two hundred. A session that changes its view copies the list first (`Arc::make_mut`), and
//! shares again after its next refresh.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use super::mailbox::MailEntry;

#[derive(Default)]
pub struct SnapshotCache {
    lists: Mutex<HashMap<PathBuf, Weak<Vec<MailEntry>>>>,
}

impl SnapshotCache {
    /// The shared copy of `entries` for the folder at `folder`: the one held already when equal,
    /// else `entries`, which becomes the one held.
    pub fn intern(&self, folder: &Path, entries: Vec<MailEntry>) -> Arc<Vec<MailEntry>> {
        let mut lists = self.lists.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = lists.get(folder).and_then(Weak::upgrade) {
            if *held == entries {
                return held;
            }
        }
        let shared = Arc::new(entries);
        lists.insert(folder.to_path_buf(), Arc::downgrade(&shared));
        // Folders no session looks at any more are forgotten now and then.
        if lists.len() > 64 && lists.len().is_power_of_two() {
            lists.retain(|_, list| list.strong_count() > 0);
        }
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uid: u32) -> MailEntry {
        MailEntry {
            uid,
            key: format!("{uid}.x").into(),
            in_new: false,
            flags: Default::default(),
            size: 10,
            internal_date: 0,
            recent: false,
            modseq: 1,
        }
    }

    #[test]
    fn equal_lists_share_one_copy() {
        let cache = SnapshotCache::default();
        let folder = Path::new("/mail/a");
        let first = cache.intern(folder, vec![entry(1), entry(2)]);
        let second = cache.intern(folder, vec![entry(1), entry(2)]);
        assert!(Arc::ptr_eq(&first, &second));
        let other = cache.intern(folder, vec![entry(1)]);
        assert!(!Arc::ptr_eq(&first, &other));
        // Another folder with the same content is another list.
        let elsewhere = cache.intern(Path::new("/mail/b"), vec![entry(1)]);
        assert!(!Arc::ptr_eq(&other, &elsewhere));
    }
}
