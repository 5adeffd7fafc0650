//! Kernel requests counted by opcode, when asked for
//! ([`crate::MountOptions::count_requests`]).
//!
//! Round trips per file are what copying out of the mount pays for, and
//! unlike times they are deterministic: counting them is how changes to
//! the request pattern (no-open, caching, READDIRPLUS) are measured
//! (BENCHMARKS.md). Off by default; when on, a request costs one relaxed
//! atomic add.

use std::sync::atomic::{AtomicU64, Ordering};

/// The requests the mount answers (and the few it refuses once so the
/// kernel stops sending them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lookup,
    /// Counted per inode: fuser hands batched forgets over one by one.
    Forget,
    Getattr,
    Readlink,
    Open,
    Read,
    /// Of the reads, those handed to a read worker (data not in memory).
    ReadQueued,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Statfs,
    Getxattr,
    Listxattr,
    Access,
    /// Anything that would change the file system (answered EROFS).
    Write,
    /// Not requests: small files whose data was pushed into the kernel's
    /// page cache (push.rs), and pushes the kernel did not take (the inode
    /// was gone).
    Pushed,
    PushMissed,
    /// Not requests: entries that READDIRPLUS replies carried with
    /// attributes (dirplus.rs), each an inode the kernel built.
    PlusAttrs,
}

const ALL: [Op; 22] = [
    Op::Lookup,
    Op::Forget,
    Op::Getattr,
    Op::Readlink,
    Op::Open,
    Op::Read,
    Op::ReadQueued,
    Op::Flush,
    Op::Release,
    Op::Fsync,
    Op::Opendir,
    Op::Readdir,
    Op::Readdirplus,
    Op::Releasedir,
    Op::Statfs,
    Op::Getxattr,
    Op::Listxattr,
    Op::Access,
    Op::Write,
    Op::Pushed,
    Op::PushMissed,
    Op::PlusAttrs,
];

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Forget => "forget",
            Op::Getattr => "getattr",
            Op::Readlink => "readlink",
            Op::Open => "open",
            Op::Read => "read",
            Op::ReadQueued => "read-queued",
            Op::Flush => "flush",
            Op::Release => "release",
            Op::Fsync => "fsync",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Readdirplus => "readdirplus",
            Op::Releasedir => "releasedir",
            Op::Statfs => "statfs",
            Op::Getxattr => "getxattr",
            Op::Listxattr => "listxattr",
            Op::Access => "access",
            Op::Write => "write-like",
            Op::Pushed => "pushed",
            Op::PushMissed => "push-missed",
            Op::PlusAttrs => "listed-with-attrs",
        }
    }
}

/// Requests received so far, by opcode.
#[derive(Default)]
pub struct RequestCounts {
    counts: [AtomicU64; ALL.len()],
}

impl RequestCounts {
    pub fn add(&self, op: Op) {
        self.add_n(op, 1);
    }

    pub fn add_n(&self, op: Op, n: u64) {
        self.counts[op as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Requests received (read-queued is a subset of read, not another
    /// request, nor are pushes or entries listed with attributes; forgets
    /// are counted per inode).
    pub fn total(&self) -> u64 {
        ALL.iter()
            .filter(|&&op| !matches!(op, Op::ReadQueued | Op::Pushed | Op::PushMissed | Op::PlusAttrs))
            .map(|&op| self.counts[op as usize].load(Ordering::Relaxed))
            .sum()
    }

    /// Nonzero counts, in opcode order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        ALL.iter()
            .map(|&op| (op.name(), self.counts[op as usize].load(Ordering::Relaxed)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_opcode() {
        let c = RequestCounts::default();
        for (i, op) in ALL.iter().enumerate() {
            assert_eq!(*op as usize, i, "ALL is in declaration order");
        }
        c.add(Op::Lookup);
        c.add(Op::Lookup);
        c.add(Op::Read);
        c.add(Op::ReadQueued);
        c.add(Op::Pushed);
        assert_eq!(c.snapshot(), vec![("lookup", 2), ("read", 1), ("read-queued", 1), ("pushed", 1)]);
        assert_eq!(c.total(), 3);
    }
}
