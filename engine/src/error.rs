//! The engine's one error type. Variants carry the thing at fault (path, pack,
//! snapshot, blob) as data so that front ends can word and classify errors
//! without parsing strings.

use std::path::PathBuf;

use crate::id::Id;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The filesystem is full (ENOSPC); `path` is the file being written
    /// (for repository files the final name, which says what it is: a pack
    /// under data/, an index file, a snapshot, a lock, index.redb).
    #[error("no space left on device writing {}", path.display())]
    NoSpace { path: PathBuf },

    /// A request to a remote repository failed for a reason other than a
    /// missing object (after retries, if it was transient). `object` is the
    /// repository location and the object's path in it, without
    /// credentials. `attempts`: how many times the request was sent (more
    /// than one: it failed transiently and the retries ran out; 0: none
    /// was, a setting was wrong).
    #[error("{object}: {reason}")]
    Remote { object: String, reason: String, attempts: u32 },

    #[error("{}: not an arc repository (no config file)", path.display())]
    NotARepository { path: PathBuf },

    #[error("{}: a repository already exists there", path.display())]
    AlreadyExists { path: PathBuf },

    #[error("repository format version {found} is newer than this arc supports (up to {supported}); upgrade arc")]
    UnsupportedVersion { found: u32, supported: u32 },

    /// The repository needs a feature of its format that this binary does
    /// not implement: a newer arc wrote it.
    #[error("this repository needs a newer arc (feature {feature})")]
    NeedsFeature { feature: String },

    /// The repository's format is older than the oldest this binary writes:
    /// it can be read but not changed.
    #[error("repository format version {version} is read-only for this arc ({operation} writes only into format version {writable} and later)")]
    ReadOnlyFormat { version: u32, writable: u32, operation: &'static str },

    /// A sealed file or frame failed authentication: it was changed, or
    /// sealed with another repository's keys, or is not sealed at all.
    #[error("{what} {name} is not authentic: it was modified or does not belong to this repository")]
    NotAuthentic { what: &'static str, name: String },

    /// The repository is encrypted and no passphrase was given.
    #[error("this repository is encrypted and no passphrase was given")]
    PassphraseRequired,

    /// No key file opens with the passphrase given.
    #[error("wrong passphrase: no key file of this repository opens with it")]
    WrongPassphrase,

    /// The repository has no usable key files.
    #[error("{location}: the repository has no key files (keys/ is empty or missing); it cannot be opened")]
    NoKeys { location: String },

    /// A key operation that is refused (removing the last key, adding a
    /// passphrase to an unencrypted repository ...).
    #[error("{0}")]
    KeyRefused(String),

    /// Removing the key file that opened the repository: whoever runs
    /// this would lock themselves out.
    #[error("refusing to remove key {id}: it is in use (the passphrase given opens the repository with it)")]
    KeyInUse { id: String },

    #[error("corrupt {what} {name}: {reason}")]
    Corrupt { what: &'static str, name: String, reason: String },

    #[error("{kind} {name} is missing from the repository")]
    Missing { kind: &'static str, name: String },

    #[error("blob {0} is not in the index")]
    BlobNotInIndex(Id),

    #[error("no snapshot matches {0:?}")]
    SnapshotNotFound(String),

    #[error("snapshot id prefix {prefix:?} is ambiguous: it matches {}", candidates.join(", "))]
    AmbiguousSnapshot { prefix: String, candidates: Vec<String> },

    /// `closest` is the deepest directory of `path` that the snapshot has.
    #[error("{path:?} does not exist in snapshot {snapshot} (the closest path that does is {closest:?})")]
    PathNotInSnapshot { snapshot: String, path: String, closest: String },

    /// `latest:PATH` where none of the `searched` snapshots holds PATH;
    /// `closest` is the deepest existing directory of it, in `snapshot`.
    #[error("{path:?} is in none of the {searched} snapshot(s) searched; the closest path that exists is {closest:?} (in snapshot {snapshot})")]
    PathInNoSnapshot { path: String, closest: String, snapshot: String, searched: usize },

    #[error("{path:?} in snapshot {snapshot} is not a {expected}")]
    WrongEntryKind { snapshot: String, path: String, expected: &'static str },

    #[error("repository is locked by {holder}{}", if *.stale { " (a stale lock)" } else { "" })]
    Locked { holder: String, stale: bool },

    /// A lock file that cannot be decoded (a newer arc's, or damaged): it
    /// is respected, not guessed about.
    #[error("repository is locked by an unreadable lock file {name} ({reason})")]
    UnreadableLock { name: String, reason: String },

    #[error("index database {}: {reason}", path.display())]
    IndexDb { path: PathBuf, reason: String },

    #[error("restore target {} exists and is not empty", path.display())]
    TargetNotEmpty { path: PathBuf },

    #[error("refusing unsafe entry name {name:?} in tree {tree}")]
    UnsafeName { tree: Id, name: String },

    #[error("{}: {reason}", path.display())]
    BadSource { path: PathBuf, reason: String },

    /// A stream (a dump command's output) ended in an error: the command
    /// failed, or reading it did. `detail` says how, in the producer's words.
    #[error("stream {name} failed, no snapshot was written: {detail}")]
    StreamFailed { name: String, detail: String },

    /// A path pattern that cannot be compiled; `origin` says where it was
    /// given (a file and line, or the option).
    #[error("{origin}: bad pattern {pattern:?}: {reason}")]
    BadPattern { origin: String, pattern: String, reason: String },

    #[error("invalid {what}: {reason}")]
    InvalidArgument { what: &'static str, reason: String },

    #[error("interrupted")]
    Interrupted,

    /// A backup, prune or copy could not keep its session alive (format v2):
    /// it stopped without committing anything; what it wrote is kept.
    #[error("the session could not be kept alive, nothing was committed: {reason}")]
    SessionLost { reason: String },

    /// A backup found that a concurrent prune deleted data it relied on
    /// (only after it was stopped for longer than the session expiry); no
    /// snapshot was written.
    #[error("a concurrent prune deleted {what}, which this backup relied on; no snapshot was written (run the backup again)")]
    PrunedMeanwhile { what: String },

    /// A maintenance operation that deletes data found the repository
    /// damaged and stopped before deleting anything: deciding what is
    /// unused needs every live tree and blob to be accounted for.
    #[error("{operation} refused: {reason} (nothing was deleted)")]
    Damaged { operation: &'static str, reason: String },

    /// A stream that produced no bytes, refused unless empty streams are
    /// allowed: an empty dump is far more often a failed one.
    #[error("{name}: the stream is empty")]
    EmptyStream { name: String },

    /// A stream chunk stored as a delta whose base chunk is missing or
    /// damaged: the chunk cannot be rebuilt (format-spec/v2/streams.md §4).
    #[error("chunk {chunk} (pack {pack}) is stored as a delta of chunk {base}, which cannot be read: {source}")]
    DeltaBase { chunk: Id, base: Id, pack: String, source: Box<Error> },

    /// A worker thread panicked, or a lock was poisoned by one: a bug in
    /// arc, never a normal stop. `message` is the panic's own.
    #[error("internal error (a bug in arc): {what}: {message}")]
    Bug { what: &'static str, message: String },
}

impl Error {
    /// Wraps an I/O error with the path it concerns; ENOSPC becomes its own
    /// variant because users act on it differently from other I/O failures.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            Error::NoSpace { path }
        } else {
            Error::Io { path, source }
        }
    }

    pub fn corrupt(what: &'static str, name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt { what, name: name.into(), reason: reason.into() }
    }

    pub fn index_db(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::IndexDb { path: path.into(), reason: reason.to_string() }
    }
}

/// Attach a path to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
