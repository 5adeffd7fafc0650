//! Spread scheduling: a job with `spread = "24h"` starts at a fixed offset
//! inside each window of that length (windows counted from the Unix epoch,
//! UTC), the offset derived from a hash of its name alone, so thousands of
//! jobs on thousands of hosts spread evenly and each keeps its own time
//! from day to day without any coordination. `arc run --due` (from cron
//! every minute, or the systemd timer) runs the jobs whose start has come
//! since their last attempt.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::config::Job;
use super::state::JobState;

/// The job's offset inside its window, in seconds.
pub fn offset(name: &str, spread: Duration) -> u64 {
    let window = spread.as_secs().max(1);
    let h = blake3::hash(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    // 2^64 is so much larger than any window that the modulo's bias is
    // below one part in 10^12.
    u64::from_le_bytes(b) % window
}

/// The latest start at or before `now`.
pub fn slot(name: &str, spread: Duration, now: DateTime<Utc>) -> DateTime<Utc> {
    let w = spread.as_secs().max(1) as i64;
    let off = offset(name, spread) as i64;
    let t = now.timestamp();
    let start = (t - off).div_euclid(w) * w + off;
    Utc.timestamp_opt(start, 0).single().unwrap_or(now)
}

/// The next start after `now`.
pub fn next(name: &str, spread: Duration, now: DateTime<Utc>) -> DateTime<Utc> {
    slot(name, spread, now) + chrono::Duration::seconds(spread.as_secs().max(1) as i64)
}

/// How long after its start a job that never ran is still due: one cron
/// minute. A job with a recorded attempt is due until it runs (a missed
/// minute is caught up); a new one waits for its own time rather than
/// every new job of a fleet starting at the first `--due`.
const FIRST_RUN_GRACE: i64 = 60;

/// Seconds after a failed attempt that `--due` tries the job again.
pub const RETRY_FAILED_S: i64 = 15 * 60;

/// Whether `job` is due at `now`. A job without `spread` is due when its
/// last attempt is a window (24 h) old or it never ran.
pub fn due(job: &Job, state: &JobState, now: DateTime<Utc>) -> bool {
    // A failed attempt (a dump server restarting, the repository locked by
    // a prune) is retried after a pause rather than a whole window later.
    if let Some(a) = state.last.as_ref().filter(|a| a.result == "failed") {
        if now - a.end >= chrono::Duration::seconds(RETRY_FAILED_S) {
            return true;
        }
    }
    let last = state.last.as_ref().map(|a| a.start);
    match job.spread {
        Some(spread) => {
            let s = slot(job.name(), spread, now);
            match last {
                Some(l) => l < s,
                None => (now - s).num_seconds() < FIRST_RUN_GRACE,
            }
        }
        None => last.is_none_or(|l| now - l >= chrono::Duration::hours(24)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_job_is_retried_after_a_pause() {
        let cfg = crate::job::config::Config::parse(
            std::path::Path::new("t.toml"),
            "repository = \"/r\"\n[[jobs]]\nname = \"a\"\nkind = \"command\"\ncommand = \"x\"\nstream = \"x\"\nspread = \"24h\"\n",
        )
        .unwrap();
        let job = &cfg.jobs[0];
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 3, 0, 0).unwrap();
        let attempt = |result: &str, ago: i64| super::super::state::Attempt {
            start: now - chrono::Duration::seconds(ago + 10),
            end: now - chrono::Duration::seconds(ago),
            result: result.into(),
            error: None,
            snapshots: vec![],
            bytes_read: 0,
            bytes_added: 0,
        };
        let st = |a| JobState { last: Some(a), last_success: None };
        assert!(!due(job, &st(attempt("ok", 60)), now), "ran a minute ago");
        assert!(!due(job, &st(attempt("failed", 60)), now), "failed a minute ago: pause");
        assert!(due(job, &st(attempt("failed", RETRY_FAILED_S)), now), "failed 15 minutes ago: retry");
    }

    #[test]
    fn offsets_are_stable_and_inside_the_window() {
        let day = Duration::from_secs(86_400);
        assert_eq!(offset("db-0001", day), offset("db-0001", day));
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 3, 0, 0).unwrap();
        for i in 0..1000 {
            let n = format!("site{i}");
            let s = slot(&n, day, now);
            assert!(s <= now && now - s < chrono::Duration::days(1));
            assert_eq!(next(&n, day, now) - s, chrono::Duration::days(1));
        }
    }
}
