//! `backup`: sources (file trees and streams) → chunks → packs → trees →
//! snapshot. See [`crate::packer`] for the stages after hashing.
//!
//! ```text
//! walker (1 thread: lstat, xattrs, parent-tree lookup)
//!   ├─(bounded)─> file workers (N threads: read, chunk, hash, dedup) ─> BlobSink
//!   └─(bounded)─> tree builder (this thread: waits for file results when a
//!                 directory closes, encodes and stores its tree blob)
//! ```
//! A file whose size, mtime, ctime and inode match the parent snapshot is
//! not read: its chunk list is taken from the parent tree.
//! Streams (database dumps) are read by a thread each from the start of the
//! backup, beside the walk, so a dump command never waits on a full pipe
//! until the file walk is over. A stream that ends in a read error (its dump
//! command failed) stops the backup like a cancel: no snapshot, but what was
//! read before is written to packs for the next try.
//! The snapshot file is written only after every pack and index file is
//! durable, so a backup that dies leaves no snapshot, only reusable packs.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use chrono::{DateTime, Utc};
use crossbeam_channel::{bounded, Receiver, Sender};

use crate::chunker::{Chunker, StreamChunker};
use crate::error::{Error, IoContext, Result};
use crate::format::pack::BlobKind;
use crate::format::snapshot::{SnapshotFile, Summary};
use crate::format::tree::{is_safe_name, Node, NodeKind, Timestamp, Tree};
use crate::id::Id;
use crate::index::IndexReader;
use crate::packer::{self, BlobSink};
use crate::progress::Progress;
use crate::repo::{Repository, SnapshotFilter};
use crate::walk::{node_from_metadata, OwnerNames};

/// A byte stream stored as a file of the snapshot (a database dump).
pub struct StreamSource {
    /// Path of the stream inside the snapshot, e.g. `mysql/shop.sql`.
    pub name: String,
    pub reader: Box<dyn Read + Send>,
    /// An empty stream is usually a dump that failed before writing
    /// anything; it is refused unless this is set.
    pub allow_empty: bool,
    /// Makes a read of `reader` that blocks return soon (for a command's
    /// output: kill the command). Called once when the backup stops early,
    /// on an error elsewhere or on cancel, while the stream may still be
    /// read: without it a stream that produces nothing would keep the
    /// backup from ever returning.
    pub stop: Option<Box<dyn Fn() + Send + Sync>>,
}

#[derive(Default)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub streams: Vec<StreamSource>,
    pub tags: Vec<String>,
    /// Host name recorded in the snapshot; defaults to this host's name.
    pub host: Option<String>,
    /// Snapshot time; defaults to now (set for imports and tests).
    pub time: Option<DateTime<Utc>>,
    /// Parent snapshot; defaults to the latest one of the same host and paths.
    pub parent: Option<Id>,
    /// Read every file even when the parent says it is unchanged.
    pub force_read: bool,
    /// Set from a signal handler to stop the backup; no snapshot is written.
    pub cancel: Option<Arc<AtomicBool>>,
}

#[derive(Debug, Clone)]
pub struct BackupResult {
    pub snapshot_id: Id,
    pub snapshot: SnapshotFile,
    /// Number of sources that could not be (fully) read.
    pub warnings: u64,
}

/// Waits for a file's content to be stored by a worker.
#[derive(Default)]
struct Slot {
    value: Mutex<Option<FileOutcome>>,
    ready: Condvar,
}

#[derive(Clone)]
enum FileOutcome {
    Stored { chunks: Vec<Id>, size: u64 },
    Failed,
}

impl Slot {
    fn set(&self, v: FileOutcome) {
        if let Ok(mut g) = self.value.lock() {
            *g = Some(v);
        }
        self.ready.notify_all();
    }

    fn wait(&self) -> FileOutcome {
        let Ok(mut g) = self.value.lock() else {
            return FileOutcome::Failed;
        };
        loop {
            if let Some(v) = g.as_ref() {
                return v.clone();
            }
            g = match self.ready.wait(g) {
                Ok(g) => g,
                Err(_) => return FileOutcome::Failed,
            };
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    New,
    Changed,
    Unchanged,
}

enum Content {
    /// Not a file, or chunks already in the node (unchanged from parent).
    Ready,
    Pending(Arc<Slot>),
}

enum WalkEvent {
    EnterDir(Node),
    LeaveDir,
    Entry(Node, Content, Change),
    /// A source (top-level item) is complete.
    SourceDone,
}

/// What the walk saw of a file; reading it compares against this to tell
/// whether it changed while being backed up.
#[derive(Clone, Copy)]
struct Seen {
    size: u64,
    mtime: Timestamp,
}

struct Job {
    path: PathBuf,
    seen: Seen,
    slot: Arc<Slot>,
}

/// Resolved source: where it is on disk and where it goes in the snapshot.
struct Source {
    disk: PathBuf,
    /// Components below the snapshot root (empty for `/`).
    components: Vec<Vec<u8>>,
}

fn cancelled(c: &Option<Arc<AtomicBool>>) -> bool {
    c.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
}

/// Makes `p` absolute and lexically clean without following a final
/// symlink (a symlink given as a source is stored as a symlink).
fn resolve_source(p: &Path) -> Result<Source> {
    std::fs::symlink_metadata(p).map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            Error::BadSource { path: p.to_path_buf(), reason: "no such file or directory".into() }
        } else {
            Error::io(p, e)
        }
    })?;
    let abs = std::path::absolute(p).at(p)?;
    let mut clean = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    let components = clean
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes().to_vec()),
            _ => None,
        })
        .collect();
    Ok(Source { disk: clean, components })
}

fn stream_components(name: &str) -> Result<Vec<Vec<u8>>> {
    let comps: Vec<Vec<u8>> = name.split('/').filter(|c| !c.is_empty()).map(|c| c.as_bytes().to_vec()).collect();
    if comps.is_empty() || comps.iter().any(|c| !is_safe_name(c)) {
        return Err(Error::InvalidArgument {
            what: "stream name",
            reason: format!("{name:?} must be a relative path like mysql/shop.sql without . or .."),
        });
    }
    Ok(comps)
}

/// Checks the sources of a backup without touching the repository: every
/// path exists, every stream name is a clean relative path, and no stream
/// lands on or inside another stream or a backed-up path. A front end that
/// starts dump commands calls this first, so a bad name stops it before
/// any command runs.
pub fn check_sources(paths: &[PathBuf], stream_names: &[&str]) -> Result<()> {
    resolve_sources(paths, stream_names).map(|_| ())
}

/// Resolved file sources (sorted, nested ones dropped) and the snapshot
/// components of each stream, in the order given.
type ResolvedSources = (Vec<Source>, Vec<Vec<Vec<u8>>>);

fn resolve_sources(paths: &[PathBuf], stream_names: &[&str]) -> Result<ResolvedSources> {
    let mut sources = paths.iter().map(|p| resolve_source(p)).collect::<Result<Vec<_>>>()?;
    sources.sort_by(|a, b| a.components.cmp(&b.components));
    sources.dedup_by(|b, a| b.components.starts_with(&a.components));
    let stream_paths = stream_names.iter().map(|n| stream_components(n)).collect::<Result<Vec<_>>>()?;
    let clash = |reason: String| Error::InvalidArgument { what: "stream name", reason };
    for (i, a) in stream_paths.iter().enumerate() {
        if let Some(j) = stream_paths[..i].iter().position(|b| a.starts_with(b) || b.starts_with(a)) {
            return Err(clash(if a == &stream_paths[j] {
                format!("{:?} is given twice", stream_names[i])
            } else {
                format!("{:?} and {:?} overlap: one would be inside the other", stream_names[j], stream_names[i])
            }));
        }
        if let Some(s) = sources.iter().find(|s| a.starts_with(&s.components) || s.components.starts_with(a)) {
            return Err(clash(format!(
                "{:?} overlaps the backed-up path {} (stream /{} and the path would share a place in the snapshot)",
                stream_names[i],
                s.disk.display(),
                join(a)
            )));
        }
    }
    Ok((sources, stream_paths))
}

pub fn backup(repo: &Repository, mut opts: BackupOptions, progress: &dyn Progress) -> Result<BackupResult> {
    let start = Utc::now();
    if opts.paths.is_empty() && opts.streams.is_empty() {
        return Err(Error::InvalidArgument {
            what: "backup sources",
            reason: "give at least one path or a stream".into(),
        });
    }
    // Validate every source before touching the repository.
    let streams = std::mem::take(&mut opts.streams);
    let names: Vec<&str> = streams.iter().map(|s| s.name.as_str()).collect();
    let (sources, stream_paths) = resolve_sources(&opts.paths, &names)?;
    let mut paths: Vec<String> = sources.iter().map(|s| s.disk.display().to_string()).collect();
    paths.extend(stream_paths.iter().map(|c| format!("/{}", join(c))));
    paths.sort();

    // Format v2: a session instead of a lock (format-spec/v2/protocol.md
    // §4); it must exist before anything is read or written.
    let (_lock, session) = match repo.protocol() {
        Some(_) => (None, Some(repo.start_session("backup")?)),
        None => (Some(repo.lock_shared("backup")?), None),
    };
    if session.is_some() {
        // A long-lived Repository's index database may predate a sweep;
        // the index files tell what is gone.
        repo.refresh_index()?;
    }
    let host = opts.host.clone().unwrap_or_else(crate::lock::hostname);
    let parent = match opts.parent {
        Some(id) => Some(repo.load_snapshot(&id)?),
        None => {
            let filter = SnapshotFilter { hosts: vec![host.clone()], ..Default::default() };
            // The parent only saves re-reading unchanged files, so a damaged
            // snapshot file is no reason to refuse a backup (check reports it).
            repo.readable_snapshots()?.0.into_iter().rev().find(|s| filter.matches(&s.file) && s.file.paths == paths)
        }
    };
    // Packs left by an interrupted backup: known to the index database from
    // the start, so this run dedups against them, and listed in this run's
    // first index file.
    let adopt = repo.unindexed_packs()?;
    repo.index()?.add_packs(&adopt, None)?;

    let ctx = Ctx {
        repo,
        progress,
        cancel: opts.cancel.clone(),
        force_read: opts.force_read,
        parent_root: parent.as_ref().map(|p| p.file.tree),
        file_chunker: Chunker::new(&repo.config().file_chunker),
        stream_chunker: Chunker::new(&repo.config().stream_chunker),
        bytes_read: AtomicU64::new(0),
        warnings: AtomicU64::new(0),
        repo_root: repo.storage().local_path().and_then(|p| std::fs::canonicalize(p).ok()),
        stop: AtomicBool::new(false),
        stream_error: Mutex::new(None),
        session_lost: session.as_ref().map(|s| s.lost_flag()),
    };

    let run = packer::run(repo, adopt, |sink| run_pipeline(&ctx, sink, &sources, streams, &stream_paths));
    // A repository error is the root cause when there is one; otherwise a
    // failed stream is, and no snapshot is written. The packs holding what
    // was read before are written and listed either way.
    if let Some(s) = &session {
        // A session that could not be refreshed stopped the pipeline (B3):
        // that is the cause, whatever the pipeline reported.
        s.check()?;
    }
    let stream_error = ctx.stream_error.lock().ok().and_then(|mut e| e.take());
    let (root, stats) = match (run, stream_error) {
        (Err(e), _) if !matches!(e, Error::Interrupted) => return Err(e),
        (_, Some(e)) => return Err(e),
        (run, None) => run?,
    };
    let (root_tree, mut summary) = root;

    if ctx.stopping() {
        return Err(Error::Interrupted);
    }
    // Dedup may have reused blobs from packs that a concurrent backup wrote
    // but has not listed yet; list every such pack before committing, so
    // nothing this snapshot reaches depends on another process finishing.
    packer::list_unlisted_packs(repo)?;
    summary.bytes_read = ctx.bytes_read.load(Ordering::Relaxed);
    summary.bytes_added = stats.bytes_added;
    summary.bytes_added_stored = stats.bytes_stored;
    summary.blobs_added = stats.blobs_added;
    summary.errors = ctx.warnings.load(Ordering::Relaxed);
    summary.backup_start = Some(start);
    summary.backup_end = Some(Utc::now());
    let (uid, gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
    let mut tags = opts.tags.clone();
    tags.sort();
    tags.dedup();
    let file = SnapshotFile {
        time: opts.time.unwrap_or(start),
        host,
        username: crate::lock::username(),
        uid,
        gid,
        paths,
        tags,
        tree: root_tree,
        parent: parent.map(|p| p.id),
        program_version: format!("arc {}", env!("CARGO_PKG_VERSION")),
        summary,
    };
    // v2: nothing the snapshot reaches may live only in a pack a prune
    // marked meanwhile (B6); then the commit point.
    if let Some(s) = &session {
        crate::ops::commit::verify(repo, s, root_tree)?;
    }
    // The commit point: everything the snapshot refers to is durable.
    let snapshot_id = repo.save_snapshot(&file)?;
    drop(session);
    Ok(BackupResult { snapshot_id, warnings: file.summary.errors, snapshot: file })
}

fn join(c: &[Vec<u8>]) -> String {
    c.iter().map(|p| String::from_utf8_lossy(p)).collect::<Vec<_>>().join("/")
}

struct Ctx<'a> {
    repo: &'a Repository,
    progress: &'a dyn Progress,
    cancel: Option<Arc<AtomicBool>>,
    force_read: bool,
    parent_root: Option<Id>,
    file_chunker: Chunker,
    stream_chunker: Chunker,
    bytes_read: AtomicU64,
    warnings: AtomicU64,
    repo_root: Option<PathBuf>,
    /// Set when a stream failed: every source stops like on cancel, while
    /// the packer still writes out what was queued, so the next try reuses
    /// all that was read before the failure.
    stop: AtomicBool,
    /// The first stream failure, the error the backup returns.
    stream_error: Mutex<Option<Error>>,
    /// Raised when the v2 session could not be refreshed: stop like on
    /// cancel; the backup then fails with the session's error.
    session_lost: Option<Arc<AtomicBool>>,
}

impl Ctx<'_> {
    /// The backup is being stopped: cancelled by the caller, or a stream failed.
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || cancelled(&self.cancel) || cancelled(&self.session_lost)
    }

    /// Whether a chunk list of the parent may be reused as it is: with
    /// prune marks about, every chunk must be in a pack no mark names
    /// (format-spec/v2/protocol.md §4 B5); otherwise the file is read again.
    fn reusable(&self, chunks: &[Id]) -> Result<bool> {
        let marked = self.repo.marked_packs();
        if marked.is_empty() {
            return Ok(true);
        }
        for c in chunks {
            match self.repo.lookup_blob(c)? {
                Some(loc) if !marked.contains(&loc.pack) => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Records a stream's failure and stops the backup without failing the
    /// packer (see `stop`).
    fn fail_stream(&self, e: Error) {
        if let Ok(mut slot) = self.stream_error.lock() {
            if slot.is_none() {
                *slot = Some(e);
            }
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    fn warn(&self, path: &Path, msg: &str) {
        self.warnings.fetch_add(1, Ordering::Relaxed);
        self.progress.warn(path, msg);
    }

    /// The parent snapshot's node at `components`, if any.
    fn parent_node(&self, components: &[Vec<u8>]) -> Result<Option<Node>> {
        let Some(mut tree_id) = self.parent_root else {
            return Ok(None);
        };
        let Some((last, dirs)) = components.split_last() else {
            return Ok(None);
        };
        for c in dirs {
            let tree = self.repo.load_tree(&tree_id)?;
            match tree.find(c).and_then(|n| n.subtree) {
                Some(id) => tree_id = id,
                None => return Ok(None),
            }
        }
        Ok(self.repo.load_tree(&tree_id)?.find(last).cloned())
    }
}

/// One entry per source: `None` when it vanished before it could be read
/// (already warned about).
type SourceNodes = Vec<Option<Node>>;
/// A node to place in the snapshot at a path of components.
type Placed = (Vec<Vec<u8>>, Node);
/// An open directory in the tree builder and its entries so far.
type OpenDir = (Node, Vec<(Node, Content, Change)>);

fn run_pipeline(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    sources: &[Source],
    streams: Vec<StreamSource>,
    stream_paths: &[Vec<Vec<u8>>],
) -> Result<(Id, Summary)> {
    let workers = std::thread::available_parallelism().map(|n| n.get() * 2).unwrap_or(4);
    let (job_tx, job_rx) = bounded::<Job>(256);
    let (event_tx, event_rx) = bounded::<WalkEvent>(4096);
    let stream_slots: Vec<Arc<Slot>> = streams.iter().map(|_| Arc::new(Slot::default())).collect();
    let streams_running = AtomicUsize::new(streams.len());
    // Set when the walk or the tree builder failed on its own, without
    // stopping the sink: streams still being read must be stopped too.
    let abort = AtomicBool::new(false);

    std::thread::scope(|scope| -> Result<(Id, Summary)> {
        for _ in 0..workers {
            let rx = job_rx.clone();
            scope.spawn(move || worker(ctx, sink, rx));
        }
        drop(job_rx);
        // Each stream gets its own thread from the start rather than a
        // worker after the walk: a dump command blocks as soon as its pipe
        // (64 KiB) is full, and several dumps must progress side by side.
        let mut stops = Vec::new();
        for (stream, slot) in streams.into_iter().zip(&stream_slots) {
            let StreamSource { name, reader, allow_empty, stop } = stream;
            stops.extend(stop);
            let (slot, running) = (slot.clone(), &streams_running);
            scope.spawn(move || {
                let _done = CountDown(running);
                let r = store_stream(ctx, sink, &name, reader, allow_empty);
                slot.set(settle(ctx, sink, Path::new(&name), r));
            });
        }
        if !stops.is_empty() {
            let (running, abort) = (&streams_running, &abort);
            scope.spawn(move || stop_streams_on_failure(ctx, sink, running, abort, stops));
        }
        let slots = &stream_slots;
        let walker = scope.spawn(move || walker(ctx, sources, slots, stream_paths, job_tx, event_tx));
        let built = build_trees(ctx, sink, event_rx, sources.len() + stream_paths.len());
        let walked = walker.join().unwrap_or(Err(Error::Interrupted));
        if built.is_err() || walked.is_err() {
            abort.store(true, Ordering::SeqCst);
        }
        let (nodes, mut summary) = built?;
        walked?;
        // Top-level nodes in the order of `sources` then streams.
        let mut items: Vec<Placed> = Vec::new();
        let places = sources.iter().map(|s| &s.components).chain(stream_paths.iter());
        for (comps, node) in places.zip(nodes) {
            if let Some(node) = node {
                items.push((comps.clone(), node));
            }
        }
        let reader = ctx.repo.index()?.reader()?;
        let root = assemble(sink, &reader, Path::new("/"), items, &mut summary)?;
        Ok((root, summary))
    })
}

/// Counts a stream thread as finished however it ends.
struct CountDown<'a>(&'a AtomicUsize);

impl Drop for CountDown<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Watches a backup that reads streams: once it fails or is cancelled
/// while a stream is still being read, calls every stream's stop hook, so
/// that a reader blocked on a silent producer returns and the backup can
/// end. Returns when all streams are done.
fn stop_streams_on_failure(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    running: &AtomicUsize,
    abort: &AtomicBool,
    stops: Vec<Box<dyn Fn() + Send + Sync>>,
) {
    while running.load(Ordering::SeqCst) > 0 {
        if sink.is_failed() || ctx.stopping() || abort.load(Ordering::SeqCst) {
            for stop in &stops {
                stop();
            }
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Builds the directories above the sources (`/var` for `/var/www`) from
/// their metadata on disk, or synthetic ones for stream paths; returns the
/// root tree id.
fn assemble(
    sink: &BlobSink<'_>,
    reader: &IndexReader,
    disk_dir: &Path,
    items: Vec<Placed>,
    summary: &mut Summary,
) -> Result<Id> {
    // A source that is `/` itself is the root tree.
    if let Some((_, node)) = items.iter().find(|(c, _)| c.is_empty()) {
        if let Some(id) = node.subtree {
            return Ok(id);
        }
    }
    let mut groups: BTreeMap<Vec<u8>, Vec<Placed>> = BTreeMap::new();
    let mut tree = Tree::default();
    for (mut comps, node) in items {
        if comps.len() == 1 {
            tree.nodes.push(node);
        } else {
            let first = comps.remove(0);
            groups.entry(first).or_default().push((comps, node));
        }
    }
    for (name, sub) in groups {
        let path = disk_dir.join(std::ffi::OsStr::from_bytes(&name));
        let mut node = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                let mut w = Vec::new();
                node_from_metadata(&name, &path, &meta, &mut OwnerNames::default(), &mut w)
            }
            // Stream paths have no directory on disk.
            _ => synthetic_dir(name.clone()),
        };
        node.subtree = Some(assemble(sink, reader, &path, sub, summary)?);
        summary.dirs += 1;
        tree.nodes.push(node);
    }
    let data = tree.encode()?;
    sink.store(reader, BlobKind::Tree, &data)
}

fn synthetic_dir(name: Vec<u8>) -> Node {
    let mut n = Node::new(NodeKind::Dir, name);
    n.mode = 0o040755;
    n.uid = nix::unistd::getuid().as_raw();
    n.gid = nix::unistd::getgid().as_raw();
    let now = Utc::now();
    n.mtime = Timestamp { sec: now.timestamp(), nsec: now.timestamp_subsec_nanos() };
    n.ctime = n.mtime;
    n
}

fn same_file(a: &Node, b: &Node) -> bool {
    a.kind == b.kind && a.size == b.size && a.mtime == b.mtime && a.ctime == b.ctime && a.inode == b.inode
}

/// The first file of a set of hardlinks; later links refer to it.
struct LinkGroup {
    first_path: Vec<u8>,
    /// Pending content, or `None` when `chunks` came from the parent.
    slot: Option<Arc<Slot>>,
    chunks: Vec<Id>,
    size: u64,
    change: Change,
}

/// Walks the sources in order and hands out work.
///
/// Directories are listed by a pool of threads ([`DirPool`]): each lists
/// one directory (readdir, names sorted, `statx` of every entry relative to
/// the directory, xattrs, the parent snapshot's tree of that directory) and
/// queues its subdirectories, so several directories are read at once and
/// ahead of need. This thread consumes the listings strictly depth first in
/// name order, which is the event order the tree builder requires, and does
/// everything that depends on that order (hardlink groups, change
/// decisions, file jobs).
fn walker(
    ctx: &Ctx<'_>,
    sources: &[Source],
    stream_slots: &[Arc<Slot>],
    stream_paths: &[Vec<Vec<u8>>],
    jobs: Sender<Job>,
    events: Sender<WalkEvent>,
) -> Result<()> {
    let mut owners = OwnerNames::default();
    let mut out = WalkOut { links: HashMap::new(), jobs: &jobs, events: &events };
    let pool = DirPool::default();
    // Listing is syscalls and, on a cold cache, disk waits: more threads
    // than cores keep more requests in flight.
    let threads = std::thread::available_parallelism().map(|n| n.get() * 2).unwrap_or(4).clamp(2, 16);

    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..threads {
            scope.spawn(|| pool.work(ctx));
        }
        // However this function returns, the listers stop.
        let _stop = StopOnDrop(&pool);
        for (si, src) in sources.iter().enumerate() {
            let parent_node = ctx.parent_node(&src.components)?;
            let meta = match std::fs::symlink_metadata(&src.disk) {
                Ok(m) => m,
                Err(e) => {
                    ctx.warn(&src.disk, &e.to_string());
                    out.send(WalkEvent::SourceDone)?;
                    continue;
                }
            };
            let name = src.components.last().cloned().unwrap_or_default();
            let mut warnings = Vec::new();
            let node = node_from_metadata(&name, &src.disk, &meta, &mut owners, &mut warnings);
            for w in warnings {
                ctx.warn(&src.disk, &w);
            }
            if node.kind != NodeKind::Dir {
                entry(ctx, src, node, parent_node, &src.disk, &mut out)?;
                out.send(WalkEvent::SourceDone)?;
                continue;
            }
            if ctx.repo_root.as_deref() == Some(src.disk.as_path()) {
                // Never back up the repository into itself.
                out.send(WalkEvent::SourceDone)?;
                continue;
            }
            let key = vec![u32::try_from(si).unwrap_or(u32::MAX)];
            pool.submit(key.clone(), src.disk.clone(), parent_node.and_then(|p| p.subtree));
            out.send(WalkEvent::EnterDir(node))?;
            let first = pool.take(&key, ctx)?;
            report_listing(ctx, &src.disk, &first);
            // Open directories, innermost last: key, listing, next child.
            let mut stack: Vec<(WalkKey, Listing, usize)> = vec![(key, first, 0)];
            while let Some((key, listing, next)) = stack.last_mut() {
                if ctx.stopping() {
                    return Err(Error::Interrupted);
                }
                let i = *next;
                let Some(slot) = listing.children.get_mut(i) else {
                    out.send(WalkEvent::LeaveDir)?;
                    stack.pop();
                    continue;
                };
                *next += 1;
                let Some(child) = slot.take() else { continue };
                for w in &child.warnings {
                    ctx.warn(&child.path, w);
                }
                let Some(node) = child.node else { continue };
                if node.kind == NodeKind::Dir {
                    if !child.descend {
                        continue;
                    }
                    let mut sub = key.clone();
                    sub.push(u32::try_from(i).unwrap_or(u32::MAX));
                    out.send(WalkEvent::EnterDir(node))?;
                    let l = pool.take(&sub, ctx)?;
                    report_listing(ctx, &child.path, &l);
                    stack.push((sub, l, 0));
                } else {
                    entry(ctx, src, node, child.prev, &child.path, &mut out)?;
                }
            }
            out.send(WalkEvent::SourceDone)?;
        }
        // The stream threads started with the pipeline; here each stream
        // only takes its place after the file sources.
        for (slot, comps) in stream_slots.iter().zip(stream_paths) {
            let mut node = synthetic_dir(comps.last().cloned().unwrap_or_default());
            node.kind = NodeKind::File;
            node.mode = 0o100644;
            node.user = owners.user(node.uid);
            node.group = owners.group(node.gid);
            let slot = slot.clone();
            out.send(WalkEvent::Entry(node, Content::Pending(slot), Change::New))?;
            out.send(WalkEvent::SourceDone)?;
        }
        Ok(())
    })
}

/// Warnings of a directory that could not be (fully) listed.
fn report_listing(ctx: &Ctx<'_>, dir: &Path, listing: &Listing) {
    for e in &listing.errors {
        ctx.warn(dir, e);
    }
}

/// Where the ordered walk puts its results.
struct WalkOut<'a> {
    /// (dev, ino) of multiply linked files -> (snapshot path, content)
    links: HashMap<(u64, u64), LinkGroup>,
    jobs: &'a Sender<Job>,
    events: &'a Sender<WalkEvent>,
}

impl WalkOut<'_> {
    fn send(&self, e: WalkEvent) -> Result<()> {
        self.events.send(e).map_err(|_| Error::Interrupted)
    }
}

/// One non-directory entry, in walk order: decides whether a file changed
/// since the parent snapshot, groups hardlinks, and queues content to read.
fn entry(
    ctx: &Ctx<'_>,
    src: &Source,
    mut node: Node,
    previous: Option<Node>,
    path: &Path,
    out: &mut WalkOut<'_>,
) -> Result<()> {
    let (links, jobs) = (&mut out.links, out.jobs);
    let send = |e: WalkEvent| out.events.send(e).map_err(|_| Error::Interrupted);
    if node.kind != NodeKind::File {
        return send(WalkEvent::Entry(node, Content::Ready, Change::New));
    }
    let change = match &previous {
        None => Change::New,
        Some(p) if !ctx.force_read && same_file(p, &node) && ctx.reusable(&p.chunks)? => Change::Unchanged,
        Some(_) => Change::Changed,
    };
    let key = (node.device, node.inode);
    if node.nlink > 1 {
        if let Some(group) = links.get(&key) {
            node.kind = NodeKind::Hardlink;
            node.target = group.first_path.clone();
            let content = match &group.slot {
                Some(s) => Content::Pending(s.clone()),
                None => {
                    node.chunks = group.chunks.clone();
                    node.size = group.size;
                    Content::Ready
                }
            };
            return send(WalkEvent::Entry(node, content, group.change));
        }
    }
    if change == Change::Unchanged {
        if let Some(p) = previous {
            node.chunks = p.chunks;
        }
        if node.nlink > 1 {
            links.insert(
                key,
                LinkGroup {
                    first_path: snapshot_path(&src.components, path, &src.disk),
                    slot: None,
                    chunks: node.chunks.clone(),
                    size: node.size,
                    change,
                },
            );
        }
        send(WalkEvent::Entry(node, Content::Ready, change))
    } else {
        let slot = Arc::new(Slot::default());
        if node.nlink > 1 {
            links.insert(
                key,
                LinkGroup {
                    first_path: snapshot_path(&src.components, path, &src.disk),
                    slot: Some(slot.clone()),
                    chunks: Vec::new(),
                    size: 0,
                    change,
                },
            );
        }
        let seen = Seen { size: node.size, mtime: node.mtime };
        jobs.send(Job { path: path.to_path_buf(), seen, slot: slot.clone() }).map_err(|_| Error::Interrupted)?;
        send(WalkEvent::Entry(node, Content::Pending(slot), change))
    }
}

/// Where a directory is in the walk: the source's index, then the index of
/// each directory on the way down among its parent's sorted entries. Keys
/// compare in exactly depth-first, name-sorted order (a directory's key is a
/// prefix of its descendants' keys), the order the walk consumes them.
type WalkKey = Vec<u32>;

/// Entries of listed but not yet consumed directories kept at most, beyond
/// the one directory the walk waits for: bounds the memory of looking ahead.
const LIST_AHEAD_ENTRIES: usize = 16 * 1024;

/// One entry of a directory listing.
struct Child {
    path: PathBuf,
    /// `None` when it could not be stat'ed (then `warnings` says why).
    node: Option<Node>,
    /// The same name in the parent snapshot's tree of this directory.
    prev: Option<Node>,
    warnings: Vec<String>,
    /// A directory to walk into: false for the repository itself.
    descend: bool,
}

/// A directory's entries sorted by name, each stat'ed.
#[derive(Default)]
struct Listing {
    children: Vec<Option<Child>>,
    /// Why it could not be read (fully).
    errors: Vec<String>,
}

struct DirJob {
    path: PathBuf,
    /// The directory's tree in the parent snapshot.
    prev_tree: Option<Id>,
}

#[derive(Default)]
struct PoolState {
    /// Directories to list, by key; listers take the smallest.
    todo: BTreeMap<WalkKey, DirJob>,
    /// Listed directories the walk has not taken yet.
    done: BTreeMap<WalkKey, Listing>,
    /// Entries in `done`.
    buffered: usize,
    stop: bool,
}

/// The directory listers: a queue of directories in walk order, a bounded
/// buffer of finished listings, and a condition variable for both sides.
#[derive(Default)]
struct DirPool {
    state: Mutex<PoolState>,
    changed: Condvar,
}

struct StopOnDrop<'a>(&'a DirPool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.state.lock() {
            s.stop = true;
        }
        self.0.changed.notify_all();
    }
}

impl DirPool {
    fn submit(&self, key: WalkKey, path: PathBuf, prev_tree: Option<Id>) {
        if let Ok(mut s) = self.state.lock() {
            s.todo.insert(key, DirJob { path, prev_tree });
        }
        self.changed.notify_all();
    }

    /// Waits for the listing of `key`, which must have been submitted
    /// (directly or as a subdirectory of a listed directory).
    fn take(&self, key: &WalkKey, ctx: &Ctx<'_>) -> Result<Listing> {
        let mut s = self.state.lock().map_err(|_| Error::Interrupted)?;
        loop {
            if let Some(l) = s.done.remove(key) {
                s.buffered -= l.children.len();
                drop(s);
                self.changed.notify_all();
                return Ok(l);
            }
            if s.stop || ctx.stopping() {
                return Err(Error::Interrupted);
            }
            s = self.changed.wait_timeout(s, std::time::Duration::from_millis(100)).map_err(|_| Error::Interrupted)?.0;
        }
    }

    /// A lister thread: takes the first directory in walk order, lists it,
    /// queues its subdirectories and hands the listing over. It waits while
    /// the buffer is full, unless its directory comes before everything
    /// buffered: the walk needs that one first, so it must never wait.
    fn work(&self, ctx: &Ctx<'_>) {
        // Parent trees were all in the index before this backup started, so
        // one read transaction serves the whole walk.
        let reader = ctx.repo.index().and_then(|i| i.reader()).ok();
        let mut owners = OwnerNames::default();
        loop {
            let (key, job) = {
                let Ok(mut s) = self.state.lock() else { return };
                loop {
                    if s.stop {
                        return;
                    }
                    let runnable = match (s.todo.first_key_value(), s.done.first_key_value()) {
                        (Some(_), _) if s.buffered < LIST_AHEAD_ENTRIES => true,
                        (Some((next, _)), Some((buffered, _))) => next < buffered,
                        (Some(_), None) => true,
                        (None, _) => false,
                    };
                    if runnable {
                        if let Some(job) = s.todo.pop_first() {
                            break job;
                        }
                    }
                    s = match self.changed.wait(s) {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                }
            };
            let (listing, subdirs) = list_dir(ctx, reader.as_ref(), &mut owners, &key, &job);
            let Ok(mut s) = self.state.lock() else { return };
            for (k, j) in subdirs {
                s.todo.insert(k, j);
            }
            s.buffered += listing.children.len();
            s.done.insert(key, listing);
            drop(s);
            self.changed.notify_all();
        }
    }
}

/// Lists one directory: names sorted as bytes, each entry stat'ed relative
/// to the directory (no path walk per entry) with its xattrs, and matched
/// with the parent snapshot's tree. Returns the listing and the jobs of its
/// subdirectories.
fn list_dir(
    ctx: &Ctx<'_>,
    reader: Option<&IndexReader>,
    owners: &mut OwnerNames,
    key: &WalkKey,
    job: &DirJob,
) -> (Listing, Vec<(WalkKey, DirJob)>) {
    let mut listing = Listing::default();
    let mut subdirs = Vec::new();
    if ctx.stopping() {
        return (listing, subdirs);
    }
    let rd = match std::fs::read_dir(&job.path) {
        Ok(rd) => rd,
        Err(e) => {
            listing.errors.push(e.to_string());
            return (listing, subdirs);
        }
    };
    let mut entries: Vec<(std::ffi::OsString, std::fs::DirEntry)> = Vec::new();
    for e in rd {
        match e {
            Ok(e) => entries.push((e.file_name(), e)),
            Err(e) => listing.errors.push(e.to_string()),
        }
    }
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    // A tree that cannot be read only costs change detection: its files
    // are read again.
    let prev_tree = match (job.prev_tree, reader) {
        (Some(id), Some(r)) => r
            .lookup(&id)
            .ok()
            .flatten()
            .and_then(|loc| ctx.repo.blob_reader().and_then(|br| br.read_at(ctx.repo, &id, &loc)).ok())
            .and_then(|data| Tree::decode(&data, &id).ok()),
        _ => None,
    };
    listing.children.reserve(entries.len());
    for (i, (name, e)) in entries.into_iter().enumerate() {
        let path = job.path.join(&name);
        let name = name.as_bytes();
        let mut warnings = Vec::new();
        let meta = match e.metadata() {
            Ok(m) => m,
            Err(err) => {
                warnings.push(err.to_string());
                listing.children.push(Some(Child { path, node: None, prev: None, warnings, descend: false }));
                continue;
            }
        };
        let node = node_from_metadata(name, &path, &meta, owners, &mut warnings);
        let prev = prev_tree.as_ref().and_then(|t| t.find(name)).cloned();
        let mut descend = false;
        if node.kind == NodeKind::Dir && ctx.repo_root.as_deref() != Some(path.as_path()) {
            descend = true;
            let mut sub = key.clone();
            sub.push(u32::try_from(i).unwrap_or(u32::MAX));
            subdirs.push((sub, DirJob { path: path.clone(), prev_tree: prev.as_ref().and_then(|p| p.subtree) }));
        }
        listing.children.push(Some(Child { path, node: Some(node), prev, warnings, descend }));
    }
    (listing, subdirs)
}

/// The path a disk entry has inside the snapshot, `/`-joined, no leading `/`.
fn snapshot_path(components: &[Vec<u8>], path: &Path, src: &Path) -> Vec<u8> {
    let mut out = components.iter().map(|c| c.as_slice()).collect::<Vec<_>>().join(&b'/');
    if let Ok(rel) = path.strip_prefix(src) {
        for c in rel.components() {
            if !out.is_empty() {
                out.push(b'/');
            }
            out.extend_from_slice(c.as_os_str().as_bytes());
        }
    }
    out
}

/// Consumes walk events, waits for file contents when a directory closes,
/// and stores one tree blob per directory. Returns one node per source.
fn build_trees(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    events: Receiver<WalkEvent>,
    expected: usize,
) -> Result<(SourceNodes, Summary)> {
    let mut summary = Summary::default();
    let mut stack: Vec<OpenDir> = Vec::new();
    let mut done: SourceNodes = Vec::new();
    let mut top: Option<Node> = None;

    let resolve = |entry: (Node, Content, Change), summary: &mut Summary| -> Option<Node> {
        let (mut node, content, change) = entry;
        if let Content::Pending(slot) = content {
            match slot.wait() {
                FileOutcome::Stored { chunks, size } => {
                    node.chunks = chunks;
                    node.size = size;
                }
                FileOutcome::Failed => return None,
            }
        }
        if node.kind.has_chunks() {
            summary.total_files += 1;
            summary.total_bytes += node.size;
            match change {
                Change::New => summary.files_new += 1,
                Change::Changed => summary.files_changed += 1,
                Change::Unchanged => summary.files_unchanged += 1,
            }
        } else if node.kind != NodeKind::Dir {
            summary.other_entries += 1;
        }
        Some(node)
    };

    for event in events.iter() {
        if sink.is_failed() {
            return Err(Error::Interrupted);
        }
        match event {
            WalkEvent::EnterDir(node) => stack.push((node, Vec::new())),
            WalkEvent::Entry(node, content, change) => match stack.last_mut() {
                Some((_, entries)) => entries.push((node, content, change)),
                None => top = resolve((node, content, change), &mut summary),
            },
            WalkEvent::LeaveDir => {
                let Some((mut dir, entries)) = stack.pop() else {
                    return Err(Error::corrupt("pipeline", "walker", "unbalanced directory events"));
                };
                let mut tree = Tree { nodes: entries.into_iter().filter_map(|e| resolve(e, &mut summary)).collect() };
                let data = tree.encode()?;
                let reader = ctx.repo.index()?.reader()?;
                dir.subtree = Some(sink.store(&reader, BlobKind::Tree, &data)?);
                summary.dirs += 1;
                match stack.last_mut() {
                    Some((_, entries)) => entries.push((dir, Content::Ready, Change::Unchanged)),
                    None => top = Some(dir),
                }
            }
            WalkEvent::SourceDone => done.push(top.take()),
        }
    }
    if ctx.stopping() {
        return Err(Error::Interrupted);
    }
    if done.len() != expected {
        return Err(Error::Interrupted);
    }
    Ok((done, summary))
}

fn worker(ctx: &Ctx<'_>, sink: &BlobSink<'_>, jobs: Receiver<Job>) {
    let mut buf = Vec::new();
    let mut reader = None;
    for Job { path, seen, slot } in jobs.iter() {
        let r = store_file(ctx, sink, &mut reader, &path, seen, &mut buf);
        slot.set(settle(ctx, sink, &path, r));
    }
}

/// Source errors become warnings and a missing file; repository errors
/// stop the pipeline.
fn settle(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    path: &Path,
    r: Result<std::result::Result<(Vec<Id>, u64), String>>,
) -> FileOutcome {
    match r {
        Ok(Ok((chunks, size))) => {
            ctx.progress.file_done(path, size);
            FileOutcome::Stored { chunks, size }
        }
        Ok(Err(msg)) => {
            ctx.warn(path, &msg);
            FileOutcome::Failed
        }
        Err(e) => {
            if !matches!(e, Error::Interrupted) {
                sink.fail(e);
            }
            FileOutcome::Failed
        }
    }
}

type Stored = std::result::Result<(Vec<Id>, u64), String>;

fn store_file(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    reader: &mut Option<(u64, IndexReader)>,
    path: &Path,
    seen: Seen,
    buf: &mut Vec<u8>,
) -> Result<Stored> {
    crate::fault::pause_before_read(path);
    // O_NOATIME keeps backups from dirtying every inode; it is refused for
    // files we do not own, so fall back to a plain open.
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOATIME).open(path).or_else(|_| File::open(path));
    let mut file = match file {
        Ok(f) => f,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let chunker = &ctx.file_chunker;
    if seen.size > chunker.max_size() as u64 {
        return store_large(ctx, sink, reader, path, file, seen);
    }
    let reader = sink.index_reader(reader)?;
    // Small files (nearly all of a mail spool): one read of the size the
    // walk saw; growth or shrinkage shows in the check after reading.
    buf.resize(seen.size as usize, 0);
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Ok(Err(e.to_string())),
        }
    }
    buf.truncate(filled);
    let read = filled as u64;
    let mut chunks = Vec::new();
    let mut pos = 0;
    for len in chunker.cut_all(buf) {
        chunks.push(sink.store(reader, BlobKind::Data, &buf[pos..pos + len])?);
        pos += len;
    }
    ctx.bytes_read.fetch_add(read, Ordering::Relaxed);
    ctx.progress.bytes(read);
    check_unchanged(ctx, path, &file, seen, read);
    Ok(Ok((chunks, read)))
}

fn store_large(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    reader: &mut Option<(u64, IndexReader)>,
    path: &Path,
    mut file: File,
    seen: Seen,
) -> Result<Stored> {
    match store_chunks(ctx, sink, reader, ctx.file_chunker, &mut file)? {
        Ok((chunks, read)) => {
            check_unchanged(ctx, path, &file, seen, read);
            Ok(Ok((chunks, read)))
        }
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// Chunks and stores everything `source` yields, reporting progress as it
/// goes. The outer error stops the backup; the inner one is the source's
/// own read error, which the caller judges.
fn store_chunks(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    reader: &mut Option<(u64, IndexReader)>,
    chunker: Chunker,
    source: impl Read,
) -> Result<std::io::Result<(Vec<Id>, u64)>> {
    let mut s = StreamChunker::new(chunker, source);
    let mut chunks = Vec::new();
    let mut reported = 0;
    loop {
        if ctx.stopping() {
            return Err(Error::Interrupted);
        }
        match s.next_chunk() {
            Ok(Some(chunk)) => chunks.push(sink.store(sink.index_reader(reader)?, BlobKind::Data, chunk)?),
            Ok(None) => break,
            Err(e) => return Ok(Err(e)),
        }
        let now = s.bytes_read;
        ctx.progress.bytes(now - reported);
        ctx.bytes_read.fetch_add(now - reported, Ordering::Relaxed);
        reported = now;
    }
    Ok(Ok((chunks, s.bytes_read)))
}

/// Warns when a file's size or mtime after reading differ from what the
/// walk saw, or when fewer or more bytes were read: it was written to while
/// being backed up, and what was read is what the snapshot holds.
fn check_unchanged(ctx: &Ctx<'_>, path: &Path, file: &File, seen: Seen, read: u64) {
    let changed = match file.metadata() {
        Ok(after) => {
            after.len() != seen.size
                || after.mtime() != seen.mtime.sec
                || after.mtime_nsec() != i64::from(seen.mtime.nsec)
                || read != seen.size
        }
        Err(_) => true,
    };
    if changed {
        ctx.warn(path, "file changed while it was read; stored as read");
    }
}

fn store_stream(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    name: &str,
    reader: Box<dyn Read + Send>,
    allow_empty: bool,
) -> Result<Stored> {
    // Unlike a file, a stream cannot be skipped with a warning: a dump that
    // breaks off must not become a snapshot.
    let (chunks, read) = match store_chunks(ctx, sink, &mut None, ctx.stream_chunker, reader)? {
        Ok(r) => r,
        // A read that failed because the backup was stopping (the stop hook
        // killed the dump) is not the cause: report the one that is.
        Err(_) if ctx.stopping() || sink.is_failed() => return Err(Error::Interrupted),
        Err(e) => {
            ctx.fail_stream(Error::StreamFailed { name: name.to_string(), detail: e.to_string() });
            return Err(Error::Interrupted);
        }
    };
    if read == 0 && !allow_empty {
        ctx.fail_stream(Error::BadSource {
            path: PathBuf::from(name),
            reason: "the stream is empty (did the dump fail?); use --allow-empty to store it anyway".into(),
        });
        return Err(Error::Interrupted);
    }
    Ok(Ok((chunks, read)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::repo::InitOptions;
    use crate::test_data::pseudo_random;
    use std::sync::mpsc;

    /// Yields `data`, then fails as a dump command that exited non-zero does.
    struct FailingReader {
        data: std::io::Cursor<Vec<u8>>,
    }

    impl Read for FailingReader {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.data.read(buf)? {
                0 => Err(std::io::Error::other("command 'dump' exited with status 2")),
                n => Ok(n),
            }
        }
    }

    /// Blocks until its stop hook is called, like a dump that writes nothing.
    struct SilentReader(mpsc::Receiver<()>);

    impl Read for SilentReader {
        fn read(&mut self, _buf: &mut [u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Err(std::io::Error::other("killed"))
        }
    }

    fn stream(name: &str, reader: impl Read + Send + 'static) -> StreamSource {
        StreamSource { name: name.into(), reader: Box::new(reader), allow_empty: false, stop: None }
    }

    #[test]
    fn a_stream_read_error_fails_the_backup_and_writes_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_local(&dir.path().join("repo"), &InitOptions::default()).unwrap();
        let good = std::io::Cursor::new(pseudo_random(3 << 20, 0x2545_F491_4F6C_DD1D));
        let bad = FailingReader { data: std::io::Cursor::new(pseudo_random(5 << 20, 0x2545_F491_4F6C_DD1D)) };
        let opts =
            BackupOptions { streams: vec![stream("a.sql", good), stream("db/b.sql", bad)], ..Default::default() };
        match backup(&repo, opts, &NoProgress) {
            Err(Error::StreamFailed { name, detail }) => {
                assert_eq!(name, "db/b.sql");
                assert!(detail.contains("status 2"), "{detail}");
            }
            other => panic!("expected StreamFailed, got {:?}", other.map(|r| r.snapshot_id)),
        }
        assert!(repo.snapshots().unwrap().is_empty());
        // What both streams delivered before the failure was written: the
        // retry adds at most the read-ahead after the last chunk boundary.
        let good = std::io::Cursor::new(pseudo_random(3 << 20, 0x2545_F491_4F6C_DD1D));
        let fixed = std::io::Cursor::new(pseudo_random(5 << 20, 0x2545_F491_4F6C_DD1D));
        let opts =
            BackupOptions { streams: vec![stream("a.sql", good), stream("db/b.sql", fixed)], ..Default::default() };
        let r = backup(&repo, opts, &NoProgress).unwrap();
        assert!(r.snapshot.summary.bytes_added <= 3 << 20, "retry added {}", r.snapshot.summary.bytes_added);
    }

    #[test]
    fn a_failing_stream_stops_a_silent_one_through_its_hook() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_local(&dir.path().join("repo"), &InitOptions::default()).unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        let tx = Mutex::new(tx);
        let mut silent = stream("silent.sql", SilentReader(rx));
        silent.stop = Some(Box::new(move || {
            if let Ok(tx) = tx.lock() {
                let _ = tx.send(());
            }
        }));
        let bad = FailingReader { data: std::io::Cursor::new(b"partial".to_vec()) };
        let opts = BackupOptions { streams: vec![silent, stream("bad.sql", bad)], ..Default::default() };
        // Without the hook this would block for ever in the silent reader.
        match backup(&repo, opts, &NoProgress) {
            Err(Error::StreamFailed { name, .. }) => assert_eq!(name, "bad.sql"),
            other => panic!("expected StreamFailed, got {:?}", other.map(|r| r.snapshot_id)),
        }
        assert!(repo.snapshots().unwrap().is_empty());
    }

    #[test]
    fn stream_names_are_checked_against_each_other_and_the_paths() {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir(&www).unwrap();
        let msg = |paths: &[PathBuf], names: &[&str]| match check_sources(paths, names) {
            Err(Error::InvalidArgument { reason, .. }) => reason,
            other => panic!("{names:?}: expected InvalidArgument, got {other:?}"),
        };
        assert!(check_sources(std::slice::from_ref(&www), &["mysql/shop.sql", "pg/app.sql"]).is_ok());
        assert!(msg(&[], &["a.sql", "a.sql"]).contains("given twice"));
        assert!(msg(&[], &["db", "db/x.sql"]).contains("overlap"));
        assert!(msg(&[], &["../etc/passwd"]).contains("relative path"));
        let inside = format!("{}/x.sql", www.display());
        assert!(msg(std::slice::from_ref(&www), &[inside.as_str()]).contains("backed-up path"));
    }
}
