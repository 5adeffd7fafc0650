//! A repository in a local directory.
//!
//! ```text
//! REPO/config
//! REPO/data/<2 hex>/<pack id>     packs, sharded by the first byte of the id
//! REPO/index/<index file id>
//! REPO/snapshots/<snapshot id>
//! REPO/locks/<lock name>
//! REPO/sessions/<session id>      v2: running backups, prunes, copies
//! REPO/marks/<mark id>            v2: packs a prune will delete later
//! REPO/tmp/                       partial writes, never read
//! (the index database, a cache, lives in the user's cache directory:
//! see `Repository::open_local_cached`)
//! ```
//! Writes go to `tmp/`, are fsynced, renamed into place, and the target
//! directory is fsynced, so a file either exists complete or not at all.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{FileKind, FileStat, Storage};
use crate::error::{Error, IoContext, Result};
use crate::fault;

pub struct LocalDir {
    root: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub const DIRS: [&str; 8] = ["data", "index", "snapshots", "locks", "keys", "sessions", "marks", "tmp"];

impl LocalDir {
    pub fn new(root: impl Into<PathBuf>) -> LocalDir {
        LocalDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a file of the repository lives (the synthetic-index
    /// generator creates sparse packs there).
    pub fn file_path(&self, kind: FileKind, name: &str) -> Result<PathBuf> {
        self.path(kind, name)
    }

    /// Creates the directory skeleton (the config is written separately).
    pub fn create_layout(&self) -> Result<()> {
        fs::create_dir_all(&self.root).at(&self.root)?;
        for d in DIRS {
            let p = self.root.join(d);
            fs::create_dir_all(&p).at(&p)?;
        }
        for b in 0..=255u8 {
            let p = self.root.join("data").join(hex::encode([b]));
            fs::create_dir_all(&p).at(&p)?;
        }
        sync_dir(&self.root.join("data"))?;
        sync_dir(&self.root)?;
        Ok(())
    }

    fn check_name(name: &str) -> Result<()> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Error::InvalidArgument { what: "file name", reason: format!("{name:?}") });
        }
        Ok(())
    }

    fn path(&self, kind: FileKind, name: &str) -> Result<PathBuf> {
        Self::check_name(name)?;
        Ok(match kind {
            FileKind::Config => self.root.join("config"),
            FileKind::Pack => {
                let shard = name.get(..2).unwrap_or("00");
                self.root.join("data").join(shard).join(name)
            }
            FileKind::Index => self.root.join("index").join(name),
            FileKind::Snapshot => self.root.join("snapshots").join(name),
            FileKind::Lock => self.root.join("locks").join(name),
            FileKind::Key => self.root.join("keys").join(name),
            FileKind::Session => self.root.join("sessions").join(name),
            FileKind::Mark => self.root.join("marks").join(name),
            FileKind::Quarantine => self.root.join("quarantine").join(name),
        })
    }

    /// Recreates a missing directory of the layout and makes its name
    /// durable: the fsync of a directory after a rename (2.4) covers the
    /// names in it, not its own entry in its parent, so a pack put into a
    /// recreated `data/XX/` could otherwise vanish with its directory in a
    /// power cut.
    fn recreate_dir(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).at(dir)?;
        let mut d = dir;
        while let Some(parent) = d.parent() {
            sync_dir(parent)?;
            if parent == self.root || !parent.starts_with(&self.root) {
                break;
            }
            d = parent;
        }
        Ok(())
    }

    /// Renames the fsynced temporary file `tmp` to `dest` and makes the
    /// name durable; `tmp` is removed if that fails.
    fn rename_into_place(&self, tmp: &Path, dest: &Path) -> Result<()> {
        let mut renamed = fs::rename(tmp, dest);
        if matches!(&renamed, Err(e) if e.kind() == ErrorKind::NotFound) {
            if let Some(dir) = dest.parent() {
                self.recreate_dir(dir)?;
            }
            renamed = fs::rename(tmp, dest);
        }
        if let Err(e) = renamed {
            let _ = fs::remove_file(tmp);
            return Err(Error::io(dest, e));
        }
        fault::step("renamed", &dest.display());
        let dir = dest.parent().unwrap_or(&self.root);
        sync_dir(dir)?;
        fault::step("dir fsynced", &dir.display());
        Ok(())
    }

    fn not_found(kind: FileKind, name: &str, path: &Path, e: std::io::Error) -> Error {
        if e.kind() == ErrorKind::NotFound {
            Error::Missing { kind: kind.describe(), name: name.to_string() }
        } else {
            Error::io(path, e)
        }
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

impl Storage for LocalDir {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn local_path(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        let dest = self.path(kind, name)?;
        let tmp = self.root.join("tmp").join(format!(
            "{name}.{}.{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            // Two writes so that the crash tests can stop between them and
            // leave a torn temporary file, as a crash mid-write would.
            let (head, rest) = data.split_at(data.len() / 2);
            f.write_all(head)?;
            fault::step("tmp half written", &tmp.display());
            f.write_all(rest)?;
            fault::step("tmp written", &tmp.display());
            f.sync_all()?;
            fault::step("tmp fsynced", &tmp.display());
            Ok(())
        };
        // Empty directories of the layout may be missing when a repository
        // was copied by a tool that drops them (git, some sync tools):
        // recreate them instead of failing.
        let mut written = write();
        if matches!(&written, Err(e) if e.kind() == ErrorKind::NotFound) {
            if let Some(dir) = tmp.parent() {
                self.recreate_dir(dir)?;
            }
            written = write();
        }
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            // On a full disk name the file being written (data/XX/<pack>,
            // index/<id>, ...) rather than its temporary name, which says
            // nothing to the user.
            if e.raw_os_error() == Some(libc::ENOSPC) {
                return Err(Error::NoSpace { path: dest });
            }
            return Err(Error::io(&tmp, e));
        }
        self.rename_into_place(&tmp, &dest)
    }

    fn staging_dir(&self) -> Option<PathBuf> {
        Some(self.root.join("tmp"))
    }

    /// A file staged in `tmp/` is fsynced and renamed into place: the
    /// durability order of [`put`](Self::put) from its fsync on (the
    /// writer stepped through "tmp half written" and "tmp written").
    fn put_file(&self, kind: FileKind, name: &str, path: &Path) -> Result<()> {
        if path.parent() != Some(self.root.join("tmp").as_path()) {
            return super::put_file_by_copy(self, kind, name, path);
        }
        let dest = self.path(kind, name)?;
        if let Err(e) = File::open(path).and_then(|f| f.sync_all()) {
            let _ = fs::remove_file(path);
            return Err(Error::io(path, e));
        }
        fault::step("tmp fsynced", &path.display());
        self.rename_into_place(path, &dest)
    }

    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let p = self.path(kind, name)?;
        fs::read(&p).map_err(|e| Self::not_found(kind, name, &p, e))
    }

    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let p = self.path(kind, name)?;
        let f = File::open(&p).map_err(|e| Self::not_found(kind, name, &p, e))?;
        let mut buf = vec![0u8; usize::try_from(len).map_err(|_| Error::corrupt("range", name, "too long"))?];
        f.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == ErrorKind::UnexpectedEof {
                Error::corrupt(kind.describe(), name, format!("truncated: range {offset}+{len} past end of file"))
            } else {
                Error::io(&p, e)
            }
        })?;
        Ok(buf)
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        let p = self.path(kind, name)?;
        fs::metadata(&p).map(|m| m.len()).map_err(|e| Self::not_found(kind, name, &p, e))
    }

    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        let p = self.path(kind, name)?;
        match fs::symlink_metadata(&p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        Ok(self.list_stat(kind)?.into_iter().map(|(n, s)| (n, s.len)).collect())
    }

    fn stat(&self, kind: FileKind, name: &str) -> Result<FileStat> {
        let p = self.path(kind, name)?;
        let m = fs::metadata(&p).map_err(|e| Self::not_found(kind, name, &p, e))?;
        Ok(FileStat { len: m.len(), modified: m.modified().at(&p)? })
    }

    fn list_stat(&self, kind: FileKind) -> Result<Vec<(String, FileStat)>> {
        let dirs: Vec<PathBuf> = match kind {
            FileKind::Config => {
                return Ok(match fs::metadata(self.root.join("config")) {
                    Ok(m) => vec![("config".into(), FileStat { len: m.len(), modified: m.modified().at(&self.root)? })],
                    Err(_) => vec![],
                })
            }
            FileKind::Pack => {
                let data = self.root.join("data");
                // Only shard directories; a stray file in data/ is no pack.
                let mut shards: Vec<PathBuf> = fs::read_dir(&data)
                    .at(&data)?
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect();
                shards.sort();
                shards
            }
            FileKind::Index => vec![self.root.join("index")],
            FileKind::Snapshot => vec![self.root.join("snapshots")],
            FileKind::Lock => vec![self.root.join("locks")],
            FileKind::Key => vec![self.root.join("keys")],
            FileKind::Session => vec![self.root.join("sessions")],
            FileKind::Mark => vec![self.root.join("marks")],
            FileKind::Quarantine => vec![self.root.join("quarantine")],
        };
        let mut out = Vec::new();
        for dir in dirs {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&dir, e)),
            };
            for entry in rd {
                let entry = entry.at(&dir)?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                match entry.metadata() {
                    Ok(m) if m.is_file() => {
                        out.push((name, FileStat { len: m.len(), modified: m.modified().at(entry.path())? }))
                    }
                    Ok(_) => {}
                    // Deleted between readdir and stat: not there any more.
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(entry.path(), e)),
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        let p = self.path(kind, name)?;
        match fs::remove_file(&p) {
            Ok(()) => {
                fault::step("unlinked", &p.display());
                let dir = p.parent().unwrap_or(&self.root);
                sync_dir(dir)?;
                fault::step("dir fsynced", &dir.display());
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&p, e)),
        }
    }
}
