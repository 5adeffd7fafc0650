//! `restore`: recreates a snapshot (or parts of it) under a target
//! directory with content and every recorded piece of metadata.
//!
//! One thread walks the trees and creates directories, links and special
//! files. From a local repository, worker threads write file contents in
//! batches of consecutive files (consecutive small files share compressed
//! frames, so one worker decompresses a frame once for all of them). From
//! a remote store, where every read is a round trip, the walk hands over
//! windows of files instead, restored pack by pack (restore/packs.rs):
//! each pack's needed frames in a few large reads, written into every
//! file that holds them. Holes are kept: an all-zero chunk is skipped
//! with a seek, not written. Directory metadata is applied last, deepest
//! first, so writing into a directory does not disturb its times or
//! permissions.
//!
//! Nothing is written outside the target: names are single components
//! (enforced when trees are decoded), files are opened with O_NOFOLLOW,
//! and a hardlink may only point at a file this restore wrote.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use super::tree_walk::{self, split_path, Located, Visit};
use crate::error::{Error, IoContext, Result};
use crate::format::pack::FrameCodec;
use crate::format::tree::{Node, NodeKind, Timestamp};
use crate::id::Id;
use crate::index::BlobLocation;
use crate::patterns::PatternSet;
use crate::prefetch::{FrameKey, Prefetched};
use crate::progress::Progress;
use crate::repo::{Repository, Snapshot};

mod packs;

#[derive(Default, Clone)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Snapshot paths to restore (each with its subtree); all when empty.
    pub includes: Vec<String>,
    /// Entries matching these patterns are restored with everything below
    /// them, and the directories on the way to them (see
    /// [`crate::patterns`]; matched on the snapshot path). All when empty.
    pub include_patterns: PatternSet,
    /// Entries matching these are not restored, nor anything below them.
    pub exclude_patterns: PatternSet,
    /// Restore into a non-empty target, replacing what is in the way.
    pub overwrite: bool,
    pub cancel: Option<Arc<AtomicBool>>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreResult {
    pub files: u64,
    pub dirs: u64,
    pub other: u64,
    pub bytes: u64,
    /// Entries that could not be restored (each reported as a warning).
    pub errors: u64,
}

struct Ctx<'a> {
    repo: &'a Repository,
    progress: &'a dyn Progress,
    target: PathBuf,
    overwrite: bool,
    is_root: bool,
    files: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    cancel: Option<Arc<AtomicBool>>,
    /// CPUs this process may use, asked once: the standard library reads
    /// several cgroup files under /proc and /sys on every call, which per
    /// restored file was a measurable part of a restore of small files.
    cpus: usize,
    /// The repository is on a remote store, where reads are round trips.
    remote: bool,
    /// This process's umask, read once (None where /proc does not say).
    umask: Option<u32>,
    /// The owner (uid, gid) every file this restore creates gets, where
    /// that is known ([`created_owner`]): a file that should have it needs
    /// no `fchown`.
    created_owner: Option<(u32, u32)>,
}

impl Ctx<'_> {
    fn warn(&self, path: &Path, msg: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.progress.warn(path, msg);
    }
    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }
    fn disk_path(&self, snap_path: &[u8]) -> PathBuf {
        self.target.join(OsStr::from_bytes(snap_path))
    }
}

/// An included snapshot path, what it names, and its ancestors (restored
/// with their metadata too).
type RestoreRoot = (Vec<u8>, Located, Vec<(Vec<u8>, Node)>);

/// Granularity of hole detection on restore (a common filesystem block).
const HOLE_BLOCK: usize = 4096;

struct FileJob {
    path: PathBuf,
    node: Node,
}

pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreResult> {
    // Resolve every include before creating or writing anything: a typo
    // fails cleanly and leaves no directory behind.
    let mut roots: Vec<RestoreRoot> = Vec::new();
    let includes = if opts.includes.is_empty() { vec!["/".to_string()] } else { opts.includes.clone() };
    for inc in &includes {
        let comps = split_path(inc)?;
        let located = tree_walk::locate(repo, snapshot, inc)?;
        let mut ancestors = Vec::new();
        for i in 1..comps.len() {
            let prefix = comps[..i].join(&b'/');
            if let Located::Node(n) = tree_walk::locate(repo, snapshot, &String::from_utf8_lossy(&prefix))? {
                ancestors.push((prefix, *n));
            }
        }
        roots.push((comps.join(&b'/'), located, ancestors));
    }
    let _lock = repo.lock_shared("restore")?;
    // An index that cannot be loaded fails the restore here, in one error,
    // rather than as a warning for every directory.
    repo.index()?;
    let target = &opts.target;
    match std::fs::read_dir(target) {
        Ok(mut rd) => {
            if rd.next().is_some() && !opts.overwrite {
                return Err(Error::TargetNotEmpty { path: target.clone() });
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => std::fs::create_dir_all(target).at(target)?,
        Err(e) => return Err(Error::io(target, e)),
    }
    let target = std::fs::canonicalize(target).at(target)?;
    let created_owner = match std::fs::metadata(&target) {
        Ok(m) => created_owner(&m, opts.overwrite, nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw()),
        Err(_) => None,
    };

    let ctx = Ctx {
        repo,
        progress,
        target,
        overwrite: opts.overwrite,
        is_root: nix::unistd::geteuid().is_root(),
        files: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        cancel: opts.cancel.clone(),
        cpus: std::thread::available_parallelism().map_or(2, |n| n.get()),
        remote: repo.storage().local_path().is_none(),
        umask: read_umask(),
        created_owner,
    };
    // Two per CPU keeps a disk busy (a remote store has workers of its own
    // per window, as many as it takes requests at once: packs.rs).
    let workers = if ctx.remote { 0 } else { ctx.cpus * 2 };
    let (tx, rx) = bounded::<Vec<FileJob>>(workers.max(1) * 2);
    // The walk fills the next window while one is restored.
    let (window_tx, window_rx) = bounded::<packs::Window>(0);
    let mut window = packs::Window::default();
    // A batch ends at 4 MiB of content or at this many files: small
    // batches spread a directory of tiny files over the workers.
    let batch_files = 256;
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    let mut links: Vec<(PathBuf, Vec<u8>, Node)> = Vec::new();
    // Snapshot paths of multiply linked files this restore writes: the only
    // files a hardlink may point at.
    let mut link_targets: HashSet<Vec<u8>> = HashSet::new();
    let mut counts = RestoreResult::default();

    let walked = std::thread::scope(|scope| -> Result<()> {
        for _ in 0..workers {
            let rx: Receiver<Vec<FileJob>> = rx.clone();
            let ctx = &ctx;
            scope.spawn(move || {
                for batch in rx.iter() {
                    for job in batch {
                        if ctx.cancelled() {
                            return;
                        }
                        if let Err(e) = restore_file(ctx, &job.path, &job.node, &Prefetched::none()) {
                            ctx.warn(&job.path, &e.to_string());
                        }
                    }
                }
            });
        }
        drop(rx);
        if ctx.remote {
            let ctx = &ctx;
            scope.spawn(move || {
                for w in window_rx.iter() {
                    if ctx.cancelled() {
                        return;
                    }
                    packs::restore_window(ctx, w);
                }
            });
        } else {
            drop(window_rx);
        }
        let mut batch: Vec<FileJob> = Vec::new();
        let mut batch_bytes = 0u64;
        let flush = |batch: &mut Vec<FileJob>, bytes: &mut u64| -> Result<()> {
            if !batch.is_empty() {
                tx.send(std::mem::take(batch)).map_err(|_| Error::Interrupted)?;
            }
            *bytes = 0;
            Ok(())
        };
        let select = std::cell::RefCell::new(Select {
            includes: &opts.include_patterns,
            excludes: &opts.exclude_patterns,
            pending: Vec::new(),
            scratch: Vec::new(),
        });
        for (snap_path, located, ancestors) in &roots {
            select.borrow_mut().pending.clear();
            for (p, node) in ancestors {
                let path = ctx.disk_path(p);
                make_dir(&ctx, &path)?;
                dirs.push((path, node.clone()));
            }
            let mut visit = |p: &[u8], node: &Node| -> Result<Visit> {
                if ctx.cancelled() {
                    return Err(Error::Interrupted);
                }
                let mut sel = select.borrow_mut();
                let included = match sel.decide(p, node) {
                    Pick::Skip => return Ok(Visit::Skip),
                    // On the way to possible matches: created only when
                    // something below it is restored.
                    Pick::Pass => {
                        sel.pending.push(Pending {
                            path: p.to_vec(),
                            node: node.clone(),
                            made: false,
                            included: false,
                        });
                        return Ok(Visit::Enter);
                    }
                    Pick::Restore { included } => included,
                };
                for d in sel.pending.iter_mut().filter(|d| !d.made) {
                    let path = ctx.disk_path(&d.path);
                    make_dir(&ctx, &path)?;
                    counts.dirs += 1;
                    dirs.push((path, d.node.clone()));
                    d.made = true;
                }
                let path = ctx.disk_path(p);
                match node.kind {
                    NodeKind::Dir => {
                        make_dir(&ctx, &path)?;
                        counts.dirs += 1;
                        dirs.push((path, node.clone()));
                    }
                    NodeKind::File => {
                        if node.nlink > 1 {
                            link_targets.insert(p.to_vec());
                        }
                        let job = FileJob { path, node: node.clone() };
                        if ctx.remote {
                            window.push(job);
                            if window.is_full() {
                                window_tx.send(std::mem::take(&mut window)).map_err(|_| Error::Interrupted)?;
                            }
                        } else {
                            batch_bytes += node.size;
                            batch.push(job);
                            if batch_bytes >= 4 << 20 || batch.len() >= batch_files {
                                flush(&mut batch, &mut batch_bytes)?;
                            }
                        }
                    }
                    NodeKind::Hardlink => links.push((path, node.target.clone(), node.clone())),
                    _ => {
                        counts.other += 1;
                        if let Err(e) = restore_special(&ctx, &path, node) {
                            ctx.warn(&path, &e.to_string());
                        }
                    }
                }
                if node.kind == NodeKind::Dir {
                    sel.pending.push(Pending {
                        path: p.to_vec(),
                        node: Node::new(NodeKind::Dir, Vec::new()),
                        made: true,
                        included,
                    });
                }
                Ok(Visit::Enter)
            };
            // A directory whose tree cannot be read loses its contents, not
            // the rest of the snapshot: warn (naming the tree, which `arc
            // check` names too) and go on.
            let mut unreadable = |p: &[u8], tree: &Id, e: Error| -> Result<()> {
                match e {
                    // Not about this tree: nothing else would fare better.
                    Error::Interrupted | Error::IndexDb { .. } | Error::NoSpace { .. } => Err(e),
                    e => {
                        ctx.warn(&ctx.disk_path(p), &format!("contents not restored: tree {tree}: {e}"));
                        Ok(())
                    }
                }
            };
            let mut leave = |_: &[u8], _: &Node| {
                select.borrow_mut().pending.pop();
                Ok(())
            };
            match located {
                Located::Root(tree) => {
                    tree_walk::walk_select(repo, tree, b"", &mut visit, &mut leave, &mut unreadable)?
                }
                Located::Node(node) => {
                    if visit(snap_path, node)? == Visit::Enter {
                        if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                            tree_walk::walk_select(repo, &sub, snap_path, &mut visit, &mut leave, &mut unreadable)?;
                        }
                    }
                }
            }
        }
        flush(&mut batch, &mut batch_bytes)?;
        if !window.is_empty() {
            window_tx.send(std::mem::take(&mut window)).map_err(|_| Error::Interrupted)?;
        }
        drop(tx);
        drop(window_tx);
        Ok(())
    });
    walked?;
    if ctx.cancelled() {
        return Err(Error::Interrupted);
    }

    // Hardlinks after all files exist. A link whose first file lies outside
    // what was restored (an --include cut it off) gets the content instead.
    for (path, target_snap_path, node) in links {
        let first = ctx.disk_path(&target_snap_path);
        let linked = link_targets.contains(&target_snap_path)
            && std::fs::symlink_metadata(&first).is_ok_and(|m| m.file_type().is_file())
            && {
                if ctx.overwrite {
                    let _ = remove_existing(&path);
                }
                std::fs::hard_link(&first, &path).is_ok()
            };
        if linked {
            ctx.files.fetch_add(1, Ordering::Relaxed);
        } else if let Err(e) = restore_file(&ctx, &path, &node, &Prefetched::none()) {
            ctx.warn(&path, &e.to_string());
        }
    }

    // Directory metadata last, deepest first.
    for (path, node) in dirs.iter().rev() {
        if let Err(e) = apply_metadata(&ctx, path, node, None) {
            ctx.warn(path, &e.to_string());
        }
    }
    counts.files = ctx.files.load(Ordering::Relaxed);
    counts.bytes = ctx.bytes.load(Ordering::Relaxed);
    counts.errors = ctx.errors.load(Ordering::Relaxed);
    Ok(counts)
}

fn remove_existing(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn make_dir(ctx: &Ctx<'_>, path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        // Something else in the way (possibly a symlink pointing out of the
        // target): only --overwrite may replace it.
        Ok(_) if ctx.overwrite => std::fs::remove_file(path).at(path)?,
        Ok(_) => {
            return Err(Error::io(path, std::io::Error::new(ErrorKind::AlreadyExists, "exists and is not a directory")))
        }
        Err(_) => {}
    }
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn restore_file(ctx: &Ctx<'_>, path: &Path, node: &Node, pre: &Prefetched) -> Result<()> {
    if ctx.overwrite {
        // Replace instead of writing through whatever is there.
        let _ = remove_existing(path);
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(create_mode(ctx.umask, node.mode).unwrap_or(0o600))
        .open(path)
        .at(path)?;
    let written = match write_content(ctx, path, node, file, pre) {
        Ok(n) => n,
        Err(e) => {
            // A partly written file would look restored: better missing
            // than wrong. Only this restore created it, so removing is safe.
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
    };
    ctx.files.fetch_add(1, Ordering::Relaxed);
    ctx.bytes.fetch_add(written, Ordering::Relaxed);
    ctx.progress.file_done(path, written);
    Ok(())
}

/// Writes a file's chunks, keeping all-zero chunks as holes, then its
/// metadata. Returns the bytes of content.
fn write_content(ctx: &Ctx<'_>, path: &Path, node: &Node, mut file: File, pre: &Prefetched) -> Result<u64> {
    let mut written = 0u64;
    let mut pending_hole = 0u64;
    decode_in_order(ctx, &node.chunks, pre, |data| {
        // Zero runs of whole filesystem blocks become holes, also inside
        // chunks that hold data, so sparse files stay sparse.
        let mut run_start = 0;
        let mut pos = 0;
        while pos < data.len() {
            let end = (pos + HOLE_BLOCK).min(data.len());
            let block = &data[pos..end];
            if block.len() == HOLE_BLOCK && block.iter().all(|&b| b == 0) {
                if run_start < pos {
                    write_at_hole(&mut file, path, &mut pending_hole, &data[run_start..pos])?;
                }
                pending_hole += HOLE_BLOCK as u64;
                run_start = end;
            }
            pos = end;
        }
        if run_start < data.len() {
            write_at_hole(&mut file, path, &mut pending_hole, &data[run_start..])?;
        }
        written += data.len() as u64;
        ctx.progress.bytes(data.len() as u64);
        Ok(())
    })?;
    if written != node.size {
        return Err(Error::corrupt(
            "file",
            path.display().to_string(),
            format!("chunks hold {written} bytes, the tree records {}", node.size),
        ));
    }
    if pending_hole > 0 {
        file.set_len(written).at(path)?;
    }
    apply_metadata(ctx, path, node, Some(&file))?;
    Ok(written)
}

/// Decoded chunks each decoder may hold ahead of the writer (besides the
/// one it is decoding): with 1 MiB stream chunks and two decoders, about
/// 5 MiB per file in flight; 20 MiB with 4 MiB file chunks at most.
const DECODE_AHEAD: usize = 1;

/// On a local disk, a decoder may hold a whole run ahead of the writer (up
/// to this many chunks): with one chunk, the decoder of the next run
/// stopped after its first two chunks until the writer had taken every
/// chunk of the run before, so the two decoders took turns instead of
/// working side by side. A run shares one frame of about 1 MiB (the frame
/// of the chunks, or of the bases of delta chunks), so this holds about
/// that much per decoder; 8 MiB with 1 MiB stream chunks at most.
const LOCAL_RUN_AHEAD: usize = 8;

/// On a remote store, decoders take a file's chunks in runs of about this
/// many stored bytes, each run's frames fetched in one coalesced ranged read
/// per pack (prefetch.rs) instead of a round trip per chunk. With a decoder
/// per CPU and the storage's eight workers, at most 16 runs are held at once.
/// Rare there: a remote restore writes its files pack by pack in windows
/// (restore/packs.rs), and comes here only for a hardlink whose first name
/// was not restored.
const RUN_BYTES: u64 = 8 << 20;

/// `chunks` cut into the runs the decoders take, by their locations
/// (`None`: a chunk the index lacks, left to the read that reports it). On
/// a local disk a run is the chunks whose decoding waits on the same frame
/// (`frames`, from [`decoding_frame`]), so that two decoders never wait on
/// one frame's decompression (a 1 MiB stream frame holds about four
/// chunks, and so does the frame of the bases of four consecutive delta
/// chunks); on a remote store, consecutive chunks up to [`RUN_BYTES`]
/// stored.
fn runs(located: &[Option<BlobLocation>], frames: &[Option<FrameKey>], remote: bool) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, loc) in located.iter().enumerate() {
        let len = loc.map_or(0, |l| u64::from(l.frame.stored_len));
        let split = |i: usize| match remote {
            true => bytes + len > RUN_BYTES,
            false => frames.get(i).copied().flatten().is_none() || frames.get(i) != frames.get(i - 1),
        };
        if i > start && split(i) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < located.len() {
        out.push(start..located.len());
    }
    out
}

/// The frame whose decompression decoding the chunk at `loc` waits on: its
/// own, or for a delta (a stream chunk stored against its counterpart in
/// the parent's stream, streams.md section 4) its base's. A day-2 dump is
/// nearly all deltas, each in a frame of its own, and the bases of
/// consecutive deltas are consecutive chunks of the parent's stream that
/// share frames: taken one by one, both decoders needed the same base frame
/// at once and one waited for the other to decompress it. One read of the
/// delta frame's first 32 bytes names the base; `None` if that fails (the
/// read of the chunk reports why).
fn decoding_frame(repo: &Repository, loc: &BlobLocation) -> Option<FrameKey> {
    if loc.frame.codec != FrameCodec::Delta {
        return Some((loc.pack, loc.frame.offset));
    }
    let base = repo.delta_base(&loc.pack, &loc.frame).ok()?;
    let base = repo.lookup_blob(&base).ok()??;
    Some((base.pack, base.frame.offset))
}

/// Calls `write` with each of `chunks`' contents, in order. A file of one
/// chunk (or one run, below) is read on this thread; for more, decoder
/// threads (one per CPU) read, decrypt, decompress and verify chunks ahead
/// of the writer, so that one big file or dump stream is not restored at
/// the speed of one core. Decoders take runs of chunks ([`runs`]): the
/// chunks waiting on one frame on a local disk, up to [`RUN_BYTES`] on a
/// remote store, where a run's frames come in one request per pack.
/// Decoder `k` takes runs `k`, `k + d`, `k + 2d`, … and hands their chunks
/// over a channel of its own, so the writer takes them in order without a
/// reorder buffer, and memory stays bounded by `d * (DECODE_AHEAD + 1) + 1`
/// chunks plus a run's stored bytes per decoder (on a local disk
/// `LOCAL_RUN_AHEAD` instead of `DECODE_AHEAD` when runs are that long).
/// Chunks whose frames `pre` holds (the batch's prefetch) are not fetched
/// again. The first chunk that fails ends the
/// file with that chunk's error (which names the blob and pack); the
/// decoders stop when the writer drops their channels.
fn decode_in_order(
    ctx: &Ctx<'_>,
    chunks: &[Id],
    pre: &Prefetched,
    mut write: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    // Where every chunk is, for the runs (a file of one chunk has one).
    let located: Vec<Option<BlobLocation>> = match chunks.len() {
        1 => vec![None],
        _ => chunks
            .iter()
            .map(|id| pre.location(id).copied().or_else(|| ctx.repo.lookup_blob(id).ok().flatten()))
            .collect(),
    };
    // On a remote store a run is counted in stored bytes, and naming a
    // delta's base would cost a round trip per chunk.
    let frames: Vec<Option<FrameKey>> = match ctx.remote {
        true => Vec::new(),
        false => located.iter().map(|l| l.as_ref().and_then(|l| decoding_frame(ctx.repo, l))).collect(),
    };
    let runs = runs(&located, &frames, ctx.remote);
    let fetch_run = |r: std::ops::Range<usize>| match ctx.remote {
        false => Prefetched::none(),
        true => {
            let wanted = r.filter(|&i| !pre.holds(&chunks[i])).filter_map(|i| located[i].map(|l| (chunks[i], l)));
            ctx.repo.prefetch_located(wanted, RUN_BYTES)
        }
    };
    let read = |id: &Id, fetched: &Prefetched| match pre.holds(id) {
        true => ctx.repo.read_blob_with(id, pre),
        false => ctx.repo.read_blob_with(id, fetched),
    };
    let decoders = ctx.cpus.min(runs.len());
    if decoders < 2 {
        for r in &runs {
            let fetched = fetch_run(r.clone());
            for id in &chunks[r.clone()] {
                write(&read(id, &fetched)?)?;
            }
        }
        return Ok(());
    }
    let ahead = match ctx.remote {
        true => DECODE_AHEAD,
        false => runs.iter().map(|r| r.len()).max().unwrap_or(1).clamp(DECODE_AHEAD, LOCAL_RUN_AHEAD),
    };
    std::thread::scope(|scope| {
        let mut ready = Vec::with_capacity(decoders);
        let mut handles = Vec::with_capacity(decoders);
        for k in 0..decoders {
            let (tx, rx) = bounded::<Result<Arc<[u8]>>>(ahead);
            ready.push(rx);
            let (fetch_run, read, runs) = (&fetch_run, &read, &runs);
            handles.push(scope.spawn(move || {
                for r in runs.iter().skip(k).step_by(decoders) {
                    let fetched = fetch_run(r.clone());
                    for id in &chunks[r.clone()] {
                        if ctx.cancelled() {
                            return Ok(());
                        }
                        let r = read(id, &fetched);
                        let failed = r.is_err();
                        if tx.send(r).is_err() || failed {
                            return Ok(());
                        }
                    }
                }
                Ok(())
            }));
        }
        let written = (|| {
            for (n, r) in runs.iter().enumerate() {
                for _ in r.clone() {
                    // A decoder that ended without sending saw the cancel,
                    // or panicked (reported below).
                    let data = ready[n % decoders].recv().map_err(|_| Error::Interrupted)??;
                    write(&data)?;
                }
            }
            Ok(())
        })();
        // Decoders blocked on a full channel stop once it is gone.
        drop(ready);
        for h in handles {
            crate::sync::joined(h.join(), "restore decoder")?;
        }
        written
    })
}

/// Skips a pending hole, then writes `bytes` in one call.
fn write_at_hole(file: &mut File, path: &Path, pending_hole: &mut u64, bytes: &[u8]) -> Result<()> {
    if *pending_hole > 0 {
        file.seek(SeekFrom::Current(*pending_hole as i64)).at(path)?;
        *pending_hole = 0;
    }
    file.write_all(bytes).at(path)
}

fn restore_special(ctx: &Ctx<'_>, path: &Path, node: &Node) -> Result<()> {
    if ctx.overwrite {
        let _ = remove_existing(path);
    }
    match node.kind {
        NodeKind::Symlink => {
            std::os::unix::fs::symlink(OsStr::from_bytes(&node.target), path).at(path)?;
        }
        NodeKind::Fifo => {
            nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600)).map_err(|e| Error::io(path, e.into()))?;
        }
        NodeKind::CharDevice | NodeKind::BlockDevice => {
            let kind = if node.kind == NodeKind::CharDevice { SFlag::S_IFCHR } else { SFlag::S_IFBLK };
            nix::sys::stat::mknod(path, kind, Mode::from_bits_truncate(0o600), node.rdev as libc::dev_t)
                .map_err(|e| Error::io(path, e.into()))?;
        }
        NodeKind::Socket => {
            // Binding creates the socket inode; the listener itself is not
            // wanted, only the file with its metadata.
            drop(std::os::unix::net::UnixListener::bind(path).at(path)?);
        }
        _ => return Ok(()),
    }
    apply_metadata(ctx, path, node, None)
}

fn ts(t: Timestamp) -> TimeSpec {
    TimeSpec::new(t.sec, i64::from(t.nsec))
}

/// The umask from /proc/self/status. Reading it with umask(2) means
/// setting it, which would race with the files other threads create.
fn read_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// The mode to create a regular file with when that gives it exactly its
/// final permissions, so that no `fchmod` is needed afterwards (one system
/// call of about seven per restored file). Only where the owner may write
/// it: the pack-by-pack path opens a file again for each of its pieces,
/// which a read-only mode would refuse to anyone but root. Set-id and
/// sticky bits are never created (an `fchown` would clear them anyway).
fn create_mode(umask: Option<u32>, mode: u32) -> Option<u32> {
    let mode = mode & 0o7777;
    let created = mode & 0o777 & !umask?;
    (created == mode && mode & 0o200 != 0).then_some(mode)
}

/// The owner (uid, gid) that every file a restore into `target` creates
/// gets, if it can be known from the target alone: a new file is owned by
/// this process's effective ids, or takes its directory's group where the
/// directory is set-group-id (or the file system is mounted `grpid`). With
/// the target owned by `euid` and `egid` and not set-group-id, so is every
/// directory the restore makes below it (their modes are applied last),
/// and so is every file. Not with `--overwrite`: directories already there
/// may be anyone's. A target owned by someone else (root squashed to
/// nobody on NFS) says nothing either.
fn created_owner(target: &std::fs::Metadata, overwrite: bool, euid: u32, egid: u32) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let plain = target.uid() == euid && target.gid() == egid && target.mode() & libc::S_ISGID == 0;
    (!overwrite && plain).then_some((euid, egid))
}

/// Owner, mode, xattrs, then times (last, since the others change ctime and
/// writing xattrs may touch mtime on some filesystems). A regular file
/// created with [`create_mode`] already has its mode, and one whose owner
/// is the one it was created with ([`created_owner`]) its owner: an
/// `fchown` per file was 2-3 % of the CPU of a restore of small files.
fn apply_metadata(ctx: &Ctx<'_>, path: &Path, node: &Node, file: Option<&File>) -> Result<()> {
    let is_link = node.kind == NodeKind::Symlink;
    let errno = |e: nix::errno::Errno| Error::io(path, e.into());
    let owned = file.is_some() && ctx.created_owner == Some((node.uid, node.gid));
    if ctx.is_root && !owned {
        let (u, g) = (Some(Uid::from_raw(node.uid)), Some(Gid::from_raw(node.gid)));
        match file {
            Some(f) => nix::unistd::fchown(f.as_raw_fd(), u, g).map_err(errno)?,
            None => nix::unistd::fchownat(None, path, u, g, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?,
        }
    }
    let mode_set = file.is_some() && node.kind == NodeKind::File && create_mode(ctx.umask, node.mode).is_some();
    if !is_link && !mode_set {
        let mode = Mode::from_bits_truncate(node.mode & 0o7777);
        match file {
            Some(f) => nix::sys::stat::fchmod(f.as_raw_fd(), mode).map_err(errno)?,
            None => nix::sys::stat::fchmodat(None, path, mode, nix::sys::stat::FchmodatFlags::FollowSymlink)
                .map_err(errno)?,
        }
    }
    for (k, v) in &node.xattrs {
        let name = OsStr::from_bytes(k);
        let r = match file {
            Some(f) => xattr::FileExt::set_xattr(f, name, v),
            None => xattr::set(path, name, v),
        };
        if let Err(e) = r {
            // Not every target filesystem takes every namespace (trusted.*
            // needs root, security.* may be refused): warn, keep going.
            ctx.warn(path, &format!("cannot set xattr {}: {e}", name.to_string_lossy()));
        }
    }
    let (atime, mtime) = (ts(node.mtime), ts(node.mtime));
    match file {
        Some(f) => nix::sys::stat::futimens(f.as_raw_fd(), &atime, &mtime).map_err(errno)?,
        None => nix::sys::stat::utimensat(None, path, &atime, &mtime, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
            .map_err(errno)?,
    }
    Ok(())
}

/// A directory entered by a restore with patterns.
struct Pending {
    path: Vec<u8>,
    node: Node,
    /// Created on disk (it, or something below it, is restored).
    made: bool,
    /// It matched an include pattern: everything below is restored.
    included: bool,
}

/// The include and exclude patterns of a restore, and the directories
/// entered on the way down.
struct Select<'a> {
    includes: &'a PatternSet,
    excludes: &'a PatternSet,
    pending: Vec<Pending>,
    scratch: Vec<usize>,
}

enum Pick {
    /// Not restored, nothing below it looked at.
    Skip,
    /// Not restored itself, but something below may be.
    Pass,
    /// Restored; `included` when an include pattern matched it.
    Restore { included: bool },
}

impl Select<'_> {
    fn decide(&mut self, p: &[u8], node: &Node) -> Pick {
        if self.includes.is_empty() && self.excludes.is_empty() {
            return Pick::Restore { included: false };
        }
        let mut abs = Vec::with_capacity(p.len() + 1);
        abs.push(b'/');
        abs.extend_from_slice(p);
        let is_dir = node.kind == NodeKind::Dir;
        if self.excludes.matches(&abs, is_dir, &mut self.scratch) {
            return Pick::Skip;
        }
        if self.includes.is_empty() || self.pending.last().is_some_and(|d| d.included) {
            return Pick::Restore { included: true };
        }
        if self.includes.matches(&abs, is_dir, &mut self.scratch) {
            return Pick::Restore { included: true };
        }
        if is_dir {
            Pick::Pass
        } else {
            Pick::Skip
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::config::ChunkerParams;
    use crate::ops::backup::{backup, BackupOptions, StreamSource};
    use crate::progress::NoProgress;
    use crate::repo::InitOptions;
    use crate::test_data::{pseudo_random, Warnings};

    #[test]
    fn files_are_created_with_their_mode_only_where_that_is_exact() {
        let umask = Some(0o022);
        assert_eq!(create_mode(umask, 0o100644), Some(0o644));
        assert_eq!(create_mode(umask, 0o600), Some(0o600));
        // The umask would take bits away: created private, then fchmod.
        assert_eq!(create_mode(umask, 0o666), None);
        assert_eq!(create_mode(Some(0), 0o666), Some(0o666));
        // Set-id and sticky bits only by fchmod, after the owner is set.
        assert_eq!(create_mode(umask, 0o4755), None);
        assert_eq!(create_mode(umask, 0o1644), None);
        // Read-only for its owner: the pack path could not open it again.
        assert_eq!(create_mode(umask, 0o444), None);
        // Unknown umask: always fchmod.
        assert_eq!(create_mode(None, 0o644), None);
        assert_eq!(read_umask().map(|m| m & !0o777), Some(0));
    }

    /// Files are left with the owner they were created with only where the
    /// target says what that is: owned by this process's ids, not
    /// set-group-id, and nothing already there (no --overwrite).
    #[test]
    fn the_owner_of_created_files_is_known_only_from_a_plain_target_of_ours() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let m = std::fs::metadata(dir.path()).unwrap();
        let (uid, gid) = (m.uid(), m.gid());
        assert_eq!(created_owner(&m, false, uid, gid), Some((uid, gid)));
        assert_eq!(created_owner(&m, true, uid, gid), None);
        assert_eq!(created_owner(&m, false, uid + 1, gid), None);
        assert_eq!(created_owner(&m, false, uid, gid + 1), None);
        // What a restore creates in such a target is indeed owned so.
        let plain = dir.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        std::fs::write(plain.join("f"), b"x").unwrap();
        let f = std::fs::metadata(plain.join("f")).unwrap();
        let p = std::fs::metadata(&plain).unwrap();
        if let Some(owner) = created_owner(&p, false, nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
        {
            assert_eq!((f.uid(), f.gid()), owner);
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o2755)).unwrap();
        let m = std::fs::metadata(dir.path()).unwrap();
        assert_ne!(m.mode() & libc::S_ISGID, 0);
        assert_eq!(created_owner(&m, false, uid, gid), None);
    }

    /// Small stream chunks, each in a frame of its own: a few MiB make
    /// hundreds of chunks, and damaging one frame damages one chunk.
    fn many_chunks_repo(dir: &Path) -> Repository {
        let opts = InitOptions {
            stream_chunker: ChunkerParams::new(4096, 16384, 65536).unwrap(),
            frame_size: 4096,
            pack_size: 1 << 20,
            ..Default::default()
        };
        Repository::init_local(&dir.join("repo"), &opts).unwrap()
    }

    /// Random and compressible stretches, and zero runs long enough to be
    /// holes, so that frames are stored raw, compressed, and skipped.
    fn dump_like(len: usize) -> Vec<u8> {
        let mut data = Vec::with_capacity(len);
        let mut seed = 1u64;
        while data.len() < len {
            seed += 1;
            match seed % 3 {
                0 => data.extend(pseudo_random(150_000, seed)),
                1 => data.extend(format!("INSERT INTO t VALUES ({seed}, 'row {seed}');\n").repeat(3000).bytes()),
                _ => data.extend(std::iter::repeat_n(0u8, 40_000)),
            }
        }
        data.truncate(len);
        data
    }

    fn back_up_stream(repo: &Repository, data: &[u8]) -> Snapshot {
        let stream = StreamSource {
            name: "db/shop.sql".into(),
            reader: Box::new(std::io::Cursor::new(data.to_vec())),
            allow_empty: false,
            stop: None,
        };
        let r = backup(repo, BackupOptions { streams: vec![stream], ..Default::default() }, &NoProgress).unwrap();
        repo.load_snapshot(&r.snapshot_id).unwrap()
    }

    fn chunks_of(repo: &Repository, snapshot: &Snapshot, path: &str) -> Vec<Id> {
        match tree_walk::locate(repo, snapshot, path).unwrap() {
            Located::Node(node) => node.chunks.clone(),
            Located::Root(_) => panic!("{path} is the root"),
        }
    }

    #[test]
    fn a_stream_of_many_chunks_restores_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let repo = many_chunks_repo(dir.path());
        let data = dump_like(6 << 20);
        let snapshot = back_up_stream(&repo, &data);
        let chunks = chunks_of(&repo, &snapshot, "/db/shop.sql");
        assert!(chunks.len() > 100, "only {} chunks", chunks.len());
        let target = dir.path().join("out");
        let opts = RestoreOptions { target: target.clone(), ..Default::default() };
        let r = restore(&repo, &snapshot, &opts, &NoProgress).unwrap();
        assert_eq!((r.errors, r.bytes), (0, data.len() as u64));
        let restored = std::fs::read(target.join("db/shop.sql")).unwrap();
        assert!(restored == data, "restored stream differs from the one backed up");
    }

    /// A day-2 dump: nearly every chunk a delta against its day-1
    /// counterpart, about four day-1 chunks to a frame.
    #[test]
    fn deltas_whose_bases_share_a_frame_are_decoded_as_one_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo");
        let opts = InitOptions {
            stream_chunker: ChunkerParams::new(4096, 16384, 65536).unwrap(),
            frame_size: 65536,
            pack_size: 1 << 20,
            ..Default::default()
        };
        let repo = Repository::init_local(&path, &opts).unwrap();
        let day1: Vec<u8> = (0..60_000u32)
            .map(|i| format!("INSERT INTO t VALUES ({i}, 'row {}');\n", i.wrapping_mul(2_654_435_761) % 99_991))
            .flat_map(String::into_bytes)
            .collect();
        let mut day2 = day1.clone();
        for at in (5_000..day2.len()).step_by(9_000) {
            day2[at] = b'#';
        }
        back_up_stream(&repo, &day1);
        let snapshot = back_up_stream(&repo, &day2);
        drop(repo);

        let repo = Repository::open_local(&path).unwrap();
        let chunks = chunks_of(&repo, &snapshot, "/db/shop.sql");
        let located: Vec<Option<BlobLocation>> = chunks.iter().map(|c| repo.lookup_blob(c).unwrap()).collect();
        let deltas = located.iter().flatten().filter(|l| l.frame.codec == FrameCodec::Delta).count();
        assert!(deltas * 4 > chunks.len() * 3, "{deltas} deltas of {} chunks", chunks.len());
        let frames: Vec<Option<FrameKey>> =
            located.iter().map(|l| decoding_frame(&repo, l.as_ref().unwrap())).collect();
        let runs = runs(&located, &frames, false);
        // One run per base frame, not one per delta (each in a frame of its own).
        assert!(runs.len() * 2 < chunks.len(), "{} runs for {} chunks", runs.len(), chunks.len());
        for r in &runs {
            assert!(frames[r.clone()].iter().all(|f| f.is_some() && *f == frames[r.start]), "run {r:?}");
        }

        let target = dir.path().join("out");
        let r =
            restore(&repo, &snapshot, &RestoreOptions { target: target.clone(), ..Default::default() }, &NoProgress)
                .unwrap();
        assert_eq!((r.errors, r.bytes), (0, day2.len() as u64));
        assert!(std::fs::read(target.join("db/shop.sql")).unwrap() == day2, "restored stream differs");
        // Reading an index cache that is up to date commits nothing.
        assert!(!repo.index().unwrap().has_written());
    }

    #[test]
    fn a_damaged_chunk_in_the_middle_names_its_frame_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let repo = many_chunks_repo(dir.path());
        let data = dump_like(4 << 20);
        let snapshot = back_up_stream(&repo, &data);
        let chunks = chunks_of(&repo, &snapshot, "/db/shop.sql");
        let bad = chunks[chunks.len() / 2];
        let loc = repo.lookup_blob(&bad).unwrap().unwrap();
        let hex = loc.pack.to_hex();
        let pack = dir.path().join("repo/data").join(&hex[..2]).join(&hex);
        let mut bytes = std::fs::read(&pack).unwrap();
        bytes[(loc.frame.offset + u64::from(loc.frame.stored_len) / 2) as usize] ^= 0x40;
        std::fs::write(&pack, bytes).unwrap();
        drop(repo);

        let repo = Repository::open_local(&dir.path().join("repo")).unwrap();
        let target = dir.path().join("out");
        let warnings = Warnings::default();
        let opts = RestoreOptions { target: target.clone(), ..Default::default() };
        let r = restore(&repo, &snapshot, &opts, &warnings).unwrap();
        assert_eq!((r.errors, r.files), (1, 0));
        let warnings = warnings.0.into_inner().unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let (path, message) = &warnings[0];
        assert_eq!(path, &target.join("db/shop.sql"));
        let at = format!("{hex} (frame at offset {})", loc.frame.offset);
        assert!(message.contains(&at), "the warning does not name the damaged frame {at}: {message}");
        assert!(!path.exists(), "a partly restored file was left behind");
    }
}
