//! Sequence sets resolved once per command: the ranges a client sent (and the saved result a
//! `$` refers to) become ascending, merged intervals, and membership is a binary search. A set
//! of many ranges therefore costs its length once, not once per message, and each range is
//! counted against the command's work budget as it is read.
//!
//! `$` (RFC 5182) reaches imap-codec as [`SAVED_MARK`], a reversed range no client sends (one
//! that does is rewritten to its forward form first, see `extensions`): the saved result is
//! never written out as text, however many `$` a command holds.

use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::budget::{OverBudget, Work, KEY_COST};

/// What `$` becomes before imap-codec parses the command: `4294967295:4294967294`.
pub const SAVED_MARK: &str = "4294967295:4294967294";
/// The forward form a client's own `4294967295:4294967294` is rewritten to.
pub const SAVED_MARK_FORWARD: &str = "4294967294:4294967295";

/// Whether this element of a set stands for `$`.
pub fn is_saved_mark(seq: &Sequence) -> bool {
    matches!(
        seq,
        Sequence::Range(SeqOrUid::Value(a), SeqOrUid::Value(b))
            if a.get() == u32::MAX && b.get() == u32::MAX - 1
    )
}

/// Whether the set is the saved result and nothing else (then it can be shared as it is).
pub fn is_only_saved(set: &SequenceSet) -> bool {
    matches!(set.0.as_ref(), [only] if is_saved_mark(only))
}

/// Whether the set refers to the saved result anywhere.
pub fn refers_to_saved(set: &SequenceSet) -> bool {
    set.0.as_ref().iter().any(is_saved_mark)
}

/// A resolved sequence set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intervals(Vec<(u32, u32)>);

impl Intervals {
    /// Ascending numbers (the saved result in a command's numbering) as intervals.
    pub fn of_numbers(numbers: &[u32]) -> Intervals {
        Intervals(runs(numbers))
    }

    /// Resolves `set`: `*` is `largest`; `$` is `saved` (looked at once however often `$`
    /// appears in the set).
    pub fn compile(
        set: &SequenceSet,
        largest: u32,
        saved: &Intervals,
        work: &Work,
    ) -> Result<Intervals, OverBudget> {
        let value = |s: &SeqOrUid| match s {
            SeqOrUid::Value(v) => v.get(),
            SeqOrUid::Asterisk => largest,
        };
        let mut spans = Vec::new();
        let mut saved_taken = false;
        for seq in set.0.as_ref() {
            work.charge(KEY_COST)?;
            if is_saved_mark(seq) {
                if !saved_taken {
                    work.charge(saved.0.len() as u64)?;
                    spans.extend_from_slice(&saved.0);
                    saved_taken = true;
                }
                continue;
            }
            spans.push(match seq {
                Sequence::Single(s) => (value(s), value(s)),
                Sequence::Range(a, b) => (value(a).min(value(b)), value(a).max(value(b))),
            });
        }
        Ok(Intervals::merged(spans))
    }

    /// Ascending, merged intervals from any intervals.
    pub fn merged(mut spans: Vec<(u32, u32)>) -> Intervals {
        spans.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(spans.len());
        for (a, b) in spans {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Intervals(merged)
    }

    pub fn contains(&self, n: u32) -> bool {
        let after = self.0.partition_point(|&(a, _)| a <= n);
        after > 0 && self.0[after - 1].1 >= n
    }

    pub fn into_spans(self) -> Vec<(u32, u32)> {
        self.0
    }

    pub fn spans(&self) -> &[(u32, u32)] {
        &self.0
    }

    /// Indexes of the `items` whose numbers (ascending, by `number`) are in the set: two
    /// binary searches per interval, never one test per item and range.
    pub fn select<T>(&self, items: &[T], number: impl Fn(&T) -> u32) -> Vec<usize> {
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            let from = items.partition_point(|item| number(item) < a);
            let to = items.partition_point(|item| number(item) <= b);
            out.extend(from..to.max(from));
        }
        out
    }
}

/// Ascending numbers as runs of consecutive ones.
fn runs(numbers: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &n in numbers {
        match out.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(n) => last.1 = n,
            _ => out.push((n, n)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> SequenceSet {
        SequenceSet::try_from(text).expect("set")
    }

    fn big() -> Work {
        Work::new(u64::MAX)
    }

    fn none() -> Intervals {
        Intervals::default()
    }

    #[test]
    fn ranges_merge_and_star_is_the_largest() {
        let i = Intervals::compile(&set("5:3,1,2,9:*"), 12, &none(), &big()).expect("in budget");
        assert_eq!(i.spans(), &[(1, 5), (9, 12)]);
        assert!(i.contains(1) && i.contains(5) && i.contains(12));
        assert!(!i.contains(6) && !i.contains(13) && !i.contains(0));
    }

    #[test]
    fn the_saved_mark_is_the_saved_result_once() {
        let marked = set(&format!("{SAVED_MARK},7"));
        assert!(refers_to_saved(&marked));
        assert!(!refers_to_saved(&set(SAVED_MARK_FORWARD)));
        let work = big();
        let saved = Intervals::of_numbers(&[2, 3, 4, 10]);
        let i = Intervals::compile(&marked, 100, &saved, &work).expect("in budget");
        assert!(is_only_saved(&set(SAVED_MARK)) && !is_only_saved(&marked));
        assert_eq!(i.spans(), &[(2, 4), (7, 7), (10, 10)]);
    }

    #[test]
    fn every_range_counts_against_the_budget() {
        let ranges: Vec<String> = (1..=1000u32).map(|n| (n * 3).to_string()).collect();
        let many = set(&ranges.join(","));
        let work = Work::new(KEY_COST * 999);
        assert_eq!(
            Intervals::compile(&many, 10, &none(), &work),
            Err(OverBudget)
        );
        let work = Work::new(KEY_COST * 1000);
        assert!(Intervals::compile(&many, 10, &none(), &work).is_ok());
        // A large saved result counts by its length.
        let saved: Vec<u32> = (1..=10_000).map(|n| n * 2).collect();
        let work = Work::new(5_000);
        let saved = Intervals::of_numbers(&saved);
        assert!(Intervals::compile(&set(SAVED_MARK), 1, &saved, &work).is_err());
    }

    #[test]
    fn selecting_from_ascending_numbers() {
        let i = Intervals::compile(&set("2:4,9"), 0, &none(), &big()).expect("in budget");
        assert_eq!(i.select(&[1, 3, 4, 8, 9, 20], |&n| n), vec![1, 2, 4]);
        assert!(Intervals::default().select(&[1, 2], |&n| n).is_empty());
    }
}
