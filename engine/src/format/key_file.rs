//! Key files (`keys/<id>`, format v2): each wraps the repository's master
//! secret under one passphrase. An envelope of type 5 (raw codec) around
//! JSON; the layout and the reasons are in format-spec/v2/crypto.md.
//!
//! The wrapping key is Argon2id(passphrase, salt) with the parameters
//! stored in the file, so they can be raised later without a format
//! change. `--encryption none` repositories use the same file with
//! `"kdf": "none"`: the wrapping key is then derived from the salt alone,
//! so anyone can unwrap it, and every other code path stays the same.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::envelope::{self, Codec, FileType};
use crate::crypto::{fill_random, MasterSecret, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::error::{Error, Result};
use crate::id::Id;

const ENVELOPE_VERSION: u8 = 1;
const CTX_UNPROTECTED: &str = "arc 2026-12 format v2 unprotected key wrapping";

/// Argon2id cost: RFC 9106's second recommended setting (64 MiB, 3 passes,
/// 4 lanes). The lanes are computed in parallel (argon2's `parallel`
/// feature): on two idle cores a command on a passphrase repository took
/// 0.10 s where one lane took 0.125-0.13 s (perf stat, 8 runs each), with
/// the same memory and total work, and more cores gain more. Key files
/// written with one lane (before 2026-12-06) keep their parameters and
/// still open; `key passwd` rewrites them with these. Why this cost, and
/// the least one for a generated passphrase: format-spec/v2/crypto.md 2.2.1.
pub const DEFAULT_M_COST_KIB: u32 = 64 * 1024;
pub const DEFAULT_T_COST: u32 = 3;
pub const DEFAULT_P_COST: u32 = 4;
/// The cost for a passphrase of 256 random bits ([`Protection::generated`]):
/// Argon2's minimum memory for one lane.
pub const GENERATED_M_COST_KIB: u32 = 8;
pub const GENERATED_T_COST: u32 = 1;
pub const GENERATED_P_COST: u32 = 1;
/// Readers refuse parameters beyond these, so a forged key file cannot make
/// opening a repository take gigabytes or hours.
const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KdfAlgorithm {
    Argon2id,
    /// No passphrase: the key is stored unprotected (`--encryption none`).
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kdf {
    pub algorithm: KdfAlgorithm,
    /// Argon2 version (0x13 = 19); 0 for `none`.
    pub version: u32,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    /// 32 random bytes, hex.
    pub salt: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    pub kdf: Kdf,
    /// The repository (config `id`) this key belongs to; bound into the
    /// wrapping, so a key file copied from another repository never opens.
    pub repository: Id,
    pub created: chrono::DateTime<chrono::Utc>,
    pub host: String,
    pub username: String,
    /// `nonce [24] || XChaCha20-Poly1305(master secret) || tag [16]`, hex.
    pub wrapped: String,
}

/// How a new key file protects the master secret.
#[derive(Clone)]
pub enum Protection {
    Passphrase { passphrase: Zeroizing<String>, m_cost_kib: u32, t_cost: u32, p_cost: u32 },
    Unprotected,
}

impl Protection {
    pub fn passphrase(p: Zeroizing<String>) -> Protection {
        let (m_cost_kib, t_cost, p_cost) = crate::fault::kdf_cost((DEFAULT_M_COST_KIB, DEFAULT_T_COST, DEFAULT_P_COST));
        Protection::Passphrase { passphrase: p, m_cost_kib, t_cost, p_cost }
    }

    /// A passphrase arc generated itself from 256 random bits (the default
    /// repository's): Argon2id at its least cost. Stretching exists to slow
    /// the guessing of a human passphrase; nothing makes 2^256 guesses,
    /// and at the default cost every command on the default repository
    /// would spend 64 MiB and a tenth of a second on it for nothing.
    pub fn generated(p: Zeroizing<String>) -> Protection {
        Protection::Passphrase {
            passphrase: p,
            m_cost_kib: GENERATED_M_COST_KIB,
            t_cost: GENERATED_T_COST,
            p_cost: GENERATED_P_COST,
        }
    }
}

fn wrap_ad(repository: &Id) -> Vec<u8> {
    let mut ad = b"arc2 key file".to_vec();
    ad.extend_from_slice(&repository.0);
    ad
}

fn wrapping_key(kdf: &Kdf, passphrase: Option<&str>, name: &str) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let mut salt = [0u8; 32];
    hex::decode_to_slice(&kdf.salt, &mut salt)
        .map_err(|_| Error::corrupt("key file", name, "salt is not 64 hex digits"))?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    match kdf.algorithm {
        KdfAlgorithm::None => *out = blake3::derive_key(CTX_UNPROTECTED, &salt),
        KdfAlgorithm::Argon2id => {
            let passphrase = passphrase.ok_or(Error::PassphraseRequired)?;
            if kdf.version != 0x13
                || !(8..=MAX_M_COST_KIB).contains(&kdf.m_cost_kib)
                || !(1..=MAX_T_COST).contains(&kdf.t_cost)
                || !(1..=MAX_P_COST).contains(&kdf.p_cost)
            {
                return Err(Error::corrupt("key file", name, "Argon2id parameters out of range"));
            }
            let params = Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(KEY_LEN))
                .map_err(|e| Error::corrupt("key file", name, format!("Argon2id parameters: {e}")))?;
            let blocks = params.block_count();
            let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
            let hashed = match ArgonMemory::new(blocks) {
                Some(memory) => {
                    argon.hash_password_into_with_memory(passphrase.as_bytes(), &salt, &mut out[..], memory)
                }
                // No mapping (an address-space limit): argon2's own allocation.
                None => argon.hash_password_into(passphrase.as_bytes(), &salt, &mut out[..]),
            };
            hashed.map_err(|e| Error::corrupt("key file", name, format!("Argon2id: {e}")))?;
        }
    }
    Ok(out)
}

/// Argon2id's memory as an anonymous mapping, whose pages the kernel zeroes
/// when they are first touched. argon2's own allocation (`alloc_zeroed` of
/// 64-byte aligned blocks) is a `memset` of all 64 MiB on the calling
/// thread, because the system allocator hands out pre-zeroed memory
/// (calloc) only up to 16-byte alignment: every page was faulted in and
/// zeroed twice, serially, before the lanes started (perf: the first
/// 20-40 ms of every command on a passphrase repository, on one core). Here
/// the first pass touches each page once, on the lanes' threads, in parallel.
struct ArgonMemory {
    map: memmap2::MmapMut,
    blocks: usize,
}

impl ArgonMemory {
    fn new(blocks: usize) -> Option<ArgonMemory> {
        let map = memmap2::MmapMut::map_anon(blocks.checked_mul(argon2::Block::SIZE)?).ok()?;
        Some(ArgonMemory { map, blocks })
    }
}

impl AsMut<[argon2::Block]> for ArgonMemory {
    fn as_mut(&mut self) -> &mut [argon2::Block] {
        // SAFETY: the mapping is page-aligned (Block needs 64 bytes), holds
        // `blocks * Block::SIZE` bytes, is borrowed mutably for the slice's
        // lifetime, and any bytes are a valid Block (an array of u64).
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().cast::<argon2::Block>(), self.blocks) }
    }
}

impl KeyFile {
    /// Wraps `master` for the repository `repository`.
    pub fn create(
        master: &MasterSecret,
        repository: Id,
        protection: &Protection,
        host: String,
        username: String,
    ) -> Result<KeyFile> {
        let mut salt = [0u8; 32];
        fill_random(&mut salt)?;
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        Self::create_with(master, repository, protection, host, username, chrono::Utc::now(), salt, nonce)
    }

    /// [`KeyFile::create`] with given randomness and time: for golden
    /// vectors only.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn create_with(
        master: &MasterSecret,
        repository: Id,
        protection: &Protection,
        host: String,
        username: String,
        created: chrono::DateTime<chrono::Utc>,
        salt: [u8; 32],
        nonce: [u8; NONCE_LEN],
    ) -> Result<KeyFile> {
        let (kdf, passphrase) = match protection {
            Protection::Passphrase { passphrase, m_cost_kib, t_cost, p_cost } => (
                Kdf {
                    algorithm: KdfAlgorithm::Argon2id,
                    version: 0x13,
                    m_cost_kib: *m_cost_kib,
                    t_cost: *t_cost,
                    p_cost: *p_cost,
                    salt: hex::encode(salt),
                },
                Some(passphrase.as_str()),
            ),
            Protection::Unprotected => (
                Kdf {
                    algorithm: KdfAlgorithm::None,
                    version: 0,
                    m_cost_kib: 0,
                    t_cost: 0,
                    p_cost: 0,
                    salt: hex::encode(salt),
                },
                None,
            ),
        };
        let kek = wrapping_key(&kdf, passphrase, "new")?;
        let ct = XChaCha20Poly1305::new(kek.as_ref().into())
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: master.as_bytes(), aad: &wrap_ad(&repository) })
            .map_err(|_| Error::InvalidArgument { what: "key", reason: "cannot wrap the master secret".into() })?;
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&ct);
        Ok(KeyFile { kdf, repository, created, host, username, wrapped: hex::encode(wrapped) })
    }

    pub fn is_protected(&self) -> bool {
        self.kdf.algorithm == KdfAlgorithm::Argon2id
    }

    /// Unwraps the master secret. `Ok(None)` when the passphrase is wrong
    /// (or the file belongs to another repository): the caller tries the
    /// next key file.
    pub fn unwrap_master(&self, passphrase: Option<&str>, name: &str) -> Result<Option<MasterSecret>> {
        let wrapped =
            hex::decode(&self.wrapped).map_err(|_| Error::corrupt("key file", name, "wrapped key is not hex"))?;
        if wrapped.len() != NONCE_LEN + KEY_LEN + TAG_LEN {
            return Err(Error::corrupt("key file", name, "wrapped key has the wrong length"));
        }
        let kek = wrapping_key(&self.kdf, passphrase, name)?;
        let plain = match XChaCha20Poly1305::new(kek.as_ref().into()).decrypt(
            XNonce::from_slice(&wrapped[..NONCE_LEN]),
            Payload { msg: &wrapped[NONCE_LEN..], aad: &wrap_ad(&self.repository) },
        ) {
            Ok(p) => Zeroizing::new(p),
            Err(_) => return Ok(None),
        };
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&plain);
        Ok(Some(MasterSecret::from_bytes(key)))
    }

    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec_pretty(self).expect("key file serializes");
        envelope::seal(FileType::Key, ENVELOPE_VERSION, Codec::Raw, &json)
    }

    pub fn decode(data: &[u8], name: &str) -> Result<KeyFile> {
        let (_, payload) = envelope::open(FileType::Key, ENVELOPE_VERSION, name, data)?;
        serde_json::from_slice(&payload).map_err(|e| Error::corrupt("key file", name, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap(p: &str) -> Protection {
        Protection::Passphrase { passphrase: Zeroizing::new(p.into()), m_cost_kib: 64, t_cost: 1, p_cost: 1 }
    }

    #[test]
    fn argon2_in_a_mapping_derives_what_argon2s_own_allocation_derives() {
        let kdf = Kdf {
            algorithm: KdfAlgorithm::Argon2id,
            version: 0x13,
            m_cost_kib: 1024,
            t_cost: 2,
            p_cost: 4,
            salt: hex::encode([7u8; 32]),
        };
        let params = Params::new(1024, 2, 4, Some(KEY_LEN)).unwrap();
        let mut expected = [0u8; KEY_LEN];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(b"secret", &[7u8; 32], &mut expected)
            .unwrap();
        assert_eq!(*wrapping_key(&kdf, Some("secret"), "k").unwrap(), expected);
    }

    #[test]
    fn wrap_unwrap_wrong_passphrase_and_other_repository() {
        let master = MasterSecret::from_bytes([9; 32]);
        let repo = Id::hash(b"repo");
        let kf = KeyFile::create(&master, repo, &cheap("secret"), "h".into(), "u".into()).unwrap();
        let kf = KeyFile::decode(&kf.encode(), "k").unwrap();
        assert_eq!(kf.unwrap_master(Some("secret"), "k").unwrap().unwrap().as_bytes(), master.as_bytes());
        assert!(kf.unwrap_master(Some("wrong"), "k").unwrap().is_none());
        assert!(matches!(kf.unwrap_master(None, "k"), Err(Error::PassphraseRequired)));
        let mut moved = kf.clone();
        moved.repository = Id::hash(b"other");
        assert!(moved.unwrap_master(Some("secret"), "k").unwrap().is_none());
        let plain = KeyFile::create(&master, repo, &Protection::Unprotected, "h".into(), "u".into()).unwrap();
        assert!(!plain.is_protected());
        assert_eq!(plain.unwrap_master(None, "k").unwrap().unwrap().as_bytes(), master.as_bytes());
        let mut huge = kf.clone();
        huge.kdf.m_cost_kib = u32::MAX;
        assert!(matches!(huge.unwrap_master(Some("secret"), "k"), Err(Error::Corrupt { .. })));
    }
}
