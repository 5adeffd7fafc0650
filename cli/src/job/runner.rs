//! `arc run`: runs the configuration's jobs, at most `[run] jobs` at once,
//! each under its own lock, between its hooks, at its priority, through the
//! same engine call as `arc backup` (no second arc process: one binary, one
//! code path, typed errors). Then retention for the jobs that succeeded,
//! prune where its interval has passed, and the notifications.
//!
//! Retention and prune run after every backup of the run has ended: they
//! take the repository's exclusive lock, which parallel backups into the
//! same repository would hold off.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use arc_engine::exclude::{Excludes, IfPresent};
use arc_engine::ops::backup::{backup, BackupOptions};
use arc_engine::ops::copy::{copy, CopyOptions};
use arc_engine::ops::forget::{self, ForgetOptions};
use arc_engine::ops::prune::{self, PruneOptions};
use arc_engine::ops::retention::{GroupBy, Policy};
use arc_engine::{Repository, SnapshotFilter};
use chrono::{DateTime, Utc};

use super::config::{Config, FanOut, Job, Keep, Repo};
use super::history;
use super::notify::{self, JobReport, Summary};
use super::plan::{self, Plan};
use super::priority::Priority;
use super::state::{Attempt, State};
use super::streams::{self, Slots};
use super::Log;
use crate::cmd::command_stream::{Extra, StderrOut};
use arc_engine::progress::NoProgress;

pub struct RunOptions {
    pub due: bool,
    pub dry_run: bool,
    pub now: DateTime<Utc>,
    pub json: bool,
    pub cancel: Arc<AtomicBool>,
}

/// Opens a job's repository with the passphrase its table names, else
/// from ARC_PASSWORD*, else (the default repository) arc's key file; a
/// remote one with the job's transfer limits.
pub fn open_repo(r: &Repo, limits: Option<crate::cmd::remote::Limits>) -> Result<Repository> {
    let pass = || -> arc_engine::Result<zeroize::Zeroizing<String>> {
        let got = if let Some(f) = &r.password_file {
            crate::passphrase::read_file(f, "password-file")
        } else if let Some(c) = &r.password_command {
            crate::passphrase::run_command(c, "password-command")
        } else {
            match crate::passphrase::from_env("ARC") {
                Ok(Some(p)) => Ok(p),
                // The default repository opens with the key file arc made it with.
                Ok(None) => match crate::cmd::default_key_for(&r.path) {
                    Some(key) => crate::passphrase::read_file(&key, "key file"),
                    None => Err(anyhow!("set {} or password-file in [repositories]", crate::passphrase::SOURCES)),
                },
                Err(e) => Err(e),
            }
        };
        got.map_err(|_| arc_engine::Error::PassphraseRequired)
    };
    let named = format!("env-file of [repositories.{}]", r.name);
    let access = crate::cmd::OtherAccess { limits, env_file: r.env_file.as_deref().map(|p| (p, named.as_str())) };
    crate::cmd::open_other(&r.path, "repository", Some(&pass), &access)
        .with_context(|| format!("repository {} ({})", r.name, r.shown()))
}

/// Runs `sh -c CMD` in its own process group, killed whole after `timeout`.
/// Its output goes to arc's stderr (stdout stays for --json).
pub fn run_hook(cmd: &str, env: &[(&str, String)], timeout: Duration, prio: Priority) -> Result<()> {
    let stderr = std::io::stderr();
    let out = std::os::fd::AsFd::as_fd(&stderr).try_clone_to_owned()?;
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd).stdin(Stdio::null()).stdout(Stdio::from(out)).process_group(0);
    for (k, v) in env {
        c.env(k, v);
    }
    // SAFETY: Priority::apply makes only async-signal-safe system calls.
    unsafe {
        c.pre_exec(move || prio.apply());
    }
    let mut child = c.spawn().with_context(|| format!("cannot run hook {cmd:?}"))?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return if status.success() { Ok(()) } else { Err(anyhow!("hook {cmd:?} failed ({status})")) };
        }
        if start.elapsed() > timeout {
            // SAFETY: kill(2) of the hook's own process group (its pid).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            return Err(anyhow!("hook {cmd:?} timed out after {}", humantime::format_duration(timeout)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn policy(k: &Keep) -> Result<Policy> {
    Ok(Policy {
        last: k.last.unwrap_or(0),
        hourly: k.hourly.unwrap_or(0),
        daily: k.daily.unwrap_or(0),
        decades: k.decades.unwrap_or(0),
        weekly: k.weekly.unwrap_or(0),
        monthly: k.monthly.unwrap_or(0),
        yearly: k.yearly.unwrap_or(0),
        within: match &k.within {
            Some(w) => Some(w.parse()?),
            None => None,
        },
        tags: Vec::new(),
    })
}

struct Outcome {
    report: JobReport,
}

struct Ctx<'a> {
    opts: &'a RunOptions,
    state: State,
    log: &'a Log,
    host: String,
}

pub fn run(cfg: &Config, selected: Vec<&Job>, opts: RunOptions, log: &Log) -> Result<u8> {
    let host = cfg.host();
    let state = State::new(cfg.state_dir()?);
    let jobs: Vec<&Job> = if opts.due {
        selected.into_iter().filter(|j| super::schedule::due(j, &state.load(j.name()), opts.now)).collect()
    } else {
        selected
    };
    if opts.dry_run {
        return dry_run(&jobs, &opts);
    }
    if jobs.is_empty() {
        // Every minute from cron: on a terminal, or in the log file only.
        log.idle("-", "nothing due");
        return Ok(0);
    }
    let ctx = Ctx { opts: &opts, state, log, host };
    let start = Utc::now();
    let parallel = cfg.run.jobs.unwrap_or(1).min(jobs.len());
    let queue = Queue::new(jobs.len());
    let outcomes: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| {
                while let Some(i) = queue.take(|i| jobs[i].entry.device.as_deref()) {
                    // A thread of its own per job: nice and ionice are per
                    // thread, and one job's must not stay on for the next.
                    let o = std::thread::scope(|s| s.spawn(|| run_job(&ctx, jobs[i])).join()).unwrap_or_else(|p| {
                        let msg = arc_engine::sync::panic_message(&*p);
                        Outcome {
                            report: report(
                                jobs[i],
                                "failed",
                                Some(format!("internal error (a bug in arc): {msg}")),
                                0.0,
                            ),
                        }
                    });
                    outcomes.lock().unwrap_or_else(|p| p.into_inner()).push((i, o));
                    queue.done(jobs[i].entry.device.as_deref());
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
    outcomes.sort_by_key(|(i, _)| *i);
    let mut reports: Vec<JobReport> = outcomes.into_iter().map(|(_, o)| o.report).collect();

    retention_and_prune(&ctx, &jobs, &mut reports);

    for (job, r) in jobs.iter().zip(&reports) {
        if r.result == "skipped" && r.error.as_deref() == Some(ALREADY_RUNNING) {
            continue;
        }
        let a = Attempt {
            start: if opts.due { opts.now } else { start },
            end: Utc::now(),
            result: r.result.clone(),
            error: r.error.clone(),
            snapshots: r.snapshots.clone(),
            bytes_read: r.bytes_read,
            bytes_added: r.bytes_added,
        };
        if let Err(e) = ctx.state.record(job.name(), &a) {
            log.problem(job.name(), &format!("warning: cannot record the result: {e:#}"));
        }
    }
    let summary = Summary {
        host: ctx.host.clone(),
        config: cfg.file.display().to_string(),
        start,
        end: Utc::now(),
        ok: reports.iter().filter(|r| r.result == "ok").count(),
        failed: reports.iter().filter(|r| r.result == "failed").map(|r| r.job.clone()).collect(),
        skipped: reports.iter().filter(|r| r.result == "skipped").map(|r| r.job.clone()).collect(),
        jobs: reports,
    };
    // One notification per distinct target, with the jobs that name it.
    let mut targets: Vec<(super::config::Notify, Vec<String>)> = Vec::new();
    for j in &jobs {
        if let Some(n) = &j.notify {
            match targets.iter_mut().find(|(t, _)| t == n) {
                Some((_, names)) => names.push(j.name().to_string()),
                None => targets.push((n.clone(), vec![j.name().to_string()])),
            }
        }
    }
    for (n, names) in targets {
        let mut part = summary.clone();
        part.jobs.retain(|r| names.contains(&r.job));
        part.ok = part.jobs.iter().filter(|r| r.result == "ok").count();
        part.failed.retain(|f| names.contains(f));
        part.skipped.retain(|f| names.contains(f));
        for e in notify::send(&n, &part) {
            log.problem("-", &format!("warning: notification failed: {e}"));
        }
    }
    if summary.failed.is_empty() {
        log.event("-", &format!("summary: {}", summary.line()));
    } else {
        log.problem("-", &format!("summary: {}", summary.line()));
    }
    if opts.json {
        crate::cmd::print_json(&summary)?;
    }
    Ok(if summary.failed.is_empty() { 0 } else { 1 })
}

/// The jobs not started yet, and the devices being read: a worker takes
/// the first job whose `device` is free, so two disks are read at once but
/// one is never read by two jobs at once (seeks would make both slower).
struct Queue {
    state: Mutex<(Vec<usize>, HashSet<String>)>,
    cv: std::sync::Condvar,
}

impl Queue {
    fn new(n: usize) -> Queue {
        Queue { state: Mutex::new(((0..n).collect(), HashSet::new())), cv: std::sync::Condvar::new() }
    }

    fn take<'a>(&self, device: impl Fn(usize) -> Option<&'a str>) -> Option<usize> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if st.0.is_empty() {
                return None;
            }
            let (pending, busy) = &mut *st;
            if let Some(pos) = pending.iter().position(|&i| device(i).is_none_or(|d| !busy.contains(d))) {
                let i = pending.remove(pos);
                if let Some(d) = device(i) {
                    busy.insert(d.to_string());
                }
                return Some(i);
            }
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn done(&self, device: Option<&str>) {
        if let Some(d) = device {
            self.state.lock().unwrap_or_else(|p| p.into_inner()).1.remove(d);
        }
        self.cv.notify_all();
    }
}

const ALREADY_RUNNING: &str = "already running (its lock is held by another arc)";

fn skipped(job: &Job, why: &str) -> Outcome {
    Outcome { report: report(job, "skipped", Some(why.to_string()), 0.0) }
}

fn report(job: &Job, result: &str, error: Option<String>, duration_s: f64) -> JobReport {
    JobReport {
        job: job.name().to_string(),
        kind: job.kind().to_string(),
        result: result.to_string(),
        error,
        duration_s,
        bytes_read: 0,
        bytes_added: 0,
        snapshots: Vec::new(),
        slow: false,
        expected_s: None,
    }
}

fn run_job(ctx: &Ctx<'_>, job: &Job) -> Outcome {
    let name = job.name();
    if ctx.opts.cancel.load(Ordering::SeqCst) {
        return skipped(job, "interrupted before it started");
    }
    let _lock = match ctx.state.try_lock(name) {
        Ok(Some(l)) => l,
        Ok(None) => {
            ctx.log.event(name, &format!("skipped: {ALREADY_RUNNING}"));
            return skipped(job, ALREADY_RUNNING);
        }
        Err(e) => {
            ctx.log.problem(name, &format!("failed: {e:#}"));
            return Outcome { report: report(job, "failed", Some(format!("{e:#}")), 0.0) };
        }
    };
    let prio = Priority { nice: job.nice, ionice: job.ionice };
    if prio.is_set() {
        if let Err(e) = prio.apply() {
            ctx.log.problem(name, &format!("warning: cannot set nice/ionice: {e}"));
        }
    }
    let start = Instant::now();
    ctx.log.event(name, &format!("start kind={}", job.kind()));
    let mut r = report(job, "ok", None, 0.0);
    let env = |result: &str| -> Vec<(&'static str, String)> {
        vec![
            ("ARC_JOB", name.to_string()),
            ("ARC_JOB_KIND", job.kind().to_string()),
            ("ARC_JOB_RESULT", result.to_string()),
        ]
    };
    let mut before_ok = true;
    if let Some(b) = &job.entry.before {
        ctx.log.event(name, &format!("hook before: {b}"));
        if let Err(e) = run_hook(b, &env("running"), job.hook_timeout, prio) {
            before_ok = false;
            r.result = "failed".into();
            r.error = Some(format!("before hook: {e:#}; job skipped"));
        }
    }
    if before_ok {
        match backup_job(ctx, job, prio, &mut r) {
            Ok(()) => {}
            Err(e) => {
                r.result = "failed".into();
                r.error = Some(format!("{e:#}"));
            }
        }
    }
    if let Some(a) = &job.entry.after {
        ctx.log.event(name, &format!("hook after: {a}"));
        if let Err(e) = run_hook(a, &env(&r.result), job.hook_timeout, prio) {
            ctx.log.problem(name, &format!("warning: after hook: {e:#}"));
            if r.result == "ok" {
                r.result = "failed".into();
                r.error = Some(format!("after hook: {e:#}"));
            }
        }
    }
    r.duration_s = start.elapsed().as_secs_f64();
    match &r.error {
        Some(e) => ctx.log.problem(name, &format!("{} duration={:.1}s: {e}", r.result, r.duration_s)),
        None => ctx.log.event(
            name,
            &format!(
                "ok duration={:.1}s read={} added={} snapshots={}",
                r.duration_s,
                r.bytes_read,
                r.bytes_added,
                r.snapshots.join(",")
            ),
        ),
    }
    Outcome { report: r }
}

fn excludes(job: &Job) -> Result<Excludes> {
    let e = &job.entry;
    let patterns = crate::cmd::select::pattern_set(&[], &[], &[("exclude", &e.exclude, false)])
        .with_context(|| format!("job {:?}: exclude", e.name))?;
    Ok(Excludes {
        patterns,
        caches: e.exclude_caches,
        if_present: e
            .exclude_if_present
            .iter()
            .map(|s| match s.split_once(':') {
                Some((n, c)) => IfPresent { name: n.into(), content: Some(c.into()) },
                None => IfPresent { name: s.clone(), content: None },
            })
            .collect(),
        larger_than: None,
        one_file_system: e.one_file_system,
    })
}

fn backup_job(ctx: &Ctx<'_>, job: &Job, prio: Priority, r: &mut JobReport) -> Result<()> {
    let name = job.name();
    let p: Plan = plan::plan(job)?;
    for n in &p.notes {
        ctx.log.event(name, n);
    }
    for c in &p.checks {
        ctx.log.event(name, &format!("check: {}", c.cmdline()));
        let out = Command::new(&c.argv[0])
            .args(&c.argv[1..])
            .envs(c.env.iter().cloned())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", c.argv[0]))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || !text.is_empty() {
            return Err(anyhow!(
                "table check of {} failed: {}{}",
                c.name,
                text,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    if p.paths.is_empty() && p.dumps.is_empty() {
        return Err(anyhow!("nothing to back up: no database left after the excludes"));
    }
    let mut tags = vec![job.tag()];
    tags.extend(job.entry.tags.iter().cloned());
    let out = StderrOut::default();
    let extra_env = |d: &plan::Dump| Extra { env: d.env.clone(), priority: prio };
    // With fan-out = "copy" the sources are read once, into the first
    // repository, and the snapshot is copied into the others.
    let (backed_up, copied_to) = match job.fan_out {
        FanOut::Copy => job.repositories.split_at(1),
        FanOut::Backup => (&job.repositories[..], &[][..]),
    };
    let mut first: Option<(Repository, arc_engine::Id)> = None;
    for repo_cfg in backed_up {
        let repo = open_repo(repo_cfg, Some(job.limits()))?;
        let slots = Slots::new(job.entry.dump_parallel.unwrap_or(2));
        for d in &p.dumps {
            ctx.log.event(name, &format!("dump {}: {}", d.name, d.cmdline()));
        }
        let streams = p.dumps.iter().map(|d| streams::source(d, &extra_env(d), &out, &slots)).collect();
        let opts = BackupOptions {
            paths: p.paths.clone(),
            streams,
            tags: tags.clone(),
            host: Some(ctx.host.clone()),
            cancel: Some(ctx.opts.cancel.clone()),
            excludes: excludes(job)?,
            limit_read: job.limit_read,
            record_as: job.entry.record_as.clone(),
            no_stream_deltas: !job.stream_deltas,
            ..Default::default()
        };
        let res = backup(&repo, opts, &NoProgress).with_context(|| format!("backup into {}", repo_cfg.name))?;
        let s = &res.snapshot.summary;
        r.bytes_read += s.bytes_read;
        r.bytes_added += s.bytes_added;
        r.snapshots.push(res.snapshot_id.short());
        if res.warnings > 0 {
            ctx.log.problem(
                name,
                &format!(
                    "warning: {} item(s) could not be read; snapshot {} is incomplete",
                    res.warnings,
                    res.snapshot_id.short()
                ),
            );
        }
        let snapshot_id = res.snapshot_id;
        // The run just saved is the history's last entry, judged against
        // the ones before it.
        if let Ok(all) = repo.snapshots() {
            if let Some(last) = history::runs(&all, &job.tag()).last() {
                r.expected_s = last.expected_s;
                if last.regression {
                    r.slow = true;
                    ctx.log.problem(
                        name,
                        &format!(
                            "warning: slow: took {:.1}s, more than twice the {:.1}s expected for {} bytes",
                            last.duration_s,
                            last.expected_s.unwrap_or(0.0),
                            last.bytes_read
                        ),
                    );
                }
            }
        }
        if first.is_none() {
            first = Some((repo, snapshot_id));
        }
    }
    if let Some((src, id)) = &first {
        // Every snapshot of this job and host, not only today's: one that a
        // failed copy left behind (the other side was down) follows with
        // the next run; those the target has are skipped by `copy`.
        let mut wanted = vec![*id];
        if let Ok(all) = src.snapshots() {
            let tag = job.tag();
            wanted.extend(
                all.iter()
                    .filter(|s| s.id != *id && s.file.host == ctx.host && s.file.tags.contains(&tag))
                    .map(|s| s.id),
            );
        }
        for repo_cfg in copied_to {
            let dst = open_repo(repo_cfg, Some(job.limits()))?;
            let opts = CopyOptions { snapshots: wanted.clone(), cancel: Some(ctx.opts.cancel.clone()) };
            let c = copy(src, &dst, &opts, &NoProgress)
                .with_context(|| format!("copy of snapshot {} into {}", id.short(), repo_cfg.name))?;
            for s in &c.copied {
                r.snapshots.push(s.target.short());
                ctx.log.event(
                    name,
                    &format!(
                        "copied snapshot {} into {} as {} ({} blobs, {} bytes added)",
                        s.source.short(),
                        repo_cfg.name,
                        s.target.short(),
                        c.blobs_added,
                        c.bytes_added
                    ),
                );
            }
        }
    }
    Ok(())
}

fn is_locked(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<arc_engine::Error>(), Some(arc_engine::Error::Locked { .. })))
}

fn retention_and_prune(ctx: &Ctx<'_>, jobs: &[&Job], reports: &mut [JobReport]) {
    let mut prune_wanted: BTreeMap<String, (Repo, Duration)> = BTreeMap::new();
    for (job, r) in jobs.iter().zip(reports.iter_mut()) {
        if r.result != "ok" {
            continue;
        }
        let Some(keep) = &job.keep else { continue };
        for repo_cfg in &job.repositories {
            let done = (|| -> Result<usize> {
                let repo = open_repo(repo_cfg, Some(job.limits()))?;
                let opts = ForgetOptions {
                    policy: policy(keep)?,
                    // The job's snapshots of this host are one series,
                    // whatever paths or databases they held over time.
                    group_by: GroupBy { host: false, paths: false, tags: false },
                    local: false,
                    filter: SnapshotFilter {
                        hosts: vec![ctx.host.clone()],
                        tags: vec![vec![job.tag()]],
                        paths: vec![],
                    },
                    ids: Vec::new(),
                    dry_run: false,
                };
                Ok(forget::forget(&repo, &opts)?.removed.len())
            })();
            match done {
                Ok(n) => {
                    ctx.log.event(job.name(), &format!("retention: removed {n} snapshot(s) from {}", repo_cfg.name))
                }
                // Another arc (a backup started by the next cron minute)
                // holds the repository: the snapshot is safe, and the next
                // run applies the same rules.
                Err(e) if is_locked(&e) => {
                    ctx.log.problem(job.name(), &format!("warning: retention postponed to the next run: {e:#}"));
                }
                Err(e) => {
                    ctx.log.problem(job.name(), &format!("failed: retention: {e:#}"));
                    r.result = "failed".into();
                    r.error = Some(format!("retention: {e:#}"));
                }
            }
            if let Some(every) = job.prune.and_then(|p| p.0) {
                let e = prune_wanted.entry(repo_cfg.shown()).or_insert((repo_cfg.clone(), every));
                e.1 = e.1.min(every);
            }
        }
    }
    let mut seen = HashSet::new();
    for (key, (repo_cfg, every)) in prune_wanted {
        if !seen.insert(key) {
            continue;
        }
        let result = (|| -> Result<Option<String>> {
            let repo = open_repo(&repo_cfg, None)?;
            let id = repo.config().id.to_hex();
            let last = ctx.state.last_prune(&id);
            if last.is_some_and(|l| Utc::now() - l < chrono::Duration::from_std(every).unwrap_or_default()) {
                return Ok(None);
            }
            let r = prune::prune(&repo, &PruneOptions { max_unused: 0.1, ..Default::default() }, &NoProgress)?;
            ctx.state.record_prune(&id, Utc::now())?;
            Ok(Some(format!("deleted {} pack(s), rewrote {}", r.packs_deleted, r.packs_repacked)))
        })();
        match result {
            Ok(Some(msg)) => ctx.log.event("-", &format!("prune {}: {msg}", repo_cfg.name)),
            Ok(None) => {}
            Err(e) if is_locked(&e) => {
                ctx.log.problem("-", &format!("warning: prune {} postponed to the next run: {e:#}", repo_cfg.name))
            }
            Err(e) => ctx.log.problem("-", &format!("warning: prune {} failed: {e:#}", repo_cfg.name)),
        }
    }
}

fn dry_run(jobs: &[&Job], opts: &RunOptions) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    if opts.json {
        let names: Vec<&str> = jobs.iter().map(|j| j.name()).collect();
        crate::cmd::print_json(&serde_json::json!({ "dry_run": true, "jobs": names }))?;
        return Ok(0);
    }
    let mut failed = 0;
    for job in jobs {
        writeln!(out, "job {} ({}):", job.name(), job.kind())?;
        let repos: Vec<String> = job.repositories.iter().map(|r| format!("{} ({})", r.name, r.shown())).collect();
        match (job.fan_out, repos.split_first()) {
            (FanOut::Copy, Some((first, rest))) if !rest.is_empty() => {
                writeln!(out, "  into {first} with tag {}, then copied into {}", job.tag(), rest.join(", "))?
            }
            _ => writeln!(out, "  into {} with tag {}", repos.join(", "), job.tag())?,
        }
        if let Some(b) = &job.entry.before {
            writeln!(out, "  before: {b}")?;
        }
        match plan::plan(job) {
            Ok(p) => {
                for path in &p.paths {
                    match &job.entry.record_as {
                        Some(r) => writeln!(out, "  read {} (recorded as {})", path.display(), r.display())?,
                        None => writeln!(out, "  read {}", path.display())?,
                    }
                }
                for e in &job.entry.exclude {
                    writeln!(out, "  exclude {e}")?;
                }
                for n in &p.notes {
                    writeln!(out, "  note: {n}")?;
                }
                for c in &p.checks {
                    writeln!(out, "  check: {}", c.cmdline())?;
                }
                for d in &p.dumps {
                    writeln!(out, "  stream {}: {}", d.name, d.cmdline())?;
                }
            }
            Err(e) => {
                failed += 1;
                writeln!(out, "  cannot plan: {e:#}")?;
            }
        }
        if let Some(a) = &job.entry.after {
            writeln!(out, "  after: {a}")?;
        }
        if let Some(l) = job.limit_read {
            writeln!(out, "  limit-read {}/s", crate::ui::size(l))?;
        }
        if let Some(l) = job.limit_upload {
            writeln!(out, "  limit-upload {}/s", crate::ui::size(l))?;
        }
        if let Some(l) = job.limit_download {
            writeln!(out, "  limit-download {}/s", crate::ui::size(l))?;
        }
        if !job.stream_deltas {
            writeln!(out, "  stream-deltas off: dump streams stored plainly")?;
        }
    }
    writeln!(out, "dry run: {} job(s), nothing was run", jobs.len())?;
    Ok(if failed > 0 { 1 } else { 0 })
}
