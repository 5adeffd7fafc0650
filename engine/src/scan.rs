//! The backup's size estimate: a walk of the sources, beside the backup,
//! that only counts regular files and their bytes, so that progress can
//! show files and bytes done of a total, a percentage and an ETA. It runs
//! only when the front end shows them ([`Progress::wants_totals`]).
//!
//! It must never slow the backup down: it runs on its own thread at the
//! lowest CPU priority (nice 19) and idle I/O priority, it only stats
//! (the directory entries it reads are the ones the backup's walk reads
//! next, so they are cached for it rather than read twice from disk), and
//! it stops as soon as the backup ends. Its numbers are an estimate: files
//! may change between the scan and the backup.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::exclude::Excludes;
use crate::progress::Progress;

/// How often running totals go to the front end while the scan goes on.
const REPORT_EVERY: Duration = Duration::from_millis(200);

/// Counts regular files and bytes under `sources` (not following symlinks,
/// skipping `skip`, the repository itself), reporting running totals via
/// [`Progress::scanned`] and the final ones with `complete` set. Returns
/// early, without a final report, once `stop` is set.
/// The excludes' patterns and file system rule apply here too, so the scan
/// never looks below what the backup leaves out (markers and sizes are left
/// to the backup: the estimate may count a little more).
pub fn count(
    sources: &[PathBuf],
    skip: Option<&Path>,
    excludes: &Excludes,
    stop: &AtomicBool,
    progress: &dyn Progress,
) {
    lower_priority();
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut last = Instant::now();
    let mut scratch = Vec::new();
    for src in sources {
        let walk =
            walkdir::WalkDir::new(src).follow_links(false).same_file_system(excludes.one_file_system).into_iter();
        let walk = walk.filter_entry(|e| {
            skip != Some(e.path())
                && (e.depth() == 0
                    || !excludes.patterns.matches(
                        e.path().as_os_str().as_bytes(),
                        e.file_type().is_dir(),
                        &mut scratch,
                    ))
        });
        for entry in walk {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            // Unreadable entries are the backup's to report, not the scan's.
            let Ok(entry) = entry else { continue };
            if entry.file_type().is_file() {
                files += 1;
                bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
            if last.elapsed() >= REPORT_EVERY {
                progress.scanned(files, bytes, false);
                last = Instant::now();
            }
        }
    }
    progress.scanned(files, bytes, true);
}

/// Nice 19 and the idle I/O class for this thread only (Linux applies both
/// per thread): the scan gets CPU and disk time only when the backup does
/// not want it.
fn lower_priority() {
    // SAFETY: gettid has no preconditions; setpriority and ioprio_set only
    // change this thread's scheduling and report failure by return value,
    // which is ignored (an unlowered scan is still correct, just greedier).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_IDLE: libc::c_long = 3;
        const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        );
    }
}
