//! The message journal: what happened to each message, as JSON lines in `<data>/journal/`,
//! for `mailgate trace`. Sessions and the queue hand records to a writer thread through a
//! bounded channel (a full channel drops the record rather than slow a session). The writer
//! wakes every [`WRITE_EVERY`] to take what has gathered — so that sending a record never
//! wakes a thread, and the file gets one write per batch — appends it to the current segment
//! file, starts a new one past an eighth of the size cap, and deletes the oldest segments
//! beyond the size cap or the age cap.

use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Records waiting for the writer at most; more are dropped (and counted).
const CHANNEL: usize = 32 * 1024;
/// How often the writer takes the records gathered (and how late `mailgate trace` may see them).
pub const WRITE_EVERY: Duration = Duration::from_millis(100);
/// The writer's buffer: a batch goes out in a few large writes.
const BUFFER: usize = 256 * 1024;
/// The smallest segment, however small the cap.
const MIN_SEGMENT: u64 = 256 * 1024;

/// One event of a session or of a queued message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Unix milliseconds.
    pub t: u64,
    /// When the server started (unix seconds): session ids restart from 1 with each start.
    pub boot: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session: String,
    /// The session's transaction number (0 before the first MAIL, and for the queue's records).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tx: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub queue: String,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A client connected.
    Connect {
        peer: String,
        listener: String,
        tls: bool,
    },
    /// An SMTP command, the plugins' run at its stage (if one ran) and the reply sent.
    Command {
        command: String,
        reply: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<StageTrace>,
    },
    /// A message accepted (then spooled, discarded or quarantined).
    Accepted {
        sender: String,
        recipients: Vec<String>,
        size: usize,
        /// The sender authentication results, as in the Authentication-Results field.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authentication: Option<String>,
        /// The delivery status notifications asked for (RFC 3461), as lines for people:
        /// RET and ENVID, then each recipient's NOTIFY and ORCPT; none when nothing was asked.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        dsn: Vec<String>,
    },
    /// The deliver stage for one destination of one attempt.
    Deliver { stage: StageTrace },
    /// One delivery attempt to one destination, per recipient.
    Attempt {
        attempt: u32,
        destination: String,
        results: Vec<RecipientResult>,
    },
    /// Local delivery into mailboxes.
    Local { mailboxes: usize },
    /// A bounce for the failed recipients, queued under its own id.
    Bounced { bounce: String },
    /// The message is done: delivered, bounced, discarded, quarantined, expired.
    Disposition {
        outcome: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        detail: String,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One stage's run of the chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageTrace {
    pub stage: String,
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    pub runs: Vec<RunTrace>,
}

/// One plugin's call at a stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunTrace {
    pub plugin: String,
    /// The verdict's name, or `fault`.
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edits: Vec<String>,
    pub micros: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// How one recipient fared in one attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecipientResult {
    pub rcpt: String,
    /// delivered, deferred, bounced or dropped.
    pub result: String,
    /// The remote reply or the reason.
    pub text: String,
}

/// Where and how much the journal keeps.
#[derive(Debug, Clone)]
pub struct Caps {
    pub max_bytes: u64,
    pub max_age: Duration,
}

struct Journal {
    boot: u64,
    sender: SyncSender<Record>,
    dropped: AtomicU64,
    stop: Arc<AtomicBool>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

static JOURNAL: OnceLock<Journal> = OnceLock::new();

fn now_ms() -> u64 {
    crate::mail::clock::unix_millis()
}

/// Starts the writer for `dir` (created if missing). Records before this call, or when it
/// was never made (the harness, the CLI), go nowhere.
pub fn enable(dir: &Path, caps: Caps) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let (sender, receiver) = std::sync::mpsc::sync_channel(CHANNEL);
    let writer = Writer::open(dir, caps)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("journal".into())
        .spawn(move || writer.run(&receiver, &stopping))?;
    let journal = Journal {
        boot: now_ms() / 1000,
        sender,
        dropped: AtomicU64::new(0),
        stop,
        writer: Mutex::new(Some(thread)),
    };
    let _ = JOURNAL.set(journal);
    Ok(())
}

/// Writes out what is gathered and stops the writer (at shutdown; later records are lost).
pub fn close() {
    let Some(journal) = JOURNAL.get() else {
        return;
    };
    journal.stop.store(true, Ordering::SeqCst);
    let thread = journal
        .writer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(thread) = thread {
        let _ = thread.join();
    }
}

/// Journals one event of session `session` (transaction `tx`) and/or queued message `queue`.
pub fn record(session: &str, tx: u32, queue: &str, event: Event) {
    let Some(journal) = JOURNAL.get() else {
        return;
    };
    let record = Record {
        t: now_ms(),
        boot: journal.boot,
        session: session.to_string(),
        tx,
        queue: queue.to_string(),
        event,
    };
    if let Err(TrySendError::Full(_)) = journal.sender.try_send(record) {
        let dropped = journal.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped.is_power_of_two() {
            tracing::warn!(dropped, "journal writer behind: records dropped");
        }
    }
}

/// True when records are being kept (callers skip building them otherwise).
pub fn enabled() -> bool {
    JOURNAL.get().is_some()
}

struct Writer {
    dir: PathBuf,
    caps: Caps,
    segment: u64,
    file: BufWriter<File>,
    written: u64,
}

impl Writer {
    fn open(dir: &Path, caps: Caps) -> std::io::Result<Writer> {
        let segment = (caps.max_bytes / 8).max(MIN_SEGMENT);
        let (file, written) = Writer::new_segment(dir)?;
        let writer = Writer {
            dir: dir.to_path_buf(),
            caps,
            segment,
            file,
            written,
        };
        writer.prune();
        Ok(writer)
    }

    fn new_segment(dir: &Path) -> std::io::Result<(BufWriter<File>, u64)> {
        // Zero-padded start time and a sequence number: names sort in time order.
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let name = format!("journal-{:016}-{seq:06}.jsonl", now_ms());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))?;
        let written = file.metadata().map_or(0, |m| m.len());
        Ok((BufWriter::with_capacity(BUFFER, file), written))
    }

    fn run(mut self, receiver: &Receiver<Record>, stop: &AtomicBool) {
        loop {
            std::thread::sleep(WRITE_EVERY);
            let mut stopping = stop.load(Ordering::SeqCst);
            let mut wrote = false;
            loop {
                match receiver.try_recv() {
                    Ok(record) => {
                        self.write(&record);
                        wrote = true;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        stopping = true;
                        break;
                    }
                }
            }
            if wrote {
                if let Err(e) = self.file.flush() {
                    tracing::warn!("journal: {e}");
                }
                if self.written >= self.segment {
                    self.rotate();
                }
            }
            if stopping {
                return;
            }
        }
    }

    fn write(&mut self, record: &Record) {
        let Ok(mut line) = serde_json::to_vec(record) else {
            return;
        };
        line.push(b'\n');
        match self.file.write_all(&line) {
            Ok(()) => self.written += line.len() as u64,
            Err(e) => tracing::warn!("journal: {e}"),
        }
    }

    fn rotate(&mut self) {
        match Writer::new_segment(&self.dir) {
            Ok((file, written)) => {
                self.file = file;
                self.written = written;
            }
            Err(e) => tracing::warn!("journal: cannot start a new segment: {e}"),
        }
        self.prune();
    }

    /// Deletes the oldest segments until the rest fit the size cap, and any past the age cap
    /// (never the one being written).
    fn prune(&self) {
        let mut segments = segments(&self.dir);
        let Some(current) = segments.pop() else {
            return;
        };
        let mut total: u64 = std::fs::metadata(&current).map_or(0, |m| m.len());
        let now = SystemTime::now();
        for path in segments.iter().rev() {
            let meta = std::fs::metadata(path).ok();
            let size = meta.as_ref().map_or(0, |m| m.len());
            let age = meta
                .and_then(|m| m.modified().ok())
                .and_then(|at| now.duration_since(at).ok())
                .unwrap_or_default();
            total = total.saturating_add(size);
            if total > self.caps.max_bytes || age > self.caps.max_age {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// The journal's segment files, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("journal-") && n.ends_with(".jsonl"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Every record in the journal, oldest first; lines that do not parse (a segment cut short
/// by a crash) are skipped.
pub fn read(dir: &Path) -> Vec<Record> {
    let mut records = Vec::new();
    for path in segments(dir) {
        let Ok(file) = File::open(&path) else {
            continue;
        };
        for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
            if let Ok(record) = serde_json::from_str::<Record>(&line) {
                records.push(record);
            }
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> Record {
        Record {
            t: now_ms(),
            boot: 1,
            session: format!("{n:x}"),
            tx: 1,
            queue: String::new(),
            event: Event::Command {
                command: "RCPT TO:<x@example.test>".into(),
                reply: "250 2.1.5 Ok".into(),
                stage: None,
            },
        }
    }

    #[test]
    fn the_journal_stays_under_its_size_cap_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let caps = Caps {
            max_bytes: 2 * MIN_SEGMENT,
            max_age: Duration::from_secs(3600),
        };
        let mut writer = Writer::open(dir.path(), caps).expect("open");
        for n in 0..20_000 {
            writer.write(&record(n));
            if writer.written >= writer.segment {
                writer.file.flush().expect("flush");
                writer.rotate();
            }
        }
        writer.file.flush().expect("flush");
        let total: u64 = segments(dir.path())
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        assert!(total <= 3 * MIN_SEGMENT, "{total} bytes kept");
        let records = read(dir.path());
        assert!(!records.is_empty());
        // The newest survive, the oldest went.
        assert_eq!(records.last().map(|r| r.session.as_str()), Some("4e1f"));
        assert!(records.iter().all(|r| r.session != "0"));
    }
}
