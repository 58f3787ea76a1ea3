//! The retrieve stage for the readers (POP3, IMAP, JMAP): asks the plugin chain about one
//! message before a client sees it. Hidden (or refused) messages are left out of the session;
//! edits change only what this client receives. It runs here, above the stores, so that the
//! stores know nothing of plugins.

use std::sync::Arc;

use super::{PluginSet, Services, StageCall, Verdict};
use crate::mail::{MailState, Retrieval, Session};
use crate::message::Message;

/// What one client is shown of one message.
pub enum View {
    Hidden,
    /// Shown; `Some` holds the edited bytes this client gets instead of the file.
    Shown(Option<Arc<Vec<u8>>>),
}

/// Edited copies of one session (what the retrieve stage made of messages for this client),
/// by UID. They grow with the mailbox, so only [`EditedCopies::MEMORY`] bytes of them stay in
/// memory; the rest go to an unlinked spill file of the session's own and are read back when
/// asked for. The file goes away with the session.
#[derive(Default)]
pub struct EditedCopies {
    memory: std::collections::HashMap<u32, Arc<Vec<u8>>>,
    memory_bytes: usize,
    /// UID -> (offset, length) in `file`.
    spilled: std::collections::HashMap<u32, (u64, usize)>,
    file: Option<std::fs::File>,
    end: u64,
}

impl EditedCopies {
    /// Bytes of edited copies one session keeps in memory.
    pub const MEMORY: usize = 16 << 20;

    /// Keeps the copy of `uid`: in memory while there is room, else in the spill file.
    pub fn insert(&mut self, uid: u32, bytes: Arc<Vec<u8>>) -> std::io::Result<()> {
        self.remove(uid);
        let total = self.memory_bytes.saturating_add(bytes.len());
        if total <= Self::MEMORY {
            self.memory_bytes = total;
            self.memory.insert(uid, bytes);
            return Ok(());
        }
        use std::io::{Seek, SeekFrom, Write};
        if self.file.is_none() {
            self.file = Some(spill_file()?);
        }
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other("no spill file"));
        };
        file.seek(SeekFrom::Start(self.end))?;
        file.write_all(&bytes)?;
        self.spilled.insert(uid, (self.end, bytes.len()));
        self.end = self.end.saturating_add(bytes.len() as u64);
        Ok(())
    }

    pub fn contains(&self, uid: u32) -> bool {
        self.memory.contains_key(&uid) || self.spilled.contains_key(&uid)
    }

    /// The size of the copy of `uid`, if there is one.
    pub fn size(&self, uid: u32) -> Option<u64> {
        match self.memory.get(&uid) {
            Some(bytes) => Some(bytes.len() as u64),
            None => self.spilled.get(&uid).map(|&(_, len)| len as u64),
        }
    }

    /// The copy of `uid` (read back from the spill file when it is there; file work).
    pub fn get(&self, uid: u32) -> Option<std::io::Result<Arc<Vec<u8>>>> {
        if let Some(bytes) = self.memory.get(&uid) {
            return Some(Ok(bytes.clone()));
        }
        let &(offset, len) = self.spilled.get(&uid)?;
        let file = self.file.as_ref()?;
        let mut bytes = vec![0u8; len];
        Some(
            std::os::unix::fs::FileExt::read_exact_at(file, &mut bytes, offset)
                .map(|()| Arc::new(bytes)),
        )
    }

    /// Forgets the copy of `uid` (its spilled bytes stay in the file until the session ends).
    pub fn remove(&mut self, uid: u32) {
        if let Some(bytes) = self.memory.remove(&uid) {
            self.memory_bytes = self.memory_bytes.saturating_sub(bytes.len());
        }
        self.spilled.remove(&uid);
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

/// A new file only this process can reach: created private in the temporary directory and
/// unlinked at once, so it lives as long as its handle.
fn spill_file() -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = format!(
        "mailgate-edited-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let path = std::env::temp_dir().join(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// Runs the retrieve stage for one message (the caller checks the set handles the stage).
pub async fn view(
    plugins: &Arc<PluginSet>,
    services: &Services,
    session: Session,
    folder: &str,
    uid: u32,
    bytes: Vec<u8>,
) -> View {
    let user = session.auth_user.clone().unwrap_or_default();
    let original = Arc::new(Message::new(bytes));
    let mut state = MailState {
        session,
        message: Some(original.clone()),
        retrieval: Some(Retrieval {
            user: user.clone(),
            folder: folder.to_string(),
            uid,
        }),
        ..MailState::default()
    };
    let mut chain = plugins.transaction(&state.session.id, services.clone());
    let report = chain.run(StageCall::Retrieve, &mut state).await;
    match report.decision {
        Verdict::Continue | Verdict::Accept => match state.message {
            Some(m) if !Arc::ptr_eq(&m, &original) => View::Shown(Some(Arc::new(m.raw().to_vec()))),
            _ => View::Shown(None),
        },
        other => {
            tracing::info!(user, folder, uid, "hidden from this session: {other:?}");
            View::Hidden
        }
    }
}

#[cfg(test)]
mod edited_tests {
    use super::*;

    #[test]
    fn copies_past_the_memory_bound_are_spilled_and_read_back() {
        let mut copies = EditedCopies::default();
        let big = EditedCopies::MEMORY / 4 + 1;
        for uid in 1..=8u32 {
            let bytes = vec![uid as u8; big];
            copies.insert(uid, Arc::new(bytes)).expect("insert");
        }
        assert!(copies.memory_bytes() <= EditedCopies::MEMORY);
        for uid in 1..=8u32 {
            let bytes = copies.get(uid).expect("kept").expect("read");
            assert_eq!(bytes.len(), big);
            assert!(bytes.iter().all(|&b| b == uid as u8), "uid {uid}");
            assert_eq!(copies.size(uid), Some(big as u64));
        }
        copies.remove(8);
        assert!(!copies.contains(8) && copies.get(8).is_none());
        copies.remove(1);
        copies.insert(9, Arc::new(vec![9; 10])).expect("room again");
        assert_eq!(
            copies.get(9).expect("kept").expect("read").as_slice(),
            &[9; 10]
        );
    }
}
