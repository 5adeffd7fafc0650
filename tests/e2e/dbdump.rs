//! Database dumps from real servers: MariaDB (`mysqldump`), PostgreSQL
//! (`pg_dump`) and Redis (`redis-cli --rdb -`), started by hand in temporary
//! directories on unix sockets only (no TCP port, so parallel runs cannot
//! clash). Each test dumps day 1 through arc, changes a small part of the
//! data, dumps day 2, restores each day's dump into a fresh database with the
//! standard client and compares every table, ordered by id, with the source
//! as it was when that day was dumped.
//!
//! The servers are not optional under CI (./test.sh installs them): a
//! missing one fails the test there, and is reported as a skip elsewhere.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::command_stream::{assert_check_ok, assert_state_unchanged, error_line, exact_state};
use crate::util::*;

const INSTALL_HINT: &str = "./test.sh installs mariadb-server, postgresql, redis-server and redis-tools";

fn mariadb() -> [Need; 2] {
    [Need::Program("mariadbd", "mariadb-server"), Need::Program("mysqldump", "mariadb-client")]
}

fn redis() -> [Need; 2] {
    [Need::Program("redis-server", "redis-server"), Need::Program("redis-cli", "redis-tools")]
}

/// A program the test cannot do without (checked by `require!` first).
fn need(program: &str) -> PathBuf {
    find_program(program).unwrap_or_else(|| panic!("`{program}` is not installed: {INSTALL_HINT}"))
}

/// A PostgreSQL server program: the newest version under /usr/lib/postgresql.
fn pg_bin(program: &str) -> PathBuf {
    let p = postgres_bin_dir().map(|d| d.join(program)).filter(|p| p.is_file());
    p.unwrap_or_else(|| panic!("no /usr/lib/postgresql/*/bin/{program}: {INSTALL_HINT}"))
}

// ---------------------------------------------------------------------------
// Server processes
// ---------------------------------------------------------------------------

/// A server started by the test; stopped (then killed) when dropped, so it
/// ends with the test however the test ends.
struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
    stop_signal: i32,
}

impl Server {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Server {
        let out = fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().unwrap();
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe. If the test process dies
        // without unwinding (SIGKILL by a timeout), the kernel kills the
        // server too. It runs after any uid change, which would clear it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e} ({INSTALL_HINT})"));
        Server { name, child, log, stop_signal: libc::SIGTERM }
    }

    /// Polls `ready` until it holds; fails with the server's log if the
    /// server exits or is not ready within a minute.
    fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ready() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status} while starting; log:\n{}", self.name, self.log_tail());
            }
            assert!(Instant::now() < deadline, "{} not ready within 60 s; log:\n{}", self.name, self.log_tail());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(self.child.id() as i32, self.stop_signal) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a client program to completion and returns its stdout.
#[track_caller]
fn client(program: &Path, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    TestCommand::new(program)
        .args(args)
        .stdin_bytes(stdin.to_vec())
        .timeout(Duration::from_secs(120))
        .run()
        .success()
        .stdout
}

// ---------------------------------------------------------------------------
// MariaDB
// ---------------------------------------------------------------------------

pub(crate) struct Mariadb {
    /// The server's socket.
    pub(crate) sock: PathBuf,
    client: PathBuf,
    dump: PathBuf,
    _server: Server,
}

const MARIADB_TABLES: [&str; 3] = ["customers", "orders", "attachments"];

impl Mariadb {
    /// A server on `dir/data`: a new instance (mariadb-install-db), or the
    /// data directory already there (a restored physical backup).
    pub(crate) fn start(dir: &Path) -> Mariadb {
        let (install, server) = (need("mariadb-install-db"), need("mariadbd"));
        let (client, dump) = (need("mariadb"), need("mysqldump"));
        fs::create_dir_all(dir).unwrap();
        let data = dir.join("data");
        let user: &[&str] = if is_root() { &["--user=root"] } else { &[] };
        // root without a password, over the socket only: works for any OS
        // user running the tests.
        // Its own temporary directory: servers bootstrapping at the same
        // time in one /tmp collide on temporary table names.
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        // A data directory already there is a restored physical backup.
        if !data.exists() {
            TestCommand::new(install)
                .env("TMPDIR", &tmp)
                .args(["--no-defaults", "--auth-root-authentication-method=normal", "--skip-test-db"])
                .args(user)
                .arg(format!("--datadir={}", data.display()))
                .timeout(Duration::from_secs(120))
                .run()
                .success();
        }
        let sock = dir.join("sock");
        let mut cmd = Command::new(server);
        cmd.arg("--no-defaults")
            .args(user)
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args(["--skip-networking", "--skip-log-bin", "--innodb-buffer-pool-size=64M"])
            .args(["--innodb-log-file-size=16M", "--innodb-flush-log-at-trx-commit=0"]);
        let mut server = Server::spawn("mariadbd", cmd, dir.join("server.log"));
        let ping = need("mariadb-admin");
        server.wait_ready(|| {
            Command::new(&ping)
                .args(["--no-defaults", "-uroot", "ping"])
                .arg(format!("--socket={}", sock.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        Mariadb { sock, client, dump, _server: server }
    }

    pub(crate) fn sql(&self, db: &str, sql: &str) -> Vec<u8> {
        let sock = format!("--socket={}", self.sock.display());
        client(&self.client, &["--no-defaults", &sock, "-uroot", "--batch", "--skip-column-names", db], sql.as_bytes())
    }

    /// The dump command line: no shell characters, so arc runs it directly.
    fn dump_cmdline(&self, db: &str) -> String {
        format!(
            "{} --no-defaults --socket={} -uroot --single-transaction --skip-dump-date {db}",
            self.dump.display(),
            self.sock.display()
        )
    }

    /// Every table's rows ordered by id, as the client prints them in batch
    /// mode (binary bytes escaped, so nothing is lost).
    fn contents(&self, db: &str) -> Vec<(String, Vec<u8>)> {
        MARIADB_TABLES
            .iter()
            .map(|t| (t.to_string(), self.sql(db, &format!("SELECT * FROM {t} ORDER BY id"))))
            .collect()
    }

    /// ~15 MB of dump: 30 000 customers, 120 000 orders and 10 000
    /// attachments, with binary columns holding every byte value that SQL
    /// escaping cares about (NUL, quote, backslash, newline, CR, ^Z).
    fn fill(&self, db: &str) {
        self.sql(
            "mysql",
            &format!(
                "CREATE DATABASE {db}; USE {db};
                 CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(64), email VARCHAR(128), created DATETIME,
                                         avatar VARBINARY(255));
                 CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, amount DECIMAL(10,2), status VARCHAR(16),
                                      note TEXT, KEY(customer_id));
                 CREATE TABLE attachments (id INT PRIMARY KEY, order_id INT, payload BLOB);
                 INSERT INTO customers SELECT seq, CONCAT('user', seq), CONCAT('u', seq, '@example.com'),
                     '2024-01-01' + INTERVAL seq MINUTE, UNHEX(SHA2(seq, 512)) FROM seq_1_to_30000;
                 INSERT INTO orders SELECT seq, 1 + seq % 30000, (seq * 7919 % 1000000) / 100,
                     ELT(1 + seq % 3, 'new', 'paid', 'shipped'), REPEAT(CONCAT('note ', seq, ' '), 1 + seq % 7)
                     FROM seq_1_to_120000;
                 INSERT INTO attachments SELECT seq, 1 + seq * 3 % 120000,
                     CONCAT(UNHEX(SHA2(seq, 512)), UNHEX(SHA2(seq + 1000000, 512)), UNHEX(SHA2(seq + 2000000, 512)),
                            CHAR(0, 39, 92, 10, 13, 26)) FROM seq_1_to_10000;"
            ),
        );
    }

    /// A day of business: about 1 % of the rows change, mostly recent ones.
    fn change(&self, db: &str) {
        self.sql(
            db,
            "UPDATE orders SET status = 'shipped', note = CONCAT(note, 'shipped ') WHERE id > 119400;
             INSERT INTO orders SELECT 120000 + seq, 1 + seq % 30000, seq / 100, 'new', CONCAT('late order ', seq)
                 FROM seq_1_to_500;
             UPDATE customers SET email = CONCAT('moved', id, '@example.org') WHERE id % 6000 = 17;
             DELETE FROM attachments WHERE id BETWEEN 5000 AND 5019;
             INSERT INTO attachments SELECT 10000 + seq, seq, CONCAT(UNHEX(SHA2(CONCAT('day2-', seq), 512)), CHAR(0))
                 FROM seq_1_to_100;",
        );
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

pub(crate) struct Postgres {
    pub(crate) sockdir: PathBuf,
    psql: PathBuf,
    dump: PathBuf,
    /// `--restrict-key` (pg_dump >= 15.14 and 16.10...) replaces a random key
    /// in plain dumps; without it two dumps of the same data differ.
    restrict_key: bool,
    _server: Server,
}

const PG_TABLES: [&str; 3] = ["users", "events", "files"];

/// The uid and gid of `postgres`, which the server must run as when the
/// tests run as root (it refuses root).
fn postgres_ids() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns a pointer to static storage or null; it is
    // read at once, and tests do not call it concurrently with itself
    // on another user.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "no `postgres` user: {INSTALL_HINT}");
    // SAFETY: checked non-null above.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    if fs::symlink_metadata(path).unwrap().is_dir() {
        for e in fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

impl Postgres {
    /// A server on `dir/data`: a new cluster (initdb), or the data
    /// directory already there (a restored physical backup).
    pub(crate) fn start(dir: &Path) -> Postgres {
        let (initdb, postgres) = (pg_bin("initdb"), pg_bin("postgres"));
        let (psql, dump, ready) = (pg_bin("psql"), pg_bin("pg_dump"), pg_bin("pg_isready"));
        fs::create_dir_all(dir).unwrap();
        let ids = is_root().then(postgres_ids);
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap();
            // The server's user must reach its directory inside ours.
            let mut d = dir.parent();
            while let Some(p) = d {
                if p.starts_with(std::env::temp_dir()) && p != std::env::temp_dir() {
                    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
                }
                d = p.parent();
            }
        }
        let as_server_user = |cmd: &mut Command| {
            if let Some((uid, gid)) = ids {
                cmd.uid(uid).gid(gid);
            }
        };
        let data = dir.join("data");
        if data.exists() {
            // A data directory given to us (restored from a physical
            // backup): the server's user owns it, and only that user may
            // read it, or PostgreSQL refuses to start.
            if let Some((uid, gid)) = ids {
                chown_tree(&data, uid, gid);
            }
            fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
        } else {
            let mut init = Command::new(initdb);
            init.arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ]);
            as_server_user(&mut init);
            let out = init.output().unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
            assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }

        let mut cmd = Command::new(postgres);
        cmd.arg("-D").arg(&data).arg("-k").arg(dir);
        for setting in ["listen_addresses=", "fsync=off", "full_page_writes=off", "synchronous_commit=off"] {
            cmd.args(["-c", setting]);
        }
        as_server_user(&mut cmd);
        let mut server = Server::spawn("postgres", cmd, dir.join("server.log"));
        // SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for clients).
        server.stop_signal = libc::SIGINT;
        server.wait_ready(|| Command::new(&ready).arg("-q").arg("-h").arg(dir).status().is_ok_and(|s| s.success()));
        let help = Command::new(&dump).arg("--help").output().map(|o| o.stdout).unwrap_or_default();
        let restrict_key = String::from_utf8_lossy(&help).contains("--restrict-key");
        Postgres { sockdir: dir.to_path_buf(), psql, dump, restrict_key, _server: server }
    }

    pub(crate) fn sql(&self, db: &str, sql: &str) -> Vec<u8> {
        let host = self.sockdir.display().to_string();
        client(
            &self.psql,
            &["-h", &host, "-U", "postgres", "-d", db, "-qAt", "-v", "ON_ERROR_STOP=1", "-f", "-"],
            sql.as_bytes(),
        )
    }

    fn dump_args(&self, db: &str) -> Vec<String> {
        let mut args = vec!["-h".to_string(), self.sockdir.display().to_string(), "-U".into(), "postgres".into()];
        if self.restrict_key {
            args.push("--restrict-key=arctest".into());
        }
        args.push(db.into());
        args
    }

    fn dump_cmdline(&self, db: &str) -> String {
        format!("{} {}", self.dump.display(), self.dump_args(db).join(" "))
    }

    /// Every table's rows ordered by id, in COPY's text format (bytea as hex).
    fn contents(&self, db: &str) -> Vec<(String, Vec<u8>)> {
        PG_TABLES
            .iter()
            .map(|t| (t.to_string(), self.sql(db, &format!("COPY (SELECT * FROM {t} ORDER BY id) TO STDOUT;"))))
            .collect()
    }

    /// ~14 MB of dump: 30 000 users, 100 000 events (jsonb), 10 000 files
    /// (bytea with NUL, quote, backslash, newline, CR, ^Z).
    fn fill(&self, db: &str) {
        self.sql("postgres", &format!("CREATE DATABASE {db};"));
        self.sql(
            db,
            "CREATE TABLE users (id int PRIMARY KEY, name text, email text, created timestamptz, key bytea);
             CREATE TABLE events (id bigint PRIMARY KEY, user_id int REFERENCES users(id), kind text,
                                  amount numeric(12,2), payload jsonb);
             CREATE TABLE files (id int PRIMARY KEY, name text, data bytea);
             INSERT INTO users SELECT g, 'user' || g, 'u' || g || '@example.com',
                 '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute', sha512(g::text::bytea)
                 FROM generate_series(1, 30000) g;
             INSERT INTO events SELECT g, 1 + g % 30000, (ARRAY['login','buy','refund'])[1 + g % 3],
                 (g * 7919 % 1000000) / 100.0, jsonb_build_object('n', g, 'tag', repeat('t', g % 13))
                 FROM generate_series(1, 100000) g;
             INSERT INTO files SELECT g, 'file' || g || '.bin',
                 sha512(g::text::bytea) || sha512((g + 1000000)::text::bytea) || '\\x00275c0a0d1a'::bytea
                 FROM generate_series(1, 10000) g;",
        );
    }

    fn change(&self, db: &str) {
        self.sql(
            db,
            "UPDATE events SET kind = 'settled', amount = amount + 1 WHERE id > 99500;
             INSERT INTO events SELECT 100000 + g, g, 'login', 0, '{}' FROM generate_series(1, 500) g;
             UPDATE users SET email = 'moved' || id || '@example.org' WHERE id % 6000 = 17;
             DELETE FROM files WHERE id BETWEEN 5000 AND 5019;
             INSERT INTO files SELECT 10000 + g, 'new' || g, sha512(('day2-' || g)::bytea) FROM generate_series(1, 100) g;",
        );
    }
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

pub(crate) struct Redis {
    pub(crate) sock: PathBuf,
    cli: PathBuf,
    _server: Server,
}

impl Redis {
    /// A server in `dir`; it loads `dir/dump.rdb` if that exists.
    pub(crate) fn start(dir: &Path) -> Redis {
        let (server, cli) = (need("redis-server"), need("redis-cli"));
        fs::create_dir_all(dir).unwrap();
        let sock = dir.join("sock");
        let mut cmd = Command::new(server);
        cmd.args(["--port", "0", "--unixsocket"]).arg(&sock).args(["--unixsocketperm", "700", "--dir"]).arg(dir);
        // No saving, and no 5 s wait for more replicas before `--rdb`.
        cmd.args(["--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0"]);
        cmd.args(["--enable-debug-command", "local", "--daemonize", "no"]);
        let mut server = Server::spawn("redis-server", cmd, dir.join("server.log"));
        server.wait_ready(|| {
            Command::new(&cli).arg("-s").arg(&sock).arg("ping").output().is_ok_and(|o| o.stdout.starts_with(b"PONG"))
        });
        Redis { sock, cli, _server: server }
    }

    fn cli(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let sock = self.sock.display().to_string();
        let mut all = vec!["-s", &sock];
        all.extend_from_slice(args);
        client(&self.cli, &all, stdin)
    }

    fn rdb_cmdline(&self) -> String {
        format!("{} -s {} --rdb -", self.cli.display(), self.sock.display())
    }

    /// Sends commands in the Redis protocol (binary safe) through `--pipe`.
    fn pipe(&self, commands: &[Vec<Vec<u8>>]) {
        let mut proto = Vec::new();
        for c in commands {
            proto.extend_from_slice(format!("*{}\r\n", c.len()).as_bytes());
            for a in c {
                proto.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                proto.extend_from_slice(a);
                proto.extend_from_slice(b"\r\n");
            }
        }
        let out = self.cli(&["--pipe"], &proto);
        assert!(String::from_utf8_lossy(&out).contains("errors: 0"), "{}", String::from_utf8_lossy(&out));
    }

    /// 20 000 string keys with binary values, a hash and a list.
    pub(crate) fn fill(&self) {
        let mut rng = Rng::new(0x4ED15);
        let mut cmds: Vec<Vec<Vec<u8>>> = (0..20_000)
            .map(|i| vec![b"SET".to_vec(), format!("session:{i}").into_bytes(), rng.bytes(40 + (i % 60))])
            .collect();
        for i in 0..2000 {
            cmds.push(vec![b"HSET".to_vec(), b"prices".to_vec(), format!("sku{i}").into_bytes(), rng.bytes(8)]);
            cmds.push(vec![b"RPUSH".to_vec(), b"queue".to_vec(), format!("job {i}\0\r\n").into_bytes()]);
        }
        self.pipe(&cmds);
    }

    fn change(&self) {
        let mut rng = Rng::new(0xDA72);
        let mut cmds: Vec<Vec<Vec<u8>>> = (0..200)
            .map(|i| vec![b"SET".to_vec(), format!("session:{}", i * 97).into_bytes(), rng.bytes(50)])
            .collect();
        cmds.extend((0..50).map(|i| vec![b"DEL".to_vec(), format!("session:{}", 10_000 + i).into_bytes()]));
        cmds.push(vec![b"LPOP".to_vec(), b"queue".to_vec()]);
        self.pipe(&cmds);
    }

    /// Key count and the server's digest of the whole data set.
    fn state(&self) -> (String, String) {
        let size = String::from_utf8_lossy(&self.cli(&["DBSIZE"], b"")).trim().to_string();
        let digest = String::from_utf8_lossy(&self.cli(&["DEBUG", "DIGEST"], b"")).trim().to_string();
        assert!(digest.len() == 40 && digest != "0".repeat(40), "unexpected DEBUG DIGEST answer {digest:?}");
        (size, digest)
    }
}

// ---------------------------------------------------------------------------
// Helpers around arc
// ---------------------------------------------------------------------------

/// `arc --repo REPO` as a plain Command, with the test environment, for
/// pipes between processes.
fn arc_command(env: &TestEnv) -> Command {
    let mut c = Command::new(arc_bin());
    c.env("HOME", &env.home)
        .env("XDG_DATA_HOME", env.home.join(".local/share"))
        .env("XDG_CACHE_HOME", env.home.join(".cache"))
        .env("XDG_CONFIG_HOME", env.home.join(".config"))
        .env_remove("ARC_REPO")
        .env("ARC_PASSWORD", TEST_PASSWORD)
        .arg("--repo")
        .arg(&env.repo);
    c
}

/// `arc cat SPEC | CLIENT...`, both checked.
#[track_caller]
fn restore_through_pipe(env: &TestEnv, spec: &str, client: &Path, args: &[&str]) {
    let mut cat = arc_command(env)
        .args(["cat", spec])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start arc cat");
    let out = Command::new(client)
        .args(args)
        .stdin(cat.stdout.take().expect("piped"))
        .output()
        .unwrap_or_else(|e| panic!("start {}: {e}", client.display()));
    let cat = cat.wait_with_output().expect("wait for arc cat");
    assert!(cat.status.success(), "arc cat {spec} failed: {}", String::from_utf8_lossy(&cat.stderr));
    assert!(
        out.status.success(),
        "`arc cat {spec} | {} {}` failed: {}",
        client.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `PRODUCER | arc --json backup --stdin ARGS`: returns arc's output.
fn backup_from_pipe(env: &TestEnv, producer: &Path, producer_args: &[String], args: &[&str]) -> (bool, Output) {
    let mut p = Command::new(producer)
        .args(producer_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", producer.display()));
    let out = arc_command(env)
        .args(["--json", "backup", "--stdin"])
        .args(args)
        .stdin(p.stdout.take().expect("piped"))
        .output()
        .expect("run arc backup");
    let producer_ok = p.wait().expect("wait for producer").success();
    let output = Output {
        cmdline: format!("{} | arc backup --stdin", producer.display()),
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
    };
    (producer_ok, output)
}

#[track_caller]
fn assert_tables_equal(expected: &[(String, Vec<u8>)], actual: &[(String, Vec<u8>)], what: &str) {
    for ((table, want), (_, got)) in expected.iter().zip(actual) {
        assert!(!want.is_empty(), "{what}: table {table} is empty at the source");
        let rows = |v: &[u8]| v.iter().filter(|&&b| b == b'\n').count();
        assert!(
            want == got,
            "{what}: table {table} differs from the source ({} rows expected, {} restored)",
            rows(want),
            rows(got)
        );
    }
}

fn snapshot_id(b: &Value) -> String {
    jstr(b, "snapshot_id").to_string()
}

/// Day 2's new chunks (uncompressed) are at most `max_share` of day 1's:
/// the dumps were deduplicated (without dedup the share is ~1).
#[track_caller]
fn assert_day2_small(day1: &Value, day2: &Value, what: &str, max_share: f64) {
    let (a1, a2) = (ju64(day1, "summary.bytes_added"), ju64(day2, "summary.bytes_added"));
    eprintln!("{what}: day 1 added {a1} bytes, day 2 added {a2} bytes");
    assert!(
        a1 > 0 && (a2 as f64) < a1 as f64 * max_share,
        "{what}: day 2 added {a2} bytes against {a1} for day 1 (more than {max_share}): the dumps were not \
         deduplicated"
    );
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn mariadb_dumps_via_stdin_from_command_restore_day_by_day() {
    if !requirements_met(&mariadb()) {
        return;
    }
    let env = TestEnv::new();
    let db = Mariadb::start(&env.path("mariadb"));
    db.fill("shop");
    env.init();
    let dump = db.dump_cmdline("shop");
    let name = "mysql/shop.sql";

    let day1_tables = db.contents("shop");
    let day1 = env.backup(["--stdin-from-command", &dump, "--stdin-name", name, "--tag", "daily"]);
    assert_eq!(day1["paths"], serde_json::json!(["/mysql/shop.sql"]), "{day1:#}");
    assert!(ju64(&day1, "summary.bytes_read") > 10_000_000, "dump smaller than expected: {day1:#}");

    // A dump that breaks off half way: what a lost connection looks like.
    let broken = format!(
        "{dump} | head -c 3000000; echo 'mysqldump: Error 2013: Lost connection to server during query' >&2; exit 2"
    );
    let out = env.arc().args(["backup", "--stdin-from-command", &broken, "--stdin-name", name]).run().failure();
    let line = error_line(&out);
    for needle in [name, "exited with status 2", "Lost connection to server during query", "head -c 3000000"] {
        assert!(line.contains(needle), "error lacks {needle:?}: {line}");
    }
    // A dump killed half way.
    let killed = format!("{dump} | head -c 5000000; kill -9 $$");
    let out = env.arc().args(["backup", "--stdin-from-command", &killed, "--stdin-name", name]).run().failure();
    assert!(error_line(&out).contains("killed by signal 9"), "{}", out.describe());
    assert_eq!(env.snapshots_json().len(), 1, "a failed dump became a snapshot");
    assert_check_ok(&env);

    // A dump program that does not exist: the repository is not touched.
    let before = exact_state(&env.repo);
    let out = env.arc().args(["backup", "--stdin-from-command", "mysqldumpx shop", "--stdin-name", name]).run();
    assert_eq!(out.failure().one_line_error(), "arc: error: cannot run 'mysqldumpx': No such file or directory");
    assert_state_unchanged(&before, &env.repo, "backup with a missing dump program");

    db.change("shop");
    let day2_tables = db.contents("shop");
    assert_ne!(day1_tables, day2_tables);
    let day2 = env.backup(["--stdin-from-command", &dump, "--stdin-name", name, "--tag", "daily"]);
    assert_day2_small(&day1, &day2, "mysqldump", 1.0 / 3.0);

    let sock = format!("--socket={}", db.sock.display());
    for (day, b, tables) in [(1, &day1, &day1_tables), (2, &day2, &day2_tables)] {
        let fresh = format!("restored_day{day}");
        db.sql("mysql", &format!("CREATE DATABASE {fresh}"));
        let spec = format!("{}:{name}", snapshot_id(b));
        restore_through_pipe(&env, &spec, &db.client, &["--no-defaults", &sock, "-uroot", &fresh]);
        assert_tables_equal(tables, &db.contents(&fresh), &format!("MariaDB day {day}"));
    }
    assert_check_ok(&env);
}

#[test]
fn postgres_dumps_piped_into_stdin_restore_day_by_day() {
    require!(Need::Postgres);
    let env = TestEnv::new();
    let db = Postgres::start(&env.path("pg"));
    db.fill("app");
    env.init();
    let name = "pg/app.sql";

    let day1_tables = db.contents("app");
    let (ok, out) = backup_from_pipe(&env, &db.dump, &db.dump_args("app"), &["--stdin-name", name]);
    assert!(ok, "pg_dump failed");
    let day1 = out.success().json();
    assert!(ju64(&day1, "summary.bytes_read") > 10_000_000, "dump smaller than expected: {day1:#}");

    // With a plain pipe arc cannot see the dumper's exit status; a dump
    // that fails before writing anything is caught as an empty stream.
    let (ok, out) = backup_from_pipe(&env, &db.dump, &db.dump_args("no_such_db"), &["--stdin-name", name]);
    assert!(!ok, "pg_dump of a missing database succeeded");
    assert!(out.failure().one_line_error().contains("the stream is empty"));
    // Through --stdin-from-command the status and pg_dump's words show.
    let cmd = db.dump_cmdline("no_such_db");
    let out = env.arc().args(["backup", "--stdin-from-command", &cmd, "--stdin-name", name]).run().failure();
    let line = error_line(&out);
    assert!(line.contains("exited with status 1") && line.contains("no_such_db\" does not exist"), "{line}");
    assert_eq!(env.snapshots_json().len(), 1, "a failed dump became a snapshot");

    db.change("app");
    let day2_tables = db.contents("app");
    assert_ne!(day1_tables, day2_tables);
    let (ok, out) = backup_from_pipe(&env, &db.dump, &db.dump_args("app"), &["--stdin-name", name]);
    assert!(ok, "pg_dump failed");
    let day2 = out.success().json();
    // Why 1/2: change() touches 9 places of the ~14 MB dump (5 updated
    // users, the end of users where PostgreSQL moves them, the updated and
    // appended tail of events, the deleted files, the end of files). Each
    // makes new the stream chunk holding it and, when the edit changes that
    // chunk's length, sometimes the next one (FastCDC's mask switches at a
    // distance from the chunk's start): 11 to 15 of ~47 chunks. Which
    // bytes those chunks span depends on the repository's secret chunker
    // key, and a place falls in a large chunk more often than in a small
    // one: over 13 repositories day 2's new chunks were 0.21 to 0.34 of day
    // 1 (mean 0.28, sd 0.042; one of the 13 above the former bound of 1/3).
    // 1/2 is 5 sd above the mean and still far from the 1.0 of a dump that
    // did not deduplicate.
    assert_day2_small(&day1, &day2, "pg_dump", 0.5);
    // Stored, with stream deltas (format-spec/v2/streams.md section 4):
    // each new chunk is a delta against day 1's chunk at its place, a few
    // KB for a few changed rows, whatever the chunk's size: over 12 of
    // those repositories day 2 stored 0.4 % of day 1 (20 KB of 5 MB), at most
    // 3.9 % (196 KB, in one of the 12). 10 % leaves room for about three
    // chunks stored plainly and still fails if no delta is written (~27 %).
    let (s1, s2) = (ju64(&day1, "summary.bytes_added_stored"), ju64(&day2, "summary.bytes_added_stored"));
    assert!(s2 * 10 < s1, "pg_dump: day 2 stored {s2} bytes against {s1} for day 1: no stream deltas?");

    let host = db.sockdir.display().to_string();
    for (day, b, tables) in [(1, &day1, &day1_tables), (2, &day2, &day2_tables)] {
        let fresh = format!("restored_day{day}");
        db.sql("postgres", &format!("CREATE DATABASE {fresh};"));
        let spec = format!("{}:{name}", snapshot_id(b));
        let args = ["-h", &host, "-U", "postgres", "-d", &fresh, "-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null"];
        restore_through_pipe(&env, &spec, &db.psql, &args);
        assert_tables_equal(tables, &db.contents(&fresh), &format!("PostgreSQL day {day}"));
    }
    assert_check_ok(&env);
}

/// What one day's combined snapshot must restore to.
struct Day {
    backup: Value,
    /// Where the day's snapshot was restored.
    restore: PathBuf,
    mariadb: Vec<(String, Vec<u8>)>,
    postgres: Vec<(String, Vec<u8>)>,
    redis: (String, String),
}

#[test]
fn files_and_three_databases_in_one_snapshot_per_day() {
    let [m1, m2] = mariadb();
    let [r1, r2] = redis();
    require!(m1, m2, Need::Postgres, r1, r2);
    let env = TestEnv::new();
    let (maria, pg, redis) =
        (Mariadb::start(&env.path("mariadb")), Postgres::start(&env.path("pg")), Redis::start(&env.path("redis")));
    maria.fill("shop");
    pg.fill("app");
    redis.fill();
    let www = env.path("www");
    write_random_file(&www.join("uploads/photo.jpg"), 2 * MIB, 11);
    fs::write(www.join("index.php"), "<?php echo 'shop'; ?>\n").unwrap();
    env.init();

    let mut days: Vec<Day> = Vec::new();
    for day in 1..=2 {
        if day == 2 {
            maria.change("shop");
            pg.change("app");
            redis.change();
            fs::write(www.join("index.php"), "<?php echo 'shop, day 2'; ?>\n").unwrap();
            write_random_file(&www.join("uploads/new.jpg"), 300_000, 12);
        }
        let (mariadb, postgres, redis_state) = (maria.contents("shop"), pg.contents("app"), redis.state());
        let out = env
            .arc()
            .args(["--json", "backup"])
            .arg(&www)
            .arg("--command-stream")
            .arg(format!("mysql/shop.sql={}", maria.dump_cmdline("shop")))
            .arg("--command-stream")
            .arg(format!("pg/app.sql={}", pg.dump_cmdline("app")))
            .arg("--command-stream")
            .arg(format!("redis/dump.rdb={}", redis.rdb_cmdline()))
            .args(["--tag", "daily"])
            .timeout(Duration::from_secs(120))
            .run()
            .success();
        let backup = out.json();
        let mut paths =
            vec![www.display().to_string(), "/mysql/shop.sql".into(), "/pg/app.sql".into(), "/redis/dump.rdb".into()];
        paths.sort();
        assert_eq!(backup["paths"], serde_json::json!(paths), "{backup:#}");
        // The files as they were that day, to compare the restore with.
        let restore = env.path(format!("restore-day{day}"));
        env.restore(&snapshot_id(&backup), &restore);
        assert_trees_equal(&www, &restored(&restore, &www), &CompareOpts::default());
        days.push(Day { backup, restore, mariadb, postgres, redis: redis_state });
    }
    assert_day2_small(&days[0].backup, &days[1].backup, "files and three dumps", 1.0 / 3.0);

    let sock = format!("--socket={}", maria.sock.display());
    let host = pg.sockdir.display().to_string();
    for (i, day) in days.iter().enumerate() {
        let n = i + 1;
        let snap = snapshot_id(&day.backup);
        let fresh = format!("restored_day{n}");
        maria.sql("mysql", &format!("CREATE DATABASE {fresh}"));
        restore_through_pipe(
            &env,
            &format!("{snap}:mysql/shop.sql"),
            &maria.client,
            &["--no-defaults", &sock, "-uroot", &fresh],
        );
        assert_tables_equal(&day.mariadb, &maria.contents(&fresh), &format!("MariaDB day {n}"));

        pg.sql("postgres", &format!("CREATE DATABASE {fresh};"));
        let args = ["-h", &host, "-U", "postgres", "-d", &fresh, "-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null"];
        restore_through_pipe(&env, &format!("{snap}:pg/app.sql"), &pg.psql, &args);
        assert_tables_equal(&day.postgres, &pg.contents(&fresh), &format!("PostgreSQL day {n}"));

        // The rdb from `arc restore`, loaded by a fresh server.
        let dir = env.path(format!("redis-day{n}"));
        fs::create_dir_all(&dir).unwrap();
        fs::copy(day.restore.join("redis/dump.rdb"), dir.join("dump.rdb")).unwrap();
        let fresh_redis = Redis::start(&dir);
        assert_eq!(fresh_redis.state(), day.redis, "Redis day {n}: keys or values differ from the source");
    }

    // The rdb on its own through --stdin-from-command, back through `arc cat`.
    let state = redis.state();
    let b = env.backup(["--stdin-from-command", &redis.rdb_cmdline(), "--stdin-name", "redis/alone.rdb"]);
    let dir = env.path("redis-alone");
    fs::create_dir_all(&dir).unwrap();
    let spec = format!("{}:redis/alone.rdb", snapshot_id(&b));
    env.arc().args(["cat", &spec]).stdout_to(dir.join("dump.rdb")).run().success();
    assert_eq!(Redis::start(&dir).state(), state, "Redis via --stdin-from-command: keys or values differ");
    assert_check_ok(&env);
}
