//! Every byte layout of the repository is encoded and decoded here and
//! nowhere else. The layouts are specified in `format-spec/SPEC.md`; the
//! golden vectors in `format-spec/vectors/` pin them.
//!
//! All integers are little-endian and fixed width. Every file starts with a
//! magic and a version (the envelope's, or the pack header's), and so does
//! every tree blob, so that readers reject what they do not understand
//! instead of misreading it; structures nested inside a versioned one (a
//! pack trailer, an index file's payload) share its version.
//!
//! The index database (`crate::index`) keeps its own record layout: it is a
//! local cache, rebuilt from index files whenever its schema changes, not
//! part of the repository format.

pub mod config;
pub mod content_keys;
pub mod delta;
pub mod envelope;
#[doc(hidden)]
pub mod fuzz_entry;
pub mod index_file;
pub mod key_file;
pub mod lock;
pub mod mark;
pub mod pack;
pub mod sealed;
pub mod session;
pub mod snapshot;
pub mod tree;
pub mod tree_v2;

use crate::error::{Error, Result};
use crate::id::Id;

/// Appends fixed-width little-endian fields to a buffer.
#[derive(Default)]
pub(crate) struct ByteWriter {
    pub buf: Vec<u8>,
}

impl ByteWriter {
    pub fn with_capacity(n: usize) -> Self {
        ByteWriter { buf: Vec::with_capacity(n) }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    pub fn id(&mut self, id: &Id) {
        self.buf.extend_from_slice(&id.0);
    }
    pub fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }
}

/// Reads fixed-width little-endian fields with bounds checks; every failure
/// becomes [`Error::Corrupt`] naming the structure being decoded.
pub(crate) struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
    name: &'a str,
}

impl<'a> ByteReader<'a> {
    pub fn new(data: &'a [u8], what: &'static str, name: &'a str) -> Self {
        ByteReader { data, pos: 0, what, name }
    }

    pub fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::corrupt(self.what, self.name, format!("{} (at byte {})", reason.into(), self.pos))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.corrupt(format!("truncated: needs {n} more bytes")))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub fn id(&mut self) -> Result<Id> {
        Ok(Id(self.array()?))
    }
    /// Skips reserved bytes, insisting they are zero so that a future format
    /// that assigns them meaning is not silently misread.
    pub fn reserved(&mut self, n: usize) -> Result<()> {
        if self.take(n)?.iter().any(|&b| b != 0) {
            return Err(self.corrupt("reserved bytes are not zero"));
        }
        Ok(())
    }
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    pub fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.corrupt(format!("{} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}
