//! Bad input: each case must fail with one clear error line naming the
//! culprit, a non-zero exit code, and leave the repository untouched.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use arc_engine::format::config::Config;

use crate::util::*;

/// A repository with one snapshot of a small tree at env.path("src").
fn env_with_snapshot() -> (TestEnv, String) {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    fs::write(src.join("dir/a.txt"), b"alpha\n").unwrap();
    fs::write(src.join("dir/sub/b.txt"), b"beta\n").unwrap();
    write_random_file(&src.join("blob.bin"), 300_000, 1);
    env.init();
    let b = env.backup([&src]);
    (env, jstr(&b, "snapshot_id").to_string())
}

/// Every entry below `dir` with its size, nothing left out.
fn full_listing(dir: &Path) -> BTreeMap<String, u64> {
    listing(dir, |_| false)
}

#[test]
fn backup_of_nonexistent_path_fails_cleanly() {
    let (env, _) = env_with_snapshot();
    let before = repo_listing(&env.repo);
    let missing = env.path("src/does-not-exist");

    let out = env.arc().arg("backup").arg(&missing).run().failure();
    let line = out.one_line_error();
    assert!(line.contains("does-not-exist"), "error does not name the missing path: {line}");

    // One good and one missing source: still nothing written.
    let out = env.arc().arg("backup").arg(env.path("src")).arg(&missing).run().failure();
    let line = out.one_line_error();
    assert!(line.contains("does-not-exist"), "error does not name the missing path: {line}");

    assert_listing_unchanged(&before, &repo_listing(&env.repo), "backup of a nonexistent path");
    assert_eq!(env.snapshots_json().len(), 1);
}

#[test]
fn repo_that_is_not_a_repository_is_refused() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("x"), b"x").unwrap();
    let notrepo = env.path("not-a-repo");
    fs::create_dir_all(notrepo.join("stuff")).unwrap();
    fs::write(notrepo.join("hello.txt"), b"I am not a repository\n").unwrap();
    let before = full_listing(&notrepo);

    let name = notrepo.to_string_lossy().into_owned();
    let cases: Vec<Vec<String>> = vec![
        vec!["snapshots".into()],
        vec!["backup".into(), src.to_string_lossy().into_owned()],
        vec!["check".into()],
        vec!["ls".into(), "latest".into()],
        vec!["restore".into(), "latest".into(), "--target".into(), env.path("t").to_string_lossy().into_owned()],
        vec!["list".into(), "blobs".into()],
        vec!["repair".into(), "index".into()],
    ];
    for args in cases {
        let out = env.arc_at(&notrepo).args(&args).run().failure();
        let line = out.one_line_error();
        assert!(line.contains(&name), "`arc {}`: error does not name {name}: {line}", args.join(" "));
        assert!(
            line.to_lowercase().contains("not an arc repository") || line.to_lowercase().contains("not a repository"),
            "`arc {}`: error does not say it is not a repository: {line}",
            args.join(" ")
        );
        assert_listing_unchanged(&before, &full_listing(&notrepo), &format!("arc {}", args.join(" ")));
    }
    assert!(!env.path("t").exists(), "restore created its target for a non-repository");
}

#[test]
fn repository_with_newer_format_version_is_refused() {
    let (env, _) = env_with_snapshot();
    let cfg_path = env.repo.join("config");
    let mut cfg = Config::decode(&fs::read(&cfg_path).unwrap()).expect("decode the real config");
    assert_eq!(cfg.version, arc_engine::format::config::REPO_FORMAT_VERSION);
    cfg.version = 99;
    fs::write(&cfg_path, cfg.encode()).unwrap();
    let before = repo_listing(&env.repo);

    let src = env.path("src").to_string_lossy().into_owned();
    let target = env.path("target").to_string_lossy().into_owned();
    let cases: Vec<Vec<&str>> = vec![
        vec!["snapshots"],
        vec!["backup", &src],
        vec!["check"],
        vec!["ls", "latest"],
        vec!["restore", "latest", "--target", &target],
        vec!["repair", "index"],
        vec!["stats"],
    ];
    for args in cases {
        let out = env.arc().args(&args).run().failure();
        let line = out.one_line_error();
        assert!(line.contains("newer"), "`arc {}`: error does not say \"newer\": {line}", args.join(" "));
        assert!(line.contains("99"), "`arc {}`: error does not name version 99: {line}", args.join(" "));
        assert_listing_unchanged(&before, &repo_listing(&env.repo), &format!("arc {}", args.join(" ")));
    }
    assert!(
        fs::read_dir(&target).map(|mut d| d.next().is_none()).unwrap_or(true),
        "restore wrote into its target from a repository it cannot read"
    );
}

#[test]
fn unknown_snapshot_id_is_reported() {
    let (env, id) = env_with_snapshot();
    let before = repo_listing(&env.repo);
    // A prefix no snapshot id starts with.
    let unknown = ["deadbeef", "01234567", "fedcba98"].into_iter().find(|p| !id.starts_with(p)).unwrap();
    let target = env.path("target");
    let src_file = env.path("src/dir/a.txt").to_string_lossy().into_owned();
    let cat_spec = format!("{unknown}:{src_file}");
    let cases: Vec<Vec<String>> = vec![
        vec!["ls".into(), unknown.into()],
        vec!["cat".into(), cat_spec],
        vec!["dump".into(), unknown.into()],
        vec!["restore".into(), unknown.into(), "--target".into(), target.to_string_lossy().into_owned()],
        vec!["backup".into(), "--parent".into(), unknown.into(), env.path("src").to_string_lossy().into_owned()],
    ];
    for args in cases {
        let out = env.arc().args(&args).run().failure();
        let line = out.one_line_error();
        assert!(line.contains(unknown), "`arc {}`: error does not name {unknown}: {line}", args.join(" "));
        assert!(out.stdout.is_empty(), "`arc {}` wrote to stdout\n{}", args.join(" "), out.describe());
        assert_listing_unchanged(&before, &repo_listing(&env.repo), &format!("arc {}", args.join(" ")));
    }
    assert!(
        fs::read_dir(&target).map(|mut d| d.next().is_none()).unwrap_or(true),
        "restore of an unknown snapshot wrote into its target"
    );
}

#[test]
fn ambiguous_snapshot_prefix_is_reported() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"same content every time\n").unwrap();
    env.init();
    // Distinct times give distinct snapshot ids; by pigeonhole two share a
    // first hex digit after at most 17 snapshots.
    let mut ids: Vec<String> = Vec::new();
    let (digit, pair) = 'found: {
        for i in 0..17 {
            let b = env.backup([
                "--time".to_string(),
                format!("2021-03-04T05:06:{i:02}Z"),
                src.to_string_lossy().into_owned(),
            ]);
            let id = jstr(&b, "snapshot_id").to_string();
            let c = id[..1].to_string();
            if let Some(other) = ids.iter().find(|o| o.starts_with(&c)) {
                break 'found (c, (other.clone(), id));
            }
            ids.push(id);
        }
        panic!("17 snapshot ids with distinct first digits: {ids:?}");
    };
    let before = repo_listing(&env.repo);

    for args in [vec!["ls", digit.as_str()], vec!["dump", digit.as_str()], vec!["snapshots", "--json"]] {
        let out = env.arc().args(&args).run();
        if args[0] == "snapshots" {
            out.success();
            continue;
        }
        let out = out.failure();
        let line = out.one_line_error();
        assert!(
            line.contains(&format!("\"{digit}\"")) || line.contains(&format!("'{digit}'")),
            "`arc {}`: error does not name the prefix {digit:?}: {line}",
            args.join(" ")
        );
        assert!(
            line.to_lowercase().contains("ambiguous") || (line.contains(&pair.0[..8]) && line.contains(&pair.1[..8])),
            "`arc {}`: error does not explain the ambiguity: {line}",
            args.join(" ")
        );
        assert_listing_unchanged(&before, &repo_listing(&env.repo), &format!("arc {}", args.join(" ")));
    }
    // Longer prefixes still select each snapshot.
    for id in [&pair.0, &pair.1] {
        let out = env.arc().args(["--json", "ls", &id[..8]]).run().success();
        let _ = out.json();
    }
}

#[test]
fn restore_into_non_empty_target_needs_overwrite() {
    let (env, id) = env_with_snapshot();
    let src = env.path("src");
    let target = env.path("target");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("precious.txt"), b"do not touch\n").unwrap();
    let before_repo = repo_listing(&env.repo);
    let before_target = full_listing(&target);

    let out = env.arc().args(["restore", &id[..8], "--target"]).arg(&target).run().failure();
    let line = out.one_line_error();
    assert!(line.contains(&*target.to_string_lossy()), "error does not name the target {}: {line}", target.display());
    assert!(line.contains("--overwrite"), "error does not mention --overwrite: {line}");
    assert_listing_unchanged(&before_target, &full_listing(&target), "refused restore (target)");
    assert_eq!(fs::read(target.join("precious.txt")).unwrap(), b"do not touch\n");
    assert_listing_unchanged(&before_repo, &repo_listing(&env.repo), "refused restore (repository)");

    // With --overwrite it works, also over a previous restore with a
    // modified file and a file where a directory belongs.
    env.arc().args(["restore", &id[..8], "--overwrite", "--target"]).arg(&target).run().success();
    assert_trees_equal(&src, &restored(&target, &src), &CompareOpts::default());
    let r = restored(&target, &src);
    fs::write(r.join("dir/a.txt"), b"locally modified, longer than before\n").unwrap();
    fs::remove_dir_all(r.join("dir/sub")).unwrap();
    fs::write(r.join("dir/sub"), b"a file in the way").unwrap();
    env.arc().args(["restore", "latest", "--overwrite", "--target"]).arg(&target).run().success();
    assert_trees_equal(&src, &restored(&target, &src), &CompareOpts::default());

    // --overwrite replaces symlinks in the way instead of writing through
    // them to places outside the target.
    let victim = env.path("victim");
    fs::create_dir_all(victim.join("dir")).unwrap();
    fs::write(victim.join("file"), b"outside the target\n").unwrap();
    let victim_before = full_listing(&victim);
    fs::remove_file(r.join("dir/a.txt")).unwrap();
    std::os::unix::fs::symlink(victim.join("file"), r.join("dir/a.txt")).unwrap();
    fs::remove_dir_all(r.join("dir/sub")).unwrap();
    std::os::unix::fs::symlink(victim.join("dir"), r.join("dir/sub")).unwrap();
    env.arc().args(["restore", "latest", "--overwrite", "--target"]).arg(&target).run().success();
    assert_eq!(fs::read(victim.join("file")).unwrap(), b"outside the target\n", "restore wrote through a symlink");
    assert_listing_unchanged(&victim_before, &full_listing(&victim), "directory outside the restore target");
    assert_trees_equal(&src, &restored(&target, &src), &CompareOpts::default());
}

#[test]
fn cat_of_a_directory_or_missing_path_fails() {
    let (env, _) = env_with_snapshot();
    let before = repo_listing(&env.repo);
    let dir = env.path("src/dir").to_string_lossy().into_owned();
    let out = env.arc().arg("cat").arg(format!("latest:{dir}")).run().failure();
    let line = out.one_line_error();
    assert!(line.contains(&dir), "error does not name the directory {dir}: {line}");
    assert!(out.stdout.is_empty(), "cat of a directory wrote to stdout\n{}", out.describe());

    let missing = env.path("src/dir/nope.txt").to_string_lossy().into_owned();
    let out = env.arc().arg("cat").arg(format!("latest:{missing}")).run().failure();
    let line = out.one_line_error();
    assert!(line.contains(&missing), "error does not name the missing path {missing}: {line}");

    let out = env.arc().args(["cat", "latest"]).run().failure();
    out.one_line_error();

    // A file works.
    let ok = env.arc().arg("cat").arg(format!("latest:{}", env.path("src/dir/a.txt").display())).run().success();
    assert_eq!(ok.stdout, b"alpha\n");
    assert_listing_unchanged(&before, &repo_listing(&env.repo), "arc cat");
}
