//! Session files under `sessions/` (format v2): a running backup, prune or
//! copy announces itself and refreshes the file while it runs. Layout in
//! format-spec/v2/protocol.md §2.1: JSON inside an envelope of type 5.
//!
//! Encoding goes through [`encode`] and [`decode`] only, so that sealing
//! them (v2 encryption) changes these two functions and nothing else.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::envelope::{self, Codec, FileType};
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

pub fn encode(s: &SessionFile) -> Vec<u8> {
    let json = serde_json::to_vec(s).expect("session serializes");
    envelope::seal(FileType::Session, ENVELOPE_VERSION, Codec::Raw, &json)
}

pub fn decode(data: &[u8], name: &str) -> Result<SessionFile> {
    let (_, payload) = envelope::open(FileType::Session, ENVELOPE_VERSION, name, data)?;
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
        assert_eq!(decode(&encode(&s), &name).unwrap(), s);
        assert!(decode(&encode(&s), &Id::hash(b"other").to_hex()).is_err());
    }
}
