//! A connection: our own read buffer over the byte stream (plain TCP or TLS, see [`Stream`]),
//! so that the session controls exactly which bytes are commands, which are message data, and
//! which get discarded (everything pipelined behind STARTTLS), and an output buffer that sends
//! pipelined replies together.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use client::Client;
use compress::Deflate;
pub use pace::Pace;
pub use stall::StallGuard;
pub use starttls::{TlsRefusal, HANDSHAKE_TIME};
pub use stream::Stream;

mod client;
mod compress;
mod pace;
mod stall;
mod starttls;
mod stream;

/// What reading a command line gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Ok(Vec<u8>),
    /// Longer than the limit; the bytes up to the next CRLF were thrown away.
    TooLong,
    Closed,
    TimedOut,
    /// The server is shutting down (see [`Client::next_line`]).
    Draining,
}

/// Buffer capacity a connection keeps between commands; more is given back.
const RETAINED_BUFFER: usize = 64 * 1024;

/// A stream with an input buffer and an output buffer (replies to pipelined commands go out
/// together, when the session is about to wait for input).
pub struct Connection {
    pub stream: Stream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Bytes ready for the wire (compressed already, if compressing) that the client has not
    /// taken yet: what a [`Connection::flush_within`] cut short left, sent first next time.
    unsent: Vec<u8>,
    /// How much of `unsent` the client has taken.
    sent: usize,
    /// IMAP COMPRESS=DEFLATE, once negotiated: every byte both ways goes through it.
    deflate: Option<Box<Deflate>>,
    /// A client that takes no byte of our output for this long is cut off (`flush` fails):
    /// one that never reads cannot hold its reply, its session and its slot forever.
    write_stall: Duration,
    /// A flush met the write stall: the client is cut off, every later flush fails at once
    /// (what the session queues after, its tagged reply say, must not wait another stall).
    stalled: bool,
}

/// Default for [`Connection::set_write_stall`] (`limits.write-stall-secs`).
pub const WRITE_STALL: Duration = Duration::from_secs(60);

/// Output a session may have queued before it must send it, before it takes another command
/// already buffered: a client that pipelines commands but never reads their replies stalls
/// itself (and then meets the write stall) instead of growing the server's memory.
pub const BACKPRESSURE: usize = 256 * 1024;

/// Replies held back while compressed commands are still waiting to be inflated.
const BATCHED_OUTPUT: usize = 64 * 1024;

impl Connection {
    pub fn new(stream: Stream) -> Connection {
        Connection {
            stream,
            input: Vec::with_capacity(4096),
            output: Vec::with_capacity(1024),
            unsent: Vec::new(),
            sent: 0,
            deflate: None,
            write_stall: WRITE_STALL,
            stalled: false,
        }
    }

    /// How long a client may take no byte of our output before a flush fails.
    pub fn write_stall(&self) -> Duration {
        self.write_stall
    }

    /// Sets [`Connection::write_stall`] (at least a second).
    pub fn set_write_stall(&mut self, stall: Duration) {
        self.write_stall = stall.max(Duration::from_secs(1));
    }

    pub fn queue(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }

    /// Bytes queued that the client has not taken yet.
    pub fn pending(&self) -> usize {
        self.output
            .len()
            .saturating_add(self.unsent.len() - self.sent)
    }

    /// Moves the queued replies behind what is ready for the wire, compressed if compressing.
    fn pack(&mut self) -> std::io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        match self.deflate.as_mut() {
            Some(deflate) => {
                // Compressing a large reply is CPU work: off the async workers.
                let output = &self.output;
                let packed = crate::sys::blocking::run(|| deflate.deflate(output))?;
                self.unsent.extend_from_slice(&packed);
                self.output.clear();
            }
            None if self.unsent.is_empty() => std::mem::swap(&mut self.output, &mut self.unsent),
            None => {
                self.unsent.extend_from_slice(&self.output);
                self.output.clear();
            }
        }
        // A big reply's buffer is not kept by a session that may now idle for hours.
        if self.output.capacity() > RETAINED_BUFFER {
            self.output = Vec::with_capacity(1024);
        }
        Ok(())
    }

    /// Sends everything queued. Cancelled midway (a wake-up while waiting on the client),
    /// nothing is lost or sent twice: the next flush goes on where this one stopped. Fails
    /// (`TimedOut`) when the client takes nothing for the write stall: the session ends.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.stalled && self.flush_within(self.write_stall).await? {
            return Ok(());
        }
        if !self.stalled {
            tracing::info!(
                "the client took no output for {:?}: disconnected",
                self.write_stall
            );
        }
        self.stalled = true;
        Err(std::io::ErrorKind::TimedOut.into())
    }

    /// Sends what is queued when it has passed [`BACKPRESSURE`]: called before each command,
    /// so that the replies to pipelined commands are bounded by what the client reads.
    async fn relieve(&mut self) -> Result<(), Line> {
        if self.pending() > BACKPRESSURE {
            self.flush().await.map_err(|_| Line::Closed)?;
        }
        Ok(())
    }

    /// One write of what is ready for the wire; a write takes some bytes or none.
    async fn write_some(&mut self) -> std::io::Result<()> {
        let n = self.stream.write(&self.unsent[self.sent..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.sent += n;
        Ok(())
    }

    fn sent_all(&mut self) {
        self.unsent.clear();
        self.sent = 0;
        // A big reply's buffer is not kept by a session that may now idle for hours.
        if self.unsent.capacity() > RETAINED_BUFFER {
            self.unsent = Vec::new();
        }
    }

    /// Sends what is queued for as long as the client keeps taking it: `false` when it took
    /// nothing for `stall` (the rest stays queued, in order, for the next flush). Unlike
    /// [`Connection::flush`], a client that stops reading cannot hold the caller.
    pub async fn flush_within(&mut self, stall: Duration) -> std::io::Result<bool> {
        self.pack()?;
        while self.sent < self.unsent.len() {
            match tokio::time::timeout(stall, self.write_some()).await {
                Err(_) => return Ok(false),
                Ok(done) => done?,
            }
        }
        self.sent_all();
        match tokio::time::timeout(stall, self.stream.flush()).await {
            Err(_) => Ok(false),
            Ok(done) => done.map(|()| true),
        }
    }

    /// Waits for more input, sending any queued replies first (the client may be waiting).
    async fn fill(&mut self, timeout: Duration) -> Result<bool, Line> {
        // A little of the replies may wait while compressed input is still here (below).
        if self.output.len() > BATCHED_OUTPUT {
            self.flush().await.map_err(|_| Line::Closed)?;
        }
        if let Some(deflate) = self.deflate.as_mut() {
            // Inflate what is already here before reading more; the replies queued meanwhile
            // go out together at the next wait (one compressed flush, not one per command).
            let before = self.input.len();
            if deflate.has_input() {
                deflate.inflate(&mut self.input).map_err(|_| Line::Closed)?;
                if self.input.len() > before {
                    return Ok(true);
                }
            }
        }
        self.flush().await.map_err(|_| Line::Closed)?;
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(timeout, self.stream.read(&mut chunk)).await {
            Err(_) => Err(Line::TimedOut),
            Ok(Err(_)) | Ok(Ok(0)) => Ok(false),
            Ok(Ok(n)) => match self.deflate.as_mut() {
                None => {
                    self.input.extend_from_slice(&chunk[..n]);
                    Ok(true)
                }
                Some(deflate) => {
                    deflate.pending.extend_from_slice(&chunk[..n]);
                    deflate.inflate(&mut self.input).map_err(|_| Line::Closed)?;
                    // A partial block may inflate to nothing yet: that is still progress.
                    Ok(true)
                }
            },
        }
    }

    /// The next CRLF-terminated line (without CRLF), at most `max` bytes including CRLF. The
    /// whole line must arrive within `timeout`: a client trickling bytes cannot stretch it.
    pub async fn read_line(&mut self, max: usize, timeout: Duration) -> Line {
        // Pipelined input is often all buffered already: without this, a client streaming
        // commands keeps its session always ready and its worker from every other client.
        tokio::task::coop::consume_budget().await;
        if let Err(end) = self.relieve().await {
            return end;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut discarding = false;
        // Where the search for CRLF resumes: bytes already searched are not searched again.
        let mut searched = 0;
        loop {
            let from = searched.min(self.input.len());
            if let Some(pos) = self.input[from..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map(|p| p + from)
            {
                let line: Vec<u8> = self.input.drain(..pos + 2).take(pos).collect();
                if discarding || pos + 2 > max {
                    return Line::TooLong;
                }
                return Line::Ok(line);
            }
            if self.input.len() > max {
                // Keep only a possible CR at the end; the rest of this line is garbage.
                let keep = usize::from(self.input.last() == Some(&b'\r'));
                self.input.drain(..self.input.len() - keep);
                discarding = true;
            }
            searched = self.input.len().saturating_sub(1);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.fill(left).await {
                Ok(true) => {}
                Ok(false) => return Line::Closed,
                Err(end) => return end,
            }
        }
    }

    /// Feeds buffered and then incoming bytes to `consume` until it reports it is done;
    /// `consume` returns (bytes used, done). Unused bytes stay buffered. `timeout` bounds each
    /// wait for input.
    pub async fn read_until(
        &mut self,
        timeout: Duration,
        consume: impl FnMut(&[u8]) -> (usize, bool),
    ) -> Result<(), Line> {
        self.read_until_paced(timeout, Pace::none(), consume).await
    }

    /// [`Connection::read_until`] that also ends (`TimedOut`) when the client sends slower
    /// than `pace` allows.
    pub async fn read_until_paced(
        &mut self,
        timeout: Duration,
        pace: Pace,
        mut consume: impl FnMut(&[u8]) -> (usize, bool),
    ) -> Result<(), Line> {
        // See `read_line`: a turn for the other tasks now and then, however ready the input.
        tokio::task::coop::consume_budget().await;
        self.relieve().await?;
        let started = tokio::time::Instant::now();
        let mut received: u64 = 0;
        loop {
            if !self.input.is_empty() {
                let (used, done) = consume(&self.input);
                self.input.drain(..used);
                received = received.saturating_add(used as u64);
                if done {
                    return Ok(());
                }
            }
            let wait = match pace.allowed(received) {
                Some(allowed) => {
                    let left = allowed.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        return Err(Line::TimedOut);
                    }
                    left.min(timeout)
                }
                None => timeout,
            };
            match self.fill(wait).await {
                Ok(true) => {}
                Ok(false) => return Err(Line::Closed),
                Err(end) => return Err(end),
            }
        }
    }
}
