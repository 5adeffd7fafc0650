//! Replays the fuzzing corpus and every crash reproducer through the same
//! entry points the cargo-fuzz targets use (`arc_engine::format::fuzz_entry`),
//! without libFuzzer or nightly, so the corpus is a regression suite of the
//! ordinary `cargo test`. See fuzz/README.md for how the corpus is made.
//!
//! Checked for every file: no panic (which includes the round-trip
//! assertions of the entry points), and no single allocation above the
//! limit the fuzz targets enforce (`fuzz/src/lib.rs`): a length field from
//! the input must never size a buffer unchecked.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_engine::format::fuzz_entry::TARGETS;

/// Same as `arc_fuzz::LIMIT`.
const LIMIT: usize = 512 << 20;

/// Records the largest single allocation, so the test can tell which input
/// asked for too much (aborting, as the fuzz targets do, would not say).
struct Tracking;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only records sizes.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

/// One test for all targets, run serially, so that the allocation record
/// belongs to the input being replayed.
#[test]
fn replay_corpus_and_crash_reproducers() {
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    for &(target, entry) in TARGETS {
        let corpus = files_in(&fuzz_dir().join("corpus").join(target));
        assert!(!corpus.is_empty(), "fuzz/corpus/{target} is empty or missing: run fuzz/seed.sh");
        let artifacts = files_in(&fuzz_dir().join("artifacts").join(target));
        counts.push(format!("{target}: {} corpus, {} reproducers", corpus.len(), artifacts.len()));
        for path in corpus.iter().chain(&artifacts) {
            let data = std::fs::read(path).expect("read corpus file");
            LARGEST.store(0, Ordering::Relaxed);
            let outcome = catch_unwind(AssertUnwindSafe(|| entry(&data)));
            let largest = LARGEST.load(Ordering::Relaxed);
            if outcome.is_err() {
                failures.push(format!("{target}: {} panicked", path.display()));
            } else if largest > LIMIT {
                failures.push(format!("{target}: {} allocated {largest} bytes at once", path.display()));
            }
        }
    }
    eprintln!("replayed {}", counts.join("; "));
    assert!(failures.is_empty(), "{} inputs failed:\n{}", failures.len(), failures.join("\n"));
}
