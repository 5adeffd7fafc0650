//! Choosing what a backup reads: exclude patterns and files, cache and
//! marker directories, sizes, one file system, --files-from, --dry-run;
//! the excludes recorded in the snapshot; change detection across a
//! changed exclude list.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::*;

const CACHEDIR_SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";

fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// The sorted relative paths of every entry under `dir` (dirs included).
fn entries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = fs::read_dir(d).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if p.symlink_metadata().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// Backs up `src` with `args`, restores it and returns what was restored.
fn backup_and_list(env: &TestEnv, src: &Path, args: &[&str], target: &str) -> (Value, Vec<String>) {
    let summary = env.backup(std::iter::once(src.as_os_str()).chain(args.iter().map(|a| a.as_ref())));
    let out = env.path(target);
    env.restore(summary["snapshot_id"].as_str().unwrap(), &out);
    (summary, entries(&restored(&out, src)))
}

#[test]
fn excludes_leave_out_what_they_name_and_are_recorded_in_the_snapshot() {
    let env = TestEnv::new();
    let src = env.path("www");
    write(&src.join("site1/index.php"), b"<?php");
    write(&src.join("site1/upload.tmp"), b"tmp");
    write(&src.join("site1/keep.tmp"), b"kept by a ! pattern");
    write(&src.join("site1/cache/page.html"), b"cached");
    write(&src.join("site1/sub/cache/deep.html"), b"not at the anchored depth");
    write(&src.join("site1/LOGS/Error.LOG"), b"case");
    // A valid cache tag: contents left out, the tag kept.
    write(&src.join("thumbs/CACHEDIR.TAG"), format!("{CACHEDIR_SIGNATURE}\n# made by a test\n").as_bytes());
    write(&src.join("thumbs/a.jpg"), b"jpg");
    write(&src.join("thumbs/more/b.jpg"), b"jpg");
    // A tag without the signature is no cache tag.
    write(&src.join("fake/CACHEDIR.TAG"), b"Signature: not the one\n");
    write(&src.join("fake/data"), b"kept");
    // Markers, with and without required content.
    write(&src.join("scratch/.nobackup"), b"");
    write(&src.join("scratch/x"), b"x");
    write(&src.join("vm/.arcignore"), b"yes please");
    write(&src.join("vm/disk.img"), b"img");
    write(&src.join("vm2/.arcignore"), b"no");
    write(&src.join("vm2/disk.img"), b"img");
    write_random_file(&src.join("big.iso"), 3 * MIB, 7);
    write_random_file(&src.join("small.bin"), MIB, 8);
    env.init();

    let anchored = format!("{}/*/cache/", src.display());
    let args = [
        "--exclude",
        "*.tmp",
        "--exclude",
        "!keep.tmp",
        "--exclude",
        &anchored,
        "--iexclude",
        "*.log",
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
        "--exclude-if-present",
        ".arcignore:yes",
        "--exclude-larger-than",
        "2M",
    ];
    let (summary, got) = backup_and_list(&env, &src, &args, "out");
    let want = [
        "fake",
        "fake/CACHEDIR.TAG",
        "fake/data",
        "scratch",
        "scratch/.nobackup",
        "site1",
        "site1/LOGS",
        "site1/index.php",
        "site1/keep.tmp",
        "site1/sub",
        "site1/sub/cache",
        "site1/sub/cache/deep.html",
        "small.bin",
        "thumbs",
        "thumbs/CACHEDIR.TAG",
        "vm",
        "vm/.arcignore",
        "vm2",
        "vm2/.arcignore",
        "vm2/disk.img",
    ];
    assert_eq!(got, want);
    // upload.tmp, cache/, Error.LOG, big.iso; a.jpg, more/; scratch/x; vm/disk.img.
    assert_eq!(ju64(&summary["summary"], "entries_excluded"), 8, "{summary}");
    let snaps = env.snapshots_json();
    let recorded: Vec<&str> = snaps[0]["excludes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(
        recorded,
        [
            "--exclude=*.tmp",
            "--exclude=!keep.tmp",
            &format!("--exclude={anchored}"),
            "--iexclude=*.log",
            "--exclude-caches",
            "--exclude-if-present=.nobackup",
            "--exclude-if-present=.arcignore:yes",
            "--exclude-larger-than=2097152",
        ]
    );
    // Without excludes nothing is left out, and nothing is recorded.
    let (summary, got) = backup_and_list(&env, &src, &[], "all");
    assert!(got.contains(&"thumbs/more/b.jpg".to_string()) && got.contains(&"big.iso".to_string()));
    assert!(summary["summary"].get("entries_excluded").is_none(), "{summary}");
    assert!(env.snapshots_json()[1].get("excludes").is_none_or(|v| v.as_array().unwrap().is_empty()));
}

#[test]
fn nothing_below_an_excluded_directory_is_looked_at() {
    // An unreadable directory below an excluded one would be a warning
    // (and exit 3) if the walk listed it.
    if !is_root() {
        if std::env::var_os("CI").is_some() {
            panic!("this test runs arc as nobody and needs root");
        }
        eprintln!("SKIP: running arc as nobody needs root");
        return;
    }
    let env = TestEnv::new();
    let src = env.path("src");
    write(&src.join("ok/a"), b"a");
    write(&src.join("private/locked/secret"), b"s");
    chmod(&env.root, 0o755);
    for d in ["src", "src/ok", "src/private"] {
        chmod(&env.path(d), 0o755);
    }
    chmod(&env.path("src/ok/a"), 0o644);
    chmod(&env.path("src/private/locked"), 0o000);
    env.arc().arg("init").run().success();
    Command::new("chown").arg("-R").arg("nobody").arg(&env.repo).status().unwrap();
    Command::new("chown").arg("-R").arg("nobody").arg(&env.home).status().unwrap();
    // Without the exclude the locked directory is a warning.
    env.arc().args(["backup"]).arg(&src).run_as_nobody().run().code_is(3);
    let out = env.arc().args(["--json", "backup"]).arg(&src).args(["--exclude", "locked/"]).run_as_nobody().run();
    let v = out.success().json();
    assert_eq!(ju64(&v["summary"], "errors"), 0);
    assert_eq!(ju64(&v["summary"], "entries_excluded"), 1);
}

#[test]
fn a_2000_pattern_exclude_file_with_comments_applies_every_line() {
    let env = TestEnv::new();
    let src = env.path("src");
    let mut file = String::from("# generated: one pattern per extension\n\n");
    for i in 0..2000 {
        file.push_str(&format!("*.ext{i}\n"));
        if i % 100 == 0 {
            file.push_str("   # an indented comment\n\n");
        }
    }
    file.push_str("!keep.ext1999\n/nowhere/at/all/\n");
    fs::write(env.path("www.exclude"), &file).unwrap();
    for i in (0..2000).step_by(97) {
        write(&src.join(format!("d{}/f.ext{i}", i % 7)), b"x");
    }
    write(&src.join("keep.ext1999"), b"kept");
    write(&src.join("f.ext2000"), b"not in the list");
    write(&src.join("f.ext19990"), b"not in the list either");
    env.init();
    let (summary, got) = backup_and_list(&env, &src, &["--exclude-file", "www.exclude"], "out");
    let files: Vec<&String> = got.iter().filter(|p| p.contains('.')).collect();
    assert_eq!(files, ["f.ext19990", "f.ext2000", "keep.ext1999"]);
    assert_eq!(ju64(&summary["summary"], "entries_excluded"), (0..2000).step_by(97).count() as u64);
    assert_eq!(env.snapshots_json()[0]["excludes"].as_array().unwrap().len(), 2002);
}

#[test]
fn a_bad_pattern_fails_naming_the_file_and_line_before_anything_is_read() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    env.init();
    let before = repo_listing(&env.repo);
    fs::write(env.path("bad.exclude"), "# ok\n*.tmp\n\ncache/[a-\n").unwrap();
    let out = env.arc().arg("backup").arg(&src).args(["--exclude-file", "bad.exclude"]).run().failure();
    let line = out.one_line_error();
    assert!(line.contains("bad.exclude:4") && line.contains("cache/[a-"), "{line}");
    let out = env.arc().arg("backup").arg(&src).args(["--iexclude", "a{b"]).run().failure();
    assert!(out.one_line_error().contains("--iexclude"), "{}", out.describe());
    env.arc().arg("backup").arg(&src).args(["--exclude-file", "missing.exclude"]).run().failure();
    assert_listing_unchanged(&before, &repo_listing(&env.repo), "after refused backups");
}

#[test]
fn files_from_and_files_from0_back_up_the_listed_paths() {
    let env = TestEnv::new();
    for p in ["etc/hosts", "srv/a b/file", "srv/new\nline", "var/other"] {
        write(&env.path(p), p.as_bytes());
    }
    let list = format!(
        "# paths\n{}\n\n  # indented comment\n{}\n",
        env.path("etc/hosts").display(),
        env.path("srv/a b").display()
    );
    fs::write(env.path("paths.txt"), list).unwrap();
    let mut nul = env.path("srv/new\nline").into_os_string().into_encoded_bytes();
    nul.push(0);
    fs::write(env.path("paths0"), nul).unwrap();
    env.init();
    let v = env.backup(["--files-from", "paths.txt", "--files-from0", "paths0"]);
    let mut paths: Vec<&str> = v["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    paths.sort();
    let root = env.root.display().to_string();
    assert_eq!(paths, [format!("{root}/etc/hosts"), format!("{root}/srv/a b"), format!("{root}/srv/new\nline")]);
    assert_eq!(ju64(&v["summary"], "total_files"), 3);
    // A listed path that does not exist is an error naming it.
    fs::write(env.path("bad.txt"), format!("{}\n", env.path("nope").display())).unwrap();
    let out = env.arc().args(["backup", "--files-from", "bad.txt"]).run().failure();
    assert!(out.one_line_error().contains("nope"));
    let out = env.arc().args(["backup", "--files-from", "empty.txt"]).run().failure();
    assert!(out.one_line_error().contains("empty.txt"));
}

#[test]
fn dry_run_lists_what_would_be_read_and_writes_nothing() {
    let env = TestEnv::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"a");
    write(&src.join("b.txt"), b"b");
    write(&src.join("c.tmp"), b"c");
    env.init();
    env.backup([src.as_os_str()]);
    write(&src.join("b.txt"), b"bb changed");
    write(&src.join("new/d.txt"), b"d");
    let before = repo_listing(&env.repo);
    let out = env.arc().args(["--json", "backup", "--dry-run"]).arg(&src).args(["--exclude", "*.tmp"]).run().success();
    let lines: Vec<Value> = out.stdout_str().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let items: Vec<(String, String, u64)> = lines
        .iter()
        .filter(|l| l["message_type"] == "verbose_status")
        .map(|l| (jstr(l, "action").to_string(), jstr(l, "item").to_string(), ju64(l, "data_size")))
        .collect();
    let s = src.display();
    assert_eq!(items, [("changed".into(), format!("{s}/b.txt"), 10), ("new".into(), format!("{s}/new/d.txt"), 1)]);
    let summary = lines.last().unwrap();
    assert_eq!(summary["message_type"], "summary");
    assert_eq!(summary["dry_run"], true);
    assert_eq!(
        (ju64(summary, "files_new"), ju64(summary, "files_changed"), ju64(summary, "files_unchanged")),
        (1, 1, 1)
    );
    assert_eq!((ju64(summary, "bytes_read"), ju64(summary, "entries_excluded")), (11, 1));
    let out = env.arc().args(["backup", "-n"]).arg(&src).run().success();
    assert!(out.stdout_str().contains(&format!("changed   {s}/b.txt (10 B)")), "{}", out.describe());
    assert_listing_unchanged(&before, &repo_listing(&env.repo), "after dry runs");
    assert_eq!(env.snapshots_json().len(), 1);
}

#[test]
fn change_detection_works_across_a_changed_exclude_list() {
    let env = TestEnv::new();
    let src = env.path("src");
    for d in ["a", "b", "c"] {
        for i in 0..5 {
            write_random_file(&src.join(format!("{d}/f{i}")), 10_000 + i, i);
        }
    }
    env.init();
    let v = env.backup([src.as_os_str(), "--exclude".as_ref(), "/**/a/".as_ref()]);
    assert_eq!(ju64(&v["summary"], "files_new"), 10);
    // a is newly included: read; b newly excluded: gone; c: unchanged.
    let (v, got) = backup_and_list(&env, &src, &["--exclude", "b/"], "out");
    let s = &v["summary"];
    assert_eq!((ju64(s, "files_new"), ju64(s, "files_unchanged"), ju64(s, "files_changed")), (5, 5, 0), "{v}");
    assert!(got.iter().all(|p| !p.starts_with('b')) && got.contains(&"a/f4".to_string()));
    assert_eq!(ju64(s, "bytes_read"), (0..5).map(|i| 10_000 + i).sum::<u64>());
}

/// Unmounts a bind mount however the test ends.
struct BindMount(std::path::PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn one_file_system_does_not_cross_a_bind_mount_but_reads_a_named_one() {
    if !is_root() {
        if std::env::var_os("CI").is_some() {
            panic!("--one-file-system needs root to make a bind mount");
        }
        eprintln!("SKIP: --one-file-system needs root to make a bind mount");
        return;
    }
    let env = TestEnv::new();
    let src = env.path("src");
    write(&src.join("local/a"), b"a");
    write(&env.path("elsewhere/b"), b"b");
    fs::create_dir_all(src.join("mnt")).unwrap();
    let st = Command::new("mount").arg("--bind").arg(env.path("elsewhere")).arg(src.join("mnt")).status().unwrap();
    assert!(st.success(), "mount --bind failed");
    let _guard = BindMount(src.join("mnt"));
    env.init();
    let (v, got) = backup_and_list(&env, &src, &["--one-file-system"], "out");
    // The mount point is kept as an empty directory.
    assert_eq!(got, ["local", "local/a", "mnt"]);
    assert_eq!(ju64(&v["summary"], "entries_excluded"), 1);
    let (_, got) = backup_and_list(&env, &src, &[], "all");
    assert!(got.contains(&"mnt/b".to_string()));
    // A mount point named as a source is read.
    let (_, got) = backup_and_list(&env, &src.join("mnt"), &["-x"], "named");
    assert_eq!(got, ["b"]);
}
