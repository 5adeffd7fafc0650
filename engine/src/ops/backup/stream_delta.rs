//! Pairing a stream's new chunks with the chunks of the same stream in the
//! parent snapshot, so that the packer can store each as a zstd delta
//! against its counterpart (format-spec/v2/streams.md section 4.2).
//!
//! A dump changes a few rows here and there: most of today's chunks start
//! and end where yesterday's did (content-defined cuts resynchronise right
//! after a change) but hold a changed row, so they dedup nowhere. Chunks
//! the parent's stream also has are anchors; every other new chunk is
//! paired with the parent chunk that covers the same place of the stream,
//! measured from the last anchor (the parent chunk holding the new chunk's
//! middle, shifted by how much the stream grew or shrank before that
//! anchor). Pairing by position rather than by count keeps one inserted cut
//! from shifting every later pair.
//!
//! Between anchors the shift is kept up to date by landmarks: places in
//! the new chunk and in its counterpart chosen by their content (about one
//! in 512 bytes; only hashed, never stored), and the last one they share
//! tells where the streams agree. Without that, a dump whose updated rows
//! move to its end (PostgreSQL's non-HOT updates) drifts by every removed
//! row, and after a few dozen chunks every pair is off by half a chunk.
//!
//! Deltas are one step deep: a parent chunk that is itself a delta is
//! replaced by its own (plain) base. Memory: one record per chunk of the
//! parent's stream (~80 bytes; 32 MB for a 100 GB dump) and one base chunk.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::pack::FrameCodec;
use crate::id::Id;
use crate::index::IndexReader;
use crate::repo::Repository;

struct ParentChunk {
    id: Id,
    start: u64,
    len: u64,
}

pub(super) struct Pairing {
    parent: Vec<ParentChunk>,
    /// Position(s) of each parent chunk id in `parent`.
    positions: HashMap<Id, Vec<u32>>,
    /// Parent offset minus new offset, as of the last anchor's end.
    shift: i64,
    /// The base last read, reused while consecutive chunks pair with it.
    last_base: Option<(Id, Arc<[u8]>)>,
    /// The parent chunk last read (its plaintext), for its landmarks: the
    /// cut and the pairing of one new chunk both need it.
    last_parent: Option<(Id, Arc<[u8]>)>,
    /// The landmarks of the parent chunk last used: piece hash -> offset in
    /// that chunk (pieces seen twice are left out: they locate nothing).
    landmarks: Option<(Id, HashMap<u64, u32>)>,
    /// The landmarks [`cut`](Self::cut) found in the new bytes last: where
    /// they start in the stream, how many bytes it scanned, and the
    /// landmarks. [`follow`](Self::follow) needs those of the chunk the
    /// cut made, which start at the same place and are their prefix.
    scanned: Option<Scanned>,
}

/// Landmarks found in new bytes: where the bytes start in the stream, how
/// many were scanned, and each landmark's offset and name.
type Scanned = (u64, usize, Vec<(u32, u64)>);

/// Landmarks: places chosen by the 16 bytes before them (a rolling hash
/// over a fixed window, so the same content gives the same places however
/// far it moved), at least `LANDMARK_GAP` bytes apart, about one in 512
/// bytes; each named by a hash of the `LANDMARK_LEN` bytes around it
/// (around, not after: in a row of padding the bytes after a landmark are
/// often all padding, and would name every landmark alike).
/// Content-defined chunking (FastCDC) is not usable here: its hash spans
/// 64 bytes, and rows that are mostly padding (pgbench's accounts) leave it
/// constant, so it cuts only at its maximum size, wherever that falls. No
/// crate offers a fixed-window rolling hash of this kind; it is ten lines.
const WINDOW: usize = 16;
const LANDMARK_GAP: usize = 128;
const LANDMARK_LEN: usize = 128;

fn rolling_table() -> &'static [u64; 256] {
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        // splitmix64: fixed pseudo-random values, one per byte.
        let mut x: u64 = 0x5EED_0FA2_C1A4_D00D;
        std::array::from_fn(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    })
}

/// (offset, name) of each landmark of `data`.
fn landmarks(data: &[u8]) -> Vec<(u32, u64)> {
    let t = rolling_table();
    let mut out = Vec::with_capacity(data.len() / 512 + 1);
    let mut h: u64 = 0;
    let mut next = WINDOW;
    for i in 0..data.len() {
        // Buzhash: the window's hash, its oldest byte rotated out.
        h = h.rotate_left(1) ^ t[data[i] as usize];
        if i >= WINDOW {
            h ^= t[data[i - WINDOW] as usize].rotate_left(WINDOW as u32);
        }
        let at = i + 1;
        if at >= next && h & 0x1FF == 0 && at >= LANDMARK_LEN / 2 && at + LANDMARK_LEN / 2 <= data.len() {
            let name = blake3::hash(&data[at - LANDMARK_LEN / 2..at + LANDMARK_LEN / 2]);
            out.push((at as u32, u64::from_le_bytes(name.as_bytes()[..8].try_into().expect("8 bytes"))));
            next = at + LANDMARK_GAP;
        }
    }
    out
}

/// The landmarks of the first `len` bytes of a slice, given `found`, those
/// of the whole slice: the same, up to the last one whose piece ends within
/// `len`. Landmarks are placed scanning from the slice's start, and a
/// landmark is only skipped (moving no later one) where its piece would
/// run past the end, so the longer scan agrees with the shorter one on
/// every landmark the shorter one can have.
fn chunk_landmarks(mut found: Vec<(u32, u64)>, len: usize) -> Vec<(u32, u64)> {
    found.retain(|&(at, _)| at as usize + LANDMARK_LEN / 2 <= len);
    found
}

impl Pairing {
    /// The pairing for the stream at `components` given the parent
    /// snapshot's root tree, or `None` when deltas cannot be written or the
    /// parent has no such stream. A parent that cannot be read only costs
    /// the deltas, never the backup.
    pub(super) fn load(repo: &Repository, parent_root: Option<Id>, components: &[Vec<u8>]) -> Option<Pairing> {
        if !repo.writes_stream_deltas() {
            return None;
        }
        let mut tree = parent_root?;
        let (last, dirs) = components.split_last()?;
        for c in dirs {
            tree = repo.lookup_name(&tree, c).ok()??.subtree?;
        }
        let node = repo.lookup_name(&tree, last).ok()??;
        if !node.kind.has_chunks() || node.chunks.is_empty() {
            return None;
        }
        let index = repo.index().ok()?.reader().ok()?;
        let mut parent = Vec::with_capacity(node.chunks.len());
        let mut positions: HashMap<Id, Vec<u32>> = HashMap::with_capacity(node.chunks.len());
        let mut start = 0;
        for (i, id) in node.chunks.iter().enumerate() {
            let len = u64::from(index.lookup(id).ok()??.raw_len);
            positions.entry(*id).or_default().push(i as u32);
            parent.push(ParentChunk { id: *id, start, len });
            start += len;
        }
        Some(Pairing {
            parent,
            positions,
            shift: 0,
            last_base: None,
            last_parent: None,
            landmarks: None,
            scanned: None,
        })
    }

    /// Records a chunk at `[start, start + len)` of the new stream whose id
    /// the parent's stream has: the streams agree there.
    pub(super) fn anchor(&mut self, id: &Id, start: u64, len: u64) -> bool {
        let Some(at) = self.positions.get(id) else { return false };
        // Of repeated chunks, the occurrence nearest where we expect it.
        let expected = start as i64 + self.shift;
        let Some(p) = at.iter().map(|&p| &self.parent[p as usize]).min_by_key(|p| (p.start as i64 - expected).abs())
        else {
            return false;
        };
        self.shift = (p.start + p.len) as i64 - (start + len) as i64;
        true
    }

    /// The parent chunk covering the middle of a new chunk at
    /// `[start, start + len)`, if the parent's stream reaches that far.
    fn counterpart(&self, start: u64, len: u64) -> Option<usize> {
        let mid = u64::try_from((start + len / 2) as i64 + self.shift).ok()?;
        let i = self.parent.partition_point(|p| p.start + p.len <= mid);
        (i < self.parent.len()).then_some(i)
    }

    /// Where the new chunk starting at `start` ends (streams.md §4.2,
    /// "Cuts"). `window` holds the bytes it may span (at most the stream
    /// chunker's maximum) and `content` is FastCDC's cut in it. A content
    /// cut that gives a chunk of the parent's stream is taken: there the
    /// streams agree and cut alike. Otherwise the chunk ends where the
    /// parent's next cut (at least `floor` bytes on) lies in the new
    /// bytes, found by the last landmark the window shares with the parent
    /// chunk that ends there: a changed row that killed one of the parent's
    /// cuts, or a stream drifting against its parent under chunks cut at
    /// the maximum (rows of padding leave FastCDC constant), would else
    /// give a chunk spanning two parent chunks, of which a delta can use
    /// only one. Returns the length and, when it computed it, the chunk's id.
    pub(super) fn cut(
        &mut self,
        repo: &Repository,
        window: &[u8],
        start: u64,
        content: usize,
        floor: usize,
    ) -> Result<(usize, Option<Id>)> {
        let id = repo.blob_id(&window[..content]);
        if self.positions.contains_key(&id) {
            return Ok((content, Some(id)));
        }
        let Some((at, scan)) = self.next_parent_cut(window.len(), start, floor) else { return Ok((content, Some(id))) };
        let Some(bytes) = self.parent_bytes(repo, at)? else { return Ok((content, Some(id))) };
        Ok(match self.place_cut(window, scan, start, at, &bytes, floor) {
            Some(n) if n != content => (n, None),
            _ => (content, Some(id)),
        })
    }

    /// The parent chunk whose end is the next parent cut at least `floor`
    /// bytes past a new chunk's `start`, and how much of a window of
    /// `window` bytes to search for it (its estimated place plus an eighth
    /// for drift), or `None` when the parent has no such cut near.
    fn next_parent_cut(&self, window: usize, start: u64, floor: usize) -> Option<(usize, usize)> {
        let from = start as i64 + self.shift + floor as i64;
        let at = self.parent.partition_point(|p| ((p.start + p.len) as i64) <= from);
        let p = self.parent.get(at)?;
        let estimate = (p.start + p.len) as i64 - self.shift - start as i64;
        let slack = (estimate / 8).max(4096);
        if estimate - slack > window as i64 {
            return None;
        }
        Some((at, window.min((estimate + slack) as usize)))
    }

    /// The length that ends a new chunk at `start` where parent chunk `at`
    /// (bytes `parent`) ends, located by the last landmark the first `scan`
    /// bytes of `window` share with it, if that lies between `floor` and
    /// `window.len()` bytes on. Moves the shift to that landmark.
    fn place_cut(
        &mut self,
        window: &[u8],
        scan: usize,
        start: u64,
        at: usize,
        parent: &[u8],
        floor: usize,
    ) -> Option<usize> {
        let p_start = self.parent[at].start;
        let p_len = self.parent[at].len;
        let found = landmarks(&window[..scan]);
        let map = self.landmark_map(at, parent);
        let shared = found.iter().rev().find_map(|&(off, h)| map.get(&h).map(|&p| (off, p)));
        self.scanned = Some((start, scan, found));
        let (n_off, p_off) = shared?;
        let after = usize::try_from(p_len.checked_sub(u64::from(p_off))?).ok()?;
        let n = settle(window, n_off as usize + after, parent, after);
        if n < floor || n > window.len() {
            return None;
        }
        self.shift = (p_start + u64::from(p_off)) as i64 - (start + u64::from(n_off)) as i64;
        Some(n)
    }

    /// The landmarks of parent chunk `at`, whose bytes are `parent`.
    fn landmark_map(&mut self, at: usize, parent: &[u8]) -> &HashMap<u64, u32> {
        let id = self.parent[at].id;
        if self.landmarks.as_ref().is_none_or(|(l, _)| *l != id) {
            let mut map: HashMap<u64, u32> = HashMap::new();
            let mut repeated = Vec::new();
            for (off, h) in landmarks(parent) {
                if map.insert(h, off).is_some() {
                    repeated.push(h);
                }
            }
            for h in repeated {
                map.remove(&h);
            }
            self.landmarks = Some((id, map));
        }
        &self.landmarks.as_ref().expect("set above").1
    }

    /// The plaintext of parent chunk `at` (a delta decoded), or `None`
    /// when it cannot be read.
    fn parent_bytes(&mut self, repo: &Repository, at: usize) -> Result<Option<Arc<[u8]>>> {
        let id = self.parent[at].id;
        if let Some((l, bytes)) = &self.last_parent {
            if *l == id {
                return Ok(Some(bytes.clone()));
            }
        }
        let bytes = readable(repo.read_blob(&id))?;
        if let Some(b) = &bytes {
            self.last_parent = Some((id, b.clone()));
        }
        Ok(bytes)
    }

    /// Updates the shift from the last landmark piece that the new chunk
    /// `chunk` at `start` shares with the parent chunk `at`, whose bytes
    /// are `parent`.
    fn align(&mut self, chunk: &[u8], start: u64, at: usize, parent: &[u8]) {
        let p_start = self.parent[at].start;
        let found = match self.scanned.take() {
            Some((from, scan, found)) if from == start && scan >= chunk.len() => chunk_landmarks(found, chunk.len()),
            _ => landmarks(chunk),
        };
        let map = self.landmark_map(at, parent);
        if let Some((n_off, p_off)) = found.into_iter().rev().find_map(|(off, h)| map.get(&h).map(|&p| (off, p))) {
            self.shift = (p_start + u64::from(p_off)) as i64 - (start + u64::from(n_off)) as i64;
        }
    }

    /// Pairs a new chunk at `[start, start + chunk.len())` that is no
    /// anchor with its counterpart and moves the shift on by their shared
    /// landmarks; returns the counterpart. Done for every such chunk,
    /// stored or deduplicated, so that the next cut depends on the data
    /// and the parent only, never on what else the repository holds.
    pub(super) fn follow(&mut self, repo: &Repository, chunk: &[u8], start: u64) -> Result<Option<usize>> {
        let Some(at) = self.counterpart(start, chunk.len() as u64) else { return Ok(None) };
        // The landmarks come from the counterpart itself (a delta's bytes
        // are not its base's).
        if let Some(bytes) = self.parent_bytes(repo, at)? {
            self.align(chunk, start, at, &bytes);
        }
        Ok(Some(at))
    }

    /// The plainly stored base for a new chunk whose counterpart is parent
    /// chunk `at` ([`follow`](Self::follow)) and its bytes, or `None` when
    /// there is none worth trying: its base is missing, in a pack a prune
    /// marked (it may go: protocol.md §4 B5), or unreadable.
    pub(super) fn base_for(
        &mut self,
        repo: &Repository,
        index: &IndexReader,
        at: usize,
    ) -> Result<Option<(Id, Arc<[u8]>)>> {
        let counterpart = self.parent[at].id;
        let Some(loc) = index.lookup(&counterpart)? else { return Ok(None) };
        // Depth one (streams.md §4.4): pair with the delta's own base.
        let base = if loc.frame.codec == FrameCodec::Delta {
            match repo.delta_base(&loc.pack, &loc.frame) {
                Ok(b) => b,
                Err(Error::Missing { .. } | Error::Corrupt { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        } else {
            counterpart
        };
        let data = match &self.last_base {
            Some((id, data)) if *id == base => Some(data.clone()),
            _ => match index.lookup(&base)? {
                Some(l) if l.frame.codec != FrameCodec::Delta && !repo.marked_packs().contains(&l.pack) => {
                    match &self.last_parent {
                        Some((id, data)) if *id == base => Some(data.clone()),
                        _ => readable(repo.blob_reader()?.read_at(repo, &base, &l))?,
                    }
                }
                _ => None,
            },
        };
        let Some(data) = data else { return Ok(None) };
        self.last_base = Some((base, data.clone()));
        Ok(Some((base, data)))
    }
}

/// The end in `window` nearest `n` of the parent chunk's last bytes, or
/// `n` when they are not within reach. `n` comes from a landmark `after`
/// bytes before the parent's cut; rows removed or added in between (where
/// landmarks are sparse: runs of padding hold none) move the cut by their
/// length, and the parent chunk's last bytes (128: more than a row of
/// padding, so they hold the last row's own bytes) put it exactly where
/// the parent's was. A changed last row keeps the landmark's estimate.
/// A plain scan: the reach is a few KiB, the comparisons mostly end at the
/// first byte.
fn settle(window: &[u8], n: usize, parent: &[u8], after: usize) -> usize {
    let tail = &parent[parent.len().saturating_sub(LANDMARK_LEN)..];
    if tail.len() < LANDMARK_LEN {
        return n;
    }
    let reach = (after / 4).clamp(4096, 65536);
    let lo = n.saturating_sub(reach).max(tail.len());
    let hi = (n + reach).min(window.len());
    (lo..=hi).filter(|&e| window[e - tail.len()..e] == *tail).min_by_key(|&e| e.abs_diff(n)).unwrap_or(n)
}

/// A chunk that cannot be read (damaged: check's to report) is no base;
/// the new chunk is then stored plainly. Other errors stop the backup.
fn readable(r: Result<Arc<[u8]>>) -> Result<Option<Arc<[u8]>>> {
    match r {
        Ok(d) => Ok(Some(d)),
        Err(Error::Missing { .. } | Error::Corrupt { .. } | Error::NotAuthentic { .. } | Error::DeltaBase { .. }) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairing(lens: &[u64]) -> Pairing {
        let mut parent = Vec::new();
        let mut positions: HashMap<Id, Vec<u32>> = HashMap::new();
        let mut start = 0;
        for (i, &len) in lens.iter().enumerate() {
            let id = Id::hash(&(i as u64).to_le_bytes());
            positions.entry(id).or_default().push(i as u32);
            parent.push(ParentChunk { id, start, len });
            start += len;
        }
        Pairing { parent, positions, shift: 0, last_base: None, last_parent: None, landmarks: None, scanned: None }
    }

    fn id(i: u64) -> Id {
        Id::hash(&i.to_le_bytes())
    }

    #[test]
    fn the_landmarks_of_a_prefix_are_those_of_the_whole_that_fit_in_it() {
        let rows: Vec<u8> = (0..6_000u32)
            .flat_map(|i| format!("{i}\t{}\t{:>40}\n", i.wrapping_mul(2_654_435_761) % 9973, "").into_bytes())
            .collect();
        let whole = landmarks(&rows);
        assert!(whole.len() > 200, "{} landmarks", whole.len());
        let n = rows.len();
        let mut lens = vec![0, 1, 63, 64, 65, 127, 128, 129, 4095, n - 65, n - 64, n - 63, n - 1, n];
        lens.extend((1..200).map(|k| k * n / 200));
        // Every place where the last landmark of a prefix may fall.
        lens.extend(whole.iter().flat_map(|&(at, _)| [at as usize + 63, at as usize + 64, at as usize + 65]));
        for len in lens.into_iter().filter(|&l| l <= n) {
            assert_eq!(chunk_landmarks(whole.clone(), len), landmarks(&rows[..len]), "prefix of {len} bytes");
        }
    }

    #[test]
    fn pairs_by_position_from_the_last_anchor() {
        let mut p = pairing(&[100, 100, 100, 100]);
        // Same cuts, changed contents: chunk i pairs with parent chunk i.
        assert_eq!(p.counterpart(0, 100), Some(0));
        assert_eq!(p.counterpart(100, 102), Some(1));
        // An extra cut inside parent chunk 1: both halves pair with it, and
        // the chunk after them with parent chunk 2 (no slip by one).
        assert_eq!(p.counterpart(100, 40), Some(1));
        assert_eq!(p.counterpart(140, 60), Some(1));
        assert_eq!(p.counterpart(200, 100), Some(2));
        // Ten bytes were inserted before an anchor: later positions shift.
        assert!(p.anchor(&id(2), 210, 100));
        assert_eq!(p.counterpart(310, 100), Some(3));
        // Past the parent's end: no base.
        assert_eq!(p.counterpart(410, 100), None);
        assert!(!p.anchor(&Id::hash(b"not in the parent"), 0, 1));
    }

    #[test]
    fn landmarks_follow_a_stream_that_drifts_without_anchors() {
        // Rows of ~100 bytes; the new stream lacks every 50th row of the
        // parent (moved to the end, as PostgreSQL moves updated rows).
        let rows: Vec<Vec<u8>> = (0..20_000u32)
            .map(|i| format!("{i}\t{}\t{}\t{:>60}\n", i.wrapping_mul(2_654_435_761) % 9973, i % 7, "").into_bytes())
            .collect();
        let parent: Vec<u8> = rows.concat();
        let new: Vec<u8> = rows.iter().enumerate().filter(|(i, _)| i % 50 != 7).flat_map(|(_, r)| r.clone()).collect();
        let mut p = pairing(&[]);
        let size = 200_000u64;
        p.parent = (0..parent.len() as u64 / size + 1)
            .map(|i| ParentChunk { id: id(i), start: i * size, len: size.min(parent.len() as u64 - i * size) })
            .collect();
        let mut start = 0u64;
        while start + size <= new.len() as u64 {
            let at = p.counterpart(start, size).unwrap();
            let c = &p.parent[at];
            let (ps, pe) = (c.start as usize, (c.start + c.len) as usize);
            p.align(&new[start as usize..(start + size) as usize], start, at, &parent[ps..pe]);
            // The shift is what the removed rows before the chunk's end add up to.
            let truth = {
                let end = start + size;
                let mut n = 0u64;
                let mut removed = 0u64;
                for (i, r) in rows.iter().enumerate() {
                    if i % 50 == 7 {
                        removed += r.len() as u64;
                    } else {
                        n += r.len() as u64;
                        if n >= end {
                            break;
                        }
                    }
                }
                removed as i64
            };
            // Exact at the last landmark shared with the counterpart, which
            // may end before the new chunk does; the drift grows to ~34 KB
            // (17 % of a chunk), more than this tolerance.
            assert!((p.shift - truth).abs() < size as i64 / 20, "at {start}: shift {} against {truth}", p.shift);
            assert!(truth > 0);
            start += size;
        }
    }
    #[test]
    fn cuts_follow_the_parents_through_a_drift() {
        // Rows of mostly padding (FastCDC would cut them at its maximum
        // only); the new stream lacks every 50th row of the parent. Parent
        // chunks are 2,000 rows; each new chunk, offered the whole maximum,
        // must end where its parent chunk's last row ends in the new bytes.
        let rows: Vec<Vec<u8>> =
            (0..40_000u32).map(|i| format!("{i}\t{}\t0\t{:84}\n", i / 1000 + 1, "").into_bytes()).collect();
        let kept = |r: usize| r % 50 != 7;
        let lens: Vec<u64> = rows.chunks(2000).map(|c| c.iter().map(|r| r.len() as u64).sum()).collect();
        let mut p = pairing(&lens);
        let parent: Vec<Vec<u8>> = rows.chunks(2000).map(|c| c.concat()).collect();
        let new: Vec<u8> = rows.iter().enumerate().filter(|(r, _)| kept(*r)).flat_map(|(_, r)| r.clone()).collect();
        let max = 1 << 20;
        let (mut start, mut ends) = (0usize, 0usize);
        for (i, chunk) in rows.chunks(2000).enumerate() {
            ends += chunk.iter().enumerate().filter(|(r, _)| kept(i * 2000 + r)).map(|(_, r)| r.len()).sum::<usize>();
            let window = &new[start..(start + max).min(new.len())];
            let (at, scan) = p.next_parent_cut(window.len(), start as u64, 8192).expect("a parent cut ahead");
            assert_eq!(at, i);
            let n = p.place_cut(window, scan, start as u64, at, &parent[at], 8192);
            assert_eq!(n, Some(ends - start), "chunk {i}");
            start = ends;
        }
        assert_eq!(start, new.len());
    }
}
