//! The packs of a repository as `check` and `prune` see them, in memory
//! that grows with the number of packs and not of blobs: per pack a few
//! numbers in memory, its trailer spilled to a scratch file when the
//! operation reads it back (`check --read-data`: every pack; prune: the
//! packs no index file lists), and one fixed-size
//! [`Occurrence`] record per blob copy handed to an on-disk sorter
//! ([`crate::sorted_runs`]), so that "which packs hold blob X" becomes a
//! merge of sorted streams instead of a map of every blob.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::index_file::PackEntry;
use crate::format::pack::Trailer;
use crate::id::Id;
use crate::repo::Repository;
use crate::sorted_runs::{key_u32, u32_at, Merged, Sorted, Sorter};

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

/// Where a trailer is in a [`TrailerSpill`], and where its pack's frames
/// end (to decode it again).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpillAt {
    offset: u64,
    len: u32,
    frames_end: u64,
}

/// Trailers written to a scratch file and read back by position, at any
/// time and from any thread: trailers are most of an index (~60 bytes a
/// chunk), so those an operation reads back wait on disk, not in memory.
pub(crate) struct TrailerSpill {
    path: PathBuf,
    file: File,
    len: u64,
}

impl TrailerSpill {
    pub(crate) fn create(path: PathBuf) -> Result<TrailerSpill> {
        let file =
            File::options().read(true).write(true).create_new(true).open(&path).map_err(|e| Error::io(&path, e))?;
        Ok(TrailerSpill { path, file, len: 0 })
    }

    pub(crate) fn append(&mut self, trailer: &Trailer) -> Result<SpillAt> {
        let bytes = trailer.encode();
        let frames_end =
            trailer.frames.last().map_or(crate::format::pack::HEADER_LEN, |f| f.offset + u64::from(f.stored_len));
        self.file.write_all_at(&bytes, self.len).map_err(|e| Error::io(&self.path, e))?;
        let at = SpillAt { offset: self.len, len: bytes.len() as u32, frames_end };
        self.len += bytes.len() as u64;
        Ok(at)
    }

    /// The entry of pack `pack` (of `pack_len` bytes) whose trailer is `at`.
    pub(crate) fn read(&self, at: SpillAt, pack: Id, pack_len: u64) -> Result<PackEntry> {
        let mut bytes = vec![0u8; at.len as usize];
        self.file.read_exact_at(&mut bytes, at.offset).map_err(|e| Error::io(&self.path, e))?;
        let trailer = Trailer::decode(&bytes, &pack.to_hex(), at.frames_end)?;
        Ok(PackEntry { pack, pack_len, trailer })
    }
}

/// Which trailers a [`PackTable`] keeps for [`PackTable::entry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    None,
    /// Those of packs no index file lists (read from the packs themselves:
    /// reading them again would cost requests; prune lists them anew).
    Unlisted,
    All,
}

/// A pack in the table.
#[derive(Debug, Clone)]
pub(crate) struct PackRow {
    pub(crate) id: Id,
    pub(crate) len: u64,
    pub(crate) listed: bool,
    /// Its trailer in the spill file, when kept.
    spill: Option<SpillAt>,
}

/// The scratch directory of one operation (removed when dropped), the
/// packs found so far and the sorter of their blob copies.
pub(crate) struct PackTable {
    scratch: crate::scratch::Scratch,
    pub(crate) rows: Vec<PackRow>,
    by_id: HashMap<Id, u32>,
    keep: Keep,
    /// Created with the first trailer kept: with every trailer it would be
    /// the largest part of the scratch (~60 bytes a chunk: 6 GB at 100M
    /// chunks), so only the operations that read them back keep them.
    spill: Option<TrailerSpill>,
    occurrences: Option<Sorter<OCC_LEN>>,
}

impl PackTable {
    /// A table in a new scratch directory; with `keep_trailers`, every
    /// trailer is kept for [`entry`](Self::entry).
    pub(crate) fn new(repo: &Repository, keep_trailers: bool) -> Result<PackTable> {
        Self::keeping(repo, if keep_trailers { Keep::All } else { Keep::None })
    }

    /// A table that keeps the trailers of unlisted packs only (prune reads
    /// those of listed packs back from the index files, and only for the
    /// packs it rewrites or lists anew).
    pub(crate) fn new_keeping_unlisted(repo: &Repository) -> Result<PackTable> {
        Self::keeping(repo, Keep::Unlisted)
    }

    fn keeping(repo: &Repository, keep: Keep) -> Result<PackTable> {
        let scratch = repo.scratch_dir()?;
        let occurrences = Some(Sorter::new(scratch.path(), SORT_MEMORY, false));
        Ok(PackTable { scratch, rows: Vec::new(), by_id: HashMap::new(), keep, spill: None, occurrences })
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
        let spill = match (self.keep, listed) {
            (Keep::All, _) | (Keep::Unlisted, false) => {
                if self.spill.is_none() {
                    self.spill = Some(TrailerSpill::create(self.scratch.path().join("trailers"))?);
                }
                match self.spill.as_mut() {
                    Some(s) => Some(s.append(&entry.trailer)?),
                    None => None,
                }
            }
            _ => None,
        };
        let sorter = self.occurrences.as_mut().ok_or_else(|| finished(self.scratch.path()))?;
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

    /// Every blob copy added, sorted by blob id, then pack number, read
    /// once. Call once, after the last [`add`](Self::add).
    pub(crate) fn occurrences(&mut self) -> Result<Merged<OCC_LEN>> {
        self.occurrences.take().ok_or_else(|| finished(self.scratch.path()))?.finish()
    }

    /// [`occurrences`](Self::occurrences), to be read more than once; the
    /// runs go when the result is dropped.
    pub(crate) fn occurrence_runs(&mut self) -> Result<Sorted<OCC_LEN>> {
        self.occurrences.take().ok_or_else(|| finished(self.scratch.path()))?.finish_kept()
    }

    /// Pack `no` with its trailer, read back from the spill file (a
    /// trailer the table keeps).
    pub(crate) fn entry(&self, no: u32) -> Result<PackEntry> {
        let row = self.rows.get(no as usize).ok_or_else(|| finished(self.scratch.path()))?;
        match (row.spill, &self.spill) {
            (Some(at), Some(spill)) => spill.read(at, row.id, row.len),
            _ => Err(finished(self.scratch.path())),
        }
    }
}

fn finished(path: &Path) -> Error {
    Error::io(path, std::io::Error::other("pack table used out of order, or a trailer it does not keep (a bug)"))
}
