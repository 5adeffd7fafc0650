//! Sorting and merging more fixed-size records than fit in memory: the
//! out-of-core half of `check` and `prune`, whose sets of blobs grow with
//! the repository (100M chunks are gigabytes as hash maps).
//!
//! Records are byte arrays compared bytewise (callers lay keys out
//! big-endian, so byte order is key order). They are collected in a buffer
//! of bounded size; a full buffer is sorted and written to a run file in a
//! scratch directory; at the end the runs are merged, at most
//! [`MAX_FAN_IN`] at a time (more runs are first merged into fewer), so
//! memory is the buffer plus one read buffer per merged run, whatever the
//! number of records. A sorter whose records fit in its buffer never
//! touches the disk.
//!
//! The run files are scratch of one process, deleted as soon as their
//! records are no longer needed (a [`Sorted`] or a [`Merged`] stream
//! dropped) and in any case with their directory (a scratch directory
//! owned by the caller), never read by another version: they are not a
//! repository or cache format.
//!
//! Why not a crate: the one that fits (extsort) serializes item by item
//! through a trait, merges every run at once (one open file and buffer per
//! run), and builds a doc-test generator into every build of ours; fixed
//! records compared as bytes need none of that and fit in this file.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// Runs merged at once; more runs are merged in passes. 128 runs of a
/// 64 MiB buffer are 8 GiB of records (178M 48-byte copies of blobs), so
/// that a repository of 100M chunks is merged in one pass (a second one
/// writes the records to scratch again: 4 GB more at its peak); the cost is
/// a 64 KiB read buffer and an open file per run (8 MiB, 128 descriptors).
pub const MAX_FAN_IN: usize = 128;

/// Read and write buffer of one run file.
const IO_BUFFER: usize = 64 * 1024;

/// Names run files uniquely within a process.
static NEXT_RUN: AtomicU64 = AtomicU64::new(0);

/// A number as sort-key bytes: big-endian, so that bytewise order is
/// numeric order. (The repository's formats are little-endian; these
/// records are not a format.)
#[allow(clippy::big_endian_bytes)]
pub fn key_u32(n: u32) -> [u8; 4] {
    n.to_be_bytes()
}

/// The number of [`key_u32`] bytes at `at` in `rec`.
#[allow(clippy::big_endian_bytes)]
pub fn u32_at(rec: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([rec[at], rec[at + 1], rec[at + 2], rec[at + 3]])
}

/// Collects records of `N` bytes and hands them back sorted.
pub struct Sorter<const N: usize> {
    dir: PathBuf,
    buf: Vec<[u8; N]>,
    cap: usize,
    runs: Vec<PathBuf>,
    dedup: bool,
    pushed: u64,
}

impl<const N: usize> Sorter<N> {
    /// A sorter writing its runs under `dir` and holding at most
    /// `memory` bytes of records at once. With `dedup`, equal records come
    /// out once.
    pub fn new(dir: &Path, memory: usize, dedup: bool) -> Self {
        let cap = (memory / N).max(1024);
        Sorter { dir: dir.to_path_buf(), buf: Vec::new(), cap, runs: Vec::new(), dedup, pushed: 0 }
    }

    pub fn push(&mut self, rec: [u8; N]) -> Result<()> {
        if self.buf.len() >= self.cap {
            self.spill()?;
        }
        if self.buf.capacity() == 0 {
            // Grow to the cap in steps: small inputs stay small.
            self.buf.reserve(self.cap.min(64 * 1024));
        }
        self.buf.push(rec);
        self.pushed += 1;
        Ok(())
    }

    /// Records pushed so far (before dedup).
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    fn sort_buf(&mut self) {
        self.buf.sort_unstable();
        if self.dedup {
            self.buf.dedup();
        }
    }

    fn spill(&mut self) -> Result<()> {
        self.sort_buf();
        let path = new_run_path(&self.dir);
        write_run(&path, self.buf.drain(..).map(Ok))?;
        self.runs.push(path);
        Ok(())
    }

    /// Every record pushed, in order, read once; the run files go when
    /// the returned stream is dropped.
    pub fn finish(self) -> Result<Merged<N>> {
        let sorted = self.finish_kept()?;
        let mut merged = sorted.iter()?;
        merged._owned = Some(sorted);
        Ok(merged)
    }

    /// Every record pushed, sorted, to be read as often as needed (each
    /// [`Sorted::iter`] merges the runs again; prune's plan reads the
    /// copies of blobs twice rather than writing the half it needs again).
    pub fn finish_kept(mut self) -> Result<Sorted<N>> {
        if self.runs.is_empty() {
            self.sort_buf();
            let buf = std::mem::take(&mut self.buf);
            return Ok(Sorted { memory: Arc::new(buf), runs: Vec::new(), dedup: false });
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        self.buf = Vec::new();
        let mut runs = std::mem::take(&mut self.runs);
        // Merge passes until one merge can take every run.
        while runs.len() > MAX_FAN_IN {
            let mut next = Vec::new();
            for group in runs.chunks(MAX_FAN_IN) {
                let path = new_run_path(&self.dir);
                write_run(&path, merge::<N>(group, self.dedup)?)?;
                for r in group {
                    let _ = std::fs::remove_file(r);
                }
                next.push(path);
            }
            runs = next;
        }
        Ok(Sorted { memory: Arc::new(Vec::new()), runs, dedup: self.dedup })
    }
}

/// The records of a [`Sorter`], sorted: in memory when they fit its
/// buffer, else in at most [`MAX_FAN_IN`] run files, removed when this is
/// dropped.
pub struct Sorted<const N: usize> {
    memory: Arc<Vec<[u8; N]>>,
    runs: Vec<PathBuf>,
    dedup: bool,
}

impl<const N: usize> Sorted<N> {
    /// The records, in order (a new merge of the runs each time).
    pub fn iter(&self) -> Result<Merged<N>> {
        if self.runs.is_empty() {
            let source = Source::Memory { recs: self.memory.clone(), at: 0 };
            return Ok(Merged { source, dedup: false, last: None, _owned: None });
        }
        merge(&self.runs, self.dedup)
    }

    /// Bytes of its run files (what it takes of the scratch disk).
    pub fn disk_bytes(&self) -> u64 {
        self.runs.iter().filter_map(|r| std::fs::metadata(r).ok()).map(|m| m.len()).sum()
    }
}

impl<const N: usize> Drop for Sorted<N> {
    fn drop(&mut self) {
        // Scratch: the directory goes with the operation anyway; this
        // frees the disk as soon as the records are no longer needed.
        for r in &self.runs {
            let _ = std::fs::remove_file(r);
        }
    }
}

fn new_run_path(dir: &Path) -> PathBuf {
    dir.join(format!("run-{}-{}", std::process::id(), NEXT_RUN.fetch_add(1, Ordering::Relaxed)))
}

/// Writes records to a new file at `path` (a run, or any sorted stream
/// kept for a second pass; read it back with [`Merged::open`]).
pub fn write_run<const N: usize>(path: &Path, recs: impl Iterator<Item = Result<[u8; N]>>) -> Result<u64> {
    let mut w = RunWriter::create(path)?;
    for r in recs {
        w.push(&r?)?;
    }
    w.finish()
}

/// Writes records one by one to a file read back with [`Merged::open`].
pub struct RunWriter<const N: usize> {
    path: PathBuf,
    w: BufWriter<File>,
    n: u64,
}

impl<const N: usize> RunWriter<N> {
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(RunWriter { path: path.to_path_buf(), w: BufWriter::with_capacity(IO_BUFFER, file), n: 0 })
    }

    pub fn push(&mut self, rec: &[u8; N]) -> Result<()> {
        self.n += 1;
        self.w.write_all(rec).map_err(|e| Error::io(&self.path, e))
    }

    /// Flushes; returns the records written.
    pub fn finish(mut self) -> Result<u64> {
        self.w.flush().map_err(|e| Error::io(&self.path, e))?;
        Ok(self.n)
    }
}

fn merge<const N: usize>(runs: &[PathBuf], dedup: bool) -> Result<Merged<N>> {
    let mut readers = Vec::with_capacity(runs.len());
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for path in runs {
        let mut r = RunReader::open(path)?;
        if let Some(rec) = r.next_rec()? {
            heap.push(Reverse((rec, readers.len())));
        }
        readers.push(r);
    }
    Ok(Merged { source: Source::Runs { readers, heap }, dedup, last: None, _owned: None })
}

struct RunReader<const N: usize> {
    path: PathBuf,
    r: BufReader<File>,
}

impl<const N: usize> RunReader<N> {
    fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(RunReader { path: path.to_path_buf(), r: BufReader::with_capacity(IO_BUFFER, f) })
    }

    fn next_rec(&mut self) -> Result<Option<[u8; N]>> {
        let mut rec = [0u8; N];
        match self.r.read_exact(&mut rec) {
            Ok(()) => Ok(Some(rec)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }
}

enum Source<const N: usize> {
    Memory { recs: Arc<Vec<[u8; N]>>, at: usize },
    Runs { readers: Vec<RunReader<N>>, heap: BinaryHeap<Reverse<([u8; N], usize)>> },
}

/// The sorted records of a [`Sorter`], or of one file written by
/// [`write_run`].
pub struct Merged<const N: usize> {
    source: Source<N>,
    dedup: bool,
    last: Option<[u8; N]>,
    /// The runs it reads, when it is their only reader ([`Sorter::finish`]):
    /// dropped after `source`, so the files go once the stream is done.
    _owned: Option<Sorted<N>>,
}

impl<const N: usize> Merged<N> {
    /// Reads back a file written by [`write_run`], in its order.
    pub fn open(path: &Path) -> Result<Self> {
        merge(&[path.to_path_buf()], false)
    }

    fn next_raw(&mut self) -> Result<Option<[u8; N]>> {
        match &mut self.source {
            Source::Memory { recs, at } => {
                let rec = recs.get(*at).copied();
                *at += 1;
                Ok(rec)
            }
            Source::Runs { readers, heap } => {
                let Some(Reverse((rec, i))) = heap.pop() else { return Ok(None) };
                if let Some(next) = readers[i].next_rec()? {
                    heap.push(Reverse((next, i)));
                }
                Ok(Some(rec))
            }
        }
    }
}

impl<const N: usize> Iterator for Merged<N> {
    type Item = Result<[u8; N]>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rec = match self.next_raw() {
                Ok(Some(r)) => r,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            if self.dedup && self.last == Some(rec) {
                continue;
            }
            self.last = Some(rec);
            return Some(Ok(rec));
        }
    }
}

#[cfg(test)]
#[allow(clippy::big_endian_bytes)]
mod tests {
    use super::*;

    fn rec(n: u64) -> [u8; 8] {
        n.to_be_bytes()
    }

    /// Spilled runs, a multi-pass merge and dedup across runs give exactly
    /// what an in-memory sort gives.
    #[test]
    fn runs_merge_in_passes_to_the_in_memory_order() {
        let dir = tempfile::tempdir().unwrap();
        // 1024 records a run (the minimum), 200 runs: more than one merge pass.
        let mut s = Sorter::<8>::new(dir.path(), 0, true);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut all = Vec::new();
        for _ in 0..200 * 1024 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Values repeat, within and across runs.
            let v = x % 50_000;
            all.push(v);
            s.push(rec(v)).unwrap();
        }
        assert!(s.runs.len() > MAX_FAN_IN, "{} runs", s.runs.len());
        all.sort_unstable();
        all.dedup();
        let got: Vec<u64> = s.finish().unwrap().map(|r| u64::from_be_bytes(r.unwrap())).collect();
        assert_eq!(got, all);
        // Only the merge's own inputs are left, and they go with the dir.
        assert!(std::fs::read_dir(dir.path()).unwrap().count() <= MAX_FAN_IN);
    }

    #[test]
    fn small_inputs_stay_in_memory_and_keep_duplicates_without_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sorter::<8>::new(dir.path(), 1 << 20, false);
        for v in [5, 3, 5, 1] {
            s.push(rec(v)).unwrap();
        }
        let got: Vec<u64> = s.finish().unwrap().map(|r| u64::from_be_bytes(r.unwrap())).collect();
        assert_eq!(got, vec![1, 3, 5, 5]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let path = dir.path().join("kept");
        write_run(&path, got.iter().map(|v| Ok(rec(*v)))).unwrap();
        let again: Vec<u64> = Merged::<8>::open(&path).unwrap().map(|r| u64::from_be_bytes(r.unwrap())).collect();
        assert_eq!(again, vec![1, 3, 5, 5]);
    }

    /// Kept records read twice give the same stream twice, and their run
    /// files are gone once they are dropped (prune's plan relies on both:
    /// two passes over the copies, scratch freed before the repack).
    #[test]
    fn kept_runs_read_twice_and_go_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sorter::<8>::new(dir.path(), 0, true);
        for v in (0..5000u64).rev().chain(0..100) {
            s.push(rec(v % 3000)).unwrap();
        }
        let kept = s.finish_kept().unwrap();
        assert!(kept.disk_bytes() > 0);
        let first: Vec<[u8; 8]> = kept.iter().unwrap().map(|r| r.unwrap()).collect();
        let second: Vec<[u8; 8]> = kept.iter().unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(first, second);
        assert_eq!(first, (0..3000u64).map(rec).collect::<Vec<_>>());
        drop(kept);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "run files left behind");
        // A stream from `finish` removes its runs when dropped too.
        let mut s = Sorter::<8>::new(dir.path(), 0, false);
        for v in 0..3000u64 {
            s.push(rec(v)).unwrap();
        }
        let mut merged = s.finish().unwrap();
        assert_eq!(merged.next().map(|r| r.unwrap()), Some(rec(0)));
        assert!(std::fs::read_dir(dir.path()).unwrap().count() > 0);
        drop(merged);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "run files left behind");
    }
}
