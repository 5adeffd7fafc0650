//! Everyday commands on a repository of several snapshots: diff, find,
//! tag, restore by pattern, check --read-data-subset, completions and man
//! pages.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::*;

fn ndjson(out: &Output) -> Vec<Value> {
    out.stdout_str()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object a line: {e}: {l}")))
        .collect()
}

fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// Three snapshots of a small web root: day 1; day 2 with one file
/// changed, one added, one removed, one chmod'ed, a file turned into a
/// directory; day 3 unchanged. Returns the snapshot ids, oldest first.
fn three_days(env: &TestEnv) -> Vec<String> {
    let src = env.path("www");
    write(&src.join("site1/wp-config.php"), b"<?php define('DB', 'a');");
    write(&src.join("site1/index.php"), b"<?php echo 1;");
    write(&src.join("site1/old.txt"), b"old");
    write(&src.join("site1/script.sh"), b"#!/bin/sh");
    write(&src.join("site2/wp-config.php"), b"<?php define('DB', 'b');");
    write(&src.join("site2/becomes-dir"), b"file");
    for i in 0..50 {
        write(&src.join(format!("static/{i:02}/asset.css")), format!("body{{x:{i}}}").as_bytes());
    }
    env.init();
    let mut ids = Vec::new();
    ids.push(env.backup([&src])["snapshot_id"].as_str().unwrap().to_string());
    write(&src.join("site1/wp-config.php"), b"<?php define('DB', 'changed');");
    write(&src.join("site1/new.txt"), b"new");
    fs::remove_file(src.join("site1/old.txt")).unwrap();
    fs::set_permissions(src.join("site1/script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_file(src.join("site2/becomes-dir")).unwrap();
    write(&src.join("site2/becomes-dir/inside"), b"in");
    ids.push(env.backup([&src])["snapshot_id"].as_str().unwrap().to_string());
    ids.push(env.backup([&src])["snapshot_id"].as_str().unwrap().to_string());
    ids
}

#[test]
fn diff_reports_content_metadata_and_type_changes_reading_only_changed_trees() {
    let env = TestEnv::new();
    let ids = three_days(&env);
    let w = env.path("www").display().to_string();
    let out = env.arc().args(["--json", "diff", &ids[0], &ids[1]]).run().success();
    let lines = ndjson(&out);
    let changes: BTreeSet<(String, String)> = lines
        .iter()
        .filter(|l| l["message_type"] == "change")
        .map(|l| (jstr(l, "modifier").to_string(), jstr(l, "path").to_string()))
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("M", format!("{w}/site1/wp-config.php")),
        ("+", format!("{w}/site1/new.txt")),
        ("-", format!("{w}/site1/old.txt")),
        ("U", format!("{w}/site1/script.sh")),
        ("T", format!("{w}/site2/becomes-dir")),
        ("+", format!("{w}/site2/becomes-dir/inside")),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p))
    .collect();
    assert_eq!(changes, want, "{}", out.describe());
    let script = lines.iter().find(|l| l["path"].as_str().is_some_and(|p| p.ends_with("script.sh"))).unwrap();
    assert_eq!(script["what"], serde_json::json!(["mode"]));
    let stats = lines.last().unwrap();
    assert_eq!(stats["message_type"], "statistics");
    assert_eq!((ju64(stats, "changed_files"), ju64(stats, "metadata_only")), (1, 1));
    assert_eq!(ju64(&stats["added"], "files"), 2);
    assert_eq!(ju64(&stats["removed"], "files"), 1);
    // static/ (50 directories) is equal by id: not one of its trees is read.
    // Root, the path down to www, www, site1, site2 in both snapshots, and
    // the new directory: about a dozen, far fewer than the 50 under static.
    assert!(ju64(stats, "trees_read") < 20, "{stats}");
    // Two snapshots with the same tree: no change, one... no tree read.
    let out = env.arc().args(["--json", "diff", &ids[1], &ids[2]]).run().success();
    let lines = ndjson(&out);
    assert_eq!(lines.len(), 1);
    // The snapshots record the ancestors of the backed-up path too; other
    // processes of a parallel test run change /tmp's metadata between the
    // two backups, and then only the trees on the path down from the root
    // differ (one per level, in each snapshot).
    let snaps = env.snapshots_json();
    let tree_of = |id: &str| snaps.iter().find(|s| jstr(s, "id") == id).map(|s| jstr(s, "tree").to_string()).unwrap();
    let read = ju64(&lines[0], "trees_read");
    if tree_of(&ids[1]) == tree_of(&ids[2]) {
        assert_eq!(read, 0);
    } else {
        let depth = env.path("www").components().count() as u64;
        assert!(read <= 2 * depth, "only the path's trees are read: {read}");
    }
    // Human output.
    let out = env.arc().args(["diff", &ids[0], "latest"]).run().success();
    let text = out.stdout_str();
    assert!(text.contains(&format!("M    {w}/site1/wp-config.php  (content, size")), "{text}");
    assert!(text.contains(&format!("U    {w}/site1/script.sh  (mode)")), "{text}");
    let out = env.arc().args(["diff", &ids[0], "latest", "--content-only"]).run().success();
    assert!(!out.stdout_str().contains("script.sh"));
    env.arc().args(["diff", &ids[0], "ffffffff"]).run().failure();
}

#[test]
fn find_lists_each_match_per_snapshot_and_reads_shared_trees_once() {
    let env = TestEnv::new();
    let ids = three_days(&env);
    let w = env.path("www").display().to_string();
    let out = env.arc().args(["--json", "find", "wp-config.php"]).run().success();
    let lines = ndjson(&out);
    let matches: Vec<(String, String, u64)> = lines
        .iter()
        .filter(|l| l["message_type"] == "match")
        .map(|l| (jstr(l, "snapshot_id").to_string(), jstr(l, "path").to_string(), ju64(l, "size")))
        .collect();
    let mut want = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let size1 = if i == 0 { 24 } else { 30 };
        want.push((id.clone(), format!("{w}/site1/wp-config.php"), size1));
        want.push((id.clone(), format!("{w}/site2/wp-config.php"), 24));
    }
    assert_eq!(matches, want);
    let summary = lines.last().unwrap();
    assert_eq!((ju64(summary, "snapshots"), ju64(summary, "matches")), (3, 6));
    // Snapshot 3 shares every tree with snapshot 2 and the static/ trees
    // with snapshot 1: 50 + 6 + about 6 trees, not three times 56.
    assert!(ju64(summary, "trees_read") < 70, "{summary}");
    // Anchored and directory patterns, --snapshot, --oldest/--newest.
    let out = env.arc().args(["--json", "find", &format!("{w}/site2/*/"), "--snapshot", &ids[1]]).run().success();
    let lines = ndjson(&out);
    assert_eq!(lines.len(), 2);
    assert_eq!(jstr(&lines[0], "path"), format!("{w}/site2/becomes-dir"));
    assert_eq!(jstr(&lines[0], "type"), "dir");
    let out = env.arc().args(["--json", "find", "*.css", "--newest", "2000-01-01"]).run().success();
    assert_eq!(ju64(ndjson(&out).last().unwrap(), "matches"), 0);
    let out = env.arc().args(["--json", "find", "*.CSS", "-i", "--oldest", "2000-01-01"]).run().success();
    assert_eq!(ju64(ndjson(&out).last().unwrap(), "matches"), 150);
    let out = env.arc().args(["find", "index.php", "--snapshot", "latest"]).run().success();
    assert!(out.stdout_str().contains(&format!("{w}/site1/index.php")));
    let out = env.arc().args(["find", "a[b"]).run().failure();
    assert!(out.one_line_error().contains("a[b"));
}

#[test]
fn tag_rewrites_the_snapshot_keeping_the_original_id() {
    let env = TestEnv::new();
    let ids = three_days(&env);
    let before = env.snapshots_json();
    let (tree0, time0) = (before[0]["tree"].clone(), before[0]["time"].clone());
    let out = env.arc().args(["--json", "tag", &ids[0], "--add", "keep", "--add", "daily"]).run().success();
    let first = out.json()[0]["new_id"].as_str().unwrap().to_string();
    assert!(!env.repo.join("snapshots").join(&ids[0]).exists());
    let out = env.arc().args(["--json", "tag", &first[..8], "--remove", "daily"]).run().success();
    let second = out.json()[0]["new_id"].as_str().unwrap().to_string();
    let snaps = env.snapshots_json();
    assert_eq!(snaps.len(), 3);
    let s = snaps.iter().find(|s| s["id"] == second.as_str()).unwrap();
    assert_eq!(s["tags"], serde_json::json!(["keep"]));
    assert_eq!(s["original"], ids[0].as_str(), "the first id of the chain");
    assert_eq!(s["tree"], tree0, "same tree, only the tags differ");
    assert_eq!(s["time"], time0);
    // --set replaces, unchanged tags rewrite nothing, a filter selects.
    env.arc().args(["tag", "latest", "--set", "a", "--set", "b"]).run().success();
    let out = env.arc().args(["--json", "tag", "latest", "--add", "a"]).run().success();
    assert!(out.json()[0]["new_id"].is_null());
    env.arc().args(["tag", "--tag", "keep", "--add", "audited"]).run().success();
    let tags: Vec<Value> = env.snapshots_json().iter().map(|s| s["tags"].clone()).collect();
    assert!(tags.contains(&serde_json::json!(["audited", "keep"])) && tags.contains(&serde_json::json!(["a", "b"])));
    // The data is untouched: the retagged snapshot restores and checks.
    env.arc().arg("check").run().success();
    env.arc().args(["tag", "latest"]).run().failure();
    env.arc().args(["tag", "latest", "--add", ""]).run().failure();
}

#[test]
fn restore_includes_and_excludes_patterns() {
    let env = TestEnv::new();
    three_days(&env);
    let w = env.path("www");
    let out = env.path("out");
    env.arc()
        .args(["restore", "latest", "--target"])
        .arg(&out)
        .args(["--include", &format!("{}/site1/**", w.display()), "--exclude", "*.sh", "--exclude", "index.php"])
        .run()
        .success();
    let base = restored(&out, &w);
    let mut got: Vec<String> =
        files_under(&base).iter().map(|p| p.strip_prefix(&base).unwrap().display().to_string()).collect();
    got.sort();
    assert_eq!(got, ["site1/new.txt", "site1/wp-config.php"]);
    assert!(!base.join("static").exists() && !base.join("site2").exists(), "no empty directories off the path");
    // A directory pattern and case-insensitive excludes, with a plain path include.
    let out2 = env.path("out2");
    env.arc()
        .args(["restore", "latest", "--target"])
        .arg(&out2)
        .args(["--include", &w.display().to_string(), "--exclude", "static/", "--iexclude", "WP-*"])
        .run()
        .success();
    let base = restored(&out2, &w);
    let mut got: Vec<String> =
        files_under(&base).iter().map(|p| p.strip_prefix(&base).unwrap().display().to_string()).collect();
    got.sort();
    assert_eq!(got, ["site1/index.php", "site1/new.txt", "site1/script.sh", "site2/becomes-dir/inside"]);
    let out =
        env.arc().args(["restore", "latest", "--target"]).arg(env.path("o3")).args(["--exclude", "[x"]).run().failure();
    assert!(out.one_line_error().contains("--exclude"));
    assert!(!env.path("o3").exists());
}

#[test]
fn check_read_data_subset_covers_every_pack_over_its_cycle() {
    let env = TestEnv::new();
    env.arc().args(["init", "--pack-size", "1M"]).run().success();
    let src = env.path("src");
    for i in 0..80 {
        write_random_file(&src.join(format!("f{i}")), 150_000, i);
    }
    env.backup([&src]);
    let packs = env.pack_files();
    assert!(packs.len() >= 10, "want many packs, got {}", packs.len());
    // Damage one data pack: exactly one group of the cycle finds it. (A
    // pack holding trees is read by every check, read-data or not.)
    let blobs = env.arc().args(["list", "blobs"]).run().success().stdout_str();
    let tree_packs: Vec<&str> =
        blobs.lines().filter_map(|l| l.strip_prefix("tree ")).filter_map(|l| l.split(' ').nth(1)).collect();
    let data_packs: Vec<&PathBuf> = packs
        .iter()
        .filter(|p| !tree_packs.iter().any(|t| p.file_name().is_some_and(|n| n.to_string_lossy() == *t)))
        .collect();
    assert!(data_packs.len() >= 10, "want many data packs, got {}", data_packs.len());
    let victim = data_packs[data_packs.len() / 2].clone();
    let mut data = fs::read(&victim).unwrap();
    data[20] ^= 0xff;
    fs::write(&victim, data).unwrap();
    let mut read = 0;
    let mut failing = Vec::new();
    for run in 0..20 {
        // 5%: twenty groups, the next one on each run.
        let out = env.arc().args(["--json", "check", "--read-data-subset", "5%"]).run();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(jstr(&v, "read_data_subset"), format!("{}/20", run + 1));
        read += ju64(&v, "packs_read");
        if out.code() != Some(0) {
            failing.push(run);
        }
    }
    assert_eq!(read, packs.len() as u64, "each pack read once over the cycle");
    assert_eq!(failing.len(), 1, "{failing:?}");
    // n/m names the group; the damaged pack's group fails every time.
    let g = failing[0] + 1;
    env.arc().args(["check", "--read-data-subset", &format!("{g}/20")]).run().failure();
    env.arc().args(["check", "--read-data-subset", "21/20"]).run().failure();
    env.arc().args(["check", "--read-data-subset", "0%"]).run().failure();
}

#[test]
fn completions_and_man_pages_are_generated_from_the_commands() {
    let env = TestEnv::new();
    let bash = env.cmd().args(["completion", "bash"]).run().success().stdout_str();
    assert!(bash.contains("--exclude-caches") && bash.contains("complete -F"), "bash");
    let zsh = env.cmd().args(["completion", "zsh"]).run().success().stdout_str();
    assert!(zsh.starts_with("#compdef arc"));
    let fish = env.cmd().args(["completion", "fish"]).run().success().stdout_str();
    assert!(fish.contains("complete -c arc") && fish.contains("read-data-subset"));
    // bash accepts the script.
    if which("bash").is_some() {
        let script = env.path("arc.bash");
        fs::write(&script, &bash).unwrap();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("source {} && complete -p arc", script.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let man = env.cmd().args(["man", "backup"]).run().success().stdout_str();
    assert!(man.contains(".TH arc-backup") && man.contains("exclude\\-file"), "{man}");
    let dir = env.path("man1");
    env.cmd().args(["man", "--dir"]).arg(&dir).run().success();
    for page in ["arc.1", "arc-backup.1", "arc-diff.1", "arc-find.1", "arc-tag.1"] {
        assert!(dir.join(page).is_file(), "{page}");
    }
    if which("man").is_some() {
        let out =
            std::process::Command::new("man").arg(dir.join("arc-find.1")).env("MANPAGER", "cat").output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("PATTERN"), "man renders the page");
    }
    env.cmd().args(["man", "nosuch"]).run().failure();
}
