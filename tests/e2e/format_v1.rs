//! A format-v1 repository (the frozen one in format-spec/vectors/repo-v1)
//! stays readable by every read command, and every command that would write
//! into it is refused with a typed error whose hint names the migration.

use std::fs;
use std::path::Path;

use crate::util::*;

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), dest).unwrap();
        }
    }
}

fn v1_env() -> TestEnv {
    let env = TestEnv::new();
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../format-spec/vectors/repo-v1"), &env.repo);
    env
}

#[test]
fn v1_repository_reads_but_refuses_writes() {
    let env = v1_env();
    let snaps = env.snapshots_json();
    assert_eq!(snaps.len(), 2);
    env.arc().args(["ls", "latest"]).run().success();
    let out = env.arc().args(["cat", "latest:/db/dump.sql"]).run().success();
    assert!(out.stdout_str().starts_with("CREATE TABLE t"), "{}", out.describe());
    env.arc().args(["dump", "latest"]).stdout_to(env.path("dump.tar")).run().success();
    env.arc().args(["check", "--read-data"]).run().success();
    env.arc().args(["restore", "latest", "--target"]).arg(env.path("t2")).run().success();
    env.arc().args(["forget", "--keep-last", "1", "--dry-run"]).run().success();

    fs::create_dir_all(env.path("src")).unwrap();
    fs::write(env.path("src/f"), b"new").unwrap();
    let before = repo_listing(&env.repo);
    let src = env.path("src").to_string_lossy().into_owned();
    let first = snaps[0]["id"].as_str().unwrap().to_string();
    for args in [
        vec!["backup", src.as_str()],
        vec!["forget", first.as_str()],
        vec!["forget", "--keep-last", "1"],
        vec!["prune"],
        vec!["repair", "index"],
    ] {
        let out = env.arc().args(&args).run().failure();
        let line = out.one_line_error();
        assert!(line.contains("format version 1 is read-only"), "`arc {}`: {line}", args.join(" "));
        assert!(
            line.contains("arc copy") && line.contains("--from-repo"),
            "`arc {}`: no migration hint: {line}",
            args.join(" ")
        );
        assert!(!line.to_lowercase().contains("corrupt"), "{line}");
        assert_listing_unchanged(&before, &repo_listing(&env.repo), &format!("arc {}", args.join(" ")));
    }
    assert_eq!(env.snapshots_json().len(), 2);
}
