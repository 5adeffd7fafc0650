//! The suite runs in both encryption modes from one `cargo test`: the
//! default run uses passphrase-encrypted repositories (TestEnv sets
//! ARC_PASSWORD), and this test runs it once more with
//! ARC_TEST_ENCRYPTION=none, where every `arc init` is `--encryption none`
//! (see `util::encryption_none`). Not a copy of the suite: the same tests,
//! the same binary, the other mode.
//!
//! The second run leaves out the modules that test what sits above or
//! below the repository format (the job runner, selection, diff and find,
//! database streams, progress and messages, the storage backends and their
//! servers, the FUSE layer): their code does not branch on the encryption
//! mode, every byte they read or write goes through the same sealing layer
//! as in the first run, and running them twice cost CI minutes it does not
//! have. Everything that writes, reads, checks, prunes, copies, kills or
//! damages a repository runs in both modes.

use std::process::Command;

/// Modules run only in the encrypted mode (see the module docs).
const ENCRYPTION_AGNOSTIC: &[&str] = &[
    "backends::",
    "remote::",
    "reconnect::",
    "fleet::",
    "select::",
    "everyday::",
    "dbdump::",
    "command_stream::",
    "progress::",
    "messages::",
    "operator::",
    "bad_input::",
    "json_docs::",
    "selftest::",
    "mount::",
];

#[test]
fn repository_suite_with_encryption_none() {
    if std::env::var_os("ARC_TEST_ENCRYPTION").is_some() {
        // Already one mode of the matrix: do not recurse.
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.env("ARC_TEST_ENCRYPTION", "none").args(["--skip", "modes::"]);
    for module in ENCRYPTION_AGNOSTIC {
        cmd.args(["--skip", module]);
    }
    // Forward the filters and options this run was given (a filtered run
    // runs the same filter in the other mode).
    let args: Vec<String> = std::env::args().skip(1).collect();
    cmd.args(&args);
    let out = cmd.output().expect("run the suite with ARC_TEST_ENCRYPTION=none");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("FAILED") || l.starts_with("test result") || l.contains("panicked"))
        .collect();
    // The failures' own reports (panic message, the command and its
    // stderr), which libtest prints to stdout after the results: without
    // them a failure in this mode says only its test's name.
    let reports = stdout.find("\nfailures:\n").map_or("", |at| &stdout[at..]);
    assert!(
        out.status.success(),
        "the suite fails with ARC_TEST_ENCRYPTION=none (--encryption none repositories):\n{}\n{}",
        summary.join("\n"),
        clip_middle(reports, 40_000)
    );
    println!("--encryption none: {}", summary.join("; "));
}

/// `s`, or its head and tail with the middle left out when it is longer
/// than `max` bytes.
fn clip_middle(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let head = s.floor_char_boundary(max / 2);
    let tail = s.ceil_char_boundary(s.len() - max / 2);
    format!("{}\n[... {} bytes left out ...]\n{}", &s[..head], tail - head, &s[tail..])
}
