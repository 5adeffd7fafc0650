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

/// Pads and seals one pack frame (compressed or raw stored bytes).
pub fn seal_frame(keys: &Keys, stored: &[u8]) -> Result<Vec<u8>> {
    keys.seal(Purpose::BLOB_FRAME, &[], &padded(stored))
}

/// `stored_len u32 || stored || zero padding` up to padmé(4 + stored_len):
/// the plaintext of every sealed frame (delta frames too, format::delta).
pub(crate) fn padded(stored: &[u8]) -> Vec<u8> {
    let inner_len = padme(4 + stored.len() as u64) as usize;
    let mut inner = Vec::with_capacity(inner_len);
    inner.extend_from_slice(&(stored.len() as u32).to_le_bytes());
    inner.extend_from_slice(stored);
    inner.resize(inner_len, 0);
    inner
}

/// The stored bytes of a padded frame plaintext ([`padded`]), refusing a
/// wrong length or non-zero padding.
pub(crate) fn unpadded(mut inner: Vec<u8>, pack: &str, offset: u64) -> Result<Vec<u8>> {
    let bad = || Error::corrupt("pack", pack, format!("sealed frame at {offset}: bad length or padding"));
    let len = u32::from_le_bytes(inner.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
    if 4 + len > inner.len()
        || padme(4 + len as u64) as usize != inner.len()
        || inner[4 + len..].iter().any(|&b| b != 0)
    {
        return Err(bad());
    }
    inner.truncate(4 + len);
    inner.drain(..4);
    Ok(inner)
}

/// Opens a sealed frame of pack `pack` at `offset`; returns the stored
/// bytes without padding.
pub fn open_frame(keys: &Keys, sealed: &[u8], pack: &str, offset: u64) -> Result<Vec<u8>> {
    let inner = keys
        .open(Purpose::BLOB_FRAME, &[], sealed, "pack", pack)
        .map_err(|_| Error::NotAuthentic { what: "pack", name: format!("{pack} (frame at offset {offset})") })?;
    unpadded(inner, pack, offset)
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
