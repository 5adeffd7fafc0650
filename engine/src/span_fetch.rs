//! Running planned ranged reads side by side: the reads that
//! `prefetch::pack_reads` plans (each pack's needed frames in one or a few
//! large GETs) are fetched by up to the storage's concurrency hint of
//! workers at once, with a cap on the stored bytes in flight, and every
//! frame of a read is handed, as stored, to the caller on the worker that
//! fetched it: where it lies in the read's buffer, to be opened in place
//! (a copy of each frame cost a third of a restore's page faults).
//! Restore (ops/restore/packs.rs) and the mount's walk-order readahead
//! (vfs/window.rs) read packs this way.
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
/// its pack, and its stored bytes or why they could not be had. The bytes
/// are the frame's part of the read's buffer, the receiver's to change
/// (decrypt in place) until it returns.
pub(crate) type FrameSink<'a> = dyn Fn(&Span, u64, Result<&mut [u8]>) + Sync + 'a;

/// The read buffers, and the stored bytes they may hold: every buffer,
/// in use or idle, is charged its capacity, so reads in flight and idle
/// buffers together stay within the budget. Idle buffers are reused (the
/// smallest that fits): a new one per read cost a page fault and a zeroed
/// page for every 4 KiB received. A read that no idle buffer fits grows
/// the largest idle one (realloc moves a mapping's pages, mremap, instead
/// of faulting in new ones: freeing it and mapping a slightly larger
/// buffer cost half of a www restore's page faults), freeing smaller idle
/// ones until the budget has room for the difference, or waits for one.
struct Buffers {
    state: Mutex<Pool>,
    freed: Condvar,
}

struct Pool {
    /// Budget not charged to any buffer.
    free: u64,
    /// Idle buffers, each with the capacity it was charged.
    idle: Vec<(Vec<u8>, u64)>,
}

impl Buffers {
    /// A buffer for a read of `len` bytes (charged at most the whole
    /// budget: a read larger than it runs alone), and what it is charged.
    fn take(&self, len: u64, budget: u64) -> (Vec<u8>, u64) {
        let need = len.min(budget);
        // A poisoned lock only costs the bound and the reuse: a worker
        // panicked, which is reported when it is joined.
        let Ok(mut pool) = self.state.lock() else { return (Vec::new(), 0) };
        loop {
            let fit =
                pool.idle.iter().enumerate().filter(|(_, b)| b.1 >= need).min_by_key(|(_, b)| b.1).map(|(i, _)| i);
            if let Some(i) = fit {
                return pool.idle.swap_remove(i);
            }
            let largest = pool.idle.iter().enumerate().max_by_key(|(_, b)| b.1).map(|(i, b)| (i, b.1));
            let have = largest.map_or(0, |(_, charged)| charged);
            if pool.free + have >= need {
                pool.free -= need - have;
                let mut buf = match largest {
                    Some((i, _)) => pool.idle.swap_remove(i).0,
                    None => Vec::new(),
                };
                buf.clear();
                buf.reserve_exact(usize::try_from(need).unwrap_or(0));
                return (buf, need);
            }
            if pool.idle.len() > 1 {
                let smallest = pool.idle.iter().enumerate().min_by_key(|(_, b)| b.1).map_or(0, |(i, _)| i);
                let (_, charged) = pool.idle.swap_remove(smallest);
                pool.free += charged;
                continue;
            }
            pool = match self.freed.wait(pool) {
                Ok(p) => p,
                Err(_) => return (Vec::new(), 0),
            };
        }
    }

    /// Gives back a buffer `take` handed out; a buffer that grew past its
    /// charge (a read longer than the budget) is dropped instead.
    fn give(&self, buf: Vec<u8>, charged: u64) {
        if let Ok(mut pool) = self.state.lock() {
            if buf.capacity() as u64 <= charged {
                pool.idle.push((buf, charged));
            } else {
                pool.free += charged;
            }
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
    let buffers = Buffers { state: Mutex::new(Pool { free: in_flight, idle: Vec::new() }), freed: Condvar::new() };
    let workers = workers.clamp(1, reads.len().max(1));
    let (next, buffers) = (&next, &buffers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(move || {
                    while let Some(read) = reads.get(next.fetch_add(1, Ordering::Relaxed)) {
                        if stop() {
                            return;
                        }
                        let (mut buf, charged) = buffers.take(read.end - read.start, in_flight);
                        fetch_one(storage, read, frame, &mut buf);
                        buffers.give(buf, charged);
                    }
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| crate::sync::joined(h.join().map(|()| Ok(())), what).err()).collect()
    })
}

/// One ranged read into `buf`, each of its frames handed over; frame by
/// frame if the read fails.
fn fetch_one(storage: &dyn Storage, read: &Span, frame: &FrameSink<'_>, buf: &mut Vec<u8>) {
    let name = read.pack.to_hex();
    match storage.get_range_into(FileKind::Pack, &name, read.start, read.end - read.start, buf) {
        Ok(()) => {
            for &(offset, len) in &read.frames {
                let from = (offset - read.start) as usize;
                match buf.get_mut(from..from + len as usize) {
                    Some(stored) => frame(read, offset, Ok(stored)),
                    None => frame(read, offset, Err(Error::corrupt("pack", &name, "truncated"))),
                }
            }
        }
        Err(_) if read.frames.len() > 1 => {
            for &(offset, len) in &read.frames {
                match storage.get_range(FileKind::Pack, &name, offset, u64::from(len)) {
                    Ok(mut stored) => frame(read, offset, Ok(&mut stored)),
                    Err(e) => frame(read, offset, Err(e)),
                }
            }
        }
        Err(e) => frame(read, read.frames[0].0, Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(budget: u64) -> Buffers {
        Buffers { state: Mutex::new(Pool { free: budget, idle: Vec::new() }), freed: Condvar::new() }
    }

    fn charged(b: &Buffers) -> u64 {
        let p = b.state.lock().unwrap();
        100 - p.free - p.idle.iter().map(|(_, c)| c).sum::<u64>()
    }

    /// Every frame of a read is handed over once, as the bytes where it
    /// lies in the read's buffer: a receiver that changes them (opens them
    /// in place) changes no other frame, and the buffer, reused by the next
    /// read, holds that read's bytes. A read that fails (here: past the
    /// pack's end) is repeated frame by frame: the frames that can be read
    /// are handed over, the one that cannot gets its own error.
    #[test]
    fn frames_are_handed_over_in_the_read_buffer_and_a_failed_read_frame_by_frame() {
        use crate::id::Id;
        use crate::storage::{MemoryStorage, MemoryStorageOptions};
        let storage = MemoryStorage::new(MemoryStorageOptions::default());
        let pack = Id::hash(b"pack");
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        storage.put(FileKind::Pack, &pack.to_hex(), &bytes).unwrap();
        let span = |start: u64, end: u64, frames: &[(u64, u32)]| Span { pack, start, end, frames: frames.to_vec() };
        let reads = [
            span(0, 300, &[(0, 100), (100, 50), (200, 100)]),
            span(400, 600, &[(400, 200)]),
            // Past the end: frame by frame, the last one fails.
            span(900, 1100, &[(900, 60), (960, 40), (1000, 100)]),
        ];
        let got = Mutex::new(Vec::new());
        let errors = fetch_spans(
            &storage,
            &reads,
            1,
            1 << 20,
            &|| false,
            &|read: &Span, offset, stored: Result<&mut [u8]>| {
                let entry = stored.map(|s| {
                    let copy = s.to_vec();
                    // What opening a frame in place does to its bytes.
                    s.fill(0xEE);
                    copy
                });
                got.lock().unwrap().push((read.start, offset, entry.map_err(|e| e.to_string())));
            },
            "test worker",
        );
        assert!(errors.is_empty());
        let got = got.into_inner().unwrap();
        let offsets: Vec<u64> = got.iter().map(|g| g.1).collect();
        assert_eq!(offsets, [0, 100, 200, 400, 900, 960, 1000]);
        for (start, offset, entry) in &got {
            let len =
                reads.iter().find(|r| r.start == *start).unwrap().frames.iter().find(|f| f.0 == *offset).unwrap().1;
            match entry {
                Ok(b) => {
                    assert!(b[..] == bytes[*offset as usize..(*offset + u64::from(len)) as usize], "frame {offset}")
                }
                Err(e) => {
                    assert_eq!(*offset, 1000, "frame {offset}: {e}");
                    assert!(e.contains("past end"), "{e}");
                }
            }
        }
    }

    /// A buffer given back is handed out again to a read it fits (its
    /// pages stay mapped), and buffers in use and idle together never hold
    /// more than the budget: a read that fits no idle buffer frees idle
    /// ones to make room.
    #[test]
    fn buffers_are_reused_within_the_budget() {
        let b = pool(100);
        let (mut first, c) = b.take(60, 100);
        first.resize(60, 1);
        let at = first.as_ptr();
        b.give(first, c);
        let (second, c2) = b.take(40, 100);
        assert_eq!((second.as_ptr(), c2), (at, 60), "the idle buffer was not reused");
        assert_eq!(charged(&b), 60);
        // 60 in use, 30 more fit.
        let (third, c3) = b.take(30, 100);
        assert_eq!((third.capacity() >= 30, c3, charged(&b)), (true, 30, 90));
        b.give(second, c2);
        // 70 fit no idle buffer (60 and nothing else) and 10 are free: the
        // idle 60 is grown to 70.
        let (fourth, c4) = b.take(70, 100);
        assert_eq!((c4, charged(&b), fourth.capacity() >= 70), (70, 100, true));
        assert!(b.state.lock().unwrap().idle.is_empty());
        b.give(third, c3);
        b.give(fourth, c4);
        // A read larger than the whole budget is charged the budget: the
        // idle 30 is freed and the idle 70 grown.
        let (big, c5) = b.take(500, 100);
        assert_eq!((c5, big.capacity() >= 100), (100, true));
        assert!(b.state.lock().unwrap().idle.is_empty());
        b.give(big, c5);
        let p = b.state.lock().unwrap();
        assert!(p.free + p.idle.iter().map(|(_, c)| c).sum::<u64>() == 100);
    }
}
