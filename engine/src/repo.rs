//! [`Repository`]: the one way into a repository. It owns the storage, the
//! config and the index database, keeps the database in step with the
//! repository's index files, and resolves snapshots and trees.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;

use zeroize::Zeroizing;

use crate::cache::RepoCache;
use crate::chunker::Chunker;
use crate::crypto::{Keys, MasterSecret, Purpose};
use crate::error::{Error, Result};
use crate::format::config::{
    ChunkerParams, CompressionAlgorithm, CompressionParams, Config, Encryption, DEFAULT_FEATURES, FEATURE_INDEX_V2,
    FEATURE_SHARED_CONTENT_KEYS, FEATURE_STREAM_DELTAS, FEATURE_TREES_V2, OLDEST_WRITABLE_VERSION, REPO_FORMAT_VERSION,
};
use crate::format::index_file::{self, PackEntry};
use crate::format::key_file::{KeyFile, Protection};
use crate::format::pack::{self, Trailer};
use crate::format::snapshot::SnapshotFile;
use crate::format::tree::{Node, Tree};
use crate::format::tree_v2;
use crate::format::{delta, sealed};
use crate::id::{Id, IdScheme};
use crate::index::{BlobLocation, Index, IndexReader};
use crate::lock::LockGuard;
use crate::prefetch::Prefetched;
use crate::reader::BlobReader;
use crate::storage::{FileKind, LocalDir, Storage};

/// Settings chosen at `init`; they never change afterwards (except the
/// set of key files).
#[derive(Clone)]
pub struct InitOptions {
    pub file_chunker: ChunkerParams,
    pub stream_chunker: ChunkerParams,
    /// zstd level of file contents and trees.
    pub compression_level: i32,
    /// zstd level of stream chunks (stdin, command output): 1 by default,
    /// since a dump is one stream read at the speed its compression allows,
    /// and level 1 stores it a fraction of a percent larger at 40 % less
    /// CPU (BENCHMARKS.md, "Stream compression level").
    pub stream_compression_level: i32,
    pub pack_size: u32,
    pub frame_size: u32,
    /// Timing of the v2 commit and prune protocol; `None` for the
    /// defaults (a grace period of 24 h).
    pub protocol: Option<crate::format::config::ProtocolSettings>,
    /// How the first key file protects the master secret.
    pub protection: Protection,
    /// The content keys of another repository to name and cut content
    /// with (`init --copy-chunker-params-from`), so the two dedup against
    /// each other; `None` for keys of this repository's own.
    pub content_keys: Option<crate::crypto::ContentKeys>,
}

impl std::fmt::Debug for InitOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitOptions")
            .field("file_chunker", &self.file_chunker)
            .field("stream_chunker", &self.stream_chunker)
            .field("compression_level", &self.compression_level)
            .field("stream_compression_level", &self.stream_compression_level)
            .field("pack_size", &self.pack_size)
            .field("frame_size", &self.frame_size)
            .field("passphrase", &matches!(self.protection, Protection::Passphrase { .. }))
            .finish()
    }
}

/// Supplies the passphrase when a repository turns out to need one (the
/// CLI reads it from the environment or prompts); `None` when there is no
/// way to get one.
pub type PassphraseSource<'a> = &'a dyn Fn() -> Result<Zeroizing<String>>;

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            file_chunker: ChunkerParams::default_files(),
            stream_chunker: ChunkerParams::default_streams(),
            compression_level: 3,
            stream_compression_level: 1,
            pack_size: 16 * 1024 * 1024,
            // 1 MiB frames store a mail spool 6 % smaller than 256 KiB ones
            // at the same backup and restore CPU; 4 MiB gain nothing more on
            // www and cost restores 50 % more CPU (BENCHMARKS.md, "Frame
            // size"). The reader keeps grouped frames of any size.
            frame_size: 1024 * 1024,
            protocol: None,
            protection: Protection::Unprotected,
            content_keys: None,
        }
    }
}

impl InitOptions {
    /// Refuses settings no repository may have, before anything is
    /// written (and, for a passphrase, before it is asked for).
    pub fn validate(&self) -> Result<()> {
        for (what, level) in
            [("compression level", self.compression_level), ("stream compression level", self.stream_compression_level)]
        {
            if !(1..=22).contains(&level) {
                return Err(Error::InvalidArgument { what, reason: format!("{level} is not in 1..=22") });
            }
        }
        if !(1024 * 1024..=256 * 1024 * 1024).contains(&self.pack_size) {
            return Err(Error::InvalidArgument {
                what: "pack size",
                reason: format!("{} is not between 1 MiB and 256 MiB", self.pack_size),
            });
        }
        if self.frame_size == 0 || self.frame_size > self.pack_size {
            return Err(Error::InvalidArgument {
                what: "frame size",
                reason: format!("{} is not between 1 byte and the pack size ({})", self.frame_size, self.pack_size),
            });
        }
        if let Some(p) = &self.protocol {
            p.validate()?;
        }
        Ok(())
    }
}

/// An index file ready to put: its name, bytes and the packs it lists.
pub type EncodedIndexFile<'a> = (Id, Vec<u8>, &'a [PackEntry]);

/// A snapshot and its id.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: Id,
    pub file: SnapshotFile,
}

/// A snapshot file that could not be read, and why.
pub type DamagedSnapshot = (Id, Error);

/// Narrows `latest` (and listings) by host, tag and path, as restic does:
/// any of `hosts`; any of the tag lists in `tags`, each list matching when
/// the snapshot carries all of its tags (`--tag a,b --tag c` is "a and b,
/// or c", the same rule as `--keep-tag`; an empty list matches a snapshot
/// without tags); all of `paths`.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub hosts: Vec<String>,
    pub tags: Vec<Vec<String>>,
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    /// Paths match as recorded, whichever way they are spelled:
    /// `mysql/shop.sql` (a stream's name as given to --stdin-name) matches
    /// the recorded `/mysql/shop.sql`, and `/var/www/` matches `/var/www`.
    pub fn matches(&self, s: &SnapshotFile) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.host))
            && (self.tags.is_empty() || self.tags.iter().any(|list| tag_list_matches(list, &s.tags)))
            && self.paths.iter().all(|p| s.paths.iter().any(|q| same_path(p, q)))
    }
}

/// A snapshot carrying `tags` has every tag of `list`; an empty list asks
/// for a snapshot without tags (restic's `--tag ""`).
fn tag_list_matches(list: &[String], tags: &[String]) -> bool {
    if list.is_empty() {
        tags.is_empty()
    } else {
        list.iter().all(|t| tags.contains(t))
    }
}

/// Two snapshot paths name the same thing: equal once empty and `.`
/// components are dropped.
pub fn same_path(a: &str, b: &str) -> bool {
    fn parts(p: &str) -> impl Iterator<Item = &str> {
        p.split('/').filter(|c| !c.is_empty() && *c != ".")
    }
    parts(a).eq(parts(b))
}

pub struct Repository {
    storage: Arc<dyn Storage>,
    config: Config,
    index_path: PathBuf,
    index: OnceLock<Index>,
    /// Serializes the first open of the index database (redb refuses a
    /// second open of the same file in one process).
    index_init: Mutex<()>,
    reader: OnceLock<BlobReader>,
    /// The subkeys (format v2; `None` for a v1 repository).
    keys: Option<Arc<Keys>>,
    /// The master secret and the key file it was unwrapped from (v2).
    master: Option<(MasterSecret, String)>,
    /// A shared read snapshot of the index for blob lookups on the read
    /// path; see [`Repository::lookup_blob`].
    lookup_reader: Mutex<Option<(Instant, Arc<IndexReader>)>>,
    /// Packs named by prune marks, as the running session last read them
    /// (v2); dedup never relies on them.
    marked: Arc<RwLock<Arc<HashSet<Id>>>>,
    /// The local cache (`<cache root>/<repository id>/`), when the
    /// repository was opened with a cache root.
    cache: Option<RepoCache>,
    /// False while reads must come from the repository itself (`check`).
    cache_reads: bool,
    /// False when shared locks are skipped: the repository cannot be
    /// written (a read-only disk, another user's repository) or the user
    /// asked for it. Exclusive locks are never skipped.
    shared_locks: bool,
}

/// How long the read path keeps one index read transaction: long enough
/// that restoring many small files does not open one (several syscalls
/// with a shared database) per blob, short enough not to pin old pages that
/// a concurrent backup's commits would like to reuse.
const LOOKUP_READER_TTL: Duration = Duration::from_secs(5);

impl Drop for Repository {
    /// The end of every command that opened the index: merge a grown delta
    /// into the sorted file ([`Index::settle`]) and give back the pages its
    /// writes left behind (see [`Index::compact_if_wasteful`]). Only a
    /// cache is at stake, so a failure is ignored.
    fn drop(&mut self) {
        if let Ok(slot) = self.lookup_reader.get_mut() {
            *slot = None;
        }
        if let Some(index) = self.index.get_mut() {
            let _ = index.settle();
            let _ = index.compact_if_wasteful();
        }
        if let Some(c) = &self.cache {
            c.evict();
        }
    }
}

impl Repository {
    /// Creates a new repository in an empty or missing local directory.
    pub fn init_local(path: &Path, opts: &InitOptions) -> Result<Repository> {
        if path.join("config").exists() {
            return Err(Error::AlreadyExists { path: path.to_path_buf() });
        }
        if let Ok(mut rd) = std::fs::read_dir(path) {
            if rd.next().is_some() {
                return Err(Error::InvalidArgument {
                    what: "repository path",
                    reason: format!("{} exists and is not empty", path.display()),
                });
            }
        }
        // Bad options are refused before the layout is made: a refused
        // init leaves the directory as it found it, so the next try works.
        opts.validate()?;
        let local = LocalDir::new(path);
        local.create_layout()?;
        Self::init(Arc::new(local), opts)
    }

    /// Writes the config into empty storage; the config is written last so
    /// a half-initialised repository is never mistaken for a real one.
    pub fn init(storage: Arc<dyn Storage>, opts: &InitOptions) -> Result<Repository> {
        Self::init_with_index(storage, opts, None)
    }

    /// [`init`](Self::init) for storage that is not a local directory: the
    /// index database lives at `index_db`.
    pub fn init_with_index(
        storage: Arc<dyn Storage>,
        opts: &InitOptions,
        index_db: Option<PathBuf>,
    ) -> Result<Repository> {
        let (passphrase, _) = Self::create(storage.as_ref(), opts)?;
        Self::open_with(storage, index_db, Some(&move || passphrase.clone().ok_or(Error::PassphraseRequired)))
    }

    /// Creates a repository on empty storage of any kind (see
    /// [`init`](Self::init)) with its index database under `cache_root`
    /// (see [`open_cached_with`](Self::open_cached_with)).
    pub fn init_cached(storage: Arc<dyn Storage>, opts: &InitOptions, cache_root: &Path) -> Result<Repository> {
        let (passphrase, key_file) = Self::create(storage.as_ref(), opts)?;
        // The key file just written is the one that opens it: no listing
        // of `keys/` (remote.md section 4).
        Self::open_cached_hinted(
            storage,
            cache_root,
            Some(&move || passphrase.clone().ok_or(Error::PassphraseRequired)),
            Some(key_file),
        )
    }

    /// Checks `opts` and writes a new repository's key file and config
    /// into `storage`, which must hold none; returns the passphrase that
    /// opens it, if any, and the key file's name.
    fn create(storage: &dyn Storage, opts: &InitOptions) -> Result<(Option<Zeroizing<String>>, String)> {
        if storage.exists(FileKind::Config, "config")? {
            return Err(Error::AlreadyExists { path: storage.location().into() });
        }
        opts.validate()?;
        let now = Utc::now();
        let mut config = Config {
            version: REPO_FORMAT_VERSION,
            features: Some(
                DEFAULT_FEATURES
                    .iter()
                    .chain(opts.content_keys.as_ref().map(|_| &FEATURE_SHARED_CONTENT_KEYS))
                    .map(|f| f.to_string())
                    .collect(),
            ),
            id: Id::hash(
                format!(
                    "{}-{}-{}",
                    crate::lock::hostname(),
                    std::process::id(),
                    now.timestamp_nanos_opt().unwrap_or_default()
                )
                .as_bytes(),
            ),
            created: now,
            id_scheme: IdScheme::KeyedBlake3,
            file_chunker: opts.file_chunker,
            stream_chunker: opts.stream_chunker,
            compression: CompressionParams { algorithm: CompressionAlgorithm::Zstd, level: opts.compression_level },
            stream_compression: Some(CompressionParams {
                algorithm: CompressionAlgorithm::Zstd,
                level: opts.stream_compression_level,
            }),
            pack_size: opts.pack_size,
            frame_size: opts.frame_size,
            protocol: Some(opts.protocol.unwrap_or_default()),
            encryption: Some(match opts.protection {
                Protection::Passphrase { .. } => Encryption::Passphrase,
                Protection::Unprotected => Encryption::None,
            }),
            content_keys: None,
            mac: None,
        };
        let master = MasterSecret::random()?;
        let keys = Keys::derive(&master);
        if let Some(content) = &opts.content_keys {
            config.content_keys = Some(crate::format::content_keys::seal(&keys, &config.id, content)?);
        }
        config.authenticate(&keys);
        // The key file before the config: a repository is only ever seen
        // (config present) with a way to open it.
        let key =
            KeyFile::create(&master, config.id, &opts.protection, crate::lock::hostname(), crate::lock::username())?;
        let key_bytes = key.encode();
        storage.put(FileKind::Key, &Id::hash(&key_bytes).to_hex(), &key_bytes)?;
        // Create-if-absent: two `init`s of one location at once must not
        // leave a config whose key file belongs to the other (atomic where
        // the store honours conditional writes; see Storage::put_new).
        if !storage.put_new(FileKind::Config, "config", &config.encode())? {
            let _ = storage.delete(FileKind::Key, &Id::hash(&key_bytes).to_hex());
            return Err(Error::AlreadyExists { path: storage.location().into() });
        }
        let passphrase = match &opts.protection {
            Protection::Passphrase { passphrase, .. } => Some(passphrase.clone()),
            Protection::Unprotected => None,
        };
        Ok((passphrase, Id::hash(&key_bytes).to_hex()))
    }

    /// Opens a local repository that needs no passphrase (v1, or v2 made
    /// with `--encryption none`).
    pub fn open_local(path: &Path) -> Result<Repository> {
        Self::open_local_with(path, None)
    }

    /// Opens a local repository, asking `passphrase` for the passphrase if
    /// it is encrypted.
    pub fn open_local_with(path: &Path, passphrase: Option<PassphraseSource<'_>>) -> Result<Repository> {
        if !path.join("config").is_file() {
            return Err(Error::NotARepository { path: path.to_path_buf() });
        }
        Self::open_with(Arc::new(LocalDir::new(path)), None, passphrase)
    }

    /// Opens a repository that needs no passphrase.
    pub fn open(storage: Arc<dyn Storage>, index_db: Option<PathBuf>) -> Result<Repository> {
        Self::open_with(storage, index_db, None)
    }

    /// Opens a local repository with its index database under
    /// `cache_root/<repository id>/`, so that the repository directory holds
    /// only repository files and a repository that cannot be written (a
    /// read-only disk, another user's) can still be read.
    ///
    /// The file name also carries a hash of the repository's path: a copy of
    /// a repository (same id, `cp -a`, `rsync`) must never share a cache
    /// with the original, or a backup into one could dedup against packs
    /// only the other holds.
    pub fn open_local_cached(path: &Path, cache_root: &Path) -> Result<Repository> {
        Self::open_local_cached_with(path, cache_root, None)
    }

    /// [`Repository::open_local_cached`], asking `passphrase` for the
    /// passphrase if the repository is encrypted.
    pub fn open_local_cached_with(
        path: &Path,
        cache_root: &Path,
        passphrase: Option<PassphraseSource<'_>>,
    ) -> Result<Repository> {
        if !path.join("config").is_file() {
            return Err(Error::NotARepository { path: path.to_path_buf() });
        }
        let repo = Self::open_cached_with(Arc::new(LocalDir::new(path)), cache_root, passphrase)?;
        // Before the cache moved out, the index database was REPO/index.redb.
        // It is only a cache: the new one is built from the index files, and
        // the old one goes when the repository can be written (an older arc
        // that still has it open keeps its open file).
        let legacy = path.join("index.redb");
        if legacy.is_file() {
            let _ = std::fs::remove_file(&legacy);
        }
        Ok(repo)
    }

    /// Opens a repository on any storage (a directory, S3, SFTP, WebDAV)
    /// with its index database under `cache_root/<repository id>/`, asking
    /// `passphrase` for the passphrase if it is encrypted.
    ///
    /// The file name also carries a hash of the repository's location (the
    /// canonical path of a directory, the URL of a remote one): a copy of a
    /// repository (same id, `cp -a`, `rsync`, `rclone`) must never share a
    /// cache with the original, or a backup into one could dedup against
    /// packs only the other holds.
    pub fn open_cached_with(
        storage: Arc<dyn Storage>,
        cache_root: &Path,
        passphrase: Option<PassphraseSource<'_>>,
    ) -> Result<Repository> {
        Self::open_cached_hinted(storage, cache_root, passphrase, None)
    }

    /// [`open_cached_with`](Self::open_cached_with), trying `key_file`
    /// first if given, else the cache's hint.
    fn open_cached_hinted(
        storage: Arc<dyn Storage>,
        cache_root: &Path,
        passphrase: Option<PassphraseSource<'_>>,
        key_file: Option<String>,
    ) -> Result<Repository> {
        let (config, data) = Self::read_config(storage.as_ref())?;
        // The key file that opened the repository last on this host is
        // tried first: one GET instead of a listing of `keys/` and a GET of
        // every key file (remote.md section 4).
        let cached = crate::cache::key_hint(cache_root, &config.id);
        let hint = key_file.or_else(|| cached.clone());
        // The key before anything is created on the config's say-so.
        let (keys, master) = unlock_keys(storage.as_ref(), &config, &data, passphrase, hint.as_deref())?;
        let location = match storage.local_path() {
            Some(path) => std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()).into_os_string(),
            None => storage.location().into(),
        };
        let key = Id::hash(location.as_encoded_bytes()).to_hex();
        let shown = match storage.local_path() {
            Some(_) => location.to_string_lossy().into_owned(),
            None => storage.location(),
        };
        // Snapshot files and trees are cached where fetching them costs
        // requests; a local repository's own files are as near as a copy.
        let cache = RepoCache::open(cache_root, &config.id, &shown, &key[..16], storage.local_path().is_none())?;
        if let Some((_, name)) = &master {
            if cached.as_deref() != Some(name.as_str()) {
                cache.set_key_hint(name);
            }
        }
        let index_path = cache.index_path();
        let mut repo = Self::with_config(storage, config, index_path, keys, master);
        repo.cache = Some(cache);
        Ok(repo)
    }

    /// The config and its stored bytes (for the MAC check).
    fn read_config(storage: &dyn Storage) -> Result<(Config, Vec<u8>)> {
        let data = match storage.get(FileKind::Config, "config") {
            Ok(d) => d,
            Err(Error::Missing { .. }) => return Err(Error::NotARepository { path: storage.location().into() }),
            Err(e) => return Err(e),
        };
        Ok((Config::decode(&data)?, data))
    }

    fn with_config(
        storage: Arc<dyn Storage>,
        config: Config,
        index_path: PathBuf,
        keys: Option<Arc<Keys>>,
        master: Option<(MasterSecret, String)>,
    ) -> Repository {
        Repository {
            storage,
            config,
            index_path,
            index: OnceLock::new(),
            index_init: Mutex::new(()),
            reader: OnceLock::new(),
            keys,
            master,
            lookup_reader: Mutex::new(None),
            shared_locks: true,
            cache: None,
            cache_reads: true,
            marked: Arc::new(RwLock::new(Arc::new(HashSet::new()))),
        }
    }

    /// The directories of this host that the repository writes to while
    /// a backup runs: the repository itself when it is local, and its
    /// cache (which holds the index database of a remote one). A backup
    /// never stores them: they change under its reads, and a copy of a
    /// repository inside itself only grows it.
    pub fn own_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.storage.local_path().map(Path::to_path_buf).into_iter().collect();
        dirs.extend(self.cache.as_ref().map(|c| c.dir().to_path_buf()));
        dirs
    }

    /// The local cache, if the repository was opened with one and reads
    /// may use it.
    pub fn cache(&self) -> Option<&RepoCache> {
        self.cache.as_ref().filter(|_| self.cache_reads)
    }

    /// Reads everything from the repository itself from now on, not from
    /// the local cache: for `check`, which must see the repository's own
    /// bytes (a cached copy would hide damage to the stored one).
    pub fn bypass_cache(&mut self) {
        self.cache_reads = false;
    }

    /// Takes no shared locks from now on (see [`Repository::lock_shared`]):
    /// for reading a repository that cannot be written, or on request.
    pub fn skip_shared_locks(&mut self) {
        self.shared_locks = false;
    }

    /// Opens a repository. The index database lives in the repository
    /// directory for a local repository, else at `index_db`.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        index_db: Option<PathBuf>,
        passphrase: Option<PassphraseSource<'_>>,
    ) -> Result<Repository> {
        let (config, data) = Self::read_config(storage.as_ref())?;
        let (keys, master) = unlock_keys(storage.as_ref(), &config, &data, passphrase, None)?;
        let index_path = match (index_db, storage.local_path()) {
            (Some(p), _) => p,
            (None, Some(root)) => root.join("index.redb"),
            (None, None) => {
                return Err(Error::InvalidArgument {
                    what: "index database",
                    reason: "a remote repository needs a cache path for its index".into(),
                })
            }
        };
        Ok(Self::with_config(storage, config, index_path, keys, master))
    }

    /// The subkeys of a v2 repository (`None` for v1): the one sealing API
    /// every v2 file goes through is [`Keys::seal`] / [`Keys::open`] and
    /// the wrappers in `format::sealed`.
    pub fn keys(&self) -> Option<&Arc<Keys>> {
        self.keys.as_ref()
    }

    /// The master secret and the name of the key file that opened the
    /// repository (v2), for key management.
    pub fn master(&self) -> Option<(&MasterSecret, &str)> {
        self.master.as_ref().map(|(m, n)| (m, n.as_str()))
    }

    /// A blob's id under this repository's id scheme.
    pub fn blob_id(&self, data: &[u8]) -> Id {
        match &self.keys {
            Some(k) => k.chunk_id(data),
            None => Id::hash(data),
        }
    }

    /// A chunker for `params`, with the secret gear seed in v2.
    pub fn chunker(&self, params: &ChunkerParams) -> Chunker {
        Chunker::with_seed(params, self.keys.as_ref().map_or(0, |k| k.gear_seed()))
    }

    /// Decodes a stored index file of either version (opening it in v2).
    pub fn decode_index_file(&self, data: Vec<u8>, name: &str) -> Result<Vec<PackEntry>> {
        Ok(self.decode_index_file_full(data, name)?.packs)
    }

    /// Like [`Repository::decode_index_file`], with the index files it
    /// supersedes (v2 compaction).
    pub fn decode_index_file_full(&self, data: Vec<u8>, name: &str) -> Result<index_file::IndexFile> {
        let data = self.open_file(Purpose::INDEX_FILE, data, "index file", name)?;
        let overhead = if self.keys.is_some() { sealed::OVERHEAD as u64 } else { 0 };
        index_file::decode_file(&data, name, overhead)
    }

    /// Seals a repository file's bytes for storage (v2); v1 files are
    /// stored as they are.
    pub fn seal_file(&self, purpose: Purpose, plain: Vec<u8>) -> Result<Vec<u8>> {
        match &self.keys {
            Some(k) => sealed::seal_file(k, purpose, &[], &plain),
            None => Ok(plain),
        }
    }

    /// Opens a stored repository file (v2); returns v1 files as they are.
    pub fn open_file(&self, purpose: Purpose, data: Vec<u8>, what: &'static str, name: &str) -> Result<Vec<u8>> {
        match &self.keys {
            Some(k) => sealed::open_file(k, purpose, &[], &data, what, name),
            None => Ok(data),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Refuses `operation` when the repository's format is read-only for
    /// this binary (a v1 repository). Every operation that writes
    /// repository files other than locks calls this before taking its lock.
    pub fn require_writable(&self, operation: &'static str) -> Result<()> {
        if self.config.writable() {
            return Ok(());
        }
        Err(Error::ReadOnlyFormat { version: self.config.version, writable: OLDEST_WRITABLE_VERSION, operation })
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn location(&self) -> String {
        self.storage.location()
    }

    /// A shared lock, or none at all after [`Repository::skip_shared_locks`].
    pub fn lock_shared(&self, operation: &str) -> Result<LockGuard> {
        if !self.shared_locks {
            return Ok(LockGuard::none());
        }
        LockGuard::acquire(self.storage.clone(), self.keys.clone(), false, operation)
    }

    /// The exclusive lock. With the v2 protocol, backups hold sessions
    /// instead of locks, so a live session also refuses it (and a backup
    /// starting meanwhile sees the lock: both write first, then look).
    pub fn lock_exclusive(&self, operation: &str) -> Result<LockGuard> {
        let guard = LockGuard::acquire(self.storage.clone(), self.keys.clone(), true, operation)?;
        if let Some(settings) = self.protocol() {
            let now = crate::lock::storage_now(self.storage.as_ref(), guard.name())?;
            if let Some(s) =
                crate::session::live_sessions(self.storage.as_ref(), self.v2_keys()?, &settings, now, None)?.first()
            {
                return Err(Error::Locked { holder: s.describe(), stale: false });
            }
        }
        Ok(guard)
    }

    /// The v2 commit and prune protocol's settings, if this repository
    /// uses it (format-spec/v2/protocol.md).
    pub fn protocol(&self) -> Option<crate::format::config::ProtocolSettings> {
        // Every writable repository (format v2) uses it; v1 is read-only.
        self.config.writable().then(|| self.config.protocol.unwrap_or_default())
    }

    /// Starts a session (v2): announced in the repository and refreshed
    /// until dropped; while it lives, dedup avoids packs that prune marks
    /// name. Refused while an exclusive lock (`prune --instant`, `repair`)
    /// is held.
    pub fn start_session(&self, operation: &str) -> Result<crate::session::Session> {
        let settings = self.protocol().ok_or_else(|| Error::InvalidArgument {
            what: "repository",
            reason: "sessions need a repository of format v2".into(),
        })?;
        let keys = self.v2_keys()?.clone();
        let session =
            crate::session::Session::start(self.storage.clone(), keys, settings, operation, self.marked.clone())?;
        crate::lock::check_no_exclusive(self.storage.as_ref(), self.keys.as_deref())?;
        Ok(session)
    }

    /// The keys of a v2 repository, which every v2 repository has (sealed
    /// with a stored key under `--encryption none`); the protocol's files
    /// are sealed with them.
    pub(crate) fn v2_keys(&self) -> Result<&Arc<Keys>> {
        self.keys.as_ref().ok_or_else(|| Error::InvalidArgument {
            what: "repository",
            reason: "the commit and prune protocol needs a repository of format v2".into(),
        })
    }

    /// Packs that prune marks name, as the running session knows them.
    pub fn marked_packs(&self) -> Arc<HashSet<Id>> {
        self.marked.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// The index database, brought up to date with the index files on
    /// first use.
    pub fn index(&self) -> Result<&Index> {
        self.index_from(None)
    }

    /// [`index`](Self::index), for a caller that has just listed `index/`
    /// itself (`listing`): a first open syncs the database from that
    /// listing instead of listing again. Prune's plan lists `index/` after
    /// its session check (protocol.md §5 P7); the database's first sync,
    /// right before, listed it a second time (a round trip on a remote
    /// store, remote.md section 4).
    pub(crate) fn index_listed(&self, listing: &[(String, u64)]) -> Result<&Index> {
        self.index_from(Some(listing))
    }

    fn index_from(&self, listing: Option<&[(String, u64)]>) -> Result<&Index> {
        if let Some(i) = self.index.get() {
            return Ok(i);
        }
        let _init = crate::sync::lock(&self.index_init, "the index database's first open")?;
        Ok(self.open_index_locked(listing)?.0)
    }

    /// The index database, opened and synced if this is its first use
    /// (then `true`); the caller holds `index_init`. `listing`: `index/`
    /// as the caller just listed it, if it did.
    fn open_index_locked(&self, listing: Option<&[(String, u64)]>) -> Result<(&Index, bool)> {
        if let Some(i) = self.index.get() {
            return Ok((i, false));
        }
        let index = Index::open(&self.index_path)?;
        self.sync_index_or_refill(&index, listing)?;
        Ok((self.index.get_or_init(|| index), true))
    }

    /// Brings the database in step with the index files, incrementally
    /// (v2 spec 2.4): reads only index files it has not seen; drops the
    /// packs of known index files that are gone (another host's prune or
    /// compaction) unless a present file lists them again; drops unlisted
    /// packs that are gone. A file that a present file supersedes is not
    /// read (its packs are in the superseding one).
    fn sync_index_or_refill(&self, index: &Index, listing: Option<&[(String, u64)]>) -> Result<()> {
        match self.sync_index(index, listing) {
            // The sorted file was found damaged and the cache emptied: fill
            // it again from the index files.
            Err(_) if index.take_emptied() => self.sync_index(index, listing),
            r => r,
        }
    }

    fn sync_index(&self, index: &Index, listing: Option<&[(String, u64)]>) -> Result<()> {
        let in_storage: HashSet<Id> = match listing {
            Some(l) => l.iter().filter_map(|(n, _)| n.parse().ok()).collect(),
            None => self.storage.list(FileKind::Index)?.into_iter().filter_map(|(n, _)| n.parse().ok()).collect(),
        };
        let known = index.index_files()?;
        // A backup records each pack as soon as it is durable, before an
        // index file lists it; prune deletes such packs when nothing in
        // them is used, without any index file going away. An entry left
        // pointing at one would make its blobs look present to dedup.
        let mut gone_packs = Vec::new();
        for (pack, _, _, listed) in index.packs()? {
            if !listed && !self.storage.exists(FileKind::Pack, &pack.to_hex())? {
                gone_packs.push(pack);
            }
        }
        // A listing may lag behind puts (an eventually consistent store):
        // a file this process just wrote, or another host did, can be
        // missing from it. Dropping its packs would make their blobs look
        // absent: dedup would store them again, and a backup's commit
        // check would take its own new blobs for pruned ones and abort
        // (PrunedMeanwhile). So a known file missing from the listing is
        // gone only if a HEAD (read-after-write consistent) agrees.
        let mut gone_files: Vec<Id> = Vec::new();
        for id in known.difference(&in_storage) {
            if !self.storage.exists(FileKind::Index, &id.to_hex())? {
                gone_files.push(*id);
            }
        }
        // One transaction: new files are read one at a time; their rows go
        // into redb while they are few (a backup's files) and to sorted
        // runs, merged into a new sorted file at commit, when they are many
        // (a new host, a rebuild). Gone files and packs come after every
        // addition: a pack that a new file lists again keeps its rows.
        // Nothing new and nothing gone (every command after the first on a
        // repository no one else writes): no transaction, whose commit
        // would cost two `fdatasync`s before the command could start.
        if gone_files.is_empty() && gone_packs.is_empty() && in_storage.is_subset(&known) {
            return Ok(());
        }
        let mut update = index.begin()?;
        let mut superseded: HashSet<Id> = HashSet::new();
        for id in in_storage.difference(&known) {
            // A file a file already read supersedes: its packs are in that
            // one; it is only recorded as known.
            if superseded.contains(id) {
                update.add(Some(*id), &[])?;
                continue;
            }
            let name = id.to_hex();
            let data = match self.storage.get(FileKind::Index, &name) {
                Ok(d) => d,
                // Replaced by a concurrent prune since the listing: the
                // files replacing it are merged by the next sync.
                Err(Error::Missing { .. }) => continue,
                Err(e) => return Err(e),
            };
            if Id::hash(&data) != *id {
                return Err(Error::corrupt("index file", name, "content does not match its name"));
            }
            let file = self.decode_index_file_full(data, &name)?;
            superseded.extend(file.supersedes.iter().copied());
            update.add(Some(*id), &file.packs)?;
        }
        update.gone_files(&gone_files)?;
        update.gone_packs(&gone_packs)?;
        update.commit()
    }

    /// Brings the index database up to date with index files written since
    /// it was opened, e.g. by a backup finishing while a long-lived reader
    /// (the mount) has the repository open. A database opened by this call was synced by the open: syncing it
    /// again would list `index/` twice in a row (a round trip on a remote
    /// store, remote.md section 4).
    pub fn refresh_index(&self) -> Result<()> {
        let _one_at_a_time = crate::sync::lock(&self.index_init, "the index database's refresh")?;
        match self.open_index_locked(None)? {
            (_, true) => Ok(()),
            (index, false) => self.sync_index_or_refill(index, None),
        }
    }

    /// A scratch directory for one operation's sorted runs (check and
    /// prune; removed when dropped): beside the index database (the cache
    /// directory), or the repository's `tmp/` when the database is inside
    /// a local repository, so that scratch never lands in the repository's
    /// own directories and stays on the disk the cache was put on.
    /// Scratch directories of killed processes there are removed first
    /// (`scratch.rs`).
    pub fn scratch_dir(&self) -> Result<crate::scratch::Scratch> {
        let local_tmp = self.storage.local_path().filter(|r| self.index_path.starts_with(r)).map(|r| r.join("tmp"));
        let dir = match local_tmp {
            Some(tmp) => tmp,
            None => self.index_path.parent().map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir),
        };
        let make = |dir: &Path| crate::scratch::Scratch::create(dir);
        // A repository on a read-only disk is still checked: then the
        // system's temporary directory.
        make(&dir).or_else(|_| make(&std::env::temp_dir())).map_err(|e| Error::io(&dir, e))
    }

    /// Makes the index database forget the index files a prune deleted
    /// and the packs it is about to delete, in one transaction, with no
    /// request to the storage (the prune recorded the files replacing them
    /// as it wrote them). Never empties the database on the way: it is
    /// shared by every process of this host on the repository, and a
    /// backup committing meanwhile looks its blobs up in it (a rebuild's
    /// empty moment made such a backup take its trees for pruned ones and
    /// stop).
    pub fn forget_packs(&self, gone_files: &[Id], gone_packs: &[Id]) -> Result<()> {
        let index = self.index()?;
        {
            let _one_at_a_time = crate::sync::lock(&self.index_init, "the index database's refresh")?;
            index.apply(&crate::index::IndexUpdate {
                gone_files: gone_files.to_vec(),
                gone_packs: gone_packs.to_vec(),
                ..Default::default()
            })?;
        }
        // The read path's shared snapshot predates the update.
        if let Ok(mut slot) = self.lookup_reader.lock() {
            *slot = None;
        }
        Ok(())
    }

    /// Drops the index database and rebuilds it from the index files.
    pub fn rebuild_index_db(&self) -> Result<()> {
        let index = self.index()?;
        index.clear()?;
        // The read path's shared snapshot predates the rebuild.
        if let Ok(mut slot) = self.lookup_reader.lock() {
            *slot = None;
        }
        self.sync_index_or_refill(index, None)
    }

    /// Index files listing `packs`, in this repository's index file
    /// version, split within the caps every reader accepts (v2 spec 2.1):
    /// (name, bytes, the packs it lists), to be put in this order.
    /// `supersedes` goes into the last file only, so that a reader who sees
    /// it knows every file before it is durable too (v2 spec 2.3).
    pub fn encode_index_files<'a>(
        &self,
        packs: &'a [PackEntry],
        supersedes: &[Id],
    ) -> Result<Vec<EncodedIndexFile<'a>>> {
        let groups = index_file::split_within_caps(packs);
        let last = groups.len().saturating_sub(1);
        groups
            .into_iter()
            .enumerate()
            .map(|(i, g)| {
                let sup = if i == last { supersedes } else { &[] };
                let plain = index_file::encode_for(self.writes_index_v2(), sup, g)?;
                let data = self.seal_file(Purpose::INDEX_FILE, plain)?;
                Ok((Id::hash(&data), data, g))
            })
            .collect()
    }

    /// Reads a pack's trailer with two ranged reads (footer, then trailer).
    pub fn read_pack_trailer(&self, pack: &Id, pack_len: u64) -> Result<PackEntry> {
        let name = pack.to_hex();
        if pack_len < pack::HEADER_LEN + pack::FOOTER_LEN {
            return Err(Error::corrupt("pack", &name, format!("only {pack_len} bytes")));
        }
        let footer = self.storage.get_range(FileKind::Pack, &name, pack_len - pack::FOOTER_LEN, pack::FOOTER_LEN)?;
        let (start, len, sum) = pack::trailer_range(&footer, &name, pack_len)?;
        let bytes = self.storage.get_range(FileKind::Pack, &name, start, u64::from(len))?;
        if Id::hash(&bytes) != sum {
            return Err(Error::corrupt("pack", &name, "trailer checksum mismatch"));
        }
        let bytes = self.open_trailer(&bytes, &name)?;
        Ok(PackEntry { pack: *pack, pack_len, trailer: Trailer::decode(&bytes, &name, start)? })
    }

    /// Opens a pack's stored trailer (sealed in v2, plain in v1).
    pub fn open_trailer(&self, stored: &[u8], pack: &str) -> Result<Vec<u8>> {
        match &self.keys {
            Some(k) => k
                .open(Purpose::PACK_TRAILER, pack::HEADER_V2, stored, "pack trailer", pack)
                .map_err(|_| Error::NotAuthentic { what: "pack trailer", name: pack.to_string() }),
            None => Ok(stored.to_vec()),
        }
    }

    /// The stored bytes of a pack frame: opened and unpadded in v2.
    pub fn open_frame(&self, stored: Vec<u8>, pack: &str, offset: u64) -> Result<Vec<u8>> {
        match &self.keys {
            Some(k) => sealed::open_frame_owned(k, stored, pack, offset),
            None => Ok(stored),
        }
    }

    /// [`Repository::open_frame`] in the buffer the frame was read into:
    /// the stored bytes from within it (sealing checked and undone in
    /// place in v2).
    pub fn open_frame_in_place<'a>(&self, stored: &'a mut [u8], pack: &str, offset: u64) -> Result<&'a [u8]> {
        match &self.keys {
            Some(k) => sealed::open_frame_in_place(k, stored, pack, offset),
            None => Ok(stored),
        }
    }

    /// The raw bytes of a stored frame: opened, unpadded and decompressed;
    /// a delta frame (format::delta) decoded against its base chunk, which
    /// `base` reads (through the blob reader's cache: at most one more
    /// frame). `chunk` is the blob the caller wants from the frame (a delta
    /// frame holds exactly one), named in the error when the base fails.
    pub fn decode_frame(
        &self,
        stored: Vec<u8>,
        frame: &pack::FrameRecord,
        pack: &str,
        chunk: &Id,
        base: &dyn Fn(&Id) -> Result<Arc<[u8]>>,
    ) -> Result<Vec<u8>> {
        if frame.codec != pack::FrameCodec::Delta {
            return pack::decode_frame_owned(self.open_frame(stored, pack, frame.offset)?, frame, pack);
        }
        let mut stored = stored;
        let (base_id, delta) = self.open_delta_frame(&mut stored, frame, pack)?;
        let base_plain = base(&base_id).map_err(|e| Error::DeltaBase {
            chunk: *chunk,
            base: base_id,
            pack: pack.to_string(),
            source: Box::new(e),
        })?;
        delta::decompress(delta, &base_plain, frame.raw_len, pack, frame.offset)
    }

    /// A delta frame's base id and zstd delta, authenticated (not decoded)
    /// where the frame lies in `stored`, for the readers that fetch the
    /// base themselves (restore's planned passes); a delta frame in a
    /// format v1 repository is damage.
    pub(crate) fn open_delta_frame<'a>(
        &self,
        stored: &'a mut [u8],
        frame: &pack::FrameRecord,
        pack: &str,
    ) -> Result<(Id, &'a [u8])> {
        let keys = self.keys.as_ref().ok_or_else(|| {
            Error::corrupt("pack", pack, format!("delta frame at {} in a format v1 repository", frame.offset))
        })?;
        delta::open_in_place(keys, stored, pack, frame.offset)
    }

    /// A delta frame's base id and zstd delta, authenticated (not decoded).
    pub fn open_delta(&self, stored: &[u8], frame: &pack::FrameRecord, pack: &str) -> Result<(Id, Vec<u8>)> {
        let keys = self.v2_keys()?;
        delta::open(keys, stored, pack, frame.offset)
    }

    /// The base chunk named by the delta frame `frame` of pack `pack`: one
    /// ranged read of its first 32 bytes.
    pub fn delta_base(&self, pack: &Id, frame: &pack::FrameRecord) -> Result<Id> {
        let name = pack.to_hex();
        let head = self.storage.get_range(FileKind::Pack, &name, frame.offset, delta::BASE_LEN as u64)?;
        delta::base_of(&head, &name, frame.offset)
    }

    /// Reads a chunk to serve as a delta's base: it must be stored plainly
    /// (deltas are one step deep, streams.md section 4.4).
    pub fn read_delta_base(&self, base: &Id) -> Result<Arc<[u8]>> {
        let loc = self.lookup_blob(base)?.ok_or(Error::BlobNotInIndex(*base))?;
        if loc.frame.codec == pack::FrameCodec::Delta {
            return Err(Error::corrupt(
                "pack",
                loc.pack.to_hex(),
                format!("chunk {base} is a delta, and a delta's base never is one"),
            ));
        }
        self.blob_reader()?.read_at(self, base, &loc)
    }

    /// Whether a blob at `loc` may be relied on while prune marks name the
    /// packs in `marked` (format-spec/v2/protocol.md §4 B5): its pack is
    /// unmarked and, for a delta, so is its base's (a delta is only as
    /// durable as its base).
    pub fn outside_marks(&self, loc: &BlobLocation, marked: &HashSet<Id>) -> Result<bool> {
        if marked.contains(&loc.pack) {
            return Ok(false);
        }
        if loc.frame.codec != pack::FrameCodec::Delta {
            return Ok(true);
        }
        let base = match self.delta_base(&loc.pack, &loc.frame) {
            Ok(b) => b,
            Err(Error::Missing { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(self.lookup_blob(&base)?.is_some_and(|b| !marked.contains(&b.pack)))
    }

    /// Whether delta frames may be written: the config lists
    /// `stream-deltas` (every repository made since the feature exists;
    /// never added later, format-spec/v2/streams.md §4.1). Any other
    /// repository gets its streams stored plainly.
    pub fn writes_stream_deltas(&self) -> bool {
        self.config.has_feature(FEATURE_STREAM_DELTAS) && self.keys.is_some()
    }

    /// Packs in storage that no index file lists (left by an interrupted
    /// or still running backup), with their trailers.
    ///
    /// Format v2: packs named by a prune mark are left out. A sweep deletes
    /// the index files listing a pack before the pack itself; meanwhile
    /// the pack looks unlisted, and listing it again would leave an index
    /// file naming a pack that is about to go.
    pub fn unindexed_packs(&self) -> Result<Vec<PackEntry>> {
        let listed: HashSet<Id> = self.index()?.packs()?.into_iter().filter(|p| p.3).map(|p| p.0).collect();
        let stored = self.storage.list(FileKind::Pack)?;
        self.unlisted_trailers(
            stored.into_iter().filter_map(|(name, len)| Some((name.parse::<Id>().ok()?, len))),
            |id| listed.contains(id),
        )
    }

    /// Packs the index database knows that no index file lists yet (this
    /// host's, adopted by a process that has not listed them yet or never
    /// will), with their trailers; found without listing the storage.
    pub fn unlisted_known_packs(&self) -> Result<Vec<PackEntry>> {
        let known = self.index()?.packs()?;
        self.unlisted_trailers(known.into_iter().filter(|p| !p.3).map(|p| (p.0, p.1)), |_| false)
    }

    /// The trailers of the `candidates` (pack, length) that are neither
    /// `listed` nor marked by a prune (see [`Self::unindexed_packs`] for
    /// why); a pack deleted since the candidates were found is skipped.
    fn unlisted_trailers(
        &self,
        candidates: impl Iterator<Item = (Id, u64)>,
        listed: impl Fn(&Id) -> bool,
    ) -> Result<Vec<PackEntry>> {
        let marked = self.marked_packs();
        let mut out = Vec::new();
        for (id, len) in candidates.filter(|(id, _)| !listed(id) && !marked.contains(id)) {
            match self.read_pack_trailer(&id, len) {
                Ok(e) => out.push(e),
                Err(Error::Missing { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Where packs that nobody has listed are looked for: a listing of
    /// every pack costs a readdir on a local disk but one request per
    /// thousand packs elsewhere, on every backup. So a remote repository
    /// lists `data/` only when a writer of this host was killed or its
    /// cache is new (cache.rs, `writers/`), and otherwise takes the
    /// unlisted packs the index database knows.
    fn writer_tracking_cache(&self) -> Option<&RepoCache> {
        self.cache.as_ref().filter(|c| c.caches_files())
    }

    /// The packs a backup or copy starting now adopts (dedups against and
    /// lists in its first index file): every unlisted pack in storage on
    /// a local disk; elsewhere the unlisted packs the index database
    /// knows, and all of storage's only when a scan is due. Also the
    /// announcement of this writer, to hold until it has listed its packs.
    pub fn packs_to_adopt(&self) -> Result<(Vec<PackEntry>, Option<crate::cache::WriterFile>)> {
        let Some(cache) = self.writer_tracking_cache() else {
            return Ok((self.unindexed_packs()?, None));
        };
        // Announced before the scan: killed before the caller has recorded
        // what the scan found, this process leaves a file that makes the
        // next backup scan again.
        let writer = cache.writer()?;
        let adopt = if cache.pack_scan_needed() {
            let found = self.unindexed_packs()?;
            cache.pack_scan_done();
            found
        } else {
            self.unlisted_known_packs()?
        };
        Ok((adopt, Some(writer)))
    }

    /// The packs a backup or copy lists before it commits its snapshot:
    /// every pack it may have deduplicated against that no index file
    /// lists (another process's, still running or killed). Such a pack is
    /// known to the index database, since that is where dedup found it (a
    /// run's own packs are answered by its pending set until it lists
    /// them), so no listing of storage is needed, on a local disk either:
    /// a pack the database does not know was never deduplicated against.
    pub fn packs_to_list_before_commit(&self) -> Result<Vec<PackEntry>> {
        self.unlisted_known_packs()
    }

    pub fn blob_reader(&self) -> Result<&BlobReader> {
        if let Some(r) = self.reader.get() {
            return Ok(r);
        }
        self.index()?;
        Ok(self.reader.get_or_init(|| BlobReader::new(32 * 1024 * 1024)))
    }

    fn shared_lookup_reader(&self, refresh: bool) -> Result<Arc<IndexReader>> {
        let mut slot = crate::sync::lock(&self.lookup_reader, "the shared index reader")?;
        match slot.as_ref() {
            Some((at, r)) if !refresh && at.elapsed() < LOOKUP_READER_TTL => Ok(r.clone()),
            _ => {
                let r = Arc::new(self.index()?.reader()?);
                *slot = Some((Instant::now(), r.clone()));
                Ok(r)
            }
        }
    }

    /// Where a blob is, for the read path. A miss is retried once with a
    /// fresh read transaction, since the blob may have been committed after
    /// the shared one was opened.
    pub fn lookup_blob(&self, id: &Id) -> Result<Option<BlobLocation>> {
        if let Some(loc) = self.shared_lookup_reader(false)?.lookup(id)? {
            return Ok(Some(loc));
        }
        self.shared_lookup_reader(true)?.lookup(id)
    }

    /// Whether the index (probably) holds every one of `ids`
    /// ([`IndexReader::probably_contains`]), with the read path's shared
    /// reader; a miss is retried once with a fresh read transaction, like
    /// [`Self::lookup_blob`].
    pub fn index_may_have_all(&self, ids: &[Id]) -> Result<bool> {
        let has = |r: &IndexReader| -> Result<bool> {
            for id in ids {
                if !r.probably_contains(id)? {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        if has(&*self.shared_lookup_reader(false)?)? {
            return Ok(true);
        }
        has(&*self.shared_lookup_reader(true)?)
    }

    /// Reads and verifies one blob.
    pub fn read_blob(&self, id: &Id) -> Result<Arc<[u8]>> {
        let reader = self.blob_reader()?;
        reader.read(self, id)
    }

    /// [`Repository::read_blob`], with the frame from `pre` if it was
    /// fetched ahead.
    pub fn read_blob_with(&self, id: &Id, pre: &Prefetched) -> Result<Arc<[u8]>> {
        self.blob_reader()?.read_with(self, id, pre)
    }

    /// Fetches ahead, in few ranged reads, the frames of the blobs `ids`
    /// up to `budget` stored bytes (prefetch.rs). Only a remote store gains
    /// from it: a local one answers each read without a round trip, so
    /// there this fetches nothing.
    pub fn prefetch<'a>(&self, ids: impl IntoIterator<Item = &'a Id>, budget: u64) -> Prefetched {
        if self.storage().local_path().is_some() {
            return Prefetched::none();
        }
        Prefetched::fetch(self, ids, budget)
    }

    /// [`Repository::prefetch`] for blobs whose locations are known.
    pub fn prefetch_located(&self, located: impl IntoIterator<Item = (Id, BlobLocation)>, budget: u64) -> Prefetched {
        if self.storage().local_path().is_some() {
            return Prefetched::none();
        }
        Prefetched::fetch_located(self, located, budget)
    }

    /// The whole directory whose tree is `id`, in either tree version: a
    /// v2 directory split over several blobs is assembled here, so that
    /// every reader sees one list of entries.
    pub fn load_tree(&self, id: &Id) -> Result<Tree> {
        Ok(self.load_tree_with_leaves(id)?.0)
    }

    /// [`Repository::load_tree`], plus the directory's leaf blobs (id and
    /// entry count, in name order; one leaf for a v1 tree), which per-leaf
    /// side data such as the change-detection cache is keyed by.
    pub fn load_tree_with_leaves(&self, id: &Id) -> Result<(Tree, Vec<(Id, usize)>)> {
        let data = self.read_blob(id)?;
        match tree_v2::blob_version(&data) {
            Some(tree_v2::VERSION) => tree_v2::assemble(id, &data, &mut |b| self.read_blob(b)),
            _ => {
                let t = Tree::decode(&data, id)?;
                let n = t.nodes.len();
                Ok((t, vec![(*id, n)]))
            }
        }
    }

    /// [`Repository::load_tree`], plus every blob the directory is made of:
    /// its root first, then (a split v2 directory) its nodes, leaves and
    /// chunk lists; not its subdirectories. For whoever must find, keep or
    /// copy a directory whole: the commit check, copy.
    pub fn load_tree_with_parts(&self, id: &Id) -> Result<(Tree, Vec<Id>)> {
        let data = self.read_blob(id)?;
        let mut parts = vec![*id];
        let tree = match tree_v2::blob_version(&data) {
            Some(tree_v2::VERSION) => {
                tree_v2::assemble(id, &data, &mut |b| {
                    parts.push(*b);
                    self.read_blob(b)
                })?
                .0
            }
            _ => Tree::decode(&data, id)?,
        };
        Ok((tree, parts))
    }

    /// One entry of the directory `tree`, reading only what leads to it (one
    /// blob per level of a split v2 directory; the whole blob of a v1 one).
    pub fn lookup_name(&self, tree: &Id, name: &[u8]) -> Result<Option<Node>> {
        let data = self.read_blob(tree)?;
        match tree_v2::blob_version(&data) {
            Some(tree_v2::VERSION) => tree_v2::lookup(tree, &data, name, &mut |b| self.read_blob(b)),
            _ => Ok(Tree::decode(&data, tree)?.find(name).cloned()),
        }
    }

    /// Whether directories are written as v2 trees (split, chunk lists,
    /// change cache): in a v2 repository whose config lists `trees-v2`.
    /// Others (v1, or v2 made before the feature such as the frozen
    /// repo-v2) keep v1 tree encodings, which every v2 reader reads.
    pub fn writes_trees_v2(&self) -> bool {
        self.config.version >= 2 && self.config.has_feature(FEATURE_TREES_V2)
    }

    /// Whether index files are written as index v2: in a v2 repository
    /// whose config lists `index-v2`.
    pub fn writes_index_v2(&self) -> bool {
        self.config.version >= 2 && self.config.has_feature(FEATURE_INDEX_V2)
    }

    /// The key that decides where v2 trees are split (spec
    /// `format-spec/v2/trees-index.md` 1.5), derived from the master
    /// secret. Readers never need it; v1 repositories, which are never
    /// written, have none and get one from the repository id.
    pub fn tree_split_key(&self) -> tree_v2::SplitKey {
        match &self.keys {
            Some(k) => tree_v2::SplitKey(k.tree_split_key()),
            None => tree_v2::SplitKey(blake3::derive_key("arc 2 tree split key", &self.config.id.0)),
        }
    }

    pub fn snapshot_ids(&self) -> Result<Vec<Id>> {
        Ok(self.storage.list(FileKind::Snapshot)?.into_iter().filter_map(|(n, _)| n.parse().ok()).collect())
    }

    /// One snapshot, from the local cache if it holds the file (verified
    /// by its hash), else from the repository (and then cached).
    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let data = self.snapshot_bytes(id)?;
        self.decode_snapshot(id, data)
    }

    /// The stored bytes of snapshot `id`, checked against its name: from
    /// the cache if it has them, else fetched and cached.
    fn snapshot_bytes(&self, id: &Id) -> Result<Vec<u8>> {
        if let Some(data) = self.cache().and_then(|c| c.snapshot(id)) {
            return Ok(data);
        }
        let name = id.to_hex();
        let data = self.storage.get(FileKind::Snapshot, &name)?;
        if Id::hash(&data) != *id {
            return Err(Error::corrupt("snapshot", name, "content does not match its name"));
        }
        if let Some(c) = self.cache() {
            c.store_snapshot(id, &data);
        }
        Ok(data)
    }

    fn decode_snapshot(&self, id: &Id, data: Vec<u8>) -> Result<Snapshot> {
        let name = id.to_hex();
        let data = self.open_file(Purpose::SNAPSHOT, data, "snapshot", &name)?;
        Ok(Snapshot { id: *id, file: SnapshotFile::decode(&data, &name)? })
    }

    /// All snapshots, oldest first. Fails on the first snapshot file that
    /// cannot be read: for callers that must see every snapshot (forget,
    /// `latest`) a silently skipped one would be a wrong answer.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let (out, mut damaged) = self.readable_snapshots()?;
        match damaged.pop() {
            Some((_, e)) => Err(e),
            None => Ok(out),
        }
    }

    /// The snapshots that can be read, oldest first, and the error of each
    /// snapshot file that cannot: one damaged snapshot file must not stop
    /// listing or backing up the others.
    ///
    /// The one way every command lists snapshots: one listing of
    /// `snapshots/`, then each file from the local cache if it holds it,
    /// the others fetched in parallel (the storage's concurrency) and
    /// cached; cached files no longer listed are dropped.
    pub fn readable_snapshots(&self) -> Result<(Vec<Snapshot>, Vec<DamagedSnapshot>)> {
        let ids = self.snapshot_ids()?;
        let results = self.fetch_snapshots(&ids);
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        for (id, res) in ids.iter().zip(results) {
            match res.and_then(|data| self.decode_snapshot(id, data)) {
                Ok(s) => out.push(s),
                // Forgotten since the listing (a concurrent forget): gone,
                // not damaged.
                Err(Error::Missing { .. }) => {}
                Err(e) => damaged.push((*id, e)),
            }
        }
        if let Some(c) = self.cache() {
            c.retain_snapshots(&ids.iter().copied().collect());
        }
        out.sort_by(|a, b| a.file.time.cmp(&b.file.time).then(a.id.cmp(&b.id)));
        Ok((out, damaged))
    }

    /// The stored bytes of each of `ids`, in order: cached ones first,
    /// the rest fetched by up to `storage.concurrency()` threads (a remote
    /// store answers many small GETs in parallel much faster than in turn).
    fn fetch_snapshots(&self, ids: &[Id]) -> Vec<Result<Vec<u8>>> {
        let workers = self.storage.concurrency().clamp(1, 16).min(ids.len().max(1));
        if workers == 1 {
            return ids.iter().map(|id| self.snapshot_bytes(id)).collect();
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let slots: Vec<Mutex<Option<Result<Vec<u8>>>>> = ids.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(id) = ids.get(i) else { break };
                    let res = self.snapshot_bytes(id);
                    if let Ok(mut slot) = slots[i].lock() {
                        *slot = Some(res);
                    }
                });
            }
        });
        slots
            .into_iter()
            .zip(ids)
            .map(|(slot, id)| {
                slot.into_inner().ok().flatten().unwrap_or_else(|| {
                    Err(Error::corrupt("snapshot", id.to_hex(), "a reading thread panicked (a bug)"))
                })
            })
            .collect()
    }

    /// Resolves `latest` (narrowed by `filter`) or a unique id prefix.
    pub fn find_snapshot(&self, spec: &str, filter: &SnapshotFilter) -> Result<Snapshot> {
        if spec == "latest" {
            return self
                .snapshots()?
                .into_iter()
                .rev()
                .find(|s| filter.matches(&s.file))
                .ok_or_else(|| Error::SnapshotNotFound(spec.to_string()));
        }
        let prefix = spec.to_ascii_lowercase();
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound(spec.to_string()));
        }
        let matches: Vec<Id> = self.snapshot_ids()?.into_iter().filter(|id| id.to_hex().starts_with(&prefix)).collect();
        match matches.as_slice() {
            [] => Err(Error::SnapshotNotFound(spec.to_string())),
            [one] => self.load_snapshot(one),
            many => Err(Error::AmbiguousSnapshot {
                prefix: spec.to_string(),
                candidates: many.iter().map(|i| i.short()).collect(),
            }),
        }
    }

    /// Writes a snapshot file: the commit point of a backup.
    pub fn save_snapshot(&self, file: &SnapshotFile) -> Result<Id> {
        let data = self.seal_file(Purpose::SNAPSHOT, file.encode())?;
        let id = Id::hash(&data);
        self.storage.put(FileKind::Snapshot, &id.to_hex(), &data)?;
        if let Some(c) = self.cache() {
            c.store_snapshot(&id, &data);
        }
        Ok(id)
    }

    /// Total bytes of every pack, by listing storage.
    pub fn stored_bytes(&self) -> Result<(u64, u64)> {
        let packs = self.storage.list(FileKind::Pack)?;
        Ok((packs.len() as u64, packs.iter().map(|p| p.1).sum()))
    }

    /// Map from pack id to its length, as storage reports it.
    pub fn pack_sizes(&self) -> Result<HashMap<Id, u64>> {
        self.sizes_of(FileKind::Pack)
    }

    /// The damaged packs a pack repair kept under `quarantine/`, by id,
    /// with their lengths (protocol.md §8): not data, only named.
    pub fn quarantined_packs(&self) -> Result<HashMap<Id, u64>> {
        self.sizes_of(FileKind::Quarantine)
    }

    fn sizes_of(&self, kind: FileKind) -> Result<HashMap<Id, u64>> {
        Ok(self.storage.list(kind)?.into_iter().filter_map(|(n, l)| n.parse().ok().map(|id| (id, l))).collect())
    }
}

/// The subkeys, and the master secret with the name of its key file.
type Unlocked = (Option<Arc<Keys>>, Option<(MasterSecret, String)>);

/// The keys of a v2 repository, checked against its config (`data`, the
/// config's stored bytes); nothing for v1.
fn unlock_keys(
    storage: &dyn Storage,
    config: &Config,
    data: &[u8],
    passphrase: Option<PassphraseSource<'_>>,
    hint: Option<&str>,
) -> Result<Unlocked> {
    if config.version < 2 {
        return Ok((None, None));
    }
    let (master, key_name) = unlock(storage, config, passphrase, hint)?;
    let mut keys = Keys::derive(&master);
    Config::verify(data, &keys)?;
    // Only after the MAC: the sealed content keys are part of what it covers.
    if let Some(stored) = &config.content_keys {
        let content = crate::format::content_keys::open(&keys, &config.id, stored)?;
        keys = keys.with_content_keys(content);
    }
    Ok((Some(Arc::new(keys)), Some((master, key_name))))
}

/// Finds the key file that opens a v2 repository: the unprotected one of an
/// `--encryption none` repository, else the first that the passphrase
/// unwraps. Returns the master secret and the key file's name. `hint`, the
/// key file that opened the repository last on this host, is tried first
/// and alone; if it is gone or does not open, every key file is.
fn unlock(
    storage: &dyn Storage,
    config: &Config,
    passphrase: Option<PassphraseSource<'_>>,
    hint: Option<&str>,
) -> Result<(MasterSecret, String)> {
    let protected = config.encryption != Some(Encryption::None);
    // A repository made with a passphrase never holds an unprotected key:
    // one that does was tampered with (someone trying to make its next
    // backups readable), and it is not used.
    let usable = |k: &KeyFile| k.is_protected() == protected && k.repository == config.id;
    // Asked for once at most: the source may prompt.
    let mut secret: Option<Zeroizing<String>> = None;
    let ask = |secret: &mut Option<Zeroizing<String>>| -> Result<()> {
        if protected && secret.is_none() {
            let source = passphrase.ok_or(Error::PassphraseRequired)?;
            *secret = Some(source()?);
        }
        Ok(())
    };
    // The hinted file: anything but an opening key leaves the decision to
    // the full search below, which reports damage as before.
    let mut tried = None;
    if let Some(name) = hint {
        if let Ok(Some(key)) = read_key_file(storage, name) {
            if usable(&key) {
                ask(&mut secret)?;
                match key.unwrap_master(secret.as_ref().map(|s| s.as_str()), name) {
                    Ok(Some(master)) => return Ok((master, name.to_string())),
                    Ok(None) => tried = Some(name),
                    Err(_) => {}
                }
            }
        }
    }
    let mut files = Vec::new();
    for (name, _) in storage.list(FileKind::Key)? {
        if let Some(key) = read_key_file(storage, &name)? {
            files.push((key, name));
        }
    }
    if files.is_empty() {
        return Err(Error::NoKeys { location: storage.location() });
    }
    let candidates: Vec<&(KeyFile, String)> = files.iter().filter(|(k, _)| k.is_protected() == protected).collect();
    if candidates.is_empty() {
        return Err(Error::NotAuthentic {
            what: "key file",
            name: "keys/ (none matches the config's encryption)".into(),
        });
    }
    ask(&mut secret)?;
    for (key, name) in candidates {
        // The hinted file did not open with this passphrase a moment ago.
        if key.repository != config.id || tried == Some(name.as_str()) {
            continue;
        }
        if let Some(master) = key.unwrap_master(secret.as_ref().map(|s| s.as_str()), name)? {
            return Ok((master, name.clone()));
        }
    }
    if protected {
        Err(Error::WrongPassphrase)
    } else {
        Err(Error::NotAuthentic { what: "key file", name: "keys/ (no key file belongs to this repository)".into() })
    }
}

/// Key file `name`, checked against its name; `None` if it is gone (or the
/// name is not a key file's).
fn read_key_file(storage: &dyn Storage, name: &str) -> Result<Option<KeyFile>> {
    if name.parse::<Id>().is_err() {
        return Ok(None);
    }
    let data = match storage.get(FileKind::Key, name) {
        Ok(d) => d,
        Err(Error::Missing { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    if Id::hash(&data).to_hex() != name {
        return Err(Error::corrupt("key file", name, "content does not match its name"));
    }
    Ok(Some(KeyFile::decode(&data, name)?))
}
