//! Entry points shared by the cargo-fuzz targets in `fuzz/` and by the
//! corpus replay test `engine/tests/fuzz_corpus.rs`, so that a corpus file
//! means the same thing to both and the corpus is a regression suite of the
//! ordinary `cargo test`.
//!
//! Each function feeds arbitrary bytes to the parsers of one repository
//! structure. Errors are the expected outcome; a panic (including a failed
//! property assertion) is a bug. Where a decode succeeds the functions also
//! check a round trip (encode what was decoded, decode it again, compare),
//! which catches a parser that accepts something it then misrepresents.
//!
//! Inputs that carry a BLAKE3 checksum (envelopes, pack footers) are also
//! "fixed up" before decoding: the checksum and length are recomputed so
//! that mutations reach the payload parser instead of dying at the checksum
//! every time. Real files are unchanged by the fix-up, so real repository
//! files are valid seeds.
//!
//! Not part of the engine's API; hidden from the docs.

use super::config::Config;
use super::envelope::{self, Codec, FileType};
use super::index_file;
use super::lock::LockFile;
use super::pack::{self, FrameCodec, FrameRecord, Trailer};
use super::snapshot::SnapshotFile;
use super::tree::Tree;
use crate::id::Id;

const ENVELOPE_HEADER: usize = 16;
const ENVELOPE_CHECKSUM: usize = 32;

/// A copy of an envelope-shaped input with its length field and checksum
/// made consistent with its size, or `None` if it is too short to be one.
pub fn fix_envelope(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < ENVELOPE_HEADER + ENVELOPE_CHECKSUM {
        return None;
    }
    let mut out = data.to_vec();
    let body_end = out.len() - ENVELOPE_CHECKSUM;
    let stored = (body_end - ENVELOPE_HEADER) as u64;
    out[8..16].copy_from_slice(&stored.to_le_bytes());
    let sum = Id::hash(&out[..body_end]);
    out[body_end..].copy_from_slice(&sum.0);
    Some(out)
}

/// A copy of a pack-shaped input whose footer checksum matches the trailer
/// the footer points at (if it points inside the input).
pub fn fix_pack(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let footer_len = pack::FOOTER_LEN as usize;
    if out.len() < footer_len {
        return out;
    }
    let footer_at = out.len() - footer_len;
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&out[footer_at + 32..footer_at + 36]);
    let tlen = u32::from_le_bytes(len_bytes) as usize;
    if let Some(start) = footer_at.checked_sub(tlen) {
        let sum = Id::hash(&out[start..footer_at]);
        out[footer_at..footer_at + 32].copy_from_slice(&sum.0);
    }
    out
}

const FILE_TYPES: [FileType; 4] = [FileType::Config, FileType::Index, FileType::Snapshot, FileType::Lock];

/// The envelope alone, for every file type: the input as is (checksum
/// checks and all) and fixed up. Round trip: what opens must seal and open
/// to the same payload.
pub fn envelope(data: &[u8]) {
    let fixed = fix_envelope(data);
    for input in std::iter::once(data).chain(fixed.as_deref()) {
        for ty in FILE_TYPES {
            let Ok((version, payload)) = envelope::open(ty, 1, "fuzz", input) else { continue };
            // Sealed raw: the property is about the payload, and creating a
            // zstd compressor per execution would cost most of the run.
            let sealed = envelope::seal(ty, version, Codec::Raw, &payload);
            let (v2, p2) = envelope::open(ty, 1, "fuzz", &sealed).expect("a sealed envelope opens");
            assert_eq!((v2, p2), (version, payload), "envelope round trip");
        }
    }
}

pub fn config(data: &[u8]) {
    let Some(fixed) = fix_envelope(data) else { return };
    if let Ok(c) = Config::decode(&fixed) {
        let again = Config::decode(&c.encode()).expect("an encoded config decodes");
        assert_eq!(again, c, "config round trip");
    }
}

pub fn snapshot(data: &[u8]) {
    let Some(fixed) = fix_envelope(data) else { return };
    if let Ok(s) = SnapshotFile::decode(&fixed, "fuzz") {
        let again = SnapshotFile::decode(&s.encode(), "fuzz").expect("an encoded snapshot decodes");
        assert_eq!(again, s, "snapshot round trip");
    }
}

pub fn lock(data: &[u8]) {
    let Some(fixed) = fix_envelope(data) else { return };
    if let Ok(l) = LockFile::decode(&fixed, "fuzz") {
        let again = LockFile::decode(&l.encode(), "fuzz").expect("an encoded lock decodes");
        assert_eq!(again, l, "lock round trip");
    }
}

pub fn index_file(data: &[u8]) {
    let Some(fixed) = fix_envelope(data) else { return };
    if let Ok(entries) = index_file::decode(&fixed, "fuzz") {
        let again = index_file::decode(&index_file::encode(&entries), "fuzz").expect("an encoded index file decodes");
        assert_eq!(again, entries, "index file round trip");
    }
}

/// Tree blobs have one encoding per tree (entries sorted, no slack), so a
/// tree that decodes must encode to exactly the input bytes.
pub fn tree(data: &[u8]) {
    if let Ok(mut t) = Tree::decode(data, &Id::default()) {
        let enc = t.encode().expect("a decoded tree encodes");
        assert_eq!(enc, data, "tree re-encodes to different bytes");
    }
}

/// Input: frames_end u64 LE || trailer || footer (40 bytes). The trailer is
/// decoded alone (its own frames_end), and the footer is parsed and used to
/// locate a trailer as `read_pack_trailer` does. A trailer that decodes must
/// re-encode to exactly its bytes.
pub fn pack_trailer(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let mut fe = [0u8; 8];
    fe.copy_from_slice(&data[..8]);
    let frames_end = u64::from_le_bytes(fe);
    let rest = &data[8..];
    let footer_len = pack::FOOTER_LEN as usize;
    let (trailer, footer) =
        if rest.len() >= footer_len { rest.split_at(rest.len() - footer_len) } else { (rest, &[][..]) };
    if let Ok(t) = Trailer::decode(trailer, "fuzz", frames_end) {
        assert_eq!(t.encode(), trailer, "trailer re-encodes to different bytes");
    }
    if let Ok((_, len)) = pack::decode_footer(footer, "fuzz") {
        let pack_len = frames_end.saturating_add(u64::from(len)).saturating_add(pack::FOOTER_LEN);
        if let Ok((start, tlen, _)) = pack::trailer_range(footer, "fuzz", pack_len) {
            assert!(start >= pack::HEADER_LEN && start + u64::from(tlen) + pack::FOOTER_LEN == pack_len);
        }
    }
}

/// A whole pack in memory, as `check --read-data` and `prune` read it:
/// header, footer, trailer, then every frame decompressed and every blob
/// cut out of its frame and hashed.
pub fn pack(data: &[u8]) {
    let fixed = fix_pack(data);
    let Ok(trailer) = pack::parse_pack(&fixed, "fuzz", None) else { return };
    for (fi, frame) in trailer.frames.iter().enumerate() {
        // parse_pack promises every frame lies inside the pack.
        let start = frame.offset as usize;
        let stored = &fixed[start..start + frame.stored_len as usize];
        let Ok(raw) = pack::decode_frame(stored, frame, "fuzz") else { continue };
        assert_eq!(raw.len(), frame.raw_len as usize);
        for b in trailer.blobs.iter().filter(|b| b.frame as usize == fi) {
            // ... and every blob lies inside its frame.
            let bytes = &raw[b.offset_in_frame as usize..b.offset_in_frame as usize + b.raw_len as usize];
            let _ = Id::hash(bytes) == b.id;
        }
    }
    let enc = trailer.encode();
    let footer = pack::encode_footer(&enc);
    assert!(fixed.ends_with(&footer), "pack trailer and footer round trip");
}

/// One frame: codec u8 || raw_len u32 LE || stored bytes.
pub fn frame(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let Some(codec) = FrameCodec::from_u8(data[0]) else { return };
    let mut rl = [0u8; 4];
    rl.copy_from_slice(&data[1..5]);
    let stored = &data[5..];
    let Ok(stored_len) = u32::try_from(stored.len()) else { return };
    let frame = FrameRecord { offset: pack::HEADER_LEN, stored_len, raw_len: u32::from_le_bytes(rl), codec };
    if let Ok(raw) = pack::decode_frame(stored, &frame, "fuzz") {
        assert_eq!(raw.len(), frame.raw_len as usize);
        if codec == FrameCodec::Raw {
            assert_eq!(raw, stored);
        }
    }
}

/// A fuzz entry point: arbitrary bytes in, panic only on a bug.
pub type Entry = fn(&[u8]);

/// The targets by name (the names of the binaries in `fuzz/fuzz_targets`
/// and of the directories under `fuzz/corpus`), for the replay test.
pub const TARGETS: &[(&str, Entry)] = &[
    ("envelope", envelope),
    ("config", config),
    ("snapshot", snapshot),
    ("lock", lock),
    ("index_file", index_file),
    ("tree", tree),
    ("pack_trailer", pack_trailer),
    ("pack", pack),
    ("frame", frame),
];
