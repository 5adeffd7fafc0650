//! `prune` on a format v2 repository: two phases that need neither locks
//! nor synchronised clocks (format-spec/v2/protocol.md §5). Each run, in a
//! session of its own:
//!
//! ```text
//! sweep  for every mark older than the grace period (storage time) that no
//!        live session started before: recompute the live set from all
//!        snapshots now present; a marked pack whose every live blob has a
//!        copy in an unmarked listed pack is deleted (SPEC 13.2 order:
//!        replacement index files, old index files, index db, packs), the
//!        others are recovered; then the mark file goes
//! mark   packs no snapshot needs (and packs to rewrite, once their live
//!        blobs are copied), older than the grace period and in no mark
//!        yet, are named in a new mark file; nothing is deleted
//! ```
//! Concurrent prunes and backups are expected: every decision is re-made
//! from a fresh listing, a listing that changes under a plan restarts it,
//! and only packs of a due mark are ever deleted.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use chrono::Utc;

use super::prune::{self, Fate, PackPlan, PruneOptions, PruneReport, PruneStep};
use crate::error::{Error, Result};
use crate::format::mark::{self, MarkFile, MarkedPack};
use crate::id::Id;
use crate::packer;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::session::{live_sessions, Mark, Session};
use crate::storage::FileKind;

/// Plans restarted at most this often when a concurrent prune changes the
/// repository under one.
const PLAN_ATTEMPTS: usize = 4;

/// One prune run on a v2 repository (not `--instant`, not `--dry-run`).
pub fn run(repo: &Repository, opts: &PruneOptions<'_>, progress: &dyn Progress) -> Result<PruneReport> {
    let session = repo.start_session("prune")?;
    let settings = *session.settings();
    let grace = Duration::from_secs(settings.grace_secs);
    let margin = Duration::from_secs(settings.margin_secs);
    let step = |s: PruneStep| {
        if let Some(hook) = opts.after_step {
            hook(s)
        }
    };
    let now = session.storage_now();
    let older_than = |t: SystemTime, age: Duration| now.duration_since(t).is_ok_and(|a| a >= age);

    // Which marks are due (P6): old enough, and no live session started
    // before the mark (plus the margin for its visibility).
    // The marks are those the session listed right after its file was put
    // (protocol.md §5 P6 needs a listing made after the session is visible;
    // listing `marks/` a second time here only cost a round trip).
    let keys = repo.v2_keys()?;
    let marks = session.marks()?;
    let sessions = live_sessions(repo.storage().as_ref(), keys, &settings, now, Some(session.name()))?;
    let due: Vec<&Mark> = marks
        .iter()
        .filter(|m| older_than(m.time, grace) && !sessions.iter().any(|s| s.start < m.time + margin))
        .collect();
    let all_marked: HashSet<Id> = marks.iter().flat_map(|m| m.file.packs.iter().map(|p| p.id)).collect();

    // P7: the live set is computed only now, after the session check, so
    // that every snapshot of a session that has ended is in it.
    let plan = plan_retrying(repo, opts, &all_marked)?;
    step(PruneStep::Planned);
    let mut report = plan.report.clone();
    report.packs_deleted = 0;
    report.bytes_deleted = 0;
    report.packs_repacked = 0;
    report.bytes_repacked = 0;
    report.blobs_copied = 0;
    report.bytes_copied = 0;
    report.packs_adopted = 0;
    report.marks_pending = (marks.len() - due.len()) as u64;

    // --- sweep ---
    let due_packs: HashSet<Id> = due.iter().flat_map(|m| m.file.packs.iter().map(|p| p.id)).collect();
    // A due pack goes when every live blob in it has a copy in a listed
    // pack outside every mark (the plan's merge of copies finds the packs
    // holding one that has none).
    let goes: HashSet<Id> =
        plan.packs.iter().filter(|p| due_packs.contains(&p.pack) && !p.holds_sole_copy).map(|p| p.pack).collect();
    report.packs_recovered =
        plan.packs.iter().filter(|p| due_packs.contains(&p.pack) && !goes.contains(&p.pack)).count() as u64;
    if !goes.is_empty() {
        // P9: a prune stopped past the expiry may hold a stale view.
        let alive = || -> Result<()> {
            session.refresh_now()?;
            if session.lapsed() {
                return Err(Error::SessionLost {
                    reason: "the prune was stopped for longer than the session expiry; nothing more was deleted".into(),
                });
            }
            Ok(())
        };
        prune::delete_packs(repo, &plan, &goes, &HashSet::new(), &step, &alive, &mut report)?;
        for p in plan.packs.iter().filter(|p| goes.contains(&p.pack)) {
            report.packs_deleted += 1;
            report.bytes_deleted += p.pack_len;
        }
    }
    // P10: a mark goes after its packs.
    for m in &due {
        repo.storage().delete(FileKind::Mark, &m.name)?;
        report.marks_swept += 1;
    }
    step(PruneStep::PacksDeleted);

    // --- mark ---
    let mtimes = &plan.pack_times;
    let still_marked: HashSet<Id> = marks
        .iter()
        .filter(|m| !due.iter().any(|d| d.name == m.name))
        .flat_map(|m| m.file.packs.iter().map(|p| p.id))
        .collect();
    // P2: never a pack younger than the grace period (it may belong to a
    // backup still running, listed or not).
    let markable = |p: &&PackPlan| {
        !goes.contains(&p.pack)
            && !still_marked.contains(&p.pack)
            && mtimes.get(&p.pack).is_some_and(|t| older_than(*t, grace))
    };
    for p in plan.packs.iter().filter(|p| {
        matches!(p.fate, Fate::Delete | Fate::Repack)
            && !goes.contains(&p.pack)
            && !still_marked.contains(&p.pack)
            && !mtimes.get(&p.pack).is_some_and(|t| older_than(*t, grace))
    }) {
        report.packs_in_grace += 1;
        report.bytes_in_grace += p.pack_len;
    }
    let dead: Vec<&PackPlan> = plan.packs.iter().filter(|p| p.fate == Fate::Delete).filter(markable).collect();
    let to_repack: Vec<&PackPlan> = plan.packs.iter().filter(|p| p.fate == Fate::Repack).filter(markable).collect();
    // P3: copies first, listed by the packer's index files.
    if !to_repack.is_empty() {
        progress.total(to_repack.len() as u64, to_repack.iter().map(|p| p.pack_len).sum());
        let chosen: HashSet<Id> = to_repack.iter().map(|p| p.pack).collect();
        let select = |p: &PackPlan| chosen.contains(&p.pack);
        let ((), stats) =
            packer::run(repo, Vec::new(), &|| false, |sink| prune::copy_live(repo, &plan, &select, sink, progress))?;
        report.packs_written = stats.packs_written;
        report.bytes_written = stats.bytes_stored;
        for p in &to_repack {
            report.packs_repacked += 1;
            report.bytes_repacked += p.pack_len;
            report.blobs_copied += p.chosen;
        }
    }
    step(PruneStep::Repacked);
    // P4: packs that stay and no index file lists.
    let unlisted: Vec<&PackPlan> =
        plan.packs.iter().filter(|p| !p.listed && p.fate == Fate::Keep && !goes.contains(&p.pack)).collect();
    // A group of trailers at a time: their number is not bounded.
    for group in unlisted.chunks(prune::PACKS_PER_INDEX_FILE) {
        let entries = group.iter().map(|p| plan.entry(p)).collect::<Result<Vec<_>>>()?;
        for (id, data, _) in repo.encode_index_files(&entries, &[])? {
            repo.storage().put(FileKind::Index, &id.to_hex(), &data)?;
            report.index_files_written += 1;
        }
    }
    report.packs_adopted = unlisted.len() as u64;
    step(PruneStep::IndexWritten);
    // P5: the mark, whose storage timestamp is its time.
    let packs: Vec<MarkedPack> =
        dead.iter().chain(&to_repack).map(|p| MarkedPack { id: p.pack, len: p.pack_len }).collect();
    if !packs.is_empty() {
        report.packs_marked = packs.len() as u64;
        report.bytes_marked = packs.iter().map(|p| p.len).sum();
        let file =
            MarkFile { prune_session: session_id(&session), host: crate::lock::hostname(), created: Utc::now(), packs };
        let data = mark::encode(keys, &file)?;
        repo.storage().put(FileKind::Mark, &Id::hash(&data).to_hex(), &data)?;
        report.marks_written = 1;
    }
    report.tmp_files_removed = prune::clean_tmp(repo);
    report.stored_bytes_after = plan.stored_after(&goes, report.bytes_written);
    Ok(report)
}

fn session_id(s: &Session) -> Id {
    s.name().parse().unwrap_or(Id([0; 32]))
}

/// A concurrent prune may delete an index file or a pack between our
/// listing and our read of it; that is its work, not damage: plan again.
fn plan_retrying(repo: &Repository, opts: &PruneOptions<'_>, marked: &HashSet<Id>) -> Result<prune::Plan> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match prune::plan_avoiding(repo, opts.max_unused, &opts.ignore_snapshots, marked) {
            Err(e @ (Error::Missing { .. } | Error::Damaged { .. })) if attempt < PLAN_ATTEMPTS => {
                let _ = e;
                // Let the other prune finish its step; its index db rebuild
                // also tells ours that files went.
                std::thread::sleep(Duration::from_millis(200 * attempt as u64));
                repo.refresh_index()?;
            }
            other => return other,
        }
    }
}
