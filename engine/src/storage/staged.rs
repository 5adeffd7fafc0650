//! A file built piece by piece before [`Storage::put_file`] stores it:
//! the packer appends each pack's frames as they come instead of holding
//! the pack whole in memory (16-18 MiB each, several at once).
//!
//! Its name, `<what>.<pid>.<n>`, carries the writer's pid, which is how a
//! prune's cleaning of a local repository's `tmp/` tells the files of a
//! running process from those a crash left behind
//! (`ops::prune::clean_tmp`). Dropped before it was stored, the file is
//! removed: a failed backup leaves nothing behind but what a kill leaves.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{FileKind, Storage};
use crate::error::{Error, Result};
use crate::fault;

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub struct StagedFile {
    /// `None` once finished.
    file: Option<File>,
    path: PathBuf,
    len: u64,
    /// Whether this is a durable step on the repository (its own `tmp/`),
    /// recorded for the crash tests like [`Storage::put`]'s; a scratch
    /// file in the cache is not.
    steps: bool,
    stored: bool,
}

impl StagedFile {
    /// A new empty file in `dir`, created (with `dir`, if that is missing:
    /// a repository copied by a tool that drops empty directories) for
    /// this process only.
    pub fn create(dir: &Path, what: &str, steps: bool) -> Result<StagedFile> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{what}.{}.{n}", std::process::id()));
        let open = || OpenOptions::new().write(true).create_new(true).open(&path);
        let file = match open() {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                open()
            }
            r => r,
        }
        .map_err(|e| Error::io(&path, e))?;
        Ok(StagedFile { file: Some(file), path, len: 0, steps, stored: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(Error::Bug {
                what: "staged file",
                message: format!("{} appended after finish", self.path.display()),
            });
        };
        file.write_all(bytes).map_err(|e| Error::io(&self.path, e))?;
        let first = self.len == 0;
        self.len += bytes.len() as u64;
        if first && self.steps {
            // A kill from here on leaves a torn temporary file, as one
            // during `put`'s first half does.
            fault::step("tmp half written", &self.path.display());
        }
        Ok(())
    }

    /// Marks the file as recently written, so that a cleaning of `tmp/`
    /// that goes by age does not take a file that stays open long (a
    /// tree pack during a long backup of one big file) for a crash's.
    pub fn touch(&self) {
        if let Some(f) = &self.file {
            // Best effort: at worst a concurrent prune removes the file
            // and storing it fails, which the backup reports.
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    /// Everything is written: closes the file.
    pub fn finish(&mut self) {
        if self.file.take().is_some() && self.steps {
            fault::step("tmp written", &self.path.display());
        }
    }

    /// Stores the finished file as `kind`/`name` ([`Storage::put_file`]).
    pub fn store(mut self, storage: &dyn Storage, kind: FileKind, name: &str) -> Result<()> {
        self.finish();
        storage.put_file(kind, name, &self.path)?;
        self.stored = true;
        Ok(())
    }

    /// [`store`](Self::store) for a caller that needs the bytes too (the
    /// packer caches a remote tree pack's frames): the file is read once.
    /// A store without a staging directory is sent these very bytes,
    /// where `put_file` would read the file a second time; the staged copy
    /// then goes when `self` is dropped.
    pub fn store_and_read(mut self, storage: &dyn Storage, kind: FileKind, name: &str) -> Result<Bytes> {
        self.finish();
        let data = Bytes::from(std::fs::read(&self.path).map_err(|e| Error::io(&self.path, e))?);
        if storage.staging_dir().is_some() {
            storage.put_file(kind, name, &self.path)?;
            self.stored = true;
        } else {
            storage.put_owned(kind, name, data.clone())?;
        }
        Ok(data)
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.stored {
            self.file = None;
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LocalDir, MemoryStorage, MemoryStorageOptions};

    #[test]
    fn a_staged_file_is_renamed_into_a_directory_and_copied_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalDir::new(dir.path().join("repo"));
        local.create_layout().unwrap();
        let staging = local.staging_dir().unwrap();
        let mut f = StagedFile::create(&staging, "pack", true).unwrap();
        f.append(b"hello ").unwrap();
        f.append(b"world").unwrap();
        assert_eq!(f.len(), 11);
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(f.path()).unwrap());
        f.store(&local, FileKind::Pack, "abcd").unwrap();
        assert_eq!(local.get(FileKind::Pack, "abcd").unwrap(), b"hello world");
        let stored = local.file_path(FileKind::Pack, "abcd").unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(stored).unwrap()),
            inode,
            "copied, not renamed"
        );
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0, "left in tmp/");

        let mem = MemoryStorage::new(MemoryStorageOptions::default());
        let scratch = dir.path().join("scratch");
        let mut f = StagedFile::create(&scratch, "pack", false).unwrap();
        f.append(b"remote").unwrap();
        f.store(&mem, FileKind::Pack, "ef01").unwrap();
        assert_eq!(mem.get(FileKind::Pack, "ef01").unwrap(), b"remote");
        assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0, "left in the scratch directory");

        // Stored and read back once, into a directory and elsewhere alike.
        let mut f = StagedFile::create(&scratch, "pack", false).unwrap();
        f.append(b"tree pack").unwrap();
        assert_eq!(&f.store_and_read(&mem, FileKind::Pack, "ef02").unwrap()[..], b"tree pack");
        assert_eq!(mem.get(FileKind::Pack, "ef02").unwrap(), b"tree pack");
        assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0, "left in the scratch directory");
        let mut f = StagedFile::create(&staging, "pack", true).unwrap();
        f.append(b"local tree pack").unwrap();
        assert_eq!(&f.store_and_read(&local, FileKind::Pack, "ef03").unwrap()[..], b"local tree pack");
        assert_eq!(local.get(FileKind::Pack, "ef03").unwrap(), b"local tree pack");
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0, "left in tmp/");
    }

    #[test]
    fn a_staged_file_dropped_before_it_was_stored_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = StagedFile::create(dir.path(), "pack", false).unwrap();
        f.append(b"half a pack").unwrap();
        let path = f.path().to_path_buf();
        assert!(path.exists());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.contains(&format!(".{}.", std::process::id())), "{name}: no pid for clean_tmp");
        drop(f);
        assert!(!path.exists());
    }
}
