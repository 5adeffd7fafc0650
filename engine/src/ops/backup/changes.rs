//! Change detection: which files of a backup are unchanged since the
//! parent snapshot (size, mtime, ctime and inode equal), so their chunk
//! lists are taken from the parent tree instead of reading them, and which
//! files are further links of a hardlink group already seen.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use super::events::WalkOut;
use super::sources::Source;
use super::{Change, Content, Ctx, Job, Seen, Slot, WalkEvent};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::id::Id;
use crate::walk::DirFd;

impl Ctx<'_> {
    /// The parent snapshot's node at `components`, if any.
    pub(super) fn parent_node(&self, components: &[Vec<u8>]) -> Result<Option<Node>> {
        let Some(mut tree_id) = self.parent_root else {
            return Ok(None);
        };
        let Some((last, dirs)) = components.split_last() else {
            return Ok(None);
        };
        for c in dirs {
            let tree = self.repo.load_tree(&tree_id)?;
            match tree.find(c).and_then(|n| n.subtree) {
                Some(id) => tree_id = id,
                None => return Ok(None),
            }
        }
        Ok(self.repo.load_tree(&tree_id)?.find(last).cloned())
    }
}
fn same_file(a: &Node, b: &Node) -> bool {
    a.kind == b.kind && a.size == b.size && a.mtime == b.mtime && a.ctime == b.ctime && a.inode == b.inode
}

/// The first file of a set of hardlinks; later links refer to it.
pub(super) struct LinkGroup {
    first_path: Vec<u8>,
    /// Links not seen yet (of `nlink`): the group is dropped once all are,
    /// so a tree of hardlinks does not hold every group to the end.
    unseen: u32,
    /// Pending content, or `None` when `chunks` came from the parent.
    slot: Option<Arc<Slot>>,
    chunks: Vec<Id>,
    size: u64,
    change: Change,
}
/// One non-directory entry, in walk order: decides whether a file changed
/// since the parent snapshot, groups hardlinks, and queues content to read.
pub(super) fn entry(
    ctx: &Ctx<'_>,
    src: &Source,
    mut node: Node,
    previous: Option<Node>,
    path: &Path,
    dir: Option<Arc<DirFd>>,
    out: &mut WalkOut<'_>,
) -> Result<()> {
    let (links, jobs) = (&mut out.links, out.jobs);
    let send = |e: WalkEvent| out.events.send(e).map_err(|_| Error::Interrupted);
    if node.kind != NodeKind::File {
        // Only a listing (`Progress::item`) reads this: nothing is read.
        let change = match &previous {
            None => Change::New,
            Some(p) if same_file(p, &node) && p.target == node.target => Change::Unchanged,
            Some(_) => Change::Changed,
        };
        return send(WalkEvent::Entry(node, Content::Ready, change));
    }
    let change = match &previous {
        None => Change::New,
        Some(p) if !ctx.force_read && same_file(p, &node) && ctx.reusable(&p.chunks)? => Change::Unchanged,
        Some(_) => Change::Changed,
    };
    let key = (node.device, node.inode);
    if node.nlink > 1 {
        if let Some(group) = links.get_mut(&key) {
            node.kind = NodeKind::Hardlink;
            node.target = group.first_path.clone();
            let content = match &group.slot {
                Some(s) => Content::Pending(s.clone()),
                None => {
                    node.chunks = group.chunks.clone();
                    node.size = group.size;
                    Content::Ready
                }
            };
            let change = group.change;
            group.unseen = group.unseen.saturating_sub(1);
            if group.unseen == 0 {
                links.remove(&key);
            }
            return send(WalkEvent::Entry(node, content, change));
        }
    }
    if change == Change::Unchanged {
        ctx.progress.unchanged(path, node.size);
        if let Some(p) = previous {
            node.chunks = p.chunks;
        }
        if node.nlink > 1 {
            links.insert(
                key,
                LinkGroup {
                    first_path: snapshot_path(&src.components, path, &src.disk),
                    unseen: node.nlink - 1,
                    slot: None,
                    chunks: node.chunks.clone(),
                    size: node.size,
                    change,
                },
            );
        }
        send(WalkEvent::Entry(node, Content::Ready, change))
    } else {
        let slot = Arc::new(Slot::default());
        if node.nlink > 1 {
            links.insert(
                key,
                LinkGroup {
                    first_path: snapshot_path(&src.components, path, &src.disk),
                    unseen: node.nlink - 1,
                    slot: Some(slot.clone()),
                    chunks: Vec::new(),
                    size: 0,
                    change,
                },
            );
        }
        let seen = Seen { size: node.size, mtime: node.mtime };
        jobs.send(Job { path: path.to_path_buf(), dir, seen, slot: slot.clone() }).map_err(|_| Error::Interrupted)?;
        send(WalkEvent::Entry(node, Content::Pending(slot), change))
    }
}
/// The path a disk entry has inside the snapshot, `/`-joined, no leading `/`.
fn snapshot_path(components: &[Vec<u8>], path: &Path, src: &Path) -> Vec<u8> {
    let mut out = components.iter().map(|c| c.as_slice()).collect::<Vec<_>>().join(&b'/');
    if let Ok(rel) = path.strip_prefix(src) {
        for c in rel.components() {
            if !out.is_empty() {
                out.push(b'/');
            }
            out.extend_from_slice(c.as_os_str().as_bytes());
        }
    }
    out
}
