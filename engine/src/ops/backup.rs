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
//! The snapshot file is written only after every pack and index file is
//! durable, so a backup that dies leaves no snapshot, only reusable packs.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

enum Job {
    File { path: PathBuf, seen: Seen, slot: Arc<Slot> },
    Stream { name: String, reader: Box<dyn Read + Send>, allow_empty: bool, slot: Arc<Slot> },
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

pub fn backup(repo: &Repository, mut opts: BackupOptions, progress: &dyn Progress) -> Result<BackupResult> {
    let start = Utc::now();
    if opts.paths.is_empty() && opts.streams.is_empty() {
        return Err(Error::InvalidArgument {
            what: "backup sources",
            reason: "give at least one path or a stream".into(),
        });
    }
    // Validate every source before touching the repository.
    let mut sources = opts.paths.iter().map(|p| resolve_source(p)).collect::<Result<Vec<_>>>()?;
    sources.sort_by(|a, b| a.components.cmp(&b.components));
    sources.dedup_by(|b, a| b.components.starts_with(&a.components));
    let streams = std::mem::take(&mut opts.streams);
    let stream_paths = streams.iter().map(|s| stream_components(&s.name)).collect::<Result<Vec<_>>>()?;
    for (i, a) in stream_paths.iter().enumerate() {
        let clash = stream_paths[..i].iter().any(|b| a.starts_with(b) || b.starts_with(a))
            || sources.iter().any(|s| a.starts_with(&s.components) || s.components.starts_with(a));
        if clash {
            return Err(Error::InvalidArgument {
                what: "stream name",
                reason: format!("{:?} overlaps another source", streams[i].name),
            });
        }
    }
    let mut paths: Vec<String> = sources.iter().map(|s| s.disk.display().to_string()).collect();
    paths.extend(stream_paths.iter().map(|c| format!("/{}", join(c))));
    paths.sort();

    let _lock = repo.lock_shared("backup")?;
    let host = opts.host.clone().unwrap_or_else(crate::lock::hostname);
    let parent = match opts.parent {
        Some(id) => Some(repo.load_snapshot(&id)?),
        None => {
            let filter = SnapshotFilter { hosts: vec![host.clone()], ..Default::default() };
            repo.snapshots()?.into_iter().rev().find(|s| filter.matches(&s.file) && s.file.paths == paths)
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
    };

    let (root, stats) = packer::run(repo, adopt, |sink| run_pipeline(&ctx, sink, &sources, streams, &stream_paths))?;
    let (root_tree, mut summary) = root;

    if cancelled(&ctx.cancel) {
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
    // The commit point: everything the snapshot refers to is durable.
    let snapshot_id = repo.save_snapshot(&file)?;
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
}

impl Ctx<'_> {
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

    std::thread::scope(|scope| -> Result<(Id, Summary)> {
        for _ in 0..workers {
            let rx = job_rx.clone();
            scope.spawn(move || worker(ctx, sink, rx));
        }
        drop(job_rx);
        let walker = scope.spawn(move || walker(ctx, sources, streams, stream_paths, job_tx, event_tx));
        let built = build_trees(ctx, sink, event_rx, sources.len() + stream_paths.len());
        let walked = walker.join().unwrap_or(Err(Error::Interrupted));
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
fn walker(
    ctx: &Ctx<'_>,
    sources: &[Source],
    streams: Vec<StreamSource>,
    stream_paths: &[Vec<Vec<u8>>],
    jobs: Sender<Job>,
    events: Sender<WalkEvent>,
) -> Result<()> {
    let mut owners = OwnerNames::default();
    // (dev, ino) of multiply linked files -> (snapshot path, content)
    let mut links: HashMap<(u64, u64), LinkGroup> = HashMap::new();
    let send = |e: WalkEvent| events.send(e).map_err(|_| Error::Interrupted);

    for src in sources {
        let parent_node = ctx.parent_node(&src.components)?;
        // Parent trees of the open directories, innermost last.
        let mut parents: Vec<Option<Tree>> = Vec::new();
        let mut depth_open = 0usize;
        let mut it = walkdir::WalkDir::new(&src.disk)
            .follow_links(false)
            .follow_root_links(false)
            .sort_by(|a, b| a.file_name().cmp(b.file_name()))
            .into_iter();
        loop {
            if cancelled(&ctx.cancel) {
                return Err(Error::Interrupted);
            }
            let entry = match it.next() {
                None => break,
                Some(Ok(e)) => e,
                Some(Err(err)) => {
                    let path = err.path().map(Path::to_path_buf).unwrap_or_else(|| src.disk.clone());
                    let msg = err.io_error().map(|e| e.to_string()).unwrap_or_else(|| err.to_string());
                    ctx.warn(&path, &msg);
                    continue;
                }
            };
            let depth = entry.depth();
            while depth_open > depth {
                send(WalkEvent::LeaveDir)?;
                parents.pop();
                depth_open -= 1;
            }
            let path = entry.path();
            if entry.file_type().is_dir() && ctx.repo_root.as_deref() == Some(path) {
                // Never back up the repository into itself.
                it.skip_current_dir();
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) => {
                    ctx.warn(path, &e.to_string());
                    continue;
                }
            };
            let name: Vec<u8> = if depth == 0 {
                src.components.last().cloned().unwrap_or_default()
            } else {
                entry.file_name().as_bytes().to_vec()
            };
            let mut warnings = Vec::new();
            let mut node = node_from_metadata(&name, path, &meta, &mut owners, &mut warnings);
            for w in warnings {
                ctx.warn(path, &w);
            }
            let previous = if depth == 0 {
                parent_node.clone()
            } else {
                parents.last().and_then(|t| t.as_ref()).and_then(|t| t.find(&name).cloned())
            };
            match node.kind {
                NodeKind::Dir => {
                    let parent_tree = match previous.and_then(|p| p.subtree) {
                        Some(id) => ctx.repo.load_tree(&id).ok(),
                        None => None,
                    };
                    parents.push(parent_tree);
                    depth_open += 1;
                    send(WalkEvent::EnterDir(node))?;
                }
                NodeKind::File => {
                    let change = match &previous {
                        None => Change::New,
                        Some(p) if !ctx.force_read && same_file(p, &node) => Change::Unchanged,
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
                            send(WalkEvent::Entry(node, content, group.change))?;
                            continue;
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
                        send(WalkEvent::Entry(node, Content::Ready, change))?;
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
                        jobs.send(Job::File { path: path.to_path_buf(), seen, slot: slot.clone() })
                            .map_err(|_| Error::Interrupted)?;
                        send(WalkEvent::Entry(node, Content::Pending(slot), change))?;
                    }
                }
                _ => send(WalkEvent::Entry(node, Content::Ready, Change::New))?,
            }
        }
        while depth_open > 0 {
            send(WalkEvent::LeaveDir)?;
            depth_open -= 1;
        }
        send(WalkEvent::SourceDone)?;
    }
    for (stream, comps) in streams.into_iter().zip(stream_paths) {
        let mut node = synthetic_dir(comps.last().cloned().unwrap_or_default());
        node.kind = NodeKind::File;
        node.mode = 0o100644;
        node.user = owners.user(node.uid);
        node.group = owners.group(node.gid);
        let slot = Arc::new(Slot::default());
        jobs.send(Job::Stream {
            name: stream.name,
            reader: stream.reader,
            allow_empty: stream.allow_empty,
            slot: slot.clone(),
        })
            .map_err(|_| Error::Interrupted)?;
        send(WalkEvent::Entry(node, Content::Pending(slot), Change::New))?;
        send(WalkEvent::SourceDone)?;
    }
    Ok(())
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
    if cancelled(&ctx.cancel) {
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
    for job in jobs.iter() {
        let (slot, outcome) = match job {
            Job::File { path, seen, slot } => {
                let r = store_file(ctx, sink, &mut reader, &path, seen, &mut buf);
                (slot, settle(ctx, sink, &path, r))
            }
            Job::Stream { name, reader, allow_empty, slot } => {
                let path = PathBuf::from(&name);
                let r = store_stream(ctx, sink, &name, reader, allow_empty);
                (slot, settle(ctx, sink, &path, r))
            }
        };
        slot.set(outcome);
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
    let mut s = StreamChunker::new(ctx.file_chunker, &mut file);
    let mut chunks = Vec::new();
    let mut reported = 0;
    loop {
        if cancelled(&ctx.cancel) {
            return Err(Error::Interrupted);
        }
        match s.next_chunk() {
            Ok(Some(chunk)) => chunks.push(sink.store(sink.index_reader(reader)?, BlobKind::Data, chunk)?),
            Ok(None) => break,
            Err(e) => return Ok(Err(e.to_string())),
        }
        let now = s.bytes_read;
        ctx.progress.bytes(now - reported);
        ctx.bytes_read.fetch_add(now - reported, Ordering::Relaxed);
        reported = now;
    }
    let read = s.bytes_read;
    ctx.progress.bytes(read - reported);
    ctx.bytes_read.fetch_add(read - reported, Ordering::Relaxed);
    drop(s);
    check_unchanged(ctx, path, &file, seen, read);
    Ok(Ok((chunks, read)))
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
    let mut cache = None;
    let mut s = StreamChunker::new(ctx.stream_chunker, reader);
    let mut chunks = Vec::new();
    let mut reported = 0;
    loop {
        if cancelled(&ctx.cancel) {
            return Err(Error::Interrupted);
        }
        match s.next_chunk() {
            Ok(Some(chunk)) => chunks.push(sink.store(sink.index_reader(&mut cache)?, BlobKind::Data, chunk)?),
            Ok(None) => break,
            Err(e) => {
                return Err(Error::BadSource {
                    path: PathBuf::from(name),
                    reason: format!("reading the stream failed: {e}"),
                })
            }
        }
        let now = s.bytes_read;
        ctx.progress.bytes(now - reported);
        ctx.bytes_read.fetch_add(now - reported, Ordering::Relaxed);
        reported = now;
    }
    if s.bytes_read == 0 && !allow_empty {
        return Err(Error::BadSource {
            path: PathBuf::from(name),
            reason: "the stream is empty (did the dump fail?); use --allow-empty to store it anyway".into(),
        });
    }
    Ok(Ok((chunks, s.bytes_read)))
}
