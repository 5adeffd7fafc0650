//! The v2 commit and prune protocol under concurrency and faults
//! (format-spec/v2/protocol.md), on a local directory and on the in-memory
//! backend with injected delays: backups of overlapping trees and prunes
//! run at the same time, repeatedly, and afterwards every snapshot restores
//! byte for byte and `check --read-data` passes. Each test counts the
//! rounds in which a backup and a prune really ran at the same time and
//! requires most of them to, so that a protocol in which one side always
//! waits for or refuses the other cannot pass.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use arc_engine::format::config::{ChunkerParams, ProtocolSettings};
use arc_engine::ops::backup::{backup, BackupOptions, BackupResult, StreamSource};
use arc_engine::ops::check::{check, CheckOptions};
use arc_engine::ops::forget::{forget, ForgetOptions};
use arc_engine::ops::prune::{prune, PruneOptions, PruneReport};
use arc_engine::ops::restore::{restore, RestoreOptions};
use arc_engine::progress::NoProgress;
use arc_engine::repo::InitOptions;
use arc_engine::storage::{Faults, FaultyStorage, FileKind, LocalDir, MemoryStorage, MemoryStorageOptions, Storage};
use arc_engine::{Error, Id, Repository, Snapshot};

mod common;
use common::pseudo_random;

const HOSTS: usize = 4;
const PRUNES: usize = 2;
const ROUNDS: usize = 8;
const GRACE_SECS: u64 = 2;

fn init_options() -> InitOptions {
    InitOptions {
        // Small chunks, so that trees of a few hundred KiB share many.
        file_chunker: ChunkerParams::new(8 * 1024, 32 * 1024, 128 * 1024).unwrap(),
        stream_chunker: ChunkerParams::new(8 * 1024, 32 * 1024, 128 * 1024).unwrap(),
        pack_size: 1024 * 1024,
        frame_size: 64 * 1024,
        protocol: Some(ProtocolSettings::with_grace(GRACE_SECS)),
        ..Default::default()
    }
}

/// One host's tree in one round: a file every host and two rounds share, a
/// file all rounds share, and one of its own.
fn make_tree(dir: &Path, round: usize, host: usize) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("shared-now"), pseudo_random(300 * 1024, 1 + (round / 2) as u64)).unwrap();
    std::fs::write(dir.join("sub/shared-always"), pseudo_random(200 * 1024, 99)).unwrap();
    std::fs::write(dir.join("own"), pseudo_random(250 * 1024, 1000 + (round * HOSTS + host) as u64)).unwrap();
}

/// How to reach the repository: each operation opens its own
/// `Repository` (its own index database), as separate processes would.
struct Repo {
    storage: Arc<dyn Storage>,
    caches: PathBuf,
}

impl Repo {
    /// A new repository on `storage`, the index databases of its users in
    /// `tmp/caches`.
    fn create(storage: Arc<dyn Storage>, tmp: &Path) -> Repo {
        let caches = tmp.join("caches");
        std::fs::create_dir_all(&caches).unwrap();
        Repository::init_with_index(storage.clone(), &init_options(), Some(caches.join("init.redb"))).unwrap();
        Repo { storage, caches }
    }

    fn open(&self, who: &str) -> Repository {
        Repository::open(self.storage.clone(), Some(self.caches.join(format!("{who}.redb")))).unwrap()
    }

    /// A backup of `src` by `who`.
    fn backup(&self, who: &str, src: &Path) -> Result<BackupResult, Error> {
        backup(&self.open(who), BackupOptions { paths: vec![src.to_path_buf()], ..Default::default() }, &NoProgress)
    }

    /// A backup of `src` plus a stream `stream.bin` that yields nothing
    /// until `gate` opens (then `data`), in a thread: a backup that stays
    /// open for as long as a test needs.
    fn gated_backup(
        &self,
        who: &str,
        src: &Path,
        data: Vec<u8>,
        gate: std::sync::mpsc::Receiver<()>,
    ) -> std::thread::JoinHandle<Result<BackupResult, Error>> {
        let r = self.open(who);
        let reader = GatedReader { gate: Some(gate), data: std::io::Cursor::new(data) };
        let opts = BackupOptions {
            paths: vec![src.to_path_buf()],
            streams: vec![StreamSource {
                name: "stream.bin".into(),
                reader: Box::new(reader),
                allow_empty: false,
                stop: None,
            }],
            ..Default::default()
        };
        std::thread::spawn(move || backup(&r, opts, &NoProgress))
    }
}

fn in_memory() -> Arc<MemoryStorage> {
    Arc::new(MemoryStorage::new(MemoryStorageOptions::default()))
}

fn overlaps(a: (Instant, Instant), b: (Instant, Instant)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Runs the rounds; returns the expected content of each snapshot (its
/// source directory) and the prune reports.
/// `tolerate_aborts`: a backup may fail cleanly because a prune removed
/// what it deduplicated against (PrunedMeanwhile: no snapshot, nothing
/// damaged), as it can when the store's listings lag; such a round still
/// counts and the backup is not expected to restore.
fn backups_and_prunes_at_once(
    repo: &Repo,
    work: &Path,
    tolerate_aborts: bool,
) -> (HashMap<Id, PathBuf>, Vec<PruneReport>) {
    let mut expected: HashMap<Id, PathBuf> = HashMap::new();
    let mut reports = Vec::new();
    let mut overlapping_rounds = 0;
    for round in 0..ROUNDS {
        // Garbage for the prunes: keep only the newest snapshot of each host.
        {
            let r = repo.open("main");
            let snaps = r.snapshots().unwrap();
            let mut newest: HashMap<String, Id> = HashMap::new();
            for s in &snaps {
                newest.insert(s.file.host.clone(), s.id);
            }
            let ids: Vec<Id> = snaps.iter().map(|s| s.id).filter(|id| !newest.values().any(|n| n == id)).collect();
            if !ids.is_empty() {
                forget(&r, &ForgetOptions { ids: ids.clone(), ..Default::default() }).unwrap();
                for id in ids {
                    expected.remove(&id);
                }
            }
        }
        let dirs: Vec<PathBuf> = (0..HOSTS)
            .map(|h| {
                let d = work.join(format!("r{round}")).join(format!("h{h}"));
                make_tree(&d, round, h);
                d
            })
            .collect();
        let barrier = Barrier::new(HOSTS + PRUNES);
        let (backups, prunes) = std::thread::scope(|scope| {
            let backups: Vec<_> = dirs
                .iter()
                .enumerate()
                .map(|(h, d)| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        let r = repo.open(&format!("backup{h}"));
                        barrier.wait();
                        let start = Instant::now();
                        let opts = BackupOptions {
                            paths: vec![d.clone()],
                            host: Some(format!("host{h}")),
                            ..Default::default()
                        };
                        let res = backup(&r, opts, &NoProgress);
                        (res, (start, Instant::now()))
                    })
                })
                .collect();
            let prunes: Vec<_> = (0..PRUNES)
                .map(|p| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        let r = repo.open(&format!("prune{p}"));
                        barrier.wait();
                        let start = Instant::now();
                        let res = prune(&r, &PruneOptions { max_unused: 0.0, ..Default::default() }, &NoProgress);
                        (res, (start, Instant::now()))
                    })
                })
                .collect();
            let b: Vec<_> = backups.into_iter().map(|t| t.join().unwrap()).collect();
            let p: Vec<_> = prunes.into_iter().map(|t| t.join().unwrap()).collect();
            (b, p)
        });
        let mut backup_times = Vec::new();
        for (h, (res, t)) in backups.into_iter().enumerate() {
            match res {
                Ok(r) => {
                    expected.insert(r.snapshot_id, dirs[h].clone());
                }
                Err(e @ Error::PrunedMeanwhile { .. }) if tolerate_aborts => {
                    eprintln!("round {round}: backup of host {h} aborted cleanly: {e}");
                }
                Err(e) => panic!("round {round}: backup of host {h} failed: {e}"),
            }
            backup_times.push(t);
        }
        let mut prune_times = Vec::new();
        for (res, t) in prunes {
            reports.push(res.unwrap_or_else(|e| panic!("round {round}: prune failed: {e}")));
            prune_times.push(t);
        }
        if backup_times.iter().any(|b| prune_times.iter().any(|p| overlaps(*b, *p))) {
            overlapping_rounds += 1;
        }
        // Let marks come due during the test.
        std::thread::sleep(Duration::from_millis(700));
    }
    assert!(
        overlapping_rounds * 4 >= ROUNDS * 3,
        "backups and prunes overlapped in only {overlapping_rounds} of {ROUNDS} rounds"
    );
    (expected, reports)
}

fn read_tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = walkdir(dir)
        .into_iter()
        .map(|p| (p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Every snapshot restores to exactly its source, and check --read-data
/// passes.
fn verify_all(repo: &Repository, expected: &HashMap<Id, PathBuf>, scratch: &Path) {
    let snaps = repo.snapshots().unwrap();
    assert_eq!(snaps.len(), expected.len(), "snapshots present vs committed and not forgotten");
    for s in &snaps {
        let src = expected.get(&s.id).unwrap_or_else(|| panic!("snapshot {} was not made by a backup here", s.id));
        assert_restores(repo, s, src, &scratch.join(s.id.to_hex()));
    }
    assert_check_passes(repo);
}

/// Snapshot `s` restores into `target` to exactly the tree `src`.
fn assert_restores(repo: &Repository, s: &Snapshot, src: &Path, target: &Path) {
    let opts = RestoreOptions { target: target.to_path_buf(), ..Default::default() };
    restore(repo, s, &opts, &NoProgress).unwrap_or_else(|e| panic!("restore of {}: {e}", s.id));
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(read_tree(&restored), read_tree(src), "snapshot {} differs from its source", s.id);
}

fn assert_check_passes(repo: &Repository) {
    let report = check(repo, &CheckOptions { read_data: true, ..Default::default() }, &NoProgress).unwrap();
    assert!(report.ok(), "check --read-data: {:?}", report.errors);
}

fn assert_protocol_worked(reports: &[PruneReport]) {
    let marked: u64 = reports.iter().map(|r| r.packs_marked).sum();
    let deleted: u64 = reports.iter().map(|r| r.packs_deleted).sum();
    assert!(marked > 0, "no prune marked anything: the test exercised nothing");
    assert!(deleted > 0, "no prune swept a mark: the test exercised nothing");
}

#[test]
fn four_backups_and_two_prunes_at_once_on_a_local_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    let local = LocalDir::new(&root);
    local.create_layout().unwrap();
    let repo = Repo::create(Arc::new(local), tmp.path());
    let (expected, reports) = backups_and_prunes_at_once(&repo, &tmp.path().join("src"), false);
    assert_protocol_worked(&reports);
    verify_all(&repo.open("verify"), &expected, &tmp.path().join("restore"));
}

#[test]
fn four_backups_and_two_prunes_at_once_in_memory_with_delays() {
    let tmp = tempfile::tempdir().unwrap();
    // The storage's clock is three hours ahead of the host's: the protocol
    // never compares the two.
    let mem = MemoryStorage::new(MemoryStorageOptions { delay: Duration::from_millis(2), clock_offset_secs: 3 * 3600 });
    let repo = Repo::create(Arc::new(mem), tmp.path());
    let (expected, reports) = backups_and_prunes_at_once(&repo, &tmp.path().join("src"), false);
    assert_protocol_worked(&reports);
    verify_all(&repo.open("verify"), &expected, &tmp.path().join("restore"));
}

/// A backup frozen (its session refresh stuck, as in a suspended VM) past
/// the grace period and the session expiry, while a prune marks and
/// sweeps the packs it deduplicated against, either commits a snapshot
/// that restores byte for byte or fails cleanly without one.
#[test]
fn a_backup_frozen_past_the_grace_period_commits_intact_or_aborts() {
    let tmp = tempfile::tempdir().unwrap();
    let mem = in_memory();
    let repo = Repo::create(mem.clone(), tmp.path());
    let src = tmp.path().join("src");
    make_tree(&src, 0, 0);
    let first = repo.backup("first", &src).unwrap();
    // Packs must be older than the grace period to be marked.
    std::thread::sleep(Duration::from_secs(GRACE_SECS + 1));

    // The frozen backup: the same tree (so it deduplicates against the
    // first snapshot's packs) plus a stream it is still reading when it
    // freezes.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let stream_data = pseudo_random(100 * 1024, 7);
    let frozen = repo.gated_backup("frozen", &src, stream_data.clone(), go_rx);
    // Let it start and deduplicate, then freeze its session refreshes.
    std::thread::sleep(Duration::from_millis(800));
    mem.freeze_existing(FileKind::Session).unwrap();
    // Meanwhile the first snapshot is forgotten, a prune marks its packs,
    // and once the grace period and the frozen session's expiry have
    // passed, another prune sweeps them.
    let pruner = repo.open("pruner");
    forget(&pruner, &ForgetOptions { ids: vec![first.snapshot_id], ..Default::default() }).unwrap();
    let marked = prune(&pruner, &PruneOptions::default(), &NoProgress).unwrap();
    assert!(marked.packs_marked > 0, "{marked:?}");
    let settings = ProtocolSettings::with_grace(GRACE_SECS);
    std::thread::sleep(Duration::from_secs(settings.session_expiry_secs.max(GRACE_SECS) + 1));
    let swept = prune(&pruner, &PruneOptions::default(), &NoProgress).unwrap();
    assert!(swept.packs_deleted > 0, "the frozen session still held the sweep back: {swept:?}");
    // The backup continues.
    mem.thaw();
    let _ = go_tx.send(());
    let result = frozen.join().unwrap();
    match result {
        Ok(r) => {
            let verify = repo.open("verify");
            let snaps = verify.snapshots().unwrap();
            assert_eq!(snaps.len(), 1);
            assert_eq!(snaps[0].id, r.snapshot_id);
            let target = tmp.path().join("restore");
            assert_restores(&verify, &snaps[0], &src, &target);
            assert_eq!(std::fs::read(target.join("stream.bin")).unwrap(), stream_data);
            assert_check_passes(&verify);
            eprintln!("frozen backup committed intact (sweep deleted {} packs)", swept.packs_deleted);
        }
        Err(e) => {
            assert!(matches!(e, Error::PrunedMeanwhile { .. } | Error::SessionLost { .. }), "unclean failure: {e}");
            assert!(repo.open("verify").snapshots().unwrap().is_empty());
            eprintln!("frozen backup aborted cleanly: {e}");
        }
    }
}

/// Yields nothing until the gate opens, then its data.
struct GatedReader {
    gate: Option<std::sync::mpsc::Receiver<()>>,
    data: std::io::Cursor<Vec<u8>>,
}

impl std::io::Read for GatedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(g) = self.gate.take() {
            let _ = g.recv();
        }
        self.data.read(buf)
    }
}

/// A session refresh that fails stops the backup: no snapshot, and what
/// was written is kept for the next one.
#[test]
fn a_failed_session_refresh_aborts_the_backup_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let mem = in_memory();
    let repo = Repo::create(mem.clone(), tmp.path());
    let storage = repo.storage.clone();
    let src = tmp.path().join("src");
    make_tree(&src, 0, 0);
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let t = repo.gated_backup("b", &src, pseudo_random(50 * 1024, 3), go_rx);
    std::thread::sleep(Duration::from_millis(500));
    mem.fail_puts(FileKind::Session, true);
    std::thread::sleep(Duration::from_secs(2));
    let _ = go_tx.send(());
    let res = t.join().unwrap();
    assert!(matches!(res, Err(Error::SessionLost { .. })), "{:?}", res.map(|r| r.snapshot_id));
    assert!(storage.list(FileKind::Snapshot).unwrap().is_empty());
    assert!(!storage.list(FileKind::Pack).unwrap().is_empty(), "the packs written were kept");
}

/// The concurrent rounds through a store that lies as networks do
/// (storage/faulty.rs): slow requests, transient failures and lost
/// responses (retried by the client, so writes happen twice), requests
/// duplicated on the way, and listings that lag puts and deletes by
/// 300 ms. Nothing committed is lost, nothing restores wrong.
#[test]
fn four_backups_and_two_prunes_at_once_through_a_lying_store() {
    let tmp = tempfile::tempdir().unwrap();
    let mem: Arc<dyn Storage> =
        Arc::new(MemoryStorage::new(MemoryStorageOptions { delay: Duration::ZERO, clock_offset_secs: -3600 }));
    let lies = Faults {
        seed: 42,
        delay: Duration::from_millis(2),
        transient: 0.03,
        lost_response: 0.03,
        duplicate: 0.05,
        list_lag: Duration::from_millis(300),
        retries: 10,
    };
    let faulty = Arc::new(FaultyStorage::new(mem, Faults::default()));
    // Created on an honest store: opening a repository whose key file a
    // lagging listing still hides fails (NoKeys), which is right but not
    // what this test is about.
    let repo = Repo::create(faulty.clone(), tmp.path());
    faulty.set_faults(lies);
    let (expected, reports) = backups_and_prunes_at_once(&repo, &tmp.path().join("src"), true);
    assert_protocol_worked(&reports);
    let c = faulty.counts();
    assert!(c.transient > 0 && c.lost_responses > 0 && c.duplicates > 0 && c.hidden_from_listings > 0, "{c:?}");
    // Verify on an honest view of the same storage.
    faulty.set_faults(Faults::default());
    verify_all(&repo.open("verify"), &expected, &tmp.path().join("restore"));
}

/// With no retries every injected error reaches the engine: backups fail
/// part way (a pack written, its response lost; an index file missing)
/// again and again. None of them commits a snapshot it cannot restore,
/// none damages the repository, and the next backup on a healthy store
/// succeeds and restores.
#[test]
fn failing_requests_never_leave_a_wrong_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyStorage::new(in_memory(), Faults::default()));
    let repo = Repo::create(faulty.clone(), tmp.path());
    let mut expected: HashMap<Id, PathBuf> = HashMap::new();
    let mut failed = 0;
    for round in 0..12 {
        let src = tmp.path().join(format!("src{round}"));
        make_tree(&src, round, round % HOSTS);
        // Opened on an honest store: the faults are for the backup.
        let r = repo.open(&format!("b{round}"));
        faulty.set_faults(Faults {
            seed: round as u64 + 1,
            transient: 0.01,
            lost_response: 0.02,
            duplicate: 0.05,
            list_lag: Duration::from_millis(200),
            ..Default::default()
        });
        match backup(&r, BackupOptions { paths: vec![src.clone()], ..Default::default() }, &NoProgress) {
            Ok(rep) => {
                expected.insert(rep.snapshot_id, src);
            }
            Err(_) => failed += 1,
        }
        faulty.set_faults(Faults::default());
    }
    assert!(failed > 0, "no backup met an error: the test exercised nothing");
    assert!(faulty.counts().errors_returned > 0);
    // A lost response after the snapshot was written makes a backup
    // report failure for a snapshot that exists: it must restore too.
    let r = repo.open("verify");
    for s in r.snapshots().unwrap() {
        expected.entry(s.id).or_insert_with(|| PathBuf::from(s.file.paths.first().cloned().unwrap_or_default()));
    }
    let src = tmp.path().join("src-final");
    make_tree(&src, 99, 0);
    let rep = repo.backup("final", &src).expect("a backup on a healthy store");
    expected.insert(rep.snapshot_id, src);
    verify_all(&repo.open("verify2"), &expected, &tmp.path().join("restore"));
}

/// A backup that deduplicated against the leaves and nodes of a split
/// directory (format-spec/v2/trees-index.md) in packs a prune then marks
/// copies them at its commit check like any other blob, so the sweep finds
/// no marked pack needed again and recovers none.
#[test]
fn the_commit_check_copies_every_blob_of_a_split_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::create(in_memory(), tmp.path());
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("big")).unwrap();
    for i in 0..3000 {
        std::fs::write(src.join(format!("big/f{i:05}")), format!("file {i}")).unwrap();
    }
    let first = repo.backup("first", &src).unwrap();
    std::thread::sleep(Duration::from_secs(GRACE_SECS + 1));

    // The second backup stores nothing new for `src` (every tree blob and
    // chunk is in the first snapshot's packs) and waits on a stream until
    // a prune has marked those packs.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let second = repo.gated_backup("second", &src, pseudo_random(10 * 1024, 3), go_rx);
    std::thread::sleep(Duration::from_secs(3));
    let pruner = repo.open("pruner");
    forget(&pruner, &ForgetOptions { ids: vec![first.snapshot_id], ..Default::default() }).unwrap();
    let marked = prune(&pruner, &PruneOptions::default(), &NoProgress).unwrap();
    assert!(marked.packs_marked > 0, "{marked:?}");
    let _ = go_tx.send(());
    let result = second.join().unwrap().expect("the second backup commits");

    let settings = ProtocolSettings::with_grace(GRACE_SECS);
    std::thread::sleep(Duration::from_secs(settings.session_expiry_secs.max(GRACE_SECS) + 1));
    let swept = prune(&pruner, &PruneOptions::default(), &NoProgress).unwrap();
    assert!(swept.packs_deleted > 0, "{swept:?}");
    assert_eq!(swept.packs_recovered, 0, "a blob the commit check should have copied was still needed: {swept:?}");

    let verify = repo.open("verify");
    let snap = verify.load_snapshot(&result.snapshot_id).unwrap();
    assert_restores(&verify, &snap, &src, &tmp.path().join("restore"));
    assert_check_passes(&verify);
}

/// check opens (authenticates and decodes) every session file and prune
/// mark: one damaged by a flipped byte is an error naming it, as is a
/// damaged mark stored under the name its new bytes hash to (so that only
/// the authentication can catch it).
#[test]
fn check_reports_a_damaged_session_file_or_prune_mark_by_name() {
    use arc_engine::format::{mark, session};
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::create(in_memory(), tmp.path());
    let src = tmp.path().join("src");
    make_tree(&src, 0, 0);
    repo.backup("b", &src).unwrap();
    let r = repo.open("check");
    let keys = r.keys().unwrap().clone();
    let s = session::SessionFile {
        session: Id::hash(b"a session"),
        operation: "backup".into(),
        host: "elsewhere".into(),
        username: "u".into(),
        pid: 1,
        started: chrono::Utc::now(),
        started_storage: None,
    };
    let session_name = s.session.to_hex();
    let session_data = session::encode(&keys, &s).unwrap();
    let m = mark::MarkFile {
        prune_session: Id::hash(b"a prune"),
        host: "elsewhere".into(),
        created: chrono::Utc::now(),
        packs: Vec::new(),
    };
    let mark_data = mark::encode(&keys, &m).unwrap();
    let mark_name = Id::hash(&mark_data).to_hex();
    let storage = repo.storage.clone();
    storage.put(FileKind::Session, &session_name, &session_data).unwrap();
    storage.put(FileKind::Mark, &mark_name, &mark_data).unwrap();
    let errors = || -> Vec<String> {
        let report = check(&r, &CheckOptions::default(), &NoProgress).unwrap();
        report.errors.into_iter().map(|p| p.message).collect()
    };
    assert_eq!(errors(), Vec::<String>::new(), "intact session and mark files");

    let flipped = |data: &[u8]| {
        let mut d = data.to_vec();
        let at = d.len() / 2;
        d[at] ^= 0x01;
        d
    };
    storage.put(FileKind::Session, &session_name, &flipped(&session_data)).unwrap();
    let e = errors();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains(&session_name) && e[0].contains("not authentic"), "{e:?}");
    storage.put(FileKind::Session, &session_name, &session_data).unwrap();

    storage.put(FileKind::Mark, &mark_name, &flipped(&mark_data)).unwrap();
    let e = errors();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains(&mark_name) && e[0].contains("prune mark"), "{e:?}");
    storage.delete(FileKind::Mark, &mark_name).unwrap();
    let renamed = Id::hash(&flipped(&mark_data)).to_hex();
    storage.put(FileKind::Mark, &renamed, &flipped(&mark_data)).unwrap();
    let e = errors();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains(&renamed) && e[0].contains("not authentic"), "{e:?}");
}
