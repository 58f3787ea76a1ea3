//! THREAD=REFERENCES (RFC 5256 §4, after the algorithm of jwz): messages linked by Message-ID,
//! References and In-Reply-To, empty containers pruned, roots with the same base subject
//! gathered, siblings ordered by sent date. Iterative where the input decides the depth (long
//! reference chains), so no message can exhaust the stack.

use std::collections::HashMap;

use super::budget::{OverBudget, Work, SORT_SUBJECT, THREAD_REFERENCES};
use super::sort::{base_subject, is_reply, sent_time};

/// Work one step up a thread costs.
const STEP_COST: u64 = 4;
use crate::message::Message;

/// What threading needs of one message.
pub struct Threaded {
    /// Sequence number or UID, as the reply numbers messages.
    pub number: u32,
    pub message_id: Option<String>,
    /// References (or, without it, the first In-Reply-To), oldest first.
    pub references: Vec<String>,
    /// Sent date (UTC seconds), else the internal date.
    pub date: u64,
    /// The Subject header, decoded.
    pub subject: String,
}

struct Container {
    /// Index into the messages; `None` for a dummy (a message referred to but not here).
    message: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Forest<'a> {
    messages: &'a [Threaded],
    nodes: Vec<Container>,
}

impl Forest<'_> {
    fn node(&mut self, ids: &mut HashMap<String, usize>, id: &str) -> usize {
        if let Some(&n) = ids.get(id) {
            return n;
        }
        self.nodes.push(Container {
            message: None,
            parent: None,
            children: Vec::new(),
        });
        ids.insert(id.to_string(), self.nodes.len() - 1);
        self.nodes.len() - 1
    }

    /// Whether `a` is `b` or one of its ancestors; each step up is counted against `work`
    /// (the depth of a tree is the senders' to choose).
    fn is_ancestor(&self, a: usize, mut b: usize, work: &Work) -> Result<bool, OverBudget> {
        let mut steps = 0;
        loop {
            if a == b {
                return Ok(true);
            }
            work.charge(STEP_COST)?;
            match self.nodes[b].parent {
                Some(p) if steps <= self.nodes.len() => {
                    b = p;
                    steps += 1;
                }
                _ => return Ok(false),
            }
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    /// Takes `child` from its parent's children, counting their number against `work`.
    fn unlink(&mut self, child: usize, work: &Work) -> Result<(), OverBudget> {
        if let Some(parent) = self.nodes[child].parent.take() {
            work.charge(self.nodes[parent].children.len() as u64)?;
            self.nodes[parent].children.retain(|&c| c != child);
        }
        Ok(())
    }

    /// Sort key: the date and number of the message, or of a dummy's first child.
    fn key(&self, mut n: usize) -> (u64, u32) {
        loop {
            match self.nodes[n].message {
                Some(m) => return (self.messages[m].date, self.messages[m].number),
                None => match self.nodes[n].children.first() {
                    Some(&c) => n = c,
                    None => return (0, 0),
                },
            }
        }
    }

    fn sort_level(&self, level: &mut [usize]) {
        level.sort_by_key(|&n| self.key(n));
    }

    /// Sorts every level, children before parents (so a dummy sorts by its first child).
    fn sort_all(&mut self, roots: &mut [usize]) {
        let order = self.depth_first(roots);
        for &n in order.iter().rev() {
            let mut children = std::mem::take(&mut self.nodes[n].children);
            self.sort_level(&mut children);
            self.nodes[n].children = children;
        }
        self.sort_level(roots);
    }

    /// Every node under the roots, parents before children.
    fn depth_first(&self, roots: &[usize]) -> Vec<usize> {
        let mut order = Vec::new();
        let mut stack: Vec<usize> = roots.iter().rev().copied().collect();
        while let Some(n) = stack.pop() {
            order.push(n);
            stack.extend(self.nodes[n].children.iter().rev());
        }
        order
    }

    /// RFC 5256 §4 (3): dummies without children go; a dummy's children take its place,
    /// except at the root when it has more than one.
    fn prune(&mut self, roots: Vec<usize>) -> Vec<usize> {
        let order = self.depth_first(&roots);
        for &n in order.iter().rev() {
            let children = std::mem::take(&mut self.nodes[n].children);
            let mut kept = Vec::with_capacity(children.len());
            for c in children {
                if self.nodes[c].message.is_none() {
                    // Its own children were pruned already: they move up.
                    let grandchildren = std::mem::take(&mut self.nodes[c].children);
                    for &g in &grandchildren {
                        self.nodes[g].parent = Some(n);
                    }
                    kept.extend(grandchildren);
                } else {
                    kept.push(c);
                }
            }
            self.nodes[n].children = kept;
        }
        let mut out = Vec::with_capacity(roots.len());
        for r in roots {
            if self.nodes[r].message.is_some() || self.nodes[r].children.len() > 1 {
                out.push(r);
            } else if let Some(&only) = self.nodes[r].children.first() {
                self.nodes[only].parent = None;
                self.nodes[r].children.clear();
                out.push(only);
            }
        }
        out
    }

    /// The subject a root is grouped by: its message's, or its first child's.
    fn subject_of(&self, n: usize) -> Option<&str> {
        let m = self.nodes[n].message.or_else(|| {
            self.nodes[n]
                .children
                .first()
                .and_then(|&c| self.nodes[c].message)
        })?;
        Some(&self.messages[m].subject)
    }

    /// RFC 5256 §4 (5): roots with one base subject become one thread.
    fn group_by_subject(
        &mut self,
        roots: Vec<usize>,
        work: &Work,
    ) -> Result<Vec<usize>, OverBudget> {
        let mut table: HashMap<String, usize> = HashMap::new();
        for &r in &roots {
            let Some(subject) = self.subject_of(r) else {
                continue;
            };
            let base = base_subject(subject);
            if base.is_empty() {
                continue;
            }
            let replace = match table.get(&base) {
                None => true,
                Some(&held) => {
                    let held_dummy = self.nodes[held].message.is_none();
                    let this_dummy = self.nodes[r].message.is_none();
                    (this_dummy && !held_dummy)
                        || (self.is_reply_node(held) && !self.is_reply_node(r))
                }
            };
            if replace {
                table.insert(base, r);
            }
        }
        let mut out = Vec::with_capacity(roots.len());
        let mut merged_into: HashMap<usize, usize> = HashMap::new();
        for r in roots {
            let base = self.subject_of(r).map(base_subject).unwrap_or_default();
            let Some(&held) = table.get(&base).filter(|_| !base.is_empty()) else {
                out.push(r);
                continue;
            };
            let held = *merged_into.get(&held).unwrap_or(&held);
            if held == r {
                out.push(r);
                continue;
            }
            let (held_dummy, this_dummy) = (
                self.nodes[held].message.is_none(),
                self.nodes[r].message.is_none(),
            );
            if held_dummy && this_dummy {
                for c in std::mem::take(&mut self.nodes[r].children) {
                    self.nodes[c].parent = None;
                    self.link(held, c);
                }
            } else if held_dummy || (!self.is_reply_node(held) && self.is_reply_node(r)) {
                self.link(held, r);
            } else {
                // A new dummy holds both, in the table's place.
                self.nodes.push(Container {
                    message: None,
                    parent: None,
                    children: Vec::new(),
                });
                let dummy = self.nodes.len() - 1;
                self.link(dummy, held);
                self.link(dummy, r);
                merged_into.insert(held, dummy);
                work.charge(out.len() as u64)?;
                if let Some(slot) = out.iter_mut().find(|n| **n == held) {
                    *slot = dummy;
                }
                table.insert(base, dummy);
            }
        }
        Ok(out)
    }

    fn is_reply_node(&self, n: usize) -> bool {
        self.subject_of(n).is_some_and(is_reply)
    }

    /// `1 2 (3)(4 5)`: a chain while each node has one child, then the branches, each in
    /// parentheses (a dummy's own place shows nothing).
    fn render(&self, top: usize) -> String {
        enum Step {
            Node(usize),
            Text(&'static str),
        }
        let after_number = |out: &String| out.ends_with(|c: char| c.is_ascii_digit());
        let mut out = String::new();
        let mut stack = vec![Step::Node(top)];
        while let Some(step) = stack.pop() {
            let mut current = match step {
                Step::Text(text) => {
                    out.push_str(text);
                    continue;
                }
                Step::Node(n) => n,
            };
            loop {
                if let Some(m) = self.nodes[current].message {
                    if after_number(&out) {
                        out.push(' ');
                    }
                    out.push_str(&self.messages[m].number.to_string());
                }
                match self.nodes[current].children.as_slice() {
                    [] => break,
                    [only] => current = *only,
                    many => {
                        if after_number(&out) {
                            out.push(' ');
                        }
                        for &c in many.iter().rev() {
                            stack.push(Step::Text(")"));
                            stack.push(Step::Node(c));
                            stack.push(Step::Text("("));
                        }
                        break;
                    }
                }
            }
        }
        out
    }
}

/// The `<...>` message ids in a header value, in order.
pub fn message_ids(value: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let id = rest[open + 1..open + close].trim();
        if !id.is_empty() {
            ids.push(id.to_string());
        }
        rest = &rest[open + close + 1..];
    }
    ids
}

/// What threading needs of a message, read from its header.
pub fn read(message: &Message, number: u32, internal_date: u64) -> Threaded {
    let header = |name: &str| -> String {
        message
            .header(name)
            .first()
            .map(|h| h.raw.replace("\r\n", " "))
            .unwrap_or_default()
    };
    let mut references = message_ids(&header("References"));
    if references.len() > THREAD_REFERENCES {
        // The first (the thread's root) and the last ones (the nearest ancestors) matter.
        references.drain(1..references.len() - (THREAD_REFERENCES - 1));
    }
    if references.is_empty() {
        references.extend(message_ids(&header("In-Reply-To")).into_iter().take(1));
    }
    Threaded {
        number,
        message_id: message_ids(&header("Message-ID")).into_iter().next(),
        references,
        date: sent_time(message).unwrap_or(internal_date),
        // Only the start of a subject decides its base subject (see `sort`): no more is kept.
        subject: message
            .header("Subject")
            .first()
            .map(|h| h.decoded.chars().take(SORT_SUBJECT).collect())
            .unwrap_or_default(),
    }
}

/// The `* THREAD` reply's data for these messages (ascending by sequence number); the linking
/// is counted against `work`.
pub fn references(messages: &[Threaded], work: &Work) -> Result<String, OverBudget> {
    let mut forest = Forest {
        messages,
        nodes: Vec::with_capacity(messages.len() * 2),
    };
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (m, message) in messages.iter().enumerate() {
        // A missing or repeated Message-ID gets one of its own.
        let taken = |id: &String| {
            ids.get(id)
                .is_some_and(|&n| forest.nodes[n].message.is_some())
        };
        let id = match &message.message_id {
            Some(id) if !taken(id) => id.clone(),
            _ => format!("\0{m}"),
        };
        let own = forest.node(&mut ids, &id);
        forest.nodes[own].message = Some(m);
        let refs: Vec<usize> = message
            .references
            .iter()
            .map(|r| forest.node(&mut ids, r))
            .collect();
        for pair in refs.windows(2) {
            let (parent, child) = (pair[0], pair[1]);
            if forest.nodes[child].parent.is_none()
                && parent != child
                && !forest.is_ancestor(child, parent, work)?
            {
                forest.link(parent, child);
            }
        }
        forest.unlink(own, work)?;
        if let Some(&last) = refs.last() {
            if !forest.is_ancestor(own, last, work)? {
                forest.link(last, own);
            }
        }
    }
    let roots: Vec<usize> = (0..forest.nodes.len())
        .filter(|&n| forest.nodes[n].parent.is_none())
        .collect();
    let mut roots = forest.prune(roots);
    forest.sort_all(&mut roots);
    let mut roots = forest.group_by_subject(roots, work)?;
    forest.sort_all(&mut roots);
    Ok(roots
        .iter()
        .map(|&r| format!("({})", forest.render(r)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads(messages: &[Threaded]) -> String {
        references(messages, &Work::new(u64::MAX)).expect("fits")
    }

    fn message(number: u32, id: &str, refs: &[&str], date: u64, subject: &str) -> Threaded {
        Threaded {
            number,
            message_id: Some(id.to_string()),
            references: refs.iter().map(|r| r.to_string()).collect(),
            date,
            subject: subject.to_string(),
        }
    }

    #[test]
    fn message_ids_in_headers() {
        assert_eq!(message_ids(" <a@b>\t<c@d> x <e@f"), ["a@b", "c@d"]);
        assert!(message_ids("none").is_empty());
    }

    #[test]
    fn references_loops_and_subjects() {
        // imaptest's "thread": a loop between b and c is broken, c's old parent let go.
        let out = threads(&[
            message(1, "a", &[], 17, ""),
            message(2, "b", &["a", "c"], 15, ""),
            message(3, "c", &["b"], 16, ""),
        ]);
        assert_eq!(out, "(3 2)(1)");
        // Branches and chains.
        let out = threads(&[
            message(1, "a", &[], 1, "x"),
            message(2, "b", &["a"], 2, "re: x"),
            message(3, "c", &["a"], 3, "re: x"),
            message(4, "d", &["a", "b"], 4, "re: x"),
        ]);
        assert_eq!(out, "(1 (2 4)(3))");
        // Two roots with one subject under a dummy.
        let out = threads(&[
            message(1, "a", &[], 1, "same"),
            message(2, "b", &[], 2, "same"),
        ]);
        assert_eq!(out, "((1)(2))");
        // A long chain does not recurse.
        let chain: Vec<Threaded> = (0..5_000u32)
            .map(|i| {
                let refs: Vec<String> = if i == 0 {
                    vec![]
                } else {
                    vec![format!("m{}", i - 1)]
                };
                Threaded {
                    number: i + 1,
                    message_id: Some(format!("m{i}")),
                    references: refs,
                    date: u64::from(i),
                    subject: String::new(),
                }
            })
            .collect();
        assert!(threads(&chain).starts_with("(1 2 3 "));
    }

    #[test]
    fn long_reference_lists_are_capped_and_cheap() {
        let ids: String = (0..200_000).map(|i| format!("<r{i}@x> ")).collect();
        let raw = format!("Message-ID: <me@x>\r\nReferences: {ids}\r\n\r\nbody\r\n");
        let one = read(&Message::new(raw.into_bytes()), 1, 0);
        assert_eq!(one.references.len(), THREAD_REFERENCES);
        assert_eq!(one.references[0], "r0@x");
        assert_eq!(one.references[THREAD_REFERENCES - 1], "r199999@x");
        let work = Work::new(u64::MAX);
        assert_eq!(references(&[one], &work).expect("fits"), "(1)");
        assert!(work.spent() < 100_000, "spent {}", work.spent());
    }

    #[test]
    fn deep_threads_run_out_of_budget_instead_of_time() {
        // Every message refers to all before it: linking climbs the whole chain each time.
        let messages: Vec<Threaded> = (0..2_000u32)
            .map(|i| Threaded {
                number: i + 1,
                message_id: Some(format!("m{i}")),
                references: (i.saturating_sub(100)..i)
                    .map(|r| format!("m{r}"))
                    .collect(),
                date: u64::from(i),
                subject: String::new(),
            })
            .collect();
        assert!(references(&messages, &Work::new(10_000)).is_err());
        assert!(references(&messages, &Work::new(u64::MAX)).is_ok());
    }
}
