//! `arc run` and `arc status`: jobs from a configuration file (config),
//! what each reads (plan), running them (runner, streams, priority),
//! when (schedule), what they did (state, history), telling people
//! (notify) and showing it (status, report_html).

pub mod config;
pub mod history;
pub mod notify;
pub mod plan;
pub mod priority;
pub mod report_html;
pub mod runner;
pub mod schedule;
pub mod state;
pub mod status;
pub mod streams;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result};
use chrono::Utc;

use crate::args::{RunArgs, StatusArgs};
use crate::cmd::Env;
use config::Config;

pub fn hostname() -> String {
    arc_engine::lock::hostname()
}

/// The run's event log: one line per event on stderr, and appended to
/// `[run] log-file`, in a stable format for grep and log shippers:
/// `TIME job=NAME MESSAGE` (no progress bars, no colour). With `-q` only
/// warnings and failures reach stderr, so cron mails only when something
/// went wrong; the log file always gets every line.
pub struct Log {
    file: Option<Mutex<std::fs::File>>,
    quiet: bool,
}

impl Log {
    pub fn open(path: Option<&PathBuf>, quiet: bool) -> Result<Log> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("cannot open the log file {}", p.display()))?,
            )),
            None => None,
        };
        Ok(Log { file, quiet })
    }

    /// What a run did: on stderr unless `-q`.
    pub fn event(&self, job: &str, msg: &str) {
        self.write(job, msg, !self.quiet);
    }

    /// A warning or a failure: always on stderr.
    pub fn problem(&self, job: &str, msg: &str) {
        self.write(job, msg, true);
    }

    /// That a run had nothing to do (`--due`, every minute from cron): on
    /// stderr only for someone watching a terminal.
    pub fn idle(&self, job: &str, msg: &str) {
        self.write(job, msg, !self.quiet && std::io::stderr().is_terminal());
    }

    fn write(&self, job: &str, msg: &str, stderr: bool) {
        let line = format!("{} job={job} {msg}\n", Utc::now().format("%Y-%m-%dT%H:%M:%SZ"));
        if stderr {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
        if let Some(f) = &self.file {
            if let Ok(mut f) = f.lock() {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }
}

/// The configuration file: the one given (--config, ARC_CONFIG), else
/// the user's, else the system's, the first that exists; cron lines and
/// units then need no path, as for other daemons' tools.
fn config_path(given: Option<&std::path::Path>) -> Result<std::path::PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let candidates: Vec<std::path::PathBuf> = dirs::config_dir()
        .map(|d| d.join("arc/arc.toml"))
        .into_iter()
        .chain(std::iter::once(std::path::PathBuf::from(SYSTEM_CONFIG)))
        .collect();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        crate::cmd::usage(format!(
            "no configuration file: give --config FILE or set ARC_CONFIG (arc looked for {})",
            looked.join(" and ")
        ))
    })
}

/// Where a host's jobs are configured unless the user has a file of
/// their own.
const SYSTEM_CONFIG: &str = "/etc/arc/arc.toml";

pub fn run(env: &Env, a: RunArgs) -> Result<u8> {
    let config = config_path(a.config.as_deref())?;
    let cfg = Config::load(&config)?;
    let now = a.at.unwrap_or_else(Utc::now);
    if a.schedule {
        return print_schedule(env, &cfg, now);
    }
    if a.print_systemd {
        return print_systemd(&cfg, &config);
    }
    let selected = cfg.select(&a.jobs)?;
    // The process's own priority is the defaults' (hooks, dump commands
    // and each job's thread get the job's own).
    let prio = priority::Priority { nice: cfg.defaults_nice, ionice: cfg.defaults_ionice };
    if prio.is_set() {
        prio.apply().context("cannot set the [defaults] nice/ionice")?;
    }
    // --json quiets progress, not the log (stdout carries the summary).
    let log = Log::open(cfg.run.log_file.as_ref(), env.quiet && !env.json)?;
    runner::run(
        &cfg,
        selected,
        runner::RunOptions { due: a.due, dry_run: a.dry_run, now, json: env.json, cancel: env.cancel.clone() },
        &log,
    )
}

fn print_schedule(env: &Env, cfg: &Config, now: chrono::DateTime<Utc>) -> Result<u8> {
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        job: &'a str,
        spread_s: Option<u64>,
        offset_s: Option<u64>,
        next: Option<chrono::DateTime<Utc>>,
    }
    let entries: Vec<Entry> = cfg
        .jobs
        .iter()
        .map(|j| Entry {
            job: j.name(),
            spread_s: j.spread.map(|s| s.as_secs()),
            offset_s: j.spread.map(|s| schedule::offset(j.name(), s)),
            next: j.spread.map(|s| schedule::next(j.name(), s, now)),
        })
        .collect();
    if env.json {
        crate::cmd::print_json(&entries)?;
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    e.job.to_string(),
                    e.offset_s.map(|o| status::age(o as i64)).unwrap_or_else(|| "-".into()),
                    e.next
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_else(|| "daily from its last run".into()),
                ]
            })
            .collect();
        crate::cmd::print_table(&["Job", "Offset", "Next start (UTC)"], &rows)?;
    }
    Ok(0)
}

fn print_systemd(cfg: &Config, file: &std::path::Path) -> Result<u8> {
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "/usr/bin/arc".into());
    let conf = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let spread = cfg.jobs.iter().any(|j| j.spread.is_some());
    let mut service = format!(
        "# /etc/systemd/system/arc-backup.service\n[Unit]\nDescription=arc backups ({})\nAfter=network-online.target\n\n\
         [Service]\nType=oneshot\nExecStart={exe} run --config {}{}\n",
        conf.display(),
        conf.display(),
        if spread { " --due" } else { "" }
    );
    if let Some(n) = cfg.defaults_nice {
        service.push_str(&format!("Nice={n}\n"));
    }
    match cfg.defaults_ionice {
        Some(config::Ionice::Idle) => service.push_str("IOSchedulingClass=idle\n"),
        Some(config::Ionice::BestEffort) => service.push_str("IOSchedulingClass=best-effort\nIOSchedulingPriority=7\n"),
        None => {}
    }
    let timer = if spread {
        // Each job's own offset spreads the work: the timer only has to
        // look every minute (Persistent catches up after downtime).
        "# /etc/systemd/system/arc-backup.timer\n[Unit]\nDescription=arc backups: run what is due\n\n\
         [Timer]\nOnCalendar=*-*-* *:*:00\nAccuracySec=1s\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n"
            .to_string()
    } else {
        "# /etc/systemd/system/arc-backup.timer\n[Unit]\nDescription=arc backups, daily\n\n\
         [Timer]\nOnCalendar=daily\nRandomizedDelaySec=1h\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n"
            .to_string()
    };
    outln!("{service}\n{timer}\n# then: systemctl daemon-reload && systemctl enable --now arc-backup.timer")?;
    Ok(0)
}

pub fn status(env: &Env, a: StatusArgs) -> Result<u8> {
    let reports = if a.reports.is_empty() {
        let cfg = Config::load(&config_path(a.config.as_deref())?)?;
        vec![status::collect(&cfg, a.at.unwrap_or_else(Utc::now))?]
    } else {
        if a.html.is_none() {
            return Err(crate::cmd::usage("combining reports of several hosts needs --html FILE"));
        }
        status::read_reports(&a.reports)?
    };
    if let Some(p) = &a.prometheus {
        let text: String = reports.iter().map(status::prometheus).collect();
        status::write(p, text.as_bytes())?;
    }
    if let Some(p) = &a.html {
        status::write(p, report_html::render(&reports).as_bytes())?;
    }
    if env.json {
        match reports.as_slice() {
            [one] => crate::cmd::print_json(one)?,
            many => crate::cmd::print_json(&many)?,
        }
    } else if a.reports.is_empty() {
        for r in &reports {
            status::print_text(r)?;
        }
    }
    let bad: Vec<&str> = reports
        .iter()
        .flat_map(|r| r.jobs.iter())
        .filter(|j| j.stale || j.error.is_some())
        .map(|j| j.job.as_str())
        .collect();
    if !bad.is_empty() {
        eprintln!("arc: {} job(s) older than their max-age or unreadable: {}", bad.len(), bad.join(", "));
        return Ok(1);
    }
    Ok(0)
}
