//! `forget`: removes snapshot files, chosen by a retention policy
//! ([`super::retention`]) or named by id. It deletes nothing else: the data
//! only the forgotten snapshots reached stays in its packs until `prune`.
//!
//! Deleting a snapshot file is atomic (unlink, then fsync of `snapshots/`),
//! and each snapshot is independent of the others, so a forget that dies
//! midway leaves a valid repository in which some of the chosen snapshots
//! are gone; running it again removes the rest (the policy is evaluated
//! anew and makes the same choice for those that remain).

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::retention::{self, GroupBy, GroupKey, Item, Outcome, Policy, Reason};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::{Repository, Snapshot, SnapshotFilter};
use crate::storage::FileKind;

#[derive(Debug, Clone, Default)]
pub struct ForgetOptions {
    /// Keep rules; ignored when `ids` is not empty.
    pub policy: Policy,
    pub group_by: GroupBy,
    /// Calendar periods in the local time zone instead of UTC.
    pub local: bool,
    /// The policy only looks at (and only removes) snapshots matching this.
    pub filter: SnapshotFilter,
    /// Forget exactly these snapshots instead of applying a policy.
    pub ids: Vec<Id>,
    /// Decide and report, but delete nothing.
    pub dry_run: bool,
}

/// One snapshot in a forget report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    pub id: Id,
    pub short_id: String,
    pub time: DateTime<Utc>,
    pub host: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    /// The rules that keep it (empty for removed snapshots).
    pub reasons: Vec<Reason>,
}

impl Verdict {
    fn new(s: &Snapshot, reasons: Vec<Reason>) -> Verdict {
        Verdict {
            id: s.id,
            short_id: s.id.short(),
            time: s.file.time,
            host: s.file.host.clone(),
            paths: s.file.paths.clone(),
            tags: s.file.tags.clone(),
            reasons,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupReport {
    pub key: GroupKey,
    /// Newest first.
    pub keep: Vec<Verdict>,
    /// Newest first.
    pub remove: Vec<Verdict>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    /// Policy mode only: every group with its verdicts.
    pub groups: Vec<GroupReport>,
    /// The snapshots removed (with `dry_run`: that would be removed).
    pub removed: Vec<Verdict>,
}

/// Applies `policy` to `snapshots` in UTC or in the local time zone.
pub fn evaluate(snapshots: &[Snapshot], policy: &Policy, group_by: GroupBy, local: bool) -> Outcome {
    let items: Vec<Item<'_>> = snapshots
        .iter()
        .map(|s| Item { time: s.file.time, host: &s.file.host, paths: &s.file.paths, tags: &s.file.tags })
        .collect();
    if local {
        retention::apply(&items, policy, group_by, &chrono::Local)
    } else {
        retention::apply(&items, policy, group_by, &Utc)
    }
}

/// Decides what `opts` removes from `snapshots` (oldest first, as
/// [`Repository::snapshots`] returns them) without touching anything.
pub fn plan(snapshots: &[Snapshot], opts: &ForgetOptions) -> Result<ForgetReport> {
    let mut report = ForgetReport { dry_run: opts.dry_run, ..Default::default() };
    if !opts.ids.is_empty() {
        let mut seen = HashSet::new();
        for id in &opts.ids {
            if !seen.insert(*id) {
                continue;
            }
            let s = snapshots.iter().find(|s| s.id == *id).ok_or_else(|| Error::SnapshotNotFound(id.to_hex()))?;
            report.removed.push(Verdict::new(s, Vec::new()));
        }
        return Ok(report);
    }
    if opts.policy.is_empty() {
        return Err(Error::InvalidArgument {
            what: "forget policy",
            reason: "the policy keeps no snapshot, which would forget every snapshot".into(),
        });
    }
    let selected: Vec<Snapshot> = snapshots.iter().filter(|s| opts.filter.matches(&s.file)).cloned().collect();
    let outcome = evaluate(&selected, &opts.policy, opts.group_by, opts.local);
    for group in &outcome.groups {
        let mut g = GroupReport { key: group.key.clone(), keep: Vec::new(), remove: Vec::new() };
        for &i in &group.members {
            let v = Verdict::new(&selected[i], outcome.reasons[i].clone());
            if outcome.keep(i) {
                g.keep.push(v);
            } else {
                report.removed.push(v.clone());
                g.remove.push(v);
            }
        }
        report.groups.push(g);
    }
    Ok(report)
}

/// Runs `forget` under the exclusive lock (a shared one for `dry_run`,
/// which writes nothing): the snapshots are listed and judged after the
/// lock is taken, so the report is exactly what was (or would be) removed.
pub fn forget(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetReport> {
    if !opts.dry_run {
        repo.require_writable("forget")?;
    }
    // Format v2: deleting snapshots only makes data unused, which backups
    // and two-phase prunes handle (format-spec/v2/protocol.md §5.4); the
    // shared lock keeps forget out of an instant prune's way only.
    let _lock = if opts.dry_run {
        repo.lock_shared("forget --dry-run")?
    } else if repo.protocol().is_some() {
        repo.lock_shared("forget")?
    } else {
        repo.lock_exclusive("forget")?
    };
    let snapshots = repo.snapshots()?;
    let report = plan(&snapshots, opts)?;
    if !opts.dry_run {
        for v in &report.removed {
            repo.storage().delete(FileKind::Snapshot, &v.id.to_hex())?;
        }
    }
    Ok(report)
}
