//! Ports and waits: a free loopback port, a port that opened, a condition with a deadline.

/// A loopback port nothing listens on, never given twice on this machine while the test
/// process that took it runs (test binaries run side by side: see [`reserve_across_processes`]).
/// It is taken below the kernel's ephemeral range (32768 and up): a port from there could
/// become the source port of some other test's outgoing connection between now and the moment
/// a server binds it, and that server would then fail to start.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Each test process starts elsewhere in the span, in case an earlier one left a server.
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + offset) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && reserve_across_processes(port)
        {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN)
}

/// Claims `port` for this test process among all test processes on the machine: a lock
/// (`flock`) on a file named for the port, held until the process ends. Two test binaries
/// running at once could otherwise each find the port free and hand it to two servers. False
/// when another process holds it. Where the lock files cannot be made, the claim is granted
/// (the bind check above is then the only guard, as when one binary runs alone).
fn reserve_across_processes(port: u16) -> bool {
    use std::os::fd::AsRawFd;
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("mailgate-e2e-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(port.to_string()))
    else {
        return true;
    };
    // SAFETY: flock on a descriptor this function owns; no memory is shared with the call.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if locked {
        HELD.lock().unwrap_or_else(|e| e.into_inner()).push(file);
    }
    locked
}

/// Waits for a listener: up to four minutes, because a gateway compiling its plugins on first
/// start (Python and JavaScript components take tens of CPU seconds each) may share two cores
/// with other test binaries doing the same.
pub fn wait_for_port(port: u16) {
    for _ in 0..9600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("port {port} never opened");
}

/// Waits up to `secs` seconds for `done` to hold.
pub fn wait_until(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    done()
}
