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

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, StatxFlags};

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
///
/// A directory is opened by path and each regular file in it (readdir says
/// which, without a stat) is stat'ed relative to it: the kernel resolves one
/// name per file, not its whole path. One directory is open at a time; the
/// paths of the directories still to scan wait on a stack.
pub fn count(
    sources: &[PathBuf],
    skip: Option<&Path>,
    excludes: &Excludes,
    stop: &AtomicBool,
    progress: &dyn Progress,
) {
    lower_priority();
    let mut totals = Totals { files: 0, bytes: 0, last: Instant::now(), progress };
    let mut scratch = Vec::new();
    for src in sources {
        // A source is what the backup records: a symlink given as a source
        // is stored as one, not followed.
        let Ok(meta) = std::fs::symlink_metadata(src) else { continue };
        if meta.is_file() {
            totals.add(meta.len());
            continue;
        }
        if !meta.is_dir() || skip == Some(src.as_path()) {
            continue;
        }
        let mut todo = vec![src.clone()];
        while let Some(dir) = todo.pop() {
            // Unreadable directories are the backup's to report, not the scan's.
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let Ok(fd) = rustix::fs::open(&dir, flags, Mode::empty()) else { continue };
            if excludes.one_file_system
                && dir != *src
                && rustix::fs::fstat(&fd).map_or(true, |s| s.st_dev != meta.dev())
            {
                continue;
            }
            // The names are read through a duplicate; the stats go through `fd`.
            let Some(entries) = fd.try_clone().ok().and_then(|d| Dir::new(d).ok()) else { continue };
            for e in entries {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(e) = e else { break };
                let name = e.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let name = OsStr::from_bytes(name);
                // A regular file's size, when already known.
                let (is_dir, size) = match e.file_type() {
                    FileType::Directory => (true, None),
                    FileType::RegularFile => (false, None),
                    // The file system does not say (some network and old
                    // ones): a stat tells.
                    FileType::Unknown => match stat(&fd, name) {
                        Ok(x) if is(&x, FileType::Directory) => (true, None),
                        Ok(x) if is(&x, FileType::RegularFile) => (false, Some(x.stx_size)),
                        _ => continue,
                    },
                    _ => continue,
                };
                let path = dir.join(name);
                if !excludes.patterns.is_empty()
                    && excludes.patterns.matches(path.as_os_str().as_bytes(), is_dir, &mut scratch)
                {
                    continue;
                }
                if is_dir {
                    if skip != Some(path.as_path()) {
                        todo.push(path);
                    }
                    continue;
                }
                let size =
                    size.or_else(|| stat(&fd, name).ok().filter(|x| is(x, FileType::RegularFile)).map(|x| x.stx_size));
                if let Some(size) = size {
                    totals.add(size);
                }
            }
        }
    }
    totals.progress.scanned(totals.files, totals.bytes, true);
}

fn is(x: &rustix::fs::Statx, t: FileType) -> bool {
    FileType::from_raw_mode(x.stx_mode.into()) == t
}

/// `lstat` of `name` in `dir`: its type and size only.
fn stat(dir: &OwnedFd, name: &OsStr) -> rustix::io::Result<rustix::fs::Statx> {
    rustix::fs::statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_SYNC_AS_STAT,
        StatxFlags::TYPE | StatxFlags::SIZE,
    )
}

struct Totals<'a> {
    files: u64,
    bytes: u64,
    last: Instant,
    progress: &'a dyn Progress,
}

impl Totals<'_> {
    fn add(&mut self, size: u64) {
        self.files += 1;
        self.bytes += size;
        if self.last.elapsed() >= REPORT_EVERY {
            self.progress.scanned(self.files, self.bytes, false);
            self.last = Instant::now();
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Last(Mutex<Option<(u64, u64, bool)>>);

    impl Progress for Last {
        fn scanned(&self, files: u64, bytes: u64, complete: bool) {
            *self.0.lock().unwrap() = Some((files, bytes, complete));
        }
    }

    /// Regular files only, symlinks (to files and to directories) neither
    /// counted nor followed, nothing below an excluded directory or the
    /// repository; a source that is a file counts, one that is a symlink
    /// does not (the backup stores it as a link).
    #[test]
    fn the_scan_counts_regular_files_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for d in ["a/b/c", "skipped", "repo", "empty"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
        }
        std::fs::write(src.join("top"), b"12345").unwrap();
        std::fs::write(src.join("a/b/c/deep"), b"123").unwrap();
        std::fs::write(src.join("a/x"), vec![0; 1000]).unwrap();
        std::fs::write(src.join("skipped/no"), b"12").unwrap();
        std::fs::write(src.join("repo/no"), b"12").unwrap();
        std::os::unix::fs::symlink(src.join("top"), src.join("link-to-file")).unwrap();
        std::os::unix::fs::symlink(src.join("a"), src.join("link-to-dir")).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let single = dir.path().join("single");
        std::fs::write(&single, b"1234567").unwrap();
        let link = dir.path().join("link-source");
        std::os::unix::fs::symlink(&src, &link).unwrap();
        let spec =
            crate::patterns::PatternSpec { pattern: "skipped/".into(), origin: "test".into(), case_insensitive: false };
        let excludes =
            Excludes { patterns: crate::patterns::PatternSet::new(vec![spec]).unwrap(), ..Default::default() };
        let last = Last::default();
        let stop = AtomicBool::new(false);
        let repo = src.join("repo");
        count(&[src.clone(), single, link], Some(&repo), &excludes, &stop, &last);
        assert_eq!(*last.0.lock().unwrap(), Some((4, 5 + 3 + 1000 + 7, true)));
    }

    /// Stopped, the scan returns without a final report.
    #[test]
    fn a_stopped_scan_reports_nothing_final() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"1").unwrap();
        let last = Last::default();
        count(&[dir.path().to_path_buf()], None, &Excludes::default(), &AtomicBool::new(true), &last);
        assert_eq!(*last.0.lock().unwrap(), None);
    }
}
