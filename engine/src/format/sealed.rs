//! Byte layouts of sealed data in format v2 (format-spec/v2/crypto.md).
//!
//! ```text
//! box        = nonce [24] || XChaCha20-Poly1305 ciphertext || tag [16]
//! aad        = "arc2" || label_len u8 || label || ad
//! SealedFile = "ARCS" || version u8 (=1) || reserved [3] || box
//!              (aad's ad = the 8 header bytes || the caller's ad)
//! frame      = box of (stored_len u32 || stored || zero padding), padded
//!              so that 4 + stored_len + padding = padmé(4 + stored_len)
//! ```
//! A sealed file's plaintext is the complete v1-style envelope of its type
//! (SPEC.md section 4), so config, index file, snapshot and lock decoders
//! are shared by v1 and v2; the envelope's own checksum is redundant under
//! the AEAD but costs 48 bytes and keeps one decoder per type.

use crate::crypto::{padme, Keys, Purpose, NONCE_LEN, TAG_LEN};
use crate::error::{Error, Result};

pub const FILE_MAGIC: &[u8; 4] = b"ARCS";
const FILE_VERSION: u8 = 1;
const FILE_HEADER_LEN: usize = 8;
/// What sealing adds to a plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// The associated data of every box: a fixed prefix, the purpose's label
/// (length-prefixed, so no label is a prefix of another's encoding) and
/// the caller's associated data.
pub fn associated_data(purpose: Purpose, ad: &[u8]) -> Vec<u8> {
    let label = purpose.label.as_bytes();
    debug_assert!(label.len() <= 255);
    let mut out = Vec::with_capacity(5 + label.len() + ad.len());
    out.extend_from_slice(b"arc2");
    out.push(label.len() as u8);
    out.extend_from_slice(label);
    out.extend_from_slice(ad);
    out
}

fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[..4].copy_from_slice(FILE_MAGIC);
    h[4] = FILE_VERSION;
    h
}

/// Seals a whole repository file (its v1-style envelope bytes).
pub fn seal_file(keys: &Keys, purpose: Purpose, ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let header = file_header();
    let mut full_ad = header.to_vec();
    full_ad.extend_from_slice(ad);
    let sealed = keys.seal(purpose, &full_ad, plaintext)?;
    let mut out = Vec::with_capacity(FILE_HEADER_LEN + sealed.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a file sealed by [`seal_file`]. A file that is not sealed at all
/// (a v1 envelope put into a v2 repository) is refused like a forged one.
pub fn open_file(
    keys: &Keys,
    purpose: Purpose,
    ad: &[u8],
    data: &[u8],
    what: &'static str,
    name: &str,
) -> Result<Vec<u8>> {
    if data.len() < FILE_HEADER_LEN || &data[..4] != FILE_MAGIC {
        return Err(Error::NotAuthentic { what, name: name.to_string() });
    }
    if data[4] != FILE_VERSION || data[5..8] != [0, 0, 0] {
        return Err(Error::corrupt(
            what,
            name,
            format!("sealed file version {} is not supported; upgrade arc", data[4]),
        ));
    }
    let mut full_ad = data[..FILE_HEADER_LEN].to_vec();
    full_ad.extend_from_slice(ad);
    keys.open(purpose, &full_ad, &data[FILE_HEADER_LEN..], what, name)
}

/// Length of the sealed frame that holds `stored_len` stored bytes.
pub fn sealed_frame_len(stored_len: usize) -> usize {
    padme(4 + stored_len as u64) as usize + OVERHEAD
}

/// Pads and seals one pack frame (compressed or raw stored bytes). The
/// sealed frame is assembled in one buffer and encrypted in place: the
/// stored bytes are copied once (a frame is up to a whole 4 MiB chunk).
pub fn seal_frame(keys: &Keys, stored: &[u8]) -> Result<Vec<u8>> {
    seal_padded(keys, Purpose::BLOB_FRAME, &[], stored)
}

/// The box of `stored_len u32 || stored || zero padding` for `purpose`
/// and `ad`: every sealed frame, blob frames and delta frames
/// (format::delta) alike.
pub(crate) fn seal_padded(keys: &Keys, purpose: Purpose, ad: &[u8], stored: &[u8]) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(NONCE_LEN + padme(4 + stored.len() as u64) as usize + TAG_LEN);
    buf.resize(NONCE_LEN, 0);
    push_padded(&mut buf, stored);
    keys.seal_in_place(purpose, ad, &mut buf)?;
    Ok(buf)
}

/// Appends `stored_len u32 || stored || zero padding` up to
/// padmé(4 + stored_len) to `buf`.
fn push_padded(buf: &mut Vec<u8>, stored: &[u8]) {
    let end = buf.len() + padme(4 + stored.len() as u64) as usize;
    buf.extend_from_slice(&(stored.len() as u32).to_le_bytes());
    buf.extend_from_slice(stored);
    buf.resize(end, 0);
}

/// The padded plaintext of a sealed frame holding `stored`: for golden
/// vectors sealed with a given nonce.
pub(crate) fn padded(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_padded(&mut out, stored);
    out
}

/// Opens a sealed frame of pack `pack` at `offset`; returns the stored
/// bytes without padding.
pub fn open_frame(keys: &Keys, sealed: &[u8], pack: &str, offset: u64) -> Result<Vec<u8>> {
    open_frame_owned(keys, sealed.to_vec(), pack, offset)
}

/// [`open_frame`] on a buffer the caller gives up: decrypted in place, so
/// a frame read from storage is not copied on its way to the decoder.
pub fn open_frame_owned(keys: &Keys, sealed: Vec<u8>, pack: &str, offset: u64) -> Result<Vec<u8>> {
    open_padded(keys, Purpose::BLOB_FRAME, &[], sealed, pack, offset)
        .map_err(|e| not_authentic(e, format!("{pack} (frame at offset {offset})")))
}

/// [`open_frame`] where the frame lies, in the buffer it was read into
/// (with the other frames of one GET): decrypted in place, and the stored
/// bytes returned from within it. Copying each frame out of the read's
/// buffer cost a third of a remote restore's page faults (session 12).
/// On an error the bytes of `sealed` are left undefined.
pub fn open_frame_in_place<'a>(keys: &Keys, sealed: &'a mut [u8], pack: &str, offset: u64) -> Result<&'a [u8]> {
    match unpad_in_place(keys, Purpose::BLOB_FRAME, &[], sealed, pack, offset) {
        Ok(range) => Ok(&sealed[range]),
        Err(e) => Err(not_authentic(e, format!("{pack} (frame at offset {offset})"))),
    }
}

/// Names the frame in an authentication failure; other errors pass.
pub(crate) fn not_authentic(e: Error, name: String) -> Error {
    match e {
        Error::NotAuthentic { what, .. } => Error::NotAuthentic { what, name },
        e => e,
    }
}

/// Opens the box in `sealed` (for `purpose` and `ad`) in place and
/// returns the stored bytes without padding, refusing a wrong length or
/// non-zero padding.
pub(crate) fn open_padded(
    keys: &Keys,
    purpose: Purpose,
    ad: &[u8],
    mut sealed: Vec<u8>,
    pack: &str,
    offset: u64,
) -> Result<Vec<u8>> {
    let range = unpad_in_place(keys, purpose, ad, &mut sealed, pack, offset)?;
    let len = range.len();
    sealed.copy_within(range, 0);
    sealed.truncate(len);
    Ok(sealed)
}

/// [`open_padded`] where the box lies: the stored bytes from within
/// `sealed` (left undefined on an error).
pub(crate) fn open_padded_in_place<'a>(
    keys: &Keys,
    purpose: Purpose,
    ad: &[u8],
    sealed: &'a mut [u8],
    pack: &str,
    offset: u64,
) -> Result<&'a [u8]> {
    let range = unpad_in_place(keys, purpose, ad, sealed, pack, offset)?;
    Ok(&sealed[range])
}

/// Opens the box in `sealed` in place; the range of its stored bytes
/// (without length and padding, both checked) within it.
fn unpad_in_place(
    keys: &Keys,
    purpose: Purpose,
    ad: &[u8],
    sealed: &mut [u8],
    pack: &str,
    offset: u64,
) -> Result<std::ops::Range<usize>> {
    let range = keys.open_in_place(purpose, ad, sealed, "pack", pack)?;
    let inner = &sealed[range.clone()];
    let bad = || Error::corrupt("pack", pack, format!("sealed frame at {offset}: bad length or padding"));
    let len = u32::from_le_bytes(inner.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
    if 4 + len > inner.len()
        || padme(4 + len as u64) as usize != inner.len()
        || inner[4 + len..].iter().any(|&b| b != 0)
    {
        return Err(bad());
    }
    let start = range.start + 4;
    Ok(start..start + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterSecret;

    #[test]
    fn frames_are_padded_and_round_trip() {
        let keys = Keys::derive(&MasterSecret::from_bytes([1; 32]));
        for n in [0usize, 1, 100, 4096, 100_000] {
            let data = vec![0xAB; n];
            let sealed = seal_frame(&keys, &data).unwrap();
            assert_eq!(sealed.len(), sealed_frame_len(n));
            assert_eq!(open_frame(&keys, &sealed, "p", 8).unwrap(), data);
        }
        let sealed = seal_frame(&keys, b"x").unwrap();
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert!(matches!(open_frame(&keys, &bad, "p", 8), Err(Error::NotAuthentic { .. })));
    }

    /// Frames read side by side in one buffer open where they lie: each
    /// its own stored bytes, its neighbours untouched; a changed byte of
    /// the nonce, the ciphertext or the tag fails as not authentic, naming
    /// the frame; an authentic box whose length or padding is wrong is
    /// refused as damage.
    #[test]
    fn frames_open_in_place_in_a_shared_buffer_and_tampered_ones_fail() {
        let keys = Keys::derive(&MasterSecret::from_bytes([3; 32]));
        let contents: Vec<Vec<u8>> = [0usize, 1, 97, 4096, 100_000].iter().map(|&n| vec![n as u8 ^ 0x5A; n]).collect();
        let mut buf = Vec::new();
        let mut at = Vec::new();
        for c in &contents {
            let sealed = seal_frame(&keys, c).unwrap();
            at.push((buf.len(), sealed.len()));
            buf.extend_from_slice(&sealed);
        }
        let whole = buf.clone();
        for (i, (c, &(start, len))) in contents.iter().zip(&at).enumerate() {
            let opened = open_frame_in_place(&keys, &mut buf[start..start + len], "p", start as u64).unwrap();
            assert_eq!(opened, &c[..], "frame {i}");
            assert!(buf[start + len..] == whole[start + len..], "frame {i} changed its neighbours");
        }
        let (start, len) = at[3];
        for (what, byte) in [("nonce", 3), ("ciphertext", NONCE_LEN + 100), ("tag", len - 1)] {
            let mut bad = whole[start..start + len].to_vec();
            bad[byte] ^= 1;
            match open_frame_in_place(&keys, &mut bad, "p", 1234) {
                Err(Error::NotAuthentic { name, .. }) => assert_eq!(name, "p (frame at offset 1234)", "{what}"),
                other => panic!("a changed byte of the {what} was not refused: {:?}", other.map(<[u8]>::len)),
            }
        }
        assert!(matches!(
            open_frame_in_place(&keys, &mut [0u8; OVERHEAD - 1], "p", 0),
            Err(Error::NotAuthentic { .. })
        ));
        // Authentic boxes of a bad plaintext: 97 stored bytes pad to 104
        // with 3 zero bytes; a non-zero padding byte, and a length longer
        // than the box.
        for (what, plain) in [
            ("padding", {
                let mut p = padded(&[7; 97]);
                p[103] = 1;
                p
            }),
            ("length", {
                let mut p = padded(&[7; 97]);
                p[..4].copy_from_slice(&200u32.to_le_bytes());
                p
            }),
        ] {
            let mut sealed = vec![0u8; NONCE_LEN];
            sealed.extend_from_slice(&plain);
            keys.seal_in_place(Purpose::BLOB_FRAME, &[], &mut sealed).unwrap();
            match open_frame_in_place(&keys, &mut sealed, "p", 8) {
                Err(Error::Corrupt { .. }) => {}
                other => panic!("a bad {what} was not refused: {:?}", other.map(<[u8]>::len)),
            }
        }
    }

    #[test]
    fn files_bind_purpose_and_refuse_plain_bytes() {
        let keys = Keys::derive(&MasterSecret::from_bytes([2; 32]));
        let f = seal_file(&keys, Purpose::SNAPSHOT, &[], b"payload").unwrap();
        assert_eq!(open_file(&keys, Purpose::SNAPSHOT, &[], &f, "snapshot", "n").unwrap(), b"payload");
        assert!(open_file(&keys, Purpose::INDEX_FILE, &[], &f, "index file", "n").is_err());
        assert!(matches!(
            open_file(&keys, Purpose::SNAPSHOT, &[], b"ARCF plain", "snapshot", "n"),
            Err(Error::NotAuthentic { .. })
        ));
    }
}
