//! Lock files under `locks/`: who holds the repository and how. Payload is
//! JSON inside an envelope of type 4.

use serde::{Deserialize, Serialize};

use super::envelope::{self, Codec, FileType};
use crate::error::{Error, Result};

const ENVELOPE_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockFile {
    pub exclusive: bool,
    pub host: String,
    pub pid: u32,
    pub username: String,
    /// Creation time.
    pub time: chrono::DateTime<chrono::Utc>,
    /// Refreshed while the holder runs; a lock not refreshed for long is stale.
    pub refreshed: chrono::DateTime<chrono::Utc>,
    pub operation: String,
}

impl LockFile {
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("lock serializes");
        envelope::seal(FileType::Lock, ENVELOPE_VERSION, Codec::Raw, &json)
    }

    pub fn decode(data: &[u8], name: &str) -> Result<LockFile> {
        let (_, payload) = envelope::open(FileType::Lock, ENVELOPE_VERSION, name, data)?;
        serde_json::from_slice(&payload).map_err(|e| Error::corrupt("lock", name, e.to_string()))
    }
}
