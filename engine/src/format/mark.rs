//! Prune marks under `marks/` (format v2): the packs a prune found unused
//! and will delete on a later run, after the grace period, if they are
//! still unused. Layout in format-spec/v2/protocol.md §2.2: JSON inside a
//! zstd envelope of type 6, named by the BLAKE3 of the file. The mark's
//! time is the storage's timestamp of the file, never a field in it.
//!
//! Encoding goes through [`encode`] and [`decode`] only, so that sealing
//! them (v2 encryption) changes these two functions and nothing else.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::envelope::{self, Codec, FileType};
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

pub fn encode(m: &MarkFile) -> Vec<u8> {
    let json = serde_json::to_vec(m).expect("mark serializes");
    envelope::seal(FileType::Mark, ENVELOPE_VERSION, Codec::Zstd, &json)
}

/// Decodes a mark, checking that its bytes hash to `name`.
pub fn decode(data: &[u8], name: &str) -> Result<MarkFile> {
    if Id::hash(data).to_hex() != name {
        return Err(Error::corrupt("prune mark", name, "content does not match its name"));
    }
    let (_, payload) = envelope::open(FileType::Mark, ENVELOPE_VERSION, name, data)?;
    serde_json::from_slice(&payload).map_err(|e| Error::corrupt("prune mark", name, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_name_check() {
        let m = MarkFile {
            prune_session: Id::hash(b"p"),
            host: "h".into(),
            created: Utc::now(),
            packs: vec![MarkedPack { id: Id::hash(b"pack"), len: 123 }],
        };
        let data = encode(&m);
        assert_eq!(decode(&data, &Id::hash(&data).to_hex()).unwrap(), m);
        assert!(decode(&data, &Id::hash(b"x").to_hex()).is_err());
    }
}
