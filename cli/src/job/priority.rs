//! CPU and I/O priority (`nice`, `ionice`) for a job: applied to the
//! thread that runs the job (Linux priorities are per thread, and the
//! engine's workers inherit them from the thread that starts them) and,
//! through `pre_exec`, to its hooks and dump commands.

use super::config::Ionice;

#[derive(Debug, Clone, Copy, Default)]
pub struct Priority {
    pub nice: Option<i32>,
    pub ionice: Option<Ionice>,
}

/// ioprio_set(2) values: class << 13 | level.
const IOPRIO_CLASS_SHIFT: i32 = 13;
const IOPRIO_CLASS_BE: i32 = 2;
const IOPRIO_CLASS_IDLE: i32 = 3;
const IOPRIO_WHO_PROCESS: i32 = 1;

impl Priority {
    /// Sets the calling thread's priorities. Async-signal-safe (two system
    /// calls), so it also runs between fork and exec.
    pub fn apply(&self) -> std::io::Result<()> {
        if let Some(n) = self.nice {
            // SAFETY: setpriority(2) with who = 0 changes only the calling
            // thread (Linux).
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if let Some(c) = self.ionice {
            let value = match c {
                Ionice::Idle => IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
                // The lowest level of the best-effort class.
                Ionice::BestEffort => (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | 7,
            };
            // SAFETY: ioprio_set(2) takes three integers; who = 0 is the
            // calling thread.
            if unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    pub fn is_set(&self) -> bool {
        self.nice.is_some() || self.ionice.is_some()
    }
}
