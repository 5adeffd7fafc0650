//! How long-running operations report to their front end. The engine never
//! prints; the CLI implements [`Progress`] with a progress bar and warnings
//! on stderr, tests with counters.

use std::path::Path;

pub trait Progress: Sync {
    /// A source entry could not be read (fully); the operation goes on
    /// without it. Each call is one warning counted in the summary.
    fn warn(&self, _path: &Path, _message: &str) {}
    /// Something left out on purpose that the user may not expect, and no
    /// warning (the snapshot is complete without it): the repository's
    /// own directories inside a backed-up path.
    fn note(&self, _path: &Path, _message: &str) {}
    /// A file (or stream) was finished: `bytes` read from it.
    fn file_done(&self, _path: &Path, _bytes: u64) {}
    /// Bytes read from sources or written by restore so far, as they happen.
    fn bytes(&self, _n: u64) {}
    /// Total work, when known up front (restore, check).
    fn total(&self, _files: u64, _bytes: u64) {}
    /// Backup: the running count of regular files and bytes in the sources
    /// from the scan beside the backup (see [`crate::scan`]); `complete`
    /// on the last call, when the totals are final.
    fn scanned(&self, _files: u64, _bytes: u64, _complete: bool) {}
    /// Backup: whether the front end shows the scan's totals (a bar's
    /// percentage and ETA, status lines). The scan stats every file a
    /// second time, so without a reader of [`Progress::scanned`] it does
    /// not run: a backup from cron or a script pays only its own walk.
    fn wants_totals(&self) -> bool {
        false
    }
    /// Backup: a file is about to be read (the "current file").
    fn reading(&self, _path: &Path) {}
    /// Backup: a file unchanged since the parent snapshot, taken from it
    /// without reading; done as much as a file read.
    fn unchanged(&self, _path: &Path, _bytes: u64) {}
    /// Backup: which entries to report through [`Progress::item`]. The
    /// default, [`Items::None`], builds no path per entry: a backup that
    /// lists nothing pays nothing for the listing.
    fn items(&self) -> Items {
        Items::None
    }
    /// Backup: an entry as the snapshot stores it, in the snapshot's order
    /// (depth first, names sorted as bytes, a directory after its
    /// entries); only those [`Progress::items`] asks for. A file that could
    /// not be read is not reported here but through [`Progress::warn`].
    fn item(&self, _item: &Item<'_>) {}
}

/// Which entries a backup reports (restic's `backup -vv`, borg's `create --list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Items {
    None,
    /// Entries new or changed since the parent snapshot.
    Changed,
    /// Every entry, unchanged ones too.
    All,
}

/// An entry stored by a backup (see [`Progress::item`]).
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// Where it is on disk (a stream: its path in the snapshot).
    pub path: &'a Path,
    pub kind: ItemKind,
    pub change: ItemChange,
    /// Bytes of content (a file's, a stream's); 0 for other entries.
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// A file or stream (a further link of a hardlink group too).
    File,
    Dir,
    /// A symlink, device, FIFO or socket.
    Other,
}

/// How an entry compares with the parent snapshot's entry of the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemChange {
    /// Not in the parent snapshot (or there is none).
    New,
    /// A file read again (size, times or inode differ); a directory whose
    /// contents differ; another entry whose metadata differs.
    Changed,
    /// A file taken from the parent without reading; a directory whose
    /// tree is the parent's.
    Unchanged,
}

impl ItemChange {
    /// The word arc uses for it (`files: 1 new, 2 changed, 3 unchanged`).
    pub fn word(self) -> &'static str {
        match self {
            ItemChange::New => "new",
            ItemChange::Changed => "changed",
            ItemChange::Unchanged => "unchanged",
        }
    }
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
