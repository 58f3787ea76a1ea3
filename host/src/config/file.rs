//! Reading a file whose path someone else chose (the operator's keys, certificates, secrets and
//! users file, a plugin's component, a path a plugin asks for): opened without blocking (opening
//! a FIFO for reading otherwise waits for a writer, forever), checked through the open handle
//! to be a regular file (a FIFO, a device such as /dev/zero or a socket never ends or never
//! answers; checking the path first would race with a swap), and read up to a bound.
//!
//! It lives with the config because every layer reads the files the config names, and the
//! config imports nothing of ours.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Whether the last component of the path may be a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Followed: operators keep keys and certificates behind links (certbot's `live/`).
    Follow,
    /// Refused (`O_NOFOLLOW`): for files the server writes itself in its own directory.
    Refuse,
}

/// Largest config file, DKIM or TLS key, certificate chain or secret read.
pub const MAX_SMALL_FILE: u64 = 4 << 20;

/// The flags every such open adds: no blocking open, no descriptor leaked into children.
pub fn open_flags(links: Links) -> i32 {
    let mut flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC;
    if links == Links::Refuse {
        flags |= rustix::fs::OFlags::NOFOLLOW;
    }
    flags.bits() as i32
}

/// Opens `path` for reading if it is a regular file; any other kind is refused without ever
/// blocking.
pub fn open_regular(path: &Path, links: Links) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(open_flags(links))
        .open(path)
        .map_err(|e| refused_link(e, links))?;
    let len = regular_len(&file)?;
    Ok((file, len))
}

/// The size of an open file, or an error saying what else it is.
pub fn regular_len(file: &File) -> io::Result<u64> {
    let metadata = file.metadata()?;
    let kind = metadata.file_type();
    if kind.is_file() {
        return Ok(metadata.len());
    }
    let what = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file ({what}); refused"),
    ))
}

/// Reads an open regular file of `len` bytes (as its fstat said), refusing more than `max`:
/// a file that grows while read is cut off at the bound and refused too.
pub fn read_bounded(file: File, len: u64, max: u64) -> io::Result<Vec<u8>> {
    let too_big = |size: u64| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{size} bytes, more than the {max} read from such a file; refused"),
        )
    };
    if len > max {
        return Err(too_big(len));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    let read = bytes.len() as u64;
    if read > max {
        return Err(too_big(read));
    }
    Ok(bytes)
}

/// The whole regular file at `path`, at most `max` bytes.
pub fn read_regular(path: &Path, max: u64, links: Links) -> io::Result<Vec<u8>> {
    let (file, len) = open_regular(path, links)?;
    read_bounded(file, len, max)
}

/// The whole regular file at `path` as UTF-8 text, at most `max` bytes.
pub fn read_regular_text(path: &Path, max: u64, links: Links) -> io::Result<String> {
    let bytes = read_regular(path, max, links)?;
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// `O_NOFOLLOW` on a link fails with ELOOP, whose text ("too many levels of symbolic links")
/// misleads: say what happened.
fn refused_link(e: io::Error, links: Links) -> io::Error {
    if links == Links::Refuse && e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a symbolic link, where the server expects its own file; refused",
        )
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn fifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.pem");
        fifo(&path);
        let started = Instant::now();
        let err = read_regular(&path, MAX_SMALL_FILE, Links::Follow).expect_err("fifo");
        assert!(err.to_string().contains("a FIFO"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // Behind a link too: the check is made on what was opened.
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        let err = read_regular(&link, MAX_SMALL_FILE, Links::Follow).expect_err("fifo");
        assert!(err.to_string().contains("a FIFO"), "{err}");
        let err = read_regular(&link, MAX_SMALL_FILE, Links::Refuse).expect_err("link");
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn devices_and_directories_are_refused() {
        let err = read_regular(Path::new("/dev/zero"), 10, Links::Follow).expect_err("device");
        assert!(err.to_string().contains("character device"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_regular(dir.path(), 10, Links::Follow).expect_err("dir");
        assert!(err.to_string().contains("a directory"), "{err}");
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'x'; 11]).expect("write");
        let err = read_regular(&path, 10, Links::Follow).expect_err("too big");
        assert!(err.to_string().contains("11 bytes"), "{err}");
        assert_eq!(
            read_regular(&path, 11, Links::Refuse).expect("fits").len(),
            11
        );
        // A file that grows after its size was taken is still cut at the bound.
        let (file, _) = open_regular(&path, Links::Follow).expect("open");
        let err = read_bounded(file, 3, 10).expect_err("grew");
        assert!(err.to_string().contains("more than the 10"), "{err}");
    }
}
