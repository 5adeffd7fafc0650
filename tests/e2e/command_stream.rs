//! Dump commands as streams (`--stdin-from-command`, `--command-stream`)
//! with plain programs: failures leave no snapshot, a command that cannot
//! run leaves the repository untouched, several streams are read side by
//! side, and stopping arc stops the commands. Real database dumps are in
//! dbdump.rs.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::*;

/// Everything about every file below `dir`, index database and lock files
/// included: size, mtime (ns) and content. Two equal states mean nothing
/// was written, not even a lock.
pub fn exact_state(dir: &Path) -> BTreeMap<String, (u64, i128, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
            if m.is_dir() {
                out.insert(format!("{rel}/"), (0, mtime, Vec::new()));
                stack.push(p);
            } else {
                out.insert(rel, (m.len(), mtime, fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[track_caller]
pub fn assert_state_unchanged(before: &BTreeMap<String, (u64, i128, Vec<u8>)>, dir: &Path, what: &str) {
    let after = exact_state(dir);
    let mut diff = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => diff.push(format!("removed {k}")),
            Some(w) if w != v => diff.push(format!("changed {k} (size {} -> {}, mtime {} -> {})", v.0, w.0, v.1, w.1)),
            _ => {}
        }
    }
    diff.extend(after.keys().filter(|k| !before.contains_key(*k)).map(|k| format!("added {k}")));
    assert!(diff.is_empty(), "{what}: {} changed:\n  {}", dir.display(), diff.join("\n  "));
}

/// The `arc: error: ...` line of a failed run: the last line of stderr,
/// after whatever the dump commands wrote there; there must be one only.
#[track_caller]
pub fn error_line(out: &Output) -> String {
    let err = out.stderr_str();
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("arc: error: ")).collect();
    let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    assert!(
        errors.len() == 1 && errors[0] == last,
        "expected one `arc: error: ...` line, last on stderr\n{}",
        out.describe()
    );
    last.to_string()
}

#[track_caller]
pub fn assert_check_ok(env: &TestEnv) {
    let check = env.arc().args(["check", "--read-data"]).run();
    assert!(check.status.success(), "arc check --read-data failed\n{}", check.describe());
}

/// Whether process `pid` still exists (a zombie counts as existing).
fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

#[test]
fn failing_command_leaves_no_snapshot_and_the_retry_reuses_its_chunks() {
    let env = TestEnv::new();
    env.init();
    let dump = env.path("dump.bin");
    let size = 48 * MIB;
    write_random_file(&dump, size, 0x5EED);
    let q = sh_quote(&dump);

    // Writes 40 of the 48 MiB, complains on stderr and exits 2: what a dump
    // that loses its connection half way does.
    let cmd = format!("head -c {} {q}; echo 'dump: error: lost connection to server' >&2; exit 2", 40 * MIB);
    let out = env.arc().args(["backup", "--stdin-from-command", &cmd, "--stdin-name", "db/dump.bin"]).run().failure();
    let line = error_line(&out);
    for needle in ["db/dump.bin", &cmd, "exited with status 2", "dump: error: lost connection to server"] {
        assert!(line.contains(needle), "error line lacks {needle:?}: {line}");
    }
    assert!(
        out.stderr_str().lines().any(|l| l == "dump: error: lost connection to server"),
        "the command's stderr was not passed through\n{}",
        out.describe()
    );
    assert!(env.snapshot_files().is_empty(), "a failed dump became a snapshot");
    assert_check_ok(&env);
    // What was read before the failure is written out, not dropped: all of
    // it but the part after the last chunk boundary (chunks are <= 1 MiB,
    // read ahead <= 2 MiB).
    let left = du_apparent(&env.repo.join("data"), false);
    assert!(left >= 36 * MIB, "the failed try left only {left} bytes of packs for 40 MiB read");

    // The same command killed by a signal half way: no snapshot either.
    let cmd = format!("head -c {} {q}; kill -9 $$", 20 * MIB);
    let out = env.arc().args(["backup", "--stdin-from-command", &cmd]).run().failure();
    let line = error_line(&out);
    assert!(line.contains("killed by signal 9 (SIGKILL)"), "{line}");
    assert!(env.snapshot_files().is_empty(), "a killed dump became a snapshot");

    // The retry stores only what the failed tries did not leave in packs.
    let b = env.backup(["--stdin-from-command", &format!("cat {q}"), "--stdin-name", "db/dump.bin"]);
    assert_eq!(ju64(&b, "summary.bytes_read"), size, "{b:#}");
    let added = ju64(&b, "summary.bytes_added");
    assert!(added <= 12 * MIB, "the retry added {added} of {size} bytes: the failed try's chunks were not reused");
    let cat = env.arc().args(["cat", "latest:db/dump.bin"]).stdout_to(env.path("cat.bin")).run().success();
    drop(cat);
    assert_same_file(&dump, &env.path("cat.bin"));
    assert_check_ok(&env);
}

#[test]
fn command_that_cannot_run_fails_before_anything_is_written() {
    let env = TestEnv::new();
    env.init();
    env.backup(["--stdin-from-command", "seq 1 100000", "--stdin-name", "seq.txt"]);
    let before = exact_state(&env.repo);

    let out = env.arc().args(["backup", "--stdin-from-command", "pg_dumpx app", "--stdin-name", "pg/app.sql"]).run();
    let line = out.failure().one_line_error();
    assert_eq!(line, "arc: error: cannot run 'pg_dumpx': No such file or directory");
    assert_state_unchanged(&before, &env.repo, "backup with a missing command");

    // A file that is not executable.
    let script = env.path("dump.sh");
    fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    chmod(&script, 0o644);
    let out = env.arc().args(["backup", "--command-stream"]).arg(format!("x.sql={}", script.display())).run();
    let line = out.failure().one_line_error();
    assert!(line.contains(&format!("cannot run '{}': Permission denied", script.display())), "{line}");
    assert_state_unchanged(&before, &env.repo, "backup with a non-executable command");

    // One good command and one missing: the good one is not left running
    // and nothing is written.
    let out = env
        .arc()
        .args(["backup", "--command-stream", "a.txt=seq 1 10", "--command-stream", "b.txt=no-such-dumper --all"])
        .run();
    assert!(out.failure().one_line_error().contains("cannot run 'no-such-dumper'"));
    assert_state_unchanged(&before, &env.repo, "backup with one missing command of two");

    // Without --repo or ARC_REPO, the default repository is not created.
    let out = env.cmd().args(["backup", "--stdin-from-command", "pg_dumpx"]).run().failure();
    out.one_line_error();
    assert!(!env.home.join(".local/share/arc").exists(), "the default repository was created");
}

#[test]
fn bad_stream_names_are_refused_before_any_command_runs() {
    let env = TestEnv::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("www")).unwrap();
    fs::write(src.join("www/index.html"), "hi").unwrap();
    let marker = env.path("ran");
    let touch = format!("touch {}", marker.display());
    let before = exact_state(&env.repo);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--command-stream".into(), format!("a.sql={touch}"), "--command-stream".into(), "a.sql=true".into()],
            "given twice",
        ),
        (
            vec!["--command-stream".into(), format!("db={touch}"), "--command-stream".into(), "db/x.sql=true".into()],
            "overlap",
        ),
        (vec!["--stdin-from-command".into(), touch.clone(), "--stdin-name".into(), "../x".into()], "stream name"),
        (
            vec!["--command-stream".into(), format!("{}/www/x.sql={touch}", src.display())],
            "overlaps the backed-up path",
        ),
        (
            vec!["--stdin-from-command".into(), touch.clone(), "--command-stream".into(), format!("stdin={touch}")],
            "given twice",
        ),
    ];
    for (args, needle) in cases {
        let out = env.arc().arg("backup").arg(&src).args(&args).run();
        let line = out.failure().one_line_error();
        assert!(line.contains(needle), "{args:?}: expected {needle:?} in {line}");
        assert!(!marker.exists(), "{args:?}: a command ran although the names were refused");
    }
    let out = env.arc().args(["backup", "--command-stream", "no-equals-sign"]).run();
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert_state_unchanged(&before, &env.repo, "refused backups");
}

#[test]
fn streams_and_files_in_one_snapshot_read_side_by_side() {
    let env = TestEnv::new();
    env.init();
    let src = env.path("www");
    write_random_file(&src.join("site/a.bin"), 3 * MIB, 1);
    fs::write(src.join("site/index.html"), "<html>hello</html>\n").unwrap();
    let one = env.path("one.bin");
    let two = env.path("two.bin");
    write_random_file(&one, 4 * MIB + 7, 2);
    write_random_file(&two, 5 * MIB + 3, 3);
    let stdin_data = repetitive_text(3 * MIB as usize, 4);

    // Each command writes 2 MiB, then waits until the other has written its
    // 2 MiB before writing the rest. Far more than a pipe holds: if arc read
    // the streams one after the other, both would wait for ever.
    let (a_done, b_done) = (env.path("a.done"), env.path("b.done"));
    let cmd = |file: &Path, mine: &Path, other: &Path| {
        format!(
            "head -c 2097152 {f}; touch {m}; n=0; while [ ! -e {o} ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done; \
             [ -e {o} ] || {{ echo 'gave up waiting' >&2; exit 3; }}; tail -c +2097153 {f}",
            f = sh_quote(file),
            m = sh_quote(mine),
            o = sh_quote(other)
        )
    };
    let t = Instant::now();
    let out = env
        .arc()
        .args(["--json", "backup"])
        .arg(&src)
        .arg("--command-stream")
        .arg(format!("dumps/one.bin={}", cmd(&one, &a_done, &b_done)))
        .arg("--command-stream")
        .arg(format!("dumps/two.bin={}", cmd(&two, &b_done, &a_done)))
        .args(["--stdin", "--stdin-name", "three.txt", "--tag", "daily"])
        .stdin_bytes(stdin_data.clone())
        .timeout(Duration::from_secs(120))
        .run()
        .success();
    assert!(t.elapsed() < Duration::from_secs(25), "streams were not read side by side: {:?}", t.elapsed());
    let b = out.json();
    let mut expect_paths = vec!["/dumps/one.bin".to_string(), "/dumps/two.bin".into(), "/three.txt".into()];
    expect_paths.push(src.display().to_string());
    expect_paths.sort();
    assert_eq!(b["paths"], serde_json::json!(expect_paths), "{b:#}");
    assert_eq!(b["tags"], serde_json::json!(["daily"]), "{b:#}");
    assert_eq!(env.snapshots_json().len(), 1);

    for (name, file) in [("dumps/one.bin", &one), ("dumps/two.bin", &two)] {
        let got = env.path(format!("cat-{}", name.replace('/', "-")));
        env.arc().args(["cat", &format!("latest:{name}")]).stdout_to(&got).run().success();
        assert_same_file(file, &got);
    }
    let cat = env.arc().args(["cat", "latest:three.txt"]).run().success();
    assert!(cat.stdout == stdin_data, "stdin stream differs");
    let target = env.path("restore");
    env.restore("latest", &target);
    assert_trees_equal(&src, &restored(&target, &src), &CompareOpts::default());
    assert_same_file(&one, &target.join("dumps/one.bin"));
    assert_same_file(&two, &target.join("dumps/two.bin"));
    assert_check_ok(&env);
}

#[test]
fn a_failing_stream_stops_the_others_and_the_backup() {
    let env = TestEnv::new();
    env.init();
    let pid_file = env.path("sleeper.pid");
    // A dump that hangs without writing, beside one that fails.
    let hang = format!("echo $$ > {}; exec sleep 300", sh_quote(&pid_file));
    let t = Instant::now();
    let out = env
        .arc()
        .args(["backup", "--command-stream", &format!("hang.sql={hang}")])
        .args(["--command-stream", "fail.sql=sleep 1; echo 'fail: out of memory' >&2; exit 4"])
        .timeout(Duration::from_secs(60))
        .run()
        .failure();
    assert!(t.elapsed() < Duration::from_secs(20), "arc took {:?} to give up", t.elapsed());
    let line = error_line(&out);
    assert!(line.contains("fail.sql") && line.contains("status 4") && line.contains("out of memory"), "{line}");
    let pid: i32 = fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(!process_exists(pid), "the hanging dump (pid {pid}) was left running");
    assert!(env.snapshot_files().is_empty());
    assert!(
        out.stderr_str().lines().any(|l| l == "[fail.sql] fail: out of memory"),
        "stderr of several commands is not prefixed with the stream name\n{}",
        out.describe()
    );
}

#[test]
fn interrupting_arc_kills_the_dump_command() {
    let env = TestEnv::new();
    env.init();
    let pid_file = env.path("dump.pid");
    let cmd = format!("echo $$ > {}; head -c 1000000 /dev/zero; exec sleep 300", sh_quote(&pid_file));
    let running = env.arc().args(["backup", "--stdin-from-command", &cmd]).timeout(Duration::from_secs(60)).spawn();
    assert!(wait_for(Duration::from_secs(20), || pid_file.exists() && fs::metadata(&pid_file).unwrap().len() > 0));
    std::thread::sleep(Duration::from_millis(500));
    let pid: i32 = fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(process_exists(pid));
    // SIGINT to arc alone, as from `kill -INT`, not to the terminal's group.
    running.signal(libc::SIGINT);
    let t = Instant::now();
    let out = running.wait();
    assert!(t.elapsed() < Duration::from_secs(10), "arc took {:?} to stop", t.elapsed());
    assert!(matches!(out.code(), Some(c) if c != 0), "{}", out.describe());
    assert!(error_line(&out).contains("interrupted"), "{}", out.describe());
    assert!(!process_exists(pid), "the dump command (pid {pid}) outlived arc");
    assert!(env.snapshot_files().is_empty());
    assert_check_ok(&env);
}

#[test]
fn empty_command_output_needs_allow_empty() {
    let env = TestEnv::new();
    env.init();
    let out = env.arc().args(["backup", "--stdin-from-command", "true", "--stdin-name", "e.sql"]).run();
    assert!(out.failure().one_line_error().contains("the stream is empty"));
    assert!(env.snapshot_files().is_empty());
    let b = env.backup(["--stdin-from-command", "true", "--stdin-name", "e.sql", "--allow-empty"]);
    assert_eq!(ju64(&b, "summary.total_bytes"), 0, "{b:#}");
    let cat = env.arc().args(["cat", "latest:e.sql"]).run().success();
    assert!(cat.stdout.is_empty());
}

#[test]
fn killing_arc_kills_the_dump_command() {
    let env = TestEnv::new();
    env.init();
    let pid_file = env.path("dump.pid");
    // exec: the pid written is the process arc started.
    let cmd = format!("echo $$ > {}; exec sleep 300", sh_quote(&pid_file));
    let running = env.arc().args(["backup", "--stdin-from-command", &cmd]).timeout(Duration::from_secs(60)).spawn();
    assert!(wait_for(Duration::from_secs(20), || fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))));
    let pid: i32 = fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    running.signal(libc::SIGKILL);
    drop(running.wait());
    // The command is not arc's child any more; it may linger a moment as a
    // zombie of whoever adopted it, but it must not keep running.
    let gone = wait_for(Duration::from_secs(10), || {
        !process_exists(pid) || fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
    });
    assert!(gone, "the dump command (pid {pid}) outlived a killed arc");
}
