//! Generates issue 16's "10,000 snapshots" repository: daily backups of a
//! small changing tree over 27 years, each with its own `--time`, through
//! the engine's own backup in one process (10,000 `arc backup` runs would
//! spend most of their time starting up and deriving the key, which is
//! not what the benchmark is about). Deterministic: the same arguments give
//! the same trees and times. Used by benches/snapshots.sh.
//!
//!   gen_snapshots REPO SRC COUNT
//!
//! REPO must exist (`arc init`); its passphrase comes from ARC_PASSWORD,
//! the index cache goes under $XDG_CACHE_HOME/arc as the CLI's does. SRC is
//! (re)created. Each day changes one file, every tenth day adds one, so
//! every snapshot has a new root and the repository holds about three new
//! trees per snapshot; the count of distinct trees is printed at the end.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use arc_engine::ops::backup::{backup, BackupOptions};
use arc_engine::progress::NoProgress;
use arc_engine::{Id, Repository};
use chrono::{Duration, TimeZone, Utc};

const DIRS: usize = 20;
const FILES_PER_DIR: usize = 10;

fn file(src: &Path, n: usize) -> PathBuf {
    src.join(format!("d{:02}", n % DIRS)).join(format!("f{n:05}.txt"))
}

fn content(n: usize, day: usize) -> String {
    format!("file {n}, version of day {day}\n").repeat(20 + n % 50)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, repo, src, count] = args.as_slice() else {
        return Err("usage: gen_snapshots REPO SRC COUNT".into());
    };
    let (repo_path, src) = (PathBuf::from(repo), PathBuf::from(src));
    let count: usize = count.parse().map_err(|e| format!("COUNT {count:?}: {e}"))?;
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) => PathBuf::from(d).join("arc"),
        None => PathBuf::from(std::env::var_os("HOME").ok_or("set HOME or XDG_CACHE_HOME")?).join(".cache/arc"),
    };
    let pass = || -> arc_engine::Result<zeroize::Zeroizing<String>> {
        std::env::var("ARC_PASSWORD").map(zeroize::Zeroizing::new).map_err(|_| arc_engine::Error::PassphraseRequired)
    };
    let repo = Repository::open_local_cached_with(&repo_path, &cache, Some(&pass))?;

    if src.exists() {
        std::fs::remove_dir_all(&src)?;
    }
    let mut files = DIRS * FILES_PER_DIR;
    for n in 0..files {
        let f = file(&src, n);
        std::fs::create_dir_all(f.parent().ok_or("no parent")?)?;
        std::fs::write(&f, content(n, 0))?;
    }
    let start = Utc.with_ymd_and_hms(1999, 1, 1, 3, 0, 0).single().ok_or("start time")?;
    let mut parent: Option<Id> = None;
    let mut roots: HashSet<Id> = HashSet::new();
    for day in 0..count {
        if day > 0 {
            // Prime steps, so the changes wander over every directory.
            let n = (day * 37) % files;
            std::fs::write(file(&src, n), content(n, day))?;
            if day % 10 == 0 {
                let f = file(&src, files);
                std::fs::create_dir_all(f.parent().ok_or("no parent")?)?;
                std::fs::write(&f, content(files, day))?;
                files += 1;
            }
        }
        let opts = BackupOptions {
            paths: vec![src.clone()],
            tags: vec!["daily".into()],
            host: Some("gen".into()),
            time: Some(start + Duration::days(day as i64)),
            parent,
            ..Default::default()
        };
        let r = backup(&repo, opts, &NoProgress)?;
        parent = Some(r.snapshot_id);
        roots.insert(r.snapshot.tree);
        if (day + 1) % 1000 == 0 {
            eprintln!("{} snapshots", day + 1);
        }
    }
    println!("snapshots {count} files {files} distinct_roots {}", roots.len());
    Ok(())
}
