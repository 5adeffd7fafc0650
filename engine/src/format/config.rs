//! The repository config: the one file that says how everything else in the
//! repository was made. It is written once by `init` and never changes, so
//! every host and every later arc version chunks and ids data identically.

use serde::{Deserialize, Serialize};

use super::envelope::{self, Codec, FileType};
use crate::error::{Error, Result};
use crate::id::{Id, IdScheme};

/// The repository format this binary writes and the newest it reads.
pub const REPO_FORMAT_VERSION: u32 = 2;
/// The oldest format this binary still writes into. Older repositories
/// (v1) stay readable forever but are read-only: new encodings go only into
/// v2, and a v1 repository is migrated with a copy into a new one.
pub const OLDEST_WRITABLE_VERSION: u32 = 2;

/// The features of format v2 that this binary implements. A v2 config
/// lists the features a reader needs; a reader that lacks one refuses the
/// repository with [`Error::NeedsFeature`] instead of misreading it, so a
/// later arc can add a feature without a new format version.
///
/// A v2 config without a feature means the v1 encoding of what the feature
/// changes (format-spec/v2/README.md section 4): readers accept both
/// encodings, telling them apart by their own magic and version; writers
/// use the new one only where the config lists its feature, so an arc that
/// lacks the feature never meets the encoding.
pub const KNOWN_FEATURES: &[&str] =
    &[FEATURE_TREES_V2, FEATURE_INDEX_V2, FEATURE_SHARED_CONTENT_KEYS, FEATURE_STREAM_DELTAS];
/// The features `init` lists in every new repository; the others are listed
/// only by repositories made to use them. Features are set at `init` only:
/// no arc rewrites a stored config (SFTP and WebDAV cannot overwrite a file
/// atomically, S3 cannot compare-and-swap; format-spec/v2/streams.md §4.1),
/// so a repository made before a feature goes without it.
pub const DEFAULT_FEATURES: &[&str] = &[FEATURE_TREES_V2, FEATURE_INDEX_V2, FEATURE_STREAM_DELTAS];
/// Split directories, chunk list blobs, trees without change-detection
/// fields (format-spec/v2/trees-index.md section 1).
pub const FEATURE_TREES_V2: &str = "trees-v2";
/// Index files v2: sorted, capped, with `supersedes` (trees-index.md
/// section 2).
pub const FEATURE_INDEX_V2: &str = "index-v2";
/// Stream chunks stored as zstd deltas against a chunk of the parent's
/// stream (format-spec/v2/streams.md section 4; frame codec 2).
pub const FEATURE_STREAM_DELTAS: &str = "stream-deltas";
/// The config carries sealed `content_keys` taken from another repository
/// (`init --copy-chunker-params-from`; format-spec/v2/crypto.md §2.4): a
/// reader without the feature would name and cut content with keys derived
/// from this repository's master secret and find every blob "corrupt".
pub const FEATURE_SHARED_CONTENT_KEYS: &str = "shared-content-keys";
const ENVELOPE_VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Always "fastcdc-2020" in v1 (normalization level 1, seed 0).
    pub algorithm: ChunkerAlgorithm,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkerAlgorithm {
    #[serde(rename = "fastcdc-2020")]
    FastCdc2020,
}

impl ChunkerParams {
    pub fn new(min_size: u32, avg_size: u32, max_size: u32) -> Result<Self> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        let bad = |reason: String| Error::InvalidArgument { what: "chunk sizes", reason };
        // The 2020 algorithm steps two bytes at a time from `min`; an odd
        // minimum can produce a chunk one byte short of it.
        if !min_size.is_multiple_of(2) {
            return Err(bad(format!("minimum {min_size} must be even")));
        }
        if !(MINIMUM_MIN..=MINIMUM_MAX).contains(&min_size) {
            return Err(bad(format!("minimum {min_size} outside {MINIMUM_MIN}..={MINIMUM_MAX}")));
        }
        if !(AVERAGE_MIN..=AVERAGE_MAX).contains(&avg_size) || !avg_size.is_power_of_two() {
            return Err(bad(format!("average {avg_size} must be a power of two in {AVERAGE_MIN}..={AVERAGE_MAX}")));
        }
        if !(MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max_size) {
            return Err(bad(format!("maximum {max_size} outside {MAXIMUM_MIN}..={MAXIMUM_MAX}")));
        }
        if !(min_size < avg_size && avg_size < max_size) {
            return Err(bad(format!("need min < avg < max, got {min_size}/{avg_size}/{max_size}")));
        }
        Ok(ChunkerParams { algorithm: ChunkerAlgorithm::FastCdc2020, min_size, avg_size, max_size })
    }

    /// Defaults for file contents; see format-spec/SPEC.md "Chunk sizes" for
    /// the measurements behind them.
    pub fn default_files() -> Self {
        ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min_size: 256 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
        }
    }

    /// Defaults for stdin/command streams (database dumps), where smaller
    /// chunks make a day's small changes cost less.
    pub fn default_streams() -> Self {
        ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min_size: 64 * 1024,
            avg_size: 256 * 1024,
            max_size: 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionParams {
    pub algorithm: CompressionAlgorithm,
    pub level: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionAlgorithm {
    Zstd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Repository format version ([`REPO_FORMAT_VERSION`]).
    pub version: u32,
    /// Features a reader must implement (v2 and later; absent in v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// Random id of this repository; names its cache directory.
    pub id: Id,
    pub created: chrono::DateTime<chrono::Utc>,
    pub id_scheme: IdScheme,
    pub file_chunker: ChunkerParams,
    pub stream_chunker: ChunkerParams,
    pub compression: CompressionParams,
    /// How stream chunks (stdin, command output: database dumps) are
    /// compressed; absent means as `compression`. Only writers read it, so
    /// it needs no feature: an arc that does not know the key ignores it
    /// (and compresses streams as files), and the MAC covers it either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_compression: Option<CompressionParams>,
    /// Packs are closed once they reach this many bytes.
    pub pack_size: u32,
    /// Blobs smaller than this are grouped into one compressed frame until
    /// the frame holds about this many raw bytes.
    pub frame_size: u32,
    /// Timing of the v2 commit and prune protocol
    /// (format-spec/v2/protocol.md §3.2). Absent in v1 configs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ProtocolSettings>,
    /// v2: how the key files protect the master secret. Everything is
    /// sealed either way; this says whether key files need a passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// v2 with feature `shared-content-keys`: the chunk id key, tree split
    /// key and gear seed of the repository this one was made to dedup
    /// with, sealed (format::content_keys). Covered by `mac`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_keys: Option<String>,
    /// v2: keyed BLAKE3 (config MAC subkey) of the canonical config without
    /// this key, hex. Checked once the master secret is unwrapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// Durations of the v2 commit and prune protocol, in whole seconds of the
/// storage's clock (format-spec/v2/protocol.md §3.2). A missing key takes
/// its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProtocolSettings {
    /// A mark waits this long before its packs may be deleted; no pack
    /// younger than this is marked.
    pub grace_secs: u64,
    /// How often a session rewrites its file.
    pub session_refresh_secs: u64,
    /// A session not refreshed for this long is dead.
    pub session_expiry_secs: u64,
    /// Slack for the time from a put to its visibility in a listing.
    pub margin_secs: u64,
}

impl Default for ProtocolSettings {
    fn default() -> Self {
        ProtocolSettings {
            grace_secs: 24 * 3600,
            session_refresh_secs: 300,
            session_expiry_secs: 1800,
            margin_secs: 300,
        }
    }
}

impl ProtocolSettings {
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Error::InvalidArgument { what: "protocol settings", reason };
        if self.grace_secs == 0
            || self.session_refresh_secs == 0
            || self.session_expiry_secs == 0
            || self.margin_secs == 0
        {
            return Err(bad("every duration must be at least one second".into()));
        }
        if self.session_expiry_secs < 3 * self.session_refresh_secs {
            return Err(bad(format!(
                "session expiry {} s must be at least three refreshes ({} s)",
                self.session_expiry_secs,
                3 * self.session_refresh_secs
            )));
        }
        Ok(())
    }

    /// Settings for a grace period of `grace_secs`: the defaults for the
    /// default grace, and for a shorter one (tests) the session timings
    /// shrink with it, so that a session can expire within the grace
    /// period: expiry = grace (at least 3 s, at most 30 min), refresh =
    /// expiry / 6, margin = grace / 10 (at least 1 s, at most 5 min).
    pub fn with_grace(grace_secs: u64) -> ProtocolSettings {
        let d = ProtocolSettings::default();
        let expiry = grace_secs.clamp(3, d.session_expiry_secs);
        ProtocolSettings {
            grace_secs: grace_secs.max(1),
            session_refresh_secs: (expiry / 6).max(1),
            session_expiry_secs: expiry,
            margin_secs: (grace_secs / 10).clamp(1, d.margin_secs),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    /// Key files wrap the master secret with a passphrase (Argon2id).
    Passphrase,
    /// `--encryption none`: key files store the master secret unprotected.
    None,
}

impl Config {
    /// Whether the config lists `feature` (never in v1).
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.as_ref().is_some_and(|f| f.iter().any(|x| x == feature))
    }

    /// The bytes the config MAC covers: the config as a JSON value without
    /// its `mac` key, serialized compactly. Computed from the parsed value,
    /// so it covers keys this binary does not know as well.
    fn mac_input(value: &serde_json::Value) -> Vec<u8> {
        let mut v = value.clone();
        if let Some(obj) = v.as_object_mut() {
            obj.remove("mac");
        }
        serde_json::to_vec(&v).expect("a JSON value serializes")
    }

    /// Sets `mac` for the keys of the repository (v2).
    pub fn authenticate(&mut self, keys: &crate::crypto::Keys) {
        self.mac = None;
        let value = serde_json::to_value(&*self).expect("config serializes");
        self.mac = Some(hex::encode(keys.config_mac(&Self::mac_input(&value))));
    }

    /// Checks the MAC of a stored config (its exact payload) with the
    /// repository's keys: a config changed by anyone without the master
    /// secret (say, to claim `--encryption none` or other chunker sizes)
    /// fails here.
    pub fn verify(data: &[u8], keys: &crate::crypto::Keys) -> Result<()> {
        let not_authentic = || Error::NotAuthentic { what: "config", name: "config".into() };
        let (_, payload) = envelope::open(FileType::Config, ENVELOPE_VERSION, "config", data)?;
        let value: serde_json::Value =
            serde_json::from_slice(&payload).map_err(|e| Error::corrupt("config", "config", e.to_string()))?;
        let stored = value.get("mac").and_then(|m| m.as_str()).ok_or_else(not_authentic)?;
        let expected = keys.config_mac(&Self::mac_input(&value));
        // Compared as BLAKE3 hashes do: blake3::Hash equality is constant-time.
        let mut got = [0u8; 32];
        hex::decode_to_slice(stored, &mut got).map_err(|_| not_authentic())?;
        if blake3::Hash::from(got) != blake3::Hash::from(expected) {
            return Err(not_authentic());
        }
        Ok(())
    }

    /// The zstd level for stream chunks.
    pub fn stream_level(&self) -> i32 {
        self.stream_compression.unwrap_or(self.compression).level
    }

    /// Whether this binary may write into the repository (see
    /// [`OLDEST_WRITABLE_VERSION`]).
    pub fn writable(&self) -> bool {
        self.version >= OLDEST_WRITABLE_VERSION
    }

    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec_pretty(self).expect("config serializes");
        envelope::seal(FileType::Config, ENVELOPE_VERSION, Codec::Raw, &json)
    }

    pub fn decode(data: &[u8]) -> Result<Config> {
        let (_, payload) = envelope::open(FileType::Config, ENVELOPE_VERSION, "config", data)?;
        // Read the version alone first so that a newer repository is reported
        // as such rather than as a parse error of fields we do not know.
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let v: VersionOnly =
            serde_json::from_slice(&payload).map_err(|e| Error::corrupt("config", "config", e.to_string()))?;
        if v.version == 0 {
            return Err(Error::corrupt("config", "config", "repository format version 0 does not exist"));
        }
        if v.version > REPO_FORMAT_VERSION {
            return Err(Error::UnsupportedVersion { found: v.version, supported: REPO_FORMAT_VERSION });
        }
        // Features before the full parse, for the same reason: a feature we
        // lack may come with fields we cannot parse.
        #[derive(Deserialize)]
        struct FeaturesOnly {
            #[serde(default)]
            features: Option<Vec<String>>,
        }
        let f: FeaturesOnly =
            serde_json::from_slice(&payload).map_err(|e| Error::corrupt("config", "config", e.to_string()))?;
        match (v.version, &f.features) {
            (1, Some(_)) => return Err(Error::corrupt("config", "config", "a version 1 config has no features")),
            (1, None) => {}
            (_, None) => return Err(Error::corrupt("config", "config", "features list missing")),
            (_, Some(list)) => {
                if let Some(missing) = list.iter().find(|f| !KNOWN_FEATURES.contains(&f.as_str())) {
                    return Err(Error::NeedsFeature { feature: missing.clone() });
                }
            }
        }
        let config: Config =
            serde_json::from_slice(&payload).map_err(|e| Error::corrupt("config", "config", e.to_string()))?;
        if config.version >= 2
            && (config.encryption.is_none() || config.mac.is_none() || config.id_scheme != IdScheme::KeyedBlake3)
        {
            return Err(Error::corrupt(
                "config",
                "config",
                "a v2 config needs encryption, mac and id_scheme keyed-blake3",
            ));
        }
        if config.content_keys.is_some() != config.has_feature(FEATURE_SHARED_CONTENT_KEYS) {
            return Err(Error::corrupt(
                "config",
                "config",
                format!("content_keys and the feature {FEATURE_SHARED_CONTENT_KEYS} come together"),
            ));
        }
        if config.version == 1 && config.id_scheme != IdScheme::Blake3 {
            return Err(Error::corrupt("config", "config", "a v1 config uses id_scheme blake3"));
        }
        ChunkerParams::new(config.file_chunker.min_size, config.file_chunker.avg_size, config.file_chunker.max_size)?;
        ChunkerParams::new(
            config.stream_chunker.min_size,
            config.stream_chunker.avg_size,
            config.stream_chunker.max_size,
        )?;
        if !(1024 * 1024..=256 * 1024 * 1024).contains(&config.pack_size) || config.frame_size > config.pack_size {
            return Err(Error::corrupt("config", "config", "pack_size/frame_size out of range"));
        }
        if let Some(p) = &config.protocol {
            p.validate().map_err(|e| Error::corrupt("config", "config", e.to_string()))?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_config() -> Config {
        Config {
            version: 2,
            features: Some(DEFAULT_FEATURES.iter().map(|f| f.to_string()).collect()),
            id: Id([3; 32]),
            created: chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("a valid time"),
            id_scheme: IdScheme::KeyedBlake3,
            file_chunker: ChunkerParams::default_files(),
            stream_chunker: ChunkerParams::default_streams(),
            compression: CompressionParams { algorithm: CompressionAlgorithm::Zstd, level: 3 },
            stream_compression: None,
            pack_size: 16 * 1024 * 1024,
            frame_size: 256 * 1024,
            protocol: Some(ProtocolSettings::default()),
            encryption: Some(Encryption::Passphrase),
            content_keys: None,
            mac: Some("00".repeat(32)),
        }
    }

    #[test]
    fn content_keys_come_with_their_feature() {
        assert!(Config::decode(&v2_config().encode()).is_ok());
        let mut with_keys = v2_config();
        with_keys.content_keys = Some("ab".repeat(113));
        assert!(matches!(Config::decode(&with_keys.encode()), Err(Error::Corrupt { .. })));
        with_keys.features.as_mut().expect("v2 lists features").push(FEATURE_SHARED_CONTENT_KEYS.into());
        assert!(Config::decode(&with_keys.encode()).is_ok());
        let mut feature_only = v2_config();
        feature_only.features.as_mut().expect("v2 lists features").push(FEATURE_SHARED_CONTENT_KEYS.into());
        assert!(matches!(Config::decode(&feature_only.encode()), Err(Error::Corrupt { .. })));
    }
}
