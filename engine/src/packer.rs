//! The write side of the repository: turns blobs into packs.
//!
//! ```text
//! BlobSink::store ──(bounded)──> framer ──(bounded)──> compressors (N threads)
//!      ──(bounded)──> pack writer ──> staged file ──> storage.put_file(pack) ──> index db ──> index files
//! ```
//! * `BlobSink::store` hashes, drops blobs the repository or this run
//!   already has, and queues new ones. Raw bytes in flight are bounded by a
//!   byte budget, so memory does not grow with input size.
//! * The framer groups consecutive small blobs into one frame (about
//!   `frame_size` raw bytes), so a 6 KB mail message is compressed together
//!   with its neighbours instead of alone; big blobs get a frame each.
//! * Compressors run zstd in parallel and keep a frame raw when compression
//!   does not pay. Stream chunks (database dumps) are framed apart from
//!   files and compressed at the repository's stream level.
//! * The pack writer fills one pack per blob kind (trees apart from data, so
//!   browsing never reads data packs), appending each frame to the pack's
//!   staged file as it comes (a pack is never whole in memory), and hands
//!   full packs to uploader threads, which store each durably (a local
//!   repository's fsync and rename); every few packs (and at the end) an
//!   index file lists them and the index database records them. Order
//!   matters: a pack is durable before anything refers to it, and until the
//!   database has a blob, the in-process `pending` set answers dedup for it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::crypto::{Keys, Purpose};
use crate::error::{Error, Result};
use crate::format::index_file::{self, PackEntry};
use crate::format::pack::{self, BlobKind, BlobRecord, FrameCodec, FrameRecord, Trailer};
use crate::format::{delta, sealed};
use crate::id::Id;
use crate::index::IndexReader;
use crate::repo::Repository;
use crate::storage::{FileKind, StagedFile};

/// Raw blob bytes allowed in flight between `store` and compression.
/// 8 MiB: with 16 the www first backup peaked 7-10 MiB higher (alternating
/// runs, session 13) at the same speed; the compressors still have four
/// maximum-size chunks queued at any time.
const IN_FLIGHT_BUDGET: usize = 8 * 1024 * 1024;
/// The first room of an open group of tree blobs.
const TREE_GROUP_START: usize = 64 * 1024;
/// An index file is written after this many packs, bounding what a crash
/// leaves unlisted (such packs are adopted by the next backup anyway).
const PACKS_PER_INDEX_FILE: usize = 32;
/// ... or once the packs not yet listed hold this many blobs. Until its
/// pack is listed, the packer keeps a blob's trailer record and its entry
/// in the pending set, and the listing holds its index file entry and its
/// row: about 200 bytes a blob, bounded by this rather than by the size of
/// the backup (32 packs of mail are some 250,000 messages; restic's index
/// files hold at most 50,000 blobs).
const BLOBS_PER_INDEX_FILE: usize = 16_384;
/// A pack this packer writes is closed at this many blobs (readers accept
/// up to `index_file::MAX_BLOBS_PER_PACK`): 16 MiB of 30-byte files would
/// be over 500,000 blobs held in one open pack and listed at once. A pack
/// may go past it by one frame.
const BLOBS_PER_PACK: usize = BLOBS_PER_INDEX_FILE;

/// Bounds the raw bytes queued between `store` and the compressors.
///
/// No wait here may depend on work that only the waiter (or another
/// waiter) can cause, or a backup hangs: budget is held only by blobs that
/// the downstream stages consume unconditionally (queued blobs, big blobs
/// framed alone, frames being compressed or waiting for the pack writer,
/// which writes them whatever comes next), never by the framer's open
/// groups, which wait for further input (see `framer`). Every wait also
/// ends when the packer fails or the producer's `abort` says so.
struct Budget {
    state: Mutex<BudgetState>,
    freed: Condvar,
    limit: usize,
}

#[derive(Default)]
struct BudgetState {
    used: usize,
    /// Blobs too big to share the budget are waiting for it to drain;
    /// small blobs queue behind them so that a steady stream of small files
    /// cannot starve a big directory's tree blob.
    big_waiting: usize,
    /// Producers waiting for budget: a release wakes them only when there
    /// are some (a wake is a system call, and small blobs release budget
    /// one by one: 200,000 calls in a mail spool's backup).
    waiting: usize,
}

impl Budget {
    fn new(limit: usize) -> Budget {
        Budget { state: Mutex::new(BudgetState::default()), freed: Condvar::new(), limit }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        // Two counters updated in single statements: a panic elsewhere
        // cannot leave them inconsistent, so a poisoned lock stays usable
        // (the panic itself is reported by the thread that panicked).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `n` bytes of budget (at most the whole budget: a blob larger
    /// than it waits for an empty pipeline and then goes alone). Returns
    /// the amount taken, to be given back with `release`.
    fn acquire(&self, n: usize, stopped: &dyn Fn() -> bool) -> Result<usize> {
        let n = n.min(self.limit);
        let big = n > self.limit / 2;
        let mut s = self.lock();
        if big {
            s.big_waiting += 1;
        }
        loop {
            let fits = s.used == 0 || s.used + n <= self.limit;
            if fits && (big || s.big_waiting == 0) {
                break;
            }
            if stopped() {
                if big {
                    s.big_waiting -= 1;
                    drop(s);
                    self.freed.notify_all();
                }
                return Err(Error::Interrupted);
            }
            s.waiting += 1;
            s = self.freed.wait_timeout(s, std::time::Duration::from_millis(50)).unwrap_or_else(|p| p.into_inner()).0;
            s.waiting -= 1;
        }
        if big {
            s.big_waiting -= 1;
        }
        s.used += n;
        Ok(n)
    }

    /// Whether at most half the budget is taken: the compressors keep up
    /// with what is stored.
    fn half_free(&self) -> bool {
        self.lock().used <= self.limit / 2
    }

    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut s = self.lock();
        s.used = s.used.saturating_sub(n);
        let wake = s.waiting > 0;
        drop(s);
        if wake {
            self.freed.notify_all();
        }
    }
}

struct BlobJob {
    id: Id,
    kind: BlobKind,
    data: Vec<u8>,
    encoding: Encoding,
    /// A stream chunk: compressed at the stream level.
    stream: bool,
    budget: usize,
}

/// How a blob may be stored besides plainly (zstd or raw).
enum Encoding {
    Plain,
    /// A stream chunk that may be stored as a delta against `base`
    /// (format::delta): the compressor keeps the delta if it is smaller
    /// than half the chunk compressed alone.
    TryDelta {
        base: Id,
        base_data: std::sync::Arc<[u8]>,
    },
    /// Already a delta (prune copies a delta frame as it is).
    Delta {
        base: Id,
        delta: Vec<u8>,
    },
}

struct FrameJob {
    kind: BlobKind,
    raw: Vec<u8>,
    /// (id, offset in frame, length)
    blobs: Vec<(Id, u32, u32)>,
    /// Not `Plain` only for a frame of one blob.
    encoding: Encoding,
    /// Stream chunks: compressed at the stream level.
    stream: bool,
    budget: usize,
}

struct CompressedFrame {
    kind: BlobKind,
    stored: Vec<u8>,
    raw_len: u32,
    codec: FrameCodec,
    blobs: Vec<(Id, u32, u32)>,
    /// The frame's budget (a big blob's; none for a group of small ones),
    /// given back once the pack writer has written it: a frame sealed but
    /// not yet written is memory as much as a raw one.
    budget: usize,
}

/// Gives budget back when dropped, on every path out of the pack writer's
/// handling of a frame (written, drained after a failure, or an error).
struct Held<'a>(&'a Budget, usize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// Blobs queued or written by this run but not yet in the index database,
/// and a counter of database commits, so that long-lived index readers know
/// when to refresh.
pub struct Pending {
    ids: Mutex<HashSet<Id>>,
    generation: AtomicU64,
}

impl Pending {
    fn new() -> Pending {
        Pending { ids: Mutex::new(HashSet::new()), generation: AtomicU64::new(0) }
    }

    /// After a commit made `blobs` visible in the database: bump the
    /// generation first, so a reader refreshed from now on sees them, then
    /// stop answering for them here.
    fn committed<'a>(&self, blobs: impl Iterator<Item = &'a Id>) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut ids) = self.ids.lock() {
            for id in blobs {
                ids.remove(id);
            }
        }
    }
}

/// What the packer wrote.
#[derive(Debug, Default, Clone)]
pub struct PackerStats {
    pub blobs_added: u64,
    pub bytes_added: u64,
    pub packs_written: u64,
    pub bytes_stored: u64,
    /// The packs written, in the order their uploads finished.
    pub packs: Vec<Id>,
}

/// State shared by every stage; the first error stops them all.
struct Shared {
    failed: AtomicBool,
    first_error: Mutex<Option<Error>>,
    budget: Budget,
}

impl Shared {
    fn fail(&self, e: Error) {
        if let Ok(mut slot) = self.first_error.lock() {
            if slot.is_none() {
                *slot = Some(e);
            }
        }
        self.failed.store(true, Ordering::SeqCst);
        self.budget.freed.notify_all();
    }

    /// Stops the stages without an error of its own (the failing stage
    /// returns its error itself).
    fn stop(&self) {
        self.failed.store(true, Ordering::SeqCst);
        self.budget.freed.notify_all();
    }

    fn take_error(&self) -> Option<Error> {
        self.first_error.lock().ok().and_then(|mut s| s.take())
    }
}

/// Where producers hand blobs to the packer. Shared by reference between
/// the worker threads of a backup.
pub struct BlobSink<'s> {
    repo: &'s Repository,
    tx: Sender<BlobJob>,
    pending: &'s Pending,
    shared: &'s Shared,
    /// The producer's own reason to stop (a cancelled backup): ends a wait
    /// for budget that the pipeline alone would not end.
    abort: &'s (dyn Fn() -> bool + Sync),
    blobs_added: AtomicU64,
    bytes_added: AtomicU64,
}

impl BlobSink<'_> {
    /// Hashes `data` and stores it unless the repository (as seen by
    /// `index`) or this run already has it. Returns the blob id.
    pub fn store(&self, index: &IndexReader, kind: BlobKind, data: &[u8]) -> Result<Id> {
        let id = self.repo.blob_id(data);
        self.store_as(index, id, kind, data, false)?;
        Ok(id)
    }

    /// An index reader for dedup lookups, reused across calls and refreshed
    /// only after this run committed to the database: a read transaction per
    /// file would cost several syscalls each (the database is shared between
    /// processes). Blobs of this run not yet committed are answered by the
    /// pending set; another process's blobs seen a little late only cost a
    /// duplicate, never a loss.
    pub fn index_reader<'c>(&self, cache: &'c mut Option<(u64, IndexReader)>) -> Result<&'c IndexReader> {
        let generation = self.pending.generation.load(Ordering::SeqCst);
        if cache.as_ref().is_none_or(|(g, _)| *g != generation) {
            *cache = Some((generation, self.repo.index()?.reader()?));
        }
        match cache {
            Some((_, reader)) => Ok(reader),
            None => Err(Error::Interrupted),
        }
    }

    /// Like [`store`](Self::store) for a blob whose id the caller computed.
    pub fn store_with_id(&self, index: &IndexReader, id: Id, kind: BlobKind, data: &[u8]) -> Result<()> {
        self.store_as(index, id, kind, data, false)
    }

    fn store_as(&self, index: &IndexReader, id: Id, kind: BlobKind, data: &[u8], stream: bool) -> Result<()> {
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(self.stopped());
        }
        if self.present(index, &id)? {
            return Ok(());
        }
        self.enqueue(id, kind, data, Encoding::Plain, stream)
    }

    /// Stores blobs of one kind whose ids the caller computed, asking the
    /// index about all of them at once ([`IndexReader::contains_batch`]):
    /// the disk reads of the present ones overlap instead of waiting one
    /// after the other. The same rules as [`store_with_id`](Self::store_with_id)
    /// blob by blob (a repeat in `blobs` is queued once).
    pub fn store_batch(&self, index: &IndexReader, kind: BlobKind, blobs: &[(Id, &[u8])]) -> Result<()> {
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(self.stopped());
        }
        let ids: Vec<Id> = blobs.iter().map(|(id, _)| *id).collect();
        for ((id, data), present) in blobs.iter().zip(self.present_batch(index, &ids)?) {
            if !present {
                self.enqueue(*id, kind, data, Encoding::Plain, false)?;
            }
        }
        Ok(())
    }

    /// Stores a blob although the repository already has it: `prune`
    /// copies the live blobs out of packs it is going to delete, and those
    /// blobs are, by definition, in the index. The caller has verified
    /// `data` against `id`. A blob already queued in this run is still
    /// stored only once.
    pub fn store_copy(&self, id: Id, kind: BlobKind, data: &[u8]) -> Result<()> {
        self.enqueue(id, kind, data, Encoding::Plain, false)
    }

    /// [`store_copy`](Self::store_copy) of a chunk stored as a delta
    /// against `base` (prune keeps a delta a delta; its base stays live).
    /// The caller has decoded `delta` against the base and verified the
    /// result, `data`, against `id`.
    pub fn store_copy_delta(&self, id: Id, data: &[u8], base: Id, delta: Vec<u8>) -> Result<()> {
        self.enqueue(id, BlobKind::Data, data, Encoding::Delta { base, delta }, true)
    }

    /// Like [`store_with_id`](Self::store_with_id) for a stream chunk that
    /// has a counterpart `base` in the parent snapshot's stream (a plainly
    /// stored chunk): stored as a delta against it when that is smaller
    /// than half the chunk compressed alone (format-spec/v2/streams.md §4).
    pub fn store_stream_chunk(
        &self,
        index: &IndexReader,
        id: Id,
        data: &[u8],
        base: Option<(Id, std::sync::Arc<[u8]>)>,
    ) -> Result<()> {
        match base {
            Some((base, base_data)) if base != id && self.repo.writes_stream_deltas() => {
                if self.shared.failed.load(Ordering::Relaxed) {
                    return Err(self.stopped());
                }
                if self.present(index, &id)? {
                    return Ok(());
                }
                self.enqueue(id, BlobKind::Data, data, Encoding::TryDelta { base, base_data }, true)
            }
            _ => self.store_as(index, id, BlobKind::Data, data, true),
        }
    }

    /// Whether dedup may rely on the repository's copy of `id`.
    fn present(&self, index: &IndexReader, id: &Id) -> Result<bool> {
        // Format v2: a blob counts as present only in a pack no prune mark
        // names (format-spec/v2/protocol.md §4 B5).
        let marked = self.repo.marked_packs();
        if marked.is_empty() {
            return index.contains(id);
        }
        match index.lookup(id)? {
            Some(loc) => self.repo.outside_marks(&loc, &marked),
            None => Ok(false),
        }
    }

    /// [`present`](Self::present) of many ids, with one batched lookup.
    fn present_batch(&self, index: &IndexReader, ids: &[Id]) -> Result<Vec<bool>> {
        let marked = self.repo.marked_packs();
        if marked.is_empty() {
            return index.contains_batch(ids);
        }
        index
            .lookup_batch(ids)?
            .into_iter()
            .map(|loc| match loc {
                Some(loc) => self.repo.outside_marks(&loc, &marked),
                None => Ok(false),
            })
            .collect()
    }

    /// Queues a blob for the framer unless this run queued it already.
    fn enqueue(&self, id: Id, kind: BlobKind, data: &[u8], encoding: Encoding, stream: bool) -> Result<()> {
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(self.stopped());
        }
        if u32::try_from(data.len()).is_err() {
            return Err(Error::InvalidArgument {
                what: "blob",
                reason: format!("{} bytes exceed the 4 GiB blob limit", data.len()),
            });
        }
        if !crate::sync::lock(&self.pending.ids, "the packer's pending blob ids")?.insert(id) {
            return Ok(());
        }
        let stopped = || self.shared.failed.load(Ordering::Relaxed) || (self.abort)();
        // A delta candidate's base is held in flight too.
        let extra = match &encoding {
            Encoding::TryDelta { base_data, .. } => base_data.len(),
            _ => 0,
        };
        let budget = self.shared.budget.acquire(data.len() + extra, &stopped)?;
        self.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.bytes_added.fetch_add(data.len() as u64, Ordering::Relaxed);
        let job = BlobJob { id, kind, data: data.to_vec(), encoding, stream, budget };
        if self.tx.send(job).is_err() {
            self.shared.budget.release(budget);
            return Err(self.stopped());
        }
        Ok(())
    }

    /// The error that stopped the pipeline, reported once by `run`; callers
    /// just see that they must stop.
    fn stopped(&self) -> Error {
        Error::Interrupted
    }

    /// Whether the raw bytes queued for compression take at most half
    /// the pipeline's budget: what is stored now is compressed about as
    /// fast as it comes (incompressible data, or little of it).
    pub fn keeps_up(&self) -> bool {
        self.shared.budget.half_free()
    }

    pub fn is_failed(&self) -> bool {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Stops the pipeline with `e` (a producer's fatal error).
    pub fn fail(&self, e: Error) {
        self.shared.fail(e)
    }
}

/// Runs the packer stages and calls `produce` with the sink; when `produce`
/// returns, drains the pipeline, writes the last packs and index file, and
/// returns `produce`'s value with the packer's figures. Packs completed
/// before an error are kept (and indexed) so that the next backup reuses
/// them. `adopt` are packs found unlisted at start; the first index file of
/// this run lists them so they are not left behind again.
/// `abort` is polled while a producer waits for room in the pipeline, so
/// that a cancel ends every wait.
pub fn run<T>(
    repo: &Repository,
    adopt: Vec<PackEntry>,
    abort: &(dyn Fn() -> bool + Sync),
    produce: impl FnOnce(&BlobSink<'_>) -> Result<T>,
) -> Result<(T, PackerStats)> {
    run_with_budget(repo, adopt, abort, IN_FLIGHT_BUDGET, produce)
}

fn run_with_budget<T>(
    repo: &Repository,
    adopt: Vec<PackEntry>,
    abort: &(dyn Fn() -> bool + Sync),
    budget: usize,
    produce: impl FnOnce(&BlobSink<'_>) -> Result<T>,
) -> Result<(T, PackerStats)> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let (blob_tx, blob_rx) = bounded::<BlobJob>(64);
    // A frame queued per compressor on each side: groups of small blobs
    // hold no budget, so these capacities are what bounds them (up to
    // 1.25 frames of raw bytes each, and their sealed copies).
    let (frame_tx, frame_rx) = bounded::<FrameJob>(threads);
    let (packed_tx, packed_rx) = bounded::<CompressedFrame>(threads);
    let shared = Shared { failed: AtomicBool::new(false), first_error: Mutex::new(None), budget: Budget::new(budget) };
    let pending = Pending::new();
    let frame_size = repo.config().frame_size as usize;
    let levels = Levels { files: repo.config().compression.level, streams: repo.config().stream_level() };
    let keys = repo.keys();

    std::thread::scope(|scope| {
        let shared = &shared;
        let pending = &pending;
        scope.spawn(move || framer(blob_rx, frame_tx, frame_size, shared));
        for _ in 0..threads {
            let (rx, tx) = (frame_rx.clone(), packed_tx.clone());
            scope.spawn(move || compressor(rx, tx, levels, keys.map(|k| k.as_ref()), shared));
        }
        drop(frame_rx);
        drop(packed_tx);
        let writer = scope.spawn(move || pack_writer(repo, packed_rx, shared, pending, adopt));

        let sink = BlobSink {
            repo,
            tx: blob_tx,
            pending,
            shared,
            abort,
            blobs_added: AtomicU64::new(0),
            bytes_added: AtomicU64::new(0),
        };
        let produced = produce(&sink);
        let (blobs_added, bytes_added) =
            (sink.blobs_added.load(Ordering::Relaxed), sink.bytes_added.load(Ordering::Relaxed));
        // Dropping the sink closes the blob channel; the stages drain and
        // end in order.
        drop(sink);
        // The writer's error is the root cause when there is one (the
        // producer then only saw that the pipeline stopped).
        let mut stats = crate::sync::joined(writer.join(), "pack writer")?;
        if let Some(e) = shared.take_error() {
            return Err(e);
        }
        let produced = produced?;
        stats.blobs_added = blobs_added;
        stats.bytes_added = bytes_added;
        Ok((produced, stats))
    })
}

fn framer(rx: Receiver<BlobJob>, tx: Sender<FrameJob>, frame_size: usize, shared: &Shared) {
    // One open group per kind, so tree blobs never share frames with data,
    // and one for stream chunks, which are compressed at their own level.
    let mut groups: [Option<FrameJob>; 3] = [None, None, None];
    let send = |job: FrameJob| {
        if tx.send(job).is_err() {
            shared.fail(Error::Interrupted);
        }
    };
    for blob in rx {
        // A delta (candidate) is a frame of its own: its frame holds one chunk.
        if blob.data.len() >= frame_size || !matches!(blob.encoding, Encoding::Plain) {
            send(FrameJob {
                kind: blob.kind,
                blobs: vec![(blob.id, 0, blob.data.len() as u32)],
                raw: blob.data,
                encoding: blob.encoding,
                stream: blob.stream,
                budget: blob.budget,
            });
            continue;
        }
        let slot = &mut groups[if blob.stream { 2 } else { blob.kind as usize }];
        // Data fills its frames, so a group gets the whole frame's room at
        // once; a tree group often stays small for long (a few directories
        // between big ones) and grows as it fills.
        let room = match blob.kind {
            BlobKind::Tree => TREE_GROUP_START.min(frame_size),
            _ => frame_size + frame_size / 4,
        };
        let group = slot.get_or_insert_with(|| FrameJob {
            kind: blob.kind,
            raw: Vec::with_capacity(room),
            blobs: Vec::new(),
            encoding: Encoding::Plain,
            stream: blob.stream,
            budget: 0,
        });
        group.blobs.push((blob.id, group.raw.len() as u32, blob.data.len() as u32));
        group.raw.extend_from_slice(&blob.data);
        // An open group waits for further blobs that only producers send,
        // so it must not hold budget they may be waiting for (a directory's
        // tree blob bigger than the budget waits for an empty pipeline: it
        // hung forever behind the last small blobs of its files). The
        // group's memory is bounded anyway: one per kind, ~1.25 frames.
        shared.budget.release(blob.budget);
        if group.raw.len() >= frame_size {
            if let Some(full) = slot.take() {
                send(full);
            }
        }
    }
    for group in groups.into_iter().flatten() {
        send(group);
    }
}

/// The zstd levels of the repository's config.
#[derive(Clone, Copy)]
struct Levels {
    files: i32,
    streams: i32,
}

/// Compresses frames, and in format v2 pads and seals them (here, on the
/// compressor threads, so sealing runs in parallel too).
fn compressor(
    rx: Receiver<FrameJob>,
    tx: Sender<CompressedFrame>,
    levels: Levels,
    keys: Option<&Keys>,
    shared: &Shared,
) {
    let new = |level| {
        zstd::bulk::Compressor::new(level).map_err(|e| {
            shared.fail(Error::InvalidArgument { what: "compression level", reason: e.to_string() });
        })
    };
    let Ok(mut files) = new(levels.files) else { return };
    let Ok(mut streams) = new(levels.streams) else { return };
    let mut probe = zstd::bulk::Compressor::new(1).ok();
    for mut job in rx {
        let zstd = if job.stream { &mut streams } else { &mut files };
        let raw_len = job.raw.len() as u32;
        let (base, (stored, codec)) = match std::mem::replace(&mut job.encoding, Encoding::Plain) {
            Encoding::Delta { base, delta } => (Some(base), (delta, FrameCodec::Delta)),
            encoding => {
                let compressed = if probe.as_mut().is_some_and(|p| looks_incompressible(p, &job.raw)) {
                    None
                } else {
                    // zstd returns its bound's room (about the frame's raw
                    // size), which the frame would keep until written.
                    zstd.compress(&job.raw).ok().filter(|c| c.len() < job.raw.len()).map(|mut c| {
                        c.shrink_to_fit();
                        c
                    })
                };
                let alone = compressed.as_ref().map_or(job.raw.len(), |c| c.len());
                // streams.md §4.2: a delta only when it is smaller than half
                // the chunk compressed alone (else the base is a poor match
                // and a restore would read two frames for little gain).
                // Deltas at the file level whatever the stream level: at
                // zstd level 1 the matcher finds too little of the base (a
                // third of a changed dump's chunks came out as deltas,
                // against all but the appended tail at level 3).
                let delta = match &encoding {
                    Encoding::TryDelta { base, base_data } => delta::compress(base_data, &job.raw, levels.files.max(3))
                        .ok()
                        .filter(|d| d.len() * 2 < alone)
                        .map(|d| (*base, d)),
                    _ => None,
                };
                drop(encoding);
                match (delta, compressed) {
                    (Some((base, d)), _) => (Some(base), (d, FrameCodec::Delta)),
                    (None, Some(c)) => (None, (c, FrameCodec::Zstd)),
                    (None, None) => (None, (std::mem::take(&mut job.raw), FrameCodec::Raw)),
                }
            }
        };
        let sealed = match (keys, base) {
            (None, None) => Ok(stored),
            (Some(k), None) => sealed::seal_frame(k, &stored),
            (Some(k), Some(base)) => delta::seal(k, &base, &stored),
            (None, Some(_)) => Err(Error::Bug { what: "packer", message: "a delta frame in a v1 repository".into() }),
        };
        let stored = match sealed {
            Ok(s) => s,
            Err(e) => {
                shared.budget.release(job.budget);
                shared.fail(e);
                return;
            }
        };
        let frame = CompressedFrame { kind: job.kind, stored, raw_len, codec, blobs: job.blobs, budget: job.budget };
        if let Err(unsent) = tx.send(frame) {
            shared.budget.release(unsent.0.budget);
            shared.fail(Error::Interrupted);
            return;
        }
    }
}

/// Images, archives and media make up much of a web host; compressing them
/// at the repository's level costs a full zstd pass for nothing. Four
/// 16 KiB samples at level 1 tell well enough: if they do not shrink by 3%,
/// the frame is stored raw.
fn looks_incompressible(probe: &mut zstd::bulk::Compressor<'_>, data: &[u8]) -> bool {
    const SAMPLE: usize = 16 * 1024;
    const SAMPLES: usize = 4;
    if data.len() < SAMPLE * SAMPLES * 4 {
        return false;
    }
    let step = (data.len() - SAMPLE) / (SAMPLES - 1);
    let total = SAMPLE * SAMPLES;
    let mut packed = 0;
    for i in 0..SAMPLES {
        let sample = &data[i * step..i * step + SAMPLE];
        match probe.compress(sample) {
            Ok(c) => packed += c.len().min(SAMPLE),
            Err(_) => return false,
        }
        // Decided once even incompressible remaining samples could not
        // tip it: text and dumps stop after the first sample, which makes
        // the probe a quarter of its cost where it is not needed. The
        // decision is the one the four samples give.
        if (packed + (SAMPLES - 1 - i) * SAMPLE) * 100 <= total * 97 {
            return false;
        }
    }
    packed * 100 > total * 97
}

/// A pack being filled: written to a staged file frame by frame and
/// hashed as it grows (its id is the hash of the whole pack), so that
/// only its trailer records are in memory. Holding packs whole was most of
/// a backup's peak: 94 of 130 MB of heap on www (up to four open packs
/// when encrypted, one waiting for an uploader, one per upload).
struct OpenPack {
    file: StagedFile,
    hash: blake3::Hasher,
    trailer: Trailer,
}

impl OpenPack {
    fn new(staging: &Staging, sealed: bool) -> Result<OpenPack> {
        let file = StagedFile::create(&staging.dir, "pack", staging.steps)?;
        let mut p = OpenPack { file, hash: blake3::Hasher::new(), trailer: Trailer::default() };
        p.append(if sealed { pack::HEADER_V2 } else { pack::HEADER })?;
        Ok(p)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.append(bytes)?;
        self.hash.update(bytes);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.file.len()
    }

    fn add(&mut self, f: CompressedFrame) -> Result<()> {
        let frame = self.trailer.frames.len() as u32;
        self.trailer.frames.push(FrameRecord {
            offset: self.len(),
            stored_len: f.stored.len() as u32,
            raw_len: f.raw_len,
            codec: f.codec,
        });
        self.append(&f.stored)?;
        for (id, offset_in_frame, raw_len) in f.blobs {
            self.trailer.blobs.push(BlobRecord { id, kind: f.kind, frame, offset_in_frame, raw_len });
        }
        Ok(())
    }

    /// Appends trailer and footer; returns the finished file and the
    /// pack's entry (its id is the hash of all it holds, as `Id::hash`).
    fn seal(mut self, keys: Option<&Keys>) -> Result<(StagedFile, PackEntry)> {
        let trailer = match keys {
            Some(k) => k.seal(Purpose::PACK_TRAILER, pack::HEADER_V2, &self.trailer.encode())?,
            None => self.trailer.encode(),
        };
        let footer = pack::encode_footer(&trailer);
        self.append(&trailer)?;
        self.append(&footer)?;
        self.file.finish();
        let id = Id(*self.hash.finalize().as_bytes());
        let entry = PackEntry { pack: id, pack_len: self.len(), trailer: self.trailer };
        Ok((self.file, entry))
    }
}

/// Where open packs are staged: the storage's own staging directory, from
/// which storing one is a rename (a local repository's `tmp/`), or else a
/// scratch directory beside the index database (removed at the end, or by
/// the next scratch user if this process is killed).
struct Staging {
    dir: std::path::PathBuf,
    /// In the repository: the staged files' writes are durable steps.
    steps: bool,
    _scratch: Option<crate::scratch::Scratch>,
}

impl Staging {
    fn new(repo: &Repository) -> Result<Staging> {
        Ok(match repo.storage().staging_dir() {
            Some(dir) => Staging { dir, steps: true, _scratch: None },
            None => {
                let scratch = repo.scratch_dir()?;
                Staging { dir: scratch.path().to_path_buf(), steps: false, _scratch: Some(scratch) }
            }
        })
    }
}

/// Open packs are touched this often, so that a cleaning of `tmp/` by age
/// (30 minutes, `lock::STALE_AFTER`) never takes one that waits long for
/// its next frame for a crash's leftover.
const TOUCH_OPEN_PACKS: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Packs being written concurrently: an fsync of one pack overlaps with
/// compressing and writing the next, instead of stalling the pipeline.
/// Uploads in flight: the storage's hint (two for a disk, more for a
/// remote store, whose latency they hide), capped so that packs held in
/// memory stay bounded.
fn uploaders(repo: &Repository) -> usize {
    repo.storage().concurrency().clamp(1, 8)
}

/// Packs written but not yet listed in an index file.
struct Unlisted {
    packs: Mutex<Vec<PackEntry>>,
    packs_written: AtomicU64,
    bytes_stored: AtomicU64,
    written: Mutex<Vec<Id>>,
}

fn pack_writer(
    repo: &Repository,
    rx: Receiver<CompressedFrame>,
    shared: &Shared,
    pending: &Pending,
    adopt: Vec<PackEntry>,
) -> Result<PackerStats> {
    let pack_size = u64::from(repo.config().pack_size);
    let unlisted = Unlisted {
        packs: Mutex::new(adopt),
        packs_written: AtomicU64::new(0),
        bytes_stored: AtomicU64::new(0),
        written: Mutex::new(Vec::new()),
    };
    let staging = Staging::new(repo)?;
    // Rendezvous: a sealed pack waits in the writer until an uploader is
    // free (a remote tree pack is read into memory for the cache; data
    // packs go to S3, SFTP and WebDAV from the staged file).
    let (upload_tx, upload_rx) = bounded::<(StagedFile, PackEntry)>(0);
    let sealed = std::thread::scope(|scope| -> Result<()> {
        let uploaders: Vec<_> = (0..uploaders(repo))
            .map(|_| {
                let rx = upload_rx.clone();
                let unlisted = &unlisted;
                scope.spawn(move || -> Result<()> {
                    for (file, entry) in rx.iter() {
                        if let Err(e) = upload(repo, pending, unlisted, file, entry) {
                            shared.stop();
                            // Drain so the writer never blocks on a dead uploader.
                            for _ in rx.iter() {}
                            return Err(e);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        drop(upload_rx);
        let keys = repo.keys().map(|k| k.as_ref());
        // Per blob kind, one open pack in v1 and two in v2, where each
        // frame goes to one of them at random: the order and sizes of a
        // file's chunks inside a pack would otherwise identify known files
        // even through encryption (format-spec/v2/crypto.md).
        let slots = if keys.is_some() { 2 } else { 1 };
        let mut open: [[Option<OpenPack>; 2]; 2] = [[None, None], [None, None]];
        let mut stopped = false;
        let mut coin = [0u8; 64];
        let mut coin_used = coin.len() * 8;
        let mut touched = std::time::Instant::now();
        loop {
            if touched.elapsed() >= TOUCH_OPEN_PACKS {
                open.iter().flatten().flatten().for_each(|p| p.file.touch());
                touched = std::time::Instant::now();
            }
            let mut frame = match rx.recv_timeout(TOUCH_OPEN_PACKS) {
                Ok(frame) => frame,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            };
            let _held = Held(&shared.budget, std::mem::take(&mut frame.budget));
            if stopped || shared.failed.load(Ordering::Relaxed) {
                // Keep draining so upstream stages can finish.
                stopped = true;
                continue;
            }
            let kind = frame.kind as usize;
            let slot = if slots == 1 {
                0
            } else {
                if coin_used == coin.len() * 8 {
                    crate::crypto::fill_random(&mut coin)?;
                    coin_used = 0;
                }
                let bit = (coin[coin_used / 8] >> (coin_used % 8)) & 1;
                coin_used += 1;
                bit as usize
            };
            // Every reader accepts at most MAX_BLOBS_PER_PACK blobs and
            // MAX_FRAMES_PER_PACK frames in a pack (v2 spec 2.1), and this
            // packer keeps to BLOBS_PER_PACK: close the open pack before a
            // frame would take it past either.
            let over = open[kind][slot].as_ref().is_some_and(|p| {
                p.trailer.blobs.len() + frame.blobs.len() > BLOBS_PER_PACK.min(index_file::MAX_BLOBS_PER_PACK)
                    || p.trailer.frames.len() >= index_file::MAX_FRAMES_PER_PACK
            });
            if over {
                if let Some(full) = open[kind][slot].take() {
                    if upload_tx.send(full.seal(keys)?).is_err() {
                        stopped = true;
                        continue;
                    }
                }
            }
            let p = match &mut open[kind][slot] {
                Some(p) => p,
                none => none.insert(OpenPack::new(&staging, keys.is_some())?),
            };
            p.add(frame)?;
            if p.len() >= pack_size {
                if let Some(full) = open[kind][slot].take() {
                    stopped = upload_tx.send(full.seal(keys)?).is_err();
                }
            }
        }
        if !stopped {
            for p in open.into_iter().flatten().flatten() {
                if upload_tx.send(p.seal(keys)?).is_err() {
                    break;
                }
            }
        }
        drop(upload_tx);
        let mut result = Ok(());
        for u in uploaders {
            let r = crate::sync::joined(u.join(), "pack uploader");
            if result.is_ok() {
                result = r;
            }
        }
        result
    });
    // Whatever was written is listed, even after an error, so the next
    // backup finds it without scanning.
    let mut rest = unlisted.packs.into_inner().unwrap_or_default();
    let listed = if rest.is_empty() { Ok(()) } else { write_index_file(repo, &mut rest, Some(pending)) };
    sealed?;
    listed?;
    Ok(PackerStats {
        packs_written: unlisted.packs_written.load(Ordering::Relaxed),
        bytes_stored: unlisted.bytes_stored.load(Ordering::Relaxed),
        packs: unlisted.written.into_inner().unwrap_or_default(),
        ..Default::default()
    })
}

/// The next backup of a remote repository reads this one's trees as its
/// parent's: a tree pack's frames go into the local cache as stored
/// (sealed) once the pack is stored, so that a no-change backup fetches no
/// tree at all (format-spec/v2/remote.md section 4). Packs hold one blob
/// kind each.
fn caches_tree_frames(repo: &Repository, entry: &PackEntry) -> bool {
    repo.cache().is_some_and(|c| c.caches_files())
        && entry.trailer.blobs.first().is_some_and(|b| b.kind == crate::format::pack::BlobKind::Tree)
}

fn cache_tree_frames(repo: &Repository, entry: &PackEntry, bytes: &[u8]) {
    let Some(cache) = repo.cache().filter(|c| c.caches_files()) else { return };
    for f in &entry.trailer.frames {
        let start = f.offset as usize;
        if let Some(stored) = bytes.get(start..start + f.stored_len as usize) {
            cache.store_frame(&entry.pack, f.offset, stored);
        }
    }
}

/// Writes one pack durably, then makes it known: index database first (so
/// dedup sees it), then, every few packs, an index file.
fn upload(repo: &Repository, pending: &Pending, unlisted: &Unlisted, file: StagedFile, entry: PackEntry) -> Result<()> {
    // Delta frames are only made where the config lists the feature; a
    // pack holding one elsewhere would be unreadable by the arcs the
    // repository was made for.
    if !repo.writes_stream_deltas() && entry.trailer.frames.iter().any(|f| f.codec == FrameCodec::Delta) {
        return Err(Error::Bug {
            what: "packer",
            message: format!("pack {} holds a delta frame, and the repository lacks stream-deltas", entry.pack),
        });
    }
    let (storage, name) = (repo.storage(), entry.pack.to_hex());
    if caches_tree_frames(repo, &entry) {
        let bytes = file.store_and_read(storage.as_ref(), FileKind::Pack, &name)?;
        cache_tree_frames(repo, &entry, &bytes);
    } else {
        file.store(storage.as_ref(), FileKind::Pack, &name)?;
    }
    unlisted.packs_written.fetch_add(1, Ordering::Relaxed);
    unlisted.bytes_stored.fetch_add(entry.pack_len, Ordering::Relaxed);
    crate::sync::lock(&unlisted.written, "the packs written")?.push(entry.pack);
    let batch = {
        let mut packs = crate::sync::lock(&unlisted.packs, "the packs not yet listed")?;
        packs.push(entry);
        let blobs: usize = packs.iter().map(|p| p.trailer.blobs.len()).sum();
        if packs.len() >= PACKS_PER_INDEX_FILE || blobs >= BLOBS_PER_INDEX_FILE {
            std::mem::take(&mut *packs)
        } else {
            Vec::new()
        }
    };
    if !batch.is_empty() {
        write_index_file(repo, &mut { batch }, Some(pending))?;
    }
    Ok(())
}

/// Writes an index file for every pack that none lists yet and that this
/// process may have deduplicated against (Repository::packs_to_list_before_commit).
pub fn list_unlisted_packs(repo: &Repository) -> Result<()> {
    let mut unlisted = repo.packs_to_list_before_commit()?;
    if unlisted.is_empty() {
        return Ok(());
    }
    write_index_file(repo, &mut unlisted, None)
}

/// Lists `packs` in a new index file, then records them in the index
/// database in one transaction (each commit rewrites the B-tree paths it
/// touches, so committing per index file rather than per pack keeps the
/// database small), and only then drops their blobs from `pending`, the
/// in-process dedup set that covered them meanwhile.
fn write_index_file(repo: &Repository, packs: &mut Vec<PackEntry>, pending: Option<&Pending>) -> Result<()> {
    for (id, data, group) in repo.encode_index_files(packs, &[])? {
        repo.storage().put(FileKind::Index, &id.to_hex(), &data)?;
        repo.index()?.add_packs(group, Some(id))?;
    }
    if let Some(pending) = pending {
        pending.committed(packs.iter().flat_map(|p| &p.trailer.blobs).map(|b| &b.id));
    }
    packs.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::InitOptions;
    use bytes::Bytes;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Runs `f` on a thread and fails the test if it has not returned
    /// within `limit` (a hang must fail the test, not stall the suite).
    fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(limit).expect("did not finish: the pipeline hangs")
    }

    /// The hang of a directory with ~100k entries: its tree blob is bigger
    /// than the whole budget and waits for an empty pipeline, while the
    /// framer's open groups (data and tree) held the budget of the last
    /// small blobs until a further blob came.
    #[test]
    fn a_blob_bigger_than_the_budget_after_small_ones_does_not_hang() {
        let (ids, stored) = within(Duration::from_secs(60), || {
            let dir = tempfile::tempdir().unwrap();
            let repo = Repository::init_local(&dir.path().join("repo"), &InitOptions::default()).unwrap();
            let budget = 64 * 1024;
            let (ids, _) = run_with_budget(&repo, Vec::new(), &|| false, budget, |sink| {
                let reader = repo.index()?.reader()?;
                let mut ids = Vec::new();
                for i in 0..40u32 {
                    let kind = if i % 4 == 0 { BlobKind::Tree } else { BlobKind::Data };
                    ids.push(sink.store(&reader, kind, format!("small blob {i}").as_bytes())?);
                }
                let big = crate::test_data::pseudo_random(4 * budget, 7);
                ids.push(sink.store(&reader, BlobKind::Tree, &big)?);
                ids.push(sink.store(&reader, BlobKind::Data, b"after the big one")?);
                Ok(ids)
            })
            .unwrap();
            let index = repo.index().unwrap().reader().unwrap();
            let stored = ids.iter().filter(|id| index.contains(id).unwrap()).count();
            (ids.len(), stored)
        });
        assert_eq!(stored, ids, "not every blob was stored");
    }

    #[test]
    fn the_budget_is_half_free_until_more_than_half_is_taken() {
        let b = Budget::new(100);
        assert!(b.half_free());
        let first = b.acquire(50, &|| false).unwrap();
        assert!(b.half_free());
        let second = b.acquire(1, &|| false).unwrap();
        assert!(!b.half_free());
        b.release(second);
        assert!(b.half_free());
        b.release(first);
    }

    #[test]
    fn a_batch_stores_only_what_neither_the_repository_nor_the_batch_has() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_local(&dir.path().join("repo"), &InitOptions::default()).unwrap();
        let blob = |i: u64| crate::test_data::pseudo_random(3000 + i as usize, i + 1);
        let (_, first) = run(&repo, Vec::new(), &|| false, |sink| {
            let reader = repo.index()?.reader()?;
            (0..3).map(|i| sink.store(&reader, BlobKind::Data, &blob(i))).collect::<Result<Vec<_>>>()
        })
        .unwrap();
        assert_eq!(first.blobs_added, 3);
        // Blobs 1 and 2 are in the repository, 3 comes twice, 4 once.
        let data: Vec<Vec<u8>> = [1, 3, 2, 3, 4].into_iter().map(blob).collect();
        let ids: Vec<Id> = data.iter().map(|d| repo.blob_id(d)).collect();
        let (_, second) = run(&repo, Vec::new(), &|| false, |sink| {
            let reader = repo.index()?.reader()?;
            let blobs: Vec<(Id, &[u8])> = ids.iter().copied().zip(data.iter().map(|d| d.as_slice())).collect();
            sink.store_batch(&reader, BlobKind::Data, &blobs)
        })
        .unwrap();
        assert_eq!(second.blobs_added, 2);
        let index = repo.index().unwrap().reader().unwrap();
        assert_eq!(index.contains_batch(&ids).unwrap(), [true; 5]);
    }

    #[test]
    fn a_wait_for_budget_ends_when_the_producer_aborts() {
        let budget = std::sync::Arc::new(Budget::new(1000));
        assert_eq!(budget.acquire(800, &|| false).unwrap(), 800);
        let abort = std::sync::Arc::new(AtomicBool::new(false));
        let waiter = {
            let (budget, abort) = (budget.clone(), abort.clone());
            std::thread::spawn(move || budget.acquire(500, &|| abort.load(Ordering::SeqCst)))
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(!waiter.is_finished(), "acquired budget that is not free");
        abort.store(true, Ordering::SeqCst);
        let r = within(Duration::from_secs(10), move || waiter.join().unwrap());
        assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
    }

    #[test]
    fn a_big_blob_is_not_starved_by_small_ones() {
        let budget = std::sync::Arc::new(Budget::new(1000));
        let small = budget.acquire(100, &|| false).unwrap();
        let big = {
            let budget = budget.clone();
            std::thread::spawn(move || budget.acquire(5000, &|| false))
        };
        assert!(within(Duration::from_secs(10), {
            let budget = budget.clone();
            move || {
                while budget.lock().big_waiting == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                true
            }
        }));
        // Room for a small blob, but a big one waits first: the small one
        // queues behind it instead of keeping the budget from draining.
        let late = {
            let budget = budget.clone();
            std::thread::spawn(move || budget.acquire(100, &|| false))
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(!late.is_finished(), "a small blob overtook a waiting big one");
        budget.release(small);
        let got = within(Duration::from_secs(10), move || big.join().unwrap()).unwrap();
        assert_eq!(got, 1000);
        budget.release(got);
        assert_eq!(within(Duration::from_secs(10), move || late.join().unwrap()).unwrap(), 100);
    }

    /// Records how packs reach the storage: lent (`put`, which a remote
    /// store must copy) or handed over (`put_owned`).
    struct HowPut {
        inner: std::sync::Arc<dyn crate::storage::Storage>,
        lent: AtomicU64,
        owned: AtomicU64,
    }

    impl crate::storage::Storage for HowPut {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn local_path(&self) -> Option<&std::path::Path> {
            None
        }
        fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
            if kind == FileKind::Pack {
                self.lent.fetch_add(1, Ordering::SeqCst);
            }
            self.inner.put(kind, name, data)
        }
        fn put_owned(&self, kind: FileKind, name: &str, data: Bytes) -> Result<()> {
            if kind == FileKind::Pack {
                self.owned.fetch_add(1, Ordering::SeqCst);
            }
            self.inner.put_owned(kind, name, data)
        }
        fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
            self.inner.get(kind, name)
        }
        fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
            self.inner.get_range(kind, name, offset, len)
        }
        fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
            self.inner.size(kind, name)
        }
        fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
            self.inner.exists(kind, name)
        }
        fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
            self.inner.list(kind)
        }
        fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
            self.inner.delete(kind, name)
        }
        fn stat(&self, kind: FileKind, name: &str) -> Result<crate::storage::FileStat> {
            self.inner.stat(kind, name)
        }
        fn list_stat(&self, kind: FileKind) -> Result<Vec<(String, crate::storage::FileStat)>> {
            self.inner.list_stat(kind)
        }
        fn concurrency(&self) -> usize {
            8
        }
    }

    /// A remote store copied every pack it was lent into its client's
    /// buffer, so 8 uploads held 16 packs (a backup to S3 peaked at twice
    /// the RSS of one to a local disk): packs are handed over, each once.
    #[test]
    fn packs_are_handed_to_the_storage_not_lent() {
        use crate::storage::{MemoryStorage, MemoryStorageOptions, Storage as _};
        let mem = std::sync::Arc::new(MemoryStorage::new(MemoryStorageOptions::default()));
        let how = std::sync::Arc::new(HowPut { inner: mem, lent: AtomicU64::new(0), owned: AtomicU64::new(0) });
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions { pack_size: 1024 * 1024, frame_size: 64 * 1024, ..Default::default() };
        let repo = Repository::init_cached(how.clone(), &opts, dir.path()).unwrap();
        let (_, stats) = run(&repo, Vec::new(), &|| false, |sink| {
            let reader = repo.index()?.reader()?;
            for i in 0..48u64 {
                sink.store(&reader, BlobKind::Data, &crate::test_data::pseudo_random(100 * 1024, i + 1))?;
            }
            Ok(())
        })
        .unwrap();
        assert!(stats.packs_written >= 4, "{stats:?}");
        assert_eq!(how.lent.load(Ordering::SeqCst), 0, "a pack was lent to the storage");
        assert_eq!(how.owned.load(Ordering::SeqCst), stats.packs_written);
        assert_eq!(how.list(FileKind::Pack).unwrap().len() as u64, stats.packs_written);
    }

    #[test]
    fn incompressible_probe() {
        let mut probe = zstd::bulk::Compressor::new(1).unwrap();
        let random = crate::test_data::pseudo_random(1 << 20, 0x9E37_79B9_7F4A_7C15);
        assert!(looks_incompressible(&mut probe, &random));
        let text: Vec<u8> = b"Received: from mx1.example.org by mail.example.org\n".repeat(20_000);
        assert!(!looks_incompressible(&mut probe, &text));
        // Too small to judge: always compressed.
        assert!(!looks_incompressible(&mut probe, &random[..100_000]));
    }
}
