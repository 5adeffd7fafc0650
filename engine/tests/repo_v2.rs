//! Backward compatibility: the frozen format-v2 repository (encrypted; passphrase "arc frozen repo-v2") in
//! `format-spec/vectors/repo-v2` (made once by `make-repo-v2.sh`) must stay
//! readable, checkable and restorable by every later arc.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod common;
use common::{copy_tree, frozen_random_bin};

use arc_engine::crypto::Purpose;
use arc_engine::format::{sealed, tree_v2};
use arc_engine::ops::backup::{backup, BackupOptions};
use arc_engine::ops::check::{check, CheckOptions};
use arc_engine::ops::restore::{restore, RestoreOptions};
use arc_engine::ops::tree_walk::{locate, Located};
use arc_engine::progress::NoProgress;
use arc_engine::{Repository, SnapshotFilter};

fn frozen_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../format-spec/vectors/repo-v2")
}

#[test]
fn frozen_v2_repository_checks_and_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    copy_tree(&frozen_repo(), &repo_dir);
    let wrong = || Ok(zeroize::Zeroizing::new("not the passphrase".to_string()));
    assert!(matches!(Repository::open_local_with(&repo_dir, Some(&wrong)), Err(arc_engine::Error::WrongPassphrase)));
    assert!(matches!(Repository::open_local(&repo_dir), Err(arc_engine::Error::PassphraseRequired)));
    let pw = || Ok(zeroize::Zeroizing::new("arc frozen repo-v2".to_string()));
    let repo = Repository::open_local_with(&repo_dir, Some(&pw)).expect("v2 repository opens with its passphrase");
    assert!(repo.keys().is_some());
    assert_eq!(repo.config().version, 2);

    let report = check(&repo, &CheckOptions { read_data: true, ..Default::default() }, &NoProgress).unwrap();
    assert!(report.ok(), "check of the frozen repository: {:?}", report.errors);
    assert_eq!(report.snapshots, 2);

    let snaps = repo.snapshots().unwrap();
    assert_eq!(snaps.len(), 2);
    assert!(snaps.iter().all(|s| s.file.host == "golden" && s.file.tags == ["v2"]));
    assert_eq!(snaps[0].file.time.to_rfc3339(), "2026-01-02T03:04:05+00:00");
    assert_eq!(snaps[0].file.paths, ["/tmp/arc-repo-v2-src"]);
    assert_eq!(snaps[1].file.paths, ["/db/dump.sql"]);

    // The stream snapshot.
    let dump = match locate(&repo, &snaps[1], "db/dump.sql").unwrap() {
        Located::Node(n) => n,
        other => panic!("db/dump.sql is {other:?}"),
    };
    let mut content = Vec::new();
    for id in &dump.chunks {
        content.extend_from_slice(&repo.read_blob(id).unwrap());
    }
    assert_eq!(content, b"CREATE TABLE t (id int);\nINSERT INTO t VALUES (1),(2),(3);\n");

    // The file tree, restored with its metadata.
    let target = tmp.path().join("restored");
    let opts = RestoreOptions { target: target.clone(), ..Default::default() };
    let tree_snap = repo
        .find_snapshot("latest", &SnapshotFilter { paths: vec!["/tmp/arc-repo-v2-src".into()], ..Default::default() })
        .unwrap();
    let result = restore(&repo, &tree_snap, &opts, &NoProgress).unwrap();
    assert_eq!(result.errors, 0);
    let root = target.join("tmp/arc-repo-v2-src");
    assert_eq!(fs::read(root.join("hello.txt")).unwrap(), b"hello arc\n");
    assert_eq!(fs::metadata(root.join("empty")).unwrap().len(), 0);
    assert_eq!(fs::read(root.join("dir/random.bin")).unwrap(), frozen_random_bin());
    assert_eq!(fs::read(root.join("dir/sub/text.txt")).unwrap(), b"line of text\n".repeat(5000));
    assert_eq!(fs::metadata(root.join("dir/sub/text.txt")).unwrap().permissions().mode() & 0o7777, 0o640);
    assert_eq!(fs::read_link(root.join("dir/link")).unwrap(), Path::new("../hello.txt"));
    let (hello, hard) = (fs::metadata(root.join("hello.txt")).unwrap(), fs::metadata(root.join("dir/hard")).unwrap());
    assert_eq!(hello.ino(), hard.ino(), "dir/hard is a hardlink of hello.txt");
    assert!(fs::symlink_metadata(root.join("dir/fifo")).unwrap().file_type().is_fifo());
    assert_eq!((hello.mtime(), hello.mtime_nsec()), (1_767_323_045, 123_456_789));

    // The config lists no features, so a backup into the copy writes the
    // v1 forms again, sealed (format-spec/v2/trees-index.md section 5):
    // v1 tree blobs, v1 index envelopes. The repository stays what its
    // config says, for every arc that reads it.
    assert!(!repo.writes_trees_v2() && !repo.writes_index_v2());
    let index_dir = repo_dir.join("index");
    let names = |d: &Path| -> std::collections::HashSet<String> {
        fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    let before = names(&index_dir);
    let src = tmp.path().join("more");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..300 {
        fs::write(src.join("sub").join(format!("f{i:04}")), format!("file {i}\n")).unwrap();
    }
    let result = backup(&repo, BackupOptions { paths: vec![src.clone()], ..Default::default() }, &NoProgress).unwrap();
    let new: Vec<String> = names(&index_dir).difference(&before).cloned().collect();
    assert!(!new.is_empty(), "the backup wrote an index file");
    let keys = repo.keys().unwrap();
    for n in &new {
        let data = fs::read(index_dir.join(n)).unwrap();
        let plain = sealed::open_file(keys, Purpose::INDEX_FILE, &[], &data, "index file", n).unwrap();
        assert_eq!(&plain[..6], b"ARCF\x02\x01", "{n}: a v1 index envelope (type 2, version 1), sealed");
    }
    assert_eq!(tree_v2::blob_version(&repo.read_blob(&result.snapshot.tree).unwrap()), Some(1), "a v1 root tree");
    let snap = repo.load_snapshot(&result.snapshot_id).unwrap();
    let sub = match locate(&repo, &snap, &src.join("sub").display().to_string()).unwrap() {
        Located::Node(n) => n.subtree.unwrap(),
        other => panic!("sub is {other:?}"),
    };
    assert_eq!(tree_v2::blob_version(&repo.read_blob(&sub).unwrap()), Some(1), "300 entries in one v1 tree blob");
    assert_eq!(repo.load_tree(&sub).unwrap().nodes.len(), 300);
    let report = check(&repo, &CheckOptions { read_data: true, ..Default::default() }, &NoProgress).unwrap();
    assert!(report.ok(), "check after a backup into the frozen repository's copy: {:?}", report.errors);
}

fn frozen_split_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../format-spec/vectors/repo-v2-split")
}

/// The second frozen v2 repository (make-repo-v2-split.sh): features
/// trees-v2 and index-v2, a directory of 3,001 entries split into several
/// tree blobs, a file whose chunk list is a blob of its own, index v2 files
/// and a pending prune mark. Every later arc must read it, and a prune run
/// on a copy must finish the mark it left.
#[test]
fn frozen_v2_split_repository_checks_restores_and_sweeps_its_mark() {
    use arc_engine::ops::prune::{prune, PruneOptions};
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    copy_tree(&frozen_split_repo(), &repo_dir);
    let pw = || Ok(zeroize::Zeroizing::new("arc frozen repo-v2-split".to_string()));
    let repo = Repository::open_local_with(&repo_dir, Some(&pw)).expect("the repository opens with its passphrase");
    assert_eq!(repo.config().version, 2);
    assert!(repo.writes_trees_v2() && repo.writes_index_v2(), "the config lists trees-v2 and index-v2");

    let report = check(&repo, &CheckOptions { read_data: true, ..Default::default() }, &NoProgress).unwrap();
    assert!(report.ok(), "check of the frozen repository: {:?}", report.errors);
    let snaps = repo.snapshots().unwrap();
    assert_eq!(snaps.len(), 2, "snapshot `one` was forgotten before the prune that left the mark");

    let src = "/tmp/arc-repo-v2-split-src";
    let snap = repo.find_snapshot("latest", &SnapshotFilter { paths: vec![src.into()], ..Default::default() }).unwrap();
    assert_eq!(snap.file.tags, ["two"]);
    let big = match locate(&repo, &snap, &format!("{src}/big")).unwrap() {
        Located::Node(n) => n.subtree.unwrap(),
        other => panic!("big is {other:?}"),
    };
    assert_eq!(tree_v2::blob_version(&repo.read_blob(&big).unwrap()), Some(2), "big/ is a v2 (split) tree");
    assert!(repo.load_tree_with_parts(&big).unwrap().1.len() > 1, "big/ is split into several blobs");
    let random = match locate(&repo, &snap, &format!("{src}/dir/random.bin")).unwrap() {
        Located::Node(n) => n,
        other => panic!("random.bin is {other:?}"),
    };
    assert!(random.chunks.len() > tree_v2::INLINE_CHUNKS_MAX, "random.bin's chunk list is a blob of its own");

    let restore_and_compare = |repo: &Repository, target: &Path| {
        let result =
            restore(repo, &snap, &RestoreOptions { target: target.to_path_buf(), ..Default::default() }, &NoProgress)
                .unwrap();
        assert_eq!(result.errors, 0);
        let root = target.join(src.trim_start_matches('/'));
        assert_eq!(fs::read(root.join("dir/random.bin")).unwrap(), frozen_random_bin());
        assert_eq!(fs::read_dir(root.join("big")).unwrap().count(), 3001);
        for i in [0, 1, 1499, 1501, 2999] {
            assert_eq!(fs::read(root.join(format!("big/f{i:05}"))).unwrap(), format!("file {i}\n").as_bytes());
        }
        assert_eq!(fs::read(root.join("big/f01500")).unwrap(), b"changed 1500\n");
        assert_eq!(fs::read(root.join("big/f03000")).unwrap(), b"file 3000\n");
    };
    restore_and_compare(&repo, &tmp.path().join("restored"));

    // The pending mark: its grace (1 s) counts from the storage time of the
    // copy's mark file, so a prune two seconds later sweeps it.
    assert_eq!(fs::read_dir(repo_dir.join("marks")).unwrap().count(), 1);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let swept = prune(&repo, &PruneOptions::default(), &NoProgress).unwrap();
    assert_eq!(swept.packs_deleted, 3, "{swept:?}");
    assert_eq!(swept.packs_recovered, 0, "{swept:?}");
    assert_eq!(fs::read_dir(repo_dir.join("marks")).unwrap().count(), 0, "the swept mark is gone");
    let report = check(&repo, &CheckOptions { read_data: true, ..Default::default() }, &NoProgress).unwrap();
    assert!(report.ok(), "check after the sweep: {:?}", report.errors);
    restore_and_compare(&repo, &tmp.path().join("restored-after-sweep"));
}
