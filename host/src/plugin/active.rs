//! The plugin set in service. Sessions and the queue take the current set when a transaction
//! starts and keep that `Arc` until it ends, so a reload never changes a chain half-way; a
//! replaced set lives on only as long as some transaction still holds it.

use std::sync::{Arc, Mutex, RwLock, Weak};

use super::PluginSet;

pub struct ActivePlugins {
    current: RwLock<Arc<PluginSet>>,
    /// Replaced sets, to report how many are still in use.
    retired: Mutex<Vec<Weak<PluginSet>>>,
}

impl ActivePlugins {
    pub fn new(set: PluginSet) -> ActivePlugins {
        ActivePlugins {
            current: RwLock::new(Arc::new(set)),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// The set new transactions use.
    pub fn current(&self) -> Arc<PluginSet> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts `set` in service as the next generation, atomically; returns its generation.
    pub fn replace(&self, mut set: PluginSet) -> u64 {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        set.generation = current.generation + 1;
        let generation = set.generation;
        let old = std::mem::replace(&mut *current, Arc::new(set));
        drop(current);
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.retain(|w| w.strong_count() > 0);
        retired.push(Arc::downgrade(&old));
        generation
    }

    /// How many replaced sets some transaction still uses.
    pub fn retired_in_use(&self) -> usize {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.retain(|w| w.strong_count() > 0);
        retired.len()
    }
}
