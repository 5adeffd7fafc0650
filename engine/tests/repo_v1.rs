//! Backward compatibility: the frozen format-v1 repository in
//! `format-spec/vectors/repo-v1` (made once by `make-repo-v1.sh`) must stay
//! readable, checkable and restorable by every later arc.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod common;
use common::{copy_tree, frozen_random_bin};

use arc_engine::ops::check::{check, CheckOptions};
use arc_engine::ops::restore::{restore, RestoreOptions};
use arc_engine::ops::tree_walk::{locate, Located};
use arc_engine::progress::NoProgress;
use arc_engine::{Repository, SnapshotFilter};

fn frozen_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../format-spec/vectors/repo-v1")
}

#[test]
fn frozen_v1_repository_checks_and_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    copy_tree(&frozen_repo(), &repo_dir);
    let repo = Repository::open_local(&repo_dir).expect("v1 repository opens");
    assert_eq!(repo.config().version, 1);

    let report = check(&repo, &CheckOptions { read_data: true, ..Default::default() }, &NoProgress).unwrap();
    assert!(report.ok(), "check of the frozen repository: {:?}", report.errors);
    assert_eq!(report.snapshots, 2);

    let snaps = repo.snapshots().unwrap();
    assert_eq!(snaps.len(), 2);
    assert!(snaps.iter().all(|s| s.file.host == "golden" && s.file.tags == ["v1"]));
    assert_eq!(snaps[0].file.time.to_rfc3339(), "2026-01-02T03:04:05+00:00");
    assert_eq!(snaps[0].file.paths, ["/tmp/arc-repo-v1-src"]);
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
        .find_snapshot("latest", &SnapshotFilter { paths: vec!["/tmp/arc-repo-v1-src".into()], ..Default::default() })
        .unwrap();
    let result = restore(&repo, &tree_snap, &opts, &NoProgress).unwrap();
    assert_eq!(result.errors, 0);
    let root = target.join("tmp/arc-repo-v1-src");
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
}
