//! `repair index`: rebuilds the index files (and the index database) from
//! the packs alone, which describe themselves in their trailers.
//!
//! Crash-safe by ordering: the new index files are written (durably) before
//! any old one is deleted, so at every moment every pack is listed by at
//! least one index file.

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::format::index_file::PackEntry;
use crate::id::Id;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::storage::FileKind;

/// Packs per rebuilt index file: keeps each file a few MiB at most.
const PACKS_PER_FILE: usize = 256;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairReport {
    pub packs_indexed: u64,
    pub blobs_indexed: u64,
    pub index_files_written: u64,
    pub index_files_removed: u64,
    /// Packs whose trailer could not be read; their blobs are not indexed.
    pub unreadable_packs: Vec<String>,
    /// Packs whose trailer could not be read but whose previous index entry
    /// was kept (`arc check --read-data` tells what in them is intact).
    pub kept_old_entries: Vec<String>,
}

pub fn repair_index(repo: &Repository, progress: &dyn Progress) -> Result<RepairReport> {
    repo.require_writable("repair index")?;
    let _lock = repo.lock_exclusive("repair index")?;
    let mut report = RepairReport::default();
    let old: Vec<String> = repo.storage().list(FileKind::Index)?.into_iter().map(|(n, _)| n).collect();
    // What the old index files say, as a fallback for packs whose own
    // trailer is damaged: their listing may be the last map to intact data.
    let mut old_entries: HashMap<Id, PackEntry> = HashMap::new();
    for name in &old {
        if let Ok(entries) = repo.storage().get(FileKind::Index, name).and_then(|d| repo.decode_index_file(d, name)) {
            old_entries.extend(entries.into_iter().map(|e| (e.pack, e)));
        }
    }
    let packs = repo.storage().list(FileKind::Pack)?;
    progress.total(packs.len() as u64, 0);
    let mut entries: Vec<PackEntry> = Vec::new();
    for (name, len) in &packs {
        let Ok(id) = name.parse::<Id>() else {
            report.unreadable_packs.push(format!("{name}: not a pack name"));
            continue;
        };
        match repo.read_pack_trailer(&id, *len) {
            Ok(e) => {
                report.packs_indexed += 1;
                report.blobs_indexed += e.trailer.blobs.len() as u64;
                entries.push(e);
            }
            Err(e) => match old_entries.remove(&id) {
                Some(previous) if previous.pack_len == *len => {
                    report.kept_old_entries.push(format!("{e}; kept its previous index entry"));
                    report.packs_indexed += 1;
                    report.blobs_indexed += previous.trailer.blobs.len() as u64;
                    entries.push(previous);
                }
                _ => report.unreadable_packs.push(e.to_string()),
            },
        }
    }
    let mut written: HashSet<String> = HashSet::new();
    for group in entries.chunks(PACKS_PER_FILE) {
        for (id, data, _) in repo.encode_index_files(group, &[])? {
            let name = id.to_hex();
            repo.storage().put(FileKind::Index, &name, &data)?;
            written.insert(name);
            report.index_files_written += 1;
        }
    }
    for name in old {
        if !written.contains(&name) {
            repo.storage().delete(FileKind::Index, &name)?;
            report.index_files_removed += 1;
        }
    }
    repo.rebuild_index_db()?;
    Ok(report)
}
