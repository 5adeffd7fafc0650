//! Packfile layout. A pack is a sequence of compressed frames followed by a
//! trailer that lists every frame and every blob, so the pack describes
//! itself and the whole index can be rebuilt from packs alone.
//!
//! ```text
//! Pack    = Header || Frame_0 || ... || Frame_{f-1} || Trailer || Footer
//! Header  = "ARCPACK" || version u8 (=1)                                  8 bytes
//! Trailer = frame_count u32 || blob_count u32
//!           || FrameRecord * frame_count || BlobRecord * blob_count
//! FrameRecord (24 bytes) = offset u64 || stored_len u32 || raw_len u32
//!                          || codec u8 || reserved [7]
//! BlobRecord  (48 bytes) = id [32] || kind u8 || reserved [3]
//!                          || frame u32 || offset_in_frame u32 || raw_len u32
//! Footer  (40 bytes)     = BLAKE3(Trailer) [32] || trailer_len u32 || "ARCT"
//! ```
//! A frame is one zstd frame (codec 1) or raw bytes (codec 0, used when
//! compression does not shrink the data). Small blobs share a frame so that
//! compression sees more than one small file at a time; a large blob has a
//! frame of its own. The trailer sits at the end so packs can be streamed.

use super::{ByteReader, ByteWriter};
use crate::error::{Error, Result};
use crate::id::Id;

pub const HEADER: &[u8; 8] = b"ARCPACK\x01";
/// Format v2 packs: every frame and the trailer are sealed
/// (format-spec/v2/crypto.md); the footer stays plain so the trailer can
/// be found with one ranged read.
pub const HEADER_V2: &[u8; 8] = b"ARCPACK\x02";
pub const HEADER_LEN: u64 = 8;
pub const FOOTER_LEN: u64 = 40;
const FOOTER_MAGIC: &[u8; 4] = b"ARCT";
const FRAME_RECORD_LEN: usize = 24;
const BLOB_RECORD_LEN: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum BlobKind {
    Data = 0,
    Tree = 1,
}

impl BlobKind {
    pub fn from_u8(v: u8) -> Option<BlobKind> {
        match v {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameCodec {
    Raw = 0,
    Zstd = 1,
    /// A stream chunk stored as a zstd delta against another chunk
    /// (format::delta; format v2 with feature `stream-deltas`). Its frame
    /// holds exactly that one chunk.
    Delta = 2,
}

impl FrameCodec {
    pub fn from_u8(v: u8) -> Option<FrameCodec> {
        match v {
            0 => Some(FrameCodec::Raw),
            1 => Some(FrameCodec::Zstd),
            2 => Some(FrameCodec::Delta),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameRecord {
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: FrameCodec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRecord {
    pub id: Id,
    pub kind: BlobKind,
    pub frame: u32,
    pub offset_in_frame: u32,
    pub raw_len: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trailer {
    pub frames: Vec<FrameRecord>,
    pub blobs: Vec<BlobRecord>,
}

impl Trailer {
    pub fn encode(&self) -> Vec<u8> {
        let mut w =
            ByteWriter::with_capacity(8 + self.frames.len() * FRAME_RECORD_LEN + self.blobs.len() * BLOB_RECORD_LEN);
        w.u32(self.frames.len() as u32);
        w.u32(self.blobs.len() as u32);
        for f in &self.frames {
            w.u64(f.offset);
            w.u32(f.stored_len);
            w.u32(f.raw_len);
            w.u8(f.codec as u8);
            w.zeros(7);
        }
        for b in &self.blobs {
            w.id(&b.id);
            w.u8(b.kind as u8);
            w.zeros(3);
            w.u32(b.frame);
            w.u32(b.offset_in_frame);
            w.u32(b.raw_len);
        }
        w.buf
    }

    /// Decodes and validates a trailer of the pack named `pack` whose frames
    /// must lie in `[HEADER_LEN, frames_end)`.
    pub fn decode(data: &[u8], pack: &str, frames_end: u64) -> Result<Trailer> {
        let mut r = ByteReader::new(data, "pack trailer", pack);
        let frame_count = r.u32()? as usize;
        let blob_count = r.u32()? as usize;
        let expected = frame_count
            .checked_mul(FRAME_RECORD_LEN)
            .and_then(|a| blob_count.checked_mul(BLOB_RECORD_LEN).and_then(|b| a.checked_add(b)));
        if expected != Some(r.remaining()) {
            return Err(
                r.corrupt(format!("{frame_count} frames and {blob_count} blobs do not fit {} bytes", r.remaining()))
            );
        }
        let mut frames = Vec::with_capacity(frame_count);
        let mut next_offset = HEADER_LEN;
        for _ in 0..frame_count {
            let offset = r.u64()?;
            let stored_len = r.u32()?;
            let raw_len = r.u32()?;
            let codec = FrameCodec::from_u8(r.u8()?).ok_or_else(|| r.corrupt("unknown frame codec"))?;
            r.reserved(7)?;
            // Frames are contiguous and in order; anything else is damage.
            // frames_end comes from an index file's pack_len, which may be
            // anything up to u64::MAX, so the end is computed checked.
            let end = offset.checked_add(u64::from(stored_len)).filter(|&e| e <= frames_end);
            let Some(end) = end.filter(|_| offset == next_offset) else {
                return Err(r.corrupt(format!("frame at {offset} (+{stored_len}) out of place")));
            };
            // A raw frame stores its bytes as they are (v1) or sealed and
            // padded (v2), which fixes its stored length either way.
            if codec == FrameCodec::Raw
                && stored_len != raw_len
                && super::sealed::sealed_frame_len(raw_len as usize) as u64 != u64::from(stored_len)
            {
                return Err(r.corrupt("raw frame with differing stored and raw length"));
            }
            next_offset = end;
            frames.push(FrameRecord { offset, stored_len, raw_len, codec });
        }
        if next_offset != frames_end {
            return Err(r.corrupt("frames do not end where the trailer starts"));
        }
        let mut blobs = Vec::with_capacity(blob_count);
        for _ in 0..blob_count {
            let id = r.id()?;
            let kind = BlobKind::from_u8(r.u8()?).ok_or_else(|| r.corrupt("unknown blob kind"))?;
            r.reserved(3)?;
            let frame = r.u32()?;
            let offset_in_frame = r.u32()?;
            let raw_len = r.u32()?;
            let f = frames
                .get(frame as usize)
                .ok_or_else(|| r.corrupt(format!("blob {} in frame {frame} that does not exist", id.short())))?;
            if u64::from(offset_in_frame) + u64::from(raw_len) > u64::from(f.raw_len) {
                return Err(r.corrupt(format!("blob {} extends past its frame", id.short())));
            }
            // A delta frame is one chunk (streams.md section 4.3).
            if f.codec == FrameCodec::Delta && (offset_in_frame != 0 || raw_len != f.raw_len || kind != BlobKind::Data)
            {
                return Err(r.corrupt(format!("blob {} is not the whole of its delta frame", id.short())));
            }
            blobs.push(BlobRecord { id, kind, frame, offset_in_frame, raw_len });
        }
        r.finish()?;
        Ok(Trailer { frames, blobs })
    }
}

pub fn encode_footer(trailer: &[u8]) -> [u8; FOOTER_LEN as usize] {
    let mut w = ByteWriter::with_capacity(FOOTER_LEN as usize);
    w.id(&Id::hash(trailer));
    w.u32(trailer.len() as u32);
    w.bytes(FOOTER_MAGIC);
    let mut out = [0u8; FOOTER_LEN as usize];
    out.copy_from_slice(&w.buf);
    out
}

/// Parses the footer; returns (trailer checksum, trailer length).
pub fn decode_footer(footer: &[u8], pack: &str) -> Result<(Id, u32)> {
    let mut r = ByteReader::new(footer, "pack footer", pack);
    let sum = r.id()?;
    let len = r.u32()?;
    if r.take(4)? != FOOTER_MAGIC {
        return Err(Error::corrupt("pack footer", pack, "bad magic: not an arc pack or truncated"));
    }
    r.finish()?;
    Ok((sum, len))
}

/// Locates and validates the trailer of a complete pack of `pack_len`
/// bytes given its footer; returns the byte range of the trailer.
pub fn trailer_range(footer: &[u8], pack: &str, pack_len: u64) -> Result<(u64, u32, Id)> {
    let (sum, len) = decode_footer(footer, pack)?;
    let start = pack_len
        .checked_sub(FOOTER_LEN + u64::from(len))
        .filter(|&s| s >= HEADER_LEN)
        .ok_or_else(|| Error::corrupt("pack", pack, format!("trailer length {len} exceeds pack size {pack_len}")))?;
    Ok((start, len, sum))
}

/// Checks a pack's header: v1 packs in v1 repositories, sealed v2 packs in
/// v2 ones (`sealed`).
pub fn check_header(header: &[u8], pack: &str, sealed: bool) -> Result<()> {
    if header != if sealed { HEADER_V2 } else { HEADER } {
        return Err(Error::corrupt("pack", pack, "bad header magic or unsupported pack version"));
    }
    Ok(())
}

/// Parses a whole pack held in memory (check --read-data, repair); `keys`
/// opens the sealed trailer of a v2 pack.
pub fn parse_pack(data: &[u8], pack: &str, keys: Option<&crate::crypto::Keys>) -> Result<Trailer> {
    let len = data.len() as u64;
    if len < HEADER_LEN + FOOTER_LEN {
        return Err(Error::corrupt("pack", pack, format!("only {len} bytes")));
    }
    check_header(&data[..HEADER_LEN as usize], pack, keys.is_some())?;
    let (start, tlen, sum) = trailer_range(&data[(len - FOOTER_LEN) as usize..], pack, len)?;
    let trailer = &data[start as usize..start as usize + tlen as usize];
    if Id::hash(trailer) != sum {
        return Err(Error::corrupt("pack", pack, "trailer checksum mismatch"));
    }
    match keys {
        Some(k) => {
            let opened = k
                .open(crate::crypto::Purpose::PACK_TRAILER, HEADER_V2, trailer, "pack trailer", pack)
                .map_err(|_| Error::NotAuthentic { what: "pack trailer", name: pack.to_string() })?;
            Trailer::decode(&opened, pack, start)
        }
        None => Trailer::decode(trailer, pack, start),
    }
}

/// The most bytes zstd data of `stored` bytes can decompress to. Every zstd
/// block regenerates at most 128 KiB (the format's Block_Maximum_Size) and
/// takes at least its 3-byte block header, whatever the frame header says.
pub fn zstd_output_bound(stored: usize) -> u64 {
    (stored as u64 / 3 + 1) * (128 * 1024)
}

/// [`decode_frame`] on a buffer the caller gives up: a raw frame is
/// returned as it is instead of copied.
pub fn decode_frame_owned(stored: Vec<u8>, frame: &FrameRecord, pack: &str) -> Result<Vec<u8>> {
    match frame.codec {
        FrameCodec::Raw => check_raw_len(stored.len(), frame, pack).map(|()| stored),
        FrameCodec::Zstd | FrameCodec::Delta => decode_frame(&stored, frame, pack),
    }
}

fn check_raw_len(len: usize, frame: &FrameRecord, pack: &str) -> Result<()> {
    if len != frame.raw_len as usize {
        return Err(Error::corrupt(
            "pack",
            pack,
            format!("frame at {} decodes to {len} bytes, expected {}", frame.offset, frame.raw_len),
        ));
    }
    Ok(())
}

thread_local! {
    /// One zstd decompression context per thread, reused for every frame:
    /// creating one per frame costs an allocation of ~160 KiB (a fresh
    /// mapping, so page faults) each time, for frames of a few hundred KiB.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses `stored` into `out` (cleared first, room made for
/// `capacity` bytes): zstd writes into the spare capacity, so a reused
/// `out` is neither zeroed nor faulted in again.
fn zstd_decompress_into(stored: &[u8], capacity: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    out.clear();
    out.reserve(capacity);
    DECOMPRESSOR.with(|d| {
        let mut d = d.try_borrow_mut().map_err(std::io::Error::other)?;
        let d = match d.as_mut() {
            Some(d) => d,
            None => d.insert(zstd::bulk::Decompressor::new()?),
        };
        d.decompress_to_buffer(stored, out).map(|_| ())
    })
}

/// Decompresses one frame's stored bytes, checking its recorded raw length.
/// A delta frame needs its base and is decoded by `Repository::decode_frame`.
pub fn decode_frame(stored: &[u8], frame: &FrameRecord, pack: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let raw = decode_frame_into(stored, frame, pack, &mut out)?;
    if frame.codec == FrameCodec::Raw {
        return Ok(raw.to_vec());
    }
    Ok(out)
}

/// [`decode_frame`] without a buffer of its own: a raw frame is `stored`
/// itself, a compressed one is decompressed into `out` (whose capacity is
/// reused; nothing is zeroed first) and returned from there. A reader
/// that keeps `out` from frame to frame does not fault in a fresh
/// frame-sized allocation for each.
pub fn decode_frame_into<'a>(
    stored: &'a [u8],
    frame: &FrameRecord,
    pack: &str,
    out: &'a mut Vec<u8>,
) -> Result<&'a [u8]> {
    let raw: &[u8] = match frame.codec {
        FrameCodec::Delta => {
            return Err(Error::corrupt(
                "pack",
                pack,
                format!("frame at {} is a delta frame, which needs its base to be decoded", frame.offset),
            ))
        }
        FrameCodec::Raw => stored,
        FrameCodec::Zstd => {
            // The output buffer is sized by raw_len, a field of the trailer:
            // a damaged one must not make us allocate up to 4 GiB for a few
            // stored bytes (found by fuzzing). No real frame can claim more
            // than its stored bytes can regenerate.
            let bound = zstd_output_bound(stored.len());
            if u64::from(frame.raw_len) > bound {
                return Err(Error::corrupt(
                    "pack",
                    pack,
                    format!(
                        "frame at {} claims {} raw bytes, more than its {} stored bytes can hold",
                        frame.offset,
                        frame.raw_len,
                        stored.len()
                    ),
                ));
            }
            zstd_decompress_into(stored, frame.raw_len as usize, out)
                .map_err(|e| Error::corrupt("pack", pack, format!("frame at {}: zstd: {e}", frame.offset)))?;
            out
        }
    };
    check_raw_len(raw.len(), frame, pack)?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (fuzz/artifacts/frame/crash-3894b294...): a zstd frame
    /// whose raw_len claims far more than its stored bytes can regenerate is
    /// refused before any buffer is sized by it.
    #[test]
    fn frame_raw_len_bounded_by_stored_len() {
        let data = vec![0u8; 4 << 20];
        let stored = zstd::bulk::compress(&data, 3).unwrap();
        assert!(u64::try_from(data.len()).unwrap() <= zstd_output_bound(stored.len()), "real data fits the bound");
        let mut frame = FrameRecord {
            offset: 8,
            stored_len: stored.len() as u32,
            raw_len: data.len() as u32,
            codec: FrameCodec::Zstd,
        };
        assert_eq!(decode_frame(&stored, &frame, "p").unwrap(), data);
        frame.raw_len = u32::MAX;
        let err = decode_frame(&stored, &frame, "p").unwrap_err().to_string();
        assert!(err.contains("claims 4294967295 raw bytes"), "{err}");
        // Just within the bound: zstd itself refuses, the buffer is bounded.
        frame.raw_len = zstd_output_bound(stored.len()) as u32;
        assert!(decode_frame(&stored, &frame, "p").is_err());
    }

    #[test]
    fn trailer_round_trip_and_validation() {
        let t = Trailer {
            frames: vec![
                FrameRecord { offset: 8, stored_len: 10, raw_len: 20, codec: FrameCodec::Zstd },
                FrameRecord { offset: 18, stored_len: 5, raw_len: 5, codec: FrameCodec::Raw },
            ],
            blobs: vec![BlobRecord {
                id: Id::hash(b"a"),
                kind: BlobKind::Tree,
                frame: 1,
                offset_in_frame: 1,
                raw_len: 4,
            }],
        };
        let enc = t.encode();
        assert_eq!(Trailer::decode(&enc, "p", 23).unwrap(), t);
        assert!(Trailer::decode(&enc, "p", 24).is_err(), "gap before trailer");
        assert!(Trailer::decode(&enc[..enc.len() - 1], "p", 23).is_err());
        let mut bad = enc.clone();
        bad[8 + 2 * 24 + 32] = 7; // kind byte of the first blob record
        assert!(Trailer::decode(&bad, "p", 23).is_err());
    }
}
