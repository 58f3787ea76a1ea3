use std::time::{Duration, Instant};

use super::*;
use crate::delivery::queue::spool::files::FileSpool;
use crate::delivery::queue::spool::new_queue_id;

fn envelope(id: &str) -> QueuedEnvelope {
    QueuedEnvelope {
        id: id.into(),
        sender: "a@example.net".into(),
        recipients: vec!["b@example.org".into(), "c@example.org".into()],
        received_at: 1,
        client_ip: "127.0.0.1".into(),
        helo: "client".into(),
        auth_user: None,
        smtputf8: false,
        binary: false,
        dsn: Default::default(),
        skip_plugins: Vec::new(),
    }
}

fn body(n: usize) -> Vec<u8> {
    format!("Subject: {n}\r\n\r\n{}\r\n", "x".repeat(n % 700)).into_bytes()
}

async fn store_all(spool: &LogSpool, count: usize) -> Vec<String> {
    let ids: Vec<String> = (0..count).map(|_| new_queue_id()).collect();
    let tasks: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let (spool, env) = (spool.clone(), envelope(id));
            tokio::spawn(async move { spool.store(&env, &body(n)).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("stored");
    }
    ids
}

/// The segment files, oldest first.
fn segments(root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root.join("log"))
        .expect("log dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    found.sort();
    found
}

/// Waits until the writer thread of a dropped spool has let go of the lock.
fn reopen(root: &Path, size: u64) -> LogSpool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match LogSpool::open_sized(root, size) {
            Ok(spool) => return spool,
            Err(e) if Instant::now() > deadline => panic!("reopen: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_rewrites_removes_and_rebuilds_its_index_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = LogSpool::open(dir.path()).expect("open");
    let ids = store_all(&spool, 40).await;
    assert_eq!(spool.list().expect("list"), ids, "oldest first");
    let mut first = spool.load(&ids[0]).expect("load");
    assert_eq!(first.message, body(0));
    assert_eq!(first.envelope, envelope(&ids[0]));
    first.envelope.recipients.truncate(1);
    spool.rewrite(&first).expect("rewrite");
    assert_eq!(
        spool.load(&ids[0]).expect("load").envelope.recipients.len(),
        1
    );
    spool.remove(&ids[1]).expect("remove");
    assert!(spool.remove(&ids[1]).is_err(), "gone already");
    assert!(!spool.contains(&ids[1]));
    assert!(spool.load("../../etc/passwd").is_err());
    assert!(
        LogSpool::open(dir.path()).is_err(),
        "a second process cannot open the same log"
    );
    drop(spool);
    let reopened = reopen(dir.path(), DEFAULT_SEGMENT_SIZE);
    assert_eq!(reopened.list().expect("list").len(), 39);
    assert!(!reopened.contains(&ids[1]), "a removal survives a restart");
    assert_eq!(
        reopened.load(&ids[0]).expect("load").envelope.recipients,
        ["b@example.org"],
        "the rewrite survives a restart"
    );
    for (n, id) in ids.iter().enumerate().skip(2) {
        assert_eq!(reopened.load(id).expect("load").message, body(n));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_is_ignored_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = LogSpool::open(dir.path()).expect("open");
    let ids = store_all(&spool, 5).await;
    let last = spool.shared.index().messages[&ids[4]];
    drop(spool);
    let segment = segments(dir.path()).pop().expect("a segment");
    // The crash cut the last record in its middle (the file ends there).
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("segment");
    file.set_len(last.offset + u64::from(last.len) / 2)
        .expect("truncate");
    drop(file);
    let reopened = reopen(dir.path(), DEFAULT_SEGMENT_SIZE);
    let ids_left = reopened.list().expect("list");
    let mut sent: Vec<String> = ids.clone();
    sent.retain(|id| *id != ids[4]);
    let mut left = ids_left.clone();
    left.sort();
    sent.sort();
    assert_eq!(left, sent, "only the torn record is missing");
    // New messages go on after it, and all survive the next start.
    let more = store_all(&reopened, 3).await;
    drop(reopened);
    let again = reopen(dir.path(), DEFAULT_SEGMENT_SIZE);
    assert_eq!(again.list().expect("list").len(), 4 + more.len());
    for id in &more {
        again.load(id).expect("a later message loads");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_is_never_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = LogSpool::open(dir.path()).expect("open");
    let ids = store_all(&spool, 3).await;
    let middle = spool.shared.index().messages[&ids[1]];
    drop(spool);
    let segment = segments(dir.path()).pop().expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read");
    let inside = (middle.offset + u64::from(middle.len) - 3) as usize;
    bytes[inside] ^= 0xff;
    std::fs::write(&segment, &bytes).expect("write");
    let reopened = reopen(dir.path(), DEFAULT_SEGMENT_SIZE);
    let mut expected = vec![ids[0].clone(), ids[2].clone()];
    expected.sort();
    assert_eq!(reopened.list().expect("list"), expected);
    assert_eq!(reopened.load(&ids[2]).expect("load").message, body(2));
    assert!(reopened.load(&ids[1]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_frees_segments_while_messages_arrive_and_leave() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 4 * 1024;
    let spool = LogSpool::open_sized(dir.path(), size).expect("open");
    let mut kept = Vec::new();
    for round in 0..12 {
        let ids = store_all(&spool, 20).await;
        // Most leave; one in five stays, in every segment written.
        for (n, id) in ids.iter().enumerate() {
            if n % 5 == round % 5 {
                kept.push(id.clone());
            } else {
                let (spool, id) = (spool.clone(), id.clone());
                tokio::task::spawn_blocking(move || spool.remove(&id))
                    .await
                    .expect("task")
                    .expect("removed");
            }
        }
    }
    let created = spool
        .shared
        .index()
        .segments
        .keys()
        .max()
        .copied()
        .unwrap_or(0);
    assert!(created >= 25, "only {created} segments were written");
    // Compacted, the sealed segments are dense but for two segments' worth of dead records;
    // with the one being written and partly filled ones, a few more than the live bytes need.
    let live: u64 = spool.shared.index().segments.values().map(|s| s.live).sum();
    let bound = live.div_ceil(size) as usize + 4;
    let deadline = Instant::now() + Duration::from_secs(20);
    while segments(dir.path()).len() > bound {
        assert!(
            Instant::now() < deadline,
            "{created} segments written, {} left, {bound} needed",
            segments(dir.path()).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kept.sort();
    assert_eq!(spool.list().expect("list"), kept);
    for id in &kept {
        spool
            .load(id)
            .expect("a kept message loads after being copied");
    }
    drop(spool);
    let reopened = reopen(dir.path(), size);
    assert_eq!(reopened.list().expect("list"), kept, "and after a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_over_a_file_spool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = FileSpool::open(dir.path()).expect("file spool");
    let ids: Vec<String> = (0..10).map(|_| new_queue_id()).collect();
    for (n, id) in ids.iter().enumerate() {
        files.store(&envelope(id), &body(n)).await.expect("stored");
    }
    drop(files);
    let log = LogSpool::open(dir.path()).expect("open");
    assert_eq!(log.list().expect("list"), ids);
    for (n, id) in ids.iter().enumerate() {
        let spooled = log.load(id).expect("load");
        assert_eq!((spooled.envelope, spooled.message), (envelope(id), body(n)));
    }
    let left = std::fs::read_dir(dir.path().join("active"))
        .expect("active")
        .count();
    assert_eq!(left, 0, "the files went once their records were synced");
    drop(log);
    assert_eq!(
        reopen(dir.path(), DEFAULT_SEGMENT_SIZE)
            .list()
            .expect("list"),
        ids
    );
}
