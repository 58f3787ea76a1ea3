//! The connection's byte stream: plain TCP or TLS, with our own read buffer so that the session
//! controls exactly which bytes are commands, which are message data, and which get discarded
//! (everything pipelined behind STARTTLS).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Our side of TLS when delivering onward.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Only while STARTTLS swaps one for the other.
    Upgrading,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ClientTls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ClientTls(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
            Stream::ClientTls(s) => Pin::new(s).poll_flush(cx),
            Stream::Upgrading => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ClientTls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

/// One accepted connection, whatever the protocol: its buffered stream and what is known about
/// the other end.
pub struct Client {
    pub conn: Connection,
    pub peer: std::net::SocketAddr,
    /// The session id, in logs and for plugins.
    pub id: String,
    pub listener: crate::config::ListenerConfig,
    pub tls: bool,
    /// Says when the server shuts down; counts the session open until dropped.
    pub drain: crate::net::drain::DrainWatch,
    /// The time an IMAP or POP3 client has to log in, opened when its connection was
    /// accepted (the session takes it over); `None` elsewhere.
    pub login_window: Option<crate::net::limits::LoginWindow>,
}

/// Why STARTTLS (or STLS) cannot start.
pub enum TlsRefusal {
    AlreadyActive,
    NotAvailable,
}

impl Client {
    /// The acceptor for an in-band TLS upgrade on this connection.
    pub fn starttls_acceptor(
        &self,
        acceptor: Option<&tokio_rustls::TlsAcceptor>,
    ) -> Result<tokio_rustls::TlsAcceptor, TlsRefusal> {
        match (acceptor, self.tls, self.listener.tls) {
            (_, true, _) => Err(TlsRefusal::AlreadyActive),
            (Some(a), false, crate::config::TlsMode::Starttls) => Ok(a.clone()),
            _ => Err(TlsRefusal::NotAvailable),
        }
    }

    /// The next command line. When `may_cut` (the session is between transactions) and the
    /// server is shutting down, `Line::Draining` instead: the session says goodbye and ends.
    pub async fn next_line(&mut self, max: usize, timeout: Duration, may_cut: bool) -> Line {
        if !may_cut {
            return self.conn.read_line(max, timeout).await;
        }
        if self.drain.is_draining() {
            return Line::Draining;
        }
        tokio::select! {
            line = self.conn.read_line(max, timeout) => line,
            () = self.drain.requested() => Line::Draining,
        }
    }

    /// Upgrades to TLS once the go-ahead reply is queued (see
    /// [`Connection::start_server_tls`]); false when the handshake failed (close then).
    pub async fn start_tls(
        &mut self,
        acceptor: &tokio_rustls::TlsAcceptor,
        limit: Duration,
    ) -> bool {
        let result = self.conn.start_server_tls(acceptor, limit).await;
        crate::telemetry::metrics::tls_handshake(&self.listener.name, result.is_ok());
        match result {
            Ok(dropped) => {
                if dropped > 0 {
                    tracing::info!(dropped, "discarded bytes pipelined after the TLS command");
                }
                self.tls = true;
                true
            }
            Err(e) => {
                tracing::info!("TLS handshake failed: {e}");
                false
            }
        }
    }

    /// This connection as plugins see it.
    pub fn plugin_session(
        &self,
        helo: Option<String>,
        auth_user: Option<String>,
    ) -> crate::mail::Session {
        crate::mail::Session::client(
            &self.id,
            self.peer,
            &self.listener.name,
            self.tls,
            helo,
            auth_user,
        )
    }
}

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
/// The longest a TLS handshake may take (shorter where the client's time to log in is).
pub const HANDSHAKE_TIME: Duration = Duration::from_secs(30);

const RETAINED_BUFFER: usize = 64 * 1024;

/// A stream with an input buffer and an output buffer (replies to pipelined commands go out
/// together, when the session is about to wait for input).
pub struct Connection {
    pub stream: Stream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// IMAP COMPRESS=DEFLATE, once negotiated: every byte both ways goes through it.
    deflate: Option<Box<Deflate>>,
}

/// Replies held back while compressed commands are still waiting to be inflated.
const BATCHED_OUTPUT: usize = 64 * 1024;

/// Raw DEFLATE both ways (RFC 4978). Input inflates at most [`Deflate::STEP`] bytes per read,
/// the rest kept compressed: a small message that inflates a thousandfold cannot fill memory
/// faster than the session consumes it.
struct Deflate {
    compress: flate2::Compress,
    decompress: flate2::Decompress,
    /// Received bytes not inflated yet.
    pending: Vec<u8>,
    /// Where each round of inflating writes, made once: a fresh buffer of the whole step
    /// for every small read was most of the cost of a compressed command.
    scratch: Box<[u8]>,
    /// The last round filled the scratch: the inflater may still hold output of input it
    /// has already taken, to be asked for before waiting on the client.
    holding: bool,
}

impl Deflate {
    const STEP: usize = 256 * 1024;
    const SCRATCH: usize = 16 * 1024;

    fn new() -> Deflate {
        Deflate {
            compress: flate2::Compress::new(flate2::Compression::default(), false),
            decompress: flate2::Decompress::new(false),
            pending: Vec::new(),
            scratch: vec![0; Deflate::SCRATCH].into_boxed_slice(),
            holding: false,
        }
    }

    /// Compresses `plain` with a sync flush (the client can read every reply at once).
    fn deflate(&mut self, plain: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plain.len() / 2 + 64);
        let mut at = 0;
        loop {
            out.reserve(plain.len().saturating_sub(at) / 2 + 1024);
            let before = self.compress.total_in();
            self.compress
                .compress_vec(&plain[at..], &mut out, flate2::FlushCompress::Sync)
                .map_err(std::io::Error::other)?;
            at += (self.compress.total_in() - before) as usize;
            // Done when all input is taken and the flush did not fill the buffer.
            if at >= plain.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Inflates what is pending, up to STEP bytes, into `input`. An error for a corrupt stream.
    fn inflate(&mut self, input: &mut Vec<u8>) -> std::io::Result<()> {
        let (mut taken, mut produced) = (0, 0);
        while produced < Deflate::STEP && (taken < self.pending.len() || self.holding) {
            let (before_in, before_out) = (self.decompress.total_in(), self.decompress.total_out());
            self.decompress
                .decompress(
                    &self.pending[taken..],
                    &mut self.scratch,
                    flate2::FlushDecompress::None,
                )
                .map_err(std::io::Error::other)?;
            let used = (self.decompress.total_in() - before_in) as usize;
            let made = (self.decompress.total_out() - before_out) as usize;
            input.extend_from_slice(&self.scratch[..made]);
            taken += used;
            produced += made;
            self.holding = made == self.scratch.len();
            if used == 0 && made == 0 {
                break;
            }
        }
        self.pending.drain(..taken);
        Ok(())
    }

    /// Whether inflating may give more input without reading from the client.
    fn has_input(&self) -> bool {
        !self.pending.is_empty() || self.holding
    }
}

impl Connection {
    pub fn new(stream: Stream) -> Connection {
        Connection {
            stream,
            input: Vec::with_capacity(4096),
            output: Vec::with_capacity(1024),
            deflate: None,
        }
    }

    /// Whether COMPRESS=DEFLATE is on.
    pub fn compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// Starts COMPRESS=DEFLATE once the tagged OK is queued: that reply goes out as it is,
    /// everything after it compressed; what the client sends after its command is inflated,
    /// starting with `received` (bytes that followed the command, already taken from this
    /// connection) and anything still buffered here.
    pub async fn start_deflate(&mut self, received: Vec<u8>) -> std::io::Result<()> {
        self.flush().await?;
        let mut deflate = Box::new(Deflate::new());
        deflate.pending = received;
        deflate.pending.append(&mut self.input);
        self.deflate = Some(deflate);
        Ok(())
    }

    pub fn queue(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.output.is_empty() {
            match self.deflate.as_mut() {
                Some(deflate) => {
                    // Compressing a large reply is CPU work: off the async workers.
                    let output = &self.output;
                    let packed = crate::blocking::run(|| deflate.deflate(output))?;
                    self.stream.write_all(&packed).await?;
                }
                None => self.stream.write_all(&self.output).await?,
            }
            self.output.clear();
            // A big reply's buffer is not kept by a session that may now idle for hours.
            if self.output.capacity() > RETAINED_BUFFER {
                self.output = Vec::with_capacity(1024);
            }
        }
        self.stream.flush().await
    }

    /// Server side of STARTTLS/STLS, after the "go ahead" reply was queued: sends it, drops
    /// whatever the client pipelined behind the command (it came in the clear), and does the
    /// handshake within `limit` (at most [`HANDSHAKE_TIME`]). Returns how many pipelined bytes were dropped.
    pub async fn start_server_tls(
        &mut self,
        acceptor: &tokio_rustls::TlsAcceptor,
        limit: Duration,
    ) -> std::io::Result<usize> {
        self.flush().await?;
        let dropped = self.discard_input();
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Upgrading) else {
            return Err(std::io::ErrorKind::InvalidInput.into());
        };
        // A client that stalls the handshake must not hold its connection slot forever, nor
        // past its time to log in.
        let tls = tokio::time::timeout(limit.min(HANDSHAKE_TIME), acceptor.accept(tcp))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))?;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(dropped)
    }

    /// Drops everything buffered (used after STARTTLS).
    pub fn discard_input(&mut self) -> usize {
        let n = self.input.len();
        self.input.clear();
        n
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

/// A minimum average data rate: after `grace`, a transfer must have moved `min_rate` bytes
/// for every further second (as Postfix's smtpd_min_data_rate).
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub min_rate: u64,
    pub grace: Duration,
}

impl Pace {
    pub fn none() -> Pace {
        Pace {
            min_rate: 0,
            grace: Duration::ZERO,
        }
    }

    /// How long a transfer that has moved `received` bytes may have taken; `None`: no bound.
    pub fn allowed(&self, received: u64) -> Option<Duration> {
        if self.min_rate == 0 {
            return None;
        }
        let earned = Duration::from_secs_f64(received as f64 / self.min_rate as f64);
        Some(self.grace.saturating_add(earned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_allows_time_in_proportion_to_data() {
        let pace = Pace {
            min_rate: 1000,
            grace: Duration::from_secs(30),
        };
        assert_eq!(pace.allowed(0), Some(Duration::from_secs(30)));
        assert_eq!(pace.allowed(5000), Some(Duration::from_secs(35)));
        assert_eq!(Pace::none().allowed(u64::MAX), None);
    }

    /// Everything a client compressed comes out, in steps of at most STEP, including output
    /// the inflater still holds after the last compressed byte was taken.
    #[test]
    fn inflating_gives_every_byte_in_bounded_steps() {
        let plain = b"n NOOP\r\n".repeat(300_000);
        let mut packer = flate2::Compress::new(flate2::Compression::default(), false);
        let mut packed = Vec::with_capacity(plain.len());
        packer
            .compress_vec(&plain, &mut packed, flate2::FlushCompress::Sync)
            .expect("compress");
        assert!(
            packed.len() < Deflate::SCRATCH,
            "one small chunk: {}",
            packed.len()
        );
        let mut deflate = Deflate::new();
        deflate.pending = packed;
        let mut input = Vec::new();
        let mut rounds = 0;
        while deflate.has_input() {
            let before = input.len();
            deflate.inflate(&mut input).expect("inflate");
            assert!(input.len() - before <= Deflate::STEP + Deflate::SCRATCH);
            rounds += 1;
            assert!(rounds < 100, "no progress");
        }
        assert_eq!(input.len(), plain.len());
        assert!(input == plain);
        assert!(rounds > 1, "{rounds}");
    }
}
