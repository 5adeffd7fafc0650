//! `SNAPSHOT:PATH` with `latest`: the newest snapshot (after --host/--tag/
//! --path) that holds PATH, across files snapshots and stream snapshots,
//! for cat, ls, dump and restore --include; paths as they were recorded,
//! stream names without their leading slash included.

use std::fs;

use crate::util::*;

struct Fixture {
    env: TestEnv,
    www: std::path::PathBuf,
    dump: Vec<u8>,
}

/// The README's sequence: the web root with --tag daily, then a database
/// dump through --stdin, then the web root again.
fn readme_sequence() -> Fixture {
    let env = TestEnv::new();
    let www = env.path("var/www");
    fs::create_dir_all(www.join("site1")).unwrap();
    fs::write(www.join("site1/index.php"), b"<?php echo 'site1';\n").unwrap();
    let dump = repetitive_text(200_000, 3);
    env.init();
    env.backup([
        www.as_os_str(),
        "--tag".as_ref(),
        "daily".as_ref(),
        "--time".as_ref(),
        "2026-07-01T01:00:00Z".as_ref(),
    ]);
    env.arc()
        .args([
            "backup",
            "--stdin",
            "--stdin-name",
            "mysql/shop.sql",
            "--tag",
            "daily",
            "--time",
            "2026-07-01T02:00:00Z",
        ])
        .stdin_bytes(dump.clone())
        .run()
        .success();
    Fixture { env, www, dump }
}

fn at(path: &std::path::Path, rel: &str) -> String {
    format!("latest:{}", path.join(rel).display())
}

#[test]
fn latest_path_finds_files_and_streams_whichever_snapshot_is_newest() {
    let Fixture { env, www, dump } = readme_sequence();
    // The newest snapshot is the dump; the page is in the one before.
    let out = env.arc().arg("cat").arg(at(&www, "site1/index.php")).run().success();
    assert_eq!(out.stdout, b"<?php echo 'site1';\n");
    let ls = env.arc().args(["ls", "latest"]).arg(www.join("site1")).run().success();
    assert!(ls.stdout_str().contains("site1/index.php"), "{}", ls.describe());
    let target = env.path("r1");
    env.arc()
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .arg("--include")
        .arg(www.join("site1"))
        .run()
        .success();
    assert_eq!(fs::read(restored(&target, &www).join("site1/index.php")).unwrap(), b"<?php echo 'site1';\n");

    // A files backup after the dump: the dump is still found, by its name
    // as given to --stdin-name.
    env.backup([www.as_os_str(), "--time".as_ref(), "2026-07-01T03:00:00Z".as_ref()]);
    for spelling in ["latest:mysql/shop.sql", "latest:/mysql/shop.sql"] {
        let out = env.arc().args(["cat", spelling]).run().success();
        assert!(out.stdout == dump, "{spelling}: {} bytes instead of the dump's {}", out.stdout.len(), dump.len());
    }
    let tar = env.path("shop.tar");
    env.arc().args(["dump", "latest:mysql/shop.sql", "--output"]).arg(&tar).run().success();
    assert!(fs::metadata(&tar).unwrap().len() > dump.len() as u64);
    let target = env.path("r2");
    env.arc().args(["restore", "latest", "--include", "mysql/shop.sql", "--target"]).arg(&target).run().success();
    assert!(fs::read(target.join("mysql/shop.sql")).unwrap() == dump);

    // --path as the stream was named, with or without the slash.
    for spelling in ["mysql/shop.sql", "/mysql/shop.sql"] {
        let list = env.arc().args(["--json", "snapshots", "--path", spelling]).run().success().json();
        assert_eq!(list.as_array().map(Vec::len), Some(1), "--path {spelling}: {list}");
        let out = env.arc().args(["cat", "latest:mysql/shop.sql", "--path", spelling]).run().success();
        assert!(out.stdout == dump);
    }
    // Filters narrow first: no files snapshot has the dump.
    let out = env.arc().args(["cat", "latest:mysql/shop.sql", "--path"]).arg(&www).run().code_is(1);
    assert!(out.one_line_error().contains("mysql/shop.sql"), "{}", out.describe());
}

#[test]
fn a_path_no_snapshot_holds_names_the_closest_existing_parent() {
    let Fixture { env, www, .. } = readme_sequence();
    let out = env.arc().arg("cat").arg(at(&www, "site1/missing.php")).run().code_is(1);
    let line = out.one_line_error();
    let closest = format!("{:?}", www.join("site1").display().to_string());
    assert!(line.contains("none of the 2 snapshot(s)") && line.contains(&closest), "{line}");
    assert_eq!(out.stderr_str().trim_end().lines().count(), 1, "{}", out.describe());
    // By id: the same, for that snapshot.
    let id = env.snapshots_json()[0]["short_id"].as_str().unwrap().to_string();
    let out = env.arc().arg("ls").arg(&id).arg(www.join("site2/x")).run().code_is(1);
    let line = out.one_line_error();
    let closest = format!("{:?}", www.display().to_string());
    assert!(line.contains("does not exist in snapshot") && line.contains(&closest), "{line}");

    // restore --include of a path no snapshot has: nothing is created.
    let target = env.path("restore-here");
    let out = env.arc().args(["restore", "latest", "--include", "www/site2", "--target"]).arg(&target).run().code_is(1);
    let line = out.one_line_error();
    assert!(line.contains("\"/www/site2\"") && line.contains("closest path that exists is \"/\""), "{line}");
    assert!(!target.exists(), "a failed restore left {} behind", target.display());
}
