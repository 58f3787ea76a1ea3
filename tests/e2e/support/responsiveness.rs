//! Whether the gateway still answers others while a heavy request runs (the hardening tests).

/// Taken by tests whose requests load the machine on purpose (the attacks of the hardening
/// tests), so that two of them in one test binary never run at once: one attack's load would
/// slow the other's probes, and each test's figures are its own.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// While a heavy request runs: another client's SMTP greeting and IMAP NOOP, over and over on
/// fresh connections, each answered within a second. Started by [`Responsiveness::watch`],
/// read by [`Responsiveness::finish`]: the slowest answer seen and the failures.
pub struct Responsiveness {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<ProbeLog>>,
}

/// What [`Responsiveness`] saw.
#[derive(Debug, Default)]
pub struct ProbeLog {
    pub rounds: u32,
    pub slowest: std::time::Duration,
    pub failures: Vec<String>,
}

impl Responsiveness {
    /// Starts probing `smtp` (greeting) and `imap` (greeting, NOOP) on loopback.
    pub fn watch(smtp: u16, imap: u16) -> Responsiveness {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut log = ProbeLog::default();
            while !flag.load(Ordering::Relaxed) {
                for (what, result) in [
                    ("SMTP greeting", probe_smtp(smtp)),
                    ("IMAP NOOP", probe_imap(imap)),
                ] {
                    match result {
                        Ok(took) => log.slowest = log.slowest.max(took),
                        Err(e) => log.failures.push(format!("{what}: {e}")),
                    }
                }
                log.rounds += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            log
        });
        Responsiveness {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops probing and asserts every answer came within a second (and at least one round ran).
    pub fn finish(mut self) -> ProbeLog {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let log = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        assert!(log.rounds > 0, "no probe ran");
        assert!(log.failures.is_empty(), "probes failed: {:?}", log.failures);
        assert!(
            log.slowest < std::time::Duration::from_secs(1),
            "slowest answer {:?}",
            log.slowest
        );
        log
    }
}

impl Drop for Responsiveness {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

const PROBE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// Connects and reads the first line; the time it took, or why it failed.
fn probe_line(port: u16, then: Option<&[u8]>) -> Result<std::time::Duration, String> {
    use std::io::{BufRead, BufReader, Write};
    let started = std::time::Instant::now();
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(PROBE_DEADLINE))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("greeting: {e}"))?;
    if let Some(bytes) = then {
        (&stream).write_all(bytes).map_err(|e| e.to_string())?;
        loop {
            line.clear();
            reader
                .read_line(&mut line)
                .map_err(|e| format!("reply: {e}"))?;
            if line.is_empty() || line.starts_with("p ") {
                break;
            }
        }
        if !line.starts_with("p OK") {
            return Err(format!("reply {line:?}"));
        }
    } else if !line.starts_with("220") {
        return Err(format!("greeting {line:?}"));
    }
    Ok(started.elapsed())
}

fn probe_smtp(port: u16) -> Result<std::time::Duration, String> {
    probe_line(port, None)
}

fn probe_imap(port: u16) -> Result<std::time::Duration, String> {
    probe_line(port, Some(b"p NOOP\r\n"))
}
