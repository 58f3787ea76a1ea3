//! The DATA reader: a byte-level state machine, apart from I/O.
//!
//! Only CRLF ends a line and only CRLF "." CRLF ends the data. A bare CR or LF anywhere marks
//! the transaction as failed, but reading goes on to the real terminator, so bytes hidden after a
//! `\n.\n` (SMTP smuggling) stay inside this failed message and never become a second one.

/// Why the data was refused (reported once the terminator arrives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    BareLineEnd,
    TooBig,
    LineTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    LineStart,
    DotAtStart,
    DotCr,
    InLine,
    CrInLine,
}

pub struct DataReader {
    state: State,
    content: Vec<u8>,
    line_len: usize,
    max_size: usize,
    max_line: usize,
    error: Option<DataError>,
}

impl DataReader {
    /// `max_size`: largest message; `max_line`: longest line including CRLF.
    pub fn new(max_size: usize, max_line: usize) -> DataReader {
        DataReader {
            state: State::LineStart,
            content: Vec::with_capacity(8192),
            line_len: 0,
            max_size,
            max_line,
            error: None,
        }
    }

    /// Feeds bytes; returns how many were consumed and whether the terminator was reached.
    /// Bytes after the terminator are not consumed (they are the next command).
    pub fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            // Inside a line, the bytes up to the next CR or LF are plain content: taken as one
            // run when no limit is reached within it (the state machine decides otherwise).
            if self.state == State::InLine {
                let end = memchr::memchr2(b'\r', b'\n', &input[i..]).map_or(input.len(), |n| i + n);
                if end > i && self.take_run(&input[i..end]) {
                    i = end;
                    continue;
                }
            }
            if self.step(input[i]) {
                return (i + 1, true);
            }
            i += 1;
        }
        (input.len(), false)
    }

    /// Appends a run of plain in-line bytes at once; false (nothing taken) when a limit would be
    /// passed within it or the data has failed already, so that the bytes go one by one.
    fn take_run(&mut self, run: &[u8]) -> bool {
        let line = self.line_len.saturating_add(run.len());
        let size = self.content.len().saturating_add(run.len());
        if self.error.is_some() || line > self.max_line || size > self.max_size {
            return false;
        }
        self.line_len = line;
        self.content.extend_from_slice(run);
        true
    }

    /// The unstuffed message, or why it was refused.
    pub fn finish(self) -> Result<Vec<u8>, DataError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.content),
        }
    }

    fn fail(&mut self, error: DataError) {
        // The first problem is the one reported.
        self.error.get_or_insert(error);
    }

    fn push(&mut self, b: u8) {
        self.line_len += 1;
        if self.line_len > self.max_line {
            self.fail(DataError::LineTooLong);
        }
        if self.content.len() >= self.max_size {
            self.fail(DataError::TooBig);
        }
        if self.error.is_none() {
            self.content.push(b);
        }
    }

    /// Processes one byte; true at the end of the data.
    fn step(&mut self, b: u8) -> bool {
        self.state = match (self.state, b) {
            (State::LineStart, b'.') => State::DotAtStart,
            (State::DotAtStart, b'\r') => State::DotCr,
            (State::DotCr, b'\n') => return true,
            (State::DotCr, other) => {
                // "." CR then something else: the dot was stuffing, the CR is bare.
                self.fail(DataError::BareLineEnd);
                self.push(b'\r');
                self.in_line(other)
            }
            (State::CrInLine, b'\n') => {
                self.push(b'\r');
                self.push(b'\n');
                self.line_len = 0;
                State::LineStart
            }
            (State::CrInLine, other) => {
                self.fail(DataError::BareLineEnd);
                self.push(b'\r');
                self.in_line(other)
            }
            // A dot at the start of a line is stuffing: drop it, take the byte as content.
            (State::LineStart | State::DotAtStart | State::InLine, other) => self.in_line(other),
        };
        false
    }

    fn in_line(&mut self, b: u8) -> State {
        match b {
            b'\r' => State::CrInLine,
            b'\n' => {
                self.fail(DataError::BareLineEnd);
                self.push(b'\n');
                State::InLine
            }
            other => {
                self.push(other);
                State::InLine
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> (usize, bool, Result<Vec<u8>, DataError>) {
        let mut r = DataReader::new(1 << 20, 1000);
        let (used, done) = r.feed(input);
        (used, done, r.finish())
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf_and_unstuffs() {
        let (used, done, content) =
            read(b"Subject: x\r\n\r\n..leading dot\r\n.\r\nMAIL FROM:<>\r\n");
        assert!(done);
        assert_eq!(used, 32);
        assert_eq!(content.unwrap(), b"Subject: x\r\n\r\n.leading dot\r\n");
    }

    /// Runs of plain bytes are taken at once; the outcome must be that of the byte-by-byte
    /// state machine for any input, chunking and limits (sizes and line lengths near the runs).
    #[test]
    fn runs_read_as_the_byte_by_byte_machine_does() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..20_000 {
            let len = next(60) as usize;
            let input: Vec<u8> = (0..len).map(|_| b"aaaa.\r\n"[next(7) as usize]).collect();
            let (max_size, max_line) = (next(40) as usize, 1 + next(12) as usize);
            let mut reference = DataReader::new(max_size, max_line);
            let expected = input
                .iter()
                .position(|&b| reference.step(b))
                .map_or((input.len(), false), |i| (i + 1, true));
            let mut chunked = DataReader::new(max_size, max_line);
            let (mut used, mut done, mut at) = (0, false, 0);
            while at < input.len() && !done {
                let end = (at + 1 + next(9) as usize).min(input.len());
                let (n, d) = chunked.feed(&input[at..end]);
                (used, done, at) = (at + n, d, at + n);
            }
            if input.is_empty() {
                used = 0;
            }
            assert_eq!((used, done), expected, "{input:?}");
            assert_eq!(chunked.finish(), reference.finish(), "{input:?}");
        }
    }

    #[test]
    fn empty_data() {
        let (used, done, content) = read(b".\r\n");
        assert!(done && used == 3);
        assert_eq!(content.unwrap(), b"");
    }

    #[test]
    fn smuggling_sequences_never_end_the_data() {
        for fake in [
            &b"\n.\n"[..],
            b"\n.\r",
            b"\r.\n",
            b"\r.\r",
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n\x00.\r\n",
            b"\r\n.\n",
            b"\r\n.\r",
        ] {
            let mut input = b"Subject: a\r\n\r\nbody".to_vec();
            input.extend_from_slice(fake);
            input.extend_from_slice(
                b"MAIL FROM:<x@y.z>\r\nRCPT TO:<v@w.x>\r\nDATA\r\nsmuggled\r\n.\r\n",
            );
            let (used, done, content) = read(&input);
            assert!(done, "{fake:?}");
            assert_eq!(
                used,
                input.len(),
                "{fake:?}: everything up to the real end is one message"
            );
            if fake != b"\r\n\x00.\r\n" {
                assert_eq!(content, Err(DataError::BareLineEnd), "{fake:?}");
            }
        }
    }

    #[test]
    fn terminator_split_across_reads() {
        let mut r = DataReader::new(1000, 1000);
        assert_eq!(r.feed(b"a\r\n.\r"), (5, false));
        assert_eq!(r.feed(b"\nQUIT\r\n"), (1, true));
        assert_eq!(r.finish().unwrap(), b"a\r\n");
    }

    #[test]
    fn limits() {
        let mut r = DataReader::new(10, 1000);
        let (_, done) = r.feed(b"0123456789abcdef\r\n.\r\n");
        assert!(done);
        assert_eq!(r.finish(), Err(DataError::TooBig));
        let mut r = DataReader::new(10_000, 10);
        r.feed(b"0123456789abcdef\r\n.\r\n");
        assert_eq!(r.finish(), Err(DataError::LineTooLong));
    }
}
