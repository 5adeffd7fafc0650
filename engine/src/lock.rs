//! Repository locks. Backups, restores and checks take a shared lock;
//! maintenance (prune, forget, repair) takes an exclusive one. A lock is a
//! file under `locks/` naming its holder (host, pid, user, time) and is
//! refreshed while the holder runs, so a lock left by a dead process is
//! recognised as stale: on the same host at once by its pid, and on any
//! host once it has not been refreshed for [`STALE_AFTER`].

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::Utc;

use crate::crypto::{Keys, Purpose};
use crate::error::{Error, Result};
use crate::format::lock::LockFile;
use crate::format::sealed;
use crate::id::Id;
use crate::storage::{FileKind, Storage};

/// A lock not refreshed for this long belongs to a process that is gone.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

pub fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
}

pub fn username() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid).ok().flatten().map(|u| u.name).unwrap_or_else(|| uid.to_string())
}

/// Whether process `pid` exists on this host (signal 0 probes without
/// touching it; `EPERM` means it exists under another user).
pub(crate) fn pid_alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None)
        .map(|_| true)
        .unwrap_or_else(|e| e == nix::errno::Errno::EPERM)
}

impl LockFile {
    pub fn is_stale(&self) -> bool {
        if self.host == hostname() && !pid_alive(self.pid) {
            return true;
        }
        let age = Utc::now().signed_duration_since(self.refreshed);
        age.to_std().map(|a| a > STALE_AFTER).unwrap_or(false)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} {} lock of {}@{} pid {} since {}",
            if self.exclusive { "an exclusive" } else { "a shared" },
            self.operation,
            self.username,
            self.host,
            self.pid,
            self.time.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// A lock file's stored bytes: sealed in format v2 (`keys`), plain in v1.
fn encode_lock(keys: Option<&Keys>, lock: &LockFile) -> Result<Vec<u8>> {
    match keys {
        Some(k) => sealed::seal_file(k, Purpose::LOCK, &[], &lock.encode()),
        None => Ok(lock.encode()),
    }
}

fn decode_lock(keys: Option<&Keys>, data: Vec<u8>, name: &str) -> Result<LockFile> {
    match keys {
        Some(k) => LockFile::decode(&sealed::open_file(k, Purpose::LOCK, &[], &data, "lock", name)?, name),
        None => LockFile::decode(&data, name),
    }
}

/// Held while alive; removes its lock file when dropped.
pub struct LockGuard {
    /// None for a lock that was skipped ([`LockGuard::none`]).
    storage: Option<Arc<dyn Storage>>,
    name: String,
    stop: Option<crossbeam_channel::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl LockGuard {
    /// A guard that holds no lock: for reading a repository whose locks
    /// are skipped.
    pub fn none() -> LockGuard {
        LockGuard { storage: None, name: String::new(), stop: None, refresher: None }
    }

    pub fn acquire(
        storage: Arc<dyn Storage>,
        keys: Option<Arc<Keys>>,
        exclusive: bool,
        operation: &str,
    ) -> Result<LockGuard> {
        let now = Utc::now();
        let mut lock = LockFile {
            exclusive,
            host: hostname(),
            pid: std::process::id(),
            username: username(),
            time: now,
            refreshed: now,
            operation: operation.to_string(),
        };
        let name = Id::hash(
            format!("{}-{}-{}", lock.host, lock.pid, now.timestamp_nanos_opt().unwrap_or_default()).as_bytes(),
        )
        .to_hex();
        // Write first, then look: two lockers racing both see each other and
        // both back off, which is safe.
        storage.put(FileKind::Lock, &name, &encode_lock(keys.as_deref(), &lock)?)?;
        if let Err(e) = check_conflicts(storage.as_ref(), keys.as_deref(), &name, exclusive) {
            let _ = storage.delete(FileKind::Lock, &name);
            return Err(e);
        }
        // The refresher waits on a channel, so dropping the guard (which
        // drops the sender) wakes it at once instead of after a poll tick.
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let refresher = {
            let (storage, name) = (storage.clone(), name.clone());
            std::thread::Builder::new()
                .name("arc-lock-refresh".into())
                .spawn(move || {
                    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH_EVERY) {
                        lock.refreshed = Utc::now();
                        if let Ok(bytes) = encode_lock(keys.as_deref(), &lock) {
                            let _ = storage.put(FileKind::Lock, &name, &bytes);
                        }
                    }
                })
                .ok()
        };
        Ok(LockGuard { storage: Some(storage), name, stop: Some(stop), refresher })
    }
}

impl LockGuard {
    /// The lock file's name under `locks/`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The storage's clock, read from the timestamp of a file we just wrote.
pub(crate) fn storage_now(storage: &dyn Storage, own_lock: &str) -> Result<std::time::SystemTime> {
    Ok(storage.stat(FileKind::Lock, own_lock)?.modified)
}

/// For a v2 session just announced: fails if a live exclusive lock is held
/// (`prune --instant`, `repair index`). Liveness is judged by the lock
/// file's storage timestamp against the storage time of the newest
/// session file, not by any host clock (format-spec/v2/protocol.md §7).
pub(crate) fn check_no_exclusive(storage: &dyn Storage, keys: Option<&Keys>) -> Result<()> {
    let locks = storage.list_stat(FileKind::Lock)?;
    if locks.is_empty() {
        return Ok(());
    }
    let now = storage.list_stat(FileKind::Session)?.into_iter().map(|(_, s)| s.modified).max();
    for (name, stat) in locks {
        let lock = match storage.get(FileKind::Lock, &name).and_then(|d| decode_lock(keys, d, &name)) {
            Ok(l) => l,
            Err(Error::Missing { .. }) => continue,
            Err(e) => return Err(Error::UnreadableLock { name, reason: e.to_string() }),
        };
        if lock.host == hostname() && !pid_alive(lock.pid) {
            // Its process is gone on this very host: safe to remove (as a
            // v1 lock taker does).
            let _ = storage.delete(FileKind::Lock, &name);
            continue;
        }
        if !lock.exclusive {
            continue;
        }
        let age = now.and_then(|n| n.duration_since(stat.modified).ok());
        if age.is_some_and(|a| a > STALE_AFTER) {
            continue;
        }
        return Err(Error::Locked { holder: lock.describe(), stale: false });
    }
    Ok(())
}

fn check_conflicts(storage: &dyn Storage, keys: Option<&Keys>, own: &str, exclusive: bool) -> Result<()> {
    for (name, _) in storage.list(FileKind::Lock)? {
        if name == own {
            continue;
        }
        let lock = match storage.get(FileKind::Lock, &name).and_then(|d| decode_lock(keys, d, &name)) {
            Ok(l) => l,
            // Released meanwhile.
            Err(Error::Missing { .. }) => continue,
            // Locks are written atomically, so an unreadable one comes from
            // a newer arc or damage: respect it rather than guess.
            Err(e) => return Err(Error::UnreadableLock { name, reason: e.to_string() }),
        };
        if lock.is_stale() {
            if lock.host == hostname() {
                // Its process is gone on this very host: safe to remove.
                let _ = storage.delete(FileKind::Lock, &name);
            }
            continue;
        }
        if exclusive || lock.exclusive {
            return Err(Error::Locked { holder: lock.describe(), stale: false });
        }
    }
    Ok(())
}

/// Removes locks whose holders are gone (or all locks with `all`); returns
/// how many were removed.
pub fn remove_stale_locks(storage: &dyn Storage, keys: Option<&Keys>, all: bool) -> Result<usize> {
    let mut removed = 0;
    for (name, _) in storage.list(FileKind::Lock)? {
        let stale = match storage.get(FileKind::Lock, &name).and_then(|d| decode_lock(keys, d, &name)) {
            Ok(l) => l.is_stale(),
            Err(_) => true,
        };
        if all || stale {
            storage.delete(FileKind::Lock, &name)?;
            removed += 1;
        }
    }
    Ok(removed)
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        if let Some(storage) = &self.storage {
            let _ = storage.delete(FileKind::Lock, &self.name);
        }
    }
}
