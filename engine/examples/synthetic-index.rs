//! Writes a synthetic index into a repository made by `arc init` (see
//! arc_engine::synthetic): `synthetic-index REPO CHUNKS [CHUNKS_PER_PACK
//! [SEED]]`, the passphrase in ARC_PASSWORD for an encrypted repository.
//! Used by benches/scale-index.sh.

use std::path::PathBuf;
use std::sync::Arc;

use arc_engine::repo::Repository;
use arc_engine::storage::LocalDir;
use arc_engine::synthetic::{generate, SyntheticIndex};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: synthetic-index REPO CHUNKS [CHUNKS_PER_PACK [SEED]]";
    let (Some(repo), Some(chunks)) = (args.first(), args.get(1).and_then(|c| c.parse().ok())) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let chunks_per_pack = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(512);
    let seed = args.get(3).and_then(|c| c.parse().ok()).unwrap_or(1);
    let scratch = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("synthetic-index: a temporary directory: {e}");
            std::process::exit(1);
        }
    };
    let password = || {
        std::env::var("ARC_PASSWORD").map(zeroize::Zeroizing::new).map_err(|_| arc_engine::Error::PassphraseRequired)
    };
    // Its own index database: the repository's index files are what the
    // commands read; the database here only serves the trees' dedup.
    let opened = Repository::open_with(
        Arc::new(LocalDir::new(PathBuf::from(repo))),
        Some(scratch.path().join("index.redb")),
        Some(&password),
    );
    let spec = SyntheticIndex { chunks, chunks_per_pack, seed };
    let result = opened.and_then(|r| {
        generate(&r, &spec, &|packs| {
            if packs % 10_000 < 256 {
                eprintln!("{packs} packs");
            }
        })
    });
    match result {
        Ok(report) => println!("{}", serde_json::to_string(&report).unwrap_or_default()),
        Err(e) => {
            eprintln!("synthetic-index: {e}");
            std::process::exit(1);
        }
    }
}
