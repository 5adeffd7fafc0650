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
use std::path::{Path, PathBuf};

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
    /// Bytes of `records`: a batch is written once it holds a few MiB, so
    /// a backup of millions of files does not keep their records to the end.
    bytes: usize,
}

/// Bytes of records written at once.
const BATCH_BYTES: usize = 4 << 20;

impl Batch {
    /// Records one leaf of a directory on disk just encoded (`nodes`: its
    /// entries in order) and writes a full batch.
    pub fn add_leaf(&mut self, index: &Index, dir: &Path, leaf: &Id, nodes: &[Node]) -> Result<()> {
        // Leaves without files need nothing.
        if let Some(first) = nodes.first().filter(|_| nodes.iter().any(|n| n.kind == NodeKind::File)) {
            let rec = encode(leaf, nodes);
            self.bytes += 32 + rec.len();
            self.records.push((key(dir, &first.name), rec));
        }
        if self.records.len() >= 16_384 || self.bytes >= BATCH_BYTES {
            self.flush(index)?;
        }
        Ok(())
    }

    pub fn flush(&mut self, index: &Index) -> Result<()> {
        if self.records.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        index.put_change_records(&std::mem::take(&mut self.records), today(), REFRESH_DAYS, EXPIRE_DAYS)
    }
}

/// The parent snapshot's tree of the directory at `dir`, read a leaf at a
/// time as names are asked for in increasing order (the walk's order), so
/// that a directory of any size costs one leaf of memory. Its files come
/// with inode and ctime as change detection needs them: from the tree
/// itself (v1) or from this cache (v2). A v2 leaf the cache has no record
/// of keeps inode 0, which no file on disk has, so its files read as
/// changed.
pub struct PreviousDir {
    dir: PathBuf,
    /// Entries of the current leaf (a v1 tree: all of it), and the next.
    leaf: std::vec::IntoIter<Node>,
    next: Option<Node>,
    /// The rest of a v2 directory; `None` for v1 or once read through.
    leaves: Option<tree_v2::LeafReader>,
}

impl PreviousDir {
    pub fn open(repo: &Repository, reader: &IndexReader, id: &Id, dir: &Path) -> Result<PreviousDir> {
        let data = read_blob(repo, reader, id)?;
        let mut prev = PreviousDir { dir: dir.to_path_buf(), leaf: Vec::new().into_iter(), next: None, leaves: None };
        if tree_v2::blob_version(&data) != Some(tree_v2::VERSION) {
            prev.leaf = Tree::decode(&data, id)?.nodes.into_iter();
        } else {
            prev.leaves = Some(tree_v2::LeafReader::new(id, &data)?);
        }
        prev.next = prev.leaf.next();
        Ok(prev)
    }

    /// The entry named `name`, if the directory has it. Names must be asked
    /// in increasing order; every entry before `name` is skipped for good.
    /// A leaf that cannot be read ends the directory (its files and those
    /// after it read as new: change detection only saves reading).
    pub fn find(&mut self, repo: &Repository, reader: &IndexReader, name: &[u8]) -> Option<Node> {
        loop {
            match &self.next {
                Some(n) if n.name.as_slice() < name => self.next = self.leaf.next(),
                Some(n) if n.name.as_slice() == name => {
                    let found = self.next.take();
                    self.next = self.leaf.next();
                    return found;
                }
                Some(_) => return None,
                None => {
                    let leaves = self.leaves.as_mut()?;
                    match next_leaf(repo, reader, leaves, &self.dir) {
                        Ok(Some(nodes)) => {
                            self.leaf = nodes.into_iter();
                            self.next = self.leaf.next();
                        }
                        _ => {
                            self.leaves = None;
                            return None;
                        }
                    }
                }
            }
        }
    }
}

fn read_blob(repo: &Repository, reader: &IndexReader, b: &Id) -> Result<std::sync::Arc<[u8]>> {
    let loc = reader.lookup(b)?.ok_or(crate::error::Error::BlobNotInIndex(*b))?;
    repo.blob_reader()?.read_at(repo, b, &loc)
}

/// The next leaf of a v2 directory with inode and ctime from the cache.
fn next_leaf(
    repo: &Repository,
    reader: &IndexReader,
    leaves: &mut tree_v2::LeafReader,
    dir: &Path,
) -> Result<Option<Vec<Node>>> {
    let Some((leaf, mut nodes)) = leaves.next_leaf(&mut |b: &Id| read_blob(repo, reader, b))? else {
        return Ok(None);
    };
    let restored = match nodes.first() {
        Some(first) => match repo.index()?.change_record(&key(dir, &first.name))? {
            Some(rec) => restore(&leaf, &mut nodes, &rec),
            None => false,
        },
        None => true,
    };
    if !restored {
        nodes.iter_mut().for_each(|n| n.inode = 0);
    }
    Ok(Some(nodes))
}
