//! Dedup lookups against the index cache of a synthetic repository (see
//! arc_engine::synthetic, benches/scale-index.sh):
//! `index-lookups CACHE_ROOT REPO CHUNKS COUNT [CHUNKS_PER_PACK [SEED]]`,
//! the passphrase in ARC_PASSWORD. Opens the repository with its cache
//! under CACHE_ROOT (the CLI's is `$XDG_CACHE_HOME/arc`), which fills the
//! cache if it is empty (timed apart), then times COUNT lookups of ids
//! the repository holds (a chunk of a random pack) and COUNT of ids it
//! does not, one thread, as a backup's dedup asks (`contains`), and COUNT
//! `lookup`s of present ids (the location, as a restore asks). Prints
//! JSON. Used by benches/scale-lookups.sh.

use std::path::PathBuf;
use std::time::Instant;

use arc_engine::id::Id;
use arc_engine::repo::Repository;
use arc_engine::synthetic::chunk_id;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: index-lookups CACHE_ROOT REPO CHUNKS COUNT [CHUNKS_PER_PACK [SEED]]";
    let num = |i: usize| args.get(i).and_then(|c| c.parse::<u64>().ok());
    let (Some(cache), Some(repo), Some(chunks), Some(count)) = (args.first(), args.get(1), num(2), num(3)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let per = num(4).unwrap_or(512);
    let seed = num(5).unwrap_or(1);
    if let Err(e) = run(&PathBuf::from(cache), &PathBuf::from(repo), chunks, count, per, seed) {
        eprintln!("index-lookups: {e}");
        std::process::exit(1);
    }
}

fn run(
    cache: &std::path::Path,
    repo: &std::path::Path,
    chunks: u64,
    count: u64,
    per: u64,
    seed: u64,
) -> arc_engine::Result<()> {
    let password = || {
        std::env::var("ARC_PASSWORD").map(zeroize::Zeroizing::new).map_err(|_| arc_engine::Error::PassphraseRequired)
    };
    let t = Instant::now();
    let repo = Repository::open_local_cached_with(repo, cache, Some(&password))?;
    let index = repo.index()?;
    let open_s = t.elapsed().as_secs_f64();
    let reader = index.reader()?;
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let packs = chunks.div_ceil(per);
    let present: Vec<Id> = (0..count)
        .map(|_| {
            let p = next() % packs;
            let n = (chunks - p * per).min(per);
            chunk_id(seed, p, (next() % n) as u32)
        })
        .collect();
    let absent: Vec<Id> = (0..count).map(|_| Id::hash(&next().to_le_bytes())).collect();
    let timed = |ids: &[Id], f: &dyn Fn(&Id) -> arc_engine::Result<bool>| -> arc_engine::Result<(f64, u64)> {
        let t = Instant::now();
        let mut found = 0;
        for id in ids {
            found += u64::from(f(id)?);
        }
        Ok((ids.len() as f64 / t.elapsed().as_secs_f64(), found))
    };
    // Absent first: a cold cache is cold for them.
    let (absent_rate, absent_found) = timed(&absent, &|id| reader.contains(id))?;
    let (present_rate, present_found) = timed(&present, &|id| reader.contains(id))?;
    let (locate_rate, located) = timed(&present, &|id| Ok(reader.lookup(id)?.is_some()))?;
    let sizes = index.sizes()?;
    let vm = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm =
        vm.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or("").trim_start_matches("VmHWM:").trim().to_string();
    println!(
        "{{\"chunks\": {chunks}, \"open_and_fill_s\": {open_s:.2}, \"absent_per_s\": {absent_rate:.0}, \
         \"present_per_s\": {present_rate:.0}, \"locate_per_s\": {locate_rate:.0}, \"absent_found\": {absent_found}, \
         \"present_found\": {present_found}, \"located\": {located}, \"sorted_bytes\": {}, \"db_bytes\": {}, \
         \"bytes_per_chunk\": {:.1}, \"vm_hwm\": \"{hwm}\"}}",
        sizes.sorted_bytes,
        sizes.db_bytes,
        (sizes.sorted_bytes + sizes.db_bytes) as f64 / chunks as f64
    );
    Ok(())
}
