//! The sealed `content_keys` of a v2 config (feature `shared-content-keys`,
//! format-spec/v2/crypto.md §2.4): another repository's chunk id key, tree
//! split key and gear seed, sealed under this repository's metadata key with
//! the config id as associated data.
//!
//! ```text
//! plaintext = version u8 (=1) || chunk id key [32] || tree split key [32] || gear seed u64
//! stored    = hex of box (format::sealed) = 2 * (24 + 73 + 16) characters
//! ```

use zeroize::Zeroizing;

use crate::crypto::{ContentKeys, Keys, Purpose, KEY_LEN};
use crate::error::{Error, Result};
use crate::id::Id;

const VERSION: u8 = 1;
const PLAINTEXT_LEN: usize = 1 + 2 * KEY_LEN + 8;

fn plaintext(content: &ContentKeys) -> Zeroizing<Vec<u8>> {
    let mut p = Zeroizing::new(Vec::with_capacity(PLAINTEXT_LEN));
    p.push(VERSION);
    p.extend_from_slice(&content.chunk_id[..]);
    p.extend_from_slice(&content.tree_split[..]);
    p.extend_from_slice(&content.gear_seed.to_le_bytes());
    p
}

/// Seals `content` for the config of repository `config_id`; hex, as the
/// config stores it.
pub fn seal(keys: &Keys, config_id: &Id, content: &ContentKeys) -> Result<String> {
    Ok(hex::encode(keys.seal(Purpose::CONTENT_KEYS, &config_id.0, &plaintext(content))?))
}

/// [`seal`] with a given nonce, for golden vectors only.
#[doc(hidden)]
pub fn seal_with_nonce(keys: &Keys, config_id: &Id, content: &ContentKeys, nonce: [u8; 24]) -> Result<String> {
    Ok(hex::encode(keys.seal_with_nonce(Purpose::CONTENT_KEYS, &config_id.0, &plaintext(content), nonce)?))
}

/// Opens the config's `content_keys`. Anything but a box sealed by this
/// repository's master secret for this config id is not authentic.
pub fn open(keys: &Keys, config_id: &Id, stored: &str) -> Result<ContentKeys> {
    let not_authentic = || Error::NotAuthentic { what: "config content keys", name: "config".into() };
    let sealed = hex::decode(stored).map_err(|_| not_authentic())?;
    let p = Zeroizing::new(keys.open(Purpose::CONTENT_KEYS, &config_id.0, &sealed, "config content keys", "config")?);
    if p.len() != PLAINTEXT_LEN || p[0] != VERSION {
        return Err(Error::corrupt(
            "config",
            "config",
            format!(
                "content keys of version {} and {} bytes are not supported",
                p.first().copied().unwrap_or(0),
                p.len()
            ),
        ));
    }
    let mut chunk_id = Zeroizing::new([0u8; KEY_LEN]);
    chunk_id.copy_from_slice(&p[1..1 + KEY_LEN]);
    let mut tree_split = Zeroizing::new([0u8; KEY_LEN]);
    tree_split.copy_from_slice(&p[1 + KEY_LEN..1 + 2 * KEY_LEN]);
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&p[1 + 2 * KEY_LEN..]);
    let gear_seed = u64::from_le_bytes(seed);
    if gear_seed == 0 {
        return Err(Error::corrupt("config", "config", "content keys with gear seed 0"));
    }
    Ok(ContentKeys { chunk_id, tree_split, gear_seed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterSecret;

    #[test]
    fn content_keys_round_trip_and_bind_to_the_repository() {
        let source = Keys::derive(&MasterSecret::from_bytes([9; 32]));
        let target = Keys::derive(&MasterSecret::from_bytes([10; 32]));
        let id = Id([1; 32]);
        let stored = seal(&target, &id, &source.content_keys()).unwrap();
        let opened = open(&target, &id, &stored).unwrap();
        let shared = Keys::derive(&MasterSecret::from_bytes([10; 32])).with_content_keys(opened);
        assert_eq!(shared.chunk_id(b"x"), source.chunk_id(b"x"));
        assert_eq!(shared.gear_seed(), source.gear_seed());
        assert_eq!(shared.tree_split_key(), source.tree_split_key());
        // Sealing stays the target's own.
        let sealed = shared.seal(Purpose::SNAPSHOT, b"", b"s").unwrap();
        assert!(source.open(Purpose::SNAPSHOT, b"", &sealed, "t", "t").is_err());
        assert!(target.open(Purpose::SNAPSHOT, b"", &sealed, "t", "t").is_ok());
        // Another repository's id, another key, a flipped byte: not authentic.
        assert!(matches!(open(&target, &Id([2; 32]), &stored), Err(Error::NotAuthentic { .. })));
        assert!(matches!(open(&source, &id, &stored), Err(Error::NotAuthentic { .. })));
        let mut flipped = stored.clone().into_bytes();
        flipped[60] = if flipped[60] == b'0' { b'1' } else { b'0' };
        assert!(matches!(open(&target, &id, std::str::from_utf8(&flipped).unwrap()), Err(Error::NotAuthentic { .. })));
        assert!(matches!(open(&target, &id, "zz"), Err(Error::NotAuthentic { .. })));
    }
}
