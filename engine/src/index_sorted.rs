//! The sorted part of the local index cache: one immutable file holding
//! every blob row in id order, with the packs and frames the rows point
//! into, written in one sequential pass and searched in place with
//! positioned reads. `crate::index` owns when it is built (merging the previous
//! file, the recent rows kept in redb and new index files' rows from
//! sorted runs) and which of its packs are still live.
//!
//! Why a file of our own beside redb: a B-tree filled by random inserts
//! keeps its leaves about two thirds full and its frames in a table of
//! their own (73-87 bytes a blob measured, issue 11's target is 60), and
//! filling it one insert at a time took minutes per million rows. A sorted
//! array needs no slack, is written at disk speed, and a lookup reads a
//! fan-out entry (in memory), one bucket of about 128 4-byte keys (the
//! keys are small enough to stay in the page cache at 100M rows) and,
//! only when a key matches, one row.
//!
//! A bucket's rows share the top `bits` bits of their ids, so the id's
//! whole bytes among them (`skip` = bits / 8 bytes) are stored by neither
//! the key nor the row, and the key is the 4 id bytes after them: at 100M
//! rows (19 bits) it tells ids apart by 29 bits beyond the bucket, so an
//! absent id reads a row about once in 3 million lookups (a key of id
//! bytes 0..4 told them apart by 13: once in 43). A present id always
//! costs its row: only the whole id may answer "present" (a backup skips
//! storing what the index says is there), and the whole ids of 100M rows
//! cannot be held in 1 GiB (`format-spec/v2/trees-index.md` 2.4).
//! [`SortedIndex::find_batch`] answers many ids with the same reads, their
//! waits on the disk overlapping (a backup asks a window of chunks at a
//! time).
//!
//! Layout (a cache, not a repository format: `format-spec/v2/trees-index.md`
//! 2.4 describes it; another version is discarded and rebuilt). All
//! integers little-endian:
//!
//! | section | size | content |
//! |---|---|---|
//! | header | 160 | magic `ARCIDXS`, version, fan-out bits, counts, section offsets, hashes |
//! | frames | 9 x F | offset u32, raw_len u32, codec u8; stored_len is the next frame's offset (or the pack's `frames_end`) minus this one's |
//! | rows | (44 - skip) x N | id bytes skip+4..32, pack (position in the packs section) u32, frame u24 + kind u8, offset_in_frame u32, raw_len u32 |
//! | keys | 4 x N | id bytes skip..skip+4 as a big-endian number |
//! | packs | 48 x P | pack id, pack number (the redb cache's), frames_end u32, first frame u64 |
//! | fanout | 4 x (2^bits + 1) | first row of each bucket of the top `bits` bits of the id; the last entry is N |
//!
//! Rows are strictly increasing by (id, pack number): the copies of a blob
//! are adjacent. A damaged file must never give a wrong answer silently:
//! the header, packs and fan-out are hashed and checked at every open (a
//! few MB at 100M rows); frames, rows and keys are hashed and checked
//! whenever the file is read whole (a merge); every location a lookup
//! returns is checked against its pack's frames, and every blob read
//! through one is verified against its id. A pack whose frames do not fit
//! these fields (over 4 GiB, frames that do not tile) is not put here; it
//! stays in redb.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::format::pack::{BlobKind, FrameCodec, FrameRecord};
use crate::id::Id;
use crate::sorted_runs::{key_u32, u32_at};

const MAGIC: &[u8; 7] = b"ARCIDXS";
/// Bumped when the layout changes; a file of another version is rebuilt.
/// 2: keys after the id bytes the bucket implies, rows without those.
pub const VERSION: u8 = 2;
const HEADER_LEN: usize = 160;
pub const FRAME_LEN: usize = 9;
/// The location part of a row: pack position, frame word, offset, length.
const LOC_LEN: usize = 16;
/// A row's length when no id byte is implied by the bucket.
const MAX_ROW_LEN: usize = 28 + LOC_LEN;
const PACK_LEN: usize = 48;
/// Bytes of the header covered by the meta hash (everything before it).
const HASHED_HEADER: usize = 120;
/// Rows per fan-out bucket aimed at: a lookup scans about this many
/// 4-byte keys.
const ROWS_PER_BUCKET: u64 = 128;
const MAX_BITS: u32 = 24;
/// Ids a batched lookup ([`SortedIndex::find_batch`]) hints and reads
/// together: enough to keep a disk's queue full, few enough that the
/// pages it hints (at most about 2 per id) are still cached when read
/// inside a small memory limit.
pub const BATCH_MAX: usize = 1024;
/// Once batched lookups have hinted more than 1/KEYS_READ_AFTER of the
/// key pages one by one, the whole keys section is hinted at once.
const KEYS_READ_AFTER: u64 = 64;
/// The page size the hints round to (the kernel rounds them anyway).
const PAGE: usize = 4096;

/// A blob row as merged: the pack by its cache-wide number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    pub id: [u8; 32],
    pub pack_no: u32,
    /// frame number (24 bits) | kind << 24.
    pub frame_word: u32,
    pub offset_in_frame: u32,
    pub raw_len: u32,
}

/// Bytes of a row as a sort record: ordered by (id, pack number).
pub const RECORD_LEN: usize = 48;

impl Row {
    pub fn frame_no(&self) -> u32 {
        self.frame_word & 0x00ff_ffff
    }

    pub fn kind(&self) -> Option<BlobKind> {
        BlobKind::from_u8((self.frame_word >> 24) as u8)
    }

    pub fn to_record(&self) -> [u8; RECORD_LEN] {
        let mut r = [0u8; RECORD_LEN];
        r[..32].copy_from_slice(&self.id);
        r[32..36].copy_from_slice(&key_u32(self.pack_no));
        r[36..40].copy_from_slice(&self.frame_word.to_le_bytes());
        r[40..44].copy_from_slice(&self.offset_in_frame.to_le_bytes());
        r[44..48].copy_from_slice(&self.raw_len.to_le_bytes());
        r
    }

    pub fn from_record(r: &[u8; RECORD_LEN]) -> Row {
        let mut id = [0u8; 32];
        id.copy_from_slice(&r[..32]);
        Row { id, pack_no: u32_at(r, 32), frame_word: le32(r, 36), offset_in_frame: le32(r, 40), raw_len: le32(r, 44) }
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// The fan-out bits for about `rows` rows.
fn bits_for(rows: u64) -> u32 {
    let buckets = (rows / ROWS_PER_BUCKET).max(1);
    (63 - buckets.leading_zeros()).min(MAX_BITS)
}

/// The bucket of an id: its top `bits` bits.
fn bucket(id: &[u8; 32], bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        (u32_at(id, 0) >> (32 - bits)) as usize
    }
}

/// Leading id bytes every row of a bucket shares (whole bytes of its top
/// `bits` bits): stored by neither the key nor the row.
fn skip_for(bits: u32) -> usize {
    (bits / 8) as usize
}

/// Bytes of a row: the id after its key, then the location.
fn row_len(skip: usize) -> usize {
    MAX_ROW_LEN - skip
}

/// The key of an id: the 4 bytes after the skipped ones.
fn key_of(id: &[u8; 32], skip: usize) -> u32 {
    u32_at(id, skip)
}

/// A pack as the file lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortedPack {
    pub id: Id,
    pub pack_no: u32,
    pub frames_end: u32,
    pub first_frame: u64,
}

/// Whether a pack's frames fit the file's fields: offsets and lengths in
/// u32, frames tiling the pack from its first frame on. Returns the end of
/// its frames.
pub fn fits(pack_len: u64, frames: &[FrameRecord]) -> Option<u32> {
    if pack_len > u64::from(u32::MAX) {
        return None;
    }
    let mut end = frames.first().map(|f| f.offset)?;
    for f in frames {
        if f.offset != end {
            return None;
        }
        end = f.offset.checked_add(u64::from(f.stored_len))?;
    }
    u32::try_from(end).ok()
}

/// A frame as the file stores it (of a pack [`fits`] accepted).
pub fn encode_frame(f: &FrameRecord) -> [u8; FRAME_LEN] {
    let mut b = [0u8; FRAME_LEN];
    b[..4].copy_from_slice(&(f.offset as u32).to_le_bytes());
    b[4..8].copy_from_slice(&f.raw_len.to_le_bytes());
    b[8] = f.codec as u8;
    b
}

/// Writes a new sorted file: packs with their frames first (by increasing
/// pack number), then rows in order.
pub struct Writer {
    path: PathBuf,
    file: BufWriter<File>,
    prefix_path: PathBuf,
    prefixes: BufWriter<File>,
    bits: u32,
    skip: usize,
    counts: Vec<u32>,
    packs: Vec<SortedPack>,
    frames: u64,
    rows: u64,
    last: Option<([u8; 32], u32)>,
    frames_hash: blake3::Hasher,
    rows_hash: blake3::Hasher,
    prefixes_hash: blake3::Hasher,
    pack_open: Option<(u32, u64)>,
}

impl Writer {
    /// A writer of the file at `path` (created, or truncated) for at most
    /// about `rows_hint` rows (sizes the fan-out).
    pub fn create(path: &Path, rows_hint: u64) -> Result<Writer> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let prefix_path = path.with_extension("prefixes.tmp");
        let prefixes = File::create(&prefix_path).map_err(|e| Error::io(&prefix_path, e))?;
        let bits = bits_for(rows_hint);
        let mut w = Writer {
            path: path.to_path_buf(),
            file: BufWriter::with_capacity(1 << 20, file),
            prefix_path,
            prefixes: BufWriter::with_capacity(1 << 20, prefixes),
            bits,
            skip: skip_for(bits),
            counts: vec![0; 1 << bits],
            packs: Vec::new(),
            frames: 0,
            rows: 0,
            last: None,
            frames_hash: blake3::Hasher::new(),
            rows_hash: blake3::Hasher::new(),
            prefixes_hash: blake3::Hasher::new(),
            pack_open: None,
        };
        w.write(&[0u8; HEADER_LEN])?;
        Ok(w)
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.file.write_all(b).map_err(|e| Error::io(&self.path, e))
    }

    /// Adds a pack and its frames (which [`fits`] accepted), numbers
    /// increasing.
    pub fn pack(&mut self, id: Id, pack_no: u32, frames_end: u32, frames: &[FrameRecord]) -> Result<()> {
        if self.packs.last().is_some_and(|p| p.pack_no >= pack_no) {
            return Err(Error::index_db(&self.path, "packs out of order while writing the sorted index"));
        }
        self.packs.push(SortedPack { id, pack_no, frames_end, first_frame: self.frames });
        for f in frames {
            let b = encode_frame(f);
            self.frames_hash.update(&b);
            self.write(&b)?;
        }
        self.frames += frames.len() as u64;
        Ok(())
    }

    /// Adds a pack whose frames follow one by one through [`Writer::frame_bytes`].
    pub fn begin_pack(&mut self, id: Id, pack_no: u32, frames_end: u32) -> Result<()> {
        self.pack(id, pack_no, frames_end, &[])?;
        self.pack_open = Some((pack_no, self.frames));
        Ok(())
    }

    /// A frame of the pack begun last, as its 9 stored bytes.
    pub fn frame_bytes(&mut self, b: &[u8; FRAME_LEN]) -> Result<()> {
        self.frames_hash.update(b);
        self.frames += 1;
        self.write(b)
    }

    /// The position of pack `pack_no` in the file, if it is there.
    pub fn position(&self, pack_no: u32) -> Option<u32> {
        self.packs.binary_search_by_key(&pack_no, |p| p.pack_no).ok().map(|i| i as u32)
    }

    /// Adds a row of a pack already added; rows strictly increasing by
    /// (id, pack number).
    pub fn row(&mut self, row: &Row) -> Result<()> {
        let key = (row.id, row.pack_no);
        if self.last.is_some_and(|l| l >= key) {
            return Err(Error::index_db(&self.path, "rows out of order while writing the sorted index"));
        }
        self.last = Some(key);
        let pos =
            self.position(row.pack_no).ok_or_else(|| Error::index_db(&self.path, "a row of a pack not written"))?;
        if self.rows >= u64::from(u32::MAX) {
            return Err(Error::index_db(&self.path, "more than 2^32 blob rows"));
        }
        let mut b = [0u8; MAX_ROW_LEN];
        let tail = 28 - self.skip;
        b[..tail].copy_from_slice(&row.id[self.skip + 4..]);
        b[tail..tail + 4].copy_from_slice(&pos.to_le_bytes());
        b[tail + 4..tail + 8].copy_from_slice(&row.frame_word.to_le_bytes());
        b[tail + 8..tail + 12].copy_from_slice(&row.offset_in_frame.to_le_bytes());
        b[tail + 12..tail + 16].copy_from_slice(&row.raw_len.to_le_bytes());
        let b = &b[..row_len(self.skip)];
        self.rows_hash.update(b);
        self.write(b)?;
        let k = key_of(&row.id, self.skip).to_le_bytes();
        self.prefixes_hash.update(&k);
        self.prefixes.write_all(&k).map_err(|e| Error::io(&self.prefix_path, e))?;
        self.counts[bucket(&row.id, self.bits)] += 1;
        self.rows += 1;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends the keys, packs and fan-out, writes the header, and makes
    /// the file durable. Returns the number of rows.
    pub fn finish(mut self) -> Result<u64> {
        let frames_off = HEADER_LEN as u64;
        let rows_off = frames_off + self.frames * FRAME_LEN as u64;
        let prefixes_off = rows_off + self.rows * row_len(self.skip) as u64;
        let packs_off = prefixes_off + self.rows * 4;
        // The keys, from their side file.
        self.prefixes.flush().map_err(|e| Error::io(&self.prefix_path, e))?;
        let mut side = File::open(&self.prefix_path).map_err(|e| Error::io(&self.prefix_path, e))?;
        std::io::copy(&mut side, &mut self.file).map_err(|e| Error::io(&self.path, e))?;
        drop(side);
        let _ = std::fs::remove_file(&self.prefix_path);
        let mut meta = blake3::Hasher::new();
        let mut tail = Vec::with_capacity(self.packs.len() * PACK_LEN + (self.counts.len() + 1) * 4);
        for p in &self.packs {
            tail.extend_from_slice(&p.id.0);
            tail.extend_from_slice(&p.pack_no.to_le_bytes());
            tail.extend_from_slice(&p.frames_end.to_le_bytes());
            tail.extend_from_slice(&p.first_frame.to_le_bytes());
        }
        let fanout_off = packs_off + tail.len() as u64;
        let mut first = 0u32;
        for c in &self.counts {
            tail.extend_from_slice(&first.to_le_bytes());
            first += c;
        }
        tail.extend_from_slice(&first.to_le_bytes());
        let end = packs_off + tail.len() as u64;
        let mut h = [0u8; HEADER_LEN];
        h[..7].copy_from_slice(MAGIC);
        h[7] = VERSION;
        h[8..12].copy_from_slice(&self.bits.to_le_bytes());
        for (i, v) in [self.packs.len() as u64, self.frames, self.rows, frames_off, rows_off, prefixes_off, packs_off]
            .into_iter()
            .chain([fanout_off, end])
            .enumerate()
        {
            h[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        let mut bulk = blake3::Hasher::new();
        bulk.update(self.frames_hash.finalize().as_bytes());
        bulk.update(self.rows_hash.finalize().as_bytes());
        bulk.update(self.prefixes_hash.finalize().as_bytes());
        h[88..120].copy_from_slice(bulk.finalize().as_bytes());
        meta.update(&h[..HASHED_HEADER]);
        meta.update(&tail);
        h[HASHED_HEADER..HASHED_HEADER + 32].copy_from_slice(meta.finalize().as_bytes());
        self.write(&tail)?;
        let path = self.path.clone();
        self.file.flush().map_err(|e| Error::io(&path, e))?;
        let file = self.file.get_mut();
        file.seek(SeekFrom::Start(0)).map_err(|e| Error::io(&path, e))?;
        file.write_all(&h).map_err(|e| Error::io(&path, e))?;
        file.sync_all().map_err(|e| Error::io(&path, e))?;
        Ok(self.rows)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.prefix_path);
    }
}

/// One section of the file read front to back with plain reads, hashing
/// what it reads: a merge reads the whole file, and pages of the map it
/// touched would count in the process's resident memory (at 100M rows,
/// gigabytes of a `check` or `prune` that otherwise stays under 1 GiB).
pub struct SectionReader<'a> {
    file: &'a File,
    path: &'a Path,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    at: usize,
    hash: blake3::Hasher,
}

impl SectionReader<'_> {
    fn fill(&mut self) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let n = (self.end - self.pos).min(1 << 20) as usize;
        self.buf.resize(n, 0);
        self.file.read_exact_at(&mut self.buf, self.pos).map_err(|e| Error::io(self.path, e))?;
        self.hash.update(&self.buf);
        self.pos += n as u64;
        self.at = 0;
        Ok(())
    }

    /// The next `out.len()` bytes of the section.
    pub fn read(&mut self, out: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < out.len() {
            if self.at == self.buf.len() {
                if self.pos == self.end {
                    return Err(Error::index_db(self.path, "sorted index: read past a section"));
                }
                self.fill()?;
            }
            let n = (out.len() - done).min(self.buf.len() - self.at);
            out[done..done + n].copy_from_slice(&self.buf[self.at..self.at + n]);
            self.at += n;
            done += n;
        }
        Ok(())
    }

    /// Reads the rest of the section; its hash.
    pub fn finish(mut self) -> Result<[u8; 32]> {
        while self.pos < self.end {
            self.fill()?;
        }
        Ok(*self.hash.finalize().as_bytes())
    }
}

/// The rows of a sorted file in order, read with plain reads.
pub struct RowsReader<'a> {
    index: &'a SortedIndex,
    rows: SectionReader<'a>,
    prefixes: SectionReader<'a>,
    /// The next row's position and bucket (its id's skipped bytes).
    at: usize,
    bucket: usize,
}

impl RowsReader<'_> {
    /// Reads the rest; the hashes of the rows and keys sections.
    pub fn finish(self) -> Result<([u8; 32], [u8; 32])> {
        Ok((self.rows.finish()?, self.prefixes.finish()?))
    }

    fn next_row(&mut self) -> Result<Row> {
        let s = self.index;
        let mut b = [0u8; MAX_ROW_LEN];
        self.rows.read(&mut b[..s.row_len])?;
        let mut k = [0u8; 4];
        self.prefixes.read(&mut k)?;
        // The fan-out was checked at open to be non-decreasing up to the
        // row count: this stops at a bucket holding row `at`.
        while s.fanout(self.bucket + 1) <= self.at {
            self.bucket += 1;
        }
        self.at += 1;
        s.row_from(&b, u32::from_le_bytes(k), self.bucket)
    }
}

impl Iterator for RowsReader<'_> {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Result<Row>> {
        if self.at as u64 >= self.index.rows {
            return None;
        }
        Some(self.next_row())
    }
}

/// An open sorted file. Its packs and fan-out are held in memory (48
/// bytes a pack, 4 a bucket: about 12 MB at 100M rows); the keys are
/// mapped (4 bytes a row), so that a lookup of an absent id, most of a
/// backup's, makes no system call; rows and frames are read with `pread`
/// where a lookup needs them. Not the whole file mapped: the pages a map
/// touches count as the process's resident memory (the kernel maps cached
/// neighbours of each faulting page too: 80 MiB in a 1.5M-chunk `check`),
/// and its size counts against a `ulimit -v`, at 100M rows 5.5 GB where
/// the keys are 400 MB.
pub struct SortedIndex {
    /// Sections read whole, front to back (merges, `verify`).
    file: File,
    /// The same file opened again for lookups' single rows and frames,
    /// with read-ahead off (`POSIX_FADV_RANDOM` is a property of an open
    /// file, so the sequential readers keep theirs): a 42-byte row read
    /// must not bring its neighbours into a page cache the keys and the
    /// rows asked for need.
    random: File,
    /// The keys section (empty when there are no rows).
    prefixes: Option<memmap2::Mmap>,
    path: PathBuf,
    header: [u8; HEADER_LEN],
    /// The packs and fan-out sections.
    tail: Vec<u8>,
    bits: u32,
    skip: usize,
    row_len: usize,
    packs: usize,
    frames: u64,
    rows: u64,
    len: u64,
    frames_off: usize,
    rows_off: usize,
    prefixes_off: usize,
    packs_off: usize,
    fanout_off: usize,
    /// Rows [`SortedIndex::find`] has read: what a lookup costs beyond
    /// the mapped keys (the lookups bench reports it per lookup).
    row_reads: AtomicU64,
    /// One bit per page of the keys section: hinted by a batched lookup
    /// already (1 bit per 4 KiB of keys: 12 KB at 100M rows).
    hinted: Vec<AtomicU64>,
    /// Key pages hinted one by one so far, and whether the whole keys
    /// section was hinted instead (after [`KEYS_READ_AFTER`]).
    keys_hinted: AtomicU64,
    keys_read: AtomicBool,
    /// Whether `preadv2(RWF_NOWAIT)` works here (cleared at its first
    /// refusal: an old kernel or a file system without it).
    nowait: AtomicBool,
}

/// A row [`SortedIndex::find`] found: its position and location bytes.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    pub pos: usize,
    loc: [u8; LOC_LEN],
}

impl std::fmt::Debug for SortedIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SortedIndex({}, {} rows)", self.path.display(), self.rows)
    }
}

/// Why a file was refused: not there (another process replaced it), or
/// not one this code can trust (rebuild).
pub enum OpenError {
    Missing,
    Damaged(Error),
}

impl SortedIndex {
    pub fn open(path: &Path) -> std::result::Result<SortedIndex, OpenError> {
        use std::os::unix::fs::{FileExt, MetadataExt};
        let open = || match File::open(path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(OpenError::Missing),
            Err(e) => Err(OpenError::Damaged(Error::io(path, e))),
        };
        let (file, random) = (open()?, open()?);
        let io = |e: std::io::Error| OpenError::Damaged(Error::io(path, e));
        let meta = file.metadata().map_err(io)?;
        let other = random.metadata().map_err(io)?;
        if (meta.dev(), meta.ino()) != (other.dev(), other.ino()) {
            // Replaced between the two opens (a merge elsewhere): the
            // caller opens the generation its next transaction names.
            return Err(OpenError::Missing);
        }
        // Advice only: lookups are as correct without it.
        let _ = nix::fcntl::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&random),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM,
        );
        let len = meta.len();
        let bad = |why: &str| OpenError::Damaged(Error::index_db(path, format!("sorted index: {why}")));
        let mut h = [0u8; HEADER_LEN];
        if len < HEADER_LEN as u64 {
            return Err(bad("not a sorted index file"));
        }
        file.read_exact_at(&mut h, 0).map_err(io)?;
        if &h[..7] != MAGIC {
            return Err(bad("not a sorted index file"));
        }
        if h[7] != VERSION {
            return Err(bad("another version"));
        }
        let bits = le32(&h, 8);
        if bits > MAX_BITS {
            return Err(bad("sections do not add up to the file"));
        }
        let (skip, row_len) = (skip_for(bits), row_len(skip_for(bits)));
        let v = |i: usize| le64(&h, 16 + 8 * i);
        let (packs, frames, rows) = (v(0), v(1), v(2));
        let (frames_off, rows_off, prefixes_off, packs_off, fanout_off, end) = (v(3), v(4), v(5), v(6), v(7), v(8));
        let consistent = frames_off == HEADER_LEN as u64
            && Some(rows_off) == frames.checked_mul(FRAME_LEN as u64).and_then(|x| x.checked_add(frames_off))
            && Some(prefixes_off) == rows.checked_mul(row_len as u64).and_then(|x| x.checked_add(rows_off))
            && Some(packs_off) == rows.checked_mul(4).and_then(|x| x.checked_add(prefixes_off))
            && Some(fanout_off) == packs.checked_mul(PACK_LEN as u64).and_then(|x| x.checked_add(packs_off))
            && end == fanout_off + ((1u64 << bits) + 1) * 4
            && end == len;
        if !consistent {
            return Err(bad("sections do not add up to the file"));
        }
        let mut tail = vec![0u8; (end - packs_off) as usize];
        file.read_exact_at(&mut tail, packs_off).map_err(io)?;
        let mut meta = blake3::Hasher::new();
        meta.update(&h[..HASHED_HEADER]);
        meta.update(&tail);
        if meta.finalize().as_bytes() != &h[HASHED_HEADER..HASHED_HEADER + 32] {
            return Err(bad("header, packs or fan-out damaged"));
        }
        let prefixes = match rows {
            0 => None,
            // SAFETY: the file is never written after it is renamed into
            // place (a merge writes a new one), so the mapping does not
            // change; every access is bounds-checked by the slice (a file
            // truncated by someone else would fault, as any mapped file).
            n => Some(
                unsafe { memmap2::MmapOptions::new().offset(prefixes_off).len((n * 4) as usize).map(&file) }
                    .map_err(io)?,
            ),
        };
        if let Some(m) = &prefixes {
            // Lookups jump around: read-ahead would fill the page cache
            // with neighbours nobody asked for.
            let _ = m.advise(memmap2::Advice::Random);
        }
        let s = SortedIndex {
            prefixes,
            path: path.to_path_buf(),
            header: h,
            tail,
            bits,
            skip,
            row_len,
            packs: packs as usize,
            frames,
            rows,
            len,
            frames_off: frames_off as usize,
            rows_off: rows_off as usize,
            prefixes_off: prefixes_off as usize,
            packs_off: packs_off as usize,
            fanout_off: fanout_off as usize,
            file,
            random,
            row_reads: AtomicU64::new(0),
            hinted: (0..(rows * 4 / PAGE as u64 + 2).div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            keys_hinted: AtomicU64::new(0),
            keys_read: AtomicBool::new(false),
            nowait: AtomicBool::new(true),
        };
        // The fan-out must be non-decreasing and end at the row count, the
        // packs' first frames likewise: then every range below is inside
        // its section.
        let mut prev = 0;
        for b in 0..=(1usize << bits) {
            let x = s.fanout(b);
            if x < prev {
                return Err(bad("fan-out decreasing"));
            }
            prev = x;
        }
        if prev as u64 != rows {
            return Err(bad("fan-out does not end at the row count"));
        }
        let mut prev = 0;
        for i in 0..s.packs {
            let p = s.pack(i);
            if p.first_frame < prev || p.first_frame > frames {
                return Err(bad("pack frames out of order"));
            }
            prev = p.first_frame;
        }
        Ok(s)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn packs(&self) -> usize {
        self.packs
    }

    /// Bytes of the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Rows read by lookups so far (every [`SortedIndex::find`] of this
    /// open file, in any thread).
    pub fn row_reads(&self) -> u64 {
        self.row_reads.load(Ordering::Relaxed)
    }

    /// A lookup's positioned read (frames, rows), without read-ahead.
    fn read_at(&self, buf: &mut [u8], at: usize) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.random.read_exact_at(buf, at as u64).map_err(|e| Error::io(&self.path, e))
    }

    fn fanout(&self, b: usize) -> usize {
        le32(&self.tail, self.fanout_off - self.packs_off + 4 * b) as usize
    }

    /// The bucket holding row `i` (< rows): the last whose first row is
    /// at most `i`.
    fn bucket_of(&self, i: usize) -> usize {
        let (mut lo, mut hi) = (0, 1usize << self.bits);
        while hi - lo > 1 {
            let m = lo + (hi - lo) / 2;
            if self.fanout(m) <= i {
                lo = m;
            } else {
                hi = m;
            }
        }
        lo
    }

    pub fn pack(&self, i: usize) -> SortedPack {
        let b = &self.tail[PACK_LEN * i..PACK_LEN * (i + 1)];
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[..32]);
        SortedPack { id: Id(id), pack_no: le32(b, 32), frames_end: le32(b, 36), first_frame: le64(b, 40) }
    }

    /// The frames of pack position `i`, as frame numbers of the file.
    pub fn frames_of(&self, i: usize) -> Range<u64> {
        let next = if i + 1 < self.packs { self.pack(i + 1).first_frame } else { self.frames };
        self.pack(i).first_frame..next
    }

    /// The rows whose key equals `id`'s: a binary search of its bucket's
    /// mapped keys (positions in the file, empty when none match).
    fn key_matches(&self, id: &[u8; 32]) -> Range<usize> {
        let b = bucket(id, self.bits);
        let key = key_of(id, self.skip);
        let (lo, hi) = (self.fanout(b), self.fanout(b + 1));
        let Some(keys) = self.prefixes.as_ref().and_then(|m| m.get(4 * lo..4 * hi)) else { return 0..0 };
        let at = |i: usize| le32(keys, 4 * i);
        let n = hi - lo;
        let (mut l, mut h) = (0, n);
        while l < h {
            let m = l + (h - l) / 2;
            if at(m) < key {
                l = m + 1;
            } else {
                h = m;
            }
        }
        let mut e = l;
        while e < n && at(e) == key {
            e += 1;
        }
        lo + l..lo + e
    }

    /// Whether a row's key equals `id`'s, from the mapped keys alone (no
    /// row is read): true for every id the file holds, and for an absent id
    /// whose 32-bit key collides with one in its bucket.
    pub fn has_key(&self, id: &[u8; 32]) -> bool {
        !self.key_matches(id).is_empty()
    }

    /// Whether the row read at `pos` is `id`'s: its stored id bytes
    /// compared whole (the key matched already).
    fn found_if_equal(&self, id: &[u8; 32], pos: usize, bytes: &[u8; MAX_ROW_LEN]) -> Option<Found> {
        let tail = 28 - self.skip;
        if bytes[..tail] != id[self.skip + 4..] {
            return None;
        }
        let mut loc = [0u8; LOC_LEN];
        loc.copy_from_slice(&bytes[tail..self.row_len]);
        Some(Found { pos, loc })
    }

    /// The rows whose id is `id` (its copies, by pack number): a binary
    /// search of the bucket's mapped keys, and one read of each row whose
    /// key matches, which alone decides: a key is a part of the id, and
    /// the id is present only if all of it is.
    pub fn find(&self, id: &[u8; 32]) -> Result<Vec<Found>> {
        let mut out = Vec::new();
        for pos in self.key_matches(id) {
            let mut bytes = [0u8; MAX_ROW_LEN];
            self.row_reads.fetch_add(1, Ordering::Relaxed);
            self.read_at(&mut bytes[..self.row_len], self.rows_off + self.row_len * pos)?;
            out.extend(self.found_if_equal(id, pos, &bytes));
        }
        Ok(out)
    }

    /// [`SortedIndex::find`] of many ids: `(i, row)` for every row whose
    /// id is `ids[i]`, in the order of `i`. The same answers, with the
    /// disk reads of a batch in flight together instead of one after the
    /// other: a row (or key page) not in the page cache is hinted to the
    /// kernel (`POSIX_FADV_WILLNEED`, which starts its read and returns)
    /// before any is waited for, so a cold batch costs about one disk
    /// round trip per [`BATCH_MAX`] ids at the disk's queue depth, not one
    /// per id. Rows are read in file order, each once however often the
    /// batch names it.
    pub fn find_batch(&self, ids: &[Id]) -> Result<Vec<(usize, Found)>> {
        let mut out = Vec::new();
        for (n, part) in ids.chunks(BATCH_MAX).enumerate() {
            self.find_part(part, n * BATCH_MAX, &mut out)?;
        }
        Ok(out)
    }

    fn find_part(&self, ids: &[Id], first: usize, out: &mut Vec<(usize, Found)>) -> Result<()> {
        // Key pages this file has not been asked for yet: hinted all at
        // once, then searched. A page hinted once is not hinted again, so
        // lookups with the keys resident make no system call; one evicted
        // since is read by its fault, as without hints.
        if self.prefixes.is_some() && !self.keys_read.load(Ordering::Relaxed) {
            let mut pages = Vec::new();
            for id in ids {
                let b = bucket(&id.0, self.bits);
                let (lo, hi) = (self.fanout(b), self.fanout(b + 1));
                if lo < hi {
                    let first_page = (self.prefixes_off + 4 * lo) / PAGE;
                    let last_page = (self.prefixes_off + 4 * hi - 1) / PAGE;
                    pages.extend((first_page..=last_page).filter(|&p| self.first_hint(p)));
                }
            }
            // Many key pages asked for one at a time: the whole keys
            // section instead, read by the kernel in large sequential
            // requests (a random read costs this VM 10-30 us of CPU a
            // page; the keys are 4 bytes a row, 400 MB at 100M rows, meant
            // to stay in the page cache). Not before: a backup of a few
            // files must not read them all.
            let total = self.hinted.len() as u64 * 64;
            let before = self.keys_hinted.fetch_add(pages.len() as u64, Ordering::Relaxed);
            if (before + pages.len() as u64) * KEYS_READ_AFTER > total && !self.keys_read.swap(true, Ordering::Relaxed)
            {
                // In steps the kernel does not cut short (it reads at
                // most the device's read-ahead size a call; 128 KiB is
                // the smallest default).
                let (start, end) = (self.prefixes_off, self.prefixes_off + self.rows as usize * 4);
                for at in (start..end).step_by(128 * 1024) {
                    self.will_need(at, (128 * 1024).min(end - at));
                }
            } else if pages.len() > 1 {
                pages.sort_unstable();
                pages.dedup();
                let mut i = 0;
                while i < pages.len() {
                    let mut j = i + 1;
                    while j < pages.len() && pages[j] == pages[j - 1] + 1 {
                        j += 1;
                    }
                    self.will_need(pages[i] * PAGE, (j - i) * PAGE);
                    i = j;
                }
            }
        }
        // Candidate rows (key matches), by position: usually none for an
        // absent id, one for a present one.
        let mut wanted: Vec<(usize, usize)> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            wanted.extend(self.key_matches(&id.0).map(|pos| (pos, i)));
        }
        if wanted.is_empty() {
            return Ok(());
        }
        wanted.sort_unstable();
        let mut rows: Vec<(usize, [u8; MAX_ROW_LEN])> = Vec::with_capacity(wanted.len());
        for &(pos, _) in &wanted {
            if rows.last().is_none_or(|r| r.0 != pos) {
                rows.push((pos, [0u8; MAX_ROW_LEN]));
            }
        }
        self.row_reads.fetch_add(rows.len() as u64, Ordering::Relaxed);
        // Cached rows are read at once; the others are hinted together,
        // then read in file order (their reads overlap on the disk).
        let mut waiting = Vec::new();
        for (k, (pos, bytes)) in rows.iter_mut().enumerate() {
            let at = self.rows_off + self.row_len * *pos;
            if !self.read_cached(&mut bytes[..self.row_len], at)? {
                waiting.push(k);
            }
        }
        if waiting.len() > 1 {
            for &k in &waiting {
                self.will_need(self.rows_off + self.row_len * rows[k].0, self.row_len);
            }
        }
        for k in waiting {
            let (pos, bytes) = &mut rows[k];
            self.read_at(&mut bytes[..self.row_len], self.rows_off + self.row_len * *pos)?;
        }
        let start = out.len();
        let mut r = 0;
        for (pos, i) in wanted {
            while rows[r].0 != pos {
                r += 1;
            }
            if let Some(f) = self.found_if_equal(&ids[i].0, pos, &rows[r].1) {
                out.push((first + i, f));
            }
        }
        out[start..].sort_by_key(|(i, f)| (*i, f.pos));
        Ok(())
    }

    /// Marks key page `page` (of the file) hinted; whether it was not yet.
    fn first_hint(&self, page: usize) -> bool {
        let Some(k) = page.checked_sub(self.prefixes_off / PAGE) else { return false };
        let Some(word) = self.hinted.get(k / 64) else { return false };
        let bit = 1u64 << (k % 64);
        word.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }

    /// Asks the kernel to start reading `len` bytes at `at` into the page
    /// cache. Advice only: the reads after it are as correct without it.
    fn will_need(&self, at: usize, len: usize) {
        let _ = nix::fcntl::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&self.random),
            at as i64,
            len as i64,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
        );
    }

    /// Reads `buf.len()` bytes at `at` if the page cache holds them
    /// (`preadv2` with `RWF_NOWAIT`); false when they would wait for the
    /// disk, or when the kernel cannot tell (then the caller reads them).
    fn read_cached(&self, buf: &mut [u8], at: usize) -> Result<bool> {
        if !self.nowait.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let want = buf.len();
        match rustix::io::preadv2(
            &self.random,
            &mut [std::io::IoSliceMut::new(buf)],
            at as u64,
            rustix::io::ReadWriteFlags::NOWAIT,
        ) {
            Ok(n) => Ok(n == want),
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => Ok(false),
            Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::INVAL) => {
                self.nowait.store(false, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => Err(Error::io(&self.path, std::io::Error::from(e))),
        }
    }

    /// A row from its stored bytes, its key and its bucket (which gives
    /// the id's skipped bytes).
    fn row_from(&self, bytes: &[u8; MAX_ROW_LEN], key: u32, bucket: usize) -> Result<Row> {
        let tail = 28 - self.skip;
        let loc = &bytes[tail..self.row_len];
        let pos = le32(loc, 0) as usize;
        if pos >= self.packs {
            return Err(Error::index_db(&self.path, "sorted index: a row names no pack"));
        }
        let mut id = [0u8; 32];
        // The bucket is the id's top `bits` bits; `skip` whole bytes of them.
        let head = if self.bits == 0 { 0 } else { (bucket as u32) << (32 - self.bits) };
        id[..self.skip].copy_from_slice(&key_u32(head)[..self.skip]);
        id[self.skip..self.skip + 4].copy_from_slice(&key_u32(key));
        id[self.skip + 4..].copy_from_slice(&bytes[..tail]);
        Ok(Row {
            id,
            pack_no: self.pack(pos).pack_no,
            frame_word: le32(loc, 4),
            offset_in_frame: le32(loc, 8),
            raw_len: le32(loc, 12),
        })
    }

    /// The pack number of a found row.
    pub fn found_pack_no(&self, f: &Found) -> Result<u32> {
        let pos = le32(&f.loc, 0) as usize;
        if pos >= self.packs {
            return Err(Error::index_db(&self.path, "sorted index: a row names no pack"));
        }
        Ok(self.pack(pos).pack_no)
    }

    /// Row `i` with its pack's number (two reads; tests and single rows).
    pub fn row(&self, i: usize) -> Result<Row> {
        let mut bytes = [0u8; MAX_ROW_LEN];
        self.read_at(&mut bytes[..self.row_len], self.rows_off + self.row_len * i)?;
        let mut k = [0u8; 4];
        self.read_at(&mut k, self.prefixes_off + 4 * i)?;
        self.row_from(&bytes, u32::from_le_bytes(k), self.bucket_of(i))
    }

    /// Where row `i`'s blob is (see [`SortedIndex::locate`]).
    pub fn locate_at(&self, i: usize) -> Result<(Id, FrameRecord, u32, u32, BlobKind)> {
        let mut loc = [0u8; LOC_LEN];
        self.read_at(&mut loc, self.rows_off + self.row_len * i + (28 - self.skip))?;
        self.locate(&Found { pos: i, loc })
    }

    /// Where a found row's blob is: pack id, frame, offset, length and
    /// kind, checked against the pack's frames.
    pub fn locate(&self, f: &Found) -> Result<(Id, FrameRecord, u32, u32, BlobKind)> {
        let bad = |why: &str| Error::index_db(&self.path, format!("sorted index: {why}"));
        let b = &f.loc;
        let pos = le32(b, 0) as usize;
        if pos >= self.packs {
            return Err(bad("a row names no pack"));
        }
        let pack = self.pack(pos);
        let frames = self.frames_of(pos);
        let word = le32(b, 4);
        let fno = frames.start + u64::from(word & 0x00ff_ffff);
        if fno >= frames.end {
            return Err(bad("a row names no frame of its pack"));
        }
        // The frame and the next one's offset (its end), in one read.
        let mut fb = [0u8; FRAME_LEN + 4];
        let n = if fno + 1 < frames.end { FRAME_LEN + 4 } else { FRAME_LEN };
        self.read_at(&mut fb[..n], self.frames_off + FRAME_LEN * fno as usize)?;
        let offset = le32(&fb, 0);
        let next = if n > FRAME_LEN { le32(&fb, FRAME_LEN) } else { pack.frames_end };
        let codec = FrameCodec::from_u8(fb[8]).ok_or_else(|| bad("unknown frame codec"))?;
        let kind = BlobKind::from_u8((word >> 24) as u8).ok_or_else(|| bad("unknown blob kind"))?;
        let frame = FrameRecord {
            offset: u64::from(offset),
            stored_len: next.checked_sub(offset).ok_or_else(|| bad("frames out of order"))?,
            raw_len: le32(&fb, 4),
            codec,
        };
        let (off, len) = (le32(b, 8), le32(b, 12));
        if u64::from(off) + u64::from(len) > u64::from(frame.raw_len) {
            return Err(bad("a blob outside its frame"));
        }
        Ok((pack.id, frame, off, len, kind))
    }
    fn section(&self, start: usize, end: usize) -> SectionReader<'_> {
        SectionReader {
            file: &self.file,
            path: &self.path,
            pos: start as u64,
            end: end as u64,
            buf: Vec::new(),
            at: 0,
            hash: blake3::Hasher::new(),
        }
    }

    /// The frames section, to be read in order (and hashed).
    pub fn frames_reader(&self) -> SectionReader<'_> {
        self.section(self.frames_off, self.rows_off)
    }

    /// Every row in order, read with plain reads (see [`SectionReader`]).
    pub fn rows_reader(&self) -> RowsReader<'_> {
        RowsReader {
            index: self,
            rows: self.section(self.rows_off, self.prefixes_off),
            prefixes: self.section(self.prefixes_off, self.packs_off),
            at: 0,
            bucket: 0,
        }
    }

    /// Checks the section hashes a full read computed against the header.
    pub fn check_hashes(&self, frames: [u8; 32], rows: [u8; 32], prefixes: [u8; 32]) -> Result<()> {
        let mut bulk = blake3::Hasher::new();
        bulk.update(&frames);
        bulk.update(&rows);
        bulk.update(&prefixes);
        if bulk.finalize().as_bytes() != &self.header[88..120] {
            return Err(Error::index_db(&self.path, "sorted index: frames or rows damaged"));
        }
        Ok(())
    }

    /// Checks the hashes of frames, rows and keys: reads the whole file.
    pub fn verify(&self) -> Result<()> {
        let rows = self.rows_reader();
        let (r, p) = rows.finish()?;
        self.check_hashes(self.frames_reader().finish()?, r, p)
    }

    /// Reads a whole file's bytes (tests).
    #[cfg(test)]
    pub fn raw(path: &Path) -> Vec<u8> {
        use std::io::Read;
        let mut v = Vec::new();
        File::open(path).unwrap().read_to_end(&mut v).unwrap();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: u32) -> Vec<FrameRecord> {
        (0..n)
            .map(|i| FrameRecord {
                offset: 8 + 100 * u64::from(i),
                stored_len: 100,
                raw_len: 1000,
                codec: FrameCodec::Zstd,
            })
            .collect()
    }

    fn row(seed: u32, pack_no: u32, frame: u32) -> Row {
        Row {
            id: Id::hash(&seed.to_le_bytes()).0,
            pack_no,
            frame_word: frame | 1 << 24,
            offset_in_frame: 10,
            raw_len: 20,
        }
    }

    #[test]
    fn rows_are_found_with_their_copies_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.rows");
        let mut rows: Vec<Row> = (0..5000).map(|i| row(i, 3 + i % 2 * 4, i % 10)).collect();
        rows.push(row(17, 3, 2)); // a second copy of 17 (in pack 7)
        rows.sort();
        let mut w = Writer::create(&path, rows.len() as u64).unwrap();
        w.pack(Id::hash(b"a"), 3, 1008, &frames(10)).unwrap();
        w.pack(Id::hash(b"b"), 7, 1008, &frames(10)).unwrap();
        for r in &rows {
            w.row(r).unwrap();
        }
        assert!(w.row(&rows[0]).is_err(), "order is enforced");
        w.finish().unwrap();
        let s = SortedIndex::open(&path).map_err(|_| ()).unwrap();
        s.verify().unwrap();
        assert_eq!(s.rows(), 5001);
        for (i, r) in rows.iter().enumerate() {
            let found = s.find(&r.id).unwrap();
            assert!(found.iter().any(|f| f.pos == i), "{i}");
            assert_eq!(s.row(i).unwrap(), *r);
        }
        assert_eq!(s.find(&row(17, 0, 0).id).unwrap().len(), 2);
        // Batched: the same rows, both copies of 17, each row read once.
        let mut batch: Vec<Id> = rows.iter().map(|r| Id(r.id)).collect();
        batch.extend([Id::hash(b"absent"), Id(row(17, 0, 0).id), Id(rows[3].id)]);
        let want: Vec<(usize, usize)> = batch
            .iter()
            .enumerate()
            .flat_map(|(i, id)| s.find(&id.0).unwrap().into_iter().map(move |f| (i, f.pos)))
            .collect();
        let before = s.row_reads();
        let got = s.find_batch(&batch).unwrap();
        assert_eq!(got.iter().map(|(i, f)| (*i, f.pos)).collect::<Vec<_>>(), want);
        // Each internal batch reads its distinct rows once.
        let mut per_batch: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); 5];
        for (i, pos) in &want {
            per_batch[i / BATCH_MAX].insert(*pos);
        }
        assert_eq!(s.row_reads() - before, per_batch.iter().map(|b| b.len() as u64).sum::<u64>());
        assert!(s.find(&Id::hash(b"absent").0).unwrap().is_empty());
        let found = s.find(&row(9, 0, 0).id).unwrap();
        let (pack, frame, off, len, kind) = s.locate(&found[0]).unwrap();
        assert_eq!(s.locate_at(found[0].pos).unwrap(), (pack, frame, off, len, kind));
        assert_eq!((pack, frame, off, len, kind), (Id::hash(b"b"), frames(10)[9], 10, 20, BlobKind::Tree));
        drop(s);
        // One flipped byte in the packs: refused at open; in the rows:
        // refused by verify.
        let mut bytes = SortedIndex::raw(&path);
        let n = bytes.len();
        bytes[n - 100] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(SortedIndex::open(&path), Err(OpenError::Damaged(_))));
        bytes[n - 100] ^= 1;
        bytes[HEADER_LEN + 90 + 44 * 7] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let s = SortedIndex::open(&path).map_err(|_| ()).unwrap();
        assert!(s.verify().is_err());
        bytes[7] = VERSION + 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(SortedIndex::open(&path), Err(OpenError::Damaged(_))));
        assert!(matches!(SortedIndex::open(&dir.path().join("none")), Err(OpenError::Missing)));
    }

    #[test]
    fn id_bytes_the_bucket_implies_are_restored_from_it() {
        // 40,000 rows: 8 fan-out bits, so rows and keys leave out id byte 0.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.rows");
        let mut rows: Vec<Row> = (0..40_000).map(|i| row(i, 3, i % 10)).collect();
        rows.sort();
        let mut w = Writer::create(&path, rows.len() as u64).unwrap();
        w.pack(Id::hash(b"a"), 3, 1008, &frames(10)).unwrap();
        for r in &rows {
            w.row(r).unwrap();
        }
        w.finish().unwrap();
        let s = SortedIndex::open(&path).map_err(|_| ()).unwrap();
        assert_eq!((s.bits, s.skip, s.row_len), (8, 1, 43));
        assert_eq!(s.len(), (HEADER_LEN + 9 * 10 + (43 + 4) * 40_000 + PACK_LEN + 4 * 257) as u64);
        s.verify().unwrap();
        let read: Vec<Row> = s.rows_reader().map(|r| r.unwrap()).collect();
        assert!(read == rows, "every row read back whole, in order");
        for i in (0..rows.len()).step_by(997).chain([0, rows.len() - 1]) {
            assert_eq!(s.row(i).unwrap(), rows[i]);
            let found = s.find(&rows[i].id).unwrap();
            assert_eq!(found.iter().map(|f| f.pos).collect::<Vec<_>>(), [i]);
        }
    }

    #[test]
    fn packs_that_do_not_fit_are_recognised() {
        assert_eq!(fits(10_000, &frames(3)), Some(308));
        let mut gap = frames(3);
        gap[1].offset += 1;
        assert_eq!(fits(10_000, &gap), None);
        assert_eq!(fits(5 << 30, &frames(3)), None);
        assert_eq!(fits(10_000, &[]), None);
    }
}
