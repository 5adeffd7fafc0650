//! `arc status`: per job, the last successful backup (from the snapshots
//! in its repositories), its age against `max-age`, its size, and the last
//! attempt's result (from this host's state). Text, `--json` (also the
//! input of a fleet-wide `--html`), `--prometheus FILE` (a node-exporter
//! textfile) and `--html FILE`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::config::Config;
use super::history::{self, Run};
use super::runner::open_repo;
use super::state::State;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    pub job: String,
    pub kind: String,
    pub host: String,
    pub repositories: Vec<String>,
    pub last_success: Option<DateTime<Utc>>,
    pub age_s: Option<i64>,
    pub max_age_s: Option<u64>,
    pub stale: bool,
    /// Logical size of the last successful snapshot.
    pub size_bytes: u64,
    /// ok | failed | skipped | never
    pub last_result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub history: Vec<Run>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub host: String,
    pub generated: DateTime<Utc>,
    pub jobs: Vec<JobStatus>,
}

/// Snapshots older than this many runs are left out of the chart data.
const HISTORY_RUNS: usize = 60;

pub fn collect(cfg: &Config, now: DateTime<Utc>) -> Result<Report> {
    let host = cfg.host();
    let state = State::new(cfg.state_dir()?);
    let mut jobs = Vec::new();
    // Each repository is opened and listed once, whatever the number of
    // jobs in it.
    let mut cache: Vec<(PathBuf, Result<Vec<arc_engine::Snapshot>, String>)> = Vec::new();
    for job in &cfg.jobs {
        let mut error = None;
        let mut runs: Vec<Run> = Vec::new();
        for r in &job.repositories {
            if !cache.iter().any(|(p, _)| p == &r.path) {
                let listed = open_repo(r, Some(job.limits()))
                    .and_then(|repo| Ok(repo.snapshots()?))
                    .map_err(|e| format!("{e:#}"));
                cache.push((r.path.clone(), listed));
            }
            let Some((_, listed)) = cache.iter().find(|(p, _)| p == &r.path) else { continue };
            match listed {
                Ok(all) => {
                    let mine: Vec<arc_engine::Snapshot> = all.iter().filter(|s| s.file.host == host).cloned().collect();
                    runs.extend(history::runs(&mine, &job.tag()));
                }
                Err(e) => error = Some(e.clone()),
            }
        }
        runs.sort_by_key(|r| r.time);
        // A snapshot copied into the job's other repositories (fan-out =
        // "copy") keeps its time: one run, not one per repository.
        runs.dedup_by_key(|r| r.time);
        let st = state.load(job.name());
        let last = runs.last();
        // A repository that cannot be read now (its server down, a
        // credential expired) does not make the last success "never": this
        // host's record of its last successful run stands in, so the age a
        // monitor sees stays true and the error shows beside it.
        let recorded = st.last_success.as_ref().filter(|_| error.is_some()).map(|a| a.start);
        let last_success = match (last.map(|r| r.time), recorded) {
            (Some(listed), Some(recorded)) => Some(listed.max(recorded)),
            (listed, recorded) => listed.or(recorded),
        };
        let age_s = last_success.map(|t| (now - t).num_seconds().max(0));
        let max_age_s = job.max_age.map(|d| d.as_secs());
        let stale = match (max_age_s, age_s) {
            (Some(m), Some(a)) => a as u64 > m,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let (last_result, last_error, last_attempt) = match &st.last {
            Some(a) => (a.result.clone(), a.error.clone(), Some(a.start)),
            None if last.is_some() => ("ok".to_string(), None, None),
            None => ("never".to_string(), None, None),
        };
        let keep_from = runs.len().saturating_sub(HISTORY_RUNS);
        jobs.push(JobStatus {
            job: job.name().to_string(),
            kind: job.kind().to_string(),
            host: host.clone(),
            repositories: job.repositories.iter().map(|r| r.name.clone()).collect(),
            last_success,
            age_s,
            max_age_s,
            stale,
            size_bytes: last.map(|r| r.total_bytes).unwrap_or(0),
            last_result,
            last_error,
            last_attempt,
            error,
            history: runs.split_off(keep_from),
        });
    }
    Ok(Report { host, generated: now, jobs })
}

/// "3h 12m", "2d 4h", "45s".
pub fn age(secs: i64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

pub fn print_text(r: &Report) -> Result<()> {
    let rows: Vec<Vec<String>> = r
        .jobs
        .iter()
        .map(|j| {
            vec![
                j.job.clone(),
                j.kind.clone(),
                j.last_success.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_else(|| "never".into()),
                j.age_s.map(age).unwrap_or_else(|| "-".into()),
                j.max_age_s.map(|m| age(m as i64)).unwrap_or_else(|| "-".into()),
                crate::ui::size(j.size_bytes),
                match (&j.error, j.stale) {
                    (Some(_), _) => "ERROR".into(),
                    (None, true) => format!("STALE ({})", j.last_result),
                    (None, false) => j.last_result.clone(),
                },
            ]
        })
        .collect();
    crate::cmd::print_table(&["Job", "Kind", "Last success (UTC)", "Age", "Max age", "Size", "Result"], &rows)?;
    for j in &r.jobs {
        if let Some(e) = j.error.as_ref().or(j.last_error.as_ref()) {
            outln!("{}: {e}", j.job)?;
        }
    }
    Ok(())
}

/// Name, type, help text and value of one gauge.
type Metric = (&'static str, &'static str, &'static str, fn(&JobStatus) -> Option<f64>);

/// Label values escaped as the text exposition format asks.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub fn prometheus(r: &Report) -> String {
    let mut out = String::new();
    let metrics: [Metric; 7] = [
        ("arc_job_last_success_timestamp_seconds", "gauge", "Unix time of the job's last successful backup.", |j| {
            j.last_success.map(|t| t.timestamp() as f64)
        }),
        ("arc_job_age_seconds", "gauge", "Seconds since the job's last successful backup.", |j| {
            j.age_s.map(|a| a as f64)
        }),
        ("arc_job_max_age_seconds", "gauge", "The job's max-age.", |j| j.max_age_s.map(|a| a as f64)),
        ("arc_job_stale", "gauge", "1 when the last success is older than max-age (or there is none).", |j| {
            Some(if j.stale { 1.0 } else { 0.0 })
        }),
        ("arc_job_last_run_success", "gauge", "1 when the job's last attempt succeeded.", |j| {
            Some(if j.last_result == "ok" { 1.0 } else { 0.0 })
        }),
        ("arc_job_size_bytes", "gauge", "Logical size of the last successful snapshot.", |j| Some(j.size_bytes as f64)),
        ("arc_job_last_duration_seconds", "gauge", "Duration of the last successful backup.", |j| {
            j.history.last().map(|r| r.duration_s)
        }),
    ];
    for (name, kind, help, f) in metrics {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for j in &r.jobs {
            if let Some(v) = f(j) {
                out.push_str(&format!("{name}{{job=\"{}\",host=\"{}\"}} {v}\n", label(&j.job), label(&j.host)));
            }
        }
    }
    out
}

/// Reports from `arc status --json` files of other hosts.
pub fn read_reports(files: &[PathBuf]) -> Result<Vec<Report>> {
    files
        .iter()
        .map(|f| {
            let b = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            serde_json::from_slice(&b).map_err(|e| anyhow!("{}: not an `arc status --json` output: {e}", f.display()))
        })
        .collect()
}

pub fn write(path: &Path, data: &[u8]) -> Result<()> {
    super::state::write_file_atomic(path, data)
}
