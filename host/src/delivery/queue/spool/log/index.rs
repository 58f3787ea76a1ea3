//! What the log holds, in memory: where each queued message's latest record is, and how much of
//! each segment is still live (for compaction). Rebuilt from the segments at start by replaying
//! their records in order; afterwards changed only by the writer, after the records are synced.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::sync::Arc;

use super::record::Kind;

/// Where a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
    /// The whole record, header included.
    pub len: u32,
}

/// One segment file, open for reading.
pub struct Segment {
    pub file: Arc<File>,
    /// Bytes written (magic and records; the rest is preallocated zeros).
    pub used: u64,
    /// Bytes of records that are some message's latest.
    pub live: u64,
    /// The messages whose latest record is here.
    pub ids: BTreeSet<String>,
}

impl Segment {
    pub fn new(file: Arc<File>, used: u64) -> Segment {
        Segment {
            file,
            used,
            live: 0,
            ids: BTreeSet::new(),
        }
    }
}

#[derive(Default)]
pub struct Index {
    /// Queued messages, by id (ids sort by time: oldest first).
    pub messages: BTreeMap<String, Location>,
    pub segments: BTreeMap<u64, Segment>,
}

impl Index {
    /// Applies one record, in log order.
    pub fn apply(&mut self, kind: Kind, id: &str, at: Location) {
        match kind {
            Kind::Message => self.put(id, at),
            Kind::Remove => self.remove(id),
        }
    }

    fn put(&mut self, id: &str, at: Location) {
        self.remove(id);
        if let Some(segment) = self.segments.get_mut(&at.segment) {
            segment.live += u64::from(at.len);
            segment.ids.insert(id.to_string());
        }
        self.messages.insert(id.to_string(), at);
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.messages.remove(id) {
            if let Some(segment) = self.segments.get_mut(&old.segment) {
                segment.live = segment.live.saturating_sub(u64::from(old.len));
                segment.ids.remove(id);
            }
        }
    }

    /// Where a message's record is, and the file to read it from.
    pub fn find(&self, id: &str) -> Option<(Location, Arc<File>)> {
        let at = *self.messages.get(id)?;
        let file = self.segments.get(&at.segment)?.file.clone();
        Some((at, file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_with(segments: &[u64]) -> Index {
        let mut index = Index::default();
        for &n in segments {
            let file = Arc::new(tempfile::tempfile().expect("file"));
            index.segments.insert(n, Segment::new(file, 0));
        }
        index
    }

    #[test]
    fn the_latest_record_wins_and_live_bytes_follow_it() {
        let mut index = index_with(&[1, 2]);
        let at = |segment, offset| Location {
            segment,
            offset,
            len: 100,
        };
        index.apply(Kind::Message, "a", at(1, 8));
        index.apply(Kind::Message, "b", at(1, 108));
        index.apply(Kind::Message, "a", at(2, 8));
        index.apply(Kind::Remove, "b", at(2, 108));
        assert_eq!(index.messages.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(index.find("a").map(|(l, _)| l), Some(at(2, 8)));
        assert_eq!(index.segments[&1].live, 0);
        assert!(index.segments[&1].ids.is_empty());
        assert_eq!(index.segments[&2].live, 100);
        // A removal of something never seen is harmless.
        index.apply(Kind::Remove, "zz", at(2, 208));
        assert_eq!(index.messages.len(), 1);
    }
}
