//! Small files' data pushed into the kernel's page cache ahead of the
//! copier's READ (FUSE_NOTIFY_STORE), for files the kernel has built an
//! inode for already: a copy that lists (and looks up) a tree before it
//! reads the files, as `rsync` does, or one whose listings carried the
//! files' attributes (READDIRPLUS, dirplus.rs), as `tar` and `cp -a` get
//! them, then reads them without a READ each.
//!
//! When the first file of a directory is read (which starts the directory
//! readahead, `arc_engine::vfs`), the pusher thread goes through that
//! directory's small files and writes each one the kernel holds an inode
//! for into that inode's page cache, as the readahead loads them. With
//! no-open (fs.rs, `open`) the kernel keeps a file's page cache across
//! opens, so the copier's read(2) finds the pages there. Files the kernel
//! does not hold an inode for are left alone: it accepts data only for an
//! inode it has built.
//!
//! Tried and not kept (BENCHMARKS.md): pushing each file right after its
//! LOOKUP, for `tar` and `cp -a`, which read a file as soon as they have
//! looked it up. The kernel builds the inode in the looking-up task after
//! the reply, and that task reaches its READ before a second thread's push
//! lands (on the 2-vCPU test VM under load, 23k pushes saved 100-650 of
//! 25k READs); sending the reply from the pushing thread saved 10-15 % of
//! the READs but made every such LOOKUP wait for a thread switch, which
//! cost more.
//!
//! The stores are never sent from the dispatch thread: a store waits for
//! pages a READ in flight has locked, and that READ is answered by the
//! dispatch thread.
//!
//! Bounded: pages pushed are ordinary page cache (reclaimed under memory
//! pressure like any other), at most [`DIR_BUDGET`] bytes of files per
//! directory (the readahead's batch), and this side holds at most
//! [`QUEUE`] directories waiting (more are not pushed, their READs are
//! answered as before) and one file's data at a time.
//!
//! fuser's `Notifier::store` is not used: it reports the kernel's ENOENT
//! (no such inode) as success, and the counts must tell the two apart.

use std::io::IoSlice;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use arc_engine::vfs::{Entry, Kind, OpenFile, Vfs, WorkGuard};
use lru::LruCache;

use crate::fs::FilesByInode;
use crate::inode::{child_key, Inode, InodeTable};
use crate::stats::{Op, RequestCounts};

/// Directories waiting for the pusher; more are not pushed.
const QUEUE: usize = 16;
/// Directories pushed already (not pushed again while remembered).
const REMEMBERED: usize = 1024;
/// Files up to this size are pushed: those the directory readahead loads
/// (larger ones are followed by the sequential readahead as they are read).
const MAX_FILE: u64 = 1 << 20;
/// Bytes pushed per directory at most (the directory readahead's batch).
const DIR_BUDGET: u64 = 8 << 20;
/// Files looked at per directory at most.
const DIR_FILES: usize = 4096;

/// `FUSE_NOTIFY_STORE` in `fuse_out_header.error` (include/uapi/linux/fuse.h).
const FUSE_NOTIFY_STORE: i32 = 4;

/// A directory whose first file (`reading`) is being read.
pub struct DirPush {
    pub dir: Inode,
    /// The file whose READ started this: the kernel is reading it itself.
    pub reading: u64,
    /// Counts as the mount's background work while queued (spin.rs).
    pub work: WorkGuard,
}

pub struct Pusher {
    tx: Option<crossbeam_channel::Sender<DirPush>>,
    thread: Option<JoinHandle<()>>,
}

impl Pusher {
    pub fn start(
        vfs: Arc<Vfs>,
        inodes: Arc<InodeTable>,
        read: Arc<FilesByInode>,
        counts: Option<Arc<RequestCounts>>,
        fd: Arc<OnceLock<OwnedFd>>,
    ) -> Pusher {
        let (tx, rx) = crossbeam_channel::bounded::<DirPush>(QUEUE);
        let thread_fd = fd;
        let thread = std::thread::Builder::new()
            .name("arc-push".into())
            .spawn(move || {
                let mut done = LruCache::new(NonZeroUsize::new(REMEMBERED).unwrap_or(NonZeroUsize::MIN));
                for DirPush { dir, reading, work } in rx.iter() {
                    if let Some(fd) = thread_fd.get() {
                        if done.put(dir.ino, ()).is_none() {
                            let ctx = Ctx { fd, vfs: &vfs, inodes: &inodes, read: &read, counts: counts.as_deref() };
                            push_dir(&ctx, &dir, reading);
                        }
                    }
                    drop(work);
                }
            })
            .ok();
        Pusher { tx: thread.as_ref().map(|_| tx), thread }
    }

    /// Queues a directory unless the queue is full.
    pub fn send(&self, job: DirPush) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(job);
        }
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the pusher thread works with.
struct Ctx<'a> {
    fd: &'a OwnedFd,
    vfs: &'a Vfs,
    inodes: &'a InodeTable,
    /// Files the kernel has READ (their pages are there already).
    read: &'a FilesByInode,
    counts: Option<&'a RequestCounts>,
}

/// Pushes the small files of `dir` (but `reading`) that the kernel holds
/// inodes for and has not read, as far as the directory readahead covers
/// them.
fn push_dir(ctx: &Ctx<'_>, dir: &Inode, reading: u64) {
    let Ctx { fd, vfs, inodes, read, counts } = *ctx;
    let Ok(listing) = vfs.read_dir(&dir.entry) else { return };
    let mut files: Vec<(u64, Entry)> = Vec::new();
    let _ = vfs.list_from(&listing, 0, |item| {
        if files.len() >= DIR_FILES || !vfs.read_ahead_covers(&item.entry) {
            return true;
        }
        // Hardlinks show as another file's inode: left to their READ.
        if item.kind == Kind::File && item.hardlink_target.is_none() {
            let ino = inodes.peek(dir, child_key(item.name, &item.entry), &item.entry);
            if ino != reading {
                files.push((ino, item.entry));
            }
        }
        false
    });
    let mut bytes = 0u64;
    for (ino, entry) in files {
        if bytes >= DIR_BUDGET {
            break;
        }
        // Held while pushing, so the number cannot come to stand for
        // another entry meanwhile; not in the table means the kernel does
        // not hold it.
        if read.contains(ino, &entry) || !inodes.hold(ino, &entry) {
            continue;
        }
        let pushed = vfs.open(&entry).ok().and_then(|f| {
            bytes += f.size();
            push_file(fd, vfs, ino, &f)
        });
        inodes.forget(ino, 1);
        if let (Some(c), Some(stored)) = (counts, pushed) {
            c.add(if stored { Op::Pushed } else { Op::PushMissed });
        }
    }
}

/// Writes a small file's whole content into the kernel's cache of inode
/// `ino`: `None` if the file is not one to push, else whether the kernel
/// took it.
fn push_file(fd: &OwnedFd, vfs: &Vfs, ino: u64, file: &OpenFile) -> Option<bool> {
    let size = file.size();
    if size == 0 || size > MAX_FILE {
        return None;
    }
    // Waits for the readahead's load of it, if that is under way.
    let data = vfs.read_at(file, 0, size as u32).ok()?;
    Some(data.len() as u64 == size && store(fd, ino, 0, &data).is_ok())
}

/// The message header and `fuse_notify_store_out`, before the data.
fn store_header(ino: u64, offset: u64, len: u32) -> [u8; 40] {
    let mut h = [0u8; 40];
    // fuse_out_header: len, error (the notification code), unique (0).
    h[0..4].copy_from_slice(&(40 + len).to_le_bytes());
    h[4..8].copy_from_slice(&FUSE_NOTIFY_STORE.to_le_bytes());
    // fuse_notify_store_out: nodeid, offset, size, padding.
    h[16..24].copy_from_slice(&ino.to_le_bytes());
    h[24..32].copy_from_slice(&offset.to_le_bytes());
    h[32..36].copy_from_slice(&len.to_le_bytes());
    h
}

fn store(fd: &OwnedFd, ino: u64, offset: u64, data: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(data.len()).map_err(std::io::Error::other)?;
    let header = store_header(ino, offset, len);
    let n = nix::sys::uio::writev(fd.as_fd(), &[IoSlice::new(&header), IoSlice::new(data)])?;
    // /dev/fuse takes a message whole or not at all.
    debug_assert_eq!(n, header.len() + data.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_message_is_the_kernels_layout() {
        // The bytes fuser's own test expects for the same store
        // (ll/notify.rs), so both agree with include/uapi/linux/fuse.h.
        let mut msg = store_header(0x42, 50, 4).to_vec();
        msg.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let expected = vec![
            0x2c, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x42, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x32, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef,
        ];
        assert_eq!(msg, expected);
    }
}
