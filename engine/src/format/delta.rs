//! Delta frames: a stream chunk stored as the difference from another chunk
//! (its base), format-spec/v2/streams.md section 4, feature `stream-deltas`.
//!
//! ```text
//! DeltaFrame = base_id [32] || box(purpose "delta frame", ad = base_id,
//!                                  plaintext = delta_len u32 || delta || zero padding)
//! delta      = one zstd frame of the chunk, compressed with the base chunk's
//!              plaintext as a raw-content prefix (ZSTD_CCtx_refPrefix, what
//!              `zstd --patch-from` does)
//! ```
//! The padding is that of every sealed frame: `4 + delta_len + padding =
//! padmé(4 + delta_len)`. The frame's trailer record has codec 2 (`delta`),
//! `raw_len` = the chunk's length, and exactly one blob (the chunk, at
//! offset 0, kind data, named by the keyed id of its plaintext as every
//! chunk is). The base id stays readable so that prune learns which chunk
//! a live delta needs with one 32-byte read, and it is bound as associated
//! data, so a delta cannot be re-pointed at another base. A base is always
//! stored plainly (zstd or raw), never as a delta: decoding reads at most
//! two frames.
//!
//! The delta algorithm is zstd's own (prefix dictionaries through the zstd
//! crate's `zstd_safe` contexts): nothing here is a hand-written differ.

use zstd::zstd_safe::{CCtx, CParameter, DCtx};

use super::sealed::{not_authentic, open_padded, open_padded_in_place, padded, seal_padded, OVERHEAD};
use crate::crypto::{padme, Keys, Purpose};
use crate::error::{Error, Result};
use crate::id::Id;

/// The plain base id in front of the sealed box.
pub const BASE_LEN: usize = 32;

/// Length of the delta frame holding `delta_len` bytes of zstd delta.
pub fn frame_len(delta_len: usize) -> usize {
    BASE_LEN + padme(4 + delta_len as u64) as usize + OVERHEAD
}

/// zstd of `data` with `base` as a raw-content prefix, at `level`.
pub fn compress(base: &[u8], data: &[u8], level: i32) -> Result<Vec<u8>> {
    let err = |code: usize| Error::InvalidArgument {
        what: "delta compression",
        reason: zstd::zstd_safe::get_error_name(code).to_string(),
    };
    let mut cctx = CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(level)).map_err(err)?;
    // Long-distance matching over a window that holds base and chunk, as
    // `zstd --patch-from` does: rows that are mostly alike (pgbench's
    // padding) otherwise match the row before them, as if compressed
    // alone, rather than the long runs of the base they repeat. The frame
    // stays a plain zstd frame; its window (at most 2^27, every decoder's
    // default limit) is what a reader allocates at most, bounded by the
    // chunk's length as before.
    let window_log = (usize::BITS - (base.len() + data.len()).max(1 << 10).leading_zeros()).min(27);
    cctx.set_parameter(CParameter::WindowLog(window_log)).map_err(err)?;
    cctx.set_parameter(CParameter::EnableLongDistanceMatching(true)).map_err(err)?;
    cctx.ref_prefix(base).map_err(err)?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    cctx.compress2(&mut out, data).map_err(err)?;
    Ok(out)
}

/// Seals a delta against `base` into a delta frame.
pub fn seal(keys: &Keys, base: &Id, delta: &[u8]) -> Result<Vec<u8>> {
    let sealed = seal_padded(keys, Purpose::DELTA_FRAME, &base.0, delta)?;
    Ok([&base.0[..], &sealed].concat())
}

/// [`seal`] with a given nonce: for golden vectors only.
#[doc(hidden)]
pub fn seal_with_nonce(keys: &Keys, base: &Id, delta: &[u8], nonce: [u8; 24]) -> Result<Vec<u8>> {
    let sealed = keys.seal_with_nonce(Purpose::DELTA_FRAME, &base.0, &padded(delta), nonce)?;
    Ok([&base.0[..], &sealed].concat())
}

/// The base id a delta frame names, from its first bytes (unauthenticated
/// until [`open`] checks the box; prune and the commit check only use it
/// to keep more, never less).
pub fn base_of(stored: &[u8], pack: &str, offset: u64) -> Result<Id> {
    let b: [u8; BASE_LEN] = stored
        .get(..BASE_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::corrupt("pack", pack, format!("delta frame at {offset}: shorter than its base id")))?;
    Ok(Id(b))
}

/// Opens a delta frame of pack `pack` at `offset`: its base id and the
/// zstd delta.
pub fn open(keys: &Keys, stored: &[u8], pack: &str, offset: u64) -> Result<(Id, Vec<u8>)> {
    let base = base_of(stored, pack, offset)?;
    let delta = open_padded(keys, Purpose::DELTA_FRAME, &base.0, stored[BASE_LEN..].to_vec(), pack, offset)
        .map_err(|e| not_authentic(e, name(pack, offset)))?;
    Ok((base, delta))
}

/// [`open`] where the frame lies, in the buffer it was read into: the box
/// is opened in place and the delta returned from within it, so a reader
/// that must keep the delta copies only its bytes (the frame was copied
/// out whole, then shifted down past its length and padding). On an error
/// the bytes after the base id are left undefined.
pub fn open_in_place<'a>(keys: &Keys, stored: &'a mut [u8], pack: &str, offset: u64) -> Result<(Id, &'a [u8])> {
    let base = base_of(stored, pack, offset)?;
    let delta = open_padded_in_place(keys, Purpose::DELTA_FRAME, &base.0, &mut stored[BASE_LEN..], pack, offset)
        .map_err(|e| not_authentic(e, name(pack, offset)))?;
    Ok((base, delta))
}

/// How an authentication failure names a delta frame.
fn name(pack: &str, offset: u64) -> String {
    format!("{pack} (delta frame at offset {offset})")
}

/// The chunk of `raw_len` bytes a delta decodes to against `base`'s
/// plaintext. `raw_len` comes from the trailer and is bounded by what the
/// delta's bytes can regenerate before anything is allocated.
pub fn decompress(delta: &[u8], base: &[u8], raw_len: u32, pack: &str, offset: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decompress_into(delta, base, raw_len, pack, offset, &mut out)?;
    Ok(out)
}

/// [`decompress`] into `out`, whose capacity is reused (zstd writes into
/// it; nothing is zeroed first): a reader that keeps `out` from delta to
/// delta does not fault in a fresh chunk-sized allocation for each, as a
/// day-2 dump of nearly all deltas did. The context is made per delta: it
/// borrows `base` as its prefix, so one kept across deltas would need a
/// lifetime no caller's base has, and making one touches only its header.
pub fn decompress_into<'o>(
    delta: &[u8],
    base: &[u8],
    raw_len: u32,
    pack: &str,
    offset: u64,
    out: &'o mut Vec<u8>,
) -> Result<&'o [u8]> {
    let bad = |reason: String| Error::corrupt("pack", pack, format!("delta frame at {offset}: {reason}"));
    if u64::from(raw_len) > super::pack::zstd_output_bound(delta.len()) {
        return Err(bad(format!("claims {raw_len} raw bytes, more than its {} bytes can hold", delta.len())));
    }
    let zerr = |code: usize| bad(format!("zstd: {}", zstd::zstd_safe::get_error_name(code)));
    let mut dctx = DCtx::create();
    dctx.ref_prefix(base).map_err(zerr)?;
    out.clear();
    out.reserve(raw_len as usize);
    dctx.decompress(out, delta).map_err(zerr)?;
    if out.len() != raw_len as usize {
        return Err(bad(format!("decodes to {} bytes, expected {raw_len}", out.len())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterSecret;

    fn text(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"abcdefghij,()'\n0123456789"[(x % 25) as usize]
            })
            .collect()
    }

    #[test]
    fn round_trip_binds_the_base() {
        let keys = Keys::derive(&MasterSecret::from_bytes([3; 32]));
        let base = text(200_000, 1);
        let mut chunk = base.clone();
        for i in (0..chunk.len()).step_by(9_000) {
            chunk[i] = b'#';
        }
        let alone = zstd::bulk::compress(&chunk, 3).unwrap();
        let delta = compress(&base, &chunk, 3).unwrap();
        assert!(delta.len() * 20 < alone.len(), "delta {} vs alone {}", delta.len(), alone.len());
        let base_id = Id::hash(b"base");
        let frame = seal(&keys, &base_id, &delta).unwrap();
        assert_eq!(frame.len(), frame_len(delta.len()));
        let (got_base, got) = open(&keys, &frame, "p", 8).unwrap();
        assert_eq!((got_base, &got), (base_id, &delta));
        assert_eq!(decompress(&got, &base, chunk.len() as u32, "p", 8).unwrap(), chunk);
        // Another base id in front of the same box: the AD no longer matches.
        let mut moved = frame.clone();
        moved[0] ^= 1;
        assert!(matches!(open(&keys, &moved, "p", 8), Err(Error::NotAuthentic { .. })));
        // A delta frame is no blob frame and vice versa.
        assert!(super::super::sealed::open_frame(&keys, &frame[BASE_LEN..], "p", 8).is_err());
        // The wrong base decodes to other bytes or fails; never to the chunk.
        let other = text(200_000, 2);
        assert!(decompress(&delta, &other, chunk.len() as u32, "p", 8).map_or(true, |d| d != chunk));
        let err = decompress(&delta, &base, u32::MAX, "p", 8).unwrap_err().to_string();
        assert!(err.contains("claims"), "{err}");
        assert!(decompress(&delta, &base, chunk.len() as u32 - 1, "p", 8).is_err());
    }

    /// A day's chunk and its base: the base with a byte changed every 9,000.
    fn pair(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
        let base = text(n, seed);
        let mut chunk = base.clone();
        for i in (0..chunk.len()).step_by(9_000) {
            chunk[i] = b'#';
        }
        (base, chunk)
    }

    /// Delta frames read side by side in one buffer open where they lie:
    /// each gives its base id and delta, its neighbours untouched; a
    /// changed byte of the base id (bound as associated data), the nonce,
    /// the ciphertext or the tag fails as not authentic, naming the frame.
    #[test]
    fn delta_frames_open_in_place_and_a_tampered_one_fails() {
        let keys = Keys::derive(&MasterSecret::from_bytes([5; 32]));
        let (base_a, chunk_a) = pair(120_000, 11);
        let (base_b, chunk_b) = pair(40_000, 12);
        let (id_a, id_b) = (Id::hash(b"a"), Id::hash(b"b"));
        let delta_a = compress(&base_a, &chunk_a, 3).unwrap();
        let delta_b = compress(&base_b, &chunk_b, 3).unwrap();
        let frame_a = seal(&keys, &id_a, &delta_a).unwrap();
        let frame_b = seal(&keys, &id_b, &delta_b).unwrap();
        let mut buf = [&frame_a[..], &frame_b[..]].concat();
        let (first, second) = buf.split_at_mut(frame_a.len());
        let (got_a, d_a) = open_in_place(&keys, first, "p", 8).unwrap();
        assert_eq!((got_a, d_a), (id_a, &delta_a[..]));
        assert!(second == &frame_b[..], "opening the first frame changed its neighbour");
        let (got_b, d_b) = open_in_place(&keys, second, "p", 8 + frame_a.len() as u64).unwrap();
        assert_eq!((got_b, d_b), (id_b, &delta_b[..]));
        assert_eq!(open(&keys, &frame_b, "p", 8).unwrap(), (id_b, delta_b.clone()));

        // Base id, nonce, ciphertext, tag.
        for at in [0, BASE_LEN + 3, BASE_LEN + 40, frame_a.len() - 1] {
            let mut bad = frame_a.clone();
            bad[at] ^= 0x10;
            match open_in_place(&keys, &mut bad, "p", 8) {
                Err(Error::NotAuthentic { name, .. }) => assert!(name.contains("delta frame at offset 8"), "{name}"),
                other => panic!("byte {at} changed: {:?}", other.map(|(b, d)| (b, d.len()))),
            }
        }
        // Shorter than a base id.
        let mut short = frame_a[..BASE_LEN - 1].to_vec();
        assert!(open_in_place(&keys, &mut short, "p", 8).unwrap_err().to_string().contains("shorter than its base"));
        // A blob frame's box is no delta frame's (another purpose).
        let mut blob = [&id_a.0[..], &super::super::sealed::seal_frame(&keys, &delta_a).unwrap()].concat();
        assert!(matches!(open_in_place(&keys, &mut blob, "p", 8), Err(Error::NotAuthentic { .. })));
    }

    /// One output buffer decodes delta after delta, against other bases and
    /// to other lengths, each byte for byte; a delta decoded against the
    /// wrong base or to the wrong length is refused, and the buffer still
    /// serves the next.
    #[test]
    fn deltas_decode_one_after_another_into_one_buffer() {
        let mut out = Vec::new();
        let pairs = [pair(200_000, 21), pair(30_000, 22), pair(90_000, 23)];
        for (base, chunk) in &pairs {
            let delta = compress(base, chunk, 3).unwrap();
            let got = decompress_into(&delta, base, chunk.len() as u32, "p", 8, &mut out).unwrap();
            assert!(got == &chunk[..], "a {}-byte chunk decoded wrong", chunk.len());
            assert!(decompress_into(&delta, base, chunk.len() as u32 + 1, "p", 8, &mut out).is_err());
            let other = text(base.len(), 99);
            assert!(decompress_into(&delta, &other, chunk.len() as u32, "p", 8, &mut out).map_or(true, |d| d != chunk));
        }
        let (base, chunk) = &pairs[1];
        let delta = compress(base, chunk, 3).unwrap();
        assert!(decompress_into(&delta, base, chunk.len() as u32, "p", 8, &mut out).unwrap() == &chunk[..]);
    }
}
