//! Repository strings (`--repo`): URLs are never local paths, bad ones are
//! refused in one line naming the culprit, secrets never show; and every
//! command on the repository of the run (a remote one under
//! ARC_TEST_BACKEND, see backends.rs).

use std::fs;

use crate::util::*;

fn write_file(path: &std::path::Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// Secrets of the test servers that must never appear in arc's output.
fn assert_no_secret(out: &Output) {
    let all = format!("{}{}", out.stdout_str(), out.stderr_str());
    assert!(!all.contains(crate::backends::S3_SECRET), "a secret was printed:\n{}", out.describe());
    assert!(!all.contains("hunter2"), "a password was printed:\n{}", out.describe());
}

#[test]
fn repository_strings_with_a_scheme_are_never_local_paths() {
    let env = TestEnv::new();
    let before = listing(&env.root, |_| false);
    // No credentials anywhere: the S3 request cannot be signed, arc says
    // where credentials come from, and no directory `s3:http:` appears.
    let out = env
        .cmd()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env("AWS_SHARED_CREDENTIALS_FILE", env.path("none"))
        .env("AWS_CONFIG_FILE", env.path("none"))
        .args(["--repo", "s3:http://127.0.0.1:9/arc-test/web", "init"])
        .run()
        .failure();
    assert!(out.stderr_str().contains("AWS_ACCESS_KEY_ID"), "{}", out.describe());
    assert!(!env.path("s3:http:").exists(), "a local directory was created for an S3 URL");

    let out = env.cmd().args(["--repo", "gs://bucket/x", "snapshots"]).run().failure();
    let line = out.one_line_error();
    assert!(line.contains("unknown scheme \"gs\"") && line.contains("s3:http") && line.contains("sftp://"), "{line}");
    assert!(line.contains("./gs://bucket/x"), "the hint for a local path with a colon: {line}");

    for (url, culprit) in [
        ("s3:odd", "http://"),
        ("s3:http://127.0.0.1:9", "no bucket"),
        ("sftp://127.0.0.1", "no directory"),
        ("sftp://u:hunter2@127.0.0.1/x", "password"),
        ("webdav:https://u:hunter2@dav.example.net/arc", "password"),
        ("s3:http://127.0.0.1:99999/b", "port"),
    ] {
        let out = env.cmd().args(["--repo", url, "init"]).run().failure();
        assert!(out.one_line_error().contains(culprit), "{url}: {}", out.describe());
        assert_no_secret(&out);
    }
    // Nothing was created by any of them.
    let after = listing(&env.root, |rel| rel.starts_with("home"));
    let before: std::collections::BTreeMap<_, _> = before.into_iter().filter(|(k, _)| !k.starts_with("home")).collect();
    assert_listing_unchanged(&before, &after, "refused repository strings");

    // A local directory with a colon in its name, written as ./s3:odd.
    env.cmd().args(["--repo", "./s3:odd", "init"]).run().success();
    assert!(env.path("s3:odd/config").is_file());
    let src = env.path("src");
    write_file(&src.join("a"), b"colon");
    env.cmd().args(["--repo", "./s3:odd", "backup"]).arg(&src).run().success();
}

/// Every command on the run's repository (remote under a backend run),
/// with URLs shown as given and no secret in any output.
#[test]
fn remote_repository_commands_and_urls() {
    let env = TestEnv::new();
    let src = env.path("src");
    write_file(&src.join("www/index.php"), b"<?php echo 1;");
    write_file(&src.join("www/keep"), b"");
    write_random_file(&src.join("www/big.bin"), 3 * MIB, 11);
    write_file(&src.join("mail/cur/1"), b"From: a\n\nhello");

    let out = env.arc().arg("init").run().success();
    assert_no_secret(&out);
    let shown = env.repo_arg().to_string_lossy().into_owned();
    assert!(out.stdout_str().contains(&shown), "init names the repository as given:\n{}", out.describe());
    // A second init refuses and changes nothing.
    let out = env.arc().arg("init").run().failure();
    assert!(out.one_line_error().contains("already exists"), "{}", out.describe());

    let b1 = env.backup([src.as_path()]);
    let s1 = jstr(&b1, "short_id").to_string();
    write_file(&src.join("www/new.txt"), b"new");
    let out = env.arc().args(["backup", "--tag", "daily", "--host", "web1"]).arg(&src).run().success();
    assert_no_secret(&out);
    let snaps = env.snapshots_json();
    assert_eq!(snaps.len(), 2);

    let out = env.arc().args(["ls", "latest", "-R"]).run().success();
    assert!(out.stdout_str().contains("new.txt") && out.stdout_str().contains("index.php"), "{}", out.describe());
    let p = src.join("www/index.php");
    let out = env.arc().args(["cat", &format!("{s1}:{}", p.display())]).run().success();
    assert_eq!(out.stdout, b"<?php echo 1;");
    let tar = env.path("dump.tar");
    env.arc().args(["dump", &format!("latest:{}", src.join("www").display()), "-o"]).arg(&tar).run().success();
    assert!(fs::metadata(&tar).unwrap().len() > 3 * MIB);

    let target = env.path("restore");
    env.restore("latest", &target);
    assert_trees_equal(&src, &restored(&target, &src), &CompareOpts::default());

    env.arc().args(["check", "--read-data"]).run().success();
    let out = env.arc().arg("stats").run().success();
    assert_no_secret(&out);

    // copy out to a local repository and back into a fresh remote prefix
    // is covered by the protocol tests; here: remote -> local.
    let local = env.path("local-copy");
    env.arc_at(&local).arg("init").run().success();
    env.arc_at(&local).arg("copy").arg("--from-repo").arg(env.repo_arg()).arg("--all").run().success();
    let target2 = env.path("restore-copy");
    env.arc_at(&local).args(["restore", "latest", "--target"]).arg(&target2).run().success();
    assert_trees_equal(&src, &restored(&target2, &src), &CompareOpts::default());

    env.arc().args(["forget", &s1]).run().success();
    env.arc().args(["prune", "--instant"]).run().success();
    assert_eq!(env.snapshots_json().len(), 1);
    env.arc().args(["check", "--read-data"]).run().success();
    let target3 = env.path("restore-after-prune");
    env.restore("latest", &target3);
    assert_trees_equal(&src, &restored(&target3, &src), &CompareOpts::default());
}

/// The local cache of a remote repository (s3s-fs): a second `snapshots`
/// reads the snapshot files from `$XDG_CACHE_HOME/arc/<id>/` (shown by the
/// stored copies being damaged meanwhile: the listing is unchanged), while
/// `check` reads the repository's own bytes and finds the damage; without
/// the cache the damage shows. `arc cache --list` and `--cleanup`.
#[test]
fn second_snapshots_on_s3_reads_the_local_cache() {
    use crate::backends::{needs, start, Backend};
    if !requirements_met(&needs(Backend::S3)) {
        return;
    }
    let env = TestEnv::new();
    let bucket = env.path("cached");
    let server = start(Backend::S3, &env.root, &bucket);
    let arc = || env.cmd().envs_from(server.env.clone()).args(["--repo", &server.url]);
    let src = env.path("src");
    write_file(&src.join("a"), b"first");
    arc().arg("init").run().success();
    arc().arg("backup").arg(&src).run().success();
    write_file(&src.join("b"), b"second");
    arc().arg("backup").arg(&src).run().success();
    let ids = |out: &Output| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&out.stdout_str()).unwrap();
        v.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
    };
    // The conditional-write probe of `init` left nothing behind.
    let tmp = bucket.join("tmp");
    assert!(
        !tmp.exists() || fs::read_dir(&tmp).unwrap().next().is_none(),
        "left in tmp/: {:?}",
        listing(&tmp, |_| false)
    );
    let first = ids(&arc().args(["--json", "snapshots"]).run().success());
    assert_eq!(first.len(), 2);

    for f in fs::read_dir(bucket.join("snapshots")).unwrap() {
        fs::write(f.unwrap().path(), b"damaged on the server").unwrap();
    }
    let second = ids(&arc().args(["--json", "snapshots"]).run().success());
    assert_eq!(second, first, "the second listing came from the cache");
    let out = arc().arg("check").run().failure();
    assert!(out.stdout_str().contains("snapshot") || out.stderr_str().contains("snapshot"), "{}", out.describe());

    let out = env.cmd().args(["--json", "cache", "--list"]).run().success();
    let list: serde_json::Value = serde_json::from_str(&out.stdout_str()).unwrap();
    let entry = &list.as_array().unwrap()[0];
    assert_eq!(entry["location"].as_str(), Some(server.url.as_str()), "{}", out.describe());
    assert!(entry["size"].as_u64().unwrap() > 0);
    let out = env.cmd().args(["cache", "--cleanup"]).run().success();
    assert!(out.stdout_str().contains("removed 0 cache(s)"), "a cache used just now stays:\n{}", out.describe());

    // A cold cache sees the repository as it is.
    fs::remove_dir_all(env.home.join(".cache/arc")).unwrap();
    let out = arc().args(["--json", "snapshots"]).run();
    assert!(out.code() != Some(0) || ids(&out).len() < 2, "{}", out.describe());
}

/// `--limit-upload` and `--limit-download` on s3s-fs: the bytes a backup
/// stores and a restore reads, over the command's whole run time, stay
/// under the rate (plus the bucket's tenth of a second of burst), and the
/// limit really slows the transfer down (it takes at least the time the
/// bytes need at that rate).
#[test]
fn limit_upload_and_download_hold_on_s3() {
    use crate::backends::{needs, start, Backend};
    if !requirements_met(&needs(Backend::S3)) {
        return;
    }
    let env = TestEnv::new();
    let bucket = env.path("limited");
    let server = start(Backend::S3, &env.root, &bucket);
    let arc = || env.cmd().envs_from(server.env.clone()).args(["--repo", &server.url]);
    let src = env.path("src");
    write_random_file(&src.join("a.bin"), 3 * MIB, 7);
    arc().arg("init").run().success();
    let rate = 2 * MIB;
    let stored = |dir: &std::path::Path| -> u64 { listing(dir, |_| false).values().sum() };
    let before = stored(&bucket);
    let t = std::time::Instant::now();
    arc().args(["--limit-upload", "2MiB", "backup"]).arg(&src).run().success();
    let up = t.elapsed().as_secs_f64();
    let sent = (stored(&bucket) - before) as f64;
    assert!(sent > 3.0 * MIB as f64);
    assert!(sent / up <= rate as f64 * 1.1, "{sent} bytes in {up:.2} s is over 2 MiB/s");
    assert!(up >= (sent - rate as f64 / 10.0) / rate as f64, "{sent} bytes in {up:.2} s: the limit did not apply");

    let target = env.path("restore");
    let t = std::time::Instant::now();
    arc().args(["--limit-download", "2MiB", "restore", "latest", "--target"]).arg(&target).run().success();
    let down = t.elapsed().as_secs_f64();
    // At least the file's bytes came down (packs are read by ranges).
    let got = 3.0 * MIB as f64;
    assert!(down >= (got - rate as f64 / 10.0) / rate as f64, "3 MiB restored in {down:.2} s at a 2 MiB/s limit");
    assert_eq!(fs::read(restored(&target, &src).join("a.bin")).unwrap(), fs::read(src.join("a.bin")).unwrap());
}

/// A pack cut short on the server (s3s-fs) is reported by restore and by
/// `check --read-data` as truncated, naming the pack, in one line; not in
/// the object-store client's own words.
#[test]
fn a_truncated_pack_on_s3_is_named_as_truncated() {
    use crate::backends::{needs, start, Backend};
    if !requirements_met(&needs(Backend::S3)) {
        return;
    }
    let env = TestEnv::new();
    let bucket = env.path("truncated");
    let server = start(Backend::S3, &env.root, &bucket);
    let arc = || env.cmd().envs_from(server.env.clone()).args(["--repo", &server.url]);
    let src = env.path("src");
    // Incompressible, so the pack is as large as the data.
    write_random_file(&src.join("big"), 3 << 20, 17);
    arc().arg("init").run().success();
    arc().arg("backup").arg(&src).run().success();
    let packs = files_under(&bucket.join("data"));
    let pack = packs.into_iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    let len = fs::metadata(&pack).unwrap().len();
    // (The data may be spread over two packs written side by side.)
    assert!(len > 1 << 20, "{} holds the file's data", pack.display());
    fs::OpenOptions::new().write(true).open(&pack).unwrap().set_len(len / 2).unwrap();
    let name = pack.file_name().unwrap().to_str().unwrap().to_string();

    let out = arc().args(["restore", "latest", "--target"]).arg(env.path("restored")).run().failure();
    let err = out.stderr_str();
    assert!(err.contains(&name) && err.contains("truncated"), "{}", out.describe());
    assert!(!err.contains("too little data"), "{}", out.describe());
    let out = arc().args(["check", "--read-data"]).run().failure();
    let all = format!("{}{}", out.stdout_str(), out.stderr_str());
    assert!(all.contains(&name) && all.contains("truncated"), "{}", out.describe());
}

/// SFTP and WebDAV: a pack goes from its staged file into `tmp/` and is
/// renamed into place only when the server holds all of it. Here the first
/// two attempts send half the pack and stop as if done
/// (`ARC_FAULT_SHORT_PUTS`, a write cut short without an error): each is
/// caught by the length check, deleted, and the pack written again from
/// its start; the repository verifies byte for byte and `tmp/` is empty.
#[test]
fn sftp_and_webdav_puts_cut_short_are_written_again() {
    use crate::backends::{needs, start, Backend};
    for b in [Backend::Sftp, Backend::WebDav] {
        if !requirements_met(&needs(b)) {
            continue;
        }
        let env = TestEnv::new();
        let repo = env.path("staged");
        let server = start(b, &env.root, &repo);
        let arc = || env.cmd().envs_from(server.env.clone()).args(["--repo", &server.url]);
        let src = env.path("src");
        write_random_file(&src.join("big.bin"), 3 * MIB, 23);
        write_file(&src.join("small"), b"small");
        arc().arg("init").run().success();
        let trace = env.path("trace");
        arc().env("ARC_FAULT_SHORT_PUTS", "2").env("ARC_FAULT_TRACE", &trace).arg("backup").arg(&src).run().success();
        let cuts =
            fs::read_to_string(&trace).unwrap_or_default().lines().filter(|l| l.contains("put cut short")).count();
        assert_eq!(cuts, 2, "{}: the pack's first two writes were not cut short", b.name());
        arc().args(["check", "--read-data"]).run().success();
        let target = env.path("restore");
        arc().args(["restore", "latest", "--target"]).arg(&target).run().success();
        assert_trees_equal(&src, &restored(&target, &src), &CompareOpts::default());
        let tmp = repo.join("tmp");
        let left: Vec<_> = if tmp.exists() { fs::read_dir(&tmp).unwrap().collect() } else { Vec::new() };
        assert!(left.is_empty(), "{}: left in tmp/: {:?}", b.name(), listing(&tmp, |_| false));
    }
}
