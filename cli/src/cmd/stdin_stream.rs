//! `--stdin` as a stream source that a stopping backup can interrupt.
//!
//! A read of standard input blocks until the producer writes or closes it;
//! a producer that goes silent (a dump waiting on a lock) would keep a
//! cancelled or failed backup from ever returning, and closing fd 0 does not
//! wake a blocked read on Linux. So the reader waits with `poll` in short
//! slices and gives up once the backup's stop hook fired.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_engine::ops::backup::StreamSource;

/// How often a silent stdin is re-checked for a stop.
const POLL_MS: i32 = 100;

/// The pipe buffer asked for on a stream's pipe: Linux's default limit for
/// unprivileged processes (`/proc/sys/fs/pipe-max-size`).
const PIPE_BYTES: libc::c_int = 1 << 20;

/// Widens the pipe `fd` reads from, when it is one, to [`PIPE_BYTES`]. A
/// dump fills the default 64 KiB in microseconds, and then the dump and
/// arc take turns: a backup of a 309 MB dump piped into `--stdin` waited
/// in `poll` 4,790 times, a wake-up of each side per 64 KiB; 1,123 times
/// with 1 MiB. Not a pipe, or over the user's pipe quota: the call fails
/// and the pipe stays as it was.
pub fn widen_pipe(fd: std::os::fd::RawFd) {
    // SAFETY: F_SETPIPE_SZ takes an int and changes nothing but the pipe's
    // capacity; on anything else it fails with EBADF or EINVAL.
    unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_BYTES) };
}

struct StoppableStdin {
    stopped: Arc<AtomicBool>,
}

impl Read for StoppableStdin {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                // Not ErrorKind::Interrupted: read loops retry on that.
                return Err(std::io::Error::other("the backup stopped"));
            }
            let mut fd = libc::pollfd { fd: libc::STDIN_FILENO, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut fd, 1, POLL_MS) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                continue;
            }
            // Readable, closed (POLLHUP) or in error: read says which. Raw
            // reads on fd 0, never std's buffered Stdin, so that no data
            // can sit in a buffer that poll does not see.
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let r = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted || e.kind() == std::io::ErrorKind::WouldBlock {
                    continue;
                }
                return Err(e);
            }
            return Ok(r as usize);
        }
    }
}

/// Standard input as the stream `name`.
pub fn source(name: String, allow_empty: bool) -> StreamSource {
    widen_pipe(libc::STDIN_FILENO);
    let stopped = Arc::new(AtomicBool::new(false));
    let hook = stopped.clone();
    StreamSource {
        name,
        reader: Box::new(StoppableStdin { stopped }),
        allow_empty,
        stop: Some(Box::new(move || hook.store(true, Ordering::SeqCst))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_is_widened() {
        let mut fds = [0; 2];
        // SAFETY: a valid array of two descriptors for pipe(2) to fill.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: F_GETPIPE_SZ on the pipe just made.
        let before = unsafe { libc::fcntl(fds[0], libc::F_GETPIPE_SZ) };
        widen_pipe(fds[0]);
        let after = unsafe { libc::fcntl(fds[1], libc::F_GETPIPE_SZ) };
        assert!(before < PIPE_BYTES && after >= PIPE_BYTES, "{before} -> {after}");
        // SAFETY: closing the two descriptors pipe(2) gave.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
