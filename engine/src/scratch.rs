//! Scratch directories of the operations that spill to disk (the sorted
//! runs and trailers of `check` and `prune`), and the removal of those a
//! dead process left behind.
//!
//! A scratch directory is removed when its operation ends, but a process
//! that is killed (kill -9, the OOM killer, a reboot) leaves it: at 100M
//! chunks that is more than 10 GB in the cache directory (BENCHMARKS.md,
//! "Scale: the 100M-chunk index"). So the owner holds an exclusive `flock`
//! on a file inside its directory for as long as it runs (the kernel drops
//! it when the process dies, however it dies), and every new scratch
//! directory first removes the siblings whose lock it can take.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const PREFIX: &str = "scratch-";
/// The owner's lock file inside each scratch directory.
const OWNER: &str = ".owner";
/// A directory is created a moment before its owner locks it; one younger
/// than this is never taken for abandoned.
const MIN_AGE: Duration = Duration::from_secs(60);
/// Directories without a lock file (made by an arc from before the lock,
/// or killed between creating and locking) are removed only once nothing
/// can still be using them.
const UNLOCKED_MIN_AGE: Duration = Duration::from_secs(24 * 3600);

/// A scratch directory, removed with everything in it when dropped.
pub struct Scratch {
    dir: tempfile::TempDir,
    /// Held, not read: its lock says the directory is in use.
    _owner: File,
}

impl Scratch {
    /// A new scratch directory in `parent` (created if missing), after
    /// removing the scratch directories there that no living process
    /// owns.
    pub fn create(parent: &Path) -> io::Result<Scratch> {
        std::fs::create_dir_all(parent)?;
        remove_abandoned(parent);
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir_in(parent)?;
        let owner = File::create(dir.path().join(OWNER))?;
        owner.lock()?;
        Ok(Scratch { dir, _owner: owner })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the scratch directories in `parent` whose owner is gone. Best
/// effort: one that cannot be examined or removed is left as it is (the
/// operation that wanted scratch space must not fail for it).
fn remove_abandoned(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || !entry.file_name().as_encoded_bytes().starts_with(PREFIX.as_bytes()) {
            continue;
        }
        let path = entry.path();
        // Nothing takes up a directory it did not make, so once its owner
        // is gone nobody else can start using it.
        if abandoned(&path) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn abandoned(dir: &Path) -> bool {
    let age = |p: &PathBuf| {
        std::fs::symlink_metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or(Duration::ZERO)
    };
    let dir = dir.to_path_buf();
    if age(&dir) < MIN_AGE {
        return false;
    }
    match File::open(dir.join(OWNER)) {
        // flock locks belong to open file descriptions, so this conflicts
        // with an owner in this very process too.
        Ok(owner) => owner.try_lock().is_ok(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => age(&dir) >= UNLOCKED_MIN_AGE,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_old(path: &Path, age: Duration) {
        let t = SystemTime::now() - age;
        let f = File::open(path).expect("open");
        f.set_modified(t).expect("set mtime");
    }

    fn scratch_dirs(parent: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(parent)
            .expect("list")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(PREFIX)))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_dead_owners_scratch_is_removed_and_a_living_ones_is_kept() {
        let parent = tempfile::tempdir().expect("tempdir");
        // A living owner: this process, lock held.
        let living = Scratch::create(parent.path()).expect("scratch");
        std::fs::write(living.path().join("run-0"), b"data").expect("write");
        set_old(living.path(), Duration::from_secs(3600));
        // A dead owner: the same layout, lock file present but unlocked
        // (as after kill -9), old enough.
        let dead = parent.path().join("scratch-dead");
        std::fs::create_dir(&dead).expect("mkdir");
        std::fs::write(dead.join(OWNER), b"").expect("owner");
        std::fs::write(dead.join("run-0"), vec![0u8; 4096]).expect("write");
        set_old(&dead, Duration::from_secs(3600));
        // Dead too, but too young to tell from one being set up.
        let young = parent.path().join("scratch-young");
        std::fs::create_dir(&young).expect("mkdir");
        // No lock file: from an older arc; one recent, one a day old.
        let old_unlocked = parent.path().join("scratch-oldarc");
        std::fs::create_dir(&old_unlocked).expect("mkdir");
        set_old(&old_unlocked, Duration::from_secs(25 * 3600));
        let recent_unlocked = parent.path().join("scratch-oldarc-running");
        std::fs::create_dir(&recent_unlocked).expect("mkdir");
        set_old(&recent_unlocked, Duration::from_secs(3600));
        // Not scratch at all.
        let other = parent.path().join("index.redb");
        std::fs::write(&other, b"db").expect("write");
        set_old(&other, Duration::from_secs(25 * 3600));

        let next = Scratch::create(parent.path()).expect("scratch");
        let left = scratch_dirs(parent.path());
        assert!(!left.contains(&dead), "a dead owner's scratch must go: {left:?}");
        assert!(!left.contains(&old_unlocked), "an unlocked day-old scratch must go: {left:?}");
        assert!(left.contains(&living.path().to_path_buf()), "a living owner's scratch must stay");
        assert!(living.path().join("run-0").exists());
        assert!(left.contains(&young), "a young directory may be one being set up");
        assert!(left.contains(&recent_unlocked), "an unlocked directory may belong to an older arc still running");
        assert!(left.contains(&next.path().to_path_buf()));
        assert!(other.exists());
        drop(next);
        drop(living);
        assert_eq!(scratch_dirs(parent.path()), vec![recent_unlocked.clone(), young.clone()]);
    }
}
