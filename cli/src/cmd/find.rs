//! `arc find PATTERN...`: in which snapshots matching entries are, one line
//! per match per snapshot.

use anyhow::Result;
use arc_engine::ops::find::{find, FindOptions, FindStats, Found};
use arc_engine::patterns::{PatternSet, PatternSpec};
use arc_engine::{Snapshot, SnapshotFilter};

use super::{find_snapshot, Env};
use crate::args::FindArgs;
use crate::ui::size;

/// One match (docs/json.md).
#[derive(serde::Serialize)]
struct Match<'a> {
    message_type: &'static str,
    snapshot_id: String,
    short_id: String,
    snapshot_time: String,
    #[serde(flatten)]
    found: &'a Found,
}

/// The last line (docs/json.md).
#[derive(serde::Serialize)]
struct Summary<'a> {
    message_type: &'static str,
    #[serde(flatten)]
    stats: &'a FindStats,
}

pub fn run(env: &Env, a: FindArgs) -> Result<u8> {
    let patterns = PatternSet::new(
        a.patterns
            .iter()
            .map(|p| PatternSpec { pattern: p.clone(), origin: "find".into(), case_insensitive: a.ignore_case })
            .collect(),
    )
    .map_err(|e| super::usage(e.to_string()))?;
    let repo = env.open_read()?;
    let snapshots: Vec<Snapshot> = if a.snapshots.is_empty() {
        let filter: SnapshotFilter = a.filter.clone().into();
        repo.snapshots()?.into_iter().filter(|s| filter.matches(&s.file)).collect()
    } else {
        a.snapshots.iter().map(|s| find_snapshot(&repo, s, &a.filter)).collect::<Result<_>>()?
    };
    let opts = FindOptions { patterns, newest: a.newest, oldest: a.oldest };
    let json = env.json;
    let mut print = |s: &Snapshot, f: &Found| -> arc_engine::Result<()> {
        let r = if json {
            super::print_json_line(&Match {
                message_type: "match",
                snapshot_id: s.id.to_hex(),
                short_id: s.id.short(),
                snapshot_time: s.file.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                found: f,
            })
        } else {
            use std::io::Write;
            writeln!(
                std::io::stdout().lock(),
                "{}  {}  {:<7} {:>10}  {}  {}",
                s.id.short(),
                s.file.time.format("%Y-%m-%d %H:%M"),
                f.kind,
                if f.kind == "dir" { String::new() } else { size(f.size) },
                f.mtime.format("%Y-%m-%d %H:%M:%S"),
                crate::ui::shown(std::path::Path::new(&f.path))
            )
            .map_err(anyhow::Error::from)
        };
        r.map_err(|_| arc_engine::Error::Interrupted)
    };
    let stats = match find(&repo, &snapshots, &opts, &mut print) {
        Err(arc_engine::Error::Interrupted) => return Ok(0),
        r => r?,
    };
    if json {
        super::print_json_line(&Summary { message_type: "summary", stats: &stats })?;
    } else if stats.matches == 0 {
        eprintln!("arc: no match in {} snapshot(s)", stats.snapshots);
    }
    Ok(0)
}
