//! `find`: which snapshots hold entries matching a pattern. Snapshots of
//! one host share most of their trees; a subtree met again at the same
//! path (same tree id) is not read again: its matches are remembered from
//! the first visit, and a subtree without any is remembered as such.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::format::tree::{Node, NodeKind};
use crate::id::Id;
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

type Key = (Id, Vec<u8>);

/// Searches `snapshots` in the order given, calling `out` for each match
/// (in path order within a snapshot).
pub fn find(
    repo: &Repository,
    snapshots: &[Snapshot],
    opts: &FindOptions,
    out: &mut dyn FnMut(&Snapshot, &Found) -> Result<()>,
) -> Result<FindStats> {
    let mut f = Finder { repo, opts, empty: HashSet::new(), found: HashMap::new(), stats: FindStats::default() };
    for snap in snapshots {
        f.stats.snapshots += 1;
        let matches = f.tree(&snap.file.tree, b"")?;
        for m in matches.iter() {
            f.stats.matches += 1;
            out(snap, m)?;
        }
    }
    Ok(f.stats)
}

struct Finder<'a> {
    repo: &'a Repository,
    opts: &'a FindOptions,
    /// Subtrees at a path known to hold no match.
    empty: HashSet<Key>,
    /// Subtrees at a path with their matches.
    found: HashMap<Key, Arc<Vec<Found>>>,
    stats: FindStats,
}

impl Finder<'_> {
    fn tree(&mut self, id: &Id, path: &[u8]) -> Result<Arc<Vec<Found>>> {
        let key = (*id, path.to_vec());
        if self.empty.contains(&key) {
            return Ok(Arc::default());
        }
        if let Some(m) = self.found.get(&key) {
            return Ok(m.clone());
        }
        self.stats.trees_read += 1;
        let tree = self.repo.load_tree(id)?;
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        for node in &tree.nodes {
            let mut p = path.to_vec();
            p.push(b'/');
            p.extend_from_slice(&node.name);
            let is_dir = node.kind == NodeKind::Dir;
            if self.opts.patterns.matches(&p, is_dir, &mut scratch) && self.in_time(node) {
                out.push(found(&p, node));
            }
            if let (true, Some(sub)) = (is_dir, node.subtree) {
                out.extend(self.tree(&sub, &p)?.iter().cloned());
            }
        }
        if out.is_empty() {
            self.empty.insert(key);
            Ok(Arc::default())
        } else {
            let out = Arc::new(out);
            self.found.insert(key, out.clone());
            Ok(out)
        }
    }

    fn in_time(&self, n: &Node) -> bool {
        let t = mtime(n);
        self.opts.newest.is_none_or(|x| t <= x) && self.opts.oldest.is_none_or(|x| t >= x)
    }
}

fn mtime(n: &Node) -> DateTime<Utc> {
    DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec).unwrap_or_default()
}

fn found(path: &[u8], n: &Node) -> Found {
    Found {
        path: String::from_utf8_lossy(path).into_owned(),
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
