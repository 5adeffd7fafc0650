//! A repository on a filesystem that fills up: backup and prune stop with
//! one clear "no space left on device writing <file>" error and a non-zero
//! exit, nothing is lost or left half-written, and once space is freed the
//! next run succeeds (a backup reusing the packs the failed one wrote).
//!
//! The filesystem is a size-limited tmpfs the test mounts itself, which
//! needs root; without root the tests skip with a note.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// A tmpfs of a given size mounted for the duration of a test; unmounted
/// when dropped, also when the test panics.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB on `dir`, or returns None (with a note)
    /// when not root.
    fn mount(dir: &Path, mib: u64) -> Option<Tmpfs> {
        if !requirements_met(&[Need::Root]) {
            return None;
        }
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0755"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mount tmpfs on {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
        Some(Tmpfs { dir: dir.to_path_buf() })
    }

    /// Bytes an unprivileged writer can still allocate.
    fn available(&self) -> u64 {
        let c = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs(3) fills the zeroed struct; the path is a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
        assert_eq!(r, 0, "statvfs {}: {}", self.dir.display(), std::io::Error::last_os_error());
        st.f_bavail as u64 * st.f_frsize as u64
    }

    /// Writes a file that leaves about `leave` bytes free.
    fn fill_leaving(&self, leave: u64) -> PathBuf {
        let filler = self.dir.join("filler");
        let size = self.available().saturating_sub(leave);
        let chunk = vec![0x5au8; MIB as usize];
        let mut f = fs::File::create(&filler).unwrap();
        let mut written = 0;
        while written < size {
            let n = (size - written).min(MIB) as usize;
            std::io::Write::write_all(&mut f, &chunk[..n]).unwrap();
            written += n as u64;
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process of a failed test): detach it so that
            // the test's temporary directory can go.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

fn snapshot_ids(env: &TestEnv, repo: &Path) -> BTreeSet<String> {
    let out = env.arc_at(repo).args(["--json", "snapshots"]).run().success();
    out.json().as_array().expect("snapshot list").iter().map(|s| jstr(s, "id").to_string()).collect()
}

#[track_caller]
fn restore_and_compare(env: &TestEnv, repo: &Path, id: &str, src: &Path, expected: &Path) {
    let target = env.path("restore");
    if target.exists() {
        fs::remove_dir_all(&target).unwrap();
    }
    env.arc_at(repo).args(["restore", id, "--target"]).arg(&target).run().success();
    assert_trees_equal(expected, &restored(&target, src), &CompareOpts { dir_mtime: false, ..Default::default() });
    fs::remove_dir_all(&target).unwrap();
}

/// The error of a run that hit the full disk: exactly one line, naming a
/// file of the repository.
#[track_caller]
fn assert_no_space_error(out: &Output, repo: &Path) -> String {
    assert_eq!(out.code(), Some(1), "expected exit code 1 on a full disk\n{}", out.describe());
    let line = out.one_line_error();
    let prefix = format!("arc: error: no space left on device writing {}/", repo.display());
    assert!(line.starts_with(&prefix), "the error does not say which repository file did not fit: {line:?}");
    line
}

#[track_caller]
fn assert_empty(dir: &Path, what: &str) {
    let left = files_under(dir);
    assert!(left.is_empty(), "{what} left behind: {left:?}");
}

#[test]
fn backup_into_a_full_filesystem_fails_cleanly_and_succeeds_once_space_is_freed() {
    let env = TestEnv::new();
    let Some(fs_) = Tmpfs::mount(&env.path("fs"), 24) else {
        return;
    };
    let repo = env.path("fs/repo");
    env.arc_at(&repo).args(["init", "--pack-size", "1M"]).run().success();
    let src = env.path("src");
    write_random_file(&src.join("first.bin"), 2 * MIB, 1);
    for i in 0..10u64 {
        write_random_file(&src.join(format!("small/s{i}.txt")), 3000 + i, 10 + i);
    }
    let s0 = env.arc_at(&repo).args(["--json", "backup"]).arg(&src).run().success().json();
    let s0 = jstr(&s0, "snapshot_id").to_string();
    let expected0 = env.path("expected0");
    assert!(Command::new("cp").arg("-a").arg(&src).arg(&expected0).status().unwrap().success());
    let data0 = du_apparent(&repo.join("data"), false);

    // 12 MiB of new data into 6 MiB of free space.
    for i in 0..6u64 {
        write_random_file(&src.join(format!("new/n{i}.bin")), 2 * MIB, 100 + i);
    }
    let filler = fs_.fill_leaving(6 * MIB);

    for attempt in 1..=2 {
        let out = env.arc_at(&repo).arg("backup").arg(&src).run();
        let line = assert_no_space_error(&out, &repo);
        eprintln!("attempt {attempt}: {line}");
        assert_eq!(snapshot_ids(&env, &repo), BTreeSet::from([s0.clone()]), "a failed backup wrote a snapshot");
        assert_empty(&repo.join("tmp"), "temporary files");
        assert_empty(&repo.join("locks"), "lock files");
        env.arc_at(&repo).args(["check", "--read-data"]).run().success();
        restore_and_compare(&env, &repo, &s0, &src, &expected0);
    }

    // Space freed: the next backup succeeds and reuses the packs the
    // failed ones made durable.
    let left = du_apparent(&repo.join("data"), false);
    fs::remove_file(&filler).unwrap();
    let b = env.arc_at(&repo).args(["--json", "backup"]).arg(&src).run().success().json();
    let stored = ju64(&b, "summary.bytes_added_stored");
    let after = du_apparent(&repo.join("data"), false);
    eprintln!("packs before the retry: {left} bytes; the retry stored {stored}, data/ now {after}");
    let new = 12 * MIB + 6 * 1000;
    assert!(left > data0 + MIB, "the failed backups made no pack durable ({left} bytes, {data0} before)");
    // Reused, counted per blob: a prune finds nothing stored twice. (Byte
    // totals do not tell: 1 MiB frames, padded, and two open packs chosen
    // at random make identical backups differ by tens of KB.) The slack
    // is for the trees of `src`'s ancestors, which the failed runs may
    // have stored before this test changed their directories.
    let plan = env.arc_at(&repo).args(["--json", "prune", "--dry-run"]).run().success().json();
    let unused = ju64(&plan, "unused_stored_bytes");
    assert!(
        unused <= 64 * 1024 && stored < new,
        "{unused} bytes are stored twice: the failed backups left {} bytes of packs and the retry stored {stored} more for {new} bytes of new data: {b:#}",
        left - data0
    );
    env.arc_at(&repo).args(["check", "--read-data"]).run().success();
    restore_and_compare(&env, &repo, jstr(&b, "snapshot_id"), &src, &src);
    restore_and_compare(&env, &repo, &s0, &src, &expected0);
}

#[test]
fn prune_on_a_full_filesystem_loses_nothing_and_finishes_once_space_is_freed() {
    let env = TestEnv::new();
    let Some(fs_) = Tmpfs::mount(&env.path("fs"), 24) else {
        return;
    };
    let repo = env.path("fs/repo");
    env.arc_at(&repo).args(["init", "--pack-size", "1M"]).run().success();
    let src = env.path("src");
    // Live and dead data share packs: prune has to rewrite them, which
    // needs space before it can free any.
    let mut ids = Vec::new();
    for g in 0..4u64 {
        for i in 0..40u64 {
            // Files i % 4 == 0 keep their first version: a quarter of the
            // first generation's packs stays live.
            if g == 0 || i % 4 == g {
                write_random_file(&src.join(format!("f{i:02}.bin")), 60_000 + 1000 * g, 1000 * g + i);
            }
        }
        let b = env
            .arc_at(&repo)
            .args(["--json", "backup", "--time", &format!("2024-05-{:02}T00:00:00Z", g + 1)])
            .arg(&src)
            .run()
            .success()
            .json();
        ids.push(jstr(&b, "snapshot_id").to_string());
    }
    let expected = env.path("expected");
    assert!(Command::new("cp").arg("-a").arg(&src).arg(&expected).status().unwrap().success());
    env.arc_at(&repo).args(["forget", "--keep-last", "1"]).run().success();
    let kept = ids.last().unwrap().clone();
    let dry = env.arc_at(&repo).args(["--json", "prune", "--dry-run"]).run().success().json();
    let to_write = ju64(&dry, "bytes_copied");
    assert!(to_write > 512 * 1024, "the fixture gives prune too little to rewrite: {dry:#}");

    let packs_before = files_under(&repo.join("data"));
    let filler = fs_.fill_leaving(128 * 1024);
    let out = env.arc_at(&repo).args(["prune", "--instant"]).run();
    let line = assert_no_space_error(&out, &repo);
    eprintln!("prune on a full disk: {line}");
    let missing: Vec<_> = packs_before.iter().filter(|p| !p.exists()).collect();
    assert!(missing.is_empty(), "prune deleted packs although it failed: {missing:?}");
    assert_eq!(snapshot_ids(&env, &repo), BTreeSet::from([kept.clone()]));
    assert_empty(&repo.join("tmp"), "temporary files");
    assert_empty(&repo.join("locks"), "lock files");
    env.arc_at(&repo).args(["check", "--read-data"]).run().success();
    restore_and_compare(&env, &repo, &kept, &src, &expected);

    fs::remove_file(&filler).unwrap();
    let r = env.arc_at(&repo).args(["--json", "prune", "--instant"]).run().success().json();
    assert!(ju64(&r, "packs_repacked") > 0, "{r:#}");
    let check = env.arc_at(&repo).args(["check", "--read-data"]).run().success();
    assert!(!check.stdout_str().contains("warning"), "{}", check.describe());
    restore_and_compare(&env, &repo, &kept, &src, &expected);
}
