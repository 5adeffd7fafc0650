//! `repair packs`: takes damaged packs out of the repository after copying
//! every blob in them that still verifies into new packs, so that the
//! index no longer lists the damaged copies: a backup with `--force-read`
//! then stores the lost blobs again (restic's `repair packs`).
//!
//! For each damaged pack, in this order (format-spec/v2/protocol.md §8):
//! 1. a byte-identical copy goes to `quarantine/<pack id>`: its damaged
//!    blobs are lost to arc, but an operator may still recover something
//!    by hand, and a rerun reads the copy if step 3 was reached;
//! 2. its intact blobs go through the packer into new packs, which are
//!    durable and listed by a durable index file before anything goes;
//! 3. the pack is deleted from `data/`;
//! 4. the index files listing it are replaced by files listing their other
//!    packs (the last supersedes them), then deleted; the index database
//!    forgets the pack.
//!
//! Step 3 comes before 4 because a pack in `data/` that no index file
//! lists is adopted by the next backup on a local disk (its trailer is
//! whole), which would list the damaged blobs again. Killed between 3 and
//! 4, the repository has a listed pack that is missing, which `check`
//! reports and a rerun of `repair packs` (or `repair index`) finishes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::index_file::PackEntry;
use crate::format::pack::{self, BlobRecord, Trailer};
use crate::format::tree::Tree;
use crate::id::Id;
use crate::ops::prune::PACKS_PER_INDEX_FILE;
use crate::ops::tree_walk::{Memo, TreeWalker};
use crate::packer;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::storage::FileKind;

#[derive(Debug, Clone, Default)]
pub struct RepairPacksOptions {
    /// Pack ids (whole, or a prefix naming one pack); none: every pack is
    /// read and the damaged ones repaired, and listed packs that are gone
    /// are dropped from the index.
    pub packs: Vec<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairPacksReport {
    pub packs_read: u64,
    pub bytes_read: u64,
    /// Packs found damaged (or gone) and taken out of the index.
    pub packs_repaired: Vec<Id>,
    /// Packs named that verified whole: left as they were.
    pub packs_intact: Vec<Id>,
    /// What was found wrong, one line per finding.
    pub damage: Vec<String>,
    /// Damaged packs whose bytes were kept under `quarantine/`.
    pub packs_quarantined: Vec<Id>,
    /// Intact blobs of the damaged packs, copied into new packs.
    pub blobs_salvaged: u64,
    pub packs_written: u64,
    /// Index files written to replace those that listed a damaged pack
    /// (the new packs' own listing aside).
    pub index_files_written: u64,
    pub index_files_removed: u64,
    /// Damaged blobs that another pack still holds.
    pub blobs_with_other_copy: u64,
    /// Blobs no pack holds any more.
    pub blobs_lost: Vec<Id>,
    /// `<snapshot short id>:/<path>` of every file or directory that
    /// refers to a lost blob.
    pub affected: Vec<String>,
    /// Short ids of the snapshots with an affected path.
    pub affected_snapshots: Vec<String>,
    /// Trees that could not be read while looking for affected paths.
    pub unreadable_trees: Vec<Id>,
}

/// What one pack turned out to be.
struct Examined {
    pack: Id,
    damaged: bool,
    errors: Vec<String>,
    /// Blobs that did not verify (all the listed ones of a pack that is gone).
    bad: Vec<Id>,
    salvaged: u64,
    bytes: u64,
    quarantined: bool,
}

pub fn repair_packs(
    repo: &Repository,
    opts: &RepairPacksOptions,
    progress: &dyn Progress,
) -> Result<RepairPacksReport> {
    repo.require_writable("repair packs")?;
    // The names are resolved before the lock, so that a wrong one leaves
    // no trace at all; again under it below.
    resolve(&opts.packs, &known_packs(repo)?)?;
    let _lock = repo.lock_exclusive("repair packs")?;
    let stored = repo.pack_sizes()?;
    let quarantined = repo.quarantined_packs()?;
    // Every index file: the packs it lists (a file that cannot be read
    // stops the repair: its listing could not be replaced; `repair index`
    // rebuilds it first).
    let mut files: Vec<(String, Vec<PackEntry>)> = Vec::new();
    for (name, _) in repo.storage().list(FileKind::Index)? {
        let data = repo.storage().get(FileKind::Index, &name)?;
        if Id::hash(&data).to_hex() != name {
            return Err(Error::corrupt("index file", &name, "content does not match its name (run `repair index`)"));
        }
        let entries = repo.decode_index_file(data, &name)?;
        files.push((name, entries));
    }
    let listed: HashMap<Id, &PackEntry> = files.iter().flat_map(|(_, e)| e.iter().map(|e| (e.pack, e))).collect();

    let targets: Vec<Id> = if opts.packs.is_empty() {
        let mut t: BTreeSet<Id> = stored.keys().copied().collect();
        // Listed packs that are gone: an interrupted repair (a copy in
        // quarantine/) or a lost pack; both are dropped from the index.
        t.extend(listed.keys().filter(|p| !stored.contains_key(p)));
        t.into_iter().collect()
    } else {
        let mut known: HashSet<Id> = stored.keys().copied().collect();
        known.extend(listed.keys());
        known.extend(quarantined.keys());
        resolve(&opts.packs, &known)?
    };
    progress.total(
        targets.len() as u64,
        targets.iter().map(|p| stored.get(p).or(quarantined.get(p)).copied().unwrap_or(0)).sum(),
    );

    let found: Mutex<Vec<Examined>> = Mutex::new(Vec::new());
    let ((), stats) = packer::run(repo, Vec::new(), &|| false, |sink| {
        targets.par_iter().try_for_each(|pack| -> Result<()> {
            let e = examine(repo, pack, &stored, &quarantined, listed.get(pack).copied(), sink, progress)?;
            crate::sync::lock(&found, "repair's findings")?.push(e);
            Ok(())
        })
    })?;
    let mut found = found.into_inner().map_err(|_| Error::Interrupted)?;
    found.sort_by_key(|e| e.pack);

    let mut report = RepairPacksReport { packs_written: stats.packs_written, ..Default::default() };
    let mut damaged_blobs: BTreeSet<Id> = BTreeSet::new();
    let mut goes: HashSet<Id> = HashSet::new();
    for e in &found {
        report.bytes_read += e.bytes;
        report.packs_read += u64::from(e.bytes > 0);
        if !e.damaged {
            if !opts.packs.is_empty() {
                report.packs_intact.push(e.pack);
            }
            continue;
        }
        report.packs_repaired.push(e.pack);
        report.damage.extend(e.errors.iter().cloned());
        report.blobs_salvaged += e.salvaged;
        if e.quarantined {
            report.packs_quarantined.push(e.pack);
        }
        damaged_blobs.extend(e.bad.iter().copied());
        goes.insert(e.pack);
    }
    if goes.is_empty() {
        return Ok(report);
    }

    // 3. Out of data/ (each has its quarantine copy, or had nothing left
    // to keep).
    for pack in report.packs_repaired.iter().filter(|p| stored.contains_key(p)) {
        repo.storage().delete(FileKind::Pack, &pack.to_hex())?;
    }
    // 4. New listings without them, then the old ones go.
    let obsolete: Vec<&(String, Vec<PackEntry>)> =
        files.iter().filter(|(_, e)| e.iter().any(|e| goes.contains(&e.pack))).collect();
    let superseded: Vec<Id> = obsolete.iter().filter_map(|(n, _)| n.parse().ok()).collect();
    let keep: Vec<PackEntry> =
        obsolete.iter().flat_map(|(_, e)| e.iter()).filter(|e| !goes.contains(&e.pack)).cloned().collect();
    let groups: Vec<&[PackEntry]> = keep.chunks(PACKS_PER_INDEX_FILE).collect();
    for (i, group) in groups.iter().enumerate() {
        let sup: &[Id] = if i + 1 == groups.len() { &superseded } else { &[] };
        for (id, data, entries) in repo.encode_index_files(group, sup)? {
            repo.storage().put(FileKind::Index, &id.to_hex(), &data)?;
            repo.index()?.add_packs(entries, Some(id))?;
            report.index_files_written += 1;
        }
    }
    for (name, _) in &obsolete {
        repo.storage().delete(FileKind::Index, name)?;
        report.index_files_removed += 1;
    }
    let gone: Vec<Id> = goes.iter().copied().collect();
    repo.forget_packs(&superseded, &gone)?;

    // What no pack holds any more, and who needs it.
    let mut lost: HashSet<Id> = HashSet::new();
    for id in &damaged_blobs {
        if repo.lookup_blob(id)?.is_some() {
            report.blobs_with_other_copy += 1;
        } else {
            lost.insert(*id);
            report.blobs_lost.push(*id);
        }
    }
    if !lost.is_empty() {
        affected(repo, &lost, &mut report)?;
    }
    Ok(report)
}

/// Every pack the repository has a trace of: in `data/`, in the index
/// database, or in `quarantine/`.
fn known_packs(repo: &Repository) -> Result<HashSet<Id>> {
    let mut known: HashSet<Id> = repo.pack_sizes()?.into_keys().collect();
    known.extend(repo.index()?.packs()?.into_iter().map(|p| p.0));
    known.extend(repo.storage().list(FileKind::Quarantine)?.into_iter().filter_map(|(n, _)| n.parse::<Id>().ok()));
    Ok(known)
}

/// The packs `names` name: a whole id, or a prefix of exactly one.
fn resolve(names: &[String], known: &HashSet<Id>) -> Result<Vec<Id>> {
    let mut out = BTreeSet::new();
    for name in names {
        let lower = name.to_ascii_lowercase();
        let matches: Vec<Id> = if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            Vec::new()
        } else {
            known.iter().filter(|id| id.to_hex().starts_with(&lower)).copied().collect()
        };
        match matches.as_slice() {
            [one] => {
                out.insert(*one);
            }
            [] => {
                return Err(Error::InvalidArgument {
                    what: "pack",
                    reason: format!("{name}: no pack of this repository has that id"),
                })
            }
            _ => {
                return Err(Error::InvalidArgument {
                    what: "pack",
                    reason: format!("{name}: {} packs start with it; give more of the id", matches.len()),
                })
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Reads one pack (from `data/`, else its quarantine copy), verifies it,
/// and when it is damaged keeps a copy in quarantine and hands its intact
/// blobs to `sink`. A listed pack that is gone everywhere is damaged with
/// every blob it listed.
fn examine(
    repo: &Repository,
    pack: &Id,
    stored: &HashMap<Id, u64>,
    quarantined: &HashMap<Id, u64>,
    listed: Option<&PackEntry>,
    sink: &packer::BlobSink<'_>,
    progress: &dyn Progress,
) -> Result<Examined> {
    let name = pack.to_hex();
    let all_listed = || listed.map(|e| e.trailer.blobs.iter().map(|b| b.id).collect()).unwrap_or_default();
    let mut out = Examined {
        pack: *pack,
        damaged: true,
        errors: Vec::new(),
        bad: Vec::new(),
        salvaged: 0,
        bytes: 0,
        quarantined: quarantined.contains_key(pack),
    };
    let data = if stored.contains_key(pack) {
        repo.storage().get(FileKind::Pack, &name)?
    } else if out.quarantined {
        out.errors.push(format!("pack {name} is missing; its copy in quarantine/ was read (an interrupted repair)"));
        repo.storage().get(FileKind::Quarantine, &name)?
    } else {
        out.errors.push(format!("pack {name} is missing"));
        out.bad = all_listed();
        return Ok(out);
    };
    out.bytes = data.len() as u64;
    progress.bytes(out.bytes);
    if Id::hash(&data) != *pack {
        out.errors.push(format!("pack {name}: content does not match its name"));
    }
    let trailer = match (pack::parse_pack(&data, &name, repo.keys().map(|k| k.as_ref())), listed) {
        (Ok(t), _) => t,
        (Err(e), Some(entry)) if entry.pack_len == out.bytes => {
            out.errors.push(format!("{e}; its frames were located by its index entry"));
            entry.trailer.clone()
        }
        (Err(e), _) => {
            out.errors.push(e.to_string());
            Trailer::default()
        }
    };
    if let Some(entry) = listed {
        if entry.trailer != trailer {
            out.errors.push(format!("pack {name}: trailer differs from its index entry"));
        }
        // Blobs the index lists that the trailer used does not hold.
        let held: HashSet<Id> = trailer.blobs.iter().map(|b| b.id).collect();
        out.bad.extend(entry.trailer.blobs.iter().map(|b| b.id).filter(|id| !held.contains(id)));
    }
    // First pass: verify only; an intact pack is left as it is.
    let mut intact = 0;
    let frame_errors = for_each_blob(repo, &name, &data, &trailer, &mut |b, bytes| {
        match bytes {
            Some(_) => intact += 1,
            None => out.bad.push(b.id),
        }
        Ok(())
    })?;
    out.errors.extend(frame_errors);
    let bad_blobs: Vec<String> = out.bad.iter().map(|id| format!("pack {name}: blob {id} is damaged")).collect();
    out.errors.extend(bad_blobs);
    out.damaged = !out.errors.is_empty();
    if !out.damaged {
        return Ok(out);
    }
    // 1. The bytes, kept for whoever wants to try by hand.
    if !out.quarantined {
        repo.storage().put(FileKind::Quarantine, &name, &data)?;
        out.quarantined = true;
    }
    // 2. Second pass: the intact blobs into new packs. A chunk stored as
    // a delta is copied plain: its base may be among the damaged blobs.
    if intact > 0 {
        for_each_blob(repo, &name, &data, &trailer, &mut |b, bytes| {
            if let Some(bytes) = bytes {
                sink.store_copy(b.id, b.kind, bytes)?;
                out.salvaged += 1;
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// What [`for_each_blob`] calls for each blob: its bytes if they verify.
type BlobVisit<'a> = dyn FnMut(&BlobRecord, Option<&[u8]>) -> Result<()> + 'a;

/// Calls `visit(blob, Some(bytes))` for every blob of `trailer` that
/// decodes and matches its id, `visit(blob, None)` for every other.
/// Returns why each frame that does not decode does not.
fn for_each_blob(
    repo: &Repository,
    name: &str,
    data: &[u8],
    trailer: &Trailer,
    visit: &mut BlobVisit<'_>,
) -> Result<Vec<String>> {
    let mut errors = Vec::new();
    let mut by_frame: Vec<Vec<&BlobRecord>> = vec![Vec::new(); trailer.frames.len()];
    for b in &trailer.blobs {
        match by_frame.get_mut(b.frame as usize) {
            Some(f) => f.push(b),
            None => visit(b, None)?,
        }
    }
    for (fi, blobs) in by_frame.iter().enumerate() {
        if blobs.is_empty() {
            continue;
        }
        let raw = match decode(repo, name, data, trailer, fi, &blobs[0].id) {
            Ok(r) => Some(r),
            Err(e) => {
                errors.push(format!("pack {name}: frame {fi}: {e}"));
                None
            }
        };
        for b in blobs {
            let end = b.offset_in_frame as usize + b.raw_len as usize;
            let bytes = raw.as_ref().and_then(|r| r.get(b.offset_in_frame as usize..end));
            match bytes {
                Some(bytes) if repo.blob_id(bytes) == b.id => visit(b, Some(bytes))?,
                _ => visit(b, None)?,
            }
        }
    }
    Ok(errors)
}

/// Frame `fi` of the pack, decoded (a delta frame against its base).
fn decode(repo: &Repository, name: &str, data: &[u8], trailer: &Trailer, fi: usize, chunk: &Id) -> Result<Vec<u8>> {
    let frame = &trailer.frames[fi];
    // Offsets may come from an index entry rather than the pack's own
    // (validated) trailer: never trust them to lie inside the data.
    let stored = usize::try_from(frame.offset)
        .ok()
        .and_then(|start| data.get(start..start.checked_add(frame.stored_len as usize)?))
        .ok_or_else(|| Error::corrupt("pack", name, format!("frame at {} lies outside the pack", frame.offset)))?;
    repo.decode_frame(stored.to_vec(), frame, name, chunk, &|b| repo.read_delta_base(b))
}

/// Fills the report's affected paths: every file with a lost chunk and
/// every directory whose tree is lost, in every snapshot. Each distinct
/// tree is read once whatever number of snapshots share it.
fn affected(repo: &Repository, lost: &HashSet<Id>, report: &mut RepairPacksReport) -> Result<()> {
    let (snapshots, _) = repo.readable_snapshots()?;
    let unreadable: Mutex<BTreeSet<Id>> = Mutex::new(BTreeSet::new());
    // A tree that cannot be read (lost, or a part of a split directory
    // lost) is walked as empty: the directory itself is named when its own
    // id is lost, and the tree is listed either way.
    let mut walker = TreeWalker::with_loader(|id| match repo.load_tree(id) {
        Ok(t) => Ok(t),
        Err(_) => {
            if let Ok(mut u) = unreadable.lock() {
                u.insert(*id);
            }
            Ok(Tree::default())
        }
    });
    let mut memo = Memo::new(false);
    let mut snaps: BTreeSet<String> = BTreeSet::new();
    for snap in &snapshots {
        let short = snap.id.short();
        let mut hits: Vec<String> = Vec::new();
        if lost.contains(&snap.file.tree) {
            hits.push(format!("{short}:/"));
        }
        let found = walker.collect(&snap.file.tree, b"", &mut memo, &mut |_, node| {
            let hit = node.chunks.iter().any(|c| lost.contains(c)) || node.subtree.is_some_and(|t| lost.contains(&t));
            hit.then_some(())
        })?;
        hits.extend(found.iter().map(|(p, ())| format!("{short}:{}", String::from_utf8_lossy(p))));
        if !hits.is_empty() {
            snaps.insert(short);
            report.affected.extend(hits);
        }
    }
    report.affected_snapshots = snaps.into_iter().collect();
    drop(walker);
    report.unreadable_trees = unreadable.into_inner().unwrap_or_default().into_iter().collect();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::backup::{backup, BackupOptions};
    use crate::ops::check::{check, CheckOptions};
    use crate::progress::NoProgress;
    use crate::repo::InitOptions;
    use crate::test_data::pseudo_random;
    use std::os::unix::fs::FileExt;

    /// A repository with one snapshot of six incompressible files, and two
    /// of them whose chunks share a pack (a v2 writer fills two packs at
    /// once, picking one at random per frame): returns the repository, the
    /// source directory and the two (file name, chunk).
    fn six_files(dir: &std::path::Path) -> (Repository, std::path::PathBuf, [(String, Id); 2]) {
        let src = dir.join("src");
        std::fs::create_dir_all(&src).unwrap();
        for i in 0..6u64 {
            std::fs::write(src.join(format!("f{i}")), pseudo_random(200_000, i + 1)).unwrap();
        }
        // Frames smaller than a file: each file's chunk in a frame of its own.
        let opts = InitOptions { frame_size: 128 * 1024, ..Default::default() };
        let repo = Repository::init_local(&dir.join("repo"), &opts).unwrap();
        backup(&repo, BackupOptions { paths: vec![src.clone()], ..Default::default() }, &NoProgress).unwrap();
        let chunks: Vec<(String, Id, Id)> = (0..6)
            .map(|i| {
                let name = format!("f{i}");
                let id = repo.blob_id(&std::fs::read(src.join(&name)).unwrap());
                let pack = repo.lookup_blob(&id).unwrap().unwrap().pack;
                (name, id, pack)
            })
            .collect();
        let (a, b) = chunks
            .iter()
            .enumerate()
            .find_map(|(i, x)| chunks[i + 1..].iter().find(|y| y.2 == x.2).map(|y| (x, y)))
            .expect("six chunks in two packs: two share one");
        let pair = [(a.0.clone(), a.1), (b.0.clone(), b.1)];
        (repo, src, pair)
    }

    fn flip_in_frame_of(repo: &Repository, dir: &std::path::Path, blob: &Id) -> Id {
        let loc = repo.lookup_blob(blob).unwrap().unwrap();
        let hex = loc.pack.to_hex();
        let path = dir.join("repo/data").join(&hex[..2]).join(&hex);
        let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
        let at = loc.frame.offset + u64::from(loc.frame.stored_len) / 2;
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
        loc.pack
    }

    fn read_data(repo: &Repository) -> crate::ops::check::CheckReport {
        check(repo, &CheckOptions { read_data: true, ..Default::default() }, &NoProgress).unwrap()
    }

    /// A flipped bit costs the one blob whose frame it hits: the other
    /// blobs of the pack are copied out, the pack goes to quarantine/ and
    /// out of the index, the lost blob's file is named, and a backup that
    /// reads the sources again heals the repository.
    #[test]
    fn damaged_pack_is_salvaged_and_a_force_read_backup_heals() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, src, [(name, a), (_, b)]) = six_files(dir.path());
        let pack = flip_in_frame_of(&repo, dir.path(), &a);
        assert!(!read_data(&repo).ok());

        let r = repair_packs(&repo, &RepairPacksOptions::default(), &NoProgress).unwrap();
        assert_eq!(r.packs_repaired, vec![pack], "{r:?}");
        assert_eq!(r.packs_quarantined, vec![pack], "{r:?}");
        assert_eq!(r.blobs_lost, vec![a], "{r:?}");
        assert!(r.blobs_salvaged >= 1, "b: {r:?}");
        assert!(r.affected.len() == 1 && r.affected[0].ends_with(&format!("/src/{name}")), "{r:?}");
        assert!(repo.storage().exists(FileKind::Quarantine, &pack.to_hex()).unwrap());
        assert!(!repo.storage().exists(FileKind::Pack, &pack.to_hex()).unwrap());
        assert!(repo.lookup_blob(&b).unwrap().is_some_and(|l| l.pack != pack));
        assert!(repo.lookup_blob(&a).unwrap().is_none());
        let after = read_data(&repo);
        assert!(after.errors.iter().any(|p| p.message.contains(&a.to_hex())), "{:?}", after.errors);

        // A second run finds nothing more to do.
        let again = repair_packs(&repo, &RepairPacksOptions::default(), &NoProgress).unwrap();
        assert!(again.packs_repaired.is_empty(), "{again:?}");

        let opts = BackupOptions { paths: vec![src.clone()], force_read: true, ..Default::default() };
        backup(&repo, opts, &NoProgress).unwrap();
        let healed = read_data(&repo);
        assert!(healed.ok(), "{:?}", healed.errors);
    }

    /// A plain backup after the repair reads the file whose chunk was
    /// dropped again, although it is unchanged since the parent.
    #[test]
    fn plain_backup_after_a_repair_reads_the_unchanged_file_again() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, src, [(_, a), _]) = six_files(dir.path());
        flip_in_frame_of(&repo, dir.path(), &a);
        repair_packs(&repo, &RepairPacksOptions::default(), &NoProgress).unwrap();
        let opts = BackupOptions { paths: vec![src.clone()], ..Default::default() };
        let r = backup(&repo, opts, &NoProgress).unwrap();
        assert_eq!(r.files_reread_missing, 1, "{r:?}");
        assert_eq!(r.snapshot.summary.bytes_read, 200_000, "only a is read again");
        let healed = read_data(&repo);
        assert!(healed.ok(), "{:?}", healed.errors);
    }

    /// A backup vouches for the snapshot it wrote (the next one then takes
    /// unchanged files from it unasked) only until the index drops a pack.
    #[test]
    fn a_backup_vouches_for_its_snapshot_until_a_pack_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _, [(_, a), _]) = six_files(dir.path());
        let index = repo.index().unwrap();
        let snap = repo.snapshot_ids().unwrap()[0];
        let drops = index.drops().unwrap();
        assert!(index.whole(&snap, drops).unwrap());
        flip_in_frame_of(&repo, dir.path(), &a);
        repair_packs(&repo, &RepairPacksOptions::default(), &NoProgress).unwrap();
        let now = index.drops().unwrap();
        assert!(now > drops && !index.whole(&snap, now).unwrap(), "{drops} -> {now}");
    }

    /// A pack gone from `data/` (nothing to keep or salvage) is dropped
    /// from the index like a damaged one, and what it held is named lost.
    #[test]
    fn lost_pack_is_dropped_and_its_blobs_named() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _, [(name, a), _]) = six_files(dir.path());
        let pack = repo.lookup_blob(&a).unwrap().unwrap().pack;
        repo.storage().delete(FileKind::Pack, &pack.to_hex()).unwrap();
        let r = repair_packs(&repo, &RepairPacksOptions::default(), &NoProgress).unwrap();
        assert_eq!(r.packs_repaired, vec![pack], "{r:?}");
        assert!(r.packs_quarantined.is_empty() && r.blobs_salvaged == 0, "{r:?}");
        assert!(r.blobs_lost.contains(&a), "{r:?}");
        assert!(r.affected.iter().any(|p| p.ends_with(&format!("/src/{name}"))), "{r:?}");
        assert!(repo.lookup_blob(&a).unwrap().is_none());
        let after = read_data(&repo);
        assert!(!after.errors.iter().any(|p| p.message.contains("is missing")), "{:?}", after.errors);
    }

    /// A name that is no pack: refused before anything is written; an
    /// intact pack that is named is left as it is.
    #[test]
    fn unknown_names_are_refused_and_intact_packs_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _, [(_, a), _]) = six_files(dir.path());
        let before: Vec<_> = crate::storage::ALL_KINDS.iter().map(|k| repo.storage().list(*k).unwrap()).collect();
        let opts = RepairPacksOptions { packs: vec!["0123abcd".into()] };
        let e = repair_packs(&repo, &opts, &NoProgress).unwrap_err().to_string();
        assert!(e.contains("0123abcd"), "{e}");
        let after: Vec<_> = crate::storage::ALL_KINDS.iter().map(|k| repo.storage().list(*k).unwrap()).collect();
        assert_eq!(before, after);

        let pack = repo.lookup_blob(&a).unwrap().unwrap().pack;
        let opts = RepairPacksOptions { packs: vec![pack.to_hex()[..12].to_string()] };
        let r = repair_packs(&repo, &opts, &NoProgress).unwrap();
        assert_eq!(r.packs_intact, vec![pack], "{r:?}");
        assert!(r.packs_repaired.is_empty() && r.blobs_lost.is_empty(), "{r:?}");
        assert!(repo.storage().exists(FileKind::Pack, &pack.to_hex()).unwrap());
    }
}
