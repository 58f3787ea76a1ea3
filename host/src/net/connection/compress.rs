//! IMAP COMPRESS=DEFLATE (RFC 4978): raw DEFLATE both ways, inflated in bounded steps.

use super::Connection;

/// Raw DEFLATE both ways (RFC 4978). Input inflates at most [`Deflate::STEP`] bytes per read,
/// the rest kept compressed: a small message that inflates a thousandfold cannot fill memory
/// faster than the session consumes it.
pub(super) struct Deflate {
    compress: flate2::Compress,
    decompress: flate2::Decompress,
    /// Received bytes not inflated yet.
    pub(super) pending: Vec<u8>,
    /// Where each round of inflating writes, made once: a fresh buffer of the whole step
    /// for every small read was most of the cost of a compressed command.
    scratch: Box<[u8]>,
    /// The last round filled the scratch: the inflater may still hold output of input it
    /// has already taken, to be asked for before waiting on the client.
    holding: bool,
}

impl Deflate {
    const STEP: usize = 256 * 1024;
    const SCRATCH: usize = 16 * 1024;

    fn new() -> Deflate {
        Deflate {
            compress: flate2::Compress::new(flate2::Compression::default(), false),
            decompress: flate2::Decompress::new(false),
            pending: Vec::new(),
            scratch: vec![0; Deflate::SCRATCH].into_boxed_slice(),
            holding: false,
        }
    }

    /// Compresses `plain` with a sync flush (the client can read every reply at once).
    pub(super) fn deflate(&mut self, plain: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plain.len() / 2 + 64);
        let mut at = 0;
        loop {
            out.reserve(plain.len().saturating_sub(at) / 2 + 1024);
            let before = self.compress.total_in();
            self.compress
                .compress_vec(&plain[at..], &mut out, flate2::FlushCompress::Sync)
                .map_err(std::io::Error::other)?;
            at += (self.compress.total_in() - before) as usize;
            // Done when all input is taken and the flush did not fill the buffer.
            if at >= plain.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Inflates what is pending, up to STEP bytes, into `input`. An error for a corrupt stream.
    pub(super) fn inflate(&mut self, input: &mut Vec<u8>) -> std::io::Result<()> {
        let (mut taken, mut produced) = (0, 0);
        while produced < Deflate::STEP && (taken < self.pending.len() || self.holding) {
            let (before_in, before_out) = (self.decompress.total_in(), self.decompress.total_out());
            self.decompress
                .decompress(
                    &self.pending[taken..],
                    &mut self.scratch,
                    flate2::FlushDecompress::None,
                )
                .map_err(std::io::Error::other)?;
            let used = (self.decompress.total_in() - before_in) as usize;
            let made = (self.decompress.total_out() - before_out) as usize;
            input.extend_from_slice(&self.scratch[..made]);
            taken += used;
            produced += made;
            self.holding = made == self.scratch.len();
            if used == 0 && made == 0 {
                break;
            }
        }
        self.pending.drain(..taken);
        Ok(())
    }

    /// Whether inflating may give more input without reading from the client.
    pub(super) fn has_input(&self) -> bool {
        !self.pending.is_empty() || self.holding
    }
}

impl Connection {
    /// Whether COMPRESS=DEFLATE is on.
    pub fn compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// Starts COMPRESS=DEFLATE once the tagged OK is queued: that reply goes out as it is,
    /// everything after it compressed; what the client sends after its command is inflated,
    /// starting with `received` (bytes that followed the command, already taken from this
    /// connection) and anything still buffered here.
    pub async fn start_deflate(&mut self, received: Vec<u8>) -> std::io::Result<()> {
        self.flush().await?;
        let mut deflate = Box::new(Deflate::new());
        deflate.pending = received;
        deflate.pending.append(&mut self.input);
        self.deflate = Some(deflate);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a client compressed comes out, in steps of at most STEP, including output
    /// the inflater still holds after the last compressed byte was taken.
    #[test]
    fn inflating_gives_every_byte_in_bounded_steps() {
        let plain = b"n NOOP\r\n".repeat(300_000);
        let mut packer = flate2::Compress::new(flate2::Compression::default(), false);
        let mut packed = Vec::with_capacity(plain.len());
        packer
            .compress_vec(&plain, &mut packed, flate2::FlushCompress::Sync)
            .expect("compress");
        assert!(
            packed.len() < Deflate::SCRATCH,
            "one small chunk: {}",
            packed.len()
        );
        let mut deflate = Deflate::new();
        deflate.pending = packed;
        let mut input = Vec::new();
        let mut rounds = 0;
        while deflate.has_input() {
            let before = input.len();
            deflate.inflate(&mut input).expect("inflate");
            assert!(input.len() - before <= Deflate::STEP + Deflate::SCRATCH);
            rounds += 1;
            assert!(rounds < 100, "no progress");
        }
        assert_eq!(input.len(), plain.len());
        assert!(input == plain);
        assert!(rounds > 1, "{rounds}");
    }
}
