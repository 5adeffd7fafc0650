//! The read path for blobs: id → index → one ranged read of the frame →
//! decompress → verify the blob's hash. Decompressed frames are kept in a
//! byte-bounded LRU cache, because consecutive small files share a frame and
//! readers (restore, cat, the mount) ask for them one after another.
//! A blob whose bytes do not hash to its id is an error, never returned.

use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::error::{Error, Result};
use crate::format::pack;
use crate::id::Id;
use crate::index::BlobLocation;
use crate::repo::Repository;
use crate::storage::FileKind;

type FrameKey = (Id, u64);

/// Larger frames hold a single big chunk and are not cached.
const MAX_CACHED_FRAME: usize = 1024 * 1024;

struct FrameCache {
    frames: LruCache<FrameKey, Arc<[u8]>>,
    bytes: usize,
    budget: usize,
}

pub struct BlobReader {
    cache: Mutex<FrameCache>,
}

impl BlobReader {
    pub fn new(budget: usize) -> BlobReader {
        BlobReader { cache: Mutex::new(FrameCache { frames: LruCache::unbounded(), bytes: 0, budget }) }
    }

    fn cached(&self, key: &FrameKey) -> Option<Arc<[u8]>> {
        self.cache.lock().ok()?.frames.get(key).cloned()
    }

    fn remember(&self, key: FrameKey, frame: Arc<[u8]>) {
        let Ok(mut c) = self.cache.lock() else { return };
        // Frames of grouped small blobs are read again and again by
        // consecutive files; a big chunk's own frame is read once (a repeat
        // is a dedup hit, rare), and caching it would only evict the others.
        if frame.len() > MAX_CACHED_FRAME {
            return;
        }
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

    /// The decompressed frame holding a blob.
    pub fn frame(&self, repo: &Repository, loc: &BlobLocation) -> Result<Arc<[u8]>> {
        let key = (loc.pack, loc.frame.offset);
        if let Some(f) = self.cached(&key) {
            return Ok(f);
        }
        let name = loc.pack.to_hex();
        let stored =
            repo.storage().get_range(FileKind::Pack, &name, loc.frame.offset, u64::from(loc.frame.stored_len))?;
        let stored = repo.open_frame(stored, &name, loc.frame.offset)?;
        let raw: Arc<[u8]> = pack::decode_frame(&stored, &loc.frame, &name)?.into();
        self.remember(key, raw.clone());
        Ok(raw)
    }

    pub fn read(&self, repo: &Repository, id: &Id) -> Result<Arc<[u8]>> {
        let loc = repo.lookup_blob(id)?.ok_or(Error::BlobNotInIndex(*id))?;
        self.read_at(repo, id, &loc)
    }

    pub fn read_at(&self, repo: &Repository, id: &Id, loc: &BlobLocation) -> Result<Arc<[u8]>> {
        let frame = self.frame(repo, loc)?;
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
}
