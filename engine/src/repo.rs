//! [`Repository`]: the one way into a repository. It owns the storage, the
//! config and the index database, keeps the database in step with the
//! repository's index files, and resolves snapshots and trees.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::error::{Error, Result};
use crate::format::config::{
    ChunkerParams, CompressionAlgorithm, CompressionParams, Config, KNOWN_FEATURES, OLDEST_WRITABLE_VERSION,
    REPO_FORMAT_VERSION,
};
use crate::format::index_file::{self, PackEntry};
use crate::format::pack::{self, Trailer};
use crate::format::snapshot::SnapshotFile;
use crate::format::tree::{Node, Tree};
use crate::format::tree_v2;
use crate::id::{Id, IdScheme};
use crate::index::{BlobLocation, Index, IndexReader, IndexUpdate};
use crate::lock::LockGuard;
use crate::reader::BlobReader;
use crate::storage::{FileKind, LocalDir, Storage};

/// Settings chosen at `init`; they never change afterwards.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub file_chunker: ChunkerParams,
    pub stream_chunker: ChunkerParams,
    pub compression_level: i32,
    pub pack_size: u32,
    pub frame_size: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            file_chunker: ChunkerParams::default_files(),
            stream_chunker: ChunkerParams::default_streams(),
            compression_level: 3,
            pack_size: 16 * 1024 * 1024,
            frame_size: 256 * 1024,
        }
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

/// Narrows `latest` (and listings) by host, tag and path.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    pub hosts: Vec<String>,
    pub tags: Vec<String>,
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    /// Paths match as recorded, whichever way they are spelled:
    /// `mysql/shop.sql` (a stream's name as given to --stdin-name) matches
    /// the recorded `/mysql/shop.sql`, and `/var/www/` matches `/var/www`.
    pub fn matches(&self, s: &SnapshotFile) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.host))
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self.paths.iter().all(|p| s.paths.iter().any(|q| same_path(p, q)))
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
    /// A shared read snapshot of the index for blob lookups on the read
    /// path; see [`Repository::lookup_blob`].
    lookup_reader: Mutex<Option<(Instant, Arc<IndexReader>)>>,
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
    /// The end of every command that opened the index: give back the pages
    /// its writes left behind (see [`Index::compact_if_wasteful`]). Only a
    /// cache is at stake, so a failure is ignored.
    fn drop(&mut self) {
        if let Ok(slot) = self.lookup_reader.get_mut() {
            *slot = None;
        }
        if let Some(index) = self.index.get_mut() {
            let _ = index.compact_if_wasteful();
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
        let local = LocalDir::new(path);
        local.create_layout()?;
        Self::init(Arc::new(local), opts)
    }

    /// Writes the config into empty storage; the config is written last so
    /// a half-initialised repository is never mistaken for a real one.
    pub fn init(storage: Arc<dyn Storage>, opts: &InitOptions) -> Result<Repository> {
        if storage.exists(FileKind::Config, "config")? {
            return Err(Error::AlreadyExists { path: storage.location().into() });
        }
        if !(1..=22).contains(&opts.compression_level) {
            return Err(Error::InvalidArgument {
                what: "compression level",
                reason: format!("{} is not in 1..=22", opts.compression_level),
            });
        }
        if !(1024 * 1024..=256 * 1024 * 1024).contains(&opts.pack_size) || opts.frame_size > opts.pack_size {
            return Err(Error::InvalidArgument {
                what: "pack size",
                reason: format!("{} is not between 1 MiB and 256 MiB", opts.pack_size),
            });
        }
        let now = Utc::now();
        let config = Config {
            version: REPO_FORMAT_VERSION,
            features: Some(KNOWN_FEATURES.iter().map(|f| f.to_string()).collect()),
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
            id_scheme: IdScheme::Blake3,
            file_chunker: opts.file_chunker,
            stream_chunker: opts.stream_chunker,
            compression: CompressionParams { algorithm: CompressionAlgorithm::Zstd, level: opts.compression_level },
            pack_size: opts.pack_size,
            frame_size: opts.frame_size,
        };
        storage.put(FileKind::Config, "config", &config.encode())?;
        Self::open(storage, None)
    }

    pub fn open_local(path: &Path) -> Result<Repository> {
        if !path.join("config").is_file() {
            return Err(Error::NotARepository { path: path.to_path_buf() });
        }
        Self::open(Arc::new(LocalDir::new(path)), None)
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
        if !path.join("config").is_file() {
            return Err(Error::NotARepository { path: path.to_path_buf() });
        }
        let storage: Arc<dyn Storage> = Arc::new(LocalDir::new(path));
        let config = Self::read_config(storage.as_ref())?;
        let dir = cache_root.join(config.id.to_hex());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let key = Id::hash(canonical.as_os_str().as_encoded_bytes()).to_hex();
        let index_path = dir.join(format!("index-{}.redb", &key[..16]));
        // Before the cache moved out, the index database was REPO/index.redb.
        // It is only a cache: the new one is built from the index files, and
        // the old one goes when the repository can be written (an older arc
        // that still has it open keeps its open file).
        let legacy = path.join("index.redb");
        if legacy.is_file() {
            let _ = std::fs::remove_file(&legacy);
        }
        Ok(Self::with_config(storage, config, index_path))
    }

    fn read_config(storage: &dyn Storage) -> Result<Config> {
        let data = match storage.get(FileKind::Config, "config") {
            Ok(d) => d,
            Err(Error::Missing { .. }) => return Err(Error::NotARepository { path: storage.location().into() }),
            Err(e) => return Err(e),
        };
        Config::decode(&data)
    }

    fn with_config(storage: Arc<dyn Storage>, config: Config, index_path: PathBuf) -> Repository {
        Repository {
            storage,
            config,
            index_path,
            index: OnceLock::new(),
            index_init: Mutex::new(()),
            reader: OnceLock::new(),
            lookup_reader: Mutex::new(None),
            shared_locks: true,
        }
    }

    /// Takes no shared locks from now on (see [`Repository::lock_shared`]):
    /// for reading a repository that cannot be written, or on request.
    pub fn skip_shared_locks(&mut self) {
        self.shared_locks = false;
    }

    /// Opens a repository. The index database lives in the repository
    /// directory for a local repository, else at `index_db`.
    pub fn open(storage: Arc<dyn Storage>, index_db: Option<PathBuf>) -> Result<Repository> {
        let config = Self::read_config(storage.as_ref())?;
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
        Ok(Self::with_config(storage, config, index_path))
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
        LockGuard::acquire(self.storage.clone(), false, operation)
    }

    pub fn lock_exclusive(&self, operation: &str) -> Result<LockGuard> {
        LockGuard::acquire(self.storage.clone(), true, operation)
    }

    /// The index database, brought up to date with the index files on
    /// first use.
    pub fn index(&self) -> Result<&Index> {
        if let Some(i) = self.index.get() {
            return Ok(i);
        }
        let _init = self.index_init.lock().map_err(|_| Error::Interrupted)?;
        if let Some(i) = self.index.get() {
            return Ok(i);
        }
        let index = Index::open(&self.index_path)?;
        self.sync_index(&index)?;
        Ok(self.index.get_or_init(|| index))
    }

    /// Brings the database in step with the index files, incrementally
    /// (v2 spec 2.4): reads only index files it has not seen; drops the
    /// packs of known index files that are gone (another host's prune or
    /// compaction) unless a present file lists them again; drops unlisted
    /// packs that are gone. A file that a present file supersedes is not
    /// read (its packs are in the superseding one).
    fn sync_index(&self, index: &Index) -> Result<()> {
        let in_storage: HashSet<Id> =
            self.storage.list(FileKind::Index)?.into_iter().filter_map(|(n, _)| n.parse().ok()).collect();
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
        let gone_files: Vec<Id> = known.difference(&in_storage).copied().collect();
        let mut new: Vec<(Id, index_file::IndexFile)> = Vec::new();
        for id in in_storage.difference(&known) {
            let name = id.to_hex();
            let data = self.storage.get(FileKind::Index, &name)?;
            if Id::hash(&data) != *id {
                return Err(Error::corrupt(
                    "index file",
                    name,
                    "content does not match its name (run `arc repair index`)",
                ));
            }
            // Every command needs the index: say how to get it back.
            let file = index_file::decode_file(&data, &name).map_err(|e| match e {
                Error::Corrupt { what, name, reason } => {
                    Error::Corrupt { what, name, reason: format!("{reason} (run `arc repair index`)") }
                }
                e => e,
            })?;
            new.push((*id, file));
        }
        let superseded: HashSet<Id> = new.iter().flat_map(|(_, f)| f.supersedes.iter().copied()).collect();
        let empty: &[PackEntry] = &[];
        let add: Vec<(Option<Id>, &[PackEntry])> = new
            .iter()
            .map(|(id, f)| (Some(*id), if superseded.contains(id) { empty } else { f.packs.as_slice() }))
            .collect();
        if add.is_empty() && gone_files.is_empty() && gone_packs.is_empty() {
            return Ok(());
        }
        index.apply(&IndexUpdate { add, gone_files, gone_packs })
    }

    /// Brings the index database up to date with index files written since
    /// it was opened, e.g. by a backup finishing while a long-lived reader
    /// (the mount) has the repository open.
    pub fn refresh_index(&self) -> Result<()> {
        let index = self.index()?;
        let _one_at_a_time = self.index_init.lock().map_err(|_| Error::Interrupted)?;
        self.sync_index(index)
    }

    /// Drops the index database and rebuilds it from the index files.
    pub fn rebuild_index_db(&self) -> Result<()> {
        let index = self.index()?;
        index.clear()?;
        // The read path's shared snapshot predates the rebuild.
        if let Ok(mut slot) = self.lookup_reader.lock() {
            *slot = None;
        }
        self.sync_index(index)
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
                let data = index_file::encode_for(self.config.version, sup, g)?;
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
        Ok(PackEntry { pack: *pack, pack_len, trailer: Trailer::decode(&bytes, &name, start)? })
    }

    /// Packs in storage that no index file lists (left by an interrupted
    /// or still running backup), with their trailers.
    pub fn unindexed_packs(&self) -> Result<Vec<PackEntry>> {
        let listed: HashSet<Id> = self.index()?.packs()?.into_iter().filter(|p| p.3).map(|p| p.0).collect();
        let mut out = Vec::new();
        for (name, len) in self.storage.list(FileKind::Pack)? {
            let Ok(id) = name.parse::<Id>() else { continue };
            if !listed.contains(&id) {
                out.push(self.read_pack_trailer(&id, len)?);
            }
        }
        Ok(out)
    }

    pub fn blob_reader(&self) -> Result<&BlobReader> {
        if let Some(r) = self.reader.get() {
            return Ok(r);
        }
        self.index()?;
        Ok(self.reader.get_or_init(|| BlobReader::new(32 * 1024 * 1024)))
    }

    fn shared_lookup_reader(&self, refresh: bool) -> Result<Arc<IndexReader>> {
        let mut slot = self.lookup_reader.lock().map_err(|_| Error::Interrupted)?;
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

    /// Reads and verifies one blob.
    pub fn read_blob(&self, id: &Id) -> Result<Arc<[u8]>> {
        let reader = self.blob_reader()?;
        reader.read(self, id)
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

    /// One entry of the directory `tree`, reading only what leads to it (one
    /// blob per level of a split v2 directory; the whole blob of a v1 one).
    pub fn lookup_name(&self, tree: &Id, name: &[u8]) -> Result<Option<Node>> {
        let data = self.read_blob(tree)?;
        match tree_v2::blob_version(&data) {
            Some(tree_v2::VERSION) => tree_v2::lookup(tree, &data, name, &mut |b| self.read_blob(b)),
            _ => Ok(Tree::decode(&data, tree)?.find(name).cloned()),
        }
    }

    /// Whether new structures are written in format v2 (trees, index
    /// files): in a v2 repository. v1 repositories keep v1 encodings.
    pub fn writes_v2(&self) -> bool {
        self.config.version >= 2
    }

    /// The key that decides where v2 trees are split (spec
    /// `format-spec/v2/trees-index.md` 1.5). Readers never need it.
    // TODO(v2-crypto): derive from the master secret once keys land; until
    // then the repository id, which is as stable and only costs secrecy of
    // the boundaries, not correctness.
    pub fn tree_split_key(&self) -> tree_v2::SplitKey {
        tree_v2::SplitKey(blake3::derive_key("arc 2 tree split key", &self.config.id.0))
    }

    pub fn snapshot_ids(&self) -> Result<Vec<Id>> {
        Ok(self.storage.list(FileKind::Snapshot)?.into_iter().filter_map(|(n, _)| n.parse().ok()).collect())
    }

    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let name = id.to_hex();
        let data = self.storage.get(FileKind::Snapshot, &name)?;
        if Id::hash(&data) != *id {
            return Err(Error::corrupt("snapshot", name, "content does not match its name"));
        }
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
    pub fn readable_snapshots(&self) -> Result<(Vec<Snapshot>, Vec<DamagedSnapshot>)> {
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        for id in self.snapshot_ids()? {
            match self.load_snapshot(&id) {
                Ok(s) => out.push(s),
                // Forgotten since the listing (a concurrent forget): gone,
                // not damaged.
                Err(Error::Missing { .. }) => {}
                Err(e) => damaged.push((id, e)),
            }
        }
        out.sort_by(|a, b| a.file.time.cmp(&b.file.time).then(a.id.cmp(&b.id)));
        Ok((out, damaged))
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
        let data = file.encode();
        let id = Id::hash(&data);
        self.storage.put(FileKind::Snapshot, &id.to_hex(), &data)?;
        Ok(id)
    }

    /// Total bytes of every pack, by listing storage.
    pub fn stored_bytes(&self) -> Result<(u64, u64)> {
        let packs = self.storage.list(FileKind::Pack)?;
        Ok((packs.len() as u64, packs.iter().map(|p| p.1).sum()))
    }

    /// Map from pack id to its length, as storage reports it.
    pub fn pack_sizes(&self) -> Result<HashMap<Id, u64>> {
        Ok(self
            .storage
            .list(FileKind::Pack)?
            .into_iter()
            .filter_map(|(n, l)| n.parse().ok().map(|id| (id, l)))
            .collect())
    }
}
