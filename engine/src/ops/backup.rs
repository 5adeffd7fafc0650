//! `backup`: sources (file trees and streams) → chunks → packs → trees →
//! snapshot. See [`crate::packer`] for the stages after hashing.
//!
//! ```text
//! walk (crate::walk: listers, N threads: readdir, lstat, xattrs, parent tree)
//!   └─> events (1 thread: depth-first order, changes: unchanged files, hardlinks)
//!         ├─(bounded)─> store (N threads: read, chunk, hash, dedup) ─> BlobSink
//!         └─(bounded)─> tree_builder (this thread: waits for each file's result
//!                       in turn, encodes and stores each directory's tree leaf
//!                       by leaf as its entries come)
//! ```
//! This file holds the orchestration and the messages between the stages;
//! each stage is a file of its own: [`sources`] (checks before anything is
//! read), [`crate::walk`], [`events`], [`changes`], [`store`],
//! [`tree_builder`].
//! A file whose size, mtime, ctime and inode match the parent snapshot is
//! not read: its chunk list is taken from the parent tree.
//! Streams (database dumps) are read by a thread each from the start of the
//! backup, beside the walk, so a dump command never waits on a full pipe
//! until the file walk is over. A stream that ends in a read error (its dump
//! command failed) stops the backup like a cancel: no snapshot, but what was
//! read before is written to packs for the next try.
//! The snapshot file is written only after every pack and index file is
//! durable, so a backup that dies leaves no snapshot, only reusable packs.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use chrono::{DateTime, Utc};
use crossbeam_channel::bounded;

use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::exclude::{mount_points, Excludes};
use crate::format::snapshot::{SnapshotFile, Summary};
use crate::format::tree::{Node, NodeKind, Timestamp};
use crate::id::Id;
use crate::packer::{self, BlobSink};
use crate::progress::{ItemChange, Progress};
use crate::repo::{Repository, Snapshot, SnapshotFilter};

mod changes;
mod events;
mod sources;
mod store;
mod stream_delta;
mod tree_builder;

use events::walker;
pub use sources::check_sources;
use sources::{join, resolve_sources, Source};
use store::{settle, store_stream, worker};
use tree_builder::{assemble, build_trees, Placed};

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
    /// What to leave out; recorded in the snapshot.
    pub excludes: Excludes,
    /// Bytes per second read from all sources together (files and
    /// streams); `None` reads as fast as the disks allow.
    pub limit_read: Option<u64>,
    /// Record the one path of `paths` under this absolute path instead
    /// (a filesystem snapshot mounted elsewhere, recorded where the data
    /// lives: restores, `latest:` and the mount show this path).
    pub record_as: Option<PathBuf>,
    /// Store every stream chunk plainly, never as a delta against the
    /// parent's stream: no base chunk is read back from the repository
    /// (for a remote store that bills downloads; format-spec/v2/streams.md
    /// section 4.7).
    pub no_stream_deltas: bool,
}

/// A file a backup would read (see [`dry_run`]), or, when asked for, one
/// it would take unchanged from the parent snapshot.
#[derive(Debug, Clone)]
pub struct DryRunFile {
    pub path: PathBuf,
    pub size: u64,
    pub change: ItemChange,
}

#[derive(Debug, Clone)]
pub struct BackupResult {
    pub snapshot_id: Id,
    pub snapshot: SnapshotFile,
    /// Number of sources that could not be (fully) read.
    pub warnings: u64,
    /// Files unchanged since the parent that were read again because a
    /// chunk of theirs is in no pack the index lists any more (dropped by
    /// `repair packs` or `repair index`).
    pub files_reread_missing: u64,
}

/// Waits for a file's content to be stored by a worker.
#[derive(Default)]
struct Slot {
    value: Mutex<SlotState>,
    ready: Condvar,
}

#[derive(Default)]
struct SlotState {
    outcome: Option<FileOutcome>,
    /// The tree builder waits on the slot: setting it wakes the builder
    /// only then (a wake is a system call, for each of a mail spool's
    /// 200,000 files, and the builder mostly finds the value set).
    waited: bool,
}

#[derive(Clone)]
enum FileOutcome {
    Stored { chunks: Vec<Id>, size: u64 },
    Failed,
}

impl Slot {
    fn set(&self, v: FileOutcome) {
        let wake = match self.value.lock() {
            Ok(mut g) => {
                g.outcome = Some(v);
                g.waited
            }
            Err(_) => true,
        };
        if wake {
            self.ready.notify_all();
        }
    }

    /// Sets `Failed` unless a value was set: dropped by a worker that
    /// panicked, so the tree builder waiting on the slot is not left
    /// waiting for work that will never happen (the panic itself ends the
    /// backup when the worker threads are joined).
    fn fail_if_unset(&self) {
        let mut g = self.value.lock().unwrap_or_else(|p| p.into_inner());
        if g.outcome.is_none() {
            g.outcome = Some(FileOutcome::Failed);
        }
        drop(g);
        self.ready.notify_all();
    }

    fn wait(&self) -> FileOutcome {
        let Ok(mut g) = self.value.lock() else {
            return FileOutcome::Failed;
        };
        loop {
            if let Some(v) = g.outcome.as_ref() {
                return v.clone();
            }
            g.waited = true;
            g = match self.ready.wait(g) {
                Ok(g) => g,
                Err(_) => return FileOutcome::Failed,
            };
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Change {
    New,
    Changed,
    Unchanged,
}

impl Change {
    /// Counts a file with content of `size` bytes in the summary.
    fn count_file(self, summary: &mut Summary, size: u64) {
        summary.total_files += 1;
        summary.total_bytes += size;
        match self {
            Change::New => summary.files_new += 1,
            Change::Changed => summary.files_changed += 1,
            Change::Unchanged => summary.files_unchanged += 1,
        }
    }

    fn item(self) -> ItemChange {
        match self {
            Change::New => ItemChange::New,
            Change::Changed => ItemChange::Changed,
            Change::Unchanged => ItemChange::Unchanged,
        }
    }
}

enum Content {
    /// Not a file, or chunks already in the node (unchanged from parent).
    Ready,
    Pending(Arc<Slot>),
}

/// Events the walk may be ahead of the tree builder. An event is ~300
/// bytes and a channel's buffer is allocated whole: 1,024 keep the builder
/// fed for a quarter of the 1.2 MB that 4,096 took in every backup.
const EVENTS_AHEAD: usize = 1024;

enum WalkEvent {
    /// A directory and its path on disk; the node's `subtree` is the
    /// parent snapshot's tree of the directory, if any, until the tree
    /// builder stores the new one.
    EnterDir(Node, PathBuf),
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
    /// The file's directory, open: the file is opened relative to it.
    dir: Option<Arc<crate::walk::DirFd>>,
    seen: Seen,
    slot: Arc<Slot>,
}

fn cancelled(c: &Option<Arc<AtomicBool>>) -> bool {
    c.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
}
/// Whether a snapshot with `recorded` paths backed up the same files as a
/// backup of `files` (plus streams, all of it `paths`): streams aside, so
/// that adding or dropping a --command-stream keeps the parent and its
/// change detection. A snapshot file does not say which of its paths were
/// streams; a recorded path that is neither one of `files` nor anything on
/// disk is taken for one (a stream's name, `/mysql/shop.sql`), while one
/// that exists on disk was a backed-up file or directory this backup lacks.
/// Only the choice of parent depends on this guess, and a parent only
/// saves re-reading files whose size, times and inode are unchanged.
fn same_files(recorded: &[String], files: &[String], paths: &[String]) -> bool {
    if recorded == paths {
        return true;
    }
    if files.is_empty() || !files.iter().all(|f| recorded.contains(f)) {
        return false;
    }
    recorded.iter().filter(|r| !files.contains(r)).all(|r| paths.contains(r) || std::fs::symlink_metadata(r).is_err())
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
    let (sources, stream_paths) = resolve_sources(&opts.paths, opts.record_as.as_deref(), &names)?;
    let mut paths: Vec<String> = sources.iter().map(|s| s.recorded.display().to_string()).collect();
    paths.extend(stream_paths.iter().map(|c| format!("/{}", join(c))));
    paths.sort();

    repo.require_writable("backup")?;
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
    let files: Vec<String> = sources.iter().map(|s| s.recorded.display().to_string()).collect();
    let parent = find_parent(repo, opts.parent, &host, &files, &paths)?;
    // Packs left by an interrupted backup: known to the index database from
    // the start, so this run dedups against them, and listed in this run's
    // first index file.
    let (adopt, _writer) = repo.packs_to_adopt()?;
    // Nearly always none: no durable (fdatasync'd) commit of nothing.
    if !adopt.is_empty() {
        repo.index()?.add_packs(&adopt, None)?;
    }

    let mut ctx = Ctx::new(repo, progress, &mut opts, parent.as_ref().map(|p| p.file.tree));
    ctx.session_lost = session.as_ref().map(|s| s.lost_flag());
    // A parent this host recorded whole since the index (synced above)
    // last dropped a pack has every chunk still indexed: its unchanged
    // files are taken without asking the index about each chunk.
    let drops = repo.index()?.drops()?;
    ctx.parent_whole = match &parent {
        Some(p) => repo.index()?.whole(&p.id, drops)?,
        None => false,
    };

    // The size estimate for progress runs beside the pipeline and stops
    // with it, when the front end shows it.
    let scan_stop = AtomicBool::new(false);
    let run = std::thread::scope(|s| {
        if progress.wants_totals() {
            let disk: Vec<PathBuf> = sources.iter().map(|s| s.disk.clone()).collect();
            let (stop, skip, excludes) = (&scan_stop, ctx.repo_root.as_deref(), &ctx.excludes);
            std::thread::Builder::new()
                .name("arc-scan".into())
                .spawn_scoped(s, move || crate::scan::count(&disk, skip, excludes, stop, progress))
                .ok();
        }
        let abort = || ctx.stopping();
        let run = packer::run(repo, adopt, &abort, |sink| run_pipeline(&ctx, sink, &sources, streams, &stream_paths));
        scan_stop.store(true, Ordering::Relaxed);
        run
    });
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
    summary.entries_excluded = ctx.excluded.load(Ordering::Relaxed);
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
        excludes: ctx.excludes.describe(),
        original: None,
    };
    // v2: nothing the snapshot reaches may live only in a pack a prune
    // marked meanwhile (B6); then the commit point.
    if let Some(s) = &session {
        crate::ops::commit::verify(repo, s, root_tree)?;
    }
    // The commit point: everything the snapshot refers to is durable.
    let snapshot_id = repo.save_snapshot(&file)?;
    drop(session);
    // Every chunk it refers to is indexed (stored, or checked as above).
    // Only a shortcut for the next backup: failing to record it costs that
    // backup its checks, nothing else.
    let _ = repo.index().and_then(|i| i.record_whole(&snapshot_id, drops, file.parent.as_ref()));
    let files_reread_missing = ctx.reread_missing.load(Ordering::Relaxed);
    Ok(BackupResult { snapshot_id, warnings: file.summary.errors, snapshot: file, files_reread_missing })
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
    /// Unchanged files read again because a chunk of theirs is gone.
    reread_missing: AtomicU64,
    /// This host recorded the parent whole since the index last dropped a
    /// pack: its chunk lists are taken without asking the index.
    parent_whole: bool,
    repo_root: Option<PathBuf>,
    /// The repository's own directories, as (device, inode): never
    /// backed up (`Repository::own_dirs`).
    own_dirs: Vec<(u64, u64)>,
    /// Set when a stream failed: every source stops like on cancel, while
    /// the packer still writes out what was queued, so the next try reuses
    /// all that was read before the failure.
    stop: AtomicBool,
    /// The first stream failure, the error the backup returns.
    stream_error: Mutex<Option<Error>>,
    /// Raised when the v2 session could not be refreshed: stop like on
    /// cancel; the backup then fails with the session's error.
    session_lost: Option<Arc<AtomicBool>>,
    excludes: Excludes,
    /// Mount points, for `excludes.one_file_system`.
    mounts: HashSet<PathBuf>,
    /// Entries the excludes left out.
    excluded: AtomicU64,
    limit_read: Option<crate::ratelimit::RateLimit>,
    /// Streams may be stored as deltas against the parent's (the caller
    /// did not refuse it; the repository's feature is checked apart).
    stream_deltas: bool,
    /// Turns to chunk a large file (see `store::LargeFiles`).
    large_files: store::LargeFiles,
}

/// The parent snapshot: the one given, else the latest of the same host
/// and paths.
/// The parent: the given snapshot, or the newest of this host that backed
/// up the same files (`files`: the file sources; streams aside, see
/// `same_files`).
fn find_parent(
    repo: &Repository,
    given: Option<Id>,
    host: &str,
    files: &[String],
    paths: &[String],
) -> Result<Option<Snapshot>> {
    Ok(match given {
        Some(id) => Some(repo.load_snapshot(&id)?),
        None => {
            let filter = SnapshotFilter { hosts: vec![host.to_string()], ..Default::default() };
            // The parent only saves re-reading unchanged files, so a damaged
            // snapshot file is no reason to refuse a backup (check reports it).
            repo.readable_snapshots()?
                .0
                .into_iter()
                .rev()
                .find(|s| filter.matches(&s.file) && same_files(&s.file.paths, files, paths))
        }
    })
}

/// What a backup of `opts` would read, without reading a file's contents
/// or writing anything to the repository: the walk with its excludes and
/// change detection against the parent snapshot, each file that would be
/// read handed to `on_file` in the snapshot's order (with `unchanged`,
/// the files that would be taken from the parent too). Returns the counts
/// a backup would record (`bytes_read`: what it would read).
pub fn dry_run(
    repo: &Repository,
    mut opts: BackupOptions,
    progress: &dyn Progress,
    unchanged: bool,
    on_file: &(dyn Fn(&DryRunFile) + Sync),
) -> Result<Summary> {
    if !opts.streams.is_empty() {
        return Err(Error::InvalidArgument {
            what: "dry run",
            reason: "streams cannot be tried without running their commands; give paths only".into(),
        });
    }
    if opts.paths.is_empty() {
        return Err(Error::InvalidArgument { what: "backup sources", reason: "give at least one path".into() });
    }
    let (sources, _) = resolve_sources(&opts.paths, opts.record_as.as_deref(), &[])?;
    let mut paths: Vec<String> = sources.iter().map(|s| s.recorded.display().to_string()).collect();
    paths.sort();
    let host = opts.host.clone().unwrap_or_else(crate::lock::hostname);
    let parent = find_parent(repo, opts.parent, &host, &paths, &paths)?;
    let ctx = Ctx::new(repo, progress, &mut opts, parent.as_ref().map(|p| p.file.tree));
    let (job_tx, job_rx) = bounded::<Job>(256);
    let (event_tx, event_rx) = bounded::<WalkEvent>(EVENTS_AHEAD);
    let mut summary = Summary::default();
    std::thread::scope(|scope| -> Result<()> {
        let ctx = &ctx;
        let sources = &sources;
        let walked = scope.spawn(move || walker(ctx, sources, &[], &[], job_tx, event_tx));
        // Nothing is read: the jobs only need taking off the channel.
        scope.spawn(move || job_rx.iter().for_each(drop));
        // Directories open on the way down, for the files' paths.
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut source = 0;
        for event in event_rx.iter() {
            match event {
                WalkEvent::EnterDir(_, path) => {
                    summary.dirs += 1;
                    dirs.push(path);
                }
                WalkEvent::Entry(node, _, change) if node.kind.has_chunks() => {
                    change.count_file(&mut summary, node.size);
                    // A further link of a hardlink group is not read again.
                    if change != Change::Unchanged && node.kind == NodeKind::File {
                        summary.bytes_read += node.size;
                    }
                    if change != Change::Unchanged || unchanged {
                        let path = match dirs.last() {
                            Some(d) => d.join(std::ffi::OsStr::from_bytes(&node.name)),
                            None => sources.get(source).map(|s| s.disk.clone()).unwrap_or_default(),
                        };
                        on_file(&DryRunFile { path, size: node.size, change: change.item() });
                    }
                }
                WalkEvent::Entry(..) => summary.other_entries += 1,
                WalkEvent::LeaveDir => {
                    dirs.pop();
                }
                WalkEvent::SourceDone => source += 1,
            }
        }
        walked.join().unwrap_or(Err(Error::Interrupted))?;
        Ok(())
    })?;
    if ctx.stopping() {
        return Err(Error::Interrupted);
    }
    summary.errors = ctx.warnings.load(Ordering::Relaxed);
    summary.entries_excluded = ctx.excluded.load(Ordering::Relaxed);
    Ok(summary)
}

impl<'a> Ctx<'a> {
    fn new(
        repo: &'a Repository,
        progress: &'a dyn Progress,
        opts: &mut BackupOptions,
        parent_root: Option<Id>,
    ) -> Self {
        Ctx {
            repo,
            progress,
            cancel: opts.cancel.clone(),
            force_read: opts.force_read,
            parent_root,
            file_chunker: repo.chunker(&repo.config().file_chunker),
            stream_chunker: repo.chunker(&repo.config().stream_chunker),
            bytes_read: AtomicU64::new(0),
            warnings: AtomicU64::new(0),
            reread_missing: AtomicU64::new(0),
            parent_whole: false,
            repo_root: repo.storage().local_path().and_then(|p| std::fs::canonicalize(p).ok()),
            own_dirs: repo
                .own_dirs()
                .iter()
                .filter_map(|d| std::fs::metadata(d).ok())
                .map(|m| (std::os::unix::fs::MetadataExt::dev(&m), std::os::unix::fs::MetadataExt::ino(&m)))
                .collect(),
            stop: AtomicBool::new(false),
            stream_error: Mutex::new(None),
            session_lost: None,
            mounts: if opts.excludes.one_file_system { mount_points() } else { Default::default() },
            excludes: std::mem::take(&mut opts.excludes),
            excluded: AtomicU64::new(0),
            limit_read: opts.limit_read.map(crate::ratelimit::RateLimit::new),
            stream_deltas: !opts.no_stream_deltas,
            large_files: store::LargeFiles::new(store::LargeFiles::at_once(workers())),
        }
    }
}

impl Ctx<'_> {
    /// The backup is being stopped: cancelled by the caller, or a stream failed.
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || cancelled(&self.cancel) || cancelled(&self.session_lost)
    }

    /// Whether a chunk list of the parent may be reused as it is: every
    /// chunk must still be in the index (a repair drops the blobs of damaged
    /// or lost packs, and a snapshot taking them from the parent would
    /// point at nothing), and with prune marks about, in a pack no mark
    /// names (format-spec/v2/protocol.md §4 B5); otherwise the file is read
    /// again.
    fn reusable(&self, chunks: &[Id]) -> Result<bool> {
        let marked = self.repo.marked_packs();
        if marked.is_empty() {
            // From the index's mapped keys (no system call per file): a
            // chunk misjudged present, about once in 2^32, is only what
            // every backup did before this check.
            if self.parent_whole || self.repo.index_may_have_all(chunks)? {
                return Ok(true);
            }
            self.reread_missing.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        for c in chunks {
            match self.repo.lookup_blob(c)? {
                Some(loc) if self.repo.outside_marks(&loc, &marked)? => {}
                Some(_) => return Ok(false),
                None => {
                    self.reread_missing.fetch_add(1, Ordering::Relaxed);
                    return Ok(false);
                }
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
}

/// File workers: two per core, so that one waiting on the disk leaves the
/// core to the other.
fn workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get() * 2).unwrap_or(4)
}

fn run_pipeline(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    sources: &[Source],
    streams: Vec<StreamSource>,
    stream_paths: &[Vec<Vec<u8>>],
) -> Result<(Id, Summary)> {
    let workers = workers();
    let (job_tx, job_rx) = bounded::<Job>(256);
    let (event_tx, event_rx) = bounded::<WalkEvent>(EVENTS_AHEAD);
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
        for ((stream, slot), components) in streams.into_iter().zip(&stream_slots).zip(stream_paths) {
            let StreamSource { name, reader, allow_empty, stop } = stream;
            stops.extend(stop);
            let (slot, running) = (slot.clone(), &streams_running);
            scope.spawn(move || {
                let _done = CountDown(running);
                let guard = SlotGuard(slot);
                let r = store_stream(ctx, sink, &name, components, reader, allow_empty);
                guard.0.set(settle(ctx, sink, Path::new(&name), r));
            });
        }
        if !stops.is_empty() {
            let (running, abort) = (&streams_running, &abort);
            scope.spawn(move || stop_streams_on_failure(ctx, sink, running, abort, stops));
        }
        let slots = &stream_slots;
        let walker = scope.spawn(move || {
            crate::fault::panic_point("walker");
            walker(ctx, sources, slots, stream_paths, job_tx, event_tx)
        });
        let tops: Vec<PathBuf> = sources
            .iter()
            .map(|s| s.disk.clone())
            .chain(stream_paths.iter().map(|c| Path::new("/").join(join(c))))
            .collect();
        let built = build_trees(ctx, sink, event_rx, &tops);
        let walked = crate::sync::joined(walker.join(), "backup walker");
        if built.is_err() || walked.is_err() {
            abort.store(true, Ordering::SeqCst);
        }
        // A bug in the walker is the cause of whatever the builder saw.
        let (nodes, mut summary) = match (built, walked) {
            (_, Err(e @ Error::Bug { .. })) => return Err(e),
            (built, walked) => {
                let b = built?;
                walked?;
                b
            }
        };
        // Top-level nodes in the order of `sources` then streams.
        let mut items: Vec<Placed> = Vec::new();
        let places = sources.iter().map(|s| &s.components).chain(stream_paths.iter());
        for (comps, node) in places.zip(nodes) {
            if let Some(node) = node {
                items.push((comps.clone(), node));
            }
        }
        let reader = ctx.repo.index()?.reader()?;
        let root = assemble(ctx, sink, &reader, Path::new("/"), items, &mut summary)?;
        Ok((root, summary))
    })
}

/// Fails its slot if dropped before a value was set (a panicking worker).
struct SlotGuard(Arc<Slot>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.fail_if_unset();
    }
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

    /// Counts the scan's reports.
    struct Totals {
        wanted: bool,
        reports: std::sync::atomic::AtomicU64,
        last: Mutex<Option<(u64, u64, bool)>>,
    }

    impl Progress for Totals {
        fn scanned(&self, files: u64, bytes: u64, complete: bool) {
            self.reports.fetch_add(1, Ordering::Relaxed);
            *self.last.lock().unwrap() = Some((files, bytes, complete));
        }
        fn wants_totals(&self) -> bool {
            self.wanted
        }
        /// Holds the backup until a scan, if one runs, has finished: up to
        /// 10 s when one is wanted, 300 ms when none is (time for a scan
        /// started anyway to show). The scan runs at nice 19 and stops with
        /// the backup, so on a busy machine it could otherwise lose the race
        /// to a small backup; it waits on nothing of the backup's.
        fn file_done(&self, _path: &Path, _bytes: u64) {
            let start = std::time::Instant::now();
            let limit = std::time::Duration::from_millis(if self.wanted { 10_000 } else { 300 });
            while !matches!(*self.last.lock().unwrap(), Some((_, _, true))) && start.elapsed() < limit {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }

    /// The scan runs only for a front end that shows its totals: without
    /// one (cron, scripts) it would stat every file a second time.
    #[test]
    fn the_size_scan_runs_only_when_its_totals_are_shown() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("a"), b"12345").unwrap();
        std::fs::write(src.join("d/b"), b"123").unwrap();
        let repo = Repository::init_local(&dir.path().join("repo"), &InitOptions::default()).unwrap();
        for wanted in [false, true] {
            let p = Totals { wanted, reports: Default::default(), last: Mutex::new(None) };
            let opts = BackupOptions { paths: vec![src.clone()], force_read: true, ..Default::default() };
            backup(&repo, opts, &p).unwrap();
            if wanted {
                assert_eq!(*p.last.lock().unwrap(), Some((2, 8, true)));
            } else {
                assert_eq!(p.reports.load(Ordering::Relaxed), 0, "the scan ran for a front end without totals");
            }
        }
    }

    /// Records warnings, and makes a change to the sources once, right
    /// before the file named `victim` is opened to be read (after the walk
    /// listed and stat'ed it).
    struct Meddler<F: Fn() + Sync> {
        victim: &'static str,
        change: F,
        done: AtomicBool,
        warnings: Mutex<Vec<(PathBuf, String)>>,
    }

    impl<F: Fn() + Sync> Meddler<F> {
        fn new(victim: &'static str, change: F) -> Self {
            Meddler { victim, change, done: AtomicBool::new(false), warnings: Mutex::new(Vec::new()) }
        }
    }

    impl<F: Fn() + Sync> Progress for Meddler<F> {
        fn warn(&self, path: &Path, message: &str) {
            self.warnings.lock().unwrap().push((path.to_path_buf(), message.to_string()));
        }
        fn reading(&self, path: &Path) {
            if path.file_name() == Some(std::ffi::OsStr::new(self.victim)) && !self.done.swap(true, Ordering::SeqCst) {
                (self.change)();
            }
        }
    }

    /// Holds every read until 1.5 s after the first began, so that the walk
    /// lists as far ahead as it may; records warnings.
    struct Stall {
        until: std::sync::OnceLock<std::time::Instant>,
        warnings: Mutex<Vec<(PathBuf, String)>>,
    }

    impl Progress for Stall {
        fn warn(&self, path: &Path, message: &str) {
            self.warnings.lock().unwrap().push((path.to_path_buf(), message.to_string()));
        }
        fn reading(&self, _path: &Path) {
            let until = *self.until.get_or_init(|| std::time::Instant::now() + std::time::Duration::from_millis(1500));
            std::thread::sleep(until.saturating_duration_since(std::time::Instant::now()));
        }
    }

    /// The content a snapshot holds at `path` (an absolute path on disk).
    fn stored(repo: &Repository, snapshot: &Id, path: &Path) -> Option<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        let mut tree = repo.load_snapshot(snapshot).unwrap().file.tree;
        let comps: Vec<&[u8]> = path.iter().skip(1).map(|c| c.as_bytes()).collect();
        let (last, dirs) = comps.split_last().unwrap();
        for c in dirs {
            tree = repo.lookup_name(&tree, c).unwrap()?.subtree.unwrap();
        }
        let node = repo.lookup_name(&tree, last).unwrap()?;
        Some(node.chunks.iter().flat_map(|c| repo.read_blob(c).unwrap().to_vec()).collect())
    }

    /// A directory renamed after it was listed: its files are read from it
    /// where it went (relative to the descriptor the walk listed it
    /// through), as the walk saw them, with no warning.
    #[test]
    fn a_directory_renamed_after_its_listing_is_read_where_it_went() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/victim"), b"as listed").unwrap();
        std::fs::write(src.join("d/other"), b"beside it").unwrap();
        let repo = Repository::init_local(&dir.path().join("repo"), &InitOptions::default()).unwrap();
        let p = Meddler::new("victim", || std::fs::rename(src.join("d"), src.join("moved")).unwrap());
        let r = backup(&repo, BackupOptions { paths: vec![src.clone()], ..Default::default() }, &p).unwrap();
        assert!(p.done.load(Ordering::SeqCst));
        assert_eq!(*p.warnings.lock().unwrap(), Vec::new());
        assert_eq!(r.snapshot.summary.files_new, 2);
        assert_eq!(stored(&repo, &r.snapshot_id, &src.join("d/victim")).unwrap(), b"as listed");
        assert_eq!(stored(&repo, &r.snapshot_id, &src.join("d/other")).unwrap(), b"beside it");
    }

    /// A file replaced by a symlink between the walk and the read: the
    /// link is not followed (a user of a directory a root backup reads
    /// could otherwise have any file stored under their file's name); the
    /// file is left out with a warning saying why.
    #[test]
    fn a_file_replaced_by_a_symlink_before_its_read_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("victim"), vec![b'v'; 100]).unwrap();
        let target = dir.path().join("target");
        let bytes = pseudo_random(5000, 7);
        std::fs::write(&target, &bytes).unwrap();
        let repo = Repository::init_local(&dir.path().join("repo"), &InitOptions::default()).unwrap();
        let p = Meddler::new("victim", || {
            std::fs::remove_file(src.join("victim")).unwrap();
            std::os::unix::fs::symlink(&target, src.join("victim")).unwrap();
        });
        let r = backup(&repo, BackupOptions { paths: vec![src.clone()], ..Default::default() }, &p).unwrap();
        let warnings = p.warnings.lock().unwrap().clone();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].0, src.join("victim"), "{warnings:?}");
        assert!(warnings[0].1.contains("replaced by a symbolic link"), "{warnings:?}");
        assert_eq!(r.warnings, 1);
        assert_eq!(stored(&repo, &r.snapshot_id, &src.join("victim")), None, "the link's target was stored");
    }

    /// A file replaced by a FIFO between the walk and the read: the open
    /// used to wait for a writer, for ever in a backup from cron. The file
    /// is left out with a warning saying why, small (read into a window)
    /// and large (streamed) alike; the backup ends.
    #[test]
    fn a_file_replaced_by_a_fifo_before_its_read_is_left_out() {
        for (victim, size) in [("small", 100), ("large", 4 * 1024 * 1024 + 1)] {
            let dir = tempfile::tempdir().unwrap();
            let src = dir.path().join("src");
            std::fs::create_dir_all(&src).unwrap();
            std::fs::write(src.join(victim), vec![b'v'; size]).unwrap();
            std::fs::write(src.join("other"), b"other").unwrap();
            let repo = Repository::init_local(&dir.path().join("repo"), &InitOptions::default()).unwrap();
            let fifo = src.join(victim);
            let p = Meddler::new(victim, || {
                std::fs::remove_file(&fifo).unwrap();
                nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            });
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::scope(|s| {
                let (repo, p, src) = (&repo, &p, &src);
                let _backup = s.spawn(move || {
                    let opts = BackupOptions { paths: vec![src.clone()], ..Default::default() };
                    let _ = tx.send(backup(repo, opts, p));
                });
                let r = match rx.recv_timeout(std::time::Duration::from_secs(30)) {
                    Ok(r) => r.unwrap(),
                    Err(_) => {
                        // Lets the stuck open return, so the scope can end.
                        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
                        panic!("{victim}: the backup waited for a writer of the FIFO");
                    }
                };
                let warnings = p.warnings.lock().unwrap().clone();
                assert_eq!(warnings.len(), 1, "{victim}: {warnings:?}");
                assert_eq!(warnings[0].0, src.join(victim), "{warnings:?}");
                assert!(warnings[0].1.contains("not a regular file"), "{warnings:?}");
                assert_eq!(r.warnings, 1);
                assert_eq!(stored(repo, &r.snapshot_id, &src.join(victim)), None, "{victim}");
                assert_eq!(stored(repo, &r.snapshot_id, &src.join("other")).as_deref(), Some(&b"other"[..]));
            });
        }
    }

    /// A soft limit of open files far below what the walk lists ahead: the
    /// directories kept open for their files' reads stay within a quarter of
    /// it, the rest are read by path, and nothing fails. The reads wait
    /// until the walk has listed every directory (without the budget, it
    /// would hold them all open: 300 against a limit of 96). Runs in a child
    /// process, since the limit is the whole process's.
    #[test]
    fn a_low_open_file_limit_costs_no_file() {
        const CHILD: &str = "ARC_TEST_LOW_NOFILE_CHILD";
        const NAME: &str = "ops::backup::tests::a_low_open_file_limit_costs_no_file";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([NAME, "--exact", "--test-threads=1", "--nocapture"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success() && text.contains("1 passed"), "{text}");
            return;
        }
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dirs = 300;
        for i in 0..dirs {
            let d = src.join(format!("d{i:03}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("a"), format!("a{i}")).unwrap();
            std::fs::write(d.join("b"), format!("b{i}")).unwrap();
        }
        let repo = Repository::init_local(&dir.path().join("repo"), &InitOptions::default()).unwrap();
        let hard = getrlimit(Resource::Nofile).maximum;
        setrlimit(Resource::Nofile, Rlimit { current: Some(96), maximum: hard }).unwrap();
        let p = Stall { until: std::sync::OnceLock::new(), warnings: Mutex::new(Vec::new()) };
        let r = backup(&repo, BackupOptions { paths: vec![src.clone()], ..Default::default() }, &p).unwrap();
        assert_eq!(*p.warnings.lock().unwrap(), Vec::new());
        assert_eq!(r.snapshot.summary.files_new, 2 * dirs);
        assert_eq!(stored(&repo, &r.snapshot_id, &src.join("d299/b")).unwrap(), b"b299");
    }

    /// A slot set before the tree builder waits is read without a wake;
    /// one set while the builder waits wakes it.
    #[test]
    fn a_slot_wakes_a_builder_that_waits() {
        let early = Slot::default();
        early.set(FileOutcome::Stored { chunks: Vec::new(), size: 3 });
        assert!(matches!(early.wait(), FileOutcome::Stored { size: 3, .. }));
        let late = Arc::new(Slot::default());
        let (tx, rx) = mpsc::channel();
        let waiter = late.clone();
        std::thread::spawn(move || {
            let _ = tx.send(waiter.wait());
        });
        while !late.value.lock().unwrap().waited {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        late.set(FileOutcome::Stored { chunks: Vec::new(), size: 7 });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the waiting builder was not woken");
        assert!(matches!(got, FileOutcome::Stored { size: 7, .. }));
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

    /// A directory of more entries than a listing piece, with
    /// subdirectories on both sides of piece boundaries and an excluded
    /// name: the snapshot holds every entry in name order with each
    /// subdirectory's own entries, its tree id is the one the whole-directory
    /// encoder gives, and the next backup finds every file unchanged (the
    /// parent's leaves matched as the pieces go).
    #[test]
    fn a_directory_of_several_pieces_is_stored_as_one_split_directory() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_local(&dir.path().join("repo"), &InitOptions::default()).unwrap();
        assert!(repo.writes_trees_v2());
        let src = dir.path().join("src");
        let d = src.join("d");
        std::fs::create_dir_all(&d).unwrap();
        let n = 2 * crate::walk::PIECE_ENTRIES + 700;
        let mut names = Vec::new();
        let mut files = 0u64;
        for i in 0..n {
            let name = format!("e{i:05}");
            if i % 341 == 0 || i == crate::walk::PIECE_ENTRIES - 1 || i == crate::walk::PIECE_ENTRIES {
                std::fs::create_dir(d.join(&name)).unwrap();
                for j in 0..3 {
                    std::fs::write(d.join(&name).join(format!("f{j}")), format!("{i} {j}")).unwrap();
                }
                files += 3;
            } else {
                std::fs::write(d.join(&name), format!("file {i}")).unwrap();
                files += 1;
            }
            names.push(name);
        }
        std::fs::write(d.join("skip.tmp"), "left out").unwrap();
        // A pattern on directories only (readdir's type, no stat) and one on
        // any name.
        let specs = ["*.tmp", "e00682/"].map(|p| crate::patterns::PatternSpec {
            pattern: p.into(),
            origin: "test".into(),
            case_insensitive: false,
        });
        let excludes =
            Excludes { patterns: crate::patterns::PatternSet::new(specs.to_vec()).unwrap(), ..Default::default() };
        let opts = || BackupOptions { paths: vec![src.clone()], excludes: excludes.clone(), ..Default::default() };
        // e00682 is one of the subdirectories (682 = 2 x 341).
        names.retain(|n| n != "e00682");
        files -= 3;
        let first = backup(&repo, opts(), &NoProgress).unwrap();
        assert_eq!(first.snapshot.summary.files_new, files);
        assert_eq!(first.snapshot.summary.entries_excluded, 2);

        let snap = repo.load_snapshot(&first.snapshot_id).unwrap();
        let comps: Vec<&[u8]> = src.iter().skip(1).map(|c| c.as_bytes()).collect();
        let mut tree_id = snap.file.tree;
        for c in &comps {
            tree_id = repo.lookup_name(&tree_id, c).unwrap().unwrap().subtree.unwrap();
        }
        let d_id = repo.lookup_name(&tree_id, b"d").unwrap().unwrap().subtree.unwrap();
        let (mut tree, leaves) = repo.load_tree_with_leaves(&d_id).unwrap();
        assert!(leaves.len() > 3, "{} leaves", leaves.len());
        let got: Vec<String> = tree.nodes.iter().map(|n| String::from_utf8_lossy(&n.name).into_owned()).collect();
        assert_eq!(got, names);
        for node in tree.nodes.iter().filter(|n| n.kind == crate::format::tree::NodeKind::Dir) {
            let sub = repo.load_tree(&node.subtree.unwrap()).unwrap();
            let sub_names: Vec<&[u8]> = sub.nodes.iter().map(|n| n.name.as_slice()).collect();
            assert_eq!(sub_names, [b"f0".as_slice(), b"f1", b"f2"], "{}", node.name_lossy());
        }
        let whole = crate::format::tree_v2::encode_dir(&mut tree, &repo.tree_split_key(), &|b| repo.blob_id(b));
        assert_eq!(whole.unwrap().root, d_id, "streamed and whole-directory encodings differ");

        let second = backup(&repo, opts(), &NoProgress).unwrap();
        let s = &second.snapshot.summary;
        assert_eq!((s.files_new, s.files_changed, s.files_unchanged), (0, 0, files));
        // The source's own tree, not the root: the root holds the
        // directories above the source (the system's temporary
        // directory), whose times other tests running at once change.
        let mut second_id = repo.load_snapshot(&second.snapshot_id).unwrap().file.tree;
        for c in &comps {
            second_id = repo.lookup_name(&second_id, c).unwrap().unwrap().subtree.unwrap();
        }
        assert_eq!(second_id, tree_id);
    }
}
