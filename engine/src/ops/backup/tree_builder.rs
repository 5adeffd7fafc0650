//! The tree builder of a backup: consumes the ordered walk's events,
//! waits for each file's content in turn, and stores each directory's tree
//! as its entries come (`ops::tree_store::DirWriter`: in v2 a leaf is
//! stored as soon as the split ends it); then builds the directories above
//! the sources up to the snapshot's root tree.
//!
//! Memory does not grow with the number of files or the size of one
//! directory: what is held is, per directory on the current path, one
//! unfinished leaf (at most 1,024 entries or 256 KiB encoded) and one
//! unfinished node per level above it; the walk runs at most the events
//! channel's capacity ahead.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsStr;
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
use crate::metadata::{node_from_metadata, OwnerNames, Stat};
use crate::ops::tree_store::DirWriter;
use crate::packer::BlobSink;
use crate::progress::{Item, ItemKind, Items};

/// One entry per source: `None` when it vanished before it could be read
/// (already warned about).
pub(super) type SourceNodes = Vec<Option<Node>>;
/// A node to place in the snapshot at a path of components.
pub(super) type Placed = (Vec<Vec<u8>>, Node);
/// An open directory in the tree builder: its node and path on disk, its
/// tree so far, and, in v2, its entries not yet in a complete leaf (for the
/// change cache: inode and ctime are not in the tree).
struct OpenDir<'r> {
    node: Node,
    path: PathBuf,
    writer: DirWriter<'r>,
    unsealed: VecDeque<Node>,
}

impl OpenDir<'_> {
    /// Adds an entry, storing every blob it completes, and records the
    /// leaves it completed in the change cache.
    fn push(
        &mut self,
        ctx: &Ctx<'_>,
        sink: &BlobSink<'_>,
        reader: &IndexReader,
        node: Node,
        changes: &mut change_cache::Batch,
    ) -> Result<()> {
        let v2 = matches!(self.writer, DirWriter::V2(_));
        if v2 {
            // Only what the change cache needs: the chunks are in the
            // encoder's leaf already.
            let mut kept = Node::new(node.kind, node.name.clone());
            (kept.inode, kept.ctime) = (node.inode, node.ctime);
            self.unsealed.push_back(kept);
        }
        let leaves = self.writer.push(sink, reader, node)?;
        self.record(ctx, &leaves, changes)
    }

    fn record(&mut self, ctx: &Ctx<'_>, leaves: &[(Id, usize)], changes: &mut change_cache::Batch) -> Result<()> {
        for (leaf, count) in leaves {
            let nodes: Vec<Node> = self.unsealed.drain(..(*count).min(self.unsealed.len())).collect();
            changes.add_leaf(ctx.repo.index()?, &self.path, leaf, &nodes)?;
        }
        Ok(())
    }

    /// Stores the rest of the directory; returns its node with the subtree.
    fn finish(
        mut self,
        ctx: &Ctx<'_>,
        sink: &BlobSink<'_>,
        reader: &IndexReader,
        changes: &mut change_cache::Batch,
    ) -> Result<Node> {
        let writer = std::mem::replace(&mut self.writer, DirWriter::V1(Vec::new()));
        let v2 = matches!(writer, DirWriter::V2(_));
        let stored = writer.finish(sink, reader)?;
        if v2 {
            self.record(ctx, &stored.leaves, changes)?;
        }
        self.node.subtree = Some(stored.id);
        Ok(self.node)
    }
}

/// Stores a directory's tree built whole (`ops::tree_store`): one v1 blob
/// where the config lacks `trees-v2`, else the canonical split (leaves,
/// nodes, chunk lists) of `format-spec/v2/trees-index.md`. For the
/// directories above the sources, which hold no file of the walk.
pub(super) fn store_tree(ctx: &Ctx<'_>, sink: &BlobSink<'_>, reader: &IndexReader, mut tree: Tree) -> Result<Id> {
    Ok(crate::ops::tree_store::store_dir(ctx.repo, sink, reader, &mut tree)?.id)
}

/// Consumes walk events and stores each directory's tree as its entries
/// come: an entry whose content is being read is waited for when it is
/// its turn, so what is held is the open directories' unfinished leaves,
/// never a whole directory (the events channel bounds how far the walk
/// runs ahead). `tops`: where each source (then each stream) is, for the
/// listing of entries ([`Progress::item`]). Returns one node per source.
pub(super) fn build_trees(
    ctx: &Ctx<'_>,
    sink: &BlobSink<'_>,
    events: Receiver<WalkEvent>,
    tops: &[PathBuf],
) -> Result<(SourceNodes, Summary)> {
    let mut summary = Summary::default();
    let mut stack: Vec<OpenDir<'_>> = Vec::new();
    let mut done: SourceNodes = Vec::new();
    let mut top: Option<Node> = None;
    let mut changes = change_cache::Batch::default();
    let mut reader = None;
    let items = ctx.progress.items();
    let listed = |change: Change| match items {
        Items::None => false,
        Items::Changed => change != Change::Unchanged,
        Items::All => true,
    };

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
            WalkEvent::EnterDir(node, path) => {
                stack.push(OpenDir { node, path, writer: DirWriter::new(ctx.repo), unsealed: VecDeque::new() })
            }
            WalkEvent::Entry(node, content, change) => {
                let Some(node) = resolve((node, content, change), &mut summary) else { continue };
                if listed(change) {
                    let (kind, size) =
                        if node.kind.has_chunks() { (ItemKind::File, node.size) } else { (ItemKind::Other, 0) };
                    let path = match stack.last() {
                        Some(dir) => dir.path.join(OsStr::from_bytes(&node.name)),
                        None => tops.get(done.len()).cloned().unwrap_or_default(),
                    };
                    ctx.progress.item(&Item { path: &path, kind, change: change.item(), size });
                }
                match stack.last_mut() {
                    Some(dir) => dir.push(ctx, sink, sink.index_reader(&mut reader)?, node, &mut changes)?,
                    None => top = Some(node),
                }
            }
            WalkEvent::LeaveDir => {
                let Some(mut dir) = stack.pop() else {
                    return Err(Error::corrupt("pipeline", "walker", "unbalanced directory events"));
                };
                let prev_tree = dir.node.subtree.take();
                let path = (items != Items::None).then(|| dir.path.clone());
                let node = dir.finish(ctx, sink, sink.index_reader(&mut reader)?, &mut changes)?;
                summary.dirs += 1;
                if let Some(path) = path {
                    let change = match prev_tree {
                        None => Change::New,
                        Some(prev) if node.subtree == Some(prev) => Change::Unchanged,
                        Some(_) => Change::Changed,
                    };
                    if listed(change) {
                        ctx.progress.item(&Item { path: &path, kind: ItemKind::Dir, change: change.item(), size: 0 });
                    }
                }
                match stack.last_mut() {
                    Some(parent) => parent.push(ctx, sink, sink.index_reader(&mut reader)?, node, &mut changes)?,
                    None => top = Some(node),
                }
            }
            WalkEvent::SourceDone => done.push(top.take()),
        }
    }
    if ctx.stopping() {
        return Err(Error::Interrupted);
    }
    if done.len() != tops.len() {
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
                node_from_metadata(&name, &path, None, &Stat::from(&meta), &mut OwnerNames::default(), &mut w)
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
    store_tree(ctx, sink, reader, tree)
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
