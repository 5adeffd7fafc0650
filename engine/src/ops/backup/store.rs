//! Storing content: the file workers (read, chunk, hash, dedup into the
//! [`BlobSink`], small files a window at a time so that their dedup
//! lookups go to the index in batches) and the stream readers (database
//! dumps). A file's read
//! error is a warning and the file is left out; a stream's is a failed
//! backup.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};

use super::stream_delta::Pairing;
use super::{Ctx, FileOutcome, Job, Seen, SlotGuard};
use crate::chunker::StreamChunker;
use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::id::Id;
use crate::index::IndexReader;
use crate::packer::BlobSink;
use crate::walk::DirFd;
use rustix::fs::FileType;

/// Chunks a worker holds for one batched dedup lookup at most (the
/// index's own batch, `index_sorted::BATCH_MAX`).
const WINDOW_CHUNKS: usize = 1024;
/// Bytes of small files a worker holds for it at most; a file bigger than
/// what is left goes into an empty window (alone, up to the chunker's
/// maximum chunk size, the buffer a worker read small files into anyway).
/// 1 MiB: 170 mail messages of 6 KB, 50 web files of 20 KB; 4 MiB would
/// hold up to 16 MiB in 4 workers (the www backup peaked 13-17 MiB
/// higher with it, in two runs) for no gain there.
const WINDOW_BYTES: usize = 1024 * 1024;
/// Bytes a large file's chunker buffer holds beyond the largest chunk
/// (see `store_large`).
const FILE_SPARE: usize = 1024 * 1024;

pub(super) fn worker(ctx: &Ctx<'_>, sink: &BlobSink<'_>, jobs: Receiver<Job>) {
    let mut window = Window::default();
    let mut reader = None;
    loop {
        let job = match jobs.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Empty) => {
                // Never wait for work while holding files: the tree builder
                // may be waiting for their slots.
                window.flush(ctx, sink, &mut reader);
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let Job { path, dir, seen, slot } = job;
        let guard = SlotGuard(slot);
        match store_file(ctx, sink, &mut reader, &path, dir, seen, &mut window) {
            Ok(Filed::Windowed { chunks, size }) => window.files.push(Held { guard, path, chunks, size }),
            Ok(Filed::Done(r)) => guard.0.set(settle(ctx, sink, &path, Ok(r))),
            Err(e) => guard.0.set(settle(ctx, sink, &path, Err(e))),
        }
        if window.chunks.len() >= WINDOW_CHUNKS || window.data.len() >= WINDOW_BYTES {
            window.flush(ctx, sink, &mut reader);
        }
    }
    window.flush(ctx, sink, &mut reader);
}

/// Small files a worker has read, chunked and hashed, whose chunks go to
/// the packer with one batched dedup lookup (`BlobSink::store_batch`): a
/// present chunk's lookup is a disk read once the index outgrows the page
/// cache, and a batch's reads overlap. Bounded by [`WINDOW_CHUNKS`] and
/// [`WINDOW_BYTES`]; flushed when full, before a large file, and whenever
/// the worker would wait for a job.
#[derive(Default)]
struct Window {
    /// The files' bytes, one after the other.
    data: Vec<u8>,
    /// Every chunk: its id and its range in `data`.
    chunks: Vec<(Id, usize, usize)>,
    files: Vec<Held>,
}

/// A file in a [`Window`]: its slot is set when the window is flushed.
struct Held {
    guard: SlotGuard,
    path: std::path::PathBuf,
    /// Its chunks' range in `Window::chunks`.
    chunks: std::ops::Range<usize>,
    size: u64,
}

/// What [`store_file`] did with a file.
enum Filed {
    /// Stored (or failed) already.
    Done(Stored),
    /// Read into the window; stored at its flush.
    Windowed { chunks: std::ops::Range<usize>, size: u64 },
}

impl Window {
    /// Stores the chunks held and sets the files' slots.
    fn flush(&mut self, ctx: &Ctx<'_>, sink: &BlobSink<'_>, reader: &mut Option<(u64, IndexReader)>) {
        if self.files.is_empty() {
            return;
        }
        let stored = sink.index_reader(reader).and_then(|index| {
            let blobs: Vec<(Id, &[u8])> =
                self.chunks.iter().map(|&(id, start, len)| (id, &self.data[start..start + len])).collect();
            sink.store_batch(index, BlobKind::Data, &blobs)
        });
        // The error stops the backup once; the other files just end.
        let mut error = stored.err();
        for Held { guard, path, chunks, size } in self.files.drain(..) {
            let r = match error.take() {
                Some(e) => Err(e),
                None => Ok(Ok((self.chunks[chunks].iter().map(|c| c.0).collect(), size))),
            };
            guard.0.set(settle(ctx, sink, &path, r));
        }
        self.chunks.clear();
        self.data.clear();
        if self.data.capacity() > WINDOW_BYTES {
            // It held one file bigger than a window: small files follow
            // far more often, so the buffer goes rather than stay with the
            // worker for the rest of the run.
            self.data = Vec::new();
        }
    }
}

/// Source errors become warnings and a missing file; repository errors
/// stop the pipeline.
pub(super) fn settle(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    path: &Path,
    r: Result<std::result::Result<(Vec<Id>, u64), String>>,
) -> FileOutcome {
    match r {
        Ok(Ok((chunks, size))) => {
            ctx.progress.file_done(path, size);
            FileOutcome::Stored { chunks, size }
        }
        Ok(Err(msg)) => {
            ctx.warn(path, &msg);
            FileOutcome::Failed
        }
        Err(e) => {
            if !matches!(e, Error::Interrupted) {
                sink.fail(e);
            }
            FileOutcome::Failed
        }
    }
}

type Stored = std::result::Result<(Vec<Id>, u64), String>;

fn store_file(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    reader: &mut Option<(u64, IndexReader)>,
    path: &Path,
    dir: Option<Arc<DirFd>>,
    seen: Seen,
    window: &mut Window,
) -> Result<Filed> {
    crate::fault::pause_before_read(path);
    ctx.progress.reading(path);
    let file = open_source(dir, path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Filed::Done(Err("replaced by a symbolic link since it was listed; not followed".into())))
        }
        Err(e) => return Ok(Filed::Done(Err(e.to_string()))),
    };

    let chunker = &ctx.file_chunker;
    if seen.size > chunker.max_size() as u64 {
        // A large file streams its chunks one by one: the files held must
        // not wait for it.
        window.flush(ctx, sink, reader);
        return store_large(ctx, sink, reader, path, file, seen).map(Filed::Done);
    }
    if !window.files.is_empty() && window.data.len() + seen.size as usize > WINDOW_BYTES {
        window.flush(ctx, sink, reader);
    }
    // Small files (nearly all of a mail spool): one read of the size the
    // walk saw, into the window; growth or shrinkage shows in the check
    // after reading.
    let start = window.data.len();
    let need = start + seen.size as usize;
    if need > window.data.capacity() {
        // Exact, not amortized: the window's first allocation, or one file
        // bigger than a window alone in it (the check above flushed the
        // others). Doubling kept up to twice the largest file per worker
        // for the rest of the run (nearly 8 MiB for each of 4 workers).
        window.data.reserve_exact(need.max(WINDOW_BYTES) - start);
    }
    window.data.resize(need, 0);
    let mut filled = 0;
    while start + filled < window.data.len() {
        match file.read(&mut window.data[start + filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                window.data.truncate(start);
                // Only a FIFO (opened without waiting) says "would block".
                let msg = if e.kind() == ErrorKind::WouldBlock { NOT_A_FILE.into() } else { e.to_string() };
                return Ok(Filed::Done(Err(msg)));
            }
        }
    }
    window.data.truncate(start + filled);
    if let Some(l) = &ctx.limit_read {
        l.take(filled);
    }
    let read = filled as u64;
    let first = window.chunks.len();
    let mut pos = start;
    for len in chunker.cut_all(&window.data[start..]) {
        window.chunks.push((ctx.repo.blob_id(&window.data[pos..pos + len]), pos, len));
        pos += len;
    }
    ctx.bytes_read.fetch_add(read, Ordering::Relaxed);
    ctx.progress.bytes(read);
    if let Err(msg) = check_unchanged(ctx, path, &file, seen, read) {
        window.chunks.truncate(first);
        window.data.truncate(start);
        return Ok(Filed::Done(Err(msg)));
    }
    Ok(Filed::Windowed { chunks: first..window.chunks.len(), size: read })
}

/// Opens a file to read: relative to its directory's descriptor when the
/// walk kept it (one name for the kernel to resolve rather than the whole
/// path; a directory renamed since it was listed is still the one listed),
/// else by path. A symlink put in the file's place since the walk is not
/// followed (`O_NOFOLLOW`, as restic opens files): followed, a root backup
/// of a directory its users can write to would store whatever file they
/// point it at (`/etc/shadow`) under their file's name; the open fails
/// instead and the file is left out with a warning. A FIFO put in the
/// file's place would block the open until a writer came (forever, in a
/// backup from cron): the open does not wait (`O_NONBLOCK`, which reads of
/// a regular file ignore), and the caller reads only what `fstat` says is
/// a regular file. The descriptor goes back to the walk's budget as soon
/// as the file is open.
pub(super) fn open_source(dir: Option<Arc<DirFd>>, path: &Path) -> std::io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let at = dir.as_ref().zip(path.file_name());
    // O_NOATIME keeps backups from dirtying every inode; it is refused for
    // files we do not own, so fall back to a plain open.
    let open = |flags: OFlags| -> std::io::Result<File> {
        let flags = flags | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
        Ok(match at {
            Some((d, name)) => File::from(rustix::fs::openat(d.as_ref(), name, flags, Mode::empty())?),
            None => File::from(rustix::fs::open(path, flags, Mode::empty())?),
        })
    };
    open(OFlags::NOATIME).or_else(|_| open(OFlags::empty()))
}

/// Turns to chunk a large file: a large file's chunker holds a buffer of
/// the largest chunk and [`FILE_SPARE`] (5 MiB) for as long as it is read.
/// Compressible data fills the packer's byte budget faster than the
/// compressors drain it, and then a second large file read at once only
/// adds its buffer: two (pypi.tsv and npm.tsv, 76 and 18 MB, in one
/// directory) were a system backup's peak of memory. Incompressible data
/// (photos, archives) is stored about as fast as it is hashed, and there
/// hashing one file at a time would leave cores idle: while the budget is
/// at most half taken, a large file goes without waiting for a turn.
/// Small files go on in the other workers meanwhile.
pub(super) struct LargeFiles {
    tx: Sender<()>,
    rx: Receiver<()>,
}

impl LargeFiles {
    /// Large files read at once for `workers` file workers while the
    /// budget is full: one per four workers (two cores), at least one.
    pub(super) fn at_once(workers: usize) -> usize {
        (workers / 4).max(1)
    }

    pub(super) fn new(at_once: usize) -> LargeFiles {
        let (tx, rx) = bounded(at_once.max(1));
        for _ in 0..at_once.max(1) {
            let _ = tx.send(());
        }
        LargeFiles { tx, rx }
    }

    /// Waits for a turn, or until `keeps_up` says the file may go without
    /// one (`None`); `Interrupted` once `stopping` says so.
    pub(super) fn turn(
        &self,
        keeps_up: &dyn Fn() -> bool,
        stopping: &dyn Fn() -> bool,
    ) -> Result<Option<LargeTurn<'_>>> {
        loop {
            if self.rx.try_recv().is_ok() {
                return Ok(Some(LargeTurn(self)));
            }
            if keeps_up() {
                return Ok(None);
            }
            match self.rx.recv_timeout(std::time::Duration::from_millis(20)) {
                Ok(()) => return Ok(Some(LargeTurn(self))),
                Err(_) if stopping() => return Err(Error::Interrupted),
                Err(_) => {}
            }
        }
    }
}

/// A turn of [`LargeFiles`], given back when dropped.
pub(super) struct LargeTurn<'a>(&'a LargeFiles);

impl Drop for LargeTurn<'_> {
    fn drop(&mut self) {
        let _ = self.0.tx.send(());
    }
}

fn store_large(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    reader: &mut Option<(u64, IndexReader)>,
    path: &Path,
    mut file: File,
    seen: Seen,
) -> Result<Stored> {
    // A FIFO put in its place could be fed for ever: the type is checked
    // before reading (one fstat per large file; small ones read at most
    // the size the walk saw, and are checked after).
    if !rustix::fs::fstat(&file).is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile) {
        return Ok(Err(NOT_A_FILE.into()));
    }
    let _turn = ctx.large_files.turn(&|| sink.keeps_up(), &|| ctx.stopping() || sink.is_failed())?;
    let mut store =
        |window: &[u8], n: usize| Ok((sink.store(sink.index_reader(reader)?, BlobKind::Data, &window[..n])?, n));
    // 1 MiB beyond the largest chunk, not the 4 MiB more of a stream's
    // buffer: each file being read holds one, and two big files read at
    // once peaked a system backup 16 MiB higher. The moves cost nothing
    // to see (a 76 MB file: 0.53-0.56 s of CPU either way, alternating).
    let s = StreamChunker::with_spare(ctx.file_chunker.clone(), limited(ctx, &mut file), FILE_SPARE);
    match store_chunks(ctx, s, &mut store)? {
        Ok((chunks, read)) => Ok(check_unchanged(ctx, path, &file, seen, read).map(|()| (chunks, read))),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// `source`, read within the backup's `--limit-read`.
fn limited<'a, R: Read>(ctx: &'a Ctx<'_>, source: R) -> crate::ratelimit::Limited<'a, R> {
    crate::ratelimit::Limited { inner: source, limit: ctx.limit_read.as_ref() }
}

/// Given the bytes the next chunk may span and the content-defined cut in
/// them, stores a chunk and returns its id and length.
type StoreChunk<'a> = dyn FnMut(&[u8], usize) -> Result<(Id, usize)> + 'a;

/// Chunks everything `source` yields and hands each chunk to `store`,
/// reporting progress as it goes. `store` gets the bytes the next chunk
/// may span and the content-defined cut in them, and returns the chunk's
/// id and length (the cut, or another place: stream chunks follow their
/// parent's cuts). The outer error stops the backup; the inner one is the
/// source's own read error, which the caller judges.
fn store_chunks<R: Read>(
    ctx: &Ctx<'_>,
    mut s: StreamChunker<R>,
    store: &mut StoreChunk<'_>,
) -> Result<std::io::Result<(Vec<Id>, u64)>> {
    let mut chunks = Vec::new();
    let mut reported = 0;
    loop {
        if ctx.stopping() {
            return Err(Error::Interrupted);
        }
        match s.peek() {
            Ok(Some((window, cut))) => {
                let (id, len) = store(window, cut)?;
                chunks.push(id);
                s.consume(len);
            }
            Ok(None) => break,
            Err(e) => return Ok(Err(e)),
        }
        let now = s.bytes_read;
        ctx.progress.bytes(now - reported);
        ctx.bytes_read.fetch_add(now - reported, Ordering::Relaxed);
        reported = now;
    }
    Ok(Ok((chunks, s.bytes_read)))
}

/// Warns when a file's size or mtime after reading differ from what the
/// walk saw, or when fewer or more bytes were read: it was written to while
/// being backed up, and what was read is what the snapshot holds. An error
/// (the file is left out) when what was read is no longer a regular file:
/// a FIFO or device put in its place since the walk.
fn check_unchanged(ctx: &Ctx<'_>, path: &Path, file: &File, seen: Seen, read: u64) -> std::result::Result<(), String> {
    // fstat: the open descriptor, no path (std's metadata() is a statx
    // with an empty path, which the kernel copies in and looks at first).
    // The fields' types differ between targets (signed or not, 32 or 64
    // bits): the casts are no-ops on some.
    #[allow(clippy::unnecessary_cast)]
    let changed = match rustix::fs::fstat(file) {
        Ok(after) if FileType::from_raw_mode(after.st_mode) != FileType::RegularFile => return Err(NOT_A_FILE.into()),
        Ok(after) => {
            after.st_size as u64 != seen.size
                || after.st_mtime as i64 != seen.mtime.sec
                || after.st_mtime_nsec as i64 != i64::from(seen.mtime.nsec)
                || read != seen.size
        }
        Err(_) => true,
    };
    if changed {
        ctx.warn(path, "file changed while it was read; stored as read");
    }
    Ok(())
}

/// Why a file whose open found something else in its place is left out.
const NOT_A_FILE: &str =
    "replaced by something that is not a regular file (a FIFO, a device) since it was listed; not read";

/// Stores a stream (a database dump) recorded at `components`. With an
/// entry of that name in the parent snapshot, each new chunk may be stored
/// as a delta against its counterpart there (stream_delta.rs); its id is
/// the id of its plaintext either way.
pub(super) fn store_stream(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    name: &str,
    components: &[Vec<u8>],
    reader: Box<dyn Read + Send>,
    allow_empty: bool,
) -> Result<Stored> {
    let mut pairing = if ctx.stream_deltas { Pairing::load(ctx.repo, ctx.parent_root, components) } else { None };
    // The smallest chunk a cut that follows the parent's makes: a parent
    // cut nearer the chunk's start is left for the next one.
    let floor = (ctx.stream_chunker.min_size() / 8).max(1);
    let mut index = None;
    let mut offset = 0u64;
    let mut store = |window: &[u8], content: usize| -> Result<(Id, usize)> {
        let index = sink.index_reader(&mut index)?;
        let (len, id) = match pairing.as_mut() {
            Some(p) => p.cut(ctx.repo, window, offset, content, floor)?,
            None => (content, None),
        };
        let chunk = &window[..len];
        let id = id.unwrap_or_else(|| ctx.repo.blob_id(chunk));
        let start = offset;
        offset += len as u64;
        let mut base = None;
        if let Some(p) = pairing.as_mut() {
            // A chunk the parent's stream has is deduplicated as always,
            // and so is one the repository has otherwise; only new ones
            // look for a base.
            if !p.anchor(&id, start, len as u64) {
                if let Some(at) = p.follow(ctx.repo, chunk, start)? {
                    if !index.contains(&id)? {
                        base = p.base_for(ctx.repo, index, at)?;
                    }
                }
            }
        }
        sink.store_stream_chunk(index, id, chunk, base)?;
        Ok((id, len))
    };
    // Unlike a file, a stream cannot be skipped with a warning: a dump that
    // breaks off must not become a snapshot.
    let s = StreamChunker::new(ctx.stream_chunker.clone(), limited(ctx, reader));
    let (chunks, read) = match store_chunks(ctx, s, &mut store)? {
        Ok(r) => r,
        // A read that failed because the backup was stopping (the stop hook
        // killed the dump) is not the cause: report the one that is.
        Err(_) if ctx.stopping() || sink.is_failed() => return Err(Error::Interrupted),
        Err(e) => {
            ctx.fail_stream(Error::StreamFailed { name: name.to_string(), detail: e.to_string() });
            return Err(Error::Interrupted);
        }
    };
    if read == 0 && !allow_empty {
        ctx.fail_stream(Error::EmptyStream { name: name.to_string() });
        return Err(Error::Interrupted);
    }
    Ok(Ok((chunks, read)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    /// One large file at a time on two cores while the budget is full: a
    /// second turn waits until the first is given back, and gives up when
    /// the backup stops; while the compressors keep up, a file goes at once.
    #[test]
    fn large_files_take_turns() {
        assert_eq!([2, 4, 8, 16].map(LargeFiles::at_once), [1, 1, 2, 4]);
        let gate = LargeFiles::new(1);
        let full = || false;
        let first = gate.turn(&full, &|| false).unwrap();
        assert!(first.is_some());
        assert!(gate.turn(&|| true, &|| false).unwrap().is_none(), "the compressors keep up: no wait");
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let waiting = s.spawn(|| gate.turn(&full, &|| false).map(|t| t.is_some()));
            let stopped = s.spawn(|| gate.turn(&full, &|| stop.load(Ordering::Relaxed)).map(|t| t.is_some()));
            std::thread::sleep(Duration::from_millis(300));
            assert!(!waiting.is_finished() && !stopped.is_finished(), "a second large file went at once");
            stop.store(true, Ordering::Relaxed);
            assert!(matches!(stopped.join().unwrap(), Err(Error::Interrupted)));
            assert!(!waiting.is_finished());
            drop(first);
            assert!(waiting.join().unwrap().unwrap(), "no turn after the first was given back");
        });
        assert!(gate.turn(&full, &|| false).unwrap().is_some(), "the turn was not given back");
    }
}
