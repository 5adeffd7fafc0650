//! `arc snapshots --json`, tag/host/path filters, `latest` selection and
//! `arc stats --json`.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::util::*;

fn is_hex_id(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
}

#[track_caller]
fn check_snapshot_fields(s: &Value, src: &Path) {
    assert!(is_hex_id(&s["id"]), "id: {s:#}");
    let id = s["id"].as_str().unwrap();
    let short = jstr(s, "short_id");
    assert!(short.len() >= 8 && id.starts_with(short), "short_id {short} vs id {id}");
    let time = jstr(s, "time");
    chrono::DateTime::parse_from_rfc3339(time).unwrap_or_else(|e| panic!("time {time:?} is not RFC 3339: {e}"));
    assert!(!jstr(s, "host").is_empty(), "host: {s:#}");
    assert!(s["username"].is_string(), "username: {s:#}");
    assert_eq!(s["paths"], serde_json::json!([src.to_string_lossy()]), "paths: {s:#}");
    let tags = s["tags"].as_array().unwrap_or_else(|| panic!("tags is not a list: {s:#}"));
    assert!(tags.iter().all(Value::is_string), "tags: {s:#}");
    assert!(s["parent"].is_null() || is_hex_id(&s["parent"]), "parent: {s:#}");
    assert!(is_hex_id(&s["tree"]), "tree: {s:#}");
    let summary = s["summary"].as_object().unwrap_or_else(|| panic!("summary is not an object: {s:#}"));
    for k in ["files_new", "files_changed", "files_unchanged", "total_files", "total_bytes", "bytes_added", "errors"] {
        assert!(summary.get(k).is_some_and(Value::is_u64), "summary.{k}: {s:#}");
    }
}

fn ids(list: &[Value]) -> Vec<String> {
    list.iter().map(|s| jstr(s, "id").to_string()).collect()
}

#[test]
fn snapshots_json_fields_and_tag_selection() {
    let env = TestEnv::new();
    let src = env.path("src");
    let file = src.join("version.txt");
    fs::create_dir_all(&src).unwrap();
    env.init();

    let mut made = Vec::new();
    let runs: [(&str, &[&str], &str); 3] = [
        ("v1\n", &["--tag", "daily", "--tag", "db"], "2024-01-01T10:00:00Z"),
        ("v2 longer\n", &["--tag", "weekly"], "2024-01-02T10:00:00.123456789Z"),
        ("v3 longest\n", &[], "2024-01-03T10:00:00Z"),
    ];
    for (i, (content, tags, time)) in runs.iter().enumerate() {
        fs::write(&file, content).unwrap();
        filetime::set_file_mtime(&file, filetime::FileTime::from_unix_time(1_600_000_000 + i as i64, 5)).unwrap();
        let b = env.backup(tags.iter().copied().chain(["--time", *time, src.to_str().unwrap()]));
        made.push(jstr(&b, "snapshot_id").to_string());
    }

    let list = env.snapshots_json();
    assert_eq!(list.len(), 3);
    for s in &list {
        check_snapshot_fields(s, &src);
    }
    assert_eq!(ids(&list), made, "snapshots are not listed oldest first");
    let times: Vec<_> = list.iter().map(|s| chrono::DateTime::parse_from_rfc3339(jstr(s, "time")).unwrap()).collect();
    for ((_, _, want), got) in runs.iter().zip(&times) {
        assert_eq!(*got, chrono::DateTime::parse_from_rfc3339(want).unwrap(), "--time not recorded exactly");
    }
    assert_eq!(list[0]["tags"], serde_json::json!(["daily", "db"]));
    assert_eq!(list[1]["tags"], serde_json::json!(["weekly"]));
    assert_eq!(list[2]["tags"], serde_json::json!([]));
    assert!(list[0]["parent"].is_null());
    assert_eq!(list[1]["parent"].as_str(), Some(made[0].as_str()));
    assert_eq!(list[2]["parent"].as_str(), Some(made[1].as_str()));

    let filtered = |args: &[&str]| -> Vec<String> {
        let out = env.arc().args(["--json", "snapshots"]).args(args).run().success();
        ids(out.json().as_array().unwrap_or_else(|| panic!("not a list\n{}", out.describe())))
    };
    assert_eq!(filtered(&["--tag", "daily"]), vec![made[0].clone()]);
    assert_eq!(filtered(&["--tag", "weekly"]), vec![made[1].clone()]);
    // restic's rule, as for --keep-tag: a value's tags must all be there,
    // and any one value selects.
    assert_eq!(filtered(&["--tag", "daily,db"]), vec![made[0].clone()]);
    assert_eq!(filtered(&["--tag", "daily,weekly"]), Vec::<String>::new());
    assert_eq!(filtered(&["--tag", "daily", "--tag", "weekly"]), made[..2].to_vec());
    assert_eq!(filtered(&["--tag", "daily,db", "--tag", "nope"]), vec![made[0].clone()]);
    assert_eq!(filtered(&["--tag", ""]), vec![made[2].clone()]);
    assert_eq!(filtered(&["--tag", "nope"]), Vec::<String>::new());
    // restic's --latest: the newest N of each host and set of paths.
    assert_eq!(filtered(&["--latest", "1"]), vec![made[2].clone()]);
    assert_eq!(filtered(&["--latest", "2"]), made[1..].to_vec());
    assert_eq!(filtered(&["--latest", "1", "--tag", "daily"]), vec![made[0].clone()]);
    assert_eq!(filtered(&["--path", src.to_str().unwrap()]), made);
    assert_eq!(filtered(&["--path", "/nonexistent/elsewhere"]), Vec::<String>::new());
    assert_eq!(filtered(&["--host", "no-such-host.example"]), Vec::<String>::new());
    let host = jstr(&list[0], "host").to_string();
    assert_eq!(filtered(&["--host", &host]), made);

    // `latest` with filters picks the newest matching snapshot.
    let cat = |extra: &[&str]| -> Vec<u8> {
        env.arc().arg("cat").args(extra).arg(format!("latest:{}", file.display())).run().success().stdout
    };
    assert_eq!(cat(&[]), b"v3 longest\n");
    assert_eq!(cat(&["--tag", "daily"]), b"v1\n");
    assert_eq!(cat(&["--tag", "weekly"]), b"v2 longer\n");
    let out = env.arc().args(["cat", "--tag", "nope"]).arg(format!("latest:{}", file.display())).run().failure();
    out.one_line_error();

    let target = env.path("restore");
    env.arc().args(["restore", "latest", "--tag", "weekly", "--target"]).arg(&target).run().success();
    assert_eq!(fs::read(restored(&target, &file)).unwrap(), b"v2 longer\n");

    let ls = env.arc().args(["--json", "ls", "latest", "--tag", "daily"]).arg(&src).run().success();
    let _ = ls.json();

    // --latest counts per host (and set of paths).
    let other = env.backup(["--host", "other.example", "--time", "2024-01-04T10:00:00Z", src.to_str().unwrap()]);
    let other = jstr(&other, "snapshot_id").to_string();
    assert_eq!(filtered(&["--latest", "1"]), vec![made[2].clone(), other.clone()]);
    let out = env.arc().args(["snapshots", "--latest", "1"]).run().success();
    assert!(out.stdout_str().contains("2 snapshot(s)"), "{}", out.describe());
}

/// `arc snapshots ID...` (restic's form) lists only those, resolved as
/// everywhere (prefixes, `latest`, with the filters); a prefix that
/// matches nothing is one line naming it, exit non-zero.
#[test]
fn snapshots_lists_the_snapshots_named() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    env.init();
    let mut made = Vec::new();
    for (i, tag) in ["a", "b", "a"].iter().enumerate() {
        fs::write(src.join("f"), format!("v{i}")).unwrap();
        made.push(jstr(&env.backup(["--tag", tag, src.to_str().unwrap()]), "snapshot_id").to_string());
    }
    let list = |args: &[&str]| -> Vec<String> {
        let out = env.arc().args(["--json", "snapshots"]).args(args).run().success();
        ids(out.json().as_array().unwrap())
    };
    assert_eq!(list(&[&made[0][..8]]), vec![made[0].clone()]);
    assert_eq!(list(&[&made[2][..8], &made[0][..8], &made[0][..10]]), vec![made[0].clone(), made[2].clone()]);
    assert_eq!(list(&["latest"]), vec![made[2].clone()]);
    assert_eq!(list(&["latest", "--tag", "b"]), vec![made[1].clone()]);
    assert_eq!(list(&[]).len(), 3);
    let line = env.arc().args(["snapshots", &made[0][..8], "0badcafe"]).run().failure().one_line_error();
    assert!(line.contains("0badcafe"), "{line}");
}

#[test]
fn stats_show_dedup_after_identical_backups() {
    let env = TestEnv::new();
    let src = env.path("src");
    for i in 0..4u64 {
        write_random_file(&src.join(format!("r{i}.bin")), 2 * MIB + i, 60 + i);
    }
    env.init();
    let b1 = env.backup([&src]);
    let b2 = env.backup([src.as_os_str(), "--force-read".as_ref()]);
    let total = ju64(&b1, "summary.total_bytes");
    assert_eq!(ju64(&b2, "summary.total_bytes"), total);
    assert_eq!(ju64(&b2, "summary.bytes_read"), total, "--force-read did not read every file: {b2:#}");
    assert!(ju64(&b2, "summary.bytes_added") < total / 100, "identical data added again: {b2:#}");

    let stats = env.arc().args(["--json", "stats"]).run().success().json();
    let logical = ju64(&stats, "logical_bytes");
    let stored = ju64(&stats, "stored_bytes");
    assert_eq!(ju64(&stats, "snapshots"), 2, "{stats:#}");
    assert_eq!(logical, 2 * total, "logical_bytes: {stats:#}");
    assert!(logical > stored, "logical_bytes {logical} <= stored_bytes {stored}: {stats:#}");
    assert!(stored < total + total / 10, "stored_bytes {stored} for {total} bytes of unique data: {stats:#}");
    assert!(stored >= total / 2, "stored_bytes {stored} implausibly small for incompressible {total}: {stats:#}");
    // Two snapshots of the same distinct files: the data is stored once,
    // and the ratio counts content against content (trees left out).
    assert_eq!(ju64(&stats, "unique_data_bytes"), total, "{stats:#}");
    let ratio = stats["dedup_ratio"].as_f64().unwrap();
    assert!((ratio - 2.0).abs() < 1e-9, "dedup_ratio {ratio}: {stats:#}");
}
