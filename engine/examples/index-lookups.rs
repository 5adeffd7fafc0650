//! Dedup lookups against the index cache of a synthetic repository (see
//! arc_engine::synthetic, benches/scale-index.sh):
//! `index-lookups CACHE_ROOT REPO CHUNKS COUNT [CHUNKS_PER_PACK [SEED]]`,
//! the passphrase in ARC_PASSWORD. Opens the repository with its cache
//! under CACHE_ROOT (the CLI's is `$XDG_CACHE_HOME/arc`), which fills the
//! cache if it is empty (timed apart), then times COUNT lookups of ids
//! the repository holds (a chunk of a random pack) and COUNT of ids it
//! does not, one thread, as a backup's dedup asks (`contains`), and COUNT
//! `lookup`s of present ids (the location, as a restore asks). Prints
//! JSON, with the sorted file's rows read per absent and per present
//! `contains`; then COUNT other present ids from THREADS threads (env,
//! default 4), as a backup's file workers ask. With BATCH=n (env), the
//! single-thread lookups ask n ids at a time (`contains_batch`,
//! `lookup_batch`; "batch": 0 in the JSON is one `contains` per id), and
//! the CPU microseconds a lookup took in each single-thread phase; SALT
//! (env) picks other ids.
//! Used by benches/scale-lookups.sh.

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
    // SALT (env) picks other ids of the same repository: on a VM whose
    // disk the host caches, a second run over the same ids is not cold.
    let salt = std::env::var("SALT").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed ^ salt.wrapping_mul(0x2545_f491_4f6c_dd1d);
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
    // BATCH=n: `contains_batch` and `lookup_batch` of n ids at a time
    // (as a backup's file workers ask) instead of one `contains` or
    // `lookup` per id.
    let batch = std::env::var("BATCH").ok().and_then(|b| b.parse::<usize>().ok()).filter(|&b| b > 0);
    // The CPU time of this thread (ns, /proc/thread-self/schedstat): a
    // lookup's cost that the machine's load does not change.
    let cpu_ns = || -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        s.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    let cpu_us = std::cell::RefCell::new(Vec::new());
    let timed = |ids: &[Id], f: &dyn Fn(&[Id]) -> arc_engine::Result<u64>| -> arc_engine::Result<(f64, u64)> {
        let (t, c) = (Instant::now(), cpu_ns());
        let mut found = 0;
        for part in ids.chunks(batch.unwrap_or(1)) {
            found += f(part)?;
        }
        cpu_us.borrow_mut().push((cpu_ns() - c) as f64 / 1000.0 / ids.len().max(1) as f64);
        Ok((ids.len() as f64 / t.elapsed().as_secs_f64(), found))
    };
    let contains = |ids: &[Id]| -> arc_engine::Result<u64> {
        match batch {
            Some(_) => Ok(reader.contains_batch(ids)?.into_iter().filter(|&p| p).count() as u64),
            None => ids.iter().try_fold(0, |n, id| Ok(n + u64::from(reader.contains(id)?))),
        }
    };
    let lookup = |ids: &[Id]| -> arc_engine::Result<u64> {
        match batch {
            Some(_) => Ok(reader.lookup_batch(ids)?.into_iter().filter(Option::is_some).count() as u64),
            None => ids.iter().try_fold(0, |n, id| Ok(n + u64::from(reader.lookup(id)?.is_some()))),
        }
    };
    // Absent first: a cold cache is cold for them. Rows read per lookup
    // of each kind: what a lookup costs beyond the mapped keys.
    let per_lookup = |reads: u64| reads as f64 / count.max(1) as f64;
    let r0 = reader.sorted_row_reads();
    let (absent_rate, absent_found) = timed(&absent, &contains)?;
    let r1 = reader.sorted_row_reads();
    let (present_rate, present_found) = timed(&present, &contains)?;
    let (absent_reads, present_reads) = (per_lookup(r1 - r0), per_lookup(reader.sorted_row_reads() - r1));
    let (locate_rate, located) = timed(&present, &lookup)?;
    // Present ids again (other ones), from THREADS threads as a backup's
    // file workers ask: a row not in the page cache is a wait on the disk,
    // and several waits overlap.
    let threads = std::env::var("THREADS").ok().and_then(|t| t.parse::<usize>().ok()).unwrap_or(4).max(1);
    let more: Vec<Id> = (0..count)
        .map(|_| {
            let p = next() % packs;
            let n = (chunks - p * per).min(per);
            chunk_id(seed, p, (next() % n) as u32)
        })
        .collect();
    let t = Instant::now();
    let parallel_found = std::thread::scope(|scope| -> arc_engine::Result<u64> {
        let workers: Vec<_> = more
            .chunks(more.len().div_ceil(threads).max(1))
            .map(|part| {
                let index = &index;
                scope.spawn(move || -> arc_engine::Result<u64> {
                    let reader = index.reader()?;
                    let mut found = 0;
                    for id in part {
                        found += u64::from(reader.contains(id)?);
                    }
                    Ok(found)
                })
            })
            .collect();
        let mut found = 0;
        for w in workers {
            found += w.join().map_err(|_| arc_engine::Error::index_db(cache, "a lookup thread panicked"))??;
        }
        Ok(found)
    })?;
    let parallel_rate = more.len() as f64 / t.elapsed().as_secs_f64();
    let sizes = index.sizes()?;
    let vm = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm =
        vm.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or("").trim_start_matches("VmHWM:").trim().to_string();
    println!(
        "{{\"chunks\": {chunks}, \"batch\": {}, \"open_and_fill_s\": {open_s:.2}, \"absent_per_s\": {absent_rate:.0}, \
         \"present_per_s\": {present_rate:.0}, \"locate_per_s\": {locate_rate:.0}, \
         \"present_per_s_{threads}_threads\": {parallel_rate:.0}, \"absent_found\": {absent_found}, \
         \"present_found\": {present_found}, \"located\": {located}, \"parallel_found\": {parallel_found}, \"absent_row_reads\": {absent_reads:.7}, \
         \"present_row_reads\": {present_reads:.4}, \"sorted_bytes\": {}, \"db_bytes\": {}, \
         \"bytes_per_chunk\": {:.1}, \"cpu_us_per_absent_present_locate\": {:.2?}, \"vm_hwm\": \"{hwm}\"}}",
        batch.unwrap_or(0),
        sizes.sorted_bytes,
        sizes.db_bytes,
        (sizes.sorted_bytes + sizes.db_bytes) as f64 / chunks as f64,
        cpu_us.borrow()
    );
    Ok(())
}
