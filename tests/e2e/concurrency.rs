//! Several arc processes on one repository: concurrent backups (shared
//! locks, one index database written by all), backup and prune racing
//! (the exclusive lock refuses one of them cleanly), and locks left by dead
//! processes (broken on this host, never a live process's).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use arc_engine::format::lock::LockFile;

use crate::util::*;

/// A distinct tree per writer: some random files (new data for every
/// writer) and some text shared by all (dedup between concurrent writers).
fn writer_tree(root: &Path, writer: u64, round: u64) {
    for i in 0..3u64 {
        write_random_file(&root.join(format!("r{i}.bin")), 400_000 + i * 1001, writer * 1000 + round * 10 + i);
    }
    fs::create_dir_all(root.join("shared")).unwrap();
    for i in 0..5u64 {
        fs::write(root.join(format!("shared/t{i}.txt")), repetitive_text(50_000, i)).unwrap();
    }
}

/// Starts `n` backups of different trees at once and asserts that all
/// succeed and each snapshot restores byte for byte.
fn parallel_backups(env: &TestEnv, n: u64, round: u64) {
    let srcs: Vec<PathBuf> = (0..n).map(|w| env.path(format!("src-{round}-{w}"))).collect();
    for (w, s) in srcs.iter().enumerate() {
        writer_tree(s, w as u64, round);
    }
    let running: Vec<Running> = srcs.iter().map(|s| env.arc().args(["--json", "backup"]).arg(s).spawn()).collect();
    let mut snaps = Vec::new();
    for r in running {
        let out = r.wait().success();
        snaps.push(jstr(&out.json(), "short_id").to_string());
    }
    env.arc().args(["check", "--read-data"]).run().success();
    for (s, snap) in srcs.iter().zip(&snaps) {
        let target = env.path(format!("restore-{snap}"));
        env.restore(snap, &target);
        assert_trees_equal(s, &restored(&target, s), &CompareOpts::default());
    }
    assert!(files_under(&env.repo.join("locks")).is_empty(), "a backup left its lock behind");
}

#[test]
fn two_and_four_concurrent_backups_all_succeed_and_restore() {
    // Runs: 3 rounds of 2 writers, 2 rounds of 4 writers, one repository.
    let env = TestEnv::new();
    env.init();
    for round in 0..3 {
        parallel_backups(&env, 2, round);
    }
    for round in 3..5 {
        parallel_backups(&env, 4, round);
    }
    assert_eq!(env.snapshots_json().len(), 3 * 2 + 2 * 4);
}

/// A process that stays alive until killed: a live lock holder.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(Command::new("sleep").arg("600").spawn().expect("start sleep"))
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pid of a process that has exited (and been reaped).
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

fn write_lock(env: &TestEnv, name_seed: u8, exclusive: bool, host: &str, pid: u32, age_secs: i64, op: &str) -> PathBuf {
    let when = chrono::Utc::now() - chrono::Duration::seconds(age_secs);
    let lock = LockFile {
        exclusive,
        host: host.to_string(),
        pid,
        username: "someone".into(),
        time: when,
        refreshed: when,
        operation: op.into(),
    };
    let path = env.repo.join("locks").join(format!("{name_seed:02x}").repeat(32));
    // Sealed with the repository's keys, as a real holder writes it.
    let repo = open_repo(&env.repo);
    let keys = repo.keys().expect("a v2 repository has keys");
    let bytes =
        arc_engine::format::sealed::seal_file(keys, arc_engine::crypto::Purpose::LOCK, &[], &lock.encode()).unwrap();
    fs::write(&path, bytes).unwrap();
    // Format v2 judges a lock's age by the storage's timestamp of the file.
    let mtime = std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs.max(0) as u64);
    filetime::set_file_mtime(&path, filetime::FileTime::from_system_time(mtime)).unwrap();
    path
}

fn small_repo() -> (TestEnv, PathBuf) {
    let env = TestEnv::new();
    let src = env.path("src");
    writer_tree(&src, 1, 1);
    env.init();
    env.backup([&src]);
    (env, src)
}

#[test]
fn live_exclusive_lock_refuses_backup_in_one_line_naming_the_holder() {
    let (env, src) = small_repo();
    let host = arc_engine::lock::hostname();
    let holder = Sleeper::start();
    let lock = write_lock(&env, 0xaa, true, &host, holder.pid(), 0, "prune");
    let before = env.snapshot_files();
    for args in [vec!["backup"], vec!["check"], vec!["restore", "latest", "--target"]] {
        let mut cmd = env.arc().args(&args);
        if args[0] == "backup" {
            cmd = cmd.arg(&src);
        }
        if args[0] == "restore" {
            cmd = cmd.arg(env.path("r"));
        }
        let out = cmd.run().failure();
        let line = out.one_line_error();
        assert!(
            line.contains("locked") && line.contains("prune") && line.contains(&holder.pid().to_string()),
            "{args:?}: the refusal does not name the holder: {line}"
        );
    }
    assert_eq!(env.snapshot_files(), before, "a refused backup wrote a snapshot");
    assert!(lock.exists(), "a live process's lock was broken");
    // `arc unlock` only removes stale locks: this one stays.
    env.arc().arg("unlock").run().success().stdout_contains("removed 0 lock(s)");
    assert!(lock.exists(), "`arc unlock` removed a live process's lock");
    // A shared lock of a live process refuses an instant prune (format v2:
    // a two-phase prune and forget go ahead; they are safe beside backups).
    fs::remove_file(&lock).unwrap();
    let lock = write_lock(&env, 0xab, false, &host, holder.pid(), 0, "backup");
    let out = env.arc().args(["prune", "--instant"]).run().failure();
    let line = out.one_line_error();
    assert!(line.contains("backup") && line.contains(&holder.pid().to_string()), "prune --instant: {line}");
    // ...but not another backup.
    env.backup([&src]);
    assert!(lock.exists());
}

#[test]
fn stale_locks_are_broken_only_when_provably_dead() {
    let (env, src) = small_repo();
    let host = arc_engine::lock::hostname();
    // Runs: a dead pid on this host (exclusive), a dead pid (shared), a
    // fresh lock of another host (kept: its process may live), an old lock
    // of another host (ignored, left for `arc unlock`).
    let dead_excl = write_lock(&env, 0x01, true, &host, dead_pid(), 0, "prune");
    let dead_shared = write_lock(&env, 0x02, false, &host, dead_pid(), 0, "backup");
    env.backup([&src]);
    assert!(!dead_excl.exists() && !dead_shared.exists(), "locks of dead processes were not removed");

    let other = write_lock(&env, 0x03, true, "some-other-host", 1, 0, "prune");
    let out = env.arc().arg("backup").arg(&src).run().failure();
    assert!(out.one_line_error().contains("some-other-host"), "{}", out.describe());
    env.arc().arg("unlock").run().success().stdout_contains("removed 0 lock(s)");
    assert!(other.exists(), "a fresh lock of another host was removed");
    fs::remove_file(&other).unwrap();

    let old = write_lock(&env, 0x04, true, "some-other-host", 1, 3600, "prune");
    env.backup([&src]);
    assert!(old.exists(), "another host's lock is not ours to delete implicitly");
    env.arc().arg("unlock").run().success().stdout_contains("removed 1 lock(s)");
    assert!(!old.exists());
    env.arc().args(["check", "--read-data"]).run().success();
}

#[test]
fn backup_and_prune_racing_are_correct_or_cleanly_refused() {
    // Runs: 6 rounds; each round forgets the oldest snapshot and starts
    // prune and a backup of new data at the same moment.
    let env = TestEnv::new();
    env.init();
    let mut expected: Vec<(String, PathBuf)> = Vec::new();
    let (mut refused_backup, mut refused_prune) = (0, 0);
    for round in 0..6u64 {
        let src = env.path(format!("src-{round}"));
        writer_tree(&src, 7, round);
        let b = env.backup([&src]);
        expected.push((jstr(&b, "short_id").to_string(), src.clone()));
        if expected.len() > 2 {
            let (old, _) = expected.remove(0);
            env.arc().args(["forget", &old]).run().success();
        }
        let next = env.path(format!("next-{round}"));
        writer_tree(&next, 8, round);
        let prune = env.arc().arg("prune").spawn();
        let backup = env.arc().args(["--json", "backup"]).arg(&next).spawn();
        let (p, b) = (prune.wait(), backup.wait());
        for (out, what) in [(&p, "prune"), (&b, "backup")] {
            if !out.status.success() {
                let line = out.one_line_error();
                assert!(line.contains("locked by"), "{what} failed other than by the lock: {line}");
                if what == "prune" {
                    refused_prune += 1;
                } else {
                    refused_backup += 1;
                }
            }
        }
        // Both backing off is allowed by the lock's design (each saw the
        // other's lock file): safe, and counted above.
        if b.status.success() {
            expected.push((jstr(&b.json(), "short_id").to_string(), next));
        }
        env.arc().args(["check", "--read-data"]).run().success();
        for (snap, src) in &expected {
            let target = env.path(format!("r-{round}-{snap}"));
            env.restore(snap, &target);
            assert_trees_equal(src, &restored(&target, src), &CompareOpts::default());
            fs::remove_dir_all(&target).unwrap();
        }
        assert!(files_under(&env.repo.join("locks")).is_empty());
    }
    eprintln!("backup/prune race: {refused_backup} backup(s) and {refused_prune} prune(s) refused by the lock");
}
