//! Backup progress for scripts: `--json` prints compact JSON, one object per
//! line: restic-style `status` lines at a fixed interval (and one with the
//! final counts), then the `summary`.

use std::fs;

use serde_json::Value;

use crate::util::*;

#[test]
fn json_backup_prints_status_lines_then_a_summary() {
    let env = TestEnv::new();
    let src = env.path("src");
    let files = 40u64;
    let mut bytes = 0;
    for i in 0..files {
        let size = 50_000 + i * 1000;
        write_random_file(&src.join(format!("d{}/f{i}.bin", i % 4)), size, i);
        bytes += size;
    }
    env.init();
    // A dump command that takes 2.5 s keeps the backup running long enough
    // for interval status lines.
    let out = env
        .arc()
        .args(["--json", "backup"])
        .arg(&src)
        .args(["--command-stream", "slow.txt=sh -c 'sleep 2.5; echo done'"])
        .run()
        .success();
    let text = out.stdout_str();
    for line in text.lines() {
        assert!(!line.starts_with(char::is_whitespace) && line.starts_with('{'), "not compact: {line:?}");
    }
    let lines = out.json_lines();
    let (summary, statuses) = lines.split_last().expect("no output");
    assert_eq!(summary["message_type"], "summary", "{summary}");
    assert!(statuses.iter().all(|v| v["message_type"] == "status"), "{text}");
    // At least two interval lines in 2.5 s, plus the final one.
    assert!(statuses.len() >= 3, "{} status lines\n{text}", statuses.len());
    for s in statuses {
        for field in ["seconds_elapsed", "total_files", "files_done", "total_bytes", "bytes_done", "error_count"] {
            assert!(s[field].is_u64(), "{field} in {s}");
        }
        let p = s["percent_done"].as_f64().expect("percent_done");
        assert!((0.0..=1.0).contains(&p), "{s}");
    }
    let last: &Value = statuses.last().unwrap();
    // The scan's files plus the stream.
    assert_eq!(ju64(last, "total_files"), files + 1, "the scan counts every file: {last}");
    assert_eq!(ju64(last, "total_bytes"), bytes, "{last}");
    // The files plus the stream.
    assert_eq!(ju64(last, "files_done"), files + 1, "{last}");
    assert!(ju64(last, "bytes_done") >= bytes, "{last}");
    assert_eq!(last["percent_done"].as_f64(), Some(1.0), "{last}");
    // A mid-run line knows the totals and the file being read or done.
    assert!(statuses.iter().any(|s| ju64(s, "total_files") == files + 1 && s["current_files"].is_array()), "{text}");

    // restic's summary fields, and arc's own.
    assert_eq!(ju64(summary, "files_new"), files + 1, "{summary}");
    assert_eq!(ju64(summary, "total_files_processed"), files + 1, "{summary}");
    assert!(ju64(summary, "data_added") >= bytes, "{summary}");
    assert!(summary["snapshot_id"].is_string() && summary["summary"].is_object(), "{summary}");

    // A second backup: every file unchanged, still counted as done.
    fs::write(src.join("d0/new.txt"), b"new").unwrap();
    let out = env.arc().args(["--json", "backup"]).arg(&src).run().success();
    let lines = out.json_lines();
    let last = &lines[lines.len() - 2];
    assert_eq!(ju64(last, "files_done"), files + 1, "{last}");
    assert_eq!(ju64(last, "total_files"), files + 1, "{last}");
    assert_eq!(last["percent_done"].as_f64(), Some(1.0), "{last}");
}

#[test]
fn a_backup_that_read_nothing_says_its_additions_are_metadata() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::write(src.join("a/f"), b"content").unwrap();
    env.init();
    env.arc().arg("backup").arg(&src).run().success();
    // A new empty directory: a new tree, no file data.
    fs::create_dir(src.join("b")).unwrap();
    let out = env.arc().arg("backup").arg(&src).run().success();
    let text = out.stdout_str();
    assert!(text.contains("read nothing") && text.contains("of metadata"), "{text}");
}

#[test]
fn a_terminal_shows_files_and_bytes_of_the_total_with_percentage_eta_and_path() {
    require!(Need::Program("script", "bsdutils"));
    let env = TestEnv::new();
    let src = env.path("src");
    for i in 0..20 {
        write_random_file(&src.join(format!("f{i}.bin")), 200_000, i);
    }
    env.init();
    // script(1) gives arc a terminal; the stream keeps it running for a
    // few redraws of the bar.
    let cmd = "\"$ARC\" --repo \"$REPO\" backup \"$SRC\" --command-stream \"$STREAM\"";
    let out = TestCommand::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .env("STREAM", "slow.txt=sh -c 'sleep 1.5; echo x'")
        .env("ARC", arc_bin())
        .env("REPO", &env.repo)
        .env("SRC", &src)
        .env("HOME", &env.home)
        .env("XDG_CACHE_HOME", env.home.join(".cache"))
        .env("ARC_PASSWORD", TEST_PASSWORD)
        .env("TERM", "xterm")
        .run()
        .success();
    let screen = out.stdout_str().replace('\r', "\n");
    let bar = screen
        .lines()
        .find(|l| l.contains("/21 files") && l.contains("100%"))
        .unwrap_or_else(|| panic!("no bar with the totals\n{screen}"));
    assert!(bar.contains("MiB/") && bar.contains("ETA") && bar.contains(&*src.to_string_lossy()), "{bar}");
}
