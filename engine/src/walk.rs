//! The parallel directory walker: lists the directories of a backup's
//! sources, several at once and ahead of need, and hands the listings out
//! strictly depth first in name order (the order a snapshot's trees are
//! built in). Each entry is stat'ed and matched with the same name in the
//! parent snapshot's tree, so the consumer can tell unchanged files
//! without another lookup.
//!
//! Memory does not grow with the size of a directory beyond its names: a
//! directory is read whole once (readdir gives names unsorted, and the
//! snapshot needs them sorted), its names kept packed in one buffer (16
//! bytes plus the name's length each); then it is stat'ed and handed out
//! in pieces of [`PIECE_ENTRIES`] entries, each listed only when the walk
//! is about to need it, and the parent snapshot's tree of it is read a leaf
//! at a time beside the names ([`crate::change_cache::PreviousDir`]).
//! Listed pieces waiting for the walk are bounded by [`LIST_AHEAD_ENTRIES`].

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::change_cache::PreviousDir;
use crate::error::{Error, Result};
use crate::exclude::Excludes;
use crate::format::tree::{Node, NodeKind};
use crate::id::Id;
use crate::index::IndexReader;
use crate::metadata::{node_from_metadata, OwnerNames, Stat};
use crate::repo::Repository;

/// What the listers need from the walk's owner.
pub(crate) struct ListEnv<'a> {
    /// Where the parent snapshot's trees are read from.
    pub repo: &'a Repository,
    /// Directories never walked into, as (device, inode): the repository
    /// itself and its cache, when they lie inside a source (by identity,
    /// not path: a source named through a symlink reaches them by another
    /// path).
    pub skip_dirs: &'a [(u64, u64)],
    /// True once the walk is to stop (cancel, or a failure elsewhere).
    pub stopping: &'a (dyn Fn() -> bool + Sync),
    pub excludes: &'a Excludes,
    /// Mount points, when `excludes.one_file_system` is set.
    pub mounts: &'a HashSet<PathBuf>,
    /// Directory descriptors the walk may keep open for its files' reads.
    pub dir_fds: &'a Arc<DirBudget>,
}

/// How many listed directories' descriptors may stay open until their
/// files are read (each regular file's [`Child`] holds its directory's, so
/// that the file is opened relative to it: the kernel then resolves one
/// name instead of the whole path, whose lookup was 4 % of a mail spool's
/// backup CPU in session 15's profile). Files listed ahead of the reads
/// can span thousands of directories (a maildir of one message a folder),
/// more than the soft limit of open files (1,024 by default) allows; a
/// directory listed while the budget is spent hands out its files without
/// its descriptor, and they are opened by path as before. The soft limit
/// is left as it is rather than raised to the hard one: it is the
/// process's, inherited by the commands a backup starts (ssh, dump
/// commands).
pub(crate) struct DirBudget {
    held: AtomicUsize,
    limit: usize,
}

impl DirBudget {
    /// A quarter of the soft limit of open files, at most 1,024: the rest
    /// stays for the listers, the packs, the index and remote connections.
    pub(crate) fn from_rlimit() -> Arc<DirBudget> {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
        DirBudget::new(usize::try_from(soft / 4).unwrap_or(usize::MAX).min(1024))
    }

    pub(crate) fn new(limit: usize) -> Arc<DirBudget> {
        Arc::new(DirBudget { held: AtomicUsize::new(0), limit })
    }

    /// One more descriptor kept, if the budget allows.
    fn take(self: &Arc<Self>) -> Option<Arc<DirBudget>> {
        let more = |h: usize| (h < self.limit).then_some(h + 1);
        self.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, more).ok().map(|_| self.clone())
    }

    /// Descriptors kept now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// A listed directory's descriptor, shared by the listing and the files
/// read relative to it; closed when the last of them is done.
pub(crate) struct DirFd {
    fd: OwnedFd,
    /// The budget it counts against, when its files hold it.
    budget: Option<Arc<DirBudget>>,
}

impl AsFd for DirFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for DirFd {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.held.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Where a piece of a listing is in the walk, as a path of numbers from
/// the source's index down: a directory's key is a prefix of the keys of
/// everything in it, its piece starting at child `i` is the directory's key
/// and `2i`, its subdirectory `i` the directory's key and `2i + 1`. Keys
/// compare in exactly depth-first, name-sorted order, the order the walk
/// consumes them: a piece before the subdirectories it lists, and those
/// (with everything below them) before the next piece.
pub(crate) type WalkKey = Vec<u64>;

/// The key of the piece of the directory `dir` whose first child is `first`.
pub(crate) fn piece_key(dir: &[u64], first: u64) -> WalkKey {
    let mut k = dir.to_vec();
    k.push(2 * first);
    k
}

/// The key of the directory that is child `i` of the directory `dir`.
pub(crate) fn subdir_key(dir: &[u64], i: u64) -> WalkKey {
    let mut k = dir.to_vec();
    k.push(2 * i + 1);
    k
}

/// Entries of listed but not yet consumed pieces kept at most, beyond the
/// one piece the walk waits for: bounds the memory of looking ahead (a
/// stat'ed entry is some 400 bytes; four pieces keep the listers that far
/// ahead of the walk, as far as the events channel lets the walk run).
const LIST_AHEAD_ENTRIES: usize = 4 * PIECE_ENTRIES;

/// Entries stat'ed and handed out at once: a directory of a million
/// entries is a thousand pieces, each listed when the walk nears it.
pub(crate) const PIECE_ENTRIES: usize = 1024;

/// One entry of a directory listing.
pub(crate) struct Child {
    pub(crate) path: PathBuf,
    /// A regular file's directory, open, when the budget let it stay so:
    /// the file is opened relative to it (by its last name in `path`).
    pub(crate) dir: Option<Arc<DirFd>>,
    /// `None` when it could not be stat'ed (then `warnings` says why).
    pub(crate) node: Option<Node>,
    /// The same name in the parent snapshot's tree of this directory.
    /// Boxed: a listing holds up to a piece of children in a row, and a
    /// first backup has no parent (a `Node` inline is ~300 bytes).
    pub(crate) prev: Option<Box<Node>>,
    pub(crate) warnings: Vec<String>,
    /// A directory to walk into: false for the repository's own
    /// (`ListEnv::skip_dirs`).
    pub(crate) descend: bool,
    /// A mount point not crossed (one file system): kept as an empty
    /// directory.
    pub(crate) mount_point: bool,
}

/// A piece of a directory's entries sorted by name, each stat'ed.
#[derive(Default)]
pub(crate) struct Listing {
    pub(crate) children: Vec<Option<Child>>,
    /// Why the directory could not be read (fully); on its first piece.
    pub(crate) errors: Vec<String>,
    /// Entries left out by the excludes (not counting what is below them).
    pub(crate) excluded: u64,
    /// The position of the first child among the directory's children.
    pub(crate) first: u64,
    /// More pieces of the directory follow.
    pub(crate) more: bool,
}

struct DirJob {
    path: PathBuf,
    /// The directory's tree in the parent snapshot.
    prev_tree: Option<Id>,
    /// Its device number, to tell mount points below it.
    dev: u64,
    /// Once the directory is read: what is left of it (boxed: most jobs
    /// wait in the queue unread).
    open: Option<Box<OpenDir>>,
}

/// A directory read and partly handed out.
struct OpenDir {
    /// The directory, open: its entries are stat'ed relative to it, so the
    /// kernel looks up one name per entry rather than the whole path.
    fd: Arc<DirFd>,
    names: Names,
    /// The next name to list.
    next: usize,
    /// Children kept so far (the position of the next one).
    kept: u64,
    /// The parent snapshot's tree of the directory, read along.
    prev: Option<PreviousDir>,
}

/// A directory's names sorted as bytes, packed into one buffer: 16 bytes
/// and the name each, where a `Vec` of names would cost 24 bytes and an
/// allocation each.
#[derive(Default)]
struct Names {
    bytes: Vec<u8>,
    /// Start and length of each name; the top bit of the length: a
    /// directory, as readdir says (only asked for when patterns apply).
    spans: Vec<(usize, u32)>,
}

const DIR_BIT: u32 = 1 << 31;

impl Names {
    fn push(&mut self, name: &[u8], is_dir: bool) {
        let len = name.len().min((DIR_BIT - 1) as usize) as u32;
        self.spans.push((self.bytes.len(), len | if is_dir { DIR_BIT } else { 0 }));
        self.bytes.extend_from_slice(&name[..len as usize]);
    }

    fn name(&self, span: (usize, u32)) -> &[u8] {
        &self.bytes[span.0..span.0 + (span.1 & !DIR_BIT) as usize]
    }

    fn sort(&mut self) {
        let mut spans = std::mem::take(&mut self.spans);
        spans.sort_unstable_by(|a, b| self.name(*a).cmp(self.name(*b)));
        self.spans = spans;
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    fn get(&self, i: usize) -> (&OsStr, bool) {
        let span = self.spans[i];
        (OsStr::from_bytes(self.name(span)), span.1 & DIR_BIT != 0)
    }
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
pub(crate) struct DirPool {
    state: Mutex<PoolState>,
    changed: Condvar,
}

pub(crate) struct StopOnDrop<'a>(pub(crate) &'a DirPool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.state.lock() {
            s.stop = true;
        }
        self.0.changed.notify_all();
    }
}

impl DirPool {
    /// Queues the listing of a source directory whose key is `dir`; its
    /// first piece is `piece_key(dir, 0)`.
    pub(crate) fn submit(&self, dir: &[u64], path: PathBuf, prev_tree: Option<Id>, dev: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.todo.insert(piece_key(dir, 0), DirJob { path, prev_tree, dev, open: None });
        }
        self.changed.notify_all();
    }

    /// Waits for the piece of a listing at `key`, which must have been
    /// submitted (directly, as a subdirectory of a listed piece or as the
    /// piece after one with `more` set).
    pub(crate) fn take(&self, key: &WalkKey, env: &ListEnv<'_>) -> Result<Listing> {
        let mut s = crate::sync::lock(&self.state, "the directory lister's state")?;
        loop {
            if let Some(l) = s.done.remove(key) {
                s.buffered -= l.children.len();
                drop(s);
                self.changed.notify_all();
                return Ok(l);
            }
            if s.stop || (env.stopping)() {
                return Err(Error::Interrupted);
            }
            s = self
                .changed
                .wait_timeout(s, std::time::Duration::from_millis(100))
                .map_err(|_| Error::Bug {
                    what: "the directory lister's state",
                    message: "poisoned while waiting".into(),
                })?
                .0;
        }
    }

    /// A lister thread: takes the first piece in walk order, lists it,
    /// queues its subdirectories and the directory's next piece, and hands
    /// the piece over. It waits while the buffer is full, unless its piece
    /// comes before everything buffered: the walk needs that one first, so
    /// it must never wait.
    pub(crate) fn work(&self, env: &ListEnv<'_>) {
        // Parent trees were all in the index before this backup started, so
        // one read transaction serves the whole walk.
        let reader = env.repo.index().and_then(|i| i.reader()).ok();
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
            let (listing, subdirs, rest) = list_piece(env, reader.as_ref(), &mut owners, &key, job);
            let Ok(mut s) = self.state.lock() else { return };
            for (k, j) in subdirs.into_iter().chain(rest) {
                s.todo.insert(k, j);
            }
            s.buffered += listing.children.len();
            s.done.insert(key, listing);
            drop(s);
            self.changed.notify_all();
        }
    }
}

/// Lists the next piece of a directory (reading the directory first if
/// this is its first piece): up to [`PIECE_ENTRIES`] entries in name
/// order, each stat'ed with its xattrs and matched with the parent
/// snapshot's tree. Returns the piece, the jobs of its subdirectories and,
/// when entries are left, the job of the next piece.
type Listed = (Listing, Vec<(WalkKey, DirJob)>, Option<(WalkKey, DirJob)>);

fn list_piece(
    env: &ListEnv<'_>,
    reader: Option<&IndexReader>,
    owners: &mut OwnerNames,
    key: &WalkKey,
    mut job: DirJob,
) -> Listed {
    let mut listing = Listing::default();
    let mut subdirs = Vec::new();
    if (env.stopping)() {
        return (listing, subdirs, None);
    }
    let dir = &key[..key.len() - 1];
    let excludes = env.excludes;
    if job.open.is_none() {
        job.open = open_dir(env, reader, &job, &mut listing);
    }
    let Some(open) = job.open.as_mut() else {
        return (listing, subdirs, None);
    };
    listing.first = open.kept;
    let mut scratch = Vec::new();
    while listing.children.len() < PIECE_ENTRIES && open.next < open.names.len() {
        let (name, is_dir) = open.names.get(open.next);
        open.next += 1;
        let path = job.path.join(name);
        if !excludes.patterns.is_empty() && excludes.patterns.matches(path.as_os_str().as_bytes(), is_dir, &mut scratch)
        {
            listing.excluded += 1;
            continue;
        }
        let mut warnings = Vec::new();
        let meta = match Stat::at(open.fd.as_fd(), name) {
            Ok(m) => m,
            Err(err) => {
                warnings.push(err.to_string());
                let child =
                    Child { path, dir: None, node: None, prev: None, warnings, descend: false, mount_point: false };
                listing.children.push(Some(child));
                open.kept += 1;
                continue;
            }
        };
        if excludes.larger_than.is_some_and(|n| meta.is_file() && meta.size > n) {
            listing.excluded += 1;
            continue;
        }
        // The position of a child among the children kept.
        let i = open.kept;
        open.kept += 1;
        let name = name.as_bytes();
        let node = node_from_metadata(name, &path, Some(open.fd.as_fd()), &meta, owners, &mut warnings);
        let prev = match (open.prev.as_mut(), reader) {
            (Some(p), Some(r)) => p.find(env.repo, r, name).map(Box::new),
            _ => None,
        };
        let mut descend = false;
        let mount_point = node.kind == NodeKind::Dir
            && excludes.one_file_system
            && (meta.dev != job.dev || env.mounts.contains(&path));
        if mount_point {
            listing.excluded += 1;
        } else if node.kind == NodeKind::Dir && !env.skip_dirs.contains(&(meta.dev, meta.ino)) {
            descend = true;
            let prev_tree = prev.as_ref().and_then(|p| p.subtree);
            let sub = DirJob { path: path.clone(), prev_tree, dev: meta.dev, open: None };
            subdirs.push((piece_key(&subdir_key(dir, i), 0), sub));
        }
        let dir = (meta.is_file() && open.fd.budget.is_some()).then(|| open.fd.clone());
        listing.children.push(Some(Child { path, dir, node: Some(node), prev, warnings, descend, mount_point }));
    }
    listing.more = open.next < open.names.len();
    let next = piece_key(dir, open.kept);
    let rest = listing.more.then_some((next, job));
    (listing, subdirs, rest)
}

/// Reads a directory's names and sorts them as bytes, applies the
/// excludes' markers, and opens the parent snapshot's tree of it. `None`
/// (with the error in `listing`) when it cannot be read.
fn open_dir(
    env: &ListEnv<'_>,
    reader: Option<&IndexReader>,
    job: &DirJob,
    listing: &mut Listing,
) -> Option<Box<OpenDir>> {
    use rustix::fs::{Dir, FileType, Mode, OFlags};
    // The names are read through a duplicate of the descriptor kept for
    // the stats (no second lookup of the path).
    let opened = rustix::fs::open(&job.path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(std::io::Error::from)
        .and_then(|fd| Ok((fd.try_clone()?, fd)))
        .and_then(|(dup, fd)| Ok((fd, Dir::new(dup)?)));
    let (fd, rd) = match opened {
        Ok(o) => o,
        Err(e) => {
            listing.errors.push(e.to_string());
            return None;
        }
    };
    let excludes = env.excludes;
    let mut names = Names::default();
    // Whether any entry may be a file (readdir's type): a directory of
    // directories keeps no descriptor for reads.
    let mut files = false;
    for e in rd {
        match e {
            Ok(e) => {
                let name = e.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                files |= e.file_type() != FileType::Directory;
                // The type from readdir needs no stat (the file system
                // reports it in the directory entry), so an excluded entry
                // costs none; only where it does not is the entry stat'ed.
                let is_dir = !excludes.patterns.is_empty()
                    && match e.file_type() {
                        FileType::Unknown => {
                            Stat::at(&fd, OsStr::from_bytes(name)).is_ok_and(|s| s.kind() == NodeKind::Dir)
                        }
                        t => t == FileType::Directory,
                    };
                names.push(name, is_dir);
            }
            Err(e) => listing.errors.push(std::io::Error::from(e).to_string()),
        }
    }
    names.sort();
    let all = (0..names.len()).map(|i| names.get(i).0);
    if let Some(marker) = excludes.marker(&job.path, all).map(|m| m.to_os_string()) {
        let mut kept = Names::default();
        for i in 0..names.len() {
            let (n, is_dir) = names.get(i);
            if n == marker {
                kept.push(n.as_bytes(), is_dir);
            }
        }
        listing.excluded += (names.len() - kept.len()) as u64;
        names = kept;
    }
    names.bytes.shrink_to_fit();
    names.spans.shrink_to_fit();
    // A tree that cannot be read only costs change detection: its files
    // are read again.
    let prev = match (job.prev_tree, reader) {
        (Some(id), Some(r)) => PreviousDir::open(env.repo, r, &id, &job.path).ok(),
        _ => None,
    };
    let fd = Arc::new(DirFd { fd, budget: if files { env.dir_fds.take() } else { None } });
    Some(Box::new(OpenDir { fd, names, next: 0, kept: 0, prev }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget hands out at most its limit, and a directory's descriptor
    /// gives its share back when the last file holding it is done.
    #[test]
    fn the_budget_of_kept_directories_is_given_back() {
        let budget = DirBudget::new(2);
        let open = |b| Arc::new(DirFd { fd: std::fs::File::open(".").unwrap().into(), budget: b });
        let a = open(budget.take());
        let b = open(budget.take());
        assert!(a.budget.is_some() && b.budget.is_some());
        assert!(budget.take().is_none(), "a third descriptor kept beyond the limit of two");
        assert_eq!(budget.held(), 2);
        let file_of_a = a.clone();
        drop(a);
        assert_eq!(budget.held(), 2, "given back while a file still holds it");
        drop(file_of_a);
        assert_eq!(budget.held(), 1);
        assert!(budget.take().is_some());
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
        assert_eq!(DirBudget::from_rlimit().limit as u64, (soft / 4).min(1024));
    }
}
