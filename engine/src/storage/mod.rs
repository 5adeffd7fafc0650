//! The storage interface: every byte the engine reads from or writes to a
//! repository passes through [`Storage`]. Files are addressed by kind and
//! name only, so an object store can implement it with the same semantics.
//!
//! Contract every implementation MUST keep:
//! - `put` is atomic and durable: once it returns, the file is complete and
//!   survives a crash; a crash during `put` leaves no file of that name.
//! - files are immutable once written (locks are replaced by a new `put`).
//! - `list` returns only complete files.
//! - `stat` and `list_stat` report the time **the storage** recorded when
//!   a file was last written (a local file's mtime, S3's LastModified), not
//!   a time the writer chose: the v2 commit and prune protocol
//!   (format-spec/v2/protocol.md §3) learns the storage clock from it and
//!   never compares host clocks.

mod local;
mod memory;

pub use local::LocalDir;
pub use memory::{MemoryStorage, MemoryStorageOptions};

use std::time::SystemTime;

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
pub const ALL_KINDS: [FileKind; 8] = [
    FileKind::Config,
    FileKind::Pack,
    FileKind::Index,
    FileKind::Snapshot,
    FileKind::Lock,
    FileKind::Key,
    FileKind::Session,
    FileKind::Mark,
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
        }
    }
}

pub trait Storage: Send + Sync {
    /// Human-readable location for messages.
    fn location(&self) -> String;
    /// A local filesystem path if the repository is a directory; decides
    /// where the index database lives.
    fn local_path(&self) -> Option<&std::path::Path>;
    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()>;
    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>>;
    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    fn size(&self, kind: FileKind, name: &str) -> Result<u64>;
    fn exists(&self, kind: FileKind, name: &str) -> Result<bool>;
    /// Names and sizes of all files of `kind`.
    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>>;
    fn delete(&self, kind: FileKind, name: &str) -> Result<()>;
    /// Length and storage timestamp of one file.
    fn stat(&self, kind: FileKind, name: &str) -> Result<FileStat>;
    /// Names, lengths and storage timestamps of all files of `kind`.
    fn list_stat(&self, kind: FileKind) -> Result<Vec<(String, FileStat)>>;
}
