//! What an operator moving from restic or borg runs into in the first days:
//! the default repository named by its path in a script, cron mail from
//! `arc run`, an `init` that was refused, and the exit code of a mistyped
//! value. Each test is a case found by using arc as such a user would.

use std::fs;

use crate::util::*;

/// `arc` as a user without ARC_PASSWORD*: the default repository is
/// opened with the key file arc made it with.
fn no_password(env: &TestEnv) -> TestCommand {
    env.cmd().env_remove("ARC_PASSWORD")
}

fn default_repo(env: &TestEnv) -> std::path::PathBuf {
    env.home.join(".local/share/arc/repository")
}

#[test]
fn the_default_repository_opens_under_any_name_with_its_key_file() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    // The README's first command: no init, no passphrase.
    no_password(&env).arg("backup").arg(&src).run().success();
    let repo = default_repo(&env);

    // The same repository named by its path (a cron script, a unit with
    // ARC_REPO) opens as it does without --repo.
    let listed = no_password(&env).arg("--repo").arg(&repo).args(["--json", "snapshots"]).run().success();
    assert_eq!(listed.json().as_array().map(Vec::len), Some(1), "{}", listed.describe());
    no_password(&env).env("ARC_REPO", &repo).arg("snapshots").run().success();

    // Copied off-site: the source opens with its key file even though
    // ARC_PASSWORD (the target's passphrase) is set.
    let other = env.path("offsite");
    env.arc_at(&other).arg("init").run().success();
    let copy = env.arc_at(&other).args(["--json", "copy", "--all", "--from-repo"]).arg(&repo).run().success();
    assert_eq!(copy.json()["copied"].as_array().map(Vec::len), Some(1), "{}", copy.describe());

    // ARC_PASSWORD of another repository in the environment: the message
    // says where the default repository's passphrase is.
    let key_file = env.home.join(".config/arc/repository.key");
    let line = no_password(&env).env("ARC_PASSWORD", "another").arg("snapshots").run().code_is(1).one_line_error();
    assert!(line.contains(&key_file.display().to_string()) && line.contains("unset ARC_PASSWORD"), "{line}");

    // A new passphrase: the key file no longer opens the repository, and
    // both `key passwd` and the next command say which file is at fault.
    let passwd = no_password(&env).env("ARC_NEW_PASSWORD", "a new one").args(["key", "passwd"]).run().success();
    assert!(passwd.stderr_str().contains(&key_file.display().to_string()), "{}", passwd.describe());
    let line = no_password(&env).arg("snapshots").run().code_is(1).one_line_error();
    assert!(line.contains(&key_file.display().to_string()) && line.contains("ARC_PASSWORD"), "{line}");
    no_password(&env).env("ARC_PASSWORD", "a new one").arg("snapshots").run().success();
}

#[test]
fn a_refused_init_leaves_the_directory_as_it_was() {
    let env = TestEnv::new();
    let repo = env.path("new-repo");
    for bad in [["--compression", "99"], ["--pack-size", "1K"], ["--frame-size", "32M"]] {
        let out = env.arc_at(&repo).arg("init").args(bad).run().code_is(1);
        assert!(out.one_line_error().contains("cannot create repository"), "{}", out.describe());
        assert!(!repo.exists(), "init {bad:?} was refused but created {}", repo.display());
    }
    fs::create_dir_all(&repo).unwrap();
    env.arc_at(&repo).args(["init", "--compression", "0"]).run().code_is(1);
    assert_eq!(fs::read_dir(&repo).unwrap().count(), 0, "a refused init left files in an empty directory");
    // So the corrected command works.
    env.arc_at(&repo).arg("init").run().success();

    // An existing repository is named as such before any passphrase is
    // asked for (here: none is available, and that is not the error).
    let line = no_password(&env).arg("--repo").arg(&repo).arg("init").run().code_is(1).one_line_error();
    assert!(line.contains("a repository already exists there"), "{line}");
}

/// `arc run --due` from cron every minute, and `arc -q run`: nothing on
/// stderr (no cron mail) unless a job fails; the log file has every line.
#[test]
fn arc_run_from_cron_is_silent_unless_a_job_fails() {
    let env = TestEnv::new();
    env.init();
    let log = env.path("arc.log");
    let config = env.path("arc.toml");
    let write_config = |command: &str| {
        fs::write(
            &config,
            format!(
                "repository = \"{}\"\n[run]\nlog-file = \"{}\"\n[defaults]\nspread = \"24h\"\nlimit-read = \"60MiB\"\n\
                 [[jobs]]\nname = \"ldap\"\nkind = \"command\"\ncommand = \"{command}\"\nstream = \"ldap/data.ldif\"\n",
                env.repo.display(),
                log.display()
            ),
        )
        .unwrap();
    };
    let run = |args: &[&str]| {
        env.cmd().env("XDG_STATE_HOME", env.path("state")).args(args).arg("--config").arg(&config).run()
    };
    write_config("echo dn: x");
    // What a dry run says, in the units the configuration uses.
    run(&["run", "--dry-run"]).success().stdout_contains("limit-read 60 MiB/s");
    let quiet = run(&["-q", "run"]).success();
    assert_eq!(quiet.stderr_str(), "", "a successful `arc -q run` wrote to stderr\n{}", quiet.describe());
    // Ran in this window: the next minutes find nothing due, silently.
    let idle = run(&["run", "--due"]).success();
    assert_eq!(idle.stderr_str(), "", "`arc run --due` with nothing due wrote to stderr\n{}", idle.describe());
    let logged = fs::read_to_string(&log).unwrap();
    assert!(logged.contains("job=ldap ok") && logged.contains("nothing due"), "{logged}");
    // Without -q a run still reports what it did.
    run(&["run"]).success().stderr_contains("job=ldap ok");

    write_config("false");
    let failed = run(&["-q", "run"]).code_is(1);
    let err = failed.stderr_str();
    assert!(err.contains("job=ldap failed") && err.contains("summary: 0 ok, 1 failed"), "{}", failed.describe());
    assert!(!err.contains("start kind="), "-q printed what went well\n{}", failed.describe());
}

/// A wrong value of an option is a usage error: exit 2, one line, nothing
/// done (README, exit codes).
#[test]
fn mistyped_values_exit_2_and_change_nothing() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"f").unwrap();
    env.init();
    env.backup([&src]);
    let before = repo_listing(&env.repo);
    let cases: &[&[&str]] = &[
        &["forget", "--keep-within", "30x"],
        &["forget", "--keep-daily", "7", "--group-by", "colour"],
        &["snapshots", "--keep-within", "2q"],
        &["backup"],
        &["find", "cache/[a-"],
        &["restore", "latest", "--target", "out", "--exclude", "[a-"],
    ];
    for args in cases {
        let out = env.arc().args(*args).run().code_is(2);
        out.one_line_error();
    }
    let out = env.arc().arg("backup").arg(&src).args(["--exclude", "cache/[a-"]).run().code_is(2);
    assert!(out.one_line_error().contains("--exclude: bad pattern"), "{}", out.describe());
    assert!(!env.path("out").exists());
    assert_listing_unchanged(&before, &repo_listing(&env.repo), "after refused commands");

    // restic's and the aws cli's spellings of an S3 URL: the form arc takes.
    for url in ["s3://host/bucket", "s3:host/bucket"] {
        let line = env.cmd().args(["--repo", url, "snapshots"]).run().code_is(1).one_line_error();
        assert!(line.contains("s3:http(s)://host[:port]/bucket[/prefix]"), "{line}");
    }
}

fn tags(snapshot: &serde_json::Value) -> Vec<String> {
    let mut t: Vec<String> =
        snapshot["tags"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
    t.sort();
    t
}

/// restic's `--tag daily,weekly` is two tags, as `snapshots` shows them
/// (joined by commas): as one tag "daily,weekly", `--keep-tag daily`
/// would forget a snapshot the user tagged to keep.
#[test]
fn comma_separated_tags_are_several_tags() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"f").unwrap();
    env.init();
    let kept = env.backup([src.as_os_str(), "--tag".as_ref(), "keep,daily".as_ref()]);
    env.backup([&src]);
    assert_eq!(tags(&env.snapshots_json()[0]), ["daily", "keep"]);
    let listed = env.arc().args(["--json", "snapshots", "--tag", "daily"]).run().success().json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    let r = env.arc().args(["--json", "forget", "--keep-tag", "keep"]).run().success().json();
    assert_eq!(r["removed"].as_array().map(Vec::len), Some(1), "{r}");
    let left = env.snapshots_json();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], kept["snapshot_id"], "the snapshot tagged keep was forgotten");

    env.arc().args(["tag", "latest", "--add", "a,b", "--remove", "daily"]).run().success();
    assert_eq!(tags(&env.snapshots_json()[0]), ["a", "b", "keep"]);
}

/// restic's filter rule, which `--keep-tag` already followed: repeated
/// `--tag` values select snapshots carrying any of them. With "all must
/// match", `forget --tag daily --tag weekly` matched nothing and forgot
/// nothing, where a restic user's script expects both series thinned.
#[test]
fn repeated_tag_filters_select_any_of_them() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"f").unwrap();
    env.init();
    let daily = env.backup([src.as_os_str(), "--tag".as_ref(), "daily".as_ref()]);
    let weekly = env.backup([src.as_os_str(), "--tag".as_ref(), "weekly".as_ref()]);
    let untagged = env.backup([&src]);
    let args = ["--json", "forget", "--tag", "daily", "--tag", "weekly", "--keep-last", "1", "--group-by", ""];
    let r = env.arc().args(args).run().success().json();
    let removed: Vec<_> = r["removed"].as_array().into_iter().flatten().collect();
    assert_eq!(removed.len(), 1, "{r}");
    assert_eq!(removed[0]["id"], daily["snapshot_id"], "{r}");
    let left: Vec<_> = env.snapshots_json().iter().map(|s| s["id"].clone()).collect();
    assert_eq!(left, [weekly["snapshot_id"].clone(), untagged["snapshot_id"].clone()]);
}

/// restic's name for a stream's path, `--stdin-filename`, works as arc's
/// `--stdin-name`: a restic user's dump script runs unchanged.
#[test]
fn restics_stdin_filename_names_the_stream() {
    let env = TestEnv::new();
    env.init();
    env.arc()
        .args(["backup", "--stdin", "--stdin-filename", "mysql/shop.sql"])
        .stdin_bytes(b"INSERT 1;\n".to_vec())
        .run()
        .success();
    let out = env.arc().args(["cat", "latest:mysql/shop.sql"]).run().success();
    assert_eq!(out.stdout, b"INSERT 1;\n");
}

/// restic's `--password-file` (`-p`) and `--password-command`: a cron line
/// written for restic keeps its flag, and the flag wins over an
/// ARC_PASSWORD left in a profile.
#[test]
fn restics_password_flags_open_the_repository() {
    let env = TestEnv::new();
    let pw = env.path("pw");
    fs::write(&pw, "from a file\n").unwrap();
    // ARC_PASSWORD holds the suite's passphrase, not this repository's.
    env.arc().arg("-p").arg(&pw).arg("init").run().success();
    env.arc().arg("--password-file").arg(&pw).arg("snapshots").run().success();
    let cat = format!("cat '{}'", pw.display());
    env.arc().args(["--password-command", &cat, "snapshots"]).run().success();
    env.arc().arg("snapshots").run().code_is(1).one_line_error();
    let missing = env.path("no-such-file");
    let out = env.arc().arg("--password-file").arg(&missing).arg("snapshots").run().code_is(1);
    let line = out.one_line_error();
    assert!(line.contains("--password-file") && line.contains("no-such-file"), "{line}");
    env.arc().arg("-p").arg(&pw).args(["--password-command", "true", "snapshots"]).run().code_is(2);
}

/// restic's `restore SNAPSHOT:PATH` names the form arc takes (`--include`)
/// instead of "no snapshot matches".
#[test]
fn restore_of_snapshot_colon_path_names_include() {
    let env = TestEnv::new();
    env.init();
    let out = env.arc().args(["restore", "latest:/var/www/site1", "--target"]).arg(env.path("t")).run().code_is(2);
    let line = out.one_line_error();
    assert!(line.contains("arc restore latest --include /var/www/site1"), "{line}");
    assert!(!env.path("t").exists());
}

/// Commands that never open --repo work whatever ARC_REPO holds (a typo
/// in a profile must not break `source <(arc completion bash)`).
#[test]
fn commands_without_a_repository_ignore_a_bad_arc_repo() {
    let env = TestEnv::new();
    for args in [&["completion", "bash"][..], &["man", "backup"], &["cache", "--list"]] {
        env.cmd().env("ARC_REPO", "s3://typo/bucket").args(args).run().success();
    }
    env.cmd().env("ARC_REPO", "s3://typo/bucket").arg("snapshots").run().code_is(1).one_line_error();
}

/// `-q` in a cron line: nothing on stdout or stderr when all went well (cron
/// mails any output), the warnings and the exit code when not.
#[test]
fn quiet_cron_commands_print_nothing_on_success() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"f").unwrap();
    env.init();
    let target = env.path("out");
    let runs: Vec<Vec<std::ffi::OsString>> = vec![
        vec!["-q".into(), "backup".into(), src.clone().into()],
        vec!["-q".into(), "backup".into(), src.clone().into()],
        vec!["-q".into(), "check".into(), "--read-data".into()],
        vec!["-q".into(), "forget".into(), "--keep-last".into(), "1".into(), "--prune".into()],
        vec!["-q".into(), "prune".into()],
        vec!["-q".into(), "restore".into(), "latest".into(), "--target".into(), target.into()],
    ];
    for args in runs {
        let out = env.arc().args(&args).run().success();
        assert!(out.stdout_str().is_empty() && out.stderr_str().is_empty(), "{args:?} printed\n{}", out.describe());
    }
    assert_eq!(env.snapshots_json().len(), 1);
}

/// A restore whose --include pattern matches nothing (a typo) is an error
/// naming the pattern, not "restored 0 files" with exit 0, and leaves no
/// empty target behind.
#[test]
fn a_restore_pattern_that_matches_nothing_is_an_error() {
    let env = TestEnv::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("site1")).unwrap();
    fs::write(src.join("site1/index.php"), b"<?php").unwrap();
    env.init();
    env.backup([&src]);
    let target = env.path("out");
    let out = env.arc().args(["restore", "latest", "--target"]).arg(&target).args(["--include", "/nope/**"]).run();
    let line = out.code_is(1).one_line_error();
    assert!(line.contains("matches --include /nope/**"), "{line}");
    assert!(!target.exists(), "an empty target was left behind");
    let pattern = format!("{}/site*/**", src.display());
    env.arc().args(["restore", "latest", "--target"]).arg(&target).args(["--include", &pattern]).run().success();
    assert!(target.join(src.strip_prefix("/").unwrap()).join("site1/index.php").is_file());
}

/// `arc backup --stdin` typed in a terminal (nothing piped in) would wait
/// silently for input: it is refused at once with the way that works.
#[test]
fn backup_stdin_from_a_terminal_is_refused() {
    let env = TestEnv::new();
    env.init();
    // A pseudo-terminal as stdin, as an interactive shell has.
    // SAFETY: posix_openpt/grantpt/unlockpt/ptsname on a fresh master fd;
    // ptsname's static buffer is copied at once, on this one thread.
    let tty = unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0 && libc::grantpt(master) == 0 && libc::unlockpt(master) == 0, "no pseudo-terminal");
        let name = std::ffi::CStr::from_ptr(libc::ptsname(master)).to_string_lossy().into_owned();
        (master, name)
    };
    let out =
        env.arc().args(["backup", "--stdin"]).stdin_file(&tty.1).timeout(std::time::Duration::from_secs(20)).run();
    // SAFETY: the master fd opened above, closed once.
    unsafe { libc::close(tty.0) };
    let line = out.code_is(2).one_line_error();
    assert!(line.contains("--stdin-from-command"), "{line}");
    assert!(env.snapshot_files().is_empty());
}

/// Every command that reports something has --json; unlock printed nothing.
#[test]
fn unlock_json_says_what_it_removed() {
    let env = TestEnv::new();
    env.init();
    let v = env.arc().args(["--json", "unlock"]).run().success().json();
    assert_eq!(v, serde_json::json!({"locks_removed": 0, "sessions_removed": 0}));
}

/// `arc copy --from-repo X` with nothing to copy named: the usage error
/// names `--all` beside <SNAPSHOT> (restic copies everything by default; a
/// restic user types no snapshot).
#[test]
fn copy_without_snapshots_names_all() {
    let env = TestEnv::new();
    let out = env.arc().args(["copy", "--from-repo", "/nonexistent"]).run().code_is(2);
    assert!(out.stderr_str().contains("--all"), "{}", out.describe());
}
