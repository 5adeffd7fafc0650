//! Helpers shared by the end-to-end tests: running the real `arc` binary,
//! isolated test environments, deterministic data, tree comparison and
//! repository inspection.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const MIB: u64 = 1024 * 1024;

/// The passphrase every test repository is created and opened with
/// (TestEnv sets ARC_PASSWORD for every `arc` it runs).
pub const TEST_PASSWORD: &str = "correct horse battery staple (arc e2e)";

/// The suite runs once per encryption mode: `ARC_TEST_ENCRYPTION=none`
/// makes every `arc init` of the suite an `arc init --encryption none`
/// (the README's test command runs both). Unset or anything else: the
/// default, passphrase-encrypted repositories.
pub fn encryption_none() -> bool {
    std::env::var("ARC_TEST_ENCRYPTION").is_ok_and(|v| v == "none")
}

/// Opens a test repository with the engine (for inspection), with the
/// suite's passphrase.
pub fn open_repo(path: &Path) -> arc_engine::Repository {
    let pw = || Ok(zeroize::Zeroizing::new(TEST_PASSWORD.to_string()));
    arc_engine::Repository::open_local_with(path, Some(&pw))
        .unwrap_or_else(|e| panic!("open repository {}: {e}", path.display()))
}

/// Path of the `arc` binary cargo built for this test target.
pub fn arc_bin() -> &'static str {
    env!("CARGO_BIN_EXE_arc")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Finds an executable on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

// ---------------------------------------------------------------------------
// What a test needs from the machine
// ---------------------------------------------------------------------------

/// Something a test cannot run without. Under CI (the `CI` environment
/// variable set and not empty) a missing one fails the test; otherwise the
/// test is skipped and says so with a `SKIP: <test>: <reason>` line that
/// `./test.sh` counts into its closing line.
pub enum Need {
    Root,
    /// /dev/fuse and the right to open it (root here).
    Fuse,
    /// A program on PATH (or in /usr/sbin, /usr/bin); the second field names
    /// the Debian package that provides it.
    Program(&'static str, &'static str),
    /// A PostgreSQL server under /usr/lib/postgresql/*/bin (Debian's layout).
    Postgres,
    /// The `arc` binary was built with the `fault-injection` feature, which
    /// compiles in the test-only hooks (ARC_FAULT_*, ARC_TEST_*).
    FaultInjection,
    /// A file (a tool in a cache); the second field says how to get it.
    File(PathBuf, &'static str),
}

impl Need {
    /// Why the need is not met, or None.
    fn missing(&self) -> Option<String> {
        match self {
            Need::Root if !is_root() => Some("needs root".into()),
            Need::Fuse if std::env::var_os("ARC_SKIP_FUSE").is_some() => Some("ARC_SKIP_FUSE is set".into()),
            Need::Fuse if !Path::new("/dev/fuse").exists() => Some("/dev/fuse is missing".into()),
            Need::Fuse if !is_root() => Some("FUSE tests need root (/dev/fuse is root-only here)".into()),
            Need::Program(p, pkg) if find_program(p).is_none() => {
                Some(format!("`{p}` is not installed (apt-get install {pkg})"))
            }
            Need::Postgres if postgres_bin_dir().is_none() => {
                Some("no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)".into())
            }
            Need::FaultInjection if !cfg!(feature = "fault-injection") => {
                Some("arc was built without the fault-injection feature (./test.sh builds with it)".into())
            }
            Need::File(p, how) if !p.is_file() => Some(format!("{} is missing: {how}", p.display())),
            _ => None,
        }
    }
}

/// Finds a program on PATH, or where Debian puts it (mariadbd is in
/// /usr/sbin, which a non-login PATH may lack).
pub fn find_program(name: &str) -> Option<PathBuf> {
    which(name).or_else(|| ["/usr/sbin", "/usr/bin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.is_file()))
}

/// The bin directory of the newest PostgreSQL under /usr/lib/postgresql.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// True when every need is met. Otherwise: under CI the test fails here;
/// outside CI the skip is reported (bypassing the test harness's output
/// capture, so that it shows for passing tests too) and false is returned,
/// for the test to return at once. Use through [`require!`].
pub fn requirements_met(needs: &[Need]) -> bool {
    let reasons: Vec<String> = needs.iter().filter_map(Need::missing).collect();
    if reasons.is_empty() {
        return true;
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let reasons = reasons.join(", ");
    if under_ci() {
        panic!("{test}: {reasons} (CI is set, so this fails instead of skipping; ./test.sh installs what is needed)");
    }
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reasons}");
    false
}

/// Returns from the calling test, reported as skipped, unless every need
/// is met (under CI it fails instead): `require!(Need::Root, Need::Fuse);`.
#[macro_export]
macro_rules! require {
    ($($need:expr),+ $(,)?) => {
        if !$crate::util::requirements_met(&[$($need),+]) {
            return;
        }
    };
}

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

enum StdinSource {
    Null,
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// Builder for one invocation of a program (normally `arc`).
pub struct TestCommand {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, Option<OsString>)>,
    stdin: StdinSource,
    stdout_file: Option<PathBuf>,
    stdout_closed: bool,
    cwd: Option<PathBuf>,
    run_as_nobody: bool,
    timeout: Duration,
}

impl TestCommand {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        TestCommand {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
            stdin: StdinSource::Null,
            stdout_file: None,
            stdout_closed: false,
            cwd: None,
            run_as_nobody: false,
            timeout: Duration::from_secs(600),
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.envs.push((k.as_ref().to_owned(), Some(v.as_ref().to_owned())));
        self
    }

    pub fn envs_from(mut self, vars: Vec<(String, String)>) -> Self {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Self {
        self.envs.push((k.as_ref().to_owned(), None));
        self
    }

    pub fn stdin_bytes(mut self, data: Vec<u8>) -> Self {
        self.stdin = StdinSource::Bytes(data);
        self
    }

    pub fn stdin_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.stdin = StdinSource::File(path.into());
        self
    }

    /// Sends stdout to a file instead of capturing it (large outputs).
    pub fn stdout_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.stdout_file = Some(path.into());
        self
    }

    /// Stdout is a pipe whose reading end is already closed: every write
    /// fails with EPIPE, as when `head` has read what it wanted.
    pub fn stdout_closed(mut self) -> Self {
        self.stdout_closed = true;
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Runs the program as user/group 65534 (nobody) through setpriv.
    pub fn run_as_nobody(mut self) -> Self {
        self.run_as_nobody = true;
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    fn cmdline(&self) -> String {
        let mut s = String::new();
        if self.run_as_nobody {
            s.push_str("setpriv --reuid=65534 --regid=65534 --clear-groups ");
        }
        s.push_str(&self.program.to_string_lossy());
        for a in &self.args {
            s.push(' ');
            let a = a.to_string_lossy();
            if a.contains(' ') || a.is_empty() {
                let _ = write!(s, "'{a}'");
            } else {
                s.push_str(&a);
            }
        }
        s
    }

    /// Starts the program; see [`Running`].
    pub fn spawn(mut self) -> Running {
        // The suite's encryption mode (see `encryption_none`): every
        // repository the suite creates is created in it.
        if self.program == arc_bin() && encryption_none() && self.args.iter().any(|a| a == "init") {
            self.args.push("--encryption".into());
            self.args.push("none".into());
        }
        let cmdline = self.cmdline();
        let mut cmd = if self.run_as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
            c.arg(&self.program);
            c
        } else {
            Command::new(&self.program)
        };
        cmd.args(&self.args);
        for (k, v) in &self.envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        if let Some(d) = &self.cwd {
            cmd.current_dir(d);
        }
        match &self.stdin {
            StdinSource::Null => cmd.stdin(Stdio::null()),
            StdinSource::Bytes(_) => cmd.stdin(Stdio::piped()),
            StdinSource::File(p) => cmd.stdin(File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()))),
        };
        match &self.stdout_file {
            Some(p) => cmd.stdout(File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()))),
            None if self.stdout_closed => {
                let (reader, writer) = std::io::pipe().expect("pipe");
                drop(reader);
                cmd.stdout(writer)
            }
            None => cmd.stdout(Stdio::piped()),
        };
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start `{cmdline}`: {e}"));
        let stdin_thread = match self.stdin {
            StdinSource::Bytes(data) => {
                let mut w = child.stdin.take().expect("piped stdin");
                Some(std::thread::spawn(move || {
                    // The child may exit early (error); a broken pipe is its business.
                    let _ = w.write_all(&data);
                }))
            }
            _ => None,
        };
        let stdout_thread = child.stdout.take().map(reader_thread);
        let stderr_thread = child.stderr.take().map(reader_thread);
        Running { child, cmdline, timeout: self.timeout, stdin_thread, stdout_thread, stderr_thread }
    }

    /// Runs the program to completion (or its timeout) and returns its output.
    pub fn run(self) -> Output {
        self.spawn().wait()
    }
}

fn reader_thread<R: Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// A program started by [`TestCommand::spawn`].
pub struct Running {
    pub child: Child,
    cmdline: String,
    timeout: Duration,
    stdin_thread: Option<JoinHandle<()>>,
    stdout_thread: Option<JoinHandle<Vec<u8>>>,
    stderr_thread: Option<JoinHandle<Vec<u8>>>,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill({}, {sig}) failed: {}", self.pid(), std::io::Error::last_os_error());
    }

    /// Has the process exited already? (Does not reap it.)
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn wait(mut self) -> Output {
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match self.child.try_wait().expect("try_wait") {
                Some(s) => break s,
                None if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let stderr = self.stderr_thread.take().map(|t| t.join().unwrap_or_default());
                    panic!(
                        "`{}` did not finish within {:?}; stderr:\n{}",
                        self.cmdline,
                        self.timeout,
                        String::from_utf8_lossy(&stderr.unwrap_or_default())
                    );
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        if let Some(t) = self.stdin_thread.take() {
            let _ = t.join();
        }
        let stdout = self.stdout_thread.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        let stderr = self.stderr_thread.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        Output { cmdline: std::mem::take(&mut self.cmdline), status, stdout, stderr }
    }
}

impl Running {
    /// Like [`Running::wait`], and the process's peak resident memory in
    /// KiB (its VmHWM from /proc, sampled every few milliseconds).
    pub fn wait_with_peak_rss(mut self) -> (Output, u64) {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + self.timeout;
        // The peak is the exec'd program's own VmHWM, sampled while it
        // runs: wait4's ru_maxrss also counts the forked copy of this test
        // process before the exec (hundreds of MiB while the whole suite
        // runs), which is not the program's. VmHWM only grows, so the last
        // sample is the peak up to a few milliseconds before the exit.
        let status_file = format!("/proc/{}/status", self.pid());
        let mut hwm = 0u64;
        let (status, rss) = loop {
            if let Ok(text) = std::fs::read_to_string(&status_file) {
                let kib = text
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
                hwm = hwm.max(kib.unwrap_or(0));
            }
            let mut status = 0;
            // SAFETY: waitpid on our own child, with a valid status pointer.
            let r = unsafe { libc::waitpid(self.pid(), &mut status, libc::WNOHANG) };
            assert!(r >= 0, "waitpid failed: {}", std::io::Error::last_os_error());
            if r == self.pid() {
                break (std::process::ExitStatus::from_raw(status), hwm);
            }
            assert!(Instant::now() < deadline, "`{}` did not finish within {:?}", self.cmdline, self.timeout);
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(t) = self.stdin_thread.take() {
            let _ = t.join();
        }
        let stdout = self.stdout_thread.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        let stderr = self.stderr_thread.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        (Output { cmdline: std::mem::take(&mut self.cmdline), status, stdout, stderr }, rss)
    }
}

impl Drop for Running {
    /// A test that panics while a command runs must not leave it behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished command produced.
pub struct Output {
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_string()
    } else {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... [{} more bytes]", &s[..end], s.len() - end)
    }
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Command line, exit status, stdout and stderr, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {:?} (code {:?}, signal {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.cmdline,
            self.status,
            self.status.code(),
            self.status.signal(),
            clip(&self.stdout_str(), 6000),
            clip(&self.stderr_str(), 12000),
        )
    }

    #[track_caller]
    pub fn success(self) -> Self {
        assert!(self.status.success(), "expected success\n{}", self.describe());
        self
    }

    #[track_caller]
    pub fn code_is(self, code: i32) -> Self {
        assert_eq!(self.code(), Some(code), "expected exit code {code}\n{}", self.describe());
        self
    }

    /// Exited (not killed by a signal) with a non-zero code.
    #[track_caller]
    pub fn failure(self) -> Self {
        assert!(matches!(self.code(), Some(c) if c != 0), "expected a non-zero exit code\n{}", self.describe());
        self
    }

    #[track_caller]
    pub fn stderr_contains(self, needle: &str) -> Self {
        assert!(self.stderr_str().contains(needle), "expected stderr to contain {needle:?}\n{}", self.describe());
        self
    }

    #[track_caller]
    pub fn stdout_contains(self, needle: &str) -> Self {
        assert!(self.stdout_str().contains(needle), "expected stdout to contain {needle:?}\n{}", self.describe());
        self
    }

    /// Asserts that stderr is exactly one line of the form `arc: error: ...`
    /// and returns it.
    #[track_caller]
    pub fn one_line_error(&self) -> String {
        let err = self.stderr_str();
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            lines.len() == 1 && lines[0].starts_with("arc: error: "),
            "expected exactly one `arc: error: ...` line on stderr\n{}",
            self.describe()
        );
        lines[0].to_string()
    }

    #[track_caller]
    /// The JSON value on stdout; when there are several lines (a backup's
    /// status lines before its summary), the last one.
    pub fn json(&self) -> Value {
        let lines = self.json_lines();
        lines.last().cloned().unwrap_or_else(|| panic!("no JSON on stdout\n{}", self.describe()))
    }

    /// Every line of stdout parsed as one compact JSON value.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout_str()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not one JSON value: {e}: {l}\n{}", self.describe()))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Test environment
// ---------------------------------------------------------------------------

/// A temporary directory with a fake HOME/XDG tree and a repository path,
/// so that nothing ever touches the real default repository.
pub struct TestEnv {
    /// The remote backend's server under ARC_TEST_BACKEND (backends.rs);
    /// first, so it stops before the directory it serves goes.
    pub server: Option<crate::backends::Server>,
    tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub home: PathBuf,
    pub repo: PathBuf,
}

impl TestEnv {
    pub fn new() -> Self {
        Self::new_in(&std::env::temp_dir())
    }

    /// Like [`TestEnv::new`], but on the tmpfs /dev/shm when there is one:
    /// for tests that run an operation hundreds of times to kill a process
    /// (not to cut power), where every fsync on a real disk only costs
    /// time, and for tests of trees of 100,000s of files or of damaged
    /// repositories, where what is checked does not depend on the file
    /// system and creating, restoring and deleting the files on a disk
    /// costs minutes on a busy machine.
    pub fn in_memory() -> Self {
        let shm = Path::new("/dev/shm");
        Self::new_in(if shm.is_dir() { shm } else { Path::new("/tmp") })
    }

    fn new_in(dir: &Path) -> Self {
        let tmp = tempfile::Builder::new().prefix("arc-e2e-").tempdir_in(dir).expect("tempdir");
        let root = fs::canonicalize(tmp.path()).expect("canonicalize tempdir");
        let home = root.join("home");
        fs::create_dir_all(home.join(".local/share")).unwrap();
        fs::create_dir_all(home.join(".cache")).unwrap();
        let repo = root.join("repo");
        let server = crate::backends::current().map(|b| crate::backends::start(b, &root, &repo));
        TestEnv { server, tmp, root, home, repo }
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// `arc` with an isolated environment and no --repo. Key files it
    /// creates have a cheap Argon2id cost (`ARC_TEST_KDF=fast`,
    /// `arc_engine::fault::kdf_cost`); tests where the default cost
    /// matters remove the variable. Running the suite with
    /// `ARC_TEST_KDF=default` gives every key the default cost.
    pub fn cmd(&self) -> TestCommand {
        TestCommand::new(arc_bin())
            .env("ARC_TEST_KDF", std::env::var("ARC_TEST_KDF").unwrap_or_else(|_| "fast".into()))
            .env("HOME", &self.home)
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env_remove("ARC_REPO")
            .env_remove("ARC_CONFIG")
            .env("ARC_PASSWORD", TEST_PASSWORD)
            .env_remove("ARC_PASSWORD_FILE")
            .env_remove("ARC_PASSWORD_COMMAND")
            .env_remove("ARC_NEW_PASSWORD")
            .env_remove("ARC_NEW_PASSWORD_FILE")
            .env_remove("ARC_NEW_PASSWORD_COMMAND")
            .env_remove("ARC_FROM_PASSWORD")
            .env_remove("ARC_FROM_PASSWORD_FILE")
            .env_remove("ARC_FROM_PASSWORD_COMMAND")
            .envs_from(self.server.as_ref().map(|s| s.env.clone()).unwrap_or_default())
            .current_dir(&self.root)
    }

    /// `arc --repo <self.repo>`.
    pub fn arc(&self) -> TestCommand {
        self.arc_at(&self.repo)
    }

    /// `arc --repo <repo>`; `self.repo` on a remote backend is its URL.
    pub fn arc_at(&self, repo: &Path) -> TestCommand {
        match &self.server {
            Some(s) if repo == self.repo => self.cmd().arg("--repo").arg(&s.url),
            _ => self.cmd().arg("--repo").arg(repo),
        }
    }

    /// What `--repo` is for `self.repo` (its URL on a remote backend).
    pub fn repo_arg(&self) -> OsString {
        match &self.server {
            Some(s) => OsString::from(&s.url),
            None => self.repo.clone().into_os_string(),
        }
    }

    /// The index database (a cache) of `self.repo`: under
    /// `$XDG_CACHE_HOME/arc/<repository id>/`, never in the repository.
    pub fn index_db(&self) -> PathBuf {
        let cache = self.home.join(".cache/arc");
        let dbs: Vec<PathBuf> =
            files_under(&cache).into_iter().filter(|p| p.extension() == Some(OsStr::new("redb"))).collect();
        match dbs.as_slice() {
            [one] => one.clone(),
            other => panic!("expected one index database under {}, found {other:?}", cache.display()),
        }
    }

    pub fn init(&self) {
        self.arc().arg("init").run().success();
    }

    /// `arc backup --json ARGS...`, asserting exit 0; returns the JSON summary.
    #[track_caller]
    pub fn backup<I, S>(&self, args: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.arc().args(["--json", "backup"]).args(args).run().success();
        let v = out.json();
        assert_eq!(v["summary"]["errors"], 0, "backup reported errors\n{}", out.describe());
        v
    }

    #[track_caller]
    pub fn restore(&self, snap: &str, target: &Path) -> Output {
        self.arc().args(["restore", snap, "--target"]).arg(target).run().success()
    }

    #[track_caller]
    pub fn snapshots_json(&self) -> Vec<Value> {
        let out = self.arc().args(["--json", "snapshots"]).run().success();
        match out.json() {
            Value::Array(a) => a,
            other => panic!("snapshots --json is not a list: {other}\n{}", out.describe()),
        }
    }

    /// Files in REPO/snapshots.
    pub fn snapshot_files(&self) -> Vec<PathBuf> {
        files_under(&self.repo.join("snapshots"))
    }

    /// Pack files under REPO/data.
    pub fn pack_files(&self) -> Vec<PathBuf> {
        files_under(&self.repo.join("data"))
    }
}

/// Where `src` (an absolute path that was backed up) lands under a restore
/// or tar extraction target.
pub fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").expect("absolute source path"))
}

/// All regular files below `dir` (recursively), sorted; empty if missing.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Relative path -> size of every entry below `dir` (directories end in
/// `/` with size 0), leaving out the relative paths `skip` names.
pub fn listing(dir: &Path, skip: impl Fn(&str) -> bool) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if skip(&rel) {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                out.insert(format!("{rel}/"), 0);
                stack.push(p);
            } else {
                out.insert(rel, m.len());
            }
        }
    }
    out
}

/// Relative path -> size of every file in a repository, leaving out the
/// index cache database and lock files, which commands may legitimately
/// touch without changing the repository's content.
pub fn repo_listing(repo: &Path) -> BTreeMap<String, u64> {
    listing(repo, |rel| rel.starts_with("index.redb") || rel == "locks" || rel.starts_with("locks/"))
}

#[track_caller]
pub fn assert_listing_unchanged(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, what: &str) {
    if before != after {
        let mut diff = String::new();
        for (k, v) in before {
            match after.get(k) {
                None => {
                    let _ = writeln!(diff, "  removed {k} ({v} bytes)");
                }
                Some(w) if w != v => {
                    let _ = writeln!(diff, "  changed {k}: {v} -> {w} bytes");
                }
                _ => {}
            }
        }
        for (k, v) in after {
            if !before.contains_key(k) {
                let _ = writeln!(diff, "  added {k} ({v} bytes)");
            }
        }
        panic!("{what}: the repository changed:\n{diff}");
    }
}

/// Sum of the apparent sizes of all files below `dir`.
pub fn du_apparent(dir: &Path, skip_index_cache: bool) -> u64 {
    files_under(dir)
        .iter()
        .filter(|p| !(skip_index_cache && p.file_name() == Some(OsStr::new("index.redb"))))
        .map(|p| fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Sum of allocated bytes (st_blocks * 512) of all files below `dir`.
pub fn du_allocated(dir: &Path) -> u64 {
    files_under(dir).iter().map(|p| fs::symlink_metadata(p).map(|m| m.blocks() * 512).unwrap_or(0)).sum()
}

/// chmod for tests.
pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

/// A JSON number field as u64, with a useful panic.
#[track_caller]
pub fn ju64(v: &Value, field: &str) -> u64 {
    let mut cur = v;
    for part in field.split('.') {
        cur = &cur[part];
    }
    cur.as_u64().unwrap_or_else(|| panic!("field {field} is not an unsigned integer in {v:#}"))
}

#[track_caller]
pub fn jstr<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_else(|| panic!("field {field} is not a string in {v:#}"))
}

/// Waits until `cond` holds, polling every few milliseconds; false on timeout.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

// ---------------------------------------------------------------------------
// Deterministic data
// ---------------------------------------------------------------------------

/// xorshift64* with a fixed seed: fast, deterministic, incompressible enough.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix the seed so that nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let v = self.next_u64().to_le_bytes();
            let n = rest.len();
            rest.copy_from_slice(&v[..n]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// Writes `size` pseudo-random bytes from `seed` to `path`.
pub fn write_random_file(path: &Path, size: u64, seed: u64) {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).unwrap();
    }
    let mut rng = Rng::new(seed);
    let mut f = std::io::BufWriter::with_capacity(
        1 << 20,
        File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display())),
    );
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// Compressible, repetitive text of exactly `size` bytes.
pub fn repetitive_text(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let words = ["INSERT", "INTO", "orders", "VALUES", "(", ")", "NULL", "'paid'", "'shipped'", ";\n", ","];
    let mut out = Vec::with_capacity(size + 64);
    while out.len() < size {
        let w = words[rng.below(words.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        out.push(b' ');
        let _ = write!(&mut out, "{}", rng.below(1000));
    }
    out.truncate(size);
    out
}

// ---------------------------------------------------------------------------
// Comparing trees
// ---------------------------------------------------------------------------

/// What [`compare_trees`] checks besides the always-checked basics.
#[derive(Clone, Debug)]
pub struct CompareOpts {
    /// Compare symlink mtimes (only meaningful if the fixture set them).
    pub symlink_mtime: bool,
    /// Compare directory mtimes.
    pub dir_mtime: bool,
    /// Sockets in `expected` may be missing from `actual` (tar cannot hold them).
    pub skip_sockets: bool,
    /// Compare owners.
    pub owners: bool,
    /// Compare link counts and hardlink groups (off for partial restores
    /// that cut a link group).
    pub link_counts: bool,
    /// A file with several links may show a link count of 2 whatever its
    /// real count (the mount of a v2 tree, which records only that a file
    /// is linked); its hardlink group is still compared.
    pub linked_shown_as_two: bool,
    /// Relative paths of files that must be sparse in `actual`.
    pub sparse: Vec<PathBuf>,
}

impl Default for CompareOpts {
    fn default() -> Self {
        CompareOpts {
            symlink_mtime: true,
            dir_mtime: true,
            skip_sockets: false,
            owners: true,
            link_counts: true,
            linked_shown_as_two: false,
            sparse: Vec::new(),
        }
    }
}

fn kind_name(m: &fs::Metadata) -> &'static str {
    let ft = m.file_type();
    if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "chardev"
    } else if ft.is_block_device() {
        "blockdev"
    } else {
        "unknown"
    }
}

fn sorted_names(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let mut v: Vec<OsString> = fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
    v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(v)
}

/// Byte-for-byte comparison of two files, streaming. Returns the first
/// differing offset, or None if equal.
pub fn first_difference(a: &Path, b: &Path) -> std::io::Result<Option<u64>> {
    let mut fa = std::io::BufReader::with_capacity(1 << 20, File::open(a)?);
    let mut fb = std::io::BufReader::with_capacity(1 << 20, File::open(b)?);
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if ba[..na] != bb[..nb] {
            let i = ba[..na].iter().zip(&bb[..nb]).position(|(x, y)| x != y).unwrap_or(na.min(nb));
            return Ok(Some(off + i as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        off += na as u64;
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn xattrs_of(p: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    // xattr::list/get use the l* calls: a symlink's own attributes.
    let names = match xattr::list(p) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(e.to_string()),
    };
    for n in names {
        let v = xattr::get(p, &n).map_err(|e| e.to_string())?.unwrap_or_default();
        out.insert(n.as_bytes().to_vec(), v);
    }
    Ok(out)
}

fn show_xattrs(x: &BTreeMap<Vec<u8>, Vec<u8>>) -> String {
    x.iter()
        .map(|(k, v)| format!("{}={} bytes({:02x?}..)", String::from_utf8_lossy(k), v.len(), &v[..v.len().min(8)]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compares two trees recursively and returns every difference found.
/// Checks: names (raw bytes), file type, permission bits (incl. setuid,
/// setgid, sticky), owner, size, content, mtime to the nanosecond, symlink
/// targets, xattrs, device numbers, link counts and hardlink structure.
pub fn compare_trees(expected: &Path, actual: &Path, opts: &CompareOpts) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut groups_e: BTreeMap<(u64, u64), BTreeSet<PathBuf>> = BTreeMap::new();
    let mut groups_a: BTreeMap<(u64, u64), BTreeSet<PathBuf>> = BTreeMap::new();
    compare_entry(expected, actual, Path::new(""), opts, &mut diffs, &mut groups_e, &mut groups_a);

    // Hardlink structure: the same groups of paths share an inode.
    let norm = |g: BTreeMap<(u64, u64), BTreeSet<PathBuf>>| -> BTreeSet<BTreeSet<PathBuf>> {
        g.into_values().filter(|s| s.len() > 1).collect()
    };
    let (ge, ga) = (norm(groups_e), norm(groups_a));
    if opts.link_counts && ge != ga {
        diffs.push(format!("hardlink groups differ:\n    expected {ge:?}\n    actual   {ga:?}"));
    }

    for rel in &opts.sparse {
        let p = actual.join(rel);
        match fs::metadata(&p) {
            Ok(m) => {
                let alloc = m.blocks() * 512;
                // Restore turns every all-zero 4 KiB block into a hole, so
                // only the written regions (well under 1/16) are allocated.
                if alloc * 16 >= m.len() {
                    diffs.push(format!(
                        "{}: not sparse: {} bytes allocated for a size of {}",
                        rel.display(),
                        alloc,
                        m.len()
                    ));
                }
            }
            Err(e) => diffs.push(format!("{}: sparse file missing: {e}", rel.display())),
        }
    }
    diffs
}

fn compare_entry(
    e_path: &Path,
    a_path: &Path,
    rel: &Path,
    opts: &CompareOpts,
    diffs: &mut Vec<String>,
    groups_e: &mut BTreeMap<(u64, u64), BTreeSet<PathBuf>>,
    groups_a: &mut BTreeMap<(u64, u64), BTreeSet<PathBuf>>,
) {
    let show = if rel.as_os_str().is_empty() { PathBuf::from(".") } else { rel.to_path_buf() };
    let show = show.display();
    let em = match fs::symlink_metadata(e_path) {
        Ok(m) => m,
        Err(e) => {
            diffs.push(format!("{show}: cannot stat expected: {e}"));
            return;
        }
    };
    let am = match fs::symlink_metadata(a_path) {
        Ok(m) => m,
        Err(e) => {
            diffs.push(format!("{show}: missing in actual ({e})"));
            return;
        }
    };
    let (ek, ak) = (kind_name(&em), kind_name(&am));
    if ek != ak {
        diffs.push(format!("{show}: type: expected {ek}, actual {ak}"));
        return;
    }
    let is_link = ek == "symlink";
    if !is_link && em.mode() & 0o7777 != am.mode() & 0o7777 {
        diffs.push(format!("{show}: mode: expected {:04o}, actual {:04o}", em.mode() & 0o7777, am.mode() & 0o7777));
    }
    if opts.owners && (em.uid(), em.gid()) != (am.uid(), am.gid()) {
        diffs.push(format!("{show}: owner: expected {}:{}, actual {}:{}", em.uid(), em.gid(), am.uid(), am.gid()));
    }
    let check_mtime = match ek {
        "symlink" => opts.symlink_mtime,
        "dir" => opts.dir_mtime,
        _ => true,
    };
    if check_mtime && (em.mtime(), em.mtime_nsec()) != (am.mtime(), am.mtime_nsec()) {
        diffs.push(format!(
            "{show}: mtime: expected {}.{:09}, actual {}.{:09}",
            em.mtime(),
            em.mtime_nsec(),
            am.mtime(),
            am.mtime_nsec()
        ));
    }
    match (xattrs_of(e_path), xattrs_of(a_path)) {
        (Ok(x), Ok(y)) if x != y => {
            diffs.push(format!("{show}: xattrs: expected [{}], actual [{}]", show_xattrs(&x), show_xattrs(&y)))
        }
        (Ok(_), Ok(_)) => {}
        (Err(e), _) | (_, Err(e)) => diffs.push(format!("{show}: cannot read xattrs: {e}")),
    }
    match ek {
        "file" => {
            if em.len() != am.len() {
                diffs.push(format!("{show}: size: expected {}, actual {}", em.len(), am.len()));
            } else {
                match first_difference(e_path, a_path) {
                    Ok(None) => {}
                    Ok(Some(off)) => diffs.push(format!("{show}: content differs at byte {off}")),
                    Err(e) => diffs.push(format!("{show}: cannot compare content: {e}")),
                }
            }
            let shown_as_two = opts.linked_shown_as_two && em.nlink() > 1 && am.nlink() == 2;
            if opts.link_counts && em.nlink() != am.nlink() && !shown_as_two {
                diffs.push(format!("{show}: link count: expected {}, actual {}", em.nlink(), am.nlink()));
            }
            groups_e.entry((em.dev(), em.ino())).or_default().insert(rel.to_path_buf());
            groups_a.entry((am.dev(), am.ino())).or_default().insert(rel.to_path_buf());
        }
        "symlink" => {
            let (et, at) = (fs::read_link(e_path), fs::read_link(a_path));
            match (et, at) {
                (Ok(x), Ok(y)) if x == y => {}
                (x, y) => diffs.push(format!("{show}: symlink target: expected {x:?}, actual {y:?}")),
            }
        }
        "chardev" | "blockdev" if em.rdev() != am.rdev() => {
            diffs.push(format!("{show}: device: expected {:#x}, actual {:#x}", em.rdev(), am.rdev()));
        }
        "dir" => {
            let en = match sorted_names(e_path) {
                Ok(v) => v,
                Err(e) => {
                    diffs.push(format!("{show}: cannot list expected: {e}"));
                    return;
                }
            };
            let an = match sorted_names(a_path) {
                Ok(v) => v,
                Err(e) => {
                    diffs.push(format!("{show}: cannot list actual: {e}"));
                    return;
                }
            };
            let an_set: BTreeSet<&OsString> = an.iter().collect();
            let en_set: BTreeSet<&OsString> = en.iter().collect();
            for n in &an {
                if !en_set.contains(n) {
                    diffs.push(format!("{}: unexpected entry in actual", rel.join(n).display()));
                }
            }
            for n in &en {
                let sub = rel.join(n);
                if !an_set.contains(n) {
                    let is_socket = fs::symlink_metadata(e_path.join(n)).is_ok_and(|m| m.file_type().is_socket());
                    if !(opts.skip_sockets && is_socket) {
                        diffs.push(format!("{}: missing in actual", sub.display()));
                    }
                    continue;
                }
                compare_entry(&e_path.join(n), &a_path.join(n), &sub, opts, diffs, groups_e, groups_a);
            }
        }
        _ => {}
    }
}

#[track_caller]
pub fn assert_trees_equal(expected: &Path, actual: &Path, opts: &CompareOpts) {
    let diffs = compare_trees(expected, actual, opts);
    if !diffs.is_empty() {
        let shown: Vec<&String> = diffs.iter().take(60).collect();
        panic!(
            "trees differ: expected {} vs actual {} ({} difference(s)):\n  {}",
            expected.display(),
            actual.display(),
            diffs.len(),
            shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  ")
        );
    }
}

/// Asserts two files have identical bytes.
#[track_caller]
pub fn assert_same_file(expected: &Path, actual: &Path) {
    let (me, ma) = (fs::metadata(expected).unwrap(), fs::metadata(actual));
    let ma = ma.unwrap_or_else(|e| panic!("{}: {e}", actual.display()));
    assert_eq!(me.len(), ma.len(), "size of {} vs {}", expected.display(), actual.display());
    match first_difference(expected, actual).unwrap() {
        None => {}
        Some(off) => panic!("{} and {} differ at byte {off}", expected.display(), actual.display()),
    }
}
