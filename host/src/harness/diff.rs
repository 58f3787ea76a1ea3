//! A small line diff for `mailgate check --diff`: what the chain changed in the message.

/// Lines only in `before` start with `-`, lines only in `after` with `+`. The unchanged head
/// and tail are left out but for one line of context; unchanged lines between changes stay.
pub fn unified(before: &[u8], after: &[u8]) -> String {
    let a: Vec<&[u8]> = lines(before);
    let b: Vec<&[u8]> = lines(after);
    if a == b {
        return "  (unchanged)\n".into();
    }
    // Trim the common head and tail, then run an LCS over what is left (bounded in size).
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (mid_a, mid_b) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut ops: Vec<(char, &[u8])> = Vec::new();
    if head > 0 {
        ops.push((' ', a[head - 1]));
    }
    if mid_a.len() * mid_b.len() <= 4_000_000 {
        lcs_ops(mid_a, mid_b, &mut ops);
    } else {
        ops.extend(mid_a.iter().map(|l| ('-', *l)));
        ops.extend(mid_b.iter().map(|l| ('+', *l)));
    }
    if tail > 0 {
        ops.push((' ', a[a.len() - tail]));
    }
    let mut out = String::new();
    for (op, line) in ops {
        out.push(op);
        out.push(' ');
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out
}

fn lines(raw: &[u8]) -> Vec<&[u8]> {
    raw.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect()
}

fn lcs_ops<'a>(a: &[&'a [u8]], b: &[&'a [u8]], ops: &mut Vec<(char, &'a [u8])>) {
    let (n, m) = (a.len(), b.len());
    let mut table = vec![0u32; (n + 1) * (m + 1)];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            table[i * (m + 1) + j] = if a[i] == b[j] {
                table[(i + 1) * (m + 1) + j + 1] + 1
            } else {
                table[(i + 1) * (m + 1) + j].max(table[i * (m + 1) + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || table[i * (m + 1) + j + 1] >= table[(i + 1) * (m + 1) + j]) {
            ops.push(('+', b[j]));
            j += 1;
        } else {
            ops.push(('-', a[i]));
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_added_and_removed_lines() {
        let d = unified(
            b"A: 1\r\nB: 2\r\n\r\nbody\r\n",
            b"X: 0\r\nA: 1\r\n\r\nbody\r\n",
        );
        assert!(d.contains("+ X: 0"), "{d}");
        assert!(d.contains("- B: 2"), "{d}");
        assert!(!d.contains("body"), "{d}");
    }
}
