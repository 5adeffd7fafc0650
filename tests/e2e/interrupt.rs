//! Backups killed (SIGKILL) or interrupted (SIGINT) midway leave a
//! consistent repository without a snapshot; the next backup reuses what
//! the killed one wrote.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use crate::util::*;

const FILE_SIZE: u64 = 30 * MIB;

fn build_tree(root: &Path, files: u64, seed: u64) -> u64 {
    for i in 0..files {
        write_random_file(&root.join(format!("part{i:02}.bin")), FILE_SIZE + i * 11, seed + i);
    }
    (0..files).map(|i| FILE_SIZE + i * 11).sum()
}

/// Starts `arc backup` of `src` and returns once it has written `packs`
/// packs (files under REPO/data appear only complete, by rename).
fn start_backup_and_wait_for_packs(env: &TestEnv, src: &Path, packs: usize) -> Running {
    let mut running = env.arc().args(["--json", "backup"]).arg(src).spawn();
    let mut exited_early = false;
    let got_packs = wait_for(Duration::from_secs(120), || {
        if env.pack_files().len() >= packs {
            return true;
        }
        if running.has_exited() {
            exited_early = true;
            return true;
        }
        false
    });
    assert!(got_packs && !exited_early, "backup did not write {packs} pack(s) before exiting or within 120 s");
    running
}

/// Kills a backup of `src` with SIGKILL once it has written `packs` packs;
/// asserts it died of the signal and left no snapshot. Returns the bytes of
/// packs it left.
fn kill_backup_after_packs(env: &TestEnv, src: &Path, packs: usize) -> u64 {
    let running = start_backup_and_wait_for_packs(env, src, packs);
    running.signal(libc::SIGKILL);
    let out = running.wait();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "backup was not killed (it finished first?)\n{}",
        out.describe()
    );
    assert!(env.snapshot_files().is_empty(), "a killed backup left a snapshot: {:?}", env.snapshot_files());
    let left: u64 = env.pack_files().iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert!(left > 0);
    left
}

#[test]
fn sigkill_during_backup_leaves_a_consistent_reusable_repository() {
    let env = TestEnv::new();
    let src = env.path("src");
    let total = build_tree(&src, 10, 7000);
    env.init();

    // Packs are uploaded by a few parallel uploaders (2 today), each of
    // which records a pack in the index database before taking the next.
    // Once 5 packs exist, at least one uploader has moved past its first
    // pack, so at least one pack is recorded and its reuse is certain even
    // with the race covered by the next test.
    let left = kill_backup_after_packs(&env, &src, 5);

    // The killed process's session (format v2; a lock in v1) stays behind;
    // it blocks nothing (its process is gone) and `arc unlock` removes it.
    let left_behind = || files_under(&env.repo.join("locks")).len() + files_under(&env.repo.join("sessions")).len();
    assert!(left_behind() > 0, "no session or lock left by the killed backup");
    env.arc().arg("unlock").run().success();
    assert_eq!(left_behind(), 0, "the dead backup's session or lock was not removed by unlock");

    let check = env.arc().arg("check").run();
    assert!(check.status.success(), "check fails after a killed backup\n{}", check.describe());

    let b = env.backup([&src]);
    let stored = ju64(&b, "summary.bytes_added_stored");
    eprintln!("killed run left {left} bytes of packs; the next backup stored {stored} of {total}");
    assert!(
        stored < total,
        "the next backup stored {stored} bytes for {total} bytes of data: it did not reuse the {left} bytes of packs the killed run wrote\n{b:#}"
    );
    assert_eq!(ju64(&b, "summary.total_bytes"), total);

    env.arc().args(["check", "--read-data"]).run().success();
    let target = env.path("restore");
    env.restore("latest", &target);
    assert_trees_equal(&src, &restored(&target, &src), &CompareOpts::default());
}

/// A pack can be durable in REPO/data while neither the index database nor
/// any index file knows it: SIGKILL between the pack's rename and the index
/// database commit (reproduced by killing right as the first pack appears),
/// or a lost index cache. Removing index.redb after the kill reaches that
/// state deterministically. The next backup "adopts" such packs; it must
/// also reuse their blobs instead of storing the data again.
#[test]
fn packs_unknown_to_the_index_are_reused_by_the_next_backup() {
    let env = TestEnv::new();
    let src = env.path("src");
    let total = build_tree(&src, 4, 9000);
    env.init();

    let left = kill_backup_after_packs(&env, &src, 2);
    assert!(files_under(&env.repo.join("index")).is_empty(), "the killed run wrote an index file already");
    std::fs::remove_file(env.index_db()).expect("remove the index database");

    let b = env.backup([&src]);
    // Raw bytes of the blobs it added: stored bytes of format v2 also hold
    // the padding of every frame, which is not data.
    let stored = ju64(&b, "summary.bytes_added");
    eprintln!("killed run left {left} bytes of packs; the next backup added {stored} of {total}");
    // Everything in the left packs is data of this tree: all of it should
    // be reused (allow 1 MiB for trees and pack overhead).
    assert!(
        stored + left <= total + MIB,
        "the next backup stored {stored} bytes for {total} bytes of data although {left} bytes of its packs were already in the repository\n{b:#}"
    );

    env.arc().args(["check", "--read-data"]).run().success();
    let target = env.path("restore");
    env.restore("latest", &target);
    assert_trees_equal(&src, &restored(&target, &src), &CompareOpts::default());
}

#[test]
fn sigint_during_backup_stops_cleanly_without_a_snapshot() {
    let env = TestEnv::new();
    let src = env.path("src");
    build_tree(&src, 5, 8000);
    env.init();

    // SIGINT (Ctrl-C), then SIGTERM on a second attempt: both stop the
    // backup cleanly.
    for (sig, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let packs_before = env.pack_files().len();
        let running = start_backup_and_wait_for_packs(&env, &src, packs_before + 1);
        running.signal(sig);
        let out = running.wait();
        assert!(!out.status.success(), "backup interrupted by {name} exited with success\n{}", out.describe());
        assert!(out.status.code().is_some(), "backup died of {name} instead of stopping cleanly\n{}", out.describe());
        assert!(out.stderr_str().contains("no snapshot was written"), "{name}: what now?\n{}", out.describe());
        assert!(
            env.snapshot_files().is_empty(),
            "a backup interrupted by {name} left a snapshot: {:?}",
            env.snapshot_files()
        );
        assert!(
            files_under(&env.repo.join("locks")).is_empty(),
            "a backup interrupted by {name} left its lock behind: {:?}",
            files_under(&env.repo.join("locks"))
        );
        env.arc().arg("check").run().success();
    }

    // And a later backup completes and restores.
    let b = env.backup([&src]);
    let target = env.path("restore");
    env.restore(jstr(&b, "short_id"), &target);
    assert_trees_equal(&src, &restored(&target, &src), &CompareOpts::default());
}
