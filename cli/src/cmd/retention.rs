//! `forget` and `prune`, and the policy evaluation `snapshots` shares for
//! its "Kept by" column.

use std::collections::HashSet;

use anyhow::Result;
use arc_engine::ops::forget::{self, ForgetOptions, ForgetReport, Verdict};
use arc_engine::ops::prune::{self, PruneOptions, PruneReport, PruneStep};
use arc_engine::ops::retention::{GroupBy, Policy, Reason};
use arc_engine::{Id, Repository};

use super::{usage, Env};
use crate::args::{ForgetArgs, KeepArgs, PruneArgs};
use crate::ui::{size, CliProgress};

/// Test hook, compiled in only with the `fault-injection` feature:
/// `ARC_FAULT_PRUNE_STEP=N` makes prune exit with status 9 right after step
/// N (see `arc_engine::ops::prune`), without unwinding or removing its
/// lock, as if it had been killed there.
#[cfg(feature = "fault-injection")]
const FAULT_ENV: &str = "ARC_FAULT_PRUNE_STEP";
#[cfg(feature = "fault-injection")]
const FAULT_EXIT: i32 = 9;

/// Any keep rule given?
pub fn has_rules(k: &KeepArgs) -> bool {
    k.keep_last.is_some()
        || k.keep_hourly.is_some()
        || k.keep_daily.is_some()
        || k.keep_decades.is_some()
        || k.keep_weekly.is_some()
        || k.keep_monthly.is_some()
        || k.keep_yearly.is_some()
        || k.keep_within.is_some()
        || !k.keep_tags.is_empty()
}

/// The keep rules given with 0, as typed.
fn zero_rules(k: &KeepArgs) -> Vec<String> {
    [
        ("--keep-last", k.keep_last),
        ("--keep-hourly", k.keep_hourly),
        ("--keep-daily", k.keep_daily),
        ("--keep-decades", k.keep_decades),
        ("--keep-weekly", k.keep_weekly),
        ("--keep-monthly", k.keep_monthly),
        ("--keep-yearly", k.keep_yearly),
    ]
    .into_iter()
    .filter(|(_, v)| *v == Some(0))
    .map(|(f, _)| format!("{f} 0"))
    .chain(k.keep_within.iter().filter(|w| zero_within(w)).map(|w| format!("--keep-within {w}")))
    .collect()
}

/// `--keep-within 0d` (or `0h`, `0y0m`): newer than the newest snapshot
/// itself is nothing, so it keeps no snapshot, like `--keep-last 0`.
fn zero_within(w: &str) -> bool {
    w.parse::<arc_engine::ops::retention::Within>().is_ok_and(|w| w == Default::default())
}

pub fn policy(k: &KeepArgs) -> Result<(Policy, GroupBy)> {
    // A bad value is a usage error (exit 2), like a bad number for a rule.
    let bad = |e: arc_engine::Error| usage(e.to_string());
    let within = match &k.keep_within {
        Some(w) if zero_within(w) => None,
        Some(w) => Some(w.parse().map_err(bad)?),
        None => None,
    };
    let policy = Policy {
        last: k.keep_last.unwrap_or(0),
        hourly: k.keep_hourly.unwrap_or(0),
        daily: k.keep_daily.unwrap_or(0),
        decades: k.keep_decades.unwrap_or(0),
        weekly: k.keep_weekly.unwrap_or(0),
        monthly: k.keep_monthly.unwrap_or(0),
        yearly: k.keep_yearly.unwrap_or(0),
        within,
        tags: super::tag_lists(k.keep_tags.clone()),
    };
    Ok((policy, k.group_by.parse().map_err(bad)?))
}

pub fn labels(reasons: &[Reason]) -> String {
    reasons.iter().map(Reason::label).collect::<Vec<_>>().join(" ")
}

fn show_time(v: &Verdict, local: bool) -> String {
    if local {
        v.time.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        v.time.format("%Y-%m-%d %H:%M:%S").to_string()
    }
}

/// Prints rows under a header, columns padded to their widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    outln!("{}", line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>()))?;
    for r in rows {
        outln!("{}", line(r))?;
    }
    Ok(())
}

fn verdict_rows(list: &[Verdict], local: bool, with_reasons: bool) -> Vec<Vec<String>> {
    list.iter()
        .map(|v| {
            let mut row = vec![v.short_id.clone(), show_time(v, local), v.tags.join(",")];
            if with_reasons {
                row.push(labels(&v.reasons));
            }
            row
        })
        .collect()
}

fn print_forget(r: &ForgetReport, local: bool) -> std::io::Result<()> {
    let zone = if local { "local time" } else { "UTC" };
    for g in &r.groups {
        outln!("{} (times in {zone}):", g.key)?;
        if !g.keep.is_empty() {
            outln!("keep {} snapshot(s):", g.keep.len())?;
            print_table(&["ID", "Time", "Tags", "Kept by"], &verdict_rows(&g.keep, local, true))?;
        }
        if !g.remove.is_empty() {
            outln!("{} {} snapshot(s):", if r.dry_run { "would remove" } else { "remove" }, g.remove.len())?;
            print_table(&["ID", "Time", "Tags"], &verdict_rows(&g.remove, local, false))?;
        }
        outln!()?;
    }
    if r.groups.is_empty() && !r.removed.is_empty() {
        let rows: Vec<Vec<String>> = r
            .removed
            .iter()
            .map(|v| {
                vec![
                    v.short_id.clone(),
                    show_time(v, local),
                    v.host.clone(),
                    v.paths.iter().map(|p| crate::ui::shown(std::path::Path::new(p))).collect::<Vec<_>>().join(" "),
                ]
            })
            .collect();
        print_table(&["ID", "Time", "Host", "Paths"], &rows)?;
    }
    if r.dry_run {
        outln!("would remove {} snapshot(s) (dry run: nothing was changed)", r.removed.len())?;
    } else {
        outln!("removed {} snapshot(s)", r.removed.len())?;
    }
    Ok(())
}

pub fn forget(env: &Env, a: ForgetArgs) -> Result<u8> {
    let rules = has_rules(&a.keep);
    if !a.ids.is_empty() && rules {
        return Err(usage("give either snapshot ids or --keep-* rules, not both"));
    }
    if a.ids.is_empty() && !rules {
        return Err(usage(
            "nothing to forget: give --keep-* rules (e.g. --keep-daily 7 --keep-monthly 12) or snapshot ids",
        ));
    }
    let (policy, group_by) = policy(&a.keep)?;
    if a.ids.is_empty() && policy.is_empty() {
        // Rules were given, but each keeps nothing (--keep-daily 0).
        return Err(usage(format!(
            "{} keeps no snapshot, so every snapshot would be forgotten; give a count of at least 1 \
             (e.g. --keep-daily 7), or name the snapshots to forget by id",
            zero_rules(&a.keep).join(" ")
        )));
    }
    let repo = env.open()?;
    let ids =
        a.ids.iter().map(|spec| Ok(repo.find_snapshot(spec, &Default::default())?.id)).collect::<Result<Vec<Id>>>()?;
    let opts =
        ForgetOptions { policy, group_by, local: a.keep.local, filter: a.filter.into(), ids, dry_run: a.dry_run };
    let report = forget::forget(&repo, &opts)?;
    let pruned = if a.prune {
        if !env.quiet {
            print_forget(&report, a.keep.local)?;
            outln!()?;
        }
        let ignore: HashSet<Id> =
            if a.dry_run { report.removed.iter().map(|v| v.id).collect() } else { HashSet::new() };
        Some(run_prune(env, &repo, a.max_unused, a.dry_run, a.instant, ignore)?)
    } else {
        None
    };
    if env.json {
        let mut v = serde_json::to_value(&report)?;
        if let (Some(p), Some(obj)) = (&pruned, v.as_object_mut()) {
            obj.insert("prune".into(), serde_json::to_value(PruneJson::from(p))?);
        }
        super::print_json(&v)?;
    } else if let Some(p) = &pruned {
        print_prune(p, env.quiet, repo.protocol().is_some() && !a.instant)?;
    } else if !env.quiet {
        print_forget(&report, a.keep.local)?;
    }
    Ok(0)
}

fn run_prune(
    env: &Env,
    repo: &Repository,
    max_unused: f64,
    dry_run: bool,
    instant: bool,
    ignore: HashSet<Id>,
) -> Result<PruneReport> {
    #[cfg(feature = "fault-injection")]
    let fault: Option<u32> = std::env::var(FAULT_ENV).ok().and_then(|v| v.trim().parse().ok());
    #[cfg(not(feature = "fault-injection"))]
    let fault: Option<u32> = None;
    let hook = move |s: PruneStep| {
        #[cfg(feature = "fault-injection")]
        if fault == Some(s.number()) {
            eprintln!("arc: {FAULT_ENV}={}: exiting after prune step {s:?}", s.number());
            std::process::exit(FAULT_EXIT);
        }
        let _ = (s, fault);
    };
    let opts = PruneOptions {
        max_unused,
        dry_run,
        ignore_snapshots: ignore,
        after_step: if fault.is_some() { Some(&hook) } else { None },
        instant,
    };
    let progress = CliProgress::new(env.quiet, "prune");
    let r = prune::prune(repo, &opts, &progress);
    progress.finish();
    Ok(r?)
}

/// `prune --json` (and `forget --prune --json` under `prune`): the fields
/// docs/json.md documents, named here so that a field added to the engine's
/// report does not appear in the output unannounced.
#[derive(serde::Serialize)]
struct PruneJson<'a> {
    dry_run: bool,
    snapshots: u64,
    packs: u64,
    stored_bytes: u64,
    live_blobs: u64,
    live_bytes: u64,
    live_stored_bytes: u64,
    unused_stored_bytes: u64,
    packs_deleted: u64,
    bytes_deleted: u64,
    packs_repacked: u64,
    bytes_repacked: u64,
    blobs_copied: u64,
    bytes_copied: u64,
    packs_written: u64,
    bytes_written: u64,
    packs_adopted: u64,
    index_files_written: u64,
    index_files_deleted: u64,
    tmp_files_removed: u64,
    stored_bytes_after: u64,
    warnings: &'a [String],
    packs_marked: u64,
    bytes_marked: u64,
    marks_written: u64,
    marks_swept: u64,
    marks_pending: u64,
    packs_recovered: u64,
    packs_in_grace: u64,
    bytes_in_grace: u64,
}

impl<'a> From<&'a PruneReport> for PruneJson<'a> {
    fn from(r: &'a PruneReport) -> Self {
        PruneJson {
            dry_run: r.dry_run,
            snapshots: r.snapshots,
            packs: r.packs,
            stored_bytes: r.stored_bytes,
            live_blobs: r.live_blobs,
            live_bytes: r.live_bytes,
            live_stored_bytes: r.live_stored_bytes,
            unused_stored_bytes: r.unused_stored_bytes,
            packs_deleted: r.packs_deleted,
            bytes_deleted: r.bytes_deleted,
            packs_repacked: r.packs_repacked,
            bytes_repacked: r.bytes_repacked,
            blobs_copied: r.blobs_copied,
            bytes_copied: r.bytes_copied,
            packs_written: r.packs_written,
            bytes_written: r.bytes_written,
            packs_adopted: r.packs_adopted,
            index_files_written: r.index_files_written,
            index_files_deleted: r.index_files_deleted,
            tmp_files_removed: r.tmp_files_removed,
            stored_bytes_after: r.stored_bytes_after,
            warnings: &r.warnings,
            packs_marked: r.packs_marked,
            bytes_marked: r.bytes_marked,
            marks_written: r.marks_written,
            marks_swept: r.marks_swept,
            marks_pending: r.marks_pending,
            packs_recovered: r.packs_recovered,
            packs_in_grace: r.packs_in_grace,
            bytes_in_grace: r.bytes_in_grace,
        }
    }
}

/// `quiet` (-q, cron): only the warnings. `two_phase`: a format v2
/// repository pruned without --instant, where a run only marks what it
/// would delete.
fn print_prune(r: &PruneReport, quiet: bool, two_phase: bool) -> std::io::Result<()> {
    if quiet {
        for w in &r.warnings {
            outln!("warning: {w}")?;
        }
        return Ok(());
    }
    let (verb_del, verb_rew) = if r.dry_run { ("would delete", "would rewrite") } else { ("deleted", "rewrote") };
    outln!("{} snapshot(s), {} pack(s) of {}", r.snapshots, r.packs, size(r.stored_bytes))?;
    outln!(
        "used:   {} blobs, {} ({} stored); unused: {} stored",
        r.live_blobs,
        size(r.live_bytes),
        size(r.live_stored_bytes),
        size(r.unused_stored_bytes)
    )?;
    outln!("{verb_del} {} unused pack(s) of {}", r.packs_deleted, size(r.bytes_deleted))?;
    if r.dry_run && two_phase && (r.packs_deleted > 0 || r.packs_repacked > 0) {
        // The dry run plans as --instant would; a plain run deletes nothing
        // that a run before it has not marked.
        outln!(
            "  (in two runs: prune marks these packs, those older than the grace period, and a prune after \
             the grace period deletes them if still unused; --instant does it at once)"
        )?;
    }
    if r.dry_run {
        outln!(
            "{verb_rew} {} pack(s) of {}, copying {} blobs ({})",
            r.packs_repacked,
            size(r.bytes_repacked),
            r.blobs_copied,
            size(r.bytes_copied)
        )?;
    } else {
        outln!(
            "{verb_rew} {} pack(s) of {} into {} new pack(s) of {}, copying {} blobs ({})",
            r.packs_repacked,
            size(r.bytes_repacked),
            r.packs_written,
            size(r.bytes_written),
            r.blobs_copied,
            size(r.bytes_copied)
        )?;
    }
    if r.packs_marked > 0 {
        outln!(
            "marked {} unused pack(s) of {}; a prune after the grace period deletes them if still unused",
            r.packs_marked,
            size(r.bytes_marked)
        )?;
    }
    if r.packs_in_grace > 0 {
        outln!(
            "kept {} unused pack(s) of {} for now: younger than the grace period (a backup may still be \
             writing them); a prune after it marks them",
            r.packs_in_grace,
            size(r.bytes_in_grace)
        )?;
    }
    if r.packs_recovered > 0 {
        outln!("kept {} marked pack(s) that snapshots use again", r.packs_recovered)?;
    }
    if r.marks_pending > 0 {
        outln!(
            "{} earlier mark(s) not due yet (grace period, or a backup older than the mark still runs)",
            r.marks_pending
        )?;
    }
    if r.packs_adopted > 0 {
        outln!("listed {} pack(s) no index file listed", r.packs_adopted)?;
    }
    if !r.dry_run && (r.index_files_written > 0 || r.index_files_deleted > 0) {
        outln!("index files: {} written, {} deleted", r.index_files_written, r.index_files_deleted)?;
    }
    for w in &r.warnings {
        outln!("warning: {w}")?;
    }
    if r.dry_run {
        outln!(
            "packs: {} -> about {} (dry run: nothing was changed)",
            size(r.stored_bytes),
            size(r.stored_bytes_after)
        )?;
    } else {
        outln!("packs: {} -> {}", size(r.stored_bytes), size(r.stored_bytes_after))?;
    }
    Ok(())
}

pub fn prune(env: &Env, a: PruneArgs) -> Result<u8> {
    let repo = env.open()?;
    let r = run_prune(env, &repo, a.max_unused, a.dry_run, a.instant, HashSet::new())?;
    if env.json {
        super::print_json(&PruneJson::from(&r))?;
    } else {
        print_prune(&r, env.quiet, repo.protocol().is_some() && !a.instant)?;
    }
    Ok(0)
}
