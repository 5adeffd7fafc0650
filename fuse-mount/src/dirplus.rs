//! READDIRPLUS replies, written by hand.
//!
//! A READDIRPLUS entry either carries a node id and attributes, and the
//! kernel then builds the entry's inode and dentry while listing (so a
//! copier's LOOKUP of it is answered from the dentry cache), or carries
//! node id 0, and the kernel only passes the name on, as for READDIR
//! (fs/fuse/readdir.c, `fuse_direntplus_link`). The mount mixes both: a
//! walker that never looks at files (`find`) must not pay for an inode per
//! name (BENCHMARKS.md: 20-60 % slower when every entry had attributes).
//!
//! fuser 0.18 cannot write such a reply: its `ReplyDirectoryPlus` takes the
//! node id and the entry's `d_ino` both from the attributes' inode number,
//! so an entry without attributes would show inode 0 to readdir(3), which
//! glibc and tools take for a deleted entry. So the reply is written here,
//! straight to the session's /dev/fuse descriptor (as push.rs writes its
//! stores), and fuser's reply object is forgotten instead of sent: see
//! [`PlusReply::send`].
//!
//! Layout (include/uapi/linux/fuse.h): per entry a `fuse_direntplus`
//! (`fuse_entry_out`, 128 bytes, then `fuse_dirent`, 24 bytes), the name,
//! and zeros to the next multiple of 8.

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, ReplyDirectoryPlus};

const ENTRY_OUT: usize = 128;
const DIRENT: usize = 24;
/// What every kernel offers at least for a listing reply (older kernels
/// exactly this; newer ones up to the reader's getdents buffer).
const PAGE: usize = 4096;

/// One READDIRPLUS reply being filled.
pub struct PlusReply {
    buf: Vec<u8>,
    cap: usize,
}

/// What an entry shows with attributes: its node id is `attr.ino`.
pub struct Attrs<'a> {
    pub attr: &'a FileAttr,
    pub ttl: Duration,
}

impl Default for PlusReply {
    fn default() -> Self {
        PlusReply::new()
    }
}

impl PlusReply {
    pub fn new() -> PlusReply {
        PlusReply { buf: Vec::with_capacity(PAGE), cap: PAGE }
    }

    fn entry_len(name: &[u8]) -> usize {
        (ENTRY_OUT + DIRENT + name.len()).next_multiple_of(8)
    }

    /// Whether an entry named `name` still fits.
    pub fn fits(&self, name: &[u8]) -> bool {
        self.buf.len() + Self::entry_len(name) <= self.cap
    }

    /// Lets the reply grow to what the kernel asked for (`reply`'s size),
    /// once one page is full; false if it may not grow.
    pub fn grow_to_request(&mut self, reply: &ReplyDirectoryPlus) -> bool {
        match requested_size(reply) {
            Some(n) if n > self.cap => {
                self.cap = n;
                true
            }
            _ => false,
        }
    }

    /// Adds an entry (the caller checked [`PlusReply::fits`]): `ino` is what
    /// readdir(3) shows as `d_ino`, `off` the offset of the next entry.
    pub fn push(&mut self, ino: u64, off: u64, kind: FileType, name: &[u8], attrs: Option<Attrs<'_>>) {
        let start = self.buf.len();
        match attrs {
            Some(Attrs { attr, ttl }) => {
                // fuse_entry_out: nodeid, generation, entry_valid,
                // attr_valid, entry_valid_nsec, attr_valid_nsec, attr.
                self.u64(attr.ino.0);
                self.u64(0);
                self.u64(ttl.as_secs());
                self.u64(ttl.as_secs());
                self.u32(ttl.subsec_nanos());
                self.u32(ttl.subsec_nanos());
                self.attr(attr);
            }
            // Node id 0: no inode, only the name.
            None => self.buf.resize(start + ENTRY_OUT, 0),
        }
        // fuse_dirent: ino, off, namelen, type.
        self.u64(ino);
        self.u64(off);
        self.u32(name.len() as u32);
        self.u32(mode_bits(kind) >> 12);
        self.buf.extend_from_slice(name);
        self.buf.resize(start + Self::entry_len(name), 0);
    }

    /// `fuse_attr` (the Linux layout: no crtime, flags last).
    fn attr(&mut self, a: &FileAttr) {
        let (at, atn) = seconds(a.atime);
        let (mt, mtn) = seconds(a.mtime);
        let (ct, ctn) = seconds(a.ctime);
        self.u64(a.ino.0);
        self.u64(a.size);
        self.u64(a.blocks);
        for t in [at, mt, ct] {
            self.buf.extend_from_slice(&t.to_le_bytes());
        }
        for n in [atn, mtn, ctn] {
            self.u32(n);
        }
        self.u32(mode_bits(a.kind) | u32::from(a.perm));
        for v in [a.nlink, a.uid, a.gid, a.rdev, a.blksize, 0] {
            self.u32(v);
        }
    }

    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Sends the reply to request `unique` on `fd`, in place of fuser's
    /// `reply`. fuser's reply object sends EIO when dropped unanswered, so
    /// it is forgotten: its buffer is empty and inline (nothing on the
    /// heap); what stays behind is one reference count of fuser's shared
    /// /dev/fuse handle, which is then closed at exit, not at unmount.
    /// If the write fails (the requester was killed meanwhile), fuser's
    /// reply is sent after all, as an error, and the error returned.
    pub fn send(self, fd: &OwnedFd, unique: u64, reply: ReplyDirectoryPlus) -> std::io::Result<()> {
        let r = write_reply(fd, unique, &self.buf);
        match &r {
            Ok(()) => std::mem::forget(reply),
            Err(_) => reply.error(fuser::Errno::EIO),
        }
        r
    }

    #[cfg(test)]
    fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// `fuse_out_header` (length, error 0, unique) and the body, in one write:
/// /dev/fuse takes a reply whole or not at all.
fn write_reply(fd: &OwnedFd, unique: u64, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(16 + body.len()).map_err(std::io::Error::other)?;
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[8..16].copy_from_slice(&unique.to_le_bytes());
    nix::sys::uio::writev(fd.as_fd(), &[IoSlice::new(&header), IoSlice::new(body)])?;
    Ok(())
}

/// The size the kernel asked for. fuser keeps it private; it shows only in
/// the reply's Debug output (`max_size: N`). Asked only when a reply
/// outgrows one page (a Debug of fuser's /dev/fuse handle costs two system
/// calls); if fuser's output changes, replies stay one page long, which
/// every kernel accepts.
fn requested_size(reply: &ReplyDirectoryPlus) -> Option<usize> {
    size_in_debug(&format!("{reply:?}"))
}

fn size_in_debug(shown: &str) -> Option<usize> {
    let at = shown.find("max_size: ")? + "max_size: ".len();
    let digits: String = shown[at..].chars().take_while(char::is_ascii_digit).collect();
    // A reply's size is bounded by the kernel's largest request (a few MiB).
    digits.parse().ok().filter(|&n| (PAGE..=(16 << 20)).contains(&n))
}

fn mode_bits(kind: FileType) -> u32 {
    match kind {
        FileType::NamedPipe => libc::S_IFIFO,
        FileType::CharDevice => libc::S_IFCHR,
        FileType::BlockDevice => libc::S_IFBLK,
        FileType::Directory => libc::S_IFDIR,
        FileType::RegularFile => libc::S_IFREG,
        FileType::Symlink => libc::S_IFLNK,
        FileType::Socket => libc::S_IFSOCK,
    }
}

/// Seconds and nanoseconds since the epoch, negative before it (as `stat`).
fn seconds(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (-secs, 0),
                n => (-secs - 1, 1_000_000_000 - n),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuser::INodeNo;

    fn attr(ino: u64) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: 5000,
            blocks: 10,
            atime: UNIX_EPOCH + Duration::new(1_700_000_000, 7),
            mtime: UNIX_EPOCH + Duration::new(1_700_000_000, 7),
            ctime: UNIX_EPOCH - Duration::new(1, 250_000_000),
            crtime: UNIX_EPOCH,
            kind: FileType::RegularFile,
            perm: 0o640,
            nlink: 2,
            uid: 1000,
            gid: 100,
            rdev: 0,
            blksize: 1 << 20,
            flags: 0,
        }
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn entries_are_the_kernels_layout() {
        let mut r = PlusReply::new();
        let a = attr(0x1234);
        r.push(0x1234, 7, FileType::RegularFile, b"mail.msg", Some(Attrs { attr: &a, ttl: Duration::new(86_400, 5) }));
        r.push(0x99, 8, FileType::Directory, b"sub", None);
        let b = r.bytes();
        // 152 + 8 = 160; 152 + 3 -> 160.
        assert_eq!(b.len(), 320);
        // fuse_entry_out.
        assert_eq!(u64_at(b, 0), 0x1234, "nodeid");
        assert_eq!((u64_at(b, 16), u64_at(b, 24)), (86_400, 86_400), "entry/attr valid");
        assert_eq!((u32_at(b, 32), u32_at(b, 36)), (5, 5));
        // fuse_attr at 40: ino, size, blocks, times, nsecs, mode...
        assert_eq!((u64_at(b, 40), u64_at(b, 48), u64_at(b, 56)), (0x1234, 5000, 10));
        assert_eq!(u64_at(b, 64) as i64, 1_700_000_000);
        assert_eq!(u64_at(b, 80) as i64, -2, "ctime before the epoch");
        assert_eq!((u32_at(b, 88), u32_at(b, 96)), (7, 750_000_000));
        assert_eq!(u32_at(b, 100), libc::S_IFREG | 0o640, "mode");
        assert_eq!((u32_at(b, 104), u32_at(b, 108), u32_at(b, 112)), (2, 1000, 100));
        assert_eq!(u32_at(b, 120), 1 << 20, "blksize");
        // fuse_dirent at 128.
        assert_eq!((u64_at(b, 128), u64_at(b, 136)), (0x1234, 7));
        assert_eq!((u32_at(b, 144), u32_at(b, 148)), (8, libc::DT_REG as u32));
        assert_eq!(&b[152..160], b"mail.msg");
        // The bare entry: node id 0 and no attributes, the dirent intact.
        let e = &b[160..];
        assert!(e[..128].iter().all(|&x| x == 0));
        assert_eq!((u64_at(e, 128), u64_at(e, 136)), (0x99, 8));
        assert_eq!((u32_at(e, 144), u32_at(e, 148)), (3, libc::DT_DIR as u32));
        assert_eq!(&e[152..160], b"sub\0\0\0\0\0");
    }

    #[test]
    fn the_requested_size_is_read_from_fusers_debug_output() {
        let shown = "ReplyDirectoryPlus { reply: ReplyRaw { unique: RequestId(12), sender: Some(Channel(..)) }, \
                     buf: DirEntPlusList(EntListBuf { max_size: 32768, buf: [] }) }";
        assert_eq!(size_in_debug(shown), Some(32768));
        assert_eq!(size_in_debug("EntListBuf { max_size: 100 }"), None, "below a page: ignored");
        assert_eq!(size_in_debug("EntListBuf { size: 8192 }"), None);
    }

    #[test]
    fn a_reply_holds_one_page_until_grown() {
        let mut r = PlusReply::new();
        let name = [b'x'; 100];
        let mut n = 0;
        while r.fits(&name) {
            r.push(n + 2, n + 3, FileType::RegularFile, &name, None);
            n += 1;
        }
        // 256 bytes each.
        assert_eq!((n, r.bytes().len()), (16, 4096));
        assert!(!r.fits(b""));
    }
}
