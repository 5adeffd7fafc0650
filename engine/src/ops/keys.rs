//! Key management of a format-v2 repository: list, add, remove and
//! change the passphrases (key files) that wrap its master secret.
//!
//! Every change writes the new key file before removing an old one, so a
//! crash between the two leaves both valid, never none.

use serde::Serialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::format::config::Encryption;
use crate::format::key_file::{KeyFile, Protection};
use crate::id::Id;
use crate::repo::Repository;
use crate::storage::FileKind;

/// One key file, as `key list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: String,
    /// The key file that opened the repository in this process.
    pub current: bool,
    pub created: chrono::DateTime<chrono::Utc>,
    pub host: String,
    pub username: String,
    /// Whether a passphrase protects it (false for `--encryption none`).
    pub protected: bool,
}

fn v2(repo: &Repository) -> Result<(&crate::crypto::MasterSecret, &str)> {
    repo.master().ok_or_else(|| {
        Error::KeyRefused(format!(
            "repository format version {} has no keys (it is not encrypted)",
            repo.config().version
        ))
    })
}

pub fn list_keys(repo: &Repository) -> Result<Vec<KeyInfo>> {
    let (_, current) = v2(repo)?;
    let mut out = Vec::new();
    for (name, _) in repo.storage().list(FileKind::Key)? {
        if name.parse::<Id>().is_err() {
            continue;
        }
        let data = match repo.storage().get(FileKind::Key, &name) {
            Ok(d) => d,
            Err(Error::Missing { .. }) => continue,
            Err(e) => return Err(e),
        };
        let k = KeyFile::decode(&data, &name)?;
        let protected = k.is_protected();
        out.push(KeyInfo {
            current: name == current,
            id: name,
            created: k.created,
            host: k.host,
            username: k.username,
            protected,
        });
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Adds a key file for `passphrase`; returns its id.
pub fn add_key(repo: &Repository, passphrase: Zeroizing<String>) -> Result<String> {
    let (master, _) = v2(repo)?;
    if repo.config().encryption == Some(Encryption::None) {
        return Err(Error::KeyRefused(
            "this repository was created without encryption: its key is stored unprotected, and a passphrase \
             added now would protect nothing"
                .into(),
        ));
    }
    repo.require_writable("key add")?;
    let key = KeyFile::create(
        master,
        repo.config().id,
        &Protection::passphrase(passphrase),
        crate::lock::hostname(),
        crate::lock::username(),
    )?;
    let bytes = key.encode();
    let id = Id::hash(&bytes).to_hex();
    repo.storage().put(FileKind::Key, &id, &bytes)?;
    crate::fault::step("key written", &id);
    Ok(id)
}

/// Resolves a unique key id prefix.
fn resolve(repo: &Repository, prefix: &str) -> Result<String> {
    let prefix = prefix.to_ascii_lowercase();
    let matches: Vec<String> = repo
        .storage()
        .list(FileKind::Key)?
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.parse::<Id>().is_ok() && !prefix.is_empty() && n.starts_with(&prefix))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::KeyRefused(format!("no key file matches {prefix:?}"))),
        many => Err(Error::KeyRefused(format!("key id prefix {prefix:?} is ambiguous: it matches {}", many.len()))),
    }
}

/// Removes a key file. The last one, and the one in use, are refused: the
/// first would lock everybody out, the second whoever runs this (restic's
/// rule; `change_passphrase` replaces the current one safely).
pub fn remove_key(repo: &Repository, prefix: &str) -> Result<String> {
    let (_, current) = v2(repo)?;
    repo.require_writable("key remove")?;
    let id = resolve(repo, prefix)?;
    let all = list_keys(repo)?;
    if all.len() <= 1 {
        return Err(Error::KeyRefused(
            "refusing to remove the last key: the repository could never be opened again".into(),
        ));
    }
    if id == current {
        return Err(Error::KeyInUse { id: id[..12.min(id.len())].to_string() });
    }
    repo.storage().delete(FileKind::Key, &id)?;
    Ok(id)
}

/// Replaces the current key file with one for `passphrase`; returns the
/// new id. The new file is durable before the old one goes.
pub fn change_passphrase(repo: &Repository, passphrase: Zeroizing<String>) -> Result<String> {
    let (_, current) = v2(repo)?;
    let current = current.to_string();
    let id = add_key(repo, passphrase)?;
    crate::fault::step("key added", &id);
    repo.storage().delete(FileKind::Key, &current)?;
    Ok(id)
}

/// The current key file's bytes (for `key export`).
pub fn export_key(repo: &Repository) -> Result<(String, Vec<u8>)> {
    let (_, current) = v2(repo)?;
    Ok((current.to_string(), repo.storage().get(FileKind::Key, current)?))
}
