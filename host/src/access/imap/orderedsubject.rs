//! THREAD=ORDEREDSUBJECT (RFC 5256 §3, "poor man's threading"): messages with the same base
//! subject form one thread, ordered by sent date (ties by number); the first is its root and
//! every other one a child of it, all on one level. Threads are ordered by the sent date of
//! their first message.

use std::collections::HashMap;

use super::budget::{OverBudget, Work, KEY_COST};
use super::sort::base_subject;
use super::thread::Threaded;

/// The `* THREAD` reply's data for these messages.
pub fn threads(messages: &[Threaded], work: &Work) -> Result<String, OverBudget> {
    // Sorting by (base subject, date, number) counts as a key per message (the base subject
    // is worked out once per message, over a subject already cut to SORT_SUBJECT).
    let mut keyed: Vec<(String, u64, u32)> = Vec::with_capacity(messages.len());
    for m in messages {
        work.charge(KEY_COST.saturating_add(m.subject.len() as u64))?;
        keyed.push((base_subject(&m.subject), m.date, m.number));
    }
    let mut groups: HashMap<&str, Vec<(u64, u32)>> = HashMap::new();
    for (subject, date, number) in &keyed {
        groups.entry(subject).or_default().push((*date, *number));
    }
    let mut threads: Vec<Vec<(u64, u32)>> = groups
        .into_values()
        .map(|mut members| {
            members.sort_unstable();
            members
        })
        .collect();
    threads.sort_unstable_by_key(|members| members.first().copied());
    Ok(threads.iter().map(|members| render(members)).collect())
}

/// `(root)`, `(root child)` or `(root (child)(child)...)`.
fn render(members: &[(u64, u32)]) -> String {
    let numbers: Vec<u32> = members.iter().map(|&(_, n)| n).collect();
    match numbers.as_slice() {
        [] => String::new(),
        [root] => format!("({root})"),
        [root, child] => format!("({root} {child})"),
        [root, children @ ..] => {
            let inner: String = children.iter().map(|c| format!("({c})")).collect();
            format!("({root} {inner})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(number: u32, subject: &str, date: u64) -> Threaded {
        Threaded {
            number,
            message_id: None,
            references: Vec::new(),
            date,
            subject: subject.into(),
        }
    }

    fn threaded(messages: &[Threaded]) -> String {
        threads(messages, &Work::new(u64::MAX)).expect("within budget")
    }

    #[test]
    fn same_base_subject_is_one_thread_rooted_at_its_oldest_message() {
        let messages = [
            message(1, "Re: lunch", 300),
            message(2, "lunch", 100),
            message(3, "other", 150),
            message(4, "Fwd: lunch", 200),
            message(5, "RE: [list] lunch", 400),
            message(6, "alone", 50),
            message(7, "Re: other", 160),
        ];
        assert_eq!(threaded(&messages), "(6)(2 (4)(1)(5))(3 7)");
    }

    #[test]
    fn equal_dates_keep_the_numbering_order() {
        let messages = [
            message(2, "a", 10),
            message(1, "a", 10),
            message(3, "b", 10),
        ];
        assert_eq!(threaded(&messages), "(1 2)(3)");
        assert_eq!(threaded(&[]), "");
    }

    #[test]
    fn threading_is_counted_against_the_budget() {
        let messages: Vec<Threaded> = (1..=100).map(|n| message(n, "s", 0)).collect();
        assert!(threads(&messages, &Work::new(KEY_COST * 10)).is_err());
    }
}
