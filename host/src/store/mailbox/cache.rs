//! A folder's cache of parsed fields, `mailgate-cache` in the folder (a name Dovecot, mutt and
//! other Maildir programs leave alone): what a reader computed once from a message (its header
//! block, IMAP ENVELOPE and BODYSTRUCTURE, …) and its internal date, so that the next reader,
//! in any session, reads a few hundred bytes instead of the message. A message file never
//! changes under its key, so an entry is never stale; entries of messages gone are dead weight
//! until the file is compacted.
//!
//! The file is `MGCACHE1` then records appended one `write` each (`O_APPEND`):
//!
//! ```text
//! <body length: u32 LE> <CRC-32 of body: u32 LE> <body: field u8, key length u16 LE, key, value>
//! ```
//!
//! It is only ever a cache: one that is missing, truncated or garbage is cut back to its last
//! whole record (or started again) and refilled as messages are read; a record that fails its
//! check when read is a miss, and the file is read again.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use cap_std::fs::{Dir, OpenOptions};

use super::stamp::Stamp;

pub(super) const FILE: &str = "mailgate-cache";
const MAGIC: &[u8; 8] = b"MGCACHE1";
/// A value larger than this is not cached (it is read from the message each time).
pub const MAX_VALUE: usize = 1 << 20;
const HEAD: usize = 8;

/// What the cache holds of a message. The store keeps the bytes; readers compute them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Field {
    /// The internal date (Unix seconds, u64 LE): the file's mtime.
    Date = 0,
    /// The header block as served (CRLF), with the empty line that ends it.
    Header = 1,
    /// IMAP ENVELOPE, as sent.
    Envelope = 2,
    /// IMAP BODYSTRUCTURE, as sent.
    BodyStructure = 3,
    /// IMAP BODY (non-extensible BODYSTRUCTURE), as sent.
    Body = 4,
}

impl Field {
    fn from_byte(b: u8) -> Option<Field> {
        Some(match b {
            0 => Field::Date,
            1 => Field::Header,
            2 => Field::Envelope,
            3 => Field::BodyStructure,
            4 => Field::Body,
            _ => return None,
        })
    }
}

/// Where a record sits in the file.
#[derive(Debug, Clone, Copy)]
struct At {
    offset: u64,
    len: u32,
}

/// The cache file as this process knows it: where each field's record is.
#[derive(Default)]
pub struct FieldCache {
    file: Option<std::fs::File>,
    /// The file `file` is (a cache replaced by another process is read again).
    stamp: Option<Stamp>,
    /// Where each field's record is, by message key (indexed by `Field as usize`).
    index: HashMap<Arc<str>, [Option<At>; FIELDS]>,
}

const FIELDS: usize = 5;

/// One record as bytes, header included; `None` when it cannot be one (too large).
fn record(field: Field, key: &str, value: &[u8]) -> Option<Vec<u8>> {
    let key_len = u16::try_from(key.len()).ok()?;
    if value.len() > MAX_VALUE {
        return None;
    }
    let mut body = Vec::with_capacity(3 + key.len() + value.len());
    body.push(field as u8);
    body.extend_from_slice(&key_len.to_le_bytes());
    body.extend_from_slice(key.as_bytes());
    body.extend_from_slice(value);
    let len = u32::try_from(body.len()).ok()?;
    let mut out = Vec::with_capacity(HEAD + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

/// A record's body split up, when its check holds: field, key, value.
fn parse_body(body: &[u8], crc: u32) -> Option<(Field, &str, &[u8])> {
    if crc32fast::hash(body) != crc || body.len() < 3 {
        return None;
    }
    let field = Field::from_byte(body[0])?;
    let key_len = usize::from(u16::from_le_bytes([body[1], body[2]]));
    let key = std::str::from_utf8(body.get(3..3 + key_len)?).ok()?;
    Some((field, key, &body[3 + key_len..]))
}

/// One record of the cache file's format as bytes (`None` when the value is too large to
/// cache): what a reader appends.
pub fn encode_record(field: Field, key: &str, value: &[u8]) -> Option<Vec<u8>> {
    record(field, key, value)
}

/// A record's field, message key and value.
pub type Entry<'a> = (Field, &'a str, &'a [u8]);

/// The whole records of a cache file's bytes (magic included; not checked here): each one's
/// field, key and value, and where the last whole one ends. The file is outside input (any
/// program with access to the Maildir may write it).
pub fn decode_records(bytes: &[u8]) -> (Vec<Entry<'_>>, usize) {
    let (found, end) = records(bytes);
    let found = found.into_iter().map(|(f, k, v, _)| (f, k, v)).collect();
    (found, end)
}

/// One record read back: its field, the message's key, the value, and where it lies.
type Record<'a> = (Field, &'a str, &'a [u8], At);

/// The whole records at the start of `bytes` (after the magic): each with its place, and
/// where the last whole one ends.
fn records(bytes: &[u8]) -> (Vec<Record<'_>>, usize) {
    let mut found = Vec::new();
    let mut pos = MAGIC.len();
    while let Some(head) = bytes.get(pos..pos + HEAD) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|l| (pos + HEAD).checked_add(l))
        else {
            break;
        };
        let Some(parsed) = bytes.get(pos + HEAD..end).and_then(|b| parse_body(b, crc)) else {
            break;
        };
        let (field, key, value) = parsed;
        found.push((
            field,
            key,
            value,
            At {
                offset: pos as u64,
                len,
            },
        ));
        pos = end;
    }
    (found, pos)
}

impl FieldCache {
    /// Opens and reads the cache file of the folder `dir`, made anew when missing or not
    /// ours, cut back to its last whole record when its tail is torn or garbage. The
    /// internal dates it holds go into `dates`.
    fn load(&mut self, dir: &Dir, dates: &mut HashMap<Arc<str>, u64>) -> std::io::Result<()> {
        self.index.clear();
        self.file = None;
        let mut file = dir
            .open_with(
                FILE,
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .read(true)
                    .append(true),
            )?
            .into_std();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
            if !bytes.is_empty() {
                tracing::info!(
                    folder_cache = FILE,
                    "not a cache file of ours: started again"
                );
            }
            file.set_len(0)?;
            file.write_all(MAGIC)?;
            bytes.clear();
        }
        let (found, end) = if bytes.is_empty() {
            (Vec::new(), MAGIC.len())
        } else {
            records(&bytes)
        };
        for (field, key, value, at) in found {
            let key: Arc<str> = match dates.get_key_value(key) {
                Some((held, _)) => held.clone(),
                None => Arc::from(key),
            };
            if field == Field::Date {
                if let Ok(date) = <[u8; 8]>::try_from(value) {
                    dates.insert(key, u64::from_le_bytes(date));
                }
                continue;
            }
            self.index.entry(key).or_default()[field as usize] = Some(at);
        }
        if !bytes.is_empty() && end < bytes.len() {
            tracing::info!(
                folder_cache = FILE,
                kept = end,
                dropped = bytes.len() - end,
                "torn or damaged tail of a folder cache cut off"
            );
            file.set_len(end as u64)?;
        }
        self.stamp = Stamp::at(dir, FILE)?;
        self.file = Some(file);
        Ok(())
    }

    /// Reads the file (again) when this process has not, or another program replaced it.
    pub(super) fn ready(
        &mut self,
        dir: &Dir,
        dates: &mut HashMap<Arc<str>, u64>,
    ) -> std::io::Result<()> {
        let now = Stamp::at(dir, FILE)?;
        let same_file = match (self.stamp, now) {
            (Some(was), Some(now)) => was.id() == now.id(),
            _ => false,
        };
        if self.file.is_none() || !same_file {
            self.load(dir, dates)?;
        }
        Ok(())
    }

    /// The value of `field` for the message `key`, if cached and whole.
    pub(super) fn get(&mut self, key: &str, field: Field) -> Option<Vec<u8>> {
        let at = self.index.get(key)?[field as usize]?;
        let file = self.file.as_ref()?;
        let mut buf = vec![0u8; HEAD + usize::try_from(at.len).ok()?];
        let read = file.read_exact_at(&mut buf, at.offset);
        let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let whole = read.is_ok() && buf[..4] == at.len.to_le_bytes();
        match parse_body(&buf[HEAD..], crc) {
            Some((f, k, value)) if whole && f == field && k == key => Some(value.to_vec()),
            _ => {
                // Cut or rewritten under us: read the file again before the next use.
                self.stamp = None;
                None
            }
        }
    }

    /// Adds fields of the message `key` in one write (a failed write loses only cache).
    pub(super) fn put(&mut self, key: &Arc<str>, fields: &[(Field, &[u8])]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        let mut placed = Vec::new();
        for (field, value) in fields {
            if let Some(bytes) = record(*field, key, value) {
                let len = u32::try_from(bytes.len() - HEAD).unwrap_or(0);
                placed.push((*field, out.len() as u64, len));
                out.extend_from_slice(&bytes);
            }
        }
        if out.is_empty() {
            return;
        }
        // With O_APPEND the write lands at the end whoever else appends, and leaves the
        // position after it: where it began follows.
        let written = file.write_all(&out).and_then(|()| file.stream_position());
        match written {
            Ok(end) => {
                let start = end.saturating_sub(out.len() as u64);
                for (field, offset, len) in placed {
                    let at = At {
                        offset: start + offset,
                        len,
                    };
                    self.index.entry(key.clone()).or_default()[field as usize] = Some(at);
                }
            }
            Err(e) => tracing::debug!("folder cache not written: {e}"),
        }
        if let Some(file) = self.file.as_mut() {
            let _ = file.seek(SeekFrom::End(0));
        }
    }

    /// Adds internal dates of several messages in one write.
    pub(super) fn put_dates(&mut self, dates: &[(Arc<str>, u64)]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        for (key, date) in dates {
            if let Some(bytes) = record(Field::Date, key, &date.to_le_bytes()) {
                out.extend_from_slice(&bytes);
            }
        }
        if !out.is_empty() {
            if let Err(e) = file.write_all(&out) {
                tracing::debug!("folder cache not written: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(record(Field::Envelope, "k1", b"(NIL)").unwrap());
        bytes.extend(record(Field::Date, "k1", &7u64.to_le_bytes()).unwrap());
        let whole = bytes.len();
        let last = record(Field::Header, "k2", b"From: a\r\n\r\n").unwrap();
        bytes.extend(&last[..last.len() - 3]);
        let (found, end) = records(&bytes);
        assert_eq!(end, whole);
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[0].0, found[0].1, found[0].2),
            (Field::Envelope, "k1", &b"(NIL)"[..])
        );
        // A flipped byte fails the check.
        let mut damaged = bytes[..whole].to_vec();
        damaged[MAGIC.len() + HEAD + 4] ^= 1;
        assert!(records(&damaged).0.is_empty());
    }
}
