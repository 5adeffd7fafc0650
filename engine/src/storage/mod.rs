//! The storage interface: every byte the engine reads from or writes to a
//! repository passes through [`Storage`]. Files are addressed by kind and
//! name only, so an object store can implement it with the same semantics.
//!
//! Contract every implementation MUST keep:
//! - `put` is atomic and durable: once it returns, the file is complete and
//!   survives a crash; a crash during `put` leaves no file of that name.
//! - files are immutable once written (locks are replaced by a new `put`).
//! - `list` returns only complete files.

mod local;

pub use local::LocalDir;

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
}

impl FileKind {
    pub fn describe(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Pack => "pack",
            FileKind::Index => "index file",
            FileKind::Snapshot => "snapshot",
            FileKind::Lock => "lock",
            FileKind::Key => "key file",
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
}
