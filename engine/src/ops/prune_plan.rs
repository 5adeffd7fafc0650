//! Prune's plan: what is live, which copy of each live blob stays, and
//! what happens to each pack. Reads only.
//!
//! Out of core (issue #16): memory grows with packs and trees, not with
//! blobs. One record per blob copy goes to an on-disk sorter
//! ([`PackTable`]), the live blob ids to a second one; the two sorted
//! streams are then merged twice (first to learn each pack's potential
//! live fraction, then to choose each live blob's surviving copy), and
//! the chosen copies in packs to rewrite are kept sorted by pack for the
//! repack. What stays in memory is a row per pack, the locations of the
//! tree blobs (to read them) and the set of tree blobs visited.
//!
//! Scratch grows with what a step needs, not with every chunk: the plan
//! holds the two sorters' runs (48 bytes a copy, 32 a live blob) and the
//! chosen copies (8 bytes a live blob), and deletes them before it returns;
//! trailers are not kept, except those of unlisted packs (read from the
//! packs themselves). The trailers the later steps need (packs to rewrite,
//! packs to list anew) are read back from the index files then
//! ([`Plan::load_trailers`]), each file at most once.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::format::index_file::PackEntry;
use crate::format::pack::{BlobKind, FrameCodec, FrameRecord};
use crate::format::tree_v2;
use crate::id::Id;
use crate::index::BlobLocation;
use crate::ops::pack_table::{Occurrence, PackTable, SpillAt, TrailerSpill, OCC_LEN, SORT_MEMORY};
use crate::ops::prune::PruneReport;
use crate::ops::tree_walk;
use crate::repo::Repository;
use crate::sorted_runs::{key_u32, u32_at, Merged, RunWriter, Sorted, Sorter};
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
    /// (position in `packs`, record) of every chosen copy in a pack to
    /// rewrite, sorted.
    chosen: PathBuf,
    /// Trailers of listed packs read back from the index files after the
    /// plan, by table number.
    read_back: Mutex<ReadBack>,
    /// Every pack's storage time, from the plan's one listing of `packs/`
    /// (format v2's mark step never marks a pack younger than the grace
    /// period, and packs are immutable, so the listing's times hold for
    /// the whole run).
    pub(crate) pack_times: HashMap<Id, SystemTime>,
}

#[derive(Default)]
struct ReadBack {
    spill: Option<TrailerSpill>,
    at: HashMap<u32, SpillAt>,
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
    pack_times: HashMap<Id, SystemTime>,
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

/// Index file `name`, checked against its name.
fn read_index_file(repo: &Repository, name: &str) -> Result<Vec<PackEntry>> {
    let data = repo.storage().get(FileKind::Index, name)?;
    if Id::hash(&data).to_hex() != name {
        return Err(damaged(format!("index file {name} does not match its name")));
    }
    repo.decode_index_file(data, name).map_err(|e| damaged(e.to_string()))
}

/// Reads every index file (checking each against its name), one at a
/// time, and lists every pack in storage, reading the trailers of packs no
/// index file lists. A listed pack that is missing or has another size is
/// damage.
fn load_packs(repo: &Repository, listing: Vec<(String, u64)>, report: &mut PruneReport) -> Result<Loaded> {
    // Trailers of listed packs are read again from the index files, and
    // only for the packs the later steps need.
    let mut table = PackTable::new_keeping_unlisted(repo)?;
    let mut index_files = Vec::new();
    let mut trees = HashMap::new();
    let mut deltas = HashMap::new();
    // The index file that first listed each pack (by table number).
    let mut first_file: Vec<u32> = Vec::new();
    for (name, _) in listing {
        let entries = read_index_file(repo, &name)?;
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
    // One listing of `packs/` serves the whole run: sizes here, storage
    // times for the mark step (on S3 a listing is a request per 1,000
    // packs).
    let mut stored: HashMap<Id, u64> = HashMap::new();
    let mut pack_times: HashMap<Id, SystemTime> = HashMap::new();
    for (name, stat) in repo.storage().list_stat(FileKind::Pack)? {
        if let Ok(id) = name.parse::<Id>() {
            stored.insert(id, stat.len);
            pack_times.insert(id, stat.modified);
        }
    }
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
    Ok(Loaded { table, pack_times, index_files, trees, deltas })
}

/// Every blob reachable from the snapshots not in `ignore` (sorted, each
/// once), each tree read once, and the number of snapshots counted.
fn mark_live(
    repo: &Repository,
    trees: &HashMap<Id, BlobLocation>,
    deltas: &Deltas,
    ignore: &HashSet<Id>,
    scratch: &std::path::Path,
) -> Result<(Sorted<32>, u64)> {
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
    Ok((live.finish_kept()?, snapshots))
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
    // The first command on a new host fills the index cache (the trees are
    // read through it), with sorted runs of its own (~55 bytes a chunk):
    // before the plan's runs exist rather than beside them. One listing of
    // `index/` serves that first sync and the plan (remote.md section 4).
    let listing = repo.storage().list(FileKind::Index)?;
    repo.index_listed(&listing)?;
    repo.blob_reader()?;
    let Loaded { mut table, pack_times, index_files, trees, deltas } = load_packs(repo, listing, &mut report)?;
    let (live, snapshots) = mark_live(repo, &trees, &deltas, ignore_snapshots, table.scratch())?;
    drop((trees, deltas));
    report.snapshots = snapshots;
    let n = table.rows.len();

    // Pass 1: every copy against the live ids. Each pack's total share;
    // its potential live fraction (what it would hold if it kept every
    // live blob it has a copy of).
    let copies = table.occurrence_runs()?;
    let mut total_share = vec![0u64; n];
    let mut potential = vec![0u64; n];
    let mut join = LiveJoin::new(copies.iter()?, live.iter()?);
    let mut last: Option<(Id, u32)> = None;
    while let Some((occ, is_live)) = join.next_copy()? {
        total_share[occ.pack as usize] += u64::from(occ.share);
        // A blob twice in one pack counts once.
        if is_live && last != Some((occ.blob, occ.pack)) {
            potential[occ.pack as usize] += u64::from(occ.share);
            last = Some((occ.blob, occ.pack));
        }
    }
    let (missing, examples) = join.into_missing()?;
    if missing > 0 {
        let shown: Vec<String> = examples.iter().map(|i| i.to_hex()).collect();
        return Err(damaged(format!(
            "{missing} blob(s) that snapshots need are in no pack (e.g. {})",
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

    // Pass 2: the same merge again (cheaper on disk than writing the live
    // copies out for it: 48 bytes a live blob), the live copies blob by
    // blob: choose the one that stays.
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
        let mut join = LiveJoin::new(copies.iter()?, live.iter()?);
        while let Some((occ, is_live)) = join.next_copy()? {
            if !is_live {
                continue;
            }
            if group.first().is_some_and(|g| g.blob != occ.blob) {
                settle(&mut group)?;
            }
            group.push(occ);
        }
        settle(&mut group)?;
    }
    // Their runs go now: the rest of prune needs neither.
    drop((copies, live));
    let chosen_all = chosen_sorter.finish_kept()?;

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

    // Only the repack reads the chosen copies, and only those in packs to
    // rewrite.
    let chosen_path = table.scratch().join("chosen");
    let mut w: RunWriter<8> = RunWriter::create(&chosen_path)?;
    if packs.iter().any(|p| p.fate == Fate::Repack) {
        for rec in chosen_all.iter()? {
            let rec = rec?;
            if packs.get(u32_at(&rec, 0) as usize).is_some_and(|p| p.fate == Fate::Repack) {
                w.push(&rec)?;
            }
        }
    }
    w.finish()?;
    drop(chosen_all);
    Ok(Plan { packs, index_files, report, table, chosen: chosen_path, read_back: Mutex::default(), pack_times })
}

/// The copies of blobs (sorted by blob, then pack) against the live ids
/// (sorted, each once): every copy with whether its blob is live, and the
/// live ids that no copy has.
struct LiveJoin {
    copies: Merged<OCC_LEN>,
    live: Merged<32>,
    /// The next live id not yet passed.
    pending: Option<[u8; 32]>,
    /// The last live id a copy matched.
    matched: Option<[u8; 32]>,
    missing: u64,
    examples: Vec<Id>,
}

impl LiveJoin {
    fn new(copies: Merged<OCC_LEN>, live: Merged<32>) -> LiveJoin {
        LiveJoin { copies, live, pending: None, matched: None, missing: 0, examples: Vec::new() }
    }

    fn peek_live(&mut self) -> Result<Option<[u8; 32]>> {
        if self.pending.is_none() {
            self.pending = self.live.next().transpose()?;
        }
        Ok(self.pending)
    }

    /// Passes over live id `l`: missing, unless a copy matched it.
    fn pass(&mut self, l: [u8; 32]) {
        if self.matched != Some(l) {
            self.missing += 1;
            if self.examples.len() < 5 {
                self.examples.push(Id(l));
            }
        }
        self.pending = None;
    }

    fn next_copy(&mut self) -> Result<Option<(Occurrence, bool)>> {
        let Some(rec) = self.copies.next().transpose()? else { return Ok(None) };
        let occ = Occurrence::from_bytes(&rec);
        while let Some(l) = self.peek_live()? {
            match l.cmp(&occ.blob.0) {
                std::cmp::Ordering::Less => self.pass(l),
                std::cmp::Ordering::Equal => {
                    self.matched = Some(l);
                    return Ok(Some((occ, true)));
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(Some((occ, false)))
    }

    /// After the last copy: how many live ids no copy has, and a few of
    /// them.
    fn into_missing(mut self) -> Result<(u64, Vec<Id>)> {
        while let Some(l) = self.peek_live()? {
            self.pass(l);
        }
        Ok((self.missing, self.examples))
    }
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

    /// Bytes of every pack the plan's listing saw, once the packs in
    /// `goes` are deleted and `written` bytes of new packs are stored:
    /// what a listing after the run would add up to, without making one
    /// (a pack another host writes meanwhile is not counted).
    pub(crate) fn stored_after(&self, goes: &HashSet<Id>, written: u64) -> u64 {
        let gone: u64 = self.packs.iter().filter(|p| goes.contains(&p.pack)).map(|p| p.pack_len).sum();
        self.report.stored_bytes.saturating_sub(gone) + written
    }

    pub(crate) fn has_work(&self) -> bool {
        self.packs.iter().any(|p| p.fate != Fate::Keep || !p.listed)
    }

    /// A pack of the plan with its trailer, read back from scratch: an
    /// unlisted pack's (kept by the plan), a listed pack's once
    /// [`load_trailers`](Self::load_trailers) has read it.
    pub(crate) fn entry(&self, p: &PackPlan) -> Result<PackEntry> {
        if !p.listed {
            return self.table.entry(p.no);
        }
        let read_back = crate::sync::lock(&self.read_back, "prune's trailers")?;
        match (read_back.at.get(&p.no), &read_back.spill) {
            (Some(at), Some(spill)) => spill.read(*at, p.pack, p.pack_len),
            _ => Err(Error::Bug {
                what: "prune's trailers",
                message: format!("the trailer of pack {} was not read back", p.pack),
            }),
        }
    }

    /// Reads back the trailers of the listed packs `want` picks, for
    /// [`entry`](Self::entry), from the index files that list them: each
    /// file once (and none more than once over all calls, for packs already
    /// read back), checked against its name as the plan did, the entry of
    /// the first file listing the pack as in the plan. A file deleted since
    /// the plan (by a concurrent prune) gives way to the packs' own
    /// trailers. Scratch: the trailers asked for, not every pack's.
    pub(crate) fn load_trailers(&self, repo: &Repository, want: &dyn Fn(&PackPlan) -> bool) -> Result<()> {
        let mut read_back = crate::sync::lock(&self.read_back, "prune's trailers")?;
        let mut need: HashMap<Id, usize> = self
            .packs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.listed && !read_back.at.contains_key(&p.no) && want(p))
            .map(|(i, p)| (p.pack, i))
            .collect();
        if need.is_empty() {
            return Ok(());
        }
        let ReadBack { spill, at } = &mut *read_back;
        if spill.is_none() {
            *spill = Some(TrailerSpill::create(self.table.scratch().join("read-back"))?);
        }
        let Some(spill) = spill.as_mut() else { return Ok(()) };
        let mut keep = |entry: &PackEntry, need: &mut HashMap<Id, usize>| -> Result<()> {
            if let Some(i) = need.remove(&entry.pack) {
                at.insert(self.packs[i].no, spill.append(&entry.trailer)?);
            }
            Ok(())
        };
        for (name, listed) in &self.index_files {
            if need.is_empty() {
                break;
            }
            if !listed.iter().any(|id| need.contains_key(id)) {
                continue;
            }
            match read_index_file(repo, name) {
                Ok(entries) => {
                    for e in &entries {
                        keep(e, &mut need)?;
                    }
                }
                Err(Error::Missing { .. }) => {
                    let gone: Vec<usize> = listed.iter().filter_map(|id| need.get(id).copied()).collect();
                    for i in gone {
                        let p = &self.packs[i];
                        keep(&repo.read_pack_trailer(&p.pack, p.pack_len)?, &mut need)?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        // Every listed pack is in a file above; a pack's own trailer is
        // right in any case.
        let rest: Vec<usize> = need.values().copied().collect();
        for i in rest {
            let p = &self.packs[i];
            keep(&repo.read_pack_trailer(&p.pack, p.pack_len)?, &mut need)?;
        }
        Ok(())
    }

    /// Hands the packs `select` picks (among the packs to rewrite), with
    /// which of their blob records hold a copy that stays, to `f`, a few
    /// packs at a time and in pack id order (the repack reads each batch in
    /// parallel).
    pub(crate) fn for_each_repack_batch(
        &self,
        repo: &Repository,
        select: &dyn Fn(&PackPlan) -> bool,
        f: &mut dyn FnMut(&[RepackPack]) -> Result<()>,
    ) -> Result<()> {
        self.load_trailers(repo, &|p| p.fate == Fate::Repack && select(p))?;
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
                if p.fate == Fate::Repack && select(p) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::pack_table::share;
    use crate::repo::InitOptions;
    use crate::synthetic::{self, chunk_id, SyntheticIndex};

    /// What the plan decides for one pack, and which of its records hold
    /// a chosen copy (those in packs to rewrite).
    type Decision = (Fate, u64, u64, u64, bool, Vec<usize>);

    /// The plan computed the plain way, every set in memory: the
    /// reference the out-of-core plan must match exactly.
    fn reference(
        repo: &Repository,
        live: &HashSet<Id>,
        max_unused: f64,
        marked: &HashSet<Id>,
    ) -> HashMap<Id, Decision> {
        let mut packs: Vec<PackEntry> = Vec::new();
        let mut seen = HashSet::new();
        for (name, _) in repo.storage().list(FileKind::Index).unwrap() {
            for e in read_index_file(repo, &name).unwrap() {
                if seen.insert(e.pack) {
                    packs.push(e);
                }
            }
        }
        let mut total = HashMap::new();
        let mut potential = HashMap::new();
        // Blob -> (pack, its first record of the blob) for every pack holding it.
        let mut homes: HashMap<Id, Vec<(usize, usize)>> = HashMap::new();
        for (pi, p) in packs.iter().enumerate() {
            let mut counted = HashSet::new();
            for (r, b) in p.trailer.blobs.iter().enumerate() {
                *total.entry(pi).or_insert(0u64) += share(&p.trailer, r);
                if live.contains(&b.id) && counted.insert(b.id) {
                    *potential.entry(pi).or_insert(0u64) += share(&p.trailer, r);
                    homes.entry(b.id).or_default().push((pi, r));
                }
            }
        }
        let score = |pi: usize| {
            let t = total.get(&pi).copied().unwrap_or(0);
            let fraction = (potential.get(&pi).copied().unwrap_or(0) * 1_000_000).checked_div(t).unwrap_or(1_000_000);
            (!marked.contains(&packs[pi].pack), fraction, true, Reverse(packs[pi].pack))
        };
        let mut chosen: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut used: HashMap<usize, u64> = HashMap::new();
        let mut sole = HashSet::new();
        assert_eq!(homes.len(), live.len(), "a live blob in no pack");
        for h in homes.values() {
            let &(pi, r) = h.iter().max_by_key(|(pi, _)| score(*pi)).unwrap();
            chosen.entry(pi).or_default().push(r);
            *used.entry(pi).or_default() += share(&packs[pi].trailer, r);
            if h.iter().all(|(pi, _)| marked.contains(&packs[*pi].pack)) {
                sole.extend(h.iter().map(|(pi, _)| *pi));
            }
        }
        (0..packs.len())
            .map(|pi| {
                let t = total.get(&pi).copied().unwrap_or(0);
                let u = used.get(&pi).copied().unwrap_or(0);
                let mut records = chosen.get(&pi).cloned().unwrap_or_default();
                records.sort_unstable();
                let fate = if records.is_empty() {
                    Fate::Delete
                } else if t > 0 && (t - u) as f64 > max_unused * t as f64 {
                    Fate::Repack
                } else {
                    Fate::Keep
                };
                if fate != Fate::Repack {
                    records.clear();
                }
                (packs[pi].pack, (fate, records_len(&chosen, pi), u, t, sole.contains(&pi), records))
            })
            .collect()
    }

    fn records_len(chosen: &HashMap<usize, Vec<usize>>, pi: usize) -> u64 {
        chosen.get(&pi).map_or(0, |r| r.len() as u64)
    }

    fn decisions(repo: &Repository, plan: &Plan) -> HashMap<Id, Decision> {
        let mut repacked: HashMap<Id, Vec<usize>> = HashMap::new();
        plan.for_each_repack_batch(repo, &|_| true, &mut |batch| {
            for p in batch {
                let records = p.chosen.iter().enumerate().filter(|(_, c)| **c).map(|(r, _)| r).collect();
                assert!(repacked.insert(p.entry.pack, records).is_none(), "a pack handed to the repack twice");
            }
            Ok(())
        })
        .unwrap();
        plan.packs
            .iter()
            .map(|p| {
                let records = repacked.remove(&p.pack).unwrap_or_default();
                (p.pack, (p.fate, p.chosen, p.used_share, p.total_share, p.holds_sole_copy, records))
            })
            .collect()
    }

    /// The out-of-core plan (tests sort in runs of 1,024 records, so this
    /// repository's copies, live ids and chosen copies all go through runs
    /// on disk) decides exactly what the plain in-memory computation does:
    /// each pack's fate, copies kept, shares and sole copies, and which
    /// records the repack copies; with duplicate copies, partly live,
    /// wholly dead and marked packs. And the trailers it reads back for the
    /// repack are those of the index files.
    #[test]
    fn the_out_of_core_plan_matches_the_plain_computation() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let repo = Repository::init_local(&root, &InitOptions::default()).unwrap();
        let spec = SyntheticIndex { chunks: 3000, chunks_per_pack: 40, seed: 3 };
        synthetic::generate(&repo, &spec, &|_| {}).unwrap();
        let sealed = repo.keys().is_some();
        let junk = |n: u64| (0..n).map(move |i| Id::hash(format!("junk {i}").as_bytes()));
        let extra = [
            // Half of pack 0 again, and as much garbage.
            synthetic::sparse_entry(Id::hash(b"x1"), (0..20).map(|r| chunk_id(3, 0, r)).chain(junk(20)), sealed),
            // All of pack 1 again (a tie broken by the id).
            synthetic::sparse_entry(Id::hash(b"x2"), (0..40).map(|r| chunk_id(3, 1, r)), sealed),
            // Copies of a dead pack's chunks.
            synthetic::sparse_entry(Id::hash(b"x3"), (0..40).map(|r| chunk_id(3, 9, r)), sealed),
            // A few chunks of pack 2 twice in one pack, and garbage.
            synthetic::sparse_entry(
                Id::hash(b"x4"),
                (0..5).map(|r| chunk_id(3, 2, r)).chain((0..5).map(|r| chunk_id(3, 2, r))).chain(junk(30)),
                sealed,
            ),
        ];
        for e in &extra {
            synthetic::write_sparse(&root, e).unwrap();
        }
        for (id, data, _) in repo.encode_index_files(&extra, &[]).unwrap() {
            repo.storage().put(FileKind::Index, &id.to_hex(), &data).unwrap();
        }

        let scratch = tempfile::tempdir().unwrap();
        let listing = repo.storage().list(FileKind::Index).unwrap();
        let loaded = load_packs(&repo, listing, &mut PruneReport::default()).unwrap();
        let (live, _) = mark_live(&repo, &loaded.trees, &loaded.deltas, &HashSet::new(), scratch.path()).unwrap();
        let live: HashSet<Id> = live.iter().unwrap().map(|r| Id(r.unwrap())).collect();
        assert!(live.len() > 2700, "{} live blobs", live.len());

        let pack0 = synthetic_pack_id(0);
        let cases = [
            (0.1, HashSet::new()),
            (0.0, HashSet::new()),
            (0.1, HashSet::from([pack0, Id::hash(b"x2")])),
            (0.3, HashSet::from([pack0, synthetic_pack_id(2), Id::hash(b"x4")])),
        ];
        for (max_unused, marked) in cases {
            let plan = plan_avoiding(&repo, max_unused, &HashSet::new(), &marked).unwrap();
            let got = decisions(&repo, &plan);
            let want = reference(&repo, &live, max_unused, &marked);
            assert_eq!(got.len(), want.len());
            for (id, w) in &want {
                assert_eq!(got.get(id), Some(w), "pack {id}, max_unused {max_unused}, marked {marked:?}");
            }
            let fates = |f: Fate| got.values().filter(|d| d.0 == f).count();
            assert!(fates(Fate::Delete) >= 8, "dead packs: {}", fates(Fate::Delete));
            if !marked.is_empty() {
                assert!(fates(Fate::Repack) > 0, "nothing to rewrite with {marked:?}");
            }
            assert_eq!(plan.report.live_blobs, live.len() as u64);
        }
    }

    fn synthetic_pack_id(pack: u64) -> Id {
        let mut id_seed = [0u8; 24];
        id_seed[..8].copy_from_slice(b"syntpack");
        id_seed[8..16].copy_from_slice(&3u64.to_le_bytes());
        id_seed[16..].copy_from_slice(&pack.to_le_bytes());
        Id::hash(&id_seed)
    }
}
