//! Prune's plan: what is live, which copy of each live blob stays, and
//! what happens to each pack. Reads only.
//!
//! Out of core (issue #16): memory grows with packs and trees, not with
//! blobs. Every pack's trailer goes to a scratch file and one record per
//! blob copy to an on-disk sorter ([`PackTable`]); the live blob ids go to
//! a second sorter; the two sorted streams are then merged twice (first
//! to learn each pack's potential live fraction, then to choose each live
//! blob's surviving copy), and the chosen copies are written sorted by
//! pack for the repack. What stays in memory is a row per pack, the
//! locations of the tree blobs (to read them) and the set of tree blobs
//! visited.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::format::index_file::PackEntry;
use crate::format::pack::{BlobKind, FrameCodec, FrameRecord};
use crate::format::tree_v2;
use crate::id::Id;
use crate::index::BlobLocation;
use crate::ops::pack_table::{Occurrence, PackTable, SORT_MEMORY};
use crate::ops::prune::PruneReport;
use crate::ops::tree_walk;
use crate::repo::Repository;
use crate::sorted_runs::{key_u32, u32_at, Merged, RunWriter, Sorter};
use crate::storage::FileKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Keep,
    Repack,
    Delete,
}

/// One pack as the plan sees it.
pub(crate) struct PackPlan {
    pub(crate) pack: Id,
    pub(crate) pack_len: u64,
    /// Listed by at least one index file.
    pub(crate) listed: bool,
    /// Its number in the plan's pack table.
    no: u32,
    /// Copies of live blobs that stay in it, and their uncompressed bytes.
    pub(crate) chosen: u64,
    chosen_bytes: u64,
    used_share: u64,
    total_share: u64,
    /// It holds a live blob of which no listed pack outside a prune mark
    /// has a copy (format v2: a marked pack that does is not deleted).
    pub(crate) holds_sole_copy: bool,
    pub(crate) fate: Fate,
}

/// Everything prune decides before it writes anything.
pub struct Plan {
    /// In pack id order.
    pub(crate) packs: Vec<PackPlan>,
    /// Index file name -> packs it lists.
    pub(crate) index_files: Vec<(String, Vec<Id>)>,
    pub(crate) report: PruneReport,
    table: PackTable,
    /// (position in `packs`, record) of every chosen copy, sorted.
    chosen: PathBuf,
}

pub(crate) fn damaged(reason: String) -> Error {
    Error::Damaged { operation: "prune", reason }
}

/// The table of every pack (listed ones first), each index file's name
/// with the packs it lists, and where every tree blob is (from the packs'
/// own trailers, listed packs first: prune reads trees through this and
/// not through the index database, which knows only listed packs and may
/// be stale).
struct Loaded {
    table: PackTable,
    index_files: Vec<(String, Vec<Id>)>,
    trees: HashMap<Id, BlobLocation>,
    deltas: Deltas,
}

/// Every copy of every chunk stored as a delta (stream deltas,
/// format-spec/v2/streams.md §4.6): (pack, frame). A live delta makes its
/// base live, and the base id is in the frame, not in the trailer. Held in
/// memory: one entry per delta chunk, a small share of a repository's blobs.
type Deltas = HashMap<Id, Vec<(Id, FrameRecord)>>;

fn add_deltas(deltas: &mut Deltas, p: &PackEntry) {
    for b in &p.trailer.blobs {
        let Some(frame) = p.trailer.frames.get(b.frame as usize) else { continue };
        if frame.codec == FrameCodec::Delta {
            deltas.entry(b.id).or_default().push((p.pack, *frame));
        }
    }
}

fn add_trees(trees: &mut HashMap<Id, BlobLocation>, p: &PackEntry) {
    for b in p.trailer.blobs.iter().filter(|b| b.kind == BlobKind::Tree) {
        let Some(frame) = p.trailer.frames.get(b.frame as usize) else { continue };
        trees.entry(b.id).or_insert(BlobLocation {
            pack: p.pack,
            frame: *frame,
            offset_in_frame: b.offset_in_frame,
            raw_len: b.raw_len,
            kind: b.kind,
        });
    }
}

/// Reads every index file (checking each against its name), one at a
/// time, and lists every pack in storage, reading the trailers of packs no
/// index file lists. A listed pack that is missing or has another size is
/// damage.
fn load_packs(repo: &Repository, report: &mut PruneReport) -> Result<Loaded> {
    // The trailers of the packs to repack are read back.
    let mut table = PackTable::new(repo, true)?;
    let mut index_files = Vec::new();
    let mut trees = HashMap::new();
    let mut deltas = HashMap::new();
    // The index file that first listed each pack (by table number).
    let mut first_file: Vec<u32> = Vec::new();
    for (name, _) in repo.storage().list(FileKind::Index)? {
        let data = repo.storage().get(FileKind::Index, &name)?;
        if Id::hash(&data).to_hex() != name {
            return Err(damaged(format!("index file {name} does not match its name")));
        }
        let entries = repo.decode_index_file(data, &name).map_err(|e| damaged(e.to_string()))?;
        let file_no = index_files.len() as u32;
        index_files.push((name.clone(), entries.iter().map(|e| e.pack).collect()));
        for e in &entries {
            if table.add(e, true)?.is_some() {
                first_file.push(file_no);
                add_trees(&mut trees, e);
                add_deltas(&mut deltas, e);
            }
        }
    }
    let stored = repo.pack_sizes()?;
    report.packs = stored.len() as u64;
    report.stored_bytes = stored.values().sum();
    for (row, file) in table.rows.iter().zip(&first_file) {
        let file = &index_files[*file as usize].0;
        match stored.get(&row.id) {
            None => return Err(damaged(format!("pack {}, listed by index file {file}, is missing", row.id))),
            Some(&len) if len != row.len => {
                return Err(damaged(format!("pack {} has {len} bytes, index file {file} says {}", row.id, row.len)))
            }
            Some(_) => {}
        }
    }
    let mut unlisted: Vec<(Id, u64)> =
        stored.iter().filter(|(id, _)| table.number(id).is_none()).map(|(id, len)| (*id, *len)).collect();
    unlisted.sort();
    for (id, len) in unlisted {
        match repo.read_pack_trailer(&id, len) {
            Ok(e) => {
                table.add(&e, false)?;
                add_trees(&mut trees, &e);
                add_deltas(&mut deltas, &e);
            }
            // Not ours to judge: an unreadable file is left for `check`.
            Err(e) => report.warnings.push(format!("unlisted pack {id} left alone: {e}")),
        }
    }
    Ok(Loaded { table, index_files, trees, deltas })
}

/// Every blob reachable from the snapshots not in `ignore` (sorted, each
/// once), each tree read once, and the number of snapshots counted.
fn mark_live(
    repo: &Repository,
    trees: &HashMap<Id, BlobLocation>,
    deltas: &Deltas,
    ignore: &HashSet<Id>,
    scratch: &std::path::Path,
) -> Result<(Merged<32>, u64)> {
    let reader = repo.blob_reader()?;
    let mut live: Sorter<32> = Sorter::new(scratch, SORT_MEMORY, true);
    let mut roots = Vec::new();
    for id in repo.snapshot_ids()? {
        if ignore.contains(&id) {
            continue;
        }
        let snap = match repo.load_snapshot(&id) {
            Ok(snap) => snap,
            // Listed, then gone: a `forget` on another host deleted it
            // after the listing (or a store whose listing lags its deletes
            // still showed it). Nothing references a deleted snapshot, so
            // it needs no protection; a snapshot written after the listing
            // is protected by its session, not by this loop.
            Err(Error::Missing { .. }) => continue,
            Err(e) => return Err(damaged(format!("snapshot {id} cannot be read: {e}"))),
        };
        roots.push(snap.file.tree);
    }
    let snapshots = roots.len() as u64;
    // Blob by blob, not directory by directory: v1 trees, and the nodes,
    // leaves and chunk lists of v2 directories, every one of which is live
    // (not only a directory's root).
    let load = |tree_id: &Id| -> Result<tree_v2::Refs> {
        let loc = trees
            .get(tree_id)
            .ok_or_else(|| damaged(format!("tree {tree_id}, which a snapshot needs, is in no pack")))?;
        reader
            .read_at(repo, tree_id, loc)
            .and_then(|data| tree_v2::references(&data, tree_id))
            .map_err(|e| damaged(format!("tree {tree_id} of a snapshot cannot be read: {e}")))
    };
    let mut live_deltas: HashSet<Id> = HashSet::new();
    let mut visit = |id: &Id, refs: &tree_v2::Refs| {
        live.push(id.0)?;
        for c in &refs.chunks {
            live.push(c.0)?;
            if deltas.contains_key(c) {
                live_deltas.insert(*c);
            }
        }
        Ok(())
    };
    // Deciding what is unused needs every live tree: any failure stops.
    let mut failed = |_: &Id, e: Error| match e {
        e @ Error::Damaged { .. } => Err(e),
        e => Err(damaged(e.to_string())),
    };
    tree_walk::visit_unique(roots, &load, &|refs: &tree_v2::Refs| refs.metadata.clone(), &mut visit, &mut failed)?;
    // A live delta keeps its base live, whichever copy of the delta stays
    // (each copy names its own base). Bases are never deltas: one step.
    for id in &live_deltas {
        for (pack, frame) in deltas.get(id).into_iter().flatten() {
            let base = repo
                .delta_base(pack, frame)
                .map_err(|e| damaged(format!("the base of delta chunk {id} in pack {pack} cannot be read: {e}")))?;
            live.push(base.0)?;
        }
    }
    Ok((live.finish()?, snapshots))
}

/// How good a pack is as the home of a live blob's surviving copy: not
/// named by a prune mark, its potential live fraction (parts per million),
/// listed, lower id.
type CopyScore = (bool, u64, bool, Reverse<Id>);

/// Makes the plan: what is live, which copy of each live blob stays, and
/// what happens to each pack. Reads only.
pub fn plan(repo: &Repository, max_unused: f64, ignore_snapshots: &HashSet<Id>) -> Result<Plan> {
    plan_avoiding(repo, max_unused, ignore_snapshots, &HashSet::new())
}

/// [`plan`], choosing the surviving copy of a live blob outside the packs
/// in `marked` whenever there is one (format v2: those are due to go).
pub(crate) fn plan_avoiding(
    repo: &Repository,
    max_unused: f64,
    ignore_snapshots: &HashSet<Id>,
    marked: &HashSet<Id>,
) -> Result<Plan> {
    if !(0.0..=1.0).contains(&max_unused) {
        return Err(Error::InvalidArgument {
            what: "max-unused",
            reason: format!("{max_unused} is not a fraction between 0 and 1"),
        });
    }
    let mut report = PruneReport::default();
    let Loaded { mut table, index_files, trees, deltas } = load_packs(repo, &mut report)?;
    let (live, snapshots) = mark_live(repo, &trees, &deltas, ignore_snapshots, table.scratch())?;
    drop((trees, deltas));
    report.snapshots = snapshots;
    let n = table.rows.len();

    // Pass 1: every copy against the live ids. Each pack's total share;
    // its potential live fraction (what it would hold if it kept every
    // live blob it has a copy of); the live copies, kept for pass 2.
    let mut total_share = vec![0u64; n];
    let mut potential = vec![0u64; n];
    let live_copies = table.scratch().join("live-copies");
    let mut missing: (u64, Vec<Id>) = (0, Vec::new());
    {
        let mut out: RunWriter<{ crate::ops::pack_table::OCC_LEN }> = RunWriter::create(&live_copies)?;
        let mut live = live.peekable();
        let mut last: Option<(Id, u32)> = None;
        let mut note_missing = |id: Id| {
            missing.0 += 1;
            if missing.1.len() < 5 {
                missing.1.push(id);
            }
        };
        for rec in table.occurrences()? {
            let rec = rec?;
            let occ = Occurrence::from_bytes(&rec);
            total_share[occ.pack as usize] += u64::from(occ.share);
            let mut is_live = false;
            while let Some(l) = live.peek() {
                let l = match l {
                    Ok(l) => *l,
                    Err(_) => return Err(live.next().and_then(|r| r.err()).unwrap_or_else(|| damaged("".into()))),
                };
                match l.cmp(&occ.blob.0) {
                    std::cmp::Ordering::Less => {
                        // Passed over: missing, unless it matched the
                        // copies before this one.
                        if last.is_none_or(|(b, _)| b.0 != l) {
                            note_missing(Id(l));
                        }
                        live.next();
                    }
                    std::cmp::Ordering::Equal => {
                        is_live = true;
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            if !is_live {
                continue;
            }
            out.push(&rec)?;
            // A blob twice in one pack counts once.
            if last != Some((occ.blob, occ.pack)) {
                potential[occ.pack as usize] += u64::from(occ.share);
                last = Some((occ.blob, occ.pack));
            }
        }
        for l in live {
            let l = l?;
            // The last copy matched may have been its own blob's.
            if last.is_none_or(|(b, _)| b.0 != l) {
                note_missing(Id(l));
            }
        }
        out.finish()?;
    }
    if missing.0 > 0 {
        let shown: Vec<String> = missing.1.iter().map(|i| i.to_hex()).collect();
        return Err(damaged(format!(
            "{} blob(s) that snapshots need are in no pack (e.g. {})",
            missing.0,
            shown.join(", ")
        )));
    }

    // The copy of a blob that stays is the one in the pack with the
    // highest score (outside marks, then the highest potential fraction,
    // then listed packs, then the lower id), so that the copies an
    // interrupted prune already made (fully live) win over the mostly dead
    // originals.
    let score: Vec<CopyScore> = table
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            // Parts per million, so that the comparison is exact.
            let fraction = (potential[i] * 1_000_000).checked_div(total_share[i]).unwrap_or(1_000_000);
            (!marked.contains(&r.id), fraction, r.listed, Reverse(r.id))
        })
        .collect();
    drop(potential);
    let safe_home: Vec<bool> = table.rows.iter().map(|r| r.listed && !marked.contains(&r.id)).collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by_key(|&i| table.rows[i as usize].id);
    let mut rank = vec![0u32; n];
    for (pos, &no) in order.iter().enumerate() {
        rank[no as usize] = pos as u32;
    }

    // Pass 2: the live copies, blob by blob: choose the one that stays.
    let mut used_share = vec![0u64; n];
    let mut chosen = vec![0u64; n];
    let mut chosen_bytes = vec![0u64; n];
    let mut sole = vec![false; n];
    let mut chosen_sorter: Sorter<8> = Sorter::new(table.scratch(), SORT_MEMORY, false);
    {
        let mut group: Vec<Occurrence> = Vec::new();
        let mut settle = |group: &mut Vec<Occurrence>| -> Result<()> {
            let Some(best) = group
                .iter()
                .enumerate()
                // The first record of each pack is its copy.
                .filter(|(i, o)| *i == 0 || group[i - 1].pack != o.pack)
                .map(|(_, o)| o)
                .max_by_key(|o| &score[o.pack as usize])
                .copied()
            else {
                return Ok(());
            };
            if !group.iter().any(|o| safe_home[o.pack as usize]) {
                for o in group.iter() {
                    sole[o.pack as usize] = true;
                }
            }
            let p = best.pack as usize;
            used_share[p] += u64::from(best.share);
            chosen[p] += 1;
            chosen_bytes[p] += u64::from(best.raw_len);
            report.live_blobs += 1;
            report.live_bytes += u64::from(best.raw_len);
            let mut rec = [0u8; 8];
            rec[..4].copy_from_slice(&key_u32(rank[p]));
            rec[4..].copy_from_slice(&key_u32(best.record));
            chosen_sorter.push(rec)?;
            group.clear();
            Ok(())
        };
        for rec in Merged::<{ crate::ops::pack_table::OCC_LEN }>::open(&live_copies)? {
            let occ = Occurrence::from_bytes(&rec?);
            if group.first().is_some_and(|g| g.blob != occ.blob) {
                settle(&mut group)?;
            }
            group.push(occ);
        }
        settle(&mut group)?;
    }
    let _ = std::fs::remove_file(&live_copies);
    let chosen_path = table.scratch().join("chosen");
    crate::sorted_runs::write_run(&chosen_path, chosen_sorter.finish()?)?;

    let mut packs: Vec<PackPlan> = order
        .iter()
        .map(|&no| {
            let i = no as usize;
            let r = &table.rows[i];
            PackPlan {
                pack: r.id,
                pack_len: r.len,
                listed: r.listed,
                no,
                chosen: chosen[i],
                chosen_bytes: chosen_bytes[i],
                used_share: used_share[i],
                total_share: total_share[i],
                holds_sole_copy: sole[i],
                fate: Fate::Keep,
            }
        })
        .collect();

    let mut after = 0u64;
    for p in &mut packs {
        let unused = p.total_share - p.used_share;
        report.live_stored_bytes += p.used_share;
        report.unused_stored_bytes += unused;
        p.fate = if p.chosen == 0 {
            Fate::Delete
        } else if p.total_share > 0 && unused as f64 > max_unused * p.total_share as f64 {
            Fate::Repack
        } else {
            Fate::Keep
        };
        match p.fate {
            Fate::Delete => {
                report.packs_deleted += 1;
                report.bytes_deleted += p.pack_len;
            }
            Fate::Repack => {
                report.packs_repacked += 1;
                report.bytes_repacked += p.pack_len;
                report.blobs_copied += p.chosen;
                report.bytes_copied += p.chosen_bytes;
                after += p.used_share;
            }
            Fate::Keep => {
                after += p.pack_len;
                if !p.listed {
                    report.packs_adopted += 1;
                }
            }
        }
    }
    // Unreadable unlisted packs stay where they are.
    let planned: u64 = packs.iter().map(|p| p.pack_len).sum();
    report.stored_bytes_after = after + report.stored_bytes.saturating_sub(planned);
    Ok(Plan { packs, index_files, report, table, chosen: chosen_path })
}

/// Packs handed to [`Plan::for_each_repack_batch`]'s callback at once.
const REPACK_BATCH: usize = 16;

impl Plan {
    /// The figures of the plan (what a dry run reports).
    pub fn report(&self) -> &PruneReport {
        &self.report
    }

    pub(crate) fn goes(&self) -> HashSet<Id> {
        self.packs.iter().filter(|p| p.fate != Fate::Keep).map(|p| p.pack).collect()
    }

    pub(crate) fn has_work(&self) -> bool {
        self.packs.iter().any(|p| p.fate != Fate::Keep || !p.listed)
    }

    /// A pack of the plan with its trailer (read back from scratch).
    pub(crate) fn entry(&self, p: &PackPlan) -> Result<PackEntry> {
        self.table.entry(p.no)
    }

    /// Hands the packs `select` picks, with which of their blob records
    /// hold a copy that stays, to `f`, a few packs at a time and in pack
    /// id order (the repack reads each batch in parallel).
    pub(crate) fn for_each_repack_batch(
        &self,
        select: &dyn Fn(&PackPlan) -> bool,
        f: &mut dyn FnMut(&[RepackPack]) -> Result<()>,
    ) -> Result<()> {
        let mut batch: Vec<RepackPack> = Vec::new();
        let mut current: Option<(usize, RepackPack)> = None;
        let mut flush_one = |cur: Option<(usize, RepackPack)>, batch: &mut Vec<RepackPack>| -> Result<()> {
            if let Some((_, p)) = cur {
                batch.push(p);
                if batch.len() >= REPACK_BATCH {
                    f(batch)?;
                    batch.clear();
                }
            }
            Ok(())
        };
        for rec in Merged::<8>::open(&self.chosen)? {
            let rec = rec?;
            let (pos, record) = (u32_at(&rec, 0) as usize, u32_at(&rec, 4) as usize);
            if current.as_ref().is_none_or(|(at, _)| *at != pos) {
                flush_one(current.take(), &mut batch)?;
                let Some(p) = self.packs.get(pos) else { continue };
                if select(p) {
                    let entry = self.entry(p)?;
                    let chosen = vec![false; entry.trailer.blobs.len()];
                    current = Some((pos, RepackPack { entry, chosen }));
                } else {
                    continue;
                }
            }
            if let Some((_, p)) = current.as_mut() {
                if let Some(c) = p.chosen.get_mut(record) {
                    *c = true;
                }
            }
        }
        flush_one(current.take(), &mut batch)?;
        if !batch.is_empty() {
            f(&batch)?;
        }
        Ok(())
    }
}

/// A pack to rewrite: its trailer, and per blob record whether it is the
/// copy of a live blob that stays.
pub(crate) struct RepackPack {
    pub(crate) entry: PackEntry,
    pub(crate) chosen: Vec<bool>,
}
