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
        Some(Pairing { parent, positions, shift: 0, last_base: None })
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
    fn counterpart(&self, start: u64, len: u64) -> Option<&ParentChunk> {
        let mid = u64::try_from((start + len / 2) as i64 + self.shift).ok()?;
        let i = self.parent.partition_point(|p| p.start + p.len <= mid);
        self.parent.get(i)
    }

    /// The plainly stored base for a new chunk at `[start, start + len)`
    /// and its bytes, or `None` when there is none worth trying: no
    /// counterpart, or its base is missing, in a pack a prune marked (it
    /// may go: protocol.md §4 B5), or unreadable.
    pub(super) fn base_for(
        &mut self,
        repo: &Repository,
        index: &IndexReader,
        start: u64,
        len: u64,
    ) -> Result<Option<(Id, Arc<[u8]>)>> {
        let Some(counterpart) = self.counterpart(start, len) else { return Ok(None) };
        let Some(loc) = index.lookup(&counterpart.id)? else { return Ok(None) };
        // Depth one (streams.md §4.4): pair with the delta's own base.
        let base = if loc.frame.codec == FrameCodec::Delta {
            match repo.delta_base(&loc.pack, &loc.frame) {
                Ok(b) => b,
                Err(Error::Missing { .. } | Error::Corrupt { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        } else {
            counterpart.id
        };
        if let Some((id, data)) = &self.last_base {
            if *id == base {
                return Ok(Some((base, data.clone())));
            }
        }
        let Some(base_loc) = index.lookup(&base)? else { return Ok(None) };
        if base_loc.frame.codec == FrameCodec::Delta || repo.marked_packs().contains(&base_loc.pack) {
            return Ok(None);
        }
        let data = match repo.blob_reader()?.read_at(repo, &base, &base_loc) {
            Ok(d) => d,
            // A damaged base is check's to report; this chunk is stored plainly.
            Err(Error::Missing { .. } | Error::Corrupt { .. } | Error::NotAuthentic { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        self.last_base = Some((base, data.clone()));
        Ok(Some((base, data)))
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
        Pairing { parent, positions, shift: 0, last_base: None }
    }

    fn id(i: u64) -> Id {
        Id::hash(&i.to_le_bytes())
    }

    #[test]
    fn pairs_by_position_from_the_last_anchor() {
        let mut p = pairing(&[100, 100, 100, 100]);
        // Same cuts, changed contents: chunk i pairs with parent chunk i.
        assert_eq!(p.counterpart(0, 100).map(|c| c.id), Some(id(0)));
        assert_eq!(p.counterpart(100, 102).map(|c| c.id), Some(id(1)));
        // An extra cut inside parent chunk 1: both halves pair with it, and
        // the chunk after them with parent chunk 2 (no slip by one).
        assert_eq!(p.counterpart(100, 40).map(|c| c.id), Some(id(1)));
        assert_eq!(p.counterpart(140, 60).map(|c| c.id), Some(id(1)));
        assert_eq!(p.counterpart(200, 100).map(|c| c.id), Some(id(2)));
        // Ten bytes were inserted before an anchor: later positions shift.
        assert!(p.anchor(&id(2), 210, 100));
        assert_eq!(p.counterpart(310, 100).map(|c| c.id), Some(id(3)));
        // Past the parent's end: no base.
        assert_eq!(p.counterpart(410, 100).map(|c| c.id), None);
        assert!(!p.anchor(&Id::hash(b"not in the parent"), 0, 1));
    }
}
