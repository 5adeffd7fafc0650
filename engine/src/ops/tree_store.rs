//! Storing one directory as tree blobs, in the encoding the repository's
//! config asks for (format-spec/v2/trees-index.md section 5): a v1 tree
//! blob, or, where the config lists `trees-v2`, the canonical split of
//! section 1 (leaves, nodes, chunk lists). Backup and copy both store
//! directories through here, so a repository never holds an encoding its
//! features do not announce.

use crate::error::Result;
use crate::format::pack::BlobKind;
use crate::format::tree::Tree;
use crate::format::tree_v2;
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
