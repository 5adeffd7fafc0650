//! Malicious repositories: tree blobs written byte by byte per SPEC.md
//! section 8 (bypassing the encoder, which refuses everything tried here),
//! stored through the real packer and committed with a real snapshot. For
//! each, restore must never write outside its target, must not panic, and
//! must answer with an error or a skipped entry; check must report it.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_engine::format::pack::BlobKind;
use arc_engine::format::snapshot::{SnapshotFile, Summary};
use arc_engine::ops::check::{check, CheckOptions};
use arc_engine::ops::restore::{restore, RestoreOptions, RestoreResult};
use arc_engine::ops::tar::dump_tar;
use arc_engine::packer;
use arc_engine::progress::{NoProgress, Progress};
use arc_engine::repo::InitOptions;
use arc_engine::vfs::{Entry, Vfs, VfsOptions};
use arc_engine::{Id, Repository, Snapshot};

const FILE: u8 = 1;
const DIR: u8 = 2;
const SYMLINK: u8 = 3;
const HARDLINK: u8 = 4;

/// One tree entry, encoded exactly as SPEC.md section 8 lays it out.
#[derive(Clone)]
struct E {
    kind: u8,
    name: Vec<u8>,
    size: u64,
    nlink: u32,
    target: Vec<u8>,
    chunks: Vec<Id>,
    /// Written as the chunk count instead of `chunks.len()` when set.
    claimed_chunks: Option<u32>,
    subtree: Option<Id>,
}

impl E {
    fn new(kind: u8, name: &[u8]) -> E {
        E {
            kind,
            name: name.to_vec(),
            size: 0,
            nlink: 1,
            target: Vec::new(),
            chunks: Vec::new(),
            claimed_chunks: None,
            subtree: None,
        }
    }
    fn file(name: &[u8], chunk: Id, size: u64) -> E {
        E { size, chunks: vec![chunk], ..E::new(FILE, name) }
    }
    fn dir(name: &[u8], subtree: Id) -> E {
        E { subtree: Some(subtree), ..E::new(DIR, name) }
    }
    fn link(kind: u8, name: &[u8], target: &[u8], chunk: Option<Id>) -> E {
        // The test's content blob is always "pwned\n".
        let size = if chunk.is_some() { 6 } else { 0 };
        E { target: target.to_vec(), size, chunks: chunk.into_iter().collect(), ..E::new(kind, name) }
    }
}

/// Tree bytes in the given entry order, with no validation at all.
fn tree_bytes(entries: &[E]) -> Vec<u8> {
    let mut b = b"ARCTREE\x01".to_vec();
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        b.push(e.kind);
        b.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        b.extend_from_slice(&e.name);
        let mode: u32 = match e.kind {
            DIR => 0o040755,
            SYMLINK => 0o120777,
            _ => 0o100644,
        };
        b.extend_from_slice(&mode.to_le_bytes());
        b.extend_from_slice(&[0; 8]); // uid, gid
        b.extend_from_slice(&[0, 0]); // user, group: empty
        b.extend_from_slice(&1_700_000_000i64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&1_700_000_000i64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&e.size.to_le_bytes());
        b.extend_from_slice(&[0; 16]); // inode, device
        b.extend_from_slice(&e.nlink.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes()); // rdev
        b.extend_from_slice(&0u16.to_le_bytes()); // xattrs
        b.extend_from_slice(&(e.target.len() as u32).to_le_bytes());
        b.extend_from_slice(&e.target);
        match e.kind {
            FILE | HARDLINK => {
                b.extend_from_slice(&e.claimed_chunks.unwrap_or(e.chunks.len() as u32).to_le_bytes());
                for c in &e.chunks {
                    b.extend_from_slice(&c.0);
                }
            }
            DIR => b.extend_from_slice(&e.subtree.expect("dir entry without subtree").0),
            _ => {}
        }
    }
    b
}

struct Fx {
    _tmp: tempfile::TempDir,
    /// Shared so that the mount layer can use it too (one process may open
    /// the index database only once).
    repo: Arc<Repository>,
    /// Restore targets go below here.
    base: PathBuf,
    /// Must stay empty: every escape attempt aims at it.
    outside: PathBuf,
}

fn fx() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let base = fs::canonicalize(tmp.path()).unwrap();
    let repo = Arc::new(Repository::init_local(&base.join("repo"), &InitOptions::default()).unwrap());
    let outside = base.join("outside");
    fs::create_dir(&outside).unwrap();
    Fx { _tmp: tmp, repo, base, outside }
}

impl Fx {
    /// Stores blobs through the real packer; `forged` ones under an id that
    /// is not their hash.
    fn store(&self, blobs: Vec<(BlobKind, Vec<u8>, Option<Id>)>) -> Vec<Id> {
        let (ids, _) = packer::run(&self.repo, Vec::new(), &|| false, |sink| {
            let mut cache = None;
            let mut ids = Vec::new();
            for (kind, data, forged) in blobs {
                let index = sink.index_reader(&mut cache)?;
                match forged {
                    Some(id) => {
                        sink.store_with_id(index, id, kind, &data)?;
                        ids.push(id);
                    }
                    None => ids.push(sink.store(index, kind, &data)?),
                }
            }
            Ok(ids)
        })
        .unwrap();
        ids
    }

    fn data(&self, content: &[u8]) -> Id {
        self.store(vec![(BlobKind::Data, content.to_vec(), None)])[0]
    }

    fn tree(&self, entries: &[E]) -> Id {
        self.store(vec![(BlobKind::Tree, tree_bytes(entries), None)])[0]
    }

    fn snapshot(&self, root: Id) -> Snapshot {
        let file = SnapshotFile {
            time: chrono::Utc::now(),
            host: "evil".into(),
            username: "mallory".into(),
            uid: 0,
            gid: 0,
            paths: vec!["/x".into()],
            tags: Vec::new(),
            tree: root,
            parent: None,
            program_version: "handmade".into(),
            summary: Summary::default(),
            excludes: Vec::new(),
            original: None,
        };
        let id = self.repo.save_snapshot(&file).unwrap();
        self.repo.load_snapshot(&id).unwrap()
    }

    /// Restores into a fresh target; returns the result and the warnings.
    fn restore(&self, snap: &Snapshot, name: &str) -> (arc_engine::Result<RestoreResult>, Vec<String>, PathBuf) {
        let target = self.base.join(name);
        let warnings = Warnings::default();
        let r = restore(&self.repo, snap, &RestoreOptions { target: target.clone(), ..Default::default() }, &warnings);
        (r, warnings.0.into_inner().unwrap(), target)
    }

    #[track_caller]
    fn assert_outside_untouched(&self) {
        let left: Vec<_> = fs::read_dir(&self.outside).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "restore wrote outside its target: {left:?}");
    }
}

#[derive(Default)]
struct Warnings(Mutex<Vec<String>>);

impl Progress for Warnings {
    fn warn(&self, path: &Path, message: &str) {
        self.0.lock().unwrap().push(format!("{}: {message}", path.display()));
    }
}

/// Restore refused or skipped with a warning: never a silent success.
#[track_caller]
fn assert_refused(r: &arc_engine::Result<RestoreResult>, warnings: &[String], what: &str) {
    match r {
        Err(_) => {}
        Ok(res) => assert!(res.errors > 0 && !warnings.is_empty(), "{what}: restored without complaint: {res:?}"),
    }
}

#[test]
fn unsafe_and_duplicate_names_are_refused_and_nothing_escapes() {
    let f = fx();
    let evil = f.data(b"pwned\n");
    let outside = f.outside.to_string_lossy().into_owned();
    let abs = format!("{outside}/abs");
    let up = "../../../../../../../../../..".to_string() + &outside + "/up";
    // Runs: one repository each; in the root tree and one level down.
    let names: Vec<Vec<u8>> = vec![
        b"..".to_vec(),
        b".".to_vec(),
        Vec::new(),
        b"a/b".to_vec(),
        abs.into_bytes(),
        up.into_bytes(),
        b"a\0b".to_vec(),
    ];
    let mut runs = 0;
    for (i, name) in names.iter().enumerate() {
        for nested in [false, true] {
            let bad = f.tree(&[E::file(b"ok", evil, 6), E::file(name, evil, 6)]);
            let root = if nested { f.tree(&[E::dir(b"sub", bad), E::file(b"z-fine", evil, 6)]) } else { bad };
            let snap = f.snapshot(root);
            let (r, warnings, target) = f.restore(&snap, &format!("t-{i}-{nested}"));
            assert_refused(&r, &warnings, &format!("name {:?}", String::from_utf8_lossy(name)));
            if nested && r.is_ok() {
                // The rest of the snapshot still came back.
                assert_eq!(fs::read(target.join("z-fine")).unwrap(), b"pwned\n");
            }
            let report = check(&f.repo, &CheckOptions::default(), &NoProgress).unwrap();
            assert!(!report.ok(), "check accepts name {:?}", String::from_utf8_lossy(name));
            f.assert_outside_untouched();
            // Each snapshot is checked on its own below, so forget this one.
            fs::remove_file(f.base.join("repo/snapshots").join(snap.id.to_hex())).unwrap();
            runs += 1;
        }
    }
    // Duplicates and unsorted entries: a second entry of a name could
    // otherwise replace what the first one created.
    for entries in [
        vec![E::file(b"a", evil, 6), E::file(b"a", evil, 6)],
        vec![E::link(SYMLINK, b"a", outside.as_bytes(), None), E::dir(b"a", f.tree(&[E::file(b"x", evil, 6)]))],
        vec![E::file(b"b", evil, 6), E::file(b"a", evil, 6)],
    ] {
        let snap = f.snapshot(f.tree(&entries));
        let (r, warnings, _) = f.restore(&snap, &format!("dup-{runs}"));
        assert_refused(&r, &warnings, "duplicate or unsorted names");
        f.assert_outside_untouched();
        fs::remove_file(f.base.join("repo/snapshots").join(snap.id.to_hex())).unwrap();
        runs += 1;
    }
    assert_eq!(runs, 17);
}

#[test]
fn symlinks_and_hardlinks_cannot_carry_writes_outside() {
    let f = fx();
    let evil = f.data(b"pwned\n");
    let outside = f.outside.to_string_lossy().into_owned();
    let victim = f.outside.join("victim");
    // Runs: each a snapshot restored into a fresh target.
    let cases: Vec<(&str, Vec<E>)> = vec![
        // A symlink out, then hardlinks whose targets go through it.
        (
            "link through symlink",
            vec![E::link(SYMLINK, b"a", outside.as_bytes(), None), E::link(HARDLINK, b"b", b"a/victim", Some(evil))],
        ),
        ("hardlink to absolute path", vec![E::link(HARDLINK, b"h", victim.to_string_lossy().as_bytes(), Some(evil))]),
        ("hardlink up and out", vec![E::link(HARDLINK, b"h", b"../outside/victim", Some(evil))]),
        // A file the restore writes, linked under a name that a symlink in
        // the same directory already took: the link must not follow it.
        (
            "hardlink onto a symlink",
            vec![
                E { nlink: 2, ..E::file(b"a-file", evil, 6) },
                E::link(HARDLINK, b"b-link", b"a-file", Some(evil)),
                E::link(SYMLINK, b"c", victim.to_string_lossy().as_bytes(), None),
            ],
        ),
    ];
    for (i, (what, entries)) in cases.into_iter().enumerate() {
        let snap = f.snapshot(f.tree(&entries));
        let (r, warnings, target) = f.restore(&snap, &format!("t{i}"));
        // Links to files outside the snapshot get the content instead.
        assert!(r.is_ok() || !warnings.is_empty(), "{what}: {r:?}");
        f.assert_outside_untouched();
        for e in &entries {
            if e.kind == HARDLINK {
                let p = target.join(OsStr::from_bytes(&e.name));
                let m = fs::symlink_metadata(&p).unwrap();
                assert!(m.is_file(), "{what}: {} is not a plain file", p.display());
                assert_eq!(fs::read(&p).unwrap(), b"pwned\n");
            }
        }
    }
}

#[test]
fn absurd_sizes_and_counts_fail_cleanly_and_fast() {
    let f = fx();
    let small = f.data(b"hello");
    let start = Instant::now();
    // Runs: a file claiming 1 PB, a file claiming 5 bytes with more data,
    // a chunk count of 4 billion in a tiny tree, an entry count of 4
    // billion, a chunk list of 100 000 real ids (32 MB... of the same blob).
    let huge_count = {
        let mut b = tree_bytes(&[E::file(b"f", small, 5)]);
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        b
    };
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("1 PB file", tree_bytes(&[E::file(b"f", small, 1 << 50)]), true),
        ("size below content", tree_bytes(&[E::file(b"f", small, 2)]), true),
        (
            "4 billion chunks claimed",
            tree_bytes(&[E { claimed_chunks: Some(u32::MAX), ..E::file(b"f", small, 5) }]),
            true,
        ),
        ("4 billion entries claimed", huge_count, true),
        ("100 000 chunks", tree_bytes(&[E { chunks: vec![small; 100_000], ..E::file(b"f", small, 500_000) }]), false),
    ];
    for (i, (what, bytes, bad)) in cases.into_iter().enumerate() {
        let root = f.store(vec![(BlobKind::Tree, bytes, None)])[0];
        let snap = f.snapshot(root);
        let (r, warnings, target) = f.restore(&snap, &format!("t{i}"));
        if bad {
            assert_refused(&r, &warnings, what);
            // Nothing half-written is left looking restored.
            assert!(!target.join("f").exists(), "{what}: a wrong file was left");
        } else {
            assert_eq!(r.unwrap().errors, 0, "{what}");
            assert_eq!(fs::metadata(target.join("f")).unwrap().len(), 500_000);
        }
        f.assert_outside_untouched();
        fs::remove_file(f.base.join("repo/snapshots").join(snap.id.to_hex())).unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(60), "absurd sizes took {:?}", start.elapsed());
}

#[test]
fn a_tree_cannot_contain_itself() {
    // An honest cycle needs a tree to hold its own id (or an ancestor's,
    // which is computed from it): a BLAKE3 fixed point. So the only way to
    // build one is to store a tree under a forged id, and every blob read
    // is verified against its id. Prove that this stops the cycle.
    let f = fx();
    let forged = Id::hash(b"not the hash of the tree below");
    let looping = tree_bytes(&[E::dir(b"loop", forged)]);
    f.store(vec![(BlobKind::Tree, looping, Some(forged))]);
    let root = f.tree(&[E::dir(b"d", forged), E::file(b"e", f.data(b"fine"), 4)]);
    let snap = f.snapshot(root);
    let start = Instant::now();
    let (r, warnings, target) = f.restore(&snap, "t");
    let res = r.expect("restore goes on past the unreadable tree");
    assert_eq!(res.errors, 1, "{warnings:?}");
    assert!(warnings[0].contains(&forged.to_hex()), "{warnings:?}");
    assert_eq!(fs::read(target.join("e")).unwrap(), b"fine");
    let report = check(&f.repo, &CheckOptions { read_data: true, ..Default::default() }, &NoProgress).unwrap();
    assert!(!report.ok());
    assert!(report.errors.iter().any(|p| p.message.contains(&forged.to_hex())), "{:?}", report.errors);
    assert!(start.elapsed() < Duration::from_secs(30));
    f.assert_outside_untouched();
}

#[test]
fn deep_nesting_is_bounded() {
    // 100 000 directories, each inside the previous one.
    const DEPTH: usize = 100_000;
    let f = fx();
    let leaf = f.tree(&[E::file(b"bottom", f.data(b"deep"), 4)]);
    let mut trees = Vec::with_capacity(DEPTH);
    let mut below = leaf;
    // Ids are content hashes, so each level can be computed before storing.
    for _ in 0..DEPTH {
        let bytes = tree_bytes(&[E::dir(b"d", below)]);
        below = f.repo.blob_id(&bytes);
        trees.push((BlobKind::Tree, bytes, None));
    }
    f.store(trees);
    let snap = f.snapshot(below);
    let start = Instant::now();
    let report = check(&f.repo, &CheckOptions::default(), &NoProgress).unwrap();
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].message.contains("deeper than 4096"), "{:?}", report.errors[0].message);
    assert_eq!(report.trees, 4097, "check did not stop at the depth limit");
    let checked = start.elapsed();
    // Restore and dump run on threads with the main thread's stack (8 MiB):
    // a walk that recursed once per level would overflow it.
    let dump = std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn_scoped(s, || dump_tar(&f.repo, &snap, "/", &mut std::io::sink()).map(|_| ()))
            .unwrap()
            .join()
            .unwrap()
    });
    assert!(
        matches!(&dump, Err(arc_engine::Error::Corrupt { reason, .. }) if reason.contains("deeper")),
        "dump of a 100 000 level tree: {dump:?}"
    );
    let (r, warnings) = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || {
            let (r, w, _) = f.restore(&snap, "t");
            f.assert_outside_untouched();
            (r.map(|x| x.errors), w)
        })
        .unwrap()
        .join()
        .unwrap();
    // The target filesystem cannot hold paths that long: an error, or the
    // levels beyond it skipped with a warning.
    assert!(r.is_err() || !warnings.is_empty(), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(60), "check {checked:?}, total {:?}", start.elapsed());
}

#[test]
fn mount_layer_refuses_the_same_entries_without_panicking() {
    // The mount cannot write anything, so the risks there are a panic, a
    // wrong answer or unbounded work. Runs: one snapshot per case.
    let f = fx();
    let small = f.data(b"hello");
    let vfs = Vfs::new(f.repo.clone(), VfsOptions { snapshot_ttl: Duration::ZERO, ..Default::default() });
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("1 PB file", tree_bytes(&[E::file(b"f", small, 1 << 50)])),
        ("4 billion chunks claimed", tree_bytes(&[E { claimed_chunks: Some(u32::MAX), ..E::file(b"f", small, 5) }])),
        ("name ..", tree_bytes(&[E::file(b"..", small, 5)])),
        ("name with /", tree_bytes(&[E::file(b"a/f", small, 5)])),
        ("duplicate names", tree_bytes(&[E::file(b"f", small, 5), E::file(b"f", small, 5)])),
    ];
    for (what, bytes) in cases {
        let root = f.store(vec![(BlobKind::Tree, bytes, None)])[0];
        f.snapshot(root);
        let list = vfs.snapshots().unwrap();
        let snap = list.snaps.iter().find(|s| s.tree == root).expect("the snapshot is listed").clone();
        let entry = Entry::Snapshot(snap);
        match vfs.lookup(&entry, b"f") {
            // The tree itself is refused.
            Err(_) => assert!(vfs.read_dir(&entry).is_err(), "{what}: listed although lookup failed"),
            Ok(Some(file)) => assert!(vfs.open(&file).is_err(), "{what}: opened a file whose size is a lie"),
            Ok(None) => panic!("{what}: lookup found nothing and reported no error"),
        }
        assert!(vfs.lookup(&entry, b"..").map(|e| e.is_none()).unwrap_or(true), "{what}: `..` resolved");
    }
}
