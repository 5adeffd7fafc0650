//! A read rate limit (`--limit-read`, a job's `limit-read`): one token
//! bucket shared by every reader of a backup, so files read in parallel
//! and dump streams together stay under the rate a live service can spare.
//!
//! Written here rather than taken from a crate: the governor-style crates
//! count cells, not bytes, and want an async runtime or a clock
//! abstraction; this is a dozen lines of arithmetic under a mutex.

use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes per second, with a burst of a tenth of a second: short enough
/// that a reader cannot outrun the rate for long, long enough that the
/// sleeps are coarse (a sleep per few hundred KiB, not per read).
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// May go negative: a read larger than the burst borrows, and the
    /// borrower sleeps the debt off, so any read size keeps the rate.
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// A limit of `bytes_per_sec` (at least 1).
    pub fn new(bytes_per_sec: u64) -> RateLimit {
        let rate = bytes_per_sec.max(1) as f64;
        let burst = (rate / 10.0).max(1.0);
        RateLimit { rate, burst, state: Mutex::new(Bucket { tokens: burst, at: Instant::now() }) }
    }

    pub fn bytes_per_sec(&self) -> u64 {
        self.rate as u64
    }

    /// Accounts for `n` bytes just read; sleeps until the rate allows them.
    pub fn take(&self, n: usize) {
        if n == 0 {
            return;
        }
        let wait = {
            // A poisoned bucket only means another reader panicked; the
            // numbers in it are still numbers.
            let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(b.at).as_secs_f64() * self.rate;
            b.tokens = (b.tokens + refill).min(self.burst) - n as f64;
            b.at = now;
            if b.tokens < 0.0 {
                Duration::from_secs_f64(-b.tokens / self.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// A reader whose reads are paid for from a shared [`RateLimit`].
pub struct Limited<'a, R> {
    pub inner: R,
    pub limit: Option<&'a RateLimit>,
}

impl<R: Read> Read for Limited<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(l) = self.limit {
            l.take(n);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_rate_across_threads() {
        // 4 MiB/s, 2 MiB read by two threads in 64 KiB reads: >= 0.4 s
        // after the 0.1 s burst (a lower bound only; upper bounds would
        // make the test depend on the machine's load).
        let l = RateLimit::new(4 << 20);
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..16 {
                        l.take(64 << 10);
                    }
                });
            }
        });
        assert!(t.elapsed() >= Duration::from_millis(390), "{:?}", t.elapsed());
    }

    #[test]
    fn a_read_larger_than_the_burst_sleeps_its_debt() {
        let l = RateLimit::new(1 << 20);
        let t = Instant::now();
        l.take(512 << 10);
        assert!(t.elapsed() >= Duration::from_millis(390), "{:?}", t.elapsed());
        let mut r = Limited { inner: &[0u8; 10][..], limit: Some(&l) };
        let mut buf = [0u8; 4];
        assert_eq!(r.read(&mut buf).unwrap(), 4);
    }
}
