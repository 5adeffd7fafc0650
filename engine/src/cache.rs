//! The local cache of one repository, `<cache root>/<repository id>/`
//! (the CLI's cache root is `$XDG_CACHE_HOME/arc`): what a command would
//! otherwise fetch from the repository again and again.
//!
//! ```text
//! <root>/CACHEDIR.TAG                    backup tools skip the cache
//! <root>/<id>/version                    "arc cache 1": the layout below
//! <root>/<id>/location-<key>             a location this cache serves; mtime = last used
//! <root>/<id>/index-<key>.redb           the index database (index.rs), per location
//! <root>/<id>/index-<key>.<gen>.rows     its sorted rows (index_sorted.rs)
//! <root>/<id>/snapshots/<snapshot id>    snapshot files, byte for byte as stored
//! <root>/<id>/trees/<2 hex>/<pack>-<offset>-<len>
//!                                        pack frames holding trees, as stored (sealed)
//! <root>/<id>/writers/<pid>-<n>          a backup or copy of this host is writing packs
//! <root>/<id>/packs-scanned-<key>        this host's packs are all known to its index database
//! <root>/<id>/key-file                   the name of the key file that opened the repository last
//! ```
//!
//! The last two spare a remote repository's backups a listing of every
//! pack (remote.md section 4). A pack that no index file lists exists
//! while its writer runs (the writer lists its packs before it ends, even
//! after an error) or after its writer was killed. So a backup lists
//! `data/` to adopt such packs only when a writer of this host was killed
//! (its `writers/` file outlives it) or the database is new (no
//! `packs-scanned-` file); otherwise the unlisted packs it needs are those
//! in the index database (adopted by another process of this host).
//!
//! Only a cache: nothing in it is trusted. A snapshot file is used only if
//! its bytes hash to its name (snapshot files are named by the hash of
//! their stored bytes); a cached frame is opened, decompressed and every
//! blob taken from it checked against its id exactly as one fetched from
//! the repository, and a frame that fails is dropped and fetched again.
//! So a damaged, truncated or swapped cache file costs a request, never a
//! wrong answer. Files are stored as the repository holds them (sealed in
//! format v2): the cache holds no plaintext the repository does not.
//!
//! Snapshot files and frames are immutable and named by content, so they
//! are shared by every location of the repository (a copy made with
//! rsync has the same files); the index database is not (a copy may lack
//! packs the original has), hence its per-location name.
//!
//! The cache is brought up to date from the repository's listings: a
//! snapshot file no longer listed is dropped when snapshots are listed;
//! tree frames are kept within [`TREE_BUDGET`] bytes, least recently used
//! first out. A cache directory of another `version` is emptied and
//! rebuilt, never read.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::id::Id;

/// The layout version this code reads and writes.
pub const CACHE_VERSION: &str = "arc cache 1";

/// Bytes of tree frames kept per repository: the trees of a few recent
/// snapshots of a large host (a 200k-file spool's trees are ~30 MiB).
pub const TREE_BUDGET: u64 = 256 * 1024 * 1024;

/// A frame read from the cache within this long of its last use is not
/// touched again: the LRU order needs only coarse times, and a touch is a
/// write.
const TOUCH_AFTER: Duration = Duration::from_secs(3600);

const TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by arc.\n\
# For information about cache directory tags, see https://bford.info/cachedir/\n";

/// One repository's cache directory.
pub struct RepoCache {
    dir: PathBuf,
    location_key: String,
    /// Whether snapshot files and tree frames are cached: for storage that
    /// is not a local disk (reading a local repository's file costs what
    /// reading the cache's copy does).
    files: bool,
    tree_budget: u64,
    /// Bytes of frames this process added; eviction runs only if any.
    frames_added: AtomicU64,
}

/// A `writers/` file, removed when dropped (see [`RepoCache::writer`]).
pub struct WriterFile(PathBuf);

impl Drop for WriterFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The name of the key file that opened repository `id` last on this host,
/// as the cache under `root` records it: read before the repository is
/// unlocked, so nothing is created here. Only a hint: the key file is
/// fetched, checked against its name and must unwrap with the passphrase,
/// and a hint that fails leaves the search to a listing of `keys/`.
pub fn key_hint(root: &Path, id: &Id) -> Option<String> {
    let text = std::fs::read_to_string(root.join(id.to_hex()).join("key-file")).ok()?;
    let name = text.trim_end();
    name.parse::<Id>().is_ok().then(|| name.to_string())
}

/// Numbers the temporary files of this process: several caches of one
/// repository can be open in one process (threads, tests), and their
/// temporary names must not meet.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl RepoCache {
    /// Opens (creating or, for another version, emptying) the cache of
    /// repository `id` under `root`, for the repository at `location`
    /// (shown to users: no credentials). `files`: cache snapshot files and
    /// tree frames as well as the index.
    pub fn open(root: &Path, id: &Id, location: &str, location_key: &str, files: bool) -> Result<RepoCache> {
        let dir = root.join(id.to_hex());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            let _ = write_atomic(&tag, TAG.as_bytes(), &root.join(format!(".tag-{}", std::process::id())));
        }
        let version_file = dir.join("version");
        // Several processes (or threads) open a new cache at once (backups
        // beside a prune): each writes through a temporary file of its own,
        // so no rename finds its source already taken by another's.
        let version_tmp =
            dir.join(format!(".version.tmp-{}-{}", std::process::id(), TMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
        match std::fs::read_to_string(&version_file) {
            Ok(v) if v.trim_end() == CACHE_VERSION => {}
            // A cache from before the cache was versioned holds only
            // index databases, which check their own schema (index.rs).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(&version_file, format!("{CACHE_VERSION}\n").as_bytes(), &version_tmp)?;
            }
            // Another layout (a newer or older arc): read nothing of it.
            _ => {
                empty_dir(&dir)?;
                write_atomic(&version_file, format!("{CACHE_VERSION}\n").as_bytes(), &version_tmp)?;
            }
        }
        let cache = RepoCache {
            dir,
            location_key: location_key.to_string(),
            files,
            tree_budget: TREE_BUDGET,
            frames_added: AtomicU64::new(0),
        };
        // Rewritten on every open: its mtime is the "last used" of
        // `arc cache --list` and `--cleanup`.
        let loc = cache.dir.join(format!("location-{location_key}"));
        let _ = write_atomic(&loc, format!("{location}\n").as_bytes(), &cache.tmp_path());
        Ok(cache)
    }

    /// Records the key file that opened the repository (see [`key_hint`]).
    pub fn set_key_hint(&self, name: &str) {
        let _ = write_atomic(&self.dir.join("key-file"), format!("{name}\n").as_bytes(), &self.tmp_path());
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the index database of this location lives.
    pub fn index_path(&self) -> PathBuf {
        self.dir.join(format!("index-{}.redb", self.location_key))
    }

    /// Whether snapshot files and tree frames are cached.
    pub fn caches_files(&self) -> bool {
        self.files
    }

    /// Whether this host may have stored packs that its index database
    /// does not know: the database of this location has never been
    /// checked against a listing of the packs, or a backup or copy of this
    /// host stopped without removing its `writers/` file (killed).
    pub fn pack_scan_needed(&self) -> bool {
        if !self.dir.join(format!("packs-scanned-{}", self.location_key)).exists() {
            return true;
        }
        self.stale_writers().next().is_some()
    }

    fn stale_writers(&self) -> impl Iterator<Item = PathBuf> {
        std::fs::read_dir(self.dir.join("writers")).into_iter().flatten().flatten().filter_map(|e| {
            let name = e.file_name();
            let pid = name.to_str()?.split('-').next()?.parse::<u32>().ok()?;
            (!crate::lock::pid_alive(pid)).then(|| e.path())
        })
    }

    /// Records that the packs of storage were listed and every one unknown
    /// to the index database adopted: the `writers/` files of processes
    /// that are gone are dropped, and the database counts as complete.
    pub fn pack_scan_done(&self) {
        for stale in self.stale_writers().collect::<Vec<_>>() {
            let _ = std::fs::remove_file(stale);
        }
        let done = self.dir.join(format!("packs-scanned-{}", self.location_key));
        let _ = write_atomic(&done, b"", &self.tmp_path());
    }

    /// Announces a process that stores packs, until the returned guard is
    /// dropped; a process killed meanwhile leaves the file behind, which
    /// makes the next backup scan (see [`Self::pack_scan_needed`]).
    pub fn writer(&self) -> Result<WriterFile> {
        let dir = self.dir.join("writers");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join(format!("{}-{}", std::process::id(), TMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
        std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok(WriterFile(path))
    }

    /// Sets the byte budget of tree frames (tests).
    pub fn set_tree_budget(&mut self, bytes: u64) {
        self.tree_budget = bytes;
    }

    fn tmp_path(&self) -> PathBuf {
        self.dir.join(format!(".tmp-{}-{}", std::process::id(), TMP_COUNTER.fetch_add(1, Ordering::Relaxed)))
    }

    fn snapshot_path(&self, id: &Id) -> PathBuf {
        self.dir.join("snapshots").join(id.to_hex())
    }

    /// The stored bytes of snapshot `id`, if cached and intact; a cached
    /// file that does not hash to its name is removed.
    pub fn snapshot(&self, id: &Id) -> Option<Vec<u8>> {
        if !self.files {
            return None;
        }
        let path = self.snapshot_path(id);
        let data = std::fs::read(&path).ok()?;
        if Id::hash(&data) == *id {
            return Some(data);
        }
        let _ = std::fs::remove_file(&path);
        None
    }

    /// Keeps the stored bytes of snapshot `id` (already verified by the
    /// caller). Failing to write a cache is not an error: the next command
    /// fetches the file again.
    pub fn store_snapshot(&self, id: &Id, data: &[u8]) {
        if !self.files {
            return;
        }
        let path = self.snapshot_path(id);
        if path.exists() {
            return;
        }
        let _ = std::fs::create_dir_all(self.dir.join("snapshots"));
        let _ = write_atomic(&path, data, &self.tmp_path());
    }

    /// Drops cached snapshot files that are not in `listed` (forgotten in
    /// the repository, by this host or another).
    pub fn retain_snapshots(&self, listed: &HashSet<Id>) {
        let Ok(rd) = std::fs::read_dir(self.dir.join("snapshots")) else { return };
        for entry in rd.flatten() {
            let name = entry.file_name();
            let keep = name.to_str().and_then(|n| n.parse::<Id>().ok()).is_some_and(|id| listed.contains(&id));
            if !keep {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// The snapshot files in the cache (tests, `cache --list`).
    pub fn cached_snapshots(&self) -> Vec<Id> {
        let Ok(rd) = std::fs::read_dir(self.dir.join("snapshots")) else { return Vec::new() };
        let mut out: Vec<Id> =
            rd.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect();
        out.sort();
        out
    }

    /// The path of a cached frame.
    pub fn frame_path(&self, pack: &Id, offset: u64, len: u32) -> PathBuf {
        let hex = pack.to_hex();
        self.dir.join("trees").join(&hex[..2]).join(format!("{hex}-{offset}-{len}"))
    }

    /// A frame's stored bytes, if cached with the right length. The caller
    /// verifies them and calls [`RepoCache::drop_frame`] if they are wrong.
    pub fn frame(&self, pack: &Id, offset: u64, len: u32) -> Option<Vec<u8>> {
        if !self.files {
            return None;
        }
        let path = self.frame_path(pack, offset, len);
        let mut file = std::fs::File::open(&path).ok()?;
        let meta = file.metadata().ok()?;
        if meta.len() != u64::from(len) {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        let mut data = Vec::with_capacity(len as usize);
        std::io::Read::read_to_end(&mut file, &mut data).ok()?;
        // Recently used: move it to the young end of the LRU order.
        if meta.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age > TOUCH_AFTER) {
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
                let _ = f.set_modified(SystemTime::now());
            }
        }
        Some(data)
    }

    /// Whether a frame is cached (by name; its bytes are checked when read).
    pub fn has_frame(&self, pack: &Id, offset: u64, len: u32) -> bool {
        self.files && self.frame_path(pack, offset, len).exists()
    }

    /// Keeps a frame's stored bytes, fetched from the repository.
    pub fn store_frame(&self, pack: &Id, offset: u64, stored: &[u8]) {
        if !self.files || stored.len() as u64 > self.tree_budget / 4 {
            return;
        }
        let Ok(len) = u32::try_from(stored.len()) else { return };
        let path = self.frame_path(pack, offset, len);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if write_atomic(&path, stored, &self.tmp_path()).is_ok() {
            self.frames_added.fetch_add(stored.len() as u64, Ordering::Relaxed);
        }
    }

    /// Removes a cached frame that turned out wrong.
    pub fn drop_frame(&self, pack: &Id, offset: u64, len: u32) {
        let _ = std::fs::remove_file(self.frame_path(pack, offset, len));
    }

    /// Keeps the tree frames within the budget, dropping the least
    /// recently used first (down to 3/4 of the budget, so that eviction
    /// is not needed again at once). Runs only if this process added
    /// frames.
    pub fn evict(&self) {
        if self.frames_added.swap(0, Ordering::Relaxed) == 0 {
            return;
        }
        let mut files = Vec::new();
        let mut total = 0u64;
        let Ok(shards) = std::fs::read_dir(self.dir.join("trees")) else { return };
        for shard in shards.flatten() {
            let Ok(rd) = std::fs::read_dir(shard.path()) else { continue };
            for entry in rd.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                total += meta.len();
                files.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len(), entry.path()));
            }
        }
        if total <= self.tree_budget {
            return;
        }
        files.sort();
        let target = self.tree_budget / 4 * 3;
        for (_, len, path) in files {
            if total <= target {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

/// Writes `data` to `path` through `tmp` and a rename: another process
/// reading the cache sees the whole file or none.
fn write_atomic(path: &Path, data: &[u8], tmp: &Path) -> Result<()> {
    let res = (|| {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(data)?;
        std::fs::rename(tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Removes everything in `dir`, keeping `dir`.
fn empty_dir(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
        let path = entry.path();
        let res = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        res.map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// One repository's cache, for `arc cache --list`.
#[derive(Debug, Clone)]
pub struct CacheInfo {
    /// The repository id (the directory's name).
    pub id: String,
    pub dir: PathBuf,
    /// The locations it served, most recently used first.
    pub locations: Vec<String>,
    /// Bytes of all its files.
    pub size: u64,
    /// When a command last opened it (or, with no location file, the
    /// directory's own mtime).
    pub last_used: SystemTime,
}

/// Every repository cache under `root`, most recently used first.
pub fn list(root: &Path) -> Result<Vec<CacheInfo>> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(root, e)),
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        // Only directories named like a repository id.
        if name.parse::<Id>().is_err() || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = entry.path();
        let mut locations: Vec<(SystemTime, String)> = Vec::new();
        if let Ok(files) = std::fs::read_dir(&dir) {
            for f in files.flatten() {
                if !f.file_name().to_string_lossy().starts_with("location-") {
                    continue;
                }
                let (Ok(meta), Ok(text)) = (f.metadata(), std::fs::read_to_string(f.path())) else { continue };
                locations.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), text.trim_end().to_string()));
            }
        }
        locations.sort_by(|a, b| b.cmp(a));
        let last_used = match locations.first() {
            Some((t, _)) => *t,
            None => entry.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH),
        };
        out.push(CacheInfo {
            id: name,
            size: dir_size(&dir),
            dir,
            locations: locations.into_iter().map(|l| l.1).collect(),
            last_used,
        });
    }
    out.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.id.cmp(&b.id)));
    Ok(out)
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Removes the caches under `root` not used for `max_unused` (restic's
/// `cache --cleanup`); returns those removed.
pub fn remove_unused(root: &Path, max_unused: Duration) -> Result<Vec<CacheInfo>> {
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for info in list(root)? {
        let age = now.duration_since(info.last_used).unwrap_or_default();
        if age <= max_unused {
            continue;
        }
        std::fs::remove_dir_all(&info.dir).map_err(|e| Error::io(&info.dir, e))?;
        removed.push(info);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        Id::hash(&[n])
    }

    #[test]
    fn a_cache_of_another_version_is_emptied() {
        let root = tempfile::tempdir().unwrap();
        let rid = id(1);
        let dir = root.path().join(rid.to_hex());
        std::fs::create_dir_all(dir.join("snapshots")).unwrap();
        std::fs::write(dir.join("version"), "arc cache 999\n").unwrap();
        let data = b"snapshot bytes";
        std::fs::write(dir.join("snapshots").join(Id::hash(data).to_hex()), data).unwrap();
        let c = RepoCache::open(root.path(), &rid, "s3:http://h/b", "k", true).unwrap();
        assert!(c.cached_snapshots().is_empty(), "a cache of another version is never read");
        assert_eq!(std::fs::read_to_string(dir.join("version")).unwrap().trim_end(), CACHE_VERSION);
        assert!(root.path().join("CACHEDIR.TAG").is_file());
    }

    #[test]
    fn snapshot_files_are_verified_and_stale_ones_dropped() {
        let root = tempfile::tempdir().unwrap();
        let c = RepoCache::open(root.path(), &id(1), "s3:http://h/b", "k", true).unwrap();
        let (a, b) = (b"first".to_vec(), b"second".to_vec());
        let (ia, ib) = (Id::hash(&a), Id::hash(&b));
        c.store_snapshot(&ia, &a);
        c.store_snapshot(&ib, &b);
        assert_eq!(c.snapshot(&ia).as_deref(), Some(&a[..]));
        // Another file's bytes under a's name: ignored and removed.
        std::fs::write(c.snapshot_path(&ia), &b).unwrap();
        assert_eq!(c.snapshot(&ia), None);
        assert!(!c.snapshot_path(&ia).exists());
        c.retain_snapshots(&HashSet::new());
        assert!(c.cached_snapshots().is_empty());
    }

    #[test]
    fn frames_beyond_the_budget_go_least_recently_used_first() {
        let root = tempfile::tempdir().unwrap();
        let mut c = RepoCache::open(root.path(), &id(1), "s3:http://h/b", "k", true).unwrap();
        c.set_tree_budget(4000);
        let pack = id(2);
        for i in 0..5u64 {
            c.store_frame(&pack, i * 1000, &[i as u8; 1000]);
            let old = SystemTime::now() - Duration::from_secs(100 - i);
            let f = std::fs::OpenOptions::new().write(true).open(c.frame_path(&pack, i * 1000, 1000)).unwrap();
            f.set_modified(old).unwrap();
        }
        c.evict();
        let left: Vec<u64> = (0..5u64).filter(|i| c.frame_path(&pack, i * 1000, 1000).exists()).collect();
        assert_eq!(left, vec![2, 3, 4], "the oldest go first, down to 3/4 of the budget");
        assert_eq!(c.frame(&pack, 4000, 1000), Some(vec![4u8; 1000]));
        assert_eq!(c.frame(&pack, 4000, 999), None, "a length that does not match is a miss");
    }

    #[test]
    fn list_and_cleanup_by_last_use() {
        let root = tempfile::tempdir().unwrap();
        let old = RepoCache::open(root.path(), &id(1), "s3:http://h/old", "k1", true).unwrap();
        let _new = RepoCache::open(root.path(), &id(2), "/srv/new", "k2", false).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(old.dir().join("location-k1")).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(40 * 86400)).unwrap();
        let all = list(root.path()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].locations, vec!["/srv/new".to_string()]);
        assert_eq!(all[1].id, id(1).to_hex());
        assert!(all[1].size > 0);
        let removed = remove_unused(root.path(), Duration::from_secs(30 * 86400)).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].locations, vec!["s3:http://h/old".to_string()]);
        assert_eq!(list(root.path()).unwrap().len(), 1);
    }
}
