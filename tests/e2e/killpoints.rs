//! kill -9 at every durable step of backup, prune, forget and `repair
//! packs`, and (format v2 protocol) of backup with a session, both phases
//! of prune (mark, sweep) and copy.
//!
//! The engine counts every durable step it takes on a repository (a
//! temporary file half and fully written, its fsync, rename, directory
//! fsync, unlink, index database commit: `arc_engine::fault`) and, with
//! `ARC_FAULT_KILL_AT=N`, sends itself SIGKILL right after step N. Each test
//! first runs the operation with only `ARC_FAULT_TRACE` to learn how many
//! steps it takes, then once per step on a fresh copy of the same
//! repository, and after every kill checks that nothing was lost:
//! `check --read-data` passes, no snapshot is half-written, every snapshot
//! restores byte for byte, and running the operation again succeeds (and,
//! for backup, reuses the packs the killed run made durable).
//!
//! A second strategy kills a larger backup with a real `kill -9` from
//! outside at seeded random moments.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

const KILL_AT: &str = "ARC_FAULT_KILL_AT";
const TRACE: &str = "ARC_FAULT_TRACE";

fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status().expect("run cp");
    assert!(st.success(), "cp -a {} {} failed", from.display(), to.display());
}

fn fresh_copy(base: &Path, to: &Path) {
    if to.exists() {
        fs::remove_dir_all(to).unwrap();
    }
    cp_a(base, to);
}

/// The steps an `ARC_FAULT_TRACE` file recorded, one line each.
fn trace_lines(trace: &Path) -> Vec<String> {
    match fs::read_to_string(trace) {
        Ok(s) => s.lines().map(str::to_string).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read {}: {e}", trace.display()),
    }
}

/// One run of an operation with a kill point.
struct KillRun {
    killed: bool,
    /// The step it died at (or "completed").
    at: String,
}

/// Runs `cmd` with `ARC_FAULT_KILL_AT=n` and asserts the hook did what it
/// says: the process died of SIGKILL exactly at step `n` if it got that
/// far, and otherwise completed successfully.
#[track_caller]
fn run_killed_at(cmd: TestCommand, n: usize, trace: &Path) -> KillRun {
    let _ = fs::remove_file(trace);
    let out = cmd.env(KILL_AT, n.to_string()).env(TRACE, trace).run();
    let steps = trace_lines(trace);
    if steps.len() >= n {
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "the run reached step {n} ({}) but was not killed there\n{}",
            steps[n - 1],
            out.describe()
        );
        assert_eq!(steps.len(), n, "the run went on past its kill point {n}: {steps:#?}");
        KillRun { killed: true, at: steps[n - 1].clone() }
    } else {
        assert!(out.status.success(), "run with kill point {n} ({} steps) failed\n{}", steps.len(), out.describe());
        KillRun { killed: false, at: "completed".into() }
    }
}

/// Number of durable steps `cmd` takes when not killed.
fn count_steps(cmd: TestCommand, trace: &Path) -> (Output, usize) {
    let _ = fs::remove_file(trace);
    let out = cmd.env(TRACE, trace).run().success();
    let n = trace_lines(trace).len();
    (out, n)
}

/// Snapshot ids `arc snapshots` lists, after checking that every file in
/// snapshots/ is one of them: a torn snapshot file would fail to parse
/// and be missing from (or break) the listing.
#[track_caller]
fn snapshot_ids(env: &TestEnv, repo: &Path, ctx: &str) -> BTreeSet<String> {
    let out = env.arc_at(repo).args(["--json", "snapshots"]).run();
    assert!(out.status.success(), "{ctx}: `arc snapshots` fails\n{}", out.describe());
    let ids: BTreeSet<String> = out
        .json()
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}: snapshots --json is not a list"))
        .iter()
        .map(|s| jstr(s, "id").to_string())
        .collect();
    let files: BTreeSet<String> = files_under(&repo.join("snapshots"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ids, "{ctx}: snapshot files and listed snapshots differ");
    ids
}

#[track_caller]
fn check_read_data(env: &TestEnv, repo: &Path, ctx: &str) {
    let out = env.arc_at(repo).args(["check", "--read-data"]).run();
    assert!(out.status.success(), "{ctx}: `check --read-data` fails\n{}", out.describe());
}

/// Restores snapshot `id` from `repo` and compares it with `expected` (the
/// tree that was backed up from `src`).
#[track_caller]
fn assert_restores(env: &TestEnv, repo: &Path, id: &str, src: &Path, expected: &Path, ctx: &str) {
    let target = env.path("restore-check");
    if target.exists() {
        fs::remove_dir_all(&target).unwrap();
    }
    let out = env.arc_at(repo).args(["restore", id, "--target"]).arg(&target).run();
    assert!(out.status.success(), "{ctx}: restore of {id} fails\n{}", out.describe());
    let diffs =
        compare_trees(expected, &restored(&target, src), &CompareOpts { dir_mtime: false, ..Default::default() });
    assert!(diffs.is_empty(), "{ctx}: snapshot {id} does not restore byte for byte:\n{}", diffs.join("\n"));
    fs::remove_dir_all(&target).unwrap();
}

fn data_bytes(repo: &Path) -> u64 {
    du_apparent(&repo.join("data"), false)
}

/// A source tree with one snapshot (the "previous" one every kill must
/// leave intact) and new data for the backup that gets killed.
struct BackupCase {
    base: PathBuf,
    src: PathBuf,
    /// A copy of `src` as the previous snapshot holds it.
    expected0: PathBuf,
    s0: String,
}

fn backup_case(env: &TestEnv, new_files: u64, file_size: u64, seed: u64) -> BackupCase {
    backup_case_with(env, new_files, file_size, seed, &[])
}

fn backup_case_with(env: &TestEnv, new_files: u64, file_size: u64, seed: u64, init: &[&str]) -> BackupCase {
    let base = env.path("base");
    env.arc_at(&base).args(["init", "--pack-size", "1M"]).args(init).run().success();
    let src = env.path("src");
    for i in 0..20u64 {
        write_random_file(&src.join(format!("old/f{i:02}.txt")), 2000 + i * 300, seed + i);
    }
    let s0 = env.arc_at(&base).args(["--json", "backup"]).arg(&src).run().success().json();
    let expected0 = env.path("expected0");
    cp_a(&src, &expected0);
    // Changed and new files: the killed backup has old and new data.
    write_random_file(&src.join("old/f00.txt"), 5000, seed + 100);
    for i in 0..new_files {
        write_random_file(&src.join(format!("new/n{i:02}.bin")), file_size + i * 1000, seed + 200 + i);
    }
    BackupCase { base, src, expected0, s0: jstr(&s0, "snapshot_id").to_string() }
}

impl BackupCase {
    /// Everything that must hold after a backup of `src` into `repo` died
    /// (or finished) at step `at`; then runs the backup again. `full` is
    /// what an uninterrupted backup stores.
    fn verify_after(&self, env: &TestEnv, repo: &Path, full: u64, ctx: &str) {
        let ids = snapshot_ids(env, repo, ctx);
        assert!(ids.contains(&self.s0), "{ctx}: the previous snapshot is gone: {ids:?}");
        assert!(ids.len() <= 2, "{ctx}: more than one new snapshot: {ids:?}");
        check_read_data(env, repo, ctx);
        assert_restores(env, repo, &self.s0, &self.src, &self.expected0, ctx);
        let committed = ids.iter().find(|id| **id != self.s0).cloned();
        if let Some(new) = &committed {
            assert_restores(env, repo, new, &self.src, &self.src, ctx);
        }

        // Bytes of packs the killed run left behind.
        let left = data_bytes(repo)
            .checked_sub(data_bytes(&self.base))
            .unwrap_or_else(|| panic!("{ctx}: data/ shrank: a backup deleted packs"));
        let again = env.arc_at(repo).args(["--json", "backup"]).arg(&self.src).run();
        assert!(again.status.success(), "{ctx}: the next backup fails\n{}", again.describe());
        let again = again.json();
        let stored = ju64(&again, "summary.bytes_added_stored");
        // Every durable pack of the killed run is reused: nothing the
        // retry stores was in them already, so a prune finds no second
        // copy of any blob. This is counted per blob, not by comparing
        // sizes: the frames of two runs group small chunks differently
        // (two open packs chosen at random), and their padding makes whole
        // backups differ by tens of KB from run to run. The slack is for
        // the trees of `src`'s ancestors, which the killed run may have
        // stored and which are dead after the retry: this test writes
        // beside `src`, so their mtimes changed in between.
        let plan = env.arc_at(repo).args(["--json", "prune", "--dry-run"]).run();
        assert!(plan.status.success(), "{ctx}: prune --dry-run after the retry fails\n{}", plan.describe());
        let unused = ju64(&plan.json(), "unused_stored_bytes");
        assert!(
            unused <= 64 * 1024,
            "{ctx}: {unused} bytes are stored twice: the killed run left {left} bytes of packs and the retry stored {stored} more; an uninterrupted backup stores {full}\n{again:#}"
        );
        if left > full / 10 && committed.is_none() {
            assert!(stored < full, "{ctx}: the retry stored everything again ({stored} of {full})");
        }
        let out = env.arc_at(repo).arg("check").run();
        assert!(out.status.success(), "{ctx}: check after the retry fails\n{}", out.describe());
        assert_restores(env, repo, jstr(&again, "snapshot_id"), &self.src, &self.src, &format!("{ctx}, retry"));
    }
}

#[test]
fn backup_killed_at_every_durable_step() {
    backup_killed_at_every_step(&[]);
}

/// The same with the v2 protocol: the backup announces a session first and
/// checks prune marks before its commit. (A grace period of an hour keeps
/// session refreshes out of the few seconds the backup takes, so the step
/// count is the same on every run.)
#[test]
fn backup_with_a_session_killed_at_every_durable_step() {
    backup_killed_at_every_step(&["--prune-grace", "1h"]);
}

fn backup_killed_at_every_step(init: &[&str]) {
    require!(Need::FaultInjection);
    let env = TestEnv::in_memory();
    // 10 files of ~1 MiB random data with 1 MiB packs: ~12 packs, 70 steps.
    let case = backup_case_with(&env, 10, MIB, 41_000, init);
    let trace = env.path("trace");
    let repo = env.path("repo-kill");

    fresh_copy(&case.base, &repo);
    let (out, total) = count_steps(env.arc_at(&repo).args(["--json", "backup"]).arg(&case.src), &trace);
    let full = ju64(&out.json(), "summary.bytes_added_stored");
    eprintln!("an uninterrupted backup takes {total} durable steps and stores {full} bytes");
    assert!(total >= 50, "only {total} kill points in the backup: grow the fixture");

    let mut killed = 0;
    // A few points past the end: the step count varies a little between
    // runs (pack boundaries depend on thread timing).
    for n in 1..=total + 3 {
        fresh_copy(&case.base, &repo);
        let run = run_killed_at(env.arc_at(&repo).args(["--json", "backup"]).arg(&case.src), n, &trace);
        killed += usize::from(run.killed);
        let ctx = format!("backup killed at step {n} ({})", run.at);
        case.verify_after(&env, &repo, full, &ctx);
    }
    eprintln!("backup: {killed} runs killed at steps 1..={total}, all verified");
    assert!(killed >= 50, "only {killed} backups were killed");
}

#[test]
fn backup_sigkilled_at_seeded_random_moments() {
    require!(Need::FaultInjection);
    let env = TestEnv::in_memory();
    let case = backup_case(&env, 12, 2 * MIB, 52_000);
    let repo = env.path("repo-kill");

    // The fastest of three uninterrupted runs: the first one reads a cold
    // page cache and a loaded machine makes any one run slow, and a `took`
    // longer than the later runs lets most seeded kills land after the end.
    let (mut took, mut full) = (Duration::MAX, 0);
    for _ in 0..3 {
        fresh_copy(&case.base, &repo);
        let t0 = Instant::now();
        let out = env.arc_at(&repo).args(["--json", "backup"]).arg(&case.src).run().success();
        took = took.min(t0.elapsed());
        full = ju64(&out.json(), "summary.bytes_added_stored");
    }
    eprintln!("an uninterrupted backup took {took:?} at best");

    let mut rng = Rng::new(0x6b696c6c);
    let (mut killed, mut finished) = (0, 0);
    for k in 0..20 {
        fresh_copy(&case.base, &repo);
        // Up to 1.2 times the uninterrupted duration: most kills land
        // inside the backup, a few after it finished.
        let delay = Duration::from_micros(rng.below(took.as_micros() as u64 * 6 / 5 + 1));
        let mut running = env.arc_at(&repo).args(["--json", "backup"]).arg(&case.src).spawn();
        std::thread::sleep(delay);
        if !running.has_exited() {
            running.signal(libc::SIGKILL);
        }
        let out = running.wait();
        match out.status.signal() {
            Some(libc::SIGKILL) => killed += 1,
            _ => {
                assert!(out.status.success(), "backup {k} failed\n{}", out.describe());
                finished += 1;
            }
        }
        let ctx = format!("backup {k} killed after {delay:?}");
        case.verify_after(&env, &repo, full, &ctx);
    }
    eprintln!("backup: 20 seeded kill moments: {killed} killed mid-run, {finished} had finished; all verified");
    assert!(killed >= 10, "only {killed} of 20 backups were killed while running");
}

/// The generations of [`prune_case`]: the last two are kept.
const PRUNE_GENS: u64 = 7;

/// A repository where `prune` after `forget --keep-last 2` has packs to
/// delete (big files only forgotten generations had) and packs to rewrite
/// (small files of all generations share packs).
struct PruneCase {
    base: PathBuf,
    src: PathBuf,
    kept: Vec<(String, PathBuf)>,
}

/// Backs up `src` into `base` at `time` and keeps a copy of the tree as it
/// was, to compare restores against: (snapshot id, copy).
fn backup_generation(env: &TestEnv, base: &Path, src: &Path, g: u64, time: &str) -> (String, PathBuf) {
    let b = env.arc_at(base).args(["--json", "backup", "--time", time]).arg(src).run().success().json();
    let copy = env.path(format!("expected/gen{g}"));
    fs::create_dir_all(copy.parent().unwrap()).unwrap();
    cp_a(src, &copy);
    (jstr(&b, "snapshot_id").to_string(), copy)
}

fn prune_case(env: &TestEnv) -> PruneCase {
    prune_case_with(env, &[])
}

fn prune_case_with(env: &TestEnv, init: &[&str]) -> PruneCase {
    let base = env.path("base");
    env.arc_at(&base).args(["init", "--pack-size", "1M"]).args(init).run().success();
    let src = env.path("src");
    let mut snaps = Vec::new();
    write_random_file(&src.join("shared.bin"), MIB, 5);
    for g in 0..PRUNE_GENS {
        write_random_file(&src.join(format!("big/gen{g}.bin")), 3 * MIB / 2 + g * 4096, 100 + g);
        if g >= 2 {
            fs::remove_file(src.join(format!("big/gen{}.bin", g - 2))).unwrap();
        }
        let mut rng = Rng::new(7 + g);
        for i in 0..60u64 {
            if g == 0 || i % 4 == g % 4 {
                write_random_file(&src.join(format!("small/m{i:03}.txt")), 1000 + rng.below(8000), 1000 * g + i);
            }
            // Never changed, so live in every snapshot, and read between
            // the generation-0 `.txt` files that all die: whichever open
            // pack a frame goes to, generation 0 leaves packs holding both
            // live and dead blobs (something to rewrite in every run).
            if g == 0 {
                write_random_file(&src.join(format!("small/m{i:03}.keep")), 1000 + rng.below(8000), 500_000 + i);
            }
        }
        snaps.push(backup_generation(env, &base, &src, g, &format!("2024-01-{:02}T00:00:00Z", g + 1)));
    }
    env.arc_at(&base).args(["forget", "--keep-last", "2"]).run().success();
    let kept = snaps.split_off(snaps.len() - 2);
    PruneCase { base, src, kept }
}

#[test]
fn prune_killed_at_every_durable_step() {
    require!(Need::FaultInjection);
    let env = TestEnv::in_memory();
    let case = prune_case(&env);
    let kept: BTreeSet<String> = case.kept.iter().map(|(id, _)| id.clone()).collect();
    let trace = env.path("trace");
    let repo = env.path("repo-kill");

    fresh_copy(&case.base, &repo);
    // --max-unused 0%: every pack holding a dead blob beside live ones is
    // rewritten, so the fixture always has packs to rewrite however its
    // blobs were spread over packs (format v2 assigns frames to one of two
    // open packs at random).
    let prune = ["prune", "--instant", "--max-unused", "0%"];
    let (out, total) = count_steps(env.arc_at(&repo).arg("--json").args(prune), &trace);
    let r = out.json();
    assert!(ju64(&r, "packs_deleted") > 0 && ju64(&r, "packs_repacked") > 0, "nothing to delete or rewrite: {r:#}");
    let clean_size = data_bytes(&repo);
    eprintln!("an uninterrupted prune takes {total} durable steps: {r}");
    assert!(total >= 50, "only {total} kill points in prune: grow the fixture");

    let (mut killed, mut stale_locks) = (0, 0);
    for n in 1..=total + 2 {
        fresh_copy(&case.base, &repo);
        let run = run_killed_at(env.arc_at(&repo).args(prune), n, &trace);
        killed += usize::from(run.killed);
        let ctx = format!("prune killed at step {n} ({})", run.at);
        // The dead prune's exclusive lock stays behind; `check` and the
        // rerun must see that its process is gone instead of refusing.
        stale_locks += usize::from(!files_under(&repo.join("locks")).is_empty());

        assert_eq!(snapshot_ids(&env, &repo, &ctx), kept, "{ctx}: the snapshots changed");
        check_read_data(&env, &repo, &ctx);
        for (id, expected) in &case.kept {
            assert_restores(&env, &repo, id, &case.src, expected, &ctx);
        }

        let again = env.arc_at(&repo).arg("--json").args(prune).run();
        assert!(again.status.success(), "{ctx}: the next prune fails\n{}", again.describe());
        let check = env.arc_at(&repo).args(["check", "--read-data"]).run();
        assert!(check.status.success(), "{ctx}: check after the rerun fails\n{}", check.describe());
        assert!(!check.stdout_str().contains("warning"), "{ctx}: {}", check.describe());
        let size = data_bytes(&repo);
        assert!(
            size.abs_diff(clean_size) <= clean_size / 20 + 64 * 1024,
            "{ctx}: after the rerun data/ holds {size} bytes; an uninterrupted prune left {clean_size}\n{}",
            again.describe()
        );
        // `check --read-data` above verified every blob; one restore shows
        // the rerun's index database finds them.
        let (id, expected) = &case.kept[1];
        assert_restores(&env, &repo, id, &case.src, expected, &format!("{ctx}, rerun"));
    }
    eprintln!(
        "prune: {killed} runs killed at steps 1..={total} ({stale_locks} left their exclusive lock), all verified"
    );
    assert!(killed >= 50, "only {killed} prunes were killed");
    assert!(stale_locks >= 40, "only {stale_locks} killed prunes left a lock: the stale-lock path was hardly tried");
}

#[test]
fn forget_killed_at_every_durable_step() {
    require!(Need::FaultInjection);
    const GENS: u64 = 28;
    let env = TestEnv::in_memory();
    let base = env.path("base");
    env.arc_at(&base).args(["init", "--pack-size", "1M"]).run().success();
    let src = env.path("src");
    write_random_file(&src.join("fixed.bin"), 20_000, 3);
    let mut snaps: Vec<(String, PathBuf)> = Vec::new();
    for g in 0..GENS {
        // A file of its own per generation: each snapshot has its own tree.
        fs::write(src.join("gen.txt"), format!("generation {g}\n")).unwrap();
        snaps.push(backup_generation(&env, &base, &src, g, &format!("2024-03-{:02}T00:00:00Z", g + 1)));
    }
    let all: BTreeSet<String> = snaps.iter().map(|(id, _)| id.clone()).collect();
    let newest = snaps.last().unwrap().0.clone();
    let trace = env.path("trace");
    let repo = env.path("repo-kill");

    fresh_copy(&base, &repo);
    let (_, total) = count_steps(env.arc_at(&repo).args(["forget", "--keep-last", "1"]), &trace);
    eprintln!("an uninterrupted forget of {} snapshots takes {total} durable steps", GENS - 1);
    assert!(total >= 50, "only {total} kill points in forget: grow the fixture");

    let (mut killed, mut restores) = (0, 0);
    for n in 1..=total + 2 {
        fresh_copy(&base, &repo);
        let run = run_killed_at(env.arc_at(&repo).args(["forget", "--keep-last", "1"]), n, &trace);
        killed += usize::from(run.killed);
        let ctx = format!("forget killed at step {n} ({})", run.at);

        // Some of the forgotten snapshots may remain, whole; the kept one
        // and nothing new.
        let ids = snapshot_ids(&env, &repo, &ctx);
        assert!(ids.contains(&newest) && ids.is_subset(&all), "{ctx}: {ids:?}");
        check_read_data(&env, &repo, &ctx);
        for (id, expected) in snaps.iter().filter(|(id, _)| ids.contains(id)) {
            assert_restores(&env, &repo, id, &src, expected, &ctx);
            restores += 1;
        }

        let again = env.arc_at(&repo).args(["forget", "--keep-last", "1"]).run();
        assert!(again.status.success(), "{ctx}: the next forget fails\n{}", again.describe());
        let ids = snapshot_ids(&env, &repo, &format!("{ctx}, rerun"));
        assert_eq!(ids, BTreeSet::from([newest.clone()]), "{ctx}: the rerun did not finish the job");
        check_read_data(&env, &repo, &format!("{ctx}, rerun"));
    }
    eprintln!(
        "forget: {killed} runs killed at steps 1..={total}, {restores} surviving snapshots restored, all verified"
    );
    assert!(killed >= 50, "only {killed} forgets were killed");
}

/// What must hold after a v2 prune (either phase) died at a kill point:
/// the kept snapshots are there and restore, and `check --read-data`
/// passes; then a rerun of `prune` succeeds and leaves a repository that
/// passes `check --read-data` too.
#[track_caller]
fn verify_prune_kill(
    env: &TestEnv,
    case: &PruneCase,
    repo: &Path,
    kept: &BTreeSet<String>,
    ctx: &str,
) -> serde_json::Value {
    assert_eq!(&snapshot_ids(env, repo, ctx), kept, "{ctx}: the snapshots changed");
    check_read_data(env, repo, ctx);
    for (id, expected) in &case.kept {
        assert_restores(env, repo, id, &case.src, expected, ctx);
    }
    let again = env.arc_at(repo).args(["--json", "prune"]).run();
    assert!(again.status.success(), "{ctx}: the next prune fails\n{}", again.describe());
    check_read_data(env, repo, &format!("{ctx}, rerun"));
    let (id, expected) = &case.kept[1];
    assert_restores(env, repo, id, &case.src, expected, &format!("{ctx}, rerun"));
    again.json()
}

/// kill -9 at every durable step of both phases of a v2 prune: the run
/// that marks (and rewrites mostly unused packs), and the run after the
/// grace period that sweeps the marks.
#[test]
fn prune_mark_and_sweep_killed_at_every_durable_step() {
    require!(Need::FaultInjection);
    let env = TestEnv::in_memory();
    let case = prune_case_with(&env, &["--prune-grace", "2s"]);
    let kept: BTreeSet<String> = case.kept.iter().map(|(id, _)| id.clone()).collect();
    // Packs younger than the grace period are never marked.
    std::thread::sleep(Duration::from_secs(3));
    let trace = env.path("trace");
    let repo = env.path("repo-kill");

    // Phase 1: mark.
    fresh_copy(&case.base, &repo);
    let (out, total) = count_steps(env.arc_at(&repo).args(["--json", "prune"]), &trace);
    let r = out.json();
    assert!(ju64(&r, "packs_marked") > 0 && ju64(&r, "packs_repacked") > 0, "nothing to mark or rewrite: {r:#}");
    assert_eq!(ju64(&r, "packs_deleted"), 0, "the marking run deleted packs: {r:#}");
    eprintln!("an uninterrupted marking prune takes {total} durable steps: {r}");
    let marked = env.path("base-marked");
    fresh_copy(&repo, &marked);
    let mut killed = 0;
    for n in 1..=total + 2 {
        fresh_copy(&case.base, &repo);
        let run = run_killed_at(env.arc_at(&repo).arg("prune"), n, &trace);
        killed += usize::from(run.killed);
        let ctx = format!("marking prune killed at step {n} ({})", run.at);
        verify_prune_kill(&env, &case, &repo, &kept, &ctx);
    }
    assert!(killed >= 20, "only {killed} marking prunes were killed");

    // Phase 2: sweep, once the marks are older than the grace period.
    std::thread::sleep(Duration::from_secs(3));
    fresh_copy(&marked, &repo);
    let (out, total) = count_steps(env.arc_at(&repo).args(["--json", "prune"]), &trace);
    let r = out.json();
    assert!(ju64(&r, "packs_deleted") > 0 && ju64(&r, "marks_swept") > 0, "the sweep deleted nothing: {r:#}");
    let clean_size = data_bytes(&repo);
    eprintln!("an uninterrupted sweeping prune takes {total} durable steps: {r}");
    let mut killed = 0;
    for n in 1..=total + 2 {
        fresh_copy(&marked, &repo);
        let run = run_killed_at(env.arc_at(&repo).arg("prune"), n, &trace);
        killed += usize::from(run.killed);
        let ctx = format!("sweeping prune killed at step {n} ({})", run.at);
        verify_prune_kill(&env, &case, &repo, &kept, &ctx);
        // The rerun finished the sweep (it may have marked the repacked
        // copies' leftovers anew, which takes another grace period).
        let size = data_bytes(&repo);
        assert!(
            size <= clean_size + clean_size / 10 + 64 * 1024,
            "{ctx}: after the rerun data/ holds {size} bytes; an uninterrupted sweep left {clean_size}"
        );
    }
    assert!(killed >= 10, "only {killed} sweeping prunes were killed");
}

/// kill -9 at every durable step of `arc copy` from the frozen v1
/// repository into a v2 one with other chunker parameters: the target
/// holds only whole snapshots that restore like their originals, passes
/// `check --read-data`, and the rerun copies the rest.
#[test]
fn copy_killed_at_every_durable_step() {
    require!(Need::FaultInjection);
    let env = TestEnv::in_memory();
    let src = env.path("v1");
    cp_a(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../format-spec/vectors/repo-v1"), &src);
    let base = env.path("base");
    env.arc_at(&base)
        .args(["init", "--prune-grace", "1h", "--chunk-min", "16K", "--chunk-avg", "64K", "--chunk-max", "256K"])
        .args(["--pack-size", "1M"])
        .run()
        .success();
    let originals: Vec<(String, PathBuf)> = {
        let out = env.arc_at(&src).args(["--json", "snapshots"]).run().success().json();
        out.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let id = jstr(s, "id").to_string();
                let target = env.path(format!("original-{id}"));
                env.arc_at(&src).args(["restore", &id, "--target"]).arg(&target).run().success();
                (jstr(s, "time").to_string(), target)
            })
            .collect()
    };
    let trace = env.path("trace");
    let repo = env.path("repo-kill");
    let copy = |repo: &Path| env.arc_at(repo).args(["copy", "--all", "--from-repo"]).arg(&src);
    fresh_copy(&base, &repo);
    let (_, total) = count_steps(copy(&repo), &trace);
    eprintln!("an uninterrupted copy takes {total} durable steps");
    let verify = |ctx: &str| {
        check_read_data(&env, &repo, ctx);
        let out = env.arc_at(&repo).args(["--json", "snapshots"]).run().success().json();
        for s in out.as_array().unwrap() {
            let (_, original) = originals
                .iter()
                .find(|(t, _)| t == jstr(s, "time"))
                .unwrap_or_else(|| panic!("{ctx}: a snapshot that is in no source: {s}"));
            let target = env.path("restore-check");
            if target.exists() {
                fs::remove_dir_all(&target).unwrap();
            }
            env.arc_at(&repo).args(["restore", jstr(s, "id"), "--target"]).arg(&target).run().success();
            for entry in fs::read_dir(original).unwrap() {
                let name = entry.unwrap().file_name();
                let diffs = compare_trees(&original.join(&name), &target.join(&name), &CompareOpts::default());
                assert!(diffs.is_empty(), "{ctx}: a copied snapshot restores differently:\n{}", diffs.join("\n"));
            }
        }
        out.as_array().unwrap().len()
    };
    let mut killed = 0;
    for n in 1..=total + 2 {
        fresh_copy(&base, &repo);
        let run = run_killed_at(copy(&repo), n, &trace);
        killed += usize::from(run.killed);
        let ctx = format!("copy killed at step {n} ({})", run.at);
        assert!(verify(&ctx) <= 2, "{ctx}");
        let again = copy(&repo).run();
        assert!(again.status.success(), "{ctx}: the next copy fails\n{}", again.describe());
        assert_eq!(verify(&format!("{ctx}, rerun")), 2, "{ctx}: the rerun did not copy everything");
    }
    eprintln!("copy: {killed} runs killed at steps 1..={total}, all verified");
    assert!(killed >= 10, "only {killed} copies were killed");
}

/// kill -9 at every durable step of `key add`, `key remove` and `key
/// passwd`: a killed run never leaves the repository without a working
/// passphrase or with a torn key file; the passphrases that worked before
/// still work (for passwd: the old one or the new one), every snapshot
/// restores byte for byte and `check --read-data` passes; running the
/// command again finishes the job. With `--encryption none` key files hold
/// no passphrase: `key add` is refused and leaves the repository as it was.
#[test]
fn key_add_remove_and_passwd_killed_at_every_durable_step() {
    require!(Need::FaultInjection);
    const SECOND: &str = "second passphrase (killpoints)";
    const NEW: &str = "new passphrase (killpoints)";
    let env = TestEnv::in_memory();
    let base = env.path("base");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("a.bin"), 300_000, 7);
    fs::write(src.join("b.txt"), "keys\n").unwrap();
    env.arc_at(&base).arg("init").run().success();
    let snap =
        jstr(&env.arc_at(&base).args(["--json", "backup"]).arg(&src).run().success().json(), "snapshot_id").to_string();
    let expected = env.path("expected");
    cp_a(&src, &expected);
    if encryption_none() {
        let before = repo_listing(&base);
        let out = env.arc_at(&base).args(["key", "add"]).env("ARC_NEW_PASSWORD", NEW).run().failure();
        assert!(out.one_line_error().contains("created without encryption"), "{}", out.describe());
        assert_listing_unchanged(&before, &repo_listing(&base), "refused key add");
        return;
    }
    env.arc_at(&base).args(["key", "add"]).env("ARC_NEW_PASSWORD", SECOND).run().success();
    let key_of = |repo: &Path, pw: &str| -> Option<String> {
        let out = env.arc_at(repo).env("ARC_PASSWORD", pw).args(["--json", "key", "list"]).run();
        out.status.success().then(|| {
            let keys = out.json();
            let current = keys.as_array().unwrap().iter().find(|k| k["current"] == true).expect("a current key");
            jstr(current, "id").to_string()
        })
    };
    let second_id = key_of(&base, SECOND).expect("the second key opens the base repository");
    let trace = env.path("trace");
    let repo = env.path("repo-kill");
    type Op<'a> = (&'a str, Vec<&'a str>, &'a str);
    // (name, arguments, passphrase the command runs with)
    let ops: [Op; 3] = [
        ("key add", vec!["key", "add"], TEST_PASSWORD),
        ("key remove", vec!["key", "remove", &second_id], TEST_PASSWORD),
        ("key passwd", vec!["key", "passwd"], SECOND),
    ];
    let mut killed = 0;
    for (name, args, pw) in &ops {
        let cmd = |repo: &Path| env.arc_at(repo).env("ARC_PASSWORD", pw).env("ARC_NEW_PASSWORD", NEW).args(args);
        fresh_copy(&base, &repo);
        let (_, total) = count_steps(cmd(&repo), &trace);
        assert!(total > 0, "{name} took no durable step");
        for n in 1..=total + 1 {
            fresh_copy(&base, &repo);
            let run = run_killed_at(cmd(&repo), n, &trace);
            killed += usize::from(run.killed);
            let ctx = format!("{name} killed at step {n} ({})", run.at);
            let opens: Vec<&str> =
                [TEST_PASSWORD, SECOND, NEW].into_iter().filter(|p| key_of(&repo, p).is_some()).collect();
            match *name {
                "key add" => assert!(opens.contains(&TEST_PASSWORD) && opens.contains(&SECOND), "{ctx}: {opens:?}"),
                "key remove" => assert!(opens.contains(&TEST_PASSWORD), "{ctx}: {opens:?}"),
                _ => assert!(
                    opens.contains(&TEST_PASSWORD) && (opens.contains(&SECOND) || opens.contains(&NEW)),
                    "{ctx}: {opens:?}"
                ),
            }
            // Every key file is whole: listing them with any working
            // passphrase reads each one.
            let listed = env.arc_at(&repo).args(["--json", "key", "list"]).run();
            assert!(listed.status.success(), "{ctx}: key list fails\n{}", listed.describe());
            check_read_data(&env, &repo, &ctx);
            assert_restores(&env, &repo, &snap, &src, &expected, &ctx);
            // Finish the job.
            match *name {
                "key add" => {
                    if !opens.contains(&NEW) {
                        cmd(&repo).run().success();
                    }
                    assert!(key_of(&repo, NEW).is_some(), "{ctx}: the rerun added no key");
                }
                "key remove" => {
                    if opens.contains(&SECOND) {
                        cmd(&repo).run().success();
                    }
                    assert!(key_of(&repo, SECOND).is_none(), "{ctx}: the second key is still there");
                }
                _ => {
                    if opens.contains(&SECOND) {
                        // Not finished: the old key is still there (with or
                        // without the new one): passwd again from it.
                        env.arc_at(&repo)
                            .env("ARC_PASSWORD", SECOND)
                            .env("ARC_NEW_PASSWORD", NEW)
                            .args(args)
                            .run()
                            .success();
                    }
                    assert!(
                        key_of(&repo, SECOND).is_none() && key_of(&repo, NEW).is_some(),
                        "{ctx}: passwd unfinished"
                    );
                }
            }
            assert!(key_of(&repo, TEST_PASSWORD).is_some(), "{ctx}: the untouched key stopped working");
        }
    }
    eprintln!("key add/remove/passwd: {killed} runs killed, all verified");
    assert!(killed >= 3, "only {killed} key commands were killed");
}

/// `repair packs` of a pack with one flipped bit, killed at every durable
/// step: whatever step it died at, running it again ends in the state of an
/// uninterrupted repair (only the damaged file's chunk is missing, nothing
/// else is lost), and a backup with `--force-read` heals the repository.
#[test]
fn repair_packs_killed_at_every_durable_step() {
    require!(Need::FaultInjection);
    let env = TestEnv::in_memory();
    let (base, src) = (env.path("repo-base"), env.path("src"));
    for i in 0..6u64 {
        write_random_file(&src.join(format!("f{i}.bin")), 60_000 + i * 1000, 70 + i);
    }
    // Frames smaller than a file: the flipped bit costs one file.
    env.arc_at(&base).args(["init", "--frame-size", "32K"]).run().success();
    let s0 =
        jstr(&env.arc_at(&base).args(["--json", "backup"]).arg(&src).run().success().json(), "short_id").to_string();
    let (pack, chunk) = {
        let repo = open_repo(&base);
        let chunk = repo.blob_id(&fs::read(src.join("f3.bin")).unwrap());
        let loc = repo.lookup_blob(&chunk).unwrap().expect("f3.bin's chunk is indexed");
        let hex = loc.pack.to_hex();
        let f =
            fs::OpenOptions::new().read(true).write(true).open(base.join("data").join(&hex[..2]).join(&hex)).unwrap();
        use std::os::unix::fs::FileExt;
        let at = loc.frame.offset + u64::from(loc.frame.stored_len) / 2;
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
        (hex, chunk.to_hex())
    };
    let trace = env.path("trace");
    let repo = env.path("repo-kill");
    let repair = ["repair", "packs", pack.as_str()];
    fresh_copy(&base, &repo);
    let (_, total) = count_steps(env.arc_at(&repo).args(repair), &trace);
    eprintln!("an uninterrupted repair packs takes {total} durable steps");
    assert!(total >= 20, "only {total} kill points in repair packs");

    let mut killed = 0;
    for n in 1..=total + 1 {
        fresh_copy(&base, &repo);
        let run = run_killed_at(env.arc_at(&repo).args(repair), n, &trace);
        killed += usize::from(run.killed);
        let ctx = format!("repair packs killed at step {n} ({})", run.at);
        let again = env.arc_at(&repo).args(repair).run();
        assert!(again.status.success(), "{ctx}: the rerun fails\n{}", again.describe());
        // As after an uninterrupted repair: one error, the lost chunk, and
        // only the damaged file affected.
        let check = env.arc_at(&repo).args(["check", "--read-data"]).run();
        let text = check.stdout_str();
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
        assert!(
            errors.len() == 1 && errors[0].contains(&chunk) && errors[0].contains("not in any index file"),
            "{ctx}: after the rerun\n{}",
            check.describe()
        );
        let affects: Vec<&str> = text.lines().filter(|l| l.trim_start().starts_with("affects ")).collect();
        assert!(affects.len() == 1 && affects[0].ends_with("/f3.bin"), "{ctx}\n{}", check.describe());
        // Healing is the same whatever the kill: tried on every third.
        if n % 3 == 0 || n == total {
            env.arc_at(&repo).args(["backup", "--force-read"]).arg(&src).run().success();
            check_read_data(&env, &repo, &ctx);
            assert_restores(&env, &repo, &s0, &src, &src, &ctx);
        }
    }
    eprintln!("repair packs: {killed} runs killed at steps 1..={total}, all verified");
    // The count varies by a few between runs (which frames share a pack).
    assert!(killed + 6 >= total && killed >= 20, "only {killed} of {total} runs were killed");
}
