//! The read-only file system view of a repository that `arc mount` serves:
//! every snapshot as a directory tree, grouped into views by time, tag and
//! host. This module knows nothing about FUSE; `fuse-mount` turns its
//! [`Entry`] values into inode numbers and its [`Attr`] into kernel
//! attributes, and calls [`Vfs::lookup`], [`Vfs::read_dir`], [`Vfs::open`]
//! and [`Vfs::read_at`].
//!
//! ```text
//! latest -> snapshots/<name>             symlink to the newest snapshot
//! snapshots/<time>-<shortid>/            every snapshot (the recorded tree)
//! time/<YYYY>/<MM>/<DD>/<HH:MM:SS>[-<tags>]/
//! at/<time or date>  -> ../snapshots/..  not listed; newest snapshot at or before it
//! tags/<tag>/{latest,<name>/}            hosts/<host>/{latest,<name>/}
//! ```
//!
//! What it owns:
//! - the snapshot list, re-read from storage when it is used and older
//!   than [`VfsOptions::snapshot_ttl`] (a local repository) or
//!   [`VfsOptions::remote_snapshot_ttl`] (a remote one), so new backups
//!   appear without remounting (and the index database learns their index
//!   files); a name the views lack is looked for in a new listing at once;
//! - a byte-bounded cache of decoded tree blobs, loaded on demand: mounting
//!   a repository with thousands of snapshots reads no tree up front, and a
//!   directory split over many blobs is read a leaf at a time (`dirs.rs`);
//! - a byte-bounded chunk cache with single-flight loading and readahead:
//!   an open file knows where each of its chunks starts (from index
//!   lookups, without reading data), so a run of 128 KiB kernel reads
//!   fetches and verifies each chunk once, and the next chunk is already
//!   being decoded on another thread when the reader gets there.
//!
//! Every chunk is verified against its id before it is returned; a damaged
//! one is an error naming the pack, never wrong bytes.

mod cache;
mod dirs;
pub mod layout;
mod readahead;
mod window;
mod work;

use std::collections::{HashMap, HashSet};
use std::ops::{Deref, Range};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lru::LruCache;

use self::cache::{FlightCache, Slot};
use self::dirs::DirBlob;
pub use self::layout::{parse_at, Scope, SnapRef, SnapshotList, Zone};
pub use self::window::Position;
pub use self::work::{WorkGauge, WorkGuard};
use crate::error::Error;
use crate::format::tree::{Node, NodeKind, Timestamp};
use crate::id::Id;
use crate::index::BlobLocation;
use crate::repo::{Repository, Snapshot};

/// Why a VFS call failed. Cheap to clone: a failed chunk load is handed
/// to every reader that waited for it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum VfsError {
    #[error("not a directory")]
    NotADirectory,
    #[error("not a regular file")]
    NotAFile,
    #[error("not a symbolic link")]
    NotASymlink,
    /// The entry went away (a snapshot forgotten while mounted).
    #[error("no such entry")]
    Gone,
    /// A load this call waited for was abandoned by a panicking thread.
    #[error("a concurrent read failed")]
    Abandoned,
    #[error(transparent)]
    Engine(Arc<Error>),
}

impl From<Error> for VfsError {
    fn from(e: Error) -> Self {
        VfsError::Engine(Arc::new(e))
    }
}

pub type Result<T, E = VfsError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct VfsOptions {
    /// Clock for snapshot names and `at/` times.
    pub zone: Zone,
    /// How long a listing of the snapshots of a local repository is
    /// trusted before storage is listed again; on any repository, how
    /// often a name missing from the views makes it list again.
    pub snapshot_ttl: Duration,
    /// The same for a remote repository, where a listing is a request.
    /// The kernel re-validates the views on every path walk through them
    /// (`latest/...`), about once a second while a copy runs, and cannot
    /// say whether someone is looking at the views or only passing
    /// through: with the local lifetime a `cp -a` out of `latest/` listed
    /// `snapshots/` once a second (153 listings in a 167 s copy). A minute
    /// is restic's lifetime of its mount's snapshot list.
    pub remote_snapshot_ttl: Duration,
    /// Memory for decoded trees (approximate).
    pub tree_cache_bytes: usize,
    /// Memory for file chunks.
    pub chunk_cache_bytes: usize,
    /// How far ahead of a sequential reader chunks are fetched.
    pub readahead_bytes: u64,
    /// How much small-file data one batch of directory readahead loads
    /// (see `readahead.rs`), and from a remote store the first window of
    /// a reader's stream (`window.rs`); 0 turns both off.
    pub dir_readahead_bytes: u64,
}

impl Default for VfsOptions {
    fn default() -> Self {
        VfsOptions {
            zone: Zone::Local,
            snapshot_ttl: Duration::from_secs(1),
            remote_snapshot_ttl: Duration::from_secs(60),
            tree_cache_bytes: 64 << 20,
            chunk_cache_bytes: 128 << 20,
            readahead_bytes: 4 << 20,
            dir_readahead_bytes: 8 << 20,
        }
    }
}

/// One name in the mount. Entries inside a snapshot are positions in an
/// (immutable, content-addressed) tree, so an entry always denotes the same
/// thing; the virtual ones above the snapshots are re-resolved on use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Entry {
    Root,
    /// `snapshots/`
    Snapshots,
    /// `time/`, `time/Y`, `time/Y/M`, `time/Y/M/D`
    Time {
        year: Option<i32>,
        month: Option<u32>,
        day: Option<u32>,
    },
    /// `at/`
    At,
    Tags,
    Tag(Arc<str>),
    Hosts,
    Host(Arc<str>),
    /// A `latest` symlink (at the top, or in `tags/T/`, `hosts/H/`) and
    /// the snapshot it pointed to when it was looked up. A link that comes
    /// to point elsewhere is another entry (and so another inode), which
    /// lets the kernel cache link targets without being told to forget
    /// them.
    Latest(Scope, Arc<SnapRef>),
    /// An `at/<name>` symlink, with the snapshot it resolved to.
    AtLink(Arc<str>, Arc<SnapRef>),
    /// The root directory of a snapshot, wherever it appears.
    Snapshot(Arc<SnapRef>),
    /// Entry `index` of tree `tree`.
    Node {
        tree: Id,
        index: u32,
    },
}

impl Entry {
    /// Content below snapshots never changes; everything above may.
    pub fn is_immutable(&self) -> bool {
        matches!(self, Entry::Snapshot(_) | Entry::Node { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl From<NodeKind> for Kind {
    fn from(k: NodeKind) -> Kind {
        match k {
            NodeKind::File | NodeKind::Hardlink => Kind::File,
            NodeKind::Dir => Kind::Dir,
            NodeKind::Symlink => Kind::Symlink,
            NodeKind::Fifo => Kind::Fifo,
            NodeKind::Socket => Kind::Socket,
            NodeKind::CharDevice => Kind::CharDevice,
            NodeKind::BlockDevice => Kind::BlockDevice,
        }
    }
}

/// The attributes of an entry, as recorded for snapshot content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky.
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub nlink: u32,
    /// Device number as `stat` reports it (glibc encoding).
    pub rdev: u64,
}

/// A directory's entries, in a stable order (offsets stay valid while
/// the listing is held). A snapshot directory is read from its tree blobs
/// as [`Vfs::list_from`] goes (a leaf at a time), not held whole.
pub enum Listing {
    Tree { tree: Id, len: u32 },
    Items(Vec<DirItem>),
}

pub struct DirItem {
    pub name: Vec<u8>,
    pub entry: Entry,
    pub kind: Kind,
}

impl Listing {
    pub fn len(&self) -> usize {
        match self {
            Listing::Tree { len, .. } => *len as usize,
            Listing::Items(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One item of a listing, as [`Vfs::list_from`] hands it out.
pub struct ListItem<'a> {
    /// Position in the listing.
    pub pos: usize,
    pub name: &'a [u8],
    pub entry: Entry,
    pub kind: Kind,
    /// A hardlink's recorded target (see [`Vfs::hardlink_target`]), so a
    /// front end numbering it like its link group needs no second read.
    pub hardlink_target: Option<&'a [u8]>,
}

/// Where each chunk of a file lies: ids, locations and cumulative end
/// offsets, from index lookups only.
struct ChunkTable {
    chunks: Vec<(Id, BlobLocation)>,
    ends: Vec<u64>,
    size: u64,
}

impl ChunkTable {
    /// Where the chunks of file `node` (of tree `tree`) are, from index
    /// lookups only.
    fn build(reader: &crate::index::IndexReader, tree: &Id, node: &Node) -> Result<ChunkTable> {
        let mut chunks = Vec::with_capacity(node.chunks.len());
        let mut ends = Vec::with_capacity(node.chunks.len());
        let mut end = 0u64;
        for id in &node.chunks {
            let loc = reader.lookup(id)?.ok_or(Error::BlobNotInIndex(*id))?;
            end += u64::from(loc.raw_len);
            chunks.push((*id, loc));
            ends.push(end);
        }
        if end != node.size {
            return Err(Error::corrupt(
                "tree",
                tree.to_hex(),
                format!("{:?}: chunks hold {end} bytes, the tree records {}", node.name_lossy(), node.size),
            )
            .into());
        }
        Ok(ChunkTable { chunks, ends, size: end })
    }

    fn start(&self, k: usize) -> u64 {
        if k == 0 {
            0
        } else {
            self.ends[k - 1]
        }
    }
}

/// An open regular file.
pub struct OpenFile {
    table: Arc<ChunkTable>,
    /// End of the previous read, to tell sequential readers (who get
    /// readahead) from random ones (who do not).
    last_end: AtomicU64,
}

impl OpenFile {
    pub fn size(&self) -> u64 {
        self.table.size
    }
}

/// Bytes returned by [`Vfs::read_at`]: a slice of a cached chunk when the
/// read lies within one chunk (no copy), else an owned buffer.
pub enum ReadBuf {
    Shared(Arc<[u8]>, Range<usize>),
    Owned(Vec<u8>),
}

impl Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadBuf::Shared(a, r) => &a[r.clone()],
            ReadBuf::Owned(v) => v,
        }
    }
}

/// A snapshot file that could not be read; it is left out of the mount.
#[derive(Debug, Clone)]
pub struct SkippedSnapshot {
    pub id: Id,
    pub error: Arc<Error>,
}

type ListState = Option<(Arc<SnapshotList>, Instant)>;

pub struct Vfs {
    repo: Arc<Repository>,
    opts: VfsOptions,
    /// How long a listing of the snapshots is used: `snapshot_ttl` or
    /// `remote_snapshot_ttl`, by the repository's storage.
    list_ttl: Duration,
    list: RwLock<ListState>,
    /// Snapshot files read so far (by id); its lock also serializes
    /// refreshes.
    known: Mutex<HashMap<Id, Snapshot>>,
    skipped: Mutex<Vec<SkippedSnapshot>>,
    trees: Arc<FlightCache<Id, Arc<DirBlob>>>,
    /// Tree blobs read from the repository (cache misses), for stats.
    tree_blob_reads: AtomicU64,
    chunks: Arc<FlightCache<Id, Arc<[u8]>>>,
    tables: Mutex<LruCache<(Id, u32), Arc<ChunkTable>>>,
    dir_readahead: readahead::DirReadahead,
    /// Readers followed through a remote repository (`window.rs`).
    streams: window::Streams,
    /// Background work in flight (see `work.rs`).
    work: Arc<WorkGauge>,
    owner: (u32, u32),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single map update; a panic in
    // another thread cannot leave the data half-changed.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn chunk_weight(c: &Arc<[u8]>) -> usize {
    c.len() + 64
}

fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp { sec: t.timestamp(), nsec: t.timestamp_subsec_nanos() }
}

/// Reads and verifies one chunk (the blob reader checks its hash).
fn load_chunk(repo: &Repository, id: &Id, loc: &BlobLocation) -> Result<Arc<[u8]>> {
    Ok(repo.blob_reader()?.read_at(repo, id, loc)?)
}

impl Vfs {
    pub fn new(repo: Arc<Repository>, opts: VfsOptions) -> Vfs {
        Vfs {
            trees: Arc::new(FlightCache::new(opts.tree_cache_bytes)),
            tree_blob_reads: AtomicU64::new(0),
            chunks: Arc::new(FlightCache::new(opts.chunk_cache_bytes)),
            // Enough for the files of a few readahead windows of small
            // files (some 6,000 mail messages in 32 MiB).
            tables: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(32768).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            dir_readahead: readahead::DirReadahead::new(),
            streams: window::Streams::new(),
            work: Arc::new(WorkGauge::default()),
            list_ttl: match repo.storage().local_path() {
                Some(_) => opts.snapshot_ttl,
                None => opts.remote_snapshot_ttl,
            },
            repo,
            opts,
            list: RwLock::new(None),
            known: Mutex::new(HashMap::new()),
            skipped: Mutex::new(Vec::new()),
            owner: (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw()),
        }
    }

    /// The gauge of this view's background work, for a front end that
    /// busy-polls (it adds its own read workers to it).
    pub fn work(&self) -> &Arc<WorkGauge> {
        &self.work
    }

    pub fn repository(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// Tree blobs read from the repository so far (the tree cache's
    /// misses).
    pub fn tree_blob_reads(&self) -> u64 {
        self.tree_blob_reads.load(Ordering::Relaxed)
    }

    /// The last listing, if it is younger than `max_age` (any age: None).
    fn current_list(&self, max_age: Option<Duration>) -> Option<Arc<SnapshotList>> {
        let g = self.list.read().unwrap_or_else(|p| p.into_inner());
        g.as_ref().filter(|(_, at)| max_age.is_none_or(|m| at.elapsed() < m)).map(|(l, _)| l.clone())
    }

    /// The snapshots, re-listed from storage when the last listing is
    /// older than the repository's lifetime (`list_ttl`). While one thread
    /// re-lists, others keep using the previous listing rather than
    /// queueing behind it.
    pub fn snapshots(&self) -> Result<Arc<SnapshotList>> {
        self.snapshots_within(self.list_ttl)
    }

    /// The snapshots, listed again if the last listing is `max_age` old.
    fn snapshots_within(&self, max_age: Duration) -> Result<Arc<SnapshotList>> {
        if let Some(l) = self.current_list(Some(max_age)) {
            return Ok(l);
        }
        let mut known = match self.known.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => match self.current_list(None) {
                Some(l) => return Ok(l),
                None => lock(&self.known),
            },
        };
        if let Some(l) = self.current_list(Some(max_age)) {
            return Ok(l);
        }
        let previous = self.current_list(None);
        let ids: HashSet<Id> = self.repo.snapshot_ids()?.into_iter().collect();
        let before = known.len();
        known.retain(|id, _| ids.contains(id));
        let mut changed = known.len() != before;
        let mut added = false;
        let skipped_ids: HashSet<Id> = lock(&self.skipped).iter().map(|s| s.id).collect();
        let new: Vec<Id> =
            ids.iter().filter(|id| !known.contains_key(*id) && !skipped_ids.contains(*id)).copied().collect();
        for id in &new {
            match self.repo.load_snapshot(id) {
                Ok(s) => {
                    known.insert(*id, s);
                    added = true;
                }
                // Deleted between listing and reading (a forget).
                Err(Error::Missing { .. }) => {}
                Err(e) => lock(&self.skipped).push(SkippedSnapshot { id: *id, error: Arc::new(e) }),
            }
        }
        changed |= added;
        if added && previous.is_some() {
            // A backup that finished after the index database was opened
            // wrote index files it has not seen yet.
            self.repo.refresh_index()?;
        }
        let list = match previous {
            Some(p) if !changed => p,
            _ => Arc::new(SnapshotList::build(known.values().cloned().collect(), self.opts.zone)),
        };
        *self.list.write().unwrap_or_else(|p| p.into_inner()) = Some((list.clone(), Instant::now()));
        Ok(list)
    }

    /// Snapshot files that could not be read (left out of the mount).
    pub fn skipped_snapshots(&self) -> Vec<SkippedSnapshot> {
        lock(&self.skipped).clone()
    }

    /// Runs `f`, and once more after syncing the index if a blob was not
    /// in it (it belongs to a backup newer than the index database).
    fn with_index_retry<T>(&self, f: impl Fn() -> Result<T>) -> Result<T> {
        match f() {
            Err(VfsError::Engine(e)) if matches!(*e, Error::BlobNotInIndex(_)) => {
                self.repo.refresh_index()?;
                f()
            }
            r => r,
        }
    }

    /// The tree listing a directory entry.
    fn dir_tree(&self, e: &Entry) -> Result<Id> {
        match e {
            Entry::Snapshot(s) => Ok(s.tree),
            Entry::Node { tree, index } => self.with_node(tree, *index, |n| match (n.kind, n.subtree) {
                (NodeKind::Dir, Some(id)) => Ok(id),
                _ => Err(VfsError::NotADirectory),
            })?,
            _ => Err(VfsError::NotADirectory),
        }
    }

    /// The entry named `name` in directory `parent`, if there is one.
    pub fn lookup(&self, parent: &Entry, name: &[u8]) -> Result<Option<Entry>> {
        match parent {
            Entry::Snapshot(_) | Entry::Node { .. } => {
                let tree_id = self.dir_tree(parent)?;
                Ok(self.find_in_dir(&tree_id, name)?.map(|index| Entry::Node { tree: tree_id, index }))
            }
            Entry::Latest(..) | Entry::AtLink(..) => Err(VfsError::NotADirectory),
            _ => {
                // Virtual names are all UTF-8.
                let Ok(name) = std::str::from_utf8(name) else { return Ok(None) };
                let list = self.snapshots()?;
                if let Some(found) = self.virtual_lookup(parent, name, &list)? {
                    return Ok(Some(found));
                }
                // A name the views lack may belong to a snapshot newer than
                // the listing (a name copied from `arc snapshots`, a new
                // tag): list again, at most once per `snapshot_ttl`.
                let fresh = self.snapshots_within(self.opts.snapshot_ttl)?;
                if Arc::ptr_eq(&fresh, &list) {
                    return Ok(None);
                }
                self.virtual_lookup(parent, name, &fresh)
            }
        }
    }

    fn virtual_lookup(&self, parent: &Entry, name: &str, list: &SnapshotList) -> Result<Option<Entry>> {
        Ok(match parent {
            Entry::Snapshots => list.by_name(name).map(|s| Entry::Snapshot(s.clone())),
            Entry::At => parse_at(name, self.opts.zone)
                .and_then(|t| list.at(t))
                .map(|s| Entry::AtLink(Arc::from(name), s.clone())),
            _ => self.virtual_items(parent, list)?.into_iter().find(|d| d.name == name.as_bytes()).map(|d| d.entry),
        })
    }

    fn virtual_items(&self, dir: &Entry, list: &SnapshotList) -> Result<Vec<DirItem>> {
        let item = |name: String, entry: Entry, kind: Kind| DirItem { name: name.into_bytes(), entry, kind };
        let dir_item = |name: String, entry: Entry| item(name, entry, Kind::Dir);
        let snap_item = |s: &Arc<SnapRef>| dir_item(s.name.clone(), Entry::Snapshot(s.clone()));
        let scoped = |scope: Scope| {
            let mut v: Vec<DirItem> = list.snaps.iter().filter(|s| scope.matches(s)).map(snap_item).collect();
            if let Some(newest) = list.latest(&scope) {
                v.push(item("latest".into(), Entry::Latest(scope.clone(), newest.clone()), Kind::Symlink));
            }
            v
        };
        Ok(match dir {
            Entry::Root => {
                let mut v = vec![
                    dir_item("snapshots".into(), Entry::Snapshots),
                    dir_item("time".into(), Entry::Time { year: None, month: None, day: None }),
                    dir_item("at".into(), Entry::At),
                    dir_item("tags".into(), Entry::Tags),
                    dir_item("hosts".into(), Entry::Hosts),
                ];
                if let Some(newest) = list.latest(&Scope::All) {
                    v.insert(0, item("latest".into(), Entry::Latest(Scope::All, newest.clone()), Kind::Symlink));
                }
                v
            }
            Entry::Snapshots => list.snaps.iter().map(snap_item).collect(),
            Entry::Time { year: None, .. } => list
                .calendar(None, None)
                .into_iter()
                .map(|y| dir_item(format!("{y:04}"), Entry::Time { year: Some(y as i32), month: None, day: None }))
                .collect(),
            Entry::Time { year: Some(y), month: None, .. } => list
                .calendar(Some(*y), None)
                .into_iter()
                .map(|m| dir_item(format!("{m:02}"), Entry::Time { year: Some(*y), month: Some(m), day: None }))
                .collect(),
            Entry::Time { year: Some(y), month: Some(m), day: None } => list
                .calendar(Some(*y), Some(*m))
                .into_iter()
                .map(|d| dir_item(format!("{d:02}"), Entry::Time { year: Some(*y), month: Some(*m), day: Some(d) }))
                .collect(),
            Entry::Time { year: Some(y), month: Some(m), day: Some(d) } => {
                list.on_day((*y, *m, *d)).map(|s| dir_item(s.day_name.clone(), Entry::Snapshot(s.clone()))).collect()
            }
            Entry::At => Vec::new(),
            Entry::Tags => list.tags().into_iter().map(|t| dir_item(t.clone(), Entry::Tag(Arc::from(t)))).collect(),
            Entry::Hosts => list.hosts().into_iter().map(|h| dir_item(h.clone(), Entry::Host(Arc::from(h)))).collect(),
            Entry::Tag(t) => scoped(Scope::Tag(t.clone())),
            Entry::Host(h) => scoped(Scope::Host(h.clone())),
            Entry::Latest(..) | Entry::AtLink(..) | Entry::Snapshot(_) | Entry::Node { .. } => {
                return Err(VfsError::NotADirectory)
            }
        })
    }

    /// The entries of a directory.
    pub fn read_dir(&self, dir: &Entry) -> Result<Listing> {
        match dir {
            Entry::Snapshot(_) | Entry::Node { .. } => {
                let tree = self.dir_tree(dir)?;
                Ok(Listing::Tree { tree, len: self.dir_len(&tree)? })
            }
            _ => {
                let list = self.snapshots()?;
                Ok(Listing::Items(self.virtual_items(dir, &list)?))
            }
        }
    }

    /// Calls `f` with the items of `listing` from position `from` on, in
    /// order, until it returns `true` (the reply is full).
    pub fn list_from(&self, listing: &Listing, from: usize, mut f: impl FnMut(ListItem<'_>) -> bool) -> Result<()> {
        match listing {
            Listing::Items(v) => {
                for (pos, d) in v.iter().enumerate().skip(from) {
                    let item =
                        ListItem { pos, name: &d.name, entry: d.entry.clone(), kind: d.kind, hardlink_target: None };
                    if f(item) {
                        break;
                    }
                }
                Ok(())
            }
            Listing::Tree { tree, len } => {
                let Ok(from) = u32::try_from(from) else { return Ok(()) };
                self.for_each_node(tree, from, |index, n| {
                    index >= *len
                        || f(ListItem {
                            pos: index as usize,
                            name: &n.name,
                            entry: Entry::Node { tree: *tree, index },
                            kind: n.kind.into(),
                            hardlink_target: (n.kind == NodeKind::Hardlink).then_some(n.target.as_slice()),
                        })
                })
            }
        }
    }

    /// Every item of directory `dir`, for tests.
    #[cfg(test)]
    pub(crate) fn items(&self, dir: &Entry) -> Vec<(Vec<u8>, Entry)> {
        let l = self.read_dir(dir).unwrap();
        let mut v = Vec::new();
        self.list_from(&l, 0, |i| {
            v.push((i.name.to_vec(), i.entry));
            false
        })
        .unwrap();
        v
    }

    fn virtual_attr(&self, kind: Kind, size: u64, nlink: u32, list: &SnapshotList) -> Attr {
        let t = timestamp(list.built);
        Attr {
            kind,
            perm: if kind == Kind::Dir { 0o555 } else { 0o777 },
            uid: self.owner.0,
            gid: self.owner.1,
            size,
            mtime: t,
            ctime: t,
            nlink,
            rdev: 0,
        }
    }

    pub fn attr(&self, e: &Entry) -> Result<Attr> {
        match e {
            Entry::Node { tree, index } => self.with_node(tree, *index, |n| {
                let kind = Kind::from(n.kind);
                Attr {
                    kind,
                    perm: (n.mode & 0o7777) as u16,
                    uid: n.uid,
                    gid: n.gid,
                    // A symlink's size is its target's length; the tree
                    // records sizes for file content only.
                    size: match kind {
                        Kind::File => n.size,
                        Kind::Symlink => n.target.len() as u64,
                        _ => 0,
                    },
                    mtime: n.mtime,
                    ctime: n.ctime,
                    nlink: n.nlink.max(1),
                    rdev: n.rdev,
                }
            }),
            Entry::Snapshot(s) => Ok(Attr {
                kind: Kind::Dir,
                perm: 0o555,
                uid: s.uid,
                gid: s.gid,
                size: 0,
                mtime: timestamp(s.time),
                ctime: timestamp(s.time),
                // Counting subdirectories would read every snapshot's root
                // tree for a plain `ls -l snapshots/`; 1 is the customary
                // "not counted" value for directories (btrfs does the
                // same), which tools like find treat as such.
                nlink: 1,
                rdev: 0,
            }),
            Entry::Latest(..) | Entry::AtLink(..) => {
                let list = self.snapshots()?;
                let target = self.readlink(e)?;
                Ok(self.virtual_attr(Kind::Symlink, target.len() as u64, 1, &list))
            }
            _ => {
                let list = self.snapshots()?;
                let items = self.virtual_items(e, &list)?;
                let subdirs = items.iter().filter(|d| d.kind == Kind::Dir).count();
                Ok(self.virtual_attr(Kind::Dir, 0, 2 + subdirs as u32, &list))
            }
        }
    }

    pub fn readlink(&self, e: &Entry) -> Result<Vec<u8>> {
        match e {
            Entry::Node { tree, index } => self.with_node(tree, *index, |n| {
                if n.kind == NodeKind::Symlink {
                    Ok(n.target.clone())
                } else {
                    Err(VfsError::NotASymlink)
                }
            })?,
            Entry::Latest(Scope::All, s) => Ok(format!("snapshots/{}", s.name).into_bytes()),
            Entry::Latest(_, s) => Ok(s.name.clone().into_bytes()),
            Entry::AtLink(_, s) => Ok(format!("../snapshots/{}", s.name).into_bytes()),
            _ => Err(VfsError::NotASymlink),
        }
    }

    /// The value of one extended attribute (`None`: the entry has no such
    /// attribute).
    pub fn xattr(&self, e: &Entry, name: &[u8]) -> Result<Option<Vec<u8>>> {
        match e {
            Entry::Node { tree, index } => {
                self.with_node(tree, *index, |n| n.xattrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            }
            _ => Ok(None),
        }
    }

    /// Attribute names, each followed by a NUL (the `listxattr` format).
    pub fn xattr_names(&self, e: &Entry) -> Result<Vec<u8>> {
        match e {
            Entry::Node { tree, index } => self.with_node(tree, *index, |n| {
                let mut out = Vec::new();
                for (k, _) in &n.xattrs {
                    out.extend_from_slice(k);
                    out.push(0);
                }
                out
            }),
            _ => Ok(Vec::new()),
        }
    }

    /// The recorded name of an entry inside a snapshot (for messages).
    pub fn name(&self, e: &Entry) -> Option<Vec<u8>> {
        match e {
            Entry::Node { tree, index } => self.with_node(tree, *index, |n| n.name.clone()).ok(),
            Entry::Snapshot(s) => Some(s.name.clone().into_bytes()),
            _ => None,
        }
    }

    /// For a hardlink entry, the snapshot path (no leading `/`) of the
    /// first file of its link group.
    pub fn hardlink_target(&self, e: &Entry) -> Result<Option<Vec<u8>>> {
        match e {
            Entry::Node { tree, index } => {
                self.with_node(tree, *index, |n| (n.kind == NodeKind::Hardlink).then(|| n.target.clone()))
            }
            _ => Ok(None),
        }
    }

    /// Resolves a snapshot path from the snapshot's root: the entry of each
    /// component with its position in its directory. `None` unless the
    /// path names a regular file (the only thing a hardlink may point at).
    pub fn walk_path(&self, snapshot: &Entry, path: &[u8]) -> Result<Option<Vec<(u32, Entry)>>> {
        let Entry::Snapshot(s) = snapshot else { return Ok(None) };
        let comps: Vec<&[u8]> = path.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
        let mut tree_id = s.tree;
        let mut chain = Vec::with_capacity(comps.len());
        for (i, c) in comps.iter().enumerate() {
            let Some(idx) = self.find_in_dir(&tree_id, c)? else { return Ok(None) };
            let (kind, subtree) = self.with_node(&tree_id, idx, |n| (n.kind, n.subtree))?;
            chain.push((idx, Entry::Node { tree: tree_id, index: idx }));
            if i + 1 < comps.len() {
                match (kind, subtree) {
                    (NodeKind::Dir, Some(sub)) => tree_id = sub,
                    _ => return Ok(None),
                }
            } else if kind != NodeKind::File {
                return Ok(None);
            }
        }
        Ok((!chain.is_empty()).then_some(chain))
    }

    /// Opens a regular file: looks up where each of its chunks is, without
    /// reading any. Tables are cached, so reopening a file is cheap.
    pub fn open(&self, e: &Entry) -> Result<OpenFile> {
        let Entry::Node { tree, index } = e else { return Err(VfsError::NotAFile) };
        let key = (*tree, *index);
        if let Some(t) = lock(&self.tables).get(&key) {
            return Ok(OpenFile { table: t.clone(), last_end: AtomicU64::new(0) });
        }
        if !self.with_node(tree, *index, |n| n.kind.has_chunks())? {
            return Err(VfsError::NotAFile);
        }
        let node = self.node_with_chunks(tree, *index)?;
        let table = Arc::new(self.with_index_retry(|| ChunkTable::build(&self.repo.index()?.reader()?, tree, &node))?);
        lock(&self.tables).put(key, table.clone());
        Ok(OpenFile { table, last_end: AtomicU64::new(0) })
    }

    fn chunk(&self, t: &ChunkTable, k: usize) -> Result<Arc<[u8]>> {
        let (id, loc) = &t.chunks[k];
        let chunk = self.chunks.get_or_load(id, chunk_weight, || load_chunk(&self.repo, id, loc))?;
        if chunk.len() as u64 != t.ends[k] - t.start(k) {
            // The blob reader checked the hash, so this means the index
            // disagrees with the data.
            return Err(Error::corrupt(
                "pack",
                loc.pack.to_hex(),
                format!("chunk {} has the wrong length", id.short()),
            )
            .into());
        }
        Ok(chunk)
    }

    /// Starts loading chunk `k` on the thread pool unless it is cached or
    /// already loading.
    fn prefetch(&self, t: &ChunkTable, k: usize) {
        let (id, loc) = t.chunks[k];
        if let Slot::Claimed(claim) = self.chunks.claim(&id, chunk_weight) {
            let repo = self.repo.clone();
            let work = self.work.start();
            rayon::spawn(move || {
                let _work = work;
                // A failure reaches whoever reads the chunk next.
                let _ = claim.complete(load_chunk(&repo, &id, &loc));
            });
        }
    }

    /// Whether [`Vfs::read_at`] would be served from memory: every chunk
    /// it needs is cached, so it neither reads a pack nor waits for
    /// another thread. Front ends use it to answer cheap reads at once and
    /// hand the others to threads that may block.
    pub fn read_is_cached(&self, f: &OpenFile, offset: u64, size: u32) -> bool {
        let t = &f.table;
        if offset >= t.size || size == 0 {
            return true;
        }
        let end = (offset + u64::from(size)).min(t.size);
        let first = t.ends.partition_point(|&e| e <= offset);
        let last = t.ends.partition_point(|&e| e < end);
        (first..=last).all(|k| self.chunks.cached(&t.chunks[k].0))
    }

    /// Up to `size` bytes at `offset` (fewer only at the end of the file).
    pub fn read_at(&self, f: &OpenFile, offset: u64, size: u32) -> Result<ReadBuf> {
        let t = &f.table;
        if offset >= t.size || size == 0 {
            return Ok(ReadBuf::Owned(Vec::new()));
        }
        let end = (offset + u64::from(size)).min(t.size);
        let first = t.ends.partition_point(|&e| e <= offset);
        let last = t.ends.partition_point(|&e| e < end);

        // Sequential if this read starts near where the previous one ended;
        // the kernel's own readahead reorders requests a little.
        let prev = f.last_end.swap(end, Ordering::Relaxed);
        let sequential = offset == 0 || offset.abs_diff(prev) <= 4 << 20;
        if sequential && self.repo.storage().local_path().is_none() {
            // From a remote store, in runs of frames fetched together, from
            // the chunks this read needs when the file goes on past it (its
            // first read, or a reader that outran the run): loaded alone, a
            // delta chunk cost two GETs (its frame, then its base's). A read
            // to the file's end (a small file) loads its chunks itself.
            let from = if last + 1 < t.chunks.len() { first } else { last + 1 };
            self.prefetch_run(t, from);
        } else if sequential {
            // Fetch ahead from the chunk after the last one this read needs,
            // so decoding overlaps with the reader consuming this one.
            let mut ahead = 0u64;
            let mut k = last + 1;
            while k < t.chunks.len() && (ahead < self.opts.readahead_bytes || k == last + 1) {
                if !self.chunks.present(&t.chunks[k].0) {
                    self.prefetch(t, k);
                }
                ahead += t.ends[k] - t.start(k);
                k += 1;
            }
        }
        if first == last {
            let chunk = self.chunk(t, first)?;
            let base = t.start(first);
            return Ok(ReadBuf::Shared(chunk, (offset - base) as usize..(end - base) as usize));
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        for k in first..=last {
            let chunk = self.chunk(t, k)?;
            let base = t.start(k);
            let from = offset.max(base) - base;
            let to = end.min(t.ends[k]) - base;
            out.extend_from_slice(&chunk[from as usize..to as usize]);
        }
        Ok(ReadBuf::Owned(out))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    use super::*;
    use crate::format::config::ChunkerParams;
    use crate::ops::backup::{backup, BackupOptions};
    use crate::progress::NoProgress;
    use crate::repo::InitOptions;
    use crate::test_data::pseudo_random;

    struct Setup {
        _dir: tempfile::TempDir,
        src: std::path::PathBuf,
        vfs: Vfs,
        big: Vec<u8>,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        let big = pseudo_random(700_000, 7);
        std::fs::write(src.join("big"), &big).unwrap();
        std::fs::write(src.join("sub/small"), b"hello").unwrap();
        std::fs::hard_link(src.join("big"), src.join("sub/deeper/big-link")).unwrap();
        std::os::unix::fs::symlink("../big", src.join("sub/link")).unwrap();
        let opts = InitOptions {
            // Small chunks, so a file spans many of them, in frames small
            // enough that the first and last chunks of `big` lie in
            // different ones (the damage test below).
            file_chunker: ChunkerParams::new(8192, 32768, 65536).unwrap(),
            frame_size: 256 * 1024,
            ..Default::default()
        };
        let repo = Repository::init_local(&dir.path().join("repo"), &opts).unwrap();
        for (time, tag) in [("2024-01-01T10:00:00Z", "first"), ("2024-02-01T10:00:00Z", "second")] {
            let o = BackupOptions {
                paths: vec![src.clone()],
                tags: vec![tag.into()],
                time: Some(DateTime::parse_from_rfc3339(time).unwrap().with_timezone(&Utc)),
                ..Default::default()
            };
            backup(&repo, o, &NoProgress).unwrap();
        }
        let vfs = Vfs::new(
            Arc::new(repo),
            VfsOptions { zone: Zone::Utc, chunk_cache_bytes: 256 << 10, ..Default::default() },
        );
        Setup { _dir: dir, src, vfs, big }
    }

    fn walk(vfs: &Vfs, from: Entry, path: &str) -> Entry {
        let mut e = from;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            e = vfs.lookup(&e, c.as_bytes()).unwrap().unwrap_or_else(|| panic!("{c} not found in {path}"));
        }
        e
    }

    fn names(vfs: &Vfs, e: &Entry) -> Vec<String> {
        vfs.items(e).into_iter().map(|(n, _)| String::from_utf8_lossy(&n).into_owned()).collect()
    }

    fn in_snapshot(s: &Setup, snap: Entry) -> Entry {
        walk(&s.vfs, snap, s.src.to_str().unwrap())
    }

    #[test]
    fn vfs_layout_views() {
        let s = setup();
        let v = &s.vfs;
        assert_eq!(names(v, &Entry::Root), ["latest", "snapshots", "time", "at", "tags", "hosts"]);
        let snaps = names(v, &Entry::Snapshots);
        assert_eq!(snaps.len(), 2);
        assert!(snaps[0].starts_with("2024-01-01T10:00:00-"), "{snaps:?}");
        let latest = v.readlink(&walk(v, Entry::Root, "latest")).unwrap();
        assert_eq!(latest, format!("snapshots/{}", snaps[1]).into_bytes());
        assert_eq!(names(v, &walk(v, Entry::Root, "time/2024/01/01")), ["10:00:00-first"]);
        assert_eq!(names(v, &walk(v, Entry::Root, "tags")), ["first", "second"]);
        assert_eq!(names(v, &walk(v, Entry::Root, "tags/first")), [snaps[0].clone(), "latest".into()]);
        let at = walk(v, Entry::Root, "at/2024-01-31");
        assert_eq!(v.readlink(&at).unwrap(), format!("../snapshots/{}", snaps[0]).into_bytes());
        assert!(v.lookup(&Entry::At, b"2023-12-31").unwrap().is_none());
        assert!(v.lookup(&Entry::At, b"yesterday").unwrap().is_none());
        assert!(names(v, &Entry::At).is_empty());
        let a = v.attr(&walk(v, Entry::Root, "time/2024")).unwrap();
        assert_eq!((a.kind, a.nlink), (Kind::Dir, 4));
    }

    #[test]
    fn vfs_attrs_reads_and_hardlinks() {
        let s = setup();
        let v = &s.vfs;
        let snap = walk(v, Entry::Root, &format!("snapshots/{}", names(v, &Entry::Snapshots)[1]));
        let root = in_snapshot(&s, snap.clone());
        assert_eq!(names(v, &root), ["big", "sub"]);
        let big = walk(v, root.clone(), "big");
        let meta = std::fs::symlink_metadata(s.src.join("big")).unwrap();
        let a = v.attr(&big).unwrap();
        assert_eq!((a.kind, a.size, a.nlink, u32::from(a.perm)), (Kind::File, 700_000, 2, meta.mode() & 0o7777));
        assert_eq!((a.mtime.sec, a.mtime.nsec as i64), (meta.mtime(), meta.mtime_nsec()));
        let link = walk(v, root.clone(), "sub/link");
        assert_eq!(v.readlink(&link).unwrap(), b"../big");
        assert_eq!(v.attr(&link).unwrap().size, 6);

        // Reads of every size and alignment, sequential and not.
        let f = v.open(&big).unwrap();
        for step in [131_072u32, 4096, 65_537, 1 << 20] {
            let mut got = Vec::new();
            let mut off = 0u64;
            loop {
                let b = v.read_at(&f, off, step).unwrap();
                if b.is_empty() {
                    break;
                }
                got.extend_from_slice(&b);
                off += b.len() as u64;
            }
            assert!(got == s.big, "sequential reads of {step} bytes differ");
        }
        for off in [699_999u64, 0, 350_001, 65_535] {
            let b = v.read_at(&f, off, 70_000).unwrap();
            let end = (off as usize + 70_000).min(s.big.len());
            assert!(*b == s.big[off as usize..end], "read at {off}");
        }
        assert!(v.chunks.bytes() <= 256 << 10, "chunk cache over budget");

        // The hardlink resolves to the first file of its group.
        let hl = walk(v, root, "sub/deeper/big-link");
        let target = v.hardlink_target(&hl).unwrap().unwrap();
        let chain = v.walk_path(&snap, &target).unwrap().unwrap();
        assert_eq!(chain.last().unwrap().1, big);
        assert!(v.walk_path(&snap, b"no/such").unwrap().is_none());
    }

    #[test]
    fn vfs_new_snapshots_appear_and_damage_is_an_error() {
        let s = setup();
        let v = &s.vfs;
        assert_eq!(names(v, &Entry::Snapshots).len(), 2);
        std::fs::write(s.src.join("new"), pseudo_random(200_000, 9)).unwrap();
        backup(v.repository(), BackupOptions { paths: vec![s.src.clone()], ..Default::default() }, &NoProgress)
            .unwrap();
        std::thread::sleep(v.opts.snapshot_ttl + Duration::from_millis(50));
        let snaps = names(v, &Entry::Snapshots);
        assert_eq!(snaps.len(), 3);
        let new = walk(v, walk(v, Entry::Root, &format!("snapshots/{}", snaps[2])), s.src.to_str().unwrap());
        let f = v.open(&walk(v, new, "new")).unwrap();
        assert_eq!(v.read_at(&f, 0, 300_000).unwrap().len(), 200_000);

        // Flip a byte of big's first chunk in its pack: reads of that chunk
        // fail naming the pack, other chunks still read.
        let repo_dir = v.repository().storage().local_path().unwrap().to_path_buf();
        let big =
            v.open(&walk(v, in_snapshot(&s, walk(v, Entry::Root, &format!("snapshots/{}", snaps[0]))), "big")).unwrap();
        let (_, loc) = big.table.chunks[0];
        // Random data is stored raw, so the blob's bytes are in the pack
        // as they are; hit the middle of them.
        let at = match loc.frame.codec {
            crate::format::pack::FrameCodec::Raw => u64::from(loc.offset_in_frame + loc.raw_len / 2),
            _ => u64::from(loc.frame.stored_len / 2),
        };
        corrupt(&repo_dir, &loc.pack.to_hex(), loc.frame.offset + at);
        let fresh = Vfs::new(v.repository().clone(), VfsOptions::default());
        let e = walk(&fresh, Entry::Root, &format!("snapshots/{}", snaps[0]));
        let big = fresh.open(&walk(&fresh, in_snapshot(&s, e), "big")).unwrap();
        match fresh.read_at(&big, 0, 4096) {
            Err(VfsError::Engine(e)) => assert!(e.to_string().contains(&loc.pack.to_hex()), "{e}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("read of a damaged chunk succeeded"),
        }
        assert!(fresh.read_at(&big, big.size() - 10, 10).is_ok());
    }

    fn corrupt(repo: &Path, pack: &str, offset: u64) {
        use std::os::unix::fs::FileExt;
        let path = walkdir::WalkDir::new(repo.join("data"))
            .into_iter()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy() == pack)
            .unwrap()
            .into_path();
        let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, offset).unwrap();
        b[0] ^= 0x55;
        f.write_all_at(&b, offset).unwrap();
    }
}
