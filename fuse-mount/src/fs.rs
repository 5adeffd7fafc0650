//! The `fuser::Filesystem` implementation: kernel requests in, VFS calls,
//! replies out. It owns what only the kernel interface needs: inode
//! numbers (with their kernel reference counts), open file and directory
//! handles, cache lifetimes (TTLs, keep-cache flags, negative entries) and
//! the mapping of failures to errno values; everything about the repository
//! is in [`arc_engine::vfs`].
//!
//! Round trips per file are what copying out of the mount costs, so the
//! kernel is asked to skip every one it can: files and directories open
//! without OPEN/OPENDIR (and so without RELEASE), FLUSH is switched off,
//! names and attributes of snapshot content are cached for a day, missing
//! names too; listings carry attributes for tasks that stat what they list
//! (READDIRPLUS, `readdirplus`), so their LOOKUPs stay in the kernel, and
//! the push (push.rs) spares most READs. What is left for `cp -a` of a
//! small file is the xattr/ACL queries the tool makes (BENCHMARKS.md).
//!
//! Threads: requests arrive on one dispatch thread (the fastest setup for
//! the common single walker, see [`ReadPool`]), which answers lookups,
//! attributes, listings and small cached reads itself; reads that need a
//! chunk fetched, or that copy a lot, go to a pool of read workers that
//! reply when done, so parallel readers overlap.
//!
//! Every operation that would change something answers EROFS (the mount
//! is also read-only at the VFS level, so most never get here; fuser's
//! default for an unimplemented operation would be ENOSYS, which tools
//! report as "function not implemented").

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use arc_engine::vfs::{Entry, Kind, Listing, OpenFile, Position, Vfs, VfsError};
use fuser::{
    AccessFlags, Errno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use lru::LruCache;

use crate::attr::{file_attr, file_type};
use crate::dirplus::{Attrs, PlusReply};
use crate::errno::{is_damage, to_errno};
use crate::inode::{child_key, Inode, InodeTable};
use crate::push::{DirPush, Pusher};
use crate::spin::Spinner;
use crate::stats::{Op, RequestCounts};
use crate::statters::Statters;
use crate::MountEvents;

/// Snapshot content never changes: the kernel may keep names and
/// attributes as long as it likes.
const IMMUTABLE_TTL: Duration = Duration::from_secs(24 * 3600);
/// The views above the snapshots change when backups come and go.
const VOLATILE_TTL: Duration = Duration::from_secs(1);

fn ttl(e: &Entry) -> Duration {
    if e.is_immutable() {
        IMMUTABLE_TTL
    } else {
        VOLATILE_TTL
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // One map operation per critical section: nothing to repair after a
    // panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Open handles of one kind, sharded so parallel readers do not share a
/// lock.
struct Handles<T> {
    shards: Vec<Mutex<HashMap<u64, Arc<T>>>>,
    next: AtomicU64,
}

impl<T> Handles<T> {
    fn new() -> Self {
        Handles { shards: (0..16).map(|_| Mutex::new(HashMap::new())).collect(), next: AtomicU64::new(1) }
    }
    fn shard(&self, fh: u64) -> &Mutex<HashMap<u64, Arc<T>>> {
        &self.shards[(fh % 16) as usize]
    }
    fn insert(&self, v: T) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        lock(self.shard(fh)).insert(fh, Arc::new(v));
        fh
    }
    fn get(&self, fh: u64) -> Option<Arc<T>> {
        lock(self.shard(fh)).get(&fh).cloned()
    }
    fn remove(&self, fh: u64) {
        lock(self.shard(fh)).remove(&fh);
    }
}

/// Open files by inode, for reads the kernel sends without a handle (no
/// OPEN round trip, see `open`). An [`OpenFile`] is cheap to rebuild (its
/// chunk table is cached by the VFS); what keeping it buys is its record
/// of where the previous read ended, which tells a sequential reader (who
/// gets readahead) from a random one. Bounded: a file pushed out simply
/// starts over as a new reader. Each is kept with the entry it was opened
/// for, so an inode number that comes to stand for another entry (after
/// the kernel forgot the first) never reads the first one's chunks.
pub struct FilesByInode {
    shards: Vec<Mutex<FileShard>>,
}

type FileShard = LruCache<u64, (Entry, Arc<OpenFile>)>;

impl FilesByInode {
    const SHARDS: usize = 16;
    const PER_SHARD: usize = 256;

    fn new() -> Self {
        let cap = NonZeroUsize::new(Self::PER_SHARD).unwrap_or(NonZeroUsize::MIN);
        FilesByInode { shards: (0..Self::SHARDS).map(|_| Mutex::new(LruCache::new(cap))).collect() }
    }

    fn shard(&self, ino: u64) -> &Mutex<FileShard> {
        &self.shards[(ino % Self::SHARDS as u64) as usize]
    }

    fn get_or_open(
        &self,
        ino: u64,
        entry: &Entry,
        open: impl FnOnce() -> Result<OpenFile, VfsError>,
    ) -> Result<Arc<OpenFile>, VfsError> {
        if let Some((e, f)) = lock(self.shard(ino)).get(&ino) {
            if e == entry {
                return Ok(f.clone());
            }
        }
        // Opened outside the lock: it may look chunks up in the index.
        let f = Arc::new(open()?);
        lock(self.shard(ino)).put(ino, (entry.clone(), f.clone()));
        Ok(f)
    }

    /// Whether `ino` (standing for `entry`) was read lately.
    pub fn contains(&self, ino: u64, entry: &Entry) -> bool {
        lock(self.shard(ino)).peek(&ino).is_some_and(|(e, _)| e == entry)
    }
}

struct DirHandle {
    listing: Listing,
    parent: u64,
}

type Job = Box<dyn FnOnce() + Send>;

/// Reads up to this size whose data is in memory are answered on the
/// dispatch thread (a small file's whole content, say); larger ones go to
/// the read workers even when cached, because copying a megabyte into the
/// kernel on the one dispatch thread would serialize a fast reader.
const INLINE_READ_MAX: u32 = 128 * 1024;

/// Threads for reads that must fetch chunks. The kernel hands requests to
/// waiting server threads in turn, so a sequential walker (find, ls -lR,
/// cp) is fastest with one dispatch thread that stays hot; that thread
/// answers everything it can from memory and passes reads that would wait
/// for a pack read, a decompression and a hash to these workers, which
/// reply when the data is there. Parallel readers so overlap their fetches
/// instead of queueing behind each other.
struct ReadPool {
    tx: Option<crossbeam_channel::Sender<Job>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl ReadPool {
    fn new(n: usize) -> ReadPool {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let workers = (0..n.max(1))
            .filter_map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("arc-read-{i}"))
                    .spawn(move || {
                        for job in rx.iter() {
                            job();
                        }
                    })
                    .ok()
            })
            .collect();
        ReadPool { tx: Some(tx), workers }
    }

    fn run(&self, job: Job) {
        match &self.tx {
            Some(tx) if !self.workers.is_empty() => {
                if let Err(e) = tx.send(job) {
                    (e.0)()
                }
            }
            // No worker could be started: answer on this thread.
            _ => job(),
        }
    }
}

impl Drop for ReadPool {
    fn drop(&mut self) {
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Turns failures into errno values and tells the front end about damage,
/// once per inode. Shared with the read workers.
struct Reporter {
    vfs: Arc<Vfs>,
    inodes: Arc<InodeTable>,
    events: Arc<dyn MountEvents>,
    /// Inodes whose damage was reported already (a damaged file is read
    /// again and again by the kernel's retries; say so once).
    reported: Mutex<HashSet<u64>>,
}

impl Reporter {
    fn fail(&self, ino: u64, e: &VfsError) -> Errno {
        if is_damage(e) && lock(&self.reported).insert(ino) {
            self.events.damaged(&self.describe(ino), e);
        }
        to_errno(e)
    }

    /// `<snapshot name>:/path/in/snapshot` for messages.
    fn describe(&self, ino: u64) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut cur = ino;
        for _ in 0..4096 {
            let Some(i) = self.inodes.get(cur) else { break };
            match &i.entry {
                Entry::Snapshot(s) => {
                    parts.reverse();
                    return format!("{}:/{}", s.name, parts.join("/"));
                }
                Entry::Node { .. } => parts
                    .push(self.vfs.name(&i.entry).map_or_else(|| "?".into(), |n| String::from_utf8_lossy(&n).into())),
                _ => break,
            }
            cur = i.parent;
        }
        format!("inode {ino}")
    }
}

pub struct ArcFs {
    vfs: Arc<Vfs>,
    inodes: Arc<InodeTable>,
    files: Handles<OpenFile>,
    /// Files read without OPEN (`no_open`).
    files_by_ino: Arc<FilesByInode>,
    dirs: Handles<DirHandle>,
    report: Arc<Reporter>,
    readers: ReadPool,
    /// The kernel opens directories without asking (see `opendir`).
    zero_message_opendir: bool,
    /// The kernel opens files without asking (see `open`).
    zero_message_open: bool,
    /// Keeps CPUs awake while requests flow (see `spin.rs`).
    spinner: Option<Arc<Spinner>>,
    /// Requests by opcode, when counting was asked for.
    counts: Option<Arc<RequestCounts>>,
    /// Pushes small files' data into the kernel's page cache after their
    /// directory's first READ (push.rs), when asked for.
    pusher: Option<Pusher>,
    /// The directory pushed last (0: none).
    last_pushed_dir: AtomicU64,
    /// A dup of the session's /dev/fuse descriptor, set once the session
    /// exists: the pusher's stores and the READDIRPLUS replies written
    /// here (dirplus.rs) go to it.
    dev: Arc<OnceLock<OwnedFd>>,
    /// READDIRPLUS was asked for (and is used if the kernel offers it).
    want_readdirplus: bool,
    /// Tasks whose listings carry attributes (statters.rs).
    statters: Statters,
}

impl ArcFs {
    pub fn new(
        vfs: Arc<Vfs>,
        events: Arc<dyn MountEvents>,
        read_threads: usize,
        spinner: Option<Arc<Spinner>>,
        counts: Option<Arc<RequestCounts>>,
        push: bool,
        readdirplus: bool,
    ) -> ArcFs {
        let inodes = Arc::new(InodeTable::new());
        let report = Arc::new(Reporter {
            vfs: vfs.clone(),
            inodes: inodes.clone(),
            events,
            reported: Mutex::new(HashSet::new()),
        });
        let files_by_ino = Arc::new(FilesByInode::new());
        let dev: Arc<OnceLock<OwnedFd>> = Arc::new(OnceLock::new());
        let pusher =
            push.then(|| Pusher::start(vfs.clone(), inodes.clone(), files_by_ino.clone(), counts.clone(), dev.clone()));
        ArcFs {
            vfs,
            inodes,
            files: Handles::new(),
            files_by_ino,
            dirs: Handles::new(),
            report,
            readers: ReadPool::new(read_threads),
            zero_message_opendir: false,
            zero_message_open: false,
            spinner,
            counts,
            pusher,
            last_pushed_dir: AtomicU64::new(0),
            dev,
            want_readdirplus: readdirplus,
            statters: Statters::default(),
        }
    }

    /// Where a dup of the session's /dev/fuse descriptor goes (for the
    /// pusher and READDIRPLUS replies); `mount` fails without one.
    pub fn dev_fd_slot(&self) -> Arc<OnceLock<OwnedFd>> {
        self.dev.clone()
    }

    /// Every request starts here.
    fn request(&self, op: Op) {
        if let Some(s) = &self.spinner {
            s.request(op == Op::Read);
        }
        if let Some(c) = &self.counts {
            c.add(op);
        }
    }

    /// Counts a request that needs no busy-polling (no reply, or a
    /// refusal).
    fn count(&self, op: Op) {
        if let Some(c) = &self.counts {
            c.add(op);
        }
    }

    /// The errno for a failure, reporting damage once per inode.
    fn fail(&self, ino: u64, e: &VfsError) -> Errno {
        self.report.fail(ino, e)
    }

    fn inode(&self, ino: INodeNo) -> Result<Inode, Errno> {
        // The kernel only names inodes it was given and has not forgotten.
        self.inodes.get(ino.0).ok_or(Errno::ESTALE)
    }

    /// The inode a child entry shows as. A hardlink shows as the first file
    /// of its link group, so all its names share one inode number; if that
    /// file cannot be resolved the link stands alone (it carries the same
    /// content). `count` registers one kernel reference.
    /// `link` is the entry's hardlink target when the caller has it
    /// (a listing does), else it is looked up.
    fn child_inode(&self, parent: &Inode, name: &[u8], entry: Entry, link: Link<'_>, count: bool) -> (u64, Entry) {
        let target = match link {
            Link::Unknown => self.vfs.hardlink_target(&entry).ok().flatten().map(std::borrow::Cow::Owned),
            Link::Known(t) => t.map(std::borrow::Cow::Borrowed),
        };
        if let Some(target) = target {
            if let Some(found) = self.resolve_link(parent.snap_root, &target, count) {
                return found;
            }
        }
        let key = child_key(name, &entry);
        if count {
            (self.inodes.child(parent, key, entry.clone(), true), entry)
        } else {
            (self.inodes.peek(parent, key, &entry), entry)
        }
    }

    /// The inode of the file at `path` in the snapshot rooted at
    /// `snap_root`. Only the file itself is registered: the directories on
    /// the way only contribute their numbers, which are a function of the
    /// path.
    fn resolve_link(&self, snap_root: u64, path: &[u8], count: bool) -> Option<(u64, Entry)> {
        let root = self.inodes.get(snap_root)?;
        let chain = self.vfs.walk_path(&root.entry, path).ok()??;
        let mut cur = root;
        let last = chain.len() - 1;
        for (i, (index, entry)) in chain.into_iter().enumerate() {
            let key = u64::from(index);
            if i == last {
                let ino = if count {
                    self.inodes.child(&cur, key, entry.clone(), true)
                } else {
                    self.inodes.peek(&cur, key, &entry)
                };
                return Some((ino, entry));
            }
            let ino = self.inodes.peek(&cur, key, &entry);
            cur = Inode { ino, parent: cur.ino, entry, snap_root: cur.snap_root };
        }
        None
    }
}

impl ArcFs {
    /// Where `file` lies in its snapshot (the index of each directory on
    /// the way, from the snapshot's root), through the parents the kernel
    /// holds; `None` above the snapshots or where a parent is not known (a
    /// hardlink shown as the first file of its group).
    fn position(&self, file: &Inode) -> Option<Position> {
        let mut path = Vec::new();
        let mut cur = file.clone();
        for _ in 0..4096 {
            match &cur.entry {
                Entry::Node { index, .. } => path.push(*index),
                Entry::Snapshot(s) => {
                    path.reverse();
                    return Some(Position { root: s.tree, path });
                }
                _ => return None,
            }
            cur = self.inodes.get(cur.parent)?;
        }
        None
    }
}

impl ArcFs {
    /// A file of `file`'s directory is read from its start: the pusher
    /// writes the directory's small files the kernel has looked up into
    /// the page cache, so reading them needs no READ (push.rs).
    fn push_dir_of(&self, file: &Inode) {
        let Some(pusher) = &self.pusher else { return };
        // Once per directory in a row: every file's first read gets here.
        if self.last_pushed_dir.swap(file.parent, Ordering::Relaxed) == file.parent {
            return;
        }
        if let Some(dir) = self.inodes.get(file.parent).filter(|d| d.entry.is_immutable()) {
            pusher.send(DirPush { dir, reading: file.ino, work: self.vfs.work().start() });
        }
    }
}

/// What the caller of [`ArcFs::child_inode`] knows of an entry's hardlink
/// target.
enum Link<'a> {
    Unknown,
    Known(Option<&'a [u8]>),
}

impl ArcFs {
    /// The listing for a READDIR: the one OPENDIR made, or (without
    /// OPENDIR) the directory's current one.
    fn dir_handle(&self, dir: &Inode, fh: FileHandle) -> Result<Arc<DirHandle>, VfsError> {
        if let Some(d) = self.dirs.get(fh.0) {
            return Ok(d);
        }
        Ok(Arc::new(DirHandle { listing: self.vfs.read_dir(&dir.entry)?, parent: dir.parent }))
    }
}

impl fuser::Filesystem for ArcFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each wanted only if the kernel offers it:
        // - PARALLEL_DIROPS: lookups in one directory need not queue behind
        //   each other;
        // - POSIX_ACL: recorded ACLs are enforced along with the mode bits
        //   (default_permissions), not just shown;
        // - CACHE_SYMLINKS: link targets are read once per inode, not on
        //   every path walk through them (`ls -lR latest/` resolves
        //   `latest` for each file). Safe because a virtual link that comes
        //   to point elsewhere gets a new inode;
        // - AUTO_INVAL_DATA: the kernel re-checks a directory's mtime before
        //   reusing its cached listing (virtual directories change mtime
        //   exactly when their listing changes; see `opendir`).
        let offered = config.capabilities();
        for flag in [
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_POSIX_ACL,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_AUTO_INVAL_DATA,
        ] {
            if offered.contains(flag) {
                let _ = config.add_capabilities(flag);
            }
        }
        self.zero_message_opendir = offered.contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
            && config.capabilities().contains(InitFlags::FUSE_AUTO_INVAL_DATA);
        self.zero_message_open = offered.contains(InitFlags::FUSE_NO_OPEN_SUPPORT);
        // READDIRPLUS, on every listing (not AUTO, which lists a directory's
        // first batch with attributes for every walker, and the rest for
        // none, while tar and cp read a directory whole before they stat
        // it): attributes go only to tasks that stat what they list
        // (statters.rs), in replies written by hand (dirplus.rs) to the
        // /dev/fuse descriptor, which `mount` sets before the session
        // serves its first request (INIT is answered while it is made).
        if self.want_readdirplus && offered.contains(InitFlags::FUSE_DO_READDIRPLUS) {
            let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        }
        // Let the kernel read ahead as far as it allows (large, parallel
        // background reads of files), and keep more of them in flight.
        if let Err(max) = config.set_max_readahead(4 << 20) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.request(Op::Lookup);
        let p = match self.inode(parent) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let entry = match self.vfs.lookup(&p.entry, name.as_bytes()) {
            Ok(Some(e)) => e,
            // A name missing from a snapshot directory stays missing: an
            // entry with inode 0 is the kernel's negative entry, cached for
            // the TTL, so probes for it (`.htaccess`, `.rsync-filter`,
            // editor backups) are answered without a round trip. Views
            // above the snapshots gain names, so there ENOENT is not cached.
            Ok(None) if p.entry.is_immutable() => {
                return reply.entry(&IMMUTABLE_TTL, &negative_attr(), Generation(0));
            }
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(self.fail(parent.0, &e)),
        };
        let (ino, entry) = self.child_inode(&p, name.as_bytes(), entry, Link::Unknown, true);
        match self.vfs.attr(&entry) {
            Ok(a) => {
                // Not for the links above the snapshots (`latest`), which
                // every path into the mount passes.
                if a.kind != Kind::Dir && p.entry.is_immutable() {
                    self.statters.mark(req.pid());
                }
                reply.entry(&ttl(&entry), &file_attr(ino, &a), Generation(0))
            }
            Err(e) => {
                self.inodes.forget(ino, 1);
                reply.error(self.fail(ino, &e))
            }
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.count(Op::Forget);
        self.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.request(Op::Getattr);
        let i = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match self.vfs.attr(&i.entry) {
            Ok(a) => reply.attr(&ttl(&i.entry), &file_attr(ino.0, &a)),
            Err(e) => reply.error(self.fail(ino.0, &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.request(Op::Readlink);
        let i = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match self.vfs.readlink(&i.entry) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(self.fail(ino.0, &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.request(Op::Open);
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        // A file handle holds nothing a READ could not find from the inode
        // (`FilesByInode`), so when the kernel can do without OPEN and
        // RELEASE (answering ENOSYS once switches them off for the life of
        // the mount), every file a copy reads costs two round trips less.
        // The kernel then keeps each file's page cache across opens, as
        // FOPEN_KEEP_CACHE below asks. Writes never get here (the mount is
        // read-only: the kernel refuses them itself), and a file whose
        // chunks cannot be found fails at its first READ instead, with the
        // same EIO and report.
        if self.zero_message_open {
            return reply.error(Errno::ENOSYS);
        }
        let i = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match self.vfs.open(&i.entry) {
            // Content is immutable: the kernel may keep its page cache
            // across opens instead of dropping it on every open.
            Ok(f) => reply.opened(FileHandle(self.files.insert(f)), FopenFlags::FOPEN_KEEP_CACHE),
            Err(VfsError::NotAFile) => {
                let dir = matches!(self.vfs.attr(&i.entry), Ok(a) if a.kind == Kind::Dir);
                reply.error(if dir { Errno::EISDIR } else { Errno::EINVAL })
            }
            Err(e) => reply.error(self.fail(ino.0, &e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.request(Op::Read);
        self.statters.mark(req.pid());
        if offset == 0 {
            // A file read from its start: its small neighbours are likely
            // next (a copy of the directory, of the tree).
            if let Ok(i) = self.inode(ino) {
                self.vfs.readahead_at(&i.entry, || self.position(&i));
                self.push_dir_of(&i);
            }
        }
        let f = if fh.0 == 0 {
            // Opened without OPEN (see `open`).
            let i = match self.inode(ino) {
                Ok(i) => i,
                Err(e) => return reply.error(e),
            };
            match self.files_by_ino.get_or_open(ino.0, &i.entry, || self.vfs.open(&i.entry)) {
                Ok(f) => f,
                Err(e) => return reply.error(self.fail(ino.0, &e)),
            }
        } else {
            let Some(f) = self.files.get(fh.0) else { return reply.error(Errno::EBADF) };
            f
        };
        if size <= INLINE_READ_MAX && self.vfs.read_is_cached(&f, offset, size) {
            return match self.vfs.read_at(&f, offset, size) {
                Ok(buf) => reply.data(&buf),
                Err(e) => reply.error(self.fail(ino.0, &e)),
            };
        }
        self.count(Op::ReadQueued);
        let (vfs, report) = (self.vfs.clone(), self.report.clone());
        // Counted from now, not from when a worker takes it: a queued read
        // is work the CPUs are about to be needed for (see `spin.rs`).
        let work = self.vfs.work().start();
        self.readers.run(Box::new(move || {
            let _work = work;
            match vfs.read_at(&f, offset, size) {
                Ok(buf) => reply.data(&buf),
                Err(e) => reply.error(report.fail(ino.0, &e)),
            }
        }));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.request(Op::Release);
        self.files.remove(fh.0);
        reply.ok();
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        self.count(Op::Flush);
        // Nothing to flush on a read-only mount; ENOSYS once tells the
        // kernel so, and it stops sending FLUSH on every close.
        reply.error(Errno::ENOSYS);
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.count(Op::Fsync);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.request(Op::Opendir);
        // Directory handles hold nothing a READDIR could not look up
        // itself, so when the kernel can do without OPENDIR and RELEASEDIR
        // (answering ENOSYS once switches them off), every directory a
        // walker enters costs two round trips less. The kernel then caches
        // listings (FOPEN_CACHE_DIR is its default), reusing one only while
        // the directory's mtime is unchanged.
        if self.zero_message_opendir {
            return reply.error(Errno::ENOSYS);
        }
        let i = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match self.vfs.read_dir(&i.entry) {
            Ok(listing) => {
                // Snapshot directories never change, so the kernel may
                // cache their listings; the views are re-read every time.
                let flags = if i.entry.is_immutable() {
                    FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                let fh = self.dirs.insert(DirHandle { listing, parent: i.parent });
                reply.opened(FileHandle(fh), flags)
            }
            Err(e) => reply.error(self.fail(ino.0, &e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        self.request(Op::Readdir);
        let dir = match self.inode(ino) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let d = match self.dir_handle(&dir, fh) {
            Ok(d) => d,
            Err(e) => return reply.error(self.fail(ino.0, &e)),
        };
        // Offsets: 1 after ".", 2 after "..", then item i of the listing
        // ends at i + 3.
        if offset == 0 && reply.add(ino, 1, fuser::FileType::Directory, ".") {
            return reply.ok();
        }
        if offset <= 1 && reply.add(INodeNo(d.parent), 2, fuser::FileType::Directory, "..") {
            return reply.ok();
        }
        // A large directory is read a leaf at a time as the reply fills.
        let from = offset.saturating_sub(2) as usize;
        let listed = self.vfs.list_from(&d.listing, from, |item| {
            let (cino, _) = self.child_inode(&dir, item.name, item.entry, Link::Known(item.hardlink_target), false);
            reply.add(INodeNo(cino), item.pos as u64 + 3, file_type(item.kind), OsStr::from_bytes(item.name))
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail(ino.0, &e)),
        }
    }

    fn readdirplus(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectoryPlus) {
        self.request(Op::Readdirplus);
        let dir = match self.inode(ino) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let d = match self.dir_handle(&dir, fh) {
            Ok(d) => d,
            Err(e) => return reply.error(self.fail(ino.0, &e)),
        };
        let Some(dev) = self.dev.get() else { return reply.error(Errno::EIO) };
        // Views above the snapshots keep their names only (their lookups
        // decide what is cached, see `lookup`).
        let attrs = dir.entry.is_immutable() && self.statters.contains(req.pid());
        let mut out = PlusReply::new();
        // Offsets as in `readdir`. "." and ".." never carry attributes
        // (the kernel would not link them).
        if offset == 0 {
            out.push(ino.0, 1, fuser::FileType::Directory, b".", None);
        }
        if offset <= 1 {
            out.push(d.parent, 2, fuser::FileType::Directory, b"..", None);
        }
        // Inodes handed to the kernel with this reply, each one reference.
        let mut given: Vec<u64> = Vec::new();
        let mut grown = false;
        let from = offset.saturating_sub(2) as usize;
        let listed = self.vfs.list_from(&d.listing, from, |item| {
            if !out.fits(item.name) {
                if grown || !out.grow_to_request(&reply) || !out.fits(item.name) {
                    return true;
                }
                grown = true;
            }
            let (off, kind) = (item.pos as u64 + 3, file_type(item.kind));
            let link = Link::Known(item.hardlink_target);
            let (cino, entry) = self.child_inode(&dir, item.name, item.entry, link, attrs);
            if attrs {
                match self.vfs.attr(&entry) {
                    Ok(a) => {
                        let attr = file_attr(cino, &a);
                        out.push(cino, off, kind, item.name, Some(Attrs { attr: &attr, ttl: ttl(&entry) }));
                        given.push(cino);
                        return false;
                    }
                    // Left to its LOOKUP, which reports the failure.
                    Err(_) => self.inodes.forget(cino, 1),
                }
            }
            out.push(cino, off, kind, item.name, None);
            false
        });
        if let Err(e) = listed {
            for i in given {
                self.inodes.forget(i, 1);
            }
            return reply.error(self.fail(ino.0, &e));
        }
        if let Some(c) = &self.counts {
            c.add_n(Op::PlusAttrs, given.len() as u64);
        }
        if out.send(dev, req.unique().0, reply).is_err() {
            // The kernel never saw these references.
            for i in given {
                self.inodes.forget(i, 1);
            }
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.request(Op::Releasedir);
        self.dirs.remove(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.request(Op::Statfs);
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.request(Op::Getxattr);
        let i = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match self.vfs.xattr(&i.entry, name.as_bytes()) {
            Ok(Some(v)) => xattr_reply(reply, &v, size),
            Ok(None) => reply.error(Errno::ENODATA),
            Err(e) => reply.error(self.fail(ino.0, &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.request(Op::Listxattr);
        let i = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match self.vfs.xattr_names(&i.entry) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(self.fail(ino.0, &e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.request(Op::Access);
        // default_permissions has the kernel check modes itself; this only
        // answers writes.
        if mask.contains(AccessFlags::W_OK) {
            reply.error(Errno::EROFS)
        } else {
            reply.ok()
        }
    }

    // ---- everything that would change the file system ----

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.count(Op::Write);
        reply.error(Errno::EROFS)
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        self.count(Op::Write);
        reply.error(Errno::EROFS)
    }

    fn mkdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        self.count(Op::Write);
        reply.error(Errno::EROFS)
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        self.count(Op::Write);
        reply.error(Errno::EROFS)
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        self.count(Op::Write);
        reply.error(Errno::EROFS)
    }

    fn symlink(&self, _req: &Request, _parent: INodeNo, _link_name: &OsStr, _target: &Path, reply: ReplyEntry) {
        self.count(Op::Write);
        reply.error(Errno::EROFS)
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Write);
        reply.error(Errno::EROFS)
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        self.count(Op::Write);
        reply.error(Errno::EROFS)
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.count(Op::Write);
        reply.error(Errno::EROFS)
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        self.count(Op::Write);
        reply.error(Errno::EROFS)
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Write);
        reply.error(Errno::EROFS)
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        self.count(Op::Write);
        reply.error(Errno::EROFS)
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Write);
        reply.error(Errno::EROFS)
    }
}

/// The attributes of a negative entry: only the inode number (0) counts.
fn negative_attr() -> fuser::FileAttr {
    fuser::FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

/// Answers a getxattr/listxattr: the size when asked for it (size 0),
/// ERANGE when the caller's buffer is too small.
fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32)
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(value)
    }
}
