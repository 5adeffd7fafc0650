//! `diff`: what changed between two snapshots. Trees are compared by id and
//! the walk stops wherever two subtrees have the same id, so two snapshots
//! of ten million files that differ in one directory cost the trees on the
//! way to that directory and no more ([`TreeWalker::walk_pair`]).

use crate::error::Result;
use crate::format::tree::{Node, NodeKind};
use crate::id::Id;
use crate::ops::tree_walk::{Below, TreeWalker};
use crate::repo::Repository;

/// How an entry differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Modifier {
    /// Only in the second snapshot.
    #[serde(rename = "+")]
    Added,
    /// Only in the first snapshot.
    #[serde(rename = "-")]
    Removed,
    /// Content differs (a file's data or a symlink's target), metadata
    /// maybe too.
    #[serde(rename = "M")]
    Modified,
    /// Only metadata differs (mode, owner, times, xattrs).
    #[serde(rename = "U")]
    Metadata,
    /// The type differs (a file became a directory, ...).
    #[serde(rename = "T")]
    TypeChanged,
}

/// One changed entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    /// Snapshot path, with a leading `/`.
    pub path: String,
    pub modifier: Modifier,
    /// What differs for `M` and `U`: `content`, `size`, `mode`, `owner`,
    /// `mtime`, `xattrs`, `target`, `device`.
    pub what: Vec<&'static str>,
    pub is_dir: bool,
    /// Sizes in the first and second snapshot (files only).
    pub size_before: Option<u64>,
    pub size_after: Option<u64>,
}

/// Counts of added or removed entries.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DiffCount {
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DiffStats {
    pub changed_files: u64,
    pub metadata_only: u64,
    pub type_changed: u64,
    pub added: DiffCount,
    pub removed: DiffCount,
    /// Trees read: what the comparison cost.
    pub trees_read: u64,
}

/// Compares the trees `a` and `b`, handing every change to `out` in path
/// order.
pub fn diff(repo: &Repository, a: &Id, b: &Id, out: &mut dyn FnMut(Change) -> Result<()>) -> Result<DiffStats> {
    diff_with(&mut TreeWalker::new(repo), a, b, out)
}

/// [`diff`] through `walker` (which counts what it loads).
pub fn diff_with(
    walker: &mut TreeWalker<'_>,
    a: &Id,
    b: &Id,
    out: &mut dyn FnMut(Change) -> Result<()>,
) -> Result<DiffStats> {
    let before = walker.trees_loaded();
    let mut d = Differ { stats: DiffStats::default(), out };
    walker.walk_pair(Some(a), Some(b), b"", &mut |path, x, y| {
        let path = String::from_utf8_lossy(path);
        match (x, y) {
            (Some(x), Some(y)) => d.both(x, y, &path),
            (Some(x), None) => d.one_side(x, &path, Modifier::Removed),
            (None, Some(y)) => d.one_side(y, &path, Modifier::Added),
            (None, None) => Ok((None, None)),
        }
    })?;
    d.stats.trees_read = walker.trees_loaded() - before;
    Ok(d.stats)
}

struct Differ<'o> {
    stats: DiffStats,
    out: &'o mut dyn FnMut(Change) -> Result<()>,
}

impl Differ<'_> {
    /// An entry (and everything below it) present on one side only.
    fn one_side(&mut self, n: &Node, path: &str, m: Modifier) -> Result<Below> {
        let count = if m == Modifier::Added { &mut self.stats.added } else { &mut self.stats.removed };
        match n.kind {
            NodeKind::Dir => count.dirs += 1,
            k if k.has_chunks() => {
                count.files += 1;
                count.bytes += n.size;
            }
            _ => count.others += 1,
        }
        let file = n.kind.has_chunks();
        (self.out)(Change {
            path: path.to_string(),
            modifier: m,
            what: Vec::new(),
            is_dir: n.kind == NodeKind::Dir,
            size_before: (file && m == Modifier::Removed).then_some(n.size),
            size_after: (file && m == Modifier::Added).then_some(n.size),
        })?;
        let sub = if n.kind == NodeKind::Dir { n.subtree } else { None };
        Ok(if m == Modifier::Added { (None, sub) } else { (sub, None) })
    }

    fn both(&mut self, x: &Node, y: &Node, path: &str) -> Result<Below> {
        let dir = |n: &Node| n.kind == NodeKind::Dir;
        if x.kind != y.kind && !(x.kind.has_chunks() && y.kind.has_chunks()) {
            self.stats.type_changed += 1;
            (self.out)(Change {
                path: path.to_string(),
                modifier: Modifier::TypeChanged,
                what: vec!["type"],
                is_dir: dir(y),
                size_before: x.kind.has_chunks().then_some(x.size),
                size_after: y.kind.has_chunks().then_some(y.size),
            })?;
            // What was below the old directory is gone, and what is below
            // the new one is new.
            return Ok((dir(x).then_some(x.subtree).flatten(), dir(y).then_some(y.subtree).flatten()));
        }
        let mut what = Vec::new();
        let content = if x.kind.has_chunks() { x.chunks != y.chunks } else { x.target != y.target };
        if content {
            what.push(if x.kind.has_chunks() { "content" } else { "target" });
        }
        if x.size != y.size {
            what.push("size");
        }
        if x.mode != y.mode {
            what.push("mode");
        }
        if (x.uid, x.gid, &x.user, &x.group) != (y.uid, y.gid, &y.user, &y.group) {
            what.push("owner");
        }
        if x.mtime != y.mtime {
            what.push("mtime");
        }
        if x.xattrs != y.xattrs {
            what.push("xattrs");
        }
        if x.rdev != y.rdev {
            what.push("device");
        }
        // A directory's mtime follows its entries; its own change is
        // reported only when more than that differs.
        let dir_only_mtime = dir(x) && what == ["mtime"];
        if !what.is_empty() && !dir_only_mtime {
            let modifier = if content || (x.kind.has_chunks() && x.size != y.size) {
                self.stats.changed_files += 1;
                Modifier::Modified
            } else {
                self.stats.metadata_only += 1;
                Modifier::Metadata
            };
            (self.out)(Change {
                path: path.to_string(),
                modifier,
                what,
                is_dir: dir(x),
                size_before: x.kind.has_chunks().then_some(x.size),
                size_after: y.kind.has_chunks().then_some(y.size),
            })?;
        }
        Ok(if dir(x) { (x.subtree, y.subtree) } else { (None, None) })
    }
}
