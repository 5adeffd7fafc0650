//! The one policy for a worker thread that panicked or a lock it poisoned:
//! that is a bug in arc, reported as [`Error::Bug`] with the panic's own
//! message, never mistaken for a cancel ([`Error::Interrupted`]), which
//! would hide the cause behind "interrupted".

use std::any::Any;
use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};

/// Locks `m`; a lock poisoned by a panicking thread is a bug. `what` names
/// the data the lock guards, for the message.
pub fn lock<'a, T>(m: &'a Mutex<T>, what: &'static str) -> Result<MutexGuard<'a, T>> {
    m.lock().map_err(|_| Error::Bug { what, message: "a thread panicked while holding this lock".into() })
}

/// The result of a joined worker thread: its own result, or a bug naming
/// the worker and carrying its panic message.
pub fn joined<T>(r: std::thread::Result<Result<T>>, what: &'static str) -> Result<T> {
    r.unwrap_or_else(|payload| Err(Error::Bug { what, message: panic_message(payload.as_ref()) }))
}

/// The text a panic was raised with (`panic!("...")`), when it has one.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_worker_is_a_bug_with_its_message() {
        let r = std::thread::scope(|s| s.spawn(|| -> Result<()> { panic!("index {} out of range", 7) }).join());
        match joined(r, "backup walker") {
            Err(Error::Bug { what, message }) => {
                assert_eq!(what, "backup walker");
                assert_eq!(message, "index 7 out of range");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_poisoned_lock_is_a_bug_not_an_interruption() {
        let m = Mutex::new(0);
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let _g = m.lock().unwrap();
                panic!("boom");
            })
            .join()
        });
        let e = lock(&m, "the index database").expect_err("poisoned");
        assert!(matches!(e, Error::Bug { what: "the index database", .. }), "{e:?}");
        assert!(e.to_string().contains("a bug in arc"), "{e}");
    }
}
