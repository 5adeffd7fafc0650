//! The request pattern of commands on a remote repository
//! (format-spec/v2/remote.md section 4), counted by `CountingStorage` on
//! an in-memory store that the engine treats as remote (with a local
//! cache): what a no-change backup, a prune and a new host's first
//! listing ask of the storage, and how that grows with the repository.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_engine::ops::backup::{backup, BackupOptions};
use arc_engine::ops::forget::{forget, ForgetOptions};
use arc_engine::ops::prune::{prune, PruneOptions};
use arc_engine::progress::NoProgress;
use arc_engine::repo::InitOptions;
use arc_engine::storage::{CountingStorage, FileKind, MemoryStorage, MemoryStorageOptions, Op, RequestCounts, Storage};
use arc_engine::Repository;

struct Remote {
    tmp: tempfile::TempDir,
    storage: Arc<CountingStorage>,
}

impl Remote {
    fn new() -> Remote {
        let mem: Arc<dyn Storage> = Arc::new(MemoryStorage::new(MemoryStorageOptions::default()));
        let tmp = tempfile::tempdir().unwrap();
        let storage = Arc::new(CountingStorage::new(mem));
        Repository::init_cached(storage.clone(), &InitOptions::default(), &tmp.path().join("cache")).unwrap();
        Remote { tmp, storage }
    }

    /// Opens the repository as a new process of this host would (its
    /// cache kept) or as a new host (`cache` another directory).
    fn open(&self, cache: &str) -> Repository {
        Repository::open_cached_with(self.storage.clone(), &self.tmp.path().join(cache), None).unwrap()
    }
}

/// `files` small files in directories of 50.
fn tree(root: &Path, files: usize) -> PathBuf {
    let src = root.join(format!("src-{files}"));
    for i in 0..files {
        let dir = src.join(format!("d{:04}", i / 50));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("m{i}")), format!("message {i}\n").repeat(20 + i % 40)).unwrap();
    }
    src
}

/// Bytes of every object of `kind` in the repository.
fn stored(storage: &CountingStorage, kind: FileKind) -> u64 {
    storage.list(kind).unwrap().iter().map(|(_, len)| len).sum()
}

/// A repository of `files` files backed up once by this host, then
/// backed up again unchanged by a new process of this host: what the
/// second backup asked of the storage.
fn no_change_backup(files: usize) -> RequestCounts {
    let r = Remote::new();
    let src = tree(r.tmp.path(), files);
    backup(&r.open("cache"), BackupOptions { paths: vec![src.clone()], ..Default::default() }, &NoProgress).unwrap();
    let repo = r.open("cache");
    r.storage.take();
    backup(&repo, BackupOptions { paths: vec![src], ..Default::default() }, &NoProgress).unwrap();
    r.storage.take()
}

/// remote.md section 4, `backup`: a no-change backup makes the same
/// requests for 500 files as for 4,000 (O(new packs + index files), never
/// O(files)): no pack is written, and no tree is fetched, because the
/// parent's trees are in the local cache since the backup that wrote them.
#[test]
fn a_no_change_backup_asks_the_same_of_the_storage_whatever_the_file_count() {
    let small = no_change_backup(500);
    let large = no_change_backup(4000);
    eprintln!("no-change backup of 500 files: {small}\nof 4,000 files: {large}");
    assert_eq!(small.requests, large.requests, "requests grow with the file count");
    assert_eq!(large.get(Op::Put, FileKind::Pack), 0, "{large}");
    assert_eq!(large.get(Op::List, FileKind::Pack), 0, "a backup listed every pack: {large}");
    assert_eq!(large.get(Op::Put, FileKind::Snapshot), 1, "{large}");
    assert_eq!(large.bytes_down, 0, "the parent's trees were fetched again: {large}");
    assert!(large.total() <= 20, "{large}");
}

/// `snapshots` backups of a small tree of which one file changes, then
/// half of them forgotten; what a two-phase prune's first run (mark) and
/// an instant prune asked of the storage, with the number of index files
/// and of objects the instant prune deleted.
fn prune_requests(snapshots: usize) -> (RequestCounts, RequestCounts, u64, u64) {
    let r = Remote::new();
    let src = tree(r.tmp.path(), 100);
    let repo = r.open("cache");
    for i in 0..snapshots {
        std::fs::write(src.join("changing"), format!("version {i}\n").repeat(5000 + i)).unwrap();
        let time = chrono::DateTime::from_timestamp(1_700_000_000 + i as i64 * 86_400, 0);
        backup(&repo, BackupOptions { paths: vec![src.clone()], time, ..Default::default() }, &NoProgress).unwrap();
    }
    drop(repo);
    let repo = r.open("cache");
    let mut opts = ForgetOptions::default();
    opts.policy.last = (snapshots / 2) as u32;
    forget(&repo, &opts).unwrap();
    let index_files = r.storage.list(FileKind::Index).unwrap().len() as u64;
    r.storage.take();
    prune(&repo, &PruneOptions::default(), &NoProgress).unwrap();
    let mark = r.storage.take();
    let report = prune(&repo, &PruneOptions { instant: true, ..Default::default() }, &NoProgress).unwrap();
    let instant = r.storage.take();
    assert!(report.packs_deleted > 0, "{report:?}");
    (mark, instant, index_files, report.packs_deleted + report.index_files_deleted)
}

/// The listings of a request pattern: how often each prefix is listed.
fn listings(c: &RequestCounts) -> Vec<(FileKind, u64)> {
    c.requests.iter().filter(|((op, _), _)| *op == Op::List).filter_map(|((_, k), n)| k.map(|k| (k, *n))).collect()
}

/// remote.md section 4, `prune`: the listings a prune makes do not grow
/// with the number of snapshots; a warm cache means no snapshot or tree is
/// fetched; what grows is the objects it reads (index files, packs to
/// rewrite) and deletes. Pins today's pattern, so a change that adds
/// per-snapshot or per-pack requests fails here.
#[test]
fn prune_requests_grow_with_objects_read_and_deleted_not_with_snapshots() {
    let (mark10, instant10, _, _) = prune_requests(10);
    let (mark40, instant40, index_files, deleted) = prune_requests(40);
    eprintln!("prune (mark) of 40 snapshots: {mark40}\ninstant prune: {instant40}");
    assert_eq!(listings(&mark10), listings(&mark40));
    assert_eq!(listings(&instant10), listings(&instant40));
    for c in [&mark40, &instant40] {
        assert_eq!(c.get(Op::Get, FileKind::Snapshot), 0, "snapshots come from the cache: {c}");
        assert_eq!(c.get(Op::GetRange, FileKind::Pack), 0, "trees come from the cache: {c}");
        assert!(c.get(Op::Get, FileKind::Index) <= 2 * index_files, "index files read more than twice: {c}");
        assert!(c.op(Op::Head) <= 2, "{c}");
    }
    assert_eq!(mark40.op(Op::Delete) + mark40.op(Op::DeleteMany), 1, "a mark run deletes only its session: {mark40}");
    // Deletes: one per index file and snapshot-less object, packs in batches.
    assert!(
        instant40.get(Op::Delete, FileKind::Index) + instant40.get(Op::Delete, FileKind::Pack) <= deleted,
        "{instant40}"
    );
    assert!(instant40.get(Op::DeleteMany, FileKind::Pack) <= 1 + deleted / 1000, "{instant40}");
}

/// remote.md section 2a: a new host (empty cache) can list snapshots and
/// look up blobs after downloading the config, the key files, the index
/// files and the snapshot files, each once, and nothing else.
#[test]
fn a_new_host_downloads_the_index_and_snapshot_files_once() {
    let r = Remote::new();
    let src = tree(r.tmp.path(), 600);
    let repo = r.open("cache");
    for i in 0..5 {
        std::fs::write(src.join("changing"), format!("version {i}\n").repeat(2000)).unwrap();
        backup(&repo, BackupOptions { paths: vec![src.clone()], ..Default::default() }, &NoProgress).unwrap();
    }
    drop(repo);
    r.storage.take();
    let fresh = r.open("new-host-cache");
    assert_eq!(fresh.snapshots().unwrap().len(), 5);
    fresh.index().unwrap();
    let c = r.storage.take();
    let expected: u64 = [FileKind::Config, FileKind::Key, FileKind::Index, FileKind::Snapshot]
        .iter()
        .map(|k| stored(&r.storage, *k))
        .sum();
    eprintln!("new host: {c}; config + keys + index + snapshots = {expected} bytes");
    assert!(c.bytes_down <= expected, "a new host downloaded {} bytes, more than {expected}: {c}", c.bytes_down);
    assert_eq!(c.get(Op::GetRange, FileKind::Pack) + c.get(Op::Get, FileKind::Pack), 0, "{c}");
    // And a second open of that host fetches none of it again.
    drop(fresh);
    let again = r.open("new-host-cache");
    again.snapshots().unwrap();
    again.index().unwrap();
    let c = r.storage.take();
    assert_eq!(c.get(Op::Get, FileKind::Index) + c.get(Op::Get, FileKind::Snapshot), 0, "{c}");
}

/// cache.rs `writers/`: a backup of this host that was killed after storing
/// packs and before listing them leaves its writer file; the next backup
/// sees that the process is gone, lists `data/` once and reuses those
/// packs instead of storing their content again. Backups that follow list
/// no packs.
#[test]
fn packs_of_a_killed_backup_are_found_by_one_scan_and_reused() {
    let r = Remote::new();
    let a = tree(r.tmp.path(), 200);
    let repo = r.open("cache");
    backup(&repo, BackupOptions { paths: vec![a.clone()], ..Default::default() }, &NoProgress).unwrap();
    let cache_dir = r.tmp.path().join("cache").join(repo.config().id.to_hex());
    drop(repo);
    // Packs nothing lists and this host's database does not know: a
    // backup whose index files and snapshot are then taken away.
    let c = r.tmp.path().join("c");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("big"),
        (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<u8>>(),
    )
    .unwrap();
    let before: Vec<String> = r.storage.list(FileKind::Index).unwrap().into_iter().map(|(n, _)| n).collect();
    let orphaned =
        backup(&r.open("elsewhere"), BackupOptions { paths: vec![c.clone()], ..Default::default() }, &NoProgress)
            .unwrap();
    for (name, _) in r.storage.list(FileKind::Index).unwrap() {
        if !before.contains(&name) {
            r.storage.delete(FileKind::Index, &name).unwrap();
        }
    }
    r.storage.delete(FileKind::Snapshot, &orphaned.snapshot_id.to_hex()).unwrap();

    // The sign of a killed backup of this host: the writer file of a
    // process that is gone.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    std::fs::create_dir_all(cache_dir.join("writers")).unwrap();
    std::fs::write(cache_dir.join("writers").join(format!("{pid}-0")), b"").unwrap();
    let repo = r.open("cache");
    r.storage.take();
    let again = backup(&repo, BackupOptions { paths: vec![c.clone()], ..Default::default() }, &NoProgress).unwrap();
    let counts = r.storage.take();
    assert_eq!(counts.get(Op::List, FileKind::Pack), 1, "{counts}");
    let added = again.snapshot.summary.bytes_added;
    assert!(added < 100_000, "the killed backup's packs were not reused: {added} bytes added; {counts}");
    assert!(!cache_dir.join("writers").join(format!("{pid}-0")).exists(), "the dead writer's file stays");
    backup(&repo, BackupOptions { paths: vec![a], ..Default::default() }, &NoProgress).unwrap();
    let counts = r.storage.take();
    assert_eq!(counts.get(Op::List, FileKind::Pack), 0, "{counts}");
}

/// Every ranged read takes 200 ms, as a frame fetched over a slow link.
struct SlowReads(Arc<CountingStorage>);

impl Storage for SlowReads {
    fn location(&self) -> String {
        self.0.location()
    }
    fn local_path(&self) -> Option<&Path> {
        None
    }
    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> arc_engine::Result<()> {
        self.0.put(kind, name, data)
    }
    fn get(&self, kind: FileKind, name: &str) -> arc_engine::Result<Vec<u8>> {
        self.0.get(kind, name)
    }
    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> arc_engine::Result<Vec<u8>> {
        std::thread::sleep(std::time::Duration::from_millis(200));
        self.0.get_range(kind, name, offset, len)
    }
    fn size(&self, kind: FileKind, name: &str) -> arc_engine::Result<u64> {
        self.0.size(kind, name)
    }
    fn exists(&self, kind: FileKind, name: &str) -> arc_engine::Result<bool> {
        self.0.exists(kind, name)
    }
    fn list(&self, kind: FileKind) -> arc_engine::Result<Vec<(String, u64)>> {
        self.0.list(kind)
    }
    fn delete(&self, kind: FileKind, name: &str) -> arc_engine::Result<()> {
        self.0.delete(kind, name)
    }
    fn stat(&self, kind: FileKind, name: &str) -> arc_engine::Result<arc_engine::storage::FileStat> {
        self.0.stat(kind, name)
    }
    fn list_stat(&self, kind: FileKind) -> arc_engine::Result<Vec<(String, arc_engine::storage::FileStat)>> {
        self.0.list_stat(kind)
    }
}

/// reader.rs: readers that want blobs of one frame at the same moment (the
/// mount's readahead and the reads it runs ahead of, restore's workers)
/// share one fetch of the frame instead of each fetching it.
#[test]
fn readers_of_one_frame_at_once_share_one_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let mem: Arc<dyn Storage> = Arc::new(MemoryStorage::new(MemoryStorageOptions::default()));
    let counting = Arc::new(CountingStorage::new(mem));
    let storage = Arc::new(SlowReads(counting.clone()));
    let repo = Arc::new(Repository::init_cached(storage, &InitOptions::default(), &tmp.path().join("cache")).unwrap());
    let src = tree(tmp.path(), 8);
    let snap = backup(&repo, BackupOptions { paths: vec![src.clone()], ..Default::default() }, &NoProgress).unwrap();
    // The chunks of the eight small files: one frame.
    let mut tree_id = snap.snapshot.tree;
    for c in src.join("d0000").components().filter_map(|c| c.as_os_str().to_str().filter(|s| *s != "/")) {
        tree_id = repo
            .load_tree(&tree_id)
            .unwrap()
            .nodes
            .into_iter()
            .find(|n| n.name == c.as_bytes())
            .unwrap()
            .subtree
            .unwrap();
    }
    let chunks: Vec<arc_engine::Id> =
        repo.load_tree(&tree_id).unwrap().nodes.iter().flat_map(|n| n.chunks.clone()).collect();
    assert_eq!(chunks.len(), 8);
    let frames: std::collections::HashSet<_> = chunks
        .iter()
        .map(|id| {
            let l = repo.lookup_blob(id).unwrap().unwrap();
            (l.pack, l.frame.offset)
        })
        .collect();
    counting.take();
    std::thread::scope(|s| {
        for id in &chunks {
            let repo = repo.clone();
            s.spawn(move || repo.blob_reader().unwrap().read(&repo, id).unwrap());
        }
    });
    let c = counting.take();
    assert_eq!(c.get(Op::GetRange, FileKind::Pack), frames.len() as u64, "one fetch per frame: {c}");
}
