//! Session files under `sessions/` (format v2): a running backup, prune or
//! copy announces itself and refreshes the file while it runs. Layout in
//! format-spec/v2/protocol.md §2.1: JSON inside an envelope of type 6,
//! sealed like every v2 file (`Purpose::SESSION`, the file's name as
//! associated data, so a session file cannot be replayed under another
//! session's name). `--encryption none` seals too, with its stored key.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::envelope::{self, Codec, FileType};
use super::sealed;
use crate::crypto::{Keys, Purpose};
use crate::error::{Error, Result};
use crate::id::Id;

const ENVELOPE_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFile {
    pub session: Id,
    /// `"backup"`, `"prune"`, `"copy"`.
    pub operation: String,
    pub host: String,
    pub username: String,
    pub pid: u32,
    /// The host's clock at start: informational only, never compared.
    pub started: DateTime<Utc>,
    /// The storage time of the session's first put; `None` in that put.
    pub started_storage: Option<DateTime<Utc>>,
}

/// The stored bytes of session file `s`, whose name is `s.session` in hex.
pub fn encode(keys: &Keys, s: &SessionFile) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(s).expect("session serializes");
    let plain = envelope::seal(FileType::Session, ENVELOPE_VERSION, Codec::Raw, &json);
    sealed::seal_file(keys, Purpose::SESSION, s.session.to_hex().as_bytes(), &plain)
}

/// Opens and decodes the session file stored as `name`.
pub fn decode(keys: &Keys, data: &[u8], name: &str) -> Result<SessionFile> {
    let plain = sealed::open_file(keys, Purpose::SESSION, name.as_bytes(), data, "session", name)?;
    let (_, payload) = envelope::open(FileType::Session, ENVELOPE_VERSION, name, &plain)?;
    let s: SessionFile =
        serde_json::from_slice(&payload).map_err(|e| Error::corrupt("session", name, e.to_string()))?;
    if s.session.to_hex() != name {
        return Err(Error::corrupt("session", name, format!("names session {}", s.session)));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_name_check() {
        let keys = Keys::derive(&crate::crypto::MasterSecret::from_bytes([3; 32]));
        let s = SessionFile {
            session: Id::hash(b"s"),
            operation: "backup".into(),
            host: "h".into(),
            username: "u".into(),
            pid: 7,
            started: Utc::now(),
            started_storage: None,
        };
        let name = s.session.to_hex();
        let data = encode(&keys, &s).unwrap();
        assert_eq!(decode(&keys, &data, &name).unwrap(), s);
        // Under another name, the associated data differs: not authentic.
        assert!(matches!(
            decode(&keys, &data, &Id::hash(b"other").to_hex()),
            Err(Error::NotAuthentic { what: "session", .. })
        ));
        let other = Keys::derive(&crate::crypto::MasterSecret::from_bytes([4; 32]));
        assert!(decode(&other, &data, &name).is_err());
    }
}
