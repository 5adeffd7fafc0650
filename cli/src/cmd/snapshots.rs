use anyhow::Result;
use arc_engine::format::snapshot::Summary;
use arc_engine::ops::forget;
use arc_engine::Id;
use arc_engine::{Snapshot, SnapshotFilter};

use super::{retention, Env};
use crate::args::SnapshotsArgs;
use crate::ui::size;

/// The JSON form of a snapshot (docs/json.md, `snapshots`); field names
/// follow restic's.
#[derive(serde::Serialize)]
pub struct SnapshotReport<'a, K: serde::Serialize> {
    pub id: Id,
    pub short_id: String,
    pub time: String,
    pub host: &'a str,
    /// restic's name for `host`.
    pub hostname: &'a str,
    pub username: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub paths: &'a [String],
    pub tags: &'a [String],
    pub parent: Option<Id>,
    pub tree: Id,
    pub program_version: &'a str,
    pub summary: &'a Summary,
    pub excludes: &'a [String],
    pub original: Option<Id>,
    /// With keep rules only: the rules that keep the snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_by: Option<K>,
}

impl<'a, K: serde::Serialize> SnapshotReport<'a, K> {
    pub fn new(s: &'a Snapshot, kept_by: Option<K>) -> Self {
        let f = &s.file;
        SnapshotReport {
            id: s.id,
            short_id: s.id.short(),
            time: f.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            host: &f.host,
            hostname: &f.host,
            username: &f.username,
            uid: f.uid,
            gid: f.gid,
            paths: &f.paths,
            tags: &f.tags,
            parent: f.parent,
            tree: f.tree,
            program_version: &f.program_version,
            summary: &f.summary,
            excludes: &f.excludes,
            original: f.original,
            kept_by,
        }
    }
}

pub fn run(env: &Env, a: SnapshotsArgs) -> Result<u8> {
    let repo = env.open_read()?;
    let filter: SnapshotFilter = a.filter.into();
    // List what can be read; name each damaged snapshot file and fail at
    // the end, so that one bad file neither hides the others nor goes unseen.
    let (all, damaged) = repo.readable_snapshots()?;
    for (_, e) in &damaged {
        eprintln!("arc: warning: {e}");
    }
    let failed = if damaged.is_empty() { 0 } else { 1 };
    // Named snapshots resolve as everywhere else (a prefix that is
    // ambiguous or matches nothing is an error naming it).
    let mut named = std::collections::HashSet::new();
    for spec in &a.snapshots {
        named.insert(repo.find_snapshot(spec, &filter)?.id);
    }
    let snaps: Vec<Snapshot> = all.into_iter().filter(|s| filter.matches(&s.file)).collect();
    // Only with keep rules: the policy is evaluated in memory over what was
    // listed anyway, and a plain listing does not pay even that.
    let kept_by = if retention::has_rules(&a.keep) {
        let (policy, group_by) = retention::policy(&a.keep)?;
        Some(forget::evaluate(&snaps, &policy, group_by, a.keep.local).reasons)
    } else {
        None
    };
    // After the policy, which must see every snapshot to say what it keeps.
    let shown = latest_of_each(&snaps, a.latest);
    let snaps: Vec<(usize, &Snapshot)> =
        snaps.iter().enumerate().filter(|(i, s)| shown[*i] && (named.is_empty() || named.contains(&s.id))).collect();
    if env.json {
        let list: Vec<_> =
            snaps.iter().map(|&(i, s)| SnapshotReport::new(s, kept_by.as_ref().map(|k| &k[i]))).collect();
        super::print_json(&list)?;
        return Ok(failed);
    }
    let mut header = vec!["ID", "Time", "Host", "Tags", "Paths", "Size"];
    if kept_by.is_some() {
        header.push("Kept by");
    }
    let rows: Vec<Vec<String>> = snaps
        .iter()
        .map(|&(i, s)| {
            let f = &s.file;
            let mut row = vec![
                s.id.short(),
                f.time.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string(),
                f.host.clone(),
                f.tags.join(","),
                f.paths.iter().map(|p| crate::ui::shown(std::path::Path::new(p))).collect::<Vec<_>>().join(" "),
                size(f.summary.total_bytes),
            ];
            if let Some(k) = &kept_by {
                // "-": the policy would forget it.
                row.push(if k[i].is_empty() { "-".into() } else { retention::labels(&k[i]) });
            }
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths.iter())
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    outln!("{}", line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>()))?;
    outln!("{}", "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)))?;
    for r in &rows {
        outln!("{}", line(r))?;
    }
    outln!("{} snapshot(s)", rows.len())?;
    if failed != 0 {
        eprintln!("arc: error: {} snapshot file(s) could not be read (see warnings above)", damaged.len());
    }
    Ok(failed)
}

/// Which of `snaps` (oldest first) `--latest N` shows: the newest N of each
/// host and set of paths, as restic groups them; all without `--latest`.
fn latest_of_each(snaps: &[Snapshot], latest: Option<usize>) -> Vec<bool> {
    let Some(n) = latest else { return vec![true; snaps.len()] };
    let mut seen: std::collections::HashMap<(&str, Vec<&str>), usize> = Default::default();
    let mut shown = vec![false; snaps.len()];
    for (i, s) in snaps.iter().enumerate().rev() {
        let mut paths: Vec<&str> = s.file.paths.iter().map(String::as_str).collect();
        paths.sort_unstable();
        let count = seen.entry((s.file.host.as_str(), paths)).or_default();
        if *count < n {
            *count += 1;
            shown[i] = true;
        }
    }
    shown
}
