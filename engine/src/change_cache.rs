//! The local change-detection cache of format v2. v2 trees no longer hold
//! `st_ino` and `st_ctime` (`format-spec/v2/trees-index.md` 1.2), yet a
//! backup tells an unchanged file by size, mtime, ctime and inode. This
//! cache, kept beside the index in `index.redb` (never in the repository),
//! holds for each leaf blob a backup wrote the inode and ctime of its
//! entries, keyed by the directory's path on disk and the leaf's id, so the
//! next backup of the same directory on this host gets them back.
//!
//! This is borg's files cache in shape: host-local, because inode numbers
//! mean nothing elsewhere, and losing it only costs time: a leaf without a
//! record reads as changed, so its files are read again (and deduplicate).
//! The path is part of the key because identical directories (copies of
//! one site in several vhosts) share leaf ids but not inodes.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::Result;
use crate::format::tree::{Node, NodeKind, Timestamp, Tree};
use crate::format::tree_v2;
use crate::id::Id;
use crate::index::{Index, IndexReader};
use crate::repo::Repository;

const RECORD_LEN: usize = 20;
/// Records are refreshed at most this often when unchanged (days): an
/// untouched record costs no write.
const REFRESH_DAYS: u32 = 7;
/// Records not used for this long are dropped (days).
pub const EXPIRE_DAYS: u32 = 60;

/// The cache key of the leaf that starts with `first` in the directory at
/// `dir`. Keyed by the leaf's first name, not its id, so that a changed
/// leaf overwrites its record instead of leaving the old one behind.
pub fn key(dir: &Path, first: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("arc 2026 change cache key");
    h.update(&(dir.as_os_str().len() as u64).to_le_bytes());
    h.update(dir.as_os_str().as_bytes());
    h.update(first);
    *h.finalize().as_bytes()
}

/// A leaf's record: its id, then for each entry in order inode u64, ctime
/// i64 seconds, u32 nanoseconds.
pub fn encode(leaf: &Id, nodes: &[Node]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + nodes.len() * RECORD_LEN);
    out.extend_from_slice(&leaf.0);
    for n in nodes {
        out.extend_from_slice(&n.inode.to_le_bytes());
        out.extend_from_slice(&n.ctime.sec.to_le_bytes());
        out.extend_from_slice(&n.ctime.nsec.to_le_bytes());
    }
    out
}

/// Puts inode and ctime back into a leaf's nodes; false (nodes untouched)
/// when the record is of another leaf or does not fit them.
fn restore(leaf: &Id, nodes: &mut [Node], rec: &[u8]) -> bool {
    if rec.len() != 32 + nodes.len() * RECORD_LEN || rec[..32] != leaf.0 {
        return false;
    }
    let rec = &rec[32..];
    for (n, r) in nodes.iter_mut().zip(rec.chunks_exact(RECORD_LEN)) {
        let u = |a: usize, b: usize| {
            let mut x = [0u8; 8];
            x[..b - a].copy_from_slice(&r[a..b]);
            u64::from_le_bytes(x)
        };
        n.inode = u(0, 8);
        n.ctime = Timestamp { sec: u(8, 16) as i64, nsec: u(16, 20) as u32 };
    }
    true
}

/// Unix days, the records' time stamp.
pub fn today() -> u32 {
    (chrono::Utc::now().timestamp() / 86_400).max(0) as u32
}

/// Records of one backup, written in batches.
#[derive(Default)]
pub struct Batch {
    records: Vec<([u8; 32], Vec<u8>)>,
}

impl Batch {
    /// Records the leaves of a directory just encoded (`nodes` sorted, as
    /// `encode_dir` leaves them) and writes a full batch.
    pub fn add(&mut self, index: &Index, dir: &Path, leaves: &[(Id, usize)], nodes: &[Node]) -> Result<()> {
        let mut at = 0;
        for (leaf, count) in leaves {
            let part = &nodes[at..at + count];
            at += count;
            // Leaves without files need nothing.
            if let Some(first) = part.first().filter(|_| part.iter().any(|n| n.kind == NodeKind::File)) {
                self.records.push((key(dir, &first.name), encode(leaf, part)));
            }
        }
        if self.records.len() >= 16_384 {
            self.flush(index)?;
        }
        Ok(())
    }

    pub fn flush(&mut self, index: &Index) -> Result<()> {
        if self.records.is_empty() {
            return Ok(());
        }
        index.put_change_records(&std::mem::take(&mut self.records), today(), REFRESH_DAYS, EXPIRE_DAYS)
    }
}

/// The parent snapshot's tree of the directory at `dir`, read through
/// `reader`, with inode and ctime of its files as change detection needs
/// them: from the tree itself (v1) or from this cache (v2). A v2 leaf the
/// cache has no record of keeps inode 0, which no file on disk has, so its
/// files read as changed.
pub fn previous_tree(repo: &Repository, reader: &IndexReader, id: &Id, dir: &Path) -> Result<Tree> {
    let mut read = |b: &Id| -> Result<std::sync::Arc<[u8]>> {
        let loc = reader.lookup(b)?.ok_or(crate::error::Error::BlobNotInIndex(*b))?;
        repo.blob_reader()?.read_at(repo, b, &loc)
    };
    let data = read(id)?;
    if tree_v2::blob_version(&data) != Some(tree_v2::VERSION) {
        return Tree::decode(&data, id);
    }
    let (mut tree, leaves) = tree_v2::assemble(id, &data, &mut read)?;
    let index = repo.index()?;
    let mut at = 0;
    for (leaf, count) in leaves {
        let nodes = &mut tree.nodes[at..at + count];
        at += count;
        let Some(first) = nodes.first() else { continue };
        let restored = match index.change_record(&key(dir, &first.name))? {
            Some(rec) => restore(&leaf, nodes, &rec),
            None => false,
        };
        if !restored {
            nodes.iter_mut().for_each(|n| n.inode = 0);
        }
    }
    Ok(tree)
}
