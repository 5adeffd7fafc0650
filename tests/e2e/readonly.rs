//! Reading a repository this process cannot write: a write-protected
//! backup disk (a read-only bind mount) and a repository owned by another
//! user. Every command that only reads works, says once that it reads
//! without a lock, and leaves the repository exactly as it was; the index
//! cache lives in $XDG_CACHE_HOME/arc/<repository id>/, never in the
//! repository.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::mount::Mounted;
use crate::util::*;

const WARNING: &str = "is not writable: reading it without a lock";

/// A source tree, backed up twice into `repo`; returns the source.
fn repository_with_two_snapshots(env: &TestEnv, repo: &Path) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("site")).unwrap();
    fs::write(src.join("site/index.php"), b"<?php echo 'hello';\n").unwrap();
    write_random_file(&src.join("site/photo.jpg"), 300_000, 5);
    env.arc_at(repo).arg("init").run().success();
    env.arc_at(repo).arg("backup").arg(&src).run().success();
    fs::write(src.join("site/new.txt"), b"new\n").unwrap();
    env.arc_at(repo).arg("backup").arg(&src).run().success();
    src
}

/// Runs every read-only command against `env.repo`, as this process or as
/// nobody, and checks its output.
fn every_read_command_works(env: &TestEnv, src: &Path, as_nobody: bool) {
    let arc = || {
        let c = env.arc();
        if as_nobody {
            c.run_as_nobody()
        } else {
            c
        }
    };
    let warned = |out: Output, what: &str| {
        assert!(out.stderr_str().contains(WARNING), "{what}: no warning about the missing lock\n{}", out.describe());
        out
    };
    let snaps = warned(arc().args(["--json", "snapshots"]).run().success(), "snapshots").json();
    assert_eq!(snaps.as_array().map(Vec::len), Some(2), "{snaps}");
    let ls = warned(arc().args(["ls", "-R", "latest"]).arg(src).run().success(), "ls");
    assert!(ls.stdout_str().contains("site/new.txt"), "{}", ls.describe());
    let cat =
        warned(arc().arg("cat").arg(format!("latest:{}", src.join("site/index.php").display())).run().success(), "cat");
    assert_eq!(cat.stdout, b"<?php echo 'hello';\n");
    let tar = env.path(if as_nobody { "home/out.tar" } else { "out.tar" });
    warned(arc().args(["dump", "latest", "--output"]).arg(&tar).run().success(), "dump");
    assert!(fs::metadata(&tar).unwrap().len() > 300_000);
    let target = env.path(if as_nobody { "home/restored" } else { "restored" });
    warned(arc().args(["restore", "latest", "--target"]).arg(&target).run().success(), "restore");
    assert_same_file(&src.join("site/photo.jpg"), &restored(&target, src).join("site/photo.jpg"));
    warned(arc().args(["check", "--read-data"]).run().success(), "check");
    warned(arc().arg("stats").run().success(), "stats");
    // --no-lock: no warning, same result.
    let quiet = arc().args(["--no-lock", "snapshots"]).run().success();
    assert!(!quiet.stderr_str().contains(WARNING), "{}", quiet.describe());
    // A command that writes fails in one line and changes nothing.
    let out = arc().arg("backup").arg(src).run().failure();
    assert_eq!(out.stderr_str().trim_end().lines().count(), 1, "{}", out.describe());
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap();
    assert!(status.success(), "{cmd:?}");
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_bind_mount_can_be_read_by_every_read_command() {
    require!(Need::Root);
    let env = TestEnv::new();
    // The repository is written at rw/ and seen read-only at env.repo.
    let rw = env.path("rw");
    let src = repository_with_two_snapshots(&env, &rw);
    fs::create_dir_all(&env.repo).unwrap();
    run(Command::new("mount").arg("--bind").arg(&rw).arg(&env.repo));
    let _unmount = Unmount(env.repo.clone());
    run(Command::new("mount").args(["-o", "remount,bind,ro"]).arg(&env.repo));
    assert!(fs::write(env.repo.join("probe"), b"").is_err(), "the bind mount is writable");

    let before = repo_listing(&rw);
    every_read_command_works(&env, &src, false);
    // The mount: a write-protected disk is exactly where restoring matters.
    if requirements_met(&[Need::Fuse]) {
        let m = Mounted::start(&env, &env.path("mnt"));
        let inside = m.path("latest").join(src.strip_prefix("/").unwrap()).join("site/index.php");
        assert_eq!(fs::read(inside).unwrap(), b"<?php echo 'hello';\n");
        let out = m.stop();
        assert!(out.stderr_str().contains(WARNING), "{}", out.describe());
    }
    assert_listing_unchanged(&before, &repo_listing(&rw), "read-only repository");
    assert!(!rw.join("index.redb").exists());
    // One cache for rw/ (written by the backups) and one for the read-only
    // view: keyed by path, so that copies of a repository never share one.
    let caches = files_under(&env.home.join(".cache/arc"));
    assert_eq!(caches.iter().filter(|p| p.extension() == Some("redb".as_ref())).count(), 2, "{caches:?}");
}

#[test]
fn another_users_repository_can_be_read() {
    require!(Need::Root, Need::Program("setpriv", "util-linux"));
    let env = TestEnv::new();
    let src = repository_with_two_snapshots(&env, &env.repo);
    // Readable by all, writable only by root; nobody has its own home
    // (and so its own index cache).
    run(Command::new("chmod").args(["-R", "a+rX"]).arg(&env.root));
    run(Command::new("chown").args(["-R", "65534:65534"]).arg(&env.home));
    let before = repo_listing(&env.repo);
    every_read_command_works(&env, &src, true);
    assert_listing_unchanged(&before, &repo_listing(&env.repo), "another user's repository");
}

#[test]
fn an_old_index_database_in_the_repository_is_dropped_for_the_cache() {
    let env = TestEnv::new();
    let src = repository_with_two_snapshots(&env, &env.repo);
    // What an older arc left: its index cache inside the repository.
    fs::copy(env.index_db(), env.repo.join("index.redb")).unwrap();
    fs::remove_file(env.index_db()).unwrap();
    let cat = env.arc().arg("cat").arg(format!("latest:{}", src.join("site/index.php").display())).run().success();
    assert_eq!(cat.stdout, b"<?php echo 'hello';\n");
    assert!(!env.repo.join("index.redb").exists(), "the old index database is still in the repository");
    env.index_db();
}
