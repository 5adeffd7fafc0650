//! Scale (#16): `check` and `prune` on a synthetic index (written by the
//! engine's own index writer, no data: arc_engine::synthetic) hold memory
//! that does not grow with the number of chunks. The figures at 100M
//! chunks are in BENCHMARKS.md (benches/scale-index.sh); this runs indexes
//! of a few million chunks, cheap enough for every CI run.
//!
//! The instrument is the peak resident memory of the `arc` process (its
//! VmHWM, util::Running::wait_with_peak_rss), not a `ulimit -v`: an address
//! space limit counts what is reserved, not what is used (each thread's
//! stack, glibc's per-thread malloc arenas of 64 MiB each, the mapped keys
//! of the index cache), so it would have to sit far above the real use and
//! move with the number of cores; and not a counting allocator, which sees
//! the heap only, not the mapped file pages that RSS and a memory cgroup
//! count.
//!
//! The test is the growth of the peak between two sizes, not one ceiling at
//! one size: a design that holds every blob in memory needs at least the
//! 32 bytes of its id a chunk, whatever the container, while the sorted
//! runs' buffers, the walk's batch of directories and the per-pack tables
//! are the same at both sizes once the smaller one fills them. An absolute
//! ceiling at one size cannot tell a compact in-memory design (a sorted
//! vector of ids: 128 MB at 4M chunks) from the 2 x 64 MiB sort buffers it
//! would replace.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::util::*;

/// The two sizes. Both past the points where the bounded parts stop
/// growing: the copy sorter's 64 MiB buffer (1.4M 48-byte records), the
/// referenced-chunk sorter's (2.1M ids; 1.8M at the smaller size, which
/// costs it 9 MiB of growth here), the tree walk's batch of 8 synthetic
/// directories (1,000 files of 128 chunks: 4 MB decoded each).
const SMALL: u64 = 2_000_000;
const LARGE: u64 = 4_000_000;
/// Chunks a synthetic pack (and a synthetic file) holds: 128 keeps the
/// directories small enough that the walk's batch fills at 1M chunks, and
/// the packs few enough that their per-pack rows (a few hundred bytes
/// each, in check's table, the listing and the index cache) add ~3 bytes
/// a chunk.
const CHUNKS_PER_PACK: u32 = 128;

/// Growth of either command's peak RSS allowed from SMALL to LARGE chunks.
/// Measured: 30-40 MiB for `check` (the per-pack rows, the index cache's
/// keys it maps, the referenced-chunk sorter filling up) and ~10-25 MiB for
/// prune's plan. Holding the 2M more chunks' ids alone, in any container,
/// adds at least 61 MiB more (a hash map of them ~130 MiB; the design this
/// replaced ~300 bytes a chunk, 570 MiB).
const GROWTH_MIB: u64 = 56;

/// Peak RSS allowed to either command at LARGE chunks: the design this
/// replaced peaked at ~300 bytes a chunk (1.1 GiB here; 436 and 512 MiB at
/// 1.35M chunks, BENCHMARKS.md); these commands at ~230 MiB.
const CEILING_MIB: u64 = 320;

/// Scratch disk allowed to prune's plan, in bytes a chunk, at LARGE
/// chunks: its sorted runs of every blob copy (48 bytes a chunk) and of the
/// live ids (32 a live chunk) and the chosen copies (8 a live chunk, in
/// memory at this size), ~77 bytes a chunk measured. The design this
/// replaced also spilled every trailer (~62 bytes a chunk) and wrote the
/// live copies out once more (48 a live chunk): ~180.
const PRUNE_SCRATCH_PER_CHUNK: u64 = 120;

/// Scratch disk allowed to `check` on a new host, in bytes a chunk, at
/// LARGE chunks: the larger of the index cache fill's sorted runs (~55
/// bytes a chunk) and check's own (the copies, 48, and the referenced
/// chunks, 32 a live chunk): 77 measured. When the first tree read filled
/// the cache, the fill's runs came on top of the copies': 104.
const CHECK_SCRATCH_PER_CHUNK: u64 = 90;

struct Peaks {
    check: u64,
    prune_plan: u64,
    /// Peak bytes of prune's scratch directories.
    prune_scratch: u64,
    /// Peak bytes of check's (the index cache's fill included).
    check_scratch: u64,
}

/// Samples the bytes under the `scratch-*` directories below `roots`
/// (where `check` and `prune` spill) until stopped; returns the peak.
struct ScratchSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl ScratchSampler {
    fn start(roots: Vec<PathBuf>) -> ScratchSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(roots.iter().map(|r| scratch_bytes(r, false)).sum());
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        ScratchSampler { stop, thread }
    }

    fn peak(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the scratch sampler panicked")
    }
}

/// Bytes of the files under `dir` inside a `scratch-*` directory or an
/// index cache fill's `index-fill-*` (every file when `inside`). Files
/// vanish while it looks: those count 0.
fn scratch_bytes(dir: &Path, inside: bool) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    let mut sum = 0;
    for e in rd.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let scratch = inside || name.starts_with("scratch-") || name.starts_with("index-fill-");
            sum += scratch_bytes(&e.path(), scratch);
        } else if inside {
            sum += meta.len();
        }
    }
    sum
}

/// Generates a synthetic index of `chunks` chunks in `repo`, runs `check`
/// (which also fills the index cache) and `prune --dry-run` (the plan,
/// where every one of prune's sets of blobs lives) on it, and returns
/// their peak RSS in KiB.
fn measure(env: &TestEnv, repo: &std::path::Path, chunks: u64) -> Peaks {
    // The default Argon2id cost: its 64 MiB are part of what a user's
    // command holds, and the ceiling below counts them.
    env.arc_at(repo).env_remove("ARC_TEST_KDF").arg("init").run().success();
    let spec = arc_engine::synthetic::SyntheticIndex { chunks, chunks_per_pack: CHUNKS_PER_PACK, seed: 7 };
    let generated = {
        let pw = || Ok(zeroize::Zeroizing::new(TEST_PASSWORD.to_string()));
        let storage = Arc::new(arc_engine::storage::LocalDir::new(repo));
        let db = env.path(format!("generator-{chunks}.redb"));
        let opened = arc_engine::Repository::open_with(storage, Some(db), Some(&pw)).expect("open the repository");
        arc_engine::synthetic::generate(&opened, &spec, &|_| {}).expect("generate the synthetic index")
    };
    assert_eq!(generated.chunks, chunks);

    // Scratch lives beside the index cache (or in a local repository's
    // tmp/ when the cache is there).
    let scratch_roots = || vec![env.home.join(".cache"), repo.join("tmp")];
    // The first command on this host: check fills the index cache too.
    let sampler = ScratchSampler::start(scratch_roots());
    let (out, check) = env.arc_at(repo).args(["--json", "check"]).spawn().wait_with_peak_rss();
    let check_scratch = sampler.peak();
    let report = out.success().json();
    assert_eq!(report["errors"].as_array().map(|e| e.len()), Some(0), "{report}");
    // The synthetic packs and the packs of the snapshot's trees.
    assert!(report["packs"].as_u64().unwrap_or(0) > generated.packs, "{report}");

    let sampler = ScratchSampler::start(scratch_roots());
    let (out, prune_plan) = env.arc_at(repo).args(["--json", "prune", "--dry-run"]).spawn().wait_with_peak_rss();
    let prune_scratch = sampler.peak();
    let report = out.success().json();
    // Every tenth pack is dead; every live chunk is found live.
    assert_eq!(report["packs_deleted"].as_u64(), Some(generated.dead_packs), "{report}");
    assert_eq!(report["live_blobs"].as_u64().map(|b| b >= generated.live_chunks), Some(true), "{report}");
    eprintln!(
        "{chunks} chunks: check peaked at {} MiB and {} bytes of scratch ({} a chunk), prune's plan at {} MiB and {} bytes of scratch ({} a chunk)",
        check / 1024,
        check_scratch,
        check_scratch / chunks,
        prune_plan / 1024,
        prune_scratch,
        prune_scratch / chunks
    );
    Peaks { check, check_scratch, prune_plan, prune_scratch }
}

#[test]
fn check_and_prune_memory_does_not_grow_with_the_number_of_chunks() {
    let env = TestEnv::new();
    if env.server.is_some() {
        // The synthetic packs are sparse files: a local repository only.
        return;
    }
    let small_repo = env.path("small");
    let small = measure(&env, &small_repo, SMALL);
    // Its index files and cache are not needed any more.
    std::fs::remove_dir_all(&small_repo).expect("remove the small repository");
    let large = measure(&env, &env.repo, LARGE);

    for (what, s, l) in [("check", small.check, large.check), ("prune's plan", small.prune_plan, large.prune_plan)] {
        let growth = l.saturating_sub(s) / 1024;
        assert!(
            growth < GROWTH_MIB,
            "{what} peaked at {} MiB with {SMALL} chunks and {} MiB with {LARGE}: it grew by {growth} MiB \
             (allowed {GROWTH_MIB} MiB), as if it held every blob in memory",
            s / 1024,
            l / 1024
        );
        assert!(l < CEILING_MIB * 1024, "{what} peaked at {} MiB (ceiling {CEILING_MIB} MiB)", l / 1024);
    }
    assert!(
        large.check_scratch < LARGE * CHECK_SCRATCH_PER_CHUNK,
        "check used {} bytes of scratch for {LARGE} chunks ({} a chunk, allowed {CHECK_SCRATCH_PER_CHUNK}): \
         the index cache's fill and check's own runs were on disk at once",
        large.check_scratch,
        large.check_scratch / LARGE
    );
    // The sampler saw the scratch (the runs of 4M copies are on disk at
    // this size), and it stays within what the plan needs.
    assert!(large.prune_scratch > LARGE * 32, "prune's scratch was not seen: {} bytes", large.prune_scratch);
    assert!(
        large.prune_scratch < LARGE * PRUNE_SCRATCH_PER_CHUNK,
        "prune's plan used {} bytes of scratch for {LARGE} chunks ({} a chunk, allowed {PRUNE_SCRATCH_PER_CHUNK}): \
         more than its sorted runs need",
        large.prune_scratch,
        large.prune_scratch / LARGE
    );
}
