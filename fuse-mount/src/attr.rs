//! VFS attributes to the kernel's: [`Attr`] to [`fuser::FileAttr`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_engine::format::tree::Timestamp;
use arc_engine::vfs::{Attr, Kind};
use fuser::{FileAttr, FileType, INodeNo};

pub fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
    }
}

/// A recorded time, before 1970 included.
pub fn system_time(t: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nsec));
    let at = if t.sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(t.sec as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.sec.unsigned_abs()))
    };
    at.and_then(|a| a.checked_add(nanos)).unwrap_or(UNIX_EPOCH)
}

/// A `stat` device number (glibc's encoding, as recorded) in the 32-bit
/// encoding FUSE carries (the kernel's `new_encode_dev`).
pub fn fuse_rdev(rdev: u64) -> u32 {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// Preferred I/O size for files: large, so `cp` and friends read a
/// megabyte per system call instead of 128 KiB (fewer FUSE round trips).
const FILE_BLKSIZE: u32 = 1 << 20;

pub fn file_attr(ino: u64, a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        // Restore sets atime to mtime too: there is no recorded atime.
        atime: system_time(a.mtime),
        mtime: system_time(a.mtime),
        ctime: system_time(a.ctime),
        crtime: system_time(a.mtime),
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: fuse_rdev(a.rdev),
        blksize: if a.kind == Kind::File { FILE_BLKSIZE } else { 4096 },
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdev_and_times() {
        assert_eq!(fuse_rdev(libc::makedev(1, 3)), 0x103);
        assert_eq!(fuse_rdev(libc::makedev(259, 65_537)), (1 | (259 << 8) | (0x10000 << 12)) as u32);
        let pre = system_time(Timestamp { sec: -2, nsec: 500_000_001 });
        assert_eq!(UNIX_EPOCH.duration_since(pre).unwrap(), Duration::new(1, 499_999_999));
        let fut = system_time(Timestamp { sec: 13_000_000_000, nsec: 999_999_999 });
        assert_eq!(fut.duration_since(UNIX_EPOCH).unwrap(), Duration::new(13_000_000_000, 999_999_999));
    }
}
