//! Files the backup cannot read: exit code 3, warnings naming them, and a
//! usable snapshot of everything else. arc runs as `nobody` (setpriv),
//! since root can read everything.

use std::fs;
use std::os::unix::fs::chown;
use std::path::Path;

use crate::util::*;

const NOBODY: u32 = 65534;

fn chown_tree(p: &Path, uid: u32) {
    chown(p, Some(uid), Some(uid)).unwrap();
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

#[test]
fn unreadable_file_and_directory_give_exit_3_and_a_partial_snapshot() {
    require!(Need::Root, Need::Program("setpriv", "util-linux"));
    let env = TestEnv::new();
    // nobody must be able to traverse to everything it should read.
    chmod(&env.root, 0o755);
    chown_tree(&env.home, NOBODY);

    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::create_dir_all(src.join("locked")).unwrap();
    fs::write(src.join("readable.txt"), b"everyone can read me\n").unwrap();
    fs::write(src.join("sub/ok.txt"), b"me too\n").unwrap();
    write_random_file(&src.join("sub/data.bin"), 600_000, 8);
    fs::write(src.join("secret.bin"), b"top secret\n").unwrap();
    fs::write(src.join("locked/inner.txt"), b"behind a locked door\n").unwrap();
    for d in ["", "sub"] {
        chmod(&src.join(d), 0o755);
    }
    for f in ["readable.txt", "sub/ok.txt", "sub/data.bin"] {
        chmod(&src.join(f), 0o644);
    }
    chmod(&src.join("secret.bin"), 0o000);
    chmod(&src.join("locked"), 0o000);

    fs::create_dir(&env.repo).unwrap();
    chown(&env.repo, Some(NOBODY), Some(NOBODY)).unwrap();
    env.arc().arg("init").run_as_nobody().run().success();

    let out = env.arc().args(["--json", "backup"]).arg(&src).run_as_nobody().run().code_is(3);
    let err = out.stderr_str();
    for culprit in ["secret.bin", "locked"] {
        assert!(
            err.lines().any(|l| l.contains("warning") && l.contains(&*src.join(culprit).to_string_lossy())),
            "no warning naming {culprit}\n{}",
            out.describe()
        );
    }
    // With --json, each unreadable item is also a restic-style `error`
    // line on stdout: the item and why.
    let errors: Vec<serde_json::Value> =
        out.json_lines().into_iter().filter(|v| v["message_type"] == "error").collect();
    for culprit in ["secret.bin", "locked"] {
        let item = src.join(culprit).to_string_lossy().into_owned();
        assert!(
            errors.iter().any(|e| e["item"] == item.as_str()
                && e["error"]["message"].as_str().is_some_and(|m| m.contains("Permission denied"))),
            "no JSON error for {item}: {errors:?}"
        );
    }
    let b = out.json();
    assert_eq!(b["message_type"], "summary", "{b:#}");
    assert!(ju64(&b, "summary.errors") >= 2, "errors in summary: {b:#}");
    assert_eq!(b["incomplete"], serde_json::Value::Bool(true), "{b:#}");
    let id = jstr(&b, "short_id").to_string();

    let snaps = env.snapshots_json();
    assert_eq!(snaps.len(), 1, "the incomplete snapshot was not saved");
    assert_eq!(jstr(&snaps[0], "short_id"), id);

    let ls = env.arc().args(["ls", "-R", &id]).arg(&src).run_as_nobody().run().success().stdout_str();
    for want in ["readable.txt", "sub/ok.txt", "sub/data.bin"] {
        let full = src.join(want).to_string_lossy().into_owned();
        assert!(ls.lines().any(|l| l.trim_end().ends_with(&full)), "{full} missing from `arc ls -R`:\n{ls}");
    }
    let secret = src.join("secret.bin").to_string_lossy().into_owned();
    assert!(
        !ls.lines().any(|l| l.trim_end().ends_with(&secret)),
        "the unreadable file is listed as if it had been saved:\n{ls}"
    );

    // Root restores what was saved.
    let target = env.path("restore");
    env.restore(&id, &target);
    for f in ["readable.txt", "sub/ok.txt", "sub/data.bin"] {
        assert_same_file(&src.join(f), &restored(&target, &src.join(f)));
    }

    env.arc().arg("check").run_as_nobody().run().success();
    env.arc().args(["check", "--read-data"]).run().success();
}
