//! Directories as the mount reads them: one tree blob at a time.
//!
//! A v2 directory of many entries is split over many blobs, a B-tree whose
//! nodes list each child's first name and entry count
//! (`format-spec/v2/trees-index.md` 1). The mount never assembles such a
//! directory: a name is found by binary search over the first names of one
//! node per level, an entry by its position through the nodes' entry counts,
//! and a listing moves from leaf to leaf. Each decoded blob is cached on its
//! own, so what is cached is the leaves in use. Assembled, a directory of a
//! million entries is some 400 MB decoded, more than the whole tree cache:
//! it was never kept, and every READDIR and LOOKUP in it read and decoded
//! all of it again.
//!
//! Each child is checked against what its parent says of it (level, first
//! name, entry count, and that its names stay below the next child's first
//! name) when it is reached, so positions and lookups agree with the
//! assembled directory of [`crate::repo::Repository::load_tree`] on every
//! directory that one accepts.

use std::sync::Arc;

use super::{Result, Vfs};
use crate::error::Error;
use crate::format::tree::{Node, Tree};
use crate::format::tree_v2::{self, Child, TreeBlob};
use crate::id::Id;

/// One decoded tree blob.
pub(crate) enum DirBlob {
    /// Entries in name order: a whole v1 directory, or one v2 leaf. Chunk
    /// lists are not resolved: `lists` holds (position, chunk count, list
    /// blob ids) of the entries whose chunks are out of line.
    Entries { nodes: Vec<Node>, lists: Vec<(u32, u32, Vec<Id>)> },
    /// A v2 node: its children, where each child's entries start among the
    /// node's, and the total.
    Node { level: u8, children: Vec<Child>, starts: Vec<u64>, total: u64 },
}

impl DirBlob {
    fn decode(data: &[u8], id: &Id) -> Result<DirBlob> {
        if tree_v2::blob_version(data) != Some(tree_v2::VERSION) {
            let t = Tree::decode(data, id)?;
            return Ok(DirBlob::Entries { nodes: t.nodes, lists: Vec::new() });
        }
        Ok(match tree_v2::decode_blob(data, id)? {
            TreeBlob::Leaf(entries) => {
                let mut lists = Vec::new();
                let mut nodes = Vec::with_capacity(entries.len());
                for (i, e) in entries.into_iter().enumerate() {
                    if let Some((count, ids)) = e.lists {
                        lists.push((i as u32, count, ids));
                    }
                    nodes.push(e.node);
                }
                DirBlob::Entries { nodes, lists }
            }
            TreeBlob::Node { level, children } => {
                let mut starts = Vec::with_capacity(children.len());
                let mut total = 0u64;
                for c in &children {
                    starts.push(total);
                    total = total.saturating_add(c.entries);
                }
                if total > u64::from(u32::MAX) {
                    return Err(corrupt(id, "more than 2^32-1 entries".into()).into());
                }
                DirBlob::Node { level, children, starts, total }
            }
        })
    }

    /// Entries below this blob.
    pub(crate) fn len(&self) -> u64 {
        match self {
            DirBlob::Entries { nodes, .. } => nodes.len() as u64,
            DirBlob::Node { total, .. } => *total,
        }
    }

    fn level(&self) -> u8 {
        match self {
            DirBlob::Entries { .. } => 0,
            DirBlob::Node { level, .. } => *level,
        }
    }

    fn first_name(&self) -> Option<&[u8]> {
        match self {
            DirBlob::Entries { nodes, .. } => nodes.first().map(|n| n.name.as_slice()),
            DirBlob::Node { children, .. } => children.first().map(|c| c.first_name.as_slice()),
        }
    }

    fn last_name(&self) -> Option<&[u8]> {
        match self {
            DirBlob::Entries { nodes, .. } => nodes.last().map(|n| n.name.as_slice()),
            // Bounded when its last child is reached.
            DirBlob::Node { .. } => None,
        }
    }

    /// Approximate memory, for the cache budget.
    pub(crate) fn weight(b: &Arc<DirBlob>) -> usize {
        64 + match &**b {
            DirBlob::Entries { nodes, lists } => {
                nodes
                    .iter()
                    .map(|n| {
                        std::mem::size_of::<Node>()
                            + n.name.len()
                            + n.user.len()
                            + n.group.len()
                            + n.target.len()
                            + n.chunks.len() * 32
                            + n.xattrs.iter().map(|(k, v)| k.len() + v.len() + 48).sum::<usize>()
                    })
                    .sum::<usize>()
                    + lists.iter().map(|l| 40 + l.2.len() * 32).sum::<usize>()
            }
            DirBlob::Node { children, .. } => children.iter().map(|c| 80 + c.first_name.len()).sum(),
        }
    }
}

fn corrupt(id: &Id, reason: String) -> Error {
    Error::corrupt("tree", id.to_hex(), reason)
}

/// A leaf (or whole v1 directory) and the position of its first entry in
/// the directory.
pub(crate) struct Leaf {
    pub blob: Arc<DirBlob>,
    pub start: u32,
}

impl Leaf {
    pub(crate) fn nodes(&self) -> &[Node] {
        match &*self.blob {
            DirBlob::Entries { nodes, .. } => nodes,
            DirBlob::Node { .. } => &[],
        }
    }
}

impl Vfs {
    /// One tree blob, decoded, from the cache or the repository.
    pub(super) fn dir_blob(&self, id: &Id) -> Result<Arc<DirBlob>> {
        self.trees.get_or_load(id, DirBlob::weight, || {
            self.tree_blob_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.with_index_retry(|| {
                let data = self.repo.read_blob(id)?;
                Ok(Arc::new(DirBlob::decode(&data, id)?))
            })
        })
    }

    /// Child `child` of node `parent` (of `level`), checked against what
    /// the parent says of it; `upper` is the first name of the next child
    /// (or the parent's own bound), which every name below must stay under.
    fn child_blob(&self, parent: &Id, level: u8, child: &Child, upper: Option<&[u8]>) -> Result<Arc<DirBlob>> {
        let b = self.dir_blob(&child.id)?;
        let ok = level >= 1
            && b.level() + 1 == level
            && b.first_name() == Some(child.first_name.as_slice())
            && b.len() == child.entries
            && match (b.last_name(), upper) {
                (Some(last), Some(up)) => last < up,
                _ => true,
            };
        if !ok {
            return Err(corrupt(parent, format!("child {} does not match its parent", child.id.short())).into());
        }
        Ok(b)
    }

    /// Entries in the directory whose tree is `dir`.
    pub(crate) fn dir_len(&self, dir: &Id) -> Result<u32> {
        // Bounded to u32 when decoded (nodes), or by the tree format (v1).
        Ok(u32::try_from(self.dir_blob(dir)?.len()).unwrap_or(u32::MAX))
    }

    /// The leaf holding entry `index` of directory `dir`, reading one blob
    /// per level; `None` past the end.
    pub(crate) fn leaf_at(&self, dir: &Id, index: u32) -> Result<Option<Leaf>> {
        let mut blob = self.dir_blob(dir)?;
        let mut id = *dir;
        let mut start = 0u64;
        let mut upper: Option<Vec<u8>> = None;
        loop {
            let next = match &*blob {
                DirBlob::Entries { nodes, .. } => {
                    let pos = u64::from(index) - start;
                    if pos >= nodes.len() as u64 {
                        return Ok(None);
                    }
                    return Ok(Some(Leaf { blob: blob.clone(), start: start as u32 }));
                }
                DirBlob::Node { level, children, starts, .. } => {
                    let rel = u64::from(index) - start;
                    let k = starts.partition_point(|&s| s <= rel);
                    if k == 0 || rel >= blob.len() {
                        return Ok(None);
                    }
                    let child = &children[k - 1];
                    let up = children.get(k).map(|c| c.first_name.clone()).or_else(|| upper.take());
                    let b = self.child_blob(&id, *level, child, up.as_deref())?;
                    start += starts[k - 1];
                    upper = up;
                    id = child.id;
                    b
                }
            };
            blob = next;
        }
    }

    /// The position of `name` in directory `dir`, reading one blob per
    /// level.
    pub(crate) fn find_in_dir(&self, dir: &Id, name: &[u8]) -> Result<Option<u32>> {
        let mut blob = self.dir_blob(dir)?;
        let mut id = *dir;
        let mut start = 0u64;
        let mut upper: Option<Vec<u8>> = None;
        loop {
            let next = match &*blob {
                DirBlob::Entries { nodes, .. } => {
                    return Ok(nodes
                        .binary_search_by(|n| n.name.as_slice().cmp(name))
                        .ok()
                        .map(|i| (start + i as u64) as u32));
                }
                DirBlob::Node { level, children, starts, .. } => {
                    let k = children.partition_point(|c| c.first_name.as_slice() <= name);
                    if k == 0 {
                        return Ok(None);
                    }
                    let child = &children[k - 1];
                    let up = children.get(k).map(|c| c.first_name.clone()).or_else(|| upper.take());
                    let b = self.child_blob(&id, *level, child, up.as_deref())?;
                    start += starts[k - 1];
                    upper = up;
                    id = child.id;
                    b
                }
            };
            blob = next;
        }
    }

    /// Calls `f` with entry `index` of directory `dir`.
    pub(crate) fn with_node<R>(&self, dir: &Id, index: u32, f: impl FnOnce(&Node) -> R) -> Result<R> {
        let leaf = self.leaf_at(dir, index)?.ok_or_else(|| corrupt(dir, format!("no entry {index}")))?;
        Ok(f(&leaf.nodes()[(index - leaf.start) as usize]))
    }

    /// Entry `index` of directory `dir` with its chunk ids, out-of-line
    /// chunk lists read and checked.
    pub(crate) fn node_with_chunks(&self, dir: &Id, index: u32) -> Result<Node> {
        let leaf = self.leaf_at(dir, index)?.ok_or_else(|| corrupt(dir, format!("no entry {index}")))?;
        let pos = index - leaf.start;
        let mut node = leaf.nodes()[pos as usize].clone();
        let DirBlob::Entries { lists, .. } = &*leaf.blob else { return Ok(node) };
        let Ok(k) = lists.binary_search_by_key(&pos, |l| l.0) else { return Ok(node) };
        let (_, count, ids) = &lists[k];
        let mut chunks = Vec::with_capacity((*count as usize).min(1 << 20));
        for l in ids {
            let data = self.with_index_retry(|| Ok(self.repo.read_blob(l)?))?;
            chunks.extend(tree_v2::decode_chunk_list(&data, l)?);
            if chunks.len() > *count as usize {
                break;
            }
        }
        if chunks.len() != *count as usize {
            return Err(corrupt(dir, format!("chunk lists of {:?} do not hold {count} ids", node.name_lossy())).into());
        }
        node.chunks = chunks;
        Ok(node)
    }

    /// Calls `f(position, node)` for the entries of directory `dir` from
    /// position `from` on, leaf by leaf, until it returns `true` (stop).
    pub(crate) fn for_each_node(&self, dir: &Id, from: u32, mut f: impl FnMut(u32, &Node) -> bool) -> Result<()> {
        let mut at = from;
        while let Some(leaf) = self.leaf_at(dir, at)? {
            let nodes = leaf.nodes();
            for (i, n) in nodes.iter().enumerate().skip((at - leaf.start) as usize) {
                if f(leaf.start + i as u32, n) {
                    return Ok(());
                }
            }
            match leaf.start.checked_add(nodes.len() as u32) {
                Some(next) if next > at => at = next,
                _ => return Ok(()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::{Entry, Vfs, VfsOptions};
    use crate::ops::backup::{backup, BackupOptions};
    use crate::progress::NoProgress;
    use crate::repo::{InitOptions, Repository};

    /// 12,000 entries (a file with chunks out of line among them): a v2
    /// directory of some 50 leaves under nodes.
    const FILES: usize = 12_000;

    fn big_dir() -> (tempfile::TempDir, Arc<Repository>, crate::id::Id) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        for i in 0..FILES {
            std::fs::write(src.join(format!("m{i:06}.eml")), format!("message {i}\n")).unwrap();
        }
        // More chunks than a leaf entry holds inline: a file with chunk lists.
        std::fs::write(src.join("m005000.big"), crate::test_data::pseudo_random(4 << 20, 5)).unwrap();
        let opts = InitOptions {
            file_chunker: crate::format::config::ChunkerParams::new(8192, 16384, 65536).unwrap(),
            ..Default::default()
        };
        let repo = Repository::init_local(&dir.path().join("repo"), &opts).unwrap();
        assert!(repo.writes_trees_v2());
        backup(&repo, BackupOptions { paths: vec![src.clone()], ..Default::default() }, &NoProgress).unwrap();
        let repo = Arc::new(repo);
        let snap = repo.snapshots().unwrap().remove(0);
        let mut tree = snap.file.tree;
        for c in src.to_str().unwrap().split('/').filter(|c| !c.is_empty()) {
            tree = repo.lookup_name(&tree, c.as_bytes()).unwrap().unwrap().subtree.unwrap();
        }
        (dir, repo, tree)
    }

    #[test]
    fn split_directories_are_read_a_leaf_at_a_time() {
        let (_dir, repo, tree) = big_dir();
        let (whole, leaves) = repo.load_tree_with_leaves(&tree).unwrap();
        assert_eq!(whole.nodes.len(), FILES + 1);
        assert!(leaves.len() >= 20, "the directory is split ({} leaves)", leaves.len());
        let fresh = || Vfs::new(repo.clone(), VfsOptions::default());

        // A lookup reads the root-to-leaf path only: one blob per level.
        let v = fresh();
        let probe = b"m007321.eml";
        let at = v.find_in_dir(&tree, probe).unwrap().unwrap();
        let depth = v.tree_blob_reads();
        assert!(depth <= 4, "one lookup read {depth} tree blobs");
        assert_eq!(whole.nodes[at as usize].name, probe);
        // Its attributes and a missing name cost nothing more than the path.
        v.with_node(&tree, at, |n| assert_eq!(n.size, whole.nodes[at as usize].size)).unwrap();
        assert!(v.find_in_dir(&tree, b"m007321.emz").unwrap().is_none());
        assert!(v.find_in_dir(&tree, b"a-before-all").unwrap().is_none());
        assert!(v.tree_blob_reads() <= depth + 1, "{} reads", v.tree_blob_reads());

        // Every position and name agrees with the assembled directory.
        let v = fresh();
        for i in (0..whole.nodes.len()).step_by(97).chain([whole.nodes.len() - 1]) {
            let n = &whole.nodes[i];
            assert_eq!(v.find_in_dir(&tree, &n.name).unwrap(), Some(i as u32));
            v.with_node(&tree, i as u32, |m| assert_eq!(m, n)).unwrap();
        }
        assert!(v.leaf_at(&tree, whole.nodes.len() as u32).unwrap().is_none());

        // A listing from the middle reads the path to its first leaf and
        // then the leaves it covers, not the directory.
        let v = fresh();
        let from = (FILES / 2) as u32;
        let mut seen = Vec::new();
        v.for_each_node(&tree, from, |i, n| {
            seen.push((i, n.name.clone()));
            seen.len() == 100
        })
        .unwrap();
        assert_eq!(seen.first().map(|s| s.0), Some(from));
        assert!(seen.iter().all(|(i, name)| whole.nodes[*i as usize].name == *name));
        assert!(v.tree_blob_reads() <= depth + 2, "100 entries read {} blobs", v.tree_blob_reads());

        // The whole listing, in order, and the big file's chunks resolved
        // from its lists.
        let v = fresh();
        let mut names = Vec::new();
        v.for_each_node(&tree, 0, |_, n| {
            names.push(n.name.clone());
            false
        })
        .unwrap();
        assert!(names.iter().eq(whole.nodes.iter().map(|n| &n.name)));
        let big = v.find_in_dir(&tree, b"m005000.big").unwrap().unwrap();
        assert_eq!(v.node_with_chunks(&tree, big).unwrap().chunks, whole.nodes[big as usize].chunks);
        let f = v.open(&Entry::Node { tree, index: big }).unwrap();
        assert_eq!(f.size(), 4 << 20);
    }
}
