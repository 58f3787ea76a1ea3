//! What a client is served from a message file: its bytes with CRLF line ends whatever the
//! file holds (Dovecot, Postfix `virtual` and procmail write bare LFs), and the size of those
//! bytes, read from the name's `W=` when it has one.

use std::path::Path;

use super::Folder;
use crate::message::lines::{crlf_len, into_crlf, BareEnds};

/// The size of a file's bytes as served: with CRLF line ends (a bare CR stays as it is).
pub fn served_len(bytes: &[u8]) -> u64 {
    crlf_len(bytes, BareEnds::Lf)
}

/// A file's bytes as served to a client: every bare LF made a CRLF.
pub fn served(bytes: Vec<u8>) -> Vec<u8> {
    into_crlf(bytes, BareEnds::Lf)
}

/// A numeric `,X=<n>` field of a Maildir base name (Dovecot's `S=` file size, `W=` size with
/// CRLF line ends).
fn name_field(key: &str, field: &str) -> Option<u64> {
    key.split(',')
        .skip(1)
        .find_map(|part| part.strip_prefix(field)?.parse().ok())
}

impl Folder {
    /// The size a message is served with: the `W=` its name carries (Dovecot's, and ours),
    /// else counted once from the file.
    pub(super) fn served_size(&self, key: &str, path: &Path) -> u64 {
        if let Some(size) = name_field(key, "W=") {
            return size;
        }
        match self.dir.read(path) {
            Ok(bytes) => served_len(&bytes),
            Err(_) => self.dir.metadata(path).map_or(0, |m| m.len()),
        }
    }
}
