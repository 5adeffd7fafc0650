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

use super::envelope::{self, Codec, FileType};
use super::pack::Trailer;
use super::{ByteReader, ByteWriter};
use crate::error::Result;
use crate::id::Id;

const ENVELOPE_VERSION: u8 = 1;
const MAGIC: &[u8; 6] = b"ARCIDX";

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

pub fn decode(data: &[u8], name: &str) -> Result<Vec<PackEntry>> {
    decode_with(data, name, 0)
}

/// Decodes an index file whose packs store their trailers with
/// `trailer_overhead` more bytes than the plain trailer the index file
/// copies (a v2 pack's sealed trailer: nonce and tag).
pub fn decode_with(data: &[u8], name: &str, trailer_overhead: u64) -> Result<Vec<PackEntry>> {
    let (_, payload) = envelope::open(FileType::Index, ENVELOPE_VERSION, name, data)?;
    let mut r = ByteReader::new(&payload, "index file", name);
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
