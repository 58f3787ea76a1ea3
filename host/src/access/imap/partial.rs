//! ESORT and PARTIAL (RFC 5267, RFC 9394): `SORT RETURN (...)` answered with ESEARCH, whose
//! numbers keep the sort order, and `RETURN (PARTIAL low:high)` for SEARCH and SORT, which
//! returns only the results at those positions (`-1:-10` counts from the end). Replies only:
//! the options are read by `extensions`.

/// A PARTIAL range of result positions, 1-based, `low <= high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// `-low:-high`: counted from the end of the result.
    pub from_end: bool,
    pub low: u32,
    pub high: u32,
}

impl Range {
    /// `4:2` is `2:4`; `-1:-5` the last five. `*`, a single number and zero are refused.
    pub fn parse(text: &str) -> Result<Range, String> {
        let bad = || format!("bad PARTIAL range {text}");
        let (a, b) = text.split_once(':').ok_or_else(bad)?;
        let side = |s: &str| -> Result<(bool, u32), String> {
            let (negative, digits) = match s.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, s),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let n: u32 = digits.parse().map_err(|_| bad())?;
            if n == 0 {
                return Err(bad());
            }
            Ok((negative, n))
        };
        let ((neg_a, a), (neg_b, b)) = (side(a)?, side(b)?);
        if neg_a != neg_b {
            return Err(bad());
        }
        Ok(Range {
            from_end: neg_a,
            low: a.min(b),
            high: a.max(b),
        })
    }

    /// As the reply names it.
    pub fn text(&self) -> String {
        match self.from_end {
            true => format!("-{}:-{}", self.low, self.high),
            false => format!("{}:{}", self.low, self.high),
        }
    }

    /// The results at these positions, in result order.
    pub fn pick<'a>(&self, results: &'a [u32]) -> &'a [u32] {
        let len = results.len();
        let (low, high) = (self.low as usize, self.high as usize);
        if low > len {
            return &[];
        }
        let high = high.min(len);
        match self.from_end {
            false => &results[low - 1..high],
            // -1 is the last; -low..-high are the positions len-high..=len-low (0-based).
            true => &results[len - high..=len - low],
        }
    }
}

/// Numbers as a sequence set that keeps their order: ascending runs become ranges (`5,3:4,2,1`).
pub fn ordered_set(numbers: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < numbers.len() {
        let start = numbers[i];
        let mut end = start;
        while numbers
            .get(i + 1)
            .is_some_and(|&n| end.checked_add(1) == Some(n))
        {
            end += 1;
            i += 1;
        }
        out.push(match start == end {
            true => start.to_string(),
            false => format!("{start}:{end}"),
        });
        i += 1;
    }
    out.join(",")
}

/// ` PARTIAL (range set)`, or `NIL` for no result at those positions.
pub fn partial_item(range: &Range, results: &[u32]) -> String {
    let picked = range.pick(results);
    let set = match picked.is_empty() {
        true => "NIL".to_string(),
        false => ordered_set(picked),
    };
    format!(" PARTIAL ({} {set})", range.text())
}

/// `* ESEARCH (TAG "t") [UID] [MIN n] [MAX n] [ALL set] [COUNT n] [PARTIAL (...)]` for a SORT
/// (RFC 5267 §3): `ordered` in sort order, MIN and MAX its first and last, ALL in that order.
/// A RETURN option of SEARCH, SORT and THREAD (RFC 4731, RFC 5267).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnOption {
    Min,
    Max,
    All,
    Count,
    /// RFC 5182 SEARCHRES: keep the result for `$`.
    Save,
    /// RFC 5267 / RFC 9394: only the results at these positions.
    Partial(Range),
    /// RFC 5267 CONTEXT: a hint that more of the same search may follow (taken, not needed).
    Context,
    /// RFC 5267 UPDATE: report later changes to the result (ADDTO / REMOVEFROM).
    Update,
}

pub fn esort(tag: &str, uid: bool, options: &[ReturnOption], ordered: &[u32]) -> String {
    let mut line = format!("* ESEARCH (TAG \"{tag}\")");
    if uid {
        line.push_str(" UID");
    }
    let wants =
        |o: ReturnOption| (options.is_empty() && o == ReturnOption::All) || options.contains(&o);
    if let (Some(first), Some(last)) = (ordered.first(), ordered.last()) {
        if wants(ReturnOption::Min) {
            line.push_str(&format!(" MIN {first}"));
        }
        if wants(ReturnOption::Max) {
            line.push_str(&format!(" MAX {last}"));
        }
        if wants(ReturnOption::All) {
            line.push_str(&format!(" ALL {}", ordered_set(ordered)));
        }
    }
    if wants(ReturnOption::Count) {
        line.push_str(&format!(" COUNT {}", ordered.len()));
    }
    for option in options {
        if let ReturnOption::Partial(range) = option {
            line.push_str(&partial_item(range, ordered));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_and_normalised() {
        let r = Range::parse("4:2").expect("ok");
        assert_eq!((r.from_end, r.low, r.high), (false, 2, 4));
        assert_eq!(r.text(), "2:4");
        assert_eq!(Range::parse("-1:-5").expect("ok").text(), "-1:-5");
        assert_eq!(Range::parse("-5:-1").expect("ok").text(), "-1:-5");
        for bad in [
            "1",
            "1:*",
            "*:1",
            "0:3",
            "-1:3",
            "1:",
            ":2",
            "a:b",
            "1:99999999999",
        ] {
            assert!(Range::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn positions_are_picked_from_either_end_within_the_result() {
        let results = [1, 2, 4, 5];
        let pick = |t: &str| Range::parse(t).expect("ok").pick(&results).to_vec();
        assert_eq!(pick("1:3"), [1, 2, 4]);
        assert_eq!(pick("2:10"), [2, 4, 5]);
        assert_eq!(pick("5:10"), Vec::<u32>::new());
        assert_eq!(pick("-1:-1"), [5]);
        assert_eq!(pick("-2:-10"), [1, 2, 4]);
        assert_eq!(pick("-5:-6"), Vec::<u32>::new());
        let huge = Range::parse("4294967295:4294967295").expect("ok");
        assert!(huge.pick(&results).is_empty());
    }

    #[test]
    fn sets_keep_the_sort_order() {
        assert_eq!(ordered_set(&[5, 3, 4, 2, 1]), "5,3:4,2,1");
        assert_eq!(ordered_set(&[1, 2, 3, 7]), "1:3,7");
        assert_eq!(ordered_set(&[u32::MAX, 1]), "4294967295,1");
        assert_eq!(ordered_set(&[]), "");
    }

    #[test]
    fn esort_replies_follow_the_sort_order() {
        let ordered = [5, 3, 4, 2, 1];
        assert_eq!(
            esort(
                "t",
                false,
                &[ReturnOption::Min, ReturnOption::Max],
                &ordered
            ),
            "* ESEARCH (TAG \"t\") MIN 5 MAX 1"
        );
        assert_eq!(
            esort("t", true, &[], &ordered),
            "* ESEARCH (TAG \"t\") UID ALL 5,3:4,2,1"
        );
        let partial = ReturnOption::Partial(Range::parse("2:4").expect("ok"));
        assert_eq!(
            esort("t", false, &[partial, ReturnOption::Count], &ordered),
            "* ESEARCH (TAG \"t\") COUNT 5 PARTIAL (2:4 3:4,2)"
        );
        assert_eq!(
            esort("t", false, &[ReturnOption::Min], &[]),
            "* ESEARCH (TAG \"t\")"
        );
    }
}
