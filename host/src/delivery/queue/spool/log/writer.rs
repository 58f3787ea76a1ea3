//! The log's one writer: a thread that takes every record waiting, appends them to the
//! current segment with one write, makes them durable with one `fdatasync`, applies them to
//! the index in log order and only then answers each waiter (the SMTP `250` waits for that).
//! Between batches it compacts: the oldest segment, once little of it is live, has its live
//! records copied forward and is unlinked. Only the oldest is ever compacted: a removal record
//! dropped with it can only speak of records in it or in segments already gone, so nothing
//! removed comes back at the next start.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use super::index::{Index, Location, Segment};
use super::record::{self, Kind, SEGMENT_MAGIC};

/// Records gathered into one write and one sync at most (more wait for the next batch).
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Live bytes copied forward per compaction step, so waiting writers are served in between.
const COMPACT_STEP_BYTES: u64 = 4 << 20;
/// How long the writer sleeps when nothing arrives before looking at compaction again.
const IDLE: Duration = Duration::from_millis(500);

/// Who waits for a record to be durable.
pub enum Ack {
    Async(oneshot::Sender<Result<(), String>>),
    Blocking(SyncSender<Result<(), String>>),
    /// Compaction's copies: nobody waits.
    Nobody,
}

impl Ack {
    fn send(self, result: Result<(), String>) {
        match self {
            Ack::Async(tx) => {
                let _ = tx.send(result);
            }
            Ack::Blocking(tx) => {
                let _ = tx.send(result);
            }
            Ack::Nobody => {}
        }
    }
}

/// One record to append.
pub struct Request {
    pub record: Vec<u8>,
    pub kind: Kind,
    pub id: String,
    pub ack: Ack,
}

/// What the writer and the readers share.
pub struct Shared {
    pub dir: PathBuf,
    pub index: Mutex<Index>,
    /// Bytes preallocated per segment (a larger record gets a segment of its own size).
    pub segment_size: u64,
}

impl Shared {
    pub fn index(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock leaves the index as consistent as between any two
        // records: keep using it.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.seg")
}

/// The segment being appended to.
struct Current {
    seq: u64,
    file: Arc<File>,
    /// Where the next record goes.
    offset: u64,
    capacity: u64,
    /// A write or sync failed here: nothing more goes into this segment.
    broken: bool,
}

impl Current {
    fn fits(&self, len: usize) -> bool {
        !self.broken && self.offset + len as u64 <= self.capacity
    }
}

pub struct Writer {
    shared: Arc<Shared>,
    /// The log directory, opened for `fsync` after a segment is created or unlinked.
    dir: File,
    current: Option<Current>,
    next_seq: u64,
    /// The log's lock, held while the writer runs (even after the last handle is dropped).
    _lock: Arc<File>,
}

impl Writer {
    /// A writer for a log whose segments so far end at `last_seq` (appends go to a new one).
    pub fn new(shared: Arc<Shared>, last_seq: u64, lock: Arc<File>) -> std::io::Result<Writer> {
        let dir = File::open(&shared.dir)?;
        Ok(Writer {
            shared,
            dir,
            current: None,
            next_seq: last_seq + 1,
            _lock: lock,
        })
    }

    /// Serves requests until every sender is gone.
    pub fn run(mut self, requests: Receiver<Request>) {
        loop {
            let wait = if self.compaction_due().is_some() {
                Duration::ZERO
            } else {
                IDLE
            };
            match requests.recv_timeout(wait) {
                Ok(first) => {
                    let mut batch = vec![first];
                    let mut bytes = batch[0].record.len();
                    while bytes < MAX_BATCH_BYTES {
                        let Ok(more) = requests.try_recv() else {
                            break;
                        };
                        bytes += more.record.len();
                        batch.push(more);
                    }
                    self.commit(batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.compact_step();
        }
    }

    /// Appends, syncs, applies and acknowledges one batch.
    pub fn commit(&mut self, batch: Vec<Request>) {
        let mut settled: Vec<(Request, Result<Location, String>)> = Vec::with_capacity(batch.len());
        let mut pending: Vec<(Request, Location)> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        for request in batch {
            let len = request.record.len();
            let fits = self
                .current
                .as_ref()
                .is_some_and(|c| c.fits(buf.len() + len));
            if !fits {
                let flushed = self.flush(&buf);
                settle(&mut settled, &mut pending, flushed);
                buf.clear();
                if let Err(e) = self.roll(len) {
                    tracing::error!("spool log: cannot start a segment: {e}");
                    settled.push((request, Err(format!("spool log: no new segment: {e}"))));
                    continue;
                }
            }
            let Some(current) = self.current.as_ref() else {
                settled.push((request, Err("spool log: no segment".into())));
                continue;
            };
            let at = Location {
                segment: current.seq,
                offset: current.offset + buf.len() as u64,
                len: len as u32,
            };
            buf.extend_from_slice(&request.record);
            pending.push((request, at));
        }
        let flushed = self.flush(&buf);
        settle(&mut settled, &mut pending, flushed);
        let mut index = self.shared.index();
        let mut acks = Vec::with_capacity(settled.len());
        for (request, outcome) in settled {
            let outcome = outcome.map(|at| index.apply(request.kind, &request.id, at));
            acks.push((request.ack, outcome));
        }
        drop(index);
        for (ack, outcome) in acks {
            ack.send(outcome);
        }
    }

    /// Writes `buf` at the end of the current segment and syncs it.
    fn flush(&mut self, buf: &[u8]) -> Result<(), String> {
        if buf.is_empty() {
            return Ok(());
        }
        let Some(current) = self.current.as_mut() else {
            return Err("spool log: no segment".into());
        };
        let start = current.offset;
        let written = current
            .file
            .write_all_at(buf, start)
            .and_then(|()| current.file.sync_data());
        match written {
            Ok(()) => {
                current.offset += buf.len() as u64;
                let (seq, end) = (current.seq, current.offset);
                if let Some(segment) = self.shared.index().segments.get_mut(&seq) {
                    segment.used = end;
                }
                Ok(())
            }
            Err(e) => {
                // Whatever reached the file must not be read as records at the next start
                // (their senders hear a failure): zero it, best effort, and leave the segment.
                current.broken = true;
                let zeros = vec![0u8; buf.len()];
                let _ = current
                    .file
                    .write_all_at(&zeros, start)
                    .and_then(|()| current.file.sync_data());
                tracing::error!(
                    "spool log: write to {} failed: {e}",
                    segment_name(current.seq)
                );
                Err(format!("spool log write failed: {e}"))
            }
        }
    }

    /// Starts a new segment large enough for a record of `len` bytes: preallocated, its magic
    /// written, its directory entry synced.
    fn roll(&mut self, len: usize) -> std::io::Result<()> {
        let seq = self.next_seq;
        let capacity = self
            .shared
            .segment_size
            .max((SEGMENT_MAGIC.len() + len) as u64);
        let path = self.shared.dir.join(segment_name(seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let made = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, capacity)
            .map_err(std::io::Error::from)
            .and_then(|()| file.write_all_at(SEGMENT_MAGIC, 0))
            .and_then(|()| self.dir.sync_all());
        if let Err(e) = made {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        self.next_seq += 1;
        let file = Arc::new(file);
        let used = SEGMENT_MAGIC.len() as u64;
        self.shared
            .index()
            .segments
            .insert(seq, Segment::new(file.clone(), used));
        self.current = Some(Current {
            seq,
            file,
            offset: used,
            capacity,
            broken: false,
        });
        Ok(())
    }

    /// The oldest segment when it should be compacted: it is not the one being written, and
    /// little of it is live, or the sealed segments hold more than two segments' worth of
    /// dead records (then even a mostly live oldest segment moves, to free the rest behind it).
    fn compaction_due(&self) -> Option<u64> {
        let current = self.current.as_ref().map(|c| c.seq);
        let index = self.shared.index();
        let (&oldest, segment) = index.segments.iter().next()?;
        if Some(oldest) == current {
            return None;
        }
        let dead: u64 = index
            .segments
            .iter()
            .filter(|(seq, _)| Some(**seq) != current)
            .map(|(_, s)| s.used.saturating_sub(s.live))
            .sum();
        let sparse = segment.live * 2 < segment.used;
        (sparse || dead > 2 * self.shared.segment_size).then_some(oldest)
    }

    /// One step of compaction: copies up to [`COMPACT_STEP_BYTES`] of the oldest segment's
    /// live records forward, or unlinks it once none is left.
    pub fn compact_step(&mut self) {
        let Some(oldest) = self.compaction_due() else {
            return;
        };
        let copies = {
            let index = self.shared.index();
            let Some(segment) = index.segments.get(&oldest) else {
                return;
            };
            let mut copies = Vec::new();
            let mut bytes = 0u64;
            for id in &segment.ids {
                if bytes >= COMPACT_STEP_BYTES {
                    break;
                }
                if let Some(at) = index.messages.get(id) {
                    bytes += u64::from(at.len);
                    copies.push((id.clone(), *at, segment.file.clone()));
                }
            }
            copies
        };
        if copies.is_empty() {
            self.unlink(oldest);
            return;
        }
        let mut batch = Vec::with_capacity(copies.len());
        for (id, at, file) in copies {
            match read_record(&file, at) {
                Ok(record) => batch.push(Request {
                    record,
                    kind: Kind::Message,
                    id,
                    ack: Ack::Nobody,
                }),
                Err(e) => {
                    // Leave it where it is: compaction of this segment waits.
                    tracing::error!(queue_id = %id, "spool log: cannot copy forward: {e}");
                    return;
                }
            }
        }
        self.commit(batch);
    }

    /// Removes a segment nothing live is in; the directory is synced before anything newer
    /// can be compacted, so a removal record never outlives the segment it speaks of.
    fn unlink(&mut self, seq: u64) {
        let path = self.shared.dir.join(segment_name(seq));
        match std::fs::remove_file(&path).and_then(|()| self.dir.sync_all()) {
            Ok(()) => {
                self.shared.index().segments.remove(&seq);
                tracing::debug!("spool log: compacted {}", path.display());
            }
            Err(e) => tracing::error!("spool log: cannot remove {}: {e}", path.display()),
        }
    }
}

/// Moves what is pending into `settled` with the flush's outcome.
fn settle(
    settled: &mut Vec<(Request, Result<Location, String>)>,
    pending: &mut Vec<(Request, Location)>,
    flushed: Result<(), String>,
) {
    for (request, at) in pending.drain(..) {
        settled.push((request, flushed.clone().map(|()| at)));
    }
}

/// The bytes of one record.
pub fn read_record(file: &File, at: Location) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; at.len as usize];
    file.read_exact_at(&mut bytes, at.offset)?;
    Ok(bytes)
}

/// Opens the log's segments and replays them into an index; the highest sequence number.
pub fn rebuild(dir: &Path) -> std::io::Result<(Index, u64)> {
    let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let seq = name.to_str()?.strip_suffix(".seg")?;
            let seq = u64::from_str_radix(seq, 16).ok()?;
            Some((seq, entry.path()))
        })
        .collect();
    names.sort();
    let mut index = Index::default();
    let mut last = 0;
    for (seq, path) in names {
        last = seq;
        let bytes = std::fs::read(&path)?;
        let (found, report) = record::scan(&bytes);
        if report.torn {
            tracing::warn!(
                "spool log: {} ends in a torn record at byte {} (never acknowledged): ignored",
                path.display(),
                report.end
            );
        }
        for offset in &report.corrupt {
            tracing::error!(
                "spool log: {} has a damaged record at byte {offset}: skipped",
                path.display()
            );
        }
        let file = Arc::new(File::open(&path)?);
        index.segments.insert(seq, Segment::new(file, report.end));
        for f in found {
            let at = Location {
                segment: seq,
                offset: f.offset,
                len: f.len,
            };
            index.apply(f.kind, &f.id, at);
        }
    }
    Ok((index, last))
}
