//! The local cache of a repository on storage that is not a local disk
//! (engine/src/cache.rs): a second listing of snapshots and a second read
//! of a tree fetch nothing again; a damaged or wrong cache file is
//! detected, ignored and replaced, never believed; entries the repository
//! no longer lists are dropped; `check` reads around the cache.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_engine::ops::backup::{backup, BackupOptions};
use arc_engine::ops::forget::{forget, ForgetOptions};
use arc_engine::progress::NoProgress;
use arc_engine::repo::InitOptions;
use arc_engine::storage::{FileKind, FileStat, MemoryStorage, MemoryStorageOptions, Storage};
use arc_engine::{Id, Repository, Result};

/// Memory storage that counts whole-file reads of snapshots and ranged
/// reads of packs: the requests the cache is there to save.
struct Counting {
    inner: MemoryStorage,
    snapshot_gets: AtomicU64,
    pack_ranges: AtomicU64,
}

impl Storage for Counting {
    fn location(&self) -> String {
        "counting:".into()
    }
    fn local_path(&self) -> Option<&Path> {
        None
    }
    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.inner.put(kind, name, data)
    }
    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        if kind == FileKind::Snapshot {
            self.snapshot_gets.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.get(kind, name)
    }
    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if kind == FileKind::Pack {
            self.pack_ranges.fetch_add(1, Ordering::Relaxed);
        }
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
    fn stat(&self, kind: FileKind, name: &str) -> Result<FileStat> {
        self.inner.stat(kind, name)
    }
    fn list_stat(&self, kind: FileKind) -> Result<Vec<(String, FileStat)>> {
        self.inner.list_stat(kind)
    }
}

impl Counting {
    fn take(&self) -> (u64, u64) {
        (self.snapshot_gets.swap(0, Ordering::Relaxed), self.pack_ranges.swap(0, Ordering::Relaxed))
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    storage: Arc<Counting>,
    cache_root: std::path::PathBuf,
    snapshots: Vec<Id>,
}

impl Setup {
    /// A repository with three snapshots of a small tree.
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let storage = Arc::new(Counting {
            inner: MemoryStorage::new(MemoryStorageOptions::default()),
            snapshot_gets: AtomicU64::new(0),
            pack_ranges: AtomicU64::new(0),
        });
        let cache_root = tmp.path().join("cache");
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        let repo = Repository::init_cached(storage.clone(), &InitOptions::default(), &cache_root).unwrap();
        let mut snapshots = Vec::new();
        for i in 0..3 {
            std::fs::write(src.join("sub/file"), format!("version {i}")).unwrap();
            let opts = BackupOptions { paths: vec![src.clone()], ..Default::default() };
            snapshots.push(backup(&repo, opts, &NoProgress).unwrap().snapshot_id);
        }
        drop(repo);
        storage.take();
        Setup { _tmp: tmp, storage, cache_root, snapshots }
    }

    fn open(&self) -> Repository {
        Repository::open_cached_with(self.storage.clone(), &self.cache_root, None).unwrap()
    }
}

/// Every tree of a snapshot, loaded: the names under its root.
fn walk(repo: &Repository, tree: &Id, out: &mut Vec<String>) {
    for node in repo.load_tree(tree).unwrap().nodes {
        out.push(String::from_utf8_lossy(&node.name).into_owned());
        if let Some(sub) = node.subtree {
            walk(repo, &sub, out);
        }
    }
}

#[test]
fn second_listing_and_tree_walk_fetch_nothing_again() {
    let s = Setup::new();
    // The backups cached their own snapshot files.
    let repo = s.open();
    let listed: Vec<Id> = repo.snapshots().unwrap().iter().map(|s| s.id).collect();
    assert_eq!(listed.len(), 3);
    assert_eq!(s.storage.take().0, 0, "snapshot files written by this host come from its cache");
    let tree = repo.snapshots().unwrap()[2].file.tree;
    // So did they with the trees they wrote.
    let mut names = Vec::new();
    walk(&repo, &tree, &mut names);
    assert!(names.contains(&"file".to_string()), "{names:?}");
    assert_eq!(s.storage.take().1, 0, "trees written by this host come from its cache");
    let trees = s.cache_root.join(repo.config().id.to_hex()).join("trees");
    drop(repo);
    // Trees this host did not write (here: dropped from the cache) are
    // fetched once.
    std::fs::remove_dir_all(&trees).unwrap();
    let repo = s.open();
    let mut first = Vec::new();
    walk(&repo, &tree, &mut first);
    assert_eq!(first, names);
    let (_, first_ranges) = s.storage.take();
    assert!(first_ranges > 0);
    drop(repo);

    let repo = s.open();
    assert_eq!(repo.snapshots().unwrap().len(), 3);
    let mut again = Vec::new();
    walk(&repo, &tree, &mut again);
    assert_eq!(again, names);
    assert_eq!(s.storage.take(), (0, 0), "the second listing and walk come from the cache");
}

#[test]
fn damaged_or_wrong_cache_files_are_ignored_and_replaced() {
    let s = Setup::new();
    let repo = s.open();
    let snaps = repo.snapshots().unwrap();
    let tree = snaps[2].file.tree;
    let mut names = Vec::new();
    walk(&repo, &tree, &mut names);
    let dir = repo.cache().unwrap().dir().to_path_buf();
    drop(repo);
    s.storage.take();

    // One snapshot file truncated, another replaced by a third's (valid)
    // bytes; every cached tree frame has a flipped byte; the index
    // database is garbage.
    let sdir = dir.join("snapshots");
    let (a, b, c) = (s.snapshots[0].to_hex(), s.snapshots[1].to_hex(), s.snapshots[2].to_hex());
    std::fs::write(sdir.join(&a), b"trunc").unwrap();
    std::fs::copy(sdir.join(&c), sdir.join(&b)).unwrap();
    let mut frames = 0;
    for shard in std::fs::read_dir(dir.join("trees")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            let mut data = std::fs::read(&path).unwrap();
            let mid = data.len() / 2;
            data[mid] ^= 0x40;
            std::fs::write(&path, data).unwrap();
            frames += 1;
        }
    }
    assert!(frames > 0);
    for f in std::fs::read_dir(&dir).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_some_and(|e| e == "redb") {
            std::fs::write(&path, b"not a database").unwrap();
        }
    }

    let repo = s.open();
    let again = repo.snapshots().unwrap();
    assert_eq!(
        again.iter().map(|s| (s.id, s.file.tree)).collect::<Vec<_>>(),
        snaps.iter().map(|s| (s.id, s.file.tree)).collect::<Vec<_>>()
    );
    assert_eq!(s.storage.take().0, 2, "the two bad snapshot files were fetched again");
    let mut walked = Vec::new();
    walk(&repo, &tree, &mut walked);
    assert_eq!(walked, names, "trees from damaged frames are never believed");
    assert!(s.storage.take().1 > 0);
    // Replaced by the right bytes.
    for id in &s.snapshots[..2] {
        assert_eq!(Id::hash(&std::fs::read(sdir.join(id.to_hex())).unwrap()), *id);
    }
    drop(repo);
    let repo = s.open();
    repo.snapshots().unwrap();
    let mut third = Vec::new();
    walk(&repo, &tree, &mut third);
    assert_eq!(s.storage.take(), (0, 0), "the rebuilt cache serves the next command");
}

#[test]
fn forgotten_snapshots_leave_the_cache_and_check_reads_the_repository() {
    let s = Setup::new();
    let repo = s.open();
    repo.snapshots().unwrap();
    let cache = repo.cache().unwrap();
    assert_eq!(cache.cached_snapshots().len(), 3);
    // Forgotten through another host's view (no cache of its own).
    let other = Repository::open(s.storage.clone(), Some(s._tmp.path().join("other.redb"))).unwrap();
    forget(&other, &ForgetOptions { ids: vec![s.snapshots[0]], ..Default::default() }).unwrap();
    assert_eq!(repo.snapshots().unwrap().len(), 2);
    let mut left = s.snapshots[1..].to_vec();
    left.sort();
    assert_eq!(repo.cache().unwrap().cached_snapshots(), left, "a snapshot no longer listed is dropped");
    drop(repo);

    // check must see the stored bytes: with the cache bypassed, every
    // snapshot file is fetched.
    let mut repo = s.open();
    repo.bypass_cache();
    s.storage.take();
    assert_eq!(repo.snapshots().unwrap().len(), 2);
    assert_eq!(s.storage.take().0, 2);
}

/// A listing that lags behind puts (engine/src/storage/faulty.rs) hides
/// the index files a backup just wrote. Refreshing the index database from
/// such a listing must not drop their packs: the backup's commit check
/// refreshes it whenever a prune marked something meanwhile, and then
/// took the backup's own new blobs for pruned ones (PrunedMeanwhile).
#[test]
fn a_lagging_listing_does_not_drop_index_files_just_written() {
    use arc_engine::storage::{Faults, FaultyStorage};
    let tmp = tempfile::tempdir().unwrap();
    let mem: Arc<dyn Storage> = Arc::new(MemoryStorage::new(MemoryStorageOptions::default()));
    let faulty = Arc::new(FaultyStorage::new(mem, Faults::default()));
    let storage: Arc<dyn Storage> = faulty.clone();
    let repo = Repository::init_cached(storage, &InitOptions::default(), &tmp.path().join("cache")).unwrap();
    faulty.set_faults(Faults { list_lag: std::time::Duration::from_secs(60), ..Default::default() });
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"written while the listing lags").unwrap();
    let snap = backup(&repo, BackupOptions { paths: vec![src], ..Default::default() }, &NoProgress).unwrap();
    assert!(faulty.list(FileKind::Index).unwrap().is_empty(), "the listing hides the new index file");
    repo.refresh_index().unwrap();
    let tree = repo.load_snapshot(&snap.snapshot_id).unwrap().file.tree;
    assert!(repo.lookup_blob(&tree).unwrap().is_some(), "the new index file's packs were dropped from the database");
    repo.load_tree(&tree).unwrap();
}

/// Every process of a host works on the one index cache of a repository.
/// A prune that deletes packs must never leave it without the rows of
/// what stays: a backup committing meanwhile refreshes the cache and looks
/// up every tree it reaches (its commit check), and when the prune emptied
/// the cache to rebuild it, such a backup found no row for a tree it had
/// just deduplicated and stopped ("a concurrent prune deleted tree ...").
/// Here a second handle on the same cache does what the commit check does,
/// over and over, while instant prunes delete packs and rewrite the index
/// files listing them; every lookup of a kept blob must succeed.
#[test]
fn a_prune_never_leaves_the_shared_index_cache_without_what_stays() {
    use arc_engine::ops::prune::{prune, PruneOptions};
    use std::sync::atomic::AtomicBool;
    let tmp = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new(MemoryStorageOptions::default()));
    let cache = tmp.path().join("cache");
    let repo = Repository::init_cached(storage.clone(), &InitOptions::default(), &cache).unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("kept")).unwrap();
    for i in 0..20u64 {
        std::fs::write(src.join(format!("kept/k{i}")), format!("kept {i}\n").repeat(100)).unwrap();
    }
    let rounds = 4u64;
    let per_round = 30u64;
    let mut kept_blobs: Vec<Id> = Vec::new();
    let stop = AtomicBool::new(false);
    let lookups = AtomicU64::new(0);
    std::thread::scope(|scope| {
        // The other process: refresh, then look every kept blob up.
        let checker = scope.spawn(|| -> std::result::Result<(), String> {
            let other = Repository::open_cached_with(storage.clone(), &cache, None).unwrap();
            while !stop.load(Ordering::SeqCst) {
                let wanted: Vec<Id> = KEPT.lock().unwrap().clone();
                other.refresh_index().map_err(|e| e.to_string())?;
                // A read transaction of this moment, as the commit check's
                // retry of a miss opens one.
                let now = other.index().and_then(|i| i.reader()).map_err(|e| e.to_string())?;
                for id in &wanted {
                    if now.lookup(id).map_err(|e| e.to_string())?.is_none() {
                        return Err(format!("kept blob {id} has no row in the shared index cache"));
                    }
                    lookups.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        });
        for round in 0..rounds {
            // Many small backups, each with packs and an index file of its
            // own, then all but the last forgotten: the prune deletes their
            // packs and the index files that list them.
            for i in 0..per_round {
                std::fs::write(src.join("changing"), format!("round {round} backup {i}\n").repeat(200)).unwrap();
                let time = chrono::DateTime::from_timestamp(1_700_000_000 + (round * per_round + i) as i64 * 60, 0);
                backup(&repo, BackupOptions { paths: vec![src.clone()], time, ..Default::default() }, &NoProgress)
                    .unwrap();
            }
            let mut opts = ForgetOptions::default();
            opts.policy.last = 1;
            forget(&repo, &opts).unwrap();
            if kept_blobs.is_empty() {
                let snap = repo.snapshots().unwrap().pop().unwrap();
                kept_blobs = reachable(&repo, &snap.file.tree);
                // The root and the directories above `kept` change with
                // every backup; the files under it and their trees do not.
                *KEPT.lock().unwrap() = kept_blobs.clone();
            }
            let report = prune(&repo, &PruneOptions { instant: true, ..Default::default() }, &NoProgress).unwrap();
            assert!(report.packs_deleted > 0 && report.index_files_deleted > 0, "{report:?}");
        }
        stop.store(true, Ordering::SeqCst);
        checker.join().unwrap().unwrap();
    });
    assert!(lookups.load(Ordering::Relaxed) > 0, "the other handle never looked anything up");
}

/// The kept blobs the checker thread looks up (set once the first round
/// has a snapshot to take them from).
static KEPT: std::sync::Mutex<Vec<Id>> = std::sync::Mutex::new(Vec::new());

/// Blob ids reachable from `tree` under its `kept` directory: its tree and
/// its files' chunks.
fn reachable(repo: &Repository, tree: &Id) -> Vec<Id> {
    fn under(repo: &Repository, tree: &Id, inside: bool, out: &mut Vec<Id>) {
        let t = repo.load_tree(tree).unwrap();
        if inside {
            out.push(*tree);
        }
        for node in &t.nodes {
            let here = inside || node.name == b"kept";
            if here {
                out.extend(node.chunks.iter().copied());
            }
            if let Some(sub) = &node.subtree {
                under(repo, sub, here, out);
            }
        }
    }
    let mut out = Vec::new();
    under(repo, tree, false, &mut out);
    out
}
