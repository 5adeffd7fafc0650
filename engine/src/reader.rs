//! The read path for blobs: id → index → one ranged read of the frame →
//! decompress → verify the blob's hash. Decompressed frames are kept in a
//! byte-bounded LRU cache, because consecutive small files share a frame and
//! readers (restore, cat, the mount) ask for them one after another.
//! A blob whose bytes do not hash to its id is an error, never returned.
//!
//! Frames holding trees also go through the repository's local cache
//! (cache.rs), as stored: a cached frame is opened and checked like a
//! fetched one, and one that fails is dropped and fetched again.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

use lru::LruCache;

use crate::error::{Error, Result};
use crate::format::pack;
use crate::id::Id;
use crate::index::BlobLocation;
use crate::prefetch::{FrameKey, Prefetched};
use crate::repo::Repository;
use crate::storage::FileKind;

/// A frame holding only one blob of at least this many bytes is a big
/// chunk's own frame (the packer gives every blob of `frame_size` or more
/// a frame of its own), and is not cached; smaller frames of one blob (the
/// last group of a backup, a small tree) cost little to keep.
const OWN_FRAME_MIN: u32 = 128 * 1024;

/// Whether the frame holding `loc` is worth keeping: a frame of grouped
/// small blobs is read again by the neighbours of the blob asked for,
/// while a big chunk's own frame is read once (a repeat is a dedup hit,
/// rare) and keeping it would only evict the others. Keyed on the shape,
/// not the size: a repository of 1 MiB frames (its groups reach up to
/// 2 MiB) decompressed a whole group again for every small file when
/// frames over 1 MiB were not kept, and restored a mail spool 75x slower.
fn worth_caching(loc: &BlobLocation) -> bool {
    let own_frame = loc.offset_in_frame == 0 && loc.raw_len == loc.frame.raw_len;
    !(own_frame && loc.raw_len >= OWN_FRAME_MIN)
}

struct FrameCache {
    frames: LruCache<FrameKey, Arc<[u8]>>,
    bytes: usize,
    budget: usize,
}

pub struct BlobReader {
    cache: Mutex<FrameCache>,
    /// Frames being fetched right now. Readers that want the same frame at
    /// once (the mount's readahead of neighbouring directories, whose files
    /// share frames, and the reads it runs ahead of; restore's workers) wait
    /// for that one fetch and take the frame from the cache, instead of each
    /// fetching it: a cold mount of a remote repository fetched a third of
    /// its frames twice.
    loading: Mutex<HashMap<FrameKey, Arc<Loading>>>,
}

/// One fetch in flight, and the readers waiting for it.
#[derive(Default)]
struct Loading {
    done: Mutex<bool>,
    finished: Condvar,
}

/// Ends a fetch in flight however the fetch ends: wakes its waiters.
struct LoadingGuard<'a> {
    reader: &'a BlobReader,
    key: FrameKey,
    loading: Arc<Loading>,
}

impl Drop for LoadingGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.reader.loading.lock() {
            m.remove(&self.key);
        }
        if let Ok(mut done) = self.loading.done.lock() {
            *done = true;
        }
        self.loading.finished.notify_all();
    }
}

impl BlobReader {
    pub fn new(budget: usize) -> BlobReader {
        BlobReader {
            cache: Mutex::new(FrameCache { frames: LruCache::unbounded(), bytes: 0, budget }),
            loading: Mutex::new(HashMap::new()),
        }
    }

    /// Either this reader fetches frame `key` (the guard ends the fetch for
    /// others when dropped), or another is fetching it already, and this
    /// returns once that fetch has ended, successfully or not. A poisoned
    /// map only costs the deduplication.
    fn begin_fetch(&self, key: FrameKey) -> Option<LoadingGuard<'_>> {
        let waiting = {
            let Ok(mut m) = self.loading.lock() else { return None };
            match m.get(&key) {
                Some(l) => l.clone(),
                None => {
                    let loading = Arc::new(Loading::default());
                    m.insert(key, loading.clone());
                    return Some(LoadingGuard { reader: self, key, loading });
                }
            }
        };
        if let Ok(done) = waiting.done.lock() {
            // Poisoned or not, the fetch is over once the wait ends.
            drop(waiting.finished.wait_while(done, |d| !*d));
        }
        None
    }

    /// Like [`BlobReader::begin_fetch`], but never waits: `None` if the
    /// frame is being fetched by another reader already.
    fn try_begin_fetch(&self, key: FrameKey) -> Option<LoadingGuard<'_>> {
        let mut m = self.loading.lock().ok()?;
        if m.contains_key(&key) {
            return None;
        }
        let loading = Arc::new(Loading::default());
        m.insert(key, loading.clone());
        Some(LoadingGuard { reader: self, key, loading })
    }

    /// Loads the data frames holding `located` into the cache, decoded,
    /// fetching neighbours in coalesced ranged reads (prefetch.rs), up to
    /// `budget` stored bytes. Each frame is registered as being fetched
    /// before its read starts, so a reader that wants it meanwhile waits
    /// for this read instead of fetching it alone (the mount's readahead
    /// races the copying process for the same frames). Frames cached or
    /// being fetched already are skipped; errors are left to the reads
    /// that need the frames.
    pub fn load_frames(&self, repo: &Repository, located: &[(Id, BlobLocation)], budget: u64) {
        let mut guards = Vec::new();
        let mut wanted = Vec::new();
        let mut bytes = 0u64;
        for (_, loc) in located {
            let key = (loc.pack, loc.frame.offset);
            // A delta frame (a stream chunk) decodes against its base, which
            // may be one of the frames this batch holds guards for: it is
            // left to the read that needs it. A big chunk's own frame would
            // be decoded only to be dropped.
            if loc.kind != pack::BlobKind::Data
                || loc.frame.codec == pack::FrameCodec::Delta
                || !worth_caching(loc)
                || bytes >= budget
                || self.holds(&key)
            {
                continue;
            }
            let Some(guard) = self.try_begin_fetch(key) else { continue };
            guards.push(guard);
            wanted.push(*loc);
            bytes += u64::from(loc.frame.stored_len);
        }
        let pre = Prefetched::fetch_frames(repo, &wanted);
        for loc in &wanted {
            let key = (loc.pack, loc.frame.offset);
            let Some(stored) = pre.stored_frame(&key) else { continue };
            let name = loc.pack.to_hex();
            let raw = repo
                .open_frame(stored, &name, loc.frame.offset)
                .and_then(|s| pack::decode_frame_owned(s, &loc.frame, &name));
            if let Ok(raw) = raw {
                self.remember(loc, raw.into());
            }
        }
        // Dropping the guards wakes the readers waiting for these frames.
        drop(guards);
    }

    fn cached(&self, key: &FrameKey) -> Option<Arc<[u8]>> {
        self.cache.lock().ok()?.frames.get(key).cloned()
    }

    /// Whether the frame is in the cache, decoded (without making it the
    /// most recently used).
    pub(crate) fn holds(&self, key: &FrameKey) -> bool {
        self.cache.lock().is_ok_and(|c| c.frames.contains(key))
    }

    fn remember(&self, loc: &BlobLocation, frame: Arc<[u8]>) {
        if !worth_caching(loc) {
            return;
        }
        let key = (loc.pack, loc.frame.offset);
        let Ok(mut c) = self.cache.lock() else { return };
        c.bytes += frame.len();
        if let Some(old) = c.frames.put(key, frame) {
            c.bytes -= old.len();
        }
        while c.bytes > c.budget {
            match c.frames.pop_lru() {
                Some((_, f)) => c.bytes -= f.len(),
                None => break,
            }
        }
    }

    /// The frame holding blob `id`, from memory, the local cache (trees, if
    /// `use_disk`), the bytes fetched ahead in `pre`, or the repository; and
    /// where it came from. A delta frame (a stream chunk stored against a
    /// base chunk) is decoded here, its base read through this same cache:
    /// one more frame at most.
    fn frame_from(
        &self,
        repo: &Repository,
        id: &Id,
        loc: &BlobLocation,
        use_disk: bool,
        pre: &Prefetched,
    ) -> Result<(Arc<[u8]>, Source)> {
        let key = (loc.pack, loc.frame.offset);
        if let Some(f) = self.cached(&key) {
            return Ok((f, Source::Memory));
        }
        let fetching = self.begin_fetch(key);
        if fetching.is_none() {
            // Another reader fetched it meanwhile; if it is not in the
            // cache now (a big chunk's own frame, or the fetch failed), fetch it
            // here as if no one had.
            if let Some(f) = self.cached(&key) {
                return Ok((f, Source::Memory));
            }
        }
        let name = loc.pack.to_hex();
        let disk = repo.cache().filter(|c| c.caches_files() && loc.kind == pack::BlobKind::Tree);
        if let Some(c) = disk.filter(|_| use_disk) {
            if let Some(stored) = c.frame(&loc.pack, loc.frame.offset, loc.frame.stored_len) {
                let decoded = repo.decode_frame(stored, &loc.frame, &name, id, &|b| repo.read_delta_base(b));
                match decoded {
                    Ok(raw) => {
                        let raw: Arc<[u8]> = raw.into();
                        self.remember(loc, raw.clone());
                        return Ok((raw, Source::Disk));
                    }
                    Err(_) => c.drop_frame(&loc.pack, loc.frame.offset, loc.frame.stored_len),
                }
            }
        }
        let stored = match pre.stored_frame(&key) {
            Some(stored) => stored,
            None => {
                repo.storage().get_range(FileKind::Pack, &name, loc.frame.offset, u64::from(loc.frame.stored_len))?
            }
        };
        // Kept for the local cache once a blob of it is verified.
        let keep = disk.map(|_| stored.clone());
        let raw: Arc<[u8]> = repo.decode_frame(stored, &loc.frame, &name, id, &|b| repo.read_delta_base(b))?.into();
        self.remember(loc, raw.clone());
        Ok((raw, Source::Storage(keep)))
    }

    pub fn read(&self, repo: &Repository, id: &Id) -> Result<Arc<[u8]>> {
        let loc = repo.lookup_blob(id)?.ok_or(Error::BlobNotInIndex(*id))?;
        self.read_at(repo, id, &loc)
    }

    /// [`BlobReader::read`], taking the location and the frame from `pre`
    /// where it has them.
    pub fn read_with(&self, repo: &Repository, id: &Id, pre: &Prefetched) -> Result<Arc<[u8]>> {
        match pre.location(id) {
            Some(loc) => self.read_at_with(repo, id, loc, pre),
            None => self.read(repo, id),
        }
    }

    pub fn read_at(&self, repo: &Repository, id: &Id, loc: &BlobLocation) -> Result<Arc<[u8]>> {
        self.read_at_with(repo, id, loc, &Prefetched::none())
    }

    /// [`BlobReader::read_at`], with the frame from `pre` if it was fetched
    /// ahead.
    pub fn read_at_with(&self, repo: &Repository, id: &Id, loc: &BlobLocation, pre: &Prefetched) -> Result<Arc<[u8]>> {
        match self.read_in(repo, id, loc, true, pre) {
            // A wrong frame from the local cache: forget it everywhere and
            // read the repository's.
            Err((_, Source::Disk)) => {
                if let Some(c) = repo.cache() {
                    c.drop_frame(&loc.pack, loc.frame.offset, loc.frame.stored_len);
                }
                if let Ok(mut c) = self.cache.lock() {
                    if let Some(f) = c.frames.pop(&(loc.pack, loc.frame.offset)) {
                        c.bytes -= f.len();
                    }
                }
                self.read_in(repo, id, loc, false, pre).map_err(|(e, _)| e)
            }
            other => other.map_err(|(e, _)| e),
        }
    }

    fn read_in(
        &self,
        repo: &Repository,
        id: &Id,
        loc: &BlobLocation,
        use_disk: bool,
        pre: &Prefetched,
    ) -> std::result::Result<Arc<[u8]>, (Error, Source)> {
        let (frame, source) = self.frame_from(repo, id, loc, use_disk, pre).map_err(|e| (e, Source::Storage(None)))?;
        match verified(repo, id, loc, frame) {
            Ok(blob) => {
                if let (Source::Storage(Some(stored)), Some(c)) = (&source, repo.cache()) {
                    c.store_frame(&loc.pack, loc.frame.offset, stored);
                }
                Ok(blob)
            }
            Err(e) => Err((e, source)),
        }
    }
}

/// Where a frame came from.
enum Source {
    Memory,
    Disk,
    /// The repository; with its stored bytes if they are to be cached.
    Storage(Option<Vec<u8>>),
}

/// The blob `id` out of its frame, checked against its id.
fn verified(repo: &Repository, id: &Id, loc: &BlobLocation, frame: Arc<[u8]>) -> Result<Arc<[u8]>> {
    let start = loc.offset_in_frame as usize;
    let end = start + loc.raw_len as usize;
    let bytes = frame.get(start..end).ok_or_else(|| {
        Error::corrupt("pack", loc.pack.to_hex(), format!("blob {} lies outside its frame", id.short()))
    })?;
    if repo.blob_id(bytes) != *id {
        return Err(Error::corrupt(
            "pack",
            loc.pack.to_hex(),
            format!("blob {} does not match its hash (frame at offset {})", id.short(), loc.frame.offset),
        ));
    }
    if start == 0 && end == frame.len() {
        return Ok(frame);
    }
    Ok(Arc::from(bytes))
}
