//! A database job's dumps as streams of one snapshot, at most
//! `dump-parallel` of them running at once: each dump command starts when
//! the engine first reads its stream and a slot is free, so a server with
//! a thousand databases is dumped a few at a time, not all at once.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use arc_engine::ops::backup::StreamSource;

use super::plan::Dump;
use crate::cmd::command_stream::{self, Extra, StderrOut};

/// Counting semaphore (std has none; a crate for twenty lines is not worth it).
pub struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    pub fn new(n: usize) -> Arc<Slots> {
        Arc::new(Slots { free: Mutex::new(n.max(1)), cv: Condvar::new() })
    }

    /// Waits for a slot; `false` when `stopped` was set meanwhile.
    fn acquire(&self, stopped: &AtomicBool) -> bool {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if stopped.load(Ordering::SeqCst) {
                return false;
            }
            if *free > 0 {
                *free -= 1;
                return true;
            }
            free = self.cv.wait_timeout(free, Duration::from_millis(100)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn release(&self) {
        *self.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.cv.notify_one();
    }
}

type StopFn = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Shared {
    stopped: AtomicBool,
    stop: Mutex<Option<StopFn>>,
}

struct LazyDump {
    dump: Dump,
    extra: Extra,
    out: StderrOut,
    slots: Arc<Slots>,
    shared: Arc<Shared>,
    inner: Option<Box<dyn Read + Send>>,
    holding: bool,
    done: bool,
}

impl LazyDump {
    fn release(&mut self) {
        if self.holding {
            self.holding = false;
            self.slots.release();
        }
    }
}

impl Read for LazyDump {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.inner.is_none() {
            if !self.slots.acquire(&self.shared.stopped) {
                return Err(std::io::Error::other("stopped before the dump started"));
            }
            self.holding = true;
            let started = command_stream::start_argv(
                &self.dump.name,
                &self.dump.cmdline(),
                &self.dump.argv,
                &self.extra,
                false,
                true,
                &self.out,
            );
            match started {
                Ok(s) => {
                    if let Some(stop) = s.stop {
                        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop);
                    }
                    self.inner = Some(s.reader);
                    if self.shared.stopped.load(Ordering::SeqCst) {
                        stop_now(&self.shared);
                    }
                }
                Err(e) => {
                    self.release();
                    return Err(std::io::Error::other(format!("{e:#}")));
                }
            }
        }
        let r = self.inner.as_mut().map(|i| i.read(buf)).unwrap_or(Ok(0));
        match &r {
            Ok(0) | Err(_) => {
                // The command has exited (the reader waits for it): its
                // slot is free for the next database.
                self.done = true;
                self.inner = None;
                self.release();
            }
            Ok(_) => {}
        }
        r
    }
}

impl Drop for LazyDump {
    fn drop(&mut self) {
        self.inner = None;
        self.release();
    }
}

fn stop_now(shared: &Shared) {
    if let Some(stop) = shared.stop.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        stop();
    }
}

pub fn source(dump: &Dump, extra: &Extra, out: &StderrOut, slots: &Arc<Slots>) -> StreamSource {
    let shared = Arc::new(Shared::default());
    let hook = shared.clone();
    StreamSource {
        name: dump.name.clone(),
        reader: Box::new(LazyDump {
            dump: dump.clone(),
            extra: extra.clone(),
            out: out.clone(),
            slots: slots.clone(),
            shared,
            inner: None,
            holding: false,
            done: false,
        }),
        allow_empty: false,
        stop: Some(Box::new(move || {
            hook.stopped.store(true, Ordering::SeqCst);
            stop_now(&hook);
        })),
    }
}
