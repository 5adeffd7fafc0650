//! The sources of a backup, checked before the repository is touched:
//! paths made absolute and clean, nested ones dropped, stream names that
//! are clean relative paths and overlap nothing else.

use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::tree::is_safe_name;

/// Resolved source: where it is on disk and where it goes in the snapshot.
pub(super) struct Source {
    pub(super) disk: PathBuf,
    /// Where it is recorded: `disk`, or the path given with `record_as`
    /// (a filesystem snapshot mounted at /mnt/snap/srv recorded as /srv).
    pub(super) recorded: PathBuf,
    /// Components below the snapshot root (empty for `/`), of `recorded`.
    pub(super) components: Vec<Vec<u8>>,
}
/// Makes `p` absolute and lexically clean without following a final
/// symlink (a symlink given as a source is stored as a symlink).
fn resolve_source(p: &Path) -> Result<Source> {
    std::fs::symlink_metadata(p).map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            Error::BadSource { path: p.to_path_buf(), reason: "no such file or directory".into() }
        } else {
            Error::io(p, e)
        }
    })?;
    let clean = clean_absolute(p)?;
    Ok(Source { recorded: clean.clone(), components: components_of(&clean), disk: clean })
}

fn clean_absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).at(p)?;
    let mut clean = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    Ok(clean)
}

fn components_of(clean: &Path) -> Vec<Vec<u8>> {
    clean
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes().to_vec()),
            _ => None,
        })
        .collect()
}

fn stream_components(name: &str) -> Result<Vec<Vec<u8>>> {
    let comps: Vec<Vec<u8>> = name.split('/').filter(|c| !c.is_empty()).map(|c| c.as_bytes().to_vec()).collect();
    if comps.is_empty() || comps.iter().any(|c| !is_safe_name(c)) {
        return Err(Error::InvalidArgument {
            what: "stream name",
            reason: format!("{name:?} must be a relative path like mysql/shop.sql without . or .."),
        });
    }
    Ok(comps)
}

/// Checks the sources of a backup without touching the repository: every
/// path exists, every stream name is a clean relative path, and no stream
/// lands on or inside another stream or a backed-up path. A front end that
/// starts dump commands calls this first, so a bad name stops it before
/// any command runs.
pub fn check_sources(paths: &[PathBuf], stream_names: &[&str]) -> Result<()> {
    resolve_sources(paths, None, stream_names).map(|_| ())
}

/// Resolved file sources (sorted, nested ones dropped) and the snapshot
/// components of each stream, in the order given.
pub(super) type ResolvedSources = (Vec<Source>, Vec<Vec<Vec<u8>>>);

/// `record_as`: the one path of `paths` is recorded under this path
/// instead (`arc backup /mnt/snap/srv --as /srv`).
pub(super) fn resolve_sources(
    paths: &[PathBuf],
    record_as: Option<&Path>,
    stream_names: &[&str],
) -> Result<ResolvedSources> {
    let mut sources = paths.iter().map(|p| resolve_source(p)).collect::<Result<Vec<_>>>()?;
    if let Some(recorded) = record_as {
        let [source] = sources.as_mut_slice() else {
            return Err(Error::InvalidArgument {
                what: "record-as path",
                reason: format!("give exactly one path to record as {}", recorded.display()),
            });
        };
        if !recorded.is_absolute() {
            return Err(Error::InvalidArgument {
                what: "record-as path",
                reason: format!("{} is not an absolute path", recorded.display()),
            });
        }
        let clean = clean_absolute(recorded)?;
        source.components = components_of(&clean);
        source.recorded = clean;
    }
    sources.sort_by(|a, b| a.components.cmp(&b.components));
    sources.dedup_by(|b, a| b.components.starts_with(&a.components));
    let stream_paths = stream_names.iter().map(|n| stream_components(n)).collect::<Result<Vec<_>>>()?;
    let clash = |reason: String| Error::InvalidArgument { what: "stream name", reason };
    for (i, a) in stream_paths.iter().enumerate() {
        if let Some(j) = stream_paths[..i].iter().position(|b| a.starts_with(b) || b.starts_with(a)) {
            return Err(clash(if a == &stream_paths[j] {
                format!("{:?} is given twice", stream_names[i])
            } else {
                format!("{:?} and {:?} overlap: one would be inside the other", stream_names[j], stream_names[i])
            }));
        }
        if let Some(s) = sources.iter().find(|s| a.starts_with(&s.components) || s.components.starts_with(a)) {
            return Err(clash(format!(
                "{:?} overlaps the backed-up path {} (stream /{} and the path would share a place in the snapshot)",
                stream_names[i],
                s.recorded.display(),
                join(a)
            )));
        }
    }
    Ok((sources, stream_paths))
}

pub(super) fn join(c: &[Vec<u8>]) -> String {
    c.iter().map(|p| String::from_utf8_lossy(p)).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_checked_against_each_other_and_the_paths() {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir(&www).unwrap();
        let msg = |paths: &[PathBuf], names: &[&str]| match check_sources(paths, names) {
            Err(Error::InvalidArgument { reason, .. }) => reason,
            other => panic!("{names:?}: expected InvalidArgument, got {other:?}"),
        };
        assert!(check_sources(std::slice::from_ref(&www), &["mysql/shop.sql", "pg/app.sql"]).is_ok());
        assert!(msg(&[], &["a.sql", "a.sql"]).contains("given twice"));
        assert!(msg(&[], &["db", "db/x.sql"]).contains("overlap"));
        assert!(msg(&[], &["../etc/passwd"]).contains("relative path"));
        let inside = format!("{}/x.sql", www.display());
        assert!(msg(std::slice::from_ref(&www), &[inside.as_str()]).contains("backed-up path"));
    }
}
