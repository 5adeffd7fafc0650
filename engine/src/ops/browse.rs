//! Reading a snapshot without restoring it: resolving `SNAPSHOT:PATH`
//! (`latest` is the newest snapshot that holds PATH), listing a directory
//! (ls) and writing one file's content (cat). Each takes the shared lock,
//! like restore and dump, so that a prune elsewhere cannot delete what is
//! being read; the front end only formats what it is handed.

use std::io::Write;

use super::tree_walk::{self, split_path, Located};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::repo::{Repository, Snapshot, SnapshotFilter};

/// The snapshot `spec` names (an id prefix, or `latest` narrowed by
/// `filter`) in which every one of `paths` exists, with what each path
/// names there.
///
/// For `latest` that is the newest matching snapshot holding all the paths,
/// so `latest:mysql/shop.sql` finds the dump even when a files-only backup
/// came after it. When no snapshot holds a path, the error names the
/// closest existing parent of it.
pub fn resolve(
    repo: &Repository,
    spec: &str,
    filter: &SnapshotFilter,
    paths: &[&str],
) -> Result<(Snapshot, Vec<Located>)> {
    for p in paths {
        split_path(p)?;
    }
    if spec != "latest" {
        let snap = repo.find_snapshot(spec, filter)?;
        let located = paths.iter().map(|p| tree_walk::locate(repo, &snap, p)).collect::<Result<Vec<_>>>()?;
        return Ok((snap, located));
    }
    let candidates: Vec<Snapshot> = repo.snapshots()?.into_iter().rev().filter(|s| filter.matches(&s.file)).collect();
    // The deepest existing parent of the first path found missing, over
    // every candidate: what the error names.
    let mut best_miss: Option<(usize, Error)> = None;
    for snap in &candidates {
        let mut located = Vec::with_capacity(paths.len());
        let mut missing = None;
        for p in paths {
            match tree_walk::locate(repo, snap, p) {
                Ok(l) => located.push(l),
                Err(e @ Error::PathNotInSnapshot { .. }) => {
                    missing = Some(e);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        match missing {
            None => return Ok((snap.clone(), located)),
            Some(e) => {
                let depth = match &e {
                    Error::PathNotInSnapshot { closest, .. } => split_path(closest).map(|c| c.len()).unwrap_or(0),
                    _ => 0,
                };
                if best_miss.as_ref().is_none_or(|(d, _)| depth > *d) {
                    best_miss = Some((depth, e));
                }
            }
        }
    }
    match best_miss {
        Some((_, Error::PathNotInSnapshot { path, closest, snapshot })) => {
            Err(Error::PathInNoSnapshot { path, closest, snapshot, searched: candidates.len() })
        }
        Some((_, e)) => Err(e),
        None => Err(Error::SnapshotNotFound(spec.to_string())),
    }
}

/// What [`ls`] lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct LsOptions {
    /// Everything below the path, not only its direct entries.
    pub recursive: bool,
}

/// Lists `path` of the snapshot `spec` names: the entries of a directory
/// (all below it with `recursive`), or the entry itself for anything else.
/// `emit(path, node)` gets each with its snapshot path (no leading `/`).
/// Returns the snapshot listed.
pub fn ls(
    repo: &Repository,
    spec: &str,
    filter: &SnapshotFilter,
    path: &str,
    opts: LsOptions,
    emit: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
) -> Result<Snapshot> {
    let _lock = repo.lock_shared("ls")?;
    let (snap, mut located) = resolve(repo, spec, filter, &[path])?;
    let base = split_path(path)?.join(&b'/');
    let tree = match located.pop() {
        Some(Located::Root(tree)) => tree,
        Some(Located::Node(n)) => match (n.kind, n.subtree) {
            (NodeKind::Dir, Some(tree)) => tree,
            _ => {
                emit(&base, &n)?;
                return Ok(snap);
            }
        },
        None => return Ok(snap),
    };
    if opts.recursive {
        tree_walk::walk(repo, &tree, &base, emit, &mut |_, _| Ok(()))?;
    } else {
        for n in repo.load_tree(&tree)?.nodes {
            let mut p = base.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(&n.name);
            emit(&p, &n)?;
        }
    }
    Ok(snap)
}

/// Writes the content of the file `path` of the snapshot `spec` names to
/// `out` and flushes it; returns the snapshot and the bytes written. A
/// failed write is an [`Error::Io`] on the path `<output>`.
pub fn cat(
    repo: &Repository,
    spec: &str,
    filter: &SnapshotFilter,
    path: &str,
    out: &mut dyn Write,
) -> Result<(Snapshot, u64)> {
    let _lock = repo.lock_shared("cat")?;
    let (snap, mut located) = resolve(repo, spec, filter, &[path])?;
    let node = match located.pop() {
        Some(Located::Node(n)) if n.kind.has_chunks() => n,
        _ => return Err(Error::WrongEntryKind { snapshot: snap.id.short(), path: path.to_string(), expected: "file" }),
    };
    let output = |e| Error::io("<output>", e);
    let mut written = 0u64;
    for id in &node.chunks {
        let data = repo.read_blob(id)?;
        out.write_all(&data).map_err(output)?;
        written += data.len() as u64;
    }
    out.flush().map_err(output)?;
    if written != node.size {
        return Err(Error::corrupt(
            "file",
            path,
            format!("its chunks hold {written} bytes, the snapshot records {}", node.size),
        ));
    }
    Ok((snap, written))
}
