//! The v2 commit and prune protocol and `arc copy`, with the real binary:
//! a backup frozen with SIGSTOP past the grace period while prunes mark and
//! sweep, and the migration from the frozen v1 repository by `arc copy`
//! (format-spec/v2/protocol.md).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// The grace period the tests give their repositories: prune marks wait
/// this long, and sessions expire after 3 s (ProtocolSettings::with_grace).
const GRACE: &str = "2s";

fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status().expect("run cp");
    assert!(st.success(), "cp -a {} {} failed", from.display(), to.display());
}

fn frozen_v1() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../format-spec/vectors/repo-v1")
}

fn snapshot_list(env: &TestEnv, repo: &Path) -> Vec<serde_json::Value> {
    let out = env.arc_at(repo).args(["--json", "snapshots"]).run().success();
    out.json().as_array().cloned().unwrap_or_default()
}

/// (time, id) of every snapshot, oldest first.
fn by_time(env: &TestEnv, repo: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> =
        snapshot_list(env, repo).iter().map(|s| (jstr(s, "time").to_string(), jstr(s, "id").to_string())).collect();
    v.sort();
    v
}

fn restore_to(env: &TestEnv, repo: &Path, id: &str, target: &Path) {
    env.arc_at(repo).args(["restore", id, "--target"]).arg(target).run().success();
}

/// `arc copy --from-repo` the frozen v1 repository into a new v2
/// repository, once with other chunker parameters and once with the same
/// ones (v2 ids are keyed and its cut points seeded, so both re-cut every
/// file under the target's keys): every copied snapshot restores identical
/// to its v1 restore, a second copy adds nothing, and `check --read-data`
/// passes.
#[test]
fn copy_from_the_frozen_v1_repository_restores_identical() {
    let env = TestEnv::new();
    let v1 = env.path("v1");
    cp_a(&frozen_v1(), &v1);
    let source = by_time(&env, &v1);
    assert_eq!(source.len(), 2, "the frozen repository has two snapshots");
    for (name, init) in [
        ("other-chunker", vec!["--chunk-min", "64K", "--chunk-avg", "256K", "--chunk-max", "1M"]),
        ("same-chunker", vec![]),
    ] {
        let v2 = env.path(name);
        env.arc_at(&v2).args(["init", "--prune-grace", GRACE]).args(&init).run().success();
        let out = env.arc_at(&v2).args(["--json", "copy", "--from-repo"]).arg(&v1).arg("--all").run().success();
        let r = out.json();
        assert_eq!(r["copied"].as_array().map(|a| a.len()), Some(2), "{name}: {r:#}");
        assert_eq!(r["rechunked"], serde_json::Value::Bool(true), "{name}: {r:#}");
        let copied = by_time(&env, &v2);
        assert_eq!(copied.len(), 2, "{name}");
        for ((t1, id1), (t2, id2)) in source.iter().zip(&copied) {
            assert_eq!(t1, t2, "{name}: snapshot times differ");
            let a = env.path(format!("restore-{name}-v1-{id1}"));
            let b = env.path(format!("restore-{name}-v2-{id2}"));
            restore_to(&env, &v1, id1, &a);
            restore_to(&env, &v2, id2, &b);
            // The targets themselves were made by the restores; everything
            // in them comes from the snapshots, metadata included.
            let top = |d: &Path| -> Vec<_> { fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect() };
            assert_eq!(top(&a), top(&b), "{name}: top-level entries differ");
            for entry in top(&a) {
                let diffs = compare_trees(&a.join(&entry), &b.join(&entry), &CompareOpts::default());
                assert!(diffs.is_empty(), "{name}: {id2} restores differently from v1 {id1}:\n{}", diffs.join("\n"));
            }
        }
        env.arc_at(&v2).args(["check", "--read-data"]).run().success();
        // Already there: nothing is copied again.
        let again = env.arc_at(&v2).args(["--json", "copy", "--from-repo"]).arg(&v1).arg("--all").run().success();
        let again = again.json();
        assert_eq!(again["skipped"].as_array().map(|a| a.len()), Some(2), "{name}: {again:#}");
        assert_eq!(ju64(&again, "blobs_added"), 0, "{name}: {again:#}");
    }
    // The source is only read.
    env.arc_at(&v1).args(["check", "--read-data"]).run().success();
}

/// Between two v2 repositories with different keys (and, encrypted,
/// different passphrases: the source's from ARC_FROM_PASSWORD): content is
/// re-cut and re-sealed under the target's keys, what the target already
/// holds is not sent again, every copied snapshot restores identical to the
/// source's restore, and the target passes `check --read-data` with its
/// own passphrase alone.
#[test]
fn copy_between_v2_repositories_reencrypts_and_sends_only_what_the_target_lacks() {
    const TARGET_PASSWORD: &str = "another passphrase for the copy target";
    let env = TestEnv::new();
    let (a, b) = (env.path("a"), env.path("b"));
    let at_b = || env.arc_at(&b).env("ARC_PASSWORD", TARGET_PASSWORD);
    env.arc_at(&a).args(["init", "--prune-grace", GRACE]).run().success();
    at_b().args(["init", "--prune-grace", GRACE]).run().success();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..4u64 {
        write_random_file(&src.join(format!("f{i}.bin")), (1 + i) * 700_000, i);
        fs::write(src.join("sub").join(format!("small{i}.txt")), format!("small file {i}\n")).unwrap();
    }
    std::os::unix::fs::symlink("f0.bin", src.join("link")).unwrap();
    let backup = |repo: &Path, pw: &str, time: &str| {
        env.arc_at(repo).env("ARC_PASSWORD", pw).args(["--json", "backup", "--time", time]).arg(&src).run().success();
    };
    backup(&a, TEST_PASSWORD, "2026-01-01T00:00:00Z");
    // The target already holds this content (its own backup of it).
    backup(&b, TARGET_PASSWORD, "2026-01-01T12:00:00Z");
    write_random_file(&src.join("new.bin"), 1_500_000, 99);
    backup(&a, TEST_PASSWORD, "2026-01-02T00:00:00Z");

    let copy = |extra: &[&str]| {
        at_b()
            .env("ARC_FROM_PASSWORD", TEST_PASSWORD)
            .args(["--json", "copy", "--from-repo"])
            .arg(&a)
            .args(extra)
            .run()
            .success()
            .json()
    };
    // First the snapshot whose content the target has: nothing but the
    // snapshot itself (and at most a tree whose metadata differs) is new.
    let first_id = by_time(&env, &a)[0].1.clone();
    let r = copy(&[&first_id]);
    assert_eq!(r["rechunked"], serde_json::Value::Bool(true), "different keys name blobs differently: {r:#}");
    assert_eq!(r["copied"].as_array().map(|c| c.len()), Some(1), "{r:#}");
    assert!(ju64(&r, "bytes_added") < 64 * 1024, "content the target holds was sent again: {r:#}");
    // Then everything: only the new file's content is sent.
    let r = copy(&["--all"]);
    assert_eq!(r["copied"].as_array().map(|c| c.len()), Some(1), "{r:#}");
    assert_eq!(r["skipped"].as_array().map(|c| c.len()), Some(1), "{r:#}");
    let added = ju64(&r, "bytes_added");
    assert!((1_500_000..1_500_000 + 64 * 1024).contains(&added), "expected only new.bin to be sent: {r:#}");
    let again = copy(&["--all"]);
    assert_eq!(ju64(&again, "blobs_added"), 0, "{again:#}");

    // Sealed under the target's keys: its own passphrase opens and checks
    // everything, the source's does not open it at all.
    at_b().args(["check", "--read-data"]).run().success();
    if !encryption_none() {
        env.arc_at(&b).args(["snapshots"]).run().failure();
    }
    let source = by_time(&env, &a);
    let copied: Vec<(String, String)> = {
        let out = at_b().args(["--json", "snapshots"]).run().success().json();
        let mut v: Vec<(String, String)> = out
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (jstr(s, "time").to_string(), jstr(s, "id").to_string()))
            .filter(|(t, _)| source.iter().any(|(st, _)| st == t))
            .collect();
        v.sort();
        v
    };
    assert_eq!(copied.len(), 2);
    for ((t1, id1), (t2, id2)) in source.iter().zip(&copied) {
        assert_eq!(t1, t2);
        let (ra, rb) = (env.path(format!("restore-a-{id1}")), env.path(format!("restore-b-{id2}")));
        restore_to(&env, &a, id1, &ra);
        at_b().args(["restore", id2, "--target"]).arg(&rb).run().success();
        let diffs = compare_trees(&restored(&ra, &src), &restored(&rb, &src), &CompareOpts::default());
        assert!(diffs.is_empty(), "{id2} restores differently from {id1}:\n{}", diffs.join("\n"));
    }
}

/// `init --copy-chunker-params-from A`: the new repository takes A's chunk
/// sizes and content keys (sealed under its own keys, its own passphrase),
/// so content both hold is named alike and `copy` between them re-cuts
/// nothing and sends only what is new; everything restores identical and
/// checks with the target's passphrase alone. A v1 source and a wrong source
/// passphrase are refused before anything is created.
#[test]
fn init_copy_chunker_params_from_makes_copy_send_only_new_content() {
    const TARGET_PASSWORD: &str = "the copy target's own passphrase";
    let env = TestEnv::new();
    let (a, b) = (env.path("a"), env.path("b"));
    let at_b = || env.arc_at(&b).env("ARC_PASSWORD", TARGET_PASSWORD).env("ARC_FROM_PASSWORD", TEST_PASSWORD);
    env.arc_at(&a)
        .args(["init", "--prune-grace", GRACE, "--chunk-avg", "512K", "--stream-chunk-avg", "128K"])
        .run()
        .success();
    let made = at_b()
        .args(["--json", "init", "--prune-grace", GRACE, "--copy-chunker-params-from"])
        .arg(&a)
        .run()
        .success()
        .json();
    let config = &made["config"];
    let features: Vec<&str> = config["features"].as_array().unwrap().iter().filter_map(|f| f.as_str()).collect();
    assert!(features.contains(&"shared-content-keys"), "{made:#}");
    assert_eq!(config["file_chunker"]["avg_size"], 512 * 1024, "{made:#}");
    assert_eq!(config["stream_chunker"]["avg_size"], 128 * 1024, "{made:#}");
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..3u64 {
        write_random_file(&src.join(format!("f{i}.bin")), (1 + i) * 900_000, 40 + i);
        fs::write(src.join("sub").join(format!("small{i}.txt")), format!("small file {i}\n")).unwrap();
    }
    env.arc_at(&a).args(["backup", "--time", "2026-01-01T00:00:00Z"]).arg(&src).run().success();
    // The target backs up the same content on its own (another host).
    at_b().args(["backup", "--time", "2026-01-01T12:00:00Z"]).arg(&src).run().success();
    write_random_file(&src.join("new.bin"), 1_200_000, 77);
    env.arc_at(&a).args(["backup", "--time", "2026-01-02T00:00:00Z"]).arg(&src).run().success();
    let r = at_b().args(["--json", "copy", "--all", "--from-repo"]).arg(&a).run().success().json();
    assert_eq!(r["rechunked"], serde_json::Value::Bool(false), "same content keys, no re-cut: {r:#}");
    assert_eq!(r["copied"].as_array().map(|c| c.len()), Some(2), "{r:#}");
    let added = ju64(&r, "bytes_added");
    assert!((1_200_000..1_200_000 + 64 * 1024).contains(&added), "only new.bin's content is new to the target: {r:#}");
    at_b().args(["check", "--read-data"]).run().success();
    let copied = at_b().args(["--json", "snapshots"]).run().success().json();
    let latest = copied.as_array().unwrap().iter().find(|s| jstr(s, "time").starts_with("2026-01-02")).unwrap();
    let out = env.path("restored");
    at_b().args(["restore", jstr(latest, "id"), "--target"]).arg(&out).run().success();
    let diffs = compare_trees(&src, &restored(&out, &src), &CompareOpts::default());
    assert!(diffs.is_empty(), "the copy restores differently:\n{}", diffs.join("\n"));

    // Refusals leave nothing behind.
    let v1 = env.path("v1");
    cp_a(&frozen_v1(), &v1);
    let c = env.path("c");
    env.arc_at(&c).args(["init", "--copy-chunker-params-from"]).arg(&v1).run().failure().stderr_contains("format v1");
    if !encryption_none() {
        env.arc_at(&c)
            .env("ARC_FROM_PASSWORD", "not the source's passphrase")
            .args(["init", "--copy-chunker-params-from"])
            .arg(&a)
            .run()
            .failure()
            .stderr_contains("--copy-chunker-params-from");
    }
    assert!(!c.join("config").exists(), "a refused init created a repository");
}

#[test]
fn copy_needs_a_source_and_a_choice() {
    let env = TestEnv::new();
    env.arc().args(["init", "--prune-grace", GRACE]).run().success();
    env.arc()
        .args(["copy", "--from-repo"])
        .arg(env.path("nothing"))
        .arg("--all")
        .run()
        .failure()
        .stderr_contains("not an arc repository");
    let v1 = env.path("v1");
    cp_a(&frozen_v1(), &v1);
    env.arc().args(["copy", "--from-repo"]).arg(&v1).run().failure();
    env.arc().args(["copy", "--from-repo"]).arg(&v1).arg("ffffffff").run().failure().stderr_contains("ffffffff");
    assert!(env.snapshots_json().is_empty());
}

/// A backup stopped with SIGSTOP after it deduplicated against the packs
/// of an older snapshot, while that snapshot is forgotten and one prune
/// marks its packs and, once the grace period and the frozen backup's
/// session expiry have passed, another sweeps them; then SIGCONT. The
/// backup either commits a snapshot that restores byte for byte or fails
/// cleanly (no snapshot, a one-line error); `check --read-data` passes.
/// Twice, resuming in two orders.
#[test]
fn a_backup_frozen_by_sigstop_past_the_grace_period_commits_intact_or_aborts() {
    let env = TestEnv::new();
    let mut outcomes = Vec::new();
    for round in 0..2 {
        let repo = env.path(format!("repo{round}"));
        env.arc_at(&repo).args(["init", "--pack-size", "1M", "--prune-grace", GRACE]).run().success();
        let src = env.path(format!("src{round}"));
        for i in 0..6u64 {
            write_random_file(&src.join(format!("old/f{i}.bin")), 300_000 + i, 10 * round + i);
        }
        let first = env.arc_at(&repo).args(["--json", "backup"]).arg(&src).run().success().json();
        let first = jstr(&first, "snapshot_id").to_string();
        // Packs younger than the grace period are never marked.
        std::thread::sleep(Duration::from_secs(3));
        write_random_file(&src.join("new/zz-last.bin"), 400_000, 99 + round);
        let expected = env.path(format!("expected{round}"));
        cp_a(&src, &expected);

        // Hold the backup before it reads its last file (after the old
        // files were deduplicated), then freeze the whole process.
        let pause = env.path(format!("pause{round}"));
        fs::create_dir_all(&pause).unwrap();
        fs::write(pause.join("zz-last.bin.pause"), b"").unwrap();
        let running = env
            .arc_at(&repo)
            .args(["--json", "backup"])
            .arg(&src)
            .env("ARC_TEST_PAUSE_BEFORE_READ", &pause)
            .timeout(Duration::from_secs(120))
            .spawn();
        assert!(
            wait_for(Duration::from_secs(30), || pause.join("zz-last.bin.reached").exists()),
            "the backup never reached its last file"
        );
        running.signal(libc::SIGSTOP);

        env.arc_at(&repo).args(["forget", &first]).run().success();
        let marked = env.arc_at(&repo).args(["--json", "prune"]).run().success().json();
        assert!(ju64(&marked, "packs_marked") > 0, "round {round}: nothing was marked: {marked:#}");
        std::thread::sleep(Duration::from_secs(4));
        let swept = env.arc_at(&repo).args(["--json", "prune"]).run().success().json();
        assert!(
            ju64(&swept, "packs_deleted") > 0,
            "round {round}: the sweep deleted nothing (the frozen session still held it back?): {swept:#}"
        );

        // Round 0 continues the process before releasing the hook, round 1
        // the other way round (it resumes straight into the read).
        if round == 0 {
            running.signal(libc::SIGCONT);
            std::thread::sleep(Duration::from_millis(200));
            fs::write(pause.join("zz-last.bin.go"), b"").unwrap();
        } else {
            fs::write(pause.join("zz-last.bin.go"), b"").unwrap();
            running.signal(libc::SIGCONT);
        }
        let out = running.wait();
        let snaps = snapshot_list(&env, &repo);
        if out.status.success() {
            let id = jstr(&out.json(), "snapshot_id").to_string();
            assert_eq!(snaps.len(), 1, "round {round}");
            let target = env.path(format!("restore{round}"));
            restore_to(&env, &repo, &id, &target);
            let diffs = compare_trees(
                &expected,
                &restored(&target, &src),
                &CompareOpts { dir_mtime: false, ..Default::default() },
            );
            assert!(
                diffs.is_empty(),
                "round {round}: the snapshot does not restore byte for byte:\n{}",
                diffs.join("\n")
            );
            outcomes.push("committed");
        } else {
            let err = out.one_line_error();
            assert!(
                err.contains("prune") || err.contains("session"),
                "round {round}: unclear failure: {err}\n{}",
                out.describe()
            );
            assert!(snaps.is_empty(), "round {round}: a failed backup left a snapshot");
            outcomes.push("aborted");
        }
        env.arc_at(&repo).args(["check", "--read-data"]).run().success();
        // And the next backup works.
        let again = env.arc_at(&repo).args(["--json", "backup"]).arg(&src).run().success().json();
        let target = env.path(format!("restore-again{round}"));
        restore_to(&env, &repo, jstr(&again, "snapshot_id"), &target);
        let diffs =
            compare_trees(&expected, &restored(&target, &src), &CompareOpts { dir_mtime: false, ..Default::default() });
        assert!(diffs.is_empty(), "round {round}, next backup:\n{}", diffs.join("\n"));
    }
    eprintln!("frozen backups: {outcomes:?}");
}

/// Operations seen in `REPO/sessions` at one moment.
fn running_operations(repo: &Path, keys: &arc_engine::crypto::Keys) -> (bool, bool) {
    let (mut backup, mut prune) = (false, false);
    for f in files_under(&repo.join("sessions")) {
        // Sealed with the repository's keys (protocol.md §2): opened
        // through the engine's decoder, as arc itself reads them.
        let Ok(data) = fs::read(&f) else { continue };
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let Ok(session) = arc_engine::format::session::decode(keys, &data, &name) else { continue };
        backup |= session.operation == "backup";
        prune |= session.operation == "prune";
    }
    (backup, prune)
}

/// Four backups of overlapping trees and two prunes started at once, as
/// separate processes, round after round, with earlier snapshots
/// forgotten so that the prunes mark and (once the grace period is over)
/// sweep while backups deduplicate. Nothing is refused: every process
/// succeeds, except that a backup stalled past the session expiry may
/// stop cleanly and succeed when run again; a round counts as overlapping when a backup's and a prune's
/// session files were seen in the repository at the same moment, and most
/// rounds must. Afterwards every snapshot restores byte for byte and
/// `check --read-data` passes.
#[test]
fn four_backups_and_two_prunes_as_processes_at_once() {
    const ROUNDS: u64 = 6;
    let env = TestEnv::new();
    env.arc()
        .args(["init", "--pack-size", "1M", "--chunk-min", "16K", "--chunk-avg", "64K", "--chunk-max", "256K"])
        .args(["--prune-grace", GRACE])
        .run()
        .success();
    let repo = open_repo(&env.repo);
    let keys = repo.keys().expect("a v2 repository has keys");
    let mut expected: Vec<(String, PathBuf, u64)> = Vec::new();
    let mut overlapping = 0;
    let (mut marked, mut deleted) = (0, 0);
    let mut aborted = 0;
    for round in 0..ROUNDS {
        // Keep the last round's snapshots; forget older ones.
        let old: Vec<String> = expected.iter().filter(|(_, _, r)| r + 1 < round).map(|(id, _, _)| id.clone()).collect();
        if !old.is_empty() {
            env.arc().arg("forget").args(&old).run().success();
            expected.retain(|(id, _, _)| !old.contains(id));
        }
        let srcs: Vec<PathBuf> = (0..4u64)
            .map(|w| {
                let s = env.path(format!("src-{round}-{w}"));
                // Shared by all writers and by two rounds, and its own.
                write_random_file(&s.join("shared.bin"), 600_000, 1 + round / 2);
                write_random_file(&s.join("own.bin"), 300_000, 100 + round * 10 + w);
                fs::create_dir_all(s.join("text")).unwrap();
                fs::write(s.join("text/t.txt"), repetitive_text(80_000, w % 2)).unwrap();
                s
            })
            .collect();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (seen_overlap, outs) = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                let mut both = false;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let (b, p) = running_operations(&env.repo, keys);
                    both |= b && p;
                    std::thread::sleep(Duration::from_millis(2));
                }
                both
            });
            let backups: Vec<Running> =
                srcs.iter().map(|s| env.arc().args(["--json", "backup"]).arg(s).spawn()).collect();
            let prunes: Vec<Running> = (0..2).map(|_| env.arc().args(["--json", "prune"]).spawn()).collect();
            let b: Vec<Output> = backups.into_iter().map(|r| r.wait()).collect();
            let p: Vec<Output> = prunes.into_iter().map(|r| r.wait()).collect();
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            (watcher.join().unwrap(), (b, p))
        });
        let (backups, prunes) = outs;
        for (out, src) in backups.into_iter().zip(&srcs) {
            // A backup whose session went unheard for longer than the
            // expiry (3 s here; a loaded machine can stall a refresh's
            // fsync that long) may find that a sweep deleted what it
            // relied on: it must then stop cleanly, say so, and write no
            // snapshot (protocol.md §6, case 3), and the rerun it asks for
            // must succeed. Any other failure is a bug.
            let out = if out.status.success() {
                out
            } else {
                let err = out.stderr_str();
                assert!(
                    err.contains("a concurrent prune deleted") && err.contains("went unheard"),
                    "round {round}: a backup failed\n{}",
                    out.describe()
                );
                aborted += 1;
                env.arc().args(["--json", "backup"]).arg(src).run().success()
            };
            expected.push((jstr(&out.json(), "snapshot_id").to_string(), src.clone(), round));
        }
        for out in prunes {
            let r = out.success().json();
            marked += ju64(&r, "packs_marked");
            deleted += ju64(&r, "packs_deleted");
        }
        overlapping += u64::from(seen_overlap);
        // Let earlier marks come due.
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!(
        "backups and prunes overlapped in {overlapping} of {ROUNDS} rounds; {marked} packs marked, {deleted} deleted; \
         {aborted} backups went unheard too long, stopped cleanly and succeeded when run again"
    );
    assert!(aborted * 3 <= ROUNDS * 4, "{aborted} of {} backups went unheard too long", ROUNDS * 4);
    assert!(overlapping * 3 >= ROUNDS * 2, "backups and prunes overlapped in only {overlapping} of {ROUNDS} rounds");
    assert!(marked > 0 && deleted > 0, "the prunes marked {marked} and deleted {deleted} packs: nothing was exercised");
    env.arc().args(["check", "--read-data"]).run().success();
    for (id, src, _) in &expected {
        let target = env.path(format!("restore-{id}"));
        env.restore(id, &target);
        let diffs = compare_trees(src, &restored(&target, src), &CompareOpts::default());
        assert!(diffs.is_empty(), "snapshot {id} does not restore byte for byte:\n{}", diffs.join("\n"));
    }
}
