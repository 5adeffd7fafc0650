//! Snapshot files: the commit record of a backup. A snapshot file is small,
//! written last and atomically; a backup exists exactly when its snapshot
//! file does. Its id is the BLAKE3 of the file's bytes (its name).
//!
//! Payload: JSON (field names follow restic's where they overlap, because
//! scripts are already written against them), inside an envelope of type 3.

use serde::{Deserialize, Serialize};

use super::envelope::{self, Codec, FileType};
use crate::error::{Error, Result};
use crate::id::Id;

const ENVELOPE_VERSION: u8 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub backup_start: Option<chrono::DateTime<chrono::Utc>>,
    pub backup_end: Option<chrono::DateTime<chrono::Utc>>,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub dirs: u64,
    pub other_entries: u64,
    /// Logical size of every file in the snapshot.
    pub total_bytes: u64,
    pub total_files: u64,
    /// Bytes read from the sources (stdin included).
    pub bytes_read: u64,
    /// Uncompressed bytes of blobs this backup added to the repository.
    pub bytes_added: u64,
    /// Bytes of packs this backup wrote (what it cost on disk).
    pub bytes_added_stored: u64,
    pub blobs_added: u64,
    /// Files or directories that could not be read; the snapshot lacks them.
    pub errors: u64,
    /// Entries the backup's excludes left out (an excluded directory counts
    /// once: nothing below it is looked at). Absent when zero.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub entries_excluded: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    pub time: chrono::DateTime<chrono::Utc>,
    pub host: String,
    pub username: String,
    pub uid: u32,
    pub gid: u32,
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub tree: Id,
    pub parent: Option<Id>,
    pub program_version: String,
    pub summary: Summary,
    /// The excludes the backup applied, one rule a string (SPEC.md section
    /// 9). Absent when there were none, and in snapshots of older versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// The id of the snapshot this one was rewritten from (by `tag`); the
    /// first one when rewritten again. Absent for an original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Id>,
}

impl SnapshotFile {
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("snapshot serializes");
        envelope::seal(FileType::Snapshot, ENVELOPE_VERSION, Codec::Raw, &json)
    }

    pub fn decode(data: &[u8], name: &str) -> Result<SnapshotFile> {
        let (_, payload) = envelope::open(FileType::Snapshot, ENVELOPE_VERSION, name, data)?;
        serde_json::from_slice(&payload).map_err(|e| Error::corrupt("snapshot", name, e.to_string()))
    }
}

#[cfg(test)]
mod optional_fields_tests {
    use super::*;

    fn snapshot() -> SnapshotFile {
        SnapshotFile {
            time: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            host: "h".into(),
            username: "u".into(),
            uid: 1,
            gid: 2,
            paths: vec!["/srv".into()],
            tags: vec![],
            tree: Id::hash(b"tree"),
            parent: None,
            program_version: "arc 0.1.0".into(),
            summary: Summary::default(),
            excludes: Vec::new(),
            original: None,
        }
    }

    #[test]
    fn excludes_original_and_entries_excluded_are_absent_when_empty_and_round_trip() {
        let plain = snapshot();
        let json = String::from_utf8(serde_json::to_vec(&plain).unwrap()).unwrap();
        assert!(!json.contains("excludes") && !json.contains("original") && !json.contains("entries_excluded"));
        let mut full = snapshot();
        full.excludes = vec!["--exclude=*.tmp".into(), "--one-file-system".into()];
        full.original = Some(Id::hash(b"first"));
        full.summary.entries_excluded = 3;
        let back = SnapshotFile::decode(&full.encode(), "x").unwrap();
        assert_eq!(back, full);
        // A snapshot of an older arc (none of the fields) reads as empty.
        assert_eq!(SnapshotFile::decode(&plain.encode(), "x").unwrap(), plain);
    }
}
