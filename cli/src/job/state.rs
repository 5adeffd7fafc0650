//! What `arc run` keeps on this host between runs, under
//! $XDG_STATE_HOME/arc (or `[run] state-dir`): each job's last attempt and
//! last success (`jobs/NAME.json`), the per-job locks (`locks/NAME.lock`)
//! and when each repository was last pruned (`prune/ID`). It is per-host
//! state, not repository data: the durations and sizes of successful runs
//! are read back from the snapshots themselves (their summary records
//! start, end and bytes), so every host sees the same history.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    /// When the run started (for `--due`: the clock the run was given).
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// ok | failed | skipped
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub snapshots: Vec<String>,
    #[serde(default)]
    pub bytes_read: u64,
    #[serde(default)]
    pub bytes_added: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobState {
    pub last: Option<Attempt>,
    pub last_success: Option<Attempt>,
}

pub struct State {
    dir: PathBuf,
}

impl State {
    pub fn new(dir: PathBuf) -> State {
        State { dir }
    }

    fn job_file(&self, name: &str) -> PathBuf {
        self.dir.join("jobs").join(format!("{name}.json"))
    }

    pub fn load(&self, name: &str) -> JobState {
        // A missing or damaged state file means "no run known": the
        // snapshots still say when the last success was.
        std::fs::read(self.job_file(name)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    pub fn record(&self, name: &str, a: &Attempt) -> Result<()> {
        let mut s = self.load(name);
        if a.result == "ok" {
            s.last_success = Some(a.clone());
        }
        s.last = Some(a.clone());
        write_atomic(&self.job_file(name), &serde_json::to_vec_pretty(&s)?)
    }

    /// Takes the job's lock without waiting; `None` when another arc holds
    /// it (the job is running). Released when the returned file closes,
    /// also when arc dies: flock(2) locks go with the descriptor.
    pub fn try_lock(&self, name: &str) -> Result<Option<File>> {
        let dir = self.dir.join("locks");
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{name}.lock"));
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the job lock {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Ok(None);
            }
            return Err(anyhow!("cannot lock {}: {e}", path.display()));
        }
        Ok(Some(f))
    }

    fn prune_file(&self, repo_id: &str) -> PathBuf {
        self.dir.join("prune").join(repo_id)
    }

    pub fn last_prune(&self, repo_id: &str) -> Option<DateTime<Utc>> {
        let s = std::fs::read_to_string(self.prune_file(repo_id)).ok()?;
        DateTime::parse_from_rfc3339(s.trim()).ok().map(|t| t.with_timezone(&Utc))
    }

    pub fn record_prune(&self, repo_id: &str, at: DateTime<Utc>) -> Result<()> {
        write_atomic(&self.prune_file(repo_id), at.to_rfc3339().as_bytes())
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn write_file_atomic(path: &Path, data: &[u8]) -> Result<()> {
    write_atomic(path, data)
}
