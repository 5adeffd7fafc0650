//! Navigating a snapshot's trees: resolving a path to its node and visiting
//! every node below one, depth first in name order (ls, restore, cat, dump,
//! and check's report of damaged paths); and visiting every distinct tree
//! reachable from many snapshots exactly once ([`visit_unique_trees`]:
//! check, prune's live marking, stats). So all of them see a snapshot the
//! same way, and none reads a tree shared by snapshots twice.

use std::collections::HashSet;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::Id;
use crate::repo::{Repository, Snapshot};

/// Splits a snapshot path (`/var/www`, `var/www/`, `mysql/shop.sql`) into
/// components; `.` parts are ignored and `..` is refused.
pub fn split_path(path: &str) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::InvalidArgument {
                    what: "snapshot path",
                    reason: format!("{path:?} contains \"..\""),
                })
            }
            c => out.push(c.as_bytes().to_vec()),
        }
    }
    Ok(out)
}

/// What a snapshot path names: the root, or a node inside it.
#[derive(Debug, Clone)]
pub enum Located {
    Root(Id),
    Node(Box<Node>),
}

impl Located {
    /// The tree to list for a directory (or the root).
    pub fn tree(&self) -> Option<Id> {
        match self {
            Located::Root(id) => Some(*id),
            Located::Node(n) => n.subtree,
        }
    }
}

/// Resolves a snapshot path. A path that does not exist fails with
/// [`Error::PathNotInSnapshot`] naming the deepest directory of it that
/// does.
pub fn locate(repo: &Repository, snapshot: &Snapshot, path: &str) -> Result<Located> {
    let comps = split_path(path)?;
    let shown = |n: usize| format!("/{}", String::from_utf8_lossy(&comps[..n].join(&b'/')));
    let missing = |existing: usize| Error::PathNotInSnapshot {
        snapshot: snapshot.id.short(),
        path: shown(comps.len()),
        closest: shown(existing),
    };
    let mut tree_id = snapshot.file.tree;
    let mut node: Option<Node> = None;
    for (i, c) in comps.iter().enumerate() {
        if let Some(n) = &node {
            tree_id = match (n.kind, n.subtree) {
                (NodeKind::Dir, Some(id)) => id,
                // comps[i - 1] is not a directory: its parent is.
                _ => return Err(missing(i - 1)),
            };
        }
        let tree = repo.load_tree(&tree_id)?;
        node = Some(tree.find(c).cloned().ok_or_else(|| missing(i))?);
    }
    Ok(match node {
        Some(n) => Located::Node(Box::new(n)),
        None => Located::Root(tree_id),
    })
}

/// Visits every node below `tree` depth first (a directory before its
/// contents), calling `visit(path, node)` with `path` the `/`-joined
/// snapshot path of the node. `leave(path, node)` is called after a
/// directory's contents. Trees are loaded one level at a time, so memory is
/// bounded by depth times directory size.
pub fn walk(
    repo: &Repository,
    tree: &Id,
    prefix: &[u8],
    visit: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
    leave: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
) -> Result<()> {
    walk_with(repo, tree, prefix, visit, leave, &mut |_, _, e| Err(e))
}

/// What a walk does with a tree it cannot load: `(path, tree id, error)`.
pub type Unreadable<'a> = dyn FnMut(&[u8], &Id, Error) -> Result<()> + 'a;

/// Like [`walk`], but a tree that cannot be loaded is handed to
/// `unreadable(path, tree id, error)` (with `path` the directory whose
/// contents it holds) instead of ending the walk: if that returns `Ok`, the
/// walk goes on with the rest. Restore uses it so that one damaged
/// directory costs that directory, not the whole snapshot.
pub fn walk_with(
    repo: &Repository,
    tree: &Id,
    prefix: &[u8],
    visit: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
    leave: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
    unreadable: &mut Unreadable<'_>,
) -> Result<()> {
    let mut visit = |p: &[u8], n: &Node| visit(p, n).map(|()| Visit::Enter);
    walk_at(repo, tree, prefix, 0, &mut visit, leave, unreadable)
}

/// What a selective walk does after visiting a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Walk its contents (then call `leave`).
    Enter,
    /// Skip its contents (and `leave`): nothing below it is read.
    Skip,
}

/// Like [`walk_with`], but `visit` decides for each directory whether its
/// contents are walked (restore with exclude patterns).
pub fn walk_select(
    repo: &Repository,
    tree: &Id,
    prefix: &[u8],
    visit: &mut dyn FnMut(&[u8], &Node) -> Result<Visit>,
    leave: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
    unreadable: &mut Unreadable<'_>,
) -> Result<()> {
    walk_at(repo, tree, prefix, 0, visit, leave, unreadable)
}

/// Deepest nesting of trees a walk follows (SPEC.md section 8.2). Real
/// trees cannot come near it (PATH_MAX); a crafted chain of trees deeper
/// than this would otherwise exhaust the stack of the recursive walk.
pub const MAX_TREE_DEPTH: usize = 4096;

/// The error for a tree nested deeper than [`MAX_TREE_DEPTH`].
pub fn too_deep(tree: &Id) -> Error {
    Error::corrupt("tree", tree.to_hex(), format!("nested deeper than {MAX_TREE_DEPTH} directories"))
}

fn walk_at(
    repo: &Repository,
    tree: &Id,
    prefix: &[u8],
    depth: usize,
    visit: &mut dyn FnMut(&[u8], &Node) -> Result<Visit>,
    leave: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
    unreadable: &mut Unreadable<'_>,
) -> Result<()> {
    if depth > MAX_TREE_DEPTH {
        return unreadable(prefix, tree, too_deep(tree));
    }
    let t = match repo.load_tree(tree) {
        Ok(t) => t,
        Err(e) => return unreadable(prefix, tree, e),
    };
    for node in &t.nodes {
        let mut path = prefix.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&node.name);
        if visit(&path, node)? == Visit::Skip {
            continue;
        }
        if node.kind == NodeKind::Dir {
            if let Some(sub) = node.subtree {
                walk_at(repo, &sub, &path, depth + 1, visit, leave, unreadable)?;
            }
            leave(&path, node)?;
        }
    }
    Ok(())
}

/// Trees loaded at once by [`visit_unique_trees`]: enough to keep every
/// core busy, few enough to bound the decoded trees held at once.
const TREE_BATCH: usize = 256;

/// Visits every distinct tree reachable from `roots` exactly once, breadth
/// first, loading a batch of trees in parallel with `load`. `visit(id,
/// tree)` sees each tree that loaded; `failed(id, error)` each that did not
/// (return the error to stop, `Ok` to go on without what is below it).
/// Memory is the set of tree ids seen plus one batch of trees.
pub fn visit_unique_trees(
    roots: impl IntoIterator<Item = Id>,
    load: &(dyn Fn(&Id) -> Result<Tree> + Sync),
    visit: &mut dyn FnMut(&Id, &Tree) -> Result<()>,
    failed: &mut dyn FnMut(&Id, Error) -> Result<()>,
) -> Result<()> {
    let subdirs = |tree: &Tree| -> Vec<Id> {
        tree.nodes
            .iter()
            .filter_map(|n| match (n.kind, n.subtree) {
                (NodeKind::Dir, Some(sub)) => Some(sub),
                _ => None,
            })
            .collect()
    };
    visit_unique_within(MAX_TREE_DEPTH, roots, load, &subdirs, visit, failed)
}

/// [`visit_unique_trees`] over any kind of loaded blob `T`: `children(t)`
/// names the blobs below it. Prune walks tree blobs one by one with it (a
/// v2 directory's nodes, leaves and chunk lists are blobs of their own,
/// each of which must be marked live), check and stats whole directories.
pub fn visit_unique<T: Send>(
    roots: impl IntoIterator<Item = Id>,
    load: &(dyn Fn(&Id) -> Result<T> + Sync),
    children: &dyn Fn(&T) -> Vec<Id>,
    visit: &mut dyn FnMut(&Id, &T) -> Result<()>,
    failed: &mut dyn FnMut(&Id, Error) -> Result<()>,
) -> Result<()> {
    visit_unique_within(MAX_BLOB_DEPTH, roots, load, children, visit, failed)
}

fn visit_unique_within<T: Send>(
    max_depth: usize,
    roots: impl IntoIterator<Item = Id>,
    load: &(dyn Fn(&Id) -> Result<T> + Sync),
    children: &dyn Fn(&T) -> Vec<Id>,
    visit: &mut dyn FnMut(&Id, &T) -> Result<()>,
    failed: &mut dyn FnMut(&Id, Error) -> Result<()>,
) -> Result<()> {
    let mut seen: HashSet<Id> = HashSet::new();
    let mut frontier: Vec<Id> = roots.into_iter().filter(|id| seen.insert(*id)).collect();
    let mut depth = 0;
    while !frontier.is_empty() {
        if depth > max_depth {
            for id in &frontier {
                failed(id, too_deep(id))?;
            }
            break;
        }
        let mut next = Vec::new();
        for batch in frontier.chunks(TREE_BATCH) {
            let loaded: Vec<(Id, Result<T>)> = batch.par_iter().map(|id| (*id, load(id))).collect();
            for (id, item) in loaded {
                match item {
                    Ok(item) => {
                        visit(&id, &item)?;
                        for sub in children(&item) {
                            if seen.insert(sub) {
                                next.push(sub);
                            }
                        }
                    }
                    Err(e) => failed(&id, e)?,
                }
            }
        }
        frontier = next;
        depth += 1;
    }
    Ok(())
}

/// Deepest level [`visit_unique`] follows: [`MAX_TREE_DEPTH`] directories,
/// each of which may be a v2 directory of up to `tree_v2::MAX_LEVEL` node
/// levels above its leaves and a chunk list below them.
const MAX_BLOB_DEPTH: usize = MAX_TREE_DEPTH * (crate::format::tree_v2::MAX_LEVEL as usize + 2);
