//! Tree blobs: one per directory, entries sorted by name bytes. Being
//! content-addressed, an unchanged directory encodes to the same blob and is
//! stored once.
//!
//! ```text
//! Tree  = "ARCTREE" || version u8 (=1) || entry_count u32 || Entry * entry_count
//! Entry = kind u8 || name_len u16 || name
//!      || mode u32 || uid u32 || gid u32
//!      || user_len u8 || user || group_len u8 || group
//!      || mtime_sec i64 || mtime_nsec u32 || ctime_sec i64 || ctime_nsec u32
//!      || size u64 || inode u64 || device u64 || nlink u32 || rdev u64
//!      || xattr_count u16 || (name_len u16 || name || value_len u32 || value) * xattr_count
//!      || target_len u32 || target
//!      || content
//! content = chunk_count u32 || chunk_id[32] * chunk_count   (file, hardlink)
//!         | subtree_id[32]                                  (dir)
//!         | nothing                                         (other kinds)
//! ```
//! Names are raw bytes (non-UTF-8 names survive). `target` is the symlink
//! target, or for a hardlink the snapshot path (components joined by `/`,
//! no leading `/`) of the first entry of its link group, which is a file.

use super::{ByteReader, ByteWriter};
use crate::error::{Error, Result};
use crate::id::Id;

const MAGIC: &[u8; 7] = b"ARCTREE";
const VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum NodeKind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    Hardlink = 4,
    Fifo = 5,
    Socket = 6,
    CharDevice = 7,
    BlockDevice = 8,
}

impl NodeKind {
    pub fn from_u8(v: u8) -> Option<NodeKind> {
        Some(match v {
            1 => NodeKind::File,
            2 => NodeKind::Dir,
            3 => NodeKind::Symlink,
            4 => NodeKind::Hardlink,
            5 => NodeKind::Fifo,
            6 => NodeKind::Socket,
            7 => NodeKind::CharDevice,
            8 => NodeKind::BlockDevice,
            _ => return None,
        })
    }

    pub fn has_chunks(self) -> bool {
        matches!(self, NodeKind::File | NodeKind::Hardlink)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    pub name: Vec<u8>,
    /// Full `st_mode`, type bits included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: Vec<u8>,
    pub group: Vec<u8>,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub size: u64,
    pub inode: u64,
    pub device: u64,
    pub nlink: u32,
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub target: Vec<u8>,
    pub chunks: Vec<Id>,
    pub subtree: Option<Id>,
}

impl Node {
    pub fn new(kind: NodeKind, name: Vec<u8>) -> Node {
        Node {
            kind,
            name,
            mode: 0,
            uid: 0,
            gid: 0,
            user: Vec::new(),
            group: Vec::new(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            size: 0,
            inode: 0,
            device: 0,
            nlink: 1,
            rdev: 0,
            xattrs: Vec::new(),
            target: Vec::new(),
            chunks: Vec::new(),
            subtree: None,
        }
    }

    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

pub(super) fn too_long(what: &str, name: &[u8]) -> Error {
    Error::InvalidArgument {
        what: "tree entry",
        reason: format!("{what} of {:?} is too long to store", String::from_utf8_lossy(name)),
    }
}

// The fields that tree v1 (SPEC.md section 4) and tree v2
// (format-spec/v2/trees-index.md section 1.2) encode alike: one writer and
// reader each, so the two encodings cannot drift apart in them.

/// Mode, uid, gid, user name and group name (u8 lengths).
pub(super) fn write_owner(w: &mut ByteWriter, n: &Node) -> Result<()> {
    w.u32(n.mode);
    w.u32(n.uid);
    w.u32(n.gid);
    w.u8(u8::try_from(n.user.len()).map_err(|_| too_long("user name", &n.name))?);
    w.bytes(&n.user);
    w.u8(u8::try_from(n.group.len()).map_err(|_| too_long("group name", &n.name))?);
    w.bytes(&n.group);
    Ok(())
}

pub(super) fn read_owner(r: &mut ByteReader<'_>, n: &mut Node) -> Result<()> {
    n.mode = r.u32()?;
    n.uid = r.u32()?;
    n.gid = r.u32()?;
    let ul = r.u8()? as usize;
    n.user = r.take(ul)?.to_vec();
    let gl = r.u8()? as usize;
    n.group = r.take(gl)?.to_vec();
    Ok(())
}

/// The xattr list (u16 count; u16 name and u32 value lengths) and the link
/// target (u32 length).
pub(super) fn write_xattrs_and_target(w: &mut ByteWriter, n: &Node) -> Result<()> {
    w.u16(u16::try_from(n.xattrs.len()).map_err(|_| too_long("xattr list", &n.name))?);
    for (k, v) in &n.xattrs {
        w.u16(u16::try_from(k.len()).map_err(|_| too_long("xattr name", &n.name))?);
        w.bytes(k);
        w.u32(u32::try_from(v.len()).map_err(|_| too_long("xattr value", &n.name))?);
        w.bytes(v);
    }
    w.u32(u32::try_from(n.target.len()).map_err(|_| too_long("link target", &n.name))?);
    w.bytes(&n.target);
    Ok(())
}

pub(super) fn read_xattrs_and_target(r: &mut ByteReader<'_>, n: &mut Node) -> Result<()> {
    let xc = r.u16()? as usize;
    for _ in 0..xc {
        let kl = r.u16()? as usize;
        let k = r.take(kl)?.to_vec();
        let vl = r.u32()? as usize;
        let v = r.take(vl)?.to_vec();
        n.xattrs.push((k, v));
    }
    let tl = r.u32()? as usize;
    n.target = r.take(tl)?.to_vec();
    Ok(())
}

/// A name that can be a single path component on restore.
pub fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Tree {
    /// Sorts entries by name and encodes. Fails only for fields too long for
    /// their length prefix (a user or group name over 255 bytes, say).
    pub fn encode(&mut self) -> Result<Vec<u8>> {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut w = ByteWriter::with_capacity(16 + self.nodes.len() * 128);
        w.bytes(MAGIC);
        w.u8(VERSION);
        w.u32(self.nodes.len() as u32);
        for (i, n) in self.nodes.iter().enumerate() {
            // Never write what `decode` would refuse.
            if !is_safe_name(&n.name) || i > 0 && self.nodes[i - 1].name == n.name {
                return Err(Error::InvalidArgument {
                    what: "tree entry",
                    reason: format!("unsafe or duplicate name {:?}", n.name_lossy()),
                });
            }
            if n.mtime.nsec >= 1_000_000_000 || n.ctime.nsec >= 1_000_000_000 {
                return Err(Error::InvalidArgument {
                    what: "tree entry",
                    reason: format!("nanoseconds out of range for {:?}", n.name_lossy()),
                });
            }
            w.u8(n.kind as u8);
            w.u16(u16::try_from(n.name.len()).map_err(|_| too_long("name", &n.name))?);
            w.bytes(&n.name);
            write_owner(&mut w, n)?;
            w.i64(n.mtime.sec);
            w.u32(n.mtime.nsec);
            w.i64(n.ctime.sec);
            w.u32(n.ctime.nsec);
            w.u64(n.size);
            w.u64(n.inode);
            w.u64(n.device);
            w.u32(n.nlink);
            w.u64(n.rdev);
            write_xattrs_and_target(&mut w, n)?;
            match n.kind {
                NodeKind::File | NodeKind::Hardlink => {
                    w.u32(u32::try_from(n.chunks.len()).map_err(|_| too_long("chunk list", &n.name))?);
                    for c in &n.chunks {
                        w.id(c);
                    }
                }
                NodeKind::Dir => w.id(&n.subtree.ok_or_else(|| Error::InvalidArgument {
                    what: "tree entry",
                    reason: format!("directory {:?} has no subtree", n.name_lossy()),
                })?),
                _ => {}
            }
        }
        Ok(w.buf)
    }

    /// Decodes a tree blob named `id`. Rejects unsorted or duplicate names
    /// and names that are not a single safe path component, so that no
    /// reader (restore, mount, dump) can be steered outside its target.
    pub fn decode(data: &[u8], id: &Id) -> Result<Tree> {
        let name = id.to_hex();
        let mut r = ByteReader::new(data, "tree", &name);
        if r.take(7)? != MAGIC {
            return Err(r.corrupt("bad magic: not a tree blob"));
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(r.corrupt(format!("unsupported tree version {version}")));
        }
        let count = r.u32()? as usize;
        // Each entry takes at least 80 bytes; don't let a damaged count
        // allocate gigabytes.
        let mut nodes: Vec<Node> = Vec::with_capacity(count.min(r.remaining() / 80 + 1));
        for _ in 0..count {
            let kind = NodeKind::from_u8(r.u8()?).ok_or_else(|| r.corrupt("unknown entry kind"))?;
            let name_len = r.u16()? as usize;
            let entry_name = r.take(name_len)?.to_vec();
            if !is_safe_name(&entry_name) {
                return Err(Error::UnsafeName { tree: *id, name: String::from_utf8_lossy(&entry_name).into_owned() });
            }
            if let Some(prev) = nodes.last() {
                if prev.name >= entry_name {
                    return Err(r.corrupt("entries not sorted by name or duplicated"));
                }
            }
            let mut n = Node::new(kind, entry_name);
            read_owner(&mut r, &mut n)?;
            n.mtime = Timestamp { sec: r.i64()?, nsec: r.u32()? };
            n.ctime = Timestamp { sec: r.i64()?, nsec: r.u32()? };
            if n.mtime.nsec >= 1_000_000_000 || n.ctime.nsec >= 1_000_000_000 {
                return Err(r.corrupt("nanoseconds out of range"));
            }
            n.size = r.u64()?;
            n.inode = r.u64()?;
            n.device = r.u64()?;
            n.nlink = r.u32()?;
            n.rdev = r.u64()?;
            read_xattrs_and_target(&mut r, &mut n)?;
            match kind {
                NodeKind::File | NodeKind::Hardlink => {
                    let cc = r.u32()? as usize;
                    if cc.checked_mul(32).is_none_or(|b| b > r.remaining()) {
                        return Err(r.corrupt("chunk count exceeds blob"));
                    }
                    n.chunks = (0..cc).map(|_| r.id()).collect::<Result<_>>()?;
                }
                NodeKind::Dir => n.subtree = Some(r.id()?),
                _ => {}
            }
            nodes.push(n);
        }
        r.finish()?;
        Ok(Tree { nodes })
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes.binary_search_by(|n| n.name.as_slice().cmp(name)).ok().map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_tree() -> Tree {
        let mut f = Node::new(NodeKind::File, b"b\xffname".to_vec());
        f.mode = 0o100644;
        f.uid = 1000;
        f.gid = 100;
        f.user = b"alice".to_vec();
        f.group = b"users".to_vec();
        f.mtime = Timestamp { sec: 1_700_000_000, nsec: 123_456_789 };
        f.ctime = Timestamp { sec: -5, nsec: 1 };
        f.size = 5;
        f.xattrs = vec![(b"user.k".to_vec(), b"v\0x".to_vec())];
        f.chunks = vec![Id::hash(b"hello")];
        let mut d = Node::new(NodeKind::Dir, b"a".to_vec());
        d.mode = 0o040755;
        d.subtree = Some(Id::hash(b"sub"));
        let mut l = Node::new(NodeKind::Symlink, b"c".to_vec());
        l.target = b"../x".to_vec();
        let mut dev = Node::new(NodeKind::CharDevice, b"d".to_vec());
        dev.rdev = 0x0103;
        Tree { nodes: vec![l, f, dev, d] }
    }

    #[test]
    fn round_trip_sorted() {
        let mut t = sample_tree();
        let enc = t.encode().unwrap();
        let dec = Tree::decode(&enc, &Id::hash(&enc)).unwrap();
        assert_eq!(dec, t);
        let names: Vec<_> = dec.nodes.iter().map(|n| n.name.clone()).collect();
        assert_eq!(names, vec![b"a".to_vec(), b"b\xffname".to_vec(), b"c".to_vec(), b"d".to_vec()]);
        assert!(dec.find(b"c").is_some());
    }

    #[test]
    fn rejects_damage_and_unsafe_names() {
        let mut t = sample_tree();
        let enc = t.encode().unwrap();
        for cut in 0..enc.len() {
            assert!(Tree::decode(&enc[..cut], &Id::default()).is_err());
        }
        // The encoder refuses unsafe names, so patch them into the bytes of
        // a safe name of the same length to test the decoder.
        for (safe, bad) in [(&b"a"[..], &b"."[..]), (b"ab", b".."), (b"abc", b"x/y"), (b"abcd", b"a\0bc")] {
            let mut bad_tree = Tree { nodes: vec![Node::new(NodeKind::Fifo, bad.to_vec())] };
            assert!(bad_tree.encode().is_err(), "encoder accepted {bad:?}");
            let mut t = Tree { nodes: vec![Node::new(NodeKind::Fifo, safe.to_vec())] };
            let mut enc = t.encode().unwrap();
            let at = enc.windows(safe.len()).position(|w| w == safe).unwrap();
            enc[at..at + bad.len()].copy_from_slice(bad);
            assert!(matches!(Tree::decode(&enc, &Id::default()), Err(Error::UnsafeName { .. })), "{bad:?}");
        }
    }
}
