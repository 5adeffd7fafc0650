//! How long-running operations report to their front end. The engine never
//! prints; the CLI implements [`Progress`] with a progress bar and warnings
//! on stderr, tests with counters.

use std::path::Path;

pub trait Progress: Sync {
    /// A source entry could not be read (fully); the operation goes on
    /// without it. Each call is one warning counted in the summary.
    fn warn(&self, _path: &Path, _message: &str) {}
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
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
