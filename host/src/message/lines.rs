//! Line ends and dot-stuffing, written once for every path a message takes: files read from
//! disk (Maildir files written with bare LFs by Dovecot, Postfix `virtual` or procmail; harness
//! cases), the bytes served to IMAP and POP3 clients, and what goes out in SMTP DATA and POP3
//! multi-line responses.

use std::borrow::Cow;

/// Which lone bytes end a line besides CRLF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareEnds {
    /// A bare LF ends a line (a Unix text file); a bare CR is content, kept as it is.
    Lf,
    /// A bare CR and a bare LF each end a line: what goes on a wire, where RFC 5321 §2.3.8
    /// allows neither, so that a dot after a bare CR is stuffed like any other line's.
    CrAndLf,
}

/// The lines of `bytes`, each as its content without its end and whether it had one.
struct Lines<'a> {
    rest: &'a [u8],
    ends: BareEnds,
}

impl<'a> Iterator for Lines<'a> {
    type Item = (&'a [u8], bool);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = self.rest;
        let (content, used) = match self.ends {
            BareEnds::Lf => match memchr::memchr(b'\n', rest) {
                // The CR of a CRLF belongs to the end, not the content.
                Some(n) => (rest[..n].strip_suffix(b"\r").unwrap_or(&rest[..n]), n + 1),
                None => (rest, rest.len()),
            },
            BareEnds::CrAndLf => match memchr::memchr2(b'\r', b'\n', rest) {
                Some(n) if rest[n] == b'\r' && rest.get(n + 1) == Some(&b'\n') => {
                    (&rest[..n], n + 2)
                }
                Some(n) => (&rest[..n], n + 1),
                None => (rest, rest.len()),
            },
        };
        let ended = used > content.len();
        self.rest = &rest[used..];
        Some((content, ended))
    }
}

fn lines(bytes: &[u8], ends: BareEnds) -> Lines<'_> {
    Lines { rest: bytes, ends }
}

/// The length of `bytes` once every line end is a CRLF (what a client is told the size is).
pub fn crlf_len(bytes: &[u8], ends: BareEnds) -> u64 {
    lines(bytes, ends)
        .map(|(line, ended)| line.len() as u64 + if ended { 2 } else { 0 })
        .sum()
}

/// Whether every line end of `bytes` is a CRLF already.
pub fn is_crlf(bytes: &[u8], ends: BareEnds) -> bool {
    let lf_after_cr = memchr::memchr_iter(b'\n', bytes).all(|n| n > 0 && bytes[n - 1] == b'\r');
    lf_after_cr
        && (ends == BareEnds::Lf
            || memchr::memchr_iter(b'\r', bytes).all(|n| bytes.get(n + 1) == Some(&b'\n')))
}

/// `bytes` with every line end a CRLF, appended to `out`. A last line without an end keeps
/// having none.
pub fn push_crlf(bytes: &[u8], ends: BareEnds, out: &mut Vec<u8>) {
    for (line, ended) in lines(bytes, ends) {
        out.extend_from_slice(line);
        if ended {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// `bytes` with every line end a CRLF; borrowed when they already are.
pub fn to_crlf(bytes: &[u8], ends: BareEnds) -> Cow<'_, [u8]> {
    if is_crlf(bytes, ends) {
        return Cow::Borrowed(bytes);
    }
    let capacity = usize::try_from(crlf_len(bytes, ends)).unwrap_or(bytes.len());
    let mut out = Vec::with_capacity(capacity);
    push_crlf(bytes, ends, &mut out);
    Cow::Owned(out)
}

/// `bytes` with every line end a CRLF: the same vector when they already are.
pub fn into_crlf(bytes: Vec<u8>, ends: BareEnds) -> Vec<u8> {
    match to_crlf(&bytes, ends) {
        Cow::Borrowed(_) => bytes,
        Cow::Owned(converted) => converted,
    }
}

/// The message as SMTP DATA (RFC 5321 §4.5.2) and POP3 multi-line responses (RFC 1939 §3)
/// carry it: every line end a CRLF (a bare CR or LF included), a dot doubled at the start of
/// each line, a CRLF after the last line, and the `.` CRLF terminator.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 8);
    for (line, _) in lines(message, BareEnds::CrAndLf) {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_lfs_become_crlf_and_bare_crs_stay() {
        let unix = b"a\nb\r\nc\rd\n\ne";
        assert_eq!(&*to_crlf(unix, BareEnds::Lf), b"a\r\nb\r\nc\rd\r\n\r\ne");
        assert_eq!(crlf_len(unix, BareEnds::Lf), 14);
        assert_eq!(&*to_crlf(b"x\r\r\n", BareEnds::Lf), b"x\r\r\n");
        assert_eq!(&*to_crlf(b"\n", BareEnds::Lf), b"\r\n");
    }

    #[test]
    fn bare_crs_end_lines_on_the_wire() {
        assert_eq!(
            &*to_crlf(b"a\rb\nc\r", BareEnds::CrAndLf),
            b"a\r\nb\r\nc\r\n"
        );
        assert_eq!(crlf_len(b"a\rb\nc\r", BareEnds::CrAndLf), 9);
        assert_eq!(&*to_crlf(b"x\r\r\n", BareEnds::CrAndLf), b"x\r\n\r\n");
    }

    #[test]
    fn canonical_bytes_are_not_copied() {
        let canonical = b"a\r\nb\r\n".to_vec();
        let at = canonical.as_ptr();
        assert!(matches!(
            to_crlf(&canonical, BareEnds::CrAndLf),
            Cow::Borrowed(_)
        ));
        let kept = into_crlf(canonical, BareEnds::Lf);
        assert_eq!(kept.as_ptr(), at);
        // Same length, but a bare CR to turn into a line end on the wire.
        assert!(matches!(
            to_crlf(b"a\rb\r\n\n", BareEnds::CrAndLf),
            Cow::Owned(_)
        ));
    }

    #[test]
    fn stuffs_and_terminates() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuff(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(dot_stuff(b"no end"), b"no end\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
        assert_eq!(dot_stuff(b"a\r\n.b\r\n..c"), b"a\r\n..b\r\n...c\r\n.\r\n");
        // A dot after a bare CR or bare LF starts a line of its own.
        assert_eq!(dot_stuff(b"x\r.\r\ny"), b"x\r\n..\r\ny\r\n.\r\n");
        assert_eq!(dot_stuff(b"x\n.\ny"), b"x\r\n..\r\ny\r\n.\r\n");
        assert_eq!(dot_stuff(b"x\r\r\n"), b"x\r\n\r\n.\r\n");
    }
}
