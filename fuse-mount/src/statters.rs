//! Which requesting tasks look at the entries they list: the callers whose
//! READDIRPLUS replies carry attributes (dirplus.rs).
//!
//! A copy (`tar`, `cp -a`, `rsync`) or a long listing (`ls -l`, `du`)
//! stats every name it lists, so attributes in the listing save a LOOKUP
//! per name, and the inodes they make let the push (push.rs) serve its
//! reads. `find` without tests on file metadata looks up only the
//! directories it enters (the listing's d_type tells it the rest), and for
//! it an inode per name is pure cost. So a task counts as one that stats
//! once it has looked up something other than a directory, or read a file;
//! until then (a walker's first directory) its listings carry names only.
//!
//! Tasks are told apart by the request's thread id (`fuse_in_header.pid`).
//! The last [`SLOTS`] such tasks are remembered; a new one replaces the
//! oldest. A number reused by a later task only gives that task attributes
//! it may not need.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

const SLOTS: usize = 16;

#[derive(Default)]
pub struct Statters {
    pids: [AtomicU32; SLOTS],
    next: AtomicUsize,
}

impl Statters {
    /// `pid` looked at an entry's metadata or data.
    pub fn mark(&self, pid: u32) {
        if pid == 0 || self.contains(pid) {
            return;
        }
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % SLOTS;
        self.pids[slot].store(pid, Ordering::Relaxed);
    }

    pub fn contains(&self, pid: u32) -> bool {
        pid != 0 && self.pids.iter().any(|p| p.load(Ordering::Relaxed) == pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_tasks_are_remembered() {
        let s = Statters::default();
        assert!(!s.contains(0) && !s.contains(7));
        s.mark(0);
        assert!(!s.contains(0), "pid 0 (the kernel's own requests) is nobody");
        s.mark(7);
        s.mark(7);
        assert!(s.contains(7));
        for pid in 100..100 + SLOTS as u32 - 1 {
            s.mark(pid);
        }
        assert!(s.contains(7), "16 tasks fit");
        s.mark(500);
        assert!(!s.contains(7) && s.contains(500), "the oldest makes room");
    }
}
