//! `find`: which snapshots hold entries matching a pattern. Snapshots of
//! one host share most of their trees; a subtree met again (same tree id)
//! is not read again: its matches are remembered from the first visit
//! ([`TreeWalker::collect`]), and a subtree without any is remembered as
//! such.

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::format::tree::{Node, NodeKind};
use crate::ops::tree_walk::{Memo, TreeWalker};
use crate::patterns::PatternSet;
use crate::repo::{Repository, Snapshot};

#[derive(Debug, Clone, Default)]
pub struct FindOptions {
    /// Matched on the entry's snapshot path (see [`crate::patterns`]).
    pub patterns: PatternSet,
    /// Only entries modified at or before / at or after this time.
    pub newest: Option<DateTime<Utc>>,
    pub oldest: Option<DateTime<Utc>>,
}

/// One matching entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Found {
    /// Snapshot path with a leading `/`.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    pub mode: u32,
    pub mtime: DateTime<Utc>,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FindStats {
    pub snapshots: u64,
    pub matches: u64,
    /// Distinct trees read (shared subtrees are read once).
    pub trees_read: u64,
}

/// Searches `snapshots` in the order given, calling `out` for each match
/// (in path order within a snapshot).
pub fn find(
    repo: &Repository,
    snapshots: &[Snapshot],
    opts: &FindOptions,
    out: &mut dyn FnMut(&Snapshot, &Found) -> Result<()>,
) -> Result<FindStats> {
    find_with(&mut TreeWalker::new(repo), snapshots, opts, out)
}

/// [`find`] through `walker` (which counts what it loads).
pub fn find_with(
    walker: &mut TreeWalker<'_>,
    snapshots: &[Snapshot],
    opts: &FindOptions,
    out: &mut dyn FnMut(&Snapshot, &Found) -> Result<()>,
) -> Result<FindStats> {
    let before = walker.trees_loaded();
    let mut stats = FindStats::default();
    // Patterns without a `/` match names, so a tree's matches are the same
    // wherever it is met and are remembered per tree; an anchored pattern
    // makes them depend on the tree's path, and then they are remembered
    // per tree and path.
    let mut memo = Memo::new(!opts.patterns.matches_names_only());
    let mut scratch = Vec::new();
    let mut pick = |path: &[u8], node: &Node| -> Option<Found> {
        let hit = opts.patterns.matches(path, node.kind == NodeKind::Dir, &mut scratch) && in_time(opts, node);
        // The path is set per snapshot, from where the tree was met.
        hit.then(|| found(node))
    };
    for snap in snapshots {
        stats.snapshots += 1;
        let matches = walker.collect(&snap.file.tree, b"", &mut memo, &mut pick)?;
        for (path, m) in matches.iter() {
            stats.matches += 1;
            out(snap, &Found { path: String::from_utf8_lossy(path).into_owned(), ..m.clone() })?;
        }
    }
    stats.trees_read = walker.trees_loaded() - before;
    Ok(stats)
}

fn in_time(opts: &FindOptions, n: &Node) -> bool {
    let t = mtime(n);
    opts.newest.is_none_or(|x| t <= x) && opts.oldest.is_none_or(|x| t >= x)
}

fn mtime(n: &Node) -> DateTime<Utc> {
    DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec).unwrap_or_default()
}

fn found(n: &Node) -> Found {
    Found {
        path: String::new(),
        kind: kind_name(n.kind),
        size: n.size,
        mode: n.mode,
        mtime: mtime(n),
        uid: n.uid,
        gid: n.gid,
    }
}

/// restic's names for entry types, where it has them.
pub fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::Dir => "dir",
        NodeKind::File => "file",
        NodeKind::Hardlink => "file",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::Socket => "socket",
        NodeKind::CharDevice => "chardev",
        NodeKind::BlockDevice => "dev",
    }
}
