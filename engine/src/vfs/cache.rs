//! A byte-bounded LRU cache that loads each missing key once. Concurrent
//! requests for a key that is being loaded wait for that load instead of
//! repeating it ("single flight"): for chunks a repeat costs a pack read, a
//! decompression and a hash, and with several FUSE threads plus readahead
//! the same chunk is routinely asked for by two threads at once.
//!
//! The lock is held only to look up, insert and evict, never while loading,
//! so readers of different keys do not wait for each other.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use lru::LruCache;

use super::VfsError;

pub(crate) struct FlightCache<K: Hash + Eq, V> {
    state: Mutex<State<K, V>>,
    budget: usize,
}

struct State<K: Hash + Eq, V> {
    lru: LruCache<K, (V, usize)>,
    bytes: usize,
    loading: HashMap<K, Arc<Flight<V>>>,
}

/// One load in progress; waiters block on `done` until `result` is set.
pub(crate) struct Flight<V> {
    result: Mutex<Option<Result<V, VfsError>>>,
    done: Condvar,
}

impl<V: Clone> Flight<V> {
    pub fn wait(&self) -> Result<V, VfsError> {
        let mut r = lock(&self.result);
        loop {
            if let Some(r) = r.as_ref() {
                return r.clone();
            }
            r = self.done.wait(r).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// What [`FlightCache::claim`] found.
pub(crate) enum Slot<K: Hash + Eq + Clone, V: Clone> {
    Hit(V),
    /// Another thread is loading the key.
    Wait(Arc<Flight<V>>),
    /// The caller must load the key and hand the result to the claim.
    Claimed(Claim<K, V>),
}

/// The right (and duty) to load one key. Dropping it without
/// [`Claim::complete`] (a panic in the loader) fails the waiters instead of
/// leaving them blocked forever.
pub(crate) struct Claim<K: Hash + Eq + Clone, V: Clone> {
    cache: Arc<FlightCache<K, V>>,
    key: K,
    flight: Arc<Flight<V>>,
    weight: fn(&V) -> usize,
    finished: bool,
}

impl<K: Hash + Eq + Clone, V: Clone> Claim<K, V> {
    pub fn complete(mut self, result: Result<V, VfsError>) -> Result<V, VfsError> {
        self.finished = true;
        self.cache.finish(&self.key, &self.flight, result.clone(), self.weight);
        result
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for Claim<K, V> {
    fn drop(&mut self) {
        if !self.finished {
            self.cache.finish(&self.key, &self.flight, Err(VfsError::Abandoned), self.weight);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these maps inconsistent (every update
    // is a single insert or remove), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<K: Hash + Eq + Clone, V: Clone> FlightCache<K, V> {
    pub fn new(budget: usize) -> FlightCache<K, V> {
        FlightCache {
            state: Mutex::new(State { lru: LruCache::unbounded(), bytes: 0, loading: HashMap::new() }),
            budget,
        }
    }

    /// The cached value, the load to wait for, or a claim to load it.
    pub fn claim(self: &Arc<Self>, key: &K, weight: fn(&V) -> usize) -> Slot<K, V> {
        let mut s = lock(&self.state);
        if let Some((v, _)) = s.lru.get(key) {
            return Slot::Hit(v.clone());
        }
        if let Some(f) = s.loading.get(key) {
            return Slot::Wait(f.clone());
        }
        let flight = Arc::new(Flight { result: Mutex::new(None), done: Condvar::new() });
        s.loading.insert(key.clone(), flight.clone());
        Slot::Claimed(Claim { cache: self.clone(), key: key.clone(), flight, weight, finished: false })
    }

    /// Returns the value for `key`, loading it with `load` unless it is
    /// cached or another thread is loading it already.
    pub fn get_or_load(
        self: &Arc<Self>,
        key: &K,
        weight: fn(&V) -> usize,
        load: impl FnOnce() -> Result<V, VfsError>,
    ) -> Result<V, VfsError> {
        match self.claim(key, weight) {
            Slot::Hit(v) => Ok(v),
            Slot::Wait(f) => f.wait(),
            Slot::Claimed(c) => {
                let r = load();
                c.complete(r)
            }
        }
    }

    /// Is `key` cached (a get would not wait)?
    pub fn cached(&self, key: &K) -> bool {
        lock(&self.state).lru.contains(key)
    }

    /// Is `key` cached or being loaded?
    pub fn present(&self, key: &K) -> bool {
        let s = lock(&self.state);
        s.lru.contains(key) || s.loading.contains_key(key)
    }

    fn finish(&self, key: &K, flight: &Flight<V>, result: Result<V, VfsError>, weight: fn(&V) -> usize) {
        {
            let mut s = lock(&self.state);
            s.loading.remove(key);
            // Failures are not cached: the next reader tries again (and
            // gets the same error if the data really is damaged).
            if let Ok(v) = &result {
                let w = weight(v);
                s.bytes += w;
                if let Some((_, old)) = s.lru.put(key.clone(), (v.clone(), w)) {
                    s.bytes -= old;
                }
                while s.bytes > self.budget {
                    match s.lru.pop_lru() {
                        Some((_, (_, w))) => s.bytes -= w,
                        None => break,
                    }
                }
            }
        }
        *lock(&flight.result) = Some(result);
        flight.done.notify_all();
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        lock(&self.state).bytes
    }
}
