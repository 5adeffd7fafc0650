//! Walk-order readahead for a remote repository.
//!
//! Copying a tree out of the mount (`cp -a`, `rsync`, `tar`) reads its
//! files in the snapshot's depth-first order: tar and rsync by name, and
//! cp by inode number, which fuse-mount hands out in the same order. On a
//! remote store the per-directory batches of `readahead.rs` made the copier
//! wait for a server round trip (a GET and its frames' decoding) in every
//! directory it entered: 100 s to copy the 200k-file spool from s3s-fs on
//! loopback against 10 s for `arc restore` (BENCHMARKS.md). Here a
//! *stream* follows a reader through the snapshot and keeps a window of
//! small files loaded ahead of it, across directories: the files after the
//! one read, in its directory, then in the directories that follow it.
//!
//! A window's frames are planned as restore plans them
//! (`prefetch::pack_reads`: each pack's needed frames in one or a few large
//! GETs) and fetched side by side (`span_fetch.rs`), each frame decoded once
//! and its chunks handed to the chunk cache as soon as it lands. The
//! window's chunks are claimed in the chunk cache as its walk meets them,
//! before the first GET, so a reader that gets there first waits for that
//! fetch instead of making its own. A sequential reader of a large file
//! gets its next chunks loaded the same way ([`Vfs::prefetch_run`]).
//!
//! Bounded: the first window of a stream holds up to
//! [`super::VfsOptions::dir_readahead_bytes`] of file data (a single `cat` costs
//! no more than a directory batch did), each next one twice as much up to
//! [`MAX_WINDOW`]; the next window starts when the reader passes the
//! middle of the last one, so a stream has at most one and a half windows
//! unread; at most [`MAX_STREAMS`] streams (readers in different places)
//! are followed, and everything lands in the byte-bounded chunk cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::cache::{Claim, Slot};
use super::readahead::SMALL_FILE;
use super::{chunk_weight, load_chunk, lock, ChunkTable, Vfs, VfsError};
use crate::error::Result as EngineResult;
use crate::format::pack::{BlobKind, FrameRecord};
use crate::format::tree::NodeKind;
use crate::frame_passes::{Passes, Wanted};
use crate::id::Id;
use crate::index::{BlobLocation, IndexReader};
use crate::repo::Repository;

/// The largest window, in bytes of file data.
const MAX_WINDOW: u64 = 16 << 20;
/// Readers followed at once.
const MAX_STREAMS: usize = 4;
/// Entries a window walks past at most (directories and files without
/// data cost a tree read, not a byte of budget).
const MAX_ENTRIES: usize = 50_000;
/// How far ahead of a sequential reader of a large file chunks are loaded
/// from a remote store.
const FILE_RUN: u64 = 16 << 20;
/// Stored bytes of a window's GETs in flight at once.
const IN_FLIGHT_BYTES: u64 = 64 << 20;

/// Where a file lies in its snapshot: the snapshot's root tree, then the
/// index of each directory on the way and of the file itself. Ordered as
/// a depth-first walk meets the entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub root: Id,
    pub path: Vec<u32>,
}

struct Stream {
    root: Id,
    /// The first window started here.
    start: Vec<u32>,
    /// Entries up to here (exclusive) are loaded or loading.
    end: Vec<u32>,
    /// A read at or past this starts the next window.
    next_at: Vec<u32>,
    /// Bytes of the next window.
    window: u64,
    running: bool,
    /// Last use, for replacing the least recently used stream.
    used: u64,
}

pub(super) struct Streams {
    streams: Mutex<(Vec<Stream>, u64)>,
}

impl Streams {
    pub(super) fn new() -> Streams {
        Streams { streams: Mutex::new((Vec::new(), 0)) }
    }
}

/// What one window loads: the frames of its small files' chunks (claimed),
/// and where the next window starts.
struct Planned {
    frames: HashMap<(Id, u64), FrameJob>,
    end: Vec<u32>,
    next_at: Vec<u32>,
}

/// A chunk a window loads: its id, where it is, and the claim its reader
/// waits on.
type Piece = (Id, BlobLocation, Claim<Id, Arc<[u8]>>);

/// A frame a window fetches, and the chunks cut from it.
struct FrameJob {
    record: FrameRecord,
    pieces: Vec<Piece>,
}

impl Vfs {
    /// The file at `pos` is being read from its start: follow the reader
    /// (see the module comment). Returns at once; the loading runs in the
    /// background.
    pub(super) fn readahead_walk(self: &Arc<Self>, pos: Position) {
        let first = self.opts.dir_readahead_bytes;
        if first == 0 || pos.path.is_empty() {
            return;
        }
        let (from, budget) = {
            let mut g = lock(&self.streams.streams);
            let (streams, clock) = &mut *g;
            *clock += 1;
            let now = *clock;
            // The stream whose window holds the file; while a window is
            // being planned its end is not known, and a reader ahead of it
            // waits for it rather than starting another stream.
            let found = streams
                .iter_mut()
                .filter(|s| s.root == pos.root && s.start <= pos.path && (pos.path < s.end || s.running))
                .max_by(|a, b| a.start.cmp(&b.start));
            match found {
                Some(s) => {
                    s.used = now;
                    if s.running || pos.path < s.next_at {
                        return;
                    }
                    s.running = true;
                    (s.end.clone(), s.window)
                }
                None => {
                    // From the directory's first entry: a copier may read a
                    // directory in any order.
                    let mut from = pos.path.clone();
                    if let Some(last) = from.last_mut() {
                        *last = 0;
                    }
                    let s = Stream {
                        root: pos.root,
                        start: from.clone(),
                        end: from.clone(),
                        next_at: from.clone(),
                        window: first,
                        running: true,
                        used: now,
                    };
                    if streams.len() < MAX_STREAMS {
                        streams.push(s);
                    } else {
                        match streams.iter_mut().filter(|s| !s.running).min_by_key(|s| s.used) {
                            Some(old) => *old = s,
                            None => return,
                        }
                    }
                    (from, first)
                }
            }
        };
        let work = self.work.start();
        let vfs = self.clone();
        rayon::spawn(move || {
            let _work = work;
            let planned = vfs.plan_window(&pos.root, &from, budget);
            {
                let mut g = lock(&vfs.streams.streams);
                let stream = g.0.iter_mut().find(|s| s.root == pos.root && s.running && s.end == from);
                if let Some(s) = stream {
                    s.running = false;
                    s.end = planned.end.clone();
                    s.next_at = planned.next_at.clone();
                    s.window = (budget * 2).clamp(budget, MAX_WINDOW.max(budget));
                }
            }
            load_window(&vfs.repo, planned.frames);
        });
    }

    /// The small files of the snapshot `root` from `from` on, in
    /// depth-first order, until `budget` bytes of them: their chunks are
    /// claimed as the walk meets them, so that a reader close behind
    /// waits for the window's GET rather than making its own.
    fn plan_window(&self, root: &Id, from: &[u32], budget: u64) -> Planned {
        let mut w = Walk { budget, bytes: 0, entries: 0, frames: HashMap::new(), end: None, next_at: None };
        // A tree or the index that cannot be read ends the stream here;
        // the reads meet the same error and report it.
        let walked = self.repo.index().and_then(|i| i.reader()).map_err(VfsError::from).and_then(|reader| {
            let mut prefix = Vec::new();
            self.walk_window(&reader, root, from, &mut prefix, &mut w)
        });
        // The walk reached the snapshot's end (or failed): nothing follows.
        let end = match (walked, w.end) {
            (Ok(_), Some(end)) => end,
            _ => vec![u32::MAX],
        };
        let next_at = w.next_at.unwrap_or_else(|| end.clone());
        Planned { frames: w.frames, end, next_at }
    }

    /// One directory of [`Vfs::plan_window`]'s walk; `true` when the window is full.
    fn walk_window(
        &self,
        reader: &IndexReader,
        tree: &Id,
        from: &[u32],
        prefix: &mut Vec<u32>,
        w: &mut Walk,
    ) -> super::Result<bool> {
        let start = from.first().copied().unwrap_or(0);
        let mut full = false;
        let mut failed = None;
        self.for_each_node(tree, start, |i, node| {
            if w.bytes >= w.budget || w.entries >= MAX_ENTRIES {
                let mut end = prefix.clone();
                end.push(i);
                w.end = Some(end);
                full = true;
                return true;
            }
            w.entries += 1;
            match node.kind {
                NodeKind::Dir => {
                    let Some(sub) = node.subtree else { return false };
                    // Within the entry the walk starts at, from where it
                    // starts; every later directory from its beginning.
                    let rest = if i == start && from.len() > 1 { &from[1..] } else { &[][..] };
                    prefix.push(i);
                    let r = self.walk_window(reader, &sub, rest, prefix, w);
                    prefix.pop();
                    match r {
                        Ok(true) => {
                            full = true;
                            true
                        }
                        Ok(false) => false,
                        Err(e) => {
                            failed = Some(e);
                            true
                        }
                    }
                }
                NodeKind::File if node.size <= SMALL_FILE && !node.chunks.is_empty() => {
                    let key = (*tree, i);
                    let cached = lock(&self.tables).get(&key).cloned();
                    let table = match cached {
                        Some(t) => t,
                        None => match ChunkTable::build(reader, tree, node) {
                            Ok(t) => {
                                let t = Arc::new(t);
                                lock(&self.tables).put(key, t.clone());
                                t
                            }
                            // Left for the reader to find and report.
                            Err(_) => return false,
                        },
                    };
                    self.claim_chunks(&table, &mut w.frames);
                    w.bytes += node.size;
                    if w.next_at.is_none() && w.bytes * 2 >= w.budget {
                        let mut at = prefix.clone();
                        at.push(i);
                        w.next_at = Some(at);
                    }
                    false
                }
                _ => false,
            }
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(full),
        }
    }

    /// Claims the chunks of `table` that are neither cached nor loading,
    /// grouped by frame.
    fn claim_chunks(&self, table: &ChunkTable, frames: &mut HashMap<(Id, u64), FrameJob>) {
        for (id, loc) in &table.chunks {
            self.claim_chunk(id, loc, frames);
        }
    }

    /// Claims one chunk unless it is cached or loading; `false` for a chunk
    /// a window does not load (not file data).
    fn claim_chunk(&self, id: &Id, loc: &BlobLocation, frames: &mut HashMap<(Id, u64), FrameJob>) -> bool {
        if loc.kind != BlobKind::Data {
            return false;
        }
        if let Slot::Claimed(claim) = self.chunks.claim(id, chunk_weight) {
            frames
                .entry((loc.pack, loc.frame.offset))
                .or_insert_with(|| FrameJob { record: loc.frame, pieces: Vec::new() })
                .pieces
                .push((*id, *loc, claim));
        }
        true
    }

    /// From a remote store, a sequential reader of a large file at chunk
    /// `from`: once less than half of [`FILE_RUN`] after it is loaded or
    /// loading, the chunks up to [`FILE_RUN`] ahead are claimed and loaded
    /// as a window is, pack by pack and side by side. One GET per chunk,
    /// two at a time on the thread pool, read the 20 large files of the
    /// www shape (237 MiB) from s3s-fs at under 30 MB/s.
    pub(super) fn prefetch_run(&self, t: &ChunkTable, from: usize) {
        let len = |k: usize| t.ends[k] - t.start(k);
        let mut ahead = 0u64;
        let mut k = from;
        while k < t.chunks.len() && ahead < FILE_RUN / 2 && self.chunks.present(&t.chunks[k].0) {
            ahead += len(k);
            k += 1;
        }
        if k >= t.chunks.len() || ahead >= FILE_RUN / 2 {
            return;
        }
        let mut frames = HashMap::new();
        while k < t.chunks.len() && ahead < FILE_RUN {
            let (id, loc) = &t.chunks[k];
            if !self.claim_chunk(id, loc, &mut frames) && !self.chunks.present(id) {
                self.prefetch(t, k);
            }
            ahead += len(k);
            k += 1;
        }
        if frames.is_empty() {
            return;
        }
        let work = self.work.start();
        let repo = self.repo.clone();
        rayon::spawn(move || {
            let _work = work;
            load_window(&repo, frames);
        });
    }
}

/// Loads the claimed chunks of a window pack by pack (a window with delta
/// frames in one more planned pass for their bases: frame_passes.rs).
fn load_window(repo: &Repository, frames: HashMap<(Id, u64), FrameJob>) {
    if frames.is_empty() {
        return;
    }
    let (wanted, jobs): (Vec<Wanted>, Vec<Mutex<Option<FrameJob>>>) = frames
        .into_iter()
        .map(|((pack, _), f)| (Wanted { pack, record: f.record, chunk: f.pieces[0].0 }, Mutex::new(Some(f))))
        .unzip();
    let passes = Passes { repo, in_flight: IN_FLIGHT_BYTES, stop: &|| false, what: "mount readahead worker" };
    // A panicking worker is caught below: its frames are loaded alone.
    let _ = passes.fetch(&wanted, &|n, raw| {
        if let Some(job) = lock(&jobs[n]).take() {
            complete_frame(repo, job, raw);
        }
    });
    // Every claim is completed above; a frame a panicking worker left
    // is loaded alone, so no reader waits for it in vain.
    for job in jobs {
        if let Some(job) = job.into_inner().unwrap_or_else(|p| p.into_inner()) {
            for (id, loc, claim) in job.pieces {
                let _ = claim.complete(load_chunk(repo, &id, &loc));
            }
        }
    }
}

/// Hands each chunk of a decoded frame, verified, to its claim. Whatever
/// cannot be had from it (a failed GET, a frame that does not open or
/// verify, a delta whose base failed) is loaded alone, by the reader's own
/// path, which names the pack and frame in its error.
fn complete_frame(repo: &Repository, job: FrameJob, raw: EngineResult<&[u8]>) {
    for (id, loc, claim) in job.pieces {
        let start = loc.offset_in_frame as usize;
        let blob = raw.as_ref().ok().and_then(|r| r.get(start..start + loc.raw_len as usize));
        match blob {
            Some(b) if repo.blob_id(b) == id => {
                let _ = claim.complete(Ok(Arc::from(b)));
            }
            _ => {
                let _ = claim.complete(load_chunk(repo, &id, &loc));
            }
        }
    }
}

/// The state of [`Vfs::plan_window`]'s walk.
struct Walk {
    budget: u64,
    bytes: u64,
    entries: usize,
    frames: HashMap<(Id, u64), FrameJob>,
    end: Option<Vec<u32>>,
    next_at: Option<Vec<u32>>,
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::ops::backup::{backup, BackupOptions};
    use crate::progress::NoProgress;
    use crate::repo::{InitOptions, Repository};
    use crate::storage::{FileKind, MemoryStorage, MemoryStorageOptions, Storage};
    use crate::test_data::pseudo_random;
    use crate::vfs::{Entry, VfsError, VfsOptions};

    /// From a store the engine treats as remote, one window loads the small
    /// files of four directories, verifying each chunk itself (it does not
    /// go through the blob reader): a damaged frame fails exactly the files
    /// whose chunks lie in it, each read an error naming the pack, never
    /// wrong bytes, and every other file reads back right.
    #[test]
    fn a_window_loads_across_directories_and_a_damaged_frame_fails_only_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(MemoryStorage::new(MemoryStorageOptions::default()));
        let opts = InitOptions { frame_size: 64 * 1024, ..Default::default() };
        let repo = Repository::init_cached(storage.clone(), &opts, &dir.path().join("cache")).unwrap();
        let src = dir.path().join("src");
        let content = |d: u64, i: u64| pseudo_random(10_000, d * 100 + i + 1);
        for d in 0..4u64 {
            std::fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
            for i in 0..20u64 {
                std::fs::write(src.join(format!("d{d}/f{i:02}")), content(d, i)).unwrap();
            }
        }
        let done =
            backup(&repo, BackupOptions { paths: vec![src.clone()], ..Default::default() }, &NoProgress).unwrap();
        let snapshot = repo.load_snapshot(&done.snapshot_id).unwrap();
        let frame_of = |d: u64, i: u64| {
            let path = src.join(format!("d{d}/f{i:02}"));
            let crate::ops::tree_walk::Located::Node(n) =
                crate::ops::tree_walk::locate(&repo, &snapshot, path.to_str().unwrap()).unwrap()
            else {
                panic!("not a file")
            };
            let l = repo.lookup_blob(&n.chunks[0]).unwrap().unwrap();
            (l.pack, l.frame)
        };
        let (pack, frame) = frame_of(1, 5);
        let hex = pack.to_hex();
        let mut bytes = storage.get(FileKind::Pack, &hex).unwrap();
        bytes[(frame.offset + u64::from(frame.stored_len) / 2) as usize] ^= 0x40;
        storage.put(FileKind::Pack, &hex, &bytes).unwrap();
        let damaged: HashSet<(u64, u64)> = (0..4)
            .flat_map(|d| (0..20).map(move |i| (d, i)))
            .filter(|&(d, i)| frame_of(d, i) == (pack, frame))
            .collect();
        assert!(!damaged.is_empty() && damaged.len() < 20, "{damaged:?}");

        let repo = Repository::open_cached_with(storage, &dir.path().join("cache"), None).unwrap();
        let vfs = Arc::new(Vfs::new(Arc::new(repo), VfsOptions::default()));
        let snap = vfs.items(&Entry::Snapshots).remove(0).1;
        let Entry::Snapshot(s) = &snap else { panic!("not a snapshot") };
        let root = s.tree;
        // Each component's position, from the snapshot's root.
        let mut path = Vec::new();
        let mut e = snap.clone();
        for c in src.to_str().unwrap().split('/').filter(|c| !c.is_empty()) {
            e = vfs.lookup(&e, c.as_bytes()).unwrap().unwrap();
            let Entry::Node { index, .. } = e else { panic!() };
            path.push(index);
        }
        let files: Vec<((u64, u64), Entry)> = (0..4u64)
            .flat_map(|d| {
                let sub = vfs.lookup(&e, format!("d{d}").as_bytes()).unwrap().unwrap();
                (0..20u64).map(move |i| (d, i, sub.clone()))
            })
            .map(|(d, i, sub)| ((d, i), vfs.lookup(&sub, format!("f{i:02}").as_bytes()).unwrap().unwrap()))
            .collect();
        let Entry::Node { index: d0, .. } = vfs.lookup(&e, b"d0").unwrap().unwrap() else { panic!() };
        let Entry::Node { index: f0, .. } = files[0].1 else { panic!() };
        path.extend([d0, f0]);
        // One read at the start of d0: the window covers all four directories.
        vfs.readahead_at(&files[0].1, || Some(Position { root, path: path.clone() }));
        let deadline = Instant::now() + Duration::from_secs(20);
        let good = || files.iter().filter(|(k, _)| !damaged.contains(k));
        while !good().all(|(_, f)| vfs.read_is_cached(&vfs.open(f).unwrap(), 0, u32::MAX)) {
            assert!(Instant::now() < deadline, "the window did not load the other directories");
            std::thread::sleep(Duration::from_millis(5));
        }
        for ((d, i), f) in &files {
            let read = vfs.read_at(&vfs.open(f).unwrap(), 0, u32::MAX);
            match (damaged.contains(&(*d, *i)), read) {
                (false, Ok(b)) => assert!(*b == content(*d, *i), "d{d}/f{i:02} differs"),
                (true, Err(VfsError::Engine(e))) => assert!(e.to_string().contains(&hex), "{e}"),
                (true, Ok(_)) => panic!("d{d}/f{i:02} of the damaged frame was read"),
                (_, Err(e)) => panic!("d{d}/f{i:02}: {e}"),
            }
        }
    }
}
