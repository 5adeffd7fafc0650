//! `stats`: what the repository holds and what it costs. Logical sizes come
//! from snapshot summaries, unique sizes from the index, stored sizes from
//! the packs themselves, so no tree has to be read.

use crate::error::Result;
use crate::format::pack::BlobKind;
use crate::repo::Repository;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepoStats {
    pub snapshots: u64,
    /// Sum over snapshots of the bytes of every file they contain.
    pub logical_bytes: u64,
    pub logical_files: u64,
    pub data_blobs: u64,
    pub tree_blobs: u64,
    /// Uncompressed bytes of unique blobs.
    pub unique_bytes: u64,
    pub packs: u64,
    /// Bytes of packs on storage.
    pub stored_bytes: u64,
    /// logical / unique: what deduplication saves.
    pub dedup_ratio: f64,
    /// unique / stored: what compression saves.
    pub compression_ratio: f64,
}

pub fn stats(repo: &Repository) -> Result<RepoStats> {
    let mut s = RepoStats::default();
    for snap in repo.snapshots()? {
        s.snapshots += 1;
        s.logical_bytes += snap.file.summary.total_bytes;
        s.logical_files += snap.file.summary.total_files;
    }
    repo.index()?.for_each_blob(|_, loc| {
        match loc.kind {
            BlobKind::Data => s.data_blobs += 1,
            BlobKind::Tree => s.tree_blobs += 1,
        }
        s.unique_bytes += u64::from(loc.raw_len);
        Ok(())
    })?;
    let (packs, stored) = repo.stored_bytes()?;
    s.packs = packs;
    s.stored_bytes = stored;
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    s.dedup_ratio = ratio(s.logical_bytes, s.unique_bytes);
    s.compression_ratio = ratio(s.unique_bytes, s.stored_bytes);
    Ok(s)
}
