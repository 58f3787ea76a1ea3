//! What a command's extension syntax said, as the session reads it.

/// What a command's extension syntax said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    pub select: Option<SelectParams>,
    /// FETCH asked for MODSEQ.
    pub fetch_modseq: bool,
    /// BINARY, BINARY.PEEK and BINARY.SIZE items (RFC 3516).
    pub binary: Vec<BinaryItem>,
    /// The FETCH named no item imap-codec knows (only MODSEQ or BINARY): `UID` stood in.
    pub fetch_uid_stand_in: bool,
    pub changed_since: Option<u64>,
    pub vanished: bool,
    pub unchanged_since: Option<u64>,
    /// `SEARCH RETURN (...)`: the options, `[]` for `RETURN ()`.
    pub search_return: Option<Vec<ReturnOption>>,
    /// The SEARCH used the MODSEQ key (its reply then carries the highest mod-sequence).
    pub search_modseq: bool,
    pub sort: Option<Vec<SortKey>>,
    /// THREAD (RFC 5256): the command was `THREAD algorithm charset criteria`.
    pub thread: Option<ThreadAlgorithm>,
    pub list: Option<ListExtras>,
    /// The message of an APPEND sent as `~{n}` binary data (RFC 3516), which imap-codec cannot
    /// take: a one-byte stand-in went to it instead.
    pub append_binary: Option<Vec<u8>>,
    /// CREATE-SPECIAL-USE (RFC 6154 §3): `CREATE name (USE (\Sent ...))`, the uses as sent.
    pub create_use: Option<Vec<String>>,
}

/// A FETCH BINARY item: `BINARY[1.2]<0.100>`, `BINARY.PEEK[]`, `BINARY.SIZE[2]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryItem {
    pub size_only: bool,
    pub peek: bool,
    /// Part numbers; empty for the whole message.
    pub part: Vec<u32>,
    /// (origin, length).
    pub partial: Option<(u32, u32)>,
}

impl BinaryItem {
    /// `1.2`, as the response names the section.
    pub fn section(&self) -> String {
        self.part
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// SELECT/EXAMINE parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectParams {
    CondStore,
    Qresync {
        uid_validity: u32,
        modseq: u64,
        known_uids: Option<String>,
    },
}

pub use super::super::partial::ReturnOption;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadAlgorithm {
    References,
    OrderedSubject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKind {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
    DisplayFrom,
    DisplayTo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    pub reverse: bool,
    pub kind: SortKind,
}

/// LIST-EXTENDED options (upper-cased) and patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListExtras {
    pub selection: Vec<String>,
    pub patterns: Vec<String>,
    pub returns: Vec<String>,
    /// `RETURN (STATUS (...))`: the status items asked for.
    pub status: Vec<String>,
}
