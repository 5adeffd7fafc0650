//! `arc run` and `arc status` with real configuration files (issue #15):
//! files, MariaDB, PostgreSQL and command jobs, hooks, a failing job among
//! good ones, retention, staleness, a webhook, the read rate limit, spread
//! scheduling with `--due`, and the HTML report rendered by Chromium.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::dbdump::{Mariadb, Postgres};
use crate::util::*;

/// A loopback HTTP server that accepts up to `max` POSTs and hands their
/// bodies to the test (bounded in count and time, as network tests must be).
fn webhook_listener(max: usize) -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut stream) = stream else { continue };
            stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if let Ok(v) = serde_json::from_slice(&body) {
                let _ = tx.send(v);
            }
        }
    });
    (url, rx)
}

fn run(env: &TestEnv, config: &Path, args: &[&str]) -> Output {
    env.cmd()
        .env("XDG_STATE_HOME", env.path("state"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(args)
        .timeout(Duration::from_secs(300))
        .run()
}

fn status(env: &TestEnv, config: &Path, args: &[&str]) -> Output {
    env.cmd().env("XDG_STATE_HOME", env.path("state")).arg("status").arg("--config").arg(config).args(args).run()
}

fn snapshots_by_job(env: &TestEnv) -> BTreeMap<String, Vec<Value>> {
    let mut by: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for s in env.snapshots_json() {
        for t in s["tags"].as_array().unwrap() {
            if let Some(j) = t.as_str().unwrap().strip_prefix("job:") {
                by.entry(j.to_string()).or_default().push(s.clone());
            }
        }
    }
    by
}

fn ls(env: &TestEnv, snap: &str) -> BTreeSet<String> {
    env.arc().args(["ls", "-R", snap]).run().success().stdout_str().lines().map(|l| l.trim().to_string()).collect()
}

#[test]
fn run_jobs_from_a_config_with_real_databases_hooks_failures_retention_status_webhook_and_rate_limit() {
    require!(Need::Program("mariadbd", "mariadb-server"), Need::Program("mysqldump", "mariadb-client"), Need::Postgres);
    let env = TestEnv::new();
    env.init();
    let maria = Mariadb::start(&env.path("mariadb"));
    maria.sql(
        "mysql",
        "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, note TEXT) ENGINE=InnoDB;
         INSERT INTO shop.orders SELECT seq, CONCAT('order ', seq) FROM seq_1_to_2000;
         CREATE DATABASE legacy; CREATE TABLE legacy.hits (id INT PRIMARY KEY, n INT) ENGINE=MyISAM;
         INSERT INTO legacy.hits SELECT seq, seq FROM seq_1_to_500;
         CREATE DATABASE scratch; CREATE TABLE scratch.junk (id INT) ENGINE=InnoDB;",
    );
    let pg = Postgres::start(&env.path("pg"));
    pg.sql("postgres", "CREATE DATABASE app;");
    pg.sql("app", "CREATE TABLE users (id int PRIMARY KEY, name text); INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 3000) g;");
    pg.sql("postgres", "CREATE DATABASE scratch;");

    let www = env.path("www");
    fs::create_dir_all(www.join("site/cache")).unwrap();
    fs::write(www.join("site/index.php"), "<?php echo 1;").unwrap();
    fs::write(www.join("site/cache/page.html"), "cached").unwrap();
    fs::write(www.join("site/upload.tmp"), "partial").unwrap();
    // 200 MiB read under limit-read = 50MiB: at least 3.5 s. A sparse
    // file reads at memory speed, so the time is the limiter's.
    let big = env.path("big");
    fs::create_dir_all(&big).unwrap();
    fs::File::create(big.join("disk.img")).unwrap().set_len(200 * MIB).unwrap();

    let hooks = env.path("hooks.log");
    let fail_marker = env.path("fail-now");
    fs::write(&fail_marker, "").unwrap();
    let (url, hook_rx) = webhook_listener(4);
    let config = env.path("arc.toml");
    let text = format!(
        r#"repository = "{repo}"

[run]
jobs = 2

[defaults]
keep = {{ last = 2 }}
max-age = "26h"
nice = 5
ionice = "idle"
notify = {{ webhook = "{url}", on = "always" }}

[[jobs]]
name = "www"
kind = "files"
paths = ["{www}"]
exclude = ["**/cache/", "*.tmp"]
before = "echo \"before $ARC_JOB\" >> {hooks}"
after = "echo \"after $ARC_JOB $ARC_JOB_RESULT\" >> {hooks}"

[[jobs]]
name = "mysql"
kind = "mysql"
socket = "{msock}"
user = "root"
databases = "all"
exclude-databases = ["scratch", "mysql"]

[[jobs]]
name = "pg"
kind = "postgresql"
socket = "{pgsock}"
user = "postgres"
databases = "all"
exclude-databases = ["scratch"]

[[jobs]]
name = "ldap"
kind = "command"
command = "printf 'dn: dc=example\n'"
stream = "ldap/data.ldif"

[[jobs]]
name = "flaky"
kind = "command"
command = "test ! -e {fail} && echo fine"
stream = "flaky.out"

[[jobs]]
name = "unmounted"
kind = "files"
paths = ["{www}"]
before = "echo \"before $ARC_JOB\" >> {hooks}; exit 4"
after = "echo \"after $ARC_JOB $ARC_JOB_RESULT\" >> {hooks}"

[[jobs]]
name = "big"
kind = "files"
paths = ["{big}"]
limit-read = "50MiB"
"#,
        repo = env.repo.display(),
        www = www.display(),
        hooks = hooks.display(),
        msock = maria.sock.display(),
        pgsock = pg.sockdir.display(),
        fail = fail_marker.display(),
        big = big.display(),
    );
    fs::write(&config, text).unwrap();

    // --dry-run: discovery and the commands, nothing written.
    let dry = run(&env, &config, &["--dry-run"]).success().stdout_str();
    assert!(dry.contains("stream mysql/shop.sql:") && dry.contains("--single-transaction"), "{dry}");
    assert!(dry.contains("stream mysql/legacy.sql:") && dry.contains("--lock-tables"), "{dry}");
    assert!(!dry.contains("scratch.sql"), "{dry}");
    assert!(dry.contains("stream postgresql/app.sql:"), "{dry}");
    assert!(env.snapshots_json().is_empty());

    let out = run(&env, &config, &["--json"]);
    assert_eq!(out.code(), Some(1), "a failing job makes the run fail\n{}", out.describe());
    let summary = out.json();
    let failed: BTreeSet<&str> = summary["failed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(failed, BTreeSet::from(["flaky", "unmounted"]), "{summary}");
    assert_eq!(summary["ok"], 5, "{summary}");
    let err = out.stderr_str();
    assert!(err.contains("summary: 5 ok, 2 failed, 0 skipped (failed: flaky, unmounted)"), "{err}");
    assert!(err.contains("shop: 1 table(s), all InnoDB: one transaction (--single-transaction)"), "{err}");
    assert!(err.contains("legacy: not all InnoDB (1 MyISAM): table locks (--lock-tables)"), "{err}");

    // Hooks: before and after of www; the failing before skipped its job
    // and its after still ran, told the result.
    let calls = fs::read_to_string(&hooks).unwrap();
    let calls: BTreeSet<&str> = calls.lines().collect();
    assert_eq!(
        calls,
        BTreeSet::from(["before www", "after www ok", "before unmounted", "after unmounted failed"]),
        "{calls:?}"
    );

    // The snapshots, tagged by job, with the right content.
    let by = snapshots_by_job(&env);
    assert_eq!(by.keys().map(String::as_str).collect::<Vec<_>>(), ["big", "ldap", "mysql", "pg", "www"]);
    let files = ls(&env, by["www"][0]["short_id"].as_str().unwrap());
    assert!(files.iter().any(|f| f.ends_with("site/index.php")), "{files:?}");
    assert!(!files.iter().any(|f| f.contains("page.html") || f.ends_with(".tmp")), "{files:?}");
    let dumps = ls(&env, by["mysql"][0]["short_id"].as_str().unwrap());
    assert!(dumps.contains("/mysql/shop.sql") && dumps.contains("/mysql/legacy.sql"), "{dumps:?}");
    assert!(!dumps.iter().any(|d| d.contains("scratch")), "{dumps:?}");
    let shop = env.arc().args(["cat", "latest:mysql/shop.sql"]).run().success().stdout_str();
    assert!(shop.contains("INSERT INTO `orders`") && shop.contains("order 2000"), "dump of shop");
    let pgd = ls(&env, by["pg"][0]["short_id"].as_str().unwrap());
    assert!(pgd.contains("/postgresql/app.sql") && pgd.contains("/postgresql/globals.sql"), "{pgd:?}");
    assert!(!pgd.iter().any(|d| d.contains("scratch")), "{pgd:?}");
    let app = env.arc().args(["cat", "latest:postgresql/app.sql"]).run().success().stdout_str();
    assert!(app.contains("COPY public.users"), "dump of app");

    // The rate limit: the big job's duration.
    let jobs = summary["jobs"].as_array().unwrap();
    let big_job = jobs.iter().find(|j| j["job"] == "big").unwrap();
    assert!(big_job["duration_s"].as_f64().unwrap() >= 3.5, "200 MiB under 50MiB/s: {big_job}");
    assert_eq!(big_job["bytes_read"], 200 * MIB);

    // The webhook got the summary.
    let hook = hook_rx.recv_timeout(Duration::from_secs(10)).expect("webhook received");
    assert_eq!(hook["failed"], summary["failed"]);
    assert_eq!(hook["jobs"].as_array().unwrap().len(), 7);

    // The flaky job is fixed; run it (and www twice more, for retention).
    fs::remove_file(&fail_marker).unwrap();
    run(&env, &config, &["flaky", "www"]).success();
    let out = run(&env, &config, &["flaky", "www"]).success();
    assert!(out.stderr_str().contains("job=www retention: removed 1 snapshot(s)"), "{}", out.describe());
    let by = snapshots_by_job(&env);
    assert_eq!(by["www"].len(), 2, "keep = {{ last = 2 }} applied to www");
    assert_eq!(by["flaky"].len(), 2);
    assert_eq!(by["ldap"].len(), 1, "retention touches only the job's own snapshots");

    // Status: every job succeeded within max-age except `unmounted`.
    let out = status(&env, &config, &["--json"]);
    assert_eq!(out.code(), Some(1), "unmounted never succeeded\n{}", out.describe());
    let st = out.json();
    let get = |name: &str| st["jobs"].as_array().unwrap().iter().find(|j| j["job"] == name).unwrap().clone();
    assert_eq!(get("unmounted")["stale"], true);
    assert_eq!(get("unmounted")["last_result"], "failed");
    for j in ["www", "mysql", "pg", "ldap", "flaky", "big"] {
        let s = get(j);
        assert_eq!(s["stale"], false, "{s}");
        assert!(s["age_s"].as_i64().unwrap() < 600, "{s}");
        assert_eq!(s["last_result"], "ok", "{s}");
    }
    let text = status(&env, &config, &[]).stdout_str();
    assert!(text.contains("unmounted") && text.contains("STALE (failed)"), "{text}");

    // Two days later every job is stale; the text shows the ages.
    let later = (chrono::Utc::now() + chrono::Duration::hours(50)).to_rfc3339();
    let prom = env.path("arc.prom");
    let out = status(&env, &config, &["--at", &later, "--prometheus", prom.to_str().unwrap()]);
    assert_eq!(out.code(), Some(1));
    let text = out.stdout_str();
    assert!(text.lines().filter(|l| l.contains("2d 2h") || l.contains("2d 1h")).count() >= 6, "{text}");
    let prom = fs::read_to_string(prom).unwrap();
    assert!(prom.contains("arc_job_stale{job=\"www\",host="), "{prom}");
    assert!(prom.contains("# TYPE arc_job_age_seconds gauge"), "{prom}");
}

#[test]
fn backup_limit_read_holds_the_rate() {
    let env = TestEnv::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::File::create(src.join("zeros")).unwrap().set_len(40 * MIB).unwrap();
    let t = Instant::now();
    env.backup(["--limit-read", "16MiB"].iter().map(|s| s.to_string()).chain([src.display().to_string()]));
    // 40 MiB at 16 MiB/s, less the 0.1 s burst: at least 2.4 s.
    assert!(t.elapsed() >= Duration::from_millis(2400), "{:?}", t.elapsed());
    env.arc()
        .args(["backup", "--limit-read", "0"])
        .arg(&src)
        .run()
        .code_is(2)
        .stderr_contains("a rate must be more than 0");
}

/// `arc run` and `arc status` without --config use the user's
/// ~/.config/arc/arc.toml (else /etc/arc/arc.toml), so a cron line or a
/// unit needs no path; with neither there, one line says where arc looked
/// and how to name a file.
#[test]
fn run_and_status_find_the_configuration_file_without_config() {
    let env = TestEnv::new();
    env.init();
    let run = || env.cmd().env("XDG_STATE_HOME", env.path("state")).arg("run").timeout(Duration::from_secs(120)).run();
    if !Path::new("/etc/arc/arc.toml").exists() {
        let line = run().failure().one_line_error();
        assert!(line.contains("no configuration file") && line.contains("--config"), "{line}");
        assert!(line.contains(".config/arc/arc.toml") && line.contains("/etc/arc/arc.toml"), "{line}");
    }
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("index.php"), "<?php echo 1;").unwrap();
    let user_config = env.home.join(".config/arc/arc.toml");
    fs::create_dir_all(user_config.parent().unwrap()).unwrap();
    fs::write(
        &user_config,
        format!(
            "repository = \"{}\"\n\n[[jobs]]\nname = \"www\"\nkind = \"files\"\npaths = [\"{}\"]\n",
            env.repo.display(),
            src.display()
        ),
    )
    .unwrap();
    run().success();
    assert_eq!(env.snapshots_json().len(), 1);
    let status = env.cmd().env("XDG_STATE_HOME", env.path("state")).arg("status").run().success();
    assert!(status.stdout_str().lines().any(|l| l.starts_with("www")), "{}", status.describe());
}

#[test]
fn config_errors_name_file_line_and_key() {
    let env = TestEnv::new();
    let config = env.path("arc.toml");
    fs::write(&config, "repository = \"/r\"\n[defaults]\nmax-age = \"soon\"\n[[jobs]]\nname = \"a\"\nkind = \"files\"\npaths = [\"/\"]\n").unwrap();
    let out = run(&env, &config, &[]).failure();
    let e = out.one_line_error();
    assert!(e.contains(&format!("{}:3: key `max-age`:", config.display())), "{e}");
    fs::write(
        &config,
        "repository = \"/r\"\n[[jobs]]\nname = \"a\"\nkind = \"files\"\npaths = [\"/\"]\nexcludes = [\"x\"]\n",
    )
    .unwrap();
    let e = run(&env, &config, &[]).failure().one_line_error();
    assert!(e.contains(":6: key `excludes`: unknown field"), "{e}");
}

fn names_config(env: &TestEnv, n: usize, spread: &str, command: &str) -> PathBuf {
    let mut text = format!("repository = \"{}\"\n[defaults]\nspread = \"{spread}\"\n", env.repo.display());
    for i in 0..n {
        text.push_str(&format!(
            "[[jobs]]\nname = \"db-{i:05}\"\nkind = \"command\"\ncommand = \"{command}\"\nstream = \"dump.sql\"\n"
        ));
    }
    let path = env.path(format!("fleet-{n}-{spread}.toml"));
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn due_spreads_ten_thousand_jobs_evenly_and_runs_each_once() {
    let env = TestEnv::new();
    env.init();
    // Placement: 10 000 names over a day.
    let config = names_config(&env, 10_000, "24h", "echo x");
    let out = run(&env, &config, &["--schedule", "--json"]).success();
    let entries = out.json();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 10_000);
    let mut per_minute = vec![0u32; 1440];
    for e in entries {
        let off = e["offset_s"].as_u64().unwrap();
        assert!(off < 86_400);
        per_minute[(off / 60) as usize] += 1;
    }
    let mean = 10_000.0 / 1440.0;
    let max = *per_minute.iter().max().unwrap();
    assert!(f64::from(max) <= 3.0 * mean, "busiest minute has {max} starts, mean {mean:.1}");

    // Stepping a clock through a window minute by minute, `--due` picks
    // every one of the 10 000 exactly once (spread over an hour here, so
    // the walk takes 60 steps rather than 1440).
    let config = names_config(&env, 10_000, "1h", "echo x");
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-12-07T00:00:30Z").unwrap().with_timezone(&chrono::Utc);
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for m in 0..60 {
        let at = (t0 + chrono::Duration::minutes(m)).to_rfc3339();
        let out = run(&env, &config, &["--due", "--dry-run", "--json", "--at", &at]).success();
        for j in out.json()["jobs"].as_array().unwrap() {
            *seen.entry(j.as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 10_000, "every job is due once in its window");
    assert!(seen.values().all(|&n| n == 1));

    // For real: 20 jobs over 10 minutes, the clock stepped through two
    // windows: every job runs once per window, and cron's every-minute
    // calls in between start nothing twice.
    let config = names_config(&env, 20, "10m", "echo $ARC_JOB");
    let offsets: BTreeMap<String, u64> = run(&env, &config, &["--schedule", "--json"])
        .success()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["job"].as_str().unwrap().to_string(), e["offset_s"].as_u64().unwrap()))
        .collect();
    for m in 0..=20 {
        let at = (t0 + chrono::Duration::minutes(m)).to_rfc3339();
        run(&env, &config, &["--due", "--at", &at]).success();
    }
    // Windows start at 00:00, 00:10, 00:20 (counted from the epoch); the
    // last call is at 00:20:30, so a job whose offset is at most 30 s has
    // had a third start.
    let by = snapshots_by_job(&env);
    assert_eq!(by.len(), 20);
    for (job, snaps) in &by {
        let expected = if offsets[job] <= 30 { 3 } else { 2 };
        assert_eq!(snaps.len(), expected, "{job} (offset {} s) runs once per window", offsets[job]);
    }
}

#[test]
fn a_job_never_runs_twice_at_once() {
    let env = TestEnv::new();
    env.init();
    let config = env.path("arc.toml");
    let started = env.path("started");
    fs::write(
        &config,
        format!(
            "repository = \"{}\"\n[[jobs]]\nname = \"slow\"\nkind = \"command\"\nbefore = \"touch {}; sleep 3\"\ncommand = \"echo x\"\nstream = \"x\"\n",
            env.repo.display(),
            started.display()
        ),
    )
    .unwrap();
    let first = env
        .cmd()
        .env("XDG_STATE_HOME", env.path("state"))
        .args(["run", "--config"])
        .arg(&config)
        .timeout(Duration::from_secs(60))
        .spawn();
    assert!(wait_for(Duration::from_secs(20), || started.exists()));
    let second = run(&env, &config, &["--json"]).success();
    assert_eq!(second.json()["skipped"][0], "slow", "{}", second.describe());
    assert!(second.stderr_str().contains("already running"));
    first.wait().success();
    assert_eq!(env.snapshots_json().len(), 1);
}

/// Chromium's DOM after loading `page` (headless, no network, a new
/// profile).
fn rendered_dom(env: &TestEnv, page: &Path) -> String {
    let chromium = find_program("chromium").expect("chromium");
    let profile = env.path("chromium-profile");
    fs::create_dir_all(&profile).unwrap();
    TestCommand::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .timeout(Duration::from_secs(120))
        .run()
        .success()
        .stdout_str()
}

#[test]
fn html_report_rendered_by_chromium_shows_every_job_age_and_chart() {
    require!(Need::Program("chromium", "chromium"));
    let env = TestEnv::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let slow = env.path("slow-now");
    let config = env.path("arc.toml");
    fs::write(
        &config,
        format!(
            "repository = \"{repo}\"\n[defaults]\nmax-age = \"26h\"\n\
             [[jobs]]\nname = \"www\"\nkind = \"files\"\npaths = [\"{src}\"]\n\
             [[jobs]]\nname = \"ldap\"\nkind = \"command\"\ncommand = \"echo dn\"\nstream = \"ldap.ldif\"\n\
             [[jobs]]\nname = \"never-ran\"\nkind = \"command\"\ncommand = \"false\"\nstream = \"x\"\n\
             [[jobs]]\nname = \"slowing\"\nkind = \"command\"\ncommand = \"test -e {slow} && sleep 4; echo data\"\nstream = \"s\"\n",
            repo = env.repo.display(),
            src = src.display(),
            slow = slow.display()
        ),
    )
    .unwrap();
    for i in 0..3 {
        fs::write(src.join(format!("f{i}")), vec![i as u8; 1000 * (i + 1)]).unwrap();
        run(&env, &config, &["www", "ldap", "slowing"]).success();
    }
    // Same size, four times slower than before: flagged.
    fs::write(&slow, "").unwrap();
    let out = run(&env, &config, &["--json", "slowing"]).success();
    assert_eq!(out.json()["jobs"][0]["slow"], true, "{}", out.describe());
    assert!(out.stderr_str().contains("job=slowing warning: slow: took"), "{}", out.describe());
    let html = env.path("report.html");
    let out = status(&env, &config, &["--json", "--html", html.to_str().unwrap()]);
    assert_eq!(out.code(), Some(1), "never-ran is stale");
    let page = fs::read_to_string(&html).unwrap();
    assert!(!page.contains("<script") && !page.contains("http://") && !page.contains("https://"), "self-contained");

    let dom = rendered_dom(&env, &html);
    let row = |job: &str| -> String {
        let start = dom.find(&format!("data-job=\"{job}\"")).unwrap_or_else(|| panic!("no row for {job}:\n{dom}"));
        let end = dom[start..].find("</tr>").map(|e| start + e).unwrap();
        dom[start..end].to_string()
    };
    for job in ["www", "ldap"] {
        let r = row(job);
        assert!(r.contains(&format!("<td class=\"name\">{job}</td>")), "{r}");
        // Age: seconds or minutes old.
        let age = r.split("<td class=\"age\">").nth(1).and_then(|s| s.split("</td>").next()).unwrap();
        assert!(age.ends_with('s'), "{job} age {age:?}");
        assert!(r.contains(&format!("aria-label=\"chart of {job}: duration and bytes added of 3 run(s)\"")), "{r}");
        assert_eq!(r.matches("<rect class=\"bar").count(), 3, "{r}");
        assert!(r.contains("<polyline class=\"added\""), "{r}");
    }
    let r = row("slowing");
    assert_eq!(r.matches("<rect class=\"bar slow\"").count(), 1, "the slow run is marked: {r}");
    assert_eq!(r.matches("<rect class=\"bar").count(), 4, "{r}");
    assert!(r.contains("1 slow run(s)"), "{r}");
    let r = row("never-ran");
    assert!(r.contains(">stale<") && r.contains(">never<") && r.contains("no successful run yet"), "{r}");

    // Several hosts on one page, from their --json outputs.
    let mine = out.json();
    let mut other = mine.clone();
    other["host"] = Value::from("db7.example.net");
    let (a, b) = (env.path("a.json"), env.path("b.json"));
    fs::write(&a, mine.to_string()).unwrap();
    fs::write(&b, other.to_string()).unwrap();
    let fleet = env.path("fleet.html");
    env.cmd().args(["status", "--html"]).arg(&fleet).arg(&a).arg(&b).run();
    let dom = rendered_dom(&env, &fleet);
    assert!(dom.contains("<h2>db7.example.net</h2>"), "{dom}");
    assert_eq!(dom.matches("data-job=\"www\"").count(), 2);
}

#[test]
fn backup_as_records_the_original_path_from_a_snapshot_mount() {
    let env = TestEnv::new();
    env.init();
    // The "filesystem snapshot": a copy made by the before hook, removed
    // by the after hook, as an LVM snapshot would be mounted and dropped.
    let live = env.path("srv");
    fs::create_dir_all(live.join("app")).unwrap();
    fs::write(live.join("app/data.db"), "v1").unwrap();
    let snap = env.path("mnt/snap/srv");
    let config = env.path("arc.toml");
    fs::write(
        &config,
        format!(
            "repository = \"{repo}\"\n[[jobs]]\nname = \"srv\"\nkind = \"files\"\npaths = [\"{snap}\"]\nas = \"{live}\"\n\
             before = \"mkdir -p {snap} && cp -a {live}/. {snap}/\"\nafter = \"rm -rf {snap}\"\n",
            repo = env.repo.display(),
            snap = snap.display(),
            live = live.display()
        ),
    )
    .unwrap();
    run(&env, &config, &[]).success();
    assert!(!snap.exists(), "the after hook ran");
    let snaps = env.snapshots_json();
    assert_eq!(snaps[0]["paths"], serde_json::json!([live.display().to_string()]));
    let cat = env.arc().args(["cat", &format!("latest:{}/app/data.db", live.display())]).run().success();
    assert_eq!(cat.stdout, b"v1");

    // `arc backup --as` finds the previous snapshot of the recorded path as
    // its parent (an unchanged file is not read again).
    fs::create_dir_all(&snap).unwrap();
    let out = env.arc().args(["--json", "backup"]).arg(&live).args(["--as"]).arg(&live).run().success();
    assert_eq!(out.json()["paths"], serde_json::json!([live.display().to_string()]));
    let other = env.path("elsewhere");
    fs::create_dir_all(&other).unwrap();
    std::process::Command::new("cp").arg("-a").arg(format!("{}/.", live.display())).arg(&other).status().unwrap();
    let v = env.backup([other.as_os_str(), "--as".as_ref(), live.as_os_str()]);
    assert_eq!(v["paths"], serde_json::json!([live.display().to_string()]));
    assert!(v["parent"].is_string(), "{v}");
    env.arc()
        .args(["backup", "--as", "/srv"])
        .arg(&live)
        .arg(&other)
        .run()
        .code_is(2)
        .stderr_contains("exactly one PATH");
    env.arc().args(["backup", "--as", "srv"]).arg(&live).run().failure().stderr_contains("not an absolute path");
}

#[test]
fn jobs_on_one_device_never_overlap_jobs_on_two_devices_do() {
    let env = TestEnv::new();
    env.init();
    let log = env.path("times.log");
    let mut text = format!("repository = \"{}\"\n[run]\njobs = 2\n", env.repo.display());
    for (name, device) in [("a1", "md0"), ("a2", "md0"), ("b1", "md1"), ("b2", "md1")] {
        text.push_str(&format!(
            "[[jobs]]\nname = \"{name}\"\nkind = \"command\"\ncommand = \"echo {name}\"\nstream = \"x\"\ndevice = \"{device}\"\n\
             before = \"echo $ARC_JOB start $(date +%s%N) >> {log}; sleep 1\"\n\
             after = \"echo $ARC_JOB end $(date +%s%N) >> {log}\"\n",
            log = log.display()
        ));
    }
    let config = env.path("arc.toml");
    fs::write(&config, text).unwrap();
    run(&env, &config, &[]).success();
    let mut span: BTreeMap<String, (u128, u128)> = BTreeMap::new();
    for line in fs::read_to_string(&log).unwrap().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let t: u128 = f[2].parse().unwrap();
        let e = span.entry(f[0].to_string()).or_insert((0, 0));
        if f[1] == "start" {
            e.0 = t;
        } else {
            e.1 = t;
        }
    }
    let overlap = |a: &str, b: &str| span[a].0 < span[b].1 && span[b].0 < span[a].1;
    assert!(!overlap("a1", "a2"), "md0 read twice at once: {span:?}");
    assert!(!overlap("b1", "b2"), "md1 read twice at once: {span:?}");
    assert!(overlap("a1", "b1") || overlap("a2", "b2"), "md0 and md1 read side by side: {span:?}");
}

#[test]
fn redis_job_stores_an_rdb_snapshot() {
    require!(Need::Program("redis-server", "redis-server"), Need::Program("redis-cli", "redis-tools"));
    let env = TestEnv::new();
    env.init();
    let redis = crate::dbdump::Redis::start(&env.path("redis"));
    redis.fill();
    let config = env.path("arc.toml");
    fs::write(
        &config,
        format!(
            "repository = \"{}\"\n[[jobs]]\nname = \"cache\"\nkind = \"redis\"\nsocket = \"{}\"\n",
            env.repo.display(),
            redis.sock.display()
        ),
    )
    .unwrap();
    let dry = run(&env, &config, &["--dry-run"]).success().stdout_str();
    assert!(dry.contains("stream redis/dump.rdb:") && dry.contains("--rdb -"), "{dry}");
    run(&env, &config, &[]).success();
    let rdb = env.arc().args(["cat", "latest:redis/dump.rdb"]).run().success().stdout;
    assert!(rdb.starts_with(b"REDIS") && rdb.len() > 500_000, "an RDB file of the 20 000 keys: {} bytes", rdb.len());
}

/// A job with a local and an S3 repository and `fan-out = "copy"`: the dump
/// command runs once, the snapshot lands in the first repository and is
/// copied into the second (a remote one, named by URL in the file), both
/// hold the same content, and `arc status` reads both. A copy that fails
/// (the server is down) fails the job, and its snapshot follows with the
/// next run. A repository string with an unknown scheme is refused with
/// the file and line.
#[test]
fn fan_out_copy_reads_once_into_a_local_and_an_s3_repository() {
    use crate::backends::{self, Backend};
    if !requirements_met(&backends::needs(Backend::S3)) {
        return;
    }
    let env = TestEnv::new();
    env.init();
    let s3_root = env.path("s3");
    let server = backends::start(Backend::S3, &s3_root, &s3_root.join("offsite"));
    let with_s3 = |c: TestCommand| c.envs_from(server.env.clone());
    with_s3(env.cmd()).arg("--repo").arg(&server.url).arg("init").run().success();

    let counter = env.path("dumps-run");
    let config = env.path("arc.toml");
    let write_config = |offsite: &str| {
        fs::write(
            &config,
            format!(
                "[repositories.local]\npath = \"{}\"\n\n[repositories.offsite]\nurl = \"{offsite}\"\n\n\
                 [[jobs]]\nname = \"app\"\nkind = \"command\"\nrepositories = [\"local\", \"offsite\"]\n\
                 fan-out = \"copy\"\ncommand = \"echo run >> {}; seq 1 200000\"\nstream = \"app/numbers.txt\"\n",
                env.repo.display(),
                counter.display()
            ),
        )
        .unwrap();
    };
    write_config(&server.url);
    let dry = with_s3(env.cmd()).env("XDG_STATE_HOME", env.path("state")).args(["run", "--dry-run", "--config"]);
    let dry = dry.arg(&config).run().success();
    assert!(dry.stdout_str().contains("then copied into offsite (s3:"), "{}", dry.describe());

    let out = with_s3(env.cmd())
        .env("XDG_STATE_HOME", env.path("state"))
        .args(["run", "--config"])
        .arg(&config)
        .timeout(Duration::from_secs(120))
        .run()
        .success();
    assert_eq!(fs::read_to_string(&counter).unwrap(), "run\n", "the dump ran more than once\n{}", out.describe());
    assert!(out.stderr_str().contains("copied snapshot"), "{}", out.describe());

    let local = env.snapshots_json();
    let remote = with_s3(env.cmd()).args(["--json", "--repo", &server.url, "snapshots"]).run().success().json();
    let remote = remote.as_array().unwrap();
    assert_eq!((local.len(), remote.len()), (1, 1), "{local:?} {remote:?}");
    for k in ["time", "host", "tags", "paths"] {
        assert_eq!(local[0][k], remote[0][k], "{k} differs between the repositories");
    }
    let expected: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    let dumped = with_s3(env.cmd()).args(["--repo", &server.url, "cat", "latest:app/numbers.txt"]).run().success();
    assert_eq!(dumped.stdout_str(), expected, "the copied snapshot's stream differs");

    let st = with_s3(env.cmd())
        .env("XDG_STATE_HOME", env.path("state"))
        .args(["--json", "status", "--config"])
        .arg(&config)
        .run()
        .success();
    assert!(st.stdout_str().contains("\"app\""), "{}", st.describe());

    // The S3 server goes away: the job fails, the local repository has
    // the run. Back on another port: the next run copies both snapshots.
    drop(server);
    let failed = env.cmd().env("XDG_STATE_HOME", env.path("state")).args(["run", "--config"]).arg(&config);
    let failed = failed.timeout(Duration::from_secs(180)).run().failure();
    assert!(failed.stderr_str().contains("offsite"), "{}", failed.describe());
    assert_eq!(env.snapshots_json().len(), 2);
    let server = backends::start(Backend::S3, &s3_root, &s3_root.join("offsite"));
    write_config(&server.url);
    let again = env.cmd().envs_from(server.env.clone()).env("XDG_STATE_HOME", env.path("state"));
    again.args(["run", "--config"]).arg(&config).timeout(Duration::from_secs(120)).run().success();
    assert_eq!(fs::read_to_string(&counter).unwrap(), "run\nrun\nrun\n");
    let remote = env.cmd().envs_from(server.env.clone()).args(["--json", "--repo", &server.url, "snapshots"]);
    let remote = remote.run().success().json();
    assert_eq!(remote.as_array().unwrap().len(), 3, "the snapshot of the failed copy did not follow: {remote:#}");

    write_config("s4:http://127.0.0.1:1/b");
    let bad = env.cmd().args(["run", "--config"]).arg(&config).run().failure();
    let line = bad.stderr_str();
    assert!(line.contains("arc.toml:5") && line.contains("s4:"), "{}", bad.describe());
}

/// `physical = true` on a PostgreSQL job: pg_basebackup's tar stream is
/// stored, and what `arc cat` gives back starts as a server of its own
/// (recovery from the backup's WAL) with the data the source had. The
/// job asks for a fast checkpoint (pg_basebackup's default spreads it over
/// minutes, gentle on a live server, slow in a test).
#[test]
fn postgresql_physical_backup_starts_as_a_server_with_the_same_data() {
    require!(Need::Postgres, Need::Program("tar", "tar"));
    let env = TestEnv::new();
    env.init();
    let pg = Postgres::start(&env.path("pg"));
    pg.sql("postgres", "CREATE DATABASE shop;");
    pg.sql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, note text);
         INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 50000) g;",
    );
    let query = "SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM orders;";
    let expected = pg.sql("shop", query);
    let config = env.path("arc.toml");
    fs::write(
        &config,
        format!(
            "repository = \"{}\"\n[[jobs]]\nname = \"pgbase\"\nkind = \"postgresql\"\nsocket = \"{}\"\nuser = \"postgres\"\nphysical = true\n\
             dump-options = [\"--checkpoint=fast\"]\n",
            env.repo.display(),
            pg.sockdir.display()
        ),
    )
    .unwrap();
    let out = run(&env, &config, &[]).success();
    assert!(out.stderr_str().contains("pg_basebackup"), "{}", out.describe());
    drop(pg);

    let tar = env.path("base.tar");
    env.arc().args(["cat", "latest:postgresql/base.tar"]).stdout_to(&tar).run().success();
    let data = env.path("restored/data");
    fs::create_dir_all(&data).unwrap();
    TestCommand::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&data).run().success();
    assert!(data.join("PG_VERSION").is_file() && data.join("backup_label").is_file());
    let restored = Postgres::start(&env.path("restored"));
    assert_eq!(restored.sql("shop", query), expected, "the restored server has other data");
}

/// `physical = true` on a MariaDB job: mariabackup's xbstream is stored,
/// and what `arc cat` gives back, unpacked with mbstream and prepared with
/// `mariabackup --prepare`, starts as a server with the source's data.
#[test]
fn mariadb_physical_backup_starts_as_a_server_with_the_same_data() {
    require!(
        Need::Program("mariadbd", "mariadb-server"),
        Need::Program("mariabackup", "mariadb-backup"),
        Need::Program("mbstream", "mariadb-backup")
    );
    let env = TestEnv::new();
    env.init();
    let db = Mariadb::start(&env.path("mariadb"));
    db.sql(
        "mysql",
        "CREATE DATABASE shop; USE shop;
         CREATE TABLE orders (id INT PRIMARY KEY, note VARCHAR(64)) ENGINE=InnoDB;
         INSERT INTO orders SELECT seq, MD5(seq) FROM seq_1_to_50000;",
    );
    let query = "SELECT COUNT(*), MD5(GROUP_CONCAT(note ORDER BY id SEPARATOR ',')) FROM orders;";
    let widen = "SET SESSION group_concat_max_len = 4194304;";
    let expected = db.sql("shop", &format!("{widen} {query}"));
    let config = env.path("arc.toml");
    fs::write(
        &config,
        format!(
            "repository = \"{}\"\n[[jobs]]\nname = \"mariabase\"\nkind = \"mysql\"\nsocket = \"{}\"\nuser = \"root\"\nphysical = true\n",
            env.repo.display(),
            db.sock.display()
        ),
    )
    .unwrap();
    let out = run(&env, &config, &[]).success();
    assert!(out.stderr_str().contains("mariabackup"), "{}", out.describe());
    drop(db);

    let stream = env.path("physical.xbstream");
    env.arc().args(["cat", "latest:mysql/physical.xbstream"]).stdout_to(&stream).run().success();
    let data = env.path("restored/data");
    fs::create_dir_all(&data).unwrap();
    TestCommand::new("mbstream").arg("-x").arg("-C").arg(&data).stdin_file(&stream).run().success();
    TestCommand::new("mariabackup")
        .args(["--prepare", "--use-memory=64M"])
        .arg(format!("--target-dir={}", data.display()))
        .timeout(Duration::from_secs(120))
        .run()
        .success();
    let restored = Mariadb::start(&env.path("restored"));
    assert_eq!(restored.sql("shop", &format!("{widen} {query}")), expected, "the restored server has other data");
}
