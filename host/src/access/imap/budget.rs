//! What one command may cost. Every expansion a command asks for (saved results, sequence
//! sets, repeated FETCH items, MIME sections, search keys, reference chains) is counted here
//! *before* it is materialised, and a command over its budget is answered `NO [LIMIT]`
//! (RFC 5530) instead of being carried out. Budgets are per command: nothing carries over.

use std::cell::Cell;

/// The command asked for more than its budget allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget;

/// Work a SEARCH, SORT or THREAD may do: bytes of text examined, plus a little per key,
/// message, sequence range and reference link. About a second of CPU in a release build.
pub const SEARCH_WORK: u64 = 1 << 30;
/// Work one key costs per message, and one sequence range per command.
pub const KEY_COST: u64 = 64;
/// Distinct items one FETCH may name (each BODY[section] is one).
pub const FETCH_ITEMS: usize = 10_000;
/// Per message, a FETCH may send at most this many bytes of section data beyond the size of
/// the message itself (times [`FETCH_AMPLIFICATION`]): repeating items cannot multiply it.
pub const FETCH_SLACK: u64 = 1 << 20;
pub const FETCH_AMPLIFICATION: u64 = 4;
/// References of one message that THREAD considers (the first, the thread's root, and the
/// last ones, its nearest ancestors), as other servers cap them.
pub const THREAD_REFERENCES: usize = 128;
/// Longest LIST/LSUB pattern (after the reference is prepended), in bytes.
pub const LIST_PATTERN: usize = 1024;
/// Patterns one LIST-EXTENDED command may give.
pub const LIST_PATTERNS: usize = 64;
/// Matching work one LIST or LSUB may do, in (pattern character × name character) cells:
/// a few tens of milliseconds in a release build; `*` over 100 000 names of 100 characters
/// is well inside it.
pub const LIST_WORK: u64 = 1 << 25;
/// Bytes of text the MODSEQ search key may expand into, over the whole command.
pub const EXPANSION: usize = 1 << 20;
/// Flags and keywords one STORE or APPEND may name.
pub const FLAGS_PER_COMMAND: usize = 256;
/// Longest subject SORT and THREAD look at to find the base subject (RFC 5256 §2.1, whose
/// stripping is repeated per leader).
pub const SORT_SUBJECT: usize = 1024;

/// A work counter for one command. Not shared between threads: one command runs on one.
#[derive(Debug)]
pub struct Work {
    spent: Cell<u64>,
    limit: u64,
}

impl Work {
    pub fn new(limit: u64) -> Work {
        Work {
            spent: Cell::new(0),
            limit,
        }
    }

    /// Counts `units` of work; `Err` once the total is over the limit (and ever after), or
    /// once the server stops (the work must not hold the process past its drain).
    pub fn charge(&self, units: u64) -> Result<(), OverBudget> {
        let spent = self.spent.get().saturating_add(units);
        self.spent.set(spent);
        if spent > self.limit || crate::sys::blocking::stopping() {
            Err(OverBudget)
        } else {
            Ok(())
        }
    }

    pub fn exhausted(&self) -> bool {
        self.spent.get() > self.limit || crate::sys::blocking::stopping()
    }

    pub fn spent(&self) -> u64 {
        self.spent.get()
    }

    /// The counter itself, for code that adds to it directly (search keys).
    pub fn cell(&self) -> &Cell<u64> {
        &self.spent
    }
}

/// The tagged answer to a command over its budget.
pub fn refusal(tag: &str, what: &str) -> String {
    format!("{tag} NO [LIMIT] {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_refused_once_over_and_stays_refused() {
        let work = Work::new(100);
        assert!(work.charge(60).is_ok());
        assert!(work.charge(40).is_ok());
        assert!(!work.exhausted());
        assert_eq!(work.charge(1), Err(OverBudget));
        assert!(work.exhausted());
        assert_eq!(work.charge(0), Err(OverBudget));
    }

    #[test]
    fn huge_charges_saturate_instead_of_wrapping() {
        let work = Work::new(u64::MAX - 1);
        assert!(work.charge(u64::MAX - 1).is_ok());
        assert!(work.charge(u64::MAX).is_err());
        assert_eq!(work.spent(), u64::MAX);
    }

    #[test]
    fn refusal_names_the_limit_code() {
        assert_eq!(refusal("a1", "Too much"), "a1 NO [LIMIT] Too much");
    }
}
