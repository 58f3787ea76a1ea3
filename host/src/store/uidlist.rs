//! The folder index file `mailgate-uidlist`: what a Maildir cannot say by itself. A header line
//! and one line per message:
//!
//! ```text
//! V<uidvalidity> N<uidnext> M<highest modseq> R<first recent uid> F2
//! <uid> <modseq> <size> <flags> <key>
//! ```
//!
//! Messages from UID `R` on are `\Recent`: the next session to select the folder read-write
//! claims them and moves `R` to UIDNEXT, so each message is recent in one session only (as in
//! Dovecot). `size` is the message's size as served (CRLF line ends, which a Maildir file need not have;
//! `-` when not known yet), `flags` the Maildir flag letters last seen (`-` when none): a file
//! whose name shows other letters was changed by another program, and gets a new modseq.
//! The first format (no `F2`: `<uid> <key>` lines) is read as modseq 1 with sizes and flags to
//! be learnt. Nothing here touches the filesystem.

use std::collections::BTreeMap;

use super::flags::Flags;

/// The index file's name in a folder.
pub const FILE: &str = "mailgate-uidlist";

/// What the index records of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub uid: u32,
    /// RFC 7162 mod-sequence: bumped by every flag change, never decreasing.
    pub modseq: u64,
    /// Size with CRLF line ends, once known.
    pub size: Option<u64>,
    /// Flags as last seen (`None`: an index of the first format, not known yet).
    pub flags: Option<Flags>,
}

/// A folder's index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UidList {
    /// 0 when the folder has no index yet.
    pub validity: u32,
    pub next: u32,
    pub highest_modseq: u64,
    /// Messages from this UID on are recent (not yet claimed by a session).
    pub first_recent: u32,
    /// By message key (the file name without its `:2,` info).
    pub records: BTreeMap<String, Record>,
}

impl UidList {
    /// Reads an index; lines that do not parse are skipped (their messages get new UIDs), so a
    /// damaged file never stops a folder from opening.
    pub fn parse(text: &str) -> UidList {
        // Split on LF only: a key may end in CR (an odd but legal file name), and `lines()`
        // would take it off.
        let mut lines = text.split('\n');
        let header = lines.next().unwrap_or("");
        let mut list = UidList {
            next: 1,
            highest_modseq: 1,
            ..UidList::default()
        };
        let mut second_format = false;
        let mut first_recent = None;
        for word in header.split_whitespace() {
            let Some(kind) = word.chars().next() else {
                continue;
            };
            let value = &word[kind.len_utf8()..];
            match kind {
                'V' => list.validity = value.parse().unwrap_or(0),
                'N' => list.next = value.parse().unwrap_or(1),
                'M' => list.highest_modseq = value.parse().unwrap_or(1),
                'R' => first_recent = value.parse().ok(),
                'F' => second_format = value == "2",
                _ => {}
            }
        }
        let mut taken = std::collections::HashSet::new();
        for line in lines {
            let parsed = if second_format {
                parse_record(line)
            } else {
                parse_first_format(line)
            };
            // A UID given twice (a damaged file) stays with its first message; the other
            // gets a new one at the next scan.
            if let Some((key, record)) = parsed {
                if !list.records.contains_key(key) && taken.insert(record.uid) {
                    list.records.insert(key.to_string(), record);
                }
            }
        }
        // Whatever the header says, UIDs and modseqs only ever grow.
        let max_uid = list.records.values().map(|r| r.uid).max().unwrap_or(0);
        list.next = list.next.max(max_uid.saturating_add(1));
        let max_modseq = list.records.values().map(|r| r.modseq).max().unwrap_or(1);
        list.highest_modseq = list.highest_modseq.max(max_modseq);
        // An index without the field: what it holds has been seen.
        list.first_recent = first_recent.unwrap_or(list.next).min(list.next);
        list
    }

    /// The index as written to disk, messages by ascending UID.
    pub fn render(&self) -> String {
        let mut by_uid: Vec<(&String, &Record)> = self.records.iter().collect();
        by_uid.sort_by_key(|(_, r)| r.uid);
        let mut text = format!(
            "V{} N{} M{} R{} F2\n",
            self.validity, self.next, self.highest_modseq, self.first_recent
        );
        for (key, r) in by_uid {
            let size = r.size.map_or("-".to_string(), |s| s.to_string());
            let flags = match r.flags.map(|f| f.to_string()) {
                Some(f) if !f.is_empty() => f,
                _ => "-".to_string(),
            };
            text.push_str(&format!("{} {} {size} {flags} {key}\n", r.uid, r.modseq));
        }
        text
    }

    /// The next mod-sequence, recorded as the highest.
    pub fn bump_modseq(&mut self) -> u64 {
        self.highest_modseq = self.highest_modseq.saturating_add(1);
        self.highest_modseq
    }
}

fn parse_record(line: &str) -> Option<(&str, Record)> {
    let mut fields = line.splitn(5, ' ');
    let uid = fields.next()?.parse().ok().filter(|&u| u > 0)?;
    let modseq = fields.next()?.parse().ok()?;
    let size = match fields.next()? {
        "-" => None,
        n => Some(n.parse().ok()?),
    };
    let flags = Flags::parse(fields.next()?);
    let key = fields.next().filter(|k| !k.is_empty())?;
    Some((
        key,
        Record {
            uid,
            modseq,
            size,
            flags: Some(flags),
        },
    ))
}

fn parse_first_format(line: &str) -> Option<(&str, Record)> {
    let (uid, key) = line.split_once(' ')?;
    let uid = uid.parse().ok().filter(|&u| u > 0)?;
    (!key.is_empty()).then_some((
        key,
        Record {
            uid,
            modseq: 1,
            size: None,
            flags: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_numbers_growing() {
        let mut list = UidList {
            validity: 1_700_000_000,
            next: 3,
            highest_modseq: 9,
            first_recent: 2,
            records: BTreeMap::new(),
        };
        list.records.insert(
            "100.a.host,S=10,W=12".into(),
            Record {
                uid: 1,
                modseq: 4,
                size: Some(12),
                flags: Some(Flags::parse("RSa")),
            },
        );
        list.records.insert(
            "200.b with space".into(),
            Record {
                uid: 2,
                modseq: 9,
                size: None,
                flags: Some(Flags::default()),
            },
        );
        let text = list.render();
        assert_eq!(
            text,
            "V1700000000 N3 M9 R2 F2\n1 4 12 RSa 100.a.host,S=10,W=12\n2 9 - - 200.b with space\n"
        );
        assert_eq!(UidList::parse(&text), list);
        // A header behind its records is corrected upwards.
        let behind = UidList::parse("V5 N1 M1 F2\n7 30 - - k\n");
        assert_eq!((behind.next, behind.highest_modseq), (8, 30));
    }

    #[test]
    fn reads_the_first_format_and_skips_damage() {
        let list = UidList::parse("V77 N5\n1 100.a\n4 400.b c\ngarbage\n0 zero\n");
        assert_eq!((list.validity, list.next, list.highest_modseq), (77, 5, 1));
        assert_eq!(list.first_recent, 5);
        assert_eq!(list.records.len(), 2);
        let b = list.records["400.b c"];
        assert_eq!((b.uid, b.modseq, b.size, b.flags), (4, 1, None, None));
        assert_eq!(UidList::parse("").validity, 0);
        assert!(
            UidList::parse("V1 N2 M3 F2\nx 1 - - k\n1 y - - k\n1 1 - -\n")
                .records
                .is_empty()
        );
    }
}
