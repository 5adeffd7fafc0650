//! The index database: a redb file mapping blob id to where the blob lives
//! (pack, frame, offset, lengths), plus the packs and index files it was
//! built from. It is a cache of the repository's index files (which are in
//! turn a copy of the pack trailers): it can always be rebuilt, and it is
//! never the only record of anything.
//!
//! Layout (schema 2, `format-spec/v2/trees-index.md` 2.4): each pack id is
//! stored once, in a pack-number table, and each frame once, so a blob
//! costs its id and 16 bytes. Packs whose listing index files are gone
//! (another host's prune or compaction) are dropped by number without a
//! rebuild; blob rows that still point at a dropped pack read as absent
//! (a blob's further copies are kept in `dups`) and are swept out in bulk
//! once they are a quarter of the table.
//!
//! Several arc processes may open it at once (redb's multi-writer mode), so
//! concurrent backups into one local repository share it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::error::{Error, Result};
use crate::fault;
use crate::format::index_file::PackEntry;
use crate::format::pack::{BlobKind, FrameCodec, FrameRecord};
use crate::id::Id;

/// blob id -> pack_no u32 | frame_no u24 | kind u8 | offset_in_frame u32 | raw_len u32
const BLOBS: TableDefinition<[u8; 32], [u8; SLOT_LEN]> = TableDefinition::new("blobs");
/// (pack_no << 32 | frame_no) -> offset u64 | stored_len u32 | raw_len u32 | codec u8
const FRAMES: TableDefinition<u64, [u8; 17]> = TableDefinition::new("frames");
/// pack_no -> (pack id, pack length, blob count, number of known index files listing it)
const PACKS: TableDefinition<u32, ([u8; 32], u64, u32, u32)> = TableDefinition::new("packs");
const PACK_IDS: TableDefinition<[u8; 32], u32> = TableDefinition::new("pack_ids");
/// (blob id, pack_no) -> slot: further copies of a blob, beside its row in `blobs`.
const DUPS: TableDefinition<([u8; 32], u32), [u8; SLOT_LEN]> = TableDefinition::new("dups");
/// index file id -> file_no
const INDEX_FILES: TableDefinition<[u8; 32], u32> = TableDefinition::new("index_files");
/// (file_no << 32 | pack_no): which known index file lists which pack.
const FILE_PACKS: TableDefinition<u64, ()> = TableDefinition::new("file_packs");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// change-cache key -> stamp u32 (unix days) || records (`crate::change_cache`).
/// Not emptied by [`Index::clear`]: it is not derived from index files.
const CHANGES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("changes");

/// Bumped when the table layout changes; a mismatching database is rebuilt.
const SCHEMA_VERSION: u64 = 2;
const SLOT_LEN: usize = 16;
const ALL_TABLES: [&str; 8] = ["blobs", "frames", "packs", "pack_ids", "dups", "index_files", "file_packs", "meta"];

/// Where a blob is: everything needed to read it with one ranged read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    pub frame: FrameRecord,
    pub offset_in_frame: u32,
    pub raw_len: u32,
    pub kind: BlobKind,
}

/// A blob row: which pack (by number) and frame, where in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    pack_no: u32,
    frame_no: u32,
    kind: BlobKind,
    offset_in_frame: u32,
    raw_len: u32,
}

impl Slot {
    fn encode(&self) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        b[..4].copy_from_slice(&self.pack_no.to_le_bytes());
        b[4..8].copy_from_slice(&(self.frame_no | (self.kind as u32) << 24).to_le_bytes());
        b[8..12].copy_from_slice(&self.offset_in_frame.to_le_bytes());
        b[12..16].copy_from_slice(&self.raw_len.to_le_bytes());
        b
    }

    fn decode(b: &[u8; SLOT_LEN], path: &Path) -> Result<Slot> {
        let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let kind = BlobKind::from_u8((u(4) >> 24) as u8)
            .ok_or_else(|| Error::index_db(path, "unknown blob kind in a blob row"))?;
        Ok(Slot { pack_no: u(0), frame_no: u(4) & 0x00ff_ffff, kind, offset_in_frame: u(8), raw_len: u(12) })
    }
}

fn index_file_no(files: &redb::Table<[u8; 32], u32>, f: &Id, p: &Path) -> Result<Option<u32>> {
    let no = files.get(f.0).map_err(|e| db_error(p, e.into()))?.map(|v| v.value());
    Ok(no)
}

fn frame_key(pack_no: u32, frame_no: u32) -> u64 {
    u64::from(pack_no) << 32 | u64::from(frame_no)
}

fn encode_frame(f: &FrameRecord) -> [u8; 17] {
    let mut b = [0u8; 17];
    b[..8].copy_from_slice(&f.offset.to_le_bytes());
    b[8..12].copy_from_slice(&f.stored_len.to_le_bytes());
    b[12..16].copy_from_slice(&f.raw_len.to_le_bytes());
    b[16] = f.codec as u8;
    b
}

fn decode_frame(b: &[u8; 17], path: &Path) -> Result<FrameRecord> {
    let mut off = [0u8; 8];
    off.copy_from_slice(&b[..8]);
    Ok(FrameRecord {
        offset: u64::from_le_bytes(off),
        stored_len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        raw_len: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        codec: FrameCodec::from_u8(b[16]).ok_or_else(|| Error::index_db(path, "unknown frame codec"))?,
    })
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

/// A change to the cache applied in one transaction by [`Index::apply`].
#[derive(Default)]
pub struct IndexUpdate<'a> {
    /// New index files (id and packs), or packs no index file lists (None).
    pub add: Vec<(Option<Id>, &'a [PackEntry])>,
    /// Known index files that are gone: packs no remaining file lists are
    /// dropped.
    pub gone_files: Vec<Id>,
    /// Unlisted packs that are gone from the repository.
    pub gone_packs: Vec<Id>,
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
        for t in ALL_TABLES {
            let _ = w.delete_table(redb::TableDefinition::<[u8; 32], u8>::new(t));
        }
        {
            w.open_table(BLOBS).map_err(|e| db_err(p)(e.into()))?;
            w.open_table(FRAMES).map_err(|e| db_err(p)(e.into()))?;
            w.open_table(PACKS).map_err(|e| db_err(p)(e.into()))?;
            w.open_table(PACK_IDS).map_err(|e| db_err(p)(e.into()))?;
            w.open_table(DUPS).map_err(|e| db_err(p)(e.into()))?;
            w.open_table(INDEX_FILES).map_err(|e| db_err(p)(e.into()))?;
            w.open_table(FILE_PACKS).map_err(|e| db_err(p)(e.into()))?;
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
        self.apply(&IndexUpdate { add: vec![(index_file, packs)], ..Default::default() })
    }

    /// Applies new index files, gone index files and gone unlisted packs in
    /// one durable transaction (the incremental update of spec 2.4).
    pub fn apply(&self, update: &IndexUpdate<'_>) -> Result<()> {
        let p = &self.path;
        let w = tx!(p, self.db.begin_write())?;
        {
            let mut blobs = tx!(p, w.open_table(BLOBS))?;
            let mut frames = tx!(p, w.open_table(FRAMES))?;
            let mut packs = tx!(p, w.open_table(PACKS))?;
            let mut pack_ids = tx!(p, w.open_table(PACK_IDS))?;
            let mut dups = tx!(p, w.open_table(DUPS))?;
            let mut files = tx!(p, w.open_table(INDEX_FILES))?;
            let mut file_packs = tx!(p, w.open_table(FILE_PACKS))?;
            let mut meta = tx!(p, w.open_table(META))?;
            let mut next_pack = tx!(p, meta.get("next_pack_no"))?.map(|v| v.value()).unwrap_or(0);
            let mut next_file = tx!(p, meta.get("next_file_no"))?.map(|v| v.value()).unwrap_or(0);
            let mut dead = tx!(p, meta.get("dead_rows"))?.map(|v| v.value()).unwrap_or(0);

            // Additions first: a pack that a new file lists again (a
            // compaction) keeps its number and rows when its old file goes.
            for (index_file, entries) in &update.add {
                let file_no = match index_file {
                    Some(f) => match index_file_no(&files, f, p)? {
                        Some(no) => Some(no),
                        None => {
                            let no = next_file as u32;
                            next_file += 1;
                            tx!(p, files.insert(f.0, no))?;
                            Some(no)
                        }
                    },
                    None => None,
                };
                for pe in entries.iter() {
                    let known = tx!(p, pack_ids.get(pe.pack.0))?.map(|v| v.value());
                    let no = match known {
                        Some(no) => no,
                        None => {
                            let no = u32::try_from(next_pack)
                                .map_err(|_| Error::index_db(p, "more than 2^32 packs recorded"))?;
                            next_pack += 1;
                            tx!(p, pack_ids.insert(pe.pack.0, no))?;
                            tx!(p, packs.insert(no, (pe.pack.0, pe.pack_len, pe.trailer.blobs.len() as u32, 0)))?;
                            for (i, f) in pe.trailer.frames.iter().enumerate() {
                                tx!(p, frames.insert(frame_key(no, i as u32), encode_frame(f)))?;
                            }
                            for b in &pe.trailer.blobs {
                                let slot = Slot {
                                    pack_no: no,
                                    frame_no: b.frame,
                                    kind: b.kind,
                                    offset_in_frame: b.offset_in_frame,
                                    raw_len: b.raw_len,
                                };
                                let existing = tx!(p, blobs.get(b.id.0))?.map(|v| v.value());
                                match existing {
                                    None => {
                                        tx!(p, blobs.insert(b.id.0, slot.encode()))?;
                                    }
                                    Some(old) => {
                                        let old = Slot::decode(&old, p)?;
                                        if tx!(p, packs.get(old.pack_no))?.is_none() {
                                            // The row pointed at a dropped pack.
                                            tx!(p, blobs.insert(b.id.0, slot.encode()))?;
                                            dead = dead.saturating_sub(1);
                                        } else if old.pack_no != no {
                                            // A second copy (two backups at once).
                                            tx!(p, dups.insert((b.id.0, no), slot.encode()))?;
                                        }
                                    }
                                }
                            }
                            no
                        }
                    };
                    if let Some(file_no) = file_no {
                        let key = u64::from(file_no) << 32 | u64::from(no);
                        if tx!(p, file_packs.insert(key, ()))?.is_none() {
                            let (id, len, count, listings) = tx!(p, packs.get(no))?
                                .map(|v| v.value())
                                .ok_or_else(|| Error::index_db(p, "pack row missing"))?;
                            tx!(p, packs.insert(no, (id, len, count, listings + 1)))?;
                        }
                    }
                }
            }
            // Drops a pack by number: its row, id and frames. Its blob rows
            // stay and read as absent until a sweep.
            let mut drop_pack = |no: u32,
                                 packs: &mut redb::Table<u32, ([u8; 32], u64, u32, u32)>,
                                 pack_ids: &mut redb::Table<[u8; 32], u32>,
                                 frames: &mut redb::Table<u64, [u8; 17]>|
             -> Result<()> {
                if let Some(row) = tx!(p, packs.remove(no))? {
                    let (id, _, count, _) = row.value();
                    tx!(p, pack_ids.remove(id))?;
                    tx!(p, frames.retain_in(frame_key(no, 0)..=frame_key(no, u32::MAX), |_, _| false))?;
                    dead += u64::from(count);
                }
                Ok(())
            };

            for gone in &update.gone_files {
                let Some(file_no) = tx!(p, files.remove(gone.0))?.map(|v| v.value()) else { continue };
                let range = u64::from(file_no) << 32..=(u64::from(file_no) << 32 | u64::from(u32::MAX));
                let listed: Vec<u32> = tx!(p, file_packs.range(range.clone()))?
                    .map(|r| r.map(|(k, _)| k.value() as u32))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| db_error(p, e.into()))?;
                tx!(p, file_packs.retain_in(range, |_, _| false))?;
                for no in listed {
                    let row = tx!(p, packs.get(no))?.map(|v| v.value());
                    if let Some((id, len, count, listings)) = row {
                        if listings <= 1 {
                            drop_pack(no, &mut packs, &mut pack_ids, &mut frames)?;
                        } else {
                            tx!(p, packs.insert(no, (id, len, count, listings - 1)))?;
                        }
                    }
                }
            }
            for gone in &update.gone_packs {
                let no = tx!(p, pack_ids.get(gone.0))?.map(|v| v.value());
                if let Some(no) = no {
                    drop_pack(no, &mut packs, &mut pack_ids, &mut frames)?;
                }
            }

            // Sweep rows of dropped packs once they are a quarter of the
            // table: one pass, instead of one per prune.
            let total = tx!(p, blobs.len())?;
            if dead > 0 && dead * 4 > total {
                let live: HashSet<u32> = tx!(p, packs.iter())?
                    .map(|r| r.map(|(k, _)| k.value()))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| db_error(p, e.into()))?;
                let mut promote = Vec::new();
                tx!(
                    p,
                    dups.retain(|(id, no), slot| {
                        if !live.contains(&no) {
                            return false;
                        }
                        promote.push((id, slot));
                        true
                    })
                )?;
                let is_dead = |v: &[u8; SLOT_LEN]| !live.contains(&u32::from_le_bytes([v[0], v[1], v[2], v[3]]));
                tx!(p, blobs.retain(|_, v| !is_dead(&v)))?;
                for (id, slot) in promote {
                    if tx!(p, blobs.get(id))?.is_none() {
                        tx!(p, blobs.insert(id, slot))?;
                        tx!(p, dups.remove((id, u32::from_le_bytes([slot[0], slot[1], slot[2], slot[3]]))))?;
                    }
                }
                dead = 0;
            }
            tx!(p, meta.insert("next_pack_no", next_pack))?;
            tx!(p, meta.insert("next_file_no", next_file))?;
            tx!(p, meta.insert("dead_rows", dead))?;
        }
        tx!(p, w.commit())?;
        fault::step("index db commit", &p.display());
        Ok(())
    }

    pub fn reader(&self) -> Result<IndexReader> {
        let p = &self.path;
        let r = tx!(p, self.db.begin_read())?;
        Ok(IndexReader {
            blobs: tx!(p, r.open_table(BLOBS))?,
            frames: tx!(p, r.open_table(FRAMES))?,
            packs: tx!(p, r.open_table(PACKS))?,
            dups: tx!(p, r.open_table(DUPS))?,
            path: self.path.clone(),
        })
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
            let (_, v) = tx!(p, item)?;
            let (id, len, count, listings) = v.value();
            out.push((Id(id), len, count, listings > 0));
        }
        Ok(out)
    }

    /// Blobs the index knows a live location for.
    pub fn blob_count(&self) -> Result<u64> {
        let mut n = 0;
        self.for_each_blob(|_, _| {
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }

    /// Calls `f` for every blob in id order (one location each).
    pub fn for_each_blob(&self, mut f: impl FnMut(Id, BlobLocation) -> Result<()>) -> Result<()> {
        let reader = self.reader()?;
        let p = &self.path;
        let mut pack_cache: HashMap<u32, Option<Id>> = HashMap::new();
        for item in tx!(p, reader.blobs.iter())? {
            let (k, v) = tx!(p, item)?;
            let id = Id(k.value());
            let slot = Slot::decode(&v.value(), p)?;
            let live = match pack_cache.get(&slot.pack_no) {
                Some(x) => *x,
                None => {
                    let x = tx!(p, reader.packs.get(slot.pack_no))?.map(|v| Id(v.value().0));
                    pack_cache.insert(slot.pack_no, x);
                    x
                }
            };
            let loc = match live {
                Some(pack) => Some(reader.locate(pack, slot)?),
                None => reader.lookup_dups(&id)?,
            };
            if let Some(loc) = loc {
                f(id, loc)?;
            }
        }
        Ok(())
    }

    /// Gives back the pages that copy-on-write freed, when they are more
    /// than a tenth of the file. redb reuses freed pages in later commits
    /// but never returns them, and pages still visible to a read
    /// transaction cannot be reused at all: a backup's commits, made while
    /// its own lookups hold read transactions, left about one stale copy of
    /// every page (350 bytes per chunk after two backups, against 180 after
    /// one). Needs the only handle in this process and no open readers;
    /// another process's handle makes it a no-op, tried again next time.
    pub fn compact_if_wasteful(&mut self) -> Result<bool> {
        let p = &self.path;
        // Empty commits first: pages that earlier commits freed while
        // readers could still see them are only released by a later commit,
        // and count as allocated until then.
        for _ in 0..2 {
            tx!(p, tx!(p, self.db.begin_write())?.commit())?;
        }
        let live = {
            let w = tx!(p, self.db.begin_write())?;
            let st = tx!(p, w.stats())?;
            tx!(p, w.abort())?;
            st.allocated_pages() * st.page_size() as u64
        };
        let len = self.file_len()?;
        if len <= live + live / 10 + (256 << 10) {
            return Ok(false);
        }
        let mut compacted = false;
        while self.db.compact().unwrap_or(false) {
            compacted = true;
        }
        Ok(compacted)
    }

    /// The change-cache record at `key` (without its stamp).
    pub fn change_record(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        let p = &self.path;
        let r = tx!(p, self.db.begin_read())?;
        let t = match r.open_table(CHANGES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(Error::index_db(p, e)),
        };
        let v = tx!(p, t.get(key))?;
        Ok(v.and_then(|v| v.value().get(4..).map(<[u8]>::to_vec)))
    }

    /// Writes change-cache records stamped `today`, skipping those already
    /// there unchanged and stamped less than `refresh` days ago, and drops
    /// records older than `expire` days; one transaction.
    pub fn put_change_records(
        &self,
        records: &[([u8; 32], Vec<u8>)],
        today: u32,
        refresh: u32,
        expire: u32,
    ) -> Result<()> {
        let p = &self.path;
        let w = tx!(p, self.db.begin_write())?;
        {
            let mut t = tx!(p, w.open_table(CHANGES))?;
            for (k, rec) in records {
                let fresh = match tx!(p, t.get(k))? {
                    Some(v) => {
                        let v = v.value();
                        let stamp = v.get(..4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).unwrap_or(0);
                        v.get(4..) == Some(rec.as_slice()) && today.saturating_sub(stamp) < refresh
                    }
                    None => false,
                };
                if !fresh {
                    let mut v = Vec::with_capacity(4 + rec.len());
                    v.extend_from_slice(&today.to_le_bytes());
                    v.extend_from_slice(rec);
                    tx!(p, t.insert(k, v.as_slice()))?;
                }
            }
            tx!(
                p,
                t.retain(|_, v| {
                    let stamp = v.get(..4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).unwrap_or(0);
                    today.saturating_sub(stamp) <= expire
                })
            )?;
        }
        tx!(p, w.commit())?;
        Ok(())
    }

    /// Bytes of the database file (for the bytes-per-chunk figures).
    pub fn file_len(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.path).map_err(|e| Error::io(&self.path, e))?.len())
    }
}

/// A read snapshot of the index, cheap to query many times.
pub struct IndexReader {
    blobs: redb::ReadOnlyTable<[u8; 32], [u8; SLOT_LEN]>,
    frames: redb::ReadOnlyTable<u64, [u8; 17]>,
    packs: redb::ReadOnlyTable<u32, ([u8; 32], u64, u32, u32)>,
    dups: redb::ReadOnlyTable<([u8; 32], u32), [u8; SLOT_LEN]>,
    path: PathBuf,
}

impl IndexReader {
    fn locate(&self, pack: Id, slot: Slot) -> Result<BlobLocation> {
        let p = &self.path;
        let frame = tx!(p, self.frames.get(frame_key(slot.pack_no, slot.frame_no)))?
            .ok_or_else(|| Error::index_db(p, "frame row missing"))?;
        Ok(BlobLocation {
            pack,
            frame: decode_frame(&frame.value(), p)?,
            offset_in_frame: slot.offset_in_frame,
            raw_len: slot.raw_len,
            kind: slot.kind,
        })
    }

    fn live_pack(&self, pack_no: u32) -> Result<Option<Id>> {
        Ok(tx!(&self.path, self.packs.get(pack_no))?.map(|v| Id(v.value().0)))
    }

    fn lookup_dups(&self, id: &Id) -> Result<Option<BlobLocation>> {
        let p = &self.path;
        for item in tx!(p, self.dups.range((id.0, 0)..=(id.0, u32::MAX)))? {
            let (_, v) = tx!(p, item)?;
            let slot = Slot::decode(&v.value(), p)?;
            if let Some(pack) = self.live_pack(slot.pack_no)? {
                return Ok(Some(self.locate(pack, slot)?));
            }
        }
        Ok(None)
    }

    pub fn lookup(&self, id: &Id) -> Result<Option<BlobLocation>> {
        let p = &self.path;
        let Some(v) = tx!(p, self.blobs.get(id.0))? else { return Ok(None) };
        let slot = Slot::decode(&v.value(), p)?;
        match self.live_pack(slot.pack_no)? {
            Some(pack) => Ok(Some(self.locate(pack, slot)?)),
            None => self.lookup_dups(id),
        }
    }

    pub fn contains(&self, id: &Id) -> Result<bool> {
        let p = &self.path;
        let Some(v) = tx!(p, self.blobs.get(id.0))? else { return Ok(false) };
        let slot = Slot::decode(&v.value(), p)?;
        if tx!(p, self.packs.get(slot.pack_no))?.is_some() {
            return Ok(true);
        }
        Ok(self.lookup_dups(id)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index_file::tests::pack;

    fn ids(index: &Index) -> HashSet<Id> {
        let mut out = HashSet::new();
        index
            .for_each_blob(|id, _| {
                out.insert(id);
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn pages_left_by_copy_on_write_are_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(&dir.path().join("index.redb")).unwrap();
        // A backup: commits every few packs while its lookups hold readers.
        for i in 0..40u64 {
            let _held = index.reader().unwrap();
            let packs: Vec<PackEntry> = (0..4).map(|j| pack(i * 4 + j, 300, 64)).collect();
            index.add_packs(&packs, Some(Id::hash(&i.to_le_bytes()))).unwrap();
        }
        let before = index.file_len().unwrap();
        assert!(index.compact_if_wasteful().unwrap(), "{before} bytes for 48k blobs");
        let after = index.file_len().unwrap();
        eprintln!("{before} -> {after} bytes, {} per blob", after / 48_000);
        assert!(after < before * 3 / 4, "{before} -> {after}");
        assert!(!index.compact_if_wasteful().unwrap(), "nothing left to give back");
        assert_eq!(index.blob_count().unwrap(), 48_000);
    }

    #[test]
    fn a_compaction_elsewhere_updates_the_cache_without_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let (a, b, c) = (pack(1, 50, 8), pack(2, 40, 8), pack(3, 30, 8));
        let (f1, f2) = (Id::hash(b"f1"), Id::hash(b"f2"));
        index.add_packs(&[a.clone(), b.clone()], Some(f1)).unwrap();
        index.add_packs(std::slice::from_ref(&c), Some(f2)).unwrap();
        assert_eq!(index.blob_count().unwrap(), 120);
        let numbers = |index: &Index| {
            let r = index.db.begin_read().unwrap();
            let t = r.open_table(PACK_IDS).unwrap();
            t.iter().unwrap().map(|x| x.unwrap().1.value()).collect::<Vec<u32>>()
        };
        let before = numbers(&index);
        // Another host's prune: c goes; a and b are listed again by one
        // compacted file that supersedes f1 and f2.
        let compacted = Id::hash(b"c");
        let relisted = [a.clone(), b.clone()];
        index
            .apply(&IndexUpdate {
                add: vec![(Some(compacted), &relisted)],
                gone_files: vec![f1, f2],
                gone_packs: vec![],
            })
            .unwrap();
        assert_eq!(index.index_files().unwrap(), HashSet::from([compacted]));
        assert_eq!(index.blob_count().unwrap(), 90);
        let r = index.reader().unwrap();
        assert!(r.contains(&a.trailer.blobs[3].id).unwrap());
        assert!(!r.contains(&c.trailer.blobs[3].id).unwrap(), "a dropped pack's blobs read as absent");
        assert_eq!(r.lookup(&b.trailer.blobs[0].id).unwrap().unwrap().pack, b.pack);
        let after = numbers(&index);
        assert!(after.iter().all(|n| before.contains(n)), "a and b kept their numbers: nothing was re-inserted");
        assert_eq!(index.packs().unwrap().len(), 2);
    }

    #[test]
    fn a_second_copy_takes_over_when_the_first_pack_goes_and_dead_rows_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let first = pack(7, 20, 4);
        let mut second = pack(8, 20, 4);
        // The same blobs stored again in another pack (two backups at once).
        for (b, f) in second.trailer.blobs.iter_mut().zip(&first.trailer.blobs) {
            b.id = f.id;
        }
        let (f1, f2) = (Id::hash(b"one"), Id::hash(b"two"));
        index.add_packs(std::slice::from_ref(&first), Some(f1)).unwrap();
        index.add_packs(std::slice::from_ref(&second), Some(f2)).unwrap();
        let id = first.trailer.blobs[5].id;
        assert_eq!(index.lookup(&id).unwrap().unwrap().pack, first.pack);
        index.apply(&IndexUpdate { gone_files: vec![f1], ..Default::default() }).unwrap();
        assert_eq!(index.lookup(&id).unwrap().unwrap().pack, second.pack, "the copy is found");
        // 20 dead rows of 20: swept by that commit, the copies promoted.
        let r = index.db.begin_read().unwrap();
        assert_eq!(r.open_table(BLOBS).unwrap().len().unwrap(), 20);
        assert_eq!(r.open_table(DUPS).unwrap().len().unwrap(), 0);
        drop(r);
        assert_eq!(ids(&index).len(), 20);
        // An unlisted pack that is gone is dropped too.
        let loose = pack(9, 5, 5);
        index.add_packs(std::slice::from_ref(&loose), None).unwrap();
        assert!(index.lookup(&loose.trailer.blobs[0].id).unwrap().is_some());
        index.apply(&IndexUpdate { gone_packs: vec![loose.pack], ..Default::default() }).unwrap();
        assert!(index.lookup(&loose.trailer.blobs[0].id).unwrap().is_none());
    }

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
