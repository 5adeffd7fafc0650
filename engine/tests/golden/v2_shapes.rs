//! Golden vectors of format v2 trees and index files
//! (`format-spec/v2/trees-index.md`), in `format-spec/vectors/v2/`. The
//! spec-side encoders below are written from that document's tables and
//! pseudocode, independently of `engine/src/format/`.

use super::*;
use arc_engine::crypto::{padme, Keys, MasterSecret, Purpose};
use arc_engine::format::sealed;
use arc_engine::format::tree_v2::{self, SplitKey};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::collections::HashMap;

// ---------------------------------------------------------------------------
// The vectors' key: the master secret of ../vectors/v2 (bytes 00 01 .. 1f,
// as in subkeys.txt), so every blob id, split and sealed box below is what
// an arc of today writes into a repository with that key.
// ---------------------------------------------------------------------------

fn master() -> MasterSecret {
    let mut m = [0u8; 32];
    for (i, b) in m.iter_mut().enumerate() {
        *b = i as u8;
    }
    MasterSecret::from_bytes(m)
}

fn keys() -> Keys {
    Keys::derive(&master())
}

/// crypto.md 2.1: a subkey.
fn spec_subkey(context: &str) -> [u8; 32] {
    blake3::derive_key(context, master().as_bytes())
}

/// crypto.md 4: a blob id is keyed BLAKE3 of the blob.
fn spec_id(bytes: &[u8]) -> Id {
    Id(*blake3::keyed_hash(&spec_subkey("arc 2026-12 format v2 chunk id"), bytes).as_bytes())
}

/// crypto.md 5: a sealed box, written out with the AEAD crate alone.
fn spec_seal(key: [u8; 32], label: &str, ad: &[u8], nonce: [u8; 24], plain: &[u8]) -> Vec<u8> {
    let mut aad = b"arc2".to_vec();
    aad.push(label.len() as u8);
    aad.extend_from_slice(label.as_bytes());
    aad.extend_from_slice(ad);
    let ct = XChaCha20Poly1305::new(&key.into())
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad: &aad })
        .unwrap();
    [nonce.to_vec(), ct].concat()
}

// ---------------------------------------------------------------------------
// Spec-side encoders (trees-index.md)
// ---------------------------------------------------------------------------

/// trees-index.md 1.5: the boundary hash.
fn spec_boundary(key: &[u8; 32], domain: u8, bytes: &[u8]) -> u32 {
    let mut msg = vec![domain];
    msg.extend_from_slice(bytes);
    let h = blake3::keyed_hash(key, &msg);
    u32::from_le_bytes(h.as_bytes()[..4].try_into().unwrap())
}

/// trees-index.md 1.5: the cut loop; returns the parts as index ranges.
fn spec_cuts(
    hashes: &[u32],
    lens: &[usize],
    min: usize,
    mask: u32,
    max: usize,
    max_bytes: usize,
) -> Vec<(usize, usize)> {
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for i in 0..hashes.len() {
        bytes += lens[i];
        let n = i - start + 1;
        if i == hashes.len() - 1 || n >= max || bytes >= max_bytes || (n >= min && hashes[i] & mask == 0) {
            parts.push((start, i + 1));
            start = i + 1;
            bytes = 0;
        }
    }
    parts
}

/// trees-index.md 1.3.
fn spec_chunk_list(a: &mut Annotated, ids: &[Id]) {
    a.field("magic \"ARCLIST\"", b"ARCLIST", true);
    a.u8("version", 2);
    a.u32("count", ids.len() as u32);
    for (i, id) in ids.iter().enumerate() {
        a.field(&format!("chunk[{i}] id"), &id.0, false);
    }
}

fn spec_tree_header(a: &mut Annotated, level: u8, count: usize) {
    a.field("magic \"ARCTREE\"", b"ARCTREE", true);
    a.u8("tree version", 2);
    a.u8(if level == 0 { "level (0 = leaf)" } else { "level (node)" }, level);
    a.field("reserved, 0", &[0; 3], false);
    a.u32(if level == 0 { "count (entries)" } else { "count (children)" }, count as u32);
}

/// trees-index.md 1.2: one Entry2. `lists` are the chunk list blob ids of
/// an entry whose chunks are out of line.
fn spec_entry2(a: &mut Annotated, i: usize, n: &Node, lists: Option<&[Id]>) {
    a.note(&format!("entry {i}: {:?} ({:?})", String::from_utf8_lossy(&n.name), n.kind));
    a.u8("kind", n.kind as u8);
    let linked = n.kind == NodeKind::File && n.nlink > 1;
    let flags = u8::from(linked) | if lists.is_some() { 2 } else { 0 };
    a.u8("flags (bit 0 linked, bit 1 chunks out of line)", flags);
    a.u16("name_len", n.name.len() as u16);
    a.field("name", &n.name, true);
    a.field(&format!("mode = 0o{:o} (u32)", n.mode), &n.mode.to_le_bytes(), false);
    a.u32("uid", n.uid);
    a.u32("gid", n.gid);
    a.u8("user_len", n.user.len() as u8);
    a.field("user", &n.user, true);
    a.u8("group_len", n.group.len() as u8);
    a.field("group", &n.group, true);
    a.i64("mtime_sec", n.mtime.sec);
    a.u32("mtime_nsec", n.mtime.nsec);
    a.u64("size", n.size);
    a.field(&format!("rdev = {:#x} (u64)", n.rdev), &n.rdev.to_le_bytes(), false);
    a.u16("xattr_count", n.xattrs.len() as u16);
    for (j, (k, v)) in n.xattrs.iter().enumerate() {
        a.u16(&format!("xattr[{j}].name_len"), k.len() as u16);
        a.field(&format!("xattr[{j}].name"), k, true);
        a.u32(&format!("xattr[{j}].value_len"), v.len() as u32);
        a.field(&format!("xattr[{j}].value"), v, true);
    }
    a.u32("target_len", n.target.len() as u32);
    a.field("target", &n.target, true);
    match (n.kind, lists) {
        (NodeKind::File | NodeKind::Hardlink, Some(lists)) => {
            a.u32("chunk_count", n.chunks.len() as u32);
            a.u32("list_count", lists.len() as u32);
            for (j, l) in lists.iter().enumerate() {
                a.field(&format!("chunk list[{j}] id"), &l.0, false);
            }
        }
        (NodeKind::File | NodeKind::Hardlink, None) => {
            a.u32("chunk_count", n.chunks.len() as u32);
            for (j, c) in n.chunks.iter().enumerate() {
                a.field(&format!("chunk[{j}] id"), &c.0, false);
            }
        }
        (NodeKind::Dir, _) => a.field("subtree id", &n.subtree.expect("dir has a subtree").0, false),
        _ => {}
    }
}

/// Chunk lists of an entry, by the spec's rule (more than 64 chunks: out
/// of line, cut with MIN 256 / MASK 0x3ff / MAX 8192).
fn spec_lists(key: &[u8; 32], n: &Node) -> Option<Vec<(Id, Vec<u8>)>> {
    if !matches!(n.kind, NodeKind::File | NodeKind::Hardlink) || n.chunks.len() <= 64 {
        return None;
    }
    let hashes: Vec<u32> = n.chunks.iter().map(|c| spec_boundary(key, 0xff, &c.0)).collect();
    let lens = vec![32; n.chunks.len()];
    let parts = spec_cuts(&hashes, &lens, 256, 0x3ff, 8192, usize::MAX);
    Some(
        parts
            .into_iter()
            .map(|(s, e)| {
                let mut a = Annotated::new("", &[]);
                spec_chunk_list(&mut a, &n.chunks[s..e]);
                (spec_id(&a.bytes), a.bytes)
            })
            .collect(),
    )
}

/// One Child record of a node (trees-index.md 1.1).
fn spec_child(a: &mut Annotated, i: usize, id: &Id, entries: u64, first: &[u8]) {
    a.note(&format!("child {i}"));
    a.field("child id", &id.0, false);
    a.u64("entries below", entries);
    a.u16("first_len", first.len() as u16);
    a.field("first_name", first, true);
}

/// The whole canonical split of a directory (sorted `nodes`): every blob
/// as (level, entry or child count, first name, bytes), bottom-up.
fn spec_split(key: &[u8; 32], nodes: &[Node]) -> Vec<(u8, usize, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut entries: Vec<Vec<u8>> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let lists = spec_lists(key, n);
        let mut a = Annotated::new("", &[]);
        let ids: Option<Vec<Id>> = lists.as_ref().map(|l| l.iter().map(|x| x.0).collect());
        spec_entry2(&mut a, i, n, ids.as_deref());
        entries.push(a.bytes);
        for (_, bytes) in lists.into_iter().flatten() {
            out.push((255, 0, Vec::new(), bytes));
        }
    }
    let hashes: Vec<u32> = nodes.iter().map(|n| spec_boundary(key, 0, &n.name)).collect();
    let lens: Vec<usize> = entries.iter().map(|e| e.len()).collect();
    let parts = if nodes.is_empty() { vec![(0, 0)] } else { spec_cuts(&hashes, &lens, 64, 0xff, 1024, 262_144) };
    let mut items: Vec<(Id, u64, Vec<u8>)> = Vec::new();
    for (s, e) in parts {
        let mut a = Annotated::new("", &[]);
        spec_tree_header(&mut a, 0, e - s);
        entries[s..e].iter().for_each(|x| a.bytes.extend_from_slice(x));
        let first = nodes.get(s).map(|n| n.name.clone()).unwrap_or_default();
        items.push((spec_id(&a.bytes), (e - s) as u64, first.clone()));
        out.push((0, e - s, first, a.bytes));
    }
    let mut level = 0u8;
    while items.len() > 1 {
        level += 1;
        let hashes: Vec<u32> = items.iter().map(|c| spec_boundary(key, level, &c.2)).collect();
        let lens: Vec<usize> = items.iter().map(|c| 42 + c.2.len()).collect();
        let mut next = Vec::new();
        for (s, e) in spec_cuts(&hashes, &lens, 16, 0x3f, 512, 65_536) {
            let mut a = Annotated::new("", &[]);
            spec_tree_header(&mut a, level, e - s);
            for (i, (id, count, first)) in items[s..e].iter().enumerate() {
                spec_child(&mut a, i, id, *count, first);
            }
            let total = items[s..e].iter().map(|c| c.1).sum();
            next.push((spec_id(&a.bytes), total, items[s].2.clone()));
            out.push((level, e - s, items[s].2.clone(), a.bytes));
        }
        items = next;
    }
    out
}

/// trees-index.md 2: the index file v2 payload.
fn spec_index_v2_payload(a: &mut Annotated, supersedes: &[Id], packs: &[PackEntry]) {
    let mut sup = supersedes.to_vec();
    sup.sort();
    let mut packs: Vec<&PackEntry> = packs.iter().collect();
    packs.sort_by_key(|p| p.pack);
    let frames: usize = packs.iter().map(|p| p.trailer.frames.len()).sum();
    let mut blobs: Vec<(Id, u32, &BlobRecord)> = Vec::new();
    for (no, p) in packs.iter().enumerate() {
        blobs.extend(p.trailer.blobs.iter().map(|b| (b.id, no as u32, b)));
    }
    blobs.sort_by_key(|(id, no, b)| (*id, *no, b.frame, b.offset_in_frame));
    a.field("magic \"ARCIDX\"", b"ARCIDX", true);
    a.u8("payload version", 2);
    a.u8("reserved, 0", 0);
    a.u32("supersedes_count", sup.len() as u32);
    a.u32("pack_count", packs.len() as u32);
    a.u32("frame_count", frames as u32);
    a.u32("blob_count", blobs.len() as u32);
    for (i, s) in sup.iter().enumerate() {
        a.field(&format!("supersedes[{i}]"), &s.0, false);
    }
    for (i, p) in packs.iter().enumerate() {
        a.note(&format!("pack {i}"));
        a.field("pack id", &p.pack.0, false);
        a.u64("pack_len", p.pack_len);
        a.u32("frames", p.trailer.frames.len() as u32);
        a.u32("blobs", p.trailer.blobs.len() as u32);
    }
    for (i, p) in packs.iter().enumerate() {
        for (j, f) in p.trailer.frames.iter().enumerate() {
            a.note(&format!("pack {i} frame {j}"));
            a.u64("offset", f.offset);
            a.u32("stored_len", f.stored_len);
            a.u32("raw_len", f.raw_len);
            a.u8("codec (0 raw, 1 zstd)", f.codec as u8);
            a.field("reserved, 0", &[0; 7], false);
        }
    }
    for (i, (id, no, b)) in blobs.iter().enumerate() {
        a.note(&format!("blob {i}"));
        a.field("blob id", &id.0, false);
        a.u32("pack (position in the pack list)", *no);
        a.field(&format!("frame = {} (u24)", b.frame), &b.frame.to_le_bytes()[..3], false);
        a.u8("kind (0 data, 1 tree)", b.kind as u8);
        a.u32("offset_in_frame", b.offset_in_frame);
        a.u32("raw_len", b.raw_len);
    }
}

// ---------------------------------------------------------------------------
// Expected values
// ---------------------------------------------------------------------------

/// trees-index.md 1.5: the split key is a subkey of the master secret.
fn split_key() -> [u8; 32] {
    let key = spec_subkey("arc 2026-12 format v2 tree split");
    assert_eq!(keys().tree_split_key(), key, "the engine derives the split key as the spec says");
    key
}

/// What a v2 reader returns for a node (trees-index.md 1.2).
fn as_read_v2(n: &Node) -> Node {
    let mut n = n.clone();
    n.ctime = n.mtime;
    n.inode = 0;
    n.device = 0;
    n.nlink = if n.kind == NodeKind::File && n.nlink > 1 { 2 } else { 1 };
    n
}

/// golden_tree's entries plus a 70-chunk file (chunks out of line).
fn golden_leaf_nodes() -> Vec<Node> {
    let mut nodes = golden_tree().nodes;
    let mut big = nodes.iter().find(|n| n.name == b"file.txt").unwrap().clone();
    big.name = b"large.bin".to_vec();
    big.nlink = 1;
    big.xattrs.clear();
    big.chunks = (0..70u32).map(|i| label_id(&format!("large chunk {i}"))).collect();
    big.size = 70 * 1024 * 1024;
    nodes.push(big);
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes
}

fn golden_big_dir() -> Vec<Node> {
    (0..3000u32)
        .map(|i| {
            let mut n = Node::new(NodeKind::Fifo, format!("entry-{i:05}").into_bytes());
            n.mode = 0o010644;
            n.mtime = Timestamp { sec: 1_714_567_890 + i64::from(i), nsec: i };
            n
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn tree_v2_leaf_with_every_kind_and_a_chunk_list() {
    let key = split_key();
    let nodes = golden_leaf_nodes();
    let lists = spec_lists(&key, &nodes[nodes.iter().position(|n| n.name == b"large.bin").unwrap()]).unwrap();
    assert_eq!(lists.len(), 1, "70 ids are fewer than MIN_ITEMS: one list");

    let mut list = Annotated::new(
        "Chunk list blob v2 (format-spec/v2/trees-index.md 1.3)",
        &["The 70 chunk ids of large.bin in tree-leaf.hex, ids = BLAKE3(\"large chunk <i>\")."],
    );
    spec_chunk_list(&mut list, &nodes.iter().find(|n| n.name == b"large.bin").unwrap().chunks);
    let mut leaf = Annotated::new(
        "Tree blob v2, one leaf (format-spec/v2/trees-index.md 1.1, 1.2)",
        &[
            "The entries of tree.hex (one of each kind; file.txt is linked: nlink 2)",
            "plus large.bin, a file of 70 chunks whose ids are in chunk-list.hex",
            "(out of line: more than 64). No ctime, inode, device or nlink.",
        ],
    );
    spec_tree_header(&mut leaf, 0, nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        let l = (n.name == b"large.bin").then(|| vec![lists[0].0]);
        spec_entry2(&mut leaf, i, n, l.as_deref());
    }

    let mut tree = Tree { nodes: nodes.clone() };
    tree.nodes.reverse(); // the encoder sorts
    let keys = keys();
    let enc = tree_v2::encode_dir(&mut tree, &SplitKey(key), &|b| keys.chunk_id(b)).unwrap();
    assert_eq!(enc.blobs.len(), 2, "one chunk list, one leaf");
    let golden_list = pinned("v2/chunk-list.hex", &list, &enc.blobs[0].1);
    let golden_leaf = pinned("v2/tree-leaf.hex", &leaf, &enc.blobs[1].1);
    assert_eq!(enc.root, spec_id(&golden_leaf));

    let blobs: HashMap<Id, std::sync::Arc<[u8]>> =
        [(spec_id(&golden_list), golden_list.as_slice().into())].into_iter().collect();
    let (back, leaves) = tree_v2::assemble(&enc.root, &golden_leaf, &mut |id: &Id| {
        blobs.get(id).cloned().ok_or_else(|| Error::corrupt("blob", id.to_hex(), "missing"))
    })
    .unwrap();
    assert_eq!(back.nodes, nodes.iter().map(as_read_v2).collect::<Vec<_>>());
    assert_eq!(leaves, vec![(enc.root, nodes.len())]);
}

#[test]
fn tree_v2_split_directory() {
    let key = split_key();
    let nodes = golden_big_dir();
    let spec = spec_split(&key, &nodes);
    let mut tree = Tree { nodes: nodes.clone() };
    let keys = keys();
    let enc = tree_v2::encode_dir(&mut tree, &SplitKey(key), &|b| keys.chunk_id(b)).unwrap();
    let engine: Vec<&[u8]> = enc.blobs.iter().map(|(_, b)| b.as_slice()).collect();
    let want: Vec<&[u8]> = spec.iter().map(|s| s.3.as_slice()).collect();
    assert_eq!(engine.len(), want.len(), "blob count");
    for (i, (e, w)) in engine.iter().zip(&want).enumerate() {
        assert_bytes_eq(e, w, &format!("split blob {i}: engine and spec-side encoder differ"));
    }

    // The list of every blob (level, count, first name, id) pins the whole
    // split; the root node is pinned byte by byte, and in its sealed frame.
    let mut text = String::from(
        "# A split v2 directory (format-spec/v2/trees-index.md 1.5): 3000 fifos named\n\
         # entry-00000 .. entry-02999 (mode 0o010644, mtime 1714567890+i s, i ns, no owner\n\
         # names), master secret 00 01 .. 1f (../v2/subkeys.txt): split key = its tree split subkey.\n\
         # One line per blob, bottom-up: blob <level> <entries or children> <first name> <blob id (keyed BLAKE3)>.\n\
         # The last blob is the root (tree-node.hex).\n",
    );
    for (level, count, first, bytes) in &spec {
        text.push_str(&format!("blob {level} {count} {} {}\n", String::from_utf8_lossy(first), spec_id(bytes)));
    }
    if regenerate() {
        write_atomic("v2/tree-split.txt", &text);
    }
    assert_eq!(read_vector("v2/tree-split.txt"), text, "v2/tree-split.txt differs from the spec-side split");
    assert!(spec.iter().filter(|s| s.0 == 0).count() > 3, "the vector really splits");

    let (level, count, _, root_bytes) = spec.last().unwrap();
    let mut root = Annotated::new(
        "Tree blob v2, the root node of tree-split.txt (format-spec/v2/trees-index.md 1.1)",
        &["Children are the leaves listed in tree-split.txt, with their first names."],
    );
    let leaves: Vec<&(u8, usize, Vec<u8>, Vec<u8>)> = spec.iter().filter(|s| s.0 == level - 1).collect();
    spec_tree_header(&mut root, *level, *count);
    for (i, l) in leaves.iter().enumerate() {
        spec_child(&mut root, i, &spec_id(&l.3), l.1 as u64, &l.2);
    }
    assert_eq!(&root.bytes, root_bytes);
    let golden_root = pinned("v2/tree-node.hex", &root, &enc.blobs.last().unwrap().1);

    let blobs: HashMap<Id, std::sync::Arc<[u8]>> =
        enc.blobs.iter().map(|(id, b)| (*id, std::sync::Arc::from(b.as_slice()))).collect();
    let mut read = |id: &Id| blobs.get(id).cloned().ok_or_else(|| Error::corrupt("blob", id.to_hex(), "missing"));
    let (back, _) = tree_v2::assemble(&spec_id(&golden_root), &golden_root, &mut read).unwrap();
    assert_eq!(back.nodes, nodes.iter().map(as_read_v2).collect::<Vec<_>>());
    let found = tree_v2::lookup(&enc.root, &golden_root, b"entry-01234", &mut read).unwrap();
    assert_eq!(found, Some(as_read_v2(&nodes[1234])));

    // As stored: the root node alone in a pack frame (codec raw, so the
    // frame's stored bytes are the blob), sealed (crypto.md 5.2).
    let nonce = [0x31u8; 24];
    let inner_len = padme(4 + golden_root.len() as u64) as usize;
    let mut inner = (golden_root.len() as u32).to_le_bytes().to_vec();
    inner.extend_from_slice(&golden_root);
    inner.resize(inner_len, 0);
    let engine = keys.seal_with_nonce(Purpose::BLOB_FRAME, &[], &inner, nonce).unwrap();
    let spec = spec_seal(spec_subkey("arc 2026-12 format v2 data sealing"), "blob frame", &[], nonce, &inner);
    assert_bytes_eq(&engine, &spec, "sealed frame: engine and spec-side sealing differ");
    let mut a = Annotated::new(
        "The root node of tree-split.txt (tree-node.hex) as stored: a sealed pack frame (crypto.md 5.2)",
        &[
            "Master secret 00 01 .. 1f (subkeys.txt), nonce 24 * 0x31. The frame holds the node alone,",
            "codec raw, so the sealed plaintext is stored_len u32 || the node || zero padding",
            &format!("up to padme(4 + {}) = {inner_len} bytes.", golden_root.len()),
        ],
    );
    a.field("nonce", &spec[..24], false);
    a.field("XChaCha20-Poly1305 ciphertext || tag (data subkey, label \"blob frame\", no ad)", &spec[24..], false);
    let golden = pinned("v2/tree-node-frame.hex", &a, &engine);
    assert_eq!(sealed::open_frame(&keys, &golden, "golden", 8).unwrap(), golden_root);
}

fn golden_supersedes() -> Vec<Id> {
    vec![label_id("superseded index file B"), label_id("superseded index file A")]
}

#[test]
fn index_v2_payload() {
    let entries = golden_index_entries();
    let mut a = Annotated::new(
        "Index file v2 payload (format-spec/v2/trees-index.md 2), the bytes inside the envelope",
        &[
            "Lists the two packs of ../index-payload.hex (pack-zstd.hex and the synthetic pack of",
            "pack-trailer-footer.hex), packs sorted by id, blob records by blob id, and supersedes",
            "two index files, ids BLAKE3(\"superseded index file A\") and (\"... B\").",
        ],
    );
    spec_index_v2_payload(&mut a, &golden_supersedes(), &entries);
    let engine = index_file::encode_payload_v2(&golden_supersedes(), &entries).unwrap();
    let golden = pinned("v2/index-payload.hex", &a, &engine);
    let decoded = index_file::decode_payload_v2(&golden, "golden", 0).unwrap();
    let mut want = entries.clone();
    want.sort_by_key(|p| p.pack);
    assert_eq!(decoded.packs, want, "decodes to the packs' own trailers");
    let mut sup = golden_supersedes();
    sup.sort();
    assert_eq!(decoded.supersedes, sup);
}

#[test]
fn index_v2_file_decodes() {
    let entries = golden_index_entries();
    let golden = frozen("v2/index-file.hex", || {
        let sealed = index_file::encode_v2(&golden_supersedes(), &entries).unwrap();
        let stored = &sealed[16..sealed.len() - 32];
        let mut a = Annotated::new(
            "Index file v2: envelope version 2 (zstd codec) around v2/index-payload.hex (FROZEN: decode-only vector)",
            &["File name = BLAKE3-256 of these bytes."],
        );
        spec_envelope(&mut a, 2, 2, 1, 0, stored, false);
        assert_eq!(a.bytes, sealed);
        a
    });
    assert_eq!(&golden[..8], b"ARCF\x02\x02\x01\x00");
    let f = index_file::decode_file(&golden, "golden", 0).unwrap();
    let mut want = entries.clone();
    want.sort_by_key(|p| p.pack);
    assert_eq!(f.packs, want);
    assert_eq!(f.supersedes.len(), 2);
    // The v1 decoder entry point reads it too.
    assert_eq!(index_file::decode(&golden, "golden").unwrap(), want);
}

/// An index file as a v2 repository stores it (crypto.md 5.1 around
/// section 2 of trees-index.md): the envelope of index-file.hex, with the
/// packs' lengths counting their sealed trailers (nonce and tag, 40 bytes
/// more than the trailer the index file copies), sealed as a file.
#[test]
fn index_v2_file_sealed() {
    let keys = keys();
    let entries: Vec<PackEntry> = golden_index_entries()
        .into_iter()
        .map(|mut p| {
            p.pack_len += sealed::OVERHEAD as u64;
            p
        })
        .collect();
    let nonce = [0x32u8; 24];
    let header = *b"ARCS\x01\x00\x00\x00";
    let golden = frozen("v2/index-file-sealed.hex", || {
        let plain = index_file::encode_v2(&golden_supersedes(), &entries).unwrap();
        let bytes =
            [header.to_vec(), keys.seal_with_nonce(Purpose::INDEX_FILE, &header, &plain, nonce).unwrap()].concat();
        let mut a = Annotated::new(
            "Index file v2 as stored in a v2 repository: a sealed file (crypto.md 5.1) (FROZEN: decode-only vector)",
            &[
                "Master secret 00 01 .. 1f (subkeys.txt), nonce 24 * 0x32. The plaintext is an index file v2",
                "(envelope version 2, zstd) listing the packs of index-payload.hex with pack_len + 40 (their",
                "trailers are sealed), superseding the same two files. File name = BLAKE3-256 of these bytes.",
            ],
        );
        a.field("magic \"ARCS\", version 1, reserved", &header, false);
        a.field("nonce", &nonce, false);
        a.field(
            "ciphertext || tag (metadata subkey, label \"index file\", ad = the 8 header bytes)",
            &bytes[32..],
            false,
        );
        assert_eq!(a.bytes, bytes);
        a
    });
    let plain = sealed::open_file(&keys, Purpose::INDEX_FILE, &[], &golden, "index file", "golden").unwrap();
    assert_eq!(&plain[..8], b"ARCF\x02\x02\x01\x00", "an index file v2 envelope inside");
    // The sealing is the spec's, byte for byte.
    let spec = spec_seal(spec_subkey("arc 2026-12 format v2 metadata sealing"), "index file", &header, nonce, &plain);
    assert_bytes_eq(&golden[8..], &spec, "index-file-sealed.hex: not the spec's sealing of its plaintext");
    let f = index_file::decode_file(&plain, "golden", sealed::OVERHEAD as u64).unwrap();
    let mut want = entries.clone();
    want.sort_by_key(|p| p.pack);
    assert_eq!(f.packs, want);
    let mut sup = golden_supersedes();
    sup.sort();
    assert_eq!(f.supersedes, sup);
    // A box sealed for another purpose, or the plain envelope, is refused.
    assert!(sealed::open_file(&keys, Purpose::SNAPSHOT, &[], &golden, "snapshot", "golden").is_err());
    assert!(sealed::open_file(&keys, Purpose::INDEX_FILE, &[], &plain, "index file", "golden").is_err());
}
