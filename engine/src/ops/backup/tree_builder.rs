//! The tree builder of a backup: consumes the ordered walk's events,
//! waits for a file's content when its directory closes, and stores one
//! tree blob per directory; then builds the directories above the sources
//! up to the snapshot's root tree.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use chrono::Utc;
use crossbeam_channel::Receiver;

use super::{Change, Content, Ctx, FileOutcome, WalkEvent};
use crate::change_cache;
use crate::error::{Error, Result};
use crate::format::snapshot::Summary;
use crate::format::tree::{Node, NodeKind, Timestamp, Tree};
use crate::id::Id;
use crate::index::IndexReader;
use crate::metadata::{node_from_metadata, OwnerNames};
use crate::packer::BlobSink;

/// One entry per source: `None` when it vanished before it could be read
/// (already warned about).
pub(super) type SourceNodes = Vec<Option<Node>>;
/// A node to place in the snapshot at a path of components.
pub(super) type Placed = (Vec<Vec<u8>>, Node);
/// An open directory in the tree builder, its path on disk and its entries
/// so far.
type OpenDir = (Node, PathBuf, Vec<(Node, Content, Change)>);

/// Stores a directory's tree (`ops::tree_store`): one v1 blob where the config lacks `trees-v2`, else
/// the canonical split (leaves, nodes, chunk lists) of
/// `format-spec/v2/trees-index.md`, and, for a directory on disk, its
/// leaves' inodes and ctimes in the local change cache. Returns the
/// directory's tree id.
pub(super) fn store_tree(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    reader: &IndexReader,
    mut tree: Tree,
    dir: Option<&Path>,
    changes: &mut change_cache::Batch,
) -> Result<Id> {
    let stored = crate::ops::tree_store::store_dir(ctx.repo, sink, reader, &mut tree)?;
    if let Some(dir) = dir.filter(|_| ctx.repo.writes_trees_v2()) {
        changes.add(ctx.repo.index()?, dir, &stored.leaves, &tree.nodes)?;
    }
    Ok(stored.id)
}
/// Consumes walk events, waits for file contents when a directory closes,
/// and stores one tree blob per directory. Returns one node per source.
pub(super) fn build_trees(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    events: Receiver<WalkEvent>,
    expected: usize,
) -> Result<(SourceNodes, Summary)> {
    let mut summary = Summary::default();
    let mut stack: Vec<OpenDir> = Vec::new();
    let mut done: SourceNodes = Vec::new();
    let mut top: Option<Node> = None;
    let mut changes = change_cache::Batch::default();

    let resolve = |entry: (Node, Content, Change), summary: &mut Summary| -> Option<Node> {
        let (mut node, content, change) = entry;
        if let Content::Pending(slot) = content {
            match slot.wait() {
                FileOutcome::Stored { chunks, size } => {
                    node.chunks = chunks;
                    node.size = size;
                }
                FileOutcome::Failed => return None,
            }
        }
        if node.kind.has_chunks() {
            change.count_file(summary, node.size);
        } else if node.kind != NodeKind::Dir {
            summary.other_entries += 1;
        }
        Some(node)
    };

    for event in events.iter() {
        if sink.is_failed() {
            return Err(Error::Interrupted);
        }
        match event {
            WalkEvent::EnterDir(node, path) => stack.push((node, path, Vec::new())),
            WalkEvent::Entry(node, content, change) => match stack.last_mut() {
                Some((_, _, entries)) => entries.push((node, content, change)),
                None => top = resolve((node, content, change), &mut summary),
            },
            WalkEvent::LeaveDir => {
                let Some((mut dir, path, entries)) = stack.pop() else {
                    return Err(Error::corrupt("pipeline", "walker", "unbalanced directory events"));
                };
                let tree = Tree { nodes: entries.into_iter().filter_map(|e| resolve(e, &mut summary)).collect() };
                let reader = ctx.repo.index()?.reader()?;
                dir.subtree = Some(store_tree(ctx, sink, &reader, tree, Some(&path), &mut changes)?);
                summary.dirs += 1;
                match stack.last_mut() {
                    Some((_, _, entries)) => entries.push((dir, Content::Ready, Change::Unchanged)),
                    None => top = Some(dir),
                }
            }
            WalkEvent::SourceDone => done.push(top.take()),
        }
    }
    if ctx.stopping() {
        return Err(Error::Interrupted);
    }
    if done.len() != expected {
        return Err(Error::Interrupted);
    }
    changes.flush(ctx.repo.index()?)?;
    Ok((done, summary))
}
/// Builds the directories above the sources (`/var` for `/var/www`) from
/// their metadata on disk, or synthetic ones for stream paths; returns the
/// root tree id.
pub(super) fn assemble(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    reader: &IndexReader,
    disk_dir: &Path,
    items: Vec<Placed>,
    summary: &mut Summary,
) -> Result<Id> {
    // A source that is `/` itself is the root tree.
    if let Some((_, node)) = items.iter().find(|(c, _)| c.is_empty()) {
        if let Some(id) = node.subtree {
            return Ok(id);
        }
    }
    let mut groups: BTreeMap<Vec<u8>, Vec<Placed>> = BTreeMap::new();
    let mut tree = Tree::default();
    for (mut comps, node) in items {
        if comps.len() == 1 {
            tree.nodes.push(node);
        } else {
            let first = comps.remove(0);
            groups.entry(first).or_default().push((comps, node));
        }
    }
    for (name, sub) in groups {
        let path = disk_dir.join(std::ffi::OsStr::from_bytes(&name));
        let mut node = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                let mut w = Vec::new();
                node_from_metadata(&name, &path, &meta, &mut OwnerNames::default(), &mut w)
            }
            // Stream paths have no directory on disk.
            _ => synthetic_dir(name.clone()),
        };
        node.subtree = Some(assemble(ctx, sink, reader, &path, sub, summary)?);
        summary.dirs += 1;
        tree.nodes.push(node);
    }
    // Directories above the sources hold no file of the walk: nothing for
    // the change cache.
    store_tree(ctx, sink, reader, tree, None, &mut change_cache::Batch::default())
}

pub(super) fn synthetic_dir(name: Vec<u8>) -> Node {
    let mut n = Node::new(NodeKind::Dir, name);
    n.mode = 0o040755;
    n.uid = nix::unistd::getuid().as_raw();
    n.gid = nix::unistd::getgid().as_raw();
    let now = Utc::now();
    n.mtime = Timestamp { sec: now.timestamp(), nsec: now.timestamp_subsec_nanos() };
    n.ctime = n.mtime;
    n
}
