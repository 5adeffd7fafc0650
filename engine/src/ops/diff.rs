//! `diff`: what changed between two snapshots. Trees are compared by id and
//! the walk stops wherever two subtrees have the same id, so two snapshots
//! of ten million files that differ in one directory cost the trees on the
//! way to that directory and no more.

use crate::error::Result;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::Id;
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
    let mut d = Differ { repo, stats: DiffStats::default(), out };
    d.trees(Some(a), Some(b), "")?;
    Ok(d.stats)
}

struct Differ<'a, 'o> {
    repo: &'a Repository,
    stats: DiffStats,
    out: &'o mut dyn FnMut(Change) -> Result<()>,
}

impl Differ<'_, '_> {
    fn load(&mut self, id: Option<&Id>) -> Result<Tree> {
        match id {
            Some(id) => {
                self.stats.trees_read += 1;
                self.repo.load_tree(id)
            }
            None => Ok(Tree::default()),
        }
    }

    fn trees(&mut self, a: Option<&Id>, b: Option<&Id>, prefix: &str) -> Result<()> {
        if a == b {
            return Ok(());
        }
        let (ta, tb) = (self.load(a)?, self.load(b)?);
        // Both sorted by name bytes: a merge join.
        let (mut i, mut j) = (0, 0);
        while i < ta.nodes.len() || j < tb.nodes.len() {
            let order = match (ta.nodes.get(i), tb.nodes.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    self.one_side(&ta.nodes[i], prefix, Modifier::Removed)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    self.one_side(&tb.nodes[j], prefix, Modifier::Added)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    self.both(&ta.nodes[i], &tb.nodes[j], prefix)?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    /// An entry (and everything below it) present on one side only.
    fn one_side(&mut self, n: &Node, prefix: &str, m: Modifier) -> Result<()> {
        let path = join(prefix, &n.name);
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
            path: path.clone(),
            modifier: m,
            what: Vec::new(),
            is_dir: n.kind == NodeKind::Dir,
            size_before: (file && m == Modifier::Removed).then_some(n.size),
            size_after: (file && m == Modifier::Added).then_some(n.size),
        })?;
        if n.kind == NodeKind::Dir {
            if m == Modifier::Added {
                self.trees(None, n.subtree.as_ref(), &path)?;
            } else {
                self.trees(n.subtree.as_ref(), None, &path)?;
            }
        }
        Ok(())
    }

    fn both(&mut self, x: &Node, y: &Node, prefix: &str) -> Result<()> {
        let path = join(prefix, &x.name);
        let dir = |n: &Node| n.kind == NodeKind::Dir;
        if x.kind != y.kind && !(x.kind.has_chunks() && y.kind.has_chunks()) {
            self.stats.type_changed += 1;
            (self.out)(Change {
                path: path.clone(),
                modifier: Modifier::TypeChanged,
                what: vec!["type"],
                is_dir: dir(y),
                size_before: x.kind.has_chunks().then_some(x.size),
                size_after: y.kind.has_chunks().then_some(y.size),
            })?;
            // What was below the old directory is gone, and what is below
            // the new one is new.
            let (a, b) = (dir(x).then_some(x.subtree).flatten(), dir(y).then_some(y.subtree).flatten());
            return self.trees(a.as_ref(), b.as_ref(), &path);
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
                path: path.clone(),
                modifier,
                what,
                is_dir: dir(x),
                size_before: x.kind.has_chunks().then_some(x.size),
                size_after: y.kind.has_chunks().then_some(y.size),
            })?;
        }
        if dir(x) {
            self.trees(x.subtree.as_ref(), y.subtree.as_ref(), &path)?;
        }
        Ok(())
    }
}

fn join(prefix: &str, name: &[u8]) -> String {
    format!("{prefix}/{}", String::from_utf8_lossy(name))
}
