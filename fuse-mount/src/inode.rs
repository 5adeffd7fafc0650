//! Inode numbers for VFS entries, stable for the life of the mount.
//!
//! An inode is a path, not a tree position: the same directory blob can
//! appear at several places (unchanged directories are shared between
//! snapshots, and the same snapshot is reachable from `snapshots/`,
//! `time/`, `tags/`...), and the kernel does not allow one directory inode
//! to have two parents. So the number of a child is derived from its
//! parent's number and its position there (its index in the parent's tree,
//! or its name for the virtual directories): a hash, probed on the rare
//! collision. Because the number is a function of the path, an inode the
//! kernel has forgotten can be dropped from the table and gets the same
//! number when it is looked up again; memory is bounded by what the
//! kernel keeps cached, not by what was ever visited.
//!
//! Within a snapshot directory the numbers ascend with the entries'
//! positions: each directory's children get a block of numbers (placed by
//! a hash of the directory's number) and the entry at position `i` the
//! block's `i`-th. `cp` reads a directory in inode-number order (gnulib's
//! savedir sorts by `d_ino`, which speeds up disks), so with hashed numbers
//! it read files and subdirectories in random order; in position order it
//! walks the snapshot as `tar` and `rsync` do, in the order the backup
//! wrote the files into packs, which is the order the mount's readahead
//! loads them in (`arc_engine::vfs`, window.rs).
//!
//! Hardlinks are the exception that needs resolving: a hardlink entry is
//! given the inode of the first file of its group (see `fs.rs`), so both
//! paths show one inode number and the recorded link count.
//!
//! The table is sharded so parallel lookups rarely meet on one lock.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

use arc_engine::vfs::Entry;

pub const ROOT: u64 = 1;
/// Numbers below this are never handed out by hashing.
const FIRST_HASHED: u64 = 1 << 16;
/// Entries at positions below this get a number in their directory's
/// block (larger directories' later entries are hashed like the rest).
const BLOCK: u64 = 1 << 20;
const SHARDS: usize = 64;

/// What an inode number stands for.
#[derive(Debug, Clone)]
pub struct Inode {
    pub ino: u64,
    pub parent: u64,
    pub entry: Entry,
    /// The inode of the snapshot root this entry lies in (0 above the
    /// snapshots); hardlink targets are resolved from there.
    pub snap_root: u64,
}

struct Slot {
    inode: Inode,
    key: u64,
    /// Kernel references (lookups minus forgets).
    nlookup: u64,
    /// Kept even when forgotten: the root, and entries another key had to
    /// probe past (removing them would change where that key is found).
    pinned: bool,
}

pub struct InodeTable {
    shards: Vec<Mutex<HashMap<u64, Slot>>>,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn candidate(h: u64) -> u64 {
    FIRST_HASHED + h % ((1u64 << 63) - FIRST_HASHED)
}

/// The numbers a child may have, in the order they are tried: for an
/// entry of a snapshot directory (a position below [`BLOCK`]) first its
/// place in its parent's block, then hashes of parent and key, probed on
/// a collision.
fn candidates(parent: u64, key: u64) -> impl Iterator<Item = u64> {
    let ordered = (key < BLOCK).then(|| {
        // A multiple of BLOCK below 2^63, so the block never reaches the
        // numbers with the top bit set, nor those below FIRST_HASHED.
        let block = candidate(splitmix(parent ^ 0x5851_F42D_4C95_7F2D)) & !(BLOCK - 1);
        block.max(BLOCK) + key
    });
    let mut h = splitmix(parent.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ splitmix(key));
    let hashed = (0u64..).map(move |round| {
        let ino = candidate(h);
        h = splitmix(h ^ round);
        ino
    });
    ordered.into_iter().chain(hashed)
}

/// The key of a child within its parent: its tree index, or for virtual
/// entries a hash of its name and what it denotes (a name that comes to
/// mean another snapshot gets another inode).
pub fn child_key(name: &[u8], entry: &Entry) -> u64 {
    match entry {
        Entry::Node { index, .. } => u64::from(*index),
        _ => {
            let mut h = std::hash::DefaultHasher::new();
            name.hash(&mut h);
            entry.hash(&mut h);
            h.finish() | (1 << 63)
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is one map operation; a panic elsewhere cannot
    // leave a shard half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for InodeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl InodeTable {
    pub fn new() -> InodeTable {
        let t = InodeTable { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() };
        let root = Inode { ino: ROOT, parent: ROOT, entry: Entry::Root, snap_root: 0 };
        lock(t.shard(ROOT)).insert(ROOT, Slot { inode: root, key: 0, nlookup: 1, pinned: true });
        t
    }

    fn shard(&self, ino: u64) -> &Mutex<HashMap<u64, Slot>> {
        &self.shards[(splitmix(ino) as usize) % SHARDS]
    }

    pub fn get(&self, ino: u64) -> Option<Inode> {
        lock(self.shard(ino)).get(&ino).map(|s| s.inode.clone())
    }

    /// The inode of `entry` as child `key` of `parent`, registering it if
    /// needed; `count` adds one kernel reference (every reply that hands an
    /// inode to the kernel must count exactly once).
    pub fn child(&self, parent: &Inode, key: u64, entry: Entry, count: bool) -> u64 {
        for ino in candidates(parent.ino, key) {
            let mut shard = lock(self.shard(ino));
            match shard.get_mut(&ino) {
                None => {
                    let snap_root = if matches!(entry, Entry::Snapshot(_)) { ino } else { parent.snap_root };
                    let inode = Inode { ino, parent: parent.ino, entry, snap_root };
                    shard.insert(ino, Slot { inode, key, nlookup: u64::from(count), pinned: false });
                    return ino;
                }
                Some(s) if s.inode.parent == parent.ino && s.key == key && s.inode.entry == entry => {
                    s.nlookup += u64::from(count);
                    return ino;
                }
                Some(s) => s.pinned = true,
            }
        }
        unreachable!("the probe sequence is endless")
    }

    /// The number `child` would return, without registering anything (for
    /// plain readdir, whose entries the kernel does not keep).
    pub fn peek(&self, parent: &Inode, key: u64, entry: &Entry) -> u64 {
        for ino in candidates(parent.ino, key) {
            match lock(self.shard(ino)).get(&ino) {
                None => return ino,
                Some(s) if s.inode.parent == parent.ino && s.key == key && s.inode.entry == *entry => return ino,
                Some(_) => {}
            }
        }
        unreachable!("the probe sequence is endless")
    }

    /// One more reference to `ino` while it stands for `entry` (true), so
    /// that the number keeps standing for it until the matching
    /// [`InodeTable::forget`], whatever the kernel forgets meanwhile.
    pub fn hold(&self, ino: u64, entry: &Entry) -> bool {
        match lock(self.shard(ino)).get_mut(&ino) {
            Some(s) if s.inode.entry == *entry => {
                s.nlookup += 1;
                true
            }
            _ => false,
        }
    }

    /// The kernel dropped `n` references.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut shard = lock(self.shard(ino));
        if let Some(s) = shard.get_mut(&ino) {
            s.nlookup = s.nlookup.saturating_sub(n);
            if s.nlookup == 0 && !s.pinned {
                shard.remove(&ino);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_engine::Id;

    fn node(i: u32) -> Entry {
        Entry::Node { tree: Id([7; 32]), index: i }
    }

    #[test]
    fn numbers_are_stable_across_forget() {
        let t = InodeTable::new();
        let root = t.get(ROOT).unwrap();
        let a = t.child(&root, 0, node(0), true);
        let b = t.child(&root, 1, node(1), true);
        assert_ne!(a, b);
        assert_eq!(t.child(&root, 0, node(0), true), a);
        let a_inode = t.get(a).unwrap();
        let c = t.child(&a_inode, 0, node(0), true);
        assert_ne!(c, a, "same tree position under another parent is another inode");
        assert_eq!(t.peek(&root, 1, &node(1)), b);
        t.forget(a, 2);
        assert!(t.get(a).is_none());
        assert_eq!(t.peek(&root, 0, &node(0)), a);
        assert_eq!(t.child(&root, 0, node(0), true), a);
        assert!(t.get(c).is_some());
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn a_held_number_outlives_the_kernels_forget() {
        let t = InodeTable::new();
        let root = t.get(ROOT).unwrap();
        let a = t.child(&root, 0, node(0), true);
        assert!(!t.hold(a, &node(1)), "held only for the entry it stands for");
        assert!(t.hold(a, &node(0)));
        t.forget(a, 1);
        assert!(t.get(a).is_some(), "the hold keeps it");
        t.forget(a, 1);
        assert!(t.get(a).is_none());
    }

    #[test]
    fn a_directorys_entries_are_numbered_in_position_order() {
        let t = InodeTable::new();
        let root = t.get(ROOT).unwrap();
        let dir = t.get(t.child(&root, 3, node(3), true)).unwrap();
        let other = t.get(t.child(&root, 4, node(4), true)).unwrap();
        let numbers: Vec<u64> = (0..2000).map(|i| t.child(&dir, i, node(i as u32), true)).collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "numbers do not ascend with positions");
        assert!(numbers.iter().all(|n| (FIRST_HASHED..1 << 63).contains(n)));
        let others: Vec<u64> = (0..2000).map(|i| t.peek(&other, i, &node(i as u32))).collect();
        assert!(others.iter().all(|n| !numbers.contains(n)), "two directories share numbers");
        // Past the block: hashed, still unique and stable.
        let far = t.child(&dir, BLOCK + 5, node(7), true);
        assert!(!numbers.contains(&far));
        assert_eq!(t.peek(&dir, BLOCK + 5, &node(7)), far);
    }

    #[test]
    fn collisions_probe_and_pin() {
        let t = InodeTable::new();
        let root = t.get(ROOT).unwrap();
        let a = t.child(&root, 5, node(5), true);
        // Occupy `a`'s slot with another key, as a hash collision would.
        let other = Inode { ino: 99, parent: 99, entry: node(9), snap_root: 0 };
        {
            let mut shard = lock(t.shard(a));
            let s = shard.get_mut(&a).unwrap();
            s.inode.parent = other.parent;
        }
        let moved = t.child(&root, 5, node(5), true);
        assert_ne!(moved, a);
        t.forget(a, 1);
        assert!(t.get(a).is_some(), "a slot that was probed past stays");
        assert_eq!(t.child(&root, 5, node(5), false), moved);
    }
}
