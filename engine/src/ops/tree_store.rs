//! Storing one directory as tree blobs, in the encoding the repository's
//! config asks for (format-spec/v2/trees-index.md section 5): a v1 tree
//! blob, or, where the config lists `trees-v2`, the canonical split of
//! section 1 (leaves, nodes, chunk lists). Backup and copy both store
//! directories through here, so a repository never holds an encoding its
//! features do not announce.
//!
//! [`DirWriter`] takes a directory entry by entry: in v2 each blob is
//! stored as soon as the split completes it, so memory does not grow with
//! the directory (a v1 tree is one blob, so a v1 directory is held whole
//! until it ends: the format's limit, not this writer's).

use crate::error::Result;
use crate::format::pack::BlobKind;
use crate::format::tree::{Node, Tree};
use crate::format::tree_v2::{self, DirEncoder};
use crate::id::Id;
use crate::index::IndexReader;
use crate::packer::BlobSink;
use crate::repo::Repository;

/// A stored directory: its id, and its leaves (id and entry count, in
/// name order; the one v1 blob counts as one leaf) for per-leaf side data
/// such as the change cache.
pub struct StoredDir {
    pub id: Id,
    pub leaves: Vec<(Id, usize)>,
}

/// Stores `tree` (sorted by the encoder) and every blob it is made of
/// that the repository lacks.
pub fn store_dir(repo: &Repository, sink: &BlobSink<'_>, reader: &IndexReader, tree: &mut Tree) -> Result<StoredDir> {
    if !repo.writes_trees_v2() {
        let data = tree.encode()?;
        let id = sink.store(reader, BlobKind::Tree, &data)?;
        return Ok(StoredDir { id, leaves: vec![(id, tree.nodes.len())] });
    }
    let enc = tree_v2::encode_dir(tree, &repo.tree_split_key(), &|b| repo.blob_id(b))?;
    for (id, data) in &enc.blobs {
        sink.store_with_id(reader, *id, BlobKind::Tree, data)?;
    }
    Ok(StoredDir { id: enc.root, leaves: enc.leaves })
}

/// Stores a directory whose entries come one at a time in name order.
pub enum DirWriter<'r> {
    V1(Vec<Node>),
    V2(DirEncoder<'r>),
}

impl<'r> DirWriter<'r> {
    pub fn new(repo: &'r Repository) -> Self {
        if repo.writes_trees_v2() {
            DirWriter::V2(DirEncoder::new(repo.tree_split_key(), Box::new(move |b: &[u8]| repo.blob_id(b))))
        } else {
            DirWriter::V1(Vec::new())
        }
    }

    /// Adds the next entry, stores the blobs it completes, and returns the
    /// leaves it completed (id and entry count, in order).
    pub fn push(&mut self, sink: &BlobSink<'_>, reader: &IndexReader, node: Node) -> Result<Vec<(Id, usize)>> {
        match self {
            DirWriter::V1(nodes) => {
                nodes.push(node);
                Ok(Vec::new())
            }
            DirWriter::V2(enc) => {
                enc.push(&node)?;
                store_blobs(enc, sink, reader)
            }
        }
    }

    /// Stores the rest of the directory; returns its id and the last leaves
    /// (for v1, the one blob with every entry).
    pub fn finish(self, sink: &BlobSink<'_>, reader: &IndexReader) -> Result<StoredDir> {
        match self {
            DirWriter::V1(nodes) => {
                let mut tree = Tree { nodes };
                let data = tree.encode()?;
                let id = sink.store(reader, BlobKind::Tree, &data)?;
                Ok(StoredDir { id, leaves: vec![(id, tree.nodes.len())] })
            }
            DirWriter::V2(mut enc) => {
                let id = enc.seal()?;
                let leaves = store_blobs(&mut enc, sink, reader)?;
                Ok(StoredDir { id, leaves })
            }
        }
    }

    /// Bytes of encoded entries held (v2; 0 for v1, which holds nodes).
    pub fn held_bytes(&self) -> usize {
        match self {
            DirWriter::V1(_) => 0,
            DirWriter::V2(enc) => enc.held_bytes(),
        }
    }
}

fn store_blobs(enc: &mut DirEncoder<'_>, sink: &BlobSink<'_>, reader: &IndexReader) -> Result<Vec<(Id, usize)>> {
    for (id, data) in enc.take_blobs() {
        sink.store_with_id(reader, id, BlobKind::Tree, &data)?;
    }
    Ok(enc.take_leaves().collect())
}
