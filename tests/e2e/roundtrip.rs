//! Full-fidelity round trips of the "everything" fixture: `arc restore`
//! and `arc dump | tar -x`.

use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::fixture::{build_full, SPARSE_SIZE};
use crate::util::*;

const BIG: u64 = 100 * MIB;

/// Checks the backup summary against the fixture.
#[track_caller]
fn check_summary(b: &serde_json::Value, fx: &crate::fixture::Fixture) {
    let total: u64 = fx.files.iter().map(|f| fs::metadata(fx.root.join(f)).unwrap().len()).sum();
    assert_eq!(ju64(b, "summary.total_files"), fx.files.len() as u64, "total_files in {b:#}");
    assert_eq!(ju64(b, "summary.files_new"), fx.files.len() as u64, "files_new in {b:#}");
    assert_eq!(ju64(b, "summary.total_bytes"), total, "total_bytes in {b:#}");
    assert_eq!(ju64(b, "summary.errors"), 0);
    let short = jstr(b, "short_id");
    assert!(jstr(b, "snapshot_id").starts_with(short));
}

#[test]
fn full_fixture_backup_and_restore_preserve_everything() {
    let env = TestEnv::new();
    let fx = build_full(&env.path("src"), BIG);

    // The source sparse file really is sparse, so the check below means something.
    let src_sparse = fs::metadata(fx.root.join(&fx.sparse)).unwrap();
    assert_eq!(src_sparse.len(), SPARSE_SIZE);
    let sparse_supported = src_sparse.blocks() * 512 < SPARSE_SIZE / 2;

    eprintln!(
        "fixture: devices={} symlink_mtimes={} sparse_supported={sparse_supported}",
        fx.devices, fx.symlink_mtimes
    );
    env.init();
    let b = env.backup([&fx.root]);
    check_summary(&b, &fx);
    let short = jstr(&b, "short_id").to_string();

    let target = env.path("restore");
    let out = env.restore(&short, &target);
    assert!(!out.stderr_str().contains("warning"), "restore printed warnings\n{}", out.describe());
    let opts = CompareOpts {
        symlink_mtime: fx.symlink_mtimes,
        sparse: if sparse_supported { vec![fx.sparse.clone()] } else { Vec::new() },
        ..Default::default()
    };
    assert_trees_equal(&fx.root, &restored(&target, &fx.root), &opts);

    // Restoring by `latest` gives the same tree.
    let target2 = env.path("restore-latest");
    env.restore("latest", &target2);
    assert_trees_equal(&fx.root, &restored(&target2, &fx.root), &opts);

    // A partial restore that cuts both hardlink groups: links/b holds the
    // second paths of groups whose first paths (links/a) are not restored,
    // so they must get their content anyway.
    let target3 = env.path("restore-partial");
    let links_b = fx.root.join("links/b");
    env.arc().args(["restore", &short, "--target"]).arg(&target3).arg("--include").arg(&links_b).run().success();
    let partial = CompareOpts { link_counts: false, sparse: Vec::new(), ..opts.clone() };
    assert_trees_equal(&links_b, &restored(&target3, &links_b), &partial);
    assert!(!restored(&target3, &fx.root.join("links/a")).exists(), "--include restored links/a");
    assert!(!restored(&target3, &fx.root.join("data")).exists(), "--include restored data/");
    // The directories above the included path get their own metadata.
    for anc in [fx.root.join("links"), fx.root.clone()] {
        let (e, a) = (fs::metadata(&anc).unwrap(), fs::metadata(restored(&target3, &anc)).unwrap());
        assert_eq!(
            (e.mode(), e.uid(), e.gid(), e.mtime(), e.mtime_nsec()),
            (a.mode(), a.uid(), a.gid(), a.mtime(), a.mtime_nsec()),
            "metadata of the ancestor {} in a partial restore",
            anc.display()
        );
    }
}

#[test]
fn full_fixture_dump_extracts_equal_with_gnu_tar() {
    require!(Need::Program("tar", "tar"));
    let env = TestEnv::new();
    let fx = build_full(&env.path("src"), BIG);
    env.init();
    let b = env.backup([&fx.root]);
    check_summary(&b, &fx);
    let short = jstr(&b, "short_id").to_string();

    let tarfile = env.path("snapshot.tar");
    env.arc().args(["dump", &short]).stdout_to(&tarfile).run().success();

    // Member names are snapshot paths without a leading '/'.
    let list = TestCommand::new("tar").arg("-tf").arg(&tarfile).run().success();
    let names = list.stdout_str();
    let root_rel = fx.root.strip_prefix("/").unwrap().to_string_lossy().into_owned();
    assert!(!names.lines().any(|l| l.starts_with('/')), "absolute member names:\n{names}");
    for want in ["data/small.txt", "links/c/three-c", "sym/dangling", "special/fifo", "empty_dir"] {
        let full = format!("{root_rel}/{want}");
        assert!(
            names.lines().any(|l| l.trim_end_matches('/') == full),
            "member {full} missing from the archive:\n{}",
            names.lines().take(80).collect::<Vec<_>>().join("\n")
        );
    }

    let x = env.path("untar");
    fs::create_dir(&x).unwrap();
    TestCommand::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&tarfile)
        .arg("-C")
        .arg(&x)
        .run()
        .success();
    let opts = CompareOpts { symlink_mtime: fx.symlink_mtimes, skip_sockets: true, ..Default::default() };
    assert_trees_equal(&fx.root, &restored(&x, &fx.root), &opts);

    // A sub-path dump holds only that subtree, under its full snapshot path.
    let subtar = env.path("links.tar");
    env.arc()
        .arg("dump")
        .arg(format!("{short}:{}", fx.root.join("links").display()))
        .stdout_to(&subtar)
        .run()
        .success();
    let x2 = env.path("untar-links");
    fs::create_dir(&x2).unwrap();
    TestCommand::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&subtar)
        .arg("-C")
        .arg(&x2)
        .run()
        .success();
    assert_trees_equal(&fx.root.join("links"), &restored(&x2, &fx.root.join("links")), &opts);
    assert!(!restored(&x2, &fx.root.join("data")).exists(), "sub-path dump contains data/");

    // A sub-path dump that cuts both hardlink groups (their first paths are
    // in links/a): the members in links/b must carry the content.
    let btar = env.path("links-b.tar");
    let links_b = fx.root.join("links/b");
    env.arc().arg("dump").arg(format!("{short}:{}", links_b.display())).stdout_to(&btar).run().success();
    let x3 = env.path("untar-links-b");
    fs::create_dir(&x3).unwrap();
    TestCommand::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&btar)
        .arg("-C")
        .arg(&x3)
        .run()
        .success();
    let partial = CompareOpts { link_counts: false, ..opts.clone() };
    assert_trees_equal(&links_b, &restored(&x3, &links_b), &partial);
}

/// The fixture through a chain of backups: unchanged files come from the
/// parent snapshot (hardlinks, sparse files, xattrs included), and
/// metadata-only changes and a write through one link of a hardlink group
/// are all picked up.
#[test]
fn full_fixture_incremental_backups_restore_exactly() {
    let env = TestEnv::new();
    let fx = build_full(&env.path("src"), 0);
    let opts = CompareOpts { symlink_mtime: fx.symlink_mtimes, ..Default::default() };
    let n = fx.files.len() as u64;
    env.init();
    let b1 = env.backup([&fx.root]);
    check_summary(&b1, &fx);

    let b2 = env.backup([&fx.root]);
    assert_eq!(ju64(&b2, "summary.files_unchanged"), n, "{b2:#}");
    assert_eq!(ju64(&b2, "summary.files_new") + ju64(&b2, "summary.files_changed"), 0, "{b2:#}");
    assert_eq!(ju64(&b2, "summary.bytes_read"), 0, "unchanged files were read again: {b2:#}");
    let t2 = env.path("restore2");
    env.restore(jstr(&b2, "short_id"), &t2);
    assert_trees_equal(&fx.root, &restored(&t2, &fx.root), &opts);

    // Metadata-only changes (mtimes kept), and new content written through
    // the second link of the three-way hardlink group.
    let keep = |p: &std::path::Path, f: &dyn Fn(&std::path::Path)| {
        let m = fs::symlink_metadata(p).unwrap();
        f(p);
        filetime::set_symlink_file_times(
            p,
            filetime::FileTime::from_last_access_time(&m),
            filetime::FileTime::from_last_modification_time(&m),
        )
        .unwrap();
    };
    keep(&fx.root.join("data/small.txt"), &|p| chmod(p, 0o640));
    keep(&fx.root.join("data/one"), &|p| xattr::set(p, "user.added", b"later").unwrap());
    keep(&fx.root.join("xattr"), &|p| xattr::set(p, "user.dir", b"changed").unwrap());
    if is_root() {
        keep(&fx.root.join("owned/file"), &|p| std::os::unix::fs::chown(p, Some(2222), Some(3333)).unwrap());
        chmod(&fx.root.join("owned/file"), 0o640);
    }
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(fx.root.join("links/b/three-b")).unwrap();
        f.write_all_at(b"written through the second link", 1000).unwrap();
    }
    let b3 = env.backup([&fx.root]);
    assert!(ju64(&b3, "summary.files_changed") >= 5, "{b3:#}");
    assert_eq!(ju64(&b3, "summary.files_new"), 0, "{b3:#}");
    let t3 = env.path("restore3");
    env.restore(jstr(&b3, "short_id"), &t3);
    assert_trees_equal(&fx.root, &restored(&t3, &fx.root), &opts);

    // The second snapshot is unaffected by the later changes.
    let old = env
        .arc()
        .arg("cat")
        .arg(format!("{}:{}", jstr(&b2, "short_id"), fx.root.join("links/c/three-c").display()))
        .run()
        .success();
    let now = fs::read(fx.root.join("links/c/three-c")).unwrap();
    assert_eq!(old.stdout.len(), now.len());
    assert!(old.stdout != now, "snapshot 2 shows content written after it was taken");
}
