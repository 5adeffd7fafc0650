//! `prune`: deletes the data no snapshot reaches any more and compacts packs
//! that are mostly dead, so that a repository stays close to its live size.
//!
//! ```text
//! exclusive lock
//! 1 plan     read every index file, list every pack (trailers of unlisted
//!            ones), mark every blob reachable from every snapshot (each tree
//!            read once), choose one copy of each live blob, classify packs:
//!              nothing live           -> delete
//!              unused > max_unused    -> repack (copy live blobs, then delete)
//!              otherwise              -> keep
//! 2 repack   copy the live blobs of the packs to repack into new packs
//!            (the packer writes them durably, then index files listing them)
//! 3 index    write index files for kept packs that would otherwise lose
//!            their listing (listed only by index files that go, or unlisted)
//! 4,5        delete the old index files that list a pack that goes
//! 6          rebuild the index database from the index files now present
//! 7,8        delete the packs that go (dead and repacked); clean tmp/
//! ```
//!
//! Crash safety comes from the order alone (SPEC section 13.2, whose rules
//! P1-P7 this follows; the step numbers here are those of the test hook):
//! until step 4 the repository only gained files (new packs, each listed by
//! a durable index file before anything else happens); from step 4 on, every kept
//! blob is in a kept pack listed by a durable index file, and a pack is
//! deleted only after no index file lists it any more. A prune killed at
//! any point leaves a repository that `check` passes (at worst with
//! unlisted packs, a warning), and the next prune finishes the job: the
//! copies it already made are complete, fully live packs, so they are
//! chosen as the live copies and the old packs come out as dead.
//!
//! The index database is a cache of the index files, but a stale entry
//! could point a live blob at a deleted pack. It is therefore rebuilt from
//! the surviving index files (step 6) *before* any pack is deleted: if
//! prune dies before step 6, the database still knows index files that are
//! gone and rebuilds itself on next use; after step 6 it names only packs
//! that stay.
//!
//! `ARC_FAULT_PRUNE_STEP`: the CLI passes an [`PruneOptions::after_step`]
//! hook that exits the process after the given step, without unwinding,
//! which is what the crash-safety tests use to "kill" prune between steps.

use rayon::prelude::*;
use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::format::index_file::PackEntry;
use crate::format::pack::FrameCodec;
use crate::id::Id;
pub use crate::ops::prune_plan::{plan, Plan};
pub(crate) use crate::ops::prune_plan::{plan_avoiding, Fate, PackPlan, RepackPack};
use crate::packer;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::storage::FileKind;

/// Packs per index file written by prune (as `repair index`).
pub(crate) const PACKS_PER_INDEX_FILE: usize = 256;

/// The steps after which [`PruneOptions::after_step`] is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PruneStep {
    /// The plan is made; nothing was written.
    Planned = 1,
    /// Live blobs of the packs to rewrite are in new packs, listed by
    /// durable index files.
    Repacked = 2,
    /// Replacement index files are durable.
    IndexWritten = 3,
    /// The first old index file was deleted.
    FirstOldIndexDeleted = 4,
    /// Every old index file that listed a pack to delete is gone.
    OldIndexDeleted = 5,
    /// The index database was rebuilt from the surviving index files.
    IndexDbRebuilt = 6,
    /// The first pack was deleted.
    FirstPackDeleted = 7,
    /// Every pack to delete is gone.
    PacksDeleted = 8,
}

impl PruneStep {
    pub fn number(self) -> u32 {
        self as u32
    }
}

pub struct PruneOptions<'a> {
    /// A pack whose unused share (dead blobs and extra copies, in stored
    /// bytes) exceeds this fraction is rewritten. 0.0 rewrites every pack
    /// with anything unused, 1.0 only deletes packs that are wholly unused.
    pub max_unused: f64,
    /// Plan and report, write nothing (takes only a shared lock).
    pub dry_run: bool,
    /// Treat these snapshots as already forgotten (`forget --dry-run
    /// --prune` reports what the pair would free).
    pub ignore_snapshots: HashSet<Id>,
    /// Called after each step (test hook; see the module docs).
    pub after_step: Option<&'a (dyn Fn(PruneStep) + Sync)>,
    /// Format v2: delete at once, in one pass under the exclusive lock,
    /// instead of marking now and deleting after the grace period
    /// (format-spec/v2/protocol.md §7). v1 repositories always prune so.
    pub instant: bool,
}

impl Default for PruneOptions<'_> {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.10,
            dry_run: false,
            ignore_snapshots: HashSet::new(),
            after_step: None,
            instant: false,
        }
    }
}

/// What prune found and did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: u64,
    pub packs: u64,
    /// Bytes of every pack before prune.
    pub stored_bytes: u64,
    /// Distinct blobs some snapshot reaches.
    pub live_blobs: u64,
    /// Their uncompressed bytes.
    pub live_bytes: u64,
    /// Their share of the stored bytes (each blob's part of its frame).
    pub live_stored_bytes: u64,
    /// Stored bytes of blobs no snapshot reaches, and of extra copies.
    pub unused_stored_bytes: u64,
    /// Packs deleted because nothing in them is used.
    pub packs_deleted: u64,
    pub bytes_deleted: u64,
    /// Packs rewritten because too much of them is unused.
    pub packs_repacked: u64,
    pub bytes_repacked: u64,
    /// Blobs copied out of the rewritten packs, and their uncompressed bytes.
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    /// New packs written by the rewrite, and their bytes.
    pub packs_written: u64,
    pub bytes_written: u64,
    /// Packs no index file listed (left by an interrupted backup or prune)
    /// that hold used blobs and are listed from now on.
    pub packs_adopted: u64,
    pub index_files_written: u64,
    pub index_files_deleted: u64,
    /// Leftover partial writes removed from `tmp/`.
    pub tmp_files_removed: u64,
    /// Bytes of every pack after prune, from the plan's listing and what
    /// the run deleted and wrote (estimated for `dry_run`: the rewritten
    /// blobs counted at their current stored size). Packs another host
    /// writes meanwhile are not counted.
    pub stored_bytes_after: u64,
    /// Packs that could not be read and were left alone.
    pub warnings: Vec<String>,
    /// Format v2 (two-phase prune): packs named in the mark written by this
    /// run, and their bytes; they are deleted by a run after the grace
    /// period if still unused.
    pub packs_marked: u64,
    pub bytes_marked: u64,
    pub marks_written: u64,
    /// Marks whose packs this run deleted (or recovered).
    pub marks_swept: u64,
    /// Marks not due yet (grace period, or a session older than the mark
    /// still running).
    pub marks_pending: u64,
    /// Marked packs that a snapshot needs again and that therefore stay.
    pub packs_recovered: u64,
    /// Format v2: packs unused (or to rewrite) that this run neither marked
    /// nor deleted because they are younger than the grace period (they may
    /// belong to a backup still running); a later run marks them.
    pub packs_in_grace: u64,
    pub bytes_in_grace: u64,
}

pub fn prune(repo: &Repository, opts: &PruneOptions<'_>, progress: &dyn Progress) -> Result<PruneReport> {
    if !opts.dry_run {
        repo.require_writable("prune")?;
    }
    if repo.protocol().is_some() && !opts.instant && !opts.dry_run {
        return super::prune_protocol::run(repo, opts, progress);
    }
    let _lock = if opts.dry_run { repo.lock_shared("prune --dry-run")? } else { repo.lock_exclusive("prune")? };
    let plan = plan(repo, opts.max_unused, &opts.ignore_snapshots)?;
    let step = |s: PruneStep| {
        if let Some(hook) = opts.after_step {
            hook(s)
        }
    };
    step(PruneStep::Planned);
    let mut report = plan.report.clone();
    report.dry_run = opts.dry_run;
    if opts.dry_run {
        return Ok(report);
    }
    if !plan.has_work() {
        report.tmp_files_removed = clean_tmp(repo);
        settle_marks(repo, &mut report)?;
        return Ok(report);
    }
    let goes = plan.goes();
    // The trailers the repack and the new listings need, read back from
    // the index files in one pass (each file at most once after the plan).
    let relist = to_relist(&plan, &goes);
    plan.load_trailers(repo, &|p| p.fate == Fate::Repack || relist.contains(&p.pack))?;
    drop(relist);

    // 2. Copy the live blobs of the packs to rewrite. The packer writes
    // each new pack durably, then index files listing them.
    let to_repack: Vec<&PackPlan> = plan.packs.iter().filter(|p| p.fate == Fate::Repack).collect();
    let mut new_packs: HashSet<Id> = HashSet::new();
    if !to_repack.is_empty() {
        progress.total(to_repack.len() as u64, to_repack.iter().map(|p| p.pack_len).sum());
        let select = |p: &PackPlan| p.fate == Fate::Repack;
        let ((), stats) =
            packer::run(repo, Vec::new(), &|| false, |sink| copy_live(repo, &plan, &select, sink, progress))?;
        report.packs_written = stats.packs_written;
        report.bytes_written = stats.bytes_stored;
        new_packs.extend(stats.packs);
    }
    step(PruneStep::Repacked);

    let no_check = || Ok(());
    delete_packs(repo, &plan, &goes, &new_packs, &step, &no_check, &mut report)?;
    report.tmp_files_removed = clean_tmp(repo);
    step(PruneStep::PacksDeleted);
    settle_marks(repo, &mut report)?;
    report.stored_bytes_after = plan.stored_after(&goes, report.bytes_written);
    Ok(report)
}

/// After a one-pass prune under the exclusive lock (format v2 `--instant`)
/// every mark is settled: what it named is deleted or needed again.
fn settle_marks(repo: &Repository, report: &mut PruneReport) -> Result<()> {
    for (name, _) in repo.storage().list(FileKind::Mark)? {
        repo.storage().delete(FileKind::Mark, &name)?;
        report.marks_swept += 1;
    }
    Ok(())
}

/// Deletes the packs in `goes` in the order of SPEC 13.2 (steps 3 to 8 of
/// the module docs): index files listing one of them are replaced by index
/// files listing their other packs (and every kept pack no index file
/// lists) before they are deleted, the index database is rebuilt, and only
/// then are the packs deleted. `before_delete` runs before the first
/// deletion and may stop it (format v2: the session must still be alive).
pub(crate) fn delete_packs(
    repo: &Repository,
    plan: &Plan,
    goes: &HashSet<Id>,
    new_packs: &HashSet<Id>,
    step: &dyn Fn(PruneStep),
    before_delete: &dyn Fn() -> Result<()>,
    report: &mut PruneReport,
) -> Result<()> {
    // 3. Index files that go: those listing a pack that goes. Kept packs
    // they list, and kept unlisted packs, get a new listing first.
    let obsolete: Vec<&str> = plan
        .index_files
        .iter()
        .filter(|(_, packs)| packs.iter().any(|p| goes.contains(p)))
        .map(|(n, _)| n.as_str())
        .collect();
    // The last new listing names the files it replaces (v2 spec 2.3), so
    // other hosts' caches read it instead of rebuilding. Trailers are read
    // back a group at a time; one group is held back to be the last.
    let superseded: Vec<Id> = obsolete.iter().filter_map(|n| n.parse().ok()).collect();
    // Each new listing goes into the index database as it is written, so
    // that forgetting the old ones below needs no rebuild.
    let mut write = |group: &[PackEntry], sup: &[Id]| -> Result<()> {
        for (id, data, listed) in repo.encode_index_files(group, sup)? {
            repo.storage().put(FileKind::Index, &id.to_hex(), &data)?;
            repo.index()?.add_packs(listed, Some(id))?;
            report.index_files_written += 1;
        }
        Ok(())
    };
    let relist = to_relist(plan, goes);
    plan.load_trailers(repo, &|p| relist.contains(&p.pack))?;
    let mut held: Option<Vec<PackEntry>> = None;
    let mut group: Vec<PackEntry> = Vec::new();
    for p in plan.packs.iter().filter(|p| relist.contains(&p.pack)) {
        group.push(plan.entry(p)?);
        if group.len() == PACKS_PER_INDEX_FILE {
            if let Some(g) = held.replace(std::mem::take(&mut group)) {
                write(&g, &[])?;
            }
        }
    }
    match (held, group.is_empty()) {
        (Some(g), true) => write(&g, &superseded)?,
        (Some(g), false) => {
            write(&g, &[])?;
            write(&group, &superseded)?;
        }
        (None, false) => write(&group, &superseded)?,
        (None, true) => {}
    }
    step(PruneStep::IndexWritten);

    before_delete()?;
    // 4, 5. Only now may the old listings go.
    for (i, name) in obsolete.iter().enumerate() {
        repo.storage().delete(FileKind::Index, name)?;
        report.index_files_deleted += 1;
        if i == 0 {
            step(PruneStep::FirstOldIndexDeleted);
        }
    }
    step(PruneStep::OldIndexDeleted);

    // 6. The database forgets the packs that go before they go. A new
    // pack can never be one that goes (it holds only used blobs), but the
    // check costs nothing and rules it out.
    let doomed: Vec<Id> =
        plan.packs.iter().filter(|p| goes.contains(&p.pack) && !new_packs.contains(&p.pack)).map(|p| p.pack).collect();
    repo.forget_packs(&superseded, &doomed)?;
    step(PruneStep::IndexDbRebuilt);

    // 7, 8. Delete.
    before_delete()?;
    let doomed: Vec<String> = doomed.iter().map(Id::to_hex).collect();
    if let Some((first, rest)) = doomed.split_first() {
        repo.storage().delete(FileKind::Pack, first)?;
        step(PruneStep::FirstPackDeleted);
        // Batched on S3 (DeleteObjects takes up to 1000 keys a request).
        for batch in rest.chunks(1000) {
            repo.storage().delete_many(FileKind::Pack, batch)?;
        }
    }
    Ok(())
}

/// The packs that stay and that no index file lists once those listing a
/// pack in `goes` are gone (and kept unlisted packs): they are listed anew
/// before those files go. A pack to rewrite that does not go yet (format
/// v2: not due) keeps a listing too.
fn to_relist(plan: &Plan, goes: &HashSet<Id>) -> HashSet<Id> {
    let still_listed: HashSet<Id> = plan
        .index_files
        .iter()
        .filter(|(_, packs)| !packs.iter().any(|p| goes.contains(p)))
        .flat_map(|(_, packs)| packs.iter().copied())
        .collect();
    plan.packs
        .iter()
        .filter(|p| !goes.contains(&p.pack) && !still_listed.contains(&p.pack) && (p.listed || p.fate == Fate::Keep))
        .map(|p| p.pack)
        .collect()
}

/// Reads each pack `select` picks once and hands its chosen blobs, verified
/// against their ids, to the packer. Packs are read in parallel.
pub(crate) fn copy_live(
    repo: &Repository,
    plan: &Plan,
    select: &dyn Fn(&PackPlan) -> bool,
    sink: &packer::BlobSink<'_>,
    progress: &dyn Progress,
) -> Result<()> {
    plan.for_each_repack_batch(repo, select, &mut |batch| copy_batch(repo, batch, sink, progress))
}

fn copy_batch(
    repo: &Repository,
    packs: &[RepackPack],
    sink: &packer::BlobSink<'_>,
    progress: &dyn Progress,
) -> Result<()> {
    packs.par_iter().try_for_each(|p| -> Result<()> {
        let name = p.entry.pack.to_hex();
        let data = repo.storage().get(FileKind::Pack, &name)?;
        if data.len() as u64 != p.entry.pack_len {
            return Err(Error::corrupt(
                "pack",
                &name,
                format!("{} bytes, the index says {}", data.len(), p.entry.pack_len),
            ));
        }
        let trailer = &p.entry.trailer;
        let mut by_frame: Vec<Vec<usize>> = vec![Vec::new(); trailer.frames.len()];
        for (bi, b) in trailer.blobs.iter().enumerate() {
            if p.chosen[bi] {
                if let Some(f) = by_frame.get_mut(b.frame as usize) {
                    f.push(bi);
                }
            }
        }
        for (fi, blobs) in by_frame.iter().enumerate() {
            if blobs.is_empty() {
                continue;
            }
            let frame = &trailer.frames[fi];
            let start = usize::try_from(frame.offset).map_err(|_| Error::corrupt("pack", &name, "frame offset"))?;
            let stored = data
                .get(start..start + frame.stored_len as usize)
                .ok_or_else(|| Error::corrupt("pack", &name, format!("frame at {start} lies outside the pack")))?;
            let chunk = trailer.blobs[blobs[0]].id;
            let raw = repo.decode_frame(stored.to_vec(), frame, &name, &chunk, &|b| repo.read_delta_base(b))?;
            // A delta stays a delta (its base is live: prune_plan marks it),
            // copied as its stored delta once the chunk it decodes to is
            // verified below.
            let delta = match frame.codec {
                FrameCodec::Delta => Some(repo.open_delta(stored, frame, &name)?),
                _ => None,
            };
            for &bi in blobs {
                let b = &trailer.blobs[bi];
                let (s, e) = (b.offset_in_frame as usize, b.offset_in_frame as usize + b.raw_len as usize);
                let bytes = raw.get(s..e).ok_or_else(|| {
                    Error::corrupt("pack", &name, format!("blob {} lies outside its frame", b.id.short()))
                })?;
                // Never copy damage: the copy would replace the only
                // record that something was wrong.
                if repo.blob_id(bytes) != b.id {
                    return Err(Error::corrupt(
                        "pack",
                        &name,
                        format!("blob {} does not match its hash", b.id.short()),
                    ));
                }
                match &delta {
                    Some((base, d)) => sink.store_copy_delta(b.id, bytes, *base, d.clone())?,
                    None => sink.store_copy(b.id, b.kind, bytes)?,
                }
            }
        }
        progress.bytes(p.entry.pack_len);
        Ok(())
    })
}

/// Removes partial writes other processes left in `tmp/` (local
/// repositories only). The exclusive lock does not mean nobody writes
/// there: a process taking a lock writes its lock file through `tmp/`
/// before it can see ours (a backup racing this prune failed on exactly
/// that), and a writer whose lock we judged stale may still be alive. So
/// only files untouched for longer than a lock takes to go stale are
/// removed. Our own in-flight files (the lock refresh) carry our pid and
/// stay.
pub(crate) fn clean_tmp(repo: &Repository) -> u64 {
    let Some(root) = repo.storage().local_path() else {
        // Only a cleanup: a failure leaves the files for the next prune.
        return clean_remote_tmp(repo).unwrap_or(0);
    };
    let own = format!(".{}.", std::process::id());
    let Ok(rd) = std::fs::read_dir(root.join("tmp")) else {
        return 0;
    };
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(&own) || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let age = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
        if age.is_none_or(|a| a < crate::lock::STALE_AFTER) {
            continue;
        }
        if std::fs::remove_file(e.path()).is_ok() {
            crate::fault::step("tmp removed", &e.path().display());
            removed += 1;
        }
    }
    removed
}

/// [`clean_tmp`] on SFTP and WebDAV, whose puts stage in `tmp/`: removes
/// files older than the grace period (a put in progress takes minutes at
/// most), aged by the storage's clock: against the newest session or lock
/// (this prune's own is among them), never the host's clock. Our own
/// in-flight files carry our pid and stay.
fn clean_remote_tmp(repo: &Repository) -> Result<u64> {
    let storage = repo.storage();
    let files = storage.list_tmp()?;
    if files.is_empty() {
        return Ok(0);
    }
    let sessions = storage.list_stat(FileKind::Session)?.into_iter();
    let Some(now) = sessions.chain(storage.list_stat(FileKind::Lock)?).map(|(_, s)| s.modified).max() else {
        return Ok(0);
    };
    let keep_for = repo.protocol().map_or(crate::lock::STALE_AFTER, |p| std::time::Duration::from_secs(p.grace_secs));
    let own = format!(".{}.", std::process::id());
    let mut removed = 0;
    for (name, stat) in files {
        let old = now.duration_since(stat.modified).is_ok_and(|age| age > keep_for);
        if old && !name.contains(&own) {
            storage.delete_tmp(&name)?;
            crate::fault::step("tmp removed", &name);
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::{BlobKind, BlobRecord, FrameCodec, FrameRecord, Trailer};
    use crate::progress::NoProgress;
    use crate::repo::InitOptions;

    /// A lock being taken right now goes through tmp/ before its owner can
    /// see prune's lock: only files older than a lock's staleness go.
    #[test]
    fn clean_tmp_keeps_young_files_of_other_processes() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_local(dir.path(), &InitOptions::default()).unwrap();
        let tmp = dir.path().join("tmp");
        let young = tmp.join(format!("{}.1.0", "a".repeat(64)));
        let old = tmp.join(format!("{}.1.1", "b".repeat(64)));
        std::fs::write(&young, b"lock being written").unwrap();
        std::fs::write(&old, b"left by a crash").unwrap();
        let long_ago = std::time::SystemTime::now() - crate::lock::STALE_AFTER - std::time::Duration::from_secs(60);
        std::fs::File::options().write(true).open(&old).unwrap().set_modified(long_ago).unwrap();
        assert_eq!(clean_tmp(&repo), 1);
        assert!(young.exists(), "a file another process may be writing was removed");
        assert!(!old.exists());
    }

    /// SFTP and WebDAV stage puts in `tmp/`; an interrupted one leaves a
    /// file there. Prune removes those older than the grace period by the
    /// storage's clock (here two hours behind the host's) and keeps
    /// younger ones, which may be puts in progress.
    #[test]
    fn prune_removes_old_staged_puts_on_remote_stores() {
        use crate::storage::{MemoryStorage, MemoryStorageOptions, Storage};
        use std::sync::Arc;
        use std::time::Duration;
        let mem = Arc::new(MemoryStorage::new(MemoryStorageOptions { clock_offset_secs: -7200, ..Default::default() }));
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            protocol: Some(crate::format::config::ProtocolSettings::with_grace(60)),
            ..Default::default()
        };
        let repo = Repository::init_with_index(mem.clone(), &opts, Some(dir.path().join("i.redb"))).unwrap();
        mem.leave_tmp(&format!("{}.77.0", "a".repeat(64)), Duration::from_secs(61 + 30));
        mem.leave_tmp(&format!("{}.77.1", "b".repeat(64)), Duration::from_secs(5));
        let report = prune(&repo, &PruneOptions::default(), &NoProgress).unwrap();
        assert_eq!(report.tmp_files_removed, 1);
        let left: Vec<String> = mem.list_tmp().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(left, vec![format!("{}.77.1", "b".repeat(64))]);
    }

    /// A backup records each pack in the database before any index file
    /// lists it; prune may delete such a pack without any index file going
    /// away. A database opened afterwards must not keep pointing at it.
    #[test]
    fn index_db_forgets_unlisted_packs_that_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let blob = Id::hash(b"blob");
        {
            let repo = Repository::init_local(dir.path(), &InitOptions::default()).unwrap();
            let gone = PackEntry {
                pack: Id::hash(b"a pack that was deleted"),
                pack_len: 100,
                trailer: Trailer {
                    frames: vec![FrameRecord { offset: 8, stored_len: 10, raw_len: 10, codec: FrameCodec::Raw }],
                    blobs: vec![BlobRecord {
                        id: blob,
                        kind: BlobKind::Data,
                        frame: 0,
                        offset_in_frame: 0,
                        raw_len: 10,
                    }],
                },
            };
            repo.index().unwrap().add_packs(&[gone], None).unwrap();
            assert!(repo.index().unwrap().lookup(&blob).unwrap().is_some());
        }
        let repo = Repository::open_local(dir.path()).unwrap();
        assert!(repo.index().unwrap().lookup(&blob).unwrap().is_none());
        assert!(repo.index().unwrap().packs().unwrap().is_empty());
    }

    #[test]
    fn empty_repository_prunes_to_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_local(dir.path(), &InitOptions::default()).unwrap();
        let r = prune(&repo, &PruneOptions::default(), &NoProgress).unwrap();
        assert_eq!((r.snapshots, r.packs, r.packs_deleted, r.index_files_written), (0, 0, 0, 0));
        for bad in [-0.1, 1.5, f64::NAN] {
            let opts = PruneOptions { max_unused: bad, ..Default::default() };
            assert!(matches!(prune(&repo, &opts, &NoProgress), Err(Error::InvalidArgument { .. })));
        }
    }

    /// A snapshot forgotten by another host after prune listed it (here: a
    /// listing that still shows a deleted file) is gone, not damage: prune
    /// goes on, and what the remaining snapshot needs stays.
    #[test]
    fn a_snapshot_forgotten_after_the_listing_does_not_stop_prune() {
        use crate::ops::backup::{backup, BackupOptions};
        use crate::ops::check::{check, CheckOptions};
        use crate::storage::{Faults, FaultyStorage, MemoryStorage, MemoryStorageOptions, Storage};
        use std::sync::Arc;
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let mem: Arc<dyn Storage> = Arc::new(MemoryStorage::new(MemoryStorageOptions::default()));
        let faulty = Arc::new(FaultyStorage::new(mem, Faults::default()));
        let storage: Arc<dyn Storage> = faulty.clone();
        let index = Some(dir.path().join("index.redb"));
        let repo = Repository::init_with_index(storage, &InitOptions::default(), index).unwrap();
        let opts = || BackupOptions { paths: vec![src.clone()], ..Default::default() };
        std::fs::write(src.join("a"), vec![1u8; 300_000]).unwrap();
        let first = backup(&repo, opts(), &NoProgress).unwrap();
        std::fs::write(src.join("a"), vec![2u8; 300_000]).unwrap();
        let second = backup(&repo, opts(), &NoProgress).unwrap();
        let lag = Duration::from_millis(400);
        // Both snapshots are older than the lag, so both are listed; the
        // deleted one keeps being listed for the lag.
        std::thread::sleep(lag + Duration::from_millis(100));
        faulty.set_faults(Faults { list_lag: lag, ..Faults::default() });
        repo.storage().delete(FileKind::Snapshot, &first.snapshot_id.to_hex()).unwrap();
        assert!(repo.snapshot_ids().unwrap().contains(&first.snapshot_id), "the listing does not lag");
        let r =
            prune(&repo, &PruneOptions { max_unused: 0.0, instant: true, ..Default::default() }, &NoProgress).unwrap();
        assert_eq!(r.snapshots, 1, "{r:?}");
        assert!(r.packs_deleted + r.packs_repacked > 0, "the first snapshot's data stayed: {r:?}");
        faulty.set_faults(Faults::default());
        assert!(repo.load_snapshot(&second.snapshot_id).is_ok());
        let report = check(&repo, &CheckOptions { read_data: true, ..Default::default() }, &NoProgress).unwrap();
        assert!(report.ok(), "{:?}", report.errors);
    }

    /// Every blob of a split v2 directory is live, not only its root: a
    /// prune that rewrites every pack with something unused keeps all of
    /// them, and the directory still loads whole and checks clean.
    #[test]
    fn prune_keeps_every_blob_of_a_split_directory() {
        use crate::ops::backup::{backup, BackupOptions};
        use crate::ops::check::{check, CheckOptions};
        use crate::ops::tree_walk::{locate, Located};
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("src/big");
        std::fs::create_dir_all(&big).unwrap();
        for i in 0..3000 {
            std::fs::write(big.join(format!("f{i:05}")), format!("file {i}")).unwrap();
        }
        let repo = Repository::init_local(&dir.path().join("repo"), &InitOptions::default()).unwrap();
        assert!(repo.writes_trees_v2());
        let opts = || BackupOptions { paths: vec![big.clone()], ..Default::default() };
        let first = backup(&repo, opts(), &NoProgress).unwrap();
        std::fs::write(big.join("f01234"), "changed").unwrap();
        let second = backup(&repo, opts(), &NoProgress).unwrap();
        // The first snapshot goes: its old leaf, nodes and file are unused.
        repo.storage().delete(FileKind::Snapshot, &first.snapshot_id.to_hex()).unwrap();
        let r =
            prune(&repo, &PruneOptions { max_unused: 0.0, instant: true, ..Default::default() }, &NoProgress).unwrap();
        assert!(r.packs_deleted + r.packs_repacked > 0, "{r:?}");
        drop(repo);

        let repo = Repository::open_local(&dir.path().join("repo")).unwrap();
        let snap = repo.load_snapshot(&second.snapshot_id).unwrap();
        let Located::Node(node) = locate(&repo, &snap, &big.display().to_string()).unwrap() else {
            panic!("no directory at {}", big.display())
        };
        let (tree, parts) = repo.load_tree_with_parts(&node.subtree.unwrap()).unwrap();
        assert_eq!(tree.nodes.len(), 3000);
        assert!(parts.len() > 3, "a split directory: {} blobs", parts.len());
        let report = check(&repo, &CheckOptions { read_data: true, ..Default::default() }, &NoProgress).unwrap();
        assert!(report.ok(), "{:?}", report.errors);
    }
}
