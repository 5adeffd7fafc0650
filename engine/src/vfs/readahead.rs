//! Directory-granular readahead for small files.
//!
//! Copying a directory of small files out of the mount (`cp -a`, `rsync`,
//! `tar`) reads one file after another, each in a single READ. Without
//! help every one of those reads misses the chunk cache and waits for an
//! index lookup, a pack read, a decompression and a hash, on a read worker
//! the dispatch thread has to hand it to. So when a file of a directory is
//! first read, the directory's small files are loaded in the background in
//! listing order, up to a byte budget per batch; when a file past the
//! middle of a batch is read the next batch starts. Files of a directory
//! were backed up one after another and share pack frames, which the blob
//! reader decodes once for all of them.
//!
//! Bounded: a batch holds at most [`crate::vfs::VfsOptions::dir_readahead_bytes`] of
//! file data, at most [`MAX_RUNNING`] batches run at once (others are
//! skipped, not queued), and everything lands in the byte-bounded chunk
//! cache. Walks that read no file data (`find`, `ls -lR`) never start one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::cache::Slot;
use super::{chunk_weight, load_chunk, lock, ChunkTable, Entry, Position, Vfs};
use crate::format::tree::NodeKind;
use crate::id::Id;

/// Files larger than this are left to the sequential readahead of
/// [`Vfs::read_at`], which follows the reader through them.
pub(super) const SMALL_FILE: u64 = 1 << 20;
/// Directory batches running at once.
const MAX_RUNNING: usize = 4;
/// Directories whose progress is remembered.
const TRACKED_DIRS: usize = 256;

/// Where the readahead of one directory stands.
#[derive(Clone, Copy)]
enum Progress {
    /// A batch is loading.
    Running,
    /// The last batch covered entries up to `end` (exclusive); the next
    /// starts when a file at or past `next_at` is read.
    Done { next_at: u32, end: u32 },
}

pub(super) struct DirReadahead {
    dirs: Mutex<LruCache<Id, Progress>>,
    running: Arc<AtomicUsize>,
}

impl DirReadahead {
    pub(super) fn new() -> DirReadahead {
        let cap = std::num::NonZeroUsize::new(TRACKED_DIRS).unwrap_or(std::num::NonZeroUsize::MIN);
        DirReadahead { dirs: Mutex::new(LruCache::new(cap)), running: Arc::new(AtomicUsize::new(0)) }
    }
}

/// Decrements the running count however the batch ends.
struct RunningGuard(Arc<AtomicUsize>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Vfs {
    /// `file` is being read from its start. From a remote store, given the
    /// file's place in its snapshot, a stream follows the reader across
    /// directories (`window.rs`: a round trip per directory is what made a
    /// copy slow there); otherwise the directory's small files are loaded
    /// ([`Vfs::readahead_after`]). Front ends call this on a file's first
    /// read; `position` is asked only when it is needed.
    pub fn readahead_at(self: &Arc<Self>, file: &Entry, position: impl FnOnce() -> Option<Position>) {
        if self.repo.storage().local_path().is_none() {
            if let Some(pos) = position() {
                return self.readahead_walk(pos);
            }
        }
        self.readahead_after(file)
    }

    /// `file` is being read from its start: load the small files after it
    /// in its directory in the background, unless that is under way or
    /// done. Front ends call this on a file's first read.
    pub fn readahead_after(self: &Arc<Self>, file: &Entry) {
        let Entry::Node { tree: dir, index } = *file else { return };
        let budget = self.opts.dir_readahead_bytes;
        if budget == 0 {
            return;
        }
        let from = {
            let mut dirs = lock(&self.dir_readahead.dirs);
            let from = match dirs.get(&dir) {
                // From the directory's first entry, not from this file:
                // `cp` reads a directory in inode-number order (gnulib's
                // savedir sorts by d_ino where that speeds up disks), and
                // the mount's inode numbers are hashes, so the order is
                // effectively random.
                None => 0,
                Some(Progress::Running) => return,
                Some(Progress::Done { next_at, end }) if index >= *next_at && index < *end => *end,
                // Read past the last batch (a reader that skipped ahead):
                // start again from here.
                Some(Progress::Done { end, .. }) if index >= *end => index + 1,
                Some(Progress::Done { .. }) => return,
            };
            let running = &self.dir_readahead.running;
            if running.fetch_add(1, Ordering::AcqRel) >= MAX_RUNNING {
                running.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            dirs.put(dir, Progress::Running);
            from
        };
        let guard = RunningGuard(self.dir_readahead.running.clone());
        let work = self.work.start();
        let vfs = self.clone();
        rayon::spawn(move || {
            let (_guard, _work) = (guard, work);
            let progress = vfs.load_batch(dir, from, budget);
            lock(&vfs.dir_readahead.dirs).put(dir, progress);
        });
    }

    /// Whether `file` lies in a directory batch that is loading or loaded
    /// (its data is likely in memory, or about to be). One map lookup, no
    /// index access: front ends ask it on every lookup during a copy, and
    /// a walk that reads no data (`ls -lR`) never starts a batch, so it
    /// always gets `false` and opens nothing.
    pub fn read_ahead_covers(&self, file: &Entry) -> bool {
        let Entry::Node { tree: dir, index } = *file else { return false };
        match lock(&self.dir_readahead.dirs).peek(&dir) {
            Some(Progress::Running) => true,
            Some(Progress::Done { end, .. }) => index < *end,
            None => false,
        }
    }

    /// Loads the chunks of the small files from entry `from` on, until
    /// `budget` bytes of them are cached or loading.
    fn load_batch(&self, dir: Id, from: u32, budget: u64) -> Progress {
        // On failure the reader hits (and reports) the same error itself.
        let finished = Progress::Done { next_at: u32::MAX, end: u32::MAX };
        let Ok(reader) = self.repo.index().and_then(|i| i.reader()) else { return finished };
        let Ok(len) = self.dir_len(&dir) else { return finished };
        let mut bytes = 0u64;
        let mut end = from;
        let mut batch: Vec<Arc<ChunkTable>> = Vec::new();
        let walked = self.for_each_node(&dir, from, |i, node| {
            if bytes >= budget {
                return true;
            }
            end = i + 1;
            // Files with out-of-line chunk lists are far above SMALL_FILE.
            if node.kind != NodeKind::File || node.size > SMALL_FILE || node.chunks.is_empty() {
                return false;
            }
            let key = (dir, i);
            let cached = lock(&self.tables).get(&key).cloned();
            let table = match cached {
                Some(t) => t,
                None => match ChunkTable::build(&reader, &dir, node) {
                    Ok(t) => {
                        let t = Arc::new(t);
                        lock(&self.tables).put(key, t.clone());
                        t
                    }
                    // Left for the reader to find and report.
                    Err(_) => return false,
                },
            };
            batch.push(table);
            bytes += node.size;
            false
        });
        if walked.is_err() {
            return finished;
        }
        // From a remote store, the batch's frames in a few ranged reads,
        // registered with the blob reader so that the copying process
        // waits for them instead of fetching them alone (prefetch.rs).
        if self.repo.storage().local_path().is_none() {
            if let Ok(blobs) = self.repo.blob_reader() {
                let located: Vec<_> = batch.iter().flat_map(|t| t.chunks.iter().copied()).collect();
                blobs.load_frames(&self.repo, &located, budget);
            }
        }
        for table in &batch {
            for (id, loc) in &table.chunks {
                if let Slot::Claimed(claim) = self.chunks.claim(id, chunk_weight) {
                    // A failure is not cached: the reader retries and
                    // reports it.
                    let _ = claim.complete(load_chunk(&self.repo, id, loc));
                }
            }
        }
        if end >= len {
            return finished;
        }
        Progress::Done { next_at: from + (end - from) / 2, end }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::ops::backup::{backup, BackupOptions};
    use crate::progress::NoProgress;
    use crate::repo::{InitOptions, Repository};
    use crate::test_data::pseudo_random;
    use crate::vfs::VfsOptions;

    /// A snapshot of one directory of `n` small files (and one large one,
    /// which readahead leaves alone); the mount's view of that directory.
    fn small_files(n: usize, dir_readahead_bytes: u64) -> (tempfile::TempDir, Arc<Vfs>, Vec<Entry>) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        for i in 0..n {
            std::fs::write(src.join(format!("m{i:03}")), pseudo_random(3000 + i * 10, i as u64 + 1)).unwrap();
        }
        std::fs::write(src.join("zz-large"), pseudo_random(3 << 20, 99)).unwrap();
        let repo = Repository::init_local(&dir.path().join("repo"), &InitOptions::default()).unwrap();
        backup(&repo, BackupOptions { paths: vec![src.clone()], ..Default::default() }, &NoProgress).unwrap();
        let vfs = Arc::new(Vfs::new(Arc::new(repo), VfsOptions { dir_readahead_bytes, ..Default::default() }));
        let mut e = vfs.items(&Entry::Snapshots).remove(0).1;
        for c in src.to_str().unwrap().split('/').filter(|c| !c.is_empty()) {
            e = vfs.lookup(&e, c.as_bytes()).unwrap().unwrap();
        }
        let files = vfs.items(&e).into_iter().map(|(_, e)| e).collect();
        (dir, vfs, files)
    }

    fn cached(vfs: &Vfs, e: &Entry) -> bool {
        let f = vfs.open(e).unwrap();
        vfs.read_is_cached(&f, 0, 1 << 20)
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn first_read_loads_the_whole_directory_of_small_files() {
        let (_dir, vfs, files) = small_files(40, 8 << 20);
        let (small, large) = files.split_at(40);
        assert!(small.iter().all(|e| !cached(&vfs, e)), "nothing is cached before a read");
        assert!(!vfs.read_ahead_covers(&small[0]), "no batch before a read");
        // A file in the middle, as `cp` (inode order) might start.
        vfs.readahead_after(&small[17]);
        wait_until("every small file is cached", || small.iter().all(|e| cached(&vfs, e)));
        wait_until("the batch is done", || {
            matches!(lock(&vfs.dir_readahead.dirs).peek(&dir_of(&small[0])), Some(Progress::Done { .. }))
        });
        assert!(small.iter().all(|e| vfs.read_ahead_covers(e)), "the batch covers the directory");
        assert!(!cached(&vfs, &large[0]), "large files are left to sequential readahead");
        // The data is the file's, not just something in the cache.
        let f = vfs.open(&small[3]).unwrap();
        assert_eq!(&*vfs.read_at(&f, 0, 1 << 20).unwrap(), &pseudo_random(3030, 4)[..]);
    }

    #[test]
    fn batches_are_bounded_and_the_next_starts_past_the_middle() {
        // Room for about ten of the ~3 KB files per batch.
        let (_dir, vfs, files) = small_files(60, 30_000);
        let small = &files[..60];
        vfs.readahead_after(&small[0]);
        wait_until("the first batch is done", || {
            matches!(lock(&vfs.dir_readahead.dirs).peek(&dir_of(&small[0])), Some(Progress::Done { .. }))
        });
        let loaded = small.iter().filter(|e| cached(&vfs, e)).count();
        assert!((9..=12).contains(&loaded), "one batch loads about its budget, not {loaded} files");
        assert!(!cached(&vfs, &small[30]), "nothing far beyond the batch");
        // Reading a file past the middle of the batch starts the next one.
        vfs.readahead_after(&small[7]);
        wait_until("the second batch is loaded", || small[..20].iter().all(|e| cached(&vfs, e)));
    }

    fn dir_of(e: &Entry) -> Id {
        match e {
            Entry::Node { tree, .. } => *tree,
            _ => panic!("not a node"),
        }
    }
}
