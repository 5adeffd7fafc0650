//! What an operator moving from restic or borg runs into in the first days:
//! the default repository named by its path in a script, cron mail from
//! `arc run`, an `init` that was refused, and the exit code of a mistyped
//! value. Each test is a case found by using arc as such a user would.

use std::fs;

use crate::util::*;

/// `arc` as a user without ARC_PASSWORD*: the default repository is
/// opened with the key file arc made it with.
fn no_password(env: &TestEnv) -> TestCommand {
    env.cmd().env_remove("ARC_PASSWORD")
}

fn default_repo(env: &TestEnv) -> std::path::PathBuf {
    env.home.join(".local/share/arc/repository")
}

#[test]
fn the_default_repository_opens_under_any_name_with_its_key_file() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    // The README's first command: no init, no passphrase.
    no_password(&env).arg("backup").arg(&src).run().success();
    let repo = default_repo(&env);

    // The same repository named by its path (a cron script, a unit with
    // ARC_REPO) opens as it does without --repo.
    let listed = no_password(&env).arg("--repo").arg(&repo).args(["--json", "snapshots"]).run().success();
    assert_eq!(listed.json().as_array().map(Vec::len), Some(1), "{}", listed.describe());
    no_password(&env).env("ARC_REPO", &repo).arg("snapshots").run().success();

    // Copied off-site: the source opens with its key file even though
    // ARC_PASSWORD (the target's passphrase) is set.
    let other = env.path("offsite");
    env.arc_at(&other).arg("init").run().success();
    let copy = env.arc_at(&other).args(["--json", "copy", "--all", "--from-repo"]).arg(&repo).run().success();
    assert_eq!(copy.json()["copied"].as_array().map(Vec::len), Some(1), "{}", copy.describe());

    // A new passphrase: the key file no longer opens the repository, and
    // both `key passwd` and the next command say which file is at fault.
    let passwd = no_password(&env).env("ARC_NEW_PASSWORD", "a new one").args(["key", "passwd"]).run().success();
    let key_file = env.home.join(".config/arc/repository.key");
    assert!(passwd.stderr_str().contains(&key_file.display().to_string()), "{}", passwd.describe());
    let line = no_password(&env).arg("snapshots").run().code_is(1).one_line_error();
    assert!(line.contains(&key_file.display().to_string()) && line.contains("ARC_PASSWORD"), "{line}");
    no_password(&env).env("ARC_PASSWORD", "a new one").arg("snapshots").run().success();
}

#[test]
fn a_refused_init_leaves_the_directory_as_it_was() {
    let env = TestEnv::new();
    let repo = env.path("new-repo");
    for bad in [["--compression", "99"], ["--pack-size", "1K"], ["--frame-size", "32M"]] {
        let out = env.arc_at(&repo).arg("init").args(bad).run().code_is(1);
        assert!(out.one_line_error().contains("cannot create repository"), "{}", out.describe());
        assert!(!repo.exists(), "init {bad:?} was refused but created {}", repo.display());
    }
    fs::create_dir_all(&repo).unwrap();
    env.arc_at(&repo).args(["init", "--compression", "0"]).run().code_is(1);
    assert_eq!(fs::read_dir(&repo).unwrap().count(), 0, "a refused init left files in an empty directory");
    // So the corrected command works.
    env.arc_at(&repo).arg("init").run().success();

    // An existing repository is named as such before any passphrase is
    // asked for (here: none is available, and that is not the error).
    let line = no_password(&env).arg("--repo").arg(&repo).arg("init").run().code_is(1).one_line_error();
    assert!(line.contains("a repository already exists there"), "{line}");
}
