//! A local repository and a cron job, used the way a demanding restic or
//! borg user does: what arc stores of its own files, what a failed backup
//! says, what prune says it kept.

use std::fs;

use crate::util::*;

/// Every path a snapshot holds (`ls -R --json`).
fn stored_paths(env: &TestEnv, repo: Option<&std::path::Path>) -> Vec<String> {
    let cmd = match repo {
        Some(r) => env.arc_at(r),
        None => env.cmd(),
    };
    let out = cmd.args(["--json", "ls", "-R", "latest"]).run().success();
    out.json_lines().iter().filter(|l| l["message_type"] == "node").map(|l| jstr(l, "path").to_string()).collect()
}

/// `arc backup $HOME` with the default repository: the repository under
/// ~/.local/share and its cache under ~/.cache (its index database, written
/// while the backup reads) are left out, each with a note; the cache root's
/// CACHEDIR.TAG is there for other tools.
#[test]
fn a_backup_of_home_leaves_out_the_repository_and_its_cache() {
    let env = TestEnv::new();
    fs::write(env.home.join("notes.txt"), "mine").unwrap();
    let out = env.cmd().arg("backup").arg(&env.home).run().success();
    let out = if out.stderr_str().contains("left out") {
        out
    } else {
        // The first backup created the repository and its cache while it ran;
        // the second finds both before it starts.
        env.cmd().arg("backup").arg(&env.home).run().success()
    };
    let cache_root = env.home.join(".cache/arc");
    assert!(cache_root.join("CACHEDIR.TAG").is_file());
    let ids: Vec<_> = fs::read_dir(&cache_root).unwrap().flatten().filter(|e| e.path().is_dir()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let cache = ids[0].path();
    let repo = env.home.join(".local/share/arc/repository");
    for dir in [&repo, &cache] {
        let note = format!("arc: note: {}: left out", dir.display());
        assert!(out.stderr_str().lines().any(|l| l.starts_with(&note)), "no {note:?}\n{}", out.describe());
    }
    let paths = stored_paths(&env, None);
    let home = env.home.display().to_string();
    assert!(paths.contains(&format!("{home}/notes.txt")), "{paths:#?}");
    assert!(paths.contains(&format!("{home}/.cache/arc/CACHEDIR.TAG")), "{paths:#?}");
    for own in [&repo, &cache] {
        let own = own.display().to_string();
        assert!(!paths.iter().any(|p| p.starts_with(&own)), "{own} was backed up:\n{paths:#?}");
    }
    // -q: no note.
    let quiet = env.cmd().args(["backup", "-q"]).arg(&env.home).run().success();
    assert_eq!(quiet.stderr_str(), "", "{}", quiet.describe());
}

/// A repository inside the backed-up directory, reached through a symlinked
/// path: it is still the repository, and is not stored in itself.
#[test]
fn a_repository_inside_a_source_named_through_a_symlink_is_left_out() {
    let env = TestEnv::new();
    let real = env.path("real");
    fs::create_dir_all(real.join("data")).unwrap();
    fs::write(real.join("data/a.txt"), "a").unwrap();
    std::os::unix::fs::symlink(&real, env.path("alias")).unwrap();
    let repo = real.join("data/repo");
    env.arc_at(&repo).arg("init").run().success();
    let src = env.path("alias/data");
    let out = env.arc_at(&repo).arg("backup").arg(&src).run().success();
    out.stderr_contains(&format!("arc: note: {}: left out", src.join("repo").display()));
    let paths = stored_paths(&env, Some(&repo));
    assert!(paths.contains(&format!("{}/a.txt", src.display())), "{paths:#?}");
    assert!(!paths.iter().any(|p| p.contains("/repo")), "the repository was backed up into itself:\n{paths:#?}");
}

/// A failed backup says that no snapshot was written and that what it
/// stored is not lost, after the cause.
#[test]
fn a_failed_backup_says_no_snapshot_was_written() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    env.init();
    let out = env.arc().arg("backup").arg(&src).args(["--command-stream", "db.sql=sh -c 'exit 4'"]).run();
    let line = out.failure().one_line_error();
    assert!(line.contains("status 4"), "{line}");
    assert!(
        line.ends_with("; no snapshot was written; what was stored before the failure is reused by the next backup"),
        "{line}"
    );
    assert_eq!(env.snapshots_json().len(), 0);
    // Nothing of the failed run is left in sessions/ (a local repository).
    let sessions = env.repo.join("sessions");
    let left: Vec<_> = fs::read_dir(&sessions).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// prune right after a forget: the unused packs are younger than the grace
/// period, so nothing is marked or deleted; prune says so rather than only
/// "unused: N; deleted 0".
#[test]
fn prune_names_the_grace_period_for_the_packs_it_keeps() {
    let env = TestEnv::new();
    let src = env.path("src");
    write_random_file(&src.join("big"), 300_000, 1);
    env.init();
    env.arc().arg("backup").arg(&src).run().success();
    write_random_file(&src.join("big"), 300_000, 2);
    env.arc().arg("backup").arg(&src).run().success();
    env.arc().args(["forget", "--keep-last", "1"]).run().success();
    // The dry run plans as --instant would; it says a plain run goes in two steps.
    let dry = env.arc().args(["prune", "--dry-run"]).run().success();
    dry.stdout_contains("in two runs: prune marks these packs");
    let out = env.arc().arg("prune").run().success();
    out.stdout_contains("younger than the grace period");
    let json = env.arc().args(["--json", "prune"]).run().success().json();
    assert!(ju64(&json, "packs_in_grace") >= 1, "{json}");
    assert_eq!(ju64(&json, "packs_deleted") + ju64(&json, "packs_marked"), 0, "{json}");
}

/// A file name with a newline (or bytes that are not UTF-8) is one quoted
/// entry in the listings of `ls`, `find` and `diff`, as in `backup -v`: a
/// script reading lines must not see an entry named "lines".
#[test]
fn listings_quote_names_with_a_newline() {
    use std::os::unix::ffi::OsStrExt;
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("plain"), "p").unwrap();
    env.init();
    env.arc().arg("backup").arg(&src).run().success();
    fs::write(src.join("two\nlines"), "x").unwrap();
    fs::write(src.join(std::ffi::OsStr::from_bytes(b"caf\xe9")), "latin-1").unwrap();
    env.arc().arg("backup").arg(&src).run().success();
    let quoted = format!("\"{}/two\\nlines\"", src.display());
    let ls = env.arc().args(["ls", "-R", "latest"]).run().success().stdout_str();
    assert!(ls.lines().any(|l| l == quoted), "{ls}");
    assert!(ls.lines().any(|l| l == format!("\"{}/caf\\xE9\"", src.display())), "{ls}");
    let find = env.arc().args(["find", "two*"]).run().success().stdout_str();
    assert_eq!(find.lines().count(), 1, "{find}");
    assert!(find.trim_end().ends_with(&quoted), "{find}");
    let snaps = env.snapshots_json();
    let diff = env.arc().args(["diff", jstr(&snaps[0], "id"), jstr(&snaps[1], "id")]).run().success().stdout_str();
    assert!(diff.lines().any(|l| l == format!("+    {quoted}")), "{diff}");
    assert!(!diff.lines().any(|l| l.starts_with("lines")), "{diff}");
    // A snapshot of that one file: its path in the table, quoted.
    env.arc().arg("backup").arg(src.join("two\nlines")).run().success();
    let table = env.arc().arg("snapshots").run().success().stdout_str();
    assert!(table.lines().any(|l| l.contains(&quoted)), "{table}");
    assert!(!table.lines().any(|l| l.starts_with("lines")), "{table}");
}

/// `--keep-within 0d` keeps nothing (newer than the newest snapshot itself):
/// refused like `--keep-last 0`, rather than forgetting every snapshot.
#[test]
fn forget_refuses_a_keep_within_of_zero() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "a").unwrap();
    env.init();
    env.arc().arg("backup").arg(&src).run().success();
    for within in ["0d", "0y0m"] {
        let out = env.arc().args(["forget", "--keep-within", within]).run().code_is(2);
        let line = out.one_line_error();
        assert!(line.contains(&format!("--keep-within {within} keeps no snapshot")), "{line}");
    }
    assert_eq!(env.snapshots_json().len(), 1);
    // With another rule it is only a rule that keeps nothing more.
    env.arc().args(["forget", "--keep-within", "0d", "--keep-last", "1"]).run().success();
    assert_eq!(env.snapshots_json().len(), 1);
}
