//! A storage wrapper that misbehaves the way a remote store over a network
//! does, for the engine's own tests: slow requests, transient failures,
//! writes whose response is lost after they took effect, requests that
//! arrive twice, and listings that lag behind writes and deletes. Nothing
//! outside tests should use it.
//!
//! The wrapper plays both sides of the wire: each call is one or more
//! "requests" to the inner storage, and, like [`super::RemoteStorage`]'s
//! retry layer, it retries a failed request up to [`Faults::retries`]
//! times. So with retries the engine sees the effects a real client
//! produces (a put made twice, a delete of something already gone, an
//! error after the write happened when retries run out); with
//! `retries: 0` every injected error reaches the engine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{FileKind, FileStat, Storage};
use crate::error::{Error, Result};

/// What goes wrong, and how often (probabilities per request, 0.0..=1.0).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Seed of the pseudo-random choices: a failing run can be repeated.
    pub seed: u64,
    /// Every request sleeps up to this long first.
    pub delay: Duration,
    /// A request fails before it takes effect (a refused connection, a 503).
    pub transient: f64,
    /// A put or delete takes effect, then its response is lost.
    pub lost_response: f64,
    /// A put or delete is carried out twice (a proxy or the client resent it).
    pub duplicate: f64,
    /// Listings leave out files created less than this long ago and
    /// still show files deleted less than this long ago.
    pub list_lag: Duration,
    /// Retries of a failed request, as the remote backend's retry layer.
    pub retries: usize,
}

/// How many faults were injected, so a test can show it exercised them.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultCounts {
    pub transient: u64,
    pub lost_responses: u64,
    pub duplicates: u64,
    pub hidden_from_listings: u64,
    pub errors_returned: u64,
}

pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    faults: Mutex<Faults>,
    rng: AtomicU64,
    /// Recent puts and deletes, for lagging listings.
    recent_puts: Mutex<HashMap<(u8, String), Instant>>,
    recent_deletes: Mutex<HashMap<(u8, String), (Instant, FileStat)>>,
    transient: AtomicU64,
    lost: AtomicU64,
    duplicates: AtomicU64,
    hidden: AtomicU64,
    returned: AtomicU64,
}

fn injected(what: &str, kind: FileKind, name: &str) -> Error {
    Error::Remote {
        object: format!("faulty:{}/{name}", kind.describe()),
        reason: format!("injected {what}"),
        attempts: 1,
    }
}

impl FaultyStorage {
    pub fn new(inner: Arc<dyn Storage>, faults: Faults) -> FaultyStorage {
        let seed = faults.seed | 1;
        FaultyStorage {
            inner,
            faults: Mutex::new(faults),
            rng: AtomicU64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            recent_puts: Mutex::new(HashMap::new()),
            recent_deletes: Mutex::new(HashMap::new()),
            transient: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            hidden: AtomicU64::new(0),
            returned: AtomicU64::new(0),
        }
    }

    /// Changes the faults from now on (e.g. none, to verify the result).
    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut f) = self.faults.lock() {
            *f = faults;
        }
    }

    pub fn counts(&self) -> FaultCounts {
        FaultCounts {
            transient: self.transient.load(Ordering::Relaxed),
            lost_responses: self.lost.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            hidden_from_listings: self.hidden.load(Ordering::Relaxed),
            errors_returned: self.returned.load(Ordering::Relaxed),
        }
    }

    fn faults(&self) -> Faults {
        self.faults.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// xorshift64: cheap, and a fixed sequence per seed (threads
    /// interleave it differently, which is the point of running them).
    fn next(&self) -> u64 {
        let mut cur = self.rng.load(Ordering::Relaxed);
        loop {
            let mut x = cur;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match self.rng.compare_exchange_weak(cur, x, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return x,
                Err(now) => cur = now,
            }
        }
    }

    fn chance(&self, p: f64) -> bool {
        p > 0.0 && (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }

    fn pause(&self, f: &Faults) {
        if !f.delay.is_zero() {
            let nanos = f.delay.as_nanos().max(1) as u64;
            std::thread::sleep(Duration::from_nanos(self.next() % nanos));
        }
    }

    /// Runs one call as requests with retries. `effect` is the request;
    /// `mutates` says whether its response can be lost after it took
    /// effect and whether it can be duplicated.
    fn call<T>(&self, kind: FileKind, name: &str, mutates: bool, effect: impl Fn() -> Result<T>) -> Result<T> {
        let f = self.faults();
        let mut attempt = 0;
        loop {
            self.pause(&f);
            let outcome = if self.chance(f.transient) {
                self.transient.fetch_add(1, Ordering::Relaxed);
                Err(injected("transient failure", kind, name))
            } else {
                let r = effect();
                if mutates && r.is_ok() && self.chance(f.duplicate) {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                    let _ = effect();
                }
                if mutates && r.is_ok() && self.chance(f.lost_response) {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                    Err(injected("lost response (the request took effect)", kind, name))
                } else {
                    r
                }
            };
            match outcome {
                Err(Error::Remote { .. }) if attempt < f.retries => attempt += 1,
                Err(e) => {
                    if matches!(e, Error::Remote { .. }) {
                        self.returned.fetch_add(1, Ordering::Relaxed);
                    }
                    return Err(e);
                }
                ok => return ok,
            }
        }
    }

    /// A put as requests (`effect`), and what lagging listings must know of it.
    fn put_with(&self, kind: FileKind, name: &str, effect: impl Fn() -> Result<()>) -> Result<()> {
        // Only a new name is missing from lagging listings; an overwritten
        // one (a refreshed lock or session) stays listed, as on S3.
        let existed = self.inner.exists(kind, name).unwrap_or(false);
        self.call(kind, name, true, effect)?;
        if !existed && !self.faults().list_lag.is_zero() {
            if let Ok(mut p) = self.recent_puts.lock() {
                p.insert((kind as u8, name.to_string()), Instant::now());
            }
        }
        if let Ok(mut d) = self.recent_deletes.lock() {
            d.remove(&(kind as u8, name.to_string()));
        }
        Ok(())
    }

    fn lagging(&self, kind: FileKind, mut listed: Vec<(String, FileStat)>) -> Vec<(String, FileStat)> {
        let lag = self.faults().list_lag;
        if lag.is_zero() {
            return listed;
        }
        let now = Instant::now();
        let k = kind as u8;
        if let Ok(mut puts) = self.recent_puts.lock() {
            puts.retain(|_, t| now.duration_since(*t) < lag);
            let before = listed.len();
            listed.retain(|(n, _)| !puts.contains_key(&(k, n.clone())));
            self.hidden.fetch_add((before - listed.len()) as u64, Ordering::Relaxed);
        }
        if let Ok(mut dels) = self.recent_deletes.lock() {
            dels.retain(|_, (t, _)| now.duration_since(*t) < lag);
            for ((dk, n), (_, stat)) in dels.iter() {
                if *dk == k && !listed.iter().any(|(m, _)| m == n) {
                    listed.push((n.clone(), *stat));
                    self.hidden.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        listed
    }
}

impl Storage for FaultyStorage {
    fn location(&self) -> String {
        format!("faulty:{}", self.inner.location())
    }

    fn local_path(&self) -> Option<&std::path::Path> {
        None
    }

    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.put_with(kind, name, || self.inner.put(kind, name, data))
    }

    fn put_owned(&self, kind: FileKind, name: &str, data: Bytes) -> Result<()> {
        // A retried or duplicated request sends the same bytes again, as a
        // client does: a clone shares them.
        self.put_with(kind, name, || self.inner.put_owned(kind, name, data.clone()))
    }

    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.call(kind, name, false, || self.inner.get(kind, name))
    }

    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.call(kind, name, false, || self.inner.get_range(kind, name, offset, len))
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.call(kind, name, false, || self.inner.size(kind, name))
    }

    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        self.call(kind, name, false, || self.inner.exists(kind, name))
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        Ok(self.list_stat(kind)?.into_iter().map(|(n, s)| (n, s.len)).collect())
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        let before = if self.faults().list_lag.is_zero() { None } else { self.inner.stat(kind, name).ok() };
        self.call(kind, name, true, || self.inner.delete(kind, name))?;
        if let (Some(stat), Ok(mut d)) = (before, self.recent_deletes.lock()) {
            d.insert((kind as u8, name.to_string()), (Instant::now(), stat));
        }
        Ok(())
    }

    fn stat(&self, kind: FileKind, name: &str) -> Result<FileStat> {
        self.call(kind, name, false, || self.inner.stat(kind, name))
    }

    fn list_stat(&self, kind: FileKind) -> Result<Vec<(String, FileStat)>> {
        let listed = self.call(kind, "(listing)", false, || self.inner.list_stat(kind))?;
        Ok(self.lagging(kind, listed))
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency().max(4)
    }

    fn list_tmp(&self) -> Result<Vec<(String, FileStat)>> {
        self.inner.list_tmp()
    }

    fn delete_tmp(&self, name: &str) -> Result<()> {
        self.inner.delete_tmp(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryStorage, MemoryStorageOptions};

    #[test]
    fn lies_as_configured_and_retries_like_a_client() {
        let mem: Arc<dyn Storage> = Arc::new(MemoryStorage::new(MemoryStorageOptions::default()));
        let lag = Faults { list_lag: Duration::from_secs(60), ..Default::default() };
        let s = FaultyStorage::new(mem.clone(), lag.clone());
        s.put(FileKind::Index, "a", b"x").unwrap();
        // Readable at once, not listed yet.
        assert_eq!(s.get(FileKind::Index, "a").unwrap(), b"x");
        assert!(s.list(FileKind::Index).unwrap().is_empty());
        s.set_faults(Faults::default());
        assert_eq!(s.list(FileKind::Index).unwrap().len(), 1);
        s.set_faults(lag);
        s.delete(FileKind::Index, "a").unwrap();
        assert_eq!(s.list(FileKind::Index).unwrap().len(), 1, "a deleted file still listed");
        assert!(matches!(s.get(FileKind::Index, "a"), Err(Error::Missing { .. })));

        // Every response lost, no retries: the write happened, the caller
        // was told it failed.
        s.set_faults(Faults { lost_response: 1.0, ..Default::default() });
        assert!(s.put(FileKind::Index, "b", b"y").is_err());
        assert_eq!(mem.get(FileKind::Index, "b").unwrap(), b"y");
        // Half the requests fail transiently; with retries they get through.
        s.set_faults(Faults { transient: 0.5, retries: 30, seed: 7, ..Default::default() });
        for i in 0..20 {
            s.put(FileKind::Index, &format!("c{i}"), b"z").unwrap();
        }
        let c = s.counts();
        assert!(c.transient > 0 && c.lost_responses == 1 && c.hidden_from_listings >= 2, "{c:?}");
    }
}
