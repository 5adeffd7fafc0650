//! Adaptive busy-polling: keeps CPUs from halting while a walker and the
//! mount are exchanging requests.
//!
//! A tree walk through FUSE is a chain of small synchronous round trips
//! (walker asks, mount answers, walker asks again). Whenever one side
//! waits, its CPU has nothing to run and halts; the next message must then
//! wake a halted CPU, which on a VM without guest halt-polling is a VM exit
//! on both sides of every round trip (`find` over 200k files: 2.2 s instead
//! of 1.3 s, `ls -lR` 25 s instead of 10 s; BENCHMARKS.md). KVM and the
//! guest cpuidle-haltpoll driver solve this by polling for up to 200 µs
//! before halting; where that is switched off, the mount does the same for
//! its own traffic, in two ways, both only while requests keep arriving and
//! stopped `window` after the last one, so an idle mount burns nothing:
//!
//! * the session's /dev/fuse descriptor is switched to non-blocking, so
//!   the dispatch thread (whose read loop retries on EAGAIN) polls for the
//!   next request instead of sleeping in read(2) and being woken for it;
//!   only while the mount's background work (prefetches, directory
//!   readahead, read workers: the engine's `vfs::WorkGauge`) has been quiet
//!   for `window`, because this polling runs at normal priority and took a
//!   CPU that work needed: `cp -a` of www through a local mount took
//!   14-16 s with it and 6.6-6.9 s without, and from an S3 server on the
//!   same machine the poller burnt a CPU for the whole copy (BENCHMARKS.md,
//!   "Busy-polling that backs off");
//! * a few threads at `SCHED_IDLE` priority spin, so the walker's CPU does
//!   not halt while it waits for an answer. `SCHED_IDLE` means they never
//!   take time from anything else that wants to run: the scheduler
//!   preempts them at once.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_engine::vfs::WorkGauge;

pub struct Spinner {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    epoch: Instant,
    window_ns: u64,
    /// Nanoseconds since `epoch` of the latest request.
    last_request: AtomicU64,
    /// Spinners are awake (or about to be); requests need not wake them.
    awake: AtomicBool,
    stop: AtomicBool,
    sleep_lock: Mutex<()>,
    wake: Condvar,
    /// The session's /dev/fuse descriptor (a dup: same open file), switched
    /// to non-blocking during a burst so the dispatch thread polls for the
    /// next request instead of sleeping in read(2).
    fuse_fd: OnceLock<OwnedFd>,
    nonblocking: AtomicBool,
    work: Arc<WorkGauge>,
    window: Duration,
    /// Nanoseconds since `epoch` of the latest READ.
    last_read: AtomicU64,
}

/// The descriptor does not poll for this long after a READ. Polling pays
/// off for walks (`find`, `ls -lR`: requests answered from memory, one
/// after another); a reader of file data (`cp -a`, `tar`, `rsync`) needs
/// the CPUs for the data and for writing it out, and a READ every file or
/// so keeps the polling off for the whole copy. Long against the time
/// between two files of a copy, short against a human's pause.
const READ_HOLD_OFF_NS: u64 = 50_000_000;
const NEVER: u64 = u64::MAX;

fn set_nonblocking(fd: &OwnedFd, on: bool) {
    // SAFETY: fcntl on a descriptor we own; flags are read then written.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags >= 0 {
            let want = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, want);
        }
    }
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// No READ for [`READ_HOLD_OFF_NS`] and no background work for the
    /// window: the descriptor may poll.
    fn may_poll(&self, now: u64) -> bool {
        let last_read = self.last_read.load(Ordering::Relaxed);
        (last_read == NEVER || now.saturating_sub(last_read) >= READ_HOLD_OFF_NS) && self.work.quiet_for(self.window)
    }

    fn recent_request(&self) -> bool {
        self.now_ns().saturating_sub(self.last_request.load(Ordering::Relaxed)) < self.window_ns
    }
}

impl Spinner {
    /// `threads` spinners that keep spinning for `window` after each
    /// request; the descriptor polls only while `work` has been quiet for
    /// `window`. Returns None when `window` or `threads` is zero.
    pub fn start(window: Duration, threads: usize, work: Arc<WorkGauge>) -> Option<Spinner> {
        if window.is_zero() || threads == 0 {
            return None;
        }
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            window_ns: window.as_nanos() as u64,
            last_request: AtomicU64::new(0),
            awake: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
            fuse_fd: OnceLock::new(),
            nonblocking: AtomicBool::new(false),
            work,
            window,
            last_read: AtomicU64::new(NEVER),
        });
        let threads = (0..threads)
            .filter_map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new().name(format!("arc-spin-{i}")).spawn(move || spin_loop(&shared)).ok()
            })
            .collect();
        Some(Spinner { shared, threads })
    }

    pub fn attach_fuse_fd(&self, fd: OwnedFd) {
        let _ = self.shared.fuse_fd.set(fd);
    }

    /// Called at the start of every request (`reads_data`: a READ):
    /// keeps the spinners going, and wakes them at the start of a burst.
    pub fn request(&self, reads_data: bool) {
        let s = &self.shared;
        let now = s.now_ns();
        s.last_request.store(now, Ordering::Relaxed);
        if reads_data {
            s.last_read.store(now, Ordering::Relaxed);
        }
        if let Some(fd) = s.fuse_fd.get() {
            // Plain loads first: every request passes here, and the flag
            // almost always has the wanted value already.
            if s.may_poll(now) {
                if !s.nonblocking.load(Ordering::Relaxed) && !s.nonblocking.swap(true, Ordering::AcqRel) {
                    set_nonblocking(fd, true);
                }
            } else if s.nonblocking.load(Ordering::Relaxed) && s.nonblocking.swap(false, Ordering::AcqRel) {
                // Work was handed out since: this thread sleeps in read(2)
                // after this request instead of taking the work's CPU.
                set_nonblocking(fd, false);
            }
        }
        if !s.awake.load(Ordering::Relaxed) && !s.awake.swap(true, Ordering::AcqRel) {
            let _guard = s.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
            s.wake.notify_all();
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        {
            let _guard = self.shared.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.wake.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn spin_loop(s: &Shared) {
    // SAFETY: sched_setscheduler only reads the parameter struct; pid 0 is
    // the calling thread. Failure (no permission) just leaves this thread at
    // normal priority, where it would compete with real work, so give up.
    let param = libc::sched_param { sched_priority: 0 };
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        return;
    }
    loop {
        {
            let mut guard = s.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
            while !s.awake.load(Ordering::Acquire) && !s.stop.load(Ordering::Acquire) {
                guard = s.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
            }
        }
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        loop {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            if !s.recent_request() || s.stop.load(Ordering::Relaxed) {
                if let Some(fd) = s.fuse_fd.get() {
                    if s.nonblocking.swap(false, Ordering::AcqRel) {
                        set_nonblocking(fd, false);
                    }
                }
                s.awake.store(false, Ordering::Release);
                // A request between the check and the store saw `awake`
                // still set and woke nobody: spin on for it.
                if s.recent_request() && !s.awake.swap(true, Ordering::AcqRel) {
                    continue;
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge() -> Arc<WorkGauge> {
        Arc::new(WorkGauge::default())
    }

    /// A second descriptor of the same open file as a stand-in for
    /// /dev/fuse's, to read its flags while the spinner owns the first.
    struct Probe(OwnedFd);

    impl Probe {
        fn nonblocking(&self) -> bool {
            // SAFETY: F_GETFL on a descriptor this test owns.
            unsafe { libc::fcntl(self.0.as_raw_fd(), libc::F_GETFL) & libc::O_NONBLOCK != 0 }
        }
    }

    /// A pipe's ends (the read end for the spinner) and a probe of it.
    fn descriptor() -> (OwnedFd, OwnedFd, Probe) {
        let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
        let probe = Probe(read_end.try_clone().expect("dup"));
        (read_end, write_end, probe)
    }

    #[test]
    fn spinners_sleep_after_the_window_and_wake_on_a_request() {
        let spinner = Spinner::start(Duration::from_millis(5), 2, gauge()).expect("spinner");
        assert!(!spinner.shared.awake.load(Ordering::Acquire));
        spinner.request(false);
        assert!(spinner.shared.awake.load(Ordering::Acquire));
        let deadline = Instant::now() + Duration::from_secs(5);
        while spinner.shared.awake.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "spinners did not stop after the window");
            std::thread::sleep(Duration::from_millis(1));
        }
        spinner.request(false);
        assert!(spinner.shared.awake.load(Ordering::Acquire));
        drop(spinner); // joins: must not hang while spinning
    }

    #[test]
    fn descriptor_is_non_blocking_only_during_a_burst() {
        let (read_end, _write_end, probe) = descriptor();
        let nonblocking = || probe.nonblocking();
        let spinner = Spinner::start(Duration::from_millis(5), 1, gauge()).expect("spinner");
        spinner.attach_fuse_fd(read_end);
        assert!(!nonblocking());
        spinner.request(false);
        assert!(nonblocking(), "a request must switch the descriptor to polling");
        let deadline = Instant::now() + Duration::from_secs(5);
        while nonblocking() {
            assert!(Instant::now() < deadline, "descriptor left non-blocking after the burst");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn descriptor_does_not_poll_while_background_work_runs() {
        let (read_end, _write_end, probe) = descriptor();
        let nonblocking = || probe.nonblocking();
        let work = gauge();
        let window = Duration::from_millis(50);
        let spinner = Spinner::start(window, 1, work.clone()).expect("spinner");
        spinner.attach_fuse_fd(read_end);
        spinner.request(false);
        assert!(nonblocking(), "no work yet: the descriptor polls");
        let running = work.start();
        spinner.request(false);
        assert!(!nonblocking(), "a request while work runs must stop the polling");
        spinner.request(false);
        assert!(!nonblocking(), "nor start it again while the work runs");
        drop(running);
        spinner.request(false);
        assert!(!nonblocking(), "not within the window after the work ended");
        std::thread::sleep(window);
        spinner.request(false);
        assert!(nonblocking(), "polls again once the work has been quiet for the window");
    }

    #[test]
    fn descriptor_does_not_poll_while_file_data_is_read() {
        let (read_end, _write_end, probe) = descriptor();
        let nonblocking = || probe.nonblocking();
        let spinner = Spinner::start(Duration::from_millis(5), 1, gauge()).expect("spinner");
        spinner.attach_fuse_fd(read_end);
        spinner.request(false);
        assert!(nonblocking(), "a walk polls");
        spinner.request(true);
        assert!(!nonblocking(), "a READ stops the polling");
        spinner.request(false);
        assert!(!nonblocking(), "and a walk's request right after does not start it again");
        std::thread::sleep(Duration::from_nanos(READ_HOLD_OFF_NS));
        spinner.request(false);
        assert!(nonblocking(), "polls again after the hold-off");
    }

    #[test]
    fn zero_window_means_no_spinner() {
        assert!(Spinner::start(Duration::ZERO, 2, gauge()).is_none());
        assert!(Spinner::start(Duration::from_micros(200), 0, gauge()).is_none());
    }
}
