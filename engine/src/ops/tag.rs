//! `tag`: changes the tags of snapshots. A snapshot file is never modified
//! (its id is its hash), so each is rewritten: the new file is written
//! first, durably, and only then is the old one deleted (SPEC.md 13.1). A
//! crash in between leaves both, never neither; the new one records the
//! first id of the chain as `original`.

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::{Repository, Snapshot};
use crate::storage::FileKind;

#[derive(Debug, Clone, Default)]
pub struct TagOptions {
    /// Replace all tags with these (may be empty: remove every tag).
    pub set: Option<Vec<String>>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Retagged {
    pub old_id: Id,
    /// `None` when the tags were already as asked: nothing was rewritten.
    pub new_id: Option<Id>,
    pub tags: Vec<String>,
}

pub fn tag(repo: &Repository, snapshots: &[Snapshot], opts: &TagOptions) -> Result<Vec<Retagged>> {
    if opts.set.is_none() && opts.add.is_empty() && opts.remove.is_empty() {
        return Err(Error::InvalidArgument { what: "tag change", reason: "give tags to set, add or remove".into() });
    }
    if let Some(t) = opts.set.iter().flatten().chain(&opts.add).chain(&opts.remove).find(|t| t.is_empty()) {
        return Err(Error::InvalidArgument { what: "tag", reason: format!("{t:?}: a tag cannot be empty") });
    }
    repo.require_writable("tag")?;
    // Like forget: nothing else may rewrite or delete snapshots meanwhile.
    let _lock = repo.lock_exclusive("tag")?;
    let mut out = Vec::new();
    for snap in snapshots {
        // Re-read under the lock: it may have been retagged or forgotten
        // since it was chosen.
        let current = repo.load_snapshot(&snap.id)?;
        let mut tags = opts.set.clone().unwrap_or_else(|| current.file.tags.clone());
        tags.extend(opts.add.iter().cloned());
        tags.retain(|t| !opts.remove.contains(t));
        tags.sort();
        tags.dedup();
        if tags == current.file.tags {
            out.push(Retagged { old_id: snap.id, new_id: None, tags });
            continue;
        }
        let mut file = current.file.clone();
        file.tags = tags.clone();
        file.original = Some(current.file.original.unwrap_or(snap.id));
        let new_id = repo.save_snapshot(&file)?;
        repo.storage().delete(FileKind::Snapshot, &snap.id.to_hex())?;
        out.push(Retagged { old_id: snap.id, new_id: Some(new_id), tags });
    }
    Ok(out)
}
