//! `stats`: what the repository holds and what it costs. Logical sizes come
//! from snapshot summaries, unique sizes from the index, stored sizes from
//! the packs themselves. Live sizes (what `prune` would keep) need every
//! tree of every snapshot, each read once.

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
    /// Uncompressed bytes of unique blobs, trees included.
    pub unique_bytes: u64,
    /// Uncompressed bytes of unique data blobs: the file and stream
    /// content that `logical_bytes` counts once per snapshot.
    pub unique_data_bytes: u64,
    pub packs: u64,
    /// Bytes of packs on storage.
    pub stored_bytes: u64,
    /// logical / unique data: what deduplication saves. Trees are left
    /// out: they are metadata that `logical_bytes` does not count, and with
    /// them a single backup would show a ratio below 1.
    pub dedup_ratio: f64,
    /// unique / stored: what compression saves.
    pub compression_ratio: f64,
    /// Blobs some snapshot reaches, their uncompressed bytes and their
    /// share of the stored bytes; `None` if they could not be computed
    /// (see `live_error`).
    pub live_blobs: Option<u64>,
    pub live_bytes: Option<u64>,
    pub live_stored_bytes: Option<u64>,
    /// Stored bytes of blobs no snapshot reaches, and of extra copies:
    /// what `prune` can free (about; pack trailers are not counted).
    pub unused_stored_bytes: Option<u64>,
    pub live_error: Option<String>,
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
            BlobKind::Data => {
                s.data_blobs += 1;
                s.unique_data_bytes += u64::from(loc.raw_len);
            }
            BlobKind::Tree => s.tree_blobs += 1,
        }
        s.unique_bytes += u64::from(loc.raw_len);
        Ok(())
    })?;
    let (packs, stored) = repo.stored_bytes()?;
    s.packs = packs;
    s.stored_bytes = stored;
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    s.dedup_ratio = ratio(s.logical_bytes, s.unique_data_bytes);
    s.compression_ratio = ratio(s.unique_bytes, s.stored_bytes);
    match crate::ops::prune::plan(repo, 1.0, &Default::default()) {
        Ok(plan) => {
            let r = plan.report();
            s.live_blobs = Some(r.live_blobs);
            s.live_bytes = Some(r.live_bytes);
            s.live_stored_bytes = Some(r.live_stored_bytes);
            s.unused_stored_bytes = Some(r.unused_stored_bytes);
        }
        // The other figures stand on their own; say why these are missing.
        Err(e) => s.live_error = Some(e.to_string()),
    }
    Ok(s)
}
