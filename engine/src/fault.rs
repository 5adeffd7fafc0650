//! Crash points for the fault-injection tests. The hooks exist only in
//! builds with the `fault-injection` cargo feature (./test.sh enables it for
//! the e2e tests); in any other build [`step`] and [`pause_before_read`] are
//! empty and no environment variable is read, so a user cannot trip them.
//!
//! Every durable step the engine takes on a repository calls [`step`]: a
//! temporary file half and fully written, its fsync, its rename, the fsync
//! of the directory, an unlink and its directory fsync, a commit of the
//! index database, the removal of a leftover temporary file. Two
//! environment variables, read once per process, turn the hook on:
//!
//! * `ARC_FAULT_KILL_AT=N`: the process sends itself SIGKILL at the N-th
//!   step (counting from 1, over all threads), that is right after that
//!   step completed and before anything else was done. SIGKILL, unlike
//!   `exit` or `abort`, runs no destructor, flushes nothing and leaves the
//!   lock file behind: it is exactly `kill -9`.
//! * `ARC_FAULT_TRACE=FILE`: every step appends one line `N<TAB>step<TAB>path`
//!   to FILE before it can be killed, so a run without a kill point tells
//!   how many steps an operation takes, and a killed run tells where it died.
//!
//! When neither is set a step costs one initialised `OnceLock` read.
//!
//! [`pause_before_read`] is another test hook: it holds a backup between
//! the stat of a source file and its read, so a test can change the file
//! in that window. [`kdf_cost`] lets the test suite create key files with
//! a cheap Argon2id cost. The other hooks: `ARC_FAULT_PANIC`
//! ([`panic_point`]), `ARC_FAULT_PRUNE_STEP` (a stop after one of prune's
//! protocol steps, read by the CLI: ops/prune.rs) and
//! `ARC_FAULT_SHORT_PUTS` (SFTP or WebDAV puts that end early without an
//! error: storage/remote/staged_put.rs). [`remote_retries`] and
//! [`pause_at`] serve the tests of remote connections that fail and come
//! back.

use std::fmt::Display;

/// Records that the durable step `what` on `target` has just completed, and
/// kills the process if it is the chosen one.
#[inline]
pub fn step(what: &str, target: &dyn Display) {
    #[cfg(feature = "fault-injection")]
    if let Some(h) = hooks::hook() {
        h.step(what, target);
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = (what, target);
}

/// Test hook, so that tests/e2e/sourcechange.rs can change a source file
/// deterministically between the walk's stat and the read. When the
/// environment variable `ARC_TEST_PAUSE_BEFORE_READ` names a directory and
/// `<dir>/<file name>.pause` exists, the backup creates
/// `<dir>/<file name>.reached` before opening the file and waits (at most
/// a minute) until `<dir>/<file name>.go` exists. Unset, it costs one
/// cached environment lookup per backup.
#[inline]
pub fn pause_before_read(path: &std::path::Path) {
    #[cfg(feature = "fault-injection")]
    hooks::pause_before_read(path);
    #[cfg(not(feature = "fault-injection"))]
    let _ = path;
}

/// Test hook: panics when `ARC_FAULT_PANIC` equals `point`, so that the
/// e2e tests can prove a panicking worker is reported as a bug (see
/// [`crate::sync`]) and not as "interrupted".
#[inline]
pub fn panic_point(point: &str) {
    #[cfg(feature = "fault-injection")]
    if std::env::var("ARC_FAULT_PANIC").is_ok_and(|v| v == point) {
        panic!("injected panic at {point} (ARC_FAULT_PANIC)");
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = point;
}

/// Test hook: the Argon2id cost (memory KiB, passes, lanes) of a new key
/// file. With `ARC_TEST_KDF=fast` it is 1 MiB, 1 pass, 4 lanes instead of
/// `default`: the e2e suite runs thousands of commands, and at the
/// default cost each one spends ~0.16 CPU-s deriving its key (`arc
/// snapshots` on an empty repository: 0.16 CPU-s, 0.005 with this cost),
/// more than most of them spend on their work (restic's tests lower their
/// scrypt cost the same way). The
/// cost is stored in the key file, so the commands that open the
/// repository later need no hook; the algorithm, the 4 lanes and every
/// code path stay those of a user's key. tests/e2e/keys.rs checks that key
/// files written without the variable have the default cost.
#[inline]
pub fn kdf_cost(default: (u32, u32, u32)) -> (u32, u32, u32) {
    #[cfg(feature = "fault-injection")]
    if std::env::var("ARC_TEST_KDF").is_ok_and(|v| v == "fast") {
        return (1024, 1, 4);
    }
    default
}

/// Test hook: `ARC_TEST_REMOTE_RETRIES=N` makes a remote repository retry a
/// failed request N times instead of `default`, so that a test of a server
/// that stays away ends in a second, not after the full backoff.
#[inline]
pub fn remote_retries(default: usize) -> usize {
    #[cfg(feature = "fault-injection")]
    if let Some(n) = std::env::var("ARC_TEST_REMOTE_RETRIES").ok().and_then(|v| v.trim().parse().ok()) {
        return n;
    }
    default
}

/// Test hook: holds the process at `point` once, so that a test can break
/// the connection to a remote repository at a known moment (kill the ssh
/// master, stop the server) and let it go on. When the environment
/// variable `ARC_TEST_PAUSE_AT` names a directory holding `<point>.pause`,
/// the first thread to get here removes that file, creates
/// `<point>.reached` and waits (at most a minute) until `<point>.go`
/// exists. The points: `sftp-put` (a pack's upload to SFTP, after its
/// first piece was written: storage/remote/staged_put.rs) and
/// `remote-read` (before a ranged read of a remote object:
/// storage/remote.rs) and `put-new` (a create-if-absent on a store without
/// conditional writes, between its check and its put: storage/remote.rs).
#[inline]
pub fn pause_at(point: &str) {
    #[cfg(feature = "fault-injection")]
    hooks::pause_at(point);
    #[cfg(not(feature = "fault-injection"))]
    let _ = point;
}

#[cfg(feature = "fault-injection")]
mod hooks {
    use std::fmt::Display;
    use std::fs::{File, OpenOptions};
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};

    pub const KILL_AT_ENV: &str = "ARC_FAULT_KILL_AT";
    pub const TRACE_ENV: &str = "ARC_FAULT_TRACE";

    pub(super) struct Hook {
        kill_at: Option<u64>,
        trace: Option<Mutex<File>>,
        count: AtomicU64,
    }

    static HOOK: OnceLock<Option<Hook>> = OnceLock::new();

    pub(super) fn hook() -> Option<&'static Hook> {
        HOOK.get_or_init(|| {
            let kill_at = std::env::var(KILL_AT_ENV).ok().and_then(|v| v.trim().parse::<u64>().ok());
            // A trace that cannot be opened would make the test that asked for
            // it count nothing and pass vacuously: fail loudly instead. This is
            // reachable only when the test hook is set.
            let trace = std::env::var_os(TRACE_ENV).map(|p| {
                let f = OpenOptions::new().create(true).append(true).open(&p);
                Mutex::new(f.unwrap_or_else(|e| panic!("{TRACE_ENV}={}: {e}", p.to_string_lossy())))
            });
            if kill_at.is_none() && trace.is_none() {
                return None;
            }
            Some(Hook { kill_at, trace, count: AtomicU64::new(0) })
        })
        .as_ref()
    }

    impl Hook {
        #[cold]
        pub(super) fn step(&self, what: &str, target: &dyn Display) {
            // With a trace, steps are numbered and written under its lock, so
            // that line N is step N and the step that is killed is always the
            // last line (two threads could otherwise take numbers N and N+1 and
            // N+1 be killed before N was written).
            let _guard;
            let n = match &self.trace {
                Some(t) => {
                    let mut f = t.lock().unwrap_or_else(|p| p.into_inner());
                    let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
                    let _ = f.write_all(format!("{n}\t{what}\t{target}\n").as_bytes());
                    _guard = f;
                    n
                }
                None => self.count.fetch_add(1, Ordering::SeqCst) + 1,
            };
            if self.kill_at == Some(n) {
                // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught, so
                // the process ends here.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
                // Not reached: SIGKILL to oneself is delivered before kill(2)
                // returns. Should it not be, stop this thread from doing more.
                loop {
                    std::thread::park();
                }
            }
        }
    }

    pub(super) fn pause_at(point: &str) {
        static DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
        let Some(dir) = DIR.get_or_init(|| std::env::var_os("ARC_TEST_PAUSE_AT").map(std::path::PathBuf::from)) else {
            return;
        };
        // Removing the marker is what elects the one thread that pauses.
        if std::fs::remove_file(dir.join(format!("{point}.pause"))).is_err() {
            return;
        }
        let _ = std::fs::write(dir.join(format!("{point}.reached")), b"");
        let go = dir.join(format!("{point}.go"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !go.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    pub(super) fn pause_before_read(path: &std::path::Path) {
        static DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
        let Some(dir) =
            DIR.get_or_init(|| std::env::var_os("ARC_TEST_PAUSE_BEFORE_READ").map(std::path::PathBuf::from))
        else {
            return;
        };
        let Some(name) = path.file_name() else { return };
        let marker = |suffix: &str| {
            let mut n = name.to_os_string();
            n.push(suffix);
            dir.join(n)
        };
        if !marker(".pause").exists() {
            return;
        }
        let _ = std::fs::write(marker(".reached"), b"");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !marker(".go").exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
