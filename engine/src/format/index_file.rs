//! Index files: immutable lists of packs and the blobs in them, written by
//! each backup beside its packs. Each entry repeats the pack's own trailer
//! bytes, so an index file is exactly what reading the packs would give and
//! the two can never disagree in form.
//!
//! ```text
//! payload   = "ARCIDX" || reserved [2] || pack_count u32 || PackEntry * pack_count
//! PackEntry = pack_id [32] || pack_len u64 || trailer_len u32 || Trailer
//! ```
//! The payload is zstd-compressed inside an envelope of type 2; the file is
//! named by the BLAKE3 of its bytes.
//!
//! Version 2 (envelope version 2, `format-spec/v2/trees-index.md` section 2)
//! stores packs sorted by id, each frame once, and blob records sorted by
//! blob id, within caps every reader accepts, and names the index files it
//! supersedes (compaction). [`decode`] reads both versions.

use super::envelope::{self, Codec, FileType};
use super::pack::Trailer;
use super::{ByteReader, ByteWriter};
use crate::error::{Error, Result};
use crate::id::Id;

const ENVELOPE_VERSION: u8 = 1;
const ENVELOPE_VERSION_2: u8 = 2;
const MAGIC: &[u8; 6] = b"ARCIDX";
const PAYLOAD_VERSION_2: u8 = 2;

/// Caps of index files v2 (spec 2.1): a reader accepts every file within
/// them and rejects the rest; writers never exceed them.
pub const MAX_BLOBS_PER_PACK: usize = 1 << 20;
pub const MAX_FRAMES_PER_PACK: usize = 1 << 20;
pub const MAX_PACKS_PER_FILE: usize = 4096;
pub const MAX_BLOBS_PER_FILE: usize = 1 << 21;
pub const MAX_SUPERSEDES: usize = 65_536;
const PACK_REC_LEN: usize = 48;
const FRAME_REC_LEN: usize = 24;
const BLOB_REC_LEN: usize = 48;

/// A decoded index file of either version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexFile {
    /// Index files this one replaces (v2 compaction; empty in v1).
    pub supersedes: Vec<Id>,
    pub packs: Vec<PackEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackEntry {
    pub pack: Id,
    pub pack_len: u64,
    pub trailer: Trailer,
}

impl PackEntry {
    /// Where the pack's frames end and its trailer starts.
    pub fn frames_end(&self, trailer_len: u64) -> u64 {
        self.pack_len - super::pack::FOOTER_LEN - trailer_len
    }
}

pub fn encode(packs: &[PackEntry]) -> Vec<u8> {
    let mut w = ByteWriter::default();
    w.bytes(MAGIC);
    w.zeros(2);
    w.u32(packs.len() as u32);
    for p in packs {
        let t = p.trailer.encode();
        w.id(&p.pack);
        w.u64(p.pack_len);
        w.u32(t.len() as u32);
        w.bytes(&t);
    }
    envelope::seal(FileType::Index, ENVELOPE_VERSION, Codec::Zstd, &w.buf)
}

/// Decodes an index file of either version to its packs.
pub fn decode(data: &[u8], name: &str) -> Result<Vec<PackEntry>> {
    decode_with(data, name, 0)
}

/// Decodes an index file of either version whose packs store their
/// trailers with `trailer_overhead` more bytes than the plain trailer the
/// index file copies (a v2 pack's sealed trailer: nonce and tag).
pub fn decode_with(data: &[u8], name: &str, trailer_overhead: u64) -> Result<Vec<PackEntry>> {
    Ok(decode_file(data, name, trailer_overhead)?.packs)
}

/// Decodes an index file of either version, `supersedes` included
/// (`trailer_overhead` as for [`decode_with`]).
pub fn decode_file(data: &[u8], name: &str, trailer_overhead: u64) -> Result<IndexFile> {
    let (version, payload) = envelope::open(FileType::Index, ENVELOPE_VERSION_2, name, data)?;
    if version == ENVELOPE_VERSION_2 {
        return decode_payload_v2(&payload, name, trailer_overhead);
    }
    Ok(IndexFile { supersedes: Vec::new(), packs: decode_payload_v1(&payload, name, trailer_overhead)? })
}

fn decode_payload_v1(payload: &[u8], name: &str, trailer_overhead: u64) -> Result<Vec<PackEntry>> {
    let mut r = ByteReader::new(payload, "index file", name);
    if r.take(6)? != MAGIC {
        return Err(r.corrupt("bad magic"));
    }
    r.reserved(2)?;
    let count = r.u32()? as usize;
    let mut packs = Vec::with_capacity(count.min(r.remaining() / 44 + 1));
    for _ in 0..count {
        let pack = r.id()?;
        let pack_len = r.u64()?;
        let tlen = r.u32()?;
        let frames_end = pack_len
            .checked_sub(super::pack::FOOTER_LEN + u64::from(tlen) + trailer_overhead)
            .ok_or_else(|| r.corrupt(format!("pack {} length {pack_len} too small", pack.short())))?;
        let bytes = r.take(tlen as usize)?;
        let trailer = Trailer::decode(bytes, &pack.to_hex(), frames_end)?;
        packs.push(PackEntry { pack, pack_len, trailer });
    }
    r.finish()?;
    Ok(packs)
}

/// Groups packs into as few index files as the caps allow, in order.
pub fn split_within_caps(packs: &[PackEntry]) -> Vec<&[PackEntry]> {
    let mut out = Vec::new();
    let (mut start, mut blobs) = (0, 0);
    for (i, p) in packs.iter().enumerate() {
        let n = p.trailer.blobs.len();
        if i > start && (i - start >= MAX_PACKS_PER_FILE || blobs + n > MAX_BLOBS_PER_FILE) {
            out.push(&packs[start..i]);
            start = i;
            blobs = 0;
        }
        blobs += n;
    }
    if start < packs.len() {
        out.push(&packs[start..]);
    }
    out
}

fn over_cap(what: String) -> Error {
    Error::InvalidArgument { what: "index file", reason: what }
}

/// Encodes the payload of an index file v2 (spec section 2). Packs are
/// sorted by id and blob records by blob id here; anything over a cap of
/// spec 2.1, a pack listed twice or an empty pack is refused, so no writer
/// can produce a file a reader rejects.
pub fn encode_payload_v2(supersedes: &[Id], packs: &[PackEntry]) -> Result<Vec<u8>> {
    if packs.is_empty() || packs.len() > MAX_PACKS_PER_FILE {
        return Err(over_cap(format!("{} packs (1 ..= {MAX_PACKS_PER_FILE})", packs.len())));
    }
    if supersedes.len() > MAX_SUPERSEDES {
        return Err(over_cap(format!("supersedes {} files (at most {MAX_SUPERSEDES})", supersedes.len())));
    }
    let mut sup = supersedes.to_vec();
    sup.sort();
    sup.dedup();
    let mut order: Vec<&PackEntry> = packs.iter().collect();
    order.sort_by_key(|p| p.pack);
    if order.windows(2).any(|w| w[0].pack == w[1].pack) {
        return Err(over_cap("a pack listed twice".into()));
    }
    let mut blobs: Vec<(Id, u32, u32, u8, u32, u32)> = Vec::new();
    let mut frames = 0usize;
    for (no, p) in order.iter().enumerate() {
        let (nb, nf) = (p.trailer.blobs.len(), p.trailer.frames.len());
        if nb == 0 || nb > MAX_BLOBS_PER_PACK || nf > MAX_FRAMES_PER_PACK {
            return Err(over_cap(format!("pack {} has {nb} blobs and {nf} frames", p.pack.short())));
        }
        frames += nf;
        for b in &p.trailer.blobs {
            blobs.push((b.id, no as u32, b.frame, b.kind as u8, b.offset_in_frame, b.raw_len));
        }
    }
    if blobs.len() > MAX_BLOBS_PER_FILE {
        return Err(over_cap(format!("{} blobs (at most {MAX_BLOBS_PER_FILE})", blobs.len())));
    }
    blobs.sort_unstable_by_key(|b| (b.0, b.1, b.2, b.4));
    if blobs.windows(2).any(|w| (w[0].0, w[0].1, w[0].2, w[0].4) == (w[1].0, w[1].1, w[1].2, w[1].4)) {
        return Err(over_cap("a blob record listed twice".into()));
    }
    let mut w = ByteWriter::with_capacity(
        24 + 32 * sup.len() + PACK_REC_LEN * order.len() + FRAME_REC_LEN * frames + BLOB_REC_LEN * blobs.len(),
    );
    w.bytes(MAGIC);
    w.u8(PAYLOAD_VERSION_2);
    w.u8(0);
    w.u32(sup.len() as u32);
    w.u32(order.len() as u32);
    w.u32(frames as u32);
    w.u32(blobs.len() as u32);
    sup.iter().for_each(|id| w.id(id));
    for p in &order {
        w.id(&p.pack);
        w.u64(p.pack_len);
        w.u32(p.trailer.frames.len() as u32);
        w.u32(p.trailer.blobs.len() as u32);
    }
    for p in &order {
        for f in &p.trailer.frames {
            w.u64(f.offset);
            w.u32(f.stored_len);
            w.u32(f.raw_len);
            w.u8(f.codec as u8);
            w.zeros(7);
        }
    }
    for (id, pack, frame, kind, offset, len) in blobs {
        w.id(&id);
        w.u32(pack);
        let f = frame.to_le_bytes();
        w.bytes(&f[..3]);
        w.u8(kind);
        w.u32(offset);
        w.u32(len);
    }
    Ok(w.buf)
}

/// A whole index file v2: the payload of [`encode_payload_v2`] in its
/// envelope.
pub fn encode_v2(supersedes: &[Id], packs: &[PackEntry]) -> Result<Vec<u8>> {
    let payload = encode_payload_v2(supersedes, packs)?;
    Ok(envelope::seal(FileType::Index, ENVELOPE_VERSION_2, Codec::Zstd, &payload))
}

/// An index file of version 2 (with `supersedes`) when `v2`, else of
/// version 1 (a repository whose config lacks the `index-v2` feature; it
/// cannot say what it supersedes, so `supersedes` must be empty there).
pub fn encode_for(v2: bool, supersedes: &[Id], packs: &[PackEntry]) -> Result<Vec<u8>> {
    if v2 {
        encode_v2(supersedes, packs)
    } else {
        Ok(encode(packs))
    }
}

pub fn decode_payload_v2(payload: &[u8], name: &str, trailer_overhead: u64) -> Result<IndexFile> {
    use super::pack::{BlobKind, BlobRecord, FrameCodec, FrameRecord, FOOTER_LEN};
    let mut r = ByteReader::new(payload, "index file", name);
    if r.take(6)? != MAGIC {
        return Err(r.corrupt("bad magic"));
    }
    let v = r.u8()?;
    if v != PAYLOAD_VERSION_2 {
        return Err(r.corrupt(format!("payload version {v} in an envelope of version 2")));
    }
    r.reserved(1)?;
    let (ns, np, nf, nb) = (r.u32()? as usize, r.u32()? as usize, r.u32()? as usize, r.u32()? as usize);
    if ns > MAX_SUPERSEDES || np == 0 || np > MAX_PACKS_PER_FILE || nb > MAX_BLOBS_PER_FILE {
        return Err(r.corrupt(format!("{ns} superseded files, {np} packs, {nb} blobs: beyond the caps")));
    }
    let expected = 32 * ns + PACK_REC_LEN * np + nf.saturating_mul(FRAME_REC_LEN) + BLOB_REC_LEN * nb;
    if expected != r.remaining() {
        return Err(r.corrupt(format!("counts need {expected} bytes, {} present", r.remaining())));
    }
    let supersedes: Vec<Id> = (0..ns).map(|_| r.id()).collect::<Result<_>>()?;
    if supersedes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(r.corrupt("supersedes list not strictly increasing"));
    }
    let mut heads: Vec<(Id, u64, usize, usize)> = Vec::with_capacity(np);
    let mut frame_total = 0usize;
    for _ in 0..np {
        let (pack, pack_len, frames, blobs) = (r.id()?, r.u64()?, r.u32()? as usize, r.u32()? as usize);
        if heads.last().is_some_and(|&(p, ..)| p >= pack) {
            return Err(r.corrupt("packs not strictly increasing"));
        }
        if blobs == 0 || blobs > MAX_BLOBS_PER_PACK || frames > MAX_FRAMES_PER_PACK {
            return Err(r.corrupt(format!("pack {} with {blobs} blobs and {frames} frames", pack.short())));
        }
        frame_total += frames;
        heads.push((pack, pack_len, frames, blobs));
    }
    if frame_total != nf {
        return Err(r.corrupt("frame count does not match the packs'"));
    }
    let mut trailers: Vec<Trailer> = Vec::with_capacity(np);
    for &(_, _, frames, blobs) in &heads {
        let mut t = Trailer { frames: Vec::with_capacity(frames), blobs: Vec::with_capacity(blobs) };
        for _ in 0..frames {
            let offset = r.u64()?;
            let stored_len = r.u32()?;
            let raw_len = r.u32()?;
            let codec = FrameCodec::from_u8(r.u8()?).ok_or_else(|| r.corrupt("unknown frame codec"))?;
            r.reserved(7)?;
            t.frames.push(FrameRecord { offset, stored_len, raw_len, codec });
        }
        trailers.push(t);
    }
    let mut prev: Option<(Id, u32, u32, u32)> = None;
    for _ in 0..nb {
        let id = r.id()?;
        let pack = r.u32()?;
        let f = r.take(3)?;
        let frame = u32::from_le_bytes([f[0], f[1], f[2], 0]);
        let kind = BlobKind::from_u8(r.u8()?).ok_or_else(|| r.corrupt("unknown blob kind"))?;
        let offset_in_frame = r.u32()?;
        let raw_len = r.u32()?;
        let key = (id, pack, frame, offset_in_frame);
        if prev.is_some_and(|p| p >= key) {
            return Err(r.corrupt("blob records not strictly increasing"));
        }
        prev = Some(key);
        let t = trailers
            .get_mut(pack as usize)
            .ok_or_else(|| r.corrupt(format!("blob {} in pack {pack} that does not exist", id.short())))?;
        t.blobs.push(BlobRecord { id, kind, frame, offset_in_frame, raw_len });
    }
    r.finish()?;
    let mut packs = Vec::with_capacity(np);
    for ((pack, pack_len, _, blobs), mut t) in heads.into_iter().zip(trailers) {
        if t.blobs.len() != blobs {
            return Err(r.corrupt(format!("pack {} lists {blobs} blobs, {} present", pack.short(), t.blobs.len())));
        }
        // The order a pack's own trailer has (v1 writers: frame, then
        // offset), so an entry compares equal to the pack's trailer.
        t.blobs.sort_unstable_by_key(|b| (b.frame, b.offset_in_frame));
        // Every rule of a trailer (frames tile the pack, blobs inside their
        // frames) is checked by the one trailer decoder, on the canonical
        // encoding of what this file says.
        let bytes = t.encode();
        let frames_end = pack_len
            .checked_sub(FOOTER_LEN + bytes.len() as u64 + trailer_overhead)
            .ok_or_else(|| r.corrupt(format!("pack {} length {pack_len} too small", pack.short())))?;
        let trailer = Trailer::decode(&bytes, &pack.to_hex(), frames_end)?;
        packs.push(PackEntry { pack, pack_len, trailer });
    }
    Ok(IndexFile { supersedes, packs })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::pack::{BlobKind, BlobRecord, FrameCodec, FrameRecord};

    /// A pack of `blobs` blobs in frames of `per_frame`, ids from `seed`.
    pub(crate) fn pack(seed: u64, blobs: usize, per_frame: usize) -> PackEntry {
        let mut t = Trailer::default();
        let mut offset = 8u64;
        for f in 0..blobs.div_ceil(per_frame) {
            let n = per_frame.min(blobs - f * per_frame);
            t.frames.push(FrameRecord { offset, stored_len: 100, raw_len: 10 * n as u32, codec: FrameCodec::Zstd });
            offset += 100;
            for i in 0..n {
                let id = Id::hash(&[seed.to_le_bytes(), ((f * per_frame + i) as u64).to_le_bytes()].concat());
                let kind = if i % 5 == 0 { BlobKind::Tree } else { BlobKind::Data };
                t.blobs.push(BlobRecord { id, kind, frame: f as u32, offset_in_frame: 10 * i as u32, raw_len: 10 });
            }
        }
        let trailer_len = t.encode().len() as u64;
        PackEntry {
            pack: Id::hash(&[b"pack".as_slice(), &seed.to_le_bytes()].concat()),
            pack_len: offset + trailer_len + 40,
            trailer: t,
        }
    }

    #[test]
    fn v2_round_trips_sorted_with_supersedes() {
        let packs = vec![pack(3, 10, 4), pack(1, 1, 1), pack(2, 300, 64)];
        let sup = vec![Id::hash(b"b"), Id::hash(b"a")];
        let data = encode_v2(&sup, &packs).unwrap();
        let f = decode_file(&data, "x", 0).unwrap();
        let mut want = packs.clone();
        want.sort_by_key(|p| p.pack);
        assert_eq!(f.packs, want, "entries equal the packs' own trailers");
        let mut sup_sorted = sup.clone();
        sup_sorted.sort();
        assert_eq!(f.supersedes, sup_sorted);
        // v1 files still decode, with nothing superseded.
        let v1 = decode_file(&encode(&packs), "x", 0).unwrap();
        assert_eq!((v1.packs, v1.supersedes), (packs.clone(), vec![]));
        // Blob records are sorted by id in the payload.
        let payload = encode_payload_v2(&sup, &packs).unwrap();
        let start = 24 + 64 + 48 * 3 + 24 * (3 + 1 + 5);
        let ids: Vec<&[u8]> = payload[start..].chunks(48).map(|c| &c[..32]).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn v2_caps_are_enforced_by_the_writer_and_the_reader() {
        assert!(encode_v2(&[], &[]).is_err(), "an index file lists at least one pack");
        let too_many: Vec<PackEntry> = (0..MAX_PACKS_PER_FILE as u64 + 1).map(|i| pack(i, 1, 1)).collect();
        assert!(encode_v2(&[], &too_many).is_err());
        let groups = split_within_caps(&too_many);
        assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), vec![MAX_PACKS_PER_FILE, 1]);
        assert!(groups.iter().all(|g| encode_v2(&[], g).is_ok()));
        // Blobs per file: three packs of 2^20 blobs make two files... of
        // two, then one: each file holds at most 2^21 blobs.
        let big: Vec<PackEntry> = (0..3).map(|i| pack(100 + i, MAX_BLOBS_PER_PACK, 4096)).collect();
        let groups = split_within_caps(&big);
        assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), vec![2, 1]);
        assert!(encode_payload_v2(&[], &big).is_err());
        let mut over = pack(7, 8, 8);
        over.trailer.blobs.clear();
        assert!(encode_v2(&[], &[over]).is_err(), "a pack without blobs");
        assert!(encode_v2(&[], &[pack(1, 2, 2), pack(1, 2, 2)]).is_err(), "a pack twice");
        // A reader refuses a count beyond a cap even when bytes follow.
        let mut payload = encode_payload_v2(&[], &[pack(1, 2, 2)]).unwrap();
        payload[12..16].copy_from_slice(&(MAX_PACKS_PER_FILE as u32 + 1).to_le_bytes());
        assert!(decode_payload_v2(&payload, "x", 0).is_err());
    }

    #[test]
    fn v2_rejects_damage() {
        let payload = encode_payload_v2(&[Id::hash(b"s")], &[pack(1, 5, 2), pack(2, 3, 3)]).unwrap();
        for cut in 0..payload.len() {
            assert!(decode_payload_v2(&payload[..cut], "x", 0).is_err(), "cut at {cut}");
        }
        // Swapping two blob records breaks the order; a frame out of place
        // breaks the trailer rules.
        let blobs_at = payload.len() - 48 * 8;
        let mut swapped = payload.clone();
        let (a, b) = (swapped[blobs_at..blobs_at + 48].to_vec(), swapped[blobs_at + 48..blobs_at + 96].to_vec());
        swapped[blobs_at..blobs_at + 48].copy_from_slice(&b);
        swapped[blobs_at + 48..blobs_at + 96].copy_from_slice(&a);
        assert!(decode_payload_v2(&swapped, "x", 0).is_err());
        let frames_at = 24 + 32 + 96;
        let mut moved = payload.clone();
        moved[frames_at] ^= 1;
        assert!(decode_payload_v2(&moved, "x", 0).is_err());
        let mut reserved = payload.clone();
        reserved[7] = 1;
        assert!(decode_payload_v2(&reserved, "x", 0).is_err());
    }
}
