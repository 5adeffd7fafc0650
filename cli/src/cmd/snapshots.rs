use anyhow::Result;
use arc_engine::{Snapshot, SnapshotFilter};

use super::Env;
use crate::args::SnapshotsArgs;
use crate::ui::size;

/// The JSON form of a snapshot; field names follow restic's.
pub fn snapshot_json(s: &Snapshot) -> serde_json::Value {
    let f = &s.file;
    serde_json::json!({
        "id": s.id,
        "short_id": s.id.short(),
        "time": f.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "host": f.host,
        "hostname": f.host,
        "username": f.username,
        "uid": f.uid,
        "gid": f.gid,
        "paths": f.paths,
        "tags": f.tags,
        "parent": f.parent,
        "tree": f.tree,
        "program_version": f.program_version,
        "summary": f.summary,
    })
}

pub fn run(env: &Env, a: SnapshotsArgs) -> Result<u8> {
    let repo = env.open()?;
    let filter: SnapshotFilter = a.filter.into();
    let snaps: Vec<Snapshot> = repo.snapshots()?.into_iter().filter(|s| filter.matches(&s.file)).collect();
    if env.json {
        super::print_json(&snaps.iter().map(snapshot_json).collect::<Vec<_>>())?;
        return Ok(0);
    }
    let header = ["ID", "Time", "Host", "Tags", "Paths", "Size"];
    let rows: Vec<[String; 6]> = snaps
        .iter()
        .map(|s| {
            let f = &s.file;
            [
                s.id.short(),
                f.time.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string(),
                f.host.clone(),
                f.tags.join(","),
                f.paths.join(" "),
                size(f.summary.total_bytes),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
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
    println!("{}", line(&header.map(String::from)));
    println!("{}", "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
    for r in &rows {
        println!("{}", line(r));
    }
    println!("{} snapshot(s)", rows.len());
    Ok(0)
}
