//! Storing content: the file workers (read, chunk, hash, dedup into the
//! [`BlobSink`]) and the stream readers (database dumps). A file's read
//! error is a warning and the file is left out; a stream's is a failed
//! backup.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;

use crossbeam_channel::Receiver;

use super::stream_delta::Pairing;
use super::{Ctx, FileOutcome, Job, Seen, SlotGuard};
use crate::chunker::{Chunker, StreamChunker};
use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::id::Id;
use crate::index::IndexReader;
use crate::packer::BlobSink;

pub(super) fn worker(ctx: &Ctx<'_>, sink: &BlobSink<'_>, jobs: Receiver<Job>) {
    let mut buf = Vec::new();
    let mut reader = None;
    for Job { path, seen, slot, .. } in jobs.iter() {
        let guard = SlotGuard(slot);
        let r = store_file(ctx, sink, &mut reader, &path, seen, &mut buf);
        guard.0.set(settle(ctx, sink, &path, r));
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
    seen: Seen,
    buf: &mut Vec<u8>,
) -> Result<Stored> {
    crate::fault::pause_before_read(path);
    ctx.progress.reading(path);
    // O_NOATIME keeps backups from dirtying every inode; it is refused for
    // files we do not own, so fall back to a plain open.
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOATIME).open(path).or_else(|_| File::open(path));
    let mut file = match file {
        Ok(f) => f,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let chunker = &ctx.file_chunker;
    if seen.size > chunker.max_size() as u64 {
        return store_large(ctx, sink, reader, path, file, seen);
    }
    let reader = sink.index_reader(reader)?;
    // Small files (nearly all of a mail spool): one read of the size the
    // walk saw; growth or shrinkage shows in the check after reading.
    buf.resize(seen.size as usize, 0);
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Ok(Err(e.to_string())),
        }
    }
    buf.truncate(filled);
    if let Some(l) = &ctx.limit_read {
        l.take(filled);
    }
    let read = filled as u64;
    let mut chunks = Vec::new();
    let mut pos = 0;
    for len in chunker.cut_all(buf) {
        chunks.push(sink.store(reader, BlobKind::Data, &buf[pos..pos + len])?);
        pos += len;
    }
    ctx.bytes_read.fetch_add(read, Ordering::Relaxed);
    ctx.progress.bytes(read);
    check_unchanged(ctx, path, &file, seen, read);
    Ok(Ok((chunks, read)))
}

fn store_large(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    reader: &mut Option<(u64, IndexReader)>,
    path: &Path,
    mut file: File,
    seen: Seen,
) -> Result<Stored> {
    let mut store =
        |window: &[u8], n: usize| Ok((sink.store(sink.index_reader(reader)?, BlobKind::Data, &window[..n])?, n));
    match store_chunks(ctx, ctx.file_chunker.clone(), &mut file, &mut store)? {
        Ok((chunks, read)) => {
            check_unchanged(ctx, path, &file, seen, read);
            Ok(Ok((chunks, read)))
        }
        Err(e) => Ok(Err(e.to_string())),
    }
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
fn store_chunks(
    ctx: &Ctx<'_>,
    chunker: Chunker,
    source: impl Read,
    store: &mut StoreChunk<'_>,
) -> Result<std::io::Result<(Vec<Id>, u64)>> {
    let source = crate::ratelimit::Limited { inner: source, limit: ctx.limit_read.as_ref() };
    let mut s = StreamChunker::new(chunker, source);
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
/// being backed up, and what was read is what the snapshot holds.
fn check_unchanged(ctx: &Ctx<'_>, path: &Path, file: &File, seen: Seen, read: u64) {
    let changed = match file.metadata() {
        Ok(after) => {
            after.len() != seen.size
                || after.mtime() != seen.mtime.sec
                || after.mtime_nsec() != i64::from(seen.mtime.nsec)
                || read != seen.size
        }
        Err(_) => true,
    };
    if changed {
        ctx.warn(path, "file changed while it was read; stored as read");
    }
}

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
    let (chunks, read) = match store_chunks(ctx, ctx.stream_chunker.clone(), reader, &mut store)? {
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
