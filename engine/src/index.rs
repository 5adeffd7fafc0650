//! The index database: a redb file mapping blob id to where the blob lives
//! (pack, frame, offset, lengths), plus the packs and index files it was
//! built from. It is a cache of the repository's index files (which are in
//! turn a copy of the pack trailers): it can always be rebuilt, and it is
//! never the only record of anything.
//!
//! Several arc processes may open it at once (redb's multi-writer mode), so
//! concurrent backups into one local repository share it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::error::{Error, Result};
use crate::fault;
use crate::format::index_file::PackEntry;
use crate::format::pack::{BlobKind, FrameCodec, FrameRecord};
use crate::id::Id;

const BLOBS: TableDefinition<[u8; 32], [u8; LOCATION_LEN]> = TableDefinition::new("blobs");
/// pack id -> (pack length, blob count, listed in an index file)
const PACKS: TableDefinition<[u8; 32], (u64, u32, bool)> = TableDefinition::new("packs");
const INDEX_FILES: TableDefinition<[u8; 32], u32> = TableDefinition::new("index_files");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Bumped when the table layout changes; a mismatching database is rebuilt.
const SCHEMA_VERSION: u64 = 1;
const LOCATION_LEN: usize = 58;

/// Where a blob is: everything needed to read it with one ranged read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    pub frame: FrameRecord,
    pub offset_in_frame: u32,
    pub raw_len: u32,
    pub kind: BlobKind,
}

impl BlobLocation {
    fn encode(&self) -> [u8; LOCATION_LEN] {
        let mut b = [0u8; LOCATION_LEN];
        b[..32].copy_from_slice(&self.pack.0);
        b[32..40].copy_from_slice(&self.frame.offset.to_le_bytes());
        b[40..44].copy_from_slice(&self.frame.stored_len.to_le_bytes());
        b[44..48].copy_from_slice(&self.frame.raw_len.to_le_bytes());
        b[48] = self.frame.codec as u8;
        b[49] = self.kind as u8;
        b[50..54].copy_from_slice(&self.offset_in_frame.to_le_bytes());
        b[54..58].copy_from_slice(&self.raw_len.to_le_bytes());
        b
    }

    fn decode(b: &[u8; LOCATION_LEN], path: &Path) -> Result<BlobLocation> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut off = [0u8; 8];
        off.copy_from_slice(&b[32..40]);
        let bad = || Error::index_db(path, "unknown codec or kind in a blob location");
        Ok(BlobLocation {
            pack: Id::from_slice(&b[..32]).ok_or_else(bad)?,
            frame: FrameRecord {
                offset: u64::from_le_bytes(off),
                stored_len: u32_at(40),
                raw_len: u32_at(44),
                codec: FrameCodec::from_u8(b[48]).ok_or_else(bad)?,
            },
            kind: BlobKind::from_u8(b[49]).ok_or_else(bad)?,
            offset_in_frame: u32_at(50),
            raw_len: u32_at(54),
        })
    }
}

pub struct Index {
    db: redb::Database,
    path: PathBuf,
}

fn db_err(path: &Path) -> impl Fn(redb::Error) -> Error + '_ {
    move |e| db_error(path, e)
}

/// A full disk is reported as such, not as a damaged index database: the
/// user has to free space, and `arc repair index` would not help.
fn db_error(path: &Path, e: redb::Error) -> Error {
    match e {
        redb::Error::Io(io) => Error::io(path, io),
        e => Error::index_db(path, e),
    }
}

macro_rules! tx {
    ($path:expr, $e:expr) => {
        $e.map_err(|e| db_error($path, redb::Error::from(e)))
    };
}

impl Index {
    /// Opens or creates the database at `path`. A database with another
    /// schema version, or one redb cannot open (damaged), is recreated empty;
    /// the caller then refills it from the index files.
    pub fn open(path: &Path) -> Result<Index> {
        let build = || {
            let mut b = redb::Builder::new();
            // Lookups are point reads of a B-tree whose pages the OS also
            // caches; a small cache keeps a backup's memory flat.
            b.set_cache_size(16 * 1024 * 1024);
            b.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
            b
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let db = loop {
            match build().create(path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(Error::index_db(path, "still in use by another process after 60 s"))
                }
                // Deleting the database would not make room for a new one.
                Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                    if e.raw_os_error() == Some(libc::ENOSPC) =>
                {
                    return Err(Error::NoSpace { path: path.to_path_buf() })
                }
                // Damaged, foreign or from an incompatible redb: it is only
                // a cache, so start afresh (the caller refills it).
                Err(first) => {
                    std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
                    break build()
                        .create(path)
                        .map_err(|e| Error::index_db(path, format!("{first}; recreating failed: {e}")))?;
                }
            }
        };
        let index = Index { db, path: path.to_path_buf() };
        let version = {
            let r = tx!(path, index.db.begin_read())?;
            match r.open_table(META) {
                Ok(t) => tx!(path, t.get("schema_version"))?.map(|v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(Error::index_db(path, e)),
            }
        };
        if version != Some(SCHEMA_VERSION) {
            index.clear()?;
        }
        Ok(index)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Empties every table (rebuild starts from here).
    pub fn clear(&self) -> Result<()> {
        let p = &self.path;
        let w = tx!(p, self.db.begin_write())?;
        for t in ["blobs", "packs", "index_files"] {
            let _ = w.delete_table(redb::TableDefinition::<[u8; 32], u8>::new(t));
        }
        {
            w.open_table(BLOBS).map_err(|e| db_err(p)(e.into()))?;
            w.open_table(PACKS).map_err(|e| db_err(p)(e.into()))?;
            w.open_table(INDEX_FILES).map_err(|e| db_err(p)(e.into()))?;
            let mut meta = tx!(p, w.open_table(META))?;
            tx!(p, meta.insert("schema_version", SCHEMA_VERSION))?;
        }
        tx!(p, w.commit())?;
        fault::step("index db commit (cleared)", &p.display());
        Ok(())
    }

    /// Records packs (and the index file that lists them, if any) in one
    /// durable transaction.
    pub fn add_packs(&self, packs: &[PackEntry], index_file: Option<Id>) -> Result<()> {
        let p = &self.path;
        let w = tx!(p, self.db.begin_write())?;
        {
            let mut blobs = tx!(p, w.open_table(BLOBS))?;
            let mut pack_table = tx!(p, w.open_table(PACKS))?;
            for pe in packs {
                for b in &pe.trailer.blobs {
                    let loc = BlobLocation {
                        pack: pe.pack,
                        frame: pe.trailer.frames[b.frame as usize],
                        offset_in_frame: b.offset_in_frame,
                        raw_len: b.raw_len,
                        kind: b.kind,
                    };
                    // A blob stored twice (two concurrent backups) keeps its
                    // first location; both copies are valid.
                    if tx!(p, blobs.get(b.id.0))?.is_none() {
                        tx!(p, blobs.insert(b.id.0, loc.encode()))?;
                    }
                }
                tx!(
                    p,
                    pack_table.insert(pe.pack.0, (pe.pack_len, pe.trailer.blobs.len() as u32, index_file.is_some()))
                )?;
            }
            if let Some(f) = index_file {
                let mut files = tx!(p, w.open_table(INDEX_FILES))?;
                tx!(p, files.insert(f.0, packs.len() as u32))?;
            }
        }
        tx!(p, w.commit())?;
        fault::step("index db commit", &p.display());
        Ok(())
    }

    pub fn reader(&self) -> Result<IndexReader> {
        let p = &self.path;
        let r = tx!(p, self.db.begin_read())?;
        let blobs = tx!(p, r.open_table(BLOBS))?;
        Ok(IndexReader { blobs, path: self.path.clone() })
    }

    pub fn lookup(&self, id: &Id) -> Result<Option<BlobLocation>> {
        self.reader()?.lookup(id)
    }

    pub fn index_files(&self) -> Result<HashSet<Id>> {
        let p = &self.path;
        let r = tx!(p, self.db.begin_read())?;
        let t = tx!(p, r.open_table(INDEX_FILES))?;
        let mut out = HashSet::new();
        for item in tx!(p, t.iter())? {
            let (k, _) = tx!(p, item)?;
            out.insert(Id(k.value()));
        }
        Ok(out)
    }

    /// Every pack the index knows: (id, length, blob count, listed in an
    /// index file).
    pub fn packs(&self) -> Result<Vec<(Id, u64, u32, bool)>> {
        let p = &self.path;
        let r = tx!(p, self.db.begin_read())?;
        let t = tx!(p, r.open_table(PACKS))?;
        let mut out = Vec::new();
        for item in tx!(p, t.iter())? {
            let (k, v) = tx!(p, item)?;
            let (len, count, listed) = v.value();
            out.push((Id(k.value()), len, count, listed));
        }
        Ok(out)
    }

    pub fn blob_count(&self) -> Result<u64> {
        let p = &self.path;
        let r = tx!(p, self.db.begin_read())?;
        let t = tx!(p, r.open_table(BLOBS))?;
        tx!(p, t.len())
    }

    /// Calls `f` for every blob in id order.
    pub fn for_each_blob(&self, mut f: impl FnMut(Id, BlobLocation) -> Result<()>) -> Result<()> {
        let p = &self.path;
        let r = tx!(p, self.db.begin_read())?;
        let t = tx!(p, r.open_table(BLOBS))?;
        for item in tx!(p, t.iter())? {
            let (k, v) = tx!(p, item)?;
            f(Id(k.value()), BlobLocation::decode(&v.value(), p)?)?;
        }
        Ok(())
    }
}

/// A read snapshot of the blob table, cheap to query many times.
pub struct IndexReader {
    blobs: redb::ReadOnlyTable<[u8; 32], [u8; LOCATION_LEN]>,
    path: PathBuf,
}

impl IndexReader {
    pub fn lookup(&self, id: &Id) -> Result<Option<BlobLocation>> {
        match tx!(&self.path, self.blobs.get(id.0))? {
            Some(v) => Ok(Some(BlobLocation::decode(&v.value(), &self.path)?)),
            None => Ok(None),
        }
    }

    pub fn contains(&self, id: &Id) -> Result<bool> {
        Ok(tx!(&self.path, self.blobs.get(id.0))?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_under_the_index_database_is_reported_as_no_space() {
        let p = Path::new("/repo/index.redb");
        let full = redb::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        let e = db_error(p, full);
        assert!(matches!(&e, Error::NoSpace { path } if path == p), "{e:?}");
        assert_eq!(e.to_string(), "no space left on device writing /repo/index.redb");
        // Other failures stay index database errors.
        let e = db_error(p, redb::Error::Corrupted("bad page".into()));
        assert!(matches!(e, Error::IndexDb { .. }), "{e:?}");
    }
}
