//! What a job reads: its paths and excludes, or the dump commands of its
//! databases. Database jobs ask the server which databases exist (unless
//! listed) and, for MySQL/MariaDB, which storage engines their tables use,
//! to pick one transaction (`--single-transaction`, all InnoDB: no lock)
//! or table locks (anything else: MyISAM/Aria have no transactions).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::config::{Databases, Job, Kind};

/// One dump command whose output becomes the stream `name`.
#[derive(Debug, Clone)]
pub struct Dump {
    pub name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Dump {
    /// The command line as it is run (and shown by --dry-run), quoted for sh.
    pub fn cmdline(&self) -> String {
        self.argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
    }
}

#[derive(Debug, Default)]
pub struct Plan {
    pub paths: Vec<PathBuf>,
    pub dumps: Vec<Dump>,
    /// Commands to run before the dumps, each must succeed (mysqlcheck).
    pub checks: Vec<Dump>,
    /// What the planning found out, for the log ("shop: all 3 tables
    /// InnoDB: --single-transaction").
    pub notes: Vec<String>,
}

/// Single-quotes `s` for sh when it holds anything but safe characters.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The first of `names` found on PATH (MariaDB ships `mariadb-dump`,
/// MySQL `mysqldump`; Debian's MariaDB has both).
fn program(names: &[&str]) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for n in names {
        if std::env::split_paths(&path).any(|d| d.join(n).is_file()) {
            return n.to_string();
        }
    }
    names[0].to_string()
}

/// Runs a discovery query and returns its stdout lines.
fn query(argv: &[String], env: &[(String, String)]) -> Result<Vec<String>> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("'{}' failed ({}): {}", argv.join(" "), out.status, err.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect())
}

fn password_env(job: &Job, var: &str) -> Result<Vec<(String, String)>> {
    Ok(match &job.entry.password_file {
        Some(f) => vec![(var.to_string(), crate::passphrase::read_file(f, "password-file")?.to_string())],
        None => Vec::new(),
    })
}

/// System schemas that are not data (MySQL/MariaDB).
const MYSQL_SYSTEM: &[&str] = &["information_schema", "performance_schema", "sys"];

/// The databases to dump: the listed ones, or the discovered ones minus
/// the excluded; a listed name the server lacks is an error.
fn choose(job: &Job, found: Vec<String>, system: &[&str]) -> Result<Vec<String>> {
    let ex = &job.entry.exclude_databases;
    let dbs: Vec<String> = match &job.entry.databases {
        Some(Databases::List(l)) => {
            if let Some(missing) = l.iter().find(|d| !found.contains(d)) {
                bail!("database {missing:?} is not on the server (it has: {})", found.join(", "));
            }
            l.clone()
        }
        _ => found.into_iter().filter(|d| !system.contains(&d.as_str())).collect(),
    };
    let dbs: Vec<String> = dbs.into_iter().filter(|d| !ex.contains(d)).collect();
    if let Some(bad) = dbs.iter().find(|d| d.contains('/') || d.starts_with('.')) {
        bail!("database name {bad:?} cannot be a stream name");
    }
    Ok(dbs)
}

fn mysql_conn(job: &Job) -> Vec<String> {
    let e = &job.entry;
    let mut a = Vec::new();
    // --defaults-file must come first (a MySQL client rule).
    if let Some(f) = &e.defaults_file {
        a.push(format!("--defaults-file={}", f.display()));
    }
    if let Some(s) = &e.socket {
        a.push(format!("--socket={}", s.display()));
    }
    if let Some(h) = &e.host {
        a.push(format!("--host={h}"));
    }
    if let Some(p) = e.port {
        a.push(format!("--port={p}"));
    }
    if let Some(u) = &e.user {
        a.push(format!("--user={u}"));
    }
    a
}

fn pg_conn(job: &Job) -> Vec<String> {
    let e = &job.entry;
    let mut a = Vec::new();
    // libpq takes a socket directory as the host.
    if let Some(s) = &e.socket {
        let dir = if s.is_dir() { s.as_path() } else { s.parent().unwrap_or(Path::new("/")) };
        a.push(format!("--host={}", dir.display()));
    }
    if let Some(h) = &e.host {
        a.push(format!("--host={h}"));
    }
    if let Some(p) = e.port {
        a.push(format!("--port={p}"));
    }
    if let Some(u) = &e.user {
        a.push(format!("--username={u}"));
    }
    a
}

pub fn plan(job: &Job) -> Result<Plan> {
    let e = &job.entry;
    let mut p = Plan::default();
    match e.kind {
        Kind::Files => p.paths = e.paths.clone(),
        Kind::Command => p.dumps.push(Dump {
            name: e.stream.clone().unwrap_or_default(),
            argv: vec!["sh".into(), "-c".into(), e.command.clone().unwrap_or_default()],
            env: Vec::new(),
        }),
        Kind::Mysql => plan_mysql(job, &mut p)?,
        Kind::Postgresql => plan_postgresql(job, &mut p)?,
        Kind::Mongodb => plan_mongodb(job, &mut p)?,
        Kind::Redis => {
            let mut argv = vec![program(&["redis-cli"])];
            if let Some(s) = &e.socket {
                argv.extend(["-s".into(), s.display().to_string()]);
            }
            if let Some(h) = &e.host {
                argv.extend(["-h".into(), h.clone()]);
            }
            if let Some(port) = e.port {
                argv.extend(["-p".into(), port.to_string()]);
            }
            if let Some(u) = &e.user {
                argv.extend(["--user".into(), u.clone()]);
            }
            argv.extend(e.dump_options.iter().cloned());
            // redis-cli --rdb asks the server for a fresh RDB snapshot (the
            // replication handshake) and writes it to stdout with "-".
            argv.extend(["--rdb".into(), "-".into()]);
            p.dumps.push(Dump { name: "redis/dump.rdb".into(), argv, env: password_env(job, "REDISCLI_AUTH")? });
        }
    }
    Ok(p)
}

fn plan_mysql(job: &Job, p: &mut Plan) -> Result<()> {
    let e = &job.entry;
    let env = password_env(job, "MYSQL_PWD")?;
    let conn = mysql_conn(job);
    if e.physical {
        let mut argv = vec![program(&["mariabackup", "mariadb-backup", "xtrabackup"])];
        argv.extend(conn.iter().cloned());
        argv.extend(["--backup".into(), "--stream=xbstream".into(), "--target-dir=/tmp".into()]);
        argv.extend(e.dump_options.iter().cloned());
        p.dumps.push(Dump { name: "mysql/physical.xbstream".into(), argv, env });
        p.notes.push("physical backup (mariabackup --stream=xbstream)".into());
        return Ok(());
    }
    let client = program(&["mysql", "mariadb"]);
    let mut q = vec![client.clone()];
    q.extend(conn.iter().cloned());
    q.extend(["--batch".into(), "--skip-column-names".into(), "--execute".into()]);
    let ask = |sql: &str| {
        let mut a = q.clone();
        a.push(sql.into());
        query(&a, &env)
    };
    let found = ask("SHOW DATABASES").context("listing the databases")?;
    let dbs = choose(job, found, MYSQL_SYSTEM)?;
    // One query for all databases: a server with thousands of schemas
    // must not cost thousands of round trips.
    let engines = ask("SELECT TABLE_SCHEMA, IFNULL(ENGINE, ''), COUNT(*) FROM information_schema.TABLES \
         WHERE TABLE_TYPE = 'BASE TABLE' GROUP BY TABLE_SCHEMA, ENGINE")
    .context("reading the tables' storage engines")?;
    let dump = program(&["mysqldump", "mariadb-dump"]);
    for db in dbs {
        let mut innodb = 0u64;
        let mut other: Vec<String> = Vec::new();
        for row in &engines {
            let cols: Vec<&str> = row.split('\t').collect();
            if cols.len() == 3 && cols[0] == db {
                let n: u64 = cols[2].parse().unwrap_or(0);
                if cols[1].eq_ignore_ascii_case("InnoDB") {
                    innodb += n;
                } else {
                    other.push(format!("{n} {}", cols[1]));
                }
            }
        }
        let consistency = if other.is_empty() {
            p.notes
                .push(format!("{db}: {innodb} table(s), all InnoDB: one transaction (--single-transaction), no locks"));
            "--single-transaction"
        } else {
            p.notes.push(format!(
                "{db}: not all InnoDB ({}{}): table locks (--lock-tables)",
                other.join(", "),
                if innodb > 0 { format!(", {innodb} InnoDB") } else { String::new() }
            ));
            "--lock-tables"
        };
        if e.check {
            let mut argv = vec![program(&["mysqlcheck", "mariadb-check"])];
            argv.extend(conn.iter().cloned());
            argv.extend(["--check".into(), "--silent".into(), db.clone()]);
            p.checks.push(Dump { name: format!("mysql/{db}.sql"), argv, env: env.clone() });
        }
        let mut argv = vec![dump.clone()];
        argv.extend(conn.iter().cloned());
        argv.extend(
            [consistency, "--routines", "--triggers", "--events", "--hex-blob", "--skip-dump-date"]
                .into_iter()
                .map(String::from),
        );
        argv.extend(e.dump_options.iter().cloned());
        argv.push(db.clone());
        p.dumps.push(Dump { name: format!("mysql/{db}.sql"), argv, env: env.clone() });
    }
    Ok(())
}

fn plan_postgresql(job: &Job, p: &mut Plan) -> Result<()> {
    let e = &job.entry;
    let env = password_env(job, "PGPASSWORD")?;
    let conn = pg_conn(job);
    if e.physical {
        let mut argv = vec![program(&["pg_basebackup"])];
        argv.extend(conn.iter().cloned());
        argv.extend(["--format=tar".into(), "--pgdata=-".into(), "--wal-method=fetch".into()]);
        argv.extend(e.dump_options.iter().cloned());
        p.dumps.push(Dump { name: "postgresql/base.tar".into(), argv, env });
        p.notes.push("physical backup (pg_basebackup, tar to stdout)".into());
        return Ok(());
    }
    let mut q = vec![program(&["psql"])];
    q.extend(conn.iter().cloned());
    q.extend([
        "--dbname=postgres".into(),
        "--no-psqlrc".into(),
        "--tuples-only".into(),
        "--no-align".into(),
        "--command=SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1".into(),
    ]);
    let found = query(&q, &env).context("listing the databases")?;
    let dbs = choose(job, found, &[])?;
    // Roles and tablespaces live outside every database: without them a
    // restore onto a new server fails on the first GRANT.
    let mut g = vec![program(&["pg_dumpall"])];
    g.extend(conn.iter().cloned());
    g.push("--globals-only".into());
    p.dumps.push(Dump { name: "postgresql/globals.sql".into(), argv: g, env: env.clone() });
    for db in dbs {
        // pg_dump always reads one snapshot (a repeatable-read
        // transaction): consistent without locking writers out.
        let mut argv = vec![program(&["pg_dump"])];
        argv.extend(conn.iter().cloned());
        argv.push("--format=plain".into());
        argv.extend(e.dump_options.iter().cloned());
        argv.push(format!("--dbname={db}"));
        p.notes.push(format!("{db}: pg_dump (one snapshot transaction)"));
        p.dumps.push(Dump { name: format!("postgresql/{db}.sql"), argv, env: env.clone() });
    }
    Ok(())
}

fn plan_mongodb(job: &Job, p: &mut Plan) -> Result<()> {
    let e = &job.entry;
    let uri = match (&e.uri, &e.host, e.port) {
        (Some(u), _, _) => u.clone(),
        (None, h, port) => {
            format!("mongodb://{}:{}", h.as_deref().unwrap_or("127.0.0.1"), port.unwrap_or(27017))
        }
    };
    if e.password_file.is_some() {
        // mongodump takes a password only on its command line or in the
        // URI; a command line is visible to every user in ps.
        bail!("mongodb: put the credentials in `uri` (mongodb://user:pass@host/?authSource=admin), not password-file");
    }
    let env: Vec<(String, String)> = Vec::new();
    let mut auth = Vec::new();
    if let Some(u) = &e.user {
        auth.push(format!("--username={u}"));
    }
    let mut q = vec![program(&["mongosh", "mongo"]), uri.clone(), "--quiet".into()];
    q.extend(auth.iter().cloned());
    q.extend([
        "--eval".into(),
        "db.adminCommand({listDatabases: 1, nameOnly: true}).databases.forEach(d => print(d.name))".into(),
    ]);
    let found = query(&q, &env).context("listing the databases")?;
    let dbs = choose(job, found, &["admin", "config", "local"])?;
    for db in dbs {
        let mut argv = vec![program(&["mongodump"]), format!("--uri={uri}")];
        argv.extend(auth.iter().cloned());
        argv.extend([format!("--db={db}"), "--archive".into()]);
        argv.extend(e.dump_options.iter().cloned());
        p.dumps.push(Dump { name: format!("mongodb/{db}.archive"), argv, env: env.clone() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("--socket=/run/x.sock"), "--socket=/run/x.sock");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
