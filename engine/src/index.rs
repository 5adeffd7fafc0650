//! The local index cache: where each blob lives (pack, frame, offset,
//! lengths), plus the packs and index files it was built from. It is a
//! cache of the repository's index files (which are in turn a copy of the
//! pack trailers): it can always be rebuilt, and it is never the only
//! record of anything.
//!
//! Two parts (`format-spec/v2/trees-index.md` 2.4):
//! * a **sorted file** (`crate::index_sorted`): almost every blob row, in
//!   id order with its packs and frames, written in one sequential pass;
//! * a redb database beside it: the packs and index files the cache knows,
//!   the rows added since the sorted file was written (the **delta**: a
//!   backup's packs as they become durable), the packs dropped since then,
//!   and the change-detection cache (`crate::change_cache`).
//!
//! The sorted file is rewritten (a merge of itself, the delta and sorted
//! runs of new rows) when a sync reads many rows at once (a new host, a
//! rebuild: the rows go to sorted runs, not into the B-tree), and when a
//! command ends with a delta over 1/64 of the sorted rows or dropped rows
//! over a quarter. Each pack id is stored once, in a pack-number table.
//! Packs whose listing index files are gone (another host's prune or
//! compaction) are dropped by number without a rebuild; their rows read as
//! absent and are left out of the next sorted file.
//!
//! Several arc processes may open it at once (redb's multi-writer mode):
//! a merge happens inside a redb write transaction, writes the new sorted
//! file under a new generation number, and deletes the old one after the
//! commit (a reader that mapped it keeps its mapping).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::error::{Error, Result};
use crate::fault;
use crate::format::index_file::PackEntry;
use crate::format::pack::{BlobKind, FrameCodec, FrameRecord};
use crate::id::Id;
use crate::index_sorted::{self, OpenError, Row, SortedIndex, RECORD_LEN};
use crate::sorted_runs::{Merged, Sorter};

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
/// Packs dropped since the sorted file was written: its rows of them
/// read as absent.
const DROPPED: TableDefinition<u32, ()> = TableDefinition::new("dropped");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// change-cache key -> stamp u32 (unix days) || records (`crate::change_cache`).
/// Not emptied by [`Index::clear`]: it is not derived from index files.
const CHANGES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("changes");

/// Bumped when the table layout changes; a mismatching database is rebuilt.
/// 3: rows in a sorted file beside the database.
const SCHEMA_VERSION: u64 = 3;
const SLOT_LEN: usize = 16;
const ALL_TABLES: [&str; 9] =
    ["blobs", "frames", "packs", "pack_ids", "dups", "index_files", "file_packs", "dropped", "meta"];

/// Rows one update puts into redb before the rest go to sorted runs and
/// the update ends with a merge: a few of a backup's index files, not a
/// new host's whole fill. The engine's tests use a small number, so that
/// their syncs go through the sorted path.
const BULK_ROWS: u64 = if cfg!(test) { 1000 } else { 100_000 };
/// A command ends with a merge when the delta holds more than this
/// fraction of the sorted rows: redb's rows cost about twice a sorted
/// row, so 1/64 keeps the cache within 2 % of its sorted size, and the
/// sorted file is rewritten once per 1/64 of growth.
const DELTA_FRACTION: u64 = 64;
/// Within one command (a long first backup), a delta larger than both
/// this and the sorted rows is merged at once: the rewrites double in
/// size, so their total stays proportional to the rows.
const DELTA_MERGE_MIN: u64 = 1_000_000;

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

/// A redb slot as a merge row.
fn slot_row(id: [u8; 32], b: &[u8; SLOT_LEN]) -> Row {
    let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Row { id, pack_no: u(0), frame_word: u(4), offset_in_frame: u(8), raw_len: u(12) }
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
    /// The sorted file of the generation last opened.
    sorted: Mutex<Option<(u64, Arc<SortedIndex>)>>,
    /// Set when a merge found the sorted file damaged and emptied the
    /// cache: the caller fills it again from the index files.
    emptied: AtomicBool,
    /// Set by every write transaction this handle commits: only then can
    /// [`Index::compact_if_wasteful`] have pages of this process's to give back.
    wrote: AtomicBool,
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

/// `META` key: packs dropped since the cache was created or cleared.
const DROPS: &str = "packs_dropped";

/// `META` key of a snapshot recorded whole ([`Index::record_whole`]).
fn whole_key(snapshot: &Id) -> String {
    format!("whole:{}", snapshot.to_hex())
}

fn meta_get(p: &Path, meta: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64> {
    Ok(tx!(p, meta.get(key))?.map(|v| v.value()).unwrap_or(0))
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

/// Sizes of the cache's parts (for `arc stats`-like figures and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheSizes {
    pub sorted_rows: u64,
    pub delta_rows: u64,
    pub sorted_bytes: u64,
    pub db_bytes: u64,
    /// Bytes of the database's pages that hold the change-detection cache
    /// (a per-file cache that shares the file, not part of the index).
    pub change_cache_bytes: u64,
}

impl Index {
    /// Opens or creates the cache at `path` (the database; the sorted file
    /// is beside it). A database with another schema version, or one redb
    /// cannot open (damaged), is recreated empty, and so is one whose
    /// sorted file is missing, of another version or damaged; the caller
    /// then refills it from the index files.
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
        let index = Index {
            db,
            path: path.to_path_buf(),
            sorted: Mutex::new(None),
            emptied: AtomicBool::new(false),
            wrote: AtomicBool::new(false),
        };
        let (version, generation) = {
            let r = tx!(path, index.db.begin_read())?;
            match r.open_table(META) {
                Ok(t) => (tx!(path, t.get("schema_version"))?.map(|v| v.value()), meta_get(path, &t, "sorted_gen")?),
                Err(redb::TableError::TableDoesNotExist(_)) => (None, 0),
                Err(e) => return Err(Error::index_db(path, e)),
            }
        };
        if version != Some(SCHEMA_VERSION) {
            index.clear()?;
        } else if generation != 0 {
            match index.sorted_file(generation) {
                Ok(_) => {}
                // Gone or damaged (a crash between the file and the commit
                // cannot leave this: the file is renamed into place first).
                Err(OpenError::Missing) | Err(OpenError::Damaged(_)) => index.clear()?,
            }
        }
        Ok(index)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sorted file of generation `g`.
    fn sorted_path(&self, g: u64) -> PathBuf {
        self.path.with_extension(format!("{g}.rows"))
    }

    /// The sorted file of generation `g`, opened once per process.
    fn sorted_file(&self, g: u64) -> std::result::Result<Arc<SortedIndex>, OpenError> {
        let mut slot = self.sorted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((have, s)) = slot.as_ref() {
            if *have == g {
                return Ok(s.clone());
            }
        }
        let s = Arc::new(SortedIndex::open(&self.sorted_path(g))?);
        *slot = Some((g, s.clone()));
        Ok(s)
    }

    /// Removes sorted files (and their temporaries) of generations other
    /// than `keep`: left by a crash, or replaced by a merge.
    fn remove_stale_files(&self, keep: u64) {
        let (Some(dir), Some(stem)) = (self.path.parent(), self.path.file_stem().and_then(|s| s.to_str())) else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let keep = format!("{stem}.{keep}.rows");
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name.strip_prefix(stem).and_then(|r| r.strip_prefix('.')) else { continue };
            let generation = rest.split('.').next().unwrap_or("");
            let ours = !generation.is_empty() && generation.bytes().all(|b| b.is_ascii_digit());
            if ours && (rest.ends_with(".rows") || rest.ends_with(".tmp")) && name != keep {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Empties every table but the change cache, and drops the sorted file
    /// (rebuild starts from here).
    pub fn clear(&self) -> Result<()> {
        let p = &self.path;
        let w = tx!(p, self.db.begin_write())?;
        Self::clear_in(p, &w)?;
        self.wrote.store(true, Ordering::Relaxed);
        tx!(p, w.commit())?;
        fault::step("index db commit (cleared)", &p.display());
        *self.sorted.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.remove_stale_files(0);
        Ok(())
    }

    fn clear_in(p: &Path, w: &redb::WriteTransaction) -> Result<()> {
        for t in ALL_TABLES {
            let _ = w.delete_table(redb::TableDefinition::<[u8; 32], u8>::new(t));
        }
        w.open_table(BLOBS).map_err(|e| db_err(p)(e.into()))?;
        w.open_table(FRAMES).map_err(|e| db_err(p)(e.into()))?;
        w.open_table(PACKS).map_err(|e| db_err(p)(e.into()))?;
        w.open_table(PACK_IDS).map_err(|e| db_err(p)(e.into()))?;
        w.open_table(DUPS).map_err(|e| db_err(p)(e.into()))?;
        w.open_table(INDEX_FILES).map_err(|e| db_err(p)(e.into()))?;
        w.open_table(FILE_PACKS).map_err(|e| db_err(p)(e.into()))?;
        w.open_table(DROPPED).map_err(|e| db_err(p)(e.into()))?;
        let mut meta = tx!(p, w.open_table(META))?;
        tx!(p, meta.insert("schema_version", SCHEMA_VERSION))?;
        Ok(())
    }

    /// Whether a merge found the sorted file damaged and emptied the cache
    /// since the last call (the caller refills it).
    pub fn take_emptied(&self) -> bool {
        self.emptied.swap(false, Ordering::SeqCst)
    }

    /// Records packs (and the index file that lists them, if any) in one
    /// durable transaction.
    pub fn add_packs(&self, packs: &[PackEntry], index_file: Option<Id>) -> Result<()> {
        self.apply(&IndexUpdate { add: vec![(index_file, packs)], ..Default::default() })
    }

    /// Applies new index files, gone index files and gone unlisted packs in
    /// one durable transaction (the incremental update of spec 2.4).
    pub fn apply(&self, update: &IndexUpdate<'_>) -> Result<()> {
        let mut u = self.begin()?;
        for (file, entries) in &update.add {
            u.add(*file, entries)?;
        }
        u.gone_files(&update.gone_files)?;
        u.gone_packs(&update.gone_packs)?;
        u.commit()
    }

    /// Starts an update: one write transaction, committed by
    /// [`Update::commit`].
    pub fn begin(&self) -> Result<Update<'_>> {
        let p = &self.path;
        let w = tx!(p, self.db.begin_write())?;
        Ok(Update { index: self, w, bulk: None, redb_rows: 0, merge: false })
    }

    /// Merges the delta into the sorted file when it has grown past
    /// 1/64 of it, or when dropped rows are a quarter of all: the end of
    /// every command that wrote to the cache.
    pub fn settle(&self) -> Result<()> {
        let p = &self.path;
        let (sorted, delta, dead) = {
            let r = tx!(p, self.db.begin_read())?;
            let meta = tx!(p, r.open_table(META))?;
            (meta_get(p, &meta, "sorted_rows")?, meta_get(p, &meta, "delta_rows")?, meta_get(p, &meta, "dead_rows")?)
        };
        let grown = delta > 0 && delta * DELTA_FRACTION > sorted;
        let dead = dead > 0 && dead * 4 > sorted + delta;
        if grown || dead {
            let mut u = self.begin()?;
            u.merge = true;
            u.commit()?;
        }
        Ok(())
    }

    /// Packs this cache has dropped since it was created or cleared (a
    /// prune's, a repair's, a lost pack's): read at a backup's start, to
    /// be recorded with the snapshot it writes ([`Index::record_whole`]).
    pub fn drops(&self) -> Result<u64> {
        let p = &self.path;
        let r = tx!(p, self.db.begin_read())?;
        let meta = tx!(p, r.open_table(META))?;
        meta_get(p, &meta, DROPS)
    }

    /// Whether this host recorded `snapshot` as whole (every chunk it
    /// refers to in the index) when no pack had been dropped since, as
    /// [`Index::drops`] says now: then a backup may take unchanged files'
    /// chunk lists from it without asking the index about each chunk.
    pub fn whole(&self, snapshot: &Id, drops: u64) -> Result<bool> {
        let p = &self.path;
        let r = tx!(p, self.db.begin_read())?;
        let meta = tx!(p, r.open_table(META))?;
        Ok(tx!(p, meta.get(whole_key(snapshot).as_str()))?.is_some_and(|v| v.value() == drops + 1))
    }

    /// Records that `snapshot` was written whole when the cache had
    /// dropped `drops` packs, in place of the record of its parent (the
    /// next backup of the same sources takes it as parent): one record per
    /// backed-up set of sources. A durable commit (redb refuses others on a
    /// database shared between processes): two `fdatasync`s a backup.
    pub fn record_whole(&self, snapshot: &Id, drops: u64, parent: Option<&Id>) -> Result<()> {
        let p = &self.path;
        let w = tx!(p, self.db.begin_write())?;
        {
            let mut meta = tx!(p, w.open_table(META))?;
            if let Some(parent) = parent {
                tx!(p, meta.remove(whole_key(parent).as_str()))?;
            }
            tx!(p, meta.insert(whole_key(snapshot).as_str(), drops + 1))?;
        }
        // Not counted as a write: a commit this small leaves nothing for
        // compaction to give back, whose own commits would cost a backup
        // with nothing new two `fdatasync`s.
        tx!(p, w.commit())?;
        fault::step("index db commit (whole snapshot)", &p.display());
        Ok(())
    }

    /// Rows in the sorted file and in the delta, and the bytes of both.
    pub fn sizes(&self) -> Result<CacheSizes> {
        let p = &self.path;
        let r = tx!(p, self.db.begin_read())?;
        let meta = tx!(p, r.open_table(META))?;
        let g = meta_get(p, &meta, "sorted_gen")?;
        let sorted_bytes =
            if g == 0 { 0 } else { std::fs::metadata(self.sorted_path(g)).map(|m| m.len()).unwrap_or(0) };
        let change_cache_bytes = match r.open_table(CHANGES) {
            Ok(t) => {
                let st = tx!(p, t.stats())?;
                st.stored_bytes() + st.metadata_bytes() + st.fragmented_bytes()
            }
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(Error::index_db(p, e)),
        };
        Ok(CacheSizes {
            change_cache_bytes,
            sorted_rows: meta_get(p, &meta, "sorted_rows")?,
            delta_rows: meta_get(p, &meta, "delta_rows")?,
            sorted_bytes,
            db_bytes: self.db_len()?,
        })
    }

    pub fn reader(&self) -> Result<IndexReader> {
        let p = &self.path;
        // A merge in another process may replace the sorted file between
        // the read transaction and the open: then a fresh transaction
        // names the new one.
        for _ in 0..8 {
            let r = tx!(p, self.db.begin_read())?;
            let (g, delta) = {
                let meta = tx!(p, r.open_table(META))?;
                (meta_get(p, &meta, "sorted_gen")?, meta_get(p, &meta, "delta_rows")?)
            };
            let sorted = match g {
                0 => None,
                g => match self.sorted_file(g) {
                    Ok(s) => Some(s),
                    Err(OpenError::Missing) => continue,
                    Err(OpenError::Damaged(e)) => return Err(e),
                },
            };
            let mut dropped = HashSet::new();
            for item in tx!(p, tx!(p, r.open_table(DROPPED))?.iter())? {
                dropped.insert(tx!(p, item)?.0.value());
            }
            return Ok(IndexReader {
                blobs: tx!(p, r.open_table(BLOBS))?,
                frames: tx!(p, r.open_table(FRAMES))?,
                packs: tx!(p, r.open_table(PACKS))?,
                dups: tx!(p, r.open_table(DUPS))?,
                sorted,
                dropped,
                delta: delta > 0,
                path: self.path.clone(),
            });
        }
        Err(Error::index_db(p, "the sorted index file keeps disappearing"))
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
        let mut live_cache: HashMap<u32, Option<Id>> = HashMap::new();
        let mut sources: Vec<RowSource<'_>> = Vec::new();
        sources.push(Box::new(tx!(p, reader.blobs.iter())?.map(|item| {
            let (k, v) = tx!(p, item)?;
            Ok((slot_row(k.value(), &v.value()), None))
        })));
        sources.push(Box::new(tx!(p, reader.dups.iter())?.map(|item| {
            let (k, v) = tx!(p, item)?;
            Ok((slot_row(k.value().0, &v.value()), None))
        })));
        if let Some(s) = &reader.sorted {
            let mut rows = s.rows_reader().enumerate();
            sources.push(Box::new(std::iter::from_fn(move || rows.next().map(|(i, r)| r.map(|r| (r, Some(i)))))));
        }
        let mut last: Option<[u8; 32]> = None;
        for item in MergeRows::new(sources) {
            let (row, sorted_at) = item?;
            if last == Some(row.id) {
                continue;
            }
            let loc = match (sorted_at, &reader.sorted) {
                (Some(i), Some(s)) => {
                    if reader.dropped.contains(&row.pack_no) {
                        continue;
                    }
                    let (pack, frame, offset_in_frame, raw_len, kind) = s.locate_at(i)?;
                    BlobLocation { pack, frame, offset_in_frame, raw_len, kind }
                }
                _ => {
                    let live = match live_cache.get(&row.pack_no) {
                        Some(x) => *x,
                        None => {
                            let x = reader.live_pack(row.pack_no)?;
                            live_cache.insert(row.pack_no, x);
                            x
                        }
                    };
                    let Some(pack) = live else { continue };
                    let slot = Slot::decode(&row_slot(&row), p)?;
                    reader.locate(pack, slot)?
                }
            };
            last = Some(row.id);
            f(Id(row.id), loc)?;
        }
        Ok(())
    }

    /// Whether this handle committed a write transaction.
    #[cfg(test)]
    pub(crate) fn has_written(&self) -> bool {
        self.wrote.load(Ordering::Relaxed)
    }

    /// Gives back the pages that copy-on-write freed, when they are more
    /// than a tenth of the file. redb reuses freed pages in later commits
    /// but never returns them, and pages still visible to a read
    /// transaction cannot be reused at all: a backup's commits, made while
    /// its own lookups hold read transactions, left about one stale copy of
    /// every page (350 bytes per chunk after two backups, against 180 after
    /// one). Needs the only handle in this process and no open readers;
    /// another process's handle makes it a no-op, tried again next time.
    ///
    /// The file's blocks are what is weighed, not its length: a commit
    /// that needs room past the end doubles the file's length, sparsely,
    /// and after compaction left no room, nearly every writing command did
    /// that and then compacted again only to cut the unwritten tail (www,
    /// a few changed files a run: every run, about ten durable commits).
    pub fn compact_if_wasteful(&mut self) -> Result<bool> {
        // A command that only read the cache (restore, ls, a backup with
        // nothing new to record) left no pages behind: the last writer gave
        // its own back when it ended. The commits below cost two
        // `fdatasync`s each, and a restore's exit spent 8 of them here.
        if !self.wrote.load(Ordering::Relaxed) {
            return Ok(false);
        }
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
        if self.db_disk_bytes()? <= live + live / 10 + (256 << 10) {
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
        self.wrote.store(true, Ordering::Relaxed);
        tx!(p, w.commit())?;
        Ok(())
    }

    /// Bytes of the database file.
    pub fn db_len(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.path).map_err(|e| Error::io(&self.path, e))?.len())
    }

    /// Bytes of disk the database takes: its length less the holes that
    /// growth left unwritten (see [`Index::compact_if_wasteful`]). A file
    /// system that compresses (ZFS, btrfs) counts fewer blocks, so
    /// compaction comes later there: at worst the file keeps what redb
    /// itself bounds, about one stale copy of each page.
    fn db_disk_bytes(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(m.len().min(m.blocks() * 512))
    }

    /// Bytes of the whole cache: the database and the sorted file (for
    /// the bytes-per-chunk figures).
    pub fn file_len(&self) -> Result<u64> {
        let s = self.sizes()?;
        Ok(s.db_bytes + s.sorted_bytes)
    }
}

/// The redb slot of a merge row.
fn row_slot(row: &Row) -> [u8; SLOT_LEN] {
    let mut b = [0u8; SLOT_LEN];
    b[..4].copy_from_slice(&row.pack_no.to_le_bytes());
    b[4..8].copy_from_slice(&row.frame_word.to_le_bytes());
    b[8..12].copy_from_slice(&row.offset_in_frame.to_le_bytes());
    b[12..16].copy_from_slice(&row.raw_len.to_le_bytes());
    b
}

type RowSource<'a> = Box<dyn Iterator<Item = Result<(Row, Option<usize>)>> + 'a>;

/// Merges sorted row streams into one, by (id, pack number); each row
/// carries its position in the sorted file when it comes from there.
struct MergeRows<'a> {
    sources: Vec<RowSource<'a>>,
    heads: Vec<Option<(Row, Option<usize>)>>,
    started: bool,
}

impl<'a> MergeRows<'a> {
    fn new(sources: Vec<RowSource<'a>>) -> Self {
        MergeRows { heads: Vec::with_capacity(sources.len()), sources, started: false }
    }
}

impl Iterator for MergeRows<'_> {
    type Item = Result<(Row, Option<usize>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            for s in self.sources.iter_mut() {
                match s.next().transpose() {
                    Ok(h) => self.heads.push(h),
                    Err(e) => return Some(Err(e)),
                }
            }
        }
        // A handful of sources: a linear scan beats a heap.
        let mut best: Option<usize> = None;
        for (i, h) in self.heads.iter().enumerate() {
            if let Some((row, _)) = h {
                if best.is_none_or(|b| self.heads[b].as_ref().is_some_and(|(r, _)| row < r)) {
                    best = Some(i);
                }
            }
        }
        let i = best?;
        let next = match self.sources[i].next().transpose() {
            Ok(h) => h,
            Err(e) => return Some(Err(e)),
        };
        std::mem::replace(&mut self.heads[i], next).map(Ok)
    }
}

/// New rows of one update on their way to a sorted file: sorted runs of
/// rows, and the frames of their packs (in the sorted file's layout) in a
/// scratch file, pack by pack in increasing pack number.
struct Bulk {
    dir: tempfile::TempDir,
    sorter: Sorter<RECORD_LEN>,
    frames_path: PathBuf,
    frames: BufWriter<File>,
    /// (pack_no, frames_end, frame count), increasing.
    packs: Vec<(u32, u32, u32)>,
}

impl Bulk {
    fn new(index: &Index) -> Result<Bulk> {
        let parent = index.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let dir =
            tempfile::Builder::new().prefix("index-fill-").tempdir_in(parent).map_err(|e| Error::io(parent, e))?;
        let frames_path = dir.path().join("frames");
        let frames = File::create(&frames_path).map_err(|e| Error::io(&frames_path, e))?;
        Ok(Bulk {
            sorter: Sorter::new(dir.path(), crate::ops::pack_table::SORT_MEMORY, false),
            frames: BufWriter::with_capacity(1 << 20, frames),
            frames_path,
            dir,
            packs: Vec::new(),
        })
    }
}

/// The outcome of a merge that could not use the sorted file it had.
enum MergeOutcome {
    Done(u64),
    Damaged(Error),
}

/// One write transaction of the cache (see [`Index::begin`]).
pub struct Update<'i> {
    index: &'i Index,
    w: redb::WriteTransaction,
    bulk: Option<Bulk>,
    /// Rows this update put into redb.
    redb_rows: u64,
    /// Merge into a new sorted file at commit whatever the sizes.
    merge: bool,
}

impl Update<'_> {
    /// Adds an index file (or, with `None`, packs no index file lists)
    /// and its packs. A pack the cache knows keeps its number and rows.
    pub fn add(&mut self, index_file: Option<Id>, entries: &[PackEntry]) -> Result<()> {
        let index = self.index;
        let p = &index.path;
        let w = &self.w;
        let mut blobs = tx!(p, w.open_table(BLOBS))?;
        let mut frames = tx!(p, w.open_table(FRAMES))?;
        let mut packs = tx!(p, w.open_table(PACKS))?;
        let mut pack_ids = tx!(p, w.open_table(PACK_IDS))?;
        let mut dups = tx!(p, w.open_table(DUPS))?;
        let mut files = tx!(p, w.open_table(INDEX_FILES))?;
        let mut file_packs = tx!(p, w.open_table(FILE_PACKS))?;
        let mut meta = tx!(p, w.open_table(META))?;
        let mut next_pack = meta_get(p, &meta, "next_pack_no")?;
        let mut next_file = meta_get(p, &meta, "next_file_no")?;
        let mut dead = meta_get(p, &meta, "dead_rows")?;
        let mut delta = meta_get(p, &meta, "delta_rows")?;

        let file_no = match index_file {
            Some(f) => match index_file_no(&files, &f, p)? {
                Some(no) => Some(no),
                None => {
                    let no = u32::try_from(next_file)
                        .map_err(|_| Error::index_db(p, "more than 2^32 index files recorded"))?;
                    next_file += 1;
                    tx!(p, files.insert(f.0, no))?;
                    Some(no)
                }
            },
            None => None,
        };
        for pe in entries {
            let known = tx!(p, pack_ids.get(pe.pack.0))?.map(|v| v.value());
            let no = match known {
                Some(no) => no,
                None => {
                    let no =
                        u32::try_from(next_pack).map_err(|_| Error::index_db(p, "more than 2^32 packs recorded"))?;
                    next_pack += 1;
                    tx!(p, pack_ids.insert(pe.pack.0, no))?;
                    tx!(p, packs.insert(no, (pe.pack.0, pe.pack_len, pe.trailer.blobs.len() as u32, 0)))?;
                    let rows = pe.trailer.blobs.len() as u64;
                    let fits = index_sorted::fits(pe.pack_len, &pe.trailer.frames);
                    match fits {
                        Some(end) if self.bulk.is_some() || self.redb_rows + rows > BULK_ROWS => {
                            if self.bulk.is_none() {
                                self.bulk = Some(Bulk::new(index)?);
                            }
                            let Some(bulk) = self.bulk.as_mut() else { continue };
                            for f in &pe.trailer.frames {
                                let b = index_sorted::encode_frame(f);
                                bulk.frames.write_all(&b).map_err(|e| Error::io(&bulk.frames_path, e))?;
                            }
                            bulk.packs.push((no, end, pe.trailer.frames.len() as u32));
                            for b in &pe.trailer.blobs {
                                let row = Row {
                                    id: b.id.0,
                                    pack_no: no,
                                    frame_word: b.frame | (b.kind as u32) << 24,
                                    offset_in_frame: b.offset_in_frame,
                                    raw_len: b.raw_len,
                                };
                                bulk.sorter.push(row.to_record())?;
                            }
                        }
                        _ => {
                            self.redb_rows += rows;
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
                                        delta += 1;
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
                                            delta += 1;
                                        }
                                    }
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
        tx!(p, meta.insert("next_pack_no", next_pack))?;
        tx!(p, meta.insert("next_file_no", next_file))?;
        tx!(p, meta.insert("dead_rows", dead))?;
        tx!(p, meta.insert("delta_rows", delta))?;
        Ok(())
    }

    /// Drops a pack by number: its row and id, its frames in redb; its
    /// rows read as absent until the next merge leaves them out.
    fn drop_pack(&self, no: u32) -> Result<()> {
        let p = &self.index.path;
        let w = &self.w;
        let mut packs = tx!(p, w.open_table(PACKS))?;
        let Some(row) = tx!(p, packs.remove(no))? else { return Ok(()) };
        let (id, _, count, _) = row.value();
        drop(row);
        tx!(p, tx!(p, w.open_table(PACK_IDS))?.remove(id))?;
        tx!(p, tx!(p, w.open_table(FRAMES))?.retain_in(frame_key(no, 0)..=frame_key(no, u32::MAX), |_, _| false))?;
        tx!(p, tx!(p, w.open_table(DROPPED))?.insert(no, ()))?;
        let mut meta = tx!(p, w.open_table(META))?;
        let dead = meta_get(p, &meta, "dead_rows")? + u64::from(count);
        tx!(p, meta.insert("dead_rows", dead))?;
        // Blobs may have left the index: snapshots vouched for before this
        // are no longer (see `Index::whole`).
        let drops = meta_get(p, &meta, DROPS)? + 1;
        tx!(p, meta.insert(DROPS, drops))?;
        Ok(())
    }

    /// Known index files that are gone: packs no remaining file lists are
    /// dropped. Call after every addition of the same sync, so that a pack
    /// that a new file lists again keeps its rows.
    pub fn gone_files(&mut self, gone: &[Id]) -> Result<()> {
        let p = &self.index.path;
        for f in gone {
            let listed: Vec<u32> = {
                let mut files = tx!(p, self.w.open_table(INDEX_FILES))?;
                let Some(file_no) = tx!(p, files.remove(f.0))?.map(|v| v.value()) else { continue };
                let mut file_packs = tx!(p, self.w.open_table(FILE_PACKS))?;
                let range = u64::from(file_no) << 32..=(u64::from(file_no) << 32 | u64::from(u32::MAX));
                let listed = tx!(p, file_packs.range(range.clone()))?
                    .map(|r| r.map(|(k, _)| k.value() as u32))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| db_error(p, e.into()))?;
                tx!(p, file_packs.retain_in(range, |_, _| false))?;
                listed
            };
            for no in listed {
                let row = tx!(p, tx!(p, self.w.open_table(PACKS))?.get(no))?.map(|v| v.value());
                if let Some((id, len, count, listings)) = row {
                    if listings <= 1 {
                        self.drop_pack(no)?;
                    } else {
                        tx!(p, tx!(p, self.w.open_table(PACKS))?.insert(no, (id, len, count, listings - 1)))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Unlisted packs that are gone from the repository.
    pub fn gone_packs(&mut self, gone: &[Id]) -> Result<()> {
        let p = &self.index.path;
        for pack in gone {
            let no = tx!(p, tx!(p, self.w.open_table(PACK_IDS))?.get(pack.0))?.map(|v| v.value());
            if let Some(no) = no {
                self.drop_pack(no)?;
            }
        }
        Ok(())
    }

    /// Commits, writing a new sorted file first when this update read many
    /// rows, was asked to, or left a delta larger than both the sorted
    /// rows and a million, or dropped rows over a quarter of all.
    pub fn commit(mut self) -> Result<()> {
        let index = self.index;
        let p = &index.path;
        let (sorted, delta, dead) = {
            let meta = tx!(p, self.w.open_table(META))?;
            (meta_get(p, &meta, "sorted_rows")?, meta_get(p, &meta, "delta_rows")?, meta_get(p, &meta, "dead_rows")?)
        };
        let merge = self.merge
            || self.bulk.is_some()
            || (dead > 0 && dead * 4 > sorted + delta)
            || (delta > DELTA_MERGE_MIN && delta > sorted);
        let mut new_gen = None;
        if merge {
            match self.merge_into_sorted()? {
                MergeOutcome::Done(g) => new_gen = Some(g),
                MergeOutcome::Damaged(e) => {
                    drop(self.w);
                    index.clear()?;
                    index.emptied.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        index.wrote.store(true, Ordering::Relaxed);
        tx!(p, self.w.commit())?;
        fault::step("index db commit", &p.display());
        if let Some(g) = new_gen {
            index.remove_stale_files(g);
        }
        Ok(())
    }

    /// Writes a new sorted file of every live row (the old file's, redb's,
    /// and this update's sorted runs) and empties the delta.
    fn merge_into_sorted(&mut self) -> Result<MergeOutcome> {
        let index = self.index;
        let p = &index.path;
        let w = &self.w;
        let (old_gen, last_gen, delta_rows) = {
            let meta = tx!(p, w.open_table(META))?;
            (meta_get(p, &meta, "sorted_gen")?, meta_get(p, &meta, "last_gen")?, meta_get(p, &meta, "delta_rows")?)
        };
        let old = match old_gen {
            0 => None,
            g => match index.sorted_file(g) {
                // Read whole below, with its hashes checked before the new
                // file replaces it, so that damage is not carried over.
                Ok(s) => Some(s),
                Err(OpenError::Missing) => {
                    return Ok(MergeOutcome::Damaged(Error::index_db(p, "the sorted index file is missing")))
                }
                Err(OpenError::Damaged(e)) => return Ok(MergeOutcome::Damaged(e)),
            },
        };
        let new_gen = old_gen.max(last_gen) + 1;
        let live: Vec<(u32, [u8; 32], u64)> = {
            let packs = tx!(p, w.open_table(PACKS))?;
            let mut v = Vec::new();
            for item in tx!(p, packs.iter())? {
                let (k, val) = tx!(p, item)?;
                let (id, len, _, _) = val.value();
                v.push((k.value(), id, len));
            }
            v
        };
        let old_pos: HashMap<u32, usize> = match &old {
            Some(s) => (0..s.packs()).map(|i| (s.pack(i).pack_no, i)).collect(),
            None => HashMap::new(),
        };
        let mut bulk = self.bulk.take();
        let new_rows = bulk.as_ref().map_or(0, |b| b.sorter.pushed());
        let hint = old.as_ref().map_or(0, |s| s.rows()) + delta_rows + new_rows;
        let final_path = index.sorted_path(new_gen);
        let tmp = final_path.with_extension("tmp");
        let mut writer = index_sorted::Writer::create(&tmp, hint)?;
        let mut wide: HashSet<u32> = HashSet::new();
        // The bulk packs' frames, read back in pack order.
        let mut bulk_reader = match &mut bulk {
            Some(b) => {
                b.frames.flush().map_err(|e| Error::io(&b.frames_path, e))?;
                let f = File::open(&b.frames_path).map_err(|e| Error::io(&b.frames_path, e))?;
                Some((BufReader::with_capacity(1 << 20, f), b.frames_path.clone()))
            }
            None => None,
        };
        let mut bulk_packs = bulk.as_ref().map(|b| b.packs.clone()).unwrap_or_default().into_iter().peekable();
        let mut copy_bulk_frames = |writer: &mut index_sorted::Writer, n: u32, keep: bool| -> Result<()> {
            let Some((r, path)) = bulk_reader.as_mut() else { return Ok(()) };
            let mut b = [0u8; index_sorted::FRAME_LEN];
            for _ in 0..n {
                r.read_exact(&mut b).map_err(|e| Error::io(&*path, e))?;
                if keep {
                    writer.frame_bytes(&b)?;
                }
            }
            Ok(())
        };
        let mut old_frames = old.as_ref().map(|s| (s.frames_reader(), 0u64));
        {
            let frames_t = tx!(p, w.open_table(FRAMES))?;
            for (no, id, len) in &live {
                // Bulk packs dropped in this same update: skip their frames.
                while let Some(&(_, _, n)) = bulk_packs.peek().filter(|b| b.0 < *no) {
                    bulk_packs.next();
                    copy_bulk_frames(&mut writer, n, false)?;
                }
                if let (Some(&pos), Some(s), Some((reader, at))) = (old_pos.get(no), &old, old_frames.as_mut()) {
                    // Frames in file order: those of packs dropped since
                    // are read past (and hashed).
                    let frames = s.frames_of(pos);
                    let mut b = [0u8; index_sorted::FRAME_LEN];
                    while *at < frames.start {
                        reader.read(&mut b)?;
                        *at += 1;
                    }
                    writer.begin_pack(Id(*id), *no, s.pack(pos).frames_end)?;
                    while *at < frames.end {
                        reader.read(&mut b)?;
                        writer.frame_bytes(&b)?;
                        *at += 1;
                    }
                    continue;
                }
                if let Some((bno, end, n)) = bulk_packs.next_if(|b| b.0 == *no) {
                    writer.begin_pack(Id(*id), bno, end)?;
                    copy_bulk_frames(&mut writer, n, true)?;
                    continue;
                }
                let mut frames = Vec::new();
                for item in tx!(p, frames_t.range(frame_key(*no, 0)..=frame_key(*no, u32::MAX)))? {
                    let (_, v) = tx!(p, item)?;
                    frames.push(decode_frame(&v.value(), p)?);
                }
                match index_sorted::fits(*len, &frames) {
                    Some(end) => writer.pack(Id(*id), *no, end, &frames)?,
                    None => {
                        wide.insert(*no);
                    }
                }
            }
        }
        let old_rows = old.as_ref().map(|s| std::cell::RefCell::new(s.rows_reader()));
        {
            let blobs = tx!(p, w.open_table(BLOBS))?;
            let dups = tx!(p, w.open_table(DUPS))?;
            let mut sources: Vec<RowSource<'_>> = Vec::new();
            sources.push(Box::new(tx!(p, blobs.iter())?.map(|item| {
                let (k, v) = tx!(p, item)?;
                Ok((slot_row(k.value(), &v.value()), None))
            })));
            sources.push(Box::new(tx!(p, dups.iter())?.map(|item| {
                let (k, v) = tx!(p, item)?;
                Ok((slot_row(k.value().0, &v.value()), None))
            })));
            if let Some(r) = &old_rows {
                sources.push(Box::new(std::iter::from_fn(move || {
                    r.borrow_mut().next().map(|row| row.map(|row| (row, None)))
                })));
            }
            if let Some(b) = bulk.take() {
                let Bulk { sorter, dir, .. } = b;
                let merged: Merged<RECORD_LEN> = sorter.finish()?;
                // The run files live in `dir` until the merge is done.
                let dir = Arc::new(dir);
                sources.push(Box::new(merged.map(move |r| {
                    let _keep = &dir;
                    r.map(|rec| (Row::from_record(&rec), None))
                })));
            }
            let mut last: Option<([u8; 32], u32)> = None;
            for item in MergeRows::new(sources) {
                let (row, _) = item?;
                if last == Some((row.id, row.pack_no)) || writer.position(row.pack_no).is_none() {
                    continue;
                }
                last = Some((row.id, row.pack_no));
                writer.row(&row)?;
            }
        }
        if let (Some(s), Some((frames, _)), Some(rows)) = (&old, old_frames, old_rows) {
            let (r, pr) = rows.into_inner().finish()?;
            if let Err(e) = s.check_hashes(frames.finish()?, r, pr) {
                return Ok(MergeOutcome::Damaged(e));
            }
        }
        let rows = writer.finish()?;
        std::fs::rename(&tmp, &final_path).map_err(|e| Error::io(&final_path, e))?;
        // The delta now lives in the sorted file; only packs too wide for
        // it keep theirs in redb.
        let mut kept = 0u64;
        if wide.is_empty() {
            for t in ["blobs", "dups", "frames"] {
                let _ = w.delete_table(redb::TableDefinition::<[u8; 32], u8>::new(t));
            }
            tx!(p, w.open_table(BLOBS))?;
            tx!(p, w.open_table(DUPS))?;
            tx!(p, w.open_table(FRAMES))?;
        } else {
            let pack_of = |v: &[u8; SLOT_LEN]| u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
            let mut blobs = tx!(p, w.open_table(BLOBS))?;
            tx!(p, blobs.retain(|_, v| wide.contains(&pack_of(&v))))?;
            let mut dups = tx!(p, w.open_table(DUPS))?;
            tx!(p, dups.retain(|(_, no), _| wide.contains(&no)))?;
            tx!(p, tx!(p, w.open_table(FRAMES))?.retain(|k, _| wide.contains(&((k >> 32) as u32))))?;
            kept = tx!(p, blobs.len())? + tx!(p, dups.len())?;
        }
        let _ = w.delete_table(redb::TableDefinition::<[u8; 32], u8>::new("dropped"));
        tx!(p, w.open_table(DROPPED))?;
        let mut meta = tx!(p, w.open_table(META))?;
        tx!(p, meta.insert("sorted_gen", new_gen))?;
        tx!(p, meta.insert("last_gen", new_gen))?;
        tx!(p, meta.insert("sorted_rows", rows))?;
        tx!(p, meta.insert("delta_rows", kept))?;
        tx!(p, meta.insert("dead_rows", 0))?;
        Ok(MergeOutcome::Done(new_gen))
    }
}

/// A read snapshot of the index, cheap to query many times.
pub struct IndexReader {
    blobs: redb::ReadOnlyTable<[u8; 32], [u8; SLOT_LEN]>,
    frames: redb::ReadOnlyTable<u64, [u8; 17]>,
    packs: redb::ReadOnlyTable<u32, ([u8; 32], u64, u32, u32)>,
    dups: redb::ReadOnlyTable<([u8; 32], u32), [u8; SLOT_LEN]>,
    sorted: Option<Arc<SortedIndex>>,
    /// Packs of the sorted file dropped since it was written.
    dropped: HashSet<u32>,
    /// Whether redb holds rows at all (most lookups then skip it).
    delta: bool,
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

    fn lookup_delta(&self, id: &Id) -> Result<Option<BlobLocation>> {
        if !self.delta {
            return Ok(None);
        }
        let p = &self.path;
        let Some(v) = tx!(p, self.blobs.get(id.0))? else { return Ok(None) };
        let slot = Slot::decode(&v.value(), p)?;
        match self.live_pack(slot.pack_no)? {
            Some(pack) => Ok(Some(self.locate(pack, slot)?)),
            None => self.lookup_dups(id),
        }
    }

    /// The first row of `id` in the sorted file whose pack is live.
    fn sorted_row(&self, id: &Id) -> Result<Option<index_sorted::Found>> {
        let Some(s) = &self.sorted else { return Ok(None) };
        for f in s.find(&id.0)? {
            let pack_no = s.found_pack_no(&f)?;
            if self.dropped.is_empty() || !self.dropped.contains(&pack_no) {
                return Ok(Some(f));
            }
        }
        Ok(None)
    }

    pub fn lookup(&self, id: &Id) -> Result<Option<BlobLocation>> {
        if let Some(loc) = self.lookup_delta(id)? {
            return Ok(Some(loc));
        }
        let (Some(s), Some(f)) = (&self.sorted, self.sorted_row(id)?) else { return Ok(None) };
        let (pack, frame, offset_in_frame, raw_len, kind) = s.locate(&f)?;
        Ok(Some(BlobLocation { pack, frame, offset_in_frame, raw_len, kind }))
    }

    /// Whether the index holds `id`: only ever from a whole id compared
    /// (a row of the sorted file or the delta's key), since a backup does
    /// not store what this says is there.
    pub fn contains(&self, id: &Id) -> Result<bool> {
        Ok(self.sorted_row(id)?.is_some() || self.lookup_delta(id)?.is_some())
    }

    /// Whether the index may hold `id`: [`Self::contains`], except that
    /// the sorted file answers from its mapped keys alone (no row read, no
    /// system call) while none of its packs was dropped since it was
    /// written. A key is 32 bits of the id within a bucket picked by its
    /// first bits, so an absent id is taken for present about once in 2^32
    /// lookups per row of its bucket. Only for questions where that wrong
    /// "yes" costs no more than not asking (a backup's check that an
    /// unchanged file's chunks are still indexed), never for dedup.
    pub fn probably_contains(&self, id: &Id) -> Result<bool> {
        match &self.sorted {
            Some(s) if self.dropped.is_empty() => Ok(s.has_key(&id.0) || self.lookup_delta(id)?.is_some()),
            _ => self.contains(id),
        }
    }

    /// [`IndexReader::contains`] of many ids at once (the same answers, by
    /// the same whole-id rule): the sorted file's disk reads of the batch
    /// overlap ([`SortedIndex::find_batch`]) instead of waiting one after
    /// the other, which is what a present id costs once the rows outgrow
    /// the page cache.
    pub fn contains_batch(&self, ids: &[Id]) -> Result<Vec<bool>> {
        let mut out = vec![false; ids.len()];
        if let Some(s) = &self.sorted {
            for (i, f) in s.find_batch(ids)? {
                if !out[i] && (self.dropped.is_empty() || !self.dropped.contains(&s.found_pack_no(&f)?)) {
                    out[i] = true;
                }
            }
        }
        if self.delta {
            for (id, known) in ids.iter().zip(out.iter_mut()) {
                if !*known {
                    *known = self.lookup_delta(id)?.is_some();
                }
            }
        }
        Ok(out)
    }

    /// [`IndexReader::lookup`] of many ids at once (the same answers; the
    /// sorted file's row reads overlap as in [`Self::contains_batch`]).
    pub fn lookup_batch(&self, ids: &[Id]) -> Result<Vec<Option<BlobLocation>>> {
        let mut out = ids.iter().map(|id| self.lookup_delta(id)).collect::<Result<Vec<_>>>()?;
        let Some(s) = &self.sorted else { return Ok(out) };
        let rest: Vec<usize> = (0..ids.len()).filter(|&i| out[i].is_none()).collect();
        let rest_ids: Vec<Id> = rest.iter().map(|&i| ids[i]).collect();
        for (j, f) in s.find_batch(&rest_ids)? {
            let slot = &mut out[rest[j]];
            if slot.is_some() || (!self.dropped.is_empty() && self.dropped.contains(&s.found_pack_no(&f)?)) {
                continue;
            }
            let (pack, frame, offset_in_frame, raw_len, kind) = s.locate(&f)?;
            *slot = Some(BlobLocation { pack, frame, offset_in_frame, raw_len, kind });
        }
        Ok(out)
    }

    /// Rows of the sorted file read by lookups since it was opened (by any
    /// reader of this process): a lookup's cost beyond the mapped keys.
    pub fn sorted_row_reads(&self) -> u64 {
        self.sorted.as_ref().map_or(0, |s| s.row_reads())
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
            // 800 rows a commit: the rows stay in redb (BULK_ROWS).
            let packs: Vec<PackEntry> = (0..4).map(|j| pack(i * 4 + j, 200, 64)).collect();
            index.add_packs(&packs, Some(Id::hash(&i.to_le_bytes()))).unwrap();
        }
        let before = index.db_len().unwrap();
        assert!(index.compact_if_wasteful().unwrap(), "{before} bytes for 32k blobs");
        let after = index.db_len().unwrap();
        eprintln!("{before} -> {after} bytes, {} per blob", after / 32_000);
        assert!(after < before * 3 / 4, "{before} -> {after}");
        assert!(!index.compact_if_wasteful().unwrap(), "nothing left to give back");
        assert_eq!(index.blob_count().unwrap(), 32_000);
    }

    /// Commands that each add a little after a compaction: the first
    /// grows the file past its end (redb doubles its length, sparsely),
    /// which is no waste to compact. It compacted at the end of every such
    /// command before.
    #[test]
    fn small_writes_after_a_compaction_do_not_compact_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        {
            let mut index = Index::open(&path).unwrap();
            for i in 0..40u64 {
                let _held = index.reader().unwrap();
                let packs: Vec<PackEntry> = (0..4).map(|j| pack(i * 4 + j, 200, 64)).collect();
                index.add_packs(&packs, Some(Id::hash(&i.to_le_bytes()))).unwrap();
            }
            assert!(index.compact_if_wasteful().unwrap(), "the backup's garbage was not given back");
        }
        let mut compactions = 0;
        let mut grown = false;
        for i in 0..5u64 {
            let mut index = Index::open(&path).unwrap();
            let before = index.db_len().unwrap();
            {
                let _held = index.reader().unwrap();
                index.add_packs(&[pack(1000 + i, 20, 8)], Some(Id::hash(&(1000 + i).to_le_bytes()))).unwrap();
            }
            grown |= index.db_len().unwrap() > before + (256 << 10);
            compactions += usize::from(index.compact_if_wasteful().unwrap());
        }
        assert!(grown, "no command grew the file: the test does not test what it should");
        assert_eq!(compactions, 0, "small writes compacted");
        assert_eq!(Index::open(&path).unwrap().blob_count().unwrap(), 32_000 + 5 * 20);
    }

    #[test]
    fn a_handle_that_only_read_leaves_compaction_to_the_next_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        {
            // A backup that ended without compacting (killed, or older arc).
            let index = Index::open(&path).unwrap();
            for i in 0..40u64 {
                let _held = index.reader().unwrap();
                let packs: Vec<PackEntry> = (0..4).map(|j| pack(i * 4 + j, 200, 64)).collect();
                index.add_packs(&packs, Some(Id::hash(&i.to_le_bytes()))).unwrap();
            }
        }
        let before = std::fs::metadata(&path).unwrap().len();
        let mut index = Index::open(&path).unwrap();
        assert_eq!(index.blob_count().unwrap(), 32_000);
        assert!(!index.has_written());
        assert!(!index.compact_if_wasteful().unwrap(), "a reader compacted");
        assert_eq!(index.db_len().unwrap(), before);
        index.add_packs(&[pack(999, 10, 8)], Some(Id::hash(b"one more"))).unwrap();
        assert!(index.has_written());
        assert!(index.compact_if_wasteful().unwrap(), "{before} bytes for 32k blobs");
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
        // 20 dead rows of 40: that commit merged the rest into the sorted
        // file, the copies only.
        let sizes = index.sizes().unwrap();
        assert_eq!((sizes.sorted_rows, sizes.delta_rows), (20, 0), "{sizes:?}");
        assert_eq!(index.lookup(&id).unwrap().unwrap().pack, second.pack);
        assert_eq!(ids(&index).len(), 20);
        // An unlisted pack that is gone is dropped too.
        let loose = pack(9, 5, 5);
        index.add_packs(std::slice::from_ref(&loose), None).unwrap();
        assert!(index.lookup(&loose.trailer.blobs[0].id).unwrap().is_some());
        index.apply(&IndexUpdate { gone_packs: vec![loose.pack], ..Default::default() }).unwrap();
        assert!(index.lookup(&loose.trailer.blobs[0].id).unwrap().is_none());
    }

    /// Every blob of `packs` with each location it has, as the trailers say.
    fn expected(packs: &[&PackEntry]) -> HashMap<Id, Vec<BlobLocation>> {
        let mut out: HashMap<Id, Vec<BlobLocation>> = HashMap::new();
        for pe in packs {
            for b in &pe.trailer.blobs {
                out.entry(b.id).or_default().push(BlobLocation {
                    pack: pe.pack,
                    frame: pe.trailer.frames[b.frame as usize],
                    offset_in_frame: b.offset_in_frame,
                    raw_len: b.raw_len,
                    kind: b.kind,
                });
            }
        }
        out
    }

    fn all(index: &Index) -> Vec<(Id, BlobLocation)> {
        let mut out = Vec::new();
        index
            .for_each_blob(|id, loc| {
                out.push((id, loc));
                Ok(())
            })
            .unwrap();
        out
    }

    /// Lookups, `contains` and the iteration agree with the trailers.
    fn agrees(index: &Index, want: &HashMap<Id, Vec<BlobLocation>>) {
        let r = index.reader().unwrap();
        for (id, locs) in want {
            let got = r.lookup(id).unwrap().unwrap_or_else(|| panic!("{} missing", id.short()));
            assert!(locs.contains(&got), "{}: {got:?} not in {locs:?}", id.short());
            assert!(r.contains(id).unwrap());
        }
        for i in 0..200u64 {
            let absent = Id::hash(&i.to_le_bytes());
            assert!(!r.contains(&absent).unwrap() && r.lookup(&absent).unwrap().is_none());
        }
        let listed = all(index);
        assert_eq!(listed.len(), want.len());
        assert!(listed.windows(2).all(|w| w[0].0 < w[1].0), "in id order, once each");
        assert!(listed.iter().all(|(id, loc)| want[id].contains(loc)));
    }

    /// Packs of 1,000 files' worth of blobs: some blobs stored twice (two
    /// backups at once), one pack over 4 GiB (kept in redb).
    fn packs_for_fill() -> Vec<PackEntry> {
        let mut packs: Vec<PackEntry> =
            (0..30).map(|i| pack(100 + i, 97 + i as usize * 13, 1 + i as usize % 5)).collect();
        let copies: Vec<Id> = packs[3].trailer.blobs.iter().take(40).map(|b| b.id).collect();
        for (b, id) in packs[20].trailer.blobs.iter_mut().zip(copies) {
            b.id = id;
        }
        packs[20].trailer.blobs.sort_by_key(|b| (b.frame, b.offset_in_frame));
        packs[7].pack_len = 5 << 30;
        packs
    }

    #[test]
    fn a_fill_from_scratch_equals_an_incremental_fill_and_agrees_with_the_index_files() {
        let dir = tempfile::tempdir().unwrap();
        let packs = packs_for_fill();
        let files: Vec<(Id, &[PackEntry])> =
            packs.chunks(4).enumerate().map(|(i, c)| (Id::hash(&[i as u8]), c)).collect();
        let want = expected(&packs.iter().collect::<Vec<_>>());
        // From scratch: one update, far over BULK_ROWS, through sorted runs.
        let scratch = Index::open(&dir.path().join("scratch.redb")).unwrap();
        scratch
            .apply(&IndexUpdate { add: files.iter().map(|(f, p)| (Some(*f), *p)).collect(), ..Default::default() })
            .unwrap();
        let s = scratch.sizes().unwrap();
        assert!(s.sorted_rows > 0 && s.sorted_bytes > 0, "{s:?}");
        assert_eq!(s.delta_rows, packs[7].trailer.blobs.len() as u64, "the wide pack stays in redb");
        agrees(&scratch, &want);
        // Incrementally: one file at a time, as backups record them, with
        // a command's end (settle) now and then.
        let inc = Index::open(&dir.path().join("inc.redb")).unwrap();
        for (i, (f, p)) in files.iter().enumerate() {
            inc.add_packs(p, Some(*f)).unwrap();
            if i % 3 == 1 {
                inc.settle().unwrap();
            }
        }
        agrees(&inc, &want);
        assert_eq!(all(&inc), all(&scratch), "the same blobs at the same places");
        inc.settle().unwrap();
        assert_eq!(all(&inc), all(&scratch));
        // Reopened, the sorted file is read again as it was.
        drop(inc);
        let inc = Index::open(&dir.path().join("inc.redb")).unwrap();
        assert_eq!(all(&inc), all(&scratch));
        assert_eq!(inc.index_files().unwrap().len(), files.len());
    }

    #[test]
    fn another_hosts_prune_updates_a_sorted_cache_incrementally() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let packs: Vec<PackEntry> = (0..12).map(|i| pack(500 + i, 200, 3)).collect();
        let (f1, f2) = (Id::hash(b"f1"), Id::hash(b"f2"));
        index
            .apply(&IndexUpdate { add: vec![(Some(f1), &packs[..6]), (Some(f2), &packs[6..])], ..Default::default() })
            .unwrap();
        let before = index.sizes().unwrap();
        assert_eq!(before.sorted_rows, 2400);
        // The prune: packs 0 and 6 go; one file lists the others and
        // supersedes f1 and f2.
        let kept: Vec<PackEntry> =
            packs.iter().enumerate().filter(|(i, _)| i % 6 != 0).map(|(_, p)| p.clone()).collect();
        let c = Id::hash(b"compacted");
        index
            .apply(&IndexUpdate { add: vec![(Some(c), &kept)], gone_files: vec![f1, f2], gone_packs: vec![] })
            .unwrap();
        let after = index.sizes().unwrap();
        assert_eq!(after.sorted_bytes, before.sorted_bytes, "no rewrite for a sixth of dead rows: {after:?}");
        assert_eq!(index.index_files().unwrap(), HashSet::from([c]));
        agrees(&index, &expected(&kept.iter().collect::<Vec<_>>()));
        // The next merge leaves the dead rows out.
        index
            .begin()
            .map(|mut u| {
                u.merge = true;
                u.commit()
            })
            .unwrap()
            .unwrap();
        assert_eq!(index.sizes().unwrap().sorted_rows, 2000);
        agrees(&index, &expected(&kept.iter().collect::<Vec<_>>()));
        assert_eq!(index.packs().unwrap().len(), 10);
    }

    #[test]
    fn contains_answers_present_only_from_a_whole_id_and_absent_ids_read_no_row() {
        // 40,960 rows in the sorted file: 8 fan-out bits, so the bucket
        // implies id byte 0 and the mapped key is id bytes 1..5.
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let packs: Vec<PackEntry> = (0..40).map(|i| pack(7000 + i, 1024, 64)).collect();
        index.add_packs(&packs, Some(Id::hash(b"f"))).unwrap();
        let sizes = index.sizes().unwrap();
        assert_eq!((sizes.sorted_rows, sizes.delta_rows), (40 * 1024, 0), "all in the sorted file");
        let r = index.reader().unwrap();
        let ids: Vec<Id> = packs.iter().flat_map(|p| p.trailer.blobs.iter().map(|b| b.id)).collect();
        let reads = |f: &dyn Fn()| {
            let before = r.sorted_row_reads();
            f();
            r.sorted_row_reads() - before
        };
        // A present id: one row read, its whole id compared.
        let n = reads(&|| assert!(ids.iter().all(|id| r.contains(id).unwrap())));
        assert_eq!(n, ids.len() as u64);
        let loc = r.lookup(&ids[5000]).unwrap().unwrap();
        assert_eq!(loc.pack, packs[5000 / 1024].pack);
        // Absent ids that a key of id bytes 0..4 (sorted file version 1)
        // would have matched: answered from the mapped keys alone.
        let near: Vec<Id> = ids.iter().take(2000).map(|id| Id(flip(id.0, 4))).collect();
        assert_eq!(reads(&|| assert!(near.iter().all(|id| !r.contains(id).unwrap()))), 0);
        // Absent ids sharing bucket and key with a present id (they differ
        // in the last byte): absent, after reading that row.
        let twins: Vec<Id> = ids.iter().take(2000).map(|id| Id(flip(id.0, 31))).collect();
        let n = reads(&|| assert!(twins.iter().all(|id| !r.contains(id).unwrap() && r.lookup(id).unwrap().is_none())));
        assert_eq!(n, 2 * twins.len() as u64);
    }

    #[test]
    fn batched_lookups_answer_as_single_ones_and_read_each_row_once() {
        // 40,960 rows in the sorted file (two index files), then a pack
        // that stays in the delta, then the first pack dropped (another
        // host's compaction that keeps the other 19 of f1's packs).
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let packs: Vec<PackEntry> = (0..40).map(|i| pack(9000 + i, 1024, 64)).collect();
        let (f1, f2) = (Id::hash(b"f1"), Id::hash(b"f2"));
        index
            .apply(&IndexUpdate { add: vec![(Some(f1), &packs[..20]), (Some(f2), &packs[20..])], ..Default::default() })
            .unwrap();
        let recent = pack(9100, 300, 8);
        index.add_packs(std::slice::from_ref(&recent), Some(Id::hash(b"f3"))).unwrap();
        let kept = Id::hash(b"kept");
        index
            .apply(&IndexUpdate { add: vec![(Some(kept), &packs[1..20])], gone_files: vec![f1], gone_packs: vec![] })
            .unwrap();
        let sizes = index.sizes().unwrap();
        assert_eq!((sizes.sorted_rows, sizes.delta_rows), (40 * 1024, 300), "{sizes:?}");
        let r = index.reader().unwrap();
        let blobs = |p: &PackEntry| p.trailer.blobs.iter().map(|b| b.id).collect::<Vec<_>>();
        // Present in the sorted file, dropped with pack 0, in the delta,
        // absent, absent with a present id's key, and repeats: more ids
        // than one internal batch.
        let mut ids: Vec<Id> = packs[1..4].iter().flat_map(blobs).collect();
        ids.extend(blobs(&packs[0]).into_iter().take(100));
        ids.extend(blobs(&recent));
        ids.extend((0..500u64).map(|i| Id::hash(&i.to_le_bytes())));
        let twins: Vec<Id> = blobs(&packs[5]).iter().take(200).map(|id| Id(flip(id.0, 31))).collect();
        ids.extend(&twins);
        let repeats: Vec<Id> = ids.iter().step_by(7).copied().collect();
        ids.extend(repeats);
        assert!(ids.len() > 2 * index_sorted::BATCH_MAX, "{}", ids.len());
        let one_by_one: Vec<bool> = ids.iter().map(|id| r.contains(id).unwrap()).collect();
        let before = r.sorted_row_reads();
        let batched = r.contains_batch(&ids).unwrap();
        let reads = r.sorted_row_reads() - before;
        assert_eq!(batched, one_by_one);
        assert_eq!(batched.iter().filter(|&&p| p).count(), {
            let present: HashSet<Id> = packs[1..4].iter().flat_map(blobs).chain(blobs(&recent)).collect();
            ids.iter().filter(|id| present.contains(id)).count()
        });
        // Rows read: each distinct id whose key matches, at most once per
        // internal batch it appears in (a repeat in a later batch reads again).
        let distinct: HashSet<Id> = ids.iter().copied().collect();
        let keyed = 3 * 1024 + 100 + 200;
        assert!(reads >= keyed as u64 && reads < ids.len() as u64, "{reads} rows read for {} ids", distinct.len());
        let located: Vec<Option<BlobLocation>> = ids.iter().map(|id| r.lookup(id).unwrap()).collect();
        assert_eq!(r.lookup_batch(&ids).unwrap(), located);
        // Small batches and the empty one answer alike.
        for n in [0, 1, 2, 63] {
            assert_eq!(r.contains_batch(&ids[..n]).unwrap(), one_by_one[..n]);
        }
        // A cache with no sorted file: the delta alone.
        let small = Index::open(&dir.path().join("small.redb")).unwrap();
        small.add_packs(std::slice::from_ref(&recent), None).unwrap();
        let sr = small.reader().unwrap();
        let mixed: Vec<Id> = blobs(&recent).into_iter().chain(twins.iter().copied()).collect();
        let want: Vec<bool> = (0..mixed.len()).map(|i| i < 300).collect();
        assert_eq!(sr.contains_batch(&mixed).unwrap(), want);
    }

    fn flip(mut id: [u8; 32], at: usize) -> [u8; 32] {
        id[at] ^= 0x5a;
        id
    }

    #[test]
    fn a_cache_of_another_version_or_damaged_is_rebuilt_never_misread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let packs: Vec<PackEntry> = (0..8).map(|i| pack(900 + i, 300, 2)).collect();
        let fill = |index: &Index| index.add_packs(&packs, Some(Id::hash(b"f"))).unwrap();
        let sorted_file = || {
            let mut v: Vec<PathBuf> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "rows"))
                .collect();
            assert_eq!(v.len(), 1, "{v:?}");
            v.pop().unwrap()
        };
        {
            let index = Index::open(&path).unwrap();
            fill(&index);
            assert_eq!(index.sizes().unwrap().sorted_rows, 2400);
        }
        // The pack table damaged: refused at open, the cache emptied.
        let f = sorted_file();
        let mut bytes = std::fs::read(&f).unwrap();
        let n = bytes.len();
        bytes[n - 40] ^= 0x10;
        std::fs::write(&f, &bytes).unwrap();
        let index = Index::open(&path).unwrap();
        assert!(index.index_files().unwrap().is_empty(), "emptied, to be refilled");
        assert!(index.lookup(&packs[0].trailer.blobs[0].id).unwrap().is_none());
        fill(&index);
        agrees(&index, &expected(&packs.iter().collect::<Vec<_>>()));
        drop(index);
        // Rows damaged: a merge checks the whole file, empties the cache and
        // says so.
        let f = sorted_file();
        let mut bytes = std::fs::read(&f).unwrap();
        bytes[200] ^= 0x01;
        std::fs::write(&f, &bytes).unwrap();
        let index = Index::open(&path).unwrap();
        assert!(index
            .begin()
            .map(|mut u| {
                u.merge = true;
                u.commit()
            })
            .unwrap()
            .is_err());
        assert!(index.take_emptied());
        assert!(index.index_files().unwrap().is_empty());
        fill(&index);
        drop(index);
        // Another version of the sorted file, or of the database.
        let f = sorted_file();
        let mut bytes = std::fs::read(&f).unwrap();
        bytes[7] += 1;
        std::fs::write(&f, &bytes).unwrap();
        assert!(Index::open(&path).unwrap().index_files().unwrap().is_empty());
        {
            let index = Index::open(&path).unwrap();
            fill(&index);
            let w = index.db.begin_write().unwrap();
            w.open_table(META).unwrap().insert("schema_version", 2).unwrap();
            w.commit().unwrap();
        }
        assert!(Index::open(&path).unwrap().index_files().unwrap().is_empty());
        // A sorted file that vanished (deleted by hand): emptied too.
        {
            let index = Index::open(&path).unwrap();
            fill(&index);
        }
        std::fs::remove_file(sorted_file()).unwrap();
        assert!(Index::open(&path).unwrap().index_files().unwrap().is_empty());
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
