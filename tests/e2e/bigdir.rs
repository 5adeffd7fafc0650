//! A directory whose tree blob is bigger than the packer's in-flight budget
//! (about 100,000 entries) once hung every backup forever, deaf to SIGTERM;
//! and a backup waiting on a silent producer must still stop on SIGTERM.

use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use crate::util::*;

/// 150,000 small files in one directory, as in a PHP session directory or
/// a Maildir `cur/`: the backup completes, the files are all there, and a
/// file added later is found by the next backup.
#[test]
fn a_directory_with_150k_entries_backs_up_and_restores() {
    let env = TestEnv::in_memory();
    let dir = env.path("src/sessions");
    std::fs::create_dir_all(&dir).unwrap();
    const FILES: usize = 150_000;
    for i in 0..FILES {
        std::fs::write(dir.join(format!("sess_{i:08x}")), format!("user|s:{i};\n")).unwrap();
    }
    env.init();
    // The hang never ended: bound it (well above the few seconds it takes).
    let out =
        env.arc().args(["--json", "backup"]).arg(env.path("src")).timeout(Duration::from_secs(300)).run().success();
    let b = out.json();
    assert_eq!(ju64(&b, "summary.total_files"), FILES as u64, "{}", out.describe());

    let name = format!("latest:{}", dir.join("sess_0001e240").display());
    let cat = env.arc().args(["cat", &name]).run().success();
    assert_eq!(cat.stdout, format!("user|s:{};\n", 0x1e240).as_bytes());

    std::fs::write(dir.join("sess_new"), b"new\n").unwrap();
    env.backup([env.path("src")]);
    let ls = env.arc().args(["ls", "latest"]).arg(&dir).run().success();
    let names = ls.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    assert!(names > FILES, "ls lists {names} entries, expected {} and the directory", FILES + 1);
    assert!(ls.stdout.windows(8).any(|w| w == "sess_new".as_bytes()), "the added file is missing");

    let target = env.path("restore");
    env.restore("latest", &target);
    let restored = restored(&target, &env.path("src")).join("sessions");
    assert_eq!(std::fs::read_dir(&restored).unwrap().count(), FILES + 1);
    assert_eq!(std::fs::read(restored.join("sess_00000007")).unwrap(), b"user|s:7;\n");
}

/// A dump that goes silent (waiting on a lock, say) must not keep a
/// backup alive after SIGTERM: a read of a silent stdin never returns by
/// itself, and closing fd 0 does not wake it.
#[test]
fn sigterm_stops_a_backup_waiting_on_a_silent_stdin() {
    let env = TestEnv::new();
    env.init();
    let fifo = env.path("dump.fifo");
    nix_mkfifo(&fifo);
    // Held open for writing (O_RDWR does not block on a FIFO) and never
    // written to: the producer is alive but silent.
    let _writer = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let running = env
        .arc()
        .args(["backup", "--stdin", "--stdin-name", "db.sql"])
        .stdin_file(&fifo)
        .timeout(Duration::from_secs(30))
        .spawn();
    // Running once it holds its session (format v2; a lock in v1).
    let announced =
        || !files_under(&env.repo.join("sessions")).is_empty() || !files_under(&env.repo.join("locks")).is_empty();
    assert!(wait_for(Duration::from_secs(60), announced));
    std::thread::sleep(Duration::from_millis(300));
    running.signal(libc::SIGTERM);
    let started = std::time::Instant::now();
    // `wait` fails the test if the backup is still running after 30 s.
    let out = running.wait();
    assert!(out.status.code().is_some_and(|c| c != 0), "not a clean failure\n{}", out.describe());
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(env.snapshot_files().is_empty(), "an interrupted backup left a snapshot");
    assert!(files_under(&env.repo.join("locks")).is_empty(), "the lock was left behind");
    assert!(files_under(&env.repo.join("sessions")).is_empty(), "the session was left behind");
    env.arc().arg("check").run().success();
}

fn nix_mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(r, 0, "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
}
