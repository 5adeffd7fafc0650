//! A job's history, read from its snapshots (tag `job:NAME`; each records
//! when it started and ended and how many bytes it read and added), and
//! the expected duration: a least-squares line through (bytes read,
//! seconds) of the earlier runs, as operators estimate dump windows. A run
//! taking more than twice its expectation is flagged before the growth
//! turns into a missed window.

use serde::{Deserialize, Serialize};

use arc_engine::Snapshot;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub time: chrono::DateTime<chrono::Utc>,
    pub snapshot: String,
    pub duration_s: f64,
    pub bytes_read: u64,
    pub bytes_added: u64,
    pub total_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_s: Option<f64>,
    pub regression: bool,
}

/// Fewer earlier runs than this give no expectation.
const MIN_RUNS: usize = 3;
/// Runs shorter than this are never flagged: at that scale the noise of
/// process start and repository open is the duration.
const MIN_FLAGGED_S: f64 = 2.0;

pub fn runs(snapshots: &[Snapshot], tag: &str) -> Vec<Run> {
    let mut v: Vec<&Snapshot> = snapshots.iter().filter(|s| s.file.tags.iter().any(|t| t == tag)).collect();
    v.sort_by_key(|s| s.file.time);
    let mut out: Vec<Run> = Vec::new();
    for s in v {
        let sum = &s.file.summary;
        let duration_s = match (sum.backup_start, sum.backup_end) {
            (Some(a), Some(b)) => (b - a).num_milliseconds().max(0) as f64 / 1000.0,
            _ => continue,
        };
        let expected_s = expect(&out, sum.bytes_read);
        let regression = expected_s.is_some_and(|e| duration_s > 2.0 * e && duration_s >= MIN_FLAGGED_S);
        out.push(Run {
            time: s.file.time,
            snapshot: s.id.short(),
            duration_s,
            bytes_read: sum.bytes_read,
            bytes_added: sum.bytes_added,
            total_bytes: sum.total_bytes,
            expected_s,
            regression,
        });
    }
    out
}

/// The duration the earlier `runs` predict for reading `bytes`.
pub fn expect(runs: &[Run], bytes: u64) -> Option<f64> {
    if runs.len() < MIN_RUNS {
        return None;
    }
    let n = runs.len() as f64;
    let mx = runs.iter().map(|r| r.bytes_read as f64).sum::<f64>() / n;
    let my = runs.iter().map(|r| r.duration_s).sum::<f64>() / n;
    let sxx: f64 = runs.iter().map(|r| (r.bytes_read as f64 - mx).powi(2)).sum();
    let sxy: f64 = runs.iter().map(|r| (r.bytes_read as f64 - mx) * (r.duration_s - my)).sum();
    // All runs of one size: the mean is the model. A negative slope
    // (noise) is no model of growth either.
    let slope = if sxx > 0.0 { (sxy / sxx).max(0.0) } else { 0.0 };
    // Below the mean size the line may reach zero; no run takes no time.
    Some((my + slope * (bytes as f64 - mx)).max(0.001))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: u64, s: f64) -> Run {
        Run {
            time: chrono::Utc::now(),
            snapshot: String::new(),
            duration_s: s,
            bytes_read: bytes,
            bytes_added: 0,
            total_bytes: 0,
            expected_s: None,
            regression: false,
        }
    }

    #[test]
    fn linear_in_size() {
        let h = [run(100, 10.0), run(200, 20.0), run(300, 30.0)];
        let e = expect(&h, 400).unwrap();
        assert!((e - 40.0).abs() < 1e-6, "{e}");
        assert!(expect(&h[..2], 400).is_none());
    }
}
