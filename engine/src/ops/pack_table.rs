//! The packs of a repository as `check` and `prune` see them, in memory
//! that grows with the number of packs and not of blobs: per pack a few
//! numbers in memory, its trailer spilled to a scratch file when the
//! operation reads some of them back (prune's repack, `check
//! --read-data`), and one fixed-size
//! [`Occurrence`] record per blob copy handed to an on-disk sorter
//! ([`crate::sorted_runs`]), so that "which packs hold blob X" becomes a
//! merge of sorted streams instead of a map of every blob.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::index_file::PackEntry;
use crate::format::pack::Trailer;
use crate::id::Id;
use crate::repo::Repository;
use crate::sorted_runs::{key_u32, u32_at, Merged, Sorter};

/// Memory for one sorter's buffer. Two sorters at most are filled at once
/// (check: copies and references), so this bounds the sorting part of an
/// operation's memory at a fraction of the 1 GiB ceiling (issue #16).
/// The engine's own tests use the smallest buffer (1,024 records), so that
/// their repositories of a few thousand blobs go through runs on disk.
pub(crate) const SORT_MEMORY: usize = if cfg!(test) { 0 } else { 64 * 1024 * 1024 };

/// Bytes of an [`Occurrence`] record.
pub(crate) const OCC_LEN: usize = 48;

/// One copy of a blob: the pack (by number in the table) and the record
/// in its trailer. Sorted by blob id, then pack number, then record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Occurrence {
    pub(crate) blob: Id,
    pub(crate) pack: u32,
    pub(crate) record: u32,
    pub(crate) raw_len: u32,
    /// Stored bytes attributed to the blob (its part of its frame).
    pub(crate) share: u32,
}

impl Occurrence {
    pub(crate) fn to_bytes(self) -> [u8; OCC_LEN] {
        let mut b = [0u8; OCC_LEN];
        b[..32].copy_from_slice(self.blob.as_bytes());
        b[32..36].copy_from_slice(&key_u32(self.pack));
        b[36..40].copy_from_slice(&key_u32(self.record));
        b[40..44].copy_from_slice(&key_u32(self.raw_len));
        b[44..48].copy_from_slice(&key_u32(self.share));
        b
    }

    pub(crate) fn from_bytes(b: &[u8; OCC_LEN]) -> Occurrence {
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[..32]);
        Occurrence {
            blob: Id(id),
            pack: u32_at(b, 32),
            record: u32_at(b, 36),
            raw_len: u32_at(b, 40),
            share: u32_at(b, 44),
        }
    }
}

/// Stored bytes attributed to record `blob` of a pack: its part of its
/// frame's stored bytes (frames are compressed as a whole).
pub(crate) fn share(trailer: &Trailer, blob: usize) -> u64 {
    let b = &trailer.blobs[blob];
    let Some(f) = trailer.frames.get(b.frame as usize) else {
        return 0;
    };
    if f.raw_len == 0 {
        return 0;
    }
    u64::from(f.stored_len) * u64::from(b.raw_len) / u64::from(f.raw_len)
}

/// A pack in the table.
#[derive(Debug, Clone)]
pub(crate) struct PackRow {
    pub(crate) id: Id,
    pub(crate) len: u64,
    pub(crate) listed: bool,
    /// Where its trailer is in the spill file, and where its frames end
    /// (to decode it again).
    spill: (u64, u32, u64),
}

/// The scratch directory of one operation (removed when dropped), the
/// packs found so far and the sorter of their blob copies.
pub(crate) struct PackTable {
    scratch: crate::scratch::Scratch,
    pub(crate) rows: Vec<PackRow>,
    by_id: HashMap<Id, u32>,
    spill_path: PathBuf,
    /// `None` when no trailer will be read back: the spill file would be
    /// the largest part of the scratch (~60 bytes a chunk: 6 GB at 100M
    /// chunks) for nothing.
    spill: Option<std::io::BufWriter<File>>,
    spill_len: u64,
    spill_reader: Option<File>,
    occurrences: Option<Sorter<OCC_LEN>>,
}

impl PackTable {
    /// A table in a new scratch directory; with `keep_trailers`, the
    /// trailers are kept for [`entry`](Self::entry).
    pub(crate) fn new(repo: &Repository, keep_trailers: bool) -> Result<PackTable> {
        let scratch = repo.scratch_dir()?;
        let spill_path = scratch.path().join("trailers");
        let spill = if keep_trailers {
            let file = File::create(&spill_path).map_err(|e| Error::io(&spill_path, e))?;
            Some(std::io::BufWriter::with_capacity(1 << 20, file))
        } else {
            None
        };
        let occurrences = Some(Sorter::new(scratch.path(), SORT_MEMORY, false));
        Ok(PackTable {
            scratch,
            rows: Vec::new(),
            by_id: HashMap::new(),
            spill_path,
            spill,
            spill_len: 0,
            spill_reader: None,
            occurrences,
        })
    }

    /// The operation's scratch directory (for its own sorters).
    pub(crate) fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    pub(crate) fn number(&self, id: &Id) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    /// Adds a pack seen for the first time (its number), or, for a pack
    /// already in the table, replaces nothing and returns `None`.
    pub(crate) fn add(&mut self, entry: &PackEntry, listed: bool) -> Result<Option<u32>> {
        if self.by_id.contains_key(&entry.pack) {
            return Ok(None);
        }
        let no = u32::try_from(self.rows.len())
            .map_err(|_| Error::corrupt("repository", "packs", "more than 2^32 packs"))?;
        let frames_end =
            entry.trailer.frames.last().map_or(crate::format::pack::HEADER_LEN, |f| f.offset + u64::from(f.stored_len));
        let mut spill = (self.spill_len, 0, frames_end);
        if let Some(w) = self.spill.as_mut() {
            let bytes = entry.trailer.encode();
            w.write_all(&bytes).map_err(|e| Error::io(&self.spill_path, e))?;
            spill.1 = bytes.len() as u32;
            self.spill_len += bytes.len() as u64;
        }
        let sorter = self.occurrences.as_mut().ok_or_else(|| finished(&self.spill_path))?;
        for (i, b) in entry.trailer.blobs.iter().enumerate() {
            sorter.push(
                Occurrence {
                    blob: b.id,
                    pack: no,
                    record: i as u32,
                    raw_len: b.raw_len,
                    share: share(&entry.trailer, i).min(u64::from(u32::MAX)) as u32,
                }
                .to_bytes(),
            )?;
        }
        self.rows.push(PackRow { id: entry.pack, len: entry.pack_len, listed, spill });
        self.by_id.insert(entry.pack, no);
        Ok(Some(no))
    }

    /// Every blob copy added, sorted by blob id, then pack number. Call
    /// once, after the last [`add`](Self::add); the table is read-only
    /// from then on.
    pub(crate) fn occurrences(&mut self) -> Result<Merged<OCC_LEN>> {
        if let Some(w) = self.spill.as_mut() {
            w.flush().map_err(|e| Error::io(&self.spill_path, e))?;
            self.spill_reader = Some(File::open(&self.spill_path).map_err(|e| Error::io(&self.spill_path, e))?);
        }
        self.occurrences.take().ok_or_else(|| finished(&self.spill_path))?.finish()
    }

    /// Pack `no` with its trailer, read back from the spill file (after
    /// [`occurrences`](Self::occurrences), in a table that keeps trailers).
    pub(crate) fn entry(&self, no: u32) -> Result<PackEntry> {
        let row = self.rows.get(no as usize).ok_or_else(|| finished(&self.spill_path))?;
        let (offset, len, frames_end) = row.spill;
        let Some(f) = &self.spill_reader else { return Err(finished(&self.spill_path)) };
        let mut bytes = vec![0u8; len as usize];
        f.read_exact_at(&mut bytes, offset).map_err(|e| Error::io(&self.spill_path, e))?;
        let trailer = Trailer::decode(&bytes, &row.id.to_hex(), frames_end)?;
        Ok(PackEntry { pack: row.id, pack_len: row.len, trailer })
    }
}

fn finished(path: &Path) -> Error {
    Error::io(path, std::io::Error::other("pack table used out of order (a bug)"))
}
