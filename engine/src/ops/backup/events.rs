//! The ordered walk of a backup: consumes the directory listings of
//! [`crate::walk`] depth first in name order and turns them into the tree
//! builder's events and the file workers' jobs, in that order.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::changes::{entry, LinkGroup};
use super::sources::Source;
use super::tree_builder::synthetic_dir;
use super::{Change, Content, Ctx, Job, Slot, WalkEvent};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::metadata::{node_from_metadata, OwnerNames, Stat};
use crate::walk::{piece_key, subdir_key, DirBudget, DirPool, ListEnv, Listing, StopOnDrop, WalkKey};

/// Walks the sources in order and hands out work.
///
/// Directories are listed by a pool of threads ([`DirPool`], in [`crate::walk`]): each lists
/// one directory (readdir, names sorted, `statx` of every entry relative to
/// the directory, xattrs, the parent snapshot's tree of that directory) and
/// queues its subdirectories, so several directories are read at once and
/// ahead of need. This thread consumes the listings strictly depth first in
/// name order, which is the event order the tree builder requires, and does
/// everything that depends on that order (hardlink groups, change
/// decisions, file jobs).
pub(super) fn walker(
    ctx: &Ctx<'_>,
    sources: &[Source],
    stream_slots: &[Arc<Slot>],
    stream_paths: &[Vec<Vec<u8>>],
    jobs: Sender<Job>,
    events: Sender<WalkEvent>,
) -> Result<()> {
    let mut owners = OwnerNames::default();
    let mut out = WalkOut { links: HashMap::new(), jobs: &jobs, events: &events };
    let pool = DirPool::default();
    let stopping = || ctx.stopping();
    let dir_fds = DirBudget::from_rlimit();
    let env = ListEnv {
        repo: ctx.repo,
        skip_dirs: &ctx.own_dirs,
        stopping: &stopping,
        excludes: &ctx.excludes,
        mounts: &ctx.mounts,
        dir_fds: &dir_fds,
    };
    // Listing is syscalls and, on a cold cache, disk waits: more threads
    // than cores keep more requests in flight.
    let threads = std::thread::available_parallelism().map(|n| n.get() * 2).unwrap_or(4).clamp(2, 16);

    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..threads {
            scope.spawn(|| pool.work(&env));
        }
        // However this function returns, the listers stop.
        let _stop = StopOnDrop(&pool);
        for (si, src) in sources.iter().enumerate() {
            let parent_node = ctx.parent_node(&src.components)?;
            let meta = match std::fs::symlink_metadata(&src.disk) {
                Ok(m) => m,
                Err(e) => {
                    ctx.warn(&src.disk, &e.to_string());
                    out.send(WalkEvent::SourceDone)?;
                    continue;
                }
            };
            let name = src.components.last().cloned().unwrap_or_default();
            let mut warnings = Vec::new();
            let node = node_from_metadata(&name, &src.disk, None, &Stat::from(&meta), &mut owners, &mut warnings);
            for w in warnings {
                ctx.warn(&src.disk, &w);
            }
            if node.kind != NodeKind::Dir {
                entry(ctx, src, node, parent_node, &src.disk, None, &mut out)?;
                out.send(WalkEvent::SourceDone)?;
                continue;
            }
            if ctx.own_dirs.contains(&(meta.dev(), meta.ino())) {
                ctx.progress.note(&src.disk, OWN_DIR);
                out.send(WalkEvent::SourceDone)?;
                continue;
            }
            let dir = vec![si as u64];
            let prev_tree = parent_node.and_then(|p| p.subtree);
            pool.submit(&dir, src.disk.clone(), prev_tree, meta.dev());
            out.send(WalkEvent::EnterDir(with_previous(node, prev_tree), src.disk.clone()))?;
            let first = pool.take(&piece_key(&dir, 0), &env)?;
            report_listing(ctx, &src.disk, &first);
            // Open directories, innermost last: key, the piece of its
            // listing being walked, next child in it.
            let mut stack: Vec<(WalkKey, Listing, usize)> = vec![(dir, first, 0)];
            while let Some((dir, listing, next)) = stack.last_mut() {
                if ctx.stopping() {
                    return Err(Error::Interrupted);
                }
                let i = *next;
                let Some(slot) = listing.children.get_mut(i) else {
                    if listing.more {
                        let key = piece_key(dir, listing.first + listing.children.len() as u64);
                        let piece = pool.take(&key, &env)?;
                        // Read errors come with a directory's first piece;
                        // later ones only count what was excluded.
                        report_listing(ctx, &src.disk, &piece);
                        (*listing, *next) = (piece, 0);
                        continue;
                    }
                    out.send(WalkEvent::LeaveDir)?;
                    stack.pop();
                    continue;
                };
                *next += 1;
                let Some(child) = slot.take() else { continue };
                for w in &child.warnings {
                    ctx.warn(&child.path, w);
                }
                let Some(node) = child.node else { continue };
                if node.kind == NodeKind::Dir {
                    let node = with_previous(node, child.prev.and_then(|p| p.subtree));
                    if child.mount_point {
                        out.send(WalkEvent::EnterDir(node, child.path.clone()))?;
                        out.send(WalkEvent::LeaveDir)?;
                        continue;
                    }
                    if !child.descend {
                        ctx.progress.note(&child.path, OWN_DIR);
                        continue;
                    }
                    let sub = subdir_key(dir, listing.first + i as u64);
                    out.send(WalkEvent::EnterDir(node, child.path.clone()))?;
                    let l = pool.take(&piece_key(&sub, 0), &env)?;
                    report_listing(ctx, &child.path, &l);
                    stack.push((sub, l, 0));
                } else {
                    entry(ctx, src, node, child.prev.map(|p| *p), &child.path, child.dir, &mut out)?;
                }
            }
            out.send(WalkEvent::SourceDone)?;
        }
        // The stream threads started with the pipeline; here each stream
        // only takes its place after the file sources.
        for (slot, comps) in stream_slots.iter().zip(stream_paths) {
            let mut node = synthetic_dir(comps.last().cloned().unwrap_or_default());
            node.kind = NodeKind::File;
            node.mode = 0o100644;
            node.user = owners.user(node.uid);
            node.group = owners.group(node.gid);
            let slot = slot.clone();
            out.send(WalkEvent::Entry(node, Content::Pending(slot), Change::New))?;
            out.send(WalkEvent::SourceDone)?;
        }
        Ok(())
    })
}

const OWN_DIR: &str = "left out: the repository being written to, or its cache";

/// A directory's node for [`WalkEvent::EnterDir`]: its `subtree` is the
/// parent snapshot's tree of it until the tree builder stores the new one
/// (so that the builder can tell an unchanged directory without another
/// field in every event).
fn with_previous(mut node: Node, prev_tree: Option<crate::id::Id>) -> Node {
    node.subtree = prev_tree;
    node
}

/// Warnings of a directory that could not be (fully) listed.
fn report_listing(ctx: &Ctx<'_>, dir: &Path, listing: &Listing) {
    ctx.excluded.fetch_add(listing.excluded, Ordering::Relaxed);
    for e in &listing.errors {
        ctx.warn(dir, e);
    }
}

/// Where the ordered walk puts its results.
pub(super) struct WalkOut<'a> {
    /// (dev, ino) of multiply linked files -> (snapshot path, content)
    pub(super) links: HashMap<(u64, u64), LinkGroup>,
    pub(super) jobs: &'a Sender<Job>,
    pub(super) events: &'a Sender<WalkEvent>,
}

impl WalkOut<'_> {
    fn send(&self, e: WalkEvent) -> Result<()> {
        self.events.send(e).map_err(|_| Error::Interrupted)
    }
}
