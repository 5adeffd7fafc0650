//! Navigating a snapshot's trees: resolving a path to its node and visiting
//! every node below one, depth first in name order (ls, restore, cat, dump,
//! and check's report of damaged paths); and visiting every distinct tree
//! reachable from many snapshots exactly once ([`visit_unique_trees`]:
//! check, prune's live marking, stats); and the memoizing walks of
//! [`TreeWalker`]: two trees side by side, skipping subtrees whose ids are
//! equal (diff), and what a tree holds, collected once per distinct tree
//! (find over many snapshots). So all of them see a snapshot the same way,
//! and none reads a tree shared by snapshots twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

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

/// Stored bytes of tree frames a walk fetches ahead per directory on a
/// remote store (prefetch.rs): a few frames of 256 KiB, each holding the
/// trees of many directories.
const TREE_WARM_BUDGET: u64 = 2 << 20;

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
    let mut warmed = false;
    for (i, node) in t.nodes.iter().enumerate() {
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
                // On the first subdirectory entered, the trees of it and
                // of the ones after it, in few requests (remote stores).
                if !warmed {
                    let rest = t.nodes[i..].iter().filter_map(|n| n.subtree.as_ref());
                    crate::prefetch::warm_tree_cache(repo, rest, TREE_WARM_BUDGET);
                    warmed = true;
                }
                walk_at(repo, &sub, &path, depth + 1, visit, leave, unreadable)?;
            }
            leave(&path, node)?;
        }
    }
    Ok(())
}

/// Trees loaded at once by [`visit_unique_trees`], per thread of the pool
/// that loads them: enough to keep every thread busy (the loads of one
/// batch run on the pool, so a larger batch adds no concurrency), few
/// enough to bound the decoded trees held at once. A directory of 1,000
/// files of 512 chunks is 16 MB decoded: 256 at once made `check` of a
/// 30M-chunk synthetic index peak at 1,120 MiB (53 such directories side
/// by side), growing with the repository.
const TREE_BATCH_PER_THREAD: usize = 4;

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
        let batch_len = (rayon::current_num_threads() * TREE_BATCH_PER_THREAD).max(8);
        for batch in frontier.chunks(batch_len) {
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

/// Loads the trees of a walk and counts them, and walks them the two
/// memoizing ways: [`TreeWalker::walk_pair`] (diff) and
/// [`TreeWalker::collect`] (find). Both recurse one directory at a time,
/// so memory is depth times directory size plus what the caller keeps;
/// both refuse trees nested deeper than [`MAX_TREE_DEPTH`].
pub struct TreeWalker<'a> {
    load: Box<TreeLoader<'a>>,
    loaded: u64,
}

/// How a [`TreeWalker`] loads a directory.
pub type TreeLoader<'a> = dyn Fn(&Id) -> Result<Tree> + 'a;

/// The subtrees to compare below a name in [`TreeWalker::walk_pair`]:
/// (first side, second side).
pub type Below = (Option<Id>, Option<Id>);

/// The visitor of [`TreeWalker::walk_pair`]: `(path, in a, in b)`.
pub type PairVisit<'v> = dyn FnMut(&[u8], Option<&Node>, Option<&Node>) -> Result<Below> + 'v;

/// Entries collected below a tree by [`TreeWalker::collect`]: each with its
/// path relative to that tree (`/sub/name`, always starting with `/`).
pub type Collected<T> = Arc<Vec<(Vec<u8>, T)>>;

/// What [`TreeWalker::collect`] remembers between calls: the entries
/// collected below each tree already walked, keyed by tree id alone or by
/// tree id and the path the tree was met at.
pub struct Memo<T> {
    per_place: bool,
    seen: HashMap<(Id, Vec<u8>), Collected<T>>,
}

impl<T> Memo<T> {
    /// `per_place`: false when what is collected from an entry does not
    /// depend on where its directory is (only on the entry and its path
    /// relative to the tree), so a tree met at another path, in this
    /// snapshot or another, is not read again; true when it does (an
    /// anchored pattern), so a tree is read once per path it is met at.
    pub fn new(per_place: bool) -> Memo<T> {
        Memo { per_place, seen: HashMap::new() }
    }
}

impl<'a> TreeWalker<'a> {
    /// A walker over the trees of `repo`.
    pub fn new(repo: &'a Repository) -> TreeWalker<'a> {
        TreeWalker::with_loader(move |id| repo.load_tree(id))
    }

    /// A walker that loads trees with `load` (a v1 tree blob or a whole
    /// split v2 directory, as [`Repository::load_tree`] gives them).
    pub fn with_loader(load: impl Fn(&Id) -> Result<Tree> + 'a) -> TreeWalker<'a> {
        TreeWalker { load: Box::new(load), loaded: 0 }
    }

    /// Trees loaded so far: what the walks cost.
    pub fn trees_loaded(&self) -> u64 {
        self.loaded
    }

    fn load(&mut self, id: &Id) -> Result<Tree> {
        self.loaded += 1;
        (self.load)(id)
    }

    /// Walks the trees `a` and `b` (`None`: an empty tree) side by side,
    /// merge-joining their entries by name, and calls `visit(path, in a,
    /// in b)` for every name in either, in name order; `visit` returns the
    /// pair of subtrees to compare below that name (`(None, None)` for
    /// none), which are walked before the next name. Where the two ids are
    /// equal nothing below is read: a diff of two large snapshots that
    /// differ in one directory reads the trees on the path to it.
    pub fn walk_pair(
        &mut self,
        a: Option<&Id>,
        b: Option<&Id>,
        prefix: &[u8],
        visit: &mut PairVisit<'_>,
    ) -> Result<()> {
        self.pair_at(a, b, prefix, 0, visit)
    }

    fn pair_at(
        &mut self,
        a: Option<&Id>,
        b: Option<&Id>,
        prefix: &[u8],
        depth: usize,
        visit: &mut PairVisit<'_>,
    ) -> Result<()> {
        if a == b {
            return Ok(());
        }
        if depth > MAX_TREE_DEPTH {
            let id = a.or(b).copied().unwrap_or_default();
            return Err(too_deep(&id));
        }
        let mut side = |id: Option<&Id>| match id {
            Some(id) => self.load(id),
            None => Ok(Tree::default()),
        };
        let (ta, tb) = (side(a)?, side(b)?);
        // Both sorted by name bytes: a merge join.
        let (mut i, mut j) = (0, 0);
        while i < ta.nodes.len() || j < tb.nodes.len() {
            let (x, y) = match (ta.nodes.get(i), tb.nodes.get(j)) {
                (Some(x), Some(y)) => match x.name.cmp(&y.name) {
                    std::cmp::Ordering::Less => (Some(x), None),
                    std::cmp::Ordering::Greater => (None, Some(y)),
                    std::cmp::Ordering::Equal => (Some(x), Some(y)),
                },
                // One side is exhausted.
                (x, y) => (x, y),
            };
            i += usize::from(x.is_some());
            j += usize::from(y.is_some());
            let name = x.or(y).map(|n| n.name.as_slice()).unwrap_or_default();
            let path = child_path(prefix, name);
            let (sa, sb) = visit(&path, x, y)?;
            self.pair_at(sa.as_ref(), sb.as_ref(), &path, depth + 1, visit)?;
        }
        Ok(())
    }

    /// What `pick(path, node)` keeps of the entries below `tree` (which sits
    /// at `prefix`), in walk order (a directory before its contents), each
    /// with its path relative to `tree`. A tree already collected into
    /// `memo` (at any path, or at this path; see [`Memo::new`]) is not read
    /// again: its entries come from the memo, so find over many snapshots
    /// of one host reads each distinct tree once.
    pub fn collect<T: Clone>(
        &mut self,
        tree: &Id,
        prefix: &[u8],
        memo: &mut Memo<T>,
        pick: &mut dyn FnMut(&[u8], &Node) -> Option<T>,
    ) -> Result<Collected<T>> {
        self.collect_at(tree, prefix, 0, memo, pick)
    }

    fn collect_at<T: Clone>(
        &mut self,
        tree: &Id,
        prefix: &[u8],
        depth: usize,
        memo: &mut Memo<T>,
        pick: &mut dyn FnMut(&[u8], &Node) -> Option<T>,
    ) -> Result<Collected<T>> {
        let key = (*tree, if memo.per_place { prefix.to_vec() } else { Vec::new() });
        if let Some(found) = memo.seen.get(&key) {
            return Ok(found.clone());
        }
        if depth > MAX_TREE_DEPTH {
            return Err(too_deep(tree));
        }
        let t = self.load(tree)?;
        let mut out = Vec::new();
        for node in &t.nodes {
            let path = child_path(prefix, &node.name);
            let rel = &path[prefix.len()..];
            if let Some(v) = pick(&path, node) {
                out.push((rel.to_vec(), v));
            }
            if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                let below = self.collect_at(&sub, &path, depth + 1, memo, pick)?;
                out.extend(below.iter().map(|(p, v)| ([rel, p.as_slice()].concat(), v.clone())));
            }
        }
        let out = Arc::new(out);
        memo.seen.insert(key, out.clone());
        Ok(out)
    }
}

/// `prefix/name`.
fn child_path(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(prefix.len() + 1 + name.len());
    path.extend_from_slice(prefix);
    path.push(b'/');
    path.extend_from_slice(name);
    path
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::ops::backup::{backup, BackupOptions};
    use crate::ops::diff::{diff_with, Modifier};
    use crate::ops::find::{find_with, FindOptions};
    use crate::patterns::{PatternSet, PatternSpec};
    use crate::progress::NoProgress;
    use crate::repo::InitOptions;

    /// A web root whose two sites hold identical `conf/` directories (one
    /// tree id, met at two paths) and a directory big enough to be split
    /// into several blobs where trees-v2 is on.
    fn web_root(dir: &Path) -> PathBuf {
        let src = dir.join("www");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for site in ["site1", "site2"] {
            let conf = src.join(site).join("conf");
            fs::create_dir_all(&conf).unwrap();
            fs::write(conf.join("wp-config.php"), b"<?php define('DB', 'x');").unwrap();
            fs::File::open(conf.join("wp-config.php")).unwrap().set_modified(t).unwrap();
            fs::File::open(&conf).unwrap().set_modified(t).unwrap();
        }
        fs::create_dir_all(src.join("big")).unwrap();
        for i in 0..3000 {
            fs::write(src.join(format!("big/f{i:05}")), b"").unwrap();
        }
        src
    }

    fn patterns(p: &str) -> FindOptions {
        let spec = PatternSpec { pattern: p.into(), origin: "test".into(), case_insensitive: false };
        FindOptions { patterns: PatternSet::new(vec![spec]).unwrap(), ..Default::default() }
    }

    /// Every directory of `snapshots` as (tree id, path), once per place
    /// it occurs in each snapshot: what a walk without memo would read.
    fn places(repo: &Repository, snapshots: &[Snapshot]) -> Vec<(Id, Vec<u8>)> {
        let mut out = Vec::new();
        for s in snapshots {
            out.push((s.file.tree, Vec::new()));
            let mut visit = |p: &[u8], n: &Node| {
                if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                    out.push((sub, [b"/", p].concat()));
                }
                Ok(())
            };
            walk(repo, &s.file.tree, b"", &mut visit, &mut |_, _| Ok(())).unwrap();
        }
        out
    }

    /// find over several snapshots of an unchanged tree loads each distinct
    /// tree once (a name pattern) or once per place (an anchored one), and
    /// diff loads only the trees on the path to what changed.
    fn find_and_diff_load_each_tree_once(repo: &Repository, dir: &Path) {
        const SNAPSHOTS: usize = 4;
        let src = web_root(dir);
        let backup_now =
            || backup(repo, BackupOptions { paths: vec![src.clone()], ..Default::default() }, &NoProgress).unwrap();
        for _ in 0..SNAPSHOTS {
            backup_now();
        }
        let snaps = repo.snapshots().unwrap();
        assert_eq!(snaps.len(), SNAPSHOTS);
        let all = places(repo, &snaps);
        let distinct: HashSet<Id> = all.iter().map(|(id, _)| *id).collect();
        let distinct_places: HashSet<&(Id, Vec<u8>)> = all.iter().collect();
        // v1 tree ids include inode numbers: there the two conf/ differ.
        if repo.writes_trees_v2() {
            assert!(distinct.len() < distinct_places.len(), "conf/ is one tree at two places");
        }
        assert!(all.len() >= SNAPSHOTS * distinct_places.len() / 2, "the snapshots share their trees");

        let loads = RefCell::new(Vec::new());
        let mut walker = TreeWalker::with_loader(|id| {
            loads.borrow_mut().push(*id);
            repo.load_tree(id)
        });
        let mut hits = Vec::new();
        let stats = find_with(&mut walker, &snaps, &patterns("wp-config.php"), &mut |s, f| {
            hits.push((s.id, f.path.clone()));
            Ok(())
        })
        .unwrap();
        let w = src.display().to_string();
        let want: Vec<(Id, String)> = snaps
            .iter()
            .flat_map(|s| ["site1", "site2"].map(|site| (s.id, format!("{w}/{site}/conf/wp-config.php"))))
            .collect();
        assert_eq!(hits, want);
        let loaded = std::mem::take(&mut *loads.borrow_mut());
        assert_eq!(loaded.len(), distinct.len(), "each distinct tree is loaded once");
        assert_eq!(loaded.iter().collect::<HashSet<_>>().len(), loaded.len());
        assert_eq!(stats.trees_read, loaded.len() as u64);

        // An anchored pattern: conf/ must be read at each of its places.
        let mut hits = Vec::new();
        let anchored = format!("{w}/site2/conf/*.php");
        find_with(&mut walker, &snaps, &patterns(&anchored), &mut |s, f| {
            hits.push((s.id, f.path.clone()));
            Ok(())
        })
        .unwrap();
        assert_eq!(hits, want.iter().filter(|(_, p)| p.contains("site2")).cloned().collect::<Vec<_>>());
        assert_eq!(loads.borrow_mut().drain(..).count(), distinct_places.len(), "each tree once per place");

        // One file changed: diff reads the trees on its path, not big/.
        fs::write(src.join("site1/conf/wp-config.php"), b"<?php define('DB', 'changed');").unwrap();
        let last = backup_now().snapshot_id;
        let last = repo.snapshots().unwrap().into_iter().find(|s| s.id == last).unwrap();
        let mut changes = Vec::new();
        let stats = diff_with(&mut walker, &snaps[0].file.tree, &last.file.tree, &mut |c| {
            changes.push((c.modifier, c.path));
            Ok(())
        })
        .unwrap();
        let modified: Vec<_> = changes.iter().filter(|(m, _)| *m != Modifier::Metadata).collect();
        assert_eq!(modified, [&(Modifier::Modified, format!("{w}/site1/conf/wp-config.php"))]);
        let loaded = std::mem::take(&mut *loads.borrow_mut());
        assert_eq!(stats.trees_read, loaded.len() as u64);
        let depth = src.join("site1/conf").components().count();
        assert!(loaded.len() <= 2 * (depth + 1), "{} trees read for a path {depth} deep", loaded.len());
        let big = match locate(repo, &last, &format!("{w}/big")).unwrap() {
            Located::Node(n) => n.subtree.unwrap(),
            other => panic!("big is {other:?}"),
        };
        assert!(!loaded.contains(&big), "big/ is equal on both sides and not read");
    }

    #[test]
    fn find_and_diff_load_each_tree_once_with_split_v2_trees() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_local(&dir.path().join("repo"), &InitOptions::default()).unwrap();
        assert!(repo.writes_trees_v2());
        find_and_diff_load_each_tree_once(&repo, dir.path());
        let snap = repo.snapshots().unwrap().pop().unwrap();
        let big = locate(&repo, &snap, &format!("{}/www/big", dir.path().display())).unwrap().tree().unwrap();
        assert!(repo.load_tree_with_parts(&big).unwrap().1.len() > 1, "big/ is split into several blobs");
    }

    #[test]
    fn find_and_diff_load_each_tree_once_with_v1_trees() {
        // The frozen repo-v2 lists no features: a backup into a copy of it
        // writes v1 tree blobs.
        let dir = tempfile::tempdir().unwrap();
        let repo_dir = dir.path().join("repo");
        let frozen = Path::new(env!("CARGO_MANIFEST_DIR")).join("../format-spec/vectors/repo-v2");
        copy_dir(&frozen, &repo_dir);
        for s in fs::read_dir(repo_dir.join("snapshots")).unwrap() {
            fs::remove_file(s.unwrap().path()).unwrap();
        }
        let pw = || Ok(zeroize::Zeroizing::new("arc frozen repo-v2".to_string()));
        let repo = Repository::open_local_with(&repo_dir, Some(&pw)).unwrap();
        assert!(!repo.writes_trees_v2());
        find_and_diff_load_each_tree_once(&repo, dir.path());
    }

    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
}
