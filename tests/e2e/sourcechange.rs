//! Source files that change between the walk and the read, or while being
//! read: deleted, truncated, grown, replaced, made unreadable. Expected: a
//! warning naming each such file, exit code 3, and a snapshot holding
//! exactly what was read (restore gives those bytes and the recorded size).
//!
//! The deterministic cases use the backup's test hook
//! `ARC_TEST_PAUSE_BEFORE_READ` (engine/src/ops/backup.rs,
//! `pause_before_read`): the backup stops before opening a chosen file,
//! the test changes it, then lets the backup go on.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::util::*;

/// What a victim turns into, and what the snapshot must then hold.
enum Change {
    Delete,
    Truncate(u64),
    Append(u64),
    ReplaceByFile,
    ReplaceByDir,
    Unreadable,
}

#[test]
fn files_changed_between_walk_and_read_are_stored_as_read_with_a_warning() {
    require!(Need::FaultInjection);
    let env = TestEnv::new();
    let src = env.path("src");
    let hooks = env.path("hooks");
    fs::create_dir_all(&hooks).unwrap();
    // Small files are read in one piece of the size the walk saw; files
    // above the chunker's maximum (4 MiB) are streamed to their end.
    let mut victims: Vec<(&str, u64, Change)> = vec![
        ("deleted.bin", 200_000, Change::Delete),
        ("truncated.bin", 300_000, Change::Truncate(10_000)),
        ("grown.bin", 300_000, Change::Append(50_000)),
        ("large-truncated.bin", 6 * MIB, Change::Truncate(MIB + 17)),
        ("large-grown.bin", 6 * MIB, Change::Append(MIB)),
        ("replaced.bin", 250_000, Change::ReplaceByFile),
        ("now-a-dir.bin", 100_000, Change::ReplaceByDir),
    ];
    if !is_root() {
        // Root reads a mode 000 file anyway.
        victims.push(("unreadable.bin", 100_000, Change::Unreadable));
    }
    for (i, (name, size, _)) in victims.iter().enumerate() {
        write_random_file(&src.join(name), *size, 3000 + i as u64);
        fs::write(hooks.join(format!("{name}.pause")), b"").unwrap();
    }
    for i in 0..10u64 {
        write_random_file(&src.join(format!("calm/c{i}.bin")), 100_000 + i, 4000 + i);
    }
    env.init();
    let snapshot_of_calm = src.join("calm");

    let backup = env.arc().args(["--json", "backup"]).arg(&src).env("ARC_TEST_PAUSE_BEFORE_READ", &hooks).spawn();
    // What each victim must hold in the snapshot (None: left out).
    let mut expected: Vec<(PathBuf, Option<Vec<u8>>)> = Vec::new();
    let mut pending: Vec<usize> = (0..victims.len()).collect();
    let ok = wait_for(Duration::from_secs(60), || {
        pending.retain(|&i| {
            let (name, _, change) = &victims[i];
            if !hooks.join(format!("{name}.reached")).exists() {
                return true;
            }
            let p = src.join(name);
            let stored = match change {
                Change::Delete => {
                    fs::remove_file(&p).unwrap();
                    None
                }
                Change::Truncate(to) => {
                    fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(*to).unwrap();
                    Some(fs::read(&p).unwrap())
                }
                Change::Append(n) => {
                    let before = fs::read(&p).unwrap();
                    let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
                    f.write_all(&vec![0x5a; *n as usize]).unwrap();
                    // A small file is read up to the size the walk saw; a
                    // large one to its end.
                    Some(if before.len() as u64 > 4 * MIB { fs::read(&p).unwrap() } else { before })
                }
                Change::ReplaceByFile => {
                    let tmp = src.join(format!(".{name}.new"));
                    write_random_file(&tmp, 123_456, 77);
                    fs::rename(&tmp, &p).unwrap();
                    Some(fs::read(&p).unwrap())
                }
                Change::ReplaceByDir => {
                    fs::remove_file(&p).unwrap();
                    fs::create_dir(&p).unwrap();
                    None
                }
                Change::Unreadable => {
                    chmod(&p, 0o000);
                    None
                }
            };
            expected.push((p, stored));
            fs::write(hooks.join(format!("{name}.go")), b"").unwrap();
            false
        });
        pending.is_empty()
    });
    let out = backup.wait();
    assert!(ok, "the backup never reached some victims: {pending:?}\n{}", out.describe());
    let out = out.code_is(3);
    let stderr = out.stderr_str();
    for (name, _, _) in &victims {
        assert!(
            stderr.lines().any(|l| l.contains("warning") && l.contains(name)),
            "no warning names {name}\n{}",
            out.describe()
        );
    }
    assert!(!stderr.contains("calm"), "unchanged files were warned about\n{}", out.describe());
    let snap = jstr(&out.json(), "short_id").to_string();

    env.arc().args(["check", "--read-data"]).run().success();
    let target = env.path("restore");
    // Restore verifies that each file's chunks hold exactly its recorded size.
    env.restore(&snap, &target);
    for (p, stored) in &expected {
        let r = restored(&target, p);
        match stored {
            None => assert!(!r.exists(), "{} is in the snapshot although it could not be read", p.display()),
            Some(bytes) => {
                let got = fs::read(&r).unwrap_or_else(|e| panic!("{}: {e}", r.display()));
                assert!(
                    got == *bytes,
                    "{}: {} bytes restored, {} expected as read",
                    p.display(),
                    got.len(),
                    bytes.len()
                );
            }
        }
    }
    assert_trees_equal(&snapshot_of_calm, &restored(&target, &snapshot_of_calm), &CompareOpts::default());
    if !is_root() {
        chmod(&src.join("unreadable.bin"), 0o644);
    }
}

#[test]
fn a_file_truncated_and_regrown_while_read_is_stored_consistently() {
    // Not deterministic by design: a thread truncates and regrows a large
    // file in a loop while real backups read it. Whatever each backup
    // caught, its snapshot must be self-consistent: restore (which checks
    // every file's chunks against its recorded size) succeeds and check
    // passes. Runs: 5 backups.
    let env = TestEnv::new();
    let src = env.path("src");
    let victim = src.join("busy.bin");
    write_random_file(&victim, 24 * MIB, 5);
    write_random_file(&src.join("calm.bin"), MIB, 6);
    env.init();
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (stop, victim) = (stop.clone(), victim.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            let f = fs::OpenOptions::new().write(true).open(&victim).unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.set_len(MIB * (1 + rounds % 23)).unwrap();
                std::thread::sleep(Duration::from_millis(3));
                f.set_len(24 * MIB).unwrap();
                std::thread::sleep(Duration::from_millis(3));
                rounds += 1;
            }
            rounds
        })
    };
    let mut warned = 0;
    for run in 0..5 {
        let out = env.arc().args(["--json", "backup", "--force-read"]).arg(&src).run();
        match out.code() {
            Some(0) => {}
            Some(3) => {
                warned += 1;
                assert!(out.stderr_str().contains("busy.bin"), "{}", out.describe());
            }
            _ => panic!("backup {run} failed\n{}", out.describe()),
        }
        let snap = jstr(&out.json(), "short_id").to_string();
        let target = env.path(format!("r{run}"));
        env.restore(&snap, &target);
        assert_same_file(&src.join("calm.bin"), &restored(&target, &src.join("calm.bin")));
        let got = fs::metadata(restored(&target, &victim)).map(|m| m.len()).unwrap_or(0);
        assert!(got <= 24 * MIB, "restored {got} bytes of a file never bigger than 24 MiB");
        fs::remove_dir_all(&target).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = churn.join().unwrap();
    env.arc().args(["check", "--read-data"]).run().success();
    eprintln!("truncate loop: {rounds} truncations, {warned} of 5 backups warned");
}
