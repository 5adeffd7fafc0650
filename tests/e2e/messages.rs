//! Messages that used to send users the wrong way: each names the culprit
//! and a next step that works.

use std::fs;
use std::time::Duration;

use crate::mount::Mounted;
use crate::util::*;

#[test]
fn repo_pointing_at_a_web_root_or_a_file_says_what_it_is() {
    let env = TestEnv::new();
    let www = env.path("www");
    fs::create_dir_all(&www).unwrap();
    fs::write(www.join("index.php"), b"<?php\n").unwrap();
    let out = env.arc_at(&www).arg("snapshots").run().code_is(1);
    let line = out.one_line_error();
    assert!(line.contains("not an arc repository") && line.contains("holds other files"), "{line}");
    // init would refuse it, so it is not suggested for this directory.
    assert!(!line.contains(&format!("arc init --repo {}", www.display())), "{line}");

    let file = www.join("index.php");
    let line = env.arc_at(&file).arg("ls").arg("latest").run().code_is(1).one_line_error();
    assert!(line.contains("is a file, not a repository directory"), "{line}");

    // An empty or missing directory: there, init is the next step.
    let line = env.arc_at(&env.path("none")).arg("snapshots").run().code_is(1).one_line_error();
    assert!(line.contains(&format!("arc init --repo {}", env.path("none").display())), "{line}");
}

#[test]
fn usage_errors_exit_2_with_a_hint() {
    let env = TestEnv::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"f").unwrap();
    env.backup([&src]);

    // restic's spelling of cat.
    let out = env.arc().args(["cat", "latest", "/etc/hosts"]).run().code_is(2);
    assert!(out.one_line_error().contains("`arc cat latest:/etc/hosts`"), "{}", out.describe());
    let out = env.arc().args(["cat", "latest"]).run().code_is(2);
    assert!(out.one_line_error().contains("SNAPSHOT:PATH"), "{}", out.describe());

    // A keep rule of 0 is a rule that keeps nothing, not a missing rule.
    let out = env.arc().args(["forget", "--keep-daily", "0"]).run().code_is(2);
    let line = out.one_line_error();
    assert!(line.contains("--keep-daily 0 keeps no snapshot") && !line.contains("no --keep"), "{line}");
    assert_eq!(env.snapshots_json().len(), 1, "forget changed something");

    // clap's own usage errors exit 2 as well; the README says so.
    env.arc().args(["backup", "--no-such-flag"]).run().code_is(2);
    env.arc().args(["--no-lock", "forget", "--keep-last", "1"]).run().code_is(2);
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    assert!(readme.contains("2 usage error"), "the README's exit codes do not list 2");
}

#[test]
fn mounting_on_an_arc_mount_says_so() {
    require!(Need::Fuse);
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"f").unwrap();
    env.init();
    env.backup([&src]);
    let m = Mounted::start(&env, &env.path("mnt"));
    let out = env.arc().arg("mount").arg(m.path("")).timeout(Duration::from_secs(30)).run().code_is(1);
    let line = out.one_line_error();
    assert!(line.contains("already an arc mount") && line.contains(&env.repo.display().to_string()), "{line}");
    assert!(!line.contains("not an empty directory"), "{line}");
    m.stop();
}

#[test]
fn a_panicking_worker_is_reported_as_a_bug_not_as_interrupted() {
    require!(Need::FaultInjection);
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("f"), 100_000, 1);
    env.init();
    let out = env.arc().arg("backup").arg(&src).env("ARC_FAULT_PANIC", "walker").run().code_is(1);
    let err = out.stderr_str();
    assert!(err.contains("a bug in arc") && err.contains("injected panic at walker"), "{}", out.describe());
    assert!(!err.to_lowercase().contains("interrupted"), "{}", out.describe());
    assert!(env.snapshots_json().is_empty(), "a snapshot was written");
    // The repository is fine for the next backup.
    env.backup([&src]);
}
