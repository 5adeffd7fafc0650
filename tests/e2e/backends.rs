//! The suite on remote repositories: a core part of the end-to-end suite
//! runs once more against each remote backend, each test with its own
//! server started on a free loopback port and stopped when its TestEnv is
//! dropped, however the test ends.
//!
//! * `s3`: s3s-fs 0.14.1 (real HTTP with SigV4 over a directory), from
//!   the tool cache `${ARC_TOOL_CACHE:-$HOME/.cache/arc-tools}` where
//!   ./test.sh installs it.
//! * `sftp`: Debian's OpenSSH sshd, as root, with a temporary config, host
//!   key, client key and known_hosts; arc logs in with ARC_SFTP_KEY and
//!   ARC_SSH_CONFIG (so nothing touches ~/.ssh).
//! * `webdav`: wsgidav (pip install wsgidav cheroot).
//!
//! Every server serves a directory that holds the TestEnv's `repo`
//! directory, so the tests that look at repository files on disk
//! (damage a pack, count packs) work unchanged: only `--repo` changes to
//! the server's URL. Not a copy of the tests: the same tests, re-run by
//! the `suite_on_*` tests below with ARC_TEST_BACKEND set.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// The part of the suite that runs on every backend: round trips with
/// every metadata feature, incremental backups, dump, snapshots and
/// stats, damage found by check --read-data, forget and prune, copy, key
/// management and the mount. Chosen to cover every command and keep the three extra runs
/// within a few minutes.
pub const CORE: &[&str] = &[
    "roundtrip::full_fixture_backup_and_restore_preserve_everything",
    "roundtrip::full_fixture_dump_extracts_equal_with_gnu_tar",
    "incremental::unchanged_backup_adds_almost_nothing_and_changes_are_detected",
    "snapshots::snapshots_json_fields_and_tag_selection",
    "snapshots::stats_show_dedup_after_identical_backups",
    "integrity::flipped_byte_in_pack_is_found_by_read_data_check",
    "prune::prune_frees_forgotten_data_and_keeps_snapshots_restorable",
    "prune::forget_with_prune_and_its_dry_run",
    "protocol::copy_from_the_frozen_v1_repository_restores_identical",
    "mount::mount_shows_every_file_type_and_cp_a_reproduces_it",
    "keys::key_add_list_passwd_remove",
    "remote::remote_repository_commands_and_urls",
];

pub const S3_KEY: &str = "GK0123456789abcdef01234567";
pub const S3_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    S3,
    Sftp,
    WebDav,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::S3 => "s3",
            Backend::Sftp => "sftp",
            Backend::WebDav => "webdav",
        }
    }
}

/// The backend this run of the suite uses (ARC_TEST_BACKEND), if remote.
pub fn current() -> Option<Backend> {
    match std::env::var("ARC_TEST_BACKEND").ok()?.as_str() {
        "s3" => Some(Backend::S3),
        "sftp" => Some(Backend::Sftp),
        "webdav" => Some(Backend::WebDav),
        _ => None,
    }
}

fn tool_cache() -> PathBuf {
    match std::env::var_os("ARC_TOOL_CACHE") {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/arc-tools"),
    }
}

pub fn s3s_fs_bin() -> PathBuf {
    tool_cache().join("s3s-fs-0.14.1/bin/s3s-fs")
}

/// What a backend's server needs from the machine.
pub fn needs(b: Backend) -> Vec<Need> {
    match b {
        Backend::S3 => vec![Need::File(
            s3s_fs_bin(),
            "s3s-fs 0.14.1 is not in the tool cache (./test.sh installs it: cargo install s3s-fs --version 0.14.1 --features binary --locked --root $ARC_TOOL_CACHE/s3s-fs-0.14.1)",
        )],
        Backend::Sftp => vec![Need::Root, Need::Program("sshd", "openssh-server"), Need::Program("ssh", "openssh-client")],
        Backend::WebDav => vec![Need::Program("wsgidav", "pip install wsgidav cheroot")],
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// A server process for one TestEnv: killed and reaped on drop.
pub struct Server {
    child: Child,
    /// `--repo` for the TestEnv's repository.
    pub url: String,
    /// Variables every `arc` run needs to reach it.
    pub env: Vec<(String, String)>,
    log: PathBuf,
    /// The program and arguments it was started with, to start it again.
    argv: Vec<std::ffi::OsString>,
    pub port: u16,
    /// Its state directory (keys and configs of the SFTP server).
    pub state: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Stops the server (SIGKILL, reaped): its port refuses connections
    /// until [`Server::start_again`]. Connections it accepted are not cut
    /// (sshd's session processes live on).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the stopped server again on its port, with its state and
    /// configuration, and waits until it listens; its log goes on.
    pub fn start_again(&mut self) {
        let out = std::fs::OpenOptions::new().append(true).open(&self.log).expect("server log");
        let err = out.try_clone().expect("server log");
        self.child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", self.argv));
        self.wait_until_ready();
    }

    /// What the server has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(mut self, port: u16) -> Server {
        assert_eq!(port, self.port);
        self.wait_until_ready();
        self
    }

    /// Waits (bounded) until the port accepts connections.
    fn wait_until_ready(&mut self) {
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the test server exited ({status}) before it listened on {port}:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "the test server did not listen on port {port} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Starts `cmd` with its output in `log`; returns it and its argv.
fn spawn(cmd: &mut Command, log: &Path) -> (Child, Vec<std::ffi::OsString>) {
    let out = std::fs::File::create(log).expect("server log");
    let err = out.try_clone().expect("server log");
    let argv = std::iter::once(cmd.get_program().to_owned()).chain(cmd.get_args().map(|a| a.to_owned())).collect();
    let child =
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    (child, argv)
}

/// Starts `b`'s server for a TestEnv whose files are under `root`, its
/// repository at `repo` (`root/repo`), which it creates (an S3 bucket is
/// a directory of the server's root; SFTP and WebDAV servers create the
/// directory themselves, but an empty one is harmless).
/// A new ed25519 key pair without a passphrase: `path` and `path.pub`.
pub fn ssh_keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn start(b: Backend, root: &Path, repo: &Path) -> Server {
    start_keyed(b, root, repo, (S3_KEY, S3_SECRET))
}

/// [`start`], an S3 server taking only the access key `keys` (two
/// providers with different credentials); other servers ignore `keys`.
pub fn start_keyed(b: Backend, root: &Path, repo: &Path, keys: (&str, &str)) -> Server {
    std::fs::create_dir_all(repo).unwrap();
    let state = root.join(format!(".{}-server", b.name()));
    std::fs::create_dir_all(&state).unwrap();
    let log = state.join("log");
    let port = free_port();
    let repo_name = repo.file_name().unwrap().to_str().unwrap();
    match b {
        Backend::S3 => {
            let (child, argv) = spawn(
                Command::new(s3s_fs_bin())
                    .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", keys.0])
                    .args(["--secret-key", keys.1])
                    .arg(root),
                &log,
            );
            Server {
                child,
                // The bucket is the repository directory's name.
                url: format!("s3:http://127.0.0.1:{port}/{repo_name}"),
                env: vec![
                    ("AWS_ACCESS_KEY_ID".into(), keys.0.into()),
                    ("AWS_SECRET_ACCESS_KEY".into(), keys.1.into()),
                    ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
                ],
                log,
                argv,
                port,
                state,
            }
            .wait_ready(port)
        }
        Backend::Sftp => {
            ssh_keygen(&state.join("host_key"));
            ssh_keygen(&state.join("client_key"));
            std::fs::copy(state.join("client_key.pub"), state.join("authorized_keys")).unwrap();
            // The privilege separation directory, normally made at boot.
            std::fs::create_dir_all("/run/sshd").unwrap();
            let s = state.display();
            std::fs::write(
                state.join("sshd_config"),
                format!(
                    "ListenAddress 127.0.0.1:{port}\nHostKey {s}/host_key\nAuthorizedKeysFile {s}/authorized_keys\n\
                     PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     UsePAM no\nStrictModes no\nPidFile {s}/sshd.pid\nSubsystem sftp internal-sftp\n"
                ),
            )
            .unwrap();
            let host_pub = std::fs::read_to_string(state.join("host_key.pub")).unwrap();
            let mut fields = host_pub.split_whitespace();
            let (kt, key) = (fields.next().unwrap(), fields.next().unwrap());
            std::fs::write(state.join("known_hosts"), format!("[127.0.0.1]:{port} {kt} {key}\n")).unwrap();
            // arc's ssh: this known_hosts only, strict checking (the host key
            // is known in advance, as an administrator would arrange).
            std::fs::write(
                state.join("ssh_config"),
                format!(
                    "Host *\n  UserKnownHostsFile {s}/known_hosts\n  GlobalKnownHostsFile /dev/null\n  \
                     StrictHostKeyChecking yes\n  IdentityAgent none\n"
                ),
            )
            .unwrap();
            let sshd = find_program("sshd").expect("sshd");
            let (child, argv) = spawn(Command::new(sshd).args(["-D", "-e", "-f"]).arg(state.join("sshd_config")), &log);
            Server {
                child,
                url: format!("sftp://root@127.0.0.1:{port}{}", repo.display()),
                env: vec![
                    ("ARC_SFTP_KEY".into(), state.join("client_key").display().to_string()),
                    ("ARC_SSH_CONFIG".into(), state.join("ssh_config").display().to_string()),
                ],
                log,
                argv,
                port,
                state,
            }
            .wait_ready(port)
        }
        Backend::WebDav => {
            let wsgidav = find_program("wsgidav").expect("wsgidav");
            let (child, argv) = spawn(
                Command::new(wsgidav)
                    .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--auth", "anonymous", "-q", "--root"])
                    .arg(root),
                &log,
            );
            Server {
                child,
                url: format!("webdav:http://127.0.0.1:{port}/{repo_name}"),
                env: Vec::new(),
                log,
                argv,
                port,
                state,
            }
            .wait_ready(port)
        }
    }
}

/// Runs the CORE tests of this test binary once more with
/// ARC_TEST_BACKEND=`b` and asserts they pass.
fn run_core_on(b: Backend) {
    if std::env::var_os("ARC_TEST_BACKEND").is_some() || std::env::var_os("ARC_TEST_ENCRYPTION").is_some() {
        // Already one run of a matrix: do not recurse.
        return;
    }
    if !requirements_met(&needs(b)) {
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .env("ARC_TEST_BACKEND", b.name())
        .args(["--exact", "--test-threads", "2"])
        .args(CORE)
        .output()
        .expect("run the core suite on a remote backend");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("FAILED") || l.starts_with("test result") || l.contains("panicked"))
        .collect();
    let ran = stdout.lines().filter(|l| l.starts_with("test ") && l.ends_with(" ok")).count();
    assert!(
        out.status.success() && ran == CORE.len(),
        "the core suite on {} ran {ran} of {} tests:\n{}\n{}\n{}",
        b.name(),
        CORE.len(),
        lines.join("\n"),
        stdout.lines().rev().take(80).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("{}: {}", b.name(), lines.join("; "));
}

#[test]
fn suite_on_s3() {
    run_core_on(Backend::S3);
}

#[test]
fn suite_on_sftp() {
    run_core_on(Backend::Sftp);
}

#[test]
fn suite_on_webdav() {
    run_core_on(Backend::WebDav);
}
