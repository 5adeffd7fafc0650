//! The suite runs in both encryption modes from one `cargo test`: the
//! default run uses passphrase-encrypted repositories (TestEnv sets
//! ARC_PASSWORD), and this test runs the whole suite once more with
//! ARC_TEST_ENCRYPTION=none, where every `arc init` is `--encryption none`
//! (see `util::encryption_none`). Not a copy of the suite: the same tests,
//! the same binary, the other mode.

use std::process::Command;

#[test]
fn whole_suite_with_encryption_none() {
    if std::env::var_os("ARC_TEST_ENCRYPTION").is_some() {
        // Already one mode of the matrix: do not recurse.
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.env("ARC_TEST_ENCRYPTION", "none").args(["--skip", "modes::whole_suite_with_encryption_none"]);
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
    assert!(
        out.status.success(),
        "the suite fails with ARC_TEST_ENCRYPTION=none (--encryption none repositories):\n{}\n{}",
        summary.join("\n"),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("--encryption none: {}", summary.join("; "));
}
