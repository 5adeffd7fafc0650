//! Running planned ranged reads side by side: the reads that
//! `prefetch::pack_reads` plans (each pack's needed frames in one or a few
//! large GETs) are fetched by up to the storage's concurrency hint of
//! workers at once, with a cap on the stored bytes in flight, and every
//! frame of a read is handed, as stored, to the caller on the worker that
//! fetched it. Restore (ops/restore/packs.rs) and the mount's walk-order
//! readahead (vfs/window.rs) read packs this way.
//!
//! A read that fails is repeated frame by frame, so that the frames that
//! can be read are, and each that cannot is handed over with its own
//! error.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::prefetch::Span;
use crate::storage::{FileKind, Storage};

/// What receives each frame of a read: the read, the frame's offset in
/// its pack, and its stored bytes or why they could not be had.
pub(crate) type FrameSink<'a> = dyn Fn(&Span, u64, Result<Vec<u8>>) + Sync + 'a;

/// Stored bytes that may be in flight; taken before a GET, given back
/// once its frames are handed over.
struct Budget {
    free: Mutex<u64>,
    freed: Condvar,
}

impl Budget {
    fn take(&self, n: u64) {
        // A poisoned lock only costs the bound: a worker panicked, which
        // is reported when it is joined.
        let Ok(free) = self.free.lock() else { return };
        if let Ok(mut free) = self.freed.wait_while(free, |f| *f < n) {
            *free -= n;
        }
    }

    fn give(&self, n: u64) {
        if let Ok(mut free) = self.free.lock() {
            *free += n;
        }
        self.freed.notify_all();
    }
}

/// Fetches `reads` with up to `workers` GETs at once and at most
/// `in_flight` stored bytes in flight, and calls `frame(read, offset,
/// stored bytes or error)` for every frame of every read, once, on the
/// worker that fetched it. `stop` is asked before each read (a cancelled
/// restore). Returns an error (a bug, naming the workers as `what`) for
/// each worker that panicked, once all have ended.
pub(crate) fn fetch_spans(
    storage: &dyn Storage,
    reads: &[Span],
    workers: usize,
    in_flight: u64,
    stop: &(dyn Fn() -> bool + Sync),
    frame: &FrameSink<'_>,
    what: &'static str,
) -> Vec<Error> {
    let next = AtomicUsize::new(0);
    let budget = Budget { free: Mutex::new(in_flight), freed: Condvar::new() };
    let workers = workers.clamp(1, reads.len().max(1));
    let (next, budget) = (&next, &budget);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(move || {
                    while let Some(read) = reads.get(next.fetch_add(1, Ordering::Relaxed)) {
                        if stop() {
                            return;
                        }
                        let len = (read.end - read.start).min(in_flight);
                        budget.take(len);
                        fetch_one(storage, read, frame);
                        budget.give(len);
                    }
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| crate::sync::joined(h.join().map(|()| Ok(())), what).err()).collect()
    })
}

/// One ranged read, each of its frames handed over; frame by frame if
/// the read fails.
fn fetch_one(storage: &dyn Storage, read: &Span, frame: &FrameSink<'_>) {
    let name = read.pack.to_hex();
    match storage.get_range(FileKind::Pack, &name, read.start, read.end - read.start) {
        Ok(data) => {
            for &(offset, len) in &read.frames {
                let from = (offset - read.start) as usize;
                match data.get(from..from + len as usize) {
                    Some(stored) => frame(read, offset, Ok(stored.to_vec())),
                    None => frame(read, offset, Err(Error::corrupt("pack", &name, "truncated"))),
                }
            }
        }
        Err(_) if read.frames.len() > 1 => {
            for &(offset, len) in &read.frames {
                frame(read, offset, storage.get_range(FileKind::Pack, &name, offset, u64::from(len)));
            }
        }
        Err(e) => frame(read, read.frames[0].0, Err(e)),
    }
}
