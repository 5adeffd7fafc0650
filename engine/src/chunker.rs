//! Content-defined chunking with FastCDC (the 2020 algorithm of the
//! `fastcdc` crate, normalization level 1, unseeded gear table). Cut points
//! depend only on content and the repository's [`ChunkerParams`], so the
//! same bytes chunk identically on every host and in every arc version
//! reading a v1 repository.
//!
//! [`StreamChunker`] reads any `Read` in large blocks and yields chunks that
//! are identical to chunking the whole input as one slice: a cut is only
//! searched once `max_size` bytes are buffered or the input has ended.

use std::io::{ErrorKind, Read};

use fastcdc::v2020;

use std::sync::Arc;

use crate::format::config::ChunkerParams;

/// fastcdc's gear table and its left-shifted twin.
type GearTables = (Box<[u64; 256]>, Box<[u64; 256]>);

#[derive(Clone)]
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    /// The gear table and its left-shifted twin: fastcdc's own, XORed with
    /// the repository's secret seed in format v2 (seed 0 in v1 leaves them
    /// unchanged), so chunk boundaries depend on the key.
    gear: Arc<GearTables>,
}

impl Chunker {
    /// A chunker with fastcdc's unseeded gear table (format v1).
    pub fn new(p: &ChunkerParams) -> Chunker {
        Self::with_seed(p, 0)
    }

    /// A chunker whose gear table is XORed with `seed` (fastcdc's
    /// `get_gear_with_seed`, the crate's supported way to key it).
    pub fn with_seed(p: &ChunkerParams, seed: u64) -> Chunker {
        // Same mask derivation as fastcdc's `FastCDC::new` (level 1).
        let bits = v2020::logarithm2(p.avg_size);
        Chunker {
            min: p.min_size as usize,
            avg: p.avg_size as usize,
            max: p.max_size as usize,
            mask_s: v2020::MASKS[(bits + 1) as usize],
            mask_l: v2020::MASKS[(bits - 1) as usize],
            gear: Arc::new(v2020::get_gear_with_seed(seed)),
        }
    }

    pub fn max_size(&self) -> usize {
        self.max
    }

    pub fn min_size(&self) -> usize {
        self.min
    }

    /// Length of the next chunk at the start of `data`, which must hold
    /// either at least `max_size` bytes or the rest of the input.
    pub fn next_cut(&self, data: &[u8]) -> usize {
        if data.len() <= self.min {
            return data.len();
        }
        let (_, len) = v2020::cut_gear(
            data,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear.0,
            &self.gear.1,
        );
        len
    }

    /// Chunk boundaries of a complete in-memory input, as lengths.
    pub fn cut_all(&self, data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let n = self.next_cut(&data[pos..]);
            out.push(n);
            pos += n;
        }
        out
    }
}

/// Chunks a reader with a buffer of a few `max_size`s, independent of the
/// input's length.
pub struct StreamChunker<R> {
    chunker: Chunker,
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Bytes consumed from the reader so far.
    pub bytes_read: u64,
}

impl<R: Read> StreamChunker<R> {
    pub fn new(chunker: Chunker, reader: R) -> Self {
        // A refill first moves the unconsumed tail (up to `max` bytes) to
        // the front: with a buffer of 2*max, a stream's 1 MiB chunks moved
        // ~0.8 bytes for every byte read. At least 4 MiB keeps that under
        // a third for streams.
        let cap = (chunker.max * 2).max(4 << 20);
        Self::with_buffer(chunker, reader, cap)
    }

    /// Like [`new`](Self::new) with a buffer of `spare` bytes beyond the
    /// `max` a cut needs: less memory for more of the moves that `new`'s
    /// comment describes.
    pub fn with_spare(chunker: Chunker, reader: R, spare: usize) -> Self {
        let cap = chunker.max + spare.max(1);
        Self::with_buffer(chunker, reader, cap)
    }

    fn with_buffer(chunker: Chunker, reader: R, cap: usize) -> Self {
        StreamChunker { chunker, reader, buf: vec![0u8; cap], start: 0, end: 0, eof: false, bytes_read: 0 }
    }

    fn fill(&mut self) -> std::io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.end += n;
                    self.bytes_read += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk, borrowed from the internal buffer until the next call.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<&[u8]>> {
        let Some((_, n)) = self.peek()? else { return Ok(None) };
        let chunk = &self.buf[self.start..self.start + n];
        self.start += n;
        Ok(Some(chunk))
    }

    /// The bytes a next chunk may span (at most `max_size`, fewer only at
    /// the end of the input) and the length of the content-defined chunk
    /// at their start, without consuming them: a caller that cuts
    /// elsewhere (stream chunks guided by the parent's cuts, stream_delta.rs)
    /// then [`consume`](Self::consume)s what it took.
    pub fn peek(&mut self) -> std::io::Result<Option<(&[u8], usize)>> {
        if self.end - self.start < self.chunker.max && !self.eof {
            self.fill()?;
        }
        if self.start == self.end {
            return Ok(None);
        }
        let window = &self.buf[self.start..self.end.min(self.start + self.chunker.max)];
        let n = self.chunker.next_cut(window);
        Ok(Some((window, n)))
    }

    /// Takes the first `n` bytes of what [`peek`](Self::peek) showed.
    pub fn consume(&mut self, n: usize) {
        assert!(
            n > 0 && n <= (self.end - self.start).min(self.chunker.max),
            "a chunk of {n} bytes is not within the peeked window"
        );
        self.start += n;
    }

    pub fn into_reader(self) -> R {
        self.reader
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::pseudo_random;

    /// Reader that returns at most 7000 bytes per call, to exercise refills.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = out.len().min(self.0.len()).min(7000);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn seeded_chunker_matches_fastcdc_with_seed_and_moves_boundaries() {
        let params = ChunkerParams::new(4096, 16384, 65536).unwrap();
        let data = pseudo_random(1_000_000, 7);
        let seed = 0x0123_4567_89ab_cdef;
        let seeded = Chunker::with_seed(&params, seed).cut_all(&data);
        let expected: Vec<usize> =
            v2020::FastCDC::with_level_and_seed(&data, 4096, 16384, 65536, v2020::Normalization::Level1, seed)
                .map(|c| c.length)
                .collect();
        assert_eq!(seeded, expected);
        assert_ne!(seeded, Chunker::new(&params).cut_all(&data), "the seed changes the boundaries");
    }

    #[test]
    fn stream_matches_slice_and_fastcdc() {
        let params = ChunkerParams::new(4096, 16384, 65536).unwrap();
        let c = Chunker::new(&params);
        let data = pseudo_random(1_000_000, 42);
        let expected: Vec<usize> = v2020::FastCDC::new(&data, 4096, 16384, 65536).map(|c| c.length).collect();
        assert_eq!(c.cut_all(&data), expected);
        let mut s = StreamChunker::new(c.clone(), Trickle(&data));
        let mut got = Vec::new();
        while let Some(ch) = s.next_chunk().unwrap() {
            got.push(ch.len());
        }
        assert_eq!(got, expected);
        assert_eq!(s.bytes_read, data.len() as u64);
        // peek shows at most max bytes and the same cut; consume moves on
        // by what the caller took (here: every content cut but halved).
        let mut s = StreamChunker::new(c.clone(), Trickle(&data));
        let (mut pos, mut got) = (0, Vec::new());
        while let Some((window, n)) = s.peek().unwrap() {
            assert!(window.len() <= 65536 && n <= window.len());
            assert_eq!(window, &data[pos..(pos + 65536).min(data.len())]);
            assert_eq!(n, c.next_cut(window));
            let take = (n / 2).max(1);
            got.push(take);
            pos += take;
            s.consume(take);
        }
        assert_eq!(got.iter().sum::<usize>(), data.len());
    }

    #[test]
    fn edge_cases() {
        let params = ChunkerParams::new(4096, 16384, 65536).unwrap();
        let c = Chunker::new(&params);
        assert!(c.cut_all(&[]).is_empty());
        assert_eq!(c.cut_all(&[1u8; 100]), vec![100]);
        assert_eq!(c.cut_all(&[7u8; 4096]), vec![4096]);
        // All-zero input never finds a cut: every chunk is max-sized.
        let zeros = vec![0u8; 65536 * 3 + 10];
        assert_eq!(c.cut_all(&zeros), vec![65536, 65536, 65536, 10]);
    }
}
