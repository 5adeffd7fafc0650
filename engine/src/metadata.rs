//! Reading what is on disk into tree [`Node`]s: the metadata of every file
//! type (mode, owner ids and names, nanosecond times, xattrs, link targets,
//! device numbers), with owner names cached per id.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::format::tree::{Node, NodeKind, Timestamp};

/// Caches uid/gid to name lookups, which are otherwise a syscall storm (or
/// worse, NSS calls) per file.
#[derive(Default)]
pub struct OwnerNames {
    users: HashMap<u32, Vec<u8>>,
    groups: HashMap<u32, Vec<u8>>,
}

impl OwnerNames {
    pub fn user(&mut self, uid: u32) -> Vec<u8> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name.into_bytes())
                    .filter(|n| n.len() <= 255)
                    .unwrap_or_default()
            })
            .clone()
    }

    pub fn group(&mut self, gid: u32) -> Vec<u8> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name.into_bytes())
                    .filter(|n| n.len() <= 255)
                    .unwrap_or_default()
            })
            .clone()
    }
}

/// What a node takes from `lstat`: std's [`Metadata`] where a path is
/// stat'ed on its own (a source, the directories above it), or a `statx`
/// relative to an open directory (the walk: the kernel resolves one name
/// instead of the whole path again for every entry).
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    pub rdev: u64,
}

impl From<&Metadata> for Stat {
    fn from(meta: &Metadata) -> Stat {
        Stat {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.len(),
            mtime: Timestamp { sec: meta.mtime(), nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32 },
            ctime: Timestamp { sec: meta.ctime(), nsec: meta.ctime_nsec().clamp(0, 999_999_999) as u32 },
            ino: meta.ino(),
            dev: meta.dev(),
            nlink: meta.nlink(),
            rdev: meta.rdev(),
        }
    }
}

impl From<&rustix::fs::Statx> for Stat {
    fn from(x: &rustix::fs::Statx) -> Stat {
        let time = |t: &rustix::fs::StatxTimestamp| Timestamp { sec: t.tv_sec, nsec: t.tv_nsec.min(999_999_999) };
        Stat {
            mode: u32::from(x.stx_mode),
            uid: x.stx_uid,
            gid: x.stx_gid,
            size: x.stx_size,
            mtime: time(&x.stx_mtime),
            ctime: time(&x.stx_ctime),
            ino: x.stx_ino,
            dev: rustix::fs::makedev(x.stx_dev_major, x.stx_dev_minor),
            nlink: u64::from(x.stx_nlink),
            rdev: rustix::fs::makedev(x.stx_rdev_major, x.stx_rdev_minor),
        }
    }
}

impl Stat {
    /// `lstat` of `name` in the directory open as `dir`.
    pub fn at(dir: impl std::os::fd::AsFd, name: &std::ffi::OsStr) -> std::io::Result<Stat> {
        use rustix::fs::{AtFlags, StatxFlags};
        let x = rustix::fs::statx(
            dir,
            name,
            AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_SYNC_AS_STAT,
            StatxFlags::BASIC_STATS,
        )?;
        Ok(Stat::from(&x))
    }

    pub fn kind(&self) -> NodeKind {
        match self.mode & libc::S_IFMT {
            libc::S_IFDIR => NodeKind::Dir,
            libc::S_IFLNK => NodeKind::Symlink,
            libc::S_IFIFO => NodeKind::Fifo,
            libc::S_IFSOCK => NodeKind::Socket,
            libc::S_IFCHR => NodeKind::CharDevice,
            libc::S_IFBLK => NodeKind::BlockDevice,
            _ => NodeKind::File,
        }
    }

    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
}

/// Builds a node from `lstat` metadata. Reading xattrs or a link target can
/// fail (the entry vanished, permissions); such failures are returned as
/// warnings while the node keeps what could be read. With `dir`, the entry
/// is `name` in that open directory (the walk: the kernel resolves one name,
/// not the whole path); without, it is `path`.
pub fn node_from_metadata(
    name: &[u8],
    path: &Path,
    dir: Option<BorrowedFd<'_>>,
    meta: &Stat,
    owners: &mut OwnerNames,
    warnings: &mut Vec<String>,
) -> Node {
    let mut n = Node::new(meta.kind(), name.to_vec());
    n.mode = meta.mode;
    n.uid = meta.uid;
    n.gid = meta.gid;
    n.user = owners.user(n.uid);
    n.group = owners.group(n.gid);
    n.mtime = meta.mtime;
    n.ctime = meta.ctime;
    n.size = if n.kind == NodeKind::File { meta.size } else { 0 };
    n.inode = meta.ino;
    n.device = meta.dev;
    n.nlink = u32::try_from(meta.nlink).unwrap_or(u32::MAX);
    n.rdev = meta.rdev;
    let name = OsStr::from_bytes(name);
    if n.kind == NodeKind::Symlink {
        let target = match dir {
            Some(d) => {
                rustix::fs::readlinkat(d, name, Vec::new()).map(|t| t.into_bytes()).map_err(std::io::Error::from)
            }
            None => std::fs::read_link(path).map(|t| t.into_os_string().into_vec()),
        };
        match target {
            Ok(t) => n.target = t,
            Err(e) => warnings.push(format!("cannot read link target: {e}")),
        }
    }
    n.xattrs = crate::xattrs::read(dir, name, path, warnings);
    n
}
