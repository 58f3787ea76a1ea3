//! Cutting the client's byte stream into whole IMAP commands (lines joined by literals) before
//! imap-codec parses them, in time linear in the input: every byte is looked at once, however
//! it arrives. Literal announcements are checked against a budget before a byte of them is
//! read, so the session can refuse them without a continuation. No I/O here.

/// Longest command line (literal data not counted).
pub const MAX_LINE: usize = 64 * 1024;

/// What the framer found in the input so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole command (lines and literal data), CRLF included.
    Command(Vec<u8>),
    /// More input is needed.
    NeedMore,
    /// A synchronising literal within the budget: the client waits for a continuation.
    Continue,
    /// A literal over the budget. A synchronising one sends nothing more (the command is
    /// dropped); a non-synchronising one is on its way regardless, so the session closes.
    LiteralRefused {
        tag: String,
        length: u64,
        sync: bool,
    },
    /// A line longer than [`MAX_LINE`]; the rest of it is skipped as it arrives.
    LineTooLong { tag: String },
}

/// How much one command may carry.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Largest single literal.
    pub literal: u64,
    /// Largest command, lines and literals together.
    pub command: u64,
}

#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Where the command being framed starts.
    start: usize,
    /// Where the line being framed starts (after a CRLF or after literal data).
    line: usize,
    /// Where the search for the next line end resumes.
    scan: usize,
    /// Bytes looked at so far (each once: this is what keeps framing linear).
    examined: u64,
    /// Literal bytes still to come before lines resume.
    literal_left: u64,
    /// Skipping the rest of an over-long line.
    skipping: bool,
}

impl Framer {
    pub fn new() -> Framer {
        Framer::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet given out as a command.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Forgets everything buffered (after STARTTLS: those bytes came in the clear).
    pub fn clear(&mut self) {
        *self = Framer::default();
    }

    /// Takes one CRLF-terminated line from the front (for AUTHENTICATE and IDLE, which read
    /// lines outside commands); `None` until one has arrived.
    pub fn take_line(&mut self) -> Option<Vec<u8>> {
        if self.literal_left > 0 || self.scan != self.start {
            return None;
        }
        let end = find_crlf(&self.buf[self.start..])?;
        let line = self.buf[self.start..self.start + end].to_vec();
        self.consume(self.start + end + 2);
        Some(line)
    }

    /// The next frame. `budget` applies to the command being framed.
    pub fn next(&mut self, budget: Budget) -> Frame {
        loop {
            if self.literal_left > 0 {
                let available = (self.buf.len() - self.scan) as u64;
                let take = available.min(self.literal_left);
                self.scan += take as usize;
                self.literal_left -= take;
                if self.literal_left > 0 {
                    return Frame::NeedMore;
                }
                self.line = self.scan;
            }
            let found = find_crlf(&self.buf[self.scan..]);
            let Some(offset) = found else {
                self.examined += (self.buf.len() - self.scan) as u64;
                return self.incomplete_line();
            };
            self.examined += offset as u64 + 2;
            let line_start = self.line;
            let line_end = self.scan + offset;
            self.scan = line_end + 2;
            self.line = self.scan;
            if self.skipping {
                self.skipping = false;
                self.consume(self.scan);
                continue;
            }
            if line_end - line_start > MAX_LINE {
                let tag = tag_of(&self.buf[self.start..]);
                self.consume(self.scan);
                return Frame::LineTooLong { tag };
            }
            let Some((length, sync)) = literal_announced(&self.buf[line_start..line_end]) else {
                return Frame::Command(self.take_command());
            };
            let so_far = (self.scan - self.start) as u64;
            if length > budget.literal || so_far.saturating_add(length) > budget.command {
                let tag = tag_of(&self.buf[self.start..]);
                self.consume(self.scan);
                return Frame::LiteralRefused { tag, length, sync };
            }
            self.literal_left = length;
            if sync && self.scan == self.buf.len() {
                return Frame::Continue;
            }
        }
    }

    /// No line end yet: wait, unless the line is already too long.
    fn incomplete_line(&mut self) -> Frame {
        let line_start = self.line;
        if self.skipping {
            // Keep a trailing CR: it may be half of the CRLF that ends the skipped line.
            let keep = usize::from(self.buf.last() == Some(&b'\r'));
            self.consume(self.buf.len() - keep);
            return Frame::NeedMore;
        }
        if self.buf.len() - line_start > MAX_LINE {
            let tag = tag_of(&self.buf[self.start..]);
            self.skipping = true;
            let keep = usize::from(self.buf.last() == Some(&b'\r'));
            self.consume(self.buf.len() - keep);
            return Frame::LineTooLong { tag };
        }
        // Resume the search where it stopped (minus a CR that may pair with the next LF).
        self.scan = self.buf.len().saturating_sub(1).max(line_start);
        Frame::NeedMore
    }

    /// Drops the buffered bytes before `end` (given out or refused).
    /// The command that ends at `scan`, moved out of the buffer without copying it (only what
    /// was pipelined behind it is copied, into a buffer of its own).
    fn take_command(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.scan);
        let mut command = std::mem::replace(&mut self.buf, rest);
        command.drain(..self.start);
        self.start = 0;
        self.line = 0;
        self.scan = 0;
        command
    }

    fn consume(&mut self, end: usize) {
        self.buf.drain(..end);
        self.start = 0;
        self.line = 0;
        self.scan = 0;
    }
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &bytes[from..]) {
        let at = from + i;
        if at > 0 && bytes[at - 1] == b'\r' {
            return Some(at - 1);
        }
        from = at + 1;
    }
    None
}

/// `{N}` (synchronising) or `{N+}` (LITERAL+) at the end of a line, `~` allowed before.
/// Inside a quoted string a line cannot end in `}` (the string ends first), and `{` is not an
/// atom character, so a line ending this way always announces a literal.
fn literal_announced(line: &[u8]) -> Option<(u64, bool)> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let spec = &inner[open + 1..];
    let (digits, sync) = match spec.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (spec, true),
    };
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Past u64 (20 digits can be): as good as infinite, and refused as such.
    let length = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(u64::MAX);
    Some((length, sync))
}

/// The status of a tagged reply line (`ok`, `no`, `bad`), as metrics count it; `None` for
/// untagged and continuation lines.
pub fn status_class(line: &str) -> Option<&'static str> {
    let mut words = line.splitn(3, ' ');
    let tag = words.next()?;
    if tag == "*" || tag == "+" || tag.is_empty() {
        return None;
    }
    match words.next()? {
        "OK" => Some("ok"),
        "NO" => Some("no"),
        "BAD" => Some("bad"),
        _ => None,
    }
}

/// The command's tag, for the reply to a refused command ("*" when there is none).
pub fn tag_of(command: &[u8]) -> String {
    let end = command
        .iter()
        .position(|&b| b == b' ' || b == b'\r')
        .unwrap_or(command.len())
        .min(64);
    let tag = String::from_utf8_lossy(&command[..end]).into_owned();
    if !tag.is_empty() && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
        tag
    } else {
        "*".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: Budget = Budget {
        literal: 1 << 30,
        command: 1 << 30,
    };

    fn frames(framer: &mut Framer, budget: Budget) -> Vec<Frame> {
        let mut out = Vec::new();
        loop {
            match framer.next(budget) {
                Frame::NeedMore => return out,
                frame => out.push(frame),
            }
        }
    }

    #[test]
    fn pipelined_commands_come_out_one_by_one() {
        let mut f = Framer::new();
        f.push(b"a NOOP\r\nb CAPABILITY\r\nc LOG");
        assert_eq!(
            frames(&mut f, BIG),
            vec![
                Frame::Command(b"a NOOP\r\n".to_vec()),
                Frame::Command(b"b CAPABILITY\r\n".to_vec())
            ]
        );
        f.push(b"OUT\r\n");
        assert_eq!(
            frames(&mut f, BIG),
            vec![Frame::Command(b"c LOGOUT\r\n".to_vec())]
        );
    }

    #[test]
    fn literals_join_lines_in_any_split() {
        let whole = b"a LOGIN {5}\r\nalice {3+}\r\npw!\r\n";
        for split in 0..whole.len() {
            let mut f = Framer::new();
            let mut got = Vec::new();
            f.push(&whole[..split]);
            got.extend(frames(&mut f, BIG));
            f.push(&whole[split..]);
            got.extend(frames(&mut f, BIG));
            let commands: Vec<&Frame> = got
                .iter()
                .filter(|g| matches!(g, Frame::Command(_)))
                .collect();
            assert_eq!(
                commands,
                vec![&Frame::Command(whole.to_vec())],
                "split {split}"
            );
            // One continuation for the synchronising literal, none for LITERAL+.
            let continues = got.iter().filter(|g| **g == Frame::Continue).count();
            assert!(continues <= 1, "split {split}: {got:?}");
        }
    }

    #[test]
    fn literal_bytes_that_look_like_lines_are_data() {
        let mut f = Framer::new();
        f.push(b"a APPEND INBOX {13}\r\n");
        assert_eq!(f.next(BIG), Frame::Continue);
        f.push(b"x {9}\r\nb NOOP\r\nc NOOP\r\n");
        assert_eq!(
            f.next(BIG),
            Frame::Command(b"a APPEND INBOX {13}\r\nx {9}\r\nb NOOP\r\n".to_vec())
        );
        assert_eq!(f.next(BIG), Frame::Command(b"c NOOP\r\n".to_vec()));
    }

    #[test]
    fn literals_over_the_budget_are_refused_before_any_continuation() {
        let small = Budget {
            literal: 1000,
            command: 64 * 1024,
        };
        let mut f = Framer::new();
        f.push(b"a LOGIN {2000}\r\nb NOOP\r\n");
        assert_eq!(
            f.next(small),
            Frame::LiteralRefused {
                tag: "a".into(),
                length: 2000,
                sync: true
            }
        );
        assert_eq!(f.next(small), Frame::Command(b"b NOOP\r\n".to_vec()));
        // Many literals each within the limit, but together over the command budget.
        let mut f = Framer::new();
        let budget = Budget {
            literal: 40_000,
            command: 64 * 1024,
        };
        f.push(b"a LOGIN {40000+}\r\n");
        f.push(&[b'x'; 40_000]);
        f.push(b" {40000+}\r\n");
        assert!(matches!(
            f.next(budget),
            Frame::LiteralRefused { sync: false, .. }
        ));
        // An absurd size is refused, not overflowed.
        let mut f = Framer::new();
        f.push(b"a APPEND INBOX {18446744073709551615}\r\n");
        assert!(matches!(f.next(BIG), Frame::LiteralRefused { .. }));
    }

    #[test]
    fn over_long_lines_are_refused_once_and_skipped() {
        let mut f = Framer::new();
        f.push(b"a ");
        let chunk = vec![b'x'; 16 * 1024];
        let mut refused = 0;
        for _ in 0..10 {
            f.push(&chunk);
            while let frame @ (Frame::LineTooLong { .. } | Frame::Command(_)) = f.next(BIG) {
                assert!(matches!(frame, Frame::LineTooLong { .. }));
                refused += 1;
            }
        }
        f.push(b"\r\nb NOOP\r\n");
        assert_eq!(f.next(BIG), Frame::Command(b"b NOOP\r\n".to_vec()));
        assert_eq!(refused, 1);
    }

    #[test]
    fn a_large_literal_in_small_pieces_is_never_rescanned() {
        let mut f = Framer::new();
        let size = 8 << 20;
        f.push(format!("a APPEND INBOX {{{size}+}}\r\n").as_bytes());
        let piece = vec![b'y'; 4096];
        for _ in 0..size / piece.len() {
            f.push(&piece);
            assert_eq!(f.next(BIG), Frame::NeedMore);
        }
        // The line after the literal, one byte at a time.
        for &b in b" (\\Seen)" {
            f.push(&[b]);
            assert_eq!(f.next(BIG), Frame::NeedMore);
        }
        f.push(b"\r\n");
        let header = format!("a APPEND INBOX {{{size}+}}\r\n").len() as u64;
        let expected = header + size as u64 + 10;
        assert!(matches!(f.next(BIG), Frame::Command(c) if c.len() as u64 == expected));
        // Literal data is skipped, not searched; each line byte is examined about once.
        assert!(f.examined < header + 64, "examined {} bytes", f.examined);
    }
}
