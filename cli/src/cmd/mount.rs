//! `arc mount MOUNTPOINT`: serves the repository as a read-only file
//! system (see `arc_engine::vfs` for the layout) until Ctrl-C or SIGTERM,
//! or until it is unmounted from outside, then unmounts cleanly.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use arc_engine::vfs::{Vfs, VfsError, VfsOptions, Zone};
use arc_fuse_mount::{MountEvents, MountOptions, Unmounted};

use super::Env;
use crate::args::MountArgs;

/// Damage found while serving reads: the reader got EIO; the user hears
/// which file and which pack.
struct Report;

impl MountEvents for Report {
    fn damaged(&self, path: &str, error: &VfsError) {
        eprintln!("arc: error: {path}: {error} (reading it through the mount fails with EIO)");
    }
}

pub fn run(env: &Env, a: MountArgs) -> Result<u8> {
    let opts = MountOptions {
        allow_other: a.allow_other,
        // Shown by `mount` and `df`; commas and blanks would split the
        // mount option string.
        fsname: format!("arc:{}", env.shown())
            .chars()
            .map(|c| if c == ',' || c.is_whitespace() { '_' } else { c })
            .collect(),
        busy_poll: std::time::Duration::from_micros(a.busy_poll_us),
        count_requests: a.count_requests,
        push_small_files: !a.no_push,
        readdirplus: !a.no_readdirplus,
        ..Default::default()
    };
    // The usual mistakes (a non-empty directory, no FUSE) are caught
    // before the repository is opened.
    arc_fuse_mount::preflight(&a.mountpoint, &opts)?;
    let repo = Arc::new(env.open_read()?);
    // Held while mounted: prune (exclusive) must not delete packs that
    // open files read from. Backups (shared) can run alongside.
    let _lock = repo.lock_shared("mount")?;
    let vfs_opts = VfsOptions {
        zone: if a.utc { Zone::Utc } else { Zone::Local },
        chunk_cache_bytes: usize::try_from(a.cache_size).unwrap_or(usize::MAX),
        ..Default::default()
    };
    let vfs = Arc::new(Vfs::new(repo, vfs_opts));
    let count = vfs.snapshots()?.snaps.len();
    for s in vfs.skipped_snapshots() {
        eprintln!("arc: warning: snapshot {} cannot be read and is not shown: {}", s.id.short(), s.error);
    }
    let mounted = arc_fuse_mount::mount(vfs, &a.mountpoint, &opts, Arc::new(Report))?;
    if !env.quiet {
        eprintln!(
            "arc: {count} snapshot(s) of {} mounted read-only at {}; press Ctrl-C to unmount",
            env.shown(),
            a.mountpoint.display()
        );
    }
    while !env.cancel.load(Ordering::SeqCst) && !mounted.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let external = mounted.is_finished();
    if let Some((total, counts)) = mounted.request_counts() {
        let list: Vec<String> = counts.iter().map(|(op, n)| format!("{op} {n}")).collect();
        eprintln!("arc: kernel requests: {total} ({})", list.join(", "));
    }
    match mounted.unmount(Duration::from_secs(5))? {
        Unmounted::Cleanly if !env.quiet && !external => eprintln!("arc: unmounted {}", a.mountpoint.display()),
        Unmounted::Cleanly => {}
        Unmounted::Detached => eprintln!(
            "arc: warning: {} was still in use; it is detached, and programs that had files open in it now get errors",
            a.mountpoint.display()
        ),
    }
    Ok(0)
}
