//! A storage wrapper that counts what a command asks of the storage
//! underneath: requests per operation and file kind, and bytes each way.
//! It is how the request pattern of each command (format-spec/v2/remote.md
//! section 4) is measured and pinned by tests, on any store (memory, a
//! local directory, a remote one), without a proxy.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{FileKind, FileStat, Storage};
use crate::error::Result;

/// A request as the storage sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Put,
    /// A whole-file read.
    Get,
    /// A read of part of a file.
    GetRange,
    /// `size`, `exists`, `stat`: one HEAD on an object store.
    Head,
    /// One listing of a prefix (paged by the store; counted once).
    List,
    Delete,
    /// One batched delete (S3 DeleteObjects).
    DeleteMany,
    ListTmp,
    DeleteTmp,
}

/// What has been asked so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Requests by operation and file kind (`None` for tmp/ files).
    pub requests: BTreeMap<(Op, Option<FileKind>), u64>,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl RequestCounts {
    /// Requests of one operation on one kind.
    pub fn get(&self, op: Op, kind: FileKind) -> u64 {
        self.requests.get(&(op, Some(kind))).copied().unwrap_or(0)
    }

    /// Requests of one operation on every kind.
    pub fn op(&self, op: Op) -> u64 {
        self.requests.iter().filter(|((o, _), _)| *o == op).map(|(_, n)| n).sum()
    }

    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }
}

impl std::fmt::Display for RequestCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for ((op, kind), n) in &self.requests {
            match kind {
                Some(k) => write!(f, "{op:?} {k:?}: {n}; ")?,
                None => write!(f, "{op:?} tmp: {n}; ")?,
            }
        }
        write!(f, "{} requests, {} bytes up, {} bytes down", self.total(), self.bytes_up, self.bytes_down)
    }
}

/// Counts the requests made of `inner`.
pub struct CountingStorage {
    inner: Arc<dyn Storage>,
    counts: Mutex<RequestCounts>,
}

impl CountingStorage {
    pub fn new(inner: Arc<dyn Storage>) -> CountingStorage {
        CountingStorage { inner, counts: Mutex::new(RequestCounts::default()) }
    }

    /// The counts so far, and zero from here on.
    pub fn take(&self) -> RequestCounts {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RequestCounts> {
        // Counting only adds numbers; a panic elsewhere cannot leave them
        // half-updated in a way that matters, so a poisoned lock is used.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, op: Op, kind: Option<FileKind>, up: u64, down: u64) {
        let mut c = self.lock();
        *c.requests.entry((op, kind)).or_default() += 1;
        c.bytes_up += up;
        c.bytes_down += down;
    }
}

impl Storage for CountingStorage {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn local_path(&self) -> Option<&Path> {
        self.inner.local_path()
    }
    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.count(Op::Put, Some(kind), data.len() as u64, 0);
        self.inner.put(kind, name, data)
    }
    fn put_owned(&self, kind: FileKind, name: &str, data: Bytes) -> Result<()> {
        self.count(Op::Put, Some(kind), data.len() as u64, 0);
        self.inner.put_owned(kind, name, data)
    }
    /// Forwarded, so that a counted remote store sends a staged file as it
    /// would uncounted (from the file); one Put of the file's length.
    fn put_file(&self, kind: FileKind, name: &str, path: &Path) -> Result<()> {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        self.count(Op::Put, Some(kind), len, 0);
        self.inner.put_file(kind, name, path)
    }
    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let r = self.inner.get(kind, name);
        self.count(Op::Get, Some(kind), 0, r.as_ref().map_or(0, |d| d.len() as u64));
        r
    }
    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let r = self.inner.get_range(kind, name, offset, len);
        self.count(Op::GetRange, Some(kind), 0, r.as_ref().map_or(0, |d| d.len() as u64));
        r
    }
    fn get_range_into(&self, kind: FileKind, name: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<()> {
        let r = self.inner.get_range_into(kind, name, offset, len, buf);
        self.count(Op::GetRange, Some(kind), 0, r.as_ref().map_or(0, |()| buf.len() as u64));
        r
    }
    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.count(Op::Head, Some(kind), 0, 0);
        self.inner.size(kind, name)
    }
    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        self.count(Op::Head, Some(kind), 0, 0);
        self.inner.exists(kind, name)
    }
    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        self.count(Op::List, Some(kind), 0, 0);
        self.inner.list(kind)
    }
    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.count(Op::Delete, Some(kind), 0, 0);
        self.inner.delete(kind, name)
    }
    fn delete_many(&self, kind: FileKind, names: &[String]) -> Result<()> {
        self.count(Op::DeleteMany, Some(kind), 0, 0);
        self.inner.delete_many(kind, names)
    }
    fn stat(&self, kind: FileKind, name: &str) -> Result<FileStat> {
        self.count(Op::Head, Some(kind), 0, 0);
        self.inner.stat(kind, name)
    }
    fn list_stat(&self, kind: FileKind) -> Result<Vec<(String, FileStat)>> {
        self.count(Op::List, Some(kind), 0, 0);
        self.inner.list_stat(kind)
    }
    fn put_new(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<bool> {
        // Counted as the requests the inner store makes for it: a HEAD and
        // a PUT unless it overrides put_new (one conditional PUT).
        self.count(Op::Put, Some(kind), data.len() as u64, 0);
        self.inner.put_new(kind, name, data)
    }
    fn list_tmp(&self) -> Result<Vec<(String, FileStat)>> {
        self.count(Op::ListTmp, None, 0, 0);
        self.inner.list_tmp()
    }
    fn delete_tmp(&self, name: &str) -> Result<()> {
        self.count(Op::DeleteTmp, None, 0, 0);
        self.inner.delete_tmp(name)
    }
    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }
}
