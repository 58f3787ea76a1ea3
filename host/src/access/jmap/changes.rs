//! State strings and `/changes` for one object type of one account (RFC 8620 §5.2). The
//! Maildir is changed by IMAP, POP3 and local delivery as much as by JMAP, so changes are not
//! recorded where they are made: each time the account is looked at, every object's
//! signature (what its properties hash to) is compared with the last look, and any difference
//! is a new state with its created, updated and destroyed ids. A bounded log of those steps
//! answers `/changes`; a state older than the log, or from before a restart (the state string
//! carries the server's start), gets `cannotCalculateChanges` and the client resyncs.

use std::collections::{HashMap, VecDeque};

use super::api::MethodError;

/// Steps kept per object type; older states cannot be caught up from.
const KEPT_STEPS: usize = 512;
/// Ids kept across all steps of one object type: a large account whose every flag changes
/// again and again (an IMAP `STORE 1:* +FLAGS` loop) must not fill the log with copies of
/// its whole id list. Older steps go first; their states get `cannotCalculateChanges`.
const KEPT_IDS: usize = 200_000;

/// What changed between two states.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub destroyed: Vec<String>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn len(&self) -> usize {
        self.created.len() + self.updated.len() + self.destroyed.len()
    }
}

/// The answer to a `/changes` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    pub changes: Changes,
    pub new_state: String,
    pub has_more: bool,
}

/// One object type's states.
#[derive(Debug)]
pub struct Tracker {
    /// Names this run of the server: states from another run are not ours to compare.
    epoch: String,
    state: u64,
    signatures: HashMap<String, u64>,
    /// `(state reached, what changed to reach it)`, oldest first.
    steps: VecDeque<(u64, Changes)>,
    /// Ids in `steps`, all together.
    kept_ids: usize,
}

impl Tracker {
    pub fn new(epoch: &str) -> Tracker {
        Tracker {
            epoch: epoch.to_string(),
            state: 0,
            signatures: HashMap::new(),
            steps: VecDeque::new(),
            kept_ids: 0,
        }
    }

    pub fn state(&self) -> String {
        format!("{}-{}", self.epoch, self.state)
    }

    /// Takes in every object's signature as it is now; a difference makes a new state.
    pub fn observe(&mut self, now: HashMap<String, u64>) {
        let mut changes = Changes::default();
        for (id, signature) in &now {
            match self.signatures.get(id) {
                None => changes.created.push(id.clone()),
                Some(old) if old != signature => changes.updated.push(id.clone()),
                Some(_) => {}
            }
        }
        changes.destroyed = self
            .signatures
            .keys()
            .filter(|id| !now.contains_key(*id))
            .cloned()
            .collect();
        self.signatures = now;
        if changes.is_empty() {
            return;
        }
        for list in [
            &mut changes.created,
            &mut changes.updated,
            &mut changes.destroyed,
        ] {
            list.sort();
        }
        self.state += 1;
        self.kept_ids += changes.len();
        self.steps.push_back((self.state, changes));
        // The newest step stays whatever its size: the state just reached can be caught up to.
        while self.steps.len() > KEPT_STEPS || (self.kept_ids > KEPT_IDS && self.steps.len() > 1) {
            if let Some((_, dropped)) = self.steps.pop_front() {
                self.kept_ids -= dropped.len();
            }
        }
    }

    /// What changed since `since` (a state string this tracker gave), at most `max` ids; with
    /// more, the state reached so far and `has_more`.
    pub fn since(&self, since: &str, max: Option<usize>) -> Result<Since, MethodError> {
        let cannot = || {
            MethodError::with(
                "cannotCalculateChanges",
                "that state is unknown here or too old: fetch the objects again",
            )
        };
        let (epoch, number) = since.rsplit_once('-').ok_or_else(cannot)?;
        let from: u64 = number.parse().map_err(|_| cannot())?;
        if epoch != self.epoch || from > self.state {
            return Err(cannot());
        }
        let oldest_known = self.steps.front().map_or(self.state, |(s, _)| s - 1);
        if from < oldest_known {
            return Err(cannot());
        }
        let max = max.unwrap_or(usize::MAX).max(1);
        let mut merged: HashMap<String, Kind> = HashMap::new();
        let mut reached = from;
        for (state, step) in self.steps.iter().filter(|(s, _)| *s > from) {
            // Whole steps only, and without trying each on a copy: a step that might take the
            // answer over `max` ends it (the RFC lets the server answer fewer than asked).
            if merged.len() + step.len() > max && reached > from {
                return Ok(Since {
                    changes: split(merged),
                    new_state: format!("{}-{reached}", self.epoch),
                    has_more: true,
                });
            }
            merge(&mut merged, step);
            reached = *state;
        }
        Ok(Since {
            changes: split(merged),
            new_state: self.state(),
            has_more: false,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Created,
    Updated,
    Destroyed,
    /// Created and destroyed again within the span: not reported.
    Gone,
}

fn merge(merged: &mut HashMap<String, Kind>, step: &Changes) {
    for id in &step.created {
        // Destroyed then created again (an id reused): an update for the client.
        let kind = match merged.get(id) {
            Some(Kind::Destroyed) => Kind::Updated,
            _ => Kind::Created,
        };
        merged.insert(id.clone(), kind);
    }
    for id in &step.updated {
        merged.entry(id.clone()).or_insert(Kind::Updated);
    }
    for id in &step.destroyed {
        let kind = match merged.get(id) {
            Some(Kind::Created) | Some(Kind::Gone) => Kind::Gone,
            _ => Kind::Destroyed,
        };
        merged.insert(id.clone(), kind);
    }
}

fn split(merged: HashMap<String, Kind>) -> Changes {
    let mut changes = Changes::default();
    for (id, kind) in merged {
        match kind {
            Kind::Created => changes.created.push(id),
            Kind::Updated => changes.updated.push(id),
            Kind::Destroyed => changes.destroyed.push(id),
            Kind::Gone => {}
        }
    }
    for list in [
        &mut changes.created,
        &mut changes.updated,
        &mut changes.destroyed,
    ] {
        list.sort();
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn changes_since_a_state_merge_the_steps_after_it() {
        let mut t = Tracker::new("e");
        t.observe(look(&[("a", 1), ("b", 1)]));
        let first = t.state();
        t.observe(look(&[("a", 1), ("b", 1)]));
        assert_eq!(t.state(), first, "no difference, no new state");
        t.observe(look(&[("a", 2), ("b", 1), ("c", 1)]));
        t.observe(look(&[("a", 2), ("c", 1), ("d", 1)]));
        t.observe(look(&[("a", 2), ("c", 1)]));
        let since = t.since(&first, None).expect("known state");
        assert_eq!(since.changes.created, vec!["c"]);
        assert_eq!(since.changes.updated, vec!["a"]);
        assert_eq!(since.changes.destroyed, vec!["b"]);
        assert!(!since.has_more);
        assert_eq!(since.new_state, t.state());
        let none = t.since(&t.state(), None).expect("current state");
        assert_eq!(none.changes, Changes::default());
    }

    #[test]
    fn max_changes_stops_at_a_whole_step_and_says_there_is_more() {
        let mut t = Tracker::new("e");
        t.observe(look(&[]));
        let start = t.state();
        t.observe(look(&[("a", 1)]));
        t.observe(look(&[("a", 1), ("b", 1)]));
        t.observe(look(&[("a", 1), ("b", 1), ("c", 1)]));
        let part = t.since(&start, Some(2)).expect("known");
        assert!(part.has_more);
        assert_eq!(part.changes.created, vec!["a", "b"]);
        let rest = t.since(&part.new_state, Some(2)).expect("known");
        assert_eq!(rest.changes.created, vec!["c"]);
        assert!(!rest.has_more);
    }

    #[test]
    fn unknown_or_foreign_states_cannot_be_caught_up() {
        let mut t = Tracker::new("e");
        t.observe(look(&[("a", 1)]));
        for bad in ["x-1", "e-99", "garbage", "e-"] {
            let error = t.since(bad, None).expect_err("unknown state");
            assert_eq!(error.kind, "cannotCalculateChanges");
        }
        let old = t.state();
        for i in 0..(KEPT_STEPS as u64 + 5) {
            t.observe(look(&[("a", i + 2)]));
        }
        assert!(t.since(&old, None).is_err(), "older than the log");
    }

    #[test]
    fn the_log_keeps_a_bounded_number_of_ids() {
        let mut t = Tracker::new("e");
        let ids: Vec<String> = (0..50_000).map(|i| format!("m{i}")).collect();
        for round in 0..20u64 {
            t.observe(ids.iter().map(|id| (id.clone(), round)).collect());
        }
        assert!(t.kept_ids <= KEPT_IDS, "{} ids kept", t.kept_ids);
        assert!(t.steps.len() < 20);
        let recent = format!("e-{}", t.state - 1);
        let since = t.since(&recent, None).expect("the last step is kept");
        assert_eq!(since.changes.updated.len(), 50_000);
    }
}
