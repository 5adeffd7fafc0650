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
