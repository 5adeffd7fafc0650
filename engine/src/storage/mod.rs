//! The storage interface: every byte the engine reads from or writes to a
//! repository passes through [`Storage`]. Files are addressed by kind and
//! name only, so an object store can implement it with the same semantics.
//! Implementations: [`LocalDir`] (a directory), [`RemoteStorage`] (S3,
//! SFTP, WebDAV), [`MemoryStorage`] and [`FaultyStorage`] (tests).
//!
//! The contract, for the whole trait (each method adds its own below):
//! - `put` is atomic and durable: once it returns, the file is complete and
//!   survives a crash; a crash during `put` leaves no file of that name
//!   (or, on SFTP/WebDAV, a stray file under `tmp/` that nothing reads).
//! - files are immutable once written, except locks and sessions, which
//!   are replaced whole by a new `put` of the same name.
//! - a `put` that returned is seen by every later `get`, `stat` and
//!   `exists` (read-after-write, as S3 has offered since 2020).
//!   Listings may lag behind (eventually consistent stores): the engine
//!   never concludes from a listing alone that a file it just wrote is
//!   gone, and never deletes a file for being absent from one.
//! - every call may be retried by the caller and may be made from many
//!   threads at once; a call that returns an error may still have taken
//!   effect (a lost response after a successful write).
//! - `stat` and `list_stat` report the time **the storage** recorded when
//!   a file was last written (a local file's mtime, S3's LastModified), not
//!   a time the writer chose: the v2 commit and prune protocol
//!   (format-spec/v2/protocol.md §3) learns the storage clock from it and
//!   never compares host clocks.
//! - errors name the file (kind and name, or the remote object) and never
//!   carry a credential.

pub mod counting;
mod faulty;
mod local;
pub mod location;
mod memory;
pub mod remote;
mod staged;

pub use counting::{CountingStorage, Op, RequestCounts};
pub use faulty::{FaultCounts, Faults, FaultyStorage};
pub use local::LocalDir;
pub use location::Location;
pub use memory::{MemoryStorage, MemoryStorageOptions};
pub use remote::{variables_for, RemoteOptions, RemoteStorage, StorageSettings};
pub use staged::StagedFile;

use std::time::SystemTime;

use bytes::Bytes;

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    Config,
    Pack,
    Index,
    Snapshot,
    Lock,
    /// `keys/<id>`: one key file per passphrase (format v2).
    Key,
    /// A running backup's, prune's or copy's announcement (v2).
    Session,
    /// A prune's record of packs to delete later (v2).
    Mark,
    /// `quarantine/<pack id>`: a damaged pack that `repair packs` took out
    /// of `data/` after salvaging its intact blobs, kept byte for byte for
    /// manual recovery; nothing reads it back as data.
    Quarantine,
}

/// What the storage knows of a file besides its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub len: u64,
    /// When the storage recorded the last write of the file, by its own
    /// clock.
    pub modified: SystemTime,
}

/// All kinds, for listing a whole repository.
pub const ALL_KINDS: [FileKind; 9] = [
    FileKind::Config,
    FileKind::Pack,
    FileKind::Index,
    FileKind::Snapshot,
    FileKind::Lock,
    FileKind::Key,
    FileKind::Session,
    FileKind::Mark,
    FileKind::Quarantine,
];

impl FileKind {
    pub fn describe(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Pack => "pack",
            FileKind::Index => "index file",
            FileKind::Snapshot => "snapshot",
            FileKind::Lock => "lock",
            FileKind::Key => "key file",
            FileKind::Session => "session",
            FileKind::Mark => "prune mark",
            FileKind::Quarantine => "quarantined pack",
        }
    }
}

pub trait Storage: Send + Sync {
    /// Human-readable location for messages, without credentials.
    fn location(&self) -> String;
    /// A local filesystem path if the repository is a directory (for what
    /// only a directory has: `tmp/` to clean, the repository's own files to
    /// leave out of a backup); `None` for remote and in-memory storage.
    fn local_path(&self) -> Option<&std::path::Path>;
    /// Stores `data` as the whole file: atomic (a reader sees the old file,
    /// no file, or all of `data`), durable when it returns. Writing the
    /// same content again is harmless (a retried or duplicated put).
    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()>;
    /// [`put`](Self::put) of bytes the caller hands over, with the same
    /// contract: a remote store sends them as they are, where `put` must
    /// copy them into its client's buffer first. The packer uploads every
    /// pack this way (16-18 MiB each, up to 8 at once on S3: the copies
    /// were as much memory again as the packs themselves). Wrappers
    /// forward it; a store that writes from a borrowed slice anyway (a
    /// directory, memory) keeps this default.
    fn put_owned(&self, kind: FileKind, name: &str, data: Bytes) -> Result<()> {
        self.put(kind, name, &data)
    }
    /// Where a caller builds a file piece by piece for
    /// [`put_file`](Self::put_file) so that storing it is a rename (a
    /// directory's `tmp/`); `None` where it would be a copy anyway (remote
    /// and in-memory stores: the caller stages where it likes).
    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// [`put`](Self::put) of the complete local file at `path`, with the
    /// same contract; on success the file at `path` is gone (renamed into
    /// place, or sent and removed). The packer writes each pack this way as
    /// it fills, instead of holding it whole in memory. The default reads
    /// the file and hands it to [`put_owned`](Self::put_owned) (the test
    /// stores); S3, SFTP and WebDAV send it from the file, a piece at a
    /// time, and a retry reads it again from its start.
    fn put_file(&self, kind: FileKind, name: &str, path: &std::path::Path) -> Result<()> {
        put_file_by_copy(self, kind, name, path)
    }
    /// The whole file; [`Error::Missing`](crate::Error::Missing) if there
    /// is none. For small files (config, index, snapshot, lock, session,
    /// mark) and whole-pack verification only: reading one blob uses
    /// [`get_range`](Self::get_range).
    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>>;
    /// Exactly `len` bytes from `offset` (one ranged GET on S3, never the
    /// whole object); a range past the end is
    /// [`Error::Corrupt`](crate::Error::Corrupt) ("truncated"), a missing
    /// file [`Error::Missing`](crate::Error::Missing). Restore, cat, dump
    /// and the mount read every blob this way, in parallel from several
    /// threads.
    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// [`get_range`](Self::get_range) into `buf`, replacing what it held
    /// but keeping its allocation: a reader of many large ranges (restore's
    /// planned reads, up to 20 MiB each) reuses its buffers, where a new
    /// one per read cost a page fault and a zeroed page for every 4 KiB
    /// received (a tenth of a restore's CPU from S3). Wrappers forward it;
    /// a store whose reads allocate anyway keeps this default.
    fn get_range_into(&self, kind: FileKind, name: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<()> {
        *buf = self.get_range(kind, name, offset, len)?;
        Ok(())
    }
    /// The file's length; Missing if there is none.
    fn size(&self, kind: FileKind, name: &str) -> Result<u64>;
    /// Whether the file exists (a HEAD request); errors other than "not
    /// there" are errors, not `false`.
    fn exists(&self, kind: FileKind, name: &str) -> Result<bool>;
    /// Names and sizes of all files of `kind`, sorted by name, complete
    /// files only (no partial uploads, nothing under `tmp/`). May lag
    /// behind recent puts and deletes on an eventually consistent store.
    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>>;
    /// Removes the file. Idempotent: deleting a missing file succeeds (a
    /// retried delete whose first response was lost, two prunes racing).
    fn delete(&self, kind: FileKind, name: &str) -> Result<()>;
    /// Removes many files of one kind, batched where the store can (S3
    /// DeleteObjects: up to 1000 a request). Idempotent like
    /// [`delete`](Self::delete); on error some may be gone already.
    fn delete_many(&self, kind: FileKind, names: &[String]) -> Result<()> {
        names.iter().try_for_each(|n| self.delete(kind, n))
    }
    /// Length and storage timestamp of one file; Missing if there is none.
    fn stat(&self, kind: FileKind, name: &str) -> Result<FileStat>;
    /// Names, lengths and storage timestamps of all files of `kind`, with
    /// [`list`](Self::list)'s ordering and completeness. One listing of a
    /// prefix (paged), never one request per file.
    fn list_stat(&self, kind: FileKind) -> Result<Vec<(String, FileStat)>>;
    /// Stores `data` under a name no file has yet: `Ok(true)` if it did,
    /// `Ok(false)` (nothing written) if a file of that name exists.
    /// Atomic only where the store honours conditional writes (S3's
    /// `If-None-Match: *`, probed by [`RemoteStorage`]); elsewhere a check,
    /// a put and, after a wait, a read-back: of two writers within one round
    /// trip of each other, the earlier finds the later's file and sees
    /// `false`; a writer delayed longer than the wait may still replace a
    /// file whose writer saw `true`. Used only where that is
    /// acceptable (creating a repository's config), never by the protocol.
    fn put_new(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<bool> {
        if self.exists(kind, name)? {
            return Ok(false);
        }
        self.put(kind, name, data)?;
        Ok(true)
    }
    /// Files under `tmp/` that are not the repository's own (on SFTP and
    /// WebDAV: puts staged there and left behind by an interrupted
    /// process), with their storage times; empty where puts are not staged.
    /// A local directory's `tmp/` is cleaned through
    /// [`local_path`](Self::local_path) instead.
    fn list_tmp(&self) -> Result<Vec<(String, FileStat)>> {
        Ok(Vec::new())
    }
    /// Removes one file of [`list_tmp`](Self::list_tmp); idempotent.
    fn delete_tmp(&self, _name: &str) -> Result<()> {
        Ok(())
    }
    /// How many requests the engine should keep in flight at once for
    /// uploads and reads (a hint: remote stores want several, a local disk
    /// gains little beyond two).
    fn concurrency(&self) -> usize {
        2
    }
}

/// [`Storage::put_file`] for a store that cannot take a local file over.
pub(crate) fn put_file_by_copy<S: Storage + ?Sized>(
    storage: &S,
    kind: FileKind,
    name: &str,
    path: &std::path::Path,
) -> Result<()> {
    use crate::error::IoContext;
    let data = std::fs::read(path).at(path)?;
    storage.put_owned(kind, name, Bytes::from(data))?;
    // Stored: the staged copy is only a leftover now, and a failure to
    // remove it must not fail the put (a stale temporary file is cleaned
    // up by whoever owns its directory).
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// The storage `location` names: a [`LocalDir`] (which need not exist
/// yet) or a [`RemoteStorage`] connected with the default options.
pub fn connect(location: &Location) -> Result<std::sync::Arc<dyn Storage>> {
    connect_with(location, RemoteOptions::default())
}

/// [`connect`], with `opts` for a remote store (ignored for a directory).
pub fn connect_with(location: &Location, opts: RemoteOptions) -> Result<std::sync::Arc<dyn Storage>> {
    Ok(match location {
        Location::Local(path) => std::sync::Arc::new(LocalDir::new(path)),
        remote => std::sync::Arc::new(RemoteStorage::open(remote, opts)?),
    })
}
