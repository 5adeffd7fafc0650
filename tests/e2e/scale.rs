//! Scale (#16): `check` and `prune` on a synthetic index (written by the
//! engine's own index writer, no data: arc_engine::synthetic) stay under a
//! memory ceiling that holding every blob in hash maps would break. The
//! figures at 100M chunks are in BENCHMARKS.md (benches/scale-index.sh);
//! this runs a small index, cheap enough for every CI run.

use std::sync::Arc;

use crate::util::*;

/// Chunks of the synthetic index (each costs the index cache a row, which
/// is most of this test's time).
const CHUNKS: u64 = 300_000;

/// Peak RSS allowed to `check` and to `prune`. Measured at this size: 72
/// MiB for each now; 110 MiB for `check` and 133 MiB for prune's plan
/// with the maps this replaced, which held every blob copy and every live
/// id (~300 bytes a chunk: 436 and 512 MiB at 1.35M chunks, BENCHMARKS.md).
/// The sorted runs hold at most a bounded buffer however many there are.
const CEILING_MIB: u64 = 96;

#[test]
fn check_and_prune_of_a_large_index_stay_under_a_memory_ceiling() {
    let env = TestEnv::new();
    if env.server.is_some() {
        // The synthetic packs are sparse files: a local repository only.
        return;
    }
    env.init();
    let spec = arc_engine::synthetic::SyntheticIndex { chunks: CHUNKS, chunks_per_pack: 512, seed: 7 };
    let generated = {
        let pw = || Ok(zeroize::Zeroizing::new(TEST_PASSWORD.to_string()));
        let storage = Arc::new(arc_engine::storage::LocalDir::new(&env.repo));
        let repo = arc_engine::Repository::open_with(storage, Some(env.path("generator-index.redb")), Some(&pw))
            .expect("open the repository");
        arc_engine::synthetic::generate(&repo, &spec, &|_| {}).expect("generate the synthetic index")
    };
    assert_eq!(generated.chunks, CHUNKS);

    let (out, rss) = env.arc().args(["--json", "check"]).spawn().wait_with_peak_rss();
    let report = out.success().json();
    assert_eq!(report["errors"].as_array().map(|e| e.len()), Some(0), "{report}");
    // The synthetic packs and the packs of the snapshot's trees.
    let packs = report["packs"].as_u64().unwrap_or(0);
    assert!(packs > generated.packs, "{report}");
    eprintln!("check peaked at {} MiB", rss / 1024);
    assert!(rss < CEILING_MIB * 1024, "check peaked at {} MiB (ceiling {CEILING_MIB} MiB)", rss / 1024);

    let (out, rss) = env.arc().args(["--json", "prune", "--instant"]).spawn().wait_with_peak_rss();
    let report = out.success().json();
    // Every tenth pack is dead; nothing live is lost.
    assert_eq!(report["packs_deleted"].as_u64(), Some(generated.dead_packs), "{report}");
    assert_eq!(report["live_blobs"].as_u64().map(|b| b >= generated.live_chunks), Some(true), "{report}");
    eprintln!("prune peaked at {} MiB", rss / 1024);
    assert!(rss < CEILING_MIB * 1024, "prune peaked at {} MiB (ceiling {CEILING_MIB} MiB)", rss / 1024);

    let out = env.arc().args(["--json", "check"]).run().success().json();
    assert_eq!(out["packs"].as_u64(), Some(packs - generated.dead_packs), "{out}");
    assert_eq!(out["errors"].as_array().map(|e| e.len()), Some(0), "{out}");
}
