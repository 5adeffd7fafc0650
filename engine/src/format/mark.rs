//! Prune marks under `marks/` (format v2): the packs a prune found unused
//! and will delete on a later run, after the grace period, if they are
//! still unused. Layout in format-spec/v2/protocol.md §2.2: JSON inside a
//! zstd envelope of type 7, sealed like every v2 file
//! (`Purpose::PRUNE_MARK`), named by the BLAKE3 of the sealed file as a
//! snapshot is. The mark's time is the storage's timestamp of the file,
//! never a field in it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::envelope::{self, Codec, FileType};
use super::sealed;
use crate::crypto::{Keys, Purpose};
use crate::error::{Error, Result};
use crate::id::Id;

const ENVELOPE_VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkedPack {
    pub id: Id,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkFile {
    pub prune_session: Id,
    pub host: String,
    /// The prune host's clock: informational only.
    pub created: DateTime<Utc>,
    pub packs: Vec<MarkedPack>,
}

/// The stored bytes of a mark; its name is their BLAKE3 in hex.
pub fn encode(keys: &Keys, m: &MarkFile) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(m).expect("mark serializes");
    let plain = envelope::seal(FileType::Mark, ENVELOPE_VERSION, Codec::Zstd, &json);
    // No name in the associated data: the name is the hash of these very
    // bytes (checked by `decode`), which binds it more tightly.
    sealed::seal_file(keys, Purpose::PRUNE_MARK, &[], &plain)
}

/// Opens and decodes a mark, checking that its bytes hash to `name`.
pub fn decode(keys: &Keys, data: &[u8], name: &str) -> Result<MarkFile> {
    if Id::hash(data).to_hex() != name {
        return Err(Error::corrupt("prune mark", name, "content does not match its name"));
    }
    let plain = sealed::open_file(keys, Purpose::PRUNE_MARK, &[], data, "prune mark", name)?;
    let (_, payload) = envelope::open(FileType::Mark, ENVELOPE_VERSION, name, &plain)?;
    serde_json::from_slice(&payload).map_err(|e| Error::corrupt("prune mark", name, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_name_check() {
        let keys = Keys::derive(&crate::crypto::MasterSecret::from_bytes([5; 32]));
        let m = MarkFile {
            prune_session: Id::hash(b"p"),
            host: "h".into(),
            created: Utc::now(),
            packs: vec![MarkedPack { id: Id::hash(b"pack"), len: 123 }],
        };
        let data = encode(&keys, &m).unwrap();
        let name = Id::hash(&data).to_hex();
        assert_eq!(decode(&keys, &data, &name).unwrap(), m);
        assert!(decode(&keys, &data, &Id::hash(b"x").to_hex()).is_err());
        let other = Keys::derive(&crate::crypto::MasterSecret::from_bytes([6; 32]));
        assert!(matches!(decode(&other, &data, &name), Err(Error::NotAuthentic { what: "prune mark", .. })));
    }
}
