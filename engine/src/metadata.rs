//! Reading what is on disk into tree [`Node`]s: the metadata of every file
//! type (mode, owner ids and names, nanosecond times, xattrs, link targets,
//! device numbers), with owner names cached per id.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
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

pub fn kind_of(meta: &Metadata) -> NodeKind {
    let ft = meta.file_type();
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_socket() {
        NodeKind::Socket
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else {
        NodeKind::File
    }
}

/// Builds a node from `lstat` metadata. Reading xattrs or a link target can
/// fail (the entry vanished, permissions); such failures are returned as
/// warnings while the node keeps what could be read.
pub fn node_from_metadata(
    name: &[u8],
    path: &Path,
    meta: &Metadata,
    owners: &mut OwnerNames,
    warnings: &mut Vec<String>,
) -> Node {
    let mut n = Node::new(kind_of(meta), name.to_vec());
    n.mode = meta.mode();
    n.uid = meta.uid();
    n.gid = meta.gid();
    n.user = owners.user(n.uid);
    n.group = owners.group(n.gid);
    n.mtime = Timestamp { sec: meta.mtime(), nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32 };
    n.ctime = Timestamp { sec: meta.ctime(), nsec: meta.ctime_nsec().clamp(0, 999_999_999) as u32 };
    n.size = if n.kind == NodeKind::File { meta.len() } else { 0 };
    n.inode = meta.ino();
    n.device = meta.dev();
    n.nlink = u32::try_from(meta.nlink()).unwrap_or(u32::MAX);
    n.rdev = meta.rdev();
    if n.kind == NodeKind::Symlink {
        match std::fs::read_link(path) {
            Ok(t) => n.target = t.as_os_str().as_bytes().to_vec(),
            Err(e) => warnings.push(format!("cannot read link target: {e}")),
        }
    }
    n.xattrs = read_xattrs(path, warnings);
    n
}

fn read_xattrs(path: &Path, warnings: &mut Vec<String>) -> Vec<(Vec<u8>, Vec<u8>)> {
    // xattr's list/get use the l* calls: a symlink's own attributes.
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if is_unsupported(&e) => return Vec::new(),
        Err(e) => {
            warnings.push(format!("cannot list xattrs: {e}"));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for name in names {
        match xattr::get(path, &name) {
            Ok(Some(v)) => out.push((name.as_bytes().to_vec(), v)),
            Ok(None) => {}
            Err(e) => warnings.push(format!("cannot read xattr {}: {e}", name.to_string_lossy())),
        }
    }
    out.sort();
    out
}

fn is_unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}
