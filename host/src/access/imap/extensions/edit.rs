//! The command rewritten: byte ranges of it replaced, the rest kept byte for byte.

use super::lexer::Token;

/// The command with byte ranges replaced.
pub(super) struct Edit<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) cuts: Vec<(usize, usize, Vec<u8>)>,
    /// Bytes of text the rewrites expanded into so far (MODSEQ keys), against
    /// [`budget::EXPANSION`](super::super::budget::EXPANSION).
    pub(super) expanded: usize,
}

impl Edit<'_> {
    /// Replaces tokens `from..=to`; a removal takes a space beside them along.
    pub(super) fn replace(&mut self, tokens: &[Token], from: usize, to: usize, with: &str) {
        let (mut start, mut end) = (tokens[from].start, tokens[to].end);
        if with.is_empty() {
            if start > 0 && self.bytes[start - 1] == b' ' {
                start -= 1;
            } else if self.bytes.get(end) == Some(&b' ') {
                end += 1;
            }
        }
        self.cuts.push((start, end, with.as_bytes().to_vec()));
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        self.cuts.sort_by_key(|c| c.0);
        let mut out = Vec::with_capacity(self.bytes.len());
        let mut at = 0;
        for (start, end, with) in self.cuts {
            out.extend_from_slice(&self.bytes[at..start]);
            out.extend(with);
            at = end;
        }
        out.extend_from_slice(&self.bytes[at..]);
        out
    }
}
