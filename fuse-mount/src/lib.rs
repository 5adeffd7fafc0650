//! `arc mount`'s FUSE front end: serves an [`arc_engine::vfs::Vfs`] as a
//! read-only file system through the pure-Rust `fuser` (no libfuse).
//!
//! This crate owns the kernel side only: checking that a mount can work
//! ([`preflight`]), mounting with the right options ([`mount`]), and
//! unmounting ([`Mounted::unmount`]). Modules: `fs` (the `fuser::Filesystem`
//! implementation), `inode` (inode numbers ↔ VFS entries), `attr` (VFS
//! attributes → kernel attributes), `errno` (the one error → errno map),
//! `spin` (busy-polling during bursts of requests), `push` (small files'
//! data pushed into the kernel's page cache), `dirplus` (READDIRPLUS
//! replies), `statters` (who gets attributes in them), `stats` (requests
//! counted by opcode, on request).
//! It prints nothing: damage found while serving reads is passed to the
//! caller's [`MountEvents`].

mod attr;
mod dirplus;
mod errno;
mod fs;
mod inode;
mod push;
mod spin;
mod stats;
mod statters;

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use arc_engine::vfs::{Vfs, VfsError};
use fuser::{BackgroundSession, MountOption, SessionACL};

pub use errno::to_errno;

/// What the front end hears from a running mount.
pub trait MountEvents: Send + Sync {
    /// Reading `path` (`<snapshot>:/path/in/snapshot`) failed because
    /// repository data is damaged or unreadable; the reader got EIO.
    /// Called once per file.
    fn damaged(&self, path: &str, error: &VfsError);
}

#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Let other users in (subject to the recorded permissions, which the
    /// kernel enforces).
    pub allow_other: bool,
    /// Threads receiving kernel requests. One is fastest for the usual
    /// single walker (see `fs.rs`); reads that fetch data do not wait on it.
    pub dispatch_threads: usize,
    /// Threads fetching file data for reads.
    pub read_threads: usize,
    /// Source shown in /proc/mounts (`df`, `mount`).
    pub fsname: String,
    /// How long after each request idle-priority threads keep CPUs from
    /// halting, so the next request of a walk is answered without waking a
    /// sleeping CPU (see `spin.rs`); zero turns it off.
    pub busy_poll: Duration,
    /// Number of those threads: one per side of a walker/mount exchange.
    pub busy_poll_threads: usize,
    /// Count kernel requests by opcode ([`Mounted::request_counts`]).
    pub count_requests: bool,
    /// Push the small files the kernel has looked up into its page cache
    /// when their directory's first file is read, saving their READs
    /// (see `push.rs`).
    pub push_small_files: bool,
    /// List snapshot directories with READDIRPLUS, with attributes for the
    /// tasks that stat what they list (so their LOOKUPs are answered by
    /// the kernel; see `dirplus.rs`). Not with several dispatch threads
    /// on cloned descriptors.
    pub readdirplus: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        MountOptions {
            allow_other: false,
            dispatch_threads: 1,
            read_threads: (cpus * 2).clamp(4, 16),
            fsname: "arc".into(),
            busy_poll: Duration::from_micros(200),
            busy_poll_threads: cpus.min(2),
            count_requests: false,
            push_small_files: true,
            readdirplus: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    #[error("/dev/fuse is missing: load the fuse kernel module (`modprobe fuse`), or give the container the device (`--device /dev/fuse`)")]
    NoDevFuse,
    #[error("/dev/fuse is not readable and writable for this user: mount as root, or give /dev/fuse its usual mode (`chmod 0666 /dev/fuse`)")]
    DevFuseNotUsable,
    #[error("fusermount3 is missing: install the fuse3 package (`apt-get install fuse3`)")]
    NoFusermount,
    #[error("{}: no such directory; create the mount point first (`mkdir {}`)", .0.display(), .0.display())]
    MountpointMissing(PathBuf),
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{}: not an empty directory; mount on an empty one", .0.display())]
    NotEmpty(PathBuf),
    #[error("{}: already an arc mount (of {repo}); stop the `arc mount` serving it (Ctrl-C), or unmount it with `fusermount3 -u {}`", .path.display(), .path.display())]
    AlreadyArcMount { path: PathBuf, repo: String },
    #[error("{}: a stale mount is in the way ({source}); remove it with `fusermount3 -u {}`", .path.display(), .path.display())]
    StaleMount { path: PathBuf, source: std::io::Error },
    #[error("--allow-other needs `user_allow_other` in /etc/fuse.conf when not mounting as root")]
    AllowOtherNotPermitted,
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot mount on {}: {source}", .path.display())]
    Mount { path: PathBuf, source: std::io::Error },
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A fusermount binary as fuser would find it.
fn fusermount() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FUSERMOUNT_PATH") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/bin"), PathBuf::from("/sbin"), PathBuf::from("/usr/bin")])
        .flat_map(|d| [d.join("fusermount3"), d.join("fusermount")])
        .find(|p| p.is_file())
}

/// Points fuser at the fusermount3 that `fusermount` finds, through the
/// FUSERMOUNT_PATH variable fuser reads. fuser runs plain `fusermount3` and
/// gives up on the first PATH directory the user may not search (EACCES),
/// e.g. root's directories left in PATH by `sudo -u` or `setpriv`; this
/// search skips them. Call before any other thread is started: it sets an
/// environment variable.
pub fn pin_fusermount_path() {
    if std::env::var_os("FUSERMOUNT_PATH").is_none() {
        if let Some(path) = fusermount() {
            std::env::set_var("FUSERMOUNT_PATH", path);
        }
    }
}

/// Checks everything a mount needs, so that a failure is one line saying
/// what to do rather than an errno from deep inside the mount.
pub fn preflight(mountpoint: &Path, opts: &MountOptions) -> Result<(), MountError> {
    let host = Host {
        dev_fuse: Path::new("/dev/fuse").exists(),
        dev_fuse_usable: nix::unistd::access(
            "/dev/fuse",
            nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
        )
        .is_ok(),
        root: is_root(),
        fusermount: fusermount().is_some(),
        fuse_conf: std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default(),
    };
    check_host(&host, opts)?;
    check_mountpoint(mountpoint)
}

/// What about this machine decides whether a mount can work.
struct Host {
    dev_fuse: bool,
    /// The user may open /dev/fuse (mode 0666 is the usual default).
    dev_fuse_usable: bool,
    root: bool,
    fusermount: bool,
    fuse_conf: String,
}

fn check_host(host: &Host, opts: &MountOptions) -> Result<(), MountError> {
    if !host.dev_fuse {
        return Err(MountError::NoDevFuse);
    }
    // Root mounts with mount(2) directly; everyone else needs the setuid
    // helper.
    if !host.root && !host.fusermount {
        return Err(MountError::NoFusermount);
    }
    // fuser opens /dev/fuse itself before it falls back to fusermount3,
    // and gives up on EACCES.
    if !host.root && !host.dev_fuse_usable {
        return Err(MountError::DevFuseNotUsable);
    }
    if opts.allow_other && !host.root && !host.fuse_conf.lines().any(|l| l.trim() == "user_allow_other") {
        return Err(MountError::AllowOtherNotPermitted);
    }
    Ok(())
}

fn check_mountpoint(mountpoint: &Path) -> Result<(), MountError> {
    let stale = |e: std::io::Error| MountError::StaleMount { path: mountpoint.to_path_buf(), source: e };
    let meta = match std::fs::metadata(mountpoint) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(MountError::MountpointMissing(mountpoint.into())),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return Err(stale(e)),
        Err(e) => return Err(MountError::Io { path: mountpoint.into(), source: e }),
    };
    if !meta.is_dir() {
        return Err(MountError::NotADirectory(mountpoint.into()));
    }
    if let Some(repo) = arc_mount_at(mountpoint) {
        return Err(MountError::AlreadyArcMount { path: mountpoint.into(), repo });
    }
    match std::fs::read_dir(mountpoint) {
        Ok(mut rd) => match rd.next() {
            None => Ok(()),
            Some(_) => Err(MountError::NotEmpty(mountpoint.into())),
        },
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(stale(e)),
        Err(e) => Err(MountError::Io { path: mountpoint.into(), source: e }),
    }
}

/// The repository of the arc mount at `path`, if `path` is one: a FUSE
/// mount whose source (the fsname `arc mount` sets) starts with `arc:`.
fn arc_mount_at(path: &Path) -> Option<String> {
    let path = std::fs::canonicalize(path).ok()?;
    let want = path.to_string_lossy().replace(' ', "\\040");
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // Fields: id parent dev root mountpoint options... - fstype source superoptions
    info.lines().rev().find_map(|l| {
        let (head, tail) = l.split_once(" - ")?;
        if head.split(' ').nth(4) != Some(want.as_str()) {
            return None;
        }
        let mut t = tail.split(' ');
        let (fstype, source) = (t.next()?, t.next()?);
        (fstype.starts_with("fuse") && source.starts_with("arc:")).then(|| source["arc:".len()..].to_string())
    })
}

/// A mounted file system, served by background threads until
/// [`Mounted::unmount`] (or until someone runs `fusermount3 -u`).
pub struct Mounted {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    counts: Option<Arc<stats::RequestCounts>>,
}

/// How an unmount went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    Cleanly,
    /// The mount point was busy (a shell inside it, an open file): it was
    /// detached, and what still uses it fails once this process exits.
    Detached,
}

/// Mounts `vfs` at `mountpoint` (checked with [`preflight`] first).
///
/// As root with fusermount3 present the mount asks for `auto_unmount`, so
/// even a killed `arc mount` leaves no dead mount point behind.
pub fn mount(
    vfs: Arc<Vfs>,
    mountpoint: &Path,
    opts: &MountOptions,
    events: Arc<dyn MountEvents>,
) -> Result<Mounted, MountError> {
    preflight(mountpoint, opts)?;
    let auto_unmount = is_root() && fusermount().is_some();
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        MountOption::RO,
        MountOption::DefaultPermissions,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::FSName(opts.fsname.clone()),
        MountOption::Subtype("arc".into()),
    ];
    if auto_unmount {
        cfg.mount_options.push(MountOption::AutoUnmount);
    }
    cfg.acl = match (opts.allow_other, auto_unmount) {
        (true, _) => SessionACL::All,
        // auto_unmount requires allow_root or allow_other; for root as the
        // owner, allow_root admits no one else.
        (false, true) => SessionACL::RootAndOwner,
        (false, false) => SessionACL::Owner,
    };
    cfg.n_threads = Some(opts.dispatch_threads.max(1));
    // With several dispatch threads, one /dev/fuse descriptor each, so
    // they do not contend on one; opening /dev/fuse again needs the same
    // rights as mounting.
    cfg.clone_fd = opts.dispatch_threads > 1
        && nix::unistd::access("/dev/fuse", nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK).is_ok();
    // Canonical before mounting: afterwards resolving it goes through the
    // mount, which fails once the mount is dead.
    let canonical =
        std::fs::canonicalize(mountpoint).map_err(|e| MountError::Io { path: mountpoint.to_path_buf(), source: e })?;
    let spinner = spin::Spinner::start(opts.busy_poll, opts.busy_poll_threads, vfs.work().clone()).map(Arc::new);
    let counts = opts.count_requests.then(|| Arc::new(stats::RequestCounts::default()));
    let fs = fs::ArcFs::new(
        vfs,
        events,
        opts.read_threads,
        spinner.clone(),
        counts.clone(),
        opts.push_small_files,
        // A reply must go to the descriptor its request was read from, and
        // the hand-written READDIRPLUS replies go to the session's own:
        // not with one cloned descriptor per dispatch thread.
        opts.readdirplus && !cfg.clone_fd,
    );
    // The pusher and the READDIRPLUS replies write to the session's
    // /dev/fuse, which exists only once the file system has been handed to
    // the session; requests are served only after `spawn` below. Without
    // it listings could not be answered: the mount fails (dropping the
    // session unmounts).
    let dev_fd = fs.dev_fd_slot();
    let session = fuser::Session::new(fs, &canonical, &cfg)
        .map_err(|e| MountError::Mount { path: canonical.clone(), source: e })?;
    {
        use std::os::fd::AsFd;
        let fd = session
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| MountError::Mount { path: canonical.clone(), source: e })?;
        let _ = dev_fd.set(fd);
    }
    // The dispatch thread itself polls /dev/fuse during a burst (see
    // spin.rs). It does so at normal priority, so only where another CPU
    // is left for the walker.
    if let (Some(spinner), true) = (&spinner, std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)) {
        use std::os::fd::AsFd;
        if let Ok(fd) = session.as_fd().try_clone_to_owned() {
            spinner.attach_fuse_fd(fd);
        }
    }
    let session = session.spawn().map_err(|e| MountError::Mount { path: mountpoint.to_path_buf(), source: e })?;
    raise_kernel_readahead(&canonical);
    Ok(Mounted { session: Some(session), mountpoint: canonical, counts })
}

/// Lets the kernel read further ahead in files of this mount than the
/// default 128 KiB, so a sequential reader keeps several chunk-sized
/// requests in flight. Needs root; without it the default stays.
fn raise_kernel_readahead(mountpoint: &Path) {
    if let Ok(m) = std::fs::metadata(mountpoint) {
        let dev = m.dev();
        let knob = format!("/sys/class/bdi/{}:{}/read_ahead_kb", libc::major(dev), libc::minor(dev));
        let _ = std::fs::write(knob, "4096");
    }
}

impl Mounted {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Kernel requests received so far: the total and the nonzero counts
    /// by opcode, if [`MountOptions::count_requests`] was set. Forgets are
    /// counted per inode; `read-queued` counts the reads (among `read`)
    /// whose data was not in memory and went to a read worker.
    pub fn request_counts(&self) -> Option<(u64, Vec<(&'static str, u64)>)> {
        self.counts.as_ref().map(|c| (c.total(), c.snapshot()))
    }

    /// The file system was unmounted from outside (`fusermount3 -u`,
    /// `umount`) and the session has ended.
    pub fn is_finished(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts and waits for the serving threads, up to `wait`. A busy
    /// mount point is detached instead (`umount -l`).
    pub fn unmount(mut self, wait: Duration) -> Result<Unmounted, MountError> {
        let Some(session) = self.session.take() else { return Ok(Unmounted::Cleanly) };
        let mut outcome = Unmounted::Cleanly;
        // fuser's own unmount with auto_unmount only hands the job to
        // fusermount3, which unmounts only file systems whose server is
        // gone; so unmount here, while still serving.
        if !session.guard.is_finished() && is_mounted(&self.mountpoint) {
            if let Err(e) = unmount_now(&self.mountpoint) {
                if !is_busy(&e) {
                    return Err(MountError::Io { path: self.mountpoint.clone(), source: e });
                }
                detach(&self.mountpoint)?;
                outcome = Unmounted::Detached;
            }
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(session.umount_and_join());
        });
        // After a detach the threads serve until the last user leaves;
        // the caller exiting ends that (open files then fail).
        if rx.recv_timeout(wait).is_err() {
            outcome = Unmounted::Detached;
        }
        Ok(outcome)
    }
}

fn is_busy(e: &std::io::Error) -> bool {
    // fusermount3 reports failures only in its exit status; a failed
    // unmount of a mounted file system is nearly always "busy".
    e.raw_os_error().is_none_or(|c| c == libc::EBUSY)
}

fn unmount_now(mountpoint: &Path) -> std::io::Result<()> {
    if is_root() {
        nix::mount::umount(mountpoint).map_err(std::io::Error::from)
    } else {
        fusermount_u(mountpoint, false)
    }
}

fn fusermount_u(mountpoint: &Path, lazy: bool) -> std::io::Result<()> {
    let bin = fusermount().unwrap_or_else(|| PathBuf::from("fusermount3"));
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("-u").arg("-q");
    if lazy {
        cmd.arg("-z");
    }
    let status = cmd.arg("--").arg(mountpoint).stderr(std::process::Stdio::null()).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("fusermount3 -u failed ({status})")))
    }
}

/// Lazy unmount: the mount point is free at once, users inside keep
/// their view until they leave (or until this process exits).
fn detach(mountpoint: &Path) -> Result<(), MountError> {
    if !is_mounted(mountpoint) {
        return Ok(());
    }
    let r = if is_root() {
        nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH).map_err(std::io::Error::from)
    } else {
        fusermount_u(mountpoint, true)
    };
    r.map_err(|e| MountError::Io { path: mountpoint.to_path_buf(), source: e })
}

/// Is `path` (canonical) a mount point right now (per /proc/self/mountinfo)?
fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Dropping the session unmounts; make sure a busy mount point does
        // not survive the process either.
        if let Some(s) = self.session.take() {
            drop(s);
            let _ = detach(&self.mountpoint);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            dev_fuse: true,
            dev_fuse_usable: true,
            root: false,
            fusermount: true,
            fuse_conf: "#user_allow_other\n".into(),
        }
    }

    #[test]
    fn missing_pieces_are_one_line_saying_what_to_do() {
        let opts = MountOptions::default();
        let no_dev = check_host(&Host { dev_fuse: false, ..host() }, &opts).unwrap_err().to_string();
        assert!(no_dev.contains("/dev/fuse") && no_dev.contains("modprobe fuse"), "{no_dev}");
        let no_helper = check_host(&Host { fusermount: false, ..host() }, &opts).unwrap_err().to_string();
        assert!(no_helper.contains("apt-get install fuse3"), "{no_helper}");
        assert!(check_host(&Host { fusermount: false, root: true, ..host() }, &opts).is_ok(), "root needs no helper");
        let no_access = check_host(&Host { dev_fuse_usable: false, ..host() }, &opts).unwrap_err().to_string();
        assert!(no_access.contains("chmod 0666 /dev/fuse"), "{no_access}");
        assert!(check_host(&Host { dev_fuse_usable: false, root: true, ..host() }, &opts).is_ok());
        let other = MountOptions { allow_other: true, ..MountOptions::default() };
        assert!(matches!(check_host(&host(), &other), Err(MountError::AllowOtherNotPermitted)));
        let permitted = Host { fuse_conf: "user_allow_other\n".into(), ..host() };
        assert!(check_host(&permitted, &other).is_ok());
        for e in [no_dev, no_helper] {
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn mount_points_must_be_empty_directories() {
        let dir = std::env::temp_dir().join(format!("arc-fuse-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(check_mountpoint(&dir).is_ok());
        std::fs::write(dir.join("f"), b"x").unwrap();
        assert!(matches!(check_mountpoint(&dir), Err(MountError::NotEmpty(_))));
        assert!(matches!(check_mountpoint(&dir.join("f")), Err(MountError::NotADirectory(_))));
        assert!(matches!(check_mountpoint(&dir.join("none")), Err(MountError::MountpointMissing(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
