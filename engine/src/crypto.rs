//! The keys of a format-v2 repository: the random master secret, the
//! subkeys derived from it, and the one sealing API every v2 file goes
//! through. Byte layouts (sealed boxes, key files) live in
//! `format::sealed` and `format::key_file`; this module owns the secrets.
//!
//! Every primitive comes from a RustCrypto or BLAKE3 crate: BLAKE3
//! `derive_key` for subkeys and `keyed_hash` for chunk ids and the config
//! MAC, XChaCha20-Poly1305 (`chacha20poly1305`) for sealing, Argon2id
//! (`argon2`) for passphrases (in `format::key_file`). See
//! format-spec/v2/crypto.md for why each was chosen.

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::id::Id;

/// Length of the master secret and of every subkey.
pub const KEY_LEN: usize = 32;
/// XChaCha20 nonces: 192 random bits, so hosts writing at once never need
/// to coordinate (a collision is a 2^-96 event after 2^48 messages).
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag.
pub const TAG_LEN: usize = 16;

/// BLAKE3 `derive_key` contexts, one per subkey. Fixed forever: changing
/// one changes every id and makes every repository unreadable.
const CTX_CHUNK_ID: &str = "arc 2026-12 format v2 chunk id";
const CTX_GEAR: &str = "arc 2026-12 format v2 chunker gear seed";
const CTX_DATA: &str = "arc 2026-12 format v2 data sealing";
const CTX_METADATA: &str = "arc 2026-12 format v2 metadata sealing";
const CTX_CONFIG: &str = "arc 2026-12 format v2 config mac";
const CTX_TREE_SPLIT: &str = "arc 2026-12 format v2 tree split";

/// The random master secret of a repository. Every key file wraps the same
/// one; everything else is derived from it.
#[derive(Clone)]
pub struct MasterSecret(Zeroizing<[u8; KEY_LEN]>);

impl MasterSecret {
    pub fn random() -> Result<MasterSecret> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(&mut k[..])?;
        Ok(MasterSecret(k))
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterSecret {
        MasterSecret(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// Which subkey seals a purpose's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// Blob frames in packs (file contents and tree blobs).
    Data,
    /// Everything else: trailers, index files, snapshots, locks, sessions.
    Metadata,
}

/// What a sealed box is for. The label is bound into the associated data,
/// so a box sealed for one purpose never opens as another (a snapshot
/// cannot be passed off as a lock, a trailer as a frame). Other modules
/// define their own purposes with [`Purpose::new`]; labels must be unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purpose {
    pub label: &'static str,
    pub key: KeyUse,
}

impl Purpose {
    pub const fn new(label: &'static str, key: KeyUse) -> Purpose {
        Purpose { label, key }
    }
    pub const BLOB_FRAME: Purpose = Purpose::new("blob frame", KeyUse::Data);
    /// Delta frames of stream chunks (format-spec/v2/streams.md §4); the
    /// associated data is the base chunk's id.
    pub const DELTA_FRAME: Purpose = Purpose::new("delta frame", KeyUse::Data);
    pub const PACK_TRAILER: Purpose = Purpose::new("pack trailer", KeyUse::Metadata);
    pub const INDEX_FILE: Purpose = Purpose::new("index file", KeyUse::Metadata);
    pub const SNAPSHOT: Purpose = Purpose::new("snapshot", KeyUse::Metadata);
    pub const LOCK: Purpose = Purpose::new("lock", KeyUse::Metadata);
    /// Session files (format-spec/v2/protocol.md §2.1); the associated
    /// data is the file's name.
    pub const SESSION: Purpose = Purpose::new("session", KeyUse::Metadata);
    /// Prune marks (protocol.md §2.2); named by the hash of their sealed
    /// bytes, like snapshots.
    pub const PRUNE_MARK: Purpose = Purpose::new("prune mark", KeyUse::Metadata);
    /// Content keys taken from another repository, sealed in the config
    /// (crypto.md §2.4); the associated data is the config id.
    pub const CONTENT_KEYS: Purpose = Purpose::new("content keys", KeyUse::Metadata);
}

/// The subkeys that decide how content is named and cut: the chunk id key,
/// the tree split key and the gear seed. Two repositories with equal
/// content keys (and chunker sizes) store identical content as identical
/// blobs, so `copy` between them sends only what the target lacks
/// (crypto.md §2.4). The sealing keys are not among them: each repository
/// still seals with its own.
#[derive(Clone)]
pub struct ContentKeys {
    pub chunk_id: Zeroizing<[u8; KEY_LEN]>,
    pub tree_split: Zeroizing<[u8; KEY_LEN]>,
    /// Never 0 (fastcdc's "unseeded").
    pub gear_seed: u64,
}

impl std::fmt::Debug for ContentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKeys(..)")
    }
}

/// The subkeys of an opened repository.
pub struct Keys {
    chunk_id: Zeroizing<[u8; KEY_LEN]>,
    config_mac: Zeroizing<[u8; KEY_LEN]>,
    tree_split: Zeroizing<[u8; KEY_LEN]>,
    gear_seed: u64,
    data: XChaCha20Poly1305,
    metadata: XChaCha20Poly1305,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

fn derive(context: &str, master: &MasterSecret) -> Zeroizing<[u8; KEY_LEN]> {
    Zeroizing::new(blake3::derive_key(context, master.as_bytes()))
}

impl Keys {
    pub fn derive(master: &MasterSecret) -> Keys {
        let data = derive(CTX_DATA, master);
        let metadata = derive(CTX_METADATA, master);
        let mut gear = derive(CTX_GEAR, master);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&gear[..8]);
        gear.zeroize();
        Keys {
            chunk_id: derive(CTX_CHUNK_ID, master),
            config_mac: derive(CTX_CONFIG, master),
            tree_split: derive(CTX_TREE_SPLIT, master),
            // fastcdc treats seed 0 as "unseeded"; 2^-64 odds, but a fixed
            // non-zero fallback keeps the rule total.
            gear_seed: match u64::from_le_bytes(seed) {
                0 => 1,
                s => s,
            },
            data: XChaCha20Poly1305::new(data.as_ref().into()),
            metadata: XChaCha20Poly1305::new(metadata.as_ref().into()),
        }
    }

    /// A blob's id: keyed BLAKE3 of its plaintext, so nobody without the
    /// key can test whether the repository holds a known file.
    pub fn chunk_id(&self, data: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.chunk_id, data).as_bytes())
    }

    /// The keys that name and cut content, to be shared with a repository
    /// made with `init --copy-chunker-params-from` this one.
    pub fn content_keys(&self) -> ContentKeys {
        ContentKeys { chunk_id: self.chunk_id.clone(), tree_split: self.tree_split.clone(), gear_seed: self.gear_seed }
    }

    /// These keys with the content keys of another repository in place of
    /// the ones derived from this repository's master secret (a config
    /// with `content_keys`); sealing and the config MAC stay this
    /// repository's own.
    pub fn with_content_keys(mut self, content: ContentKeys) -> Keys {
        self.chunk_id = content.chunk_id;
        self.tree_split = content.tree_split;
        self.gear_seed = content.gear_seed;
        self
    }

    /// The chunker's gear-table seed (fastcdc `with_level_and_seed`), so
    /// chunk boundaries, and with them chunk sizes, depend on the key.
    pub fn gear_seed(&self) -> u64 {
        self.gear_seed
    }

    /// The key of the boundary hashes that split v2 directories and chunk
    /// lists (format-spec/v2/trees-index.md 1.5), secret for the same
    /// reason as the gear seed: where a directory is cut depends on names.
    pub fn tree_split_key(&self) -> [u8; KEY_LEN] {
        *self.tree_split
    }

    /// MAC of the config payload: nobody without the master secret can
    /// change the config (downgrade, swap chunker parameters).
    pub fn config_mac(&self, canonical: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.config_mac, canonical).as_bytes()
    }

    fn cipher(&self, purpose: Purpose) -> &XChaCha20Poly1305 {
        match purpose.key {
            KeyUse::Data => &self.data,
            KeyUse::Metadata => &self.metadata,
        }
    }

    /// Seals `plaintext` for `purpose` with `ad` bound as associated data:
    /// returns `nonce || ciphertext || tag` (see format::sealed for the
    /// byte layout and the associated-data encoding).
    pub fn seal(&self, purpose: Purpose, ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        self.seal_with_nonce(purpose, ad, plaintext, nonce)
    }

    /// [`Keys::seal`] with a given nonce: for golden vectors only; a real
    /// writer must never choose nonces.
    #[doc(hidden)]
    pub fn seal_with_nonce(
        &self,
        purpose: Purpose,
        ad: &[u8],
        plaintext: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Vec<u8>> {
        let aad = crate::format::sealed::associated_data(purpose, ad);
        let ct = self
            .cipher(purpose)
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: &aad })
            .map_err(|_| Error::InvalidArgument { what: "sealed data", reason: "too large to seal".into() })?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// [`Keys::seal`] without copying: `buf` holds `NONCE_LEN` bytes of
    /// room followed by the plaintext, and is turned into the same box
    /// `seal` returns (`nonce || ciphertext || tag`). Pack frames are
    /// sealed this way: their bytes are assembled once, in place.
    pub fn seal_in_place(&self, purpose: Purpose, ad: &[u8], buf: &mut Vec<u8>) -> Result<()> {
        if buf.len() < NONCE_LEN {
            return Err(Error::InvalidArgument { what: "sealed data", reason: "no room for the nonce".into() });
        }
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        buf[..NONCE_LEN].copy_from_slice(&nonce);
        let aad = crate::format::sealed::associated_data(purpose, ad);
        let tag = self
            .cipher(purpose)
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, &mut buf[NONCE_LEN..])
            .map_err(|_| Error::InvalidArgument { what: "sealed data", reason: "too large to seal".into() })?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// [`Keys::open`] without copying: decrypts the box in `sealed` in
    /// place and returns the range of the plaintext within it.
    pub fn open_in_place(
        &self,
        purpose: Purpose,
        ad: &[u8],
        sealed: &mut [u8],
        what: &'static str,
        name: &str,
    ) -> Result<std::ops::Range<usize>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::NotAuthentic { what, name: name.to_string() });
        }
        let aad = crate::format::sealed::associated_data(purpose, ad);
        let end = sealed.len() - TAG_LEN;
        let (head, tag) = sealed.split_at_mut(end);
        let (nonce, body) = head.split_at_mut(NONCE_LEN);
        self.cipher(purpose)
            .decrypt_in_place_detached(XNonce::from_slice(nonce), &aad, body, (&*tag).into())
            .map_err(|_| Error::NotAuthentic { what, name: name.to_string() })?;
        Ok(NONCE_LEN..end)
    }

    /// Opens a box sealed by [`Keys::seal`] for the same purpose and
    /// associated data. Any change to the box, the purpose or `ad` fails
    /// with [`Error::NotAuthentic`] naming `what`/`name`.
    pub fn open(&self, purpose: Purpose, ad: &[u8], sealed: &[u8], what: &'static str, name: &str) -> Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::NotAuthentic { what, name: name.to_string() });
        }
        let aad = crate::format::sealed::associated_data(purpose, ad);
        self.cipher(purpose)
            .decrypt(XNonce::from_slice(&sealed[..NONCE_LEN]), Payload { msg: &sealed[NONCE_LEN..], aad: &aad })
            .map_err(|_| Error::NotAuthentic { what, name: name.to_string() })
    }
}

/// Fills `buf` from the operating system's random source.
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::io("getrandom", std::io::Error::other(e.to_string())))
}

/// Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files
/// and Communication with PURBs", PETS 2019): rounds `len` up so that at
/// most O(log log len) bits of it remain, costing at most ~12% overhead.
/// Written here because it is a size rule, not a cryptographic primitive,
/// and no maintained crate provides it.
pub fn padme(len: u64) -> u64 {
    if len < 2 {
        return len;
    }
    let e = 63 - u64::from(len.leading_zeros()); // floor(log2 len)
    let s = 64 - u64::from(e.leading_zeros()); // floor(log2 e) + 1
    let last_bits = e - s;
    let mask = (1u64 << last_bits) - 1;
    (len + mask) & !mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padme_matches_the_paper() {
        // Values from the PURBs paper's reference implementation.
        for (l, p) in [(0, 0), (1, 1), (2, 2), (9, 10), (100, 104), (1000, 1024), (4097, 4352), (1_000_000, 1_015_808)]
        {
            assert_eq!(padme(l), p, "padme({l})");
        }
        for l in 2..100_000u64 {
            let p = padme(l);
            assert!(p >= l && (p - l) * 100 <= l * 12 + 100, "padme({l}) = {p}");
        }
    }

    #[test]
    fn seal_binds_purpose_and_associated_data() {
        let keys = Keys::derive(&MasterSecret::from_bytes([7; 32]));
        let sealed = keys.seal(Purpose::SNAPSHOT, b"ad", b"hello").unwrap();
        assert_eq!(keys.open(Purpose::SNAPSHOT, b"ad", &sealed, "snapshot", "x").unwrap(), b"hello");
        assert!(keys.open(Purpose::LOCK, b"ad", &sealed, "lock", "x").is_err());
        assert!(keys.open(Purpose::SNAPSHOT, b"other", &sealed, "snapshot", "x").is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(matches!(
                keys.open(Purpose::SNAPSHOT, b"ad", &bad, "snapshot", "x"),
                Err(Error::NotAuthentic { .. })
            ));
        }
        let other = Keys::derive(&MasterSecret::from_bytes([8; 32]));
        assert!(other.open(Purpose::SNAPSHOT, b"ad", &sealed, "snapshot", "x").is_err());
        assert!(keys.open(Purpose::SNAPSHOT, b"ad", &sealed[..10], "snapshot", "x").is_err());
        // Random nonces: sealing twice differs.
        assert_ne!(sealed, keys.seal(Purpose::SNAPSHOT, b"ad", b"hello").unwrap());
    }
}
