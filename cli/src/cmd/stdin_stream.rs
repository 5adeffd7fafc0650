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
    let stopped = Arc::new(AtomicBool::new(false));
    let hook = stopped.clone();
    StreamSource {
        name,
        reader: Box::new(StoppableStdin { stopped }),
        allow_empty,
        stop: Some(Box::new(move || hook.store(true, Ordering::SeqCst))),
    }
}
