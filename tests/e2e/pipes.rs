//! Output into a pipe that closes early (`arc snapshots | head -2`): every
//! command ends normally (exit 0, no panic, no error line) and leaves no
//! lock behind, with and without --json.

use std::fs;

use crate::util::*;

fn assert_quiet_success(out: &Output, what: &str) {
    let err = out.stderr_str();
    assert_eq!(out.code(), Some(0), "{what}: exit code\n{}", out.describe());
    assert!(!err.contains("panicked") && !err.contains("error"), "{what}: stderr\n{}", out.describe());
}

#[test]
fn a_closed_stdout_ends_every_command_normally() {
    let env = TestEnv::new();
    let src = env.path("src");
    for i in 0..40 {
        fs::create_dir_all(src.join(format!("d{i}"))).unwrap();
        fs::write(src.join(format!("d{i}/file.txt")), format!("file {i}\n")).unwrap();
    }
    env.init();
    for day in 1..=3 {
        env.backup([src.as_os_str(), "--time".as_ref(), format!("2026-07-0{day}T12:00:00Z").as_ref()]);
    }
    let file = format!("latest:{}", src.join("d1/file.txt").display());
    let other = env.path("other");
    env.arc_at(&other).arg("init").run().success();
    env.arc_at(&other).arg("backup").arg(src.join("d0")).run().success();
    let commands: Vec<Vec<String>> = vec![
        vec!["snapshots".into()],
        vec!["--json".into(), "snapshots".into()],
        vec!["snapshots".into(), "--keep-last".into(), "1".into()],
        vec!["ls".into(), "-R".into(), "-l".into(), "latest".into()],
        vec!["--json".into(), "ls".into(), "-R".into(), "latest".into()],
        vec!["cat".into(), file],
        vec!["dump".into(), "latest".into()],
        vec!["forget".into(), "--keep-last".into(), "1".into(), "--dry-run".into()],
        vec!["--json".into(), "forget".into(), "--keep-last".into(), "1".into(), "--dry-run".into()],
        vec!["prune".into(), "--dry-run".into()],
        vec!["stats".into()],
        vec!["--json".into(), "stats".into()],
        vec!["check".into()],
        vec!["list".into(), "blobs".into()],
        vec!["--json".into(), "list".into(), "blobs".into()],
        vec!["key".into(), "list".into()],
        vec!["key".into(), "export".into()],
        vec!["diff".into(), "latest".into(), "latest".into()],
        vec!["copy".into(), "--all".into(), "--from-repo".into(), other.display().to_string()],
        vec!["tag".into(), "latest".into(), "--add".into(), "piped".into()],
    ];
    for args in &commands {
        let out = env.arc().args(args).stdout_closed().run();
        assert_quiet_success(&out, &args.join(" "));
    }
    let locks = env.arc().args(["list", "locks"]).run().success();
    assert_eq!(locks.stdout_str(), "", "a lock was left behind");

    // The real thing, through a shell: head stops reading after two lines
    // while arc still has most of a long listing to write.
    for cmd in [
        "snapshots | head -2",
        "ls -R latest | head -2",
        "forget --keep-last 1 --dry-run | head -1",
        "--json snapshots | head -c 100",
    ] {
        let line = format!("set -o pipefail; \"$ARC\" --repo \"$REPO\" {cmd} >/dev/null");
        let out = TestCommand::new("bash")
            .args(["-c", &line])
            .env("ARC", arc_bin())
            .env("REPO", &env.repo)
            .env("HOME", &env.home)
            .env("XDG_CACHE_HOME", env.home.join(".cache"))
            .env("ARC_PASSWORD", TEST_PASSWORD)
            .run();
        assert_quiet_success(&out, cmd);
    }
}
