//! The comparison helper must be able to fail: two builds of the fixture
//! compare equal, and every kind of damage applied to one of them is
//! reported. (Without arc; this guards the other tests against vacuity.)

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use filetime::FileTime;

use crate::fixture::build_full;
use crate::util::*;

fn times(p: &Path) -> (FileTime, FileTime) {
    let m = fs::symlink_metadata(p).unwrap();
    (FileTime::from_last_access_time(&m), FileTime::from_last_modification_time(&m))
}

/// Runs `f` on `p`, then puts back the times of `p` and its parent so that
/// only the intended difference remains.
fn keeping_times(p: &Path, f: impl FnOnce(&Path)) {
    let parent = p.parent().unwrap();
    let (pa, pm) = times(parent);
    let before = fs::symlink_metadata(p).is_ok().then(|| times(p));
    f(p);
    if let (Some((a, m)), true) = (before, fs::symlink_metadata(p).is_ok()) {
        filetime::set_symlink_file_times(p, a, m).unwrap();
    }
    filetime::set_symlink_file_times(parent, pa, pm).unwrap();
}

#[test]
fn compare_helper_detects_every_kind_of_difference() {
    let env = TestEnv::new();
    let a = build_full(&env.path("a"), 0);
    let b = build_full(&env.path("b"), 0);
    let opts = CompareOpts { symlink_mtime: a.symlink_mtimes, sparse: vec![a.sparse.clone()], ..Default::default() };
    assert_trees_equal(&a.root, &b.root, &opts);
    let r = b.root.clone();
    let mut expect: Vec<(&str, &str)> = Vec::new();

    keeping_times(&r.join("data/r64k"), |p| {
        let mut v = fs::read(p).unwrap();
        v[1000] ^= 1;
        fs::write(p, v).unwrap();
    });
    expect.push(("data/r64k", "content differs at byte 1000"));

    keeping_times(&r.join("data/hundred"), |p| {
        let mut v = fs::read(p).unwrap();
        v.push(0);
        fs::write(p, v).unwrap();
    });
    expect.push(("data/hundred", "size"));

    keeping_times(&r.join("modes/setuid"), |p| chmod(p, 0o755));
    expect.push(("modes/setuid", "mode"));
    keeping_times(&r.join("modes/sticky"), |p| chmod(p, 0o777));
    expect.push(("modes/sticky", "mode"));

    let (at, mt) = times(&r.join("data/page"));
    filetime::set_file_times(
        r.join("data/page"),
        at,
        FileTime::from_unix_time(mt.unix_seconds(), mt.nanoseconds() + 1),
    )
    .unwrap();
    expect.push(("data/page", "mtime"));

    let (at, mt) = times(&r.join("empty_dir"));
    filetime::set_file_times(
        r.join("empty_dir"),
        at,
        FileTime::from_unix_time(mt.unix_seconds() + 1, mt.nanoseconds()),
    )
    .unwrap();
    expect.push(("empty_dir", "mtime"));

    if a.symlink_mtimes {
        let (at, mt) = times(&r.join("sym/dangling"));
        filetime::set_symlink_file_times(
            r.join("sym/dangling"),
            at,
            FileTime::from_unix_time(mt.unix_seconds(), mt.nanoseconds() ^ 1),
        )
        .unwrap();
        expect.push(("sym/dangling", "mtime"));
    }

    keeping_times(&r.join("sym/dir"), |p| {
        fs::remove_file(p).unwrap();
        std::os::unix::fs::symlink("../DATA", p).unwrap();
    });
    expect.push(("sym/dir", "symlink target"));

    keeping_times(&r.join("xattr/file"), |p| xattr::set(p, "user.binary", b"\x00\x01").unwrap());
    expect.push(("xattr/file", "xattrs"));
    keeping_times(&r.join("xattr"), |p| xattr::remove(p, "user.note").unwrap());
    expect.push(("xattr", "xattrs"));

    if is_root() {
        keeping_times(&r.join("owned/file"), |p| std::os::unix::fs::chown(p, Some(0), Some(0)).unwrap());
        expect.push(("owned/file", "owner"));
        // chown cleared nothing relevant here; restore the mode it had.
        chmod(&r.join("owned/file"), 0o640);
    }

    // Break the three-way hardlink: c/three-c becomes a copy.
    keeping_times(&r.join("links/c/three-c"), |p| {
        let m = fs::metadata(p).unwrap();
        let data = fs::read(p).unwrap();
        fs::remove_file(p).unwrap();
        fs::write(p, data).unwrap();
        chmod(p, m.mode() & 0o7777);
    });
    expect.push(("links/c/three-c", "link count"));
    expect.push(("links/a/three", "link count"));
    expect.push(("links/b/three-b", "link count"));
    expect.push(("", "hardlink groups differ"));

    keeping_times(&r.join("special/fifo"), |p| {
        fs::remove_file(p).unwrap();
        fs::write(p, b"").unwrap();
    });
    expect.push(("special/fifo", "type"));

    if b.devices {
        keeping_times(&r.join("special/chardev"), |p| {
            let m = fs::symlink_metadata(p).unwrap();
            fs::remove_file(p).unwrap();
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: valid path.
            let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | (m.mode() & 0o7777), libc::makedev(1, 5)) };
            assert_eq!(rc, 0);
        });
        expect.push(("special/chardev", "device"));
    }

    keeping_times(&r.join("data/empty"), |p| fs::remove_file(p).unwrap());
    expect.push(("data/empty", "missing in actual"));
    keeping_times(&r.join("data/extra"), |p| fs::write(p, b"extra").unwrap());
    expect.push(("data/extra", "unexpected entry"));

    keeping_times(&r.join(&b.sparse), |p| {
        let data = fs::read(p).unwrap();
        fs::remove_file(p).unwrap();
        fs::write(p, data).unwrap();
    });
    expect.push(("sparse.img", "not sparse"));

    let diffs = compare_trees(&a.root, &b.root, &opts);
    let mut missing = Vec::new();
    for (path, what) in &expect {
        let found = diffs.iter().any(|d| {
            if path.is_empty() {
                d.starts_with(what)
            } else {
                d.starts_with(&format!("{path}:")) && d.contains(what)
            }
        });
        if !found {
            missing.push(format!("{path}: {what}"));
        }
    }
    assert!(missing.is_empty(), "compare_trees missed: {missing:?}\nit reported:\n  {}", diffs.join("\n  "));
    // No spurious differences beyond the ones made.
    let unexplained: Vec<&String> = diffs
        .iter()
        .filter(|d| {
            !expect
                .iter()
                .any(|(p, what)| if p.is_empty() { d.starts_with(what) } else { d.starts_with(&format!("{p}:")) })
        })
        .collect();
    assert!(unexplained.is_empty(), "unexpected differences: {unexplained:?}");
}
