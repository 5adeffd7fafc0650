//! A gauge of the mount's background work: chunk prefetches, directory
//! readahead batches and a front end's read workers, running or waiting
//! for storage.
//!
//! It exists for front ends that busy-poll for requests (fuse-mount's
//! `spin.rs`). Polling pays off for a walker's chain of round trips that
//! are answered from memory, but while background work runs it takes a
//! CPU that the work (decryption, decompression) or the storage server
//! needs: `cp -a` of the www snapshot through a local mount took twice as
//! long with the dispatch thread polling, and from an S3 server on the
//! same machine five to ten times restore's time (BENCHMARKS.md, "arc
//! mount: restoring through the mount"). So the front end polls only
//! while this gauge has been quiet for a while.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct WorkGauge {
    epoch: Instant,
    running: AtomicUsize,
    /// Nanoseconds since `epoch` at which the last piece of work ended;
    /// [`NEVER`] before the first.
    last_end_ns: AtomicU64,
}

const NEVER: u64 = u64::MAX;

/// One piece of work in flight; it ends when the guard is dropped,
/// however the work ends (a panic included).
pub struct WorkGuard(Arc<WorkGauge>);

impl Drop for WorkGuard {
    fn drop(&mut self) {
        let g = &self.0;
        g.last_end_ns.store(g.now_ns(), Ordering::Relaxed);
        g.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for WorkGauge {
    fn default() -> Self {
        WorkGauge { epoch: Instant::now(), running: AtomicUsize::new(0), last_end_ns: AtomicU64::new(NEVER) }
    }
}

impl WorkGauge {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Counts a piece of work until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> WorkGuard {
        self.running.fetch_add(1, Ordering::AcqRel);
        WorkGuard(self.clone())
    }

    /// Nothing has run for at least `d`: the CPUs are not needed by the
    /// mount's own background work.
    pub fn quiet_for(&self, d: Duration) -> bool {
        if self.running.load(Ordering::Acquire) != 0 {
            return false;
        }
        let last = self.last_end_ns.load(Ordering::Relaxed);
        last == NEVER || self.now_ns().saturating_sub(last) >= d.as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_only_when_nothing_runs_and_the_last_piece_ended_long_enough_ago() {
        let g = Arc::new(WorkGauge::default());
        let window = Duration::from_millis(20);
        assert!(g.quiet_for(window), "a gauge that never ran anything is quiet");
        let a = g.start();
        let b = g.start();
        assert!(!g.quiet_for(Duration::ZERO), "work in flight");
        drop(a);
        assert!(!g.quiet_for(Duration::ZERO), "one piece still in flight");
        drop(b);
        assert!(g.quiet_for(Duration::ZERO));
        assert!(!g.quiet_for(window), "the last piece ended just now");
        std::thread::sleep(window);
        assert!(g.quiet_for(window));
    }

    #[test]
    fn a_panicking_piece_of_work_still_ends() {
        let g = Arc::new(WorkGauge::default());
        let g2 = g.clone();
        let r = std::thread::spawn(move || {
            let _guard = g2.start();
            panic!("work failed");
        })
        .join();
        assert!(r.is_err());
        assert!(g.quiet_for(Duration::ZERO));
    }
}
