//! Change detection against the parent snapshot: a backup with no changes
//! reads no file contents at all; a rewrite that keeps size and mtime is
//! caught by its ctime and read again; a renamed file is read but adds no
//! data.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use crate::util::*;

#[test]
fn no_change_backup_reads_no_file_contents_and_a_new_ctime_is_read_again() {
    let env = TestEnv::new();
    let src = env.path("src");
    let mut files: Vec<PathBuf> = Vec::new();
    let mut rng = Rng::new(99);
    for d in 0..4u64 {
        for f in 0..10u64 {
            let rel = PathBuf::from(format!("d{d}/m{f}.eml"));
            write_random_file(&src.join(&rel), 500 + rng.below(30_000), 10 * d + f);
            files.push(rel);
        }
    }
    write_random_file(&src.join("big.bin"), 5 * MIB, 7);
    files.push("big.bin".into());
    let total: u64 = files.iter().map(|f| fs::metadata(src.join(f)).unwrap().len()).sum();
    let n = files.len() as u64;
    env.init();

    let b1 = env.backup([&src]);
    assert_eq!(ju64(&b1, "summary.bytes_read"), total, "{b1:#}");

    // Nothing changed: not one byte of file content is read.
    let b2 = env.backup([&src]);
    assert_eq!(ju64(&b2, "summary.bytes_read"), 0, "a no-change backup read file contents: {b2:#}");
    assert_eq!(ju64(&b2, "summary.files_unchanged"), n, "{b2:#}");
    assert_eq!(ju64(&b2, "summary.files_new") + ju64(&b2, "summary.files_changed"), 0, "{b2:#}");
    assert_eq!(ju64(&b2, "summary.total_bytes"), total, "{b2:#}");

    // Same size, same mtime (put back), new content: only the ctime moved.
    let sneaky = src.join("d2/m3.eml");
    let meta = fs::metadata(&sneaky).unwrap();
    let mut content = fs::read(&sneaky).unwrap();
    for b in content.iter_mut() {
        *b ^= 0x5a;
    }
    // Timestamps come from a coarse clock: make sure the ctime can differ.
    std::thread::sleep(Duration::from_millis(20));
    fs::write(&sneaky, &content).unwrap();
    filetime::set_file_mtime(&sneaky, filetime::FileTime::from_last_modification_time(&meta)).unwrap();
    let after = fs::metadata(&sneaky).unwrap();
    assert_eq!(
        (after.len(), filetime::FileTime::from_last_modification_time(&after)),
        (meta.len(), filetime::FileTime::from_last_modification_time(&meta))
    );
    let b3 = env.backup([&src]);
    assert_eq!(ju64(&b3, "summary.files_changed"), 1, "a rewrite keeping size and mtime was not noticed: {b3:#}");
    assert_eq!(ju64(&b3, "summary.bytes_read"), meta.len(), "only the rewritten file is read: {b3:#}");
    let cat = env.arc().arg("cat").arg(format!("latest:{}", sneaky.display())).run().success();
    assert!(cat.stdout == content, "the rewritten content was not stored");

    // A renamed file (a maildir flag change): read once, no new data.
    let renamed = src.join("d1/m4.eml:2,S");
    let size = fs::metadata(src.join("d1/m4.eml")).unwrap().len();
    fs::rename(src.join("d1/m4.eml"), &renamed).unwrap();
    let b4 = env.backup([&src]);
    assert_eq!(ju64(&b4, "summary.files_new"), 1, "{b4:#}");
    assert_eq!(ju64(&b4, "summary.bytes_read"), size, "{b4:#}");
    // Only the two changed directory trees and the root path's trees are new.
    assert!(ju64(&b4, "summary.bytes_added") < 16 * 1024, "a rename added data: {b4:#}");

    // --force-read reads everything again, and stores nothing new.
    let b5 = env.backup(["--force-read", src.to_str().unwrap()]);
    assert_eq!(ju64(&b5, "summary.bytes_read"), total, "{b5:#}");
    // (Directories above the source, like /tmp, may have changed meanwhile.)
    assert!(ju64(&b5, "summary.bytes_added") < 16 * 1024, "{b5:#}");
}

/// Depth-first walk of `dir` with names in byte order: the order arc must
/// walk in (SPEC 8.3), here computed the slow and obvious way.
fn dfs(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    use std::os::unix::ffi::OsStrExt;
    let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for n in names {
        let p = dir.join(&n);
        out.push(p.clone());
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            dfs(&p, out);
        }
    }
}

/// The walk lists many directories in parallel and ahead of need; what it
/// hands on must still be in depth-first, byte-sorted order: the listing of
/// the snapshot equals a plain recursive walk, and the first member of a
/// hardlink group is the first in that order even where byte order and
/// path order disagree (`a/...` comes before `a.b`, though '.' < '/').
#[test]
fn parallel_walk_keeps_depth_first_byte_order_on_a_wide_deep_tree() {
    let env = TestEnv::new();
    let src = env.path("src");
    // Wide: 40 x 25 directories of 20 files (20 000 entries, more than the
    // walk buffers ahead), plus names whose byte order is tricky.
    for d in 0..40 {
        for s in 0..25 {
            let dir = src.join(format!("d{d:02}/s{s:02}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..20 {
                fs::write(dir.join(format!("f{f}")), format!("{d} {s} {f}")).unwrap();
            }
        }
    }
    // Deep: a chain of 80 directories.
    let mut deep = src.join("deep");
    for i in 0..80 {
        deep = deep.join(format!("l{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("bottom"), "deep").unwrap();
    for dir in ["B", "a/z", "a-", "a0"] {
        fs::create_dir_all(src.join(dir)).unwrap();
    }
    fs::write(src.join("zz"), "linked").unwrap();
    for link in ["a.b", "a/z/x", "B/y", "d07/s03/g", "a0/q"] {
        fs::hard_link(src.join("zz"), src.join(link)).unwrap();
    }
    env.init();
    let b = env.backup([&src]);

    let mut want = Vec::new();
    dfs(&src, &mut want);
    // Directories below the source, the source, and those above it but /.
    let dirs = want.iter().filter(|p| p.is_dir()).count() + 1 + src.ancestors().count() - 2;
    assert_eq!(ju64(&b, "summary.dirs"), dirs as u64, "{b:#}");
    let out = env.arc().args(["ls", "-R", "latest"]).arg(&src).run().success();
    let got: Vec<PathBuf> = out.stdout_str().lines().map(PathBuf::from).collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the snapshot lists entries out of depth-first byte order");
    // "B" (0x42) sorts before "a" (0x61): B/y is the group's first member.
    let long = env.arc().args(["ls", "-l", "latest"]).arg(src.join("a")).run().success().stdout_str();
    let first = src.join("B/y");
    assert!(
        long.lines().any(|l| l.ends_with(&format!("{} => {}", src.join("a/z").display(), first.display())))
            || env
                .arc()
                .args(["ls", "-l", "latest"])
                .arg(src.join("a/z"))
                .run()
                .success()
                .stdout_str()
                .contains(&format!("x => {}", first.display())),
        "a/z/x does not link to B/y:\n{long}"
    );
    for link in ["a.b", "a0/q", "d07/s03/g", "zz"] {
        let l = env.arc().args(["ls", "-l", "latest"]).arg(src.join(link)).run().success().stdout_str();
        assert!(l.trim_end().ends_with(&format!("=> {}", first.display())), "{link} should link to B/y: {l}");
    }
    // (Restoring is covered by the roundtrip tests; restoring 20 000 tiny
    // files takes seconds, which this test does not need.)
    let again = env.backup([&src]);
    assert_eq!(ju64(&again, "summary.bytes_read"), 0, "{again:#}");
    assert_eq!(ju64(&again, "summary.files_unchanged"), 40 * 25 * 20 + 1 + 6, "{again:#}");
}
