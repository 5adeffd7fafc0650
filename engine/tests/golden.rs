//! Golden vectors for repository format v1 (`format-spec/SPEC.md`).
//!
//! Every vector lives in `format-spec/vectors/` (see its README). Two kinds:
//!
//! * **pinned** vectors hold structures without compressed bytes. They are
//!   checked both ways: the engine's encoding of the expected value must equal
//!   the golden bytes, and decoding the golden bytes must give the expected
//!   value. This file also carries a second, field-by-field encoder written
//!   from SPEC.md's byte tables (`spec_*` below); the engine must agree with
//!   it too, so the spec, the vectors and the code cannot drift apart.
//! * **frozen** vectors contain zstd output, whose exact bytes may change
//!   between zstd versions. They are written once and from then on only
//!   decoded: every arc that reads v1 must decode them to the expected values.
//!
//! `ARC_REGENERATE_VECTORS=1 cargo test -p arc-engine --test golden` rewrites
//! the pinned vectors (and writes frozen ones that are missing). A frozen
//! vector is never rewritten: to replace one, delete it deliberately. Any
//! regeneration is a format change: update SPEC.md in the same commit.

use std::io::Read;
use std::path::PathBuf;

use arc_engine::chunker::{Chunker, StreamChunker};
use arc_engine::format::config::{ChunkerParams, CompressionAlgorithm, CompressionParams, Config, REPO_FORMAT_VERSION};
use arc_engine::format::envelope::{self, Codec, FileType};
use arc_engine::format::index_file::{self, PackEntry};
use arc_engine::format::lock::LockFile;
use arc_engine::format::pack::{
    self, encode_footer, parse_pack, BlobKind, BlobRecord, FrameCodec, FrameRecord, Trailer,
};
use arc_engine::format::snapshot::{SnapshotFile, Summary};
use arc_engine::format::tree::{Node, NodeKind, Timestamp, Tree};
use arc_engine::id::{Id, IdScheme};
use arc_engine::Error;

/// Format v2 trees and index files (trees-index.md).
#[path = "golden/v2_shapes.rs"]
mod v2_shapes;

// ---------------------------------------------------------------------------
// Vector files
// ---------------------------------------------------------------------------

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../format-spec/vectors")
}

fn regenerate() -> bool {
    std::env::var("ARC_REGENERATE_VECTORS").is_ok_and(|v| v == "1")
}

/// `name` may have a directory part (`v2/…`).
fn write_atomic(name: &str, text: &str) {
    let path = vectors_dir().join(name);
    let dir = path.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = path.file_name().unwrap().to_string_lossy();
    let tmp = dir.join(format!(".{file}.{}.{n}.tmp", std::process::id()));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

fn read_vector(name: &str) -> String {
    let p = vectors_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "cannot read golden vector {}: {e}\n(regenerate with ARC_REGENERATE_VECTORS=1 only for an intended format change)",
            p.display()
        )
    })
}

/// Parses an annotated hex file: `#` starts a comment that runs to the end of
/// the line; whitespace is ignored; everything else is hex digits.
fn parse_hex(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    hex::decode(&digits).expect("vector file is not valid hex")
}

#[track_caller]
fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    let window = |b: &[u8]| hex::encode(&b[at.saturating_sub(8).min(b.len())..(at + 24).min(b.len())]);
    panic!(
        "{what}\n  lengths: got {} bytes, want {} bytes\n  first difference at byte {at} ({at:#x})\n  got  ..{}..\n  want ..{}..",
        got.len(),
        want.len(),
        window(got),
        window(want)
    );
}

/// A vector pinned in both directions; returns the golden bytes.
#[track_caller]
fn pinned(name: &str, spec: &Annotated, engine: &[u8]) -> Vec<u8> {
    assert_bytes_eq(
        engine,
        &spec.bytes,
        &format!("{name}: the engine's encoding differs from the spec-side encoder in golden.rs"),
    );
    if regenerate() {
        write_atomic(name, &spec.text);
    }
    let golden = parse_hex(&read_vector(name));
    assert_bytes_eq(engine, &golden, &format!("{name}: the engine's encoding differs from the golden vector"));
    golden
}

/// A frozen vector: written once (when missing and regenerating), then only
/// read. Returns the golden bytes.
fn frozen(name: &str, make: impl FnOnce() -> Annotated) -> Vec<u8> {
    if !vectors_dir().join(name).exists() {
        assert!(
            regenerate(),
            "frozen vector {name} is missing; it must be restored from version control, not regenerated"
        );
        write_atomic(name, &make().text);
    }
    parse_hex(&read_vector(name))
}

// ---------------------------------------------------------------------------
// Annotated hex writer: the spec-side encoder writes through this, so every
// golden file explains itself field by field with offsets.
// ---------------------------------------------------------------------------

struct Annotated {
    bytes: Vec<u8>,
    text: String,
}

impl Annotated {
    fn new(title: &str, about: &[&str]) -> Annotated {
        let mut text = format!("# {title}\n#\n");
        for l in about {
            text.push_str(&format!("# {l}\n"));
        }
        text.push_str(
            "#\n# Format: annotated hex. '#' starts a comment to the end of the line;\n\
             # whitespace is ignored; the remaining hex digits are the bytes.\n\
             # '@off +len' gives each field's offset and size in bytes. Integers are\n\
             # little-endian. Generated by engine/tests/golden.rs; see\n\
             # format-spec/vectors/README.md.\n",
        );
        Annotated { bytes: Vec::new(), text }
    }

    fn note(&mut self, s: &str) {
        self.text.push_str(&format!("#\n# -- {s}\n"));
    }

    fn field(&mut self, label: &str, b: &[u8], ascii: bool) {
        self.text.push_str(&format!("# @{:#06x} +{} {label}\n", self.bytes.len(), b.len()));
        for chunk in b.chunks(32) {
            let h = hex::encode(chunk);
            if ascii {
                let shown: String = chunk
                    .iter()
                    .map(|&c| if (0x20..0x7f).contains(&c) && c != b'#' { c as char } else { '.' })
                    .collect();
                self.text.push_str(&format!("{h:<64}  # |{shown}|\n"));
            } else {
                self.text.push_str(&format!("{h}\n"));
            }
        }
        self.bytes.extend_from_slice(b);
    }

    fn u8(&mut self, label: &str, v: u8) {
        self.field(&format!("{label} = {v}"), &[v], false);
    }
    fn u16(&mut self, label: &str, v: u16) {
        self.field(&format!("{label} = {v} (u16)"), &v.to_le_bytes(), false);
    }
    fn u32(&mut self, label: &str, v: u32) {
        self.field(&format!("{label} = {v} (u32)"), &v.to_le_bytes(), false);
    }
    fn u64(&mut self, label: &str, v: u64) {
        self.field(&format!("{label} = {v} (u64)"), &v.to_le_bytes(), false);
    }
    fn i64(&mut self, label: &str, v: i64) {
        self.field(&format!("{label} = {v} (i64)"), &v.to_le_bytes(), false);
    }
}

// ---------------------------------------------------------------------------
// Spec-side encoders, written from SPEC.md's byte tables.
// ---------------------------------------------------------------------------

/// SPEC.md "The envelope".
fn spec_envelope(a: &mut Annotated, ty: u8, version: u8, codec: u8, reserved: u8, stored: &[u8], text: bool) {
    let start = a.bytes.len();
    let ty_name = match ty {
        1 => "config",
        2 => "index file",
        3 => "snapshot",
        4 => "lock",
        _ => "unknown",
    };
    let codec_name = match codec {
        0 => "raw",
        1 => "zstd",
        _ => "unknown",
    };
    a.field("magic \"ARCF\"", b"ARCF", true);
    a.u8(&format!("file type ({ty_name})"), ty);
    a.u8("format version of this file type", version);
    a.u8(&format!("payload codec ({codec_name})"), codec);
    a.u8("reserved, must be 0", reserved);
    a.u64("stored payload length N", stored.len() as u64);
    a.field("stored payload", stored, text);
    let sum = *blake3::hash(&a.bytes[start..]).as_bytes();
    a.field("BLAKE3-256 of bytes [0, 16+N)", &sum, false);
}

fn trailer_len(t: &Trailer) -> usize {
    8 + 24 * t.frames.len() + 48 * t.blobs.len()
}

/// SPEC.md "Packs": the trailer.
fn spec_trailer(a: &mut Annotated, t: &Trailer) {
    a.note(&format!("trailer ({} bytes)", trailer_len(t)));
    a.u32("frame_count", t.frames.len() as u32);
    a.u32("blob_count", t.blobs.len() as u32);
    for (i, f) in t.frames.iter().enumerate() {
        a.u64(&format!("frame[{i}].offset"), f.offset);
        a.u32(&format!("frame[{i}].stored_len"), f.stored_len);
        a.u32(&format!("frame[{i}].raw_len"), f.raw_len);
        a.u8(&format!("frame[{i}].codec (0 raw, 1 zstd)"), f.codec as u8);
        a.field(&format!("frame[{i}].reserved, 0"), &[0; 7], false);
    }
    for (i, b) in t.blobs.iter().enumerate() {
        a.field(&format!("blob[{i}].id"), &b.id.0, false);
        a.u8(&format!("blob[{i}].kind (0 data, 1 tree)"), b.kind as u8);
        a.field(&format!("blob[{i}].reserved, 0"), &[0; 3], false);
        a.u32(&format!("blob[{i}].frame"), b.frame);
        a.u32(&format!("blob[{i}].offset_in_frame"), b.offset_in_frame);
        a.u32(&format!("blob[{i}].raw_len"), b.raw_len);
    }
}

/// SPEC.md "Packs": the footer, given the trailer's bytes.
fn spec_footer(a: &mut Annotated, trailer: &[u8]) {
    a.note("footer (40 bytes)");
    a.field("BLAKE3-256 of the trailer", blake3::hash(trailer).as_bytes(), false);
    a.u32("trailer_len", trailer.len() as u32);
    a.field("magic \"ARCT\"", b"ARCT", true);
}

/// SPEC.md "Trees". `nodes` must already be in name order.
fn spec_tree(a: &mut Annotated, nodes: &[Node]) {
    a.field("magic \"ARCTREE\"", b"ARCTREE", true);
    a.u8("tree version", 1);
    a.u32("entry_count", nodes.len() as u32);
    for (i, n) in nodes.iter().enumerate() {
        a.note(&format!("entry {i}: {:?} ({:?})", String::from_utf8_lossy(&n.name), n.kind));
        a.u8("kind", n.kind as u8);
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
        a.i64("ctime_sec", n.ctime.sec);
        a.u32("ctime_nsec", n.ctime.nsec);
        a.u64("size", n.size);
        a.u64("inode", n.inode);
        a.u64("device", n.device);
        a.u32("nlink", n.nlink);
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
        match n.kind {
            NodeKind::File | NodeKind::Hardlink => {
                a.u32("chunk_count", n.chunks.len() as u32);
                for (j, c) in n.chunks.iter().enumerate() {
                    a.field(&format!("chunk[{j}] id"), &c.0, false);
                }
            }
            NodeKind::Dir => a.field("subtree id", &n.subtree.expect("dir has a subtree").0, false),
            _ => {}
        }
    }
}

/// SPEC.md "Index files": the (uncompressed) payload.
fn spec_index_payload(a: &mut Annotated, packs: &[PackEntry]) {
    a.field("magic \"ARCIDX\"", b"ARCIDX", true);
    a.field("reserved, 0", &[0, 0], false);
    a.u32("pack_count", packs.len() as u32);
    for (i, p) in packs.iter().enumerate() {
        a.note(&format!("pack entry {i}"));
        a.field("pack id", &p.pack.0, false);
        a.u64("pack_len", p.pack_len);
        a.u32("trailer_len", trailer_len(&p.trailer) as u32);
        spec_trailer(a, &p.trailer);
    }
}

// ---------------------------------------------------------------------------
// Expected values
// ---------------------------------------------------------------------------

fn time(s: &str) -> chrono::DateTime<chrono::Utc> {
    s.parse().expect("valid RFC 3339 time")
}

fn label_id(label: &str) -> Id {
    Id::hash(label.as_bytes())
}

fn empty_tree_id() -> Id {
    Id::hash(&Tree::default().encode().unwrap())
}

/// One entry of each kind, already in name order (the order SPEC.md
/// requires). The tree is a snapshot's root, so the hardlink's target (the
/// snapshot path of the first link) is just "file.txt".
fn golden_tree() -> Tree {
    let chunk_a = label_id("chunk one\n");
    let chunk_b = label_id("chunk two\n");
    let mtime = Timestamp { sec: 1_714_567_890, nsec: 123_456_789 };
    let ctime = Timestamp { sec: 1_714_567_891, nsec: 987_654_321 };
    let owned = |kind, name: &[u8], mode| {
        let mut n = Node::new(kind, name.to_vec());
        n.mode = mode;
        n.uid = 1000;
        n.gid = 100;
        n.user = b"alice".to_vec();
        n.group = b"users".to_vec();
        n.mtime = mtime;
        n.ctime = ctime;
        n.device = 0xfd01;
        n
    };

    let mut blockdev = owned(NodeKind::BlockDevice, b"blockdev", 0o060660);
    blockdev.uid = 0;
    blockdev.gid = 6;
    blockdev.user = b"root".to_vec();
    blockdev.group = b"disk".to_vec();
    blockdev.inode = 11;
    blockdev.rdev = 0x0800; // makedev(8, 0)

    let mut chardev = owned(NodeKind::CharDevice, b"chardev", 0o020666);
    chardev.uid = 0;
    chardev.gid = 0;
    chardev.user = b"root".to_vec();
    chardev.group = b"root".to_vec();
    chardev.inode = 12;
    chardev.rdev = 0x0103; // makedev(1, 3)

    let mut dir = owned(NodeKind::Dir, b"dir", 0o040755);
    dir.inode = 13;
    dir.nlink = 2;
    dir.subtree = Some(empty_tree_id());

    let mut fifo = owned(NodeKind::Fifo, b"fifo", 0o010600);
    fifo.inode = 14;

    let mut file = owned(NodeKind::File, b"file.txt", 0o100644);
    file.inode = 1_234_567;
    file.nlink = 2;
    file.size = 20;
    file.xattrs = vec![
        (b"security.selinux".to_vec(), b"unconfined_u:object_r:user_home_t:s0\0".to_vec()),
        (b"user.comment".to_vec(), b"caf\xe9 \x00\x01\xff".to_vec()),
    ];
    file.chunks = vec![chunk_a, chunk_b];

    let mut hardlink = file.clone();
    hardlink.kind = NodeKind::Hardlink;
    hardlink.name = b"hardlink".to_vec();
    hardlink.target = b"file.txt".to_vec();

    // A name that is not UTF-8 (Latin-1 e-acute), and a time before 1970.
    let mut socket = owned(NodeKind::Socket, b"socket-\xe9", 0o140755);
    socket.inode = 15;
    socket.mtime = Timestamp { sec: -86_400, nsec: 500_000_000 };
    socket.ctime = Timestamp { sec: -1, nsec: 999_999_999 };

    let mut symlink = owned(NodeKind::Symlink, b"symlink", 0o120777);
    symlink.inode = 16;
    symlink.target = b"dir/../file.txt".to_vec();
    symlink.xattrs = vec![(b"trusted.x".to_vec(), Vec::new())];

    Tree { nodes: vec![blockdev, chardev, dir, fifo, file, hardlink, socket, symlink] }
}

fn golden_tree_bytes() -> Vec<u8> {
    golden_tree().encode().unwrap()
}

fn golden_snapshot() -> SnapshotFile {
    SnapshotFile {
        time: time("2024-05-01T12:00:00.123456789Z"),
        host: "golden-host".into(),
        username: "alice".into(),
        uid: 1000,
        gid: 100,
        paths: vec!["/".into()],
        tags: vec!["daily".into(), "golden".into()],
        tree: Id::hash(&golden_tree_bytes()),
        parent: Some(label_id("arc golden parent snapshot")),
        program_version: "arc 0.1.0".into(),
        summary: Summary {
            backup_start: Some(time("2024-05-01T12:00:00.123456789Z")),
            backup_end: Some(time("2024-05-01T12:00:05Z")),
            files_new: 1,
            files_changed: 0,
            files_unchanged: 1,
            dirs: 2,
            other_entries: 5,
            total_bytes: 40,
            total_files: 2,
            bytes_read: 20,
            bytes_added: 20,
            bytes_added_stored: 1234,
            blobs_added: 4,
            errors: 0,
            entries_excluded: 0,
        },
        excludes: Vec::new(),
        original: None,
    }
}

/// The snapshot payload, written out by hand: field names, order and the
/// time format are part of the format.
fn golden_snapshot_json() -> String {
    let s = golden_snapshot();
    format!(
        concat!(
            r#"{{"time":"2024-05-01T12:00:00.123456789Z","host":"golden-host","username":"alice","uid":1000,"gid":100,"#,
            r#""paths":["/"],"tags":["daily","golden"],"tree":"{tree}","parent":"{parent}","program_version":"arc 0.1.0","#,
            r#""summary":{{"backup_start":"2024-05-01T12:00:00.123456789Z","backup_end":"2024-05-01T12:00:05Z","#,
            r#""files_new":1,"files_changed":0,"files_unchanged":1,"dirs":2,"other_entries":5,"total_bytes":40,"#,
            r#""total_files":2,"bytes_read":20,"bytes_added":20,"bytes_added_stored":1234,"blobs_added":4,"errors":0}}}}"#
        ),
        tree = s.tree.to_hex(),
        parent = s.parent.unwrap().to_hex()
    )
}

fn golden_config() -> Config {
    Config {
        version: 1,
        features: None,
        id: label_id("arc golden repository"),
        created: time("2024-05-01T00:00:00Z"),
        id_scheme: IdScheme::Blake3,
        file_chunker: ChunkerParams::default_files(),
        stream_chunker: ChunkerParams::default_streams(),
        compression: CompressionParams { algorithm: CompressionAlgorithm::Zstd, level: 3 },
        // A v1 config has none (format v2 README section 1).
        stream_compression: None,
        pack_size: 16 * 1024 * 1024,
        frame_size: 256 * 1024,
        protocol: None,
        encryption: None,
        content_keys: None,
        mac: None,
    }
}

fn golden_config_json() -> String {
    format!(
        r#"{{
  "version": 1,
  "id": "{id}",
  "created": "2024-05-01T00:00:00Z",
  "id_scheme": "blake3",
  "file_chunker": {{
    "algorithm": "fastcdc-2020",
    "min_size": 262144,
    "avg_size": 1048576,
    "max_size": 4194304
  }},
  "stream_chunker": {{
    "algorithm": "fastcdc-2020",
    "min_size": 65536,
    "avg_size": 262144,
    "max_size": 1048576
  }},
  "compression": {{
    "algorithm": "zstd",
    "level": 3
  }},
  "pack_size": 16777216,
  "frame_size": 262144
}}"#,
        id = label_id("arc golden repository").to_hex()
    )
}

fn golden_lock() -> LockFile {
    LockFile {
        exclusive: false,
        host: "golden-host".into(),
        pid: 4242,
        username: "alice".into(),
        time: time("2024-05-01T12:00:00Z"),
        refreshed: time("2024-05-01T12:05:00.5Z"),
        operation: "backup".into(),
    }
}

const GOLDEN_LOCK_JSON: &str = r#"{"exclusive":false,"host":"golden-host","pid":4242,"username":"alice","time":"2024-05-01T12:00:00Z","refreshed":"2024-05-01T12:05:00.500Z","operation":"backup"}"#;

/// A trailer with fixed (synthetic) frames: its pack's frames would end at
/// byte 71308. It lists a tree blob beside data blobs to pin both kind codes
/// (a v1 writer keeps them in separate packs, but readers must not rely on
/// that).
const SYNTHETIC_FRAMES_END: u64 = 71_308;

fn golden_trailer() -> Trailer {
    Trailer {
        frames: vec![
            FrameRecord { offset: 8, stored_len: 1000, raw_len: 4000, codec: FrameCodec::Zstd },
            FrameRecord { offset: 1008, stored_len: 300, raw_len: 300, codec: FrameCodec::Raw },
            FrameRecord { offset: 1308, stored_len: 70_000, raw_len: 1_048_576, codec: FrameCodec::Zstd },
        ],
        blobs: vec![
            BlobRecord { id: label_id("blob 0"), kind: BlobKind::Data, frame: 0, offset_in_frame: 0, raw_len: 1500 },
            BlobRecord { id: label_id("blob 1"), kind: BlobKind::Tree, frame: 0, offset_in_frame: 1500, raw_len: 2500 },
            BlobRecord { id: label_id("blob 2"), kind: BlobKind::Data, frame: 1, offset_in_frame: 0, raw_len: 300 },
            BlobRecord {
                id: label_id("blob 3"),
                kind: BlobKind::Data,
                frame: 2,
                offset_in_frame: 0,
                raw_len: 1_048_576,
            },
        ],
    }
}

/// The blobs of the frozen zstd pack, grouped by frame: three small text
/// blobs sharing a zstd frame, an incompressible blob stored raw, and a big
/// blob with a zstd frame of its own.
fn golden_pack_frames() -> Vec<Vec<Vec<u8>>> {
    let small_a = b"Hello, arc! ".repeat(20);
    let small_b = b"{\"name\":\"arc\",\"kind\":\"backup\",\"format\":1}\n".repeat(5);
    let small_c = b"The quick brown fox jumps over the lazy dog.\n".repeat(8);
    let random = xorshift_bytes(256);
    let big: Vec<u8> = (0..40_000u32).map(|i| b"arc-format-v1 "[(i % 14) as usize] ^ ((i / 997) as u8)).collect();
    vec![vec![small_a, small_b, small_c], vec![random], vec![big]]
}

fn expected_pack_codecs() -> [FrameCodec; 3] {
    [FrameCodec::Zstd, FrameCodec::Raw, FrameCodec::Zstd]
}

/// Builds the pack the way the packer does (frames in order, zstd level 3,
/// raw when compression does not shrink), annotated.
fn build_golden_pack() -> Annotated {
    let mut a = Annotated::new(
        "Pack with zstd frames (FROZEN: decode-only vector)",
        &[
            "Three data frames: 0 = three small blobs sharing one zstd frame,",
            "1 = an incompressible blob stored raw, 2 = one big blob in its own zstd",
            "frame. Readers must decode it to the blobs listed in golden.rs",
            "(golden_pack_frames). The zstd bytes are whatever zstd produced when the",
            "file was written; they are never compared, only decompressed.",
        ],
    );
    a.note("header (8 bytes)");
    a.field("magic \"ARCPACK\"", b"ARCPACK", true);
    a.u8("pack version", 1);
    let mut t = Trailer::default();
    for (fi, blobs) in golden_pack_frames().iter().enumerate() {
        let raw: Vec<u8> = blobs.concat();
        let compressed = zstd::bulk::compress(&raw, 3).unwrap();
        let (stored, codec) =
            if compressed.len() < raw.len() { (compressed, FrameCodec::Zstd) } else { (raw.clone(), FrameCodec::Raw) };
        assert_eq!(codec, expected_pack_codecs()[fi]);
        let mut off = 0u32;
        for b in blobs {
            t.blobs.push(BlobRecord {
                id: Id::hash(b),
                kind: BlobKind::Data,
                frame: fi as u32,
                offset_in_frame: off,
                raw_len: b.len() as u32,
            });
            off += b.len() as u32;
        }
        t.frames.push(FrameRecord {
            offset: a.bytes.len() as u64,
            stored_len: stored.len() as u32,
            raw_len: raw.len() as u32,
            codec,
        });
        a.note(&format!("frame {fi} ({codec:?}, raw_len {})", raw.len()));
        a.field(&format!("frame {fi} stored bytes"), &stored, false);
    }
    let start = a.bytes.len();
    spec_trailer(&mut a, &t);
    assert_bytes_eq(&t.encode(), &a.bytes[start..], "pack trailer: engine vs spec-side encoder");
    let trailer = a.bytes[start..].to_vec();
    spec_footer(&mut a, &trailer);
    assert_bytes_eq(&encode_footer(&trailer), &a.bytes[a.bytes.len() - 40..], "pack footer: engine vs spec");
    assert_eq!(parse_pack(&a.bytes, "golden", None).unwrap(), t);
    a
}

fn golden_pack_bytes() -> Vec<u8> {
    frozen("pack-zstd.hex", build_golden_pack)
}

/// The index file's entries: the frozen zstd pack (as its trailer says) and
/// the synthetic trailer's pack.
fn golden_index_entries() -> Vec<PackEntry> {
    let pack_bytes = golden_pack_bytes();
    let trailer = parse_pack(&pack_bytes, "pack-zstd", None).unwrap();
    let synthetic = golden_trailer();
    vec![
        PackEntry { pack: Id::hash(&pack_bytes), pack_len: pack_bytes.len() as u64, trailer },
        PackEntry {
            pack: label_id("arc golden synthetic pack"),
            pack_len: SYNTHETIC_FRAMES_END + trailer_len(&synthetic) as u64 + pack::FOOTER_LEN,
            trailer: synthetic,
        },
    ]
}

// ---------------------------------------------------------------------------
// Envelope-wrapped JSON files
// ---------------------------------------------------------------------------

#[test]
fn envelope_snapshot() {
    let expected = golden_snapshot();
    let json = golden_snapshot_json();
    let mut a = Annotated::new(
        "Snapshot file: envelope (raw codec) around the snapshot JSON",
        &["File name = BLAKE3-256 of all of these bytes. The JSON is SnapshotFile", "of golden.rs (golden_snapshot)."],
    );
    spec_envelope(&mut a, 3, 1, 0, 0, json.as_bytes(), true);
    let golden = pinned("envelope-snapshot.hex", &a, &expected.encode());
    assert_eq!(SnapshotFile::decode(&golden, "golden").unwrap(), expected);
    // The envelope layer alone.
    let (version, payload) = envelope::open(FileType::Snapshot, 1, "golden", &golden).unwrap();
    assert_eq!((version, payload.as_slice()), (1, json.as_bytes()));
    assert_eq!(envelope::seal(FileType::Snapshot, 1, Codec::Raw, json.as_bytes()), golden);
    // Optional and defaulted fields: `tags` may be absent, `parent` may be
    // null or absent.
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let obj = v.as_object_mut().unwrap();
    obj.remove("tags");
    obj.remove("parent");
    let sealed = envelope::seal(FileType::Snapshot, 1, Codec::Raw, &serde_json::to_vec(&v).unwrap());
    let s = SnapshotFile::decode(&sealed, "x").unwrap();
    assert!(s.tags.is_empty() && s.parent.is_none());
}

#[test]
fn envelope_config() {
    let expected = golden_config();
    let json = golden_config_json();
    let mut a = Annotated::new(
        "Repository config: envelope (raw codec) around pretty-printed JSON",
        &["The config of golden.rs (golden_config): default chunkers, zstd level 3,", "16 MiB packs, 256 KiB frames."],
    );
    spec_envelope(&mut a, 1, 1, 0, 0, json.as_bytes(), true);
    let golden = pinned("config.hex", &a, &expected.encode());
    assert_eq!(Config::decode(&golden).unwrap(), expected);
    assert_eq!(expected.version, 1);
}

#[test]
fn envelope_lock() {
    let expected = golden_lock();
    let mut a = Annotated::new("Lock file: envelope (raw codec) around the lock JSON", &[]);
    spec_envelope(&mut a, 4, 1, 0, 0, GOLDEN_LOCK_JSON.as_bytes(), true);
    let golden = pinned("lock.hex", &a, &expected.encode());
    assert_eq!(LockFile::decode(&golden, "golden").unwrap(), expected);
}

// ---------------------------------------------------------------------------
// Packs
// ---------------------------------------------------------------------------

#[test]
fn pack_trailer_and_footer() {
    let expected = golden_trailer();
    let mut a = Annotated::new(
        "Pack trailer || footer for a fixed set of frames and blobs",
        &[
            "The frames themselves are not included: they would occupy bytes",
            "[8, 71308) of the pack, so the trailer starts at byte 71308 and the",
            "pack is 71308 + trailer_len + 40 bytes long.",
        ],
    );
    spec_trailer(&mut a, &expected);
    let tlen = a.bytes.len();
    let trailer_bytes = a.bytes.clone();
    spec_footer(&mut a, &trailer_bytes);
    let mut engine = expected.encode();
    engine.extend_from_slice(&encode_footer(&expected.encode()));
    let golden = pinned("pack-trailer-footer.hex", &a, &engine);

    let (trailer, footer) = golden.split_at(golden.len() - pack::FOOTER_LEN as usize);
    assert_eq!(trailer.len(), tlen);
    assert_eq!(Trailer::decode(trailer, "golden", SYNTHETIC_FRAMES_END).unwrap(), expected);
    let (sum, len) = pack::decode_footer(footer, "golden").unwrap();
    assert_eq!((sum, len as usize), (Id::hash(trailer), tlen));
    let pack_len = SYNTHETIC_FRAMES_END + tlen as u64 + pack::FOOTER_LEN;
    let (start, len2, sum2) = pack::trailer_range(footer, "golden", pack_len).unwrap();
    assert_eq!((start, len2, sum2), (SYNTHETIC_FRAMES_END, len, sum));
    // The trailer only fits the pack it was written for.
    assert!(Trailer::decode(trailer, "golden", SYNTHETIC_FRAMES_END + 1).is_err());
}

#[test]
fn pack_with_zstd_frames_decodes() {
    let golden = golden_pack_bytes();
    let name = "pack-zstd";
    assert_eq!(&golden[..8], pack::HEADER);

    // How a reader finds the trailer: the last 40 bytes, then one ranged read.
    let len = golden.len() as u64;
    let footer = &golden[golden.len() - 40..];
    let (start, tlen, sum) = pack::trailer_range(footer, name, len).unwrap();
    let tbytes = &golden[start as usize..start as usize + tlen as usize];
    assert_eq!(Id::hash(tbytes), sum);
    let trailer = Trailer::decode(tbytes, name, start).unwrap();
    assert_eq!(parse_pack(&golden, name, None).unwrap(), trailer);

    // Everything about the frames except the zstd bytes is fixed.
    let frames = golden_pack_frames();
    assert_eq!(trailer.frames.len(), frames.len());
    let mut expected_blobs = Vec::new();
    for (fi, (f, blobs)) in trailer.frames.iter().zip(&frames).enumerate() {
        assert_eq!(f.codec, expected_pack_codecs()[fi]);
        assert_eq!(f.raw_len as usize, blobs.iter().map(Vec::len).sum::<usize>());
        let mut off = 0;
        for b in blobs {
            expected_blobs.push((
                BlobRecord {
                    id: Id::hash(b),
                    kind: BlobKind::Data,
                    frame: fi as u32,
                    offset_in_frame: off,
                    raw_len: b.len() as u32,
                },
                b.clone(),
            ));
            off += b.len() as u32;
        }
    }
    assert_eq!(trailer.blobs, expected_blobs.iter().map(|(r, _)| *r).collect::<Vec<_>>());

    // How a reader extracts one blob: ranged read of its frame, decompress,
    // slice, verify the BLAKE3 of the slice against the blob id.
    for (rec, content) in &expected_blobs {
        let f = &trailer.frames[rec.frame as usize];
        let stored = &golden[f.offset as usize..(f.offset + u64::from(f.stored_len)) as usize];
        let raw = pack::decode_frame(stored, f, name).unwrap();
        let blob = &raw[rec.offset_in_frame as usize..(rec.offset_in_frame + rec.raw_len) as usize];
        assert_eq!(Id::hash(blob), rec.id);
        assert_eq!(blob, content.as_slice());
    }
}

// ---------------------------------------------------------------------------
// Trees
// ---------------------------------------------------------------------------

#[test]
fn tree_with_every_kind() {
    let mut expected = golden_tree();
    let mut a = Annotated::new(
        "Tree blob with one entry of each kind",
        &[
            "A snapshot's root tree: blockdev, chardev, dir (subtree = the empty",
            "tree), fifo, file.txt (2 chunks, 2 xattrs, nlink 2), hardlink (kind 4,",
            "target = \"file.txt\", same chunk list), socket-<0xe9> (a non-UTF-8",
            "name, times before 1970), symlink. The blob id is BLAKE3-256 of these bytes.",
        ],
    );
    spec_tree(&mut a, &expected.nodes);
    let golden = pinned("tree.hex", &a, &expected.encode().unwrap());
    let id = Id::hash(&golden);
    assert_eq!(Tree::decode(&golden, &id).unwrap(), expected);

    // Encoding sorts by name bytes: any input order gives the same blob.
    let mut shuffled = golden_tree();
    shuffled.nodes.reverse();
    assert_eq!(shuffled.encode().unwrap(), golden);

    // The empty tree (used as the dir entry's subtree).
    let empty = Tree::default().encode().unwrap();
    assert_eq!(hex::encode(&empty), "4152435452454501".to_owned() + "00000000");
    assert!(Tree::decode(&empty, &Id::hash(&empty)).unwrap().nodes.is_empty());
}

// ---------------------------------------------------------------------------
// Index files
// ---------------------------------------------------------------------------

#[test]
fn index_file_payload() {
    let entries = golden_index_entries();
    let mut a = Annotated::new(
        "Index file payload (the bytes inside the envelope, before zstd)",
        &[
            "Lists two packs: pack-zstd.hex (its real id, length and trailer) and a",
            "synthetic pack whose trailer is pack-trailer-footer.hex.",
        ],
    );
    spec_index_payload(&mut a, &entries);
    let sealed = index_file::encode(&entries);
    let (version, engine_payload) = envelope::open(FileType::Index, 1, "golden", &sealed).unwrap();
    assert_eq!(version, 1);
    let golden = pinned("index-payload.hex", &a, &engine_payload);

    // Decoding the pinned payload, whatever zstd makes of it.
    let resealed = envelope::seal(FileType::Index, 1, Codec::Zstd, &golden);
    assert_eq!(index_file::decode(&resealed, "golden").unwrap(), entries);

    // Each entry repeats its pack's trailer byte for byte.
    let pack_bytes = golden_pack_bytes();
    let tlen = trailer_len(&entries[0].trailer);
    let in_pack = &pack_bytes[pack_bytes.len() - 40 - tlen..pack_bytes.len() - 40];
    assert_eq!(&golden[12 + 32 + 8 + 4..12 + 44 + tlen], in_pack);
    let second = 12 + 44 + tlen;
    assert_eq!(&golden[second + 44..], golden_trailer().encode().as_slice());
}

#[test]
fn index_file_decodes() {
    let entries = golden_index_entries();
    let golden = frozen("index-file.hex", || {
        let sealed = index_file::encode(&entries);
        let stored = &sealed[16..sealed.len() - 32];
        let mut a = Annotated::new(
            "Index file: envelope (zstd codec) around index-payload.hex (FROZEN: decode-only vector)",
            &["Decodes to the two pack entries of index-payload.hex. File name = BLAKE3-256 of these bytes."],
        );
        spec_envelope(&mut a, 2, 1, 1, 0, stored, false);
        assert_eq!(a.bytes, sealed);
        a
    });
    assert_eq!(&golden[..8], b"ARCF\x02\x01\x01\x00");
    assert_eq!(index_file::decode(&golden, "golden").unwrap(), entries);
    let (_, payload) = envelope::open(FileType::Index, 1, "golden", &golden).unwrap();
    let mut spec_payload = Annotated::new("", &[]);
    spec_index_payload(&mut spec_payload, &entries);
    assert_eq!(payload, spec_payload.bytes, "see index-payload.hex");
}

// ---------------------------------------------------------------------------
// Readers reject what they do not know
// ---------------------------------------------------------------------------

#[test]
fn readers_reject_unknown_versions_and_codes() {
    let json = golden_snapshot_json();
    let envelope_with = |ty, version, codec, reserved| {
        let mut a = Annotated::new("", &[]);
        spec_envelope(&mut a, ty, version, codec, reserved, json.as_bytes(), false);
        a.bytes
    };
    let is_corrupt = |r: Result<SnapshotFile, Error>| matches!(r, Err(Error::Corrupt { .. }));
    assert!(SnapshotFile::decode(&envelope_with(3, 1, 0, 0), "ok").is_ok());
    let newer = SnapshotFile::decode(&envelope_with(3, 2, 0, 0), "v2");
    assert!(matches!(&newer, Err(e) if e.to_string().contains("version 2")), "{newer:?}");
    assert!(is_corrupt(SnapshotFile::decode(&envelope_with(3, 0, 0, 0), "v0")));
    assert!(is_corrupt(SnapshotFile::decode(&envelope_with(3, 1, 2, 0), "codec 2")));
    assert!(is_corrupt(SnapshotFile::decode(&envelope_with(3, 1, 0, 1), "reserved")));
    assert!(is_corrupt(SnapshotFile::decode(&envelope_with(2, 1, 0, 0), "wrong type")));
    let mut flipped = envelope_with(3, 1, 0, 0);
    flipped[20] ^= 1;
    assert!(is_corrupt(SnapshotFile::decode(&flipped, "checksum")));

    // A repository of a newer format is reported as such.
    let mut newer_config = golden_config();
    newer_config.version = REPO_FORMAT_VERSION + 1;
    newer_config.features = Some(Vec::new());
    assert!(matches!(
        Config::decode(&newer_config.encode()),
        Err(Error::UnsupportedVersion { found, supported: REPO_FORMAT_VERSION }) if found == REPO_FORMAT_VERSION + 1
    ));
    // A v2 repository needing a feature this arc lacks names the feature
    // and is not called corrupt.
    let mut needs = golden_config();
    needs.version = 2;
    needs.features = Some(vec!["teleport".into()]);
    let err = Config::decode(&needs.encode()).unwrap_err();
    assert!(matches!(&err, Error::NeedsFeature { feature } if feature == "teleport"), "{err:?}");
    assert_eq!(err.to_string(), "this repository needs a newer arc (feature teleport)");
    // The features list is required in v2 and not allowed in v1.
    needs.features = None;
    assert!(matches!(Config::decode(&needs.encode()), Err(Error::Corrupt { .. })));
    let mut v1_features = golden_config();
    v1_features.features = Some(Vec::new());
    assert!(matches!(Config::decode(&v1_features.encode()), Err(Error::Corrupt { .. })));

    // Pack header version byte.
    let mut p = golden_pack_bytes();
    p[7] = 2;
    assert!(parse_pack(&p, "v2", None).is_err());

    // Trailer: unknown frame codec (2 is a delta frame, streams.md), unknown
    // blob kind, reserved bytes.
    let t = golden_trailer().encode();
    let frame0_codec = 8 + 16;
    let blob0_kind = 8 + 24 * 3 + 32;
    for (at, v) in [(frame0_codec, 3u8), (frame0_codec + 1, 1), (blob0_kind, 2), (blob0_kind + 1, 1)] {
        let mut bad = t.clone();
        bad[at] = v;
        assert!(Trailer::decode(&bad, "bad", SYNTHETIC_FRAMES_END).is_err(), "byte {at} = {v}");
    }

    // Tree: version byte, unknown kind, nanoseconds out of range.
    let tree = golden_tree_bytes();
    let mut bad = tree.clone();
    bad[7] = 2;
    assert!(Tree::decode(&bad, &Id::hash(&bad)).is_err());
    let mut bad = tree.clone();
    bad[12] = 9;
    assert!(Tree::decode(&bad, &Id::hash(&bad)).is_err());
    let mut t = golden_tree();
    t.nodes[0].mtime.nsec = 1_000_000_000;
    assert!(t.encode().is_err(), "the encoder refuses what the decoder would");
    let mut bad = tree.clone();
    // mtime_nsec of the first entry: patch to 1e9 in the golden bytes.
    let first_nsec = first_entry_mtime_nsec_offset(&tree);
    bad[first_nsec..first_nsec + 4].copy_from_slice(&1_000_000_000u32.to_le_bytes());
    assert!(Tree::decode(&bad, &Id::hash(&bad)).is_err());
    // Unsafe names are refused by the decoder (and by the encoder); patch
    // them over a safe name of the same length.
    for name in [&b"."[..], b"..", b"a/b", b"a\0b"] {
        let mut unsafe_tree = Tree { nodes: vec![Node::new(NodeKind::Fifo, name.to_vec())] };
        assert!(unsafe_tree.encode().is_err(), "{name:?}");
        let safe = vec![b'z'; name.len()];
        let mut t = Tree { nodes: vec![Node::new(NodeKind::Fifo, safe.clone())] };
        let mut bad = t.encode().unwrap();
        let at = bad.windows(safe.len()).position(|w| w == safe.as_slice()).unwrap();
        bad[at..at + name.len()].copy_from_slice(name);
        assert!(matches!(Tree::decode(&bad, &Id::hash(&bad)), Err(Error::UnsafeName { .. })), "{name:?}");
    }
}

// ---------------------------------------------------------------------------
// Chunker
// ---------------------------------------------------------------------------

const XORSHIFT_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// The chunker test input: xorshift64 (shifts 13, 7, 17) from
/// `XORSHIFT_SEED`; each step's new state is appended as 8 little-endian
/// bytes; the stream is cut to `len`. "xorshift N" always means the first N
/// bytes of this one stream.
fn xorshift_bytes(len: usize) -> Vec<u8> {
    let mut s = XORSHIFT_SEED;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[derive(Clone, Copy)]
enum Input {
    Xorshift(usize),
    Zeros(usize),
}

impl Input {
    fn describe(self) -> String {
        match self {
            Input::Xorshift(n) => format!("xorshift {n}"),
            Input::Zeros(n) => format!("zeros {n}"),
        }
    }
    fn parse(s: &str) -> Input {
        let (kind, n) = s.split_once(' ').expect("input <kind> <len>");
        let n = n.parse().expect("input length");
        match kind {
            "xorshift" => Input::Xorshift(n),
            "zeros" => Input::Zeros(n),
            other => panic!("unknown input kind {other}"),
        }
    }
    fn bytes(self) -> Vec<u8> {
        match self {
            Input::Xorshift(n) => xorshift_bytes(n),
            Input::Zeros(n) => vec![0; n],
        }
    }
}

const MIB: usize = 1024 * 1024;
const STREAM: (u32, u32, u32) = (64 * 1024, 256 * 1024, 1024 * 1024);
const FILES: (u32, u32, u32) = (256 * 1024, 1024 * 1024, 4 * 1024 * 1024);
const SMALL: (u32, u32, u32) = (4 * 1024, 16 * 1024, 64 * 1024);

fn chunker_cases() -> Vec<(&'static str, Input, (u32, u32, u32))> {
    vec![
        ("random-3MiB/stream-defaults", Input::Xorshift(3 * MIB), STREAM),
        ("random-3MiB/4K-16K-64K", Input::Xorshift(3 * MIB), SMALL),
        ("random-3MiB/file-defaults", Input::Xorshift(3 * MIB), FILES),
        ("empty/4K-16K-64K", Input::Xorshift(0), SMALL),
        ("below-min/4K-16K-64K", Input::Xorshift(4095), SMALL),
        ("exactly-min/4K-16K-64K", Input::Xorshift(4096), SMALL),
        ("min-plus-one/4K-16K-64K", Input::Xorshift(4097), SMALL),
        ("exactly-max/4K-16K-64K", Input::Xorshift(65536), SMALL),
        ("max-plus-one/4K-16K-64K", Input::Xorshift(65537), SMALL),
        ("all-zeros/4K-16K-64K", Input::Zeros(3 * 65536 + 10), SMALL),
        ("all-zeros/stream-defaults", Input::Zeros(2 * MIB + 1), STREAM),
        ("empty/file-defaults", Input::Xorshift(0), FILES),
        ("below-min/file-defaults", Input::Xorshift(100_000), FILES),
        ("exactly-min/file-defaults", Input::Xorshift(256 * 1024), FILES),
    ]
}

/// A reader that hands out at most `step` bytes per call, to exercise the
/// stream chunker's refills.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = out.len().min(self.data.len()).min(self.step);
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The tables SPEC.md 7.1 names: GEAR (and GEAR_LS = GEAR << 1) and MASKS,
/// taken from the crate and checked against the values the spec prints.
fn spec_tables() -> (Box<[u64; 256]>, Box<[u64; 256]>) {
    let (gear, gear_ls) = fastcdc::v2020::get_gear_with_seed(0);
    assert_eq!((gear[0], gear[1]), (0x3b5d3c7d207e37dc, 0x784d68ba91123086));
    assert!(gear.iter().zip(gear_ls.iter()).all(|(g, l)| *l == g << 1));
    (gear, gear_ls)
}

const SPEC_MASKS: [(usize, u64); 17] = [
    (7, 0x0000000018035100),
    (8, 0x0000001800035300),
    (9, 0x0000019000353000),
    (10, 0x0000590003530000),
    (11, 0x0000d90003530000),
    (12, 0x0000d90103530000),
    (13, 0x0000d90303530000),
    (14, 0x0000d90313530000),
    (15, 0x0000d90f03530000),
    (16, 0x0000d90303537000),
    (17, 0x0000d90703537000),
    (18, 0x0000d90707537000),
    (19, 0x0000d91707537000),
    (20, 0x0000d91747537000),
    (21, 0x0000d91767537000),
    (22, 0x0000d93767537000),
    (23, 0x0000d93777537000),
];

fn spec_mask(k: u32) -> u64 {
    SPEC_MASKS.iter().find(|(i, _)| *i == k as usize).expect("mask index in range").1
}

/// SPEC.md 7.1's `cut`, transcribed from its pseudocode.
fn spec_cut(data: &[u8], min: usize, avg: usize, max: usize, gear: &[u64; 256], gear_ls: &[u64; 256]) -> usize {
    let mut n = data.len();
    if n <= min {
        return n;
    }
    let mut center = avg;
    if n > max {
        n = max;
    } else if n < center {
        center = n;
    }
    let bits = avg.trailing_zeros();
    let (mask_s, mask_l) = (spec_mask(bits + 1), spec_mask(bits - 1));
    let (mask_s_ls, mask_l_ls) = (mask_s << 1, mask_l << 1);
    let mut h: u64 = 0;
    let mut i = min / 2;
    while i < center / 2 {
        let a = 2 * i;
        h = (h << 2).wrapping_add(gear_ls[data[a] as usize]);
        if h & mask_s_ls == 0 {
            return a;
        }
        h = h.wrapping_add(gear[data[a + 1] as usize]);
        if h & mask_s == 0 {
            return a + 1;
        }
        i += 1;
    }
    while i < n / 2 {
        let a = 2 * i;
        h = (h << 2).wrapping_add(gear_ls[data[a] as usize]);
        if h & mask_l_ls == 0 {
            return a;
        }
        h = h.wrapping_add(gear[data[a + 1] as usize]);
        if h & mask_l == 0 {
            return a + 1;
        }
        i += 1;
    }
    n
}

fn spec_chunk_lengths(data: &[u8], (min, avg, max): (u32, u32, u32)) -> Vec<usize> {
    let (gear, gear_ls) = spec_tables();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let n = spec_cut(&data[pos..], min as usize, avg as usize, max as usize, &gear, &gear_ls);
        out.push(n);
        pos += n;
    }
    out
}

#[test]
fn chunker_tables_match_spec() {
    spec_tables();
    for (k, m) in SPEC_MASKS {
        assert_eq!(fastcdc::v2020::MASKS[k], m, "MASKS[{k}]");
    }
}

/// Chunks `data` every way the engine can, and with SPEC.md's pseudocode,
/// and insists they all agree; returns (offset, length, id) per chunk.
fn chunk_all_ways(data: &[u8], (min, avg, max): (u32, u32, u32)) -> Vec<(usize, usize, Id)> {
    let params = ChunkerParams::new(min, avg, max).unwrap();
    let chunker = Chunker::new(&params);
    let lengths = chunker.cut_all(data);
    // The crate the spec names, used directly.
    let crate_lengths: Vec<usize> = fastcdc::v2020::FastCDC::new(data, min, avg, max).map(|c| c.length).collect();
    assert_eq!(lengths, crate_lengths, "engine chunker differs from fastcdc::v2020::FastCDC");
    assert_eq!(lengths, spec_chunk_lengths(data, (min, avg, max)), "engine chunker differs from SPEC.md 7.1");
    let mut out = Vec::new();
    let mut pos = 0;
    for n in lengths {
        out.push((pos, n, Id::hash(&data[pos..pos + n])));
        pos += n;
    }
    assert_eq!(pos, data.len());
    for step in [usize::MAX, 9973] {
        let mut s = StreamChunker::new(chunker.clone(), Trickle { data, step });
        let mut streamed = Vec::new();
        let mut pos = 0;
        while let Some(c) = s.next_chunk().unwrap() {
            streamed.push((pos, c.len(), Id::hash(c)));
            pos += c.len();
        }
        assert_eq!(streamed, out, "stream chunker (reads of {step} bytes) differs from slice chunking");
        assert_eq!(s.bytes_read, data.len() as u64);
    }
    out
}

fn chunker_vector_text() -> String {
    let mut text = String::from(
        "# arc chunker golden vectors (format v1, SPEC.md \"Chunking\").\n\
         #\n\
         # FastCDC 2020 as in the fastcdc crate 3.x (v2020::cut), normalization level 1,\n\
         # unseeded gear table.\n\
         #\n\
         # Inputs:\n\
         #   xorshift N  the first N bytes of: state = 0x9E3779B97F4A7C15; repeat\n\
         #               { state ^= state << 13; state ^= state >> 7; state ^= state << 17;\n\
         #                 append state as 8 little-endian bytes } (64-bit arithmetic).\n\
         #   zeros N     N zero bytes.\n\
         #\n\
         # Records:\n\
         #   case <name>\n\
         #   input <xorshift|zeros> <length>\n\
         #   input-blake3 <BLAKE3-256 of the whole input>\n\
         #   params <min> <avg> <max>\n\
         #   chunk <offset> <length> <BLAKE3-256 of the chunk = its blob id>   (zero or more)\n\
         #   end\n\
         #\n\
         # Generated by engine/tests/golden.rs (ARC_REGENERATE_VECTORS=1).\n",
    );
    text.push_str(&format!("# First 16 bytes of the xorshift stream: {}\n", hex::encode(xorshift_bytes(16))));
    for (name, input, params) in chunker_cases() {
        let data = input.bytes();
        text.push_str(&format!(
            "\ncase {name}\ninput {}\ninput-blake3 {}\nparams {} {} {}\n",
            input.describe(),
            Id::hash(&data).to_hex(),
            params.0,
            params.1,
            params.2
        ));
        for (off, len, id) in chunk_all_ways(&data, params) {
            text.push_str(&format!("chunk {off} {len} {}\n", id.to_hex()));
        }
        text.push_str("end\n");
    }
    text
}

struct ChunkCase {
    name: String,
    input: Input,
    input_blake3: String,
    params: (u32, u32, u32),
    chunks: Vec<(usize, usize, String)>,
}

fn parse_chunker_vectors(text: &str) -> Vec<ChunkCase> {
    let mut cases = Vec::new();
    let mut cur: Option<ChunkCase> = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "case" => {
                assert!(cur.is_none(), "case {rest} starts before the previous one ended");
                cur = Some(ChunkCase {
                    name: rest.to_string(),
                    input: Input::Zeros(0),
                    input_blake3: String::new(),
                    params: (0, 0, 0),
                    chunks: Vec::new(),
                });
            }
            "end" => cases.push(cur.take().expect("end without case")),
            _ => {
                let c = cur.as_mut().expect("record outside a case");
                let f: Vec<&str> = rest.split(' ').collect();
                match key {
                    "input" => c.input = Input::parse(rest),
                    "input-blake3" => c.input_blake3 = rest.to_string(),
                    "params" => c.params = (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap()),
                    "chunk" => c.chunks.push((f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].to_string())),
                    other => panic!("unknown record {other}"),
                }
            }
        }
    }
    assert!(cur.is_none(), "last case has no end");
    cases
}

#[test]
fn chunker_vectors() {
    if regenerate() {
        write_atomic("chunker.txt", &chunker_vector_text());
    }
    let cases = parse_chunker_vectors(&read_vector("chunker.txt"));
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    let expected_names: Vec<&str> = chunker_cases().iter().map(|c| c.0).collect();
    assert_eq!(names, expected_names, "chunker.txt and golden.rs list different cases");
    for case in &cases {
        let data = case.input.bytes();
        assert_eq!(Id::hash(&data).to_hex(), case.input_blake3, "{}: input generator changed", case.name);
        let got: Vec<(usize, usize, String)> =
            chunk_all_ways(&data, case.params).into_iter().map(|(o, l, id)| (o, l, id.to_hex())).collect();
        assert_eq!(got, case.chunks, "{}: chunk boundaries or ids changed", case.name);
    }
}

/// Properties the spec states, checked on the vector data itself.
#[test]
fn chunker_edge_properties() {
    let (min, _, max) = SMALL;
    let c = Chunker::new(&ChunkerParams::new(SMALL.0, SMALL.1, SMALL.2).unwrap());
    assert!(c.cut_all(&[]).is_empty());
    for n in [1, 100, 4095, 4096] {
        assert_eq!(c.cut_all(&xorshift_bytes(n)), vec![n], "inputs up to min are one chunk");
    }
    // No cut is ever found in zeros: every chunk is max-sized but the last.
    assert_eq!(c.cut_all(&vec![0; 3 * 65536 + 10]), vec![65536, 65536, 65536, 10]);
    // Every chunk but the last lies in [min, max].
    let lens = c.cut_all(&xorshift_bytes(3 * MIB));
    let (last, rest) = lens.split_last().unwrap();
    assert!(rest.iter().all(|&l| (min as usize..=max as usize).contains(&l)));
    assert!(*last <= max as usize && *last > 0);
    // A file smaller than the file chunker's minimum is one chunk.
    let f = Chunker::new(&ChunkerParams::default_files());
    assert_eq!(f.cut_all(&xorshift_bytes(200_000)), vec![200_000]);
}

/// Offset of the first entry's mtime nanoseconds in an encoded tree:
/// header (12) + kind (1) + name_len (2) + name + mode/uid/gid (12)
/// + user_len (1) + user + group_len (1) + group + mtime_sec (8).
fn first_entry_mtime_nsec_offset(tree: &[u8]) -> usize {
    let mut at = 12 + 1;
    let name_len = u16::from_le_bytes([tree[at], tree[at + 1]]) as usize;
    at += 2 + name_len + 12;
    let user_len = tree[at] as usize;
    at += 1 + user_len;
    let group_len = tree[at] as usize;
    at += 1 + group_len;
    at + 8
}
