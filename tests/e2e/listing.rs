//! `arc backup -v` / `-vv`: the entries a backup stored, one a line in the
//! snapshot's order (restic's `backup -vv`, borg's `create --list`), or
//! `verbose_status` lines with `--json`; quiet without `-v`.

use std::fs;
use std::path::Path;

use crate::util::*;

/// The listing lines of a backup's stdout (the summary's lines aside).
fn listed(out: &Output) -> Vec<String> {
    let words = ["new ", "changed ", "unchanged "];
    out.stdout_str().lines().filter(|l| words.iter().any(|w| l.starts_with(w))).map(str::to_string).collect()
}

fn line(word: &str, path: &Path, size: Option<&str>) -> String {
    match size {
        Some(s) => format!("{word:<9} {} ({s})", path.display()),
        None => format!("{word:<9} {}/", path.display()),
    }
}

#[test]
fn backup_v_lists_new_and_changed_entries_and_vv_unchanged_ones() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::create_dir_all(src.join("quiet")).unwrap();
    fs::write(src.join("keep.txt"), "keep").unwrap();
    fs::write(src.join("quiet/still.txt"), "still").unwrap();
    fs::write(src.join("sub/old.txt"), "old").unwrap();
    std::os::unix::fs::symlink("old.txt", src.join("sub/link")).unwrap();
    env.init();
    // Without -v: the summary only.
    let first = env.arc().arg("backup").arg(&src).run().success();
    assert_eq!(listed(&first), Vec::<String>::new(), "{}", first.describe());

    fs::write(src.join("sub/old.txt"), "old, then changed").unwrap();
    fs::write(src.join("sub/new.txt"), "brand new").unwrap();
    // A name with a newline must not read as two entries.
    fs::write(src.join("sub/two\nlines"), "x").unwrap();
    let second = env.arc().args(["backup", "-v"]).arg(&src).run().success();
    let sub = src.join("sub");
    assert_eq!(
        listed(&second),
        vec![
            line("new", &sub.join("new.txt"), Some("9 B")),
            line("changed", &sub.join("old.txt"), Some("17 B")),
            format!("new       \"{}/two\\nlines\" (1 B)", sub.display()),
            line("changed", &sub, None),
            line("changed", &src, None),
        ],
        "{}",
        second.describe()
    );
    second.stdout_contains("files: 2 new, 1 changed, 2 unchanged");

    // Nothing changed: -v lists nothing, -vv every entry as unchanged (a
    // directory too: its tree is the parent's).
    assert_eq!(listed(&env.arc().args(["backup", "-v"]).arg(&src).run().success()), Vec::<String>::new());
    let all = listed(&env.arc().args(["backup", "-vv"]).arg(&src).run().success());
    assert_eq!(all.len(), 9, "{all:#?}");
    assert!(all.iter().all(|l| l.starts_with("unchanged ")), "{all:#?}");
    assert_eq!(all[0], line("unchanged", &src.join("keep.txt"), Some("4 B")));
    assert_eq!(all[3], format!("unchanged {}", sub.join("link").display()), "{all:#?}");
    assert_eq!(all.last(), Some(&line("unchanged", &src, None)));

    // -q and -v contradict each other.
    env.arc().args(["backup", "-q", "-v"]).arg(&src).run().code_is(2);
}

#[test]
fn backup_v_json_lines_name_each_entry_and_its_action() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("same.txt"), "same").unwrap();
    fs::write(src.join("d/edit.txt"), "before").unwrap();
    env.init();
    env.arc().arg("backup").arg(&src).run().success();
    fs::write(src.join("d/edit.txt"), "after the edit").unwrap();
    fs::write(src.join("d/added.txt"), "added").unwrap();
    let out = env.arc().args(["--json", "-vv", "backup"]).arg(&src).run().success();
    let items: Vec<(String, String, u64)> = out
        .json_lines()
        .iter()
        .filter(|l| l["message_type"] == "verbose_status")
        .map(|l| (jstr(l, "action").to_string(), jstr(l, "item").to_string(), ju64(l, "data_size")))
        .collect();
    let at = |rel: &str| format!("{}/{rel}", src.display());
    assert_eq!(
        items,
        vec![
            ("new".into(), at("d/added.txt"), 5),
            ("changed".into(), at("d/edit.txt"), 14),
            ("changed".into(), at("d/"), 0),
            ("unchanged".into(), at("same.txt"), 4),
            ("changed".into(), format!("{}/", src.display()), 0),
        ],
        "{}",
        out.describe()
    );
    // The summary is still the last line.
    assert_eq!(out.json_lines().last().unwrap()["message_type"], "summary");

    // A dry run lists what it would read; -vv adds what it would take unchanged.
    fs::write(src.join("d/added.txt"), "added, then edited").unwrap();
    let dry = env.arc().args(["backup", "--dry-run"]).arg(&src).run().success();
    assert_eq!(listed(&dry), vec![line("changed", &src.join("d/added.txt"), Some("18 B"))], "{}", dry.describe());
    let dry = listed(&env.arc().args(["backup", "--dry-run", "-vv"]).arg(&src).run().success());
    assert_eq!(
        dry,
        vec![
            line("changed", &src.join("d/added.txt"), Some("18 B")),
            line("unchanged", &src.join("d/edit.txt"), Some("14 B")),
            line("unchanged", &src.join("same.txt"), Some("4 B")),
        ]
    );
}

/// `restore -v` lists each file it wrote (in the order they were written),
/// and nothing without -v.
#[test]
fn restore_v_lists_each_file_restored() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("a.txt"), "aaa").unwrap();
    fs::write(src.join("d/b.txt"), "bb").unwrap();
    env.init();
    env.arc().arg("backup").arg(&src).run().success();
    let quiet = env.arc().args(["restore", "latest", "--target"]).arg(env.path("t1")).run().success();
    assert!(!quiet.stdout_str().contains("restored  "), "{}", quiet.describe());
    let target = env.path("t2");
    let out = env.arc().args(["restore", "-v", "latest", "--target"]).arg(&target).run().success();
    let mut lines: Vec<String> =
        out.stdout_str().lines().filter(|l| l.starts_with("restored  ")).map(str::to_string).collect();
    lines.sort();
    let at = |rel: &str| target.join(src.strip_prefix("/").unwrap()).join(rel);
    assert_eq!(
        lines,
        vec![
            format!("restored  {} (3 B)", at("a.txt").display()),
            format!("restored  {} (2 B)", at("d/b.txt").display()),
        ],
        "{}",
        out.describe()
    );
}
