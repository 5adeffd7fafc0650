//! stats, repair, list, unlock.

use std::io::Write;

use anyhow::Result;
use arc_engine::storage::FileKind;

use super::Env;
use crate::args::{ListArgs, ListWhat, RepairCommand, RepairPacksArgs, UnlockArgs};
use crate::ui::{size, CliProgress};

pub fn stats(env: &Env) -> Result<u8> {
    let repo = env.open_read()?;
    let s = arc_engine::ops::stats::stats(&repo)?;
    if env.json {
        super::print_json(&s)?;
        return Ok(0);
    }
    outln!("repository         {}", repo.location())?;
    outln!("snapshots          {}", s.snapshots)?;
    outln!("logical size       {} in {} files", size(s.logical_bytes), s.logical_files)?;
    outln!("unique data        {} in {} data and {} tree blobs", size(s.unique_bytes), s.data_blobs, s.tree_blobs)?;
    outln!("stored             {} in {} packs", size(s.stored_bytes), s.packs)?;
    match (s.live_bytes, s.live_stored_bytes, s.unused_stored_bytes) {
        (Some(live), Some(live_stored), Some(unused)) => {
            outln!("live               {} ({} stored) reached by the snapshots", size(live), size(live_stored))?;
            outln!("unused             {} stored (`arc prune` frees it)", size(unused))?;
        }
        _ => outln!("live               unknown: {}", s.live_error.as_deref().unwrap_or("not computed"))?,
    }
    outln!("dedup ratio        {:.2}x", s.dedup_ratio)?;
    outln!("compression ratio  {:.2}x", s.compression_ratio)?;
    if s.stored_bytes > 0 {
        outln!("total saving       {:.2}x", s.logical_bytes as f64 / s.stored_bytes as f64)?;
    }
    Ok(0)
}

pub fn repair(env: &Env, cmd: RepairCommand) -> Result<u8> {
    let repo = env.open()?;
    match cmd {
        RepairCommand::Index => {
            let progress = CliProgress::new(env.quiet, "repair index");
            let r = arc_engine::ops::repair::repair_index(&repo, &progress);
            progress.finish();
            let r = r?;
            if env.json {
                super::print_json(&r)?;
            } else {
                outln!(
                    "indexed {} blobs in {} packs; wrote {} index file(s), removed {}",
                    r.blobs_indexed,
                    r.packs_indexed,
                    r.index_files_written,
                    r.index_files_removed
                )?;
                for p in &r.unreadable_packs {
                    outln!("unreadable pack: {p}")?;
                }
                // Not silent: the pack is damaged even if its data was kept
                // reachable; `check --read-data` tells what in it is intact.
                for p in &r.kept_old_entries {
                    outln!("damaged pack: {p}")?;
                }
            }
            Ok(if r.unreadable_packs.is_empty() { 0 } else { 1 })
        }
        RepairCommand::Packs(a) => repair_packs(env, &repo, a),
    }
}

/// Lines of a list shown before "and N more" (`--json` gives all).
const SHOWN: usize = 20;

fn repair_packs(env: &Env, repo: &arc_engine::Repository, a: RepairPacksArgs) -> Result<u8> {
    if a.packs.is_empty() && !env.quiet && !env.json {
        eprintln!("arc: no pack named: reading every pack to find the damaged ones");
    }
    let progress = CliProgress::new(env.quiet, "repair packs");
    let opts = arc_engine::ops::repair_packs::RepairPacksOptions { packs: a.packs };
    let r = arc_engine::ops::repair_packs::repair_packs(repo, &opts, &progress);
    progress.finish();
    let r = r?;
    if env.json {
        super::print_json(&r)?;
        return Ok(0);
    }
    outln!("read {} pack(s), {}", r.packs_read, size(r.bytes_read))?;
    for p in &r.packs_intact {
        outln!("pack {p}: intact, left as it is")?;
    }
    if r.packs_repaired.is_empty() {
        outln!("no damaged pack found; nothing was changed")?;
        return Ok(0);
    }
    for d in &r.damage {
        outln!("damage: {d}")?;
    }
    outln!(
        "salvaged {} blob(s) into {} new pack(s); took {} damaged pack(s) out of the index",
        r.blobs_salvaged,
        r.packs_written,
        r.packs_repaired.len()
    )?;
    if !r.packs_quarantined.is_empty() {
        outln!(
            "kept {} damaged pack(s) byte for byte under quarantine/ for recovery by hand; nothing reads them, \
             delete them once you no longer need them",
            r.packs_quarantined.len()
        )?;
    }
    if r.blobs_with_other_copy > 0 {
        outln!("{} damaged blob(s) have another copy in the repository", r.blobs_with_other_copy)?;
    }
    if r.blobs_lost.is_empty() {
        outln!("no blob was lost")?;
        return Ok(0);
    }
    outln!("lost {} blob(s):", r.blobs_lost.len())?;
    show_bounded(r.blobs_lost.iter().map(|b| format!("  {b}")), r.blobs_lost.len())?;
    outln!("{} path(s) in {} snapshot(s) refer to lost data:", r.affected.len(), r.affected_snapshots.len())?;
    show_bounded(r.affected.iter().map(|p| format!("  affects {p}")), r.affected.len())?;
    for t in &r.unreadable_trees {
        outln!("  tree {t} cannot be read: its directory lost entries")?;
    }
    outln!(
        "hint: `arc backup --force-read` of the same paths stores again what the sources still hold; \
         the older snapshots that share it are repaired with it"
    )?;
    Ok(0)
}

/// Prints the first [`SHOWN`] of `lines`, then how many more there are.
fn show_bounded(lines: impl Iterator<Item = String>, total: usize) -> Result<()> {
    for l in lines.take(SHOWN) {
        outln!("{l}")?;
    }
    if total > SHOWN {
        outln!("  ... and {} more (--json lists all)", total - SHOWN)?;
    }
    Ok(())
}

/// One line of `list --json` (docs/json.md, `list`): the fields the
/// plain listing prints, named.
#[derive(serde::Serialize)]
struct ListLine<'a> {
    message_type: &'a str,
    id: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pack: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
}

pub fn list(env: &Env, a: ListArgs) -> Result<u8> {
    let repo = env.open_read()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let json = env.json;
    // `text` is the plain line; with --json the same entry as one object.
    let mut emit =
        |what: &str, id: String, kind: Option<&str>, pack: Option<String>, size: Option<u64>, text: String| {
            if json {
                serde_json::to_writer(&mut out, &ListLine { message_type: what, id, kind, pack, size })
                    .map_err(std::io::Error::from)?;
                writeln!(out)
            } else {
                writeln!(out, "{text}")
            }
        };
    match a.what {
        ListWhat::Blobs => {
            repo.index()?.for_each_blob(|id, loc| {
                let kind = match loc.kind {
                    arc_engine::format::pack::BlobKind::Data => "data",
                    arc_engine::format::pack::BlobKind::Tree => "tree",
                };
                let text = format!("{kind} {id} {} {}", loc.pack, loc.raw_len);
                emit("blob", id.to_string(), Some(kind), Some(loc.pack.to_string()), Some(u64::from(loc.raw_len)), text)
                    .map_err(|e| arc_engine::Error::io("<stdout>", e))
            })?;
        }
        ListWhat::Packs => {
            for (name, len) in repo.storage().list(FileKind::Pack)? {
                emit("pack", name.clone(), None, None, Some(len), format!("{name} {len}"))?;
            }
        }
        ListWhat::Index => {
            for (name, _) in repo.storage().list(FileKind::Index)? {
                emit("index", name.clone(), None, None, None, name)?;
            }
        }
        ListWhat::Snapshots => {
            for id in repo.snapshot_ids()? {
                emit("snapshot", id.to_string(), None, None, None, id.to_string())?;
            }
        }
        ListWhat::Locks => {
            for (name, _) in repo.storage().list(FileKind::Lock)? {
                emit("lock", name.clone(), None, None, None, name)?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}

/// `unlock --json` (docs/json.md, `unlock`).
#[derive(serde::Serialize)]
struct UnlockJson {
    locks_removed: usize,
    sessions_removed: usize,
}

pub fn unlock(env: &Env, a: UnlockArgs) -> Result<u8> {
    let repo = env.open()?;
    let keys = repo.keys().map(|k| k.as_ref());
    let n = arc_engine::lock::remove_stale_locks(repo.storage().as_ref(), keys, a.remove_all)?;
    let s = arc_engine::session::remove_dead_sessions(repo.storage().as_ref(), keys, a.remove_all)?;
    if env.json {
        super::print_json(&UnlockJson { locks_removed: n, sessions_removed: s })?;
    } else if !env.quiet {
        outln!("removed {n} lock(s)")?;
        if s > 0 {
            outln!("removed {s} session file(s) of processes that are gone")?;
        }
    }
    Ok(0)
}
