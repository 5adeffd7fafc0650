//! Tree blobs of format v2 (`format-spec/v2/trees-index.md` section 1): a
//! directory is a content-defined B-tree of blobs (leaves of entries, nodes
//! listing their children with each child's first name), long chunk lists
//! live in blobs of their own, and the fields that only served change
//! detection (ctime, inode, device, nlink) are not stored, so that a
//! snapshot mount (a new `st_dev` each time) keeps every tree id.
//!
//! This module owns the bytes and the canonical split; fetching blobs is
//! the caller's (the repository passes a reader closure), so the module
//! stays a pure codec that golden vectors and fuzzing can drive.

use super::tree::{
    is_safe_name, read_owner, read_xattrs_and_target, too_long, write_owner, write_xattrs_and_target, Node, NodeKind,
    Timestamp, Tree,
};
use super::{ByteReader, ByteWriter};
use crate::error::{Error, Result};
use crate::id::Id;

const TREE_MAGIC: &[u8; 7] = b"ARCTREE";
const LIST_MAGIC: &[u8; 7] = b"ARCLIST";
pub const VERSION: u8 = 2;
const HEADER_LEN: usize = 16;
/// Deepest node level a reader accepts: far beyond what 2^32 entries need
/// even at the minimum fan-out, small enough to bound a crafted chain.
pub const MAX_LEVEL: u8 = 16;

const FLAG_LINKED: u8 = 1;
const FLAG_OUT_OF_LINE: u8 = 2;

/// Files with more chunks than this keep them in chunk list blobs.
pub const INLINE_CHUNKS_MAX: usize = 64;

/// Cut parameters of one level (spec 1.5).
#[derive(Debug, Clone, Copy)]
struct Cut {
    min: usize,
    mask: u32,
    max: usize,
    max_bytes: usize,
}

const LEAF_CUT: Cut = Cut { min: 64, mask: 0xff, max: 1024, max_bytes: 256 * 1024 };
const NODE_CUT: Cut = Cut { min: 16, mask: 0x3f, max: 512, max_bytes: 64 * 1024 };
const LIST_CUT: Cut = Cut { min: 256, mask: 0x3ff, max: 8192, max_bytes: usize::MAX };
const LIST_DOMAIN: u8 = 0xff;

/// The repository's key for boundary hashes. Readers never need it: it
/// only decides where a writer cuts.
#[derive(Clone)]
pub struct SplitKey(pub [u8; 32]);

impl SplitKey {
    fn hash(&self, domain: u8, bytes: &[u8]) -> u32 {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(&[domain]);
        h.update(bytes);
        let out = h.finalize();
        let b = out.as_bytes();
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// Where `items` (with their boundary hashes and encoded lengths) are cut:
/// the exclusive end of each part.
fn cut_points(hashes: &[u32], lens: &[usize], cut: Cut) -> Vec<usize> {
    let mut ends = Vec::new();
    let (mut start, mut bytes) = (0usize, 0usize);
    for i in 0..hashes.len() {
        bytes = bytes.saturating_add(lens[i]);
        let n = i - start + 1;
        if i == hashes.len() - 1
            || n >= cut.max
            || bytes >= cut.max_bytes
            || (n >= cut.min && hashes[i] & cut.mask == 0)
        {
            ends.push(i + 1);
            start = i + 1;
            bytes = 0;
        }
    }
    ends
}

/// A directory encoded as blobs: every blob to store (chunk lists first,
/// then leaves, then nodes level by level; the root is the last) and the
/// root's id, which is the directory's id.
#[derive(Debug, Clone)]
pub struct EncodedDir {
    pub root: Id,
    pub blobs: Vec<(Id, Vec<u8>)>,
    /// The leaves in name order: id and entry count (for per-leaf side
    /// data such as the change-detection cache).
    pub leaves: Vec<(Id, usize)>,
}

fn invalid(reason: String) -> Error {
    Error::InvalidArgument { what: "tree entry", reason }
}

/// Encodes one chunk list blob.
pub fn encode_chunk_list(ids: &[Id]) -> Vec<u8> {
    let mut w = ByteWriter::with_capacity(12 + 32 * ids.len());
    w.bytes(LIST_MAGIC);
    w.u8(VERSION);
    w.u32(ids.len() as u32);
    for id in ids {
        w.id(id);
    }
    w.buf
}

pub fn decode_chunk_list(data: &[u8], id: &Id) -> Result<Vec<Id>> {
    let name = id.to_hex();
    let mut r = ByteReader::new(data, "chunk list", &name);
    if r.take(7)? != LIST_MAGIC {
        return Err(r.corrupt("bad magic: not a chunk list blob"));
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(r.corrupt(format!("unsupported chunk list version {version}")));
    }
    let count = r.u32()? as usize;
    if count == 0 || count.checked_mul(32) != Some(r.remaining()) {
        return Err(r.corrupt(format!("count {count} does not match the blob's length")));
    }
    (0..count).map(|_| r.id()).collect()
}

/// Encodes one entry; `lists` are the ids of its chunk list blobs when its
/// chunks are out of line.
fn encode_entry(w: &mut ByteWriter, n: &Node, lists: Option<&[Id]>) -> Result<()> {
    if !is_safe_name(&n.name) {
        return Err(invalid(format!("unsafe name {:?}", n.name_lossy())));
    }
    if n.mtime.nsec >= 1_000_000_000 {
        return Err(invalid(format!("nanoseconds out of range for {:?}", n.name_lossy())));
    }
    let mut flags = 0;
    if n.kind == NodeKind::File && n.nlink > 1 {
        flags |= FLAG_LINKED;
    }
    if lists.is_some() {
        flags |= FLAG_OUT_OF_LINE;
    }
    w.u8(n.kind as u8);
    w.u8(flags);
    w.u16(u16::try_from(n.name.len()).map_err(|_| too_long("name", &n.name))?);
    w.bytes(&n.name);
    write_owner(w, n)?;
    w.i64(n.mtime.sec);
    w.u32(n.mtime.nsec);
    w.u64(n.size);
    w.u64(n.rdev);
    write_xattrs_and_target(w, n)?;
    match n.kind {
        NodeKind::File | NodeKind::Hardlink => {
            w.u32(u32::try_from(n.chunks.len()).map_err(|_| too_long("chunk list", &n.name))?);
            match lists {
                Some(lists) => {
                    w.u32(lists.len() as u32);
                    lists.iter().for_each(|l| w.id(l));
                }
                None => n.chunks.iter().for_each(|c| w.id(c)),
            }
        }
        NodeKind::Dir => {
            w.id(&n.subtree.ok_or_else(|| invalid(format!("directory {:?} has no subtree", n.name_lossy())))?)
        }
        _ => {}
    }
    Ok(())
}

fn header(w: &mut ByteWriter, level: u8, count: usize) {
    w.bytes(TREE_MAGIC);
    w.u8(VERSION);
    w.u8(level);
    w.zeros(3);
    w.u32(count as u32);
}

/// Encodes a directory in the canonical v2 split (spec 1.5). Sorts the
/// entries by name; fails for unsafe or duplicate names and for fields too
/// long for their length prefix. `blob_id` is the repository's blob id
/// function. Blobs come out in the order of [`EncodedDir::blobs`].
pub fn encode_dir(tree: &mut Tree, key: &SplitKey, blob_id: &dyn Fn(&[u8]) -> Id) -> Result<EncodedDir> {
    tree.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = tree.nodes.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(invalid(format!("duplicate name {:?}", w[0].name_lossy())));
    }
    let mut enc = DirEncoder::new(key.clone(), Box::new(blob_id));
    for n in &tree.nodes {
        enc.push(n)?;
    }
    let root = enc.seal()?;
    // Chunk lists first, then leaves, then nodes level by level (the
    // encoder hands out each blob as soon as it is complete).
    enc.out.sort_by_key(|(class, _, _)| *class);
    let blobs = enc.out.into_iter().map(|(_, id, b)| (id, b)).collect();
    Ok(EncodedDir { root, blobs, leaves: enc.leaves })
}

/// Where a blob stands in [`EncodedDir::blobs`]' order: chunk lists, then
/// leaves, then nodes by level.
type BlobClass = u8;
const CLASS_LIST: BlobClass = 0;

/// The open (not yet cut) part of one level: its items encoded, and what
/// the cut rule and the level above need of it.
#[derive(Default)]
struct OpenPart {
    body: Vec<u8>,
    items: usize,
    /// Encoded length of the items, as the cut rule counts it.
    bytes: usize,
    /// Entries below the items.
    entries: u64,
    first: Vec<u8>,
}

/// One level of nodes above the leaves while a directory is encoded.
#[derive(Default)]
struct NodeLevel {
    part: OpenPart,
    /// Items (children) this level has received so far.
    items: u64,
    /// The first child, which is the directory's root if it stays alone.
    first: Option<Id>,
    /// A node cut after the level's first child alone (only an item of
    /// 64 KiB does that): it exists only if a second child follows, since a
    /// level of one item is the root itself (spec 1.5).
    held: Option<(Id, Vec<u8>, u64, Vec<u8>)>,
}

/// The repository's blob id function, as the encoder keeps it.
pub type BlobIdFn<'a> = Box<dyn Fn(&[u8]) -> Id + 'a>;

/// Encodes a directory entry by entry, in name order, into the canonical
/// v2 split (spec 1.5), handing out every blob as soon as it is complete.
/// The cuts are content-defined and depend only on the entries before
/// them, so a leaf is cut the moment its last entry arrives: the encoder
/// holds one open leaf and one open node per level (each bounded by the
/// cut's MAX and MAX_BYTES), whatever the size of the directory, and gives
/// the same blobs as [`encode_dir`] on the whole directory.
pub struct DirEncoder<'a> {
    key: SplitKey,
    blob_id: BlobIdFn<'a>,
    leaf: OpenPart,
    levels: Vec<NodeLevel>,
    last_name: Option<Vec<u8>>,
    entries: u64,
    /// Complete blobs not yet taken, with their class.
    out: Vec<(BlobClass, Id, Vec<u8>)>,
    /// Leaves cut and not yet taken: id and entry count, in name order.
    leaves: Vec<(Id, usize)>,
}

impl<'a> DirEncoder<'a> {
    pub fn new(key: SplitKey, blob_id: BlobIdFn<'a>) -> Self {
        DirEncoder {
            key,
            blob_id,
            leaf: OpenPart::default(),
            levels: Vec::new(),
            last_name: None,
            entries: 0,
            out: Vec::new(),
            leaves: Vec::new(),
        }
    }

    /// Adds the next entry; names must come strictly increasing.
    pub fn push(&mut self, n: &Node) -> Result<()> {
        if let Some(last) = &self.last_name {
            if *last == n.name {
                return Err(invalid(format!("duplicate name {:?}", n.name_lossy())));
            }
            if *last > n.name {
                return Err(invalid(format!("{:?} out of name order", n.name_lossy())));
            }
        }
        if self.entries >= u64::from(u32::MAX) {
            return Err(invalid("more than 2^32-1 entries in one directory".into()));
        }
        let lists = if n.kind.has_chunks() && n.chunks.len() > INLINE_CHUNKS_MAX {
            let hashes: Vec<u32> = n.chunks.iter().map(|c| self.key.hash(LIST_DOMAIN, &c.0)).collect();
            let lens = vec![32usize; n.chunks.len()];
            let mut start = 0;
            let mut ids = Vec::new();
            for end in cut_points(&hashes, &lens, LIST_CUT) {
                let data = encode_chunk_list(&n.chunks[start..end]);
                let id = (self.blob_id)(&data);
                ids.push(id);
                self.out.push((CLASS_LIST, id, data));
                start = end;
            }
            Some(ids)
        } else {
            None
        };
        let mut w = ByteWriter { buf: std::mem::take(&mut self.leaf.body) };
        let before = w.buf.len();
        let encoded = encode_entry(&mut w, n, lists.as_deref());
        let len = w.buf.len() - before;
        self.leaf.body = w.buf;
        if let Err(e) = encoded {
            self.leaf.body.truncate(before);
            return Err(e);
        }
        if self.leaf.items == 0 {
            self.leaf.first = n.name.clone();
        }
        self.leaf.items += 1;
        self.leaf.entries += 1;
        self.leaf.bytes = self.leaf.bytes.saturating_add(len);
        self.entries += 1;
        self.last_name = Some(n.name.clone());
        if cuts(&self.leaf, self.key.hash(0, &n.name), LEAF_CUT) {
            self.cut_leaf()?;
        }
        Ok(())
    }

    /// Complete blobs since the last call, to be stored: chunk lists before
    /// the leaf naming them, every child before its node.
    pub fn take_blobs(&mut self) -> impl Iterator<Item = (Id, Vec<u8>)> + '_ {
        self.out.drain(..).map(|(_, id, b)| (id, b))
    }

    /// Leaves cut since the last call: id and entry count, in name order.
    pub fn take_leaves(&mut self) -> impl Iterator<Item = (Id, usize)> + '_ {
        self.leaves.drain(..)
    }

    /// Bytes the encoder holds: the open leaf, the open node of each level
    /// and blobs not yet taken. Bounded by the cut rule, not by the
    /// directory's size.
    pub fn held_bytes(&self) -> usize {
        let parts: usize = self.levels.iter().map(|l| l.part.body.len() + l.part.first.len()).sum();
        self.leaf.body.len() + parts + self.out.iter().map(|(_, _, b)| b.len()).sum::<usize>()
    }

    /// Cuts what is open at every level; returns the directory's id. The
    /// last blobs and leaves are left to take.
    pub fn seal(&mut self) -> Result<Id> {
        if self.leaf.items > 0 || self.entries == 0 {
            self.cut_leaf()?;
        }
        let mut level = 0;
        loop {
            let Some(l) = self.levels.get_mut(level) else {
                return Err(invalid("a directory without leaves".into()));
            };
            if l.items == 1 {
                // A level of one item is no level: that item is the root.
                return l.first.ok_or_else(|| invalid("a level without its first item".into()));
            }
            if l.part.items > 0 {
                let part = std::mem::take(&mut l.part);
                self.cut_node(level, part)?;
            }
            level += 1;
        }
    }

    fn cut_leaf(&mut self) -> Result<()> {
        let part = std::mem::take(&mut self.leaf);
        let mut w = ByteWriter::with_capacity(HEADER_LEN + part.body.len());
        header(&mut w, 0, part.items);
        w.bytes(&part.body);
        let id = (self.blob_id)(&w.buf);
        self.out.push((1, id, w.buf));
        self.leaves.push((id, part.items));
        self.add_child(0, id, part.entries, part.first)
    }

    /// Adds a child to the nodes of level `at + 1` (`levels[at]`).
    fn add_child(&mut self, at: usize, id: Id, entries: u64, first: Vec<u8>) -> Result<()> {
        if at >= usize::from(MAX_LEVEL) {
            return Err(invalid("directory too large to split".into()));
        }
        if self.levels.len() <= at {
            self.levels.push(NodeLevel::default());
        }
        let l = &mut self.levels[at];
        l.items += 1;
        if l.items == 1 {
            l.first = Some(id);
        }
        if let Some((hid, data, hentries, hfirst)) = l.held.take() {
            self.out.push((at as u8 + 2, hid, data));
            self.add_child(at + 1, hid, hentries, hfirst)?;
        }
        let level = at as u8 + 1;
        let hash = self.key.hash(level, &first);
        let l = &mut self.levels[at];
        let mut w = ByteWriter { buf: std::mem::take(&mut l.part.body) };
        w.id(&id);
        w.u64(entries);
        w.u16(first.len() as u16);
        w.bytes(&first);
        l.part.body = w.buf;
        l.part.bytes = l.part.bytes.saturating_add(42 + first.len());
        l.part.entries += entries;
        if l.part.items == 0 {
            l.part.first = first;
        }
        l.part.items += 1;
        if cuts(&l.part, hash, NODE_CUT) {
            let part = std::mem::take(&mut l.part);
            self.cut_node(at, part)?;
        }
        Ok(())
    }

    fn cut_node(&mut self, at: usize, part: OpenPart) -> Result<()> {
        let level = at as u8 + 1;
        let mut w = ByteWriter::with_capacity(HEADER_LEN + part.body.len());
        header(&mut w, level, part.items);
        w.bytes(&part.body);
        let id = (self.blob_id)(&w.buf);
        let l = &mut self.levels[at];
        if l.items == 1 {
            l.held = Some((id, w.buf, part.entries, part.first));
            return Ok(());
        }
        self.out.push((level + 1, id, w.buf));
        self.add_child(at + 1, id, part.entries, part.first)
    }
}

/// Whether the cut rule (spec 1.5) ends `part` after its newest item,
/// whose boundary hash is `hash` (the end of the input cuts apart).
fn cuts(part: &OpenPart, hash: u32, cut: Cut) -> bool {
    part.items >= cut.max || part.bytes >= cut.max_bytes || (part.items >= cut.min && hash & cut.mask == 0)
}

/// One decoded tree blob of version 2.
#[derive(Debug, Clone)]
pub enum TreeBlob {
    Leaf(Vec<LeafEntry>),
    Node { level: u8, children: Vec<Child> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub id: Id,
    pub entries: u64,
    pub first_name: Vec<u8>,
}

/// An entry as stored: its node (with `chunks` empty when they are out of
/// line) and the ids of its chunk list blobs, if any.
#[derive(Debug, Clone)]
pub struct LeafEntry {
    pub node: Node,
    /// (chunk_count, chunk list blob ids) for out-of-line chunks.
    pub lists: Option<(u32, Vec<Id>)>,
}

/// The tree format version of a tree blob (1 or 2), if it is one.
pub fn blob_version(data: &[u8]) -> Option<u8> {
    (data.len() >= 8 && &data[..7] == TREE_MAGIC).then(|| data[7])
}

/// Decodes one v2 tree blob named `id`, checking every rule that one blob
/// can be checked against on its own (spec 1.4).
pub fn decode_blob(data: &[u8], id: &Id) -> Result<TreeBlob> {
    let name = id.to_hex();
    let mut r = ByteReader::new(data, "tree", &name);
    if r.take(7)? != TREE_MAGIC {
        return Err(r.corrupt("bad magic: not a tree blob"));
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(r.corrupt(format!("unsupported tree version {version}")));
    }
    let level = r.u8()?;
    if level > MAX_LEVEL {
        return Err(r.corrupt(format!("level {level} exceeds {MAX_LEVEL}")));
    }
    r.reserved(3)?;
    let count = r.u32()? as usize;
    if level > 0 {
        // One child is legal: the cut loop (spec 1.5) ends a level with
        // whatever items are left, and that can be one. MIN_ITEMS bounds
        // every other part, so a level still shrinks and MAX_LEVEL bounds
        // the depth.
        if count < 1 {
            return Err(r.corrupt(format!("a node with {count} children")));
        }
        let mut children: Vec<Child> = Vec::with_capacity(count.min(r.remaining() / 43 + 1));
        for _ in 0..count {
            let cid = r.id()?;
            let entries = r.u64()?;
            let fl = r.u16()? as usize;
            let first_name = r.take(fl)?.to_vec();
            if entries == 0 || !is_safe_name(&first_name) {
                return Err(r.corrupt("a child with no entries or an unsafe first name"));
            }
            if children.last().is_some_and(|p| p.first_name >= first_name) {
                return Err(r.corrupt("children not sorted by first name"));
            }
            children.push(Child { id: cid, entries, first_name });
        }
        r.finish()?;
        return Ok(TreeBlob::Node { level, children });
    }
    // Each entry takes at least 55 bytes; a damaged count must not allocate
    // gigabytes.
    let mut out: Vec<LeafEntry> = Vec::with_capacity(count.min(r.remaining() / 55 + 1));
    for _ in 0..count {
        let kind = NodeKind::from_u8(r.u8()?).ok_or_else(|| r.corrupt("unknown entry kind"))?;
        let flags = r.u8()?;
        let allowed = match kind {
            NodeKind::File => FLAG_LINKED | FLAG_OUT_OF_LINE,
            NodeKind::Hardlink => FLAG_OUT_OF_LINE,
            _ => 0,
        };
        if flags & !allowed != 0 {
            return Err(r.corrupt(format!("flags {flags:#04x} not allowed for this kind")));
        }
        let nl = r.u16()? as usize;
        let entry_name = r.take(nl)?.to_vec();
        if !is_safe_name(&entry_name) {
            return Err(Error::UnsafeName { tree: *id, name: String::from_utf8_lossy(&entry_name).into_owned() });
        }
        if out.last().is_some_and(|p| p.node.name >= entry_name) {
            return Err(r.corrupt("entries not sorted by name or duplicated"));
        }
        let mut n = Node::new(kind, entry_name);
        n.nlink = if flags & FLAG_LINKED != 0 { 2 } else { 1 };
        read_owner(&mut r, &mut n)?;
        n.mtime = Timestamp { sec: r.i64()?, nsec: r.u32()? };
        if n.mtime.nsec >= 1_000_000_000 {
            return Err(r.corrupt("nanoseconds out of range"));
        }
        // Not stored in v2 (spec 1.2): readers see the modification time.
        n.ctime = n.mtime;
        n.size = r.u64()?;
        n.rdev = r.u64()?;
        read_xattrs_and_target(&mut r, &mut n)?;
        let mut lists = None;
        match kind {
            NodeKind::File | NodeKind::Hardlink => {
                let cc = r.u32()?;
                if flags & FLAG_OUT_OF_LINE != 0 {
                    let lc = r.u32()? as usize;
                    if lc == 0 || lc.checked_mul(32).is_none_or(|b| b > r.remaining()) || lc > cc as usize {
                        return Err(r.corrupt("bad chunk list count"));
                    }
                    lists = Some((cc, (0..lc).map(|_| r.id()).collect::<Result<_>>()?));
                } else {
                    let cc = cc as usize;
                    if cc.checked_mul(32).is_none_or(|b| b > r.remaining()) {
                        return Err(r.corrupt("chunk count exceeds blob"));
                    }
                    n.chunks = (0..cc).map(|_| r.id()).collect::<Result<_>>()?;
                }
            }
            NodeKind::Dir => n.subtree = Some(r.id()?),
            _ => {}
        }
        out.push(LeafEntry { node: n, lists });
    }
    r.finish()?;
    Ok(TreeBlob::Leaf(out))
}

/// What one metadata blob refers to: further metadata blobs (subtrees,
/// a node's children, chunk lists) and data blobs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refs {
    pub metadata: Vec<Id>,
    pub chunks: Vec<Id>,
}

/// The references of a tree blob of either version or of a chunk list
/// blob, read one blob at a time (prune's and check's breadth-first walks
/// need every blob of a split directory, not the assembled directory).
pub fn references(data: &[u8], id: &Id) -> Result<Refs> {
    let mut refs = Refs::default();
    if data.starts_with(LIST_MAGIC) {
        refs.chunks = decode_chunk_list(data, id)?;
        return Ok(refs);
    }
    let nodes: Vec<(Node, Vec<Id>)> = match blob_version(data) {
        Some(VERSION) => match decode_blob(data, id)? {
            TreeBlob::Node { children, .. } => {
                refs.metadata = children.into_iter().map(|c| c.id).collect();
                return Ok(refs);
            }
            TreeBlob::Leaf(entries) => {
                entries.into_iter().map(|e| (e.node, e.lists.map(|l| l.1).unwrap_or_default())).collect()
            }
        },
        _ => Tree::decode(data, id)?.nodes.into_iter().map(|n| (n, Vec::new())).collect(),
    };
    for (node, lists) in nodes {
        refs.metadata.extend(node.subtree);
        refs.metadata.extend(lists);
        if node.kind.has_chunks() {
            refs.chunks.extend(node.chunks);
        }
    }
    Ok(refs)
}

/// Reads a blob by id (the repository's verified blob read).
pub type ReadBlob<'a> = dyn FnMut(&Id) -> Result<std::sync::Arc<[u8]>> + 'a;

fn mismatch(id: &Id, reason: String) -> Error {
    Error::corrupt("tree", id.to_hex(), reason)
}

/// Resolves an entry's out-of-line chunk lists into its node.
fn resolve_lists(entry: LeafEntry, read: &mut ReadBlob<'_>, leaf: &Id) -> Result<Node> {
    let mut node = entry.node;
    if let Some((count, lists)) = entry.lists {
        let mut chunks = Vec::with_capacity((count as usize).min(1 << 20));
        for l in &lists {
            chunks.extend(decode_chunk_list(&read(l)?, l)?);
            if chunks.len() > count as usize {
                break;
            }
        }
        if chunks.len() != count as usize {
            return Err(mismatch(leaf, format!("chunk lists of {:?} do not hold {count} ids", node.name_lossy())));
        }
        node.chunks = chunks;
    }
    Ok(node)
}

/// Assembles the whole directory whose root blob is `root` (bytes `data`),
/// reading its other blobs through `read`; checks every cross-blob rule of
/// spec 1.4. Also returns the leaves (id, entry count) in order.
pub fn assemble(root: &Id, data: &[u8], read: &mut ReadBlob<'_>) -> Result<(Tree, Vec<(Id, usize)>)> {
    let mut nodes = Vec::new();
    let mut leaves = Vec::new();
    let mut r = LeafReader::new(root, data)?;
    while let Some((id, part)) = r.next_leaf(read)? {
        leaves.push((id, part.len()));
        nodes.extend(part);
    }
    Ok((Tree { nodes }, leaves))
}

/// A node being read: its children, the next one, and what its parent
/// says of it (checked once it is read through).
struct OpenNode {
    id: Id,
    level: u8,
    children: std::vec::IntoIter<Child>,
    /// The parent's id and the entry count it lists for this node; `None`
    /// for the root.
    listed: Option<(Id, u64)>,
    /// Entries read before this node's first.
    start: u64,
}

/// Reads a directory leaf after leaf in name order, holding one leaf and
/// the nodes on the way to it (a split directory of any size in bounded
/// memory), and checks every cross-blob rule of spec 1.4 as it goes: each
/// child is of the level below its parent, has the first name and entry
/// count its parent lists, and names increase across leaves.
pub struct LeafReader {
    stack: Vec<OpenNode>,
    /// The root, when it is a leaf, until it is read.
    root_leaf: Option<(Id, Vec<LeafEntry>)>,
    last_name: Option<Vec<u8>>,
    entries: u64,
}

impl LeafReader {
    pub fn new(root: &Id, data: &[u8]) -> Result<Self> {
        let mut r = LeafReader { stack: Vec::new(), root_leaf: None, last_name: None, entries: 0 };
        match decode_blob(data, root)? {
            TreeBlob::Leaf(entries) => r.root_leaf = Some((*root, entries)),
            TreeBlob::Node { level, children } => {
                r.stack.push(OpenNode { id: *root, level, children: children.into_iter(), listed: None, start: 0 })
            }
        }
        Ok(r)
    }

    /// The next leaf (its id and entries, chunk lists resolved), or `None`
    /// after the last.
    pub fn next_leaf(&mut self, read: &mut ReadBlob<'_>) -> Result<Option<(Id, Vec<Node>)>> {
        if let Some((id, entries)) = self.root_leaf.take() {
            let nodes = entries.into_iter().map(|e| resolve_lists(e, read, &id)).collect::<Result<Vec<_>>>()?;
            self.entries = nodes.len() as u64;
            return Ok(Some((id, nodes)));
        }
        loop {
            let Some(top) = self.stack.last_mut() else { return Ok(None) };
            let Some(child) = top.children.next() else {
                let done = self.stack.pop().expect("a node on the stack");
                if let Some((parent, count)) = done.listed {
                    if self.entries - done.start != count {
                        return Err(mismatch(
                            &parent,
                            format!("child {} does not match its first name or entry count", done.id.short()),
                        ));
                    }
                }
                continue;
            };
            let (parent, level) = (top.id, top.level);
            let data = read(&child.id)?;
            match decode_blob(&data, &child.id)? {
                TreeBlob::Leaf(entries) if level == 1 => {
                    if entries.is_empty() {
                        return Err(mismatch(&parent, "an empty leaf as a child".into()));
                    }
                    if entries[0].node.name != child.first_name || entries.len() as u64 != child.entries {
                        return Err(mismatch(
                            &parent,
                            format!("child {} does not match its first name or entry count", child.id.short()),
                        ));
                    }
                    if self.last_name.as_ref().is_some_and(|p| *p >= entries[0].node.name) {
                        return Err(mismatch(&child.id, "entries not sorted across leaves".into()));
                    }
                    self.entries += entries.len() as u64;
                    if u32::try_from(self.entries).is_err() {
                        return Err(mismatch(&parent, "more than 2^32-1 entries".into()));
                    }
                    let nodes =
                        entries.into_iter().map(|e| resolve_lists(e, read, &child.id)).collect::<Result<Vec<_>>>()?;
                    self.last_name = nodes.last().map(|n| n.name.clone());
                    return Ok(Some((child.id, nodes)));
                }
                TreeBlob::Node { level: l, children } if l + 1 == level => {
                    // A node's first name is its first child's, down to
                    // the leaf whose first entry bears it.
                    if children.first().map(|c| &c.first_name) != Some(&child.first_name) {
                        return Err(mismatch(
                            &parent,
                            format!("child {} does not match its first name or entry count", child.id.short()),
                        ));
                    }
                    self.stack.push(OpenNode {
                        id: child.id,
                        level: l,
                        children: children.into_iter(),
                        listed: Some((parent, child.entries)),
                        start: self.entries,
                    });
                }
                _ => {
                    return Err(mismatch(&parent, format!("child {} is not of level {}", child.id.short(), level - 1)))
                }
            }
        }
    }
}

/// Finds one name in the directory whose root blob is `root`, reading
/// only the blobs on the way to its leaf (one per level) and its chunk
/// lists.
pub fn lookup(root: &Id, data: &[u8], name: &[u8], read: &mut ReadBlob<'_>) -> Result<Option<Node>> {
    let mut blob = decode_blob(data, root)?;
    let mut id = *root;
    loop {
        match blob {
            TreeBlob::Leaf(entries) => {
                return match entries.binary_search_by(|e| e.node.name.as_slice().cmp(name)) {
                    Ok(i) => Ok(Some(resolve_lists(entries.into_iter().nth(i).expect("index found"), read, &id)?)),
                    Err(_) => Ok(None),
                }
            }
            TreeBlob::Node { level, children } => {
                let i = children.partition_point(|c| c.first_name.as_slice() <= name);
                if i == 0 {
                    return Ok(None);
                }
                let child = &children[i - 1];
                let data = read(&child.id)?;
                let next = decode_blob(&data, &child.id)?;
                let ok = match &next {
                    TreeBlob::Leaf(e) => level == 1 && e.first().map(|e| &e.node.name) == Some(&child.first_name),
                    TreeBlob::Node { level: l, children: c } => {
                        l + 1 == level && c.first().map(|c| &c.first_name) == Some(&child.first_name)
                    }
                };
                if !ok {
                    return Err(mismatch(&id, format!("child {} does not match its parent", child.id.short())));
                }
                id = child.id;
                blob = next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::sync::Arc;

    fn key() -> SplitKey {
        SplitKey(*blake3::hash(b"test split key").as_bytes())
    }

    fn file(name: &str, i: u64) -> Node {
        let mut n = Node::new(NodeKind::File, name.as_bytes().to_vec());
        n.mode = 0o100644;
        n.uid = 1000;
        n.gid = 1000;
        n.mtime = Timestamp { sec: 1_700_000_000 + i as i64, nsec: (i % 1000) as u32 };
        n.ctime = n.mtime;
        n.size = 4000 + i;
        n.inode = 1_000_000 + i;
        n.device = 0x801;
        n.chunks = vec![Id::hash(&i.to_le_bytes())];
        n
    }

    fn big_dir(n: u64) -> Tree {
        Tree {
            nodes: (0..n).map(|i| file(&format!("{:016x}.eml", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)), i)).collect(),
        }
    }

    /// Encodes, stores the blobs in a map and returns the root and the map.
    fn store(t: &Tree) -> (Id, HashMap<Id, Arc<[u8]>>, EncodedDir) {
        let enc = encode_dir(&mut t.clone(), &key(), &|b| Id::hash(b)).unwrap();
        let map: HashMap<Id, Arc<[u8]>> = enc.blobs.iter().map(|(id, b)| (*id, Arc::from(b.as_slice()))).collect();
        (enc.root, map, enc)
    }

    fn reader(map: &HashMap<Id, Arc<[u8]>>) -> impl FnMut(&Id) -> Result<Arc<[u8]>> + '_ {
        move |id| map.get(id).cloned().ok_or_else(|| Error::corrupt("blob", id.to_hex(), "missing"))
    }

    /// What a v2 reader gives back for a node (spec 1.2).
    fn as_read(n: &Node) -> Node {
        let mut n = n.clone();
        n.ctime = n.mtime;
        n.inode = 0;
        n.device = 0;
        n.nlink = if n.kind == NodeKind::File && n.nlink > 1 { 2 } else { 1 };
        n
    }

    #[test]
    fn small_directory_is_one_leaf_and_round_trips() {
        let mut t = crate::format::tree::tests::sample_tree();
        let (root, map, enc) = store(&t);
        assert_eq!(enc.blobs.len(), 1);
        let (back, leaves) = assemble(&root, &map[&root], &mut reader(&map)).unwrap();
        t.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(back.nodes, t.nodes.iter().map(as_read).collect::<Vec<_>>());
        assert_eq!(leaves, vec![(root, 4)]);
        let empty = encode_dir(&mut Tree::default(), &key(), &|b| Id::hash(b)).unwrap();
        assert_eq!(hex::encode(&empty.blobs[0].1), "41524354524545020000000000000000");
    }

    /// The canonical cut can end a level with a one-child node (the last
    /// part holds what is left, here one leaf); such a directory must read
    /// back. Which directories do depends on the split key, so the test
    /// tries keys until one gives such a node (about one in 64 does).
    #[test]
    fn a_node_with_one_child_at_the_end_of_a_level_reads_back() {
        // Entries of ~4 KB (long symlink targets): leaves are cut by
        // MAX_BYTES at ~60 entries, so 1,500 entries make ~25 leaves.
        let t = Tree {
            nodes: (0..1500u64)
                .map(|i| {
                    let mut n = Node::new(NodeKind::Symlink, format!("link-{i:05}").into_bytes());
                    n.mode = 0o120777;
                    n.target = format!("{i:05}/{}", "t".repeat(3994)).into_bytes();
                    n
                })
                .collect(),
        };
        let one_child = |b: &[u8]| b.len() >= 16 && b[8] > 0 && u32::from_le_bytes([b[12], b[13], b[14], b[15]]) == 1;
        let found = (0u32..2000).find_map(|seed| {
            let key = SplitKey(*blake3::hash(&seed.to_le_bytes()).as_bytes());
            let enc = encode_dir(&mut t.clone(), &key, &|b| Id::hash(b)).unwrap();
            enc.blobs.iter().any(|(_, b)| one_child(b)).then_some(enc)
        });
        let enc = found.expect("no key out of 2,000 gave a one-child node");
        let map: HashMap<Id, Arc<[u8]>> = enc.blobs.iter().map(|(id, b)| (*id, Arc::from(b.as_slice()))).collect();
        let (back, _) = assemble(&enc.root, &map[&enc.root], &mut reader(&map)).unwrap();
        assert_eq!(back.nodes.len(), t.nodes.len());
    }

    #[test]
    fn a_large_directory_splits_and_reassembles() {
        let t = big_dir(100_000);
        let (root, map, enc) = store(&t);
        let levels = decode_blob(&map[&root], &root).map(|b| match b {
            TreeBlob::Node { level, .. } => level,
            TreeBlob::Leaf(_) => 0,
        });
        assert_eq!(levels.unwrap(), 2, "100k entries: leaves, one level of nodes, a root");
        assert!(enc.leaves.len() > 200 && enc.leaves.len() < 1000, "{} leaves", enc.leaves.len());
        assert!(enc.blobs.iter().all(|(_, b)| b.len() <= LEAF_CUT.max_bytes + 4096));
        let (back, leaves) = assemble(&root, &map[&root], &mut reader(&map)).unwrap();
        let mut want = t.clone();
        want.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(back.nodes, want.nodes.iter().map(as_read).collect::<Vec<_>>());
        assert_eq!(leaves, enc.leaves);
        // One name: one blob per level, nothing else.
        for probe in [&want.nodes[0], &want.nodes[54_321], &want.nodes[99_999]] {
            let mut reads = 0;
            let mut counting = |id: &Id| {
                reads += 1;
                reader(&map)(id)
            };
            let found = lookup(&root, &map[&root], &probe.name, &mut counting).unwrap();
            assert_eq!(found, Some(as_read(probe)));
            assert_eq!(reads, 2);
        }
        assert_eq!(lookup(&root, &map[&root], b"zzzz-missing", &mut reader(&map)).unwrap(), None);
        assert_eq!(lookup(&root, &map[&root], b"\x01", &mut reader(&map)).unwrap(), None);
    }

    #[test]
    fn inserting_one_entry_into_100k_rewrites_only_a_few_small_blobs() {
        let t = big_dir(100_000);
        let (_, before, _) = store(&t);
        for (at, name) in [(0usize, "0000-first"), (1, "7777-middle.eml"), (2, "ffff-last")] {
            let mut t2 = t.clone();
            t2.nodes.push(file(name, 500_000 + at as u64));
            let (_, after, enc) = store(&t2);
            let new: Vec<usize> =
                enc.blobs.iter().filter(|(id, _)| !before.contains_key(id)).map(|(_, b)| b.len()).collect();
            assert!(new.len() <= 4, "{name}: {} new blobs", new.len());
            let bytes: usize = new.iter().sum();
            assert!(
                bytes < 200_000,
                "{name}: {bytes} new bytes (the directory is {} bytes)",
                after.values().map(|b| b.len()).sum::<usize>()
            );
        }
        // Changing one file's content keeps every boundary: its leaf and the
        // nodes above it.
        let mut t3 = t.clone();
        t3.nodes[777].chunks = vec![Id::hash(b"changed")];
        t3.nodes[777].mtime.sec += 1;
        let (_, _, enc) = store(&t3);
        let new = enc.blobs.iter().filter(|(id, _)| !before.contains_key(id)).count();
        assert_eq!(new, 3, "leaf, level-1 node, root");
    }

    #[test]
    fn a_snapshot_mount_keeps_every_tree_id() {
        let mut t = big_dir(5_000);
        t.nodes.iter_mut().step_by(7).for_each(|n| n.nlink = 2);
        let (root, _, _) = store(&t);
        let mut remounted = t.clone();
        for (i, n) in remounted.nodes.iter_mut().enumerate() {
            n.device = 0xfd07; // a new st_dev on every mount
            n.inode += 17;
            n.ctime = Timestamp { sec: 1_800_000_000, nsec: i as u32 };
            if n.nlink > 1 {
                n.nlink += 1; // another link made elsewhere
            }
        }
        assert_eq!(store(&remounted).0, root);
        // A file that becomes linkable is a recorded change (restore needs
        // to know it may be a hardlink target).
        remounted.nodes[1].nlink = 2;
        assert_ne!(store(&remounted).0, root);
    }

    #[test]
    fn long_chunk_lists_go_out_of_line_and_change_locally() {
        let mut f = file("big.img", 1);
        f.chunks = (0..20_000u32).map(|i| Id::hash(&i.to_le_bytes())).collect();
        let mut small = file("small", 2);
        small.chunks = (0..INLINE_CHUNKS_MAX as u32)
            .map(|i| Id::hash(&[b"small".as_slice(), &i.to_le_bytes()].concat()))
            .collect();
        let t = Tree { nodes: vec![f.clone(), small.clone()] };
        let (root, map, enc) = store(&t);
        assert!(enc.blobs.len() > 3, "lists are blobs of their own");
        let leaf = &map[&root];
        assert!(leaf.len() < 2 * INLINE_CHUNKS_MAX * 32 + 2000, "the leaf holds list ids, not 20k chunk ids");
        let (back, _) = assemble(&root, leaf, &mut reader(&map)).unwrap();
        assert_eq!(back.nodes[0].chunks, f.chunks);
        assert_eq!(back.nodes[1].chunks, small.chunks);
        // One chunk in the middle changes: one or two lists and the leaf.
        let mut f2 = f.clone();
        f2.chunks[10_000] = Id::hash(b"edited");
        let (_, _, enc2) = store(&Tree { nodes: vec![f2, small] });
        let new = enc2.blobs.iter().filter(|(id, _)| !map.contains_key(id)).count();
        assert!(new <= 3, "{new} new blobs");
    }

    #[test]
    fn readers_reject_inconsistent_splits() {
        let t = big_dir(3_000);
        let (root, map, _) = store(&t);
        // Truncations of every blob fail.
        for data in map.values().take(3) {
            for cut in [0, 7, 15, data.len() / 2, data.len() - 1] {
                assert!(decode_blob(&data[..cut], &root).is_err());
            }
        }
        // A node whose child is swapped for another leaf fails assembly.
        let TreeBlob::Node { children, .. } = decode_blob(&map[&root], &root).unwrap() else {
            panic!("root is a node")
        };
        let mut bad = map[&root].to_vec();
        let a = bad.windows(32).position(|w| w == children[0].id.0).unwrap();
        bad[a..a + 32].copy_from_slice(&children[1].id.0);
        let err = assemble(&root, &bad, &mut reader(&map)).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        // An unknown flag fails.
        let mut one = Tree { nodes: vec![file("x", 1)] };
        let enc = encode_dir(&mut one, &key(), &|b| Id::hash(b)).unwrap();
        let mut b = enc.blobs[0].1.clone();
        b[HEADER_LEN + 1] = 0x80;
        assert!(decode_blob(&b, &enc.root).is_err());
        let mut dup = Tree { nodes: vec![file("x", 1), file("x", 2)] };
        assert!(encode_dir(&mut dup, &key(), &|b| Id::hash(b)).is_err());
        let seen: HashSet<_> = map.keys().collect();
        assert!(seen.contains(&root));
    }

    /// The whole-directory encoder that `DirEncoder` replaced, kept as the
    /// reference its output must equal blob for blob: the split of every
    /// level computed over the level's complete list of items.
    fn batch_encode_dir(tree: &mut Tree, key: &SplitKey, blob_id: &dyn Fn(&[u8]) -> Id) -> Result<EncodedDir> {
        tree.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = tree.nodes.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(invalid(format!("duplicate name {:?}", w[0].name_lossy())));
        }
        if u32::try_from(tree.nodes.len()).is_err() {
            return Err(invalid("more than 2^32-1 entries in one directory".into()));
        }
        let mut blobs = Vec::new();
        let mut entries: Vec<Vec<u8>> = Vec::with_capacity(tree.nodes.len());
        for n in &tree.nodes {
            let lists = if n.kind.has_chunks() && n.chunks.len() > INLINE_CHUNKS_MAX {
                let hashes: Vec<u32> = n.chunks.iter().map(|c| key.hash(LIST_DOMAIN, &c.0)).collect();
                let lens = vec![32usize; n.chunks.len()];
                let mut start = 0;
                let mut ids = Vec::new();
                for end in cut_points(&hashes, &lens, LIST_CUT) {
                    let data = encode_chunk_list(&n.chunks[start..end]);
                    let id = blob_id(&data);
                    ids.push(id);
                    blobs.push((id, data));
                    start = end;
                }
                Some(ids)
            } else {
                None
            };
            let mut w = ByteWriter::default();
            encode_entry(&mut w, n, lists.as_deref())?;
            entries.push(w.buf);
        }

        // Level 0: leaves of entries.
        let hashes: Vec<u32> = tree.nodes.iter().map(|n| key.hash(0, &n.name)).collect();
        let lens: Vec<usize> = entries.iter().map(|e| e.len()).collect();
        let ends = if entries.is_empty() { vec![0] } else { cut_points(&hashes, &lens, LEAF_CUT) };
        // Children of the next level: (id, entries below, first name).
        let mut level_items: Vec<(Id, u64, Vec<u8>)> = Vec::new();
        let mut leaves = Vec::new();
        let mut start = 0;
        for end in ends {
            let mut w = ByteWriter::with_capacity(HEADER_LEN + lens[start..end].iter().sum::<usize>());
            header(&mut w, 0, end - start);
            entries[start..end].iter().for_each(|e| w.bytes(e));
            let id = blob_id(&w.buf);
            blobs.push((id, w.buf));
            leaves.push((id, end - start));
            let first = tree.nodes.get(start).map(|n| n.name.clone()).unwrap_or_default();
            level_items.push((id, (end - start) as u64, first));
            start = end;
        }
        let mut level = 0u8;
        while level_items.len() > 1 {
            level += 1;
            if level > MAX_LEVEL {
                return Err(invalid("directory too large to split".into()));
            }
            let hashes: Vec<u32> = level_items.iter().map(|c| key.hash(level, &c.2)).collect();
            let lens: Vec<usize> = level_items.iter().map(|c| 42 + c.2.len()).collect();
            let mut next = Vec::new();
            let mut start = 0;
            for end in cut_points(&hashes, &lens, NODE_CUT) {
                let mut w = ByteWriter::with_capacity(HEADER_LEN + lens[start..end].iter().sum::<usize>());
                header(&mut w, level, end - start);
                let mut total = 0u64;
                for (id, count, first) in &level_items[start..end] {
                    w.id(id);
                    w.u64(*count);
                    w.u16(first.len() as u16);
                    w.bytes(first);
                    total += count;
                }
                let id = blob_id(&w.buf);
                blobs.push((id, w.buf));
                next.push((id, total, level_items[start].2.clone()));
                start = end;
            }
            // A level of one item per part cannot shrink; the MIN of 16 and a
            // forced cut at MAX only produce a one-item part at the very end.
            level_items = next;
        }
        let root = level_items[0].0;
        Ok(EncodedDir { root, blobs, leaves })
    }

    /// Shapes whose splits exercise every cut: many leaves and two node
    /// levels, leaves cut by MAX_BYTES (long targets), nodes cut early by
    /// long names, chunk lists, one entry, none.
    fn shapes() -> Vec<Tree> {
        let mut long_targets: Vec<Node> = (0..1500u64)
            .map(|i| {
                let mut n = Node::new(NodeKind::Symlink, format!("link-{i:05}").into_bytes());
                n.mode = 0o120777;
                n.target = format!("{i:05}/{}", "t".repeat(3994)).into_bytes();
                n
            })
            .collect();
        let mut big = file("big.img", 3);
        big.chunks = (0..20_000u32).map(|i| Id::hash(&i.to_le_bytes())).collect();
        long_targets.push(big);
        let long_names = (0..3000u64).map(|i| file(&format!("{i:06}-{}", "n".repeat(240)), i)).collect();
        // Names of 65,500 bytes (the format allows them; no file system
        // does): four entries fill a leaf, and one such first name fills a
        // node's MAX_BYTES, so a node is cut after that one child. With one
        // leaf, that node must not exist (the leaf is the root); with more,
        // no level ever shrinks to one item and both encoders refuse.
        let huge = |count: u64| Tree {
            nodes: (0..count).map(|i| file(&format!("{i:03}{}", "h".repeat(65_497)), i)).collect(),
        };
        vec![
            big_dir(250_000),
            huge(3),
            huge(9),
            Tree { nodes: long_targets },
            Tree { nodes: long_names },
            Tree { nodes: vec![file("only", 1)] },
            Tree::default(),
        ]
    }

    #[test]
    fn the_streaming_encoder_gives_the_batch_split_blob_for_blob() {
        for (k, t) in shapes().into_iter().enumerate() {
            // Several keys: where the cuts fall (and so one-child nodes at
            // the end of a level) depends on the key.
            for seed in 0u32..if k == 0 { 2 } else { 12 } {
                let key = SplitKey(*blake3::hash(&seed.to_le_bytes()).as_bytes());
                let want = batch_encode_dir(&mut t.clone(), &key, &|b| Id::hash(b));
                let got = encode_dir(&mut t.clone(), &key, &|b| Id::hash(b));
                match k {
                    1 => assert!(matches!(&got, Ok(e) if e.blobs.len() == 1), "one leaf, and it is the root"),
                    2 => assert!(got.is_err(), "no level of huge first names shrinks"),
                    _ => {}
                }
                let (got, want) = match (got, want) {
                    (Ok(g), Ok(w)) => (g, w),
                    (Err(g), Err(w)) => {
                        assert_eq!(g.to_string(), w.to_string(), "shape {k}, key {seed}");
                        continue;
                    }
                    (g, w) => panic!("shape {k}, key {seed}: {:?} against {:?}", g.map(|e| e.root), w.map(|e| e.root)),
                };
                assert_eq!(got.root, want.root, "shape {k}, key {seed}");
                assert_eq!(got.leaves, want.leaves, "shape {k}, key {seed}");
                let ids = |e: &EncodedDir| e.blobs.iter().map(|(id, _)| *id).collect::<Vec<_>>();
                assert_eq!(ids(&got), ids(&want), "shape {k}, key {seed}: blobs or their order");
            }
        }
    }

    /// The encoder's memory is one open part per level: the same bound for
    /// 20,000 entries as for 200,000, far below either directory's size.
    #[test]
    fn the_streaming_encoder_holds_a_bounded_part_of_any_directory() {
        let mut peaks = Vec::new();
        for n in [20_000u64, 200_000] {
            let mut t = big_dir(n);
            t.nodes.sort_by(|a, b| a.name.cmp(&b.name));
            let mut enc = DirEncoder::new(key(), Box::new(|b: &[u8]| Id::hash(b)));
            let (mut peak, mut total, mut leaves) = (0, 0, 0);
            for node in &t.nodes {
                enc.push(node).unwrap();
                peak = peak.max(enc.held_bytes());
                total += enc.take_blobs().map(|(_, b)| b.len()).sum::<usize>();
                leaves += enc.take_leaves().count();
            }
            enc.seal().unwrap();
            leaves += enc.take_leaves().count();
            total += enc.take_blobs().map(|(_, b)| b.len()).sum::<usize>();
            assert!(leaves as u64 > n / 1024, "{leaves} leaves for {n} entries");
            assert!(total > 50 * n as usize, "the directory is {total} bytes");
            peaks.push(peak);
        }
        // One leaf of at most 256 KiB plus an entry, one node per level.
        let bound = LEAF_CUT.max_bytes + 4096 + 2 * NODE_CUT.max_bytes;
        assert!(peaks.iter().all(|p| *p < bound), "peaks {peaks:?} over {bound}");
    }

    #[test]
    fn the_streaming_encoder_refuses_names_out_of_order() {
        let mut enc = DirEncoder::new(key(), Box::new(|b: &[u8]| Id::hash(b)));
        enc.push(&file("b", 1)).unwrap();
        assert!(enc.push(&file("a", 2)).unwrap_err().to_string().contains("out of name order"));
        assert!(enc.push(&file("b", 2)).unwrap_err().to_string().contains("duplicate"));
        enc.push(&file("c", 3)).unwrap();
        let root = enc.seal().unwrap();
        let want = encode_dir(&mut Tree { nodes: vec![file("b", 1), file("c", 3)] }, &key(), &|b| Id::hash(b)).unwrap();
        assert_eq!(root, want.root);
    }
}
