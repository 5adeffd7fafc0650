//! A repository held in memory, for the engine's own tests: it keeps the
//! storage contract (atomic puts, complete listings, storage timestamps)
//! and can be made slow, skewed and failing on purpose, so that races and
//! faults between concurrent operations can be provoked without a network
//! store. Nothing outside tests should use it.
//!
//! * `delay`: every operation sleeps a pseudo-random time up to this long
//!   before it takes effect, widening the windows between a listing and
//!   the read that follows it, or between two puts.
//! * `clock_offset`: the storage's clock differs from the host's by this
//!   many seconds (either way). The v2 protocol must not care.
//! * [`MemoryStorage::fail_puts`]: puts of one kind fail until cleared (a
//!   session refresh that cannot reach the storage).
//! * [`MemoryStorage::freeze_existing`]: puts to the files of one kind
//!   that exist now wait until [`MemoryStorage::thaw`] (the writers of
//!   those files frozen, as by SIGSTOP or a suspended VM; a held put
//!   completes with the storage's time of its release). New files of the
//!   kind are not held.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::{FileKind, FileStat, Storage};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryStorageOptions {
    pub delay: Duration,
    pub clock_offset_secs: i64,
}

struct File {
    data: std::sync::Arc<[u8]>,
    modified: SystemTime,
}

pub struct MemoryStorage {
    opts: MemoryStorageOptions,
    files: Mutex<BTreeMap<(u8, String), File>>,
    failing: Mutex<HashSet<u8>>,
    /// `tmp/`: what a staged put left behind (see [`MemoryStorage::leave_tmp`]).
    tmp: Mutex<BTreeMap<String, SystemTime>>,
    held: (Mutex<HashSet<(u8, String)>>, std::sync::Condvar),
    jitter: AtomicU64,
}

fn key(kind: FileKind, name: &str) -> (u8, String) {
    (kind as u8, name.to_string())
}

impl MemoryStorage {
    pub fn new(opts: MemoryStorageOptions) -> MemoryStorage {
        MemoryStorage {
            opts,
            files: Mutex::new(BTreeMap::new()),
            failing: Mutex::new(HashSet::new()),
            tmp: Mutex::new(BTreeMap::new()),
            held: (Mutex::new(HashSet::new()), std::sync::Condvar::new()),
            jitter: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
        }
    }

    /// Makes every put of `kind` fail (or succeed again).
    pub fn fail_puts(&self, kind: FileKind, fail: bool) {
        if let Ok(mut f) = self.failing.lock() {
            if fail {
                f.insert(kind as u8);
            } else {
                f.remove(&(kind as u8));
            }
        }
    }

    /// Leaves a file under `tmp/` written `age` ago by the storage's clock,
    /// as an interrupted staged put on SFTP or WebDAV does.
    pub fn leave_tmp(&self, name: &str, age: Duration) {
        if let Ok(mut t) = self.tmp.lock() {
            t.insert(name.to_string(), self.now() - age);
        }
    }

    /// Holds puts to every file of `kind` that exists now.
    pub fn freeze_existing(&self, kind: FileKind) -> Result<()> {
        let names: Vec<(u8, String)> = self.files()?.keys().filter(|(k, _)| *k == kind as u8).cloned().collect();
        if let Ok(mut h) = self.held.0.lock() {
            h.extend(names);
        }
        Ok(())
    }

    /// Releases every held put.
    pub fn thaw(&self) {
        if let Ok(mut h) = self.held.0.lock() {
            h.clear();
        }
        self.held.1.notify_all();
    }

    /// The storage's clock.
    pub fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        let off = Duration::from_secs(self.opts.clock_offset_secs.unsigned_abs());
        if self.opts.clock_offset_secs >= 0 {
            now + off
        } else {
            now - off
        }
    }

    /// Sleeps up to the configured delay (xorshift jitter: cheap, and a
    /// fixed sequence per storage).
    fn pause(&self) {
        if self.opts.delay.is_zero() {
            return;
        }
        let mut x = self.jitter.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter.store(x, Ordering::Relaxed);
        let nanos = self.opts.delay.as_nanos() as u64;
        std::thread::sleep(Duration::from_nanos(x % nanos.max(1)));
    }

    fn files(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<(u8, String), File>>> {
        // A panic while holding this lock is a bug in a test; report it as one.
        self.files.lock().map_err(|_| Error::corrupt("memory storage", "lock", "poisoned by a panic"))
    }

    fn missing(kind: FileKind, name: &str) -> Error {
        Error::Missing { kind: kind.describe(), name: name.to_string() }
    }
}

impl Storage for MemoryStorage {
    fn location(&self) -> String {
        "memory:".into()
    }

    fn local_path(&self) -> Option<&std::path::Path> {
        None
    }

    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.pause();
        if let Ok(mut h) = self.held.0.lock() {
            while h.contains(&key(kind, name)) {
                h = match self.held.1.wait(h) {
                    Ok(h) => h,
                    Err(_) => break,
                };
            }
        }
        if self.failing.lock().map(|f| f.contains(&(kind as u8))).unwrap_or(false) {
            return Err(Error::io(
                format!("memory:{}/{name}", kind.describe()),
                std::io::Error::new(std::io::ErrorKind::TimedOut, "injected put failure"),
            ));
        }
        let file = File { data: data.into(), modified: self.now() };
        self.files()?.insert(key(kind, name), file);
        Ok(())
    }

    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.pause();
        self.files()?.get(&key(kind, name)).map(|f| f.data.to_vec()).ok_or_else(|| Self::missing(kind, name))
    }

    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.pause();
        let files = self.files()?;
        let f = files.get(&key(kind, name)).ok_or_else(|| Self::missing(kind, name))?;
        let end = offset.checked_add(len).filter(|e| *e <= f.data.len() as u64).ok_or_else(|| {
            Error::corrupt(kind.describe(), name, format!("truncated: range {offset}+{len} past end of file"))
        })?;
        Ok(f.data[offset as usize..end as usize].to_vec())
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        Ok(self.stat(kind, name)?.len)
    }

    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        self.pause();
        Ok(self.files()?.contains_key(&key(kind, name)))
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        Ok(self.list_stat(kind)?.into_iter().map(|(n, s)| (n, s.len)).collect())
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.pause();
        self.files()?.remove(&key(kind, name));
        Ok(())
    }

    fn stat(&self, kind: FileKind, name: &str) -> Result<FileStat> {
        self.pause();
        let files = self.files()?;
        let f = files.get(&key(kind, name)).ok_or_else(|| Self::missing(kind, name))?;
        Ok(FileStat { len: f.data.len() as u64, modified: f.modified })
    }

    fn list_stat(&self, kind: FileKind) -> Result<Vec<(String, FileStat)>> {
        self.pause();
        let k = kind as u8;
        Ok(self
            .files()?
            .range((k, String::new())..)
            .take_while(|((fk, _), _)| *fk == k)
            .map(|((_, n), f)| (n.clone(), FileStat { len: f.data.len() as u64, modified: f.modified }))
            .collect())
    }

    fn put_new(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<bool> {
        self.pause();
        let mut files = self.files()?;
        if files.contains_key(&key(kind, name)) {
            return Ok(false);
        }
        files.insert(key(kind, name), File { data: data.into(), modified: self.now() });
        Ok(true)
    }

    fn list_tmp(&self) -> Result<Vec<(String, FileStat)>> {
        let t = self.tmp.lock().map_err(|_| Error::corrupt("memory storage", "tmp", "poisoned by a panic"))?;
        Ok(t.iter().map(|(n, m)| (n.clone(), FileStat { len: 0, modified: *m })).collect())
    }

    fn delete_tmp(&self, name: &str) -> Result<()> {
        if let Ok(mut t) = self.tmp.lock() {
            t.remove(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_contract_and_its_own_clock() {
        let s = MemoryStorage::new(MemoryStorageOptions { delay: Duration::ZERO, clock_offset_secs: -7200 });
        s.put(FileKind::Session, "b", b"two").unwrap();
        s.put(FileKind::Session, "a", b"one").unwrap();
        s.put(FileKind::Mark, "a", b"other kind").unwrap();
        let names: Vec<String> = s.list(FileKind::Session).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(s.get_range(FileKind::Session, "b", 1, 2).unwrap(), b"wo");
        assert!(matches!(s.get(FileKind::Pack, "a"), Err(Error::Missing { .. })));
        // Two hours behind the host, as the option says.
        let age = SystemTime::now().duration_since(s.stat(FileKind::Session, "a").unwrap().modified).unwrap();
        assert!(age >= Duration::from_secs(7199), "{age:?}");
        s.fail_puts(FileKind::Session, true);
        assert!(s.put(FileKind::Session, "a", b"x").is_err());
        assert_eq!(s.get(FileKind::Session, "a").unwrap(), b"one");
        s.fail_puts(FileKind::Session, false);
        s.delete(FileKind::Session, "a").unwrap();
        assert!(!s.exists(FileKind::Session, "a").unwrap());
    }
}
