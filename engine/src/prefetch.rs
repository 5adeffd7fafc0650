//! Fetching ahead, in few requests, the frames that a batch of reads will
//! need from a remote store.
//!
//! On a remote store every ranged read is a round trip: milliseconds on a
//! LAN, tens of milliseconds across a WAN. The frames of files that were
//! backed up one after another lie side by side in one pack, yet restore
//! asked for them one at a time: 4,584 GETs for the spool where restic,
//! which reads whole packs, made 53. Here the frames of a batch are sorted
//! by pack and offset, and neighbours are read in one ranged GET, small gaps
//! included (reading a few hundred KiB more costs less than another round
//! trip).
//!
//! The bytes are kept as stored (sealed and compressed) until a reader asks
//! for the frame, so a batch costs its compressed size in memory, and a
//! frame that is never read costs no decryption. Nothing here is trusted:
//! the reader opens, decompresses and verifies a prefetched frame exactly
//! as one it fetched itself, and a frame this could not fetch is simply
//! missing, so the reader fetches it alone and reports its error.

use std::collections::HashMap;

use crate::format::pack::BlobKind;
use crate::id::Id;
use crate::index::BlobLocation;
use crate::repo::Repository;
use crate::storage::FileKind;

/// A frame: its pack and its offset in the pack.
pub(crate) type FrameKey = (Id, u64);

/// A gap between two wanted frames of one pack up to this size is read
/// along with them rather than costing a second request. At 100 MB/s,
/// 1 MiB takes 10 ms, about one WAN round trip.
const MAX_GAP: u64 = 1 << 20;
/// One request reads at most this much, so that a batch's requests can
/// run side by side and a failed one costs little to repeat.
const MAX_SPAN: u64 = 16 << 20;

/// Locations and stored bytes fetched ahead for one batch of reads.
#[derive(Default)]
pub struct Prefetched {
    locations: HashMap<Id, BlobLocation>,
    frames: HashMap<FrameKey, Vec<u8>>,
}

/// One ranged read: `[start, end)` of `pack`, covering `frames`
/// (offset, stored length), sorted by offset.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub pack: Id,
    pub start: u64,
    pub end: u64,
    pub frames: Vec<(u64, u32)>,
}

impl Prefetched {
    /// Nothing fetched ahead: every read goes to the store alone.
    pub fn none() -> Prefetched {
        Prefetched::default()
    }

    /// Looks up `ids` and fetches their frames in coalesced ranged reads,
    /// up to `budget` stored bytes (the rest are read one by one when
    /// asked for). Errors are not reported here: what could not be looked
    /// up or fetched is left to the read that needs it, which names it.
    pub fn fetch<'a>(repo: &Repository, ids: impl IntoIterator<Item = &'a Id>, budget: u64) -> Prefetched {
        let located = ids.into_iter().filter_map(|id| repo.lookup_blob(id).ok().flatten().map(|loc| (*id, loc)));
        Prefetched::fetch_located(repo, located, budget)
    }

    /// [`Prefetched::fetch`] for blobs whose locations are known. Frames
    /// the reader holds decoded already are skipped.
    pub fn fetch_located(
        repo: &Repository,
        located: impl IntoIterator<Item = (Id, BlobLocation)>,
        budget: u64,
    ) -> Prefetched {
        let mut pre = Prefetched::default();
        let Ok(reader) = repo.blob_reader() else { return pre };
        let mut wanted: HashMap<FrameKey, u32> = HashMap::new();
        let mut bytes = 0u64;
        for (id, loc) in located {
            if pre.locations.insert(id, loc).is_some() {
                continue;
            }
            // Tree frames have their own cache on disk (reader.rs).
            if loc.kind != BlobKind::Data {
                continue;
            }
            let key = (loc.pack, loc.frame.offset);
            if bytes >= budget || wanted.contains_key(&key) || reader.holds(&key) {
                continue;
            }
            wanted.insert(key, loc.frame.stored_len);
            bytes += u64::from(loc.frame.stored_len);
        }
        pre.read_spans(repo, wanted);
        pre
    }

    /// The stored bytes of the frames of `locs` (distinct frames, all
    /// wanted), in coalesced ranged reads; no locations recorded.
    pub(crate) fn fetch_frames(repo: &Repository, locs: &[BlobLocation]) -> Prefetched {
        let mut pre = Prefetched::default();
        let frames: HashMap<FrameKey, u32> =
            locs.iter().map(|l| ((l.pack, l.frame.offset), l.frame.stored_len)).collect();
        pre.read_spans(repo, frames);
        pre
    }

    /// Fetches `frames` (key and stored length) in coalesced ranged reads
    /// and keeps their stored bytes.
    fn read_spans(&mut self, repo: &Repository, frames: HashMap<FrameKey, u32>) {
        for span in spans(frames.into_iter().map(|((pack, offset), len)| (pack, offset, len)).collect()) {
            let name = span.pack.to_hex();
            let Ok(data) = repo.storage().get_range(FileKind::Pack, &name, span.start, span.end - span.start) else {
                continue;
            };
            for (offset, len) in span.frames {
                let from = (offset - span.start) as usize;
                if let Some(stored) = data.get(from..from + len as usize) {
                    self.frames.insert((span.pack, offset), stored.to_vec());
                }
            }
        }
    }

    /// Where `id` is, if this batch looked it up.
    pub fn location(&self, id: &Id) -> Option<&BlobLocation> {
        self.locations.get(id)
    }

    /// Whether the frame holding `id` was fetched ahead.
    pub fn holds(&self, id: &Id) -> bool {
        self.locations.get(id).is_some_and(|l| self.frames.contains_key(&(l.pack, l.frame.offset)))
    }

    /// A copy of the frame's stored bytes, if fetched ahead (a copy: the
    /// frame is opened in place, and a frame too big for the reader's
    /// cache may be asked for again by the next blob in it).
    pub(crate) fn stored_frame(&self, key: &FrameKey) -> Option<Vec<u8>> {
        self.frames.get(key).cloned()
    }
}

/// Puts the frames holding the trees `ids` into the repository's local
/// cache of tree frames, fetching those it lacks in coalesced ranged reads,
/// up to `budget` stored bytes. A walk calls this with a directory's
/// subdirectories before descending into them: their trees were written
/// one after another, so one request brings the frames that a walk of a
/// new host (restore, `ls -R`, `find`) fetched one at a time, each a round
/// trip on the walker's single thread. A frame is kept only once it opens
/// (its authentication checked), like every frame the cache gets; nothing
/// happens without a cache of tree frames (local repositories).
pub fn warm_tree_cache<'a>(repo: &Repository, ids: impl IntoIterator<Item = &'a Id>, budget: u64) {
    let Some(cache) = repo.cache().filter(|c| c.caches_files()) else { return };
    let Ok(reader) = repo.blob_reader() else { return };
    let mut wanted: HashMap<FrameKey, u32> = HashMap::new();
    let mut bytes = 0u64;
    for id in ids {
        let Ok(Some(loc)) = repo.lookup_blob(id) else { continue };
        let key = (loc.pack, loc.frame.offset);
        if loc.kind != BlobKind::Tree
            || bytes >= budget
            || wanted.contains_key(&key)
            || reader.holds(&key)
            || cache.has_frame(&loc.pack, loc.frame.offset, loc.frame.stored_len)
        {
            continue;
        }
        wanted.insert(key, loc.frame.stored_len);
        bytes += u64::from(loc.frame.stored_len);
    }
    let mut pre = Prefetched::default();
    pre.read_spans(repo, wanted);
    for ((pack, offset), stored) in pre.frames {
        if repo.open_frame(stored.clone(), &pack.to_hex(), offset).is_ok() {
            cache.store_frame(&pack, offset, &stored);
        }
    }
}

/// The ranged reads that cover `frames` (pack, offset, stored length):
/// frames of one pack in offset order, merged while the gap between them
/// is at most [`MAX_GAP`] and the read stays within [`MAX_SPAN`].
fn spans(frames: Vec<(Id, u64, u32)>) -> Vec<Span> {
    coalesce(frames, MAX_GAP, MAX_SPAN)
}

/// [`spans`] with the gap and read limits given.
fn coalesce(mut frames: Vec<(Id, u64, u32)>, max_gap: u64, max_span: u64) -> Vec<Span> {
    frames.sort_unstable();
    let mut out: Vec<Span> = Vec::new();
    for (pack, offset, len) in frames {
        let end = offset + u64::from(len);
        match out.last_mut() {
            Some(s) if s.pack == pack && offset <= s.end + max_gap && end - s.start <= max_span && offset >= s.end => {
                s.end = end;
                s.frames.push((offset, len));
            }
            _ => out.push(Span { pack, start: offset, end, frames: vec![(offset, len)] }),
        }
    }
    out
}

/// The ranged reads of a restore planned pack by pack (ops/restore/packs.rs):
/// all the frames a restore needs from each pack, known at once. As
/// [`spans`], and where at least half of the stretch from a pack's first
/// needed frame to its last is needed, and that stretch fits in
/// `max_span`, the whole stretch in one read: the unneeded bytes between
/// cost less than the round trips they would save (restic reads whole
/// packs for the same reason).
pub(crate) fn pack_reads(mut frames: Vec<(Id, u64, u32)>, max_span: u64) -> Vec<Span> {
    frames.sort_unstable();
    frames.dedup();
    let mut out = Vec::new();
    for one_pack in frames.chunk_by(|a, b| a.0 == b.0) {
        let (first, last) = (one_pack[0], one_pack[one_pack.len() - 1]);
        let stretch = last.1 + u64::from(last.2) - first.1;
        let needed: u64 = one_pack.iter().map(|f| u64::from(f.2)).sum();
        if stretch <= max_span && needed * 2 >= stretch {
            let frames = one_pack.iter().map(|f| (f.1, f.2)).collect();
            out.push(Span { pack: first.0, start: first.1, end: first.1 + stretch, frames });
        } else {
            out.extend(coalesce(one_pack.to_vec(), MAX_GAP, max_span));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: u8) -> Id {
        Id([n; 32])
    }

    #[test]
    fn neighbours_share_a_read_and_far_or_other_packs_do_not() {
        let kib = 1024u64;
        let s = spans(vec![
            (pack(1), 300 * kib, 100),
            (pack(1), 0, 100 * 1024),
            (pack(1), 100 * kib, 200 * 1024),
            // 2 MiB past the last: its own read.
            (pack(1), 2600 * kib, 10),
            (pack(2), 0, 10),
        ]);
        assert_eq!(
            s,
            vec![
                Span {
                    pack: pack(1),
                    start: 0,
                    end: 300 * kib + 100,
                    frames: vec![(0, 100 * 1024), (100 * kib, 200 * 1024), (300 * kib, 100)]
                },
                Span { pack: pack(1), start: 2600 * kib, end: 2600 * kib + 10, frames: vec![(2600 * kib, 10)] },
                Span { pack: pack(2), start: 0, end: 10, frames: vec![(0, 10)] },
            ]
        );
    }

    #[test]
    fn a_read_stops_growing_at_the_span_limit() {
        let mib = 1u64 << 20;
        let frames: Vec<_> = (0..40).map(|i| (pack(1), i * mib, mib as u32)).collect();
        let s = spans(frames);
        assert_eq!(s.len(), 3, "{s:?}");
        assert!(s.iter().all(|s| s.end - s.start <= MAX_SPAN));
        assert_eq!(s.iter().map(|s| s.frames.len()).sum::<usize>(), 40);
    }

    #[test]
    fn a_pack_mostly_needed_is_read_in_one_go_and_a_sparse_one_in_pieces() {
        let mib = 1u64 << 20;
        // Pack 1: 12 of 16 MiB needed, with 2 MiB holes: one read.
        let mut frames: Vec<_> = (0..16).filter(|i| i % 4 != 1).map(|i| (pack(1), i * mib, mib as u32)).collect();
        // Pack 2: three small frames 4 MiB apart: three reads.
        frames.extend((0..3).map(|i| (pack(2), i * 4 * mib, 1000)));
        // Pack 3: needed throughout but longer than a read may be.
        frames.extend((0..40).map(|i| (pack(3), i * mib, mib as u32)));
        let s = pack_reads(frames, 20 * mib);
        let of = |p: u8| s.iter().filter(|s| s.pack == pack(p)).collect::<Vec<_>>();
        assert_eq!(of(1).len(), 1, "{s:?}");
        assert_eq!((of(1)[0].start, of(1)[0].end, of(1)[0].frames.len()), (0, 16 * mib, 12));
        assert_eq!(of(2).len(), 3, "{s:?}");
        assert!(of(3).len() >= 2 && of(3).iter().all(|s| s.end - s.start <= 20 * mib), "{s:?}");
        assert_eq!(of(3).iter().map(|s| s.frames.len()).sum::<usize>(), 40);
    }
}
