//! `arc prune`: every kept snapshot stays restorable byte for byte, the
//! space of forgotten data is freed, and a prune killed after any of its
//! steps (or at a random moment) leaves a repository that `arc check`
//! passes and that a second prune finishes.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// Snapshots made by [`build_history`]; the last two are kept.
const GENS: u64 = 6;

/// Changes `src` into generation `g`:
/// * `static/` never changes (its tree stays live inside the oldest tree
///   pack, which is otherwise dead: that pack must be rewritten);
/// * `shared.bin` never changes (live data in the oldest data packs);
/// * `big/gen<g>.bin`, 2 MiB of fresh random data, lives for two
///   generations (what forgetting old snapshots frees);
/// * `small/`: 150 small files, 30 of them rewritten each generation (live
///   and dead small blobs share frames and packs).
fn make_generation(src: &Path, g: u64) {
    if g == 0 {
        for i in 0..5 {
            write_random_file(&src.join(format!("static/s{i}.bin")), 3000 + i * 100, 10 + i);
        }
        write_random_file(&src.join("shared.bin"), MIB, 5);
    }
    write_random_file(&src.join(format!("big/gen{g}.bin")), 2 * MIB + g * 4096, 100 + g);
    if g >= 2 {
        fs::remove_file(src.join(format!("big/gen{}.bin", g - 2))).unwrap();
    }
    let mut rng = Rng::new(7 + g);
    for i in 0..150u64 {
        if g == 0 || i % 5 == g % 5 {
            let size = 1000 + rng.below(8000);
            write_random_file(&src.join(format!("small/m{i:03}.txt")), size, 1000 * g + i);
        }
    }
}

fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status().expect("run cp");
    assert!(st.success(), "cp -a {} {} failed", from.display(), to.display());
}

struct History {
    src: PathBuf,
    /// Snapshot id of each generation.
    ids: Vec<String>,
    /// A copy of the source as each generation backed it up.
    expected: Vec<PathBuf>,
}

/// A repository with small packs (1 MiB, so that a few MiB of data make
/// many) and GENS snapshots of a changing tree, then `forget --keep-last 2`.
fn build_history(env: &TestEnv) -> History {
    env.arc().args(["init", "--pack-size", "1M"]).run().success();
    let src = env.path("src");
    let mut h = History { src: src.clone(), ids: Vec::new(), expected: Vec::new() };
    for g in 0..GENS {
        make_generation(&src, g);
        let b = env.backup(["--time", &format!("2024-01-{:02}T00:00:00Z", g + 1), src.to_str().unwrap()]);
        h.ids.push(jstr(&b, "snapshot_id").to_string());
        let copy = env.path(format!("expected/gen{g}"));
        fs::create_dir_all(copy.parent().unwrap()).unwrap();
        cp_a(&src, &copy);
        h.expected.push(copy);
    }
    env.arc().args(["forget", "--keep-last", "2"]).run().success();
    h
}

impl History {
    /// Restores every kept snapshot from `repo` and compares it with the
    /// source it was taken from.
    #[track_caller]
    fn assert_kept_restorable(&self, env: &TestEnv, repo: &Path, tag: &str) {
        for g in (GENS - 2)..GENS {
            let target = env.path(format!("restore-{tag}-gen{g}"));
            env.arc_at(repo).args(["restore", &self.ids[g as usize], "--target"]).arg(&target).run().success();
            let opts = CompareOpts { dir_mtime: false, ..Default::default() };
            assert_trees_equal(&self.expected[g as usize], &restored(&target, &self.src), &opts);
            fs::remove_dir_all(&target).unwrap();
        }
    }
}

fn stats(env: &TestEnv, repo: &Path) -> Value {
    env.arc_at(repo).args(["--json", "stats"]).run().success().json()
}

fn data_bytes(repo: &Path) -> u64 {
    du_apparent(&repo.join("data"), false)
}

#[test]
fn prune_frees_forgotten_data_and_keeps_snapshots_restorable() {
    let env = TestEnv::new();
    let h = build_history(&env);
    let before = data_bytes(&env.repo);
    let s = stats(&env, &env.repo);
    // Generations 0-3's big files (8 MiB) are used by no kept snapshot
    // but gen3's, which gen4 still has: 6 MiB plus small files are unused.
    assert!(ju64(&s, "unused_stored_bytes") > 6 * MIB, "{s:#}");
    assert_eq!(ju64(&s, "stored_bytes"), before);

    // --dry-run: reports, changes nothing.
    let listing = repo_listing(&env.repo);
    let dry = env.arc().args(["--json", "prune", "--dry-run"]).run().success().json();
    assert_listing_unchanged(&listing, &repo_listing(&env.repo), "prune --dry-run");
    assert_eq!(dry["dry_run"], true);
    assert!(ju64(&dry, "packs_deleted") > 0 && ju64(&dry, "packs_repacked") > 0, "{dry:#}");
    let text = env.arc().args(["prune", "--dry-run"]).run().success();
    assert!(text.stdout_str().contains("would delete"), "{}", text.describe());
    assert_listing_unchanged(&listing, &repo_listing(&env.repo), "prune --dry-run (text)");

    let r = env.arc().args(["--json", "prune", "--instant"]).run().success().json();
    eprintln!("prune: {r:#}");
    assert!(ju64(&r, "packs_deleted") > 0, "no pack deleted: {r:#}");
    assert!(ju64(&r, "packs_repacked") > 0, "no pack rewritten: {r:#}");
    assert!(ju64(&r, "packs_written") > 0, "{r:#}");
    let after = data_bytes(&env.repo);
    assert_eq!(ju64(&r, "stored_bytes_after"), after);
    // The dry run's estimate is close to what happened.
    let estimate = ju64(&dry, "stored_bytes_after");
    assert!(estimate.abs_diff(after) <= after / 10 + 64 * 1024, "estimated {estimate}, got {after}");
    assert!(after + 6 * MIB <= before, "data/ went from {before} to {after} bytes only");

    // data/ is now close to the live size.
    let s = stats(&env, &env.repo);
    let live = ju64(&s, "live_stored_bytes");
    assert!(after <= live + live / 10 + 64 * 1024, "data/ holds {after} bytes for {live} live: {s:#}");
    assert!(ju64(&s, "unused_stored_bytes") <= live / 10, "{s:#}");

    env.arc().args(["check", "--read-data"]).run().success();
    h.assert_kept_restorable(&env, &env.repo, "after");

    // Nothing left to do: a second prune changes nothing.
    let listing = repo_listing(&env.repo);
    let again = env.arc().args(["--json", "prune", "--instant"]).run().success().json();
    assert_eq!(ju64(&again, "packs_deleted") + ju64(&again, "packs_repacked"), 0, "{again:#}");
    assert_listing_unchanged(&listing, &repo_listing(&env.repo), "second prune");

    // The index database is in step: a new backup dedups against what
    // prune kept and moved, and restores.
    let b = env.backup([&h.src]);
    assert_eq!(ju64(&b, "summary.bytes_read"), 0, "{b:#}");
    let b = env.backup(["--force-read", h.src.to_str().unwrap()]);
    assert!(ju64(&b, "summary.bytes_added") < 64 * 1024, "re-reading kept data added bytes: {b:#}");
    let target = env.path("restore-new");
    env.restore("latest", &target);
    assert_trees_equal(&h.src, &restored(&target, &h.src), &CompareOpts { dir_mtime: false, ..Default::default() });
}

/// `forget --prune` in one go, and `forget --dry-run --prune` predicting
/// what the pair would free without changing anything.
#[test]
fn forget_with_prune_and_its_dry_run() {
    let env = TestEnv::new();
    env.arc().args(["init", "--pack-size", "1M"]).run().success();
    let src = env.path("src");
    for g in 0..4 {
        make_generation(&src, g);
        env.backup(["--time", &format!("2024-02-{:02}T00:00:00Z", g + 1), src.to_str().unwrap()]);
    }
    let listing = repo_listing(&env.repo);
    let dry = env.arc().args(["--json", "forget", "--keep-last", "1", "--prune", "--dry-run"]).run().success().json();
    assert_listing_unchanged(&listing, &repo_listing(&env.repo), "forget --prune --dry-run");
    assert_eq!(dry["removed"].as_array().unwrap().len(), 3, "{dry:#}");
    assert_eq!(ju64(&dry["prune"], "snapshots"), 1, "{dry:#}");
    assert!(ju64(&dry["prune"], "bytes_deleted") + ju64(&dry["prune"], "bytes_repacked") > 2 * MIB, "{dry:#}");

    let done = env.arc().args(["--json", "forget", "--keep-last", "1", "--prune", "--instant"]).run().success().json();
    assert_eq!(done["removed"].as_array().unwrap().len(), 3);
    let after = data_bytes(&env.repo);
    assert_eq!(ju64(&done["prune"], "stored_bytes_after"), after);
    env.arc().args(["check", "--read-data"]).run().success();
    let target = env.path("restore");
    env.restore("latest", &target);
    assert_trees_equal(&src, &restored(&target, &src), &CompareOpts { dir_mtime: false, ..Default::default() });
}

/// Kills prune (exit without unwinding, through the ARC_FAULT_PRUNE_STEP
/// hook) after each of its 8 steps, on copies of one repository. Every
/// time: `check` passes, the kept snapshots restore, a second prune
/// finishes and ends with the same space as an uninterrupted prune.
#[test]
fn prune_killed_after_each_step_leaves_a_valid_repository_and_a_rerun_finishes() {
    require!(Need::FaultInjection);
    let env = TestEnv::new();
    let h = build_history(&env);
    let clean = env.path("clean");
    cp_a(&env.repo, &clean);
    let r = env.arc_at(&clean).args(["--json", "prune", "--instant"]).run().success().json();
    assert!(ju64(&r, "packs_repacked") > 0 && ju64(&r, "packs_deleted") > 0, "{r:#}");
    let clean_size = data_bytes(&clean);

    for step in 1..=8u32 {
        let repo = env.path(format!("repo-step{step}"));
        cp_a(&env.repo, &repo);
        let out = env.arc_at(&repo).args(["prune", "--instant"]).env("ARC_FAULT_PRUNE_STEP", step.to_string()).run();
        let out = out.code_is(9);
        assert!(out.stderr_str().contains("ARC_FAULT_PRUNE_STEP"), "{}", out.describe());
        let check = env.arc_at(&repo).args(["check", "--read-data"]).run();
        assert!(check.status.success(), "check fails after prune stopped at step {step}\n{}", check.describe());
        h.assert_kept_restorable(&env, &repo, &format!("step{step}"));

        let r = env.arc_at(&repo).args(["--json", "prune", "--instant"]).run().success().json();
        let check = env.arc_at(&repo).args(["check", "--read-data"]).run().success();
        assert!(!check.stdout_str().contains("warning"), "step {step}: {}", check.describe());
        let size = data_bytes(&repo);
        assert!(
            size.abs_diff(clean_size) <= clean_size / 20 + 64 * 1024,
            "after stopping at step {step} and a rerun, data/ holds {size} bytes; an uninterrupted prune left {clean_size}\n{r:#}"
        );
        h.assert_kept_restorable(&env, &repo, &format!("step{step}-rerun"));
        // And the rerun really finished: nothing is left to do.
        let again = env.arc_at(&repo).args(["--json", "prune", "--instant"]).run().success().json();
        assert_eq!(ju64(&again, "packs_deleted") + ju64(&again, "packs_repacked"), 0, "step {step}: {again:#}");
        fs::remove_dir_all(&repo).unwrap();
    }
}

/// SIGKILL at moments spread over an uninterrupted prune's duration.
#[test]
fn prune_sigkilled_at_random_moments() {
    let env = TestEnv::new();
    let h = build_history(&env);
    let clean = env.path("clean");
    cp_a(&env.repo, &clean);
    let t0 = Instant::now();
    env.arc_at(&clean).args(["prune", "--instant"]).run().success();
    let took = t0.elapsed();
    eprintln!("an uninterrupted prune took {took:?}");

    for k in 1..=6u32 {
        let repo = env.path(format!("repo-kill{k}"));
        cp_a(&env.repo, &repo);
        let running = env.arc_at(&repo).args(["prune", "--instant"]).spawn();
        std::thread::sleep(took * k / 7);
        let mut running = running;
        if !running.has_exited() {
            running.signal(libc::SIGKILL);
        }
        let out = running.wait();
        eprintln!("kill {k}: status {:?} signal {:?}", out.status.code(), out.status.signal());
        let check = env.arc_at(&repo).args(["check", "--read-data"]).run();
        assert!(check.status.success(), "check fails after prune was killed (run {k})\n{}", check.describe());
        h.assert_kept_restorable(&env, &repo, &format!("kill{k}"));
        env.arc_at(&repo).args(["prune", "--instant"]).run().success();
        env.arc_at(&repo).args(["check", "--read-data"]).run().success();
        h.assert_kept_restorable(&env, &repo, &format!("kill{k}-rerun"));
        fs::remove_dir_all(&repo).unwrap();
    }
}

/// Packs no index file lists: those of a killed backup hold nothing live
/// and go; those whose index files were lost hold live data and are kept
/// and listed again. Later backups stay correct (the index database must
/// not remember deleted packs).
#[test]
fn prune_handles_unlisted_packs() {
    let env = TestEnv::new();
    let h = build_history(&env);

    // Lost index files: everything is unlisted; `check` complains...
    for f in files_under(&env.repo.join("index")) {
        fs::remove_file(f).unwrap();
    }
    env.arc().arg("check").run().failure();
    // ...and prune keeps what is live and lists it again.
    let r = env.arc().args(["--json", "prune", "--instant"]).run().success().json();
    assert!(ju64(&r, "packs_adopted") > 0, "{r:#}");
    let check = env.arc().args(["check", "--read-data"]).run().success();
    assert!(!check.stdout_str().contains("warning"), "{}", check.describe());
    h.assert_kept_restorable(&env, &env.repo, "relisted");

    // A killed backup of new data: its packs are unlisted and dead.
    let big = env.path("big");
    for i in 0..6u64 {
        write_random_file(&big.join(format!("f{i}.bin")), 8 * MIB, 500 + i);
    }
    let packs_before = env.pack_files().len();
    let mut running = env.arc().args(["--json", "backup"]).arg(&big).spawn();
    let got = wait_for(Duration::from_secs(120), || env.pack_files().len() >= packs_before + 4 || running.has_exited());
    assert!(got && !running.has_exited(), "the backup finished before it could be killed");
    running.signal(libc::SIGKILL);
    assert_eq!(running.wait().status.signal(), Some(libc::SIGKILL));
    let left = env.pack_files().len() - packs_before;

    let r = env.arc().args(["--json", "prune", "--instant"]).run().success().json();
    let (deleted, repacked, written) =
        (ju64(&r, "packs_deleted") as usize, ju64(&r, "packs_repacked") as usize, ju64(&r, "packs_written") as usize);
    assert!(deleted >= left, "{left} packs left by the killed backup: {r:#}");
    assert_eq!(env.pack_files().len() + deleted + repacked, packs_before + left + written, "{r:#}");
    let check = env.arc().args(["check", "--read-data"]).run().success();
    assert!(!check.stdout_str().contains("warning"), "{}", check.describe());

    // The data of the deleted packs is stored again by the next backup.
    let b = env.backup([&big]);
    assert!(ju64(&b, "summary.bytes_added") >= 6 * 8 * MIB, "{b:#}");
    env.arc().args(["check", "--read-data"]).run().success();
    let target = env.path("restore-big");
    env.restore("latest", &target);
    assert_trees_equal(&big, &restored(&target, &big), &CompareOpts::default());
    h.assert_kept_restorable(&env, &env.repo, "end");
}
