//! `arc diff A B`: the changes between two snapshots, one line each.

use anyhow::Result;
use arc_engine::ops::diff::{diff, Change, DiffStats, Modifier};

use super::{find_snapshot, Env};
use crate::args::DiffArgs;
use crate::ui::size;

/// One change (docs/json.md).
#[derive(serde::Serialize)]
struct ChangeLine<'a> {
    message_type: &'static str,
    #[serde(flatten)]
    change: &'a Change,
}

/// The last line (docs/json.md).
#[derive(serde::Serialize)]
struct Statistics<'a> {
    message_type: &'static str,
    source_snapshot: String,
    target_snapshot: String,
    #[serde(flatten)]
    stats: &'a DiffStats,
}

pub fn run(env: &Env, a: DiffArgs) -> Result<u8> {
    let repo = env.open_read()?;
    let s1 = find_snapshot(&repo, &a.snapshot1, &a.filter)?;
    let s2 = find_snapshot(&repo, &a.snapshot2, &a.filter)?;
    let json = env.json;
    let mut print = |c: Change| -> arc_engine::Result<()> {
        if a.content_only && c.modifier == Modifier::Metadata {
            return Ok(());
        }
        let r = if json {
            super::print_json_line(&ChangeLine { message_type: "change", change: &c })
        } else {
            use std::io::Write;
            let m = match c.modifier {
                Modifier::Added => "+",
                Modifier::Removed => "-",
                Modifier::Modified => "M",
                Modifier::Metadata => "U",
                Modifier::TypeChanged => "T",
            };
            let slash = if c.is_dir { "/" } else { "" };
            let mut detail = c.what.join(", ");
            if let (Some(b), Some(a)) = (c.size_before, c.size_after) {
                if b != a {
                    detail = format!("{detail}: {} -> {}", size(b), size(a));
                }
            }
            let detail = if detail.is_empty() { String::new() } else { format!("  ({detail})") };
            let path = crate::ui::shown(std::path::Path::new(&c.path));
            writeln!(std::io::stdout().lock(), "{m}    {path}{slash}{detail}").map_err(anyhow::Error::from)
        };
        // A closed pipe (| head) ends the listing like an error would.
        r.map_err(|_| arc_engine::Error::Interrupted)
    };
    let stats = match diff(&repo, &s1.file.tree, &s2.file.tree, &mut print) {
        Err(arc_engine::Error::Interrupted) => return Ok(0),
        r => r?,
    };
    if json {
        super::print_json_line(&Statistics {
            message_type: "statistics",
            source_snapshot: s1.id.to_hex(),
            target_snapshot: s2.id.to_hex(),
            stats: &stats,
        })?;
    } else {
        outln!(
            "\n{} -> {}: {} files changed, {} metadata only, {} type changed; \
             added {} files, {} dirs ({}); removed {} files, {} dirs ({})",
            s1.id.short(),
            s2.id.short(),
            stats.changed_files,
            stats.metadata_only,
            stats.type_changed,
            stats.added.files,
            stats.added.dirs,
            size(stats.added.bytes),
            stats.removed.files,
            stats.removed.dirs,
            size(stats.removed.bytes)
        )?;
    }
    Ok(0)
}
