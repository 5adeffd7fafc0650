//! `check`: verifies the repository's invariants and reports every problem
//! with the snapshots and files it affects.
//!
//! Structure (always): config, every index file (name = hash, decodes),
//! every pack an index file lists exists with the recorded size, every
//! snapshot decodes, every tree reachable from a snapshot loads and hashes
//! to its id, every chunk a file lists is in the index in a pack that
//! exists. With `read_data`: every pack is read whole, its name checked
//! against its BLAKE3, its trailer against the index, and every blob
//! decompressed and re-hashed.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::index_file::PackEntry;
use crate::format::pack::{self, BlobKind};
use crate::format::tree::NodeKind;
use crate::id::Id;
use crate::ops::pack_table::{Occurrence, PackTable, SORT_MEMORY};
use crate::ops::tree_walk;
use crate::progress::Progress;
use crate::repo::{Repository, Snapshot};
use crate::sorted_runs::Sorter;
use crate::storage::FileKind;

#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub read_data: bool,
    /// Read only the packs of one group of `groups` (`(group, groups)`,
    /// group counted from 0): a pack belongs to group `n` when the first
    /// four bytes of its id, as a little-endian number, are `n` modulo
    /// `groups`. Ids are hashes, so groups are about equal, and running
    /// every group once reads every pack once.
    pub read_data_subset: Option<(u32, u32)>,
}

/// Whether `pack` is in group `group` of `groups` (see [`CheckOptions`]).
pub fn in_subset(pack: &Id, group: u32, groups: u32) -> bool {
    let b = pack.as_bytes();
    let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    groups == 0 || n % groups == group
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    pub message: String,
    /// `<snapshot short id>:<path>` of every file or directory affected.
    pub affected: Vec<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    pub snapshots: u64,
    pub trees: u64,
    pub packs: u64,
    pub blobs_verified: u64,
    /// Packs read whole (all with `read_data`, a group with a subset).
    pub packs_read: u64,
    /// The group read, as `n/m` (counted from 1), with a subset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_data_subset: Option<String>,
    pub bytes_read: u64,
    pub errors: Vec<Problem>,
    /// An index file is damaged: rebuilding the index from the packs
    /// (repair index) is the way back.
    pub index_damaged: bool,
    /// A pack is gone, or blobs are in no index file: once `repair index`
    /// has dropped what the packs no longer hold, a backup that reads its
    /// sources again stores that data anew under the same ids, which
    /// repairs every snapshot sharing it (see RELIABILITY.md).
    pub data_missing: bool,
    /// Packs that reading data found damaged: `repair packs` copies what
    /// in them is intact into new packs and takes them out of the index,
    /// after which a backup that reads its sources again stores the rest.
    pub damaged_packs: Vec<Id>,
    /// Not damage: e.g. packs an interrupted backup left unlisted.
    pub warnings: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
    fn error(&mut self, message: String) {
        self.errors.push(Problem { message, affected: Vec::new() });
    }
}

pub fn check(repo: &Repository, opts: &CheckOptions, progress: &dyn Progress) -> Result<CheckReport> {
    let _lock = repo.lock_shared("check")?;
    let mut report = CheckReport::default();

    // Index files, as stored (not the database, which is only a cache),
    // one at a time: every pack's trailer goes to scratch and every blob
    // copy to an on-disk sorter (memory grows with packs and trees, not
    // with blobs; see ops/pack_table.rs). Only reading data compares
    // trailers with the packs' own.
    // On a new host the first tree read fills the index cache, with sorted
    // runs of its own (~55 bytes a chunk): fill it before this check's
    // trailers and copies go to scratch, so that the two peaks of scratch
    // do not add up (prune does the same). A cache that cannot be filled
    // (a damaged index file) fails each tree read below, where it is
    // reported, as it was when the first tree read filled it.
    let _ = repo.index();
    let mut table = PackTable::new(repo, opts.read_data || opts.read_data_subset.is_some())?;
    let mut tree_copies: Vec<(Id, u32)> = Vec::new();
    for (name, _) in repo.storage().list(FileKind::Index)? {
        let loaded = repo.storage().get(FileKind::Index, &name).and_then(|data| {
            if Id::hash(&data).to_hex() != name {
                return Err(Error::corrupt("index file", &name, "content does not match its name"));
            }
            repo.decode_index_file(data, &name)
        });
        match loaded {
            Ok(packs) => {
                for p in packs {
                    if let Some(no) = table.add(&p, true)? {
                        for b in p.trailer.blobs.iter().filter(|b| b.kind == BlobKind::Tree) {
                            tree_copies.push((b.id, no));
                        }
                    }
                }
            }
            Err(e) => {
                report.error(e.to_string());
                report.index_damaged = true;
            }
        }
    }

    // Session files and prune marks (v2): each must open with the keys.
    if let Some(keys) = repo.keys() {
        for e in crate::session::damaged_protocol_files(repo.storage().as_ref(), keys)? {
            report.error(e.to_string());
        }
    }

    let stored = repo.pack_sizes()?;
    let quarantined = repo.quarantined_packs()?;
    if !quarantined.is_empty() {
        report.warnings.push(format!(
            "{} damaged pack(s), {} bytes, are kept under quarantine/ by a pack repair for recovery by hand; \
             nothing reads them: delete them once you no longer need them",
            quarantined.len(),
            quarantined.values().sum::<u64>()
        ));
    }
    report.packs = stored.len() as u64;
    // By table number.
    let mut missing_packs: HashSet<u32> = HashSet::new();
    for (no, row) in table.rows.iter().enumerate() {
        let id = row.id;
        match stored.get(&id) {
            None => {
                missing_packs.insert(no as u32);
                // Deleted by a repair that was interrupted before it
                // replaced the pack's listing: running it again finishes.
                let note = if quarantined.contains_key(&id) {
                    " (a copy is under quarantine/: a pack repair was interrupted; repeating it finishes it)"
                } else {
                    ""
                };
                report.error(format!("pack {id} is missing{note}"));
                report.data_missing = true;
            }
            Some(&len) if len != row.len => {
                missing_packs.insert(no as u32);
                report.error(format!("pack {id} has {len} bytes, the index says {} (truncated or replaced)", row.len));
            }
            Some(_) => {}
        }
    }
    let unlisted = stored.keys().filter(|id| table.number(id).is_none()).count();
    if unlisted > 0 {
        report.warnings.push(format!(
            "{unlisted} pack(s) are not listed in any index file (left by an interrupted or running backup; the next prune, or this host's next backup, adopts them)"
        ));
    }
    // Trees with a copy in a pack that is there.
    let present_trees: HashSet<Id> =
        tree_copies.into_iter().filter(|(_, no)| !missing_packs.contains(no)).map(|(id, _)| id).collect();
    let occurrences = table.occurrences()?;

    // Damaged blobs found by reading data.
    let mut bad_blobs: HashSet<Id> = HashSet::new();
    if opts.read_data || opts.read_data_subset.is_some() {
        let packs: Vec<(Id, u64)> = stored
            .iter()
            .filter(|(id, _)| opts.read_data_subset.is_none_or(|(g, n)| in_subset(id, g, n)))
            .map(|(k, v)| (*k, *v))
            .collect();
        progress.total(packs.len() as u64, packs.iter().map(|p| p.1).sum());
        report.packs_read = packs.len() as u64;
        report.read_data_subset = opts.read_data_subset.map(|(g, n)| format!("{}/{n}", g + 1));
        let results: Vec<(Id, Verified)> = packs
            .par_iter()
            .map(|(id, len)| {
                let listed = table.number(id).map(|no| table.entry(no)).transpose()?;
                Ok((*id, verify_pack(repo, id, *len, listed.as_ref(), progress)))
            })
            .collect::<Result<_>>()?;
        for (id, (bytes, blobs, errors, bad)) in results {
            report.bytes_read += bytes;
            report.blobs_verified += blobs;
            if !errors.is_empty() {
                report.damaged_packs.push(id);
            }
            for e in errors {
                report.error(e);
            }
            bad_blobs.extend(bad);
        }
        report.damaged_packs.sort();
    }

    // Snapshots and everything they reach.
    let mut snapshots: Vec<Snapshot> = Vec::new();
    for id in repo.snapshot_ids()? {
        match repo.load_snapshot(&id) {
            Ok(s) => snapshots.push(s),
            Err(e) => report.error(format!("{e}")),
        }
    }
    report.snapshots = snapshots.len() as u64;

    // Every distinct tree once, whatever number of snapshots share it;
    // the chunks they reference go to an on-disk sorter, checked against
    // the copies below.
    let tree_ok = std::sync::Mutex::new(HashMap::<Id, bool>::new());
    let mut referenced: Sorter<32> = Sorter::new(table.scratch(), SORT_MEMORY, true);
    let mut damage = false;
    {
        let load = |id: &Id| {
            if bad_blobs.contains(id) || !present_trees.contains(id) {
                Err(Error::BlobNotInIndex(*id))
            } else {
                repo.load_tree(id)
            }
        };
        let mut visit = |id: &Id, tree: &crate::format::tree::Tree| {
            report.trees += 1;
            if let Ok(mut ok) = tree_ok.lock() {
                ok.insert(*id, true);
            }
            for node in &tree.nodes {
                match node.kind {
                    NodeKind::Dir if node.subtree.is_none() => damage = true,
                    k if k.has_chunks() => {
                        for c in &node.chunks {
                            referenced.push(c.0)?;
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        };
        let mut errors = Vec::new();
        let mut failed = |id: &Id, e: Error| {
            // A chain too deep is reported with its paths below, like the
            // restore and dump that refuse it; every other failure here.
            let too_deep = matches!(&e, Error::Corrupt { reason, .. } if reason.starts_with("nested deeper"));
            errors.push((too_deep, format!("tree {id}: {e}")));
            if let Ok(mut ok) = tree_ok.lock() {
                ok.insert(*id, false);
            }
            Ok(())
        };
        let roots: Vec<Id> = snapshots.iter().map(|s| s.file.tree).collect();
        tree_walk::visit_unique_trees(roots, &load, &mut visit, &mut failed)?;
        damage |= !errors.is_empty();
        for (too_deep, e) in errors {
            if !too_deep {
                report.error(e);
            }
        }
    }
    let tree_ok = tree_ok.into_inner().unwrap_or_default();

    // Referenced chunks against the copies, both sorted: a chunk is fine
    // when it has a copy in a pack that is there and no copy was found
    // damaged. Only the chunks that are not are kept (true: damaged or
    // only in missing packs; false: in no index file).
    let mut bad_chunks: HashMap<Id, bool> = HashMap::new();
    {
        let mut copies = occurrences.peekable();
        for c in referenced.finish()? {
            let c = Id(c?);
            let (mut any, mut present) = (false, false);
            while let Some(rec) = copies.next_if(|r| r.as_ref().map_or(true, |r| r[..32] <= c.0[..])) {
                let occ = Occurrence::from_bytes(&rec?);
                if occ.blob == c {
                    any = true;
                    present |= !missing_packs.contains(&occ.pack);
                }
            }
            if !any {
                bad_chunks.insert(c, false);
                report.data_missing = true;
            } else if !present || bad_blobs.contains(&c) {
                bad_chunks.insert(c, true);
            }
        }
    }
    damage |= !bad_chunks.is_empty();

    // Only when something is damaged: which files and directories of which
    // snapshots it affects. Subtrees found clean are not walked again.
    let mut affected: HashMap<String, Vec<String>> = HashMap::new();
    if damage {
        let mut clean: HashSet<Id> = HashSet::new();
        for snap in &snapshots {
            let short = snap.id.short();
            affected_paths(repo, &short, snap.file.tree, &tree_ok, &bad_chunks, &mut clean, &mut affected, &mut report);
        }
    }
    let mut affected: Vec<(String, Vec<String>)> = affected.into_iter().collect();
    affected.sort();
    for (what, mut files) in affected {
        files.sort();
        files.dedup();
        if what.starts_with("tree ") {
            // The tree's own error was reported already; attach the paths.
            if let Some(p) = report.errors.iter_mut().find(|p| p.message.starts_with(&what)) {
                p.affected.extend(files);
                continue;
            }
        }
        report.errors.push(Problem { message: what, affected: files });
    }
    Ok(report)
}

/// A directory being walked by [`affected_paths`].
struct Frame {
    id: Id,
    /// Its subdirectories still to walk: (tree, path).
    subdirs: Vec<(Id, Vec<u8>)>,
    depth: usize,
    /// Something below it is damaged.
    dirty: bool,
}

/// Records in `affected` every path of one snapshot that damage reaches:
/// files with a damaged or missing chunk, directories whose tree cannot be
/// read. Depth first with an explicit stack (crafted trees can be deep);
/// a subtree found clean is remembered in `clean` and skipped at every
/// other path and in every other snapshot.
#[allow(clippy::too_many_arguments)]
fn affected_paths(
    repo: &Repository,
    short: &str,
    root: Id,
    tree_ok: &HashMap<Id, bool>,
    bad_chunks: &HashMap<Id, bool>,
    clean: &mut HashSet<Id>,
    affected: &mut HashMap<String, Vec<String>>,
    report: &mut CheckReport,
) {
    let shown = |p: &[u8]| format!("{short}:/{}", String::from_utf8_lossy(p));
    let mut stack: Vec<Frame> =
        vec![Frame { id: Id::hash(b""), subdirs: vec![(root, Vec::new())], depth: 0, dirty: false }];
    while let Some(top) = stack.last_mut() {
        let Some((id, path)) = top.subdirs.pop() else {
            let done = stack.pop().map(|f| (f.id, f.dirty)).unwrap_or((root, true));
            match stack.last_mut() {
                Some(parent) if done.1 => parent.dirty = true,
                Some(_) => {
                    clean.insert(done.0);
                }
                None => {}
            }
            continue;
        };
        let depth = top.depth + 1;
        if clean.contains(&id) {
            continue;
        }
        if depth > tree_walk::MAX_TREE_DEPTH + 1 {
            top.dirty = true;
            let e = tree_walk::too_deep(&id);
            affected.entry(format!("{e}")).or_default().push(shown(&path));
            continue;
        }
        if tree_ok.get(&id) != Some(&true) {
            top.dirty = true;
            affected.entry(format!("tree {id}")).or_default().push(shown(&path));
            continue;
        }
        // Loaded fine in the first pass; a failure now (it changed since)
        // is reported like one then.
        let tree = match repo.load_tree(&id) {
            Ok(t) => t,
            Err(e) => {
                top.dirty = true;
                report.error(format!("tree {id}: {e}"));
                affected.entry(format!("tree {id}")).or_default().push(shown(&path));
                continue;
            }
        };
        let mut frame = Frame { id, subdirs: Vec::new(), depth, dirty: false };
        for node in &tree.nodes {
            let mut p = path.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(&node.name);
            match node.kind {
                NodeKind::Dir => match node.subtree {
                    Some(sub) => frame.subdirs.push((sub, p)),
                    None => {
                        frame.dirty = true;
                        report.error(format!("{}: directory without a tree", shown(&p)));
                    }
                },
                k if k.has_chunks() => {
                    for c in &node.chunks {
                        let Some(&damaged) = bad_chunks.get(c) else { continue };
                        frame.dirty = true;
                        let key = if damaged {
                            format!("damaged data blob {c}")
                        } else {
                            format!("data blob {c} is not in any index file")
                        };
                        affected.entry(key).or_default().push(shown(&p));
                    }
                }
                _ => {}
            }
        }
        // Popped from the end: reverse for name order.
        frame.subdirs.reverse();
        stack.push(frame);
    }
}

/// What [`verify_pack`] found: (bytes read, blobs verified, errors, ids
/// of damaged blobs).
type Verified = (u64, u64, Vec<String>, Vec<Id>);

/// Reads one pack whole and verifies everything in it.
fn verify_pack(repo: &Repository, id: &Id, len: u64, listed: Option<&PackEntry>, progress: &dyn Progress) -> Verified {
    let name = id.to_hex();
    let mut errors = Vec::new();
    let mut bad = Vec::new();
    let all_listed = || listed.map(|e| e.trailer.blobs.iter().map(|b| b.id).collect()).unwrap_or_default();
    let data = match repo.storage().get(FileKind::Pack, &name) {
        Ok(d) => d,
        Err(e) => return (0, 0, vec![format!("pack {name}: {e}")], all_listed()),
    };
    progress.bytes(len);
    let read = data.len() as u64;
    if Id::hash(&data) != *id {
        errors.push(format!("pack {name}: content does not match its name (damaged)"));
    }
    let trailer = match (pack::parse_pack(&data, &name, repo.keys().map(|k| k.as_ref())), listed) {
        (Ok(t), _) => t,
        // A damaged trailer or footer does not make the frames before it
        // unreadable: the index entry (a copy of the trailer) still locates
        // them, and every blob is verified against its id below, so only
        // blobs that really are damaged get reported as affected.
        (Err(e), Some(entry)) if entry.pack_len == len => {
            errors.push(format!("{e}; its frames were verified using its index entry"));
            entry.trailer.clone()
        }
        (Err(e), _) => {
            errors.push(format!("{e}"));
            return (read, 0, errors, all_listed());
        }
    };
    if let Some(entry) = listed {
        if entry.trailer != trailer {
            errors.push(format!("pack {name}: trailer differs from its index entry"));
        }
    }
    let mut verified = 0;
    for (fi, frame) in trailer.frames.iter().enumerate() {
        let blobs: Vec<_> = trailer.blobs.iter().filter(|b| b.frame as usize == fi).collect();
        // Offsets may come from an index entry rather than the pack's own
        // (validated) trailer: never trust them to lie inside the data.
        let Some(stored) = data.get(frame.offset as usize..frame.offset as usize + frame.stored_len as usize) else {
            errors.push(format!("pack {name}: frame at {} lies outside the pack", frame.offset));
            bad.extend(blobs.iter().map(|b| b.id));
            continue;
        };
        // A delta frame (one stream chunk) is decoded against its base,
        // which is read and verified like any blob: a missing or damaged
        // base makes the chunk damaged, named in the error.
        let chunk = blobs.first().map_or(Id([0; 32]), |b| b.id);
        let raw = match repo.decode_frame(stored.to_vec(), frame, &name, &chunk, &|b| repo.read_delta_base(b)) {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("{e}"));
                bad.extend(blobs.iter().map(|b| b.id));
                continue;
            }
        };
        for b in blobs {
            let end = b.offset_in_frame as usize + b.raw_len as usize;
            verified += 1;
            if raw.get(b.offset_in_frame as usize..end).is_none_or(|bytes| repo.blob_id(bytes) != b.id) {
                errors.push(format!("pack {name}: blob {} does not match its hash", b.id));
                bad.push(b.id);
            }
        }
    }
    (read, verified, errors, bad)
}
