//! Restore from a remote store, pack by pack.
//!
//! Fetching files' chunks file by file (even in batches with coalesced
//! reads, prefetch.rs) makes many small requests when the files are
//! deduplicated: the same CMS in ten sites points at frames spread over
//! a few packs, so a batch's frames are seldom neighbours, and a www
//! restore made 667 ranged GETs where restic, reading whole packs, made 37.
//! Here the walk hands over windows of files; for each window the frames
//! every file needs are grouped by pack and offset, each pack's needed
//! stretch is read in one or a few large GETs (prefetch.rs `pack_reads`),
//! the storage's concurrency hint of them in flight (span_fetch.rs), and each frame, as
//! it arrives, is opened, decompressed and verified once, and its blobs
//! written with `pwrite` at their offsets in every file that holds them.
//! A file's metadata is applied when its last piece lands.
//!
//! A window with delta frames (dumps stored against an earlier day's)
//! takes one more planned pass for their bases (frame_passes.rs).
//!
//! Memory is bounded whatever the restore's size: a window holds at most
//! [`WINDOW_FILES`] files and [`WINDOW_CHUNKS`] chunks (the walk fills the
//! next one while this one is restored: two at most), and the stored
//! bytes of the reads in flight are capped by [`IN_FLIGHT_BYTES`] (and
//! the opened deltas waiting for their bases by frame_passes.rs); a
//! frame is decoded by the worker that fetched it and written out before
//! it takes the next, so decoded frames never wait for their files.
//!
//! Errors stay per file, as on the file-by-file path: a frame that cannot
//! be fetched, opened or verified fails the files that need it (each
//! warned about once, naming the pack and frame, and removed: better
//! missing than wrong), and the rest of the restore goes on.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{apply_metadata, create_mode, remove_existing, restore_file, Ctx, FileJob, HOLE_BLOCK};
use crate::error::{Error, IoContext, Result};
use crate::format::tree::Node;
use crate::frame_passes::{Passes, Wanted};
use crate::id::Id;
use crate::prefetch::Prefetched;

/// Files a window holds at most. With their tree entries and paths, about
/// 20 MiB; a www site tree (35,000 files) is one window.
const WINDOW_FILES: usize = 50_000;
/// Chunks a window holds at most (a piece of a file each, 64 bytes).
const WINDOW_CHUNKS: usize = 200_000;
/// Stored bytes of the GETs in flight at once, all workers together.
const IN_FLIGHT_BYTES: u64 = 96 << 20;

/// Files gathered by the walk, restored together.
#[derive(Default)]
pub(super) struct Window {
    files: Vec<FileJob>,
    chunks: usize,
}

impl Window {
    pub(super) fn push(&mut self, job: FileJob) {
        self.chunks += job.node.chunks.len();
        self.files.push(job);
    }

    pub(super) fn is_full(&self) -> bool {
        self.files.len() >= WINDOW_FILES || self.chunks >= WINDOW_CHUNKS
    }

    pub(super) fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// A file of the window being restored.
struct Target {
    job: FileJob,
    /// Pieces (chunks) not written yet; the one that writes the last
    /// applies the metadata.
    remaining: AtomicUsize,
    state: Mutex<State>,
    /// The file's last byte was written (not left as a hole): its length
    /// needs no `ftruncate`.
    end_written: AtomicBool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing written yet: the first piece creates the file.
    New,
    Created,
    /// Warned about and removed; its other pieces are dropped.
    Failed,
}

/// A blob of a frame and where it goes: file `file` of the window, at
/// byte `at`.
struct Piece {
    offset_in_frame: u32,
    raw_len: u32,
    id: Id,
    file: u32,
    at: u64,
}

/// The pieces cut from a frame the window needs.
struct Frame {
    pieces: Vec<Piece>,
}

/// Restores the files of `window`, all their chunks fetched pack by pack.
pub(super) fn restore_window(ctx: &Ctx<'_>, window: Window) {
    let mut targets = Vec::with_capacity(window.files.len());
    let mut frames: Vec<Frame> = Vec::new();
    let mut wanted: Vec<Wanted> = Vec::new();
    let mut frame_of: HashMap<(Id, u64), usize> = HashMap::new();
    for job in window.files {
        if job.node.chunks.is_empty() {
            // Nothing to fetch: created with its metadata now.
            if let Err(e) = restore_file(ctx, &job.path, &job.node, &Prefetched::none()) {
                ctx.warn(&job.path, &e.to_string());
            }
            continue;
        }
        let file = targets.len() as u32;
        let located: Result<Vec<_>> = job
            .node
            .chunks
            .iter()
            .map(|id| ctx.repo.lookup_blob(id)?.map(|l| (*id, l)).ok_or(Error::BlobNotInIndex(*id)))
            .collect();
        let located = located.and_then(|located| {
            let total: u64 = located.iter().map(|(_, l)| u64::from(l.raw_len)).sum();
            match total == job.node.size {
                true => Ok(located),
                false => Err(Error::corrupt(
                    "file",
                    job.path.display().to_string(),
                    format!("chunks hold {total} bytes, the tree records {}", job.node.size),
                )),
            }
        });
        let located = match located {
            Ok(l) => l,
            Err(e) => {
                ctx.warn(&job.path, &e.to_string());
                continue;
            }
        };
        let mut at = 0u64;
        for (id, loc) in located {
            let n = *frame_of.entry((loc.pack, loc.frame.offset)).or_insert_with(|| {
                frames.push(Frame { pieces: Vec::new() });
                wanted.push(Wanted { pack: loc.pack, record: loc.frame, chunk: id });
                frames.len() - 1
            });
            frames[n].pieces.push(Piece { offset_in_frame: loc.offset_in_frame, raw_len: loc.raw_len, id, file, at });
            at += u64::from(loc.raw_len);
        }
        let remaining = AtomicUsize::new(job.node.chunks.len());
        targets.push(Target { job, remaining, state: Mutex::new(State::New), end_written: AtomicBool::new(false) });
    }
    let work = Work { ctx, targets: &targets };
    let passes =
        Passes { repo: ctx.repo, in_flight: IN_FLIGHT_BYTES, stop: &|| ctx.cancelled(), what: "restore worker" };
    let errors = passes.fetch(&wanted, &|n, raw| {
        let w = &wanted[n];
        work.write_frame(&frames[n], w, &w.pack.to_hex(), raw.map_err(|e| e.to_string()))
    });
    for e in errors {
        ctx.warn(&ctx.target, &e.to_string());
    }
    if ctx.cancelled() {
        return;
    }
    // Every piece was written or its file failed; a file left incomplete
    // here is a bug (a worker that died), and is not left looking restored.
    for t in &targets {
        let state = t.state.lock().map_or(State::Failed, |s| *s);
        if state != State::Failed && t.remaining.load(Ordering::Relaxed) > 0 {
            let _ = std::fs::remove_file(&t.job.path);
            ctx.warn(&t.job.path, "not restored: a restore worker ended before writing all of it");
        }
    }
}

struct Work<'a> {
    ctx: &'a Ctx<'a>,
    targets: &'a [Target],
}

impl Work<'_> {
    /// Writes each blob of a decoded frame, verified once, into every file
    /// that holds it; `raw` is the frame's plaintext or why it cannot be
    /// had, which fails every file that needs it.
    fn write_frame(&self, frame: &Frame, at: &Wanted, pack: &str, raw: std::result::Result<&[u8], String>) {
        let repo = self.ctx.repo;
        let raw = match raw {
            Ok(raw) => raw,
            Err(msg) => {
                self.fail_frame(frame, &msg);
                return;
            }
        };
        // Each distinct blob is hashed once, however many files hold it.
        let mut checked: HashMap<(u32, u32), std::result::Result<(), String>> = HashMap::new();
        for p in &frame.pieces {
            let target = &self.targets[p.file as usize];
            if self.ctx.cancelled() {
                return;
            }
            let start = p.offset_in_frame as usize;
            let bytes = raw.get(start..start + p.raw_len as usize);
            let ok = checked.entry((p.offset_in_frame, p.raw_len)).or_insert_with(|| match bytes {
                None => Err(format!("pack {pack}: blob {} lies outside its frame", p.id.short())),
                Some(b) if repo.blob_id(b) != p.id => Err(Error::corrupt(
                    "pack",
                    pack,
                    format!("blob {} does not match its hash (frame at offset {})", p.id.short(), at.record.offset),
                )
                .to_string()),
                Some(_) => Ok(()),
            });
            match (ok, bytes) {
                (Ok(()), Some(bytes)) => self.write_piece(target, p.at, bytes),
                (Err(msg), _) => self.fail(target, msg),
                (Ok(()), None) => self.fail(target, "blob lies outside its frame"),
            }
        }
    }

    /// Fails every file that needs `frame`.
    fn fail_frame(&self, frame: &Frame, msg: &str) {
        frame.pieces.iter().for_each(|p| self.fail(&self.targets[p.file as usize], msg));
    }

    /// Writes `bytes` at `at` in the target's file (created by its first
    /// piece; all-zero blocks left as holes), and completes the file if
    /// this was its last piece.
    fn write_piece(&self, target: &Target, at: u64, bytes: &[u8]) {
        let path = &target.job.path;
        let Ok(mut state) = target.state.lock() else { return };
        if *state == State::Failed {
            return;
        }
        let written = (|| -> Result<Option<File>> {
            let file = open(self.ctx, path, &target.job.node, *state == State::New)?;
            *state = State::Created;
            if write_sparse(&file, path, at, bytes)? && at + bytes.len() as u64 == target.job.node.size {
                target.end_written.store(true, Ordering::Relaxed);
            }
            self.ctx.progress.bytes(bytes.len() as u64);
            if target.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                let node = &target.job.node;
                // Holes at the end are not written: the length is set.
                if !target.end_written.load(Ordering::Relaxed) {
                    file.set_len(node.size).at(path)?;
                }
                apply_metadata(self.ctx, path, node, Some(&file))?;
                return Ok(Some(file));
            }
            Ok(None)
        })();
        match written {
            Ok(Some(_)) => {
                let size = target.job.node.size;
                self.ctx.files.fetch_add(1, Ordering::Relaxed);
                self.ctx.bytes.fetch_add(size, Ordering::Relaxed);
                self.ctx.progress.file_done(path, size);
            }
            Ok(None) => {}
            Err(e) => self.fail_locked(target, &mut state, &e.to_string()),
        }
    }

    fn fail(&self, target: &Target, msg: &str) {
        if let Ok(mut state) = target.state.lock() {
            self.fail_locked(target, &mut state, msg);
        }
    }

    /// A partly written file would look restored: better missing than
    /// wrong. Only this restore created it, so removing it is safe.
    fn fail_locked(&self, target: &Target, state: &mut State, msg: &str) {
        match *state {
            State::Failed => return,
            State::Created => {
                let _ = std::fs::remove_file(&target.job.path);
            }
            State::New => {}
        }
        *state = State::Failed;
        self.ctx.warn(&target.job.path, msg);
    }
}

/// The file at `path`, created (new, as on the file-by-file path) by its
/// first piece, opened again for the others. Never through a symlink.
fn open(ctx: &Ctx<'_>, path: &Path, node: &Node, create: bool) -> Result<File> {
    if create && ctx.overwrite {
        // Replace instead of writing through whatever is there.
        let _ = remove_existing(path);
    }
    let mut opts = OpenOptions::new();
    opts.write(true).custom_flags(libc::O_NOFOLLOW);
    if create {
        opts.create_new(true).mode(create_mode(ctx.umask, node.mode).unwrap_or(0o600));
    }
    opts.open(path).at(path)
}

/// Writes `bytes` at `at`, skipping all-zero blocks of [`HOLE_BLOCK`]
/// (counted from the chunk's start, as the file-by-file path does), so
/// that sparse files stay sparse. True if its last byte was written.
fn write_sparse(file: &File, path: &Path, at: u64, bytes: &[u8]) -> Result<bool> {
    let mut run_start = 0;
    let mut pos = 0;
    while pos < bytes.len() {
        let end = (pos + HOLE_BLOCK).min(bytes.len());
        if end - pos == HOLE_BLOCK && bytes[pos..end].iter().all(|&b| b == 0) {
            if run_start < pos {
                file.write_all_at(&bytes[run_start..pos], at + run_start as u64).at(path)?;
            }
            run_start = end;
        }
        pos = end;
    }
    if run_start < bytes.len() {
        file.write_all_at(&bytes[run_start..], at + run_start as u64).at(path)?;
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use super::super::{restore, RestoreOptions};
    use crate::ops::backup::{backup, BackupOptions};
    use crate::repo::{InitOptions, Repository};
    use crate::storage::{FileKind, MemoryStorage, MemoryStorageOptions, Storage};
    use crate::test_data::{pseudo_random, Warnings};

    /// From a store the engine treats as remote: files deduplicated across
    /// two directories and a sparse file come back byte for byte (the
    /// sparse one with its holes), and a damaged frame fails exactly the
    /// files that hold it, each named with the frame, none left behind.
    #[test]
    fn a_remote_restore_writes_shared_frames_into_every_file_and_a_damaged_one_fails_only_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(MemoryStorage::new(MemoryStorageOptions::default()));
        let opts = InitOptions { frame_size: 64 * 1024, ..Default::default() };
        let repo = Repository::init_cached(storage.clone(), &opts, &dir.path().join("cache")).unwrap();
        let src = dir.path().join("src");
        for d in ["a", "b"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
            for i in 0..40u64 {
                std::fs::write(src.join(d).join(format!("f{i:02}")), pseudo_random(30_000, i + 1)).unwrap();
            }
        }
        let mut sparse = vec![0u8; 1 << 20];
        sparse.extend(pseudo_random(5000, 99));
        sparse.extend(vec![0u8; 1 << 20]);
        std::fs::write(src.join("sparse"), &sparse).unwrap();
        let done = backup(
            &repo,
            BackupOptions { paths: vec![src.clone()], ..Default::default() },
            &crate::progress::NoProgress,
        )
        .unwrap();
        let snapshot = repo.load_snapshot(&done.snapshot_id).unwrap();
        let rel = |p: &Path| p.strip_prefix("/").unwrap().to_path_buf();

        let target = dir.path().join("whole");
        let r = restore(
            &repo,
            &snapshot,
            &RestoreOptions { target: target.clone(), ..Default::default() },
            &Warnings::default(),
        )
        .unwrap();
        assert_eq!((r.errors, r.files), (0, 81));
        for d in ["a", "b"] {
            for i in 0..40u64 {
                let p = rel(&src.join(d).join(format!("f{i:02}")));
                assert!(std::fs::read(target.join(&p)).unwrap() == pseudo_random(30_000, i + 1), "{}", p.display());
            }
        }
        let restored_sparse = target.join(rel(&src.join("sparse")));
        assert!(std::fs::read(&restored_sparse).unwrap() == sparse, "the sparse file differs");
        let blocks = std::fs::metadata(&restored_sparse).unwrap().blocks() * 512;
        assert!(blocks < 1 << 20, "the sparse file's holes were written: {blocks} bytes allocated");

        // Damage the frame holding a/f07 (and b/f07, the same content).
        let chunk = |p: &Path| match crate::ops::tree_walk::locate(&repo, &snapshot, p.to_str().unwrap()).unwrap() {
            crate::ops::tree_walk::Located::Node(n) => n.chunks.clone(),
            _ => panic!(),
        };
        let loc = repo.lookup_blob(&chunk(&src.join("a/f07"))[0]).unwrap().unwrap();
        let hex = loc.pack.to_hex();
        let mut pack = storage.get(FileKind::Pack, &hex).unwrap();
        pack[(loc.frame.offset + u64::from(loc.frame.stored_len) / 2) as usize] ^= 0x40;
        storage.put(FileKind::Pack, &hex, &pack).unwrap();
        let mut in_frame = HashSet::new();
        for d in ["a", "b"] {
            for i in 0..40u64 {
                let p = src.join(d).join(format!("f{i:02}"));
                let l = repo.lookup_blob(&chunk(&p)[0]).unwrap().unwrap();
                if (l.pack, l.frame.offset) == (loc.pack, loc.frame.offset) {
                    in_frame.insert(p);
                }
            }
        }
        assert!(in_frame.len() >= 2 && in_frame.len() < 20, "{in_frame:?}");

        let repo = Repository::open_cached_with(storage.clone(), &dir.path().join("cache"), None).unwrap();
        let target = dir.path().join("damaged");
        let warnings = Warnings::default();
        let r = restore(&repo, &snapshot, &RestoreOptions { target: target.clone(), ..Default::default() }, &warnings)
            .unwrap();
        let warnings = warnings.0.into_inner().unwrap();
        assert_eq!(r.errors as usize, in_frame.len(), "{warnings:?}");
        assert_eq!(r.files as usize, 81 - in_frame.len());
        let at = format!("{hex} (frame at offset {})", loc.frame.offset);
        for (path, message) in &warnings {
            assert!(message.contains(&at), "the warning does not name the damaged frame {at}: {message}");
            assert!(!path.exists(), "a partly restored file was left behind: {}", path.display());
        }
        let warned: HashSet<PathBuf> = warnings.iter().map(|(p, _)| p.clone()).collect();
        let expected: HashSet<PathBuf> = in_frame.iter().map(|p| target.join(rel(p))).collect();
        assert_eq!(warned, expected);
    }
}
