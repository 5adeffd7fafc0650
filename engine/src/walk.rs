//! The parallel directory walker: lists the directories of a backup's
//! sources, several at once and ahead of need, and hands the listings out
//! strictly depth first in name order (the order a snapshot's trees are
//! built in). Each entry is stat'ed relative to its directory and matched
//! with the same name in the parent snapshot's tree, so the consumer can
//! tell unchanged files without another lookup.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::exclude::Excludes;
use crate::format::tree::{Node, NodeKind};
use crate::id::Id;
use crate::index::IndexReader;
use crate::metadata::{node_from_metadata, OwnerNames};
use crate::repo::Repository;

/// What the listers need from the walk's owner.
pub(crate) struct ListEnv<'a> {
    /// Where the parent snapshot's trees are read from.
    pub repo: &'a Repository,
    /// A directory never walked into: the repository itself, when it lies
    /// inside a source.
    pub skip_dir: Option<&'a Path>,
    /// True once the walk is to stop (cancel, or a failure elsewhere).
    pub stopping: &'a (dyn Fn() -> bool + Sync),
    pub excludes: &'a Excludes,
    /// Mount points, when `excludes.one_file_system` is set.
    pub mounts: &'a HashSet<PathBuf>,
}

/// Where a directory is in the walk: the source's index, then the index of
/// each directory on the way down among its parent's sorted entries. Keys
/// compare in exactly depth-first, name-sorted order (a directory's key is a
/// prefix of its descendants' keys), the order the walk consumes them.
pub(crate) type WalkKey = Vec<u32>;

/// Entries of listed but not yet consumed directories kept at most, beyond
/// the one directory the walk waits for: bounds the memory of looking ahead.
const LIST_AHEAD_ENTRIES: usize = 16 * 1024;

/// One entry of a directory listing.
pub(crate) struct Child {
    pub(crate) path: PathBuf,
    /// `None` when it could not be stat'ed (then `warnings` says why).
    pub(crate) node: Option<Node>,
    /// The same name in the parent snapshot's tree of this directory.
    pub(crate) prev: Option<Node>,
    pub(crate) warnings: Vec<String>,
    /// A directory to walk into: false for the repository itself.
    pub(crate) descend: bool,
    /// A mount point not crossed (one file system): kept as an empty
    /// directory.
    pub(crate) mount_point: bool,
}

/// A directory's entries sorted by name, each stat'ed.
#[derive(Default)]
pub(crate) struct Listing {
    pub(crate) children: Vec<Option<Child>>,
    /// Why it could not be read (fully).
    pub(crate) errors: Vec<String>,
    /// Entries left out by the excludes (not counting what is below them).
    pub(crate) excluded: u64,
}

struct DirJob {
    path: PathBuf,
    /// The directory's tree in the parent snapshot.
    prev_tree: Option<Id>,
    /// Its device number, to tell mount points below it.
    dev: u64,
}

#[derive(Default)]
struct PoolState {
    /// Directories to list, by key; listers take the smallest.
    todo: BTreeMap<WalkKey, DirJob>,
    /// Listed directories the walk has not taken yet.
    done: BTreeMap<WalkKey, Listing>,
    /// Entries in `done`.
    buffered: usize,
    stop: bool,
}

/// The directory listers: a queue of directories in walk order, a bounded
/// buffer of finished listings, and a condition variable for both sides.
#[derive(Default)]
pub(crate) struct DirPool {
    state: Mutex<PoolState>,
    changed: Condvar,
}

pub(crate) struct StopOnDrop<'a>(pub(crate) &'a DirPool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.state.lock() {
            s.stop = true;
        }
        self.0.changed.notify_all();
    }
}

impl DirPool {
    pub(crate) fn submit(&self, key: WalkKey, path: PathBuf, prev_tree: Option<Id>, dev: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.todo.insert(key, DirJob { path, prev_tree, dev });
        }
        self.changed.notify_all();
    }

    /// Waits for the listing of `key`, which must have been submitted
    /// (directly or as a subdirectory of a listed directory).
    pub(crate) fn take(&self, key: &WalkKey, env: &ListEnv<'_>) -> Result<Listing> {
        let mut s = crate::sync::lock(&self.state, "the directory lister's state")?;
        loop {
            if let Some(l) = s.done.remove(key) {
                s.buffered -= l.children.len();
                drop(s);
                self.changed.notify_all();
                return Ok(l);
            }
            if s.stop || (env.stopping)() {
                return Err(Error::Interrupted);
            }
            s = self
                .changed
                .wait_timeout(s, std::time::Duration::from_millis(100))
                .map_err(|_| Error::Bug {
                    what: "the directory lister's state",
                    message: "poisoned while waiting".into(),
                })?
                .0;
        }
    }

    /// A lister thread: takes the first directory in walk order, lists it,
    /// queues its subdirectories and hands the listing over. It waits while
    /// the buffer is full, unless its directory comes before everything
    /// buffered: the walk needs that one first, so it must never wait.
    pub(crate) fn work(&self, env: &ListEnv<'_>) {
        // Parent trees were all in the index before this backup started, so
        // one read transaction serves the whole walk.
        let reader = env.repo.index().and_then(|i| i.reader()).ok();
        let mut owners = OwnerNames::default();
        loop {
            let (key, job) = {
                let Ok(mut s) = self.state.lock() else { return };
                loop {
                    if s.stop {
                        return;
                    }
                    let runnable = match (s.todo.first_key_value(), s.done.first_key_value()) {
                        (Some(_), _) if s.buffered < LIST_AHEAD_ENTRIES => true,
                        (Some((next, _)), Some((buffered, _))) => next < buffered,
                        (Some(_), None) => true,
                        (None, _) => false,
                    };
                    if runnable {
                        if let Some(job) = s.todo.pop_first() {
                            break job;
                        }
                    }
                    s = match self.changed.wait(s) {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                }
            };
            let (listing, subdirs) = list_dir(env, reader.as_ref(), &mut owners, &key, &job);
            let Ok(mut s) = self.state.lock() else { return };
            for (k, j) in subdirs {
                s.todo.insert(k, j);
            }
            s.buffered += listing.children.len();
            s.done.insert(key, listing);
            drop(s);
            self.changed.notify_all();
        }
    }
}

/// Lists one directory: names sorted as bytes, each entry stat'ed relative
/// to the directory (no path walk per entry) with its xattrs, and matched
/// with the parent snapshot's tree. Returns the listing and the jobs of its
/// subdirectories.
fn list_dir(
    env: &ListEnv<'_>,
    reader: Option<&IndexReader>,
    owners: &mut OwnerNames,
    key: &WalkKey,
    job: &DirJob,
) -> (Listing, Vec<(WalkKey, DirJob)>) {
    let mut listing = Listing::default();
    let mut subdirs = Vec::new();
    if (env.stopping)() {
        return (listing, subdirs);
    }
    let rd = match std::fs::read_dir(&job.path) {
        Ok(rd) => rd,
        Err(e) => {
            listing.errors.push(e.to_string());
            return (listing, subdirs);
        }
    };
    let mut entries: Vec<(std::ffi::OsString, std::fs::DirEntry)> = Vec::new();
    for e in rd {
        match e {
            Ok(e) => entries.push((e.file_name(), e)),
            Err(e) => listing.errors.push(e.to_string()),
        }
    }
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let excludes = env.excludes;
    if let Some(marker) = excludes.marker(&job.path, entries.iter().map(|e| e.0.as_os_str())) {
        let marker = marker.to_os_string();
        let before = entries.len();
        entries.retain(|e| e.0 == marker);
        listing.excluded += (before - entries.len()) as u64;
    }
    let mut scratch = Vec::new();
    // A tree that cannot be read only costs change detection: its files
    // are read again.
    let prev_tree = match (job.prev_tree, reader) {
        (Some(id), Some(r)) => crate::change_cache::previous_tree(env.repo, r, &id, &job.path).ok(),
        _ => None,
    };
    listing.children.reserve(entries.len());
    for (name, e) in entries {
        // The key of a subdirectory is its index among the children kept.
        let i = listing.children.len();
        let path = job.path.join(&name);
        let name = name.as_bytes();
        if !excludes.patterns.is_empty() {
            // The type from readdir needs no stat (the file system reports
            // it in the directory entry), so an excluded entry costs none.
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if excludes.patterns.matches(path.as_os_str().as_bytes(), is_dir, &mut scratch) {
                listing.excluded += 1;
                continue;
            }
        }
        let mut warnings = Vec::new();
        let meta = match e.metadata() {
            Ok(m) => m,
            Err(err) => {
                warnings.push(err.to_string());
                let child = Child { path, node: None, prev: None, warnings, descend: false, mount_point: false };
                listing.children.push(Some(child));
                continue;
            }
        };
        if excludes.larger_than.is_some_and(|n| meta.is_file() && meta.len() > n) {
            listing.excluded += 1;
            continue;
        }
        let node = node_from_metadata(name, &path, &meta, owners, &mut warnings);
        let prev = prev_tree.as_ref().and_then(|t| t.find(name)).cloned();
        let mut descend = false;
        let mount_point = node.kind == NodeKind::Dir
            && excludes.one_file_system
            && (meta.dev() != job.dev || env.mounts.contains(&path));
        if mount_point {
            listing.excluded += 1;
        } else if node.kind == NodeKind::Dir && env.skip_dir != Some(path.as_path()) {
            descend = true;
            let mut sub = key.clone();
            sub.push(u32::try_from(i).unwrap_or(u32::MAX));
            let prev_tree = prev.as_ref().and_then(|p| p.subtree);
            subdirs.push((sub, DirJob { path: path.clone(), prev_tree, dev: meta.dev() }));
        }
        listing.children.push(Some(Child { path, node: Some(node), prev, warnings, descend, mount_point }));
    }
    (listing, subdirs)
}
