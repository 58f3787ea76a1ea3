//! When each queued message is due: timers, the ready list, held and running entries.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::spool::Spooled;

/// When each message is due, which are held, which are being tried.
#[derive(Default)]
pub(super) struct Schedule {
    pub entries: HashMap<String, Entry>,
    pub timers: BTreeSet<(u64, String)>,
    pub ready: VecDeque<String>,
}

#[derive(Default)]
pub(super) struct Entry {
    pub next_attempt: u64,
    pub held: bool,
    pub running: bool,
    /// At least one attempt has been made (for the queue's `deferred` count).
    pub attempted: bool,
    /// A retry was asked for while an attempt was running.
    pub again: bool,
    /// A message just accepted, kept in memory for its first attempt (no re-read, no state).
    pub fresh: Option<Spooled>,
}

/// Fresh messages kept in memory at most; beyond that the first attempt reads the spool file.
pub(super) const MAX_FRESH_IN_MEMORY: usize = 1000;

impl Schedule {
    pub fn plan(&mut self, id: &str, at: u64, now: u64) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        self.timers.remove(&(entry.next_attempt, id.to_string()));
        entry.next_attempt = at;
        if entry.held || entry.running {
            return;
        }
        if at <= now {
            self.ready.push_back(id.to_string());
        } else {
            self.timers.insert((at, id.to_string()));
        }
    }

    /// Moves due timers to the ready list and returns the next timer's time.
    pub fn due(&mut self, now: u64) -> Option<u64> {
        while let Some((at, id)) = self.timers.first().cloned() {
            if at > now {
                return Some(at);
            }
            self.timers.pop_first();
            self.ready.push_back(id);
        }
        None
    }
}
